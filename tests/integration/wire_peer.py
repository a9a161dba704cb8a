#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Misbehaving and measuring r3 clients for wire_limits.sh.

  wire_peer.py PORT slowread N LEN       hello, N reads of LEN bytes, never read a reply; sleep
  wire_peer.py PORT flood LEN            hello, writes of LEN bytes as fast as the server takes
                                         them, never read an ack; runs until killed
  wire_peer.py PORT idle N               open N connections and hold them (prints 'open N')
  wire_peer.py PORT slowloris            connect, send one hello byte every 200 ms; print how
                                         long until the server closed it
  wire_peer.py PORT silent               connect, send nothing; print how long until closed
  wire_peer.py PORT timedreads N LEN     hello, N reads of LEN bytes one at a time; print the
                                         slowest in ms (fails on a wrong reply)
"""
import socket, struct, sys, time


def mp(o):
    if o is None: return b'\xc0'
    if isinstance(o, int):
        if 0 <= o < 128: return bytes([o])
        return b'\xcf' + struct.pack('>Q', o)
    if isinstance(o, str):
        b = o.encode(); return bytes([0xa0 | len(b)]) + b
    if isinstance(o, bytes): return b'\xc6' + struct.pack('>I', len(o)) + o
    if isinstance(o, list): return bytes([0x90 | len(o)]) + b''.join(mp(x) for x in o)
    if isinstance(o, dict): return bytes([0x80 | len(o)]) + b''.join(mp(k) + mp(v) for k, v in o.items())


def frame(o):
    b = mp(o)
    return struct.pack('>I', len(b)) + b


def recv_all(s, n):
    b = bytearray()
    while len(b) < n:
        x = s.recv(min(n - len(b), 1 << 20))
        if not x: raise EOFError('server closed')
        b += x
    return bytes(b)


def read_frame(s):
    n = struct.unpack('>I', recv_all(s, 4))[0]
    return recv_all(s, n)


def conn(port, hello=True, rcvbuf=None):
    s = socket.socket()
    if rcvbuf: s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(('127.0.0.1', port))
    if hello:
        s.sendall(frame(['r3', 1, {'export': 'x'}]))
        h = read_frame(s)
        assert h[:4] == b'\x93\xa2r3', h
    return s


def until_closed(s, t0):
    s.settimeout(60)
    try:
        while s.recv(4096): pass
    except OSError:
        pass
    return time.time() - t0


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    a = sys.argv[3:]
    if mode == 'slowread':
        s = conn(port, rcvbuf=4096)
        for i in range(int(a[0])):
            s.sendall(frame([0, i + 1, 'read', [0, int(a[1])]]))
        print('sent', flush=True)
        time.sleep(3600)
    elif mode == 'flood':
        s = conn(port, rcvbuf=4096)
        n = int(a[0]); data = b'\x5a' * n; i = 0
        while True:
            i += 1
            body = bytes([0x94]) + mp(0) + mp(i) + mp('write') + bytes([0x92]) + mp(0) + b'\xc6' + struct.pack('>I', n)
            s.sendall(struct.pack('>I', len(body) + n) + body)
            s.sendall(data)
    elif mode == 'idle':
        cs = []
        for i in range(int(a[0])):
            cs.append(conn(port, hello=True))
        print('open', len(cs), flush=True)
        time.sleep(3600)
    elif mode == 'slowloris':
        s = conn(port, hello=False)
        t0 = time.time()
        hello = frame(['r3', 1, {'export': 'x'}])
        try:
            for b in hello * 100:
                s.send(bytes([b]))
                time.sleep(0.2)
                if time.time() - t0 > 60: break
        except OSError:
            pass
        print('%.2f' % until_closed(s, t0))
    elif mode == 'silent':
        s = conn(port, hello=False)
        print('%.2f' % until_closed(s, time.time()))
    elif mode == 'timedreads':
        s = conn(port)
        n, ln = int(a[0]), int(a[1]); worst = 0
        for i in range(n):
            t0 = time.time()
            s.sendall(frame([0, i + 1, 'read', [0, ln]]))
            r = read_frame(s)
            assert r[:3] == bytes([0x94, 0x01, i + 1]) and len(r) >= ln, r[:40]
            worst = max(worst, time.time() - t0)
        print('%d' % (worst * 1000))
    else:
        sys.exit('unknown mode ' + mode)


main()
