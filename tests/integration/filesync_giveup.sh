#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Reconnect storms (issue 9, item 8): a certificate the hub refuses is final
# (the client exits with the reason in one line, after very few attempts,
# never a tight loop); a hub that cannot be reached is retried with backoff
# and given up after --give-up-after, and with --rounds by default; a hub
# restart is still survived (the filesync_reconnect test).
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/integration/filesync_lib.sh"
fs_certs
C="$T_DIR/c"
mkdir -p "$T_DIR/src" "$T_DIR/evil"
head -c 256K /dev/urandom > "$T_DIR/src/f.bin"
cd "$T_DIR/src"
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }
within() { awk -v x="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(x >= lo && x <= hi) }'; }

# a dead port: nothing listens there (bound, then released)
DEAD=$(t_free_port)
# --rounds without --give-up-after: gives up by itself (30 s), run meanwhile
t_bg "$R3SYNC" advertise f.bin --hub "127.0.0.1:$DEAD" $(fs_client a) --rounds 1 >/dev/null 2>"$T_DIR/rounds.err"
ROUNDS=$T_LAST_PID
ROUNDS_T0=$(date +%s.%N)

# --give-up-after 2s against the dead port: exits in about 2 s, non-zero
t0=$(date +%s.%N)
t_timeout 20 "$R3SYNC" advertise f.bin --hub "127.0.0.1:$DEAD" $(fs_client a) --give-up-after 2s \
    >/dev/null 2>"$T_DIR/dead.err" && t_fail "advertise to a dead port exited 0"
rc=$?
dt=$(since "$t0")
[ "$rc" = 1 ] || { cat "$T_DIR/dead.err"; t_fail "advertise to a dead port: exit $rc, want 1"; }
# (the bounds are what is checked; the upper one is scaled under a
# sanitizer, R3_TEST_SLOW in lib.sh)
within "$dt" 1.8 "$(t_slow 5)" || t_fail "gave up after $dt s, want about 2 s"
grep -q "giving up" "$T_DIR/dead.err" || { cat "$T_DIR/dead.err"; t_fail "no sentence saying it gave up"; }
n=$(sed -n 's/.*(\([0-9]*\) attempts).*/\1/p' "$T_DIR/dead.err")
[ -n "$n" ] && [ "$n" -ge 2 ] && [ "$n" -le 10 ] || { cat "$T_DIR/dead.err"; t_fail "$n attempts in 2 s (backoff wanted: 2..10)"; }
t_log "dead port: gave up after $dt s, $n attempts"
# the same for a receiver
t_timeout 20 "$R3SYNC" receive "$T_DIR/r0" --hub "127.0.0.1:$DEAD" $(fs_client a) --give-up-after 1s \
    >/dev/null 2>"$T_DIR/rdead.err" && t_fail "receive from a dead port exited 0"
grep -q "giving up" "$T_DIR/rdead.err" || { cat "$T_DIR/rdead.err"; t_fail "receiver: no sentence saying it gave up"; }

PORT=$(t_free_port)
fs_hub "$PORT"
# a certificate from another CA (same CN): refused by the hub, final
t0=$(date +%s.%N)
t_timeout 20 "$R3SYNC" advertise f.bin --hub "127.0.0.1:$PORT" --cert "$C/evil.pem" --key "$C/evil.key" \
    --ca "$C/ca.pem" >/dev/null 2>"$T_DIR/evil.err"
rc=$?
dt=$(since "$t0")
[ "$rc" = 1 ] || { cat "$T_DIR/evil.err"; t_fail "advertise with a refused certificate: exit $rc, want 1"; }
within "$dt" 0 "$(t_slow 5)" || t_fail "a refused certificate took $dt s to end"
[ "$(wc -l < "$T_DIR/evil.err")" = 1 ] || { cat "$T_DIR/evil.err"; t_fail "want the reason in one line"; }
grep -q "refused our certificate" "$T_DIR/evil.err" || { cat "$T_DIR/evil.err"; t_fail "the reason is not said"; }
sleep 0.3
refusals=$(grep -c "refused: .*certificate" "$T_DIR/hub.log")
[ "$refusals" -ge 1 ] && [ "$refusals" -le 2 ] || { cat "$T_DIR/hub.log"; t_fail "$refusals refused connections at the hub (want 1..2)"; }
t_log "refused certificate: exit after $dt s, $refusals attempt(s) seen by the hub: $(cat "$T_DIR/evil.err")"
# a receiver with it: the same
t_timeout 20 "$R3SYNC" receive "$T_DIR/evil" --hub "127.0.0.1:$PORT" --cert "$C/evil.pem" --key "$C/evil.key" \
    --ca "$C/ca.pem" >/dev/null 2>"$T_DIR/revil.err"
[ $? = 1 ] || { cat "$T_DIR/revil.err"; t_fail "receive with a refused certificate did not exit 1"; }
grep -q "refused our certificate" "$T_DIR/revil.err" || { cat "$T_DIR/revil.err"; t_fail "receiver: the reason is not said"; }
# a client that does not trust the hub's certificate: final too
t_timeout 20 "$R3SYNC" receive "$T_DIR/evil" --hub "127.0.0.1:$PORT" $(fs_client a | sed 's/ca.pem/ca2.pem/') \
    >/dev/null 2>"$T_DIR/untrusted.err"
[ $? = 1 ] || { cat "$T_DIR/untrusted.err"; t_fail "a client not trusting the hub did not exit 1"; }
grep -q "certificate" "$T_DIR/untrusted.err" || { cat "$T_DIR/untrusted.err"; t_fail "no certificate error for an untrusted hub"; }
[ -z "$(ls -A "$T_DIR/evil")" ] || t_fail "a refused receiver wrote files"

# the same against a TLS 1.2 hub, where the refusal (an alert) comes during
# the handshake rather than after it: final too
T12=$(t_free_port)
cat > "$T_DIR/tls12.py" <<PY
import socket, ssl, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
ctx.load_cert_chain("$C/hub.pem", "$C/hub.key")
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations("$C/ca.pem")
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", $T12)); ls.listen(64); ls.settimeout(0.2)
n, end = 0, time.time() + 6
while time.time() < end:
    try:
        s, _ = ls.accept()
    except socket.timeout:
        continue
    n += 1
    try:
        ctx.wrap_socket(s, server_side=True).close()
    except Exception:
        s.close()
print(n, flush=True)
PY
python3 "$T_DIR/tls12.py" > "$T_DIR/tls12.out" 2>&1 &
T12_PID=$!
t_wait_port "$T12"
t_timeout 20 "$R3SYNC" advertise f.bin --hub "127.0.0.1:$T12" --cert "$C/evil.pem" --key "$C/evil.key" \
    --ca "$C/ca.pem" >/dev/null 2>"$T_DIR/t12.err"
rc=$?
[ "$rc" = 1 ] && grep -q "refused our certificate" "$T_DIR/t12.err" ||
    { cat "$T_DIR/t12.err"; t_fail "TLS 1.2 hub refusing the certificate: exit $rc, want 1 with the reason"; }
wait "$T12_PID"
[ "$(cat "$T_DIR/tls12.out")" -le 3 ] || t_fail "$(cat "$T_DIR/tls12.out") connections to a TLS 1.2 hub refusing the certificate"
t_log "TLS 1.2 hub: $(cat "$T_DIR/t12.err")"

# a hub that accepts the hello and drops the connection at once: the client
# backs off between these short connections too (no reconnect storm)
FLAP=$(t_free_port)
cat > "$T_DIR/flap.py" <<PY
import socket, ssl, struct, sys, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("$C/hub.pem", "$C/hub.key")
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations("$C/ca.pem")
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", $FLAP)); ls.listen(64); ls.settimeout(0.2)
hello = b"\x95\x01\xa6r3sync\x01\xa2ok\x01"
n, end = 0, time.time() + 4
while time.time() < end:
    try:
        s, _ = ls.accept()
    except socket.timeout:
        continue
    n += 1
    try:
        t = ctx.wrap_socket(s, server_side=True)
        t.settimeout(2)
        h = t.recv(4); t.recv(struct.unpack(">I", h)[0])
        t.sendall(struct.pack(">I", len(hello)) + hello)
        t.close()
    except Exception:
        s.close()
print(n, flush=True)
PY
python3 "$T_DIR/flap.py" > "$T_DIR/flap.out" 2>&1 &
FLAP_PID=$!
t_wait_port "$FLAP"
t_bg "$R3SYNC" advertise f.bin --hub "127.0.0.1:$FLAP" $(fs_client a) >/dev/null 2>"$T_DIR/flap.err"
wait "$FLAP_PID"
flaps=$(cat "$T_DIR/flap.out")
[ -n "$flaps" ] && [ "$flaps" -ge 3 ] && [ "$flaps" -le 12 ] ||
    { cat "$T_DIR/flap.out" "$T_DIR/flap.err"; t_fail "$flaps connections in 4 s to a hub that drops them (want backoff: 3..12)"; }
t_log "a hub that drops every connection: $flaps connections in 4 s"

# positive control: the right certificate connects and finishes its round
t_timeout 20 "$R3SYNC" advertise f.bin --hub "127.0.0.1:$PORT" $(fs_client a) --rounds 1 \
    >"$T_DIR/good.log" 2>"$T_DIR/good.err" || { cat "$T_DIR/good.err"; t_fail "a good advertiser failed"; }
grep -q "^round 1:" "$T_DIR/good.log" || t_fail "the good advertiser did no round"

# the --rounds client against the dead port has given up by itself
for _ in $(seq 1 900); do kill -0 "$ROUNDS" 2>/dev/null || break; sleep 0.05; done
kill -0 "$ROUNDS" 2>/dev/null && t_fail "advertise --rounds 1 to a dead port still retries after $(since "$ROUNDS_T0") s"
wait "$ROUNDS"; rc=$?
[ "$rc" = 1 ] || t_fail "advertise --rounds 1 to a dead port: exit $rc, want 1"
grep -q "giving up" "$T_DIR/rounds.err" || { cat "$T_DIR/rounds.err"; t_fail "--rounds: no sentence saying it gave up"; }
t_log "--rounds 1 to a dead port gave up after $(since "$ROUNDS_T0") s"
fs_finish
