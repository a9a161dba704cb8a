#!/bin/bash
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
within "$dt" 1.8 5 || t_fail "gave up after $dt s, want about 2 s"
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
within "$dt" 0 5 || t_fail "a refused certificate took $dt s to end"
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
