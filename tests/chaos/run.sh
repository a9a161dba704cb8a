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
#   r3sync   a 16 MiB file: writer (r3sync advertise) -> r3sync hub (mTLS) ->
#            two receivers (r3sync receive)                  read back: each receiver's file
# A put round writes one 64 KiB region (a chunk) in random pieces with a
# delay between them, so the kill lands mid-transfer; a region round writes
# the whole 1 MiB image through memory with a new seed and syncs. A round is
# acknowledged when the writer exits 0 (written and flushed/synced). A round
# that failed (or whose writer was killed) makes what it wrote unknown until
# a later acknowledged round rewrites it.
# r3sync: a round writes 1-512 random 4 KiB pages of the source file
# through a MAP_SHARED mapping (filesync_writer.py), then syncs: SIGUSR1 to
# the writer, r3sync advertise --interval 0, which sends the changed blocks
# through the hub (round 0 brings the empty receivers up to date). The
# victim (in 2 rounds of 3) is the hub, a receiver or the writer (the
# advertiser), killed 0-150 ms after the SIGUSR1 and restarted.
# Acknowledged, for r3sync: a receiver acknowledged a sync when the writer
# printed "ack round=K receiver=ID" for the sync's round K, ID being the id
# that receiver printed on connecting ("connected receiver=ID"). It says
# the receiver has written and fsynced the round and holds the whole file
# as of that round (a receiver still catching up after it joined says
# "round K incomplete (catching up)" and does not acknowledge; see
# r3sync(1), OUTPUT). Every receiver that acknowledged a sync must then
# hold, byte for byte, what the writer wrote (its file compared with the
# writer's copy by cmp), checked as soon as the sync is over: after the
# victim's restart and every client's reconnection, or, with no kill, once
# each receiver said "round K done" (and the ack came) or "incomplete". A
# sync that not both receivers acknowledged is retried, as a writer would,
# until both do (at most 40 syncs); "failed" counts the rounds whose first
# sync was not acknowledged by both. Bytes lost are counted once per round
# and receiver.
# Prints rounds, kills (server / writer), acknowledged rounds and bytes lost
# per path; fails on any loss, on a command that hangs past its deadline, on
# a server that does not come back, or on a sanitizer report in a log.
# Usage: run.sh [--rounds N] [--seed S] [--paths "r3 r3s redis s3 nbd uffd managed r3sync"]
#        (make check: 6 rounds each)
SELF=$(readlink -f "$0")
source "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration/lib.sh"
ROUNDS=6
SEED=$$
PATHS="r3 r3s redis s3 nbd uffd managed r3sync"
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --paths) PATHS=$2; shift 2 ;;
    -h|--help) sed -n '2,48p' "$SELF" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option '$1'" >&2; echo "Try 'run.sh --help' for more information." >&2; exit 2 ;;
    esac
done
case $ROUNDS in ''|*[!0-9]*) echo "run.sh: --rounds needs a number" >&2; exit 2 ;; esac
t_need python3
t_need cmp
SERVE="$top_builddir/r3serve"
R3SYNC="$top_builddir/r3sync"
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
    local i tries=0
    for i in $(seq 1 400); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
            # s3rver listens before it has configured its bucket
            [ "$1" != s3 ] || curl -s -o /dev/null "http://127.0.0.1:$2/bk" && return 0
        fi
        if ! kill -0 "$(cat "$D/$1.pid")" 2>/dev/null; then
            # The port can still be held for a moment after the old server's
            # death (its leader is a zombie before its last thread has closed
            # the sockets), or by another test's outgoing connection that the
            # kernel gave this port: try again, 20 times at most.
            if [ $tries -lt 20 ] && tail -3 "$D/$1"*.log | grep -q 'Address already in use\|EADDRINUSE'; then
                tries=$((tries + 1)); sleep 0.1; start_$1; continue
            fi
            tail -5 "$D/$1"*.log >&2; t_fail "$1: the server died at start"
        fi
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

# ---- r3sync: a file synced by r3sync from a source to a hub and on to two
# receivers. The processes: the hub, receivers r1 and r2, and the writer,
# the advertiser (r3sync advertise --interval 0: a round, its sync, on each
# SIGUSR1). Their pids live in $D/fs_*.pid, their stdout in $D/fs_*.out.
FSSIZE=$((16 * 1024 * 1024))
fs_tls() { echo "--cert $D/fc/$1.pem --key $D/fc/$1.key --ca $D/fc/ca.pem"; }
start_fs_hub() {
    "$R3SYNC" hub --listen "127.0.0.1:$FSPORT" --tls-cert "$D/fc/hub.pem" --tls-key "$D/fc/hub.key" \
        --tls-ca "$D/fc/ca.pem" 2>>"$D/fs_hub.log" &
    echo $! >"$D/fs_hub.pid"; disown
}
start_fs_r1() {
    "$R3SYNC" receive "$D/fs_r1" --hub "127.0.0.1:$FSPORT" $(fs_tls r1) --no-progress \
        >>"$D/fs_r1.out" 2>>"$D/fs_r1.log" &
    echo $! >"$D/fs_r1.pid"; disown
}
start_fs_r2() {
    "$R3SYNC" receive "$D/fs_r2" --hub "127.0.0.1:$FSPORT" $(fs_tls r2) --no-progress \
        >>"$D/fs_r2.out" 2>>"$D/fs_r2.log" &
    echo $! >"$D/fs_r2.pid"; disown
}
start_fs_adv() {
    ( cd "$D/fs_src" && exec "$R3SYNC" advertise data.bin --hub "127.0.0.1:$FSPORT" $(fs_tls w) \
        --interval 0 --no-progress >>"$D/fs_adv.out" 2>>"$D/fs_adv.log" ) &
    echo $! >"$D/fs_adv.pid"; disown
}
count() { local n; n=$(grep -c -E -- "$2" "$1" 2>/dev/null); echo "${n:-0}"; }
# fs_wait_count FILE ERE N WHAT: FILE has at least N lines matching ERE
# within 60 s (a hang guard), or fail
fs_wait_count() {
    local i
    for i in $(seq 1 1200); do
        [ "$(count "$1" "$2")" -ge "$3" ] && return 0
        sleep 0.05
    done
    tail -5 "$1" >&2
    t_fail "r3sync: $4: not within 60 s"
}
# the connections each client has made so far (its "connected to" lines)
fs_conns() { echo "$(count "$D/fs_adv.log" 'connected to') $(count "$D/fs_r1.log" 'connected to') $(count "$D/fs_r2.log" 'connected to')"; }
# lines of FILE after line OFF (up to the writer's restart marker for fs_adv.out)
after() { tail -n +"$(($2 + 1))" "$1" | sed '/^=== restarted/,$d'; }
# the receiver ids X had at line OFF of its stdout, and after it when X restarted
fs_ids() {
    local x=$1 off=$2 restarted=$3
    head -n "$off" "$D/fs_$x.out" | sed -n 's/^connected receiver=//p' | tail -1
    [ "$restarted" = 1 ] && after "$D/fs_$x.out" "$off" | sed -n 's/^connected receiver=//p'
}

# One sync of the current round: kick the writer, maybe kill a process at a
# random moment (then restart it and wait until every client is connected
# again), and say which receivers acknowledged it (in $ACKED). A sync with
# no kill waits for its outcome: its round line and, from each receiver, its
# "round K done" (then the ack) or "round K incomplete".
fs_sync() {
    local victim=$1 kill_ms=$2 aoff o1 o2 c0 k x ids id
    aoff=$(wc -l <"$D/fs_adv.out"); o1=$(wc -l <"$D/fs_r1.out"); o2=$(wc -l <"$D/fs_r2.out")
    c0=$(fs_conns)
    kill -USR1 "$(cat "$D/fs_adv.pid")"
    if [ -n "$victim" ]; then
        ( sleep "$(printf '0.%03d' "$kill_ms")"
          local vp; vp=$(cat "$D/fs_$victim.pid")
          kill -9 "$vp" 2>/dev/null
          for _ in $(seq 1 200); do
              [ -e "/proc/$vp" ] && ! grep -q '^State:.*Z' "/proc/$vp/status" 2>/dev/null || break
              sleep 0.05
          done
          # a zombie leader's other threads may still hold the hub's
          # listening socket: wait until the port refuses connections
          if [ "$victim" = hub ]; then
              for _ in $(seq 1 200); do
                  (exec 3<>"/dev/tcp/127.0.0.1/$FSPORT") 2>/dev/null || break
                  sleep 0.05
              done
          fi
          [ "$victim" = adv ] && echo "=== restarted" >>"$D/fs_adv.out"
          start_fs_$victim ) &
        wait $!
        [ "$victim" = hub ] && wait_up fs_hub "$FSPORT"
        # every client that lost its connection is connected again
        local a1 b1 c1 a0 b0 cc0 up=0 i
        read -r a0 b0 cc0 <<<"$c0"
        for i in $(seq 1 1200); do
            read -r a1 b1 c1 <<<"$(fs_conns)"
            case $victim in
            hub) [ "$a1" -gt "$a0" ] && [ "$b1" -gt "$b0" ] && [ "$c1" -gt "$cc0" ] && up=1 ;;
            adv) [ "$a1" -gt "$a0" ] && up=1 ;;
            r1) [ "$b1" -gt "$b0" ] && up=1 ;;
            r2) [ "$c1" -gt "$cc0" ] && up=1 ;;
            esac
            [ "$up" = 1 ] && break
            for x in hub adv r1 r2; do
                kill -0 "$(cat "$D/fs_$x.pid")" 2>/dev/null || { tail -5 "$D/fs_$x.log" >&2; t_fail "r3sync: the $x died"; }
            done
            sleep 0.05
        done
        [ "$up" = 1 ] || t_fail "r3sync: the clients did not reconnect within 60 s of the $victim's restart"
    fi
    # the round line, unless the kill took the writer's connection with it
    case $victim in
    ''|r1|r2)
        for _ in $(seq 1 1200); do
            after "$D/fs_adv.out" "$aoff" | grep -q '^round [0-9]*:' && break
            sleep 0.05
        done
        after "$D/fs_adv.out" "$aoff" | grep -q '^round [0-9]*:' ||
            t_fail "r3sync: the writer printed no round line within 60 s of its SIGUSR1" ;;
    esac
    k=$(after "$D/fs_adv.out" "$aoff" | sed -n 's/^round \([0-9]*\):.*/\1/p' | head -1)
    ROUNDLINE=$(after "$D/fs_adv.out" "$aoff" | grep -m1 '^round [0-9]*:')
    ACKED=""
    [ -n "$k" ] || return 0            # the writer died before its round line
    for x in r1 r2; do
        local off=$o1; [ $x = r2 ] && off=$o2
        if [ -z "$victim" ]; then
            for _ in $(seq 1 1200); do
                after "$D/fs_$x.out" "$off" | grep -q -E "^round $k (done|incomplete)" && break
                sleep 0.05
            done
            after "$D/fs_$x.out" "$off" | grep -q -E "^round $k (done|incomplete)" ||
                t_fail "r3sync: receiver $x said nothing of round $k within 60 s"
        fi
        ids=$(fs_ids $x "$off" "$([ "$victim" = $x ] && echo 1)")
        for id in $ids; do
            if [ -z "$victim" ] && after "$D/fs_$x.out" "$off" | grep -q "^round $k done"; then
                # its ack is on its way back to the writer
                for _ in $(seq 1 1200); do
                    after "$D/fs_adv.out" "$aoff" | grep -q "^ack round=$k receiver=$id\$" && break
                    sleep 0.05
                done
            fi
            after "$D/fs_adv.out" "$aoff" | grep -q "^ack round=$k receiver=$id\$" && ACKED="$ACKED $x"
        done
    done
}

# bytes of receiver X's file that differ from what the writer wrote
fs_lost() {
    local f="$D/fs_$1/data.bin" n sz
    n=$(cmp -l "$f" "$D/fs.expect" 2>/dev/null | wc -l)
    sz=$(stat -c %s "$f" 2>/dev/null || echo 0)
    echo $((n + (sz < FSSIZE ? FSSIZE - sz : 0)))
}

run_r3sync() {
    local r kills=0 hk=0 rk=0 wk=0 acked=0 failed=0 resyncs=0 lost=0 a x bad victim kill_ms
    mkdir -p "$D/fs_src"
    head -c "$FSSIZE" /dev/urandom >"$D/fs_src/data.bin"
    cp "$D/fs_src/data.bin" "$D/fs.expect"
    start_fs_hub; wait_up fs_hub "$FSPORT"
    start_fs_r1; start_fs_r2; start_fs_adv
    fs_wait_count "$D/fs_adv.log" 'connected to' 1 "the writer's connection"
    fs_wait_count "$D/fs_r1.log" 'connected to' 1 "receiver r1's connection"
    fs_wait_count "$D/fs_r2.log" 'connected to' 1 "receiver r2's connection"
    for r in $(seq 0 "$ROUNDS"); do
        # round 0 brings the empty receivers up to date; each later round
        # writes 1-512 random 4 KiB pages through a MAP_SHARED mapping
        if [ "$r" -gt 0 ]; then
            python3 "$top_srcdir/tests/integration/filesync_writer.py" "$D/fs_src/data.bin" \
                "$((SEED * 1000 + r))" $((1 + RANDOM % 512)) 65536 >/dev/null
            cp "$D/fs_src/data.bin" "$D/fs.expect"
        fi
        victim=""
        if [ "$r" -gt 0 ] && [ $((RANDOM % 3)) != 0 ]; then
            case $((RANDOM % 3)) in 0) victim=hub ;; 1) victim=r$((1 + RANDOM % 2)) ;; 2) victim=adv ;; esac
            kill_ms=$((RANDOM % 150))
        fi
        declare -A worst=()
        for a in $(seq 1 40); do
            fs_sync "$victim" "${kill_ms:-0}"
            if [ -n "$victim" ]; then
                kills=$((kills + 1))
                case $victim in hub) hk=$((hk + 1)) ;; adv) wk=$((wk + 1)) ;; *) rk=$((rk + 1)) ;; esac
            fi
            # every receiver that acknowledged this round holds it, read
            # straight from its file
            for x in $ACKED; do
                bad=$(fs_lost $x)
                if [ "$bad" != 0 ]; then
                    # a loss is counted once per round and receiver (the largest seen)
                    [ "$bad" -gt "${worst[$x]:-0}" ] && worst[$x]=$bad
                    t_log "r3sync: round $r (sync $a${victim:+, $victim killed}): receiver $x acknowledged it and lost $bad bytes"
                fi
            done
            t_log "r3sync: round $r, sync $a${victim:+ ($victim killed after ${kill_ms} ms)}: acknowledged by:${ACKED:- none} ($ROUNDLINE)"
            victim=""
            case "$ACKED" in *r1*r2*|*r2*r1*) break ;; esac
        done
        case "$ACKED" in *r1*r2*|*r2*r1*) ;; *) t_fail "r3sync: round $r not acknowledged by both receivers after 40 syncs" ;; esac
        lost=$((lost + ${worst[r1]:-0} + ${worst[r2]:-0}))
        [ "$r" = 0 ] && continue
        if [ "$a" = 1 ]; then acked=$((acked + 1)); else failed=$((failed + 1)); resyncs=$((resyncs + a - 1)); fi
    done
    echo "r3sync: $ROUNDS rounds, $kills kills ($hk hub, $rk receiver, $wk writer), $acked acknowledged at their first sync, $failed failed (not acknowledged; $resyncs more syncs acknowledged them), $lost bytes lost"
    # SIGTERM, so that a sanitizer build reports leaks at exit (in fs_*.log)
    local pid
    for x in adv r1 r2 hub; do
        pid=$(cat "$D/fs_$x.pid")
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null && t_log "r3sync: the $x did not stop within 10 s of SIGTERM"
        rm -f "$D/fs_$x.pid"
    done
    [ "$lost" = 0 ]
}

status=0
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
for p in $PATHS; do
    t0=$SECONDS
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
    r3sync)
        t_ca "$D/fc" ca "r3 chaos sync CA"
        t_cert "$D/fc" hub hub ca "subjectAltName=IP:127.0.0.1"
        t_cert "$D/fc" w chaos ca; t_cert "$D/fc" r1 chaos ca; t_cert "$D/fc" r2 chaos ca
        FSPORT=$(t_free_port)
        run_r3sync || status=1
        t_log "r3sync: $((SECONDS - t0)) s"
        continue ;;
    *) echo "run.sh: unknown path '$p' (r3 r3s redis s3 nbd uffd managed r3sync)" >&2; exit 2 ;;
    esac
    start_$p; wait_up "$p" "$(port_of "$p")"
    run_path "$p" "$(port_of "$p")" || status=1
    kill -9 "$(cat "$D/$p.pid")" 2>/dev/null; rm -f "$D/$p.pid"
    t_log "$p: $((SECONDS - t0)) s"
done
if grep -l -E "AddressSanitizer|LeakSanitizer|runtime error:|ThreadSanitizer" "$D"/*.log 2>/dev/null; then
    grep -h -B2 -A30 -E "AddressSanitizer|LeakSanitizer|runtime error:|ThreadSanitizer" "$D"/*.log >&2
    t_fail "sanitizer report"
fi
[ "$status" = 0 ] || t_fail "acknowledged data was lost (seed $SEED)"
t_log "no acknowledged byte lost"
