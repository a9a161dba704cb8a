#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The redis:// source against a fake Redis server that lies (hostile_resp.py):
# every lie is an error with a sentence within timeout= (1s here), the client
# buffers no more than a reply can need (max RSS stays small), and a read
# never returns 0 with bytes the server did not honestly send. The "ok" mode
# is the control: the same fake, honest, reads fine.
source "$top_srcdir/tests/integration/lib.sh"
t_need python3
SC="$top_builddir/tests/r3check"
# "${MEASURE[@]}" FILE CMD...: run CMD, write "SECONDS MAX-RSS-KiB" to FILE, exit with its status
MEASURE=(python3 -c 'import resource, subprocess, sys, time
t = time.monotonic(); rc = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    print("%.2f %d" % (time.monotonic() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), file=f)
sys.exit(rc if rc >= 0 else 128 - rc)')
RSS_MAX_KB=65536              # srccheck itself is ~10 MiB; a 1 GiB buffer would show

# check MODE URI-PARAMS MAX-SECONDS WORDS
check() {
    local mode=$1 params=$2 limit=$3 words=$4
    python3 "$top_srcdir/tests/integration/hostile_resp.py" "$mode" > "$T_DIR/$mode.port" &
    local pid=$!
    T_PIDS="$T_PIDS $pid"
    for i in $(seq 100); do [ -s "$T_DIR/$mode.port" ] && break; sleep 0.05; done
    local port
    port=$(cat "$T_DIR/$mode.port")
    [ -n "$port" ] || t_fail "$mode: the fake server did not start"
    local uri="redis://127.0.0.1:$port/x?timeout=1s&connect_timeout=1s$params"
    local rc=0
    t_timeout 30 "${MEASURE[@]}" "$T_DIR/$mode.time" \
        "$SC" read "$uri" 0 131072 > "$T_DIR/$mode.out" 2> "$T_DIR/$mode.err" || rc=$?
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    local secs kb
    read -r secs kb < <(tail -1 "$T_DIR/$mode.time")
    t_log "$mode: exit $rc in ${secs}s, max RSS ${kb} KiB: $(grep r3check "$T_DIR/$mode.err" | head -1)"
    if [ "$mode" = ok ]; then
        [ "$rc" = 0 ] || t_fail "ok: the honest fake did not read: $(cat "$T_DIR/$mode.err")"
        cmp -s "$T_DIR/$mode.out" <(head -c 131072 /dev/zero) || t_fail "ok: wrong bytes"
        return
    fi
    [ "$rc" != 0 ] || t_fail "$mode: the read returned 0 with bytes the server never sent"
    [ "$rc" != 124 ] && [ "$rc" != 137 ] || t_fail "$mode: hung (killed after 30 s)"
    [ "$rc" = 1 ] || t_fail "$mode: crashed (exit $rc): $(cat "$T_DIR/$mode.err")"
    grep -q -- "$words" "$T_DIR/$mode.err" || t_fail "$mode: no sentence with '$words': $(cat "$T_DIR/$mode.err")"
    [ "$(grep -c . "$T_DIR/$mode.err")" = 1 ] || t_fail "$mode: more than one line: $(cat "$T_DIR/$mode.err")"
    awk -v s="$secs" -v l="$limit" 'BEGIN { exit !(s <= l) }' || t_fail "$mode: took ${secs}s (limit ${limit}s)"
    [ "$kb" -le "$RSS_MAX_KB" ] || t_fail "$mode: max RSS ${kb} KiB (limit $RSS_MAX_KB KiB)"
}

t_log "a single server that lies about chunks"
check ok      ""  5  ""
check silent  ""  4  "no answer within 1000 ms (timeout=)"
check huge    ""  4  "announced a 99999999999-byte value where at most 65536 bytes can come"
check long    ""  4  "announced a 65537-byte value"
check garbage ""  4  "not a Redis reply"
check close   ""  8  "closed the connection"
check slow    ""  4  "no complete reply within 1000 ms (timeout=)"
check array   ""  4  "a reply larger than"
check line    ""  4  "a reply longer than"

t_log "a cluster node that lies about slots and redirections"
check ok      "&cluster=1" 5 ""
check slots   "&cluster=1" 4 "announced a 99999999999-byte value where at most 1024 bytes can come"
check moved   "&cluster=1" 8 "still redirected after"
exit 0
