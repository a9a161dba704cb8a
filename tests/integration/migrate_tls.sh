#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Migration over TLS and mTLS: a leecher with a certificate of the seeder's
# CA migrates (bytes equal A's at the pause); one with a stranger's
# certificate, one without a certificate and a plain r3:// one are refused.
. "$(dirname "$0")/lib.sh"
. "$top_srcdir/tests/integration/migrate_lib.sh"
t_need openssl
[ -x "$PEER" ] || t_fail "$PEER is not built"

mkcerts() {
    local d=$D/$1; mkdir -p "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.pem" -days 2 -subj "/CN=r3 test CA $1" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout "$d/srv.key" -out "$d/srv.csr" -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/ext"
    openssl x509 -req -in "$d/srv.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -out "$d/srv.pem" -days 2 -extfile "$d/ext" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout "$d/cli.key" -out "$d/cli.csr" -subj "/CN=leecher-$1" 2>/dev/null
    openssl x509 -req -in "$d/cli.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -out "$d/cli.pem" -days 2 2>/dev/null
    [ -s "$d/cli.pem" ] || t_fail "openssl could not make certificates"
}
mkcerts A
mkcerts B

refused() {   # refused WHAT URI
    t_timeout 30 "$PEER" leech --uri "$2" >"$D/ref.out" 2>&1; local rc=$?
    [ "$rc" = 3 ] && grep -qE '^open failed: .*(refused|TLS|closed)' "$D/ref.out" || \
        { cat "$D/ref.out" >&2; t_fail "$1: not refused clearly (exit $rc)"; }
    t_log "$1: $(cut -c1-150 "$D/ref.out")"
}

# ---- mTLS
mig_seed m --tls-cert "$D/A/srv.pem" --tls-key "$D/A/srv.key" --tls-ca "$D/A/ca.pem"
PORT=${ADDR##*:}
refused "a stranger's certificate" "r3s://127.0.0.1:$PORT/?ca=$D/A/ca.pem&cert=$D/B/cli.pem&key=$D/B/cli.key&connect_timeout=3s"
refused "no client certificate" "r3s://127.0.0.1:$PORT/?ca=$D/A/ca.pem&connect_timeout=3s"
refused "plain r3://" "r3://127.0.0.1:$PORT/?connect_timeout=3s"
kill -0 "$SEED_PID" || t_fail "the seeder died of the refusals"
t_timeout 60 "$PEER" leech --uri "r3s://127.0.0.1:$PORT/?ca=$D/A/ca.pem&cert=$D/A/cli.pem&key=$D/A/cli.key" \
    --hashes "$D/m.hashes" >"$D/m.out" 2>&1 || { cat "$D/m.out" >&2; t_fail "mTLS migration failed"; }
grep -q '^done checked=1024$' "$D/m.out" || { cat "$D/m.out" >&2; t_fail "mTLS: not every chunk checked"; }
t_timeout 10 tail --pid="$SEED_PID" -f /dev/null || t_fail "the seeder did not exit after RELEASE"
t_log "mTLS: migrated, B equals A at the pause"

# ---- TLS without client certificates
mig_seed t --tls-cert "$D/A/srv.pem" --tls-key "$D/A/srv.key"
PORT=${ADDR##*:}
refused "a leecher trusting another CA" "r3s://127.0.0.1:$PORT/?ca=$D/B/ca.pem&connect_timeout=3s"
t_timeout 60 "$PEER" leech --uri "r3s://127.0.0.1:$PORT/?ca=$D/A/ca.pem" --hashes "$D/t.hashes" \
    --finalize-at 50 >"$D/t.out" 2>&1 || { cat "$D/t.out" >&2; t_fail "TLS migration failed"; }
grep -q '^done checked=1024$' "$D/t.out" || { cat "$D/t.out" >&2; t_fail "TLS: not every chunk checked"; }
t_log "TLS: migrated (finalized at 50%), B equals A at the pause"
exit 0
