#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A 256 MiB file mapped by a writer process, one advertiser, a hub and two
# receivers (one empty, one holding an older copy): random writes in rounds;
# after each round both receivers' files equal the writer's, and the bytes
# the advertiser sent are within 10% of changed blocks × block size + framing.
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/integration/filesync_lib.sh"
fs_certs
SIZE_MB=${FS_SIZE_MB:-256}
BLOCK=65536
W="$top_srcdir/tests/integration/filesync_writer.py"
mkdir -p "$T_DIR/src" "$T_DIR/r1" "$T_DIR/r2"
head -c "${SIZE_MB}M" /dev/urandom > "$T_DIR/src/data.bin"
cp "$T_DIR/src/data.bin" "$T_DIR/r2/data.bin"       # the older copy
old=$(python3 "$W" "$T_DIR/src/data.bin" 1 300 $BLOCK)   # ... which then falls behind
t_log "older copy is behind by $old blocks"

PORT=$(t_free_port)
fs_hub "$PORT"
cd "$T_DIR/src"
t_bg "$R3SYNC" advertise data.bin --hub "127.0.0.1:$PORT" $(fs_client a) --interval 0 >"$T_DIR/adv.log" 2>>"$T_DIR/adv.err"
ADV=$T_LAST_PID
cd "$T_DIR"
t_bg "$R3SYNC" receive "$T_DIR/r1" --hub "127.0.0.1:$PORT" $(fs_client a) >"$T_DIR/r1.log" 2>&1
t_bg "$R3SYNC" receive "$T_DIR/r2" --hub "127.0.0.1:$PORT" $(fs_client a2) >"$T_DIR/r2.log" 2>&1
fs_wait "$T_DIR/r1.log" "^synced data.bin" 1 40
fs_wait "$T_DIR/r2.log" "^synced data.bin" 1 40
cmp "$T_DIR/src/data.bin" "$T_DIR/r1/data.bin" || t_fail "empty receiver differs after catch-up"
cmp "$T_DIR/src/data.bin" "$T_DIR/r2/data.bin" || t_fail "older receiver differs after catch-up"
# the older copy got only what differed
r2b=$(sed -n 's/^synced data.bin bytes=//p' "$T_DIR/r2.log")
[ "$r2b" -eq $((old * BLOCK)) ] || t_fail "older copy received $r2b bytes, expected $((old * BLOCK))"
t_log "catch-up: empty receiver got the whole file, older copy $r2b bytes ($old blocks)"

for round in 1 2 3 4; do
    n=$(python3 "$W" "$T_DIR/src/data.bin" $((round + 10)) $((round * 150)) $BLOCK)
    kill -USR1 "$ADV"
    fs_wait "$T_DIR/adv.log" "^round $round:" 1 20
    fs_wait "$T_DIR/r1.log" "^round $round done" 1 20
    fs_wait "$T_DIR/r2.log" "^round $round done" 1 20
    cmp "$T_DIR/src/data.bin" "$T_DIR/r1/data.bin" || t_fail "round $round: receiver 1 differs"
    cmp "$T_DIR/src/data.bin" "$T_DIR/r2/data.bin" || t_fail "round $round: receiver 2 differs"
    line=$(grep "^round $round:" "$T_DIR/adv.log")
    blocks=$(echo "$line" | sed 's/.*blocks=\([0-9]*\).*/\1/')
    wire=$(echo "$line" | sed 's/.*wire=\([0-9]*\).*/\1/')
    expect=$((n * BLOCK))
    [ "$blocks" -eq "$n" ] || t_fail "round $round: sent $blocks blocks, $n changed"
    [ "$wire" -ge "$expect" ] && [ "$wire" -le $((expect + expect / 10)) ] ||
        t_fail "round $round: $wire bytes on the wire for $expect changed bytes"
    t_log "round $round: $n changed blocks, $wire bytes sent ($line)"
done
fs_finish
