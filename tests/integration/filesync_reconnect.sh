#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The hub killed and restarted mid-round: advertisers and receivers
# reconnect, and the next round repairs every receiver (compare).
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/integration/filesync_lib.sh"
fs_certs
W="$top_srcdir/tests/integration/filesync_writer.py"
mkdir -p "$T_DIR/src" "$T_DIR/r1" "$T_DIR/r2"
head -c 64M /dev/urandom > "$T_DIR/src/data.bin"
PORT=$(t_free_port)
fs_hub "$PORT"
cd "$T_DIR/src"
t_bg "$R3SYNC" advertise data.bin --hub "127.0.0.1:$PORT" $(fs_client a) --interval 0 >"$T_DIR/adv.log" 2>"$T_DIR/adv.err"
ADV=$T_LAST_PID
t_bg "$R3SYNC" receive "$T_DIR/r1" --hub "127.0.0.1:$PORT" $(fs_client a) >"$T_DIR/r1.log" 2>"$T_DIR/r1.err"
t_bg "$R3SYNC" receive "$T_DIR/r2" --hub "127.0.0.1:$PORT" $(fs_client a2) >"$T_DIR/r2.log" 2>"$T_DIR/r2.err"
fs_wait "$T_DIR/r1.log" "^synced data.bin" 1
fs_wait "$T_DIR/r2.log" "^synced data.bin" 1

# a big round (most blocks change); the hub dies while it is relayed
python3 "$W" data.bin 7 4000 65536 >/dev/null
kill -USR1 "$ADV"
sleep 0.05
kill -9 "$HUB_PID"
wait "$HUB_PID" 2>/dev/null
t_log "hub killed mid-round"
cmp -s data.bin "$T_DIR/r1/data.bin" && cmp -s data.bin "$T_DIR/r2/data.bin" &&
    t_log "note: the round finished before the hub died"
sleep 0.5
fs_hub "$PORT"
t_log "hub restarted"
fs_wait "$T_DIR/adv.err" "connected to" 2
fs_wait "$T_DIR/r1.err" "connected to" 2
fs_wait "$T_DIR/r2.err" "connected to" 2
# next round: more writes
python3 "$W" data.bin 8 200 65536 >/dev/null
kill -USR1 "$ADV"
fs_wait "$T_DIR/adv.log" "^round 2:" 1
fs_wait "$T_DIR/r1.log" "^round 2 done" 1
fs_wait "$T_DIR/r2.log" "^round 2 done" 1
cmp data.bin "$T_DIR/r1/data.bin" || t_fail "receiver 1 not repaired"
cmp data.bin "$T_DIR/r2/data.bin" || t_fail "receiver 2 not repaired"
fs_finish
