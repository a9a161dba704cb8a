#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The kernel path: /dev/nbdX connected through netlink by r3mount --mount
# kernel, data through the block device, 20 connect/disconnect cycles that
# must never leave a device busy. Skipped where the kernel has no nbd module.
source "$top_srcdir/tests/integration/lib.sh"
grep -qw nbd /proc/modules 2>/dev/null || [ -d /sys/module/nbd ] || t_skip "the kernel has no nbd module loaded"
[ -b /dev/nbd0 ] || t_skip "no /dev/nbd0 device node"
R3MOUNT="$top_builddir/r3mount"
mkdir -p "$T_DIR/m"
head -c 16M /dev/urandom > "$T_DIR/r"
for i in $(seq 1 20); do
    dev=$(t_timeout 30 "$R3MOUNT" --mount kernel mem:?size=16M "$T_DIR/m") || t_fail "cycle $i: r3mount --mount kernel"
    case "$dev" in /dev/nbd*) ;; *) t_fail "cycle $i: not a device: $dev" ;; esac
    dd if="$T_DIR/r" of="$dev" bs=1M oflag=direct conv=fsync status=none || t_fail "cycle $i: write"
    cmp <(dd if="$dev" bs=1M iflag=direct status=none) "$T_DIR/r" || t_fail "cycle $i: data differs"
    t_timeout 60 "$R3MOUNT" -u "$T_DIR/m" || t_fail "cycle $i: r3mount -u"
    [ "$(cat /sys/block/${dev#/dev/}/size)" = 0 ] || t_fail "cycle $i: $dev still connected"
done
t_log "ok"
