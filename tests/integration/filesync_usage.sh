#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# r3sync's surface (the tools' convention): --help and SUBCOMMAND --help on
# stdout with exit 0, --version, and every kind of usage error as exactly
# two lines on stderr with exit 2 (never the whole help). Runtime failures
# are not usage errors (exit 1).
source "$top_srcdir/tests/integration/lib.sh"
R3SYNC="$top_builddir/r3sync"
# usage_error WHAT ARGS...: exit 2, two lines, the second "Try '... --help'"
usage_error() {
    local what=$1; shift
    "$R3SYNC" "$@" >"$T_DIR/out" 2>"$T_DIR/err"
    local rc=$?
    [ "$rc" = 2 ] || { cat "$T_DIR/err"; t_fail "$what: exit $rc, want 2 (r3sync $*)"; }
    [ "$(wc -l < "$T_DIR/err")" = 2 ] || { cat "$T_DIR/err"; t_fail "$what: want two lines on stderr"; }
    [ -s "$T_DIR/out" ] && t_fail "$what: printed on stdout"
    sed -n 2p "$T_DIR/err" | grep -Eq "^Try 'r3sync( [a-z]+)? --help' for more information\.$" ||
        { cat "$T_DIR/err"; t_fail "$what: second line is not the Try line"; }
    head -n 1 "$T_DIR/err" | grep -q "^r3sync" || t_fail "$what: first line does not name r3sync"
    [ $# -gt 0 ] && [ -n "${WANT:-}" ] && { grep -q -- "$WANT" "$T_DIR/err" || { cat "$T_DIR/err"; t_fail "$what: does not say '$WANT'"; }; }
    WANT=""
}
TLS="--tls-cert c.pem --tls-key k.pem --tls-ca ca.pem"
CL="--cert c.pem --key k.pem --ca ca.pem"
usage_error "no subcommand"
usage_error "unknown subcommand" bogus
usage_error "an option before the subcommand" --hub 127.0.0.1:1
WANT="--tls-cert" usage_error "hub without TLS flags" hub --listen 127.0.0.1:7000
WANT="--listen" usage_error "hub without --listen" hub $TLS
WANT="--block" usage_error "a hub option it does not have" hub --listen 127.0.0.1:7000 $TLS --block 64K
WANT="--listen" usage_error "a port out of range" hub --listen 127.0.0.1:99999 $TLS
WANT="--listen" usage_error "no port" hub --listen 127.0.0.1 $TLS
WANT="--block" usage_error "--block 3K" advertise f --hub 127.0.0.1:7000 $CL --block 3K
WANT="--block" usage_error "--block 8M" advertise f --hub 127.0.0.1:7000 $CL --block 8M
WANT="--hub" usage_error "a bad --hub" advertise f --hub nowhere $CL
WANT="--hub" usage_error "a bad --hub (receive)" receive d --hub 127.0.0.1:0 $CL
WANT="--cert" usage_error "advertise without a certificate" advertise f --hub 127.0.0.1:7000
WANT="FILE" usage_error "advertise without files" advertise --hub 127.0.0.1:7000 $CL
WANT="DIR" usage_error "receive without DIR" receive --hub 127.0.0.1:7000 $CL
usage_error "receive with two DIRs" receive d e --hub 127.0.0.1:7000 $CL
WANT="unit" usage_error "a duration without a unit" advertise f --hub 127.0.0.1:7000 $CL --interval 500
WANT="give-up-after" usage_error "--give-up-after without a unit" receive d --hub 127.0.0.1:7000 $CL --give-up-after 2
WANT="--give-up-after" usage_error "a bad unit" advertise f --hub 127.0.0.1:7000 $CL --give-up-after 2h
WANT="--threads" usage_error "--threads 0" advertise f --hub 127.0.0.1:7000 $CL --threads 0
WANT="--rounds" usage_error "--rounds x" advertise f --hub 127.0.0.1:7000 $CL --rounds x
WANT="needs a value" usage_error "a missing value" advertise f $CL --hub
WANT="--bogus" usage_error "an unknown option" receive d --bogus

# help: on stdout, exit 0, each subcommand its own
"$R3SYNC" --help >"$T_DIR/h" 2>&1 || t_fail "--help exit $?"
grep -q "^usage: r3sync hub" "$T_DIR/h" && grep -q "r3sync receive" "$T_DIR/h" || t_fail "--help lacks the subcommands"
for sub in hub advertise receive; do
    "$R3SYNC" $sub --help >"$T_DIR/h" 2>"$T_DIR/e" || t_fail "$sub --help exit $?"
    [ -s "$T_DIR/e" ] && t_fail "$sub --help wrote on stderr"
    head -n 1 "$T_DIR/h" | grep -q "^usage: r3sync $sub" || t_fail "$sub --help does not show $sub's usage"
    "$R3SYNC" $sub -h | cmp -s - "$T_DIR/h" || t_fail "$sub -h differs from $sub --help"
done
"$R3SYNC" advertise --help | grep -q -- "--give-up-after DUR" || t_fail "advertise --help lacks --give-up-after"
"$R3SYNC" hub --help | grep -q -- "--give-up-after" && t_fail "hub --help shows a client option"
v=$("$R3SYNC" --version) || t_fail "--version exit $?"
echo "$v" | grep -Eq '^r3sync \(r3\) [0-9]' || t_fail "--version says '$v'"
for sub in hub advertise receive; do
    v=$("$R3SYNC" $sub -V) || t_fail "$sub -V exit $?"
    echo "$v" | grep -Eq "^r3sync $sub \(r3\) [0-9]" || t_fail "$sub --version says '$v'"
done
# a runtime failure is not a usage error: a missing certificate file
"$R3SYNC" advertise f --hub 127.0.0.1:7000 $CL >/dev/null 2>"$T_DIR/err"
rc=$?
[ "$rc" = 1 ] || { cat "$T_DIR/err"; t_fail "a runtime failure: exit $rc, want 1"; }
[ "$(wc -l < "$T_DIR/err")" = 1 ] || { cat "$T_DIR/err"; t_fail "a runtime failure: want one line"; }
exit 0
