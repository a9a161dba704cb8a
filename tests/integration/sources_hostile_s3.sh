#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The s3:// source against a fake endpoint that lies about objects
# (sources_hostile_s3.py): a body longer than the chunk is refused before it
# is buffered (max RSS stays small), a silent one ends at timeout=, every
# lie is an error with a sentence, a read never returns 0 with such bytes.
source "$top_srcdir/tests/integration/lib.sh"
t_need python3
SC="$top_builddir/tests/r3check"
# "${MEASURE[@]}" FILE CMD...: run CMD, write "SECONDS MAX-RSS-KiB" to FILE, exit with its status
MEASURE=(python3 -c 'import resource, subprocess, sys, time
t = time.monotonic(); rc = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    print("%.2f %d" % (time.monotonic() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), file=f)
sys.exit(rc if rc >= 0 else 128 - rc)')
export AWS_ACCESS_KEY_ID=K AWS_SECRET_ACCESS_KEY=S
RSS_MAX_KB=65536

check() {
    local mode=$1 limit=$2 words=$3
    python3 "$top_srcdir/tests/integration/sources_hostile_s3.py" "$mode" > "$T_DIR/$mode.port" &
    local pid=$!
    T_PIDS="$T_PIDS $pid"
    for i in $(seq 100); do [ -s "$T_DIR/$mode.port" ] && break; sleep 0.05; done
    local port
    port=$(cat "$T_DIR/$mode.port")
    [ -n "$port" ] || t_fail "$mode: the fake endpoint did not start"
    local uri="s3://bk/x?endpoint=http://127.0.0.1:$port&timeout=1s&connect_timeout=1s"
    local rc=0
    t_timeout 30 "${MEASURE[@]}" "$T_DIR/$mode.time" \
        "$SC" read "$uri" 0 65536 > "$T_DIR/$mode.out" 2> "$T_DIR/$mode.err" || rc=$?
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    local secs kb
    read -r secs kb < <(tail -1 "$T_DIR/$mode.time")
    t_log "$mode: exit $rc in ${secs}s, max RSS ${kb} KiB: $(grep r3check "$T_DIR/$mode.err" | head -1)"
    if [ "$mode" = ok ]; then
        [ "$rc" = 0 ] || t_fail "ok: the honest fake did not read: $(cat "$T_DIR/$mode.err")"
        cmp -s "$T_DIR/$mode.out" <(head -c 65536 /dev/zero) || t_fail "ok: wrong bytes"
        return
    fi
    [ "$rc" != 0 ] || t_fail "$mode: the read returned 0 with bytes the server should not have sent"
    [ "$rc" = 1 ] || t_fail "$mode: hung or crashed (exit $rc): $(cat "$T_DIR/$mode.err")"
    grep -q -- "$words" "$T_DIR/$mode.err" || t_fail "$mode: no sentence with '$words': $(cat "$T_DIR/$mode.err")"
    awk -v s="$secs" -v l="$limit" 'BEGIN { exit !(s <= l) }' || t_fail "$mode: took ${secs}s (limit ${limit}s)"
    [ "$kb" -le "$RSS_MAX_KB" ] || t_fail "$mode: max RSS ${kb} KiB (limit $RSS_MAX_KB KiB)"
}

check ok      5 ""
check huge    4 "more than the 65536-byte chunk"
check long    4 "more than the 65536-byte chunk"
check endless 4 "more than the 65536-byte chunk"
check silent  4 "no answer within 1000 ms (timeout=)"
exit 0
