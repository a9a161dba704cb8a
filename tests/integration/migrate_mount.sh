#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# r3mount --seed / --leech with a real program (issue 12): sqlite3 commits
# rows into a database file on A's seeding mount (nbd-managed) while B pulls
# it (B's pull is slowed so the inserts land after TRACK, in chunks B already
# holds); B finalizes on SIGUSR1 with most chunks still remote (post-copy),
# and only then B's file appears: PRAGMA integrity_check is ok
# on B and every row committed on A is there, read through B's own mount.
# After RELEASE a write on A fails (EIO). B's copy is kept in a file://
# (--local), which must hold the same bytes as B's file. A second handover
# over mTLS (a leecher without a client certificate is refused; nbd-direct
# on A) keeps B's copy in a dir://. A seeder killed during the pull: the
# leecher says so within its timeout and mounts nothing.
source "$top_srcdir/tests/integration/lib.sh"
[ -c /dev/fuse ] || t_skip "no /dev/fuse (FUSE is not available in this kernel/container)"
for t in sqlite3 cmp; do t_need $t; done
R3MOUNT="$top_builddir/r3mount"
D=$T_DIR
mkdir -p "$D/a" "$D/b"
# On any exit every mount goes, and so does its daemon: a seeder whose
# leecher died after FINALIZE keeps its writers paused (no RELEASE comes),
# so its -u cannot write back and the daemon is killed instead.
daemon_of() { awk -v m="$1" '$2 == m && $1 ~ /^r3mount:/ { sub("r3mount:", "", $1); print $1 }' /proc/mounts; }
umount_all() {
    local m p
    for m in b a b2 a2 b3 a3 b4 a4 b5 a5; do
        p=$(daemon_of "$D/$m")
        [ -n "$p" ] || continue
        t_timeout 10 "$R3MOUNT" -u "$D/$m" 2>/dev/null
        kill -9 "$p" 2>/dev/null
        fusermount -u "$D/$m" 2>/dev/null || fusermount -uz "$D/$m" 2>/dev/null
    done
    t_cleanup
}
trap umount_all EXIT

# Usage errors of the new flags
"$R3MOUNT" --seed 127.0.0.1:1 --leech r3://127.0.0.1:1/ "$D/b" 2>"$D/err"; [ $? -eq 2 ] || t_fail "--seed --leech"
"$R3MOUNT" --local mem: "mem:?size=1M" "$D/b" 2>"$D/err"; [ $? -eq 2 ] || t_fail "--local without --leech"
"$R3MOUNT" --leech --finalize-at 101 r3://127.0.0.1:1/ "$D/b" 2>"$D/err"; [ $? -eq 2 ] || t_fail "--finalize-at 101"

# A: a 64 MiB file holding a fresh database, mounted and seeded
rm -f "$D/new.db"
sqlite3 "$D/new.db" "CREATE TABLE t(i INTEGER PRIMARY KEY, v TEXT);" || t_fail "sqlite3 create"
head -c 64M /dev/zero >"$D/a.img"
dd if="$D/new.db" of="$D/a.img" conv=notrunc 2>/dev/null
P=$(t_free_port)
fa=$(t_timeout 30 "$R3MOUNT" --mount fuse --strategy nbd-managed --seed 127.0.0.1:$P --log "$D/a.log" "file://$D/a.img" "$D/a") \
    || t_fail "r3mount --seed"
ins() {   # FROM TO: one committed transaction a row
    local i sql="PRAGMA journal_mode=MEMORY;"
    for i in $(seq "$1" "$2"); do sql="$sql INSERT INTO t(v) VALUES('row $i');"; done
    sqlite3 "$fa" "$sql" >/dev/null
}
ins 1 50 || t_fail "inserts on A before the move"

# B: leech (each request delayed, so the pull takes seconds), kept in a file
t_bg "$R3MOUNT" --mount fuse --leech --delay 60ms --pull-workers 2 --local "file://$D/b.img" \
    --log "$D/b.log" "r3://127.0.0.1:$P/?timeout=20s" "$D/b" >"$D/b.out" 2>"$D/b.err"
LEECH=$T_LAST_PID
for i in $(seq 1 400); do grep -q "pulling" "$D/b.err" 2>/dev/null && break; sleep 0.025; done
grep -q "pulling" "$D/b.err" || t_fail "the leecher shows no progress: $(cat "$D/b.err")"
# After TRACK: more commits on A, each one a transaction (header page, which B holds already),
# from one sqlite3: ten of them starting on a loaded machine outlasted the pull (B pulls runs
# of 1 MiB, about 2 s here) and met the gate's EIO after RELEASE
sql="PRAGMA journal_mode=MEMORY;"
for k in $(seq 51 10 141); do
    sql="$sql BEGIN;"
    for i in $(seq "$k" $((k + 9))); do sql="$sql INSERT INTO t(v) VALUES('row $i');"; done
    sql="$sql COMMIT;"
done
t_ins=$(date +%s.%N)
sqlite3 "$fa" "$sql" >/dev/null || t_fail "inserts on A during the pull"
t_log "the inserts during the pull took $(echo "$(date +%s.%N) - $t_ins" | bc) s; B: $(tr '\r' '\n' <"$D/b.err" | tail -1)"
[ -e "$D/b/disk" ] && t_fail "B's file appeared before the finalize"
# Finalize now (SIGUSR1), well before every chunk is local: the rest is post-copy
kill -USR1 $LEECH
wait $LEECH || t_fail "r3mount --leech: $(cat "$D/b.err")"
fb=$(cat "$D/b.out")
[ "$fb" = "$D/b/disk" ] || t_fail "r3mount --leech printed '$fb' ($(cat "$D/b.err"))"
grep -q "finalized after" "$D/b.err" || t_fail "no totals line: $(cat "$D/b.err")"
dt=$(sed -n 's/.*downtime \([0-9.]*\) ms.*/\1/p' "$D/b.err")
[ -n "$dt" ] || t_fail "no downtime line: $(cat "$D/b.err")"
t_log "downtime $dt ms; $(grep finalized "$D/b.err")"
pct=$(sed -n 's/.*, \([0-9]*\) of 1024 chunks local.*/\1/p' "$D/b.err")
# (chunks written on A since TRACK are not local after the finalize even if
# B had pulled them: fewer than 1024 minus those says the pull had not ended)
dirty=$(sed -n 's/.*: \([0-9]*\) chunks were written on the seeder.*/\1/p' "$D/b.err")
[ -n "$pct" ] && [ -n "$dirty" ] && [ "$pct" -lt $((1024 - dirty)) ] ||
    t_fail "the finalize on SIGUSR1 waited for every chunk: $(cat "$D/b.err")"

# B: the database is whole, and every committed row is there
[ "$(sqlite3 "$fb" 'PRAGMA integrity_check;')" = ok ] || t_fail "integrity_check on B"
[ "$(sqlite3 "$fb" 'SELECT count(*), min(i), max(i) FROM t;')" = "150|1|150" ] \
    || t_fail "rows on B: $(sqlite3 "$fb" 'SELECT count(*), min(i), max(i) FROM t;')"
[ "$(sqlite3 "$fb" "SELECT v FROM t WHERE i = 137;")" = "row 137" ] || t_fail "row 137 on B"
# B's file is B's: it takes writes
sqlite3 "$fb" "PRAGMA journal_mode=MEMORY; INSERT INTO t(v) VALUES('on B');" >/dev/null || t_fail "insert on B"

# Every chunk reaches B, the seeder is released; A's writers then get EIO
# (after the finalize B pulls chunk by chunk, 60 ms each: about 30 s; the
# bound is a hang guard)
for i in $(seq 1 3600); do grep -q "released" "$D/b.log" 2>/dev/null && break; sleep 0.05; done
grep -q "released" "$D/b.log" || t_fail "B never held every chunk: $(cat "$D/b.log")"
for i in $(seq 1 100); do grep -q "EIO" "$D/a.log" 2>/dev/null && break; sleep 0.05; done
grep -q "EIO" "$D/a.log" || t_fail "A was not told of the release: $(cat "$D/a.log")"
dd if=/dev/zero of="$fa" bs=4096 count=1 conv=notrunc,fsync 2>"$D/dd" && t_fail "a write on A after RELEASE succeeded"
grep -q "Input/output error" "$D/dd" || t_fail "a write on A after RELEASE: $(cat "$D/dd")"

# The kept copy (--local file) holds B's bytes (read through another path)
sqlite3 "$fb" "SELECT 1;" >/dev/null
"$R3MOUNT" -u "$D/b" || t_fail "unmount B"
[ "$(sqlite3 "$D/b.img" "SELECT count(*) FROM t; PRAGMA integrity_check;" | tr '\n' ' ')" = "151 ok " ] \
    || t_fail "the --local copy: $(sqlite3 "$D/b.img" "SELECT count(*) FROM t;")"
"$R3MOUNT" -u "$D/a" 2>/dev/null

# Again over mTLS, nbd-direct on A, finalize at 100%, B's copy in a dir://
t_need openssl
c=$D/certs; mkdir -p "$c"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$c/ca.key" -out "$c/ca.pem" -days 2 -subj "/CN=r3 test CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$c/srv.key" -out "$c/srv.csr" -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$c/ext"
openssl x509 -req -in "$c/srv.csr" -CA "$c/ca.pem" -CAkey "$c/ca.key" -CAcreateserial -out "$c/srv.pem" -days 2 -extfile "$c/ext" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$c/cli.key" -out "$c/cli.csr" -subj "/CN=leecher" 2>/dev/null
openssl x509 -req -in "$c/cli.csr" -CA "$c/ca.pem" -CAkey "$c/ca.key" -CAcreateserial -out "$c/cli.pem" -days 2 2>/dev/null
[ -s "$c/cli.pem" ] || t_fail "openssl could not make certificates"
mkdir -p "$D/a2" "$D/b2"
head -c 8M /dev/urandom >"$D/a2.img"
P=$(t_free_port)
fa=$(t_timeout 30 "$R3MOUNT" --mount fuse --seed 127.0.0.1:$P --tls-cert "$c/srv.pem" --tls-key "$c/srv.key" \
    --tls-ca "$c/ca.pem" "file://$D/a2.img" "$D/a2" 2>/dev/null) || t_fail "r3mount --seed (mTLS, nbd-direct)"
t_timeout 60 "$R3MOUNT" --mount fuse --leech "r3s://127.0.0.1:$P/?ca=$c/ca.pem&connect_timeout=3s&timeout=5s" \
    "$D/b2" >/dev/null 2>"$D/b2.err" && t_fail "a leecher without a client certificate was let in"
[ -e "$D/b2/disk" ] && t_fail "a refused leech left a file"
fb=$(t_timeout 60 "$R3MOUNT" --mount fuse --leech --local "dir://$D/b2.dir" \
    "r3s://127.0.0.1:$P/?ca=$c/ca.pem&cert=$c/cli.pem&key=$c/cli.key" "$D/b2" 2>"$D/b2.err") \
    || t_fail "r3mount --leech (mTLS) --local dir://: $(cat "$D/b2.err")"
cmp "$D/a2.img" "$fb" || t_fail "B's file differs from A's source"
"$R3MOUNT" -u "$D/b2" || t_fail "unmount B (dir://)"
[ "$(ls "$D/b2.dir" | wc -l)" -gt 100 ] || t_fail "the dir:// copy holds no chunks: $(ls "$D/b2.dir")"
"$R3MOUNT" -u "$D/a2" 2>/dev/null

# A seeder killed (-9) during the pull: the leecher fails within its
# timeout with a sentence, and makes no file appear
mkdir -p "$D/a3" "$D/b3"
P=$(t_free_port)
t_timeout 30 "$R3MOUNT" -q --mount fuse --seed 127.0.0.1:$P "file://$D/a2.img" "$D/a3" 2>/dev/null || t_fail "seed 3"
apid=$(awk -v m="$D/a3" '$2 == m { sub("r3mount:", "", $1); print $1 }' /proc/mounts)
[ -n "$apid" ] || t_fail "no r3mount daemon for $D/a3 in /proc/mounts"
t_bg "$R3MOUNT" --mount fuse --leech --delay 20ms --pull-workers 1 "r3://127.0.0.1:$P/?timeout=3s" "$D/b3" \
    >/dev/null 2>"$D/b3.err"
LEECH=$T_LAST_PID
for i in $(seq 1 400); do grep -q "pulling" "$D/b3.err" 2>/dev/null && break; sleep 0.025; done
kill -9 "$apid"
start=$(date +%s)
wait $LEECH && t_fail "the leech went on without its seeder"
[ $(( $(date +%s) - start )) -le 15 ] || t_fail "the leecher took more than 15 s to give up"
grep -q "leecher: .*127.0.0.1:$P" "$D/b3.err" || t_fail "the leecher's error: $(cat "$D/b3.err")"
[ -e "$D/b3/disk" ] && t_fail "a failed leech left a file"

# The leecher killed (-9) after FINALIZE, before RELEASE: a write held on A
# since the pause must fail (EIO) when A is unmounted, and the unmount must
# not wait for ever on it (its flush went through the paused gate)
mkdir -p "$D/a4" "$D/b4"
P=$(t_free_port)
fa=$(t_timeout 30 "$R3MOUNT" --mount fuse --seed 127.0.0.1:$P "file://$D/a2.img" "$D/a4" 2>/dev/null) || t_fail "seed 4"
fb=$(t_timeout 60 "$R3MOUNT" --mount fuse --leech --finalize-at 0 --delay 200ms --pull-workers 1 \
    "r3://127.0.0.1:$P/?timeout=20s" "$D/b4" 2>"$D/b4.err") || t_fail "leech 4: $(cat "$D/b4.err")"
bpid=$(daemon_of "$D/b4")
[ -n "$bpid" ] || t_fail "no r3mount daemon for $D/b4"
kill -9 "$bpid"
fusermount -uz "$D/b4" 2>/dev/null
dd if="$D/a2.img" of="$D/p3.before" bs=4096 skip=3 count=1 2>/dev/null
t_bg dd if=/dev/urandom of="$fa" bs=4096 count=1 seek=3 conv=notrunc,fsync
DD=$T_LAST_PID
sleep 0.5      # (the write is held: nothing to wait for but time; a write that went through fails below)
kill -0 "$DD" 2>/dev/null || t_fail "a write on A after FINALIZE was not held"
start=$(date +%s)
t_timeout 30 "$R3MOUNT" -u "$D/a4" 2>"$D/a4u.err"
[ $(( $(date +%s) - start )) -le 25 ] || t_fail "r3mount -u of a finalized seeder whose leecher died took over 25 s"
wait "$DD" && t_fail "the write held on A since FINALIZE succeeded at the unmount"
[ -z "$(daemon_of "$D/a4")" ] || t_fail "A's seeder still mounted after -u: $(cat "$D/a4u.err")"
dd if="$D/a2.img" of="$D/p3.after" bs=4096 skip=3 count=1 2>/dev/null
cmp -s "$D/p3.before" "$D/p3.after" || t_fail "the write held since FINALIZE reached A's source"

# SIGTERM (or Ctrl-C) to a waiting `r3mount --leech` while it pulls: the
# daemon stops too, with one sentence, no file and no mount left; A goes on
mkdir -p "$D/a5" "$D/b5"
P=$(t_free_port)
fa=$(t_timeout 30 "$R3MOUNT" --mount fuse --seed 127.0.0.1:$P "file://$D/a2.img" "$D/a5" 2>/dev/null) || t_fail "seed 5"
t_bg "$R3MOUNT" --mount fuse --leech --delay 300ms --pull-workers 1 "r3://127.0.0.1:$P/?timeout=20s" "$D/b5" \
    >/dev/null 2>"$D/b5.err"
LEECH=$T_LAST_PID
for i in $(seq 1 400); do grep -q "pulling" "$D/b5.err" 2>/dev/null && break; sleep 0.025; done
kill -TERM "$LEECH"
start=$(date +%s)
wait "$LEECH" && t_fail "an interrupted leech exited 0"
[ $(( $(date +%s) - start )) -le 15 ] || t_fail "the interrupted leech took more than 15 s to stop"
grep -q "interrupted while pulling: nothing was finalized" "$D/b5.err" || t_fail "the interrupted leech said: $(cat "$D/b5.err")"
for i in $(seq 1 200); do [ -z "$(daemon_of "$D/b5")" ] && break; sleep 0.05; done
[ -z "$(daemon_of "$D/b5")" ] || t_fail "the interrupted leech left its mount"
[ -e "$D/b5/disk" ] && t_fail "an interrupted leech left a file"
dd if=/dev/zero of="$fa" bs=4096 count=1 seek=7 conv=notrunc,fsync 2>"$D/dd5" || t_fail "A after an interrupted leech: $(cat "$D/dd5")"
"$R3MOUNT" -u "$D/a5" || t_fail "unmount A (5)"
exit 0
