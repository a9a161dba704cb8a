# SPDX-License-Identifier: BSD-3-Clause
# Shared helpers of the migrate_* tests (sourced after lib.sh).
PEER="$top_builddir/tests/migrate_peer"
D=$T_DIR

# Start a seeder process on a fresh 64 MiB file: mig_seed NAME [ARGS...];
# sets SEED_PID and ADDR.
mig_seed() {
    local n=$1; shift
    head -c 64M /dev/urandom >"$D/$n.img"
    t_bg "$PEER" seed --source "file://$D/$n.img" --addr-file "$D/$n.addr" --hashes "$D/$n.hashes" "$@" \
        >"$D/$n.seed.out" 2>&1
    SEED_PID=$T_LAST_PID
    local i
    for i in $(seq 1 600); do           # a hang guard (30 s): hashing 64 MiB under TSan
        [ -s "$D/$n.addr" ] && break
        kill -0 "$SEED_PID" 2>/dev/null || { cat "$D/$n.seed.out" >&2; t_fail "seeder $n did not start"; }
        sleep 0.05
    done
    [ -s "$D/$n.addr" ] || t_fail "seeder $n wrote no address"
    ADDR=$(cat "$D/$n.addr")
}

# Wait until FILE has a line matching RE (30 s, a hang guard), else fail.
mig_wait_line() {
    local i
    for i in $(seq 1 1200); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.025
    done
    cat "$1" >&2
    t_fail "no line /$2/ in $1"
}
