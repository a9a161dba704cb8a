#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# nbd-direct and nbd-managed regions (FUSE file mmapped MAP_SHARED, served by
# an in-process NBD server): 64 MiB written through one strategy come back
# byte-identical through the uffd strategy on the same source after sync, and
# through a plain read of the source. Also over an nbd:// source served by
# r3serve --nbd, and with no mount left behind.
source "$top_srcdir/tests/integration/lib.sh"
[ -c /dev/fuse ] || t_skip "no /dev/fuse (FUSE is not available in this kernel/container)"
REG="$top_builddir/tests/r3check"
CHECK="$top_builddir/tests/r3check"
R3SERVE="$top_builddir/r3serve"
SRC="file://$T_DIR/src.img?size=64M"
mkdir -p "$T_DIR/work"; export TMPDIR="$T_DIR/work"    # the regions mount under here

t_timeout 120 "$REG" region --strategy nbd-managed -S 31 "$SRC" --pull 2 --push 2 || t_fail "nbd-managed write"
t_timeout 120 "$REG" region --strategy uffd -s 31 "$SRC" || t_fail "uffd does not see what nbd-managed wrote"
t_timeout 60 "$CHECK" -s 31 verify "$SRC" || t_fail "the source does not hold what nbd-managed wrote"
"$CHECK" -s 31 gen 0 64M | cmp - "$T_DIR/src.img" || t_fail "cmp: the file differs"

t_timeout 120 "$REG" region --strategy nbd-direct -S 32 "$SRC" || t_fail "nbd-direct write"
t_timeout 120 "$REG" region --strategy uffd -s 32 "$SRC" || t_fail "uffd does not see what nbd-direct wrote"
t_timeout 120 "$REG" region --strategy nbd-managed -s 32 "$SRC" --pull 0 || t_fail "nbd-managed (no pull) does not read it"

t_timeout 120 "$REG" region --strategy uffd -S 33 "$SRC" || t_fail "uffd write"
t_timeout 120 "$REG" region --strategy nbd-managed -s 33 "$SRC" --pull 4 || t_fail "nbd-managed does not see what uffd wrote"
t_timeout 120 "$REG" region --strategy nbd-direct -s 33 "$SRC" || t_fail "nbd-direct does not see what uffd wrote"
t_timeout 20 "$REG" region --strategy nbd-direct -s 34 "$SRC" 2>/dev/null && t_fail "a wrong pattern verified"

# The remote is another server: region -> FUSE -> our server -> pipeline -> nbd:// -> r3serve --nbd
P=$(t_free_port)
t_bg "$R3SERVE" --nbd 127.0.0.1:$P --source "file://$T_DIR/remote.img?size=32M" 2>"$T_DIR/serve.log"
t_wait_port $P
t_timeout 120 "$REG" region --strategy nbd-managed -S 35 "nbd://127.0.0.1:$P/" --pull 2 || t_fail "nbd-managed over nbd:// write"
"$CHECK" -s 35 gen 0 32M | cmp - "$T_DIR/remote.img" || t_fail "the remote file differs after sync"

# The region contract: refused options, after_sync's chunk list, stats
for s in nbd-direct nbd-managed; do
    t_timeout 60 "$REG" contract $s "file://$T_DIR/contract.img?size=8M" || t_fail "$s: the region contract"
done

grep -q " $T_DIR/work" /proc/mounts && t_fail "a mount was left behind: $(grep " $T_DIR/work" /proc/mounts)"
[ -z "$(ls -A "$T_DIR/work")" ] || t_fail "left in the work directory: $(ls -A "$T_DIR/work")"
t_log "ok"
