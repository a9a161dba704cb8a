#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# r3serve's limits (issue 9), each against a real r3serve on loopback:
#  1. a client that sends 16 x 32 MiB reads and never reads the replies stalls only itself
#  2. --max-inflight bounds RSS under two write-flooding connections; 3,000 idle
#     connections are not 3,000 threads; --max-connections refuses with a message
#  3. the hello has a whole deadline from accept (slowloris and silent connections cut)
#  4. with TLS configured, every port requires it (the --nbd port refuses plain NBD)
#  5. no non-loopback listen without TLS unless --insecure; ports out of range refused;
#     one log line per r3 client; the tool's usage surface (2-line errors, exit 2)
source "$top_srcdir/tests/integration/lib.sh"
t_need python3
t_need openssl
SERVE="$top_builddir/r3serve"
CAT="$top_builddir/tests/r3check"
PEER="$top_srcdir/tests/integration/wire_peer.py"
D=$T_DIR

start_serve() {
    local log=$1 i; shift
    t_bg "$SERVE" "$@" 2>"$log"
    SERVE_PID=$T_LAST_PID
    for i in $(seq 1 200); do
        grep -q 'serving' "$log" 2>/dev/null && break
        kill -0 "$SERVE_PID" 2>/dev/null || { cat "$log" >&2; t_fail "r3serve $* did not start"; }
        sleep 0.05
    done
    PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
}
stop_serve() { kill "$SERVE_PID" 2>/dev/null; wait "$SERVE_PID" 2>/dev/null || true; }
field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# usage_error WHAT REGEX ARGS... : exit 2, exactly two lines, the first says REGEX
usage_error() {
    local what=$1 re=$2 rc=0; shift 2
    t_timeout 10 "$SERVE" "$@" >"$D/out" 2>"$D/err" || rc=$?
    [ "$rc" = 2 ] || { cat "$D/err" >&2; t_fail "$what: exit status $rc, expected 2"; }
    [ "$(wc -l <"$D/err")" = 2 ] || { cat "$D/err" >&2; t_fail "$what: expected two lines"; }
    head -1 "$D/err" | grep -Eq "^r3serve: .*$re" || { cat "$D/err" >&2; t_fail "$what: no '$re'"; }
    grep -q "^Try 'r3serve --help' for more information.$" "$D/err" || t_fail "$what: no 'Try' line"
    t_log "$what: $(head -1 "$D/err")"
}

# ---- 5. surface, exposure, ports
"$SERVE" --help | grep -q -- '--max-inflight' || t_fail "--help does not list --max-inflight"
"$SERVE" --version | grep -Eq '^r3serve \(r3\) [0-9]' || t_fail "--version"
usage_error "unknown flag" "unknown option '--bogus'" --bogus
usage_error "port out of range" "port 99999 is out of range" --listen 127.0.0.1:99999 --source mem:?size=1M
usage_error "port 65536" "out of range" --listen 127.0.0.1:65536 --source mem:?size=1M
usage_error "non-loopback without TLS" "without TLS" --listen 0.0.0.0:0 --source mem:?size=1M
usage_error "non-loopback NBD without TLS" "without TLS" --nbd 0.0.0.0:0 --source mem:?size=1M
usage_error "duration without a unit" "needs a unit" --listen 127.0.0.1:0 --source mem:?size=1M --timeout 30
usage_error "missing source" "--source is required" --listen 127.0.0.1:0
start_serve "$D/insecure.log" --listen 0.0.0.0:0 --source "mem:?size=1M" --insecure
grep -q "listening on 0.0.0.0:" "$D/insecure.log" || t_fail "--insecure does not allow 0.0.0.0"
stop_serve

# one r3 client (8 connections) is one log line; a wrong export does not name the real one
start_serve "$D/log.log" --listen 127.0.0.1:0 --source "mem:?size=4M" --export disk
t_timeout 30 "$CAT" get "r3://127.0.0.1:$PORT/disk?conns=8" "$D/back" || t_fail "get"
t_timeout 30 "$CAT" get "r3://127.0.0.1:$PORT/secret-guess" "$D/none" 2>"$D/err" && t_fail "a wrong export was served"
grep -q "no such export 'secret-guess'" "$D/err" || { cat "$D/err" >&2; t_fail "wrong export: sentence"; }
grep -q "disk" "$D/err" && t_fail "the refusal names the real export: $(cat "$D/err")"
stop_serve
n=$(grep -c "export 'disk'" "$D/log.log")
[ "$n" = 1 ] || { cat "$D/log.log" >&2; t_fail "one client with 8 connections made $n log lines"; }
grep -q "8 connections" "$D/log.log" || { cat "$D/log.log" >&2; t_fail "the client's line does not count its connections"; }
t_log "one client, one line: $(grep "export 'disk'" "$D/log.log" | cut -d' ' -f3-)"

# ---- 1. a client that never reads its replies stalls only itself
start_serve "$D/slow.log" --listen 127.0.0.1:0 --source "mem:?size=64M"
python3 "$PEER" "$PORT" slowread 16 $((32 << 20)) >"$D/slow.out" & SLOW=$!; T_PIDS="$T_PIDS $SLOW"
for i in $(seq 1 100); do grep -q sent "$D/slow.out" && break; sleep 0.05; done
sleep 1
worst=$(t_timeout 60 python3 "$PEER" "$PORT" timedreads 50 65536) || t_fail "a good client's reads failed beside a non-reading client"
[ "$worst" -lt 2000 ] || t_fail "a good client waited $worst ms for a read beside a non-reading client"
t_log "beside a client that does not read 16 x 32 MiB of replies, the slowest of 50 reads took $worst ms"
t_timeout 30 "$CAT" get "r3://127.0.0.1:$PORT/x" "$D/back" -l 8M || t_fail "r3check beside a non-reading client"
kill $SLOW
stop_serve

# ---- 2. memory: two write floods under --max-inflight 64M, file source (page cache is not RSS)
# (under ASan, freed memory sits in a quarantine: measure without it)
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0" \
    start_serve "$D/flood.log" --listen 127.0.0.1:0 --source "file://$D/flood?size=64M" --max-inflight 64M
base=$(field "$SERVE_PID" VmRSS)
t_bg python3 "$PEER" "$PORT" flood $((32 << 20)); F1=$T_LAST_PID
t_bg python3 "$PEER" "$PORT" flood $((32 << 20)); F2=$T_LAST_PID
max=0
for i in $(seq 1 30); do
    r=$(field "$SERVE_PID" VmRSS); [ "$r" -gt "$max" ] && max=$r
    sleep 0.1
done
kill $F1 $F2
# Under ThreadSanitizer, RSS also holds the shadow of every heap byte touched
# (about twice its size): the bound is checked by the plain and ASan runs only.
if ldd "$SERVE" 2>/dev/null | grep -q libtsan; then
    t_log "2 write floods, --max-inflight 64M: RSS $((base / 1024)) -> at most $((max / 1024)) MiB (ThreadSanitizer's shadow included: not checked)"
else
    [ $((max - base)) -lt $((64 * 1024 + 48 * 1024)) ] || t_fail "2 write floods grew RSS by $(( (max - base) / 1024 )) MiB with --max-inflight 64M"
    t_log "2 write floods, --max-inflight 64M: RSS $((base / 1024)) -> at most $((max / 1024)) MiB"
fi
stop_serve

# 3,000 idle connections: no thread each; over --max-connections: refused with a message
start_serve "$D/idle.log" --listen 127.0.0.1:0 --source "mem:?size=1M" --max-connections 3005
python3 "$PEER" "$PORT" idle 3000 >"$D/idle.out" & IDLE=$!; T_PIDS="$T_PIDS $IDLE"
for i in $(seq 1 600); do grep -q open "$D/idle.out" && break; sleep 0.1; done
grep -q "open 3000" "$D/idle.out" || t_fail "3,000 connections were not all served"
sleep 6                                    # pool threads idle out after 5 s
threads=$(field "$SERVE_PID" Threads); rss=$(field "$SERVE_PID" VmRSS)
[ "$threads" -lt 64 ] || t_fail "3,000 idle connections: $threads threads"
t_log "3,000 idle connections: $threads threads, RSS $((rss / 1024)) MiB"
t_timeout 30 "$CAT" size "r3://127.0.0.1:$PORT/x?conns=5" >/dev/null || t_fail "5 more connections (3005) refused"
t_timeout 30 "$CAT" size "r3://127.0.0.1:$PORT/x?conns=6" 2>"$D/err" && t_fail "the 3006th connection was served"
grep -q "too many connections" "$D/err" || { cat "$D/err" >&2; t_fail "over the cap: no message"; }
t_log "over the cap: $(cat "$D/err")"
kill $IDLE
stop_serve
grep -q "refused: too many connections" "$D/idle.log" || t_fail "the refusal is not logged"

# ---- 3. the hello's whole deadline, from accept
start_serve "$D/hs.log" --listen 127.0.0.1:0 --source "mem:?size=1M" --handshake-timeout 1s
s=$(t_timeout 30 python3 "$PEER" "$PORT" slowloris)
awk -v s="$s" 'BEGIN { exit !(s >= 0.8 && s < 3) }' || t_fail "a 1-byte-every-200ms hello was cut after $s s (deadline 1s)"
q=$(t_timeout 30 python3 "$PEER" "$PORT" silent)
awk -v s="$q" 'BEGIN { exit !(s >= 0.8 && s < 3) }' || t_fail "a silent connection was cut after $q s (deadline 1s)"
t_log "handshake deadline 1s: slowloris cut after $s s, silent after $q s"
stop_serve

# ---- 4. TLS configured: the --nbd port requires it too
d=$D/A; mkdir -p "$d"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.pem" -days 2 -subj "/CN=ca" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$d/srv.key" -out "$d/srv.csr" -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$d/ext"
openssl x509 -req -in "$d/srv.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -out "$d/srv.pem" \
    -days 2 -extfile "$d/ext" 2>/dev/null
NP=$(t_free_port)
start_serve "$D/tls.log" --listen 127.0.0.1:0 --source "mem:?size=1M" --tls-cert "$d/srv.pem" \
    --tls-key "$d/srv.key" --nbd "127.0.0.1:$NP"
grep -q "TLS on every port" "$D/tls.log" || t_fail "the banner does not say TLS is on every port"
python3 - "$NP" <<'EOF' || t_fail "the NBD port served a plain client while TLS is configured"
import socket, struct, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)
def rd(n):
    b = b''
    while len(b) < n:
        x = s.recv(n - len(b))
        if not x: raise EOFError
        b += x
    return b
assert rd(16) == b'NBDMAGICIHAVEOPT'; rd(2)
s.sendall(struct.pack('>I', 3))
s.sendall(b'IHAVEOPT' + struct.pack('>II', 7, 6) + struct.pack('>IH', 0, 0))     # NBD_OPT_GO ""
try:
    magic, opt, typ, ln = struct.unpack('>QIII', rd(20))
except (EOFError, ConnectionResetError):
    sys.exit(0)                                                                    # dropped: refused
assert typ == 0x80000005, 'plain NBD_OPT_GO answered with reply type %#x' % typ   # NBD_REP_ERR_TLS_REQD
EOF
t_timeout 30 "$CAT" size "r3://127.0.0.1:$PORT/x?connect_timeout=2" 2>/dev/null && t_fail "the r3 port served a plain client"
[ "$(t_timeout 30 "$CAT" size "r3s://127.0.0.1:$PORT/x?ca=$d/ca.pem")" = 1048576 ] || t_fail "r3s:// with TLS configured"
stop_serve
t_log "TLS configured: plain NBD and plain r3 refused, r3s:// served"
t_log "all checks passed"
