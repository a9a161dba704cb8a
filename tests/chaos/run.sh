#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Chaos test of durability (issue 15): a writer does rounds of writes then
# flush through a path while that path's server is killed with SIGKILL at a
# random moment and restarted; after every restart, every acknowledged round
# must read back byte-identical through a different path than it was
# written. Paths:
#   r3     r3check put r3://  -> r3serve -> dir://     read back: dir:// directly
#   redis  r3check put redis:// (appendfsync always)   read back: redis-cli GET
# A round writes one 64 KiB region (a chunk) in random pieces with a delay
# between them, so the kill lands mid-transfer; it is acknowledged when
# r3check exits 0 (the data was written and flushed). A round that failed
# makes its region unknown until a later round rewrites it.
# Prints rounds, kills, acknowledged rounds and bytes lost per path; fails
# on any loss, on a command that hangs past its deadline, or on a server
# that does not come back.
# Usage: run.sh [--rounds N] [--seed S] [--paths "r3 redis"]   (make check: 8 rounds each)
source "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ROUNDS=8
SEED=$$
PATHS="r3 redis"
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --paths) PATHS=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option '$1'" >&2; echo "Try 'run.sh --help' for more information." >&2; exit 2 ;;
    esac
done
case $ROUNDS in ''|*[!0-9]*) echo "run.sh: --rounds needs a number" >&2; exit 2 ;; esac
t_need python3
t_need cmp
SERVE="$top_builddir/r3serve"
CAT="$top_builddir/tests/r3check"
D=$T_DIR
REG=65536
NREG=16
SIZE=$((REG * NREG))
RANDOM=$SEED
t_log "seed $SEED, $ROUNDS rounds per path, paths: $PATHS"

# The servers are restarted by the killer: their pids live in files, and
# cleanup kills whatever they name.
chaos_cleanup() {
    local f
    for f in "$D"/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
    t_cleanup
}
trap chaos_cleanup EXIT

# ---- servers: start_<path> (on the path's fixed port) and a liveness wait
start_r3() {
    "$SERVE" --listen "127.0.0.1:$R3PORT" --source "dir://$D/r3dir?size=$SIZE&chunk=$REG" \
        --timeout 5s 2>>"$D/r3serve.log" &
    echo $! >"$D/r3.pid"
}
start_redis() {
    redis-server --port "$REDISPORT" --bind 127.0.0.1 --dir "$D/redis" --appendonly yes \
        --appendfsync always --save '' --daemonize no >>"$D/redis.log" 2>&1 &
    echo $! >"$D/redis.pid"
}
wait_up() {       # PATH PORT: up within 10 s, or fail
    local i
    for i in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        kill -0 "$(cat "$D/$1.pid")" 2>/dev/null || { tail -5 "$D/$1"*.log >&2; t_fail "$1: the server died at start"; }
        sleep 0.05
    done
    t_fail "$1: the server is not up 10 s after its restart"
}
uri_of() {
    case $1 in
    r3) echo "r3://127.0.0.1:$R3PORT/chaos?timeout=3s&connect_timeout=1s" ;;
    redis) echo "redis://127.0.0.1:$REDISPORT/chaos?size=$SIZE&chunk=$REG&timeout=3s&connect_timeout=1s" ;;
    esac
}

# ---- read back region J of PATH through the other path into FILE
read_back() {
    local p=$1 j=$2 out=$3
    case $p in
    r3) t_timeout 30 "$CAT" get "dir://$D/r3dir" "$out" -o $((j * REG)) -l $REG 2>>"$D/check.log" ;;
    redis)
        # redis-cli --raw prints the value and a newline; a missing key is an empty line
        t_timeout 30 redis-cli -p "$REDISPORT" --raw GET "chaos:$j" >"$out.raw" 2>>"$D/check.log" || return 1
        head -c -1 "$out.raw" >"$out" ;;
    esac
}

# ---- one path: rounds of write+flush under a random SIGKILL
run_path() {
    local p=$1 port=$2 kills=0 acked=0 failed=0 lost=0 r j
    declare -A known=()
    for r in $(seq 1 "$ROUNDS"); do
        j=$((RANDOM % NREG))
        head -c $REG /dev/urandom >"$D/$p.round"
        # the killer: in half the rounds, SIGKILL the server after 0-150 ms, then restart it
        local kill_ms=-1
        [ $((RANDOM % 2)) = 0 ] && kill_ms=$((RANDOM % 150))
        if [ "$kill_ms" -ge 0 ]; then
            ( sleep "$(printf '0.%03d' "$kill_ms")"; kill -9 "$(cat "$D/$p.pid")" 2>/dev/null
              sleep 0.2; start_$p ) &
            local killer=$!
        fi
        local rc=0
        t_timeout 60 "$CAT" put "$(uri_of "$p")" "$D/$p.round" -o $((j * REG)) -p 1000-6000 -d 3000 \
            >>"$D/writer.log" 2>&1 || rc=$?
        [ "$rc" = 124 ] || [ "$rc" = 137 ] && t_fail "$p: round $r: the writer hung past 60 s"
        if [ "$kill_ms" -ge 0 ]; then
            wait "$killer"
            kills=$((kills + 1))
        fi
        wait_up "$p" "$port"
        if [ "$rc" = 0 ]; then
            cp "$D/$p.round" "$D/$p.expect.$j"
            known[$j]=1
            acked=$((acked + 1))
        else
            unset "known[$j]"
            failed=$((failed + 1))
        fi
        # every acknowledged round still there, read through the other path
        for j in "${!known[@]}"; do
            read_back "$p" "$j" "$D/$p.back" || t_fail "$p: cannot read region $j back (see $D/check.log)"
            if ! cmp -s "$D/$p.back" "$D/$p.expect.$j"; then
                local bad
                bad=$(cmp -l "$D/$p.back" "$D/$p.expect.$j" 2>/dev/null | wc -l)
                local sz
                sz=$(stat -c %s "$D/$p.back")
                bad=$((bad + (sz < REG ? REG - sz : 0)))
                lost=$((lost + bad))
                t_log "$p: round $r: region $j lost $bad bytes"
                unset "known[$j]"
            fi
        done
    done
    echo "$p: $ROUNDS rounds, $kills kills, $acked acknowledged, $failed failed (not acknowledged), $lost bytes lost"
    [ "$lost" = 0 ]
}

status=0
for p in $PATHS; do
    case $p in
    r3) R3PORT=$(t_free_port); start_r3; wait_up r3 "$R3PORT"
        run_path r3 "$R3PORT" || status=1 ;;
    redis)
        t_need redis-server; t_need redis-cli
        mkdir -p "$D/redis"
        REDISPORT=$(t_free_port); start_redis; wait_up redis "$REDISPORT"
        run_path redis "$REDISPORT" || status=1 ;;
    *) echo "run.sh: unknown path '$p' (r3, redis)" >&2; exit 2 ;;
    esac
done
[ "$status" = 0 ] || t_fail "acknowledged data was lost (seed $SEED)"
t_log "no acknowledged byte lost"
