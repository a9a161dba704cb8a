#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# rss_max.sh OUT -- CMD...: run CMD, sample its VmRSS every 20 ms; the largest
# sample (KiB) goes to OUT; exits with CMD's status.
out=$1; shift 2
"$@" & pid=$!
max=0
while kill -0 $pid 2>/dev/null; do
  r=$(awk '/VmRSS/{print $2}' /proc/$pid/status 2>/dev/null); [ -n "$r" ] && [ "$r" -gt "$max" ] && max=$r
  sleep 0.02
done
wait $pid; rc=$?
echo $max > "$out"; exit $rc
