#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A receiver that joins late gets the whole file, then deltas; a file
# advertised later reaches the receivers already connected.
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/integration/filesync_lib.sh"
fs_certs
W="$top_srcdir/tests/integration/filesync_writer.py"
mkdir -p "$T_DIR/src/sub" "$T_DIR/r1" "$T_DIR/late"
head -c 24M /dev/urandom > "$T_DIR/src/a.bin"
head -c 3000001 /dev/urandom > "$T_DIR/src/sub/b.bin"     # not a multiple of the block
PORT=$(t_free_port)
fs_hub "$PORT"
cd "$T_DIR/src"
t_bg "$R3SYNC" advertise a.bin --hub "127.0.0.1:$PORT" $(fs_client a) --interval 0 --block 16K >"$T_DIR/adv.log" 2>&1
ADV=$T_LAST_PID
t_bg "$R3SYNC" receive "$T_DIR/r1" --hub "127.0.0.1:$PORT" $(fs_client a) >"$T_DIR/r1.log" 2>&1
fs_wait "$T_DIR/r1.log" "^synced a.bin" 1
python3 "$W" a.bin 5 40 16384 >/dev/null
kill -USR1 "$ADV"
fs_wait "$T_DIR/r1.log" "^round 1 done" 1
cmp a.bin "$T_DIR/r1/a.bin" || t_fail "receiver 1 differs after round 1"

# late receiver: the whole file, then deltas
t_bg "$R3SYNC" receive "$T_DIR/late" --hub "127.0.0.1:$PORT" $(fs_client a2) >"$T_DIR/late.log" 2>&1
fs_wait "$T_DIR/late.log" "^synced a.bin" 1
cmp a.bin "$T_DIR/late/a.bin" || t_fail "late receiver differs after catch-up"
grep -q "^synced a.bin bytes=$((24 * 1024 * 1024))\$" "$T_DIR/late.log" || t_fail "late receiver did not get the whole file"
python3 "$W" a.bin 6 40 16384 >/dev/null
kill -USR1 "$ADV"
fs_wait "$T_DIR/late.log" "^round 2 done" 1
fs_wait "$T_DIR/r1.log" "^round 2 done" 1
cmp a.bin "$T_DIR/late/a.bin" || t_fail "late receiver differs after a delta round"
cmp a.bin "$T_DIR/r1/a.bin" || t_fail "receiver 1 differs after round 2"

# a second advertiser of the same id adds a file in a subdirectory later
t_bg "$R3SYNC" advertise sub/b.bin --hub "127.0.0.1:$PORT" $(fs_client a) --interval 0 >"$T_DIR/adv2.log" 2>&1
ADV2=$T_LAST_PID
fs_wait "$T_DIR/r1.log" "^synced sub/b.bin" 1
fs_wait "$T_DIR/late.log" "^synced sub/b.bin" 1
cmp sub/b.bin "$T_DIR/r1/sub/b.bin" || t_fail "file advertised later differs (receiver 1)"
cmp sub/b.bin "$T_DIR/late/sub/b.bin" || t_fail "file advertised later differs (late receiver)"
# it grows and shrinks: receivers follow
head -c 1000000 /dev/urandom >> sub/b.bin
kill -USR1 "$ADV2"
fs_wait "$T_DIR/r1.log" "^round 1 done" 2
fs_wait "$T_DIR/late.log" "^round 1 done" 1
cmp sub/b.bin "$T_DIR/r1/sub/b.bin" || t_fail "grown file differs"
truncate -s 123457 sub/b.bin
kill -USR1 "$ADV2"
fs_wait "$T_DIR/r1.log" "^round 2 done" 2
fs_wait "$T_DIR/late.log" "^round 2 done" 2
cmp sub/b.bin "$T_DIR/r1/sub/b.bin" || t_fail "shrunk file differs (receiver 1)"
cmp sub/b.bin "$T_DIR/late/sub/b.bin" || t_fail "shrunk file differs (late receiver)"
fs_finish
