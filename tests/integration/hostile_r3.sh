#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The r3:// client against a fake r3 server that misbehaves (hostile_r3.py):
# every mode gives a clear one-line error within the client's timeout, and a
# read never succeeds with bytes unfilled (the fake server's bytes are 0x5a:
# a "successful" read would be a file of 0x5a's, which is checked for too).
source "$top_srcdir/tests/integration/lib.sh"
t_need python3
CAT="$top_builddir/tests/r3check"
FAKE="$top_srcdir/tests/integration/hostile_r3.py"
D=$T_DIR

# hostile MODE REGEX URI_PARAMS LIMIT_S : r3check get must fail within LIMIT_S saying REGEX
hostile() {
    local mode=$1 re=$2 params=$3 limit=$4 port rc=0 t0 ms
    port=$(t_free_port)
    t_bg python3 "$FAKE" "$port" "$mode"
    local pid=$T_LAST_PID
    t_wait_port "$port"
    rm -f "$D/out.bin"
    t0=$(date +%s%N)
    t_timeout 60 "$CAT" get "r3://127.0.0.1:$port/x?$params" "$D/out.bin" -l 64K >"$D/err" 2>&1 || rc=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    kill "$pid" 2>/dev/null
    [ "$rc" = 1 ] || { cat "$D/err" >&2; t_fail "$mode: exit status $rc, expected 1 (an error)"; }
    [ "$ms" -lt $((limit * 1000)) ] || t_fail "$mode: reported after $ms ms (limit ${limit}s)"
    grep -Eq "$re" "$D/err" || { cat "$D/err" >&2; t_fail "$mode: no sentence matching '$re'"; }
    [ "$(wc -l <"$D/err")" = 1 ] || { cat "$D/err" >&2; t_fail "$mode: expected one line"; }
    if [ -s "$D/out.bin" ] && [ -z "$(tr -d 'Z' <"$D/out.bin" | head -c 1)" ]; then
        t_fail "$mode: the fake server's bytes were written out as a successful read"
    fi
    t_log "$mode (${ms} ms): $(cat "$D/err")"
}

hostile never     "timed out after 2000 ms"                      "timeout=2s"          6
hostile garbage   "protocol error|gave up|not connected"          "timeout=2s"          6
hostile oversized "a reply of 2147483632 bytes"                  "timeout=2s"          6
hostile partial   "timed out after 2000 ms"                      "timeout=2s"          6
hostile close     "closed the connection in the middle of a reply|not connected" "timeout=2s" 6
hostile short     "protocol error|wrong length|not connected"     "timeout=2s"          6
hostile wrongid   "protocol error|not connected"                  "timeout=2s"          6
hostile http      "is not an r3 server"                          "connect_timeout=2s"  6
hostile nohello   "no hello from the server within 1000 ms"      "connect_timeout=1s"  5
# the old bare-seconds form of the parameters still works; a bad one is a sentence
t_timeout 10 "$CAT" get "r3://127.0.0.1:1/x?timeout=soon" "$D/out.bin" 2>"$D/err" && t_fail "timeout=soon accepted"
grep -q "timeout=soon: 'soon' is not a duration" "$D/err" || { cat "$D/err" >&2; t_fail "bad timeout=: sentence"; }
t_log "all checks passed"
