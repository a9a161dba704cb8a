#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Bad input against r3serve --nbd, from raw sockets. Usage:
   nbd_badinput.py PORT PID FENCE_PORT LOGFILE
PORT: a plain server on mem:?size=64M; FENCE_PORT: the same with a 100 ms
delay stage. After every case a control connection must still work."""
import os, socket, struct, sys, time

PORT, PID, FPORT, LOG = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
IHAVEOPT = 0x49484156454F5054
REQ, SIMPLE = 0x25609513, 0x67446698
READ, WRITE, DISC, FLUSH = 0, 1, 2, 3
failures = []

def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)

def conn(port=PORT):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("eof after %d of %d bytes" % (len(b), n))
        b += c
    return b

def greet(s, flags=3):
    g = recvn(s, 18)
    assert g[:8] == b"NBDMAGIC" and struct.unpack(">Q", g[8:16])[0] == IHAVEOPT
    s.sendall(struct.pack(">I", flags))

def opt(s, o, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, o, len(data)) + data)

def rep(s):
    magic, o, t, n = struct.unpack(">QIII", recvn(s, 20))
    assert magic == 0x3e889045565a9
    return o, t, recvn(s, n)

def go(s, name=b""):
    opt(s, 7, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    size = None
    while True:
        o, t, d = rep(s)
        if t == 1:
            return size
        if t == 3 and struct.unpack(">H", d[:2])[0] == 0:
            size = struct.unpack(">Q", d[2:10])[0]
        if t & 0x80000000:
            raise RuntimeError("GO refused: %x" % t)

def ready(port=PORT):
    s = conn(port)
    greet(s)
    go(s)
    return s

def req(s, typ, cookie, off, n, flags=0, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQ, flags, typ, cookie, off, n) + payload)

def reply(s, readlen=0):
    magic, err, cookie = struct.unpack(">IIQ", recvn(s, 16))
    assert magic == SIMPLE, hex(magic)
    data = recvn(s, readlen) if err == 0 and readlen else b""
    return err, cookie, data

def closed(s, timeout=5):
    """True if the server closed the connection (EOF or reset) within timeout."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False

def rss_kib():
    for line in open("/proc/%d/status" % PID):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

control = ready()
ctl_n = [0]
def control_ok(what):
    ctl_n[0] += 1
    pat = bytes([ctl_n[0] % 251 + 1]) * 4096
    try:
        req(control, WRITE, 1, 60 << 20, 4096, payload=pat)
        e1 = reply(control)[0]
        req(control, READ, 2, 60 << 20, 4096)
        e2, _, d = reply(control, 4096)
        check(e1 == 0 and e2 == 0 and d == pat, "control connection after " + what)
    except Exception as ex:
        check(False, "control connection after %s: %s" % (what, ex))

# 1. EOF during the handshake, many times: no log flood, server fine
before_lines = open(LOG).read().count("\n")
for i in range(200):
    s = conn()
    if i % 2:
        recvn(s, 18)
    s.close()
time.sleep(0.3)
# at most one line per connection (the server logs each connection once)
check(open(LOG).read().count("\n") - before_lines <= 200, "log flood after 200 EOFs in the handshake")
control_ok("EOF during handshake")

# 2. truncated handshake: half the client flags
s = conn(); recvn(s, 18); s.sendall(b"\0\0"); s.close()
control_ok("truncated handshake")

# 3. garbage instead of the client flags / instead of an option
s = conn(); recvn(s, 18); s.sendall(os.urandom(4096)); check(closed(s), "garbage flags: connection kept"); s.close()
s = conn(); greet(s); s.sendall(b"\xff" * 4096); check(closed(s), "garbage option: connection kept"); s.close()
control_ok("garbage handshakes")

# 4. unknown options: ERR_UNSUP, payload skipped, negotiation goes on
s = conn(); greet(s)
opt(s, 0x77, os.urandom(100))
o, t, d = rep(s); check(o == 0x77 and t == 0x80000001, "unknown option: not ERR_UNSUP (%x)" % t)
opt(s, 0xdead, b"")
o, t, d = rep(s); check(t == 0x80000001, "unknown empty option: not ERR_UNSUP")
opt(s, 7, struct.pack(">I", 100) + b"x")        # GO whose lengths disagree
o, t, d = rep(s); check(t == 0x80000003, "inconsistent GO: not ERR_INVALID (%x)" % t)
opt(s, 7, struct.pack(">I", 5) + b"nosuch" + struct.pack(">H", 0))
o, t, d = rep(s); check(t & 0x80000000 != 0, "GO for a missing export succeeded")
check(go(s) == 64 << 20, "GO after bad options")
req(s, READ, 9, 0, 512); check(reply(s, 512)[0] == 0, "read after bad options")
s.close()
# an option payload too large to skip: the server hangs up, without allocating it
r0 = rss_kib()
s = conn(); greet(s)
s.sendall(struct.pack(">QII", IHAVEOPT, 0x99, 0xfffffff0))
check(closed(s), "4 GiB option payload: connection kept"); s.close()
# EXPORT_NAME of a missing export: closed (no error reply exists for it)
s = conn(); greet(s); opt(s, 1, b"nosuch"); check(closed(s), "EXPORT_NAME nosuch: connection kept"); s.close()
control_ok("bad options")

# 5. transmission: unknown command, bad flags, out of range, oversized
s = ready()
req(s, 99, 1, 0, 0); check(reply(s)[0] == 22, "unknown command: not EINVAL")
req(s, READ, 2, 0, 4096, flags=0x80); check(reply(s, 4096)[0] == 22, "unknown flag: not EINVAL")
req(s, READ, 3, (64 << 20) - 100, 4096); check(reply(s, 4096)[0] == 22, "read past the end: not EINVAL")
req(s, READ, 4, 1 << 62, 1); check(reply(s, 1)[0] == 22, "read at 2^62: not EINVAL")
req(s, READ, 5, 0, 0xffffffff); check(reply(s)[0] != 0, "4 GiB read accepted")
req(s, READ, 6, 0, 48 << 20, 0); e = reply(s)[0]; check(e != 0, "48 MiB read (above the maximum) accepted")
req(s, WRITE, 7, (64 << 20) - 10, 20, payload=b"z" * 20); check(reply(s)[0] == 28, "write past the end: not ENOSPC")
req(s, 6, 8, (64 << 20) - 10, 20); check(reply(s)[0] == 28, "write-zeroes past the end: not ENOSPC")
big = 33 << 20                                   # over the 32 MiB maximum: skipped, error
req(s, WRITE, 10, 0, big, payload=b"\0" * big); check(reply(s)[0] == 75, "33 MiB write: not EOVERFLOW")
req(s, READ, 11, 0, 4096); check(reply(s, 4096)[0] == 0, "connection after oversized requests")
s.close()
check(rss_kib() - r0 < 200 * 1024, "server memory grew by %d KiB on oversized requests" % (rss_kib() - r0))
s = ready(); req(s, WRITE, 1, 0, 0xffffffff); check(closed(s), "4 GiB write: connection kept"); s.close()
s = ready(); s.sendall(b"\x00" * 28); check(closed(s), "bad request magic: connection kept"); s.close()
s = ready(); req(s, WRITE, 1, 0, 65536, payload=b"q" * 1000); s.close()   # truncated payload
control_ok("bad requests")
req(control, READ, 3, 0, 1000); e, _, d = reply(control, 1000)
check(d != b"q" * 1000, "a write with a truncated payload landed")

# 6. a client vanishing with requests in flight (reset)
for i in range(5):
    s = ready()
    for c in range(32):
        req(s, READ, c, c << 20, 1 << 20)
    for c in range(8):
        req(s, WRITE, 100 + c, (32 + c) << 20, 65536, payload=b"v" * 65536)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
control_ok("clients vanishing with requests in flight")

# 7. fencing: writes a dead client left behind must not overwrite newer data
a = ready(FPORT)
for c in range(40):
    req(a, WRITE, c, 0, 4096, payload=b"A" * 4096)
time.sleep(0.05)
a_port = a.getsockname()[1]
a.close()             # FIN, as from a process that died: the server's next reply still "succeeds"
# Wait for the event, not a sleep: the server's summary line for A's
# connection, logged once its workers are done with what A left behind.
# Writes A sent before its death may land until then (a slow server, e.g.
# under TSan, is still working through them); none may land after it, and
# B's newer write, made after it, must survive.
FLOG = os.path.join(os.path.dirname(LOG), "fence.log")
deadline = time.time() + 30
while time.time() < deadline:
    if any(("127.0.0.1:%d " % a_port) in l and "requests" in l for l in open(FLOG)):
        break
    time.sleep(0.02)
else:
    check(False, "fence: no summary line for the dead connection in fence.log")
b = ready(FPORT)
req(b, WRITE, 1, 0, 4096, payload=b"B" * 4096); check(reply(b)[0] == 0, "fence: B's write failed")
req(b, FLUSH, 2, 0, 0); check(reply(b)[0] == 0, "fence: flush failed")
time.sleep(0.2)       # a leftover write of A would have the time to land
req(b, READ, 3, 0, 4096); e, _, d = reply(b, 4096)
check(e == 0 and d == b"B" * 4096, "fence: a dead connection's write overwrote newer data (%r)" % d[:8])
b.close()

# 8. a clean DISC after writes: the writes land
s = ready()
req(s, WRITE, 1, 50 << 20, 4096, payload=b"D" * 4096); req(s, DISC, 2, 0, 0)
check(closed(s), "DISC: connection kept"); s.close()
req(control, READ, 4, 50 << 20, 4096); e, _, d = reply(control, 4096)
check(d == b"D" * 4096, "a write before DISC did not land")
control_ok("DISC")
control.close()
sys.exit(1 if failures else 0)
