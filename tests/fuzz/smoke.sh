#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# make fuzz-smoke: run each fuzz target for FUZZ_SECONDS (default 30) over a
# copy of its seed corpus; one summary line per target (runs, exec/s, edges);
# exit 1 if any target found a crash, a leak, a timeout or ran out of memory
# (the input is kept in $work/<target>/ and its path printed).
# Usage: smoke.sh SRCDIR FUZZDIR TARGET...
set -u
src=$1 dir=$2
shift 2
secs=${FUZZ_SECONDS:-30}
work=${FUZZ_WORK:-$(mktemp -d /tmp/r3fuzz-smoke.XXXXXX)}
fail=0
for t in "$@"; do
    mkdir -p "$work/$t/corpus"
    log=$work/$t/log
    nice "$dir/fuzz_$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/$t/" "$work/$t/corpus" "$src/tests/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    if [ "$rc" -ne 0 ]; then
        fail=1
        echo "FAIL fuzz_$t (exit $rc): $(ls "$work/$t" | grep -E '^(crash|leak|timeout|oom|slow-unit)-' | sed "s|^|$work/$t/|" | tr '\n' ' ')"
        grep -m3 -E 'ERROR|SUMMARY|fuzz:' "$log" | sed 's/^/    /'
    else
        echo "ok   fuzz_$t: ${secs}s, ${runs:-?} runs, ${eps:-?} exec/s, ${cov:-?} edges"
    fi
done
[ "$fail" = 0 ] && [ -z "${FUZZ_WORK:-}" ] && rm -rf "$work"
exit $fail
