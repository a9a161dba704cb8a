#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The r3:// client's protocol errors that hostile_r3.sh does not reach, against
# wire_client_peer.py: a disconnect inside a reply's header or inside a small
# reply, a reply without data of more than 1 MiB, a request frame where a reply
# belongs, a read answered without data, an ack for a request never made, the
# server's own "dropping you" reply. Each: exit 1 within the client's timeout
# (no hang, no crash), one line that says exactly that, no bytes written out
# as read.
source "$top_srcdir/tests/integration/lib.sh"
t_need python3
SC="$top_builddir/tests/r3check"
FAKE="$top_srcdir/tests/integration/wire_client_peer.py"

case_() {                        # case_ MODE WORDS LIMIT_S
    local mode=$1 words=$2 limit=$3 port rc=0 t0 ms
    port=$(t_free_port)
    t_bg python3 "$FAKE" "$port" "$mode"
    local pid=$T_LAST_PID
    t_wait_port "$port"
    rm -f "$T_DIR/out.bin"
    t0=$(date +%s%N)
    t_timeout 60 "$SC" get "r3://127.0.0.1:$port/x?timeout=2s" "$T_DIR/out.bin" -l 64K > "$T_DIR/err" 2>&1 || rc=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    [ "$rc" = 1 ] || { cat "$T_DIR/err" >&2; t_fail "$mode: exit status $rc, expected 1 (an error)"; }
    [ "$ms" -lt $((limit * 1000)) ] || t_fail "$mode: reported after $ms ms (limit ${limit}s)"
    grep -qF -- "$words" "$T_DIR/err" || { cat "$T_DIR/err" >&2; t_fail "$mode: no sentence with '$words'"; }
    [ "$(wc -l < "$T_DIR/err")" = 1 ] || { cat "$T_DIR/err" >&2; t_fail "$mode: expected one line"; }
    if [ -s "$T_DIR/out.bin" ] && [ -n "$(tr -d '\0' < "$T_DIR/out.bin" | head -c 1)" ]; then
        t_fail "$mode: bytes the server never sent were written out as read"
    fi
    t_log "$mode (${ms} ms): $(cat "$T_DIR/err")"
}

case_ headclose  "the server closed the connection in the middle of a reply" 6
case_ smallclose "the server closed the connection in the middle of a reply" 6
case_ bigerror   "protocol error: a 1048695 byte reply without data" 6
case_ notreply   "protocol error: a frame that is not a reply" 6
case_ nodata     "protocol error: a read reply of the wrong length" 6
case_ unknownack "protocol error: a reply to unknown request" 6
case_ dropped    "the server dropped the connection: the server is shutting down" 6
exit 0
