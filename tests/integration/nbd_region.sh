#!/bin/bash
# nbd-direct and nbd-managed regions (FUSE file mmapped MAP_SHARED, served by
# an in-process NBD server): 64 MiB written through one strategy come back
# byte-identical through the uffd strategy on the same source after sync, and
# through a plain read of the source. Also over an nbd:// source served by
# r3serve --nbd, and with no mount left behind.
source "$top_srcdir/tests/integration/lib.sh"
[ -c /dev/fuse ] || t_skip "no /dev/fuse (FUSE is not available in this kernel/container)"
REG="$top_builddir/nbd/test/nbdregion"
CHECK="$top_builddir/nbd/test/nbdcheck"
R3SERVE="$top_builddir/r3serve"
SRC="file://$T_DIR/src.img?size=64M"
mkdir -p "$T_DIR/work"; export TMPDIR="$T_DIR/work"    # nbdregion mounts under here

t_timeout 120 "$REG" write nbd-managed "$SRC" 31 --pull 2 --push 2 || t_fail "nbd-managed write"
t_timeout 120 "$REG" verify uffd "$SRC" 31 || t_fail "uffd does not see what nbd-managed wrote"
t_timeout 60 "$CHECK" verify "$SRC" 31 || t_fail "the source does not hold what nbd-managed wrote"
"$CHECK" gen 64M 31 | cmp - "$T_DIR/src.img" || t_fail "cmp: the file differs"

t_timeout 120 "$REG" write nbd-direct "$SRC" 32 || t_fail "nbd-direct write"
t_timeout 120 "$REG" verify uffd "$SRC" 32 || t_fail "uffd does not see what nbd-direct wrote"
t_timeout 120 "$REG" verify nbd-managed "$SRC" 32 --pull 0 || t_fail "nbd-managed (no pull) does not read it"

t_timeout 120 "$REG" write uffd "$SRC" 33 || t_fail "uffd write"
t_timeout 120 "$REG" verify nbd-managed "$SRC" 33 --pull 4 || t_fail "nbd-managed does not see what uffd wrote"
t_timeout 120 "$REG" verify nbd-direct "$SRC" 33 || t_fail "nbd-direct does not see what uffd wrote"
t_timeout 20 "$REG" verify nbd-direct "$SRC" 34 2>/dev/null && t_fail "a wrong pattern verified"

# The remote is another server: region -> FUSE -> our server -> pipeline -> nbd:// -> r3serve --nbd
P=$(t_free_port)
t_bg "$R3SERVE" --nbd 127.0.0.1:$P --source "file://$T_DIR/remote.img?size=32M" 2>"$T_DIR/serve.log"
t_wait_port $P
t_timeout 120 "$REG" write nbd-managed "nbd://127.0.0.1:$P/" 35 --pull 2 || t_fail "nbd-managed over nbd:// write"
"$CHECK" gen 32M 35 | cmp - "$T_DIR/remote.img" || t_fail "the remote file differs after sync"

# The region contract: refused options, after_sync's chunk list, stats
for s in nbd-direct nbd-managed; do
    t_timeout 60 "$REG" contract $s "file://$T_DIR/contract.img?size=8M" || t_fail "$s: the region contract"
done

grep -q " $T_DIR/work" /proc/mounts && t_fail "a mount was left behind: $(grep " $T_DIR/work" /proc/mounts)"
[ -z "$(ls -A "$T_DIR/work")" ] || t_fail "left in the work directory: $(ls -A "$T_DIR/work")"
t_log "ok"
