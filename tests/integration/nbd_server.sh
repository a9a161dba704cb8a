#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Our NBD server (r3serve --nbd) with independent clients: nbdinfo, nbdcopy,
# qemu-img, qemu-io (aio in flight together), fio --ioengine=nbd with verify.
source "$top_srcdir/tests/integration/lib.sh"
for t in nbdinfo nbdcopy qemu-img qemu-io fio python3 cmp; do t_need $t; done
R3SERVE="$top_builddir/r3serve"

P=$(t_free_port)
t_bg "$R3SERVE" --nbd 127.0.0.1:$P --source "file://$T_DIR/disk.img?size=256M" --export disk 2>"$T_DIR/serve.log"
t_wait_port $P
URI="nbd://127.0.0.1:$P/disk"

# nbdinfo: size, flags, block sizes (JSON), and --list
t_timeout 20 nbdinfo --json "$URI" > "$T_DIR/info.json" || t_fail "nbdinfo failed"
python3 - "$T_DIR/info.json" <<'PY' || t_fail "nbdinfo reports wrong values"
import json, sys
j = json.load(open(sys.argv[1]))
e = j["exports"][0]
assert j["protocol"] == "newstyle-fixed", j["protocol"]
assert j["TLS"] is False
assert e["export-name"] == "disk"
assert e["export-size"] == 256 << 20, e["export-size"]
for k in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn", "can_cache"):
    assert e[k] is True, k
assert e["is_read_only"] is False
assert e["block_size_minimum"] == 1 and e["block_size_preferred"] == 4096
assert e["block_size_maximum"] == 32 << 20
PY
t_timeout 20 nbdinfo --list "nbd://127.0.0.1:$P" 2>/dev/null | grep -q "disk" && t_fail "nbdinfo --list shows the export without --list-exports"
t_timeout 20 nbdinfo "nbd://127.0.0.1:$P/nosuch" >"$T_DIR/nosuch" 2>&1 && t_fail "an unknown export was accepted"
grep -q "disk" "$T_DIR/nosuch" && t_fail "a wrong export name was answered with the real one: $(cat "$T_DIR/nosuch")"

# nbdcopy: 256 MiB of random data in, back out, compared
head -c 256M /dev/urandom > "$T_DIR/rand.bin"
t_timeout 120 nbdcopy "$T_DIR/rand.bin" "$URI" || t_fail "nbdcopy upload failed"
t_timeout 120 nbdcopy "$URI" "$T_DIR/back.bin" || t_fail "nbdcopy download failed"
cmp "$T_DIR/rand.bin" "$T_DIR/back.bin" || t_fail "nbdcopy: data read back differs"
# ... and the file behind the server holds the same bytes
cmp "$T_DIR/rand.bin" "$T_DIR/disk.img" || t_fail "the source file differs from what nbdcopy wrote"
rm -f "$T_DIR/back.bin"

# qemu-img convert both ways (64 MiB)
head -c 64M /dev/urandom > "$T_DIR/q.bin"
truncate -s 256M "$T_DIR/q.bin"
t_timeout 60 qemu-img convert -n -f raw -O raw "$T_DIR/q.bin" "$URI" || t_fail "qemu-img convert to NBD failed"
t_timeout 60 qemu-img convert -f raw -O raw "$URI" "$T_DIR/q.out" || { tail -5 "$T_DIR/serve.log" >&2; t_fail "qemu-img convert from NBD failed"; }
cmp "$T_DIR/q.bin" "$T_DIR/q.out" || t_fail "qemu-img convert: data differs"
rm -f "$T_DIR/q.out" "$T_DIR/rand.bin"

# qemu-io: writes and reads in flight together (aio), then checked with -P
t_timeout 60 qemu-io -f raw "$URI" \
    -c 'aio_write -P 0x11 0 1M' -c 'aio_write -P 0x22 1M 1M' -c 'aio_write -P 0x33 2M 3M' \
    -c 'aio_flush' >"$T_DIR/qio1.log" 2>&1 || t_fail "qemu-io aio_write failed"
t_timeout 60 qemu-io -f raw "$URI" \
    -c 'aio_read -P 0x11 0 1M' -c 'aio_write -P 0x44 8M 2M' -c 'aio_read -P 0x22 1M 1M' \
    -c 'aio_read -P 0x33 2M 3M' -c 'aio_write -z 16M 4M' -c 'aio_flush' \
    -c 'read -P 0x44 8M 2M' -c 'read -P 0 16M 4M' >"$T_DIR/qio2.log" 2>&1 || t_fail "qemu-io aio failed"
grep -qi "pattern verification failed\|error\|fail" "$T_DIR/qio2.log" && { cat "$T_DIR/qio2.log" >&2; t_fail "qemu-io saw wrong data"; }
python3 - "$T_DIR/disk.img" <<'PY' || t_fail "the source file does not hold qemu-io's writes"
import sys
d = open(sys.argv[1], "rb").read(20 << 20)
M = 1 << 20
assert d[0:M] == b"\x11" * M and d[M:2*M] == b"\x22" * M and d[2*M:5*M] == b"\x33" * (3*M)
assert d[8*M:10*M] == b"\x44" * (2*M) and d[16*M:20*M] == bytes(4*M)
PY

# fio: 4 KiB random writes at QD 32, verified with crc32c
t_timeout 120 fio --name=verify --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k --iodepth=32 \
    --size=64M --verify=crc32c --do_verify=1 --verify_fatal=1 --output="$T_DIR/fio.log" \
    || { cat "$T_DIR/fio.log" >&2; t_fail "fio verify failed"; }
grep -q "err= 0" "$T_DIR/fio.log" || { cat "$T_DIR/fio.log" >&2; t_fail "fio reported errors"; }
t_log "ok"
