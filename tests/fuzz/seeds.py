#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Writes the seed corpora tests/fuzz/corpus/<target>/ (small valid messages,
as the real clients and servers send them: the frames follow src/wire/frame.c,
the RESP and HTTP answers what redis-server and s3rver send). Run from the
source tree: python3 tests/fuzz/seeds.py"""
import os, struct

def mp(o):
    """A tiny msgpack encoder (the subset r3 uses)."""
    if o is None: return b'\xc0'
    if isinstance(o, bool): return b'\xc3' if o else b'\xc2'
    if isinstance(o, int):
        if o < 128: return bytes([o])
        if o < 256: return b'\xcc' + bytes([o])
        if o < 65536: return b'\xcd' + struct.pack('>H', o)
        if o < 2**32: return b'\xce' + struct.pack('>I', o)
        return b'\xcf' + struct.pack('>Q', o)
    if isinstance(o, str):
        b = o.encode()
        return (bytes([0xa0 | len(b)]) if len(b) < 32 else b'\xd9' + bytes([len(b)])) + b
    if isinstance(o, bytes):
        return (b'\xc4' + bytes([len(o)]) if len(o) < 256 else b'\xc5' + struct.pack('>H', len(o))) + o
    if isinstance(o, list):
        return bytes([0x90 | len(o)]) + b''.join(mp(x) for x in o)
    if isinstance(o, dict):
        return bytes([0x80 | len(o)]) + b''.join(mp(k) + mp(v) for k, v in o.items())
    raise TypeError(o)

def frame(o):
    p = mp(o)
    return struct.pack('>I', len(p)) + p

class Bin:
    """A bin header whose data follows outside the packed object (write requests, read replies)."""

def req(i, method, off=None, ln=None, data=None):
    if data is not None:
        return frame([0, i, method, [off, data]])
    if off is None:
        return frame([0, i, method, []])
    return frame([0, i, method, [off, ln]])

def rep(i, err=None, val=None):
    return frame([1, i, None if err is None else [err[0], err[1]], val])

chello = frame(["r3", 1, {"export": "fuzz", "client": 42}])
shello = frame(["r3", 1, {"size": 65536, "align": 1, "flags": 0, "max_request": 1048576}])
shello_err = frame(["r3", 1, {"error": [2, "r3serve: no such export 'x'"]}])

out = {}
def seed(target, name, data):
    out.setdefault(target, []).append((name, data))

# wire_frame: payloads (the decoder gets a frame without its 4-byte header)
for n, f in [("client_hello", chello), ("server_hello", shello), ("server_hello_error", shello_err),
             ("read", req(1, "read", 0, 4096)), ("write", req(2, "write", 4096, data=b"abcdefgh")),
             ("size", req(3, "size")), ("flush", req(4, "flush")),
             ("reply_data", rep(1, None, b"0123456789abcdef")), ("reply_val", rep(3, None, 65536)),
             ("reply_nil", rep(4)), ("reply_err", rep(5, (28, "r3serve: write past the end")))]:
    seed("wire_frame", n, f[4:])

# wire_server: byte 0 odd = the target sends a valid hello first
seed("wire_server", "requests", b"\x01" + req(1, "size") + req(2, "write", 0, data=b"hello") +
     req(3, "read", 0, 5) + req(4, "flush") + req(5, "track") + req(6, "nope"))
seed("wire_server", "client_id", b"\x03" + req(1, "read", 65530, 6) + req(2, "read", 65536, 1))
seed("wire_server", "own_hello", b"\x00" + chello + req(1, "read", 0, 16) + req(2, "write", 8, data=b"x" * 300))
seed("wire_server", "bad_version", b"\x00" + frame(["r3", 2, {"export": "fuzz"}]))
seed("wire_server", "too_big", b"\x01" + struct.pack('>I', 0x7fffffff))

# wire_client: byte 0 picks the call (0 read 16, 1 read 4096, 2 write 16, 3 flush, 4 extent)
seed("wire_client", "read16", b"\x00" + shello + rep(1, None, b"r" * 16))
seed("wire_client", "read4k", b"\x01" + shello + rep(1, None, b"R" * 4096))
seed("wire_client", "write", b"\x02" + shello + rep(1))
seed("wire_client", "flush", b"\x03" + shello + rep(1))
seed("wire_client", "error", b"\x00" + shello + rep(1, (5, "r3serve: I/O error")))
seed("wire_client", "dropped", b"\x00" + shello + rep(0, (71, "r3serve: bad frame")))
seed("wire_client", "hello_error", b"\x00" + shello_err)

# features (zero reads, extent): hellos that agree on them, a zero read reply, an extent reply
shello_f = frame(["r3", 1, {"size": 65536, "align": 1, "flags": 0, "max_request": 1048576, "features": 3}])
for n, f in [("client_hello_features", frame(["r3", 1, {"export": "fuzz", "client": 42, "features": 3}])),
             ("server_hello_features", shello_f), ("reply_zero", rep(1, None, True)),
             ("reply_extent", rep(2, None, [1, 4096])), ("extent", req(6, "extent", 0, 65536))]:
    seed("wire_frame", n, f[4:])
seed("wire_client", "read16_zero", b"\x00" + shello_f + rep(1, None, True))
seed("wire_client", "read4k_zero", b"\x01" + shello_f + rep(1, None, True))
seed("wire_client", "zero_not_agreed", b"\x00" + shello + rep(1, None, True))
seed("wire_client", "read4k_extent_reply", b"\x01" + shello_f + rep(1, None, [0, 4096]))
seed("wire_client", "extent", b"\x04" + shello_f + rep(1, None, [1, 4096]))
seed("wire_client", "extent_old_server", b"\x04" + shello)
seed("wire_server", "features", b"\x05" + req(1, "read", 0, 16) + req(2, "extent", 0, 65536) +
     req(3, "extent", 65535, 2) + req(4, "extent", 0, 0))

# uri
for i, u in enumerate([b"r3://127.0.0.1:7000/export?conns=4&timeout=2s&chunk=64K",
                       b"r3s://[::1]:7001/e?ca=/etc/ca.pem&cert=c.pem&key=k.pem",
                       b"r3+unix:///export?socket=/run/r3.sock",
                       b"redis://user:pa%40ss@localhost:6379/prefix?size=1G&chunk=64K&db=2&cluster=0",
                       b"s3://bucket/some/prefix?endpoint=http://127.0.0.1:4568&size=16M&region=eu-west-1",
                       b"dir:///var/lib/r3/x?size=1T&chunk=1M", b"mem:?size=4M", b"file:///tmp/a%20b?size=10G",
                       b"nbd://host:10809/name?timeout=500ms&connect_timeout=1m"]):
    seed("uri", "uri%d" % i, u)

# redis_reply: byte 0 = auth (bits 0-1: none, password, user+password, db=3) | op << 2
chunk = b"C" * 4096
seed("redis_reply", "new_read", bytes([0]) + b"$-1\r\n+OK\r\n$4096\r\n" + chunk + b"\r\n$-1\r\n")
seed("redis_reply", "meta_read", bytes([0]) + b"$13\r\nr3 16384 4096\r\n$4096\r\n" + chunk + b"\r\n$5\r\nshort\r\n")
seed("redis_reply", "auth_range", bytes([1 | 4]) + b"+OK\r\n$13\r\nr3 16384 4096\r\n$96\r\n" + b"a" * 96 + b"\r\n$4\r\nbbbb\r\n")
seed("redis_reply", "user_set", bytes([2 | 8]) + b"+OK\r\n$13\r\nr3 16384 4096\r\n+OK\r\n")
seed("redis_reply", "db_setrange", bytes([3 | 12]) + b"+OK\r\n$13\r\nr3 16384 4096\r\n:13\r\n")
seed("redis_reply", "noauth", bytes([3]) + b"+OK\r\n-NOAUTH Authentication required.\r\n")
seed("redis_reply", "errors", bytes([0]) + b"$13\r\nr3 16384 4096\r\n-TRYAGAIN\r\n-LOADING x\r\n-MOVED 1 127.0.0.1:1\r\n*2\r\n:1\r\n:2\r\n")
seed("redis_reply", "bad_meta", bytes([0]) + b"$9\r\nr3 0 4096\r\n")

# redis_cluster: a redirection line, then a CLUSTER SLOTS reply
def slots(ranges):
    s = b"*%d\r\n" % len(ranges)
    for lo, hi, host, port in ranges:
        s += b"*3\r\n:%d\r\n:%d\r\n*3\r\n$%d\r\n%s\r\n:%d\r\n$40\r\n%s\r\n" % (lo, hi, len(host), host, port, b"f" * 40)
    return s
seed("redis_cluster", "moved", b"MOVED 3999 127.0.0.1:6381\n" + slots([(0, 16383, b"127.0.0.1", 7000)]))
seed("redis_cluster", "ask", b"ASK 12182 10.0.0.7:7002\n" + slots([(0, 5460, b"127.0.0.1", 7000), (5461, 10922, b"127.0.0.1", 7001), (10923, 16383, b"", 7002)]))
seed("redis_cluster", "ipv6", b"MOVED 1 ::1:7003\n" + slots([(0, 16383, b"?", 7000)]))
seed("redis_cluster", "unknown", b"MOVED 5 :7004\n-ERR This instance has cluster support disabled\r\n")

# s3: byte 0 = op (bits 0-1) | size given (bit 2); answers separated by @@@@
def http(code, body=b"", reason=b"X", extra=b""):
    return b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n%s\r\n" % (code, reason, len(body), extra) + body
ok = http(200, reason=b"OK")
meta = http(200, b"r3 16384 4096", b"OK")
err403 = http(403, b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")
nokey = http(404, b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>")
S = b"@@@@"
seed("s3", "read", bytes([0]) + S.join([ok, meta, http(200, b"D" * 4096, b"OK"), nokey]))
seed("s3", "new_ranged", bytes([1 | 4]) + S.join([ok, nokey, ok, http(206, b"r" * 100, b"Partial Content")]))
seed("s3", "put_retry", bytes([2]) + S.join([ok, meta, http(503, b"<Error><Code>SlowDown</Code></Error>"), ok]))
seed("s3", "rmw", bytes([3]) + S.join([ok, meta, http(200, b"o" * 4096, b"OK"), ok]))
seed("s3", "denied", bytes([0]) + S.join([err403]))
seed("s3", "no_bucket", bytes([0]) + S.join([http(404)]))
seed("s3", "range_ignored", bytes([1]) + S.join([ok, meta, http(200, b"w" * 4096, b"OK")]))

# access_log: byte 0 = chunks - 1
seed("access_log", "log", bytes([15]) + b"r3-access-log 1\nchunk 65536\n3\n1\n7\n3\n")
seed("access_log", "comments", bytes([3]) + b"r3-access-log 1\r\n# hot first\r\n\r\nchunk 65536\r\n0\r\n2\r\n")
seed("access_log", "bad_chunk", bytes([7]) + b"r3-access-log 1\nchunk 4096\n1\n")

# dir_meta: byte 0 = URI (bits 0-1) | write (bit 2)
seed("dir_meta", "meta", bytes([0]) + b"1048576 65536\n")
seed("dir_meta", "meta_size", bytes([1 | 4]) + b"1048576 65536\n")
seed("dir_meta", "meta_chunk", bytes([2]) + b"1048576 65536\n")
seed("dir_meta", "small", bytes([4]) + b"8192 4096\n")

# nbd_client: byte 0 = request (0 read 512, 1 write 512, 2 flush, 3 read 4096);
# the server's handshake, "@@@@", then its replies (first cookie: 1 << 16)
P = struct.pack
REPM = P('>Q', 0x0003e889045565a9)
def optrep(o, t, d=b""):
    return REPM + P('>III', o, t, len(d)) + d
greet = b"NBDMAGIC" + b"IHAVEOPT" + P('>H', 3)
info_exp = optrep(7, 3, P('>HQH', 0, 65536, 1 | 4 | 32 | 64))
info_bs = optrep(7, 3, P('>HIII', 3, 1, 4096, 1 << 20))
ack = lambda o: optrep(o, 1)
# structured replies, then base:allocation (SET_META_CONTEXT: the context, ACK), then GO
meta = optrep(10, 4, P('>I', 7) + b"base:allocation") + ack(10)
hs_struct = greet + ack(8) + meta + info_exp + info_bs + ack(7)
hs_nometa = greet + ack(8) + optrep(10, 0x80000001) + info_exp + info_bs + ack(7)
hs_simple = greet + optrep(8, 0x80000001) + info_exp + ack(7)
ck = 1 << 16
simple = lambda err, data=b"": P('>IIQ', 0x67446698, err, ck) + data
def chunk(flags, typ, payload):
    return P('>IHHQI', 0x668e33ef, flags, typ, ck, len(payload)) + payload
seed("nbd_client", "read_structured", b"\x00" + hs_struct + b"@@@@" + chunk(1, 1, P('>Q', 0) + b"d" * 512))
seed("nbd_client", "read_hole", b"\x00" + hs_struct + b"@@@@" + chunk(0, 2, P('>QI', 0, 256)) + chunk(1, 1, P('>Q', 256) + b"e" * 256))
seed("nbd_client", "read_error", b"\x00" + hs_struct + b"@@@@" + chunk(1, 0x8001, P('>IH', 5, 4) + b"oops"))
seed("nbd_client", "read_simple", b"\x00" + hs_simple + b"@@@@" + simple(0, b"s" * 512))
seed("nbd_client", "write", b"\x01" + hs_struct + b"@@@@" + simple(0))
seed("nbd_client", "flush_err", b"\x02" + hs_simple + b"@@@@" + simple(5))
seed("nbd_client", "read4k", b"\x03" + hs_struct + b"@@@@" + chunk(1, 1, P('>Q', 0) + b"f" * 4096))
seed("nbd_client", "go_unsup", b"\x00" + greet + ack(8) + optrep(7, 0x80000001) + P('>QH', 65536, 1) + b"@@@@")
# byte 0 bit 2: an extent query (BLOCK_STATUS, REQ_ONE) before the request
bstat = lambda flags, *d: chunk(flags, 5, P('>I', 7) + b"".join(P('>II', n, st) for n, st in d))
seed("nbd_client", "status_zero", b"\x04" + hs_struct + b"@@@@" + bstat(1, (4096, 3)))
seed("nbd_client", "status_data_more", b"\x04" + hs_struct + b"@@@@" + bstat(1, (1 << 20, 0), (512, 3)))
seed("nbd_client", "status_badid", b"\x04" + hs_struct + b"@@@@" + chunk(1, 5, P('>III', 9, 4096, 3)))
seed("nbd_client", "status_none", b"\x04" + hs_struct + b"@@@@" + chunk(1, 0, b""))
seed("nbd_client", "status_nometa", b"\x04" + hs_nometa + b"@@@@" + chunk(1, 1, P('>Q', 0) + b"d" * 512))
seed("nbd_client", "unknown_export", b"\x00" + greet + ack(8) + optrep(7, 0x80000006, b"no such export"))

# nbd_server: byte 0 odd = the target negotiates first (bit 1: structured replies); then requests
def nreq(typ, off, ln, cookie, flags=0, data=b""):
    return P('>IHHQQI', 0x25609513, flags, typ, cookie, off, ln) + data
def copt(o, d=b""):
    return b"IHAVEOPT" + P('>II', o, len(d)) + d
seed("nbd_server", "rw", b"\x03" + nreq(1, 0, 512, 1, 0, b"w" * 512) + nreq(0, 0, 512, 2) + nreq(3, 0, 0, 3) + nreq(2, 0, 0, 4))
seed("nbd_server", "trim_zero", b"\x01" + nreq(4, 4096, 4096, 1) + nreq(6, 8192, 4096, 2, 1) + nreq(5, 0, 4096, 3) + nreq(0, 65000, 1000, 4))
seed("nbd_server", "negotiate", b"\x00" + P('>I', 3) + copt(3) + copt(6, P('>I', 0) + P('>H', 1) + P('>H', 3)) +
     copt(10, P('>I', 0) + P('>I', 1) + P('>I', 15) + b"base:allocation") + copt(8) + copt(7, P('>I', 0) + P('>H', 0)) + nreq(7, 0, 4096, 9))
def meta_opt(o, name, *queries):
    return copt(o, P('>I', len(name)) + name + P('>I', len(queries)) + b"".join(P('>I', len(q)) + q for q in queries))
seed("nbd_server", "block_status", b"\x00" + P('>I', 3) + copt(8) + meta_opt(9, b"") + meta_opt(9, b"", b"base:") +
     meta_opt(10, b"", b"x-other:thing", b"base:allocation") + copt(7, P('>I', 0) + P('>H', 0)) +
     nreq(7, 0, 65536, 1) + nreq(7, 4096, 8192, 2, 8) + nreq(7, 65536, 1, 3) + nreq(7, 0, 0, 4) +
     nreq(7, 0, 4096, 5, 1 << 5) + nreq(0, 0, 65536, 6) + nreq(2, 0, 0, 7))
seed("nbd_server", "meta_bad", b"\x00" + P('>I', 3) + meta_opt(10, b"", b"base:allocation") + copt(8) +
     copt(10, P('>I', 0xffffffff)) + copt(10, P('>II', 0, 2) + P('>I', 15) + b"base:allocation") +
     copt(10, P('>III', 0, 1, 0xfffffff0)) + meta_opt(9, b"nope", b"base:allocation") +
     meta_opt(10, b"other", b"base:allocation") + copt(7, P('>I', 0) + P('>H', 0)) + nreq(7, 0, 4096, 1))
seed("nbd_server", "export_name", b"\x00" + P('>I', 1) + copt(1, b"") + nreq(0, 0, 16, 1))
seed("nbd_server", "abort", b"\x00" + P('>I', 3) + copt(5) + copt(99, b"x" * 10) + copt(2))


# ---- filesync (filesync/filesync.h: frames are [type, ...] msgpack arrays, as conn.c,
# hub.c, advertise.c and receive.c pack them; 4 KiB blocks, file ids 1 and 2)
FHELLO, FFILE, FSIZE, FBLK, FEND, FHAVE, FTBLK, FTDONE, FACK, FGONE, FERR = range(1, 12)
hub_hello = frame([FHELLO, "r3sync", 1, "ok", 7])
def fhello(role): return frame([FHELLO, "r3sync", 1, role])
def ffile(fid, name, size, block=4096): return frame([FFILE, fid, name, size, block])
def fblk(fid, idx, data): return frame([FBLK, fid, idx, data])
def ftblk(rid, fid, idx, data): return frame([FTBLK, rid, fid, idx, data])
H16 = b"\x11" * 16
# fs_recv: the hub's stream after the hello
seed("fs_recv", "round", hub_hello + ffile(1, "f", 10000) + fblk(1, 0, b"a" * 4096) + fblk(1, 2, b"c" * 1808) +
     frame([FEND, 1, 9]) + fblk(1, 1, b"b" * 4096) + frame([FEND, 2, 9]))
seed("fs_recv", "catchup", hub_hello + ffile(2, "d/e/g", 8192, 4096) + ftblk(7, 2, 0, b"x" * 4096) +
     ftblk(7, 2, 1, b"y" * 4096) + frame([FTDONE, 7, 2, 2]) + frame([FEND, 1, 9]))
seed("fs_recv", "resize_gone", hub_hello + ffile(1, "f", 4096) + frame([FSIZE, 1, 6000]) + fblk(1, 1, b"z" * 1904) +
     frame([FSIZE, 1, 100]) + frame([FGONE, 1]) + ffile(3, "f", 200, 8192) + frame([FEND, 3, 4]))
seed("fs_recv", "names", hub_hello + ffile(1, "../x", 10) + ffile(2, "/abs", 10) + ffile(3, "a//b", 10) +
     ffile(4, "./a", 10) + ffile(5, "ok/name", 10) + fblk(5, 0, b"q" * 10) + frame([FEND, 1, 2]))
seed("fs_recv", "err", hub_hello + ffile(1, "f", 5000) + frame([FERR, "the hub refuses: too slow"]))
seed("fs_recv", "bad", hub_hello + ffile(1, "f", 5000, 1000) + fblk(1, 5, b"x") + frame([99, 1]))
# fs_adv: byte 0 (bit 0 round first, bit 1 round per ACK, bit 2 change a byte per round), then the hub's stream
def fhave(fid, first, hashes, last, rid): return frame([FHAVE, fid, first, hashes, last, rid])
seed("fs_adv", "have_all", b"\x00" + hub_hello + fhave(1, 0, b"", 1, 7) + fhave(2, 0, b"", 1, 7))
seed("fs_adv", "have_partial", b"\x00" + hub_hello + fhave(1, 0, H16 * 2, 0, 7) + fhave(1, 2, H16 * 2, 1, 7))
seed("fs_adv", "rounds", b"\x07" + hub_hello + frame([FACK, 1, 7]) + frame([FACK, 2, 7]) + frame([FACK, 3, 8]))
seed("fs_adv", "err", b"\x01" + hub_hello + frame([FERR, "file id in use by another advertiser"]))
seed("fs_adv", "odd", b"\x02" + hub_hello + fhave(9, 0, b"", 1, 7) + fhave(1, 99, H16, 1, 7) + frame([FEND, 1]) +
     fhave(2, 0, b"\x00" * 15, 1, 7))
# fs_hub: 3 bytes (per connection: bit 0 receiver, bit 1 valid hello first, bit 2 sync id "b"),
# then records [sel, len16, bytes] for connection sel % 3 (bit 6: then shut its write side)
def rec(c, data): return P('>BH', c, len(data)) + data
seed("fs_hub", "relay", b"\x02\x03\x07" + rec(0, ffile(1, "f", 10000)) + rec(1, fhave(1, 0, H16, 1, 0)[:0] + frame([FHAVE, 1, 0, H16, 1])) +
     rec(0, fblk(1, 0, b"a" * 4096)) + rec(0, ftblk(2, 1, 1, b"b" * 4096)) + rec(0, frame([FTDONE, 2, 1, 2])) +
     rec(0, frame([FEND, 1])) + rec(1, frame([FACK, 1, 1])) + rec(0, frame([FSIZE, 1, 5000])))
seed("fs_hub", "raw_hello", b"\x00\x01\x05" + rec(0, fhello("adv")) + rec(1, fhello("recv")) + rec(2, fhello("recv")) +
     rec(0, ffile(1, "d/f", 4096)) + rec(0, fblk(1, 0, b"x" * 4096)) + rec(0x40, b"") + rec(1, frame([FACK, 1, 1])))
seed("fs_hub", "two_adv", b"\x02\x02\x03" + rec(0, ffile(1, "f", 100)) + rec(1, ffile(1, "f", 200)) +
     rec(1, ffile(2, "f", 300)) + rec(0, fblk(1, 0, b"y" * 100)) + rec(1, fblk(2, 0, b"z" * 300)) +
     rec(2, frame([FHAVE, 2, 0, b"", 1])) + rec(0x41, b"") + rec(2, frame([FACK, 5, 2])))
seed("fs_hub", "refusals", b"\x00\x00\x01" + rec(0, frame([FHELLO, "r3sync", 2, "adv"])) + rec(1, frame([FHELLO, "r3sync", 1, "who"])) +
     rec(2, frame([FFILE, 1, "f", 1, 4096])))
seed("fs_hub", "bad_msgs", b"\x02\x03\x03" + rec(0, ffile(1, "../f", 100)) + rec(1, fblk(1, 0, b"")) +
     rec(2, frame([FHELLO, "r3sync", 1, "recv"])))

# ---- migration (include/r3/wire.h: the seeder's methods on the r3 protocol)
MV, SESS = 2, 77
def call(i, m, a=0, b=0): return req(i, m, a, b) if (a or b) else req(i, m)
# mig_seed: byte 0 (bit 0 valid hello first, bit 1 opts.sync), byte 1 (chunks written after TRACK), the stream
seed("mig_seed", "full", b"\x01\x05" + call(1, "migrate", MV, SESS) + call(2, "track", SESS) + req(3, "read", 0, 4096) +
     call(4, "finalize", SESS, 0) + call(5, "finalize", SESS, 8 + 8 * 16) + call(6, "dirty", 0, 16) +
     call(7, "release", SESS) + call(8, "release", SESS))
seed("mig_seed", "sync_retry", b"\x03\x80" + call(1, "migrate", MV, SESS) + call(2, "track", SESS) + call(3, "track", SESS) +
     call(4, "order", 0, 8) + call(5, "finalize", SESS, 16) + call(6, "finalize", SESS, 16) + call(7, "dirty", 0, 8) +
     call(8, "track", SESS + 1) + call(9, "release", SESS))
seed("mig_seed", "out_of_order", b"\x01\x01" + call(1, "dirty", 0, 8) + call(2, "finalize", SESS) + call(3, "release", SESS) +
     call(4, "migrate", 1, SESS) + call(5, "track") + call(6, "finalize", SESS, 4) + call(7, "nope", 1, 2))
seed("mig_seed", "own_hello", b"\x00\x00" + chello + call(1, "migrate", MV, SESS) + call(2, "track", SESS))
# mig_leech: byte 0 (size, features), byte 1 (max_request / 64), then the script of answers
def u(v): return b"\x00" + P('>Q', v)
def lst(*v): return b"\x01" + bytes([len(v)]) + b"".join(P('>Q', x) for x in v)
NIL = b"\x04"
def err(e): return b"\x03" + bytes([e])
seed("mig_leech", "full", b"\x03\x00" + u(4096) + u(2) + lst(3, 5) + lst(2, 1, 7) + NIL)
seed("mig_leech", "no_order", b"\x00\x00" + u(16384) + u(0) + lst(0) + NIL)
seed("mig_leech", "small_max", b"\x33\x01" + u(4096) + u(16) + lst(*range(16)) + lst(16, *range(15)) + NIL)
# 32 MiB, 8192 chunks: FINALIZE's head holds 4096 of the 4100 dirty chunks, then one DIRTY slice
seed("mig_leech", "dirty_slices", b"\x41\x00" + u(4096) + u(600) + lst(*range(255)) + lst(4100, *range(1, 255)) +
     lst(1, 2, 3, 4) + NIL)
seed("mig_leech", "version", b"\x01\x00" + err(93))
seed("mig_leech", "plain", b"\x01\x00" + err(38))
seed("mig_leech", "lost", b"\x01\x00" + u(4096) + b"\x06" + u(1) + lst(0) + b"\x06" + lst(1, 4) + err(5))
seed("mig_leech", "garbage", b"\x01\x00" + u(4096) + b"\x05" + P('>H', 6) + b"\x00\x00\x00\x02\x91\x01" + u(0) + b"\x02" + P('>H', 3) + b"abc")

top = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
for t, seeds in out.items():
    d = os.path.join(top, t)
    os.makedirs(d, exist_ok=True)
    for n, data in seeds:
        with open(os.path.join(d, n), "wb") as f:
            f.write(data)
print("wrote", sum(len(v) for v in out.values()), "seeds for", len(out), "targets")
