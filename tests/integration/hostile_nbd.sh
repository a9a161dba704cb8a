#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Our nbd:// client against a fake NBD server that misbehaves on purpose
# (hostile_nbd.py): each mode must end in an error with the right sentence
# within the timeouts (connect_timeout=1s, timeout=2s), never in a hang, and
# never in a read that returns 0 with bytes unfilled.
source "$top_srcdir/tests/integration/lib.sh"
t_need python3
CHECK="$top_builddir/tests/r3check"

# mode, the sentence the error must contain (grep -E)
cases=(
    "never|sent no NBD greeting within 1000 ms"
    "garbage|not an NBD server"
    "bigoption|option reply too large"
    "slowhs|handshake did not finish within 1000 ms"
    "silent|no reply to a read of 4096 bytes at 0 within 2000 ms"
    "nodata|left 4096 bytes unfilled"
    "partial|left 2048 bytes unfilled"
    "overlap|overlapping"
    "bigchunk|does not fit the request"
    "outside|outside the requested range"
    "badmagic|bad magic"
    "wrongcookie|a request we did not send"
    "midclose|closed the connection"
)
for c in "${cases[@]}"; do
    mode=${c%%|*}; want=${c#*|}
    rm -f "$T_DIR/port"
    t_bg python3 "$top_srcdir/tests/integration/hostile_nbd.py" "$T_DIR/port" "$mode"
    for i in $(seq 100); do [ -s "$T_DIR/port" ] && break; sleep 0.05; done
    [ -s "$T_DIR/port" ] || t_fail "$mode: the fake server did not start"
    P=$(cat "$T_DIR/port")
    t0=$(date +%s%N)
    t_timeout 20 "$CHECK" probe "nbd://127.0.0.1:$P/?connect_timeout=1s&timeout=2s" 2>"$T_DIR/err"
    rc=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    err=$(cat "$T_DIR/err")
    kill $T_LAST_PID 2>/dev/null; wait $T_LAST_PID 2>/dev/null
    [ $rc -eq 3 ] && t_fail "$mode: a read returned 0 with bytes unfilled: $err"
    [ $rc -eq 0 ] && t_fail "$mode: the read succeeded against a hostile server"
    [ $rc -eq 1 ] || t_fail "$mode: exit status $rc (124 = hang): $err"
    [ $ms -lt 4500 ] || t_fail "$mode: the error took $ms ms (timeouts 1 s / 2 s): $err"
    echo "$err" | grep -qE "$want" || t_fail "$mode: the error does not say '$want': $err"
    t_log "$mode: ${ms} ms: $err"
done

# A server that stops reading: a big write gives up after the timeout
rm -f "$T_DIR/port"
t_bg python3 "$top_srcdir/tests/integration/hostile_nbd.py" "$T_DIR/port" noread
for i in $(seq 100); do [ -s "$T_DIR/port" ] && break; sleep 0.05; done
P=$(cat "$T_DIR/port")
t0=$(date +%s%N)
t_timeout 20 "$CHECK" probe-write "nbd://127.0.0.1:$P/?connect_timeout=1s&timeout=2s" 2>"$T_DIR/err" \
    && t_fail "noread: 64 MiB written to a server that reads nothing"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
kill $T_LAST_PID 2>/dev/null
[ $ms -lt 6000 ] || t_fail "noread: the error took $ms ms: $(cat "$T_DIR/err")"
grep -qE "took no data for 2000 ms|within 2000 ms" "$T_DIR/err" || t_fail "noread: $(cat "$T_DIR/err")"
t_log "noread: ${ms} ms: $(cat "$T_DIR/err")"

# The parameters are checked: a bad value is an error that names it
t_timeout 10 "$CHECK" probe "nbd://127.0.0.1:1/?timeout=soon" 2>"$T_DIR/err" && t_fail "timeout=soon accepted"
grep -q "bad timeout 'soon'" "$T_DIR/err" || t_fail "bad timeout: $(cat "$T_DIR/err")"
t_log "ok"
