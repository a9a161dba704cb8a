#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Chaos test of durability (issue 15): a writer does rounds of writes then
# flush/sync through a path while a process of that path - its server, or
# the writer itself - is killed with SIGKILL at a random moment and
# restarted; after every round, every acknowledged round must read back
# byte-identical through a different path than it was written. Paths:
#   r3       r3check put r3://  -> r3serve -> dir://          read back: dir:// directly
#   r3s      r3check put r3s:// (TLS) -> r3serve -> dir://   read back: dir:// directly
#   redis    r3check put redis:// (appendfsync always)       read back: redis-cli GET
#   s3       r3check put s3:// -> s3rver                     read back: s3rver's object files
#   nbd      r3check put nbd:// -> r3serve --nbd -> dir://   read back: dir:// directly
#   uffd     a uffd region over r3:// (memory writes, sync)  read back: dir:// directly
#   managed  an nbd-managed region over r3:// (FUSE + NBD)   read back: dir:// directly
# A put round writes one 64 KiB region (a chunk) in random pieces with a
# delay between them, so the kill lands mid-transfer; a region round writes
# the whole 1 MiB image through memory with a new seed and syncs. A round is
# acknowledged when the writer exits 0 (written and flushed/synced). A round
# that failed (or whose writer was killed) makes what it wrote unknown until
# a later acknowledged round rewrites it.
# Prints rounds, kills (server / writer), acknowledged rounds and bytes lost
# per path; fails on any loss, on a command that hangs past its deadline, on
# a server that does not come back, or on a sanitizer report in a log.
# Usage: run.sh [--rounds N] [--seed S] [--paths "r3 r3s redis s3 nbd uffd managed"]
#        (make check: 6 rounds each)
SELF=$(readlink -f "$0")
source "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ROUNDS=6
SEED=$$
PATHS="r3 r3s redis s3 nbd uffd managed"
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --paths) PATHS=$2; shift 2 ;;
    -h|--help) sed -n '2,29p' "$SELF" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
# cleanup kills whatever they name (and the writer of the current round).
chaos_cleanup() {
    local f
    for f in "$D"/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
    for f in "$D"/mnt*; do [ -d "$f" ] && mountpoint -q "$f" && umount -l "$f" 2>/dev/null; done
    t_cleanup
}
trap chaos_cleanup EXIT

# ---- servers: start_<server> (on its fixed port) and a liveness wait.
# r3serve serves r3://, r3s:// and nbd:// from its own dir:// image each.
start_r3() {
    "$SERVE" --listen "127.0.0.1:$R3PORT" --source "dir://$D/r3dir?size=$SIZE&chunk=$REG" \
        --timeout 5s 2>>"$D/r3serve.log" &
    echo $! >"$D/r3.pid"
}
start_r3s() {
    "$SERVE" --listen "127.0.0.1:$R3SPORT" --source "dir://$D/r3sdir?size=$SIZE&chunk=$REG" \
        --tls-cert "$D/c/srv.pem" --tls-key "$D/c/srv.key" --timeout 5s 2>>"$D/r3s.log" &
    echo $! >"$D/r3s.pid"
}
start_nbd() {
    "$SERVE" --nbd "127.0.0.1:$NBDPORT" --source "dir://$D/nbddir?size=$SIZE&chunk=$REG" \
        --timeout 5s 2>>"$D/nbd.log" &
    echo $! >"$D/nbd.pid"
}
start_redis() {
    redis-server --port "$REDISPORT" --bind 127.0.0.1 --dir "$D/redis" --appendonly yes \
        --appendfsync always --save '' --daemonize no >>"$D/redis.log" 2>&1 &
    echo $! >"$D/redis.pid"
}
start_s3() {
    # s3rver_atomic.js: s3rver answers a PUT before its file is written (see there)
    NODE_OPTIONS="--require $top_srcdir/tests/integration/s3rver_atomic.js" \
        s3rver -d "$D/s3" -a 127.0.0.1 -p "$S3PORT" -s --configure-bucket bk >>"$D/s3.log" 2>&1 &
    echo $! >"$D/s3.pid"
}
# the region paths write through r3serve's r3:// port, into their own image
start_uffd() {
    "$SERVE" --listen "127.0.0.1:$UFFDPORT" --source "dir://$D/uffddir?size=$SIZE&chunk=$REG" \
        --timeout 5s 2>>"$D/uffd.log" &
    echo $! >"$D/uffd.pid"
}
start_managed() {
    "$SERVE" --listen "127.0.0.1:$MANAGEDPORT" --source "dir://$D/manageddir?size=$SIZE&chunk=$REG" \
        --timeout 5s 2>>"$D/managed.log" &
    echo $! >"$D/managed.pid"
}
wait_up() {       # PATH PORT: up within 10 s, or fail
    local i
    for i in $(seq 1 400); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
            # s3rver listens before it has configured its bucket
            [ "$1" != s3 ] || curl -s -o /dev/null "http://127.0.0.1:$2/bk" && return 0
        fi
        kill -0 "$(cat "$D/$1.pid")" 2>/dev/null || { tail -5 "$D/$1"*.log >&2; t_fail "$1: the server died at start"; }
        sleep 0.025
    done
    t_fail "$1: the server is not up 10 s after its restart"
}
uri_of() {
    local t="timeout=3s&connect_timeout=1s"
    case $1 in
    r3) echo "r3://127.0.0.1:$R3PORT/chaos?$t" ;;
    r3s) echo "r3s://127.0.0.1:$R3SPORT/chaos?ca=$D/c/ca.pem&$t" ;;
    redis) echo "redis://127.0.0.1:$REDISPORT/chaos?size=$SIZE&chunk=$REG&$t" ;;
    s3) echo "s3://bk/chaos?endpoint=http://127.0.0.1:$S3PORT&size=$SIZE&chunk=$REG&$t" ;;
    nbd) echo "nbd://127.0.0.1:$NBDPORT/?$t" ;;
    uffd) echo "r3://127.0.0.1:$UFFDPORT/chaos?$t" ;;
    managed) echo "r3://127.0.0.1:$MANAGEDPORT/chaos?$t" ;;
    esac
}
port_of() {
    case $1 in
    r3) echo "$R3PORT" ;; r3s) echo "$R3SPORT" ;; redis) echo "$REDISPORT" ;; s3) echo "$S3PORT" ;;
    nbd) echo "$NBDPORT" ;; uffd) echo "$UFFDPORT" ;; managed) echo "$MANAGEDPORT" ;;
    esac
}

# ---- read back region J of PATH through another path into FILE
read_back() {
    local p=$1 j=$2 out=$3
    case $p in
    r3|r3s|nbd|uffd|managed)
        t_timeout 30 "$CAT" get "dir://$D/${p}dir" "$out" -o $((j * REG)) -l $REG 2>>"$D/check.log" ;;
    redis)
        # redis-cli --raw prints the value and a newline; a missing key is an empty line
        t_timeout 30 redis-cli -p "$REDISPORT" --raw GET "chaos:$j" >"$out.raw" 2>>"$D/check.log" || return 1
        head -c -1 "$out.raw" >"$out" ;;
    s3)
        # s3rver keeps each object as a file; a missing object reads as zeros
        local f="$D/s3/bk/chaos/$j._S3rver_object"
        if [ -e "$f" ]; then cp "$f" "$out"; else head -c $REG /dev/zero >"$out"; fi ;;
    esac
}

# ---- the writer of one round: put a 64 KiB region, or write a whole region
# through memory (uffd / nbd-managed) and sync. Runs in the background with
# its pid in $D/writer.pid; a watchdog kills it past 60 s (a hang).
start_writer() {
    local p=$1 r=$2 j=$3
    case $p in
    uffd|managed)
        local strat=uffd
        [ "$p" = managed ] && strat=nbd-managed
        TMPDIR="$D" "$CAT" -S "$r" region "$(uri_of "$p")" --strategy "$strat" >>"$D/writer.log" 2>&1 & ;;
    *)
        "$CAT" put "$(uri_of "$p")" "$D/$p.round" -o $((j * REG)) -p 1000-6000 -d 3000 \
            >>"$D/writer.log" 2>&1 & ;;
    esac
    echo $! >"$D/writer.pid"
}
wait_writer() {   # sets rc; fails on a hang
    local w i
    w=$(cat "$D/writer.pid")
    for i in $(seq 1 1200); do kill -0 "$w" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$w" 2>/dev/null; then
        kill -9 "$w" 2>/dev/null
        t_fail "$p: round $r: the writer hung past 60 s"
    fi
    rc=0; wait "$w" || rc=$?
    rm -f "$D/writer.pid"
}

# ---- one path: rounds of write+flush under a random SIGKILL
run_path() {
    local p=$1 port=$2 skills=0 wkills=0 acked=0 failed=0 lost=0 r j rc
    local region=0
    case $p in uffd|managed) region=1 ;; esac
    declare -A known=()
    for r in $(seq 1 "$ROUNDS"); do
        if [ "$region" = 1 ]; then
            j=all
        else
            j=$((RANDOM % NREG))
            head -c $REG /dev/urandom >"$D/$p.round"
        fi
        # the killer: in 2 rounds of 3, SIGKILL after 0-150 ms the server
        # (then restart it) or, one kill in 3, the writer itself
        local kill_ms=-1 victim=server
        [ $((RANDOM % 3)) != 0 ] && kill_ms=$((RANDOM % 150))
        [ $((RANDOM % 3)) = 0 ] && victim=writer
        start_writer "$p" "$r" "$j"
        if [ "$kill_ms" -ge 0 ]; then
            ( sleep "$(printf '0.%03d' "$kill_ms")"
              if [ "$victim" = writer ]; then
                  kill -9 "$(cat "$D/writer.pid" 2>/dev/null)" 2>/dev/null
              else
                  local sp; sp=$(cat "$D/$p.pid")
                  kill -9 "$sp" 2>/dev/null; sleep 0.2
                  # restart once the old one is dead (its sockets closed): a
                  # zombie counts as dead, it holds no socket
                  for _ in $(seq 1 200); do
                      [ -e "/proc/$sp" ] && ! grep -q '^State:.*Z' "/proc/$sp/status" 2>/dev/null || break
                      sleep 0.05
                  done
                  start_$p
              fi ) &
            local killer=$!
        fi
        wait_writer
        if [ "$kill_ms" -ge 0 ]; then
            wait "$killer"
            if [ "$victim" = writer ]; then wkills=$((wkills + 1)); else skills=$((skills + 1)); fi
        fi
        wait_up "$p" "$port"
        # a writer killed by a region strategy can leave its FUSE mount behind
        for m in "$D"/r3*/mnt* "$D"/mnt*; do [ -d "$m" ] && mountpoint -q "$m" && umount -l "$m" 2>/dev/null; done
        if [ "$rc" = 0 ]; then
            if [ "$region" = 1 ]; then
                known=([all]=$r)
            else
                cp "$D/$p.round" "$D/$p.expect.$j"
                known[$j]=1
            fi
            acked=$((acked + 1))
        else
            [ "$region" = 1 ] && known=() || unset "known[$j]"
            failed=$((failed + 1))
        fi
        # every acknowledged round still there, read through the other path
        for j in "${!known[@]}"; do
            if [ "$j" = all ]; then
                if ! t_timeout 30 "$CAT" -s "${known[all]}" verify "dir://$D/${p}dir" >>"$D/check.log" 2>&1; then
                    local bad=0 k
                    for k in $(seq 0 $((NREG - 1))); do
                        read_back "$p" "$k" "$D/$p.back" || t_fail "$p: cannot read region $k back"
                        "$CAT" -s "${known[all]}" gen $((k * REG)) $REG >"$D/$p.want"
                        bad=$((bad + $(cmp -l "$D/$p.back" "$D/$p.want" 2>/dev/null | wc -l)))
                    done
                    lost=$((lost + bad))
                    t_log "$p: round $r: the image of round ${known[all]} lost $bad bytes"
                    known=()
                fi
                continue
            fi
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
    echo "$p: $ROUNDS rounds, $((skills + wkills)) kills ($skills server, $wkills writer), $acked acknowledged, $failed failed (not acknowledged), $lost bytes lost"
    [ "$acked" -gt 0 ] || t_log "$p: no round was acknowledged (nothing was checked)"
    [ "$lost" = 0 ]
}

status=0
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
for p in $PATHS; do
    case $p in
    r3) R3PORT=$(t_free_port) ;;
    r3s)
        t_need openssl
        t_ca "$D/c" ca "r3 chaos CA"
        t_cert "$D/c" srv 127.0.0.1 ca "subjectAltName=IP:127.0.0.1"
        R3SPORT=$(t_free_port) ;;
    redis) t_need redis-server; t_need redis-cli; mkdir -p "$D/redis"; REDISPORT=$(t_free_port) ;;
    s3) t_need s3rver; t_need curl; mkdir -p "$D/s3"; S3PORT=$(t_free_port) ;;
    nbd) NBDPORT=$(t_free_port) ;;
    uffd)
        rc=0; why=$("$CAT" requires uffd) || rc=$?
        [ "$rc" = 77 ] && { t_log "uffd: skipped: $why"; continue; }
        UFFDPORT=$(t_free_port) ;;
    managed)
        [ -c /dev/fuse ] || { t_log "managed: skipped: no /dev/fuse"; continue; }
        MANAGEDPORT=$(t_free_port) ;;
    *) echo "run.sh: unknown path '$p' (r3 r3s redis s3 nbd uffd managed)" >&2; exit 2 ;;
    esac
    start_$p; wait_up "$p" "$(port_of "$p")"
    run_path "$p" "$(port_of "$p")" || status=1
    kill -9 "$(cat "$D/$p.pid")" 2>/dev/null; rm -f "$D/$p.pid"
done
if grep -l -E "AddressSanitizer|LeakSanitizer|runtime error:|ThreadSanitizer" "$D"/*.log 2>/dev/null; then
    grep -h -B2 -A30 -E "AddressSanitizer|LeakSanitizer|runtime error:|ThreadSanitizer" "$D"/*.log >&2
    t_fail "sanitizer report"
fi
[ "$status" = 0 ] || t_fail "acknowledged data was lost (seed $SEED)"
t_log "no acknowledged byte lost"
