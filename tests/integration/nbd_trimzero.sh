#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# NBD TRIM and WRITE_ZEROES against r3serve --nbd on a file source:
#  - qemu-io (a real client): write -z (with FUA, and with unmap allowed) and
#    discard; the backing file is compared with what is expected;
#  - raw requests (nbd_trimzero.py): unaligned and > 1 MiB zeroing, NO_HOLE,
#    TRIM with FUA, out-of-range and bad-flag refusals, EPERM on a read-only
#    export; every result read back from the backing file.
source "$top_srcdir/tests/integration/lib.sh"
t_need python3
t_need qemu-io
R3SERVE="$top_builddir/r3serve"
SIZE=$((16 << 20))
head -c $SIZE /dev/urandom > "$T_DIR/rw.img"
cp "$T_DIR/rw.img" "$T_DIR/want.img"
head -c $((1 << 20)) /dev/urandom > "$T_DIR/ro.img"
P=$(t_free_port); R=$(t_free_port)
t_bg "$R3SERVE" --nbd 127.0.0.1:$P --source "file://$T_DIR/rw.img" 2> "$T_DIR/serve.log"
RW_PID=$T_LAST_PID
t_bg "$R3SERVE" --nbd 127.0.0.1:$R --source "file://$T_DIR/ro.img" -r 2> "$T_DIR/ro.log"
t_wait_port $P; t_wait_port $R

t_log "qemu-io: write -z (FUA), write -z -u, discard"
t_timeout 60 qemu-io -f raw "nbd://127.0.0.1:$P" -c "write -z -f 65536 1M" -c "write -z -u 3M 2M" \
    -c "discard 10M 1M" -c "flush" > "$T_DIR/qemu.out" 2>&1 || { cat "$T_DIR/qemu.out" >&2; t_fail "qemu-io"; }
grep -qi "error\|failed" "$T_DIR/qemu.out" && { cat "$T_DIR/qemu.out" >&2; t_fail "qemu-io reported an error"; }
python3 - "$T_DIR/rw.img" "$T_DIR/want.img" <<'EOF' || t_fail "the backing file after qemu-io's requests"
import sys
got, want = bytearray(open(sys.argv[1], "rb").read()), bytearray(open(sys.argv[2], "rb").read())
M = 1 << 20
want[65536:65536 + M] = bytes(M)
want[3 * M:5 * M] = bytes(2 * M)
trim = slice(10 * M, 11 * M)          # advisory: its data or zeros
ok = got[trim] in (want[trim], bytes(M))
got[trim] = want[trim] = b""
if not ok or got != want:
    bad = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), None)
    print("differs at", bad, "trim ok:", ok, file=sys.stderr)
    sys.exit(1)
EOF

t_log "raw requests"
t_timeout 120 python3 "$top_srcdir/tests/integration/nbd_trimzero.py" $P "$T_DIR/rw.img" $R "$T_DIR/ro.img" \
    || t_fail "raw TRIM/WRITE_ZEROES cases"
kill -0 $RW_PID || t_fail "the server died"
t_log "ok"
exit 0
