#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Zeros through nbd-managed (issue 14, "zero chunks"): a region over a sparse
# file reads zeros where the file has holes and its bytes where it has data.
# The data is written through a plain path (dd into the file), the whole
# region is read back through the FUSE mount of nbd-managed (and nbd-direct)
# and its SHA-256 compared with the file's; the file must stay as it was.
# Chunk sizes and pull settings vary so that holes and data share chunks, and
# whole chunks are holes (the pull stage may learn ZERO extents and skip them:
# the bytes must be the same either way).
source "$top_srcdir/tests/integration/lib.sh"
[ -c /dev/fuse ] || t_skip "no /dev/fuse (FUSE is not available in this kernel/container)"
t_need python3
CHECK="$top_builddir/tests/r3check"
mkdir -p "$T_DIR/work"; export TMPDIR="$T_DIR/work"    # the regions mount under here
IMG="$T_DIR/sparse.img"

# 24 MiB, sparse; data at a few offsets, some aligned, some across chunk
# boundaries, one at the very end.
truncate -s 24M "$IMG"
put() {   # put OFFSET_BYTES LENGTH_BYTES: random bytes at OFFSET
    head -c "$2" /dev/urandom | dd of="$IMG" bs=64K iflag=fullblock oflag=seek_bytes seek="$1" conv=notrunc status=none \
        || t_fail "dd at $1"
}
put 0 4096
put $((3 * 1048576 + 123)) $((100 * 1024))
put $((8 * 1048576)) 1048576
put $((12 * 1048576 - 5000)) 10000
put $((24 * 1048576 - 7)) 7
[ "$(stat -c %s "$IMG")" = $((24 * 1048576)) ] || t_fail "the file grew"

# The test is about holes: make sure the file has some (a filesystem without
# holes would make it a plain data test).
python3 - "$IMG" <<'EOF' || t_skip "this filesystem keeps no holes in $T_DIR"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    h = os.lseek(fd, 0, os.SEEK_HOLE)
except OSError:
    sys.exit(1)
sys.exit(0 if h < os.fstat(fd).st_size else 1)
EOF
want=$(sha256sum < "$IMG" | cut -d' ' -f1)
# the zeros really are zeros, and the data really is not (a test that cannot fail is a defect)
zeros=$(head -c $((24 * 1048576)) /dev/zero | sha256sum | cut -d' ' -f1)
[ "$want" != "$zeros" ] || t_fail "the data did not land in the file"

check() {   # check STRATEGY ARGS...: the whole region's bytes must be the file's
    local s=$1; shift
    local out
    out=$(t_timeout 120 "$CHECK" region "file://$IMG" --strategy "$s" --sha256 "$@" 2>"$T_DIR/err") \
        || t_fail "$s $*: $(cat "$T_DIR/err")"
    local got
    got=$(echo "$out" | sed -n 's/^before //p')
    [ -n "$got" ] || t_fail "$s $*: no checksum in: $out"
    [ "$got" = "$want" ] || t_fail "$s $*: the region's bytes differ from the file's (holes or data wrong)"
}
check nbd-managed --chunk 64K --pull 4
check nbd-managed --chunk 1M --pull 0              # demand reads only
check nbd-managed --chunk 4M --pull 16             # data and holes in one chunk
check nbd-managed --chunk 16K --pull 64 --push 4
check nbd-direct

# Read-only use leaves the file as it was, holes included.
[ "$(sha256sum < "$IMG" | cut -d' ' -f1)" = "$want" ] || t_fail "reading through the region changed the file"

# A region that writes into a hole: the new bytes land, the other holes stay zeros.
t_timeout 120 "$CHECK" region "file://$IMG" --strategy nbd-managed --chunk 64K --pull 4 -S 41 \
    2>"$T_DIR/err" || t_fail "nbd-managed write: $(cat "$T_DIR/err")"
t_timeout 60 "$CHECK" -s 41 verify "file://$IMG" || t_fail "the file does not hold what nbd-managed wrote"

grep -q " $T_DIR/work" /proc/mounts && t_fail "a mount was left behind: $(grep " $T_DIR/work" /proc/mounts)"
[ -z "$(ls -A "$T_DIR/work")" ] || t_fail "left in the work directory: $(ls -A "$T_DIR/work")"
t_log "ok"
