#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# r3mount -u while a process still maps the file (issue 11): what the
# mapping wrote reaches the source (read back from the image file, another
# path), and the unmount is refused with "busy" (exit 1) while the mapping
# lives: the mount stays and keeps serving. Once the program has ended
# (without msync), r3mount -u syncs what it wrote last, exits 0, and the
# mount is gone.
source "$top_srcdir/tests/integration/lib.sh"
[ -c /dev/fuse ] || t_skip "no /dev/fuse (FUSE is not available in this kernel/container)"
t_need python3
R3MOUNT="$top_builddir/r3mount"
cd "$T_DIR"
head -c 16M /dev/zero > img
mkdir m
f=$(t_timeout 30 "$R3MOUNT" --mount fuse "file://$T_DIR/img" "$T_DIR/m") || t_fail "r3mount"
trap '"$R3MOUNT" -u "$T_DIR/m" 2>/dev/null; t_cleanup' EXIT
mounted() { awk -v m="$T_DIR/m" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
mounted || t_fail "not mounted"
count() { python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); print(d.count(bytes([int(sys.argv[2], 16)]) * 4096))' img "$1"; }

# The mapper: 4 MiB of 0x5a through a shared mapping (no msync), then it
# waits; told to go on, 4 MiB of 0x6b, and it exits (no msync either).
t_bg t_timeout 120 python3 -c '
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 16 << 20, mmap.MAP_SHARED)
m[0:4 << 20] = b"\x5a" * (4 << 20)
open("ready", "w").close()
while not os.path.exists("go"):
    time.sleep(0.05)
m[8 << 20:12 << 20] = b"\x6b" * (4 << 20)
os._exit(0)' "$f"
prog=$T_LAST_PID
for _ in $(seq 300); do [ -e ready ] && break; sleep 0.1; done
[ -e ready ] || t_fail "the mapper did not start"

rc=0
"$R3MOUNT" -u "$T_DIR/m" 2> err || rc=$?
[ "$rc" -eq 1 ] || t_fail "r3mount -u with a live mapping: exit $rc (want 1): $(cat err)"
grep -q "busy" err || t_fail "no 'busy' sentence: $(cat err)"
mounted || t_fail "the mount is gone after a refused unmount"
n=$(count 5a)
[ "$n" -eq 1024 ] || t_fail "the image holds $n of the 1024 pages the mapping wrote"
t_log "refused while mapped: $(cat err)"
t_log "the image holds the 1024 pages the mapping wrote"

touch go
wait "$prog" || t_fail "the mapper failed after the refused unmount"
"$R3MOUNT" -u "$T_DIR/m" 2> err || t_fail "r3mount -u after the mapper ended: $(cat err)"
mounted && t_fail "still mounted after r3mount -u"
n5=$(count 5a) n6=$(count 6b)
[ "$n5" -eq 1024 ] && [ "$n6" -eq 1024 ] || t_fail "after unmount the image holds $n5 + $n6 of 1024 + 1024 pages"
t_log "after the mapper ended: unmounted, the image holds both writes"
t_log PASS
