#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# r3serve --nbd over a sparse file:// export: nbdinfo --map shows holes and
# data where SEEK_DATA/SEEK_HOLE of the file says they are, raw BLOCK_STATUS
# and READ requests (nbd_status.py) agree and read the file's bytes with the
# holes sent as OFFSET_HOLE chunks, our own client's extents agree, and
# nbdcopy (which trusts BLOCK_STATUS) copies the file exactly.
source "$top_srcdir/tests/integration/lib.sh"
for t in nbdinfo nbdcopy cmp; do t_need $t; done
MAP="$top_builddir/tests/integration/nbd_status_map"
PY="$top_srcdir/tests/integration/nbd_status.py"

# 32 MiB: data at 0 (4 KiB), a hole, 1 MiB + 4 KiB at 5 MiB, a hole, 192 KiB
# at 20 MiB, a hole to the end
F="$T_DIR/sparse.img"
truncate -s 32M "$F"
dd if=/dev/urandom of="$F" bs=4K count=1 conv=notrunc status=none
dd if=/dev/urandom of="$F" bs=4K count=257 seek=1280 conv=notrunc status=none
dd if=/dev/urandom of="$F" bs=64K count=3 seek=320 conv=notrunc status=none
python3 "$PY" map "$F" > "$T_DIR/want"
[ "$(grep -c zero "$T_DIR/want")" -ge 3 ] || t_skip "this file system keeps no holes (SEEK_HOLE): $(cat "$T_DIR/want")"

P=$(t_free_port)
t_bg "$top_builddir/r3serve" --nbd 127.0.0.1:$P --source "file://$F"
t_wait_port $P
t_timeout 30 nbdinfo --map "nbd://127.0.0.1:$P/" | python3 "$PY" norm > "$T_DIR/got"
cmp -s "$T_DIR/want" "$T_DIR/got" || t_fail "nbdinfo --map of r3serve over file://:
$(cat "$T_DIR/got")
the file's SEEK_HOLE view:
$(cat "$T_DIR/want")"
t_timeout 60 python3 "$PY" check 127.0.0.1:$P "$F" || t_fail "raw BLOCK_STATUS / READ checks"
t_timeout 30 "$MAP" "nbd://127.0.0.1:$P/" > "$T_DIR/got" || t_fail "extents through our client"
cmp -s "$T_DIR/want" "$T_DIR/got" || t_fail "our client's extents of r3serve: $(cat "$T_DIR/got")"
t_timeout 60 nbdcopy "nbd://127.0.0.1:$P/" "$T_DIR/copy" || t_fail "nbdcopy"
cmp "$F" "$T_DIR/copy" || t_fail "nbdcopy read other bytes"
t_log "ok"
