#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""A minimal independent r3sync protocol client for tests (no msgpack module
needed): connects with TLS (optional client certificate), sends frames, and
prints what the hub sends, one decoded message per line.

usage: filesync_client.py ADDR CA [--cert C --key K] [--role recv|adv]
          [--send KIND ...] [--read SECONDS]
KIND: hello | file:NAME:SIZE | filehex:HEXNAME:SIZE | blk:FID:IDX:LEN | oversize | truncated | garbage
"""
import argparse, socket, ssl, struct, sys, time

def pack(o):
    if isinstance(o, bool):
        return b'\xc3' if o else b'\xc2'
    if isinstance(o, int):
        if 0 <= o < 128: return bytes([o])
        if o < 2**8: return b'\xcc' + struct.pack('>B', o)
        if o < 2**16: return b'\xcd' + struct.pack('>H', o)
        if o < 2**32: return b'\xce' + struct.pack('>I', o)
        return b'\xcf' + struct.pack('>Q', o)
    if isinstance(o, str):
        b = o.encode('utf-8', 'surrogateescape')
        return (bytes([0xa0 | len(b)]) if len(b) < 32 else b'\xda' + struct.pack('>H', len(b))) + b
    if isinstance(o, (bytes, bytearray)):
        return b'\xc6' + struct.pack('>I', len(o)) + bytes(o)
    if isinstance(o, list):
        return (bytes([0x90 | len(o)]) if len(o) < 16 else b'\xdc' + struct.pack('>H', len(o))) + b''.join(pack(x) for x in o)
    raise TypeError(o)

def unpack(b, i=0):
    t = b[i]
    if t < 0x80: return t, i + 1
    if 0x90 <= t <= 0x9f:
        n, i, out = t & 15, i + 1, []
        for _ in range(n):
            v, i = unpack(b, i); out.append(v)
        return out, i
    if 0xa0 <= t <= 0xbf:
        n = t & 31; return b[i+1:i+1+n].decode('utf-8', 'replace'), i + 1 + n
    if t == 0xc0: return None, i + 1
    if t in (0xc2, 0xc3): return t == 0xc3, i + 1
    sizes = {0xcc: 'B', 0xcd: 'H', 0xce: 'I', 0xcf: 'Q'}
    if t in sizes:
        f = '>' + sizes[t]; n = struct.calcsize(f)
        return struct.unpack(f, b[i+1:i+1+n])[0], i + 1 + n
    if t in (0xd9, 0xda, 0xdb):
        f = {0xd9: '>B', 0xda: '>H', 0xdb: '>I'}[t]; k = struct.calcsize(f)
        n = struct.unpack(f, b[i+1:i+1+k])[0]
        return b[i+1+k:i+1+k+n].decode('utf-8', 'replace'), i + 1 + k + n
    if t in (0xc4, 0xc5, 0xc6):
        f = {0xc4: '>B', 0xc5: '>H', 0xc6: '>I'}[t]; k = struct.calcsize(f)
        n = struct.unpack(f, b[i+1:i+1+k])[0]
        return bytes(b[i+1+k:i+1+k+n]), i + 1 + k + n
    if t in (0xdc, 0xdd):
        f = '>H' if t == 0xdc else '>I'; k = struct.calcsize(f)
        n = struct.unpack(f, b[i+1:i+1+k])[0]; i += 1 + k; out = []
        for _ in range(n):
            v, i = unpack(b, i); out.append(v)
        return out, i
    raise ValueError('type %x' % t)

def frame(o):
    body = pack(o)
    return struct.pack('>I', len(body)) + body

NAMES = {1: 'HELLO', 2: 'FILE', 3: 'SIZE', 4: 'BLK', 5: 'END', 6: 'HAVE', 7: 'TBLK', 8: 'TDONE', 9: 'ACK', 10: 'GONE', 11: 'ERR'}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('addr'); ap.add_argument('ca')
    ap.add_argument('--cert'); ap.add_argument('--key')
    ap.add_argument('--role', default='recv')
    ap.add_argument('--send', action='append', default=[])
    ap.add_argument('--read', type=float, default=1.0)
    a = ap.parse_args()
    host, port = a.addr.rsplit(':', 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(a.ca)
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    s = socket.create_connection((host, int(port)), timeout=5)
    try:
        t = ctx.wrap_socket(s, server_hostname=host)
    except (ssl.SSLError, OSError) as e:
        print('handshake-failed', e); return
    print('handshake-ok', flush=True)
    try:
        for k in a.send:
            p = k.split(':')
            if p[0] == 'hello': t.sendall(frame([1, 'r3sync', 1, a.role]))
            elif p[0] == 'file': t.sendall(frame([2, 7777, p[1], int(p[2]), 65536]))
            elif p[0] == 'filehex':
                name = bytes.fromhex(p[1]).decode('utf-8', 'surrogateescape')
                t.sendall(frame([2, 7778, name, int(p[2]), 65536]))
            elif p[0] == 'blk': t.sendall(frame([4, int(p[1]), int(p[2]), b'x' * int(p[3])]))
            elif p[0] == 'oversize': t.sendall(struct.pack('>I', 0x7fffffff) + b'\x93\x01\x02\x03')
            elif p[0] == 'truncated': t.sendall(struct.pack('>I', 1000) + b'\x94\x04')
            elif p[0] == 'garbage': t.sendall(struct.pack('>I', 3) + b'\xc1\xc1\xc1')
            elif p[0] == 'sleep': time.sleep(float(p[1]))
    except (ssl.SSLError, OSError) as e:
        print('send-failed', e)
    buf = b''
    end = time.time() + a.read
    t.settimeout(0.2)
    while time.time() < end:
        try:
            d = t.recv(1 << 20)
        except socket.timeout:
            continue
        except (ssl.SSLError, OSError) as e:
            print('closed', e); break
        if not d:
            print('closed eof'); break
        buf += d
        while len(buf) >= 4:
            n = struct.unpack('>I', buf[:4])[0]
            if len(buf) < 4 + n: break
            m, _ = unpack(buf[4:4+n]); buf = buf[4+n:]
            desc = [NAMES.get(m[0], m[0])] + [x if not isinstance(x, bytes) else 'bin%d' % len(x) for x in m[1:]]
            print('msg', *desc, flush=True)
    sys.stdout.flush()

main()
