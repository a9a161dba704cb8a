#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The hub bounds what clients take (issue 9 on src/net): over
# --max-connections a client is refused (and, never connecting, gives up
# after --give-up-after); a receiver that never reads delays a round for the
# others by at most the hub's send timeout (10 s) and is dropped, while the
# good receiver gets every byte.
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/integration/filesync_lib.sh"
fs_certs
C="$T_DIR/c"
W="$top_srcdir/tests/integration/filesync_writer.py"
mkdir -p "$T_DIR/src" "$T_DIR/r1"
head -c 96M /dev/urandom > "$T_DIR/src/data.bin"
PORT=$(t_free_port)
t_bg "$R3SYNC" hub --listen "127.0.0.1:$PORT" --tls-cert "$C/hub.pem" --tls-key "$C/hub.key" \
    --tls-ca "$C/ca.pem" --max-connections 3 --max-inflight 32M 2>>"$T_DIR/hub.log"
HUB_PID=$T_LAST_PID
t_wait_port "$PORT"
cd "$T_DIR/src"
t_bg "$R3SYNC" advertise data.bin --hub "127.0.0.1:$PORT" $(fs_client a) --interval 0 >"$T_DIR/adv.log" 2>&1
ADV=$T_LAST_PID
t_bg "$R3SYNC" receive "$T_DIR/r1" --hub "127.0.0.1:$PORT" $(fs_client a2) >"$T_DIR/r1.log" 2>&1
fs_wait "$T_DIR/r1.log" "^synced data.bin" 1 300   # a hang guard
# a receiver (syncA) that says hello and then never reads: the third connection
t_bg python3 "$FS_CLIENT" "127.0.0.1:$PORT" "$C/ca.pem" --cert "$C/a.pem" --key "$C/a.key" \
    --send hello --send sleep:60 --read 0 >"$T_DIR/stall.out" 2>&1
STALL=$T_LAST_PID
for _ in $(seq 1 100); do grep -q "receiver joined\|handshake-ok" "$T_DIR/stall.out" "$T_DIR/hub.log" && break; sleep 0.05; done
sleep 0.5
# a fourth connection is over the cap: refused; this receiver gives up
t_timeout 20 "$R3SYNC" receive "$T_DIR/r4" --hub "127.0.0.1:$PORT" $(fs_client b) --give-up-after 2s \
    >/dev/null 2>"$T_DIR/r4.err" && t_fail "a client over the connection cap connected"
grep -q "giving up" "$T_DIR/r4.err" || { cat "$T_DIR/r4.err"; t_fail "the refused client did not give up with a sentence"; }
grep -q "too many connections" "$T_DIR/hub.log" || { cat "$T_DIR/hub.log"; t_fail "the hub did not log the refusal"; }
t_log "over the cap: refused, and the client gave up: $(cat "$T_DIR/r4.err")"

# a round changing 80 MiB: the stalled receiver's queue fills and it is dropped
python3 "$W" data.bin 5 1300 65536 >/dev/null
t0=$(date +%s)
kill -USR1 "$ADV"
fs_wait "$T_DIR/r1.log" "^round 1 done" 1 "$(t_slow 40)"
dt=$(( $(date +%s) - t0 ))
cmp data.bin "$T_DIR/r1/data.bin" || t_fail "the good receiver differs"
grep -q "too slow\|does not read" "$T_DIR/hub.log" || { tail "$T_DIR/hub.log"; t_fail "the stalled receiver was not dropped"; }
# what is checked: 30 s, scaled under a sanitizer (R3_TEST_SLOW, lib.sh)
[ "$dt" -le "$(t_slow 30)" ] || t_fail "the round took $dt s with a stalled receiver"
t_log "round with a stalled receiver: $dt s, the stalled one dropped, the good one equal"
kill -0 "$HUB_PID" || t_fail "the hub died"
kill "$STALL" 2>/dev/null
fs_finish
