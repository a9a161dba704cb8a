#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Zeros over NBD: BLOCK_STATUS (base:allocation) and OFFSET_HOLE reads.
# A sparse file behind nbdkit file (an independent server) is the truth,
# seen through SEEK_DATA/SEEK_HOLE: our nbd:// client's extent op must see
# the same runs (one query at a time and in small steps); r3serve --nbd over
# that nbd:// source must answer nbdinfo --map and raw BLOCK_STATUS / READ
# requests (nbd_status.py) with the same runs and the file's bytes, holes
# sent as OFFSET_HOLE chunks; nbdkit memory's map (nbdinfo --map) must be
# what our client sees; a server without structured replies has no
# contexts, and the client then says DATA for everything.
# (r3serve over a file:// export: nbd_status_file.sh.)
source "$top_srcdir/tests/integration/lib.sh"
for t in nbdkit nbdinfo nbdcopy cmp; do t_need $t; done
MAP="$top_builddir/tests/integration/nbd_status_map"
PY="$top_srcdir/tests/integration/nbd_status.py"
R3SERVE="$top_builddir/r3serve"

# 16 MiB: a hole, 128 KiB of data at 1 MiB, a hole, 64 KiB at 6.25 MiB, a
# hole, the last 4 KiB
F="$T_DIR/sparse.img"
truncate -s 16M "$F"
dd if=/dev/urandom of="$F" bs=64K count=2 seek=16 conv=notrunc status=none
dd if=/dev/urandom of="$F" bs=64K count=1 seek=100 conv=notrunc status=none
dd if=/dev/urandom of="$F" bs=4K count=1 seek=4095 conv=notrunc status=none
python3 "$PY" map "$F" > "$T_DIR/want"
[ "$(grep -c zero "$T_DIR/want")" -ge 3 ] || t_skip "this file system keeps no holes (SEEK_HOLE): $(cat "$T_DIR/want")"

# nbdkit file: its map is the file's, and so is our client's extent op
t_bg nbdkit -f -U "$T_DIR/kit.sock" file "$F"
t_wait_port "$T_DIR/kit.sock"
KIT="nbd+unix:///?socket=$T_DIR/kit.sock"
t_timeout 30 nbdinfo --map "$KIT" | python3 "$PY" norm > "$T_DIR/kitmap"
cmp -s "$T_DIR/want" "$T_DIR/kitmap" || t_fail "nbdkit's map is not the file's: $(cat "$T_DIR/kitmap")"
t_timeout 30 "$MAP" "$KIT" > "$T_DIR/got" || t_fail "extents from nbdkit file"
cmp -s "$T_DIR/want" "$T_DIR/got" || t_fail "our client's extents of nbdkit file:
$(cat "$T_DIR/got")
the file's:
$(cat "$T_DIR/want")"
t_timeout 30 "$MAP" "$KIT" 300000 > "$T_DIR/got" || t_fail "extents from nbdkit file in steps"
cmp -s "$T_DIR/want" "$T_DIR/got" || t_fail "our client's extents of nbdkit file in 300000-byte steps: $(cat "$T_DIR/got")"

# r3serve --nbd over that nbd:// source: BLOCK_STATUS answered from the
# source's extents, reads with holes
P=$(t_free_port)
t_bg "$R3SERVE" --nbd 127.0.0.1:$P --source "$KIT"
t_wait_port $P
t_timeout 30 nbdinfo --map "nbd://127.0.0.1:$P/" | python3 "$PY" norm > "$T_DIR/got"
cmp -s "$T_DIR/want" "$T_DIR/got" || t_fail "nbdinfo --map of r3serve: $(cat "$T_DIR/got")"
t_timeout 60 python3 "$PY" check 127.0.0.1:$P "$F" || t_fail "raw BLOCK_STATUS / READ checks of r3serve"
t_timeout 30 "$MAP" "nbd://127.0.0.1:$P/" > "$T_DIR/got" || t_fail "extents from r3serve"
cmp -s "$T_DIR/want" "$T_DIR/got" || t_fail "our client's extents of r3serve: $(cat "$T_DIR/got")"
t_timeout 60 nbdcopy "nbd://127.0.0.1:$P/" "$T_DIR/copy" || t_fail "nbdcopy from r3serve"
cmp "$F" "$T_DIR/copy" || t_fail "nbdcopy (which skips what BLOCK_STATUS calls zero) read other bytes"
t_timeout 30 "$R3CHECK" read "nbd://127.0.0.1:$P/" 1000000 6000000 > "$T_DIR/part" || t_fail "r3check read"
dd if="$F" bs=1000000 skip=1 count=6 status=none | cmp - "$T_DIR/part" || t_fail "our client read other bytes through holes"

# nbdkit memory: what nbdinfo sees is what our client sees
P2=$(t_free_port)
t_bg nbdkit -f -i 127.0.0.1 -p $P2 memory 16M
t_wait_port $P2
head -c 200000 /dev/urandom > "$T_DIR/blob"
t_timeout 30 "$R3CHECK" put "nbd://127.0.0.1:$P2/" "$T_DIR/blob" -o 3145728 || t_fail "writing to nbdkit memory"
t_timeout 30 nbdinfo --map "nbd://127.0.0.1:$P2/" | python3 "$PY" norm > "$T_DIR/kitmap"
t_timeout 30 "$MAP" "nbd://127.0.0.1:$P2/" > "$T_DIR/got" || t_fail "extents from nbdkit memory"
cmp -s "$T_DIR/kitmap" "$T_DIR/got" || t_fail "our client's extents of nbdkit memory: $(cat "$T_DIR/got"), nbdinfo's: $(cat "$T_DIR/kitmap")"
python3 - "$T_DIR/got" <<'PYEOF' || t_fail "nbdkit memory's map does not hold the write: $(cat "$T_DIR/got")"
import sys
runs = [l.split() for l in open(sys.argv[1])]
data = [(int(o), int(o) + int(n)) for o, n, k in runs if k == "data"]
assert any(a <= 3145728 and 3145728 + 200000 <= b for a, b in data)
assert runs[0][2] == "zero" and runs[-1][2] == "zero"
PYEOF

# no structured replies, so no meta contexts: DATA everywhere, no error
t_bg nbdkit -f --no-sr -U "$T_DIR/nosr.sock" file "$F"
t_wait_port "$T_DIR/nosr.sock"
t_timeout 30 "$MAP" "nbd+unix:///?socket=$T_DIR/nosr.sock" > "$T_DIR/got" || t_fail "extents without structured replies"
[ "$(cat "$T_DIR/got")" = "0 16777216 data" ] || t_fail "without base:allocation: $(cat "$T_DIR/got")"
t_log "ok"
