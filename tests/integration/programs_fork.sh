#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Forked children under r3run (issue 11): a child sees the region exactly as
# its parent saw it at the fork, copy-on-write, also for chunks the parent
# had not filled (served by the parent's r3 threads, with their bytes of
# the fork even after the parent wrote them back); the child's writes never
# reach the source; children of children work.
#  1. a fork storm: 50 children (every 5th with a child of its own) read
#     random chunks while the parent overwrites and pushes everything;
#  2. python multiprocessing, fork start method, 4 workers over 256 MiB;
#  3. redis-server: BGSAVE while a client writes; the RDB holds exactly the
#     data of the moment of the fork (digest of a plain redis-server that
#     loads it, against one that ran the same commands before the fork).
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/r3run/needs_uffd.sh"
r3_needs_uffd
t_need python3
R3RUN="$top_builddir/r3run"
cd "$T_DIR"

# 1. fork storm over a source holding random bytes.
mib=16
head -c 64M /dev/urandom > orig.img
cp orig.img src.img
t_timeout 300 "$R3RUN" --source "file://$T_DIR/src.img" --push-interval 20ms -- \
    "$top_builddir/tests/r3run/forkcow" $mib 50 7 > storm.out 2> storm.err ||
    t_fail "fork storm: exit $?: $(tail -5 storm.err)"
grep -q '^done$' storm.out || t_fail "fork storm: the parent did not finish: $(tail -3 storm.err)"
res=$(python3 "$top_srcdir/tests/r3run/forkcow_check.py" storm.out orig.img src.img $mib 2>&1) ||
    t_fail "fork storm: $res"
t_log "fork storm: $res"

# 1a. the same while the parent evicts (--max-resident): chunks shared with
# children stay, chunks taken out are written back (children first).
cp orig.img src.img
t_timeout 300 "$R3RUN" --stats --source "file://$T_DIR/src.img" --push-interval 20ms --max-resident 8M -- \
    "$top_builddir/tests/r3run/forkcow" 32 10 5 > storm2.out 2> storm2.err ||
    t_fail "fork + eviction: exit $?: $(tail -5 storm2.err)"
res=$(python3 "$top_srcdir/tests/r3run/forkcow_check.py" storm2.out orig.img src.img 32 2>&1) ||
    t_fail "fork + eviction: $res"
grep -q "chunks evicted [1-9]" storm2.err || t_fail "fork + eviction: nothing evicted: $(cat storm2.err)"
t_log "fork + eviction: $res"

# 1b. a child that outlives its parent: when the parent exits, the child is
# given what it still lacks (here: the untouched half, the source's bytes).
cp orig.img src.img
t_timeout 120 "$R3RUN" --source "file://$T_DIR/src.img" -- "$top_builddir/tests/r3run/orphan" $mib \
    "$T_DIR/orphan.out" 2> orphan.err || t_fail "orphan: exit $?: $(cat orphan.err)"
for i in $(seq 1 100); do [ -s orphan.out ] && [ "$(stat -c %s orphan.out)" -eq $((mib << 20)) ] && break; sleep 0.1; done
sleep 0.2
python3 - "$mib" <<'PY' || t_fail "orphan: the child read wrong bytes"
import sys
n = int(sys.argv[1]) << 20
got = open("orphan.out", "rb").read()
want = bytes(((i * 7 + 1) & 255) for i in range(256)) * (n // 512) + open("orig.img", "rb").read(n)[n // 2:]
sys.exit(0 if got == want else 1)
PY
t_log "a child that outlived its parent read the fork-time bytes"

# 2. python multiprocessing: the hashes equal a plain run's.
mp="$top_srcdir/tests/r3run/mp_hash.py"
t_timeout 300 python3 "$mp" 256 > mp.plain || t_fail "multiprocessing, plain run failed"
t_timeout 300 "$R3RUN" --stats --size 1G -- python3 "$mp" 256 > mp.r3 2> mp.err ||
    t_fail "multiprocessing under r3run: exit $?: $(tail -5 mp.err)"
cmp -s mp.plain mp.r3 || t_fail "multiprocessing: hashes differ: $(paste mp.plain mp.r3)"
grep -q "blocks placed in the region [1-9]" mp.err || t_fail "multiprocessing: region unused: $(cat mp.err)"
t_log "multiprocessing (fork, 4 workers, 256 MiB): hashes equal a plain run's"

# 3. redis BGSAVE while a client writes.
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    t_log "redis-server/redis-cli not installed: the BGSAVE case is not run"
    t_log "ok"
    exit 0
fi
keys=${R3_TEST_REDIS_KEYS:-200000}
rcli() { redis-cli -p "$1" "${@:2}"; }
P=$(t_free_port)
mkdir r3data plaindata
t_bg "$R3RUN" --stats --size 1G -- redis-server --port "$P" --bind 127.0.0.1 --save '' \
    --appendonly no --enable-debug-command yes --dir "$T_DIR/r3data" --dbfilename dump.rdb \
    --logfile "$T_DIR/r3redis.log" 2> "$T_DIR/r3run.err"
R3PID=$T_LAST_PID
t_wait_port "$P"
[ "$(rcli $P debug populate $keys key 512)" = OK ] || t_fail "DEBUG POPULATE failed"
rcli $P set before-fork yes > /dev/null
rcli $P bgsave | grep -q "started" || t_fail "BGSAVE did not start"
# After the BGSAVE reply the child exists: all of this is after the fork.
for i in $(seq 1 5000); do
    echo "SET key:$i changed-after-fork-$i"
    echo "SET after:$i x"
    echo "DEL key:$((i + 100000))"
done | rcli $P > /dev/null
for i in $(seq 1 600); do
    rcli $P info persistence | grep -q "rdb_bgsave_in_progress:0" && break
    sleep 0.1
done
rcli $P info persistence | grep -q "rdb_last_bgsave_status:ok" ||
    t_fail "BGSAVE failed: $(tail -5 r3redis.log)"
rcli $P shutdown nosave > /dev/null 2>&1 || true
wait $R3PID || t_fail "redis under r3run exited with $?"
grep -q "blocks placed in the region [1-9]" r3run.err || t_fail "redis: region unused: $(cat r3run.err)"

# The same commands before the fork, plainly; then the RDB loaded plainly.
P2=$(t_free_port)
t_bg redis-server --port "$P2" --bind 127.0.0.1 --save '' --appendonly no --enable-debug-command yes \
    --dir "$T_DIR/plaindata" --logfile "$T_DIR/plain.log"
t_wait_port "$P2"
rcli $P2 debug populate $keys key 512 > /dev/null
rcli $P2 set before-fork yes > /dev/null
want=$(rcli $P2 debug digest)
rcli $P2 shutdown nosave > /dev/null 2>&1 || true
P3=$(t_free_port)
t_bg redis-server --port "$P3" --bind 127.0.0.1 --save '' --appendonly no --enable-debug-command yes \
    --dir "$T_DIR/r3data" --dbfilename dump.rdb --logfile "$T_DIR/load.log"
t_wait_port "$P3"
for i in $(seq 1 100); do rcli $P3 ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
got=$(rcli $P3 debug digest)
n=$(rcli $P3 dbsize)
v=$(rcli $P3 get key:1 | tr -d "\0")
rcli $P3 shutdown nosave > /dev/null 2>&1 || true
[ "$n" = $((keys + 1)) ] || t_fail "the RDB holds $n keys, expected $((keys + 1))"
[ "$v" != "changed-after-fork-1" ] || t_fail "the RDB holds a value written after the fork"
[ "$got" = "$want" ] || t_fail "the RDB's digest $got differs from the fork-time data's $want"
t_log "redis BGSAVE under r3run while a client wrote: $n keys, digest $got = a plain run's"
t_log "ok"
