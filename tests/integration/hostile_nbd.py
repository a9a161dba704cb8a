#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""A fake NBD server that misbehaves on purpose, to test our nbd:// client.
   hostile_nbd.py PORTFILE MODE
Listens on a free 127.0.0.1 port (written to PORTFILE), serves every
connection in MODE, until killed:
  never        accepts and never sends a byte (no greeting)
  garbage      sends random bytes instead of a greeting
  bigoption    a correct greeting, then an option reply claiming 1 GiB
  slowhs       a correct greeting, then one byte of the option reply per second
  silent       a correct handshake, then never answers a request
  nodata       a structured READ reply: DONE with no data chunk at all
  partial      a structured READ reply: data for the first half only, then DONE
  overlap      a structured READ reply: the first half twice, then DONE
  bigchunk     a structured data chunk claiming 0xfffffff0 bytes
  outside      a structured data chunk for bytes outside the request
  badmagic     a reply with a wrong magic
  wrongcookie  a reply to a request that was never sent
  midclose     half of a simple READ reply's data, then close
  noread       a correct handshake, then never reads (a client's big write stalls)
The export is 64 MiB, writable, no minimum block size."""
import os, socket, struct, sys, threading, time

NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x0003e889045565a9
SIMPLE, STRUCTURED = 0x67446698, 0x668e33ef
SIZE = 64 << 20

def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b

def rep(s, opt, typ, data=b""):
    s.sendall(struct.pack(">QIII", REPMAGIC, opt, typ, len(data)) + data)

def handshake(s, mode):
    s.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 3))
    recvn(s, 4)
    while True:
        magic, opt, ln = struct.unpack(">QII", recvn(s, 16))
        data = recvn(s, ln)
        if mode == "bigoption":
            s.sendall(struct.pack(">QIII", REPMAGIC, opt, 1, 1 << 30))
            s.sendall(b"\0" * 65536)
            time.sleep(60)
            return False
        if mode == "slowhs":
            for b in struct.pack(">QIII", REPMAGIC, opt, 1, 0):
                s.sendall(bytes([b]))
                time.sleep(1)
            return False
        if opt == 8:                      # STRUCTURED_REPLY
            rep(s, opt, 1)
        elif opt in (6, 7):               # INFO / GO
            rep(s, opt, 3, struct.pack(">HQH", 0, SIZE, 1 | 4))
            rep(s, opt, 1)
            if opt == 7:
                return True
        elif opt == 1:                    # EXPORT_NAME
            s.sendall(struct.pack(">QH", SIZE, 1 | 4) + b"\0" * 124)
            return True
        else:
            rep(s, opt, (1 << 31) | 1)    # unsupported

def chunk(s, flags, typ, cookie, payload):
    s.sendall(struct.pack(">IHHQI", STRUCTURED, flags, typ, cookie, len(payload)) + payload)

def transmission(s, mode):
    if mode == "noread":
        time.sleep(120)
        return
    while True:
        magic, flags, typ, cookie, off, ln = struct.unpack(">IHHQQI", recvn(s, 28))
        if typ == 1:
            recvn(s, ln)
        if typ == 2:
            return
        if mode == "silent":
            continue
        if typ != 0:                      # anything but READ: a plain OK
            s.sendall(struct.pack(">IIQ", SIMPLE, 0, cookie))
            continue
        half = ln // 2
        if mode == "nodata":
            chunk(s, 1, 0, cookie, b"")
        elif mode == "partial":
            chunk(s, 0, 1, cookie, struct.pack(">Q", off) + b"P" * half)
            chunk(s, 1, 0, cookie, b"")
        elif mode == "overlap":
            chunk(s, 0, 1, cookie, struct.pack(">Q", off) + b"O" * half)
            chunk(s, 0, 1, cookie, struct.pack(">Q", off) + b"O" * half)
            chunk(s, 1, 0, cookie, b"")
        elif mode == "bigchunk":
            s.sendall(struct.pack(">IHHQI", STRUCTURED, 1, 1, cookie, 0xfffffff0) + struct.pack(">Q", off))
            s.sendall(b"B" * 65536)
            time.sleep(60)
        elif mode == "outside":
            chunk(s, 1, 1, cookie, struct.pack(">Q", off + ln) + b"X" * 16)
        elif mode == "badmagic":
            s.sendall(struct.pack(">IIQ", 0xdeadbeef, 0, cookie))
        elif mode == "wrongcookie":
            s.sendall(struct.pack(">IIQ", SIMPLE, 0, cookie ^ 0x5a5a0000))
        elif mode == "midclose":
            s.sendall(struct.pack(">IIQ", SIMPLE, 0, cookie) + b"M" * half)
            return

def serve(c, mode):
    try:
        if mode == "never":
            time.sleep(120)
        elif mode == "garbage":
            c.sendall(os.urandom(4096))
            time.sleep(60)
        elif handshake(c, mode):
            transmission(c, mode)
    except (EOFError, OSError):
        pass
    finally:
        c.close()

def main():
    portfile, mode = sys.argv[1], sys.argv[2]
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", 0))
    l.listen(16)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(l.getsockname()[1]))
    os.rename(portfile + ".tmp", portfile)
    while True:
        c, _ = l.accept()
        threading.Thread(target=serve, args=(c, mode), daemon=True).start()

main()
