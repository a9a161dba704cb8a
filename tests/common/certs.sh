# SPDX-License-Identifier: BSD-3-Clause
# Certificates for the TLS tests (sourced by tests/integration/lib.sh):
# EC P-256 keys, valid for two days, made with openssl.
#   t_ca DIR NAME [CN]             DIR/NAME.key + DIR/NAME.pem, a self-signed CA
#                                  (subject CN, default "r3 test CA NAME")
#   t_cert DIR NAME CN CA [EXT]    DIR/NAME.key + DIR/NAME.pem with subject CN,
#                                  signed by the CA DIR/CA.{pem,key}; EXT is one
#                                  openssl extension line, for a server e.g.
#                                  "subjectAltName=IP:127.0.0.1,DNS:localhost"
#   t_nbd_certs DIR                a CA, a server certificate for localhost and
#                                  127.0.0.1 and a client certificate, in the
#                                  file names of nbdkit's and qemu's
#                                  tls-certificates directory (ca-cert.pem,
#                                  server-cert.pem, server-key.pem, client-*.pem)
# Each fails the test (t_fail) when openssl cannot make what it was asked.

t_ca() {
    t_need openssl
    mkdir -p "$1" &&
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1/$2.key" 2>/dev/null &&
    openssl req -x509 -new -key "$1/$2.key" -subj "/CN=${3:-r3 test CA $2}" -days 2 \
        -out "$1/$2.pem" 2>/dev/null ||
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

t_nbd_certs() {
    local d=$1
    t_ca "$d" ca
    t_cert "$d" server localhost ca "subjectAltName=DNS:localhost,IP:127.0.0.1"
    t_cert "$d" client r3-test-client ca
    mv "$d/ca.pem" "$d/ca-cert.pem" && mv "$d/ca.key" "$d/ca-key.pem" &&
    mv "$d/server.pem" "$d/server-cert.pem" && mv "$d/server.key" "$d/server-key.pem" &&
    mv "$d/client.pem" "$d/client-cert.pem" && mv "$d/client.key" "$d/client-key.pem" ||
        t_fail "cannot lay out the certificates in $d"
}
