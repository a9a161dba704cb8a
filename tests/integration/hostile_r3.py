#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""A fake r3 server that misbehaves, for hostile_r3.sh.

  hostile_r3.py PORT MODE

Every mode but 'http' and 'nohello' answers the hello like r3serve
(size 1 MiB, max_request 1 MiB), then, for each request:
  never      never replies (keeps reading)
  garbage    replies with bytes that are not msgpack
  oversized  replies with a frame length of 0x7ffffff0
  partial    sends the first half of a correct read reply, then nothing (socket open)
  close      sends the first half of a correct read reply, then closes
  short      a well-formed read reply carrying half the bytes asked for
  wrongid    a well-formed read reply for an id never asked
and before the hello:
  http       answers like a web server ("HTTP/1.1 400 Bad Request")
  nohello    reads the hello, never answers
"""
import socket, struct, sys, threading, time

PORT, MODE = int(sys.argv[1]), sys.argv[2]
SIZE = 1 << 20


def hello():
    m = (b'\x84' + b'\xa4size\xce' + struct.pack('>I', SIZE) + b'\xa5align\x01' + b'\xa5flags\x02'
         + b'\xabmax_request\xce' + struct.pack('>I', SIZE))
    b = b'\x93\xa2r3\x01' + m
    return struct.pack('>I', len(b)) + b


def recv_all(c, n):
    b = b''
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x: raise EOFError
        b += x
    return b


def read_frame(c):
    n = struct.unpack('>I', recv_all(c, 4))[0]
    return recv_all(c, n)


def parse_request(f):
    """[0, id, 'read', [off, len]] as packed by r3:// (ids and numbers of any msgpack width)."""
    p = [1]                                   # skip the array header

    def uint():
        t = f[p[0]]; p[0] += 1
        if t < 0x80: return t
        w = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}[t]
        v = int.from_bytes(f[p[0]:p[0] + w], 'big'); p[0] += w
        return v
    uint()                                    # type 0
    rid = uint()
    t = f[p[0]]; p[0] += 1                    # method: fixstr
    method = f[p[0]:p[0] + (t & 0x1f)].decode(); p[0] += t & 0x1f
    if method != 'read':
        return rid, method, 0
    p[0] += 1                                 # args array header
    uint()
    return rid, method, uint()


def reply(rid, data):
    body = b'\x94\x01\xcf' + struct.pack('>Q', rid) + b'\xc0\xc6' + struct.pack('>I', len(data))
    return struct.pack('>I', len(body) + len(data)) + body + data


def serve(c):
    try:
        if MODE == 'http':
            c.recv(4096)
            c.sendall(b'HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n')
            time.sleep(60)
            return
        read_frame(c)
        if MODE == 'nohello':
            time.sleep(60)
            return
        c.sendall(hello())
        while True:
            rid, method, ln = parse_request(read_frame(c))
            if method != 'read':
                body = b'\x94\x01\xcf' + struct.pack('>Q', rid) + b'\xc0\xc0'
                c.sendall(struct.pack('>I', len(body)) + body)
                continue
            full = reply(rid, b'\x5a' * ln)
            if MODE == 'never':
                continue
            elif MODE == 'garbage':
                c.sendall(struct.pack('>I', 64) + b'\xc1' * 64)
            elif MODE == 'oversized':
                c.sendall(struct.pack('>I', 0x7ffffff0) + b'\x94\x01')
            elif MODE == 'partial':
                c.sendall(full[:len(full) // 2])
            elif MODE == 'close':
                c.sendall(full[:len(full) // 2])
                c.close()
                return
            elif MODE == 'short':
                c.sendall(reply(rid, b'\x5a' * (ln // 2)))
            elif MODE == 'wrongid':
                c.sendall(reply(rid + 1000, b'\x5a' * ln))
    except (OSError, EOFError, KeyError, IndexError):
        pass
    finally:
        try: c.close()
        except OSError: pass


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', PORT))
s.listen(64)
while True:
    c = s.accept()[0]
    threading.Thread(target=serve, args=(c,), daemon=True).start()
