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
R1=$T_LAST_PID
t_bg "$R3SYNC" receive "$T_DIR/r2" --hub "127.0.0.1:$PORT" $(fs_client a2) >"$T_DIR/r2.log" 2>"$T_DIR/r2.err"
fs_wait "$T_DIR/r1.log" "^synced data.bin" 1
fs_wait "$T_DIR/r2.log" "^synced data.bin" 1

# a big round (most blocks change); the hub dies while it is relayed: once
# receiver 1 is seen writing the round's blocks (its write count in
# /proc/PID/io grows by 1 MiB), not after a sleep, and the test fails if
# the kill missed the round (both receivers already done)
wchar() { sed -n 's/^wchar: //p' "/proc/$1/io" 2>/dev/null || echo 0; }
w0=$(wchar "$R1")
python3 "$W" data.bin 7 4000 65536 >/dev/null
kill -USR1 "$ADV"
for i in $(seq 2000); do
    [ "$(wchar "$R1")" -ge $((w0 + 1048576)) ] && break
    sleep 0.005
done
kill -9 "$HUB_PID"
wait "$HUB_PID" 2>/dev/null
[ "$(wchar "$R1")" -ge $((w0 + 1048576)) ] || t_fail "receiver 1 never started writing round 1"
if grep -q "^round 1 done" "$T_DIR/r1.log" && grep -q "^round 1 done" "$T_DIR/r2.log"; then
    t_fail "the kill missed the round: both receivers had finished it"
fi
cmp -s data.bin "$T_DIR/r1/data.bin" && cmp -s data.bin "$T_DIR/r2/data.bin" &&
    t_fail "the kill missed the round: both receivers already hold the new data"
t_log "hub killed mid-round (receiver 1 had written $(( $(wchar "$R1") - w0 )) bytes of it)"
sleep 0.5                    # the hub stays away a while: clients meet refused connects
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
