#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Raw-protocol checks of an NBD server's zeros (no NBD library in between).
   nbd_status.py map FILE            the SEEK_DATA/SEEK_HOLE view of FILE as
                                     "OFF LEN data|zero" lines (runs merged)
   nbd_status.py norm                nbdinfo --map output (stdin) as those lines
   nbd_status.py check ADDR FILE     ADDR (HOST:PORT or a unix socket path)
                                     serves the bytes of FILE; checks:
  - LIST_META_CONTEXT with no query and with "base:" names base:allocation;
  - SET_META_CONTEXT base:allocation, then BLOCK_STATUS of the whole export:
    the descriptors, merged, are FILE's SEEK_HOLE view (holes are
    HOLE|ZERO, data is 0), never past the request; REQ_ONE gives one;
  - structured READs over holes and data read FILE's bytes, and at least
    one of them came (in part) as an OFFSET_HOLE chunk;
  - BLOCK_STATUS on a connection that selected no context is refused
    (EINVAL), and so is SET_META_CONTEXT before structured replies.
Exit 0, or 1 with the first difference."""
import os, socket, struct, sys

IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x0003e889045565a9
SIMPLE, STRUCTURED = 0x67446698, 0x668e33ef
CTX = b"base:allocation"


def fail(msg):
    print("nbd_status.py: " + msg, file=sys.stderr)
    sys.exit(1)


def seek_map(path):
    """[(off, len, 'data'|'zero')] from SEEK_DATA/SEEK_HOLE."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    off = 0
    while off < size:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            d = size
        if d > off:
            out.append((off, d - off, "zero"))
        if d >= size:
            break
        h = os.lseek(fd, d, os.SEEK_HOLE)
        out.append((d, h - d, "data"))
        off = h
    os.close(fd)
    return merge(out)


def merge(runs):
    out = []
    for o, n, k in runs:
        if out and out[-1][2] == k and out[-1][0] + out[-1][1] == o:
            out[-1] = (out[-1][0], out[-1][1] + n, k)
        else:
            out.append((o, n, k))
    return out


def show(runs):
    return "".join("%d %d %s\n" % r for r in runs)


def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            fail("the server closed the connection")
        b += c
    return b


class Conn:
    def __init__(self, addr):
        if addr.startswith("/"):
            self.s = socket.socket(socket.AF_UNIX)
            self.s.connect(addr)
        else:
            h, p = addr.rsplit(":", 1)
            self.s = socket.create_connection((h, int(p)))
        self.s.settimeout(20)
        g = recvn(self.s, 18)
        if g[:8] != b"NBDMAGIC" or struct.unpack(">Q", g[8:16])[0] != IHAVEOPT:
            fail("not a newstyle NBD server")
        self.s.sendall(struct.pack(">I", 3))      # FIXED_NEWSTYLE | NO_ZEROES
        self.cookie = 0

    def opt(self, o, data=b""):
        """Send option o; return its replies [(type, data)] up to the final one."""
        self.s.sendall(struct.pack(">QII", IHAVEOPT, o, len(data)) + data)
        reps = []
        while True:
            m, ro, t, n = struct.unpack(">QIII", recvn(self.s, 20))
            if m != REPMAGIC or ro != o:
                fail("bad option reply to %d" % o)
            if n > 1 << 16:
                fail("option reply of %d bytes" % n)
            reps.append((t, recvn(self.s, n)))
            if t == 1 or t & 0x80000000:
                return reps

    def meta(self, o, queries, name=b""):
        d = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
        for q in queries:
            d += struct.pack(">I", len(q)) + q
        return self.opt(o, d)

    def go(self):
        reps = self.opt(7, struct.pack(">IH", 0, 0))
        if reps[-1][0] != 1:
            fail("GO refused: %r" % (reps,))
        for t, d in reps:
            if t == 3 and struct.unpack(">H", d[:2])[0] == 0:
                self.size = struct.unpack(">Q", d[2:10])[0]

    def request(self, typ, off, n, flags=0):
        """Send a request; return its chunks [(type, payload)] (structured)
        or [('simple', error)]."""
        self.cookie += 1
        self.s.sendall(struct.pack(">IHHQQI", 0x25609513, flags, typ, self.cookie, off, n))
        chunks = []
        while True:
            magic = struct.unpack(">I", recvn(self.s, 4))[0]
            if magic == SIMPLE:
                err, ck = struct.unpack(">IQ", recvn(self.s, 12))
                if ck != self.cookie:
                    fail("a reply to another cookie")
                return [("simple", err)]
            if magic != STRUCTURED:
                fail("bad reply magic 0x%x" % magic)
            fl, t, ck, ln = struct.unpack(">HHQI", recvn(self.s, 16))
            if ck != self.cookie:
                fail("a chunk for another cookie")
            if ln > (32 << 20) + 8:
                fail("a chunk of %d bytes" % ln)
            chunks.append((t, recvn(self.s, ln)))
            if fl & 1:
                return chunks


def read(c, f, off, n):
    """A structured READ: the bytes must be FILE's; returns the chunk types."""
    got = bytearray(n)
    seen = bytearray(n)
    types = []
    for t, p in c.request(0, off, n):
        types.append(t)
        if t == 1:
            o = struct.unpack(">Q", p[:8])[0] - off
            d = p[8:]
        elif t == 2:
            o, hl = struct.unpack(">QI", p)
            o -= off
            d = bytes(hl)
        else:
            fail("READ %d+%d: chunk type %d" % (off, n, t))
        if o < 0 or o + len(d) > n or any(seen[o:o + len(d)]):
            fail("READ %d+%d: a chunk outside the request or overlapping" % (off, n))
        got[o:o + len(d)] = d
        seen[o:o + len(d)] = b"\x01" * len(d)
    if not all(seen):
        fail("READ %d+%d: bytes not covered" % (off, n))
    f.seek(off)
    if bytes(got) != f.read(n):
        fail("READ %d+%d: other bytes than the file's" % (off, n))
    return types


def status(c, cid, off, n, flags=0):
    ch = c.request(7, off, n, flags)
    if len(ch) != 1 or ch[0][0] != 5:
        fail("BLOCK_STATUS %d+%d: not one block status chunk: %r" % (off, n, [t for t, _ in ch]))
    p = ch[0][1]
    if len(p) < 12 or (len(p) - 4) % 8 or struct.unpack(">I", p[:4])[0] != cid:
        fail("BLOCK_STATUS %d+%d: a malformed chunk" % (off, n))
    runs, o = [], off
    for i in range(4, len(p), 8):
        ln, st = struct.unpack(">II", p[i:i + 8])
        if ln == 0 or st not in (0, 3):
            fail("BLOCK_STATUS %d+%d: descriptor %d %d" % (off, n, ln, st))
        runs.append((o, ln, "zero" if st == 3 else "data"))
        o += ln
    if o > off + n:
        fail("BLOCK_STATUS %d+%d: descriptors reach %d" % (off, n, o))
    return runs


def check(addr, path):
    want = seek_map(path)
    if not any(k == "zero" for _, _, k in want) or not any(k == "data" for _, _, k in want):
        fail("the file needs holes and data")
    c = Conn(addr)
    r = c.meta(10, [CTX])
    if r[-1][0] != 0x80000003:
        fail("SET_META_CONTEXT before STRUCTURED_REPLY was not refused as invalid: %r" % (r,))
    if c.opt(8)[-1][0] != 1:
        fail("no structured replies")
    for q in ([], [b"base:"], [CTX]):
        r = c.meta(9, q)
        if r[-1][0] != 1 or not any(t == 4 and d[4:] == CTX for t, d in r):
            fail("LIST_META_CONTEXT %r does not name base:allocation: %r" % (q, r))
    r = c.meta(10, [b"x-nothing:here", CTX])
    ids = [struct.unpack(">I", d[:4])[0] for t, d in r if t == 4 and d[4:] == CTX]
    if r[-1][0] != 1 or len(ids) != 1:
        fail("SET_META_CONTEXT base:allocation: %r" % (r,))
    c.go()
    size = os.path.getsize(path)
    if c.size != size:
        fail("export size %d, file size %d" % (c.size, size))
    # the whole export, in as many requests as the server wants
    runs, off = [], 0
    while off < size:
        got = status(c, ids[0], off, size - off)
        runs += got
        off = got[-1][0] + got[-1][1]
    if merge(runs) != want:
        fail("BLOCK_STATUS says\n%sthe file's SEEK_HOLE view is\n%s" % (show(merge(runs)), show(want)))
    # REQ_ONE: one descriptor, which starts where asked
    for o, n, k in want:
        one = status(c, ids[0], o + n // 2, size - o - n // 2, flags=8)
        if len(one) != 1 or one[0][2] != k or one[0][0] + one[0][1] > o + n:
            fail("REQ_ONE at %d: %r, the file has %d+%d %s" % (o + n // 2, one, o, n, k))
    # reads across holes and data: right bytes, and holes sent as holes
    holes = False
    with open(path, "rb") as f:
        for o, n, k in want:
            lo = max(0, o - 65536)
            hi = min(size, o + n + 65536)
            for a, b in ((o, o + n), (lo, hi), (o, min(hi, o + (1 << 20)))):
                b = min(b, a + (8 << 20))
                if b > a:
                    holes |= 2 in read(c, f, a, b - a)
    if not holes:
        fail("no READ was answered with an OFFSET_HOLE chunk")
    c.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 0, 0, 0))   # DISC
    # no context selected: BLOCK_STATUS is an error, not an answer
    c = Conn(addr)
    c.opt(8)
    c.go()
    r = c.request(7, 0, 4096)
    err = r[0][1] if r[0][0] == "simple" else struct.unpack(">I", r[0][1][:4])[0] if r[0][0] & 0x8000 else 0
    if err != 22:
        fail("BLOCK_STATUS without a context: %r, not EINVAL" % (r,))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "map":
        sys.stdout.write(show(seek_map(sys.argv[2])))
    elif len(sys.argv) == 2 and sys.argv[1] == "norm":
        runs = []
        for line in sys.stdin:
            w = line.split()
            if len(w) >= 3:
                runs.append((int(w[0]), int(w[1]), "zero" if int(w[2]) & 2 else "data"))
        sys.stdout.write(show(merge(runs)))
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
