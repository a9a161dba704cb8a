#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# 100 mount/unmount cycles with r3mount (daemon + r3mount -u), alternating
# nbd-direct and nbd-managed, each writing and reading a block: nothing
# (mount, process, device) may be left behind.
source "$top_srcdir/tests/integration/lib.sh"
[ -c /dev/fuse ] || t_skip "no /dev/fuse (FUSE is not available in this kernel/container)"
t_need python3
t_timeout 300 python3 "$top_srcdir/tests/integration/nbd_mount_cycles.py" "$top_builddir/r3mount" "$T_DIR" 100 \
    || t_fail "mount cycles"
t_log "ok"
