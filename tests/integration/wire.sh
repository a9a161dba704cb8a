#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# r3serve + r3:// r3s:// r3+unix:// end to end: real r3serve processes on free
# loopback ports, data written through r3:// and read back through r3:// and
# directly from the served file; mTLS refusals; SIGKILL + restart; garbage,
# truncated and oversized frames from raw sockets; bad-input sentences.
source "$top_srcdir/tests/integration/lib.sh"
t_need openssl
t_need python3
t_need cmp
SERVE="$top_builddir/r3serve"
CAT="$top_builddir/tests/r3check"
D=$T_DIR

# start_serve LOG ARGS... : starts r3serve, sets PORT (or waits for the unix socket)
start_serve() {
    local log=$1 i; shift
    t_bg "$SERVE" "$@" 2>"$log"
    SERVE_PID=$T_LAST_PID
    for i in $(seq 1 200); do
        grep -q 'listening on' "$log" 2>/dev/null && break
        kill -0 "$SERVE_PID" 2>/dev/null || { cat "$log" >&2; t_fail "r3serve $* did not start"; }
        sleep 0.05
    done
    PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
}

# expect_fail WHAT REGEX CMD... : CMD must exit 1 within its time limit, saying REGEX
expect_fail() {
    local what=$1 re=$2 rc=0; shift 2
    t_timeout 30 "$@" >"$D/out" 2>&1 || rc=$?
    [ "$rc" = 1 ] || { cat "$D/out" >&2; t_fail "$what: exit status $rc, expected 1"; }
    grep -Eq "$re" "$D/out" || { cat "$D/out" >&2; t_fail "$what: no sentence matching '$re'"; }
    [ "$(wc -l <"$D/out")" = 1 ] || { cat "$D/out" >&2; t_fail "$what: expected one sentence"; }
    t_log "$what: $(cat "$D/out")"
}

# ---- certificates: CA A (server + client1), CA B (an unrelated client)
mkcerts() {
    local d=$D/$1
    t_ca "$d" ca "r3 test CA $1"
    t_cert "$d" srv 127.0.0.1 ca "subjectAltName=IP:127.0.0.1,DNS:localhost"
    t_cert "$d" cli "client-$1" ca
}
mkcerts A
mkcerts B

head -c 64M /dev/urandom >"$D/data"

# ---- 1. plain TCP, file source: 64 MiB in unaligned pieces, flush, close, reopen, compare
start_serve "$D/plain.log" --listen 127.0.0.1:0 --source "file://$D/served?size=64M" --export disk --workers 8
P1=$PORT
U="r3://127.0.0.1:$P1/disk"
t_timeout 120 "$CAT" put "$U" "$D/data" -p 1-300000 -j 4 || t_fail "r3:// put"
t_timeout 60 "$CAT" get "$U?conns=2" "$D/back" -p 1-500000 -j 3 || t_fail "r3:// get"
cmp "$D/data" "$D/back" || t_fail "r3://: data read back differs"
cmp "$D/data" "$D/served" || t_fail "r3://: the served file differs from what was written"
t_log "plain: 64 MiB written in unaligned pieces and read back: same"

# ---- 2. unix socket, dir source
start_serve "$D/unix.log" --listen "unix:$D/r3.sock" --source "dir://$D/chunks?size=64M&chunk=64K"
t_wait_port "$D/r3.sock"
UU="r3+unix:///x?socket=$D/r3.sock"
t_timeout 120 "$CAT" put "$UU" "$D/data" -p 1000-200000 -j 2 || t_fail "r3+unix:// put"
t_timeout 60 "$CAT" get "$UU" "$D/back" -j 2 || t_fail "r3+unix:// get"
cmp "$D/data" "$D/back" || t_fail "r3+unix://: data read back differs"
# and through another path than r3serve and the dir source: the chunk files
# themselves (named by their index, 64 KiB each, a missing one is zeros)
python3 - "$D/chunks" 1024 65536 >"$D/fromfiles" <<'EOF' || t_fail "reading the chunk files"
import os, sys
d, n, ch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = sys.stdout.buffer
for i in range(n):
    p = os.path.join(d, str(i))
    b = open(p, 'rb').read() if os.path.exists(p) else b''
    assert len(b) <= ch, (p, len(b))
    out.write(b + bytes(ch - len(b)))
EOF
cmp "$D/data" "$D/fromfiles" || t_fail "r3+unix://: the dir source's chunk files differ from what was written"
t_log "unix socket + dir source: same (read back through r3+unix:// and from the chunk files)"

# ---- 3. TLS with client certificates (mTLS)
start_serve "$D/tls.log" --listen 127.0.0.1:0 --source "file://$D/served-tls?size=64M" \
    --tls-cert "$D/A/srv.pem" --tls-key "$D/A/srv.key" --tls-ca "$D/A/ca.pem"
PT=$PORT
US="r3s://127.0.0.1:$PT/x?ca=$D/A/ca.pem&cert=$D/A/cli.pem&key=$D/A/cli.key"
t_timeout 120 "$CAT" put "$US" "$D/data" -p 1-300000 -j 4 || t_fail "r3s:// put"
t_timeout 60 "$CAT" get "$US" "$D/back" -j 4 || t_fail "r3s:// get"
cmp "$D/data" "$D/back" || t_fail "r3s://: data read back differs"
cmp "$D/data" "$D/served-tls" || t_fail "r3s://: the served file differs"
t_log "TLS + client certificate: same"
# refusals are checked with a read: TLS 1.3 reports client-certificate failures after the handshake
expect_fail "mTLS without a client certificate" "refused" \
    "$CAT" get "r3s://127.0.0.1:$PT/x?ca=$D/A/ca.pem" "$D/none" -l 64K
expect_fail "mTLS with a certificate from another CA" "refused" \
    "$CAT" get "r3s://127.0.0.1:$PT/x?ca=$D/A/ca.pem&cert=$D/B/cli.pem&key=$D/B/cli.key" "$D/none" -l 64K
expect_fail "client trusting the wrong CA" "certificate verify failed" \
    "$CAT" get "r3s://127.0.0.1:$PT/x?ca=$D/B/ca.pem&cert=$D/A/cli.pem&key=$D/A/cli.key" "$D/none" -l 64K
expect_fail "plain client to a TLS server" "r3 127.0.0.1:$PT: .*(TLS|closed)" \
    "$CAT" get "r3://127.0.0.1:$PT/x?connect_timeout=3s" "$D/none" -l 64K
grep -q "cn=client-A" "$D/tls.log" || t_fail "the TLS log line does not name the client certificate"
# the client checks the server's name, not just its CA: a certificate for another name is refused
t_cert "$D/A" other other.example ca "subjectAltName=DNS:other.example"
start_serve "$D/other.log" --listen 127.0.0.1:0 --source "mem:?size=1M" --tls-cert "$D/A/other.pem" --tls-key "$D/A/other.key"
expect_fail "server certificate for another name" "certificate verify failed: IP address mismatch" \
    "$CAT" get "r3s://127.0.0.1:$PORT/x?ca=$D/A/ca.pem" "$D/none"
[ "$(t_timeout 30 "$CAT" size "r3s://127.0.0.1:$PORT/x?ca=$D/A/ca.pem&insecure=1")" = 1048576 ] || \
    t_fail "insecure=1 does not skip the server check"
kill "$SERVE_PID"

# ---- 4. bad input: one clear sentence each, within the connect timeout
FREE=$(t_free_port)
expect_fail "connection refused" "^r3check: r3 127.0.0.1:$FREE: connection refused$" \
    "$CAT" get "r3://127.0.0.1:$FREE/x" "$D/none"
expect_fail "wrong export" "no such export 'nope'$" "$CAT" get "r3://127.0.0.1:$P1/nope" "$D/none"
expect_fail "TLS client to a plain server" "does the server speak TLS" \
    "$CAT" get "r3s://127.0.0.1:$P1/disk?ca=$D/A/ca.pem" "$D/none"
expect_fail "missing port" "needs a port" "$CAT" get "r3://127.0.0.1/x" "$D/none"
expect_fail "bad CA file" "cannot read CA file .*missing.pem: No such file" "$CAT" get "r3s://127.0.0.1:$PT/x?ca=$D/missing.pem" "$D/none"
# a server that accepts but never speaks: the connect timeout bounds the wait
SILENT=$(t_free_port)
t_bg python3 -c "
import socket,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1',$SILENT)); s.listen(16); c=[]
while True: c.append(s.accept()[0])"
t_wait_port "$SILENT"
t0=$(date +%s%N)
expect_fail "silent server" "no hello from the server within 1000 ms" \
    "$CAT" get "r3://127.0.0.1:$SILENT/x?connect_timeout=1s" "$D/none"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -lt 5000 ] || t_fail "the silent server took $ms ms to be reported (connect_timeout=1)"

# a server that answers the hello, then replies with an oversized frame: the
# client refuses it before allocating, retries the read, and gives up at its timeout
EVIL=$(t_free_port)
t_bg python3 -c "
import socket, struct, threading
def mp_hello():
    m = b'\x84' + b'\xa4size' + b'\xce' + struct.pack('>I', 1 << 20) + b'\xa5align\x01' + b'\xa5flags\x02' \
        + b'\xabmax_request\xce' + struct.pack('>I', 1 << 20)
    return b'\x93\xa2r3\x01' + m
def serve(c):
    try:
        n = struct.unpack('>I', c.recv(4))[0]; c.recv(n)
        h = mp_hello(); c.sendall(struct.pack('>I', len(h)) + h)
        while c.recv(65536):
            c.sendall(struct.pack('>I', 0x7ffffff0) + b'\x94\x01')
    except OSError:
        pass
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $EVIL)); s.listen(16)
while True:
    c = s.accept()[0]; threading.Thread(target=serve, args=(c,), daemon=True).start()"
t_wait_port "$EVIL"
expect_fail "oversized reply from a bad server" "protocol error: a reply of 2147483632 bytes" \
    "$CAT" get "r3://127.0.0.1:$EVIL/x?timeout=2s&conns=2" "$D/none" -l 64K

# IPv6 loopback, where the kernel has it
if python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1",0))' 2>/dev/null; then
    start_serve "$D/v6.log" --listen "[::1]:0" --source "mem:?size=1M"
    P6=$(sed -n 's/.*listening on \[::1\]:\([0-9]*\).*/\1/p' "$D/v6.log")
    [ "$(t_timeout 30 "$CAT" size "r3://[::1]:$P6/x")" = 1048576 ] || t_fail "r3://[::1]:$P6"
    kill "$SERVE_PID"
else
    t_log "no IPv6 loopback here: [::1] not checked"
fi

# ---- 5. garbage, truncated, oversized frames, unknown method, a client vanishing mid-request
python3 - "$P1" <<'EOF' || t_fail "raw-socket checks"
import socket, struct, sys, time
port = int(sys.argv[1])

def mp(o):          # the msgpack subset the r3 protocol uses
    if o is None: return b'\xc0'
    if isinstance(o, bool): return b'\xc3' if o else b'\xc2'
    if isinstance(o, int):
        if 0 <= o < 128: return bytes([o])
        return b'\xcf' + struct.pack('>Q', o)
    if isinstance(o, str):
        b = o.encode(); return bytes([0xa0 | len(b)]) + b if len(b) < 32 else b'\xd9' + bytes([len(b)]) + b
    if isinstance(o, bytes): return b'\xc6' + struct.pack('>I', len(o)) + o
    if isinstance(o, list): return bytes([0x90 | len(o)]) + b''.join(mp(x) for x in o)
    if isinstance(o, dict): return bytes([0x80 | len(o)]) + b''.join(mp(k) + mp(v) for k, v in o.items())
def frame(o): b = mp(o); return struct.pack('>I', len(b)) + b

def conn(hello=True):
    s = socket.create_connection(('127.0.0.1', port), timeout=10)
    if hello:
        s.sendall(frame(['r3', 1, {'export': 'disk'}]))
        read_frame(s)
    return s
def recv_all(s, n):
    b = b''
    while len(b) < n:
        x = s.recv(n - len(b))
        if not x: raise EOFError
        b += x
    return b
def read_frame(s):
    n = struct.unpack('>I', recv_all(s, 4))[0]
    return recv_all(s, n)
def closed(s):                 # the server drops the connection (maybe after an error reply)
    try:
        while True:
            read_frame(s)
    except (EOFError, ConnectionResetError):
        return True

good = conn()                  # stays open through all of this
def still_serving():
    good.sendall(frame([0, 42, 'size', []]))
    r = read_frame(good)
    assert r[:2] == b'\x94\x01' and r[2] == 42 and r[3] == 0xc0, r

s = conn(); s.sendall(frame([0, 7, 'bogus', []])); r = read_frame(s)
assert r[:3] == b'\x94\x01\x07' and b'unknown method' in r, r
s.sendall(frame([0, 8, 'size', []])); r = read_frame(s); assert r[2] == 8 and r[3] == 0xc0, r
s.sendall(frame([0, 9, 'track', []])); r = read_frame(s); assert b'not supported' in r, r
s.sendall(frame([0, 10, 'read', [(64 << 20) - 10, 100]])); r = read_frame(s); assert b'past the end' in r, r
s.sendall(frame([0, 11, 'read', [0, 1 << 30]])); r = read_frame(s); assert b'largest request' in r, r
s.close(); still_serving()

s = conn(); s.sendall(struct.pack('>I', 0x7fffffff) + b'x' * 100)     # oversized
r = read_frame(s); assert b'maximum' in r, r; assert closed(s); still_serving()
s = conn(); s.sendall(struct.pack('>I', 10) + bytes(range(0xc1, 0xcb)))  # garbage
assert closed(s); still_serving()
s = conn(); s.sendall(frame({'not': 'an array'})); assert closed(s); still_serving()
s = conn(); s.sendall(frame([0, 'id', 'read', [0, 1]])); assert closed(s); still_serving()
s = conn(); s.sendall(frame([0, 1, 'read', [0, 'x']])); assert closed(s); still_serving()
s = conn(hello=False); s.sendall(b'GET / HTTP/1.1\r\n\r\n'); assert closed(s); still_serving()
s = conn(hello=False); s.sendall(frame(['r3', 99, {}])); r = read_frame(s); assert b'version' in r, r
assert closed(s); still_serving()
s = conn(); s.sendall(struct.pack('>I', 100) + b'\x94\x00'); s.close(); still_serving()   # truncated
w = frame([0, 3, 'write', [0, b'\0' * (1 << 20)]])
s = conn(); s.sendall(w[:1000]); s.close(); still_serving()                         # vanishes mid-request
s = conn(); s.sendall(frame([0, 4, 'read', [0, 1 << 20]]) * 8); s.close(); still_serving()  # leaves with replies pending
time.sleep(0.2); still_serving()
print('raw-socket checks passed')
EOF
# the earlier data is untouched and other clients are still served
t_timeout 60 "$CAT" get "$U" "$D/back" -j 2 || t_fail "r3:// get after the bad frames"
cmp "$D/data" "$D/back" || t_fail "data changed after the bad frames"
grep -q "dropped: frame of 2147483647 bytes" "$D/plain.log" || t_fail "no log line for the oversized frame"

# ---- 6. SIGKILL mid-transfer and restart on the same port
start_serve "$D/k1.log" --listen 127.0.0.1:0 --source "file://$D/killed?size=64M"
PK=$PORT
UK="r3://127.0.0.1:$PK/x?timeout=10s&chunk=64K"
head -c 32M "$D/data" >"$D/first"
t_timeout 60 "$CAT" put "$UK" "$D/first" -p 1-300000 -j 2 || t_fail "put before the kill"   # flushed
# a slow reader and a slow whole-chunk writer span the kill and the restart
# (64 KiB pieces, 2 threads: 512 pieces at 30 ms, about 8 s; the writer about 5 s)
t_timeout 60 "$CAT" get "$UK" "$D/during" -l 32M -j 2 -p 65536-65536 -d 30000 & RD=$!
head -c 16M /dev/urandom >"$D/second"
t_timeout 60 "$CAT" put "$UK" "$D/second" -o 32M -p 65536-65536 -j 2 -d 40000 2>"$D/writer.err" & WR=$!
# kill once both are seen moving bytes (the reader's output grows, the
# writer's first chunk is in the served file), not after a sleep
for i in $(seq 400); do
    [ "$(stat -c %s "$D/during" 2>/dev/null || echo 0)" -ge 1048576 ] &&
        cmp -s -n 65536 <(tail -c +$((32 * 1048576 + 1)) "$D/killed") "$D/second" && break
    sleep 0.025
done
[ "$(stat -c %s "$D/during" 2>/dev/null || echo 0)" -ge 1048576 ] || t_fail "the reader never got going"
cmp -s -n 65536 <(tail -c +$((32 * 1048576 + 1)) "$D/killed") "$D/second" || t_fail "the writer never got going"
kill -0 "$RD" 2>/dev/null && kill -0 "$WR" 2>/dev/null || t_fail "reader or writer done before the kill: nothing spans the restart"
kill -9 "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null
sleep 0.5                            # the server stays away a while: clients meet a refused connect
start_serve "$D/k2.log" --listen "127.0.0.1:$PK" --source "file://$D/killed?size=64M"
kill -0 "$RD" 2>/dev/null || t_fail "the reader ended while the server was down (it must retry across the restart)"
rc=0; wait $RD || rc=$?
[ "$rc" = 0 ] || t_fail "a reader spanning the restart failed (status $rc; reads are retried)"
cmp "$D/first" "$D/during" || t_fail "a reader spanning the restart read wrong data"
rc=0; wait $WR || rc=$?
[ "$rc" = 1 ] || { cat "$D/writer.err" >&2; t_fail "a writer spanning the restart: status $rc, expected 1 (flush must report the lost connection)"; }
grep -q "lost since the last flush" "$D/writer.err" || { cat "$D/writer.err" >&2; t_fail "the writer's flush error does not say why"; }
t_log "writer across the restart: $(cat "$D/writer.err")"
t_timeout 60 "$CAT" get "$UK" "$D/after" -l 32M -j 2 || t_fail "read after the restart"
cmp "$D/first" "$D/after" || t_fail "data flushed before the kill is not intact"
# an unaligned writer with the server gone for good: an error, not a hang
head -c 4M /dev/urandom >"$D/third"
t_timeout 60 "$CAT" put "r3://127.0.0.1:$PK/x?timeout=3s" "$D/third" -p 1-100000 -d 20000 2>"$D/w3.err" & WR=$!
# its bytes may sit in the client or the server until a flush: progress is
# what the writer (under timeout) has read of its file, from /proc/PID/io
sent() {
    local p t=0 n q=$WR all=$WR
    while q=$(pgrep -P "$(echo $q | tr ' ' ,)" 2>/dev/null | tr '\n' ' ') && [ -n "$q" ]; do all="$all $q"; done
    for p in $all; do n=$(sed -n 's/^rchar: //p' "/proc/$p/io" 2>/dev/null); t=$((t + ${n:-0})); done
    echo "$t"
}
for i in $(seq 400); do
    [ "$(sent)" -ge 524288 ] && break
    sleep 0.025
done
[ "$(sent)" -ge 524288 ] || t_fail "the last writer never got going"
kill -0 "$WR" 2>/dev/null || t_fail "the last writer finished before its server died"
kill -9 "$SERVE_PID"
rc=0; wait $WR || rc=$?
[ "$rc" = 1 ] || t_fail "a writer whose server died: status $rc, expected 1"
grep -Eq "127.0.0.1:$PK: .*(lost|refused|timed out|closed|reset)" "$D/w3.err" || { cat "$D/w3.err" >&2; t_fail "the writer's error does not say the server went away"; }
t_log "writer with the server gone: $(cat "$D/w3.err")"

# ---- 7. SIGTERM: stops cleanly after flushing
start_serve "$D/term.log" --listen 127.0.0.1:0 --source "file://$D/term?size=4M"
head -c 4M "$D/data" >"$D/four"
t_timeout 30 "$CAT" put "r3://127.0.0.1:$PORT/x" "$D/four" --no-flush || t_fail "put without flush"
kill -TERM "$SERVE_PID"
rc=0; wait "$SERVE_PID" || rc=$?
[ "$rc" = 0 ] || t_fail "r3serve exit status $rc after SIGTERM"
grep -q "stopping" "$D/term.log" || t_fail "r3serve did not say it was stopping"
cmp "$D/four" "$D/term" || t_fail "data written before SIGTERM is not in the file"
t_log "all checks passed"
