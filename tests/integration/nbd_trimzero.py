#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""NBD TRIM and WRITE_ZEROES against r3serve --nbd on a file source, from a
raw socket; every result is read back from the backing file itself.
   nbd_trimzero.py RW_PORT RW_FILE RO_PORT RO_FILE
The backing files hold ORIG (the file's first bytes, read at start) and the
server may change only what each request names."""
import os, socket, struct, sys

RW, RW_FILE, RO, RO_FILE = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
IHAVEOPT = 0x49484156454F5054
REQ, SIMPLE = 0x25609513, 0x67446698
READ, WRITE, DISC, FLUSH, TRIM, CACHE, WRITE_ZEROES = 0, 1, 2, 3, 4, 5, 6
FUA, NO_HOLE = 1, 2
EPERM, EINVAL, ENOSPC = 1, 22, 28
HAS_FLAGS, READ_ONLY, SEND_TRIM, SEND_WRITE_ZEROES = 1, 2, 32, 64
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("eof after %d of %d bytes" % (len(b), n))
        b += c
    return b


def ready(port):
    """Connect, fixed newstyle, NBD_OPT_GO on the default export: (socket, size, flags)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    g = recvn(s, 18)
    assert g[:8] == b"NBDMAGIC" and struct.unpack(">Q", g[8:16])[0] == IHAVEOPT
    s.sendall(struct.pack(">I", 3))
    s.sendall(struct.pack(">QII", IHAVEOPT, 7, 6) + struct.pack(">IH", 0, 0))
    size = flags = None
    while True:
        magic, o, t, n = struct.unpack(">QIII", recvn(s, 20))
        d = recvn(s, n)
        if t == 1:
            return s, size, flags
        if t & 0x80000000:
            raise RuntimeError("GO refused: %x" % t)
        if t == 3 and struct.unpack(">H", d[:2])[0] == 0:
            size, flags = struct.unpack(">QH", d[2:12])


def cmd(s, typ, off, n, flags=0, payload=b"", cookie=[0]):
    cookie[0] += 1
    s.sendall(struct.pack(">IHHQQI", REQ, flags, typ, cookie[0], off, n) + payload)
    magic, err, ck = struct.unpack(">IIQ", recvn(s, 16))
    assert magic == SIMPLE and ck == cookie[0], (hex(magic), ck, cookie[0])
    data = recvn(s, n) if typ == READ and err == 0 else b""
    return err, data


def backing(path, off, n):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


size = os.path.getsize(RW_FILE)
orig = backing(RW_FILE, 0, size)
s, nsize, flags = ready(RW)
check(nsize == size, "export size %s, file size %d" % (nsize, size))
check(flags & SEND_TRIM and flags & SEND_WRITE_ZEROES and not flags & READ_ONLY,
      "a writable export advertises TRIM and WRITE_ZEROES (flags %#x)" % flags)
want = bytearray(orig)


def zero(off, n, fl, what):
    err, _ = cmd(s, WRITE_ZEROES, off, n, fl)
    check(err == 0, "%s: error %d" % (what, err))
    want[off:off + n] = bytes(n)
    got = backing(RW_FILE, 0, size)
    check(got == bytes(want), "%s: the backing file differs%s" % (what, next(
        (" at %d" % i for i in range(size) if got[i] != want[i]), "")))


# 1. WRITE_ZEROES: unaligned, larger than the server's 1 MiB zero buffer, FUA;
#    small with NO_HOLE; one byte at the very end.
zero(100003, (3 << 20) + 4097, FUA, "WRITE_ZEROES of 3 MiB + 4097 at 100003 with FUA")
zero(5 << 20, 4096, NO_HOLE, "WRITE_ZEROES with NO_HOLE")
zero(size - 1, 1, 0, "WRITE_ZEROES of the last byte")
err, d = cmd(s, READ, 100000, 8192)
check(err == 0 and d == bytes(want[100000:108192]), "a READ over the zeroed edge")

# 2. TRIM is advisory (the data may stay); it succeeds, with FUA too, and
#    changes nothing outside its range.
err, _ = cmd(s, TRIM, 8 << 20, 1 << 20, FUA)
check(err == 0, "TRIM with FUA: error %d" % err)
err, _ = cmd(s, TRIM, 7 << 20, 4096)
check(err == 0, "TRIM: error %d" % err)
got = backing(RW_FILE, 0, size)
for lo, hi in ((0, 7 << 20), ((7 << 20) + 4096, 8 << 20), (9 << 20, size)):
    check(got[lo:hi] == bytes(want[lo:hi]), "TRIM changed bytes in [%d, %d)" % (lo, hi))
for lo, hi in ((7 << 20, (7 << 20) + 4096), (8 << 20, 9 << 20)):
    check(got[lo:hi] in (bytes(want[lo:hi]), bytes(hi - lo)),
          "the trimmed range [%d, %d) holds neither its data nor zeros" % (lo, hi))
want[:] = got

# 3. Out of range and bad flags: refused with the spec's errors, nothing changed.
for typ, off, n, fl, e, what in (
        (WRITE_ZEROES, size - 4096, 8192, 0, ENOSPC, "WRITE_ZEROES past the end"),
        (WRITE_ZEROES, size + 1, 1, 0, ENOSPC, "WRITE_ZEROES after the end"),
        (WRITE_ZEROES, (1 << 64) - 4096, 8192, 0, ENOSPC, "WRITE_ZEROES whose end wraps"),
        (TRIM, size - 4096, 8192, 0, EINVAL, "TRIM past the end"),
        (TRIM, 0, 4096, 0x40, EINVAL, "TRIM with an unknown flag"),
        (WRITE_ZEROES, 0, 4096, 0x40, EINVAL, "WRITE_ZEROES with an unknown flag")):
    err, _ = cmd(s, typ, off, n, fl)
    check(err == e, "%s: error %d, not %d" % (what, err, e))
check(backing(RW_FILE, 0, size) == bytes(want), "a refused request changed the backing file")
err, _ = cmd(s, FLUSH, 0, 0)
check(err == 0, "FLUSH after the refusals: error %d" % err)
s.sendall(struct.pack(">IHHQQI", REQ, 0, DISC, 0, 0, 0))
s.close()

# 4. A read-only export: TRIM and WRITE_ZEROES refused with EPERM, file unchanged.
ro_orig = backing(RO_FILE, 0, os.path.getsize(RO_FILE))
r, rsize, rflags = ready(RO)
check(rflags & READ_ONLY and not rflags & (SEND_TRIM | SEND_WRITE_ZEROES),
      "a read-only export advertises READ_ONLY only (flags %#x)" % rflags)
for typ, what in ((WRITE_ZEROES, "WRITE_ZEROES"), (TRIM, "TRIM")):
    err, _ = cmd(r, typ, 0, 65536)
    check(err == EPERM, "%s on a read-only export: error %d, not EPERM" % (what, err))
check(backing(RO_FILE, 0, len(ro_orig)) == ro_orig, "a read-only export's file changed")
r.close()
sys.exit(1 if failures else 0)
