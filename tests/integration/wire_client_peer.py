#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""A fake r3 server for wire_client.sh: an honest hello (size 1 MiB,
max_request 1 MiB), then one wrong reply to the first read, per MODE:
  headclose   4 bytes of length and 10 of the reply, then close
  smallclose  the first 100 bytes of a 300-byte error reply, then close
  bigerror    an error reply of more than 1 MiB (no data in it)
  notreply    a request frame where a reply belongs
  nodata      a reply without data to a read
  unknownack  a reply without data to a request never made
  dropped     an error reply to request 0: the server says why it drops us
Other requests (flush, ...) are acked. usage: wire_client_peer.py PORT MODE"""
import socket, struct, sys, threading, time

PORT, MODE = int(sys.argv[1]), sys.argv[2]
SIZE = 1 << 20


def mp_str(s):
    b = s.encode() if isinstance(s, str) else s
    if len(b) < 32: return bytes([0xa0 | len(b)]) + b
    if len(b) < 65536: return b'\xda' + struct.pack('>H', len(b)) + b
    return b'\xdb' + struct.pack('>I', len(b)) + b


def frame(body):
    return struct.pack('>I', len(body)) + body


def hello():
    m = (b'\x84' + b'\xa4size\xce' + struct.pack('>I', SIZE) + b'\xa5align\x01' + b'\xa5flags\x02'
         + b'\xabmax_request\xce' + struct.pack('>I', SIZE))
    return frame(b'\x93\xa2r3\x01' + m)


def reply(rid, err=None, result=b'\xc0'):
    e = b'\xc0' if err is None else b'\x92' + bytes([err[0]]) + mp_str(err[1])
    return frame(b'\x94\x01\xcf' + struct.pack('>Q', rid) + e + result)


def recv_all(c, n):
    b = b''
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x: raise EOFError
        b += x
    return b


def read_frame(c):
    return recv_all(c, struct.unpack('>I', recv_all(c, 4))[0])


def request(f):
    """(id, method) of [0, id, method, args]."""
    p = 2
    t = f[p]; p += 1
    if t < 0x80: rid = t
    else:
        w = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}[t]
        rid = int.from_bytes(f[p:p + w], 'big'); p += w
    n = f[p] & 0x1f
    return rid, f[p + 1:p + 1 + n].decode()


def serve(c):
    try:
        read_frame(c)
        c.sendall(hello())
        while True:
            rid, method = request(read_frame(c))
            if method != 'read':
                c.sendall(reply(rid))
                continue
            if MODE == 'headclose':
                c.sendall(struct.pack('>I', 40) + b'\x94\x01\xcf' + b'\0' * 7)
                c.close()
                return
            if MODE == 'smallclose':
                c.sendall(reply(rid, (5, 'x' * 270))[:100])
                c.close()
                return
            if MODE == 'bigerror':
                c.sendall(reply(rid, (5, 'x' * (SIZE + 100))))
            elif MODE == 'notreply':
                c.sendall(frame(b'\x94\x00\xcf' + struct.pack('>Q', rid) + b'\xa4read\x92\x00\x10'))
            elif MODE == 'nodata':
                c.sendall(reply(rid))
            elif MODE == 'unknownack':
                c.sendall(reply(rid + 1000))
            elif MODE == 'dropped':
                c.sendall(reply(0, (108, 'the server is shutting down')))
            time.sleep(0.05)
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
