#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# TLS with pre-shared keys, TLS 1.2 included (the PSK callbacks TLS 1.3 never
# calls), on both ends of NBD STARTTLS:
#  - r3serve --nbd --tls-psk capped at TLS 1.2 (OPENSSL_CONF): our client and
#    GnuTLS' nbdcopy (TLS 1.3 disabled by its priority file) write, the bytes
#    are read back from the backing file;
#  - our client against nbdkit (GnuTLS, TLS 1.2 only): written, read back from
#    nbdkit's file;
#  - an unknown identity, over TLS 1.2 and 1.3, from GnuTLS and from our
#    client: refused, the server's log and the client's error name it;
#  - a bad PSK file: r3serve refuses to start, one line saying what is wrong.
source "$top_srcdir/tests/integration/lib.sh"
for t in nbdinfo nbdcopy nbdkit openssl; do t_need $t; done
R3SERVE="$top_builddir/r3serve"
SC="$top_builddir/tests/r3check"
SIZE=$((4 << 20))
{ echo "alice:$(openssl rand -hex 32)"; echo "bob:$(openssl rand -hex 16)"; } > "$T_DIR/psk.txt"
echo "carol:$(openssl rand -hex 32)" > "$T_DIR/carol.txt"
printf 'alice:%s\n' "$(openssl rand -hex 32)" > "$T_DIR/alice-other.txt"
# GnuTLS' system priority file (GNUTLS_SYSTEM_PRIORITY_FILE) and OpenSSL's
# configuration (OPENSSL_CONF) choose the versions on offer.
printf '[overrides]\ndisabled-version = tls1.3\n' > "$T_DIR/gnutls-12.conf"
printf '[overrides]\ndisabled-version = tls1.2\ndisabled-version = tls1.3\n' > "$T_DIR/gnutls-none.conf"
cat > "$T_DIR/openssl-12.cnf" <<'EOF'
openssl_conf = init
[init]
ssl_conf = ssl
[ssl]
system_default = sys
[sys]
MaxProtocol = TLSv1.2
EOF
G12="GNUTLS_SYSTEM_PRIORITY_FILE=$T_DIR/gnutls-12.conf"
psk_uri() { echo "nbds://127.0.0.1:$1/?tls-psk-file=$T_DIR/$2&tls-username=$3"; }
gnutls_uri() { echo "nbds://$3@127.0.0.1:$1/?tls-psk-file=$T_DIR/$2"; }

t_log "r3serve capped at TLS 1.2"
truncate -s $SIZE "$T_DIR/back.img"
P=$(t_free_port)
OPENSSL_CONF="$T_DIR/openssl-12.cnf" t_bg "$R3SERVE" --nbd 127.0.0.1:$P \
    --source "file://$T_DIR/back.img" --tls-psk "$T_DIR/psk.txt" 2> "$T_DIR/serve.log"
SERVE_PID=$T_LAST_PID
t_wait_port $P
# The knobs are read: GnuTLS with no version left is refused, and r3serve
# capped below TLS 1.2 (our minimum) serves nobody.
t_timeout 20 env GNUTLS_SYSTEM_PRIORITY_FILE="$T_DIR/gnutls-none.conf" \
    nbdinfo "$(gnutls_uri $P psk.txt bob)" > /dev/null 2>&1 \
    && t_fail "GnuTLS ignores its priority file: the TLS 1.2 cases prove nothing"
P11=$(t_free_port)
sed 's/TLSv1.2/TLSv1.1/' "$T_DIR/openssl-12.cnf" > "$T_DIR/openssl-11.cnf"
OPENSSL_CONF="$T_DIR/openssl-11.cnf" t_bg "$R3SERVE" --nbd 127.0.0.1:$P11 \
    --source "file://$T_DIR/back.img" --tls-psk "$T_DIR/psk.txt" 2> "$T_DIR/serve11.log"
t_wait_port $P11
t_timeout 20 "$SC" fail "$(psk_uri $P11 psk.txt bob)" "TLS connect: tlsv1 alert protocol version" \
    || t_fail "r3serve ignores OPENSSL_CONF: the TLS 1.2 cases prove nothing"
kill "$T_LAST_PID"
out=$(t_timeout 20 env "$G12" nbdinfo "$(gnutls_uri $P psk.txt bob)") || t_fail "nbdinfo over TLS 1.2 with bob's key"
echo "$out" | grep -q "with TLS" || t_fail "nbdinfo did not use TLS: $out"

t_log "our client writes the first half (alice), GnuTLS the second (bob), over TLS 1.2"
"$SC" -s 21 gen 0 $SIZE > "$T_DIR/want.img"
head -c $((SIZE / 2)) "$T_DIR/want.img" > "$T_DIR/half1.img"
t_timeout 60 "$SC" put "$(psk_uri $P psk.txt alice)" "$T_DIR/half1.img" \
    || t_fail "our client's write over TLS 1.2 PSK"
tail -c $((SIZE / 2)) "$T_DIR/want.img" > "$T_DIR/half2.img"
truncate -s $SIZE "$T_DIR/half2-at.img"
dd if="$T_DIR/half2.img" of="$T_DIR/half2-at.img" bs=1M seek=2 conv=notrunc status=none
# --destination-is-zero: nbdcopy skips the hole (the first half), writes the second
t_timeout 60 env "$G12" nbdcopy --destination-is-zero "$T_DIR/half2-at.img" "$(gnutls_uri $P psk.txt bob)" \
    || t_fail "nbdcopy over TLS 1.2 PSK"
cmp "$T_DIR/back.img" "$T_DIR/want.img" || t_fail "the backing file does not hold what both clients wrote"
t_timeout 60 "$SC" -s 21 verify "$(psk_uri $P psk.txt bob)" || t_fail "our client's read over TLS 1.2 PSK"

t_log "unknown identity and wrong key, TLS 1.2 and 1.3, GnuTLS and our client"
t_timeout 20 env "$G12" nbdinfo "$(gnutls_uri $P carol.txt carol)" > /dev/null 2>&1 && t_fail "carol served (TLS 1.2)"
t_timeout 20 "$SC" fail "$(psk_uri $P carol.txt carol)" "refused PSK identity 'carol'" \
    || t_fail "our client's sentence for an unknown identity"
t_timeout 20 "$SC" -w 10000 fail "$(psk_uri $P alice-other.txt alice)" "refused PSK identity 'alice'" \
    || t_fail "our client's sentence for a wrong key"
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null
n=$(grep -c "TLS accept: unknown PSK identity 'carol'" "$T_DIR/serve.log")
[ "$n" = 2 ] || { cat "$T_DIR/serve.log" >&2; t_fail "the server named carol $n times, not 2"; }
grep -q "unknown PSK identity 'alice'" "$T_DIR/serve.log" && t_fail "alice (a known identity) called unknown"
cmp "$T_DIR/back.img" "$T_DIR/want.img" || t_fail "a refused client changed the backing file"

P=$(t_free_port)                        # the same server, TLS 1.3 on offer
t_bg "$R3SERVE" --nbd 127.0.0.1:$P --source "file://$T_DIR/back.img" --tls-psk "$T_DIR/psk.txt" \
    2> "$T_DIR/serve13.log"
SERVE_PID=$T_LAST_PID
t_wait_port $P
t_timeout 20 nbdinfo "$(gnutls_uri $P psk.txt alice)" > /dev/null || t_fail "TLS 1.3 PSK (alice)"
t_timeout 20 nbdinfo "$(gnutls_uri $P carol.txt carol)" > /dev/null 2>&1 && t_fail "carol served (TLS 1.3)"
t_timeout 20 "$SC" fail "$(psk_uri $P carol.txt carol)" "refused PSK identity 'carol'" \
    || t_fail "our client's sentence for an unknown identity (TLS 1.3)"
t_timeout 60 "$SC" -s 21 verify "$(psk_uri $P psk.txt bob)" || t_fail "our client's read over TLS 1.3 PSK"
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null
n=$(grep -c "TLS accept: unknown PSK identity 'carol'" "$T_DIR/serve13.log")
[ "$n" = 2 ] || { cat "$T_DIR/serve13.log" >&2; t_fail "the TLS 1.3 server named carol $n times, not 2"; }

t_log "our client against nbdkit (GnuTLS) capped at TLS 1.2"
truncate -s $SIZE "$T_DIR/kit.img"
P=$(t_free_port)
env "$G12" nbdkit -f -p $P -i 127.0.0.1 --tls=require --tls-psk="$T_DIR/psk.txt" \
    file "$T_DIR/kit.img" 2> "$T_DIR/kit.log" &
T_PIDS="$T_PIDS $!"
KIT_PID=$!
t_wait_port $P
t_timeout 60 "$SC" -s 22 write "$(psk_uri $P psk.txt bob)" || t_fail "write to nbdkit over TLS 1.2 PSK"
cmp "$T_DIR/kit.img" <("$SC" -s 22 gen 0 $SIZE) || t_fail "nbdkit's file does not hold what was written"
t_timeout 20 "$SC" fail "$(psk_uri $P carol.txt carol)" "refused PSK identity 'carol'" \
    || t_fail "our client's sentence for an identity nbdkit does not know"
kill "$KIT_PID"; wait "$KIT_PID" 2>/dev/null

t_log "bad PSK files: refused at start, one line each"
echo "alice:zz" > "$T_DIR/badhex.txt"
echo "no-colon" > "$T_DIR/nocolon.txt"
: > "$T_DIR/empty.txt"
echo "alice:$(openssl rand -hex 65)" > "$T_DIR/long.txt"
for i in $(seq 33); do echo "id$i:00ff"; done > "$T_DIR/many.txt"
badfile() {                              # badfile FILE WORDS
    local rc=0
    t_timeout 10 "$R3SERVE" --nbd 127.0.0.1:0 --source mem:?size=1M --tls-psk "$T_DIR/$1" \
        > /dev/null 2> "$T_DIR/bad.err" || rc=$?
    [ "$rc" = 1 ] || t_fail "$1: r3serve exited $rc, not 1: $(cat "$T_DIR/bad.err")"
    [ "$(wc -l < "$T_DIR/bad.err")" = 1 ] || t_fail "$1: not one line: $(cat "$T_DIR/bad.err")"
    grep -q -- "$2" "$T_DIR/bad.err" || t_fail "$1: no '$2' in: $(cat "$T_DIR/bad.err")"
    t_log "$1: $(cat "$T_DIR/bad.err")"
}
badfile badhex.txt "badhex.txt line 1: the key is not hexadecimal"
badfile nocolon.txt "nocolon.txt line 1 is not 'identity:hexkey'"
badfile empty.txt "has no 'identity:hexkey' line"
badfile long.txt "long.txt line 1 is not 'identity:hexkey' (a key of 1 to 64 bytes)"
badfile many.txt "has more than 32 keys"
badfile missing.txt "cannot open PSK file .*missing.txt: No such file"
t_timeout 20 "$SC" fail "$(psk_uri 1 psk.txt dave)" "has no key for identity 'dave'" \
    || t_fail "our client with an identity its file lacks"
exit 0
