#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# r3mount's surface (issue 10): --help/--version, two-line usage errors
# (exit 2), durations need a unit, a bad --nbd-listen; the FUSE file: a
# write past the end fails at write time and the size does not change, the
# bytes written are read back through NBD (another path), the file's times
# follow writes, and mounting on a mount point is refused.
source "$top_srcdir/tests/integration/lib.sh"
[ -c /dev/fuse ] || t_skip "no /dev/fuse (FUSE is not available in this kernel/container)"
for t in nbdcopy python3 cmp; do t_need $t; done
R3MOUNT="$top_builddir/r3mount"

out=$("$R3MOUNT" --help) || t_fail "--help exit status"
echo "$out" | grep -q "^Usage: r3mount" || t_fail "--help: $out"
"$R3MOUNT" -V | grep -qE "^r3mount \(r3\) [0-9]" || t_fail "--version: $("$R3MOUNT" -V)"
usage_err() {    # WANT ARGS...: exit 2, exactly two lines, the first says WANT
    local want=$1; shift
    "$R3MOUNT" "$@" >"$T_DIR/out" 2>"$T_DIR/err"; local rc=$?
    [ $rc -eq 2 ] || t_fail "r3mount $*: exit $rc (want 2)"
    [ ! -s "$T_DIR/out" ] || t_fail "r3mount $*: printed on stdout: $(cat "$T_DIR/out")"
    [ "$(wc -l < "$T_DIR/err")" -eq 2 ] || t_fail "r3mount $*: not two lines: $(cat "$T_DIR/err")"
    head -1 "$T_DIR/err" | grep -q "^r3mount: .*$want" || t_fail "r3mount $*: $(head -1 "$T_DIR/err")"
    tail -1 "$T_DIR/err" | grep -qx "Try 'r3mount --help' for more information." || t_fail "r3mount $*: second line"
}
mkdir -p "$T_DIR/m"
usage_err "unknown option '--bogus'" --bogus mem: "$T_DIR/m"
usage_err "needs a unit" --push-interval 500 mem: "$T_DIR/m"
usage_err "needs a value" mem: "$T_DIR/m" --chunk
usage_err "out of range" --nbd-listen 127.0.0.1:99999 mem: "$T_DIR/m"
usage_err "not a loopback address" --nbd-listen 0.0.0.0:10809 mem: "$T_DIR/m"
usage_err "missing MOUNTPOINT" mem:
usage_err "not a directory" mem: "$T_DIR/nonexistent"
usage_err "is not nbd-direct or nbd-managed" --strategy fast mem: "$T_DIR/m"

P=$(t_free_port)
f=$(t_timeout 30 "$R3MOUNT" --mount fuse --nbd-listen 127.0.0.1:$P "mem:?size=1M" "$T_DIR/m") || t_fail "r3mount"
trap '"$R3MOUNT" -u "$T_DIR/m" 2>/dev/null; t_cleanup' EXIT
[ "$f" = "$T_DIR/m/disk" ] || t_fail "r3mount printed '$f'"
[ "$(stat -c %s "$f")" -eq 1048576 ] || t_fail "size $(stat -c %s "$f")"
m0=$(stat -c %Y.%y "$f")

# Past the end: fails now, and the size stays
dd if=/dev/zero of="$f" bs=4096 seek=256 count=1 conv=notrunc 2>"$T_DIR/dd" && t_fail "a write past the end succeeded"
grep -q "No space left" "$T_DIR/dd" || t_fail "a write past the end: $(cat "$T_DIR/dd")"
[ "$(stat -c %s "$f")" -eq 1048576 ] || t_fail "the size changed to $(stat -c %s "$f")"
truncate -s 2M "$f" 2>/dev/null && t_fail "truncate to a larger size succeeded"
[ "$(stat -c %s "$f")" -eq 1048576 ] || t_fail "the size changed to $(stat -c %s "$f") after truncate"

# Inside: written, read back through NBD, and the times move
sleep 1.1
head -c 1048576 /dev/urandom > "$T_DIR/rand"
dd if="$T_DIR/rand" of="$f" bs=64k conv=notrunc,fsync 2>/dev/null || t_fail "writing the file"
t_timeout 30 nbdcopy "nbd://127.0.0.1:$P/" "$T_DIR/back" || t_fail "nbdcopy"
cmp "$T_DIR/rand" "$T_DIR/back" || t_fail "NBD reads other bytes than were written to the file"
sleep 1.1          # attributes are cached up to 1 s
m1=$(stat -c %Y.%y "$f")
[ "$m0" != "$m1" ] || t_fail "the modification time did not change on write ($m0)"
touch -d "2020-01-02 03:04:05" "$f" || t_fail "touch"
stat -c %y "$f" | grep -q "^2020-01-02 03:04:05" || t_fail "touch -d did not set the time: $(stat -c %y "$f")"

# A mount point is refused (exit 1, one line)
"$R3MOUNT" --mount fuse "mem:?size=1M" "$T_DIR/m" 2>"$T_DIR/err" && t_fail "mounted over a mount point"
grep -q "already a mount point" "$T_DIR/err" || t_fail "mount over a mount point: $(cat "$T_DIR/err")"
"$R3MOUNT" -u "$T_DIR/m" || t_fail "r3mount -u"
mountpoint -q "$T_DIR/m" && t_fail "still mounted after r3mount -u"
t_log "ok"
