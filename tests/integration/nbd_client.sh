#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Our NBD client (the nbd:// and nbd+unix:// sources) against independent
# servers: nbdkit memory, nbdkit file, qemu-nbd on a file. Data written by
# our client is read back by it and checked through another path (nbdcopy,
# or the file behind the server).
source "$top_srcdir/tests/integration/lib.sh"
for t in nbdkit qemu-nbd nbdcopy cmp; do t_need $t; done
CHECK="$top_builddir/tests/r3check"
SIZE=64M

"$CHECK" -s 21 gen 0 $SIZE > "$T_DIR/expect21"
"$CHECK" -s 22 gen 0 $SIZE > "$T_DIR/expect22"
"$CHECK" -s 23 gen 0 $SIZE > "$T_DIR/expect23"

# nbdkit memory over TCP: write, verify, then nbdcopy reads it back
P=$(t_free_port)
t_bg nbdkit -f -i 127.0.0.1 -p $P memory $SIZE
t_wait_port $P
t_timeout 60 "$CHECK" -s 21 -t 8 write "nbd://127.0.0.1:$P/" || t_fail "write to nbdkit memory"
t_timeout 60 "$CHECK" -s 21 -t 3 verify "nbd://127.0.0.1:$P/" || t_fail "verify from nbdkit memory"
t_timeout 60 nbdcopy "nbd://127.0.0.1:$P/" "$T_DIR/out" || t_fail "nbdcopy"
cmp "$T_DIR/expect21" "$T_DIR/out" || t_fail "nbdkit memory holds other bytes than we wrote"
t_timeout 20 "$CHECK" -s 99 verify "nbd://127.0.0.1:$P/" 2>/dev/null && t_fail "a wrong pattern verified"

# nbdkit file over a Unix socket
truncate -s $SIZE "$T_DIR/kit.img"
t_bg nbdkit -f -U "$T_DIR/kit.sock" file "$T_DIR/kit.img"
t_wait_port "$T_DIR/kit.sock"
t_timeout 60 "$CHECK" -s 22 write "nbd+unix:///?socket=$T_DIR/kit.sock" || t_fail "write to nbdkit file"
t_timeout 60 "$CHECK" -s 22 verify "nbd+unix:///?socket=$T_DIR/kit.sock" || t_fail "verify from nbdkit file"
cmp "$T_DIR/expect22" "$T_DIR/kit.img" || t_fail "nbdkit's file holds other bytes than we wrote"

# qemu-nbd on a file, with a named export
truncate -s $SIZE "$T_DIR/q.img"
P2=$(t_free_port)
t_bg qemu-nbd -f raw -b 127.0.0.1 -p $P2 -x vol --shared=4 -t "$T_DIR/q.img"
t_wait_port $P2
t_timeout 60 "$CHECK" -s 23 write "nbd://127.0.0.1:$P2/vol" || t_fail "write to qemu-nbd"
t_timeout 60 "$CHECK" -s 23 verify "nbd://127.0.0.1:$P2/vol" || t_fail "verify from qemu-nbd"
t_timeout 20 "$CHECK" -s 23 verify "nbd://127.0.0.1:$P2/novol" 2>"$T_DIR/err" && t_fail "an unknown export opened"
grep -q "export" "$T_DIR/err" || t_fail "the error for an unknown export does not say so: $(cat "$T_DIR/err")"
kill $T_LAST_PID; sleep 0.3
cmp "$T_DIR/expect23" "$T_DIR/q.img" || t_fail "qemu-nbd's file holds other bytes than we wrote"

# A dead server: an error, not a hang
t_timeout 20 "$CHECK" -s 23 verify "nbd://127.0.0.1:$P2/vol" 2>/dev/null && t_fail "a dead server verified"
t_log "ok"
