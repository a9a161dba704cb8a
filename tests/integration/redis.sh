#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# redis:// against a real redis-server (password, db 3, AOF): 64 MiB of
# pattern in unaligned pieces from 4 threads, flush, close, reopen without
# size, read back and compare; cross-check keys with redis-cli; survive a
# server SIGKILL + restart (appendfsync always); bad inputs.
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/integration/sources_lib.sh"
t_need redis-server
t_need redis-cli
SC="$top_builddir/tests/r3check"
P=$(t_free_port)
mkdir -p "$T_DIR/data"
start_redis() {
    t_bg redis-server --port "$P" --bind 127.0.0.1 --requirepass s3cret --dir "$T_DIR/data" \
        --save '' --appendonly yes --appendfsync always --logfile "$T_DIR/redis.log"
    REDIS_PID=$T_LAST_PID
    t_wait_port "$P"
    for i in $(seq 50); do
        [ "$(redis-cli -p "$P" -a s3cret --no-auth-warning PING 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    t_fail "redis-server did not answer PING"
}
start_redis
U="redis://:s3cret@127.0.0.1:$P/img"
DB=3
cli() { redis-cli -p "$P" -a s3cret --no-auth-warning -n "$DB" "$@"; }

t_log "write 64 MiB (64 KiB chunks) and verify after reopening without size"
t_timeout 60 "$SC" -s 11 write "$U?size=64M&chunk=64K&db=3&conns=8" || t_fail "write"
t_timeout 60 "$SC" -s 11 -t 3 -p 200000 verify "$U?db=3" || t_fail "verify"
[ "$(cli GET img:meta)" = "r3 67108864 65536" ] || t_fail "meta key: $(cli GET img:meta)"
[ "$(cli DBSIZE)" = 1025 ] || t_fail "expected 1024 chunk keys + meta, got $(cli DBSIZE)"

t_log "cross-check: redis-cli GET / GETRANGE give the same bytes"
cli --raw GET img:3 | head -c 65536 | cmp - <("$SC" -s 11 gen $((3 * 65536)) 65536) || t_fail "GET img:3"
cli --raw GETRANGE img:1000 100 4195 | head -c 4096 | cmp - <("$SC" -s 11 gen $((1000 * 65536 + 100)) 4096) \
    || t_fail "GETRANGE img:1000"
[ "$(cli STRLEN img:1023)" = 65536 ] || t_fail "chunk 1023 length"

t_log "1 MiB chunks, requests spanning many chunks (pipelined), other db"
t_timeout 60 "$SC" -s 12 -p 3000000 write "$U?size=32M&chunk=1M&db=4" || t_fail "write 1M"
t_timeout 60 "$SC" -s 12 -p 5000000 verify "$U?db=4&conns=2" || t_fail "verify 1M"
t_timeout 60 "$SC" -s 12 -t 8 -p 70000 -n 2 loop "$U?db=4" || t_fail "loop 1M"

t_log "a key that was never written reads as zeros"
t_timeout 20 "$SC" -s 13 -p 5000 write "$U?size=1M&chunk=64K&db=5" >/dev/null || t_fail "write small"
DB=5 cli DEL img:7 >/dev/null
"$SC" read "$U?db=5" $((7 * 65536 - 10)) 65556 | cmp - <("$SC" -s 13 gen $((7 * 65536 - 10)) 10; head -c 65536 /dev/zero; "$SC" -s 13 gen $((8 * 65536)) 10) \
    || t_fail "a deleted key does not read as zeros"
"$SC" -s 13 verify "$U?db=5" 2>/dev/null && t_fail "verify should fail after DEL (test cannot fail otherwise)"

t_log "server SIGKILL + restart under a running reader: it reconnects, flushed data survives"
t_bg t_timeout 60 "$SC" -s 11 -t 4 -n 5 loop "$U?db=3"
LOOP=$T_LAST_PID
# wait for the event, not a time: the reader's GETs are being served (our
# polls send no GET; counting all commands needed a margin for ours that a
# reader slowed down by ThreadSanitizer did not reach within its 5 s)
reads() { cli INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_get\(range\)\{0,1\}:calls=\([0-9]*\).*/\2/p' | awk '{s += $1} END {print s + 0}'; }
r0=$(reads)
for i in $(seq 200); do
    [ "$(reads)" -gt $((r0 + 20)) ] && break
    sleep 0.05
done
[ "$(reads)" -gt $((r0 + 20)) ] || t_fail "the reader never started reading"
kill -0 "$LOOP" 2>/dev/null || t_fail "the reader ended before the kill: the restart was not under a reader"
kill -9 "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null
start_redis
wait "$LOOP" || t_fail "reads across a server restart failed"
t_timeout 60 "$SC" -s 11 verify "$U?db=3" || t_fail "verify after restart"

t_log "bad inputs: one sentence each, nothing written"
before=$(cli DBSIZE)
"$SC" fail "redis://:wrong@127.0.0.1:$P/bad?size=1M&db=3" "authentication failed" || t_fail "wrong password"
"$SC" fail "redis://127.0.0.1:$P/bad?size=1M&db=3" "needs a password" || t_fail "no password"
"$SC" fail "$U?db=3&size=2M" "holds 67108864 bytes" || t_fail "size mismatch"
"$SC" fail "$U-new?db=3" "needs a size" || t_fail "no size"
"$SC" fail "$U?db=3&colour=red" "unknown URI parameter" || t_fail "bad parameter"
"$SC" fail "redis://:s3cret@127.0.0.1:$P/bad?size=1M&cluster=1" "not a cluster node" || t_fail "cluster=1 on a plain server"
[ "$(cli DBSIZE)" = "$before" ] || t_fail "a bad open wrote keys"
t_log "NOAUTH mid-session: a server that starts asking for a password is an error naming it, not a hang"
P2=$(t_free_port)
mkdir -p "$T_DIR/data2"
t_bg redis-server --port "$P2" --bind 127.0.0.1 --dir "$T_DIR/data2" --save '' --appendonly no \
    --logfile "$T_DIR/redis2.log"
t_wait_port "$P2"
cli2() { redis-cli -p "$P2" --no-auth-warning "$@"; }
for i in $(seq 50); do [ "$(cli2 PING 2>/dev/null)" = PONG ] && break; sleep 0.1; done
t_timeout 30 "$SC" -s 16 write "redis://127.0.0.1:$P2/na?size=4M&chunk=64K" || t_fail "write without a password"
t_bg t_timeout 60 "$SC" -s 16 -t 2 -n 20 loop "redis://127.0.0.1:$P2/na?timeout=2s" 2>"$T_DIR/noauth.err"
NA=$T_LAST_PID
for i in $(seq 200); do [ "$(cli2 INFO clients | tr -d '\r' | sed -n 's/^connected_clients://p')" -gt 1 ] && break; sleep 0.05; done
cli2 CONFIG SET requirepass late-s3cret >/dev/null
redis-cli -p "$P2" -a late-s3cret --no-auth-warning CLIENT KILL TYPE normal >/dev/null
rc=0; wait "$NA" || rc=$?
[ "$rc" = 1 ] || { cat "$T_DIR/noauth.err" >&2; t_fail "a reader meeting NOAUTH: status $rc, expected 1"; }
grep -q "needs a password" "$T_DIR/noauth.err" || { cat "$T_DIR/noauth.err" >&2; t_fail "NOAUTH is not said as a missing password"; }
t_log "NOAUTH: $(head -1 "$T_DIR/noauth.err")"
t_log "through a uffd region"
region_step 11 15 "$U?db=3"
exit 0
