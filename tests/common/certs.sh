# Certificates for the TLS tests (sourced by tests/integration/lib.sh):
# EC P-256 keys, valid for two days, made with openssl.
#   t_ca DIR NAME                  DIR/NAME.key + DIR/NAME.pem, a self-signed CA
#   t_cert DIR NAME CN CA [EXT]    DIR/NAME.key + DIR/NAME.pem with subject CN,
#                                  signed by the CA DIR/CA.{pem,key}; EXT is one
#                                  openssl extension line, for a server e.g.
#                                  "subjectAltName=IP:127.0.0.1,DNS:localhost"
# Both fail the test (t_fail) when openssl cannot make them.

t_ca() {
    t_need openssl
    mkdir -p "$1" &&
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1/$2.key" 2>/dev/null &&
    openssl req -x509 -new -key "$1/$2.key" -subj "/CN=r3 test CA $2" -days 2 -out "$1/$2.pem" 2>/dev/null ||
        t_fail "openssl could not make the CA $1/$2"
}

t_cert() {
    t_need openssl
    local d=$1 n=$2 cn=$3 ca=$4 ext=${5:-basicConstraints=CA:FALSE}
    printf '%s\n' "$ext" > "$d/$n.ext" &&
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$d/$n.key" 2>/dev/null &&
    openssl req -new -key "$d/$n.key" -subj "/CN=$cn" -out "$d/$n.csr" 2>/dev/null &&
    openssl x509 -req -in "$d/$n.csr" -CA "$d/$ca.pem" -CAkey "$d/$ca.key" -CAcreateserial \
        -days 2 -extfile "$d/$n.ext" -out "$d/$n.pem" 2>/dev/null ||
        t_fail "openssl could not make the certificate $d/$n for $cn"
}
