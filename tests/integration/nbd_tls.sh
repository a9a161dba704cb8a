#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# NBD STARTTLS: nbdinfo with certificates (made here with openssl) and with a
# PSK against r3serve --nbd --tls-required; plain clients are refused; our
# own client (nbds://) moves data over both.
source "$top_srcdir/tests/integration/lib.sh"
for t in nbdinfo openssl; do t_need $t; done
R3SERVE="$top_builddir/r3serve"
CHECK="$top_builddir/tests/r3check"

D="$T_DIR/pki"; C="$T_DIR/client"; mkdir -p "$D" "$C"
t_nbd_certs "$D"
cp "$D/ca-cert.pem" "$C/"
echo "alice:$(openssl rand -hex 32)" > "$T_DIR/psk.txt"
echo "alice:$(openssl rand -hex 32)" > "$T_DIR/wrong.txt"

P=$(t_free_port)
t_bg "$R3SERVE" --nbd 127.0.0.1:$P --source mem:?size=32M --tls-cert "$D/server-cert.pem" \
    --tls-key "$D/server-key.pem" --tls-psk "$T_DIR/psk.txt" --tls-required 2>"$T_DIR/serve.log"
t_wait_port $P

out=$(t_timeout 20 nbdinfo "nbds://127.0.0.1:$P/?tls-certificates=$C") || t_fail "nbdinfo with certificates failed"
echo "$out" | grep -q "with TLS" || t_fail "nbdinfo did not use TLS: $out"
echo "$out" | grep -q "export-size: 33554432" || t_fail "wrong size over TLS"
out=$(t_timeout 20 nbdinfo "nbds://alice@127.0.0.1:$P/?tls-psk-file=$T_DIR/psk.txt") || t_fail "nbdinfo with PSK failed"
echo "$out" | grep -q "with TLS" || t_fail "nbdinfo (PSK) did not use TLS"
t_timeout 20 nbdinfo "nbds://alice@127.0.0.1:$P/?tls-psk-file=$T_DIR/wrong.txt" >/dev/null 2>&1 && t_fail "a wrong PSK was accepted"
t_timeout 20 nbdinfo "nbd://127.0.0.1:$P/" >/dev/null 2>&1 && t_fail "a plain client was served despite --tls-required"
t_timeout 20 nbdinfo --list "nbd://127.0.0.1:$P/" >/dev/null 2>&1 && t_fail "a plain client could list exports"

# Our client: write with certificates, read back with the PSK
t_timeout 60 "$CHECK" -s 11 write "nbds://localhost:$P/?tls-certificates=$C" || t_fail "nbds write failed"
t_timeout 60 "$CHECK" -s 11 verify "nbds://127.0.0.1:$P/?tls-psk-file=$T_DIR/psk.txt&tls-username=alice" \
    || t_fail "nbds verify failed"
t_timeout 20 "$CHECK" -s 11 verify "nbd://127.0.0.1:$P/" 2>/dev/null && t_fail "our plain client was served"
kill -0 $T_LAST_PID || t_fail "the server died"

# TLS configured without --tls-required: still required (a port with TLS
# never serves plaintext)
P2=$(t_free_port)
t_bg "$R3SERVE" --nbd 127.0.0.1:$P2 --source mem:?size=8M --tls-cert "$D/server-cert.pem" \
    --tls-key "$D/server-key.pem" 2>"$T_DIR/serve2.log"
t_wait_port $P2
t_timeout 20 nbdinfo "nbd://127.0.0.1:$P2/" >/dev/null 2>&1 && t_fail "plaintext served beside TLS"
t_timeout 20 "$CHECK" -s 11 verify "nbd://127.0.0.1:$P2/" 2>"$T_DIR/err" && t_fail "our plain client was served beside TLS"
grep -qi "TLS" "$T_DIR/err" || t_fail "the refusal does not mention TLS: $(cat "$T_DIR/err")"
out=$(t_timeout 20 nbdinfo "nbds://127.0.0.1:$P2/?tls-certificates=$C") || t_fail "nbdinfo with TLS failed"
echo "$out" | grep -q "with TLS" || t_fail "nbdinfo did not use TLS: $out"
t_log "ok"
