# SPDX-License-Identifier: BSD-3-Clause
# Shared by the filesync integration tests (sourced after lib.sh).
R3SYNC="$top_builddir/r3sync"
FS_CLIENT="$top_srcdir/tests/integration/filesync_client.py"
t_need openssl
t_need python3
t_need cmp

# Certificates in $T_DIR/c: ca, hub (IP 127.0.0.1), a (id syncA), a2 (id syncA),
# b (id syncB), evil (id syncA signed by another CA).
fs_certs() {
    local d="$T_DIR/c"
    t_ca "$d" ca r3test-ca; t_ca "$d" ca2 other-ca
    t_cert "$d" hub hub ca "subjectAltName=IP:127.0.0.1"
    t_cert "$d" a syncA ca; t_cert "$d" a2 syncA ca; t_cert "$d" b syncB ca; t_cert "$d" evil syncA ca2
}

# fs_hub PORT [LOG]: start a hub on 127.0.0.1:PORT
fs_hub() {
    local c="$T_DIR/c"
    t_bg "$R3SYNC" hub --listen "127.0.0.1:$1" --tls-cert "$c/hub.pem" --tls-key "$c/hub.key" \
        --tls-ca "$c/ca.pem" --verbose 2>>"${2:-$T_DIR/hub.log}"
    HUB_PID=$T_LAST_PID
    t_wait_port "$1"
}

# fs_client NAME: the --cert/--key/--ca arguments of client certificate NAME
fs_client() { echo "--cert $T_DIR/c/$1.pem --key $T_DIR/c/$1.key --ca $T_DIR/c/ca.pem"; }

# fs_wait FILE PATTERN COUNT [SECONDS]: wait until FILE has COUNT lines matching PATTERN
fs_wait() {
    local i n
    for i in $(seq 1 $(( ${4:-30} * 20 ))); do
        n=$(grep -c -- "$2" "$1" 2>/dev/null || true)
        [ "${n:-0}" -ge "$3" ] && return 0
        sleep 0.05
    done
    echo "---- $1" >&2; tail -20 "$1" >&2
    t_fail "timed out waiting for $3 × '$2' in $(basename "$1")"
}

# fs_finish: stop every background process with SIGTERM (so sanitizers get
# to report at exit), then fail on any sanitizer report in the logs.
fs_finish() {
    local p
    for p in $T_PIDS; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $T_PIDS; do
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    T_PIDS=""
    if grep -l -E "AddressSanitizer|LeakSanitizer|runtime error:|ThreadSanitizer" "$T_DIR"/*.log "$T_DIR"/*.err 2>/dev/null; then
        grep -h -A30 -E "AddressSanitizer|LeakSanitizer|runtime error:|ThreadSanitizer" "$T_DIR"/*.log "$T_DIR"/*.err >&2
        t_fail "sanitizer report"
    fi
    exit 0
}
