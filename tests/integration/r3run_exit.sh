#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# r3run's contract at the edges: exit statuses (the program's own, 127, 126,
# a killing signal passed on), refusal of static and setuid programs, and
# clear errors for bad options and bad sources, before the program starts.
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/r3run/needs_uffd.sh"
r3_needs_uffd
R3RUN="$top_builddir/r3run"
cd "$T_DIR"

# expect_fail CODE PATTERN -- r3run args: exit status CODE and PATTERN on stderr.
expect_fail() {
    local want=$1 pat=$2 rc=0
    shift 3
    t_timeout 60 "$R3RUN" "$@" >out 2>err || rc=$?
    [ "$rc" -eq "$want" ] || t_fail "r3run $*: exit $rc, expected $want (stderr: $(cat err))"
    grep -q -- "$pat" err || t_fail "r3run $*: stderr lacks '$pat': $(cat err)"
    t_log "r3run $* -> $rc: $(head -1 err)"
}

# Exit statuses are the program's own.
t_timeout 60 "$R3RUN" -- true || t_fail "r3run -- true failed"
rc=0; t_timeout 60 "$R3RUN" -- false || rc=$?
[ $rc -eq 1 ] || t_fail "r3run -- false gave $rc"
rc=0; t_timeout 60 "$R3RUN" -- sh -c 'exit 42' || rc=$?
[ $rc -eq 42 ] || t_fail "exit 42 gave $rc"
expect_fail 127 "No such file" -- /nonexistent
expect_fail 127 "command not found" -- no-such-command-r3
printf 'not a program\n' > notexec
expect_fail 126 "not executable" -- ./notexec
expect_fail 126 "is a directory" -- /tmp

# A program killed by a signal: r3run's caller sees the same signal.
rc=0; t_timeout 60 "$R3RUN" -- sh -c 'kill -TERM $$' || rc=$?
[ $rc -eq 143 ] || t_fail "a SIGTERM-killed program gave $rc, expected 143 (128+15)"
rc=0; t_timeout 60 bash -c '"$0" -- python3 -c "import os; os.kill(os.getpid(), 9)"; exit $?' "$R3RUN" || rc=$?
[ $rc -eq 137 ] || t_fail "a SIGKILL-killed program gave $rc, expected 137"

# Programs LD_PRELOAD cannot reach are refused, with the reason.
expect_fail 126 "statically linked" -- "$top_builddir/tests/r3run/static_true"
if [ "$(id -u)" -eq 0 ] && id nobody >/dev/null 2>&1; then
    cp "$(type -P true)" suid_true && chown nobody suid_true && chmod 4755 suid_true
    expect_fail 126 "setuid" -- ./suid_true
    printf '#!%s/tests/r3run/static_true\n' "$top_builddir" > static_script && chmod +x static_script
    expect_fail 126 "statically linked" -- ./static_script
else
    t_log "not root: setuid refusal not checked (cannot chown a file to another user)"
fi

# Options are validated before anything runs. A usage error is exit 2 with
# two lines (what is wrong, then where to look), like every r3 tool.
expect_fail 2 "not a size" -- --size 12Q true
expect_fail 2 "power of two" -- --chunk 3000 true
expect_fail 2 "unknown strategy 'nope'" -- --strategy nope true
expect_fail 2 "not a number" -- --pull-workers -3 true
expect_fail 2 "not a duration" -- --push-interval soon true
expect_fail 2 "needs a unit" -- --push-interval 500 true
expect_fail 2 "unknown option --frobnicate" -- --frobnicate true
expect_fail 2 "needs a value" -- --size
expect_fail 2 "no program" -- --stats
expect_fail 125 "cannot read the access log" -- --prefetch "$T_DIR/missing.log" true
expect_fail 2 "record-access" -- --prefetch hot true
rc=0; "$R3RUN" --frobnicate true 2>err || rc=$?
[ $rc -eq 2 ] && [ "$(wc -l < err)" -eq 2 ] && grep -q "^Try 'r3run --help' for more information.$" err ||
    t_fail "a usage error is not two lines + exit 2: exit $rc: $(cat err)"
# A read-only source: said plainly, and --copy-on-write keeps writes local.
head -c 4194304 /dev/zero > ro.img
cat > ro.py <<'PY'
b = bytearray(2 << 20)
b[:] = b"\x5a" * len(b)
print(sum(b[::4096]))
PY
expect_fail 125 "the source is read-only; use --copy-on-write to keep writes local" -- \
    --source "file://$T_DIR/ro.img?readonly=1" python3 ro.py
out=$(t_timeout 60 "$R3RUN" --copy-on-write --source "file://$T_DIR/ro.img?readonly=1" -- python3 ro.py) ||
    t_fail "--copy-on-write on a read-only source failed"
[ "$out" = "$((90 * 512))" ] || t_fail "--copy-on-write: the program read back $out"
cmp -s ro.img <(head -c 4194304 /dev/zero) || t_fail "--copy-on-write wrote to the source"
# A writable source stays untouched too.
head -c 4194304 /dev/zero > cow.img
t_timeout 60 "$R3RUN" --copy-on-write --source "file://$T_DIR/cow.img" -- python3 ro.py >/dev/null ||
    t_fail "--copy-on-write on a writable source failed"
cmp -s cow.img <(head -c 4194304 /dev/zero) || t_fail "--copy-on-write wrote to a writable source"
expect_fail 2 "cannot keep writes local" -- --copy-on-write --strategy filesync true
# No --source: no image in the current directory; the image is named in one
# line and gone after the program exits (--keep-image keeps it).
mkdir -p imgtmp
TMPDIR="$T_DIR/imgtmp" t_timeout 60 "$R3RUN" -- python3 ro.py > /dev/null 2> err || t_fail "default image: $(cat err)"
grep -q "^r3run: no --source: the region is backed by a sparse 4 GiB image $T_DIR/imgtmp/r3run-.*\.img, removed at exit$" err ||
    t_fail "default image line: $(cat err)"
[ -z "$(ls imgtmp)" ] || t_fail "the default image was left behind: $(ls imgtmp)"
[ ! -e r3run.img ] || t_fail "r3run.img in the current directory"
(cd /proc && TMPDIR="$T_DIR/imgtmp" t_timeout 60 "$R3RUN" -- true) 2> err || t_fail "r3run in /proc: $(cat err)"
TMPDIR="$T_DIR/imgtmp" t_timeout 60 "$R3RUN" --keep-image --size 64M -- python3 ro.py > /dev/null 2> err ||
    t_fail "--keep-image: $(cat err)"
img=$(ls imgtmp/r3run-*.img) || t_fail "--keep-image did not keep the image: $(cat err)"
python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); sys.exit(0 if d.count(b"\x5a"*4096) >= 512 else 1)' "$img" ||
    t_fail "the kept image lacks what the program wrote"
expect_fail 125 "cannot open the source" -- --source 'bogus://x' true
expect_fail 125 "cannot open the source" -- --source 'file:///no/such/dir/r3.img?size=1G' true
# A source smaller than --size.
head -c 1048576 /dev/zero > small.img
expect_fail 125 "less than --size" -- --source "file://$T_DIR/small.img" --size 64M true
# An unreachable server: nothing listens on this port. Every network scheme
# (all are built in: none may say "unknown scheme") gives a sentence naming
# the refused connection, quickly, and exit 125. S3 gets credentials so that
# it is the connection, not their absence, that fails.
port=$(t_free_port)
reached=0
for uri in "redis://127.0.0.1:$port/x?size=64M&chunk=64K" "r3://127.0.0.1:$port/x" \
           "nbd://127.0.0.1:$port/x" "s3://b/x?endpoint=http://127.0.0.1:$port&size=64M&chunk=64K"; do
    rc=0; t0=$(date +%s%N)
    AWS_ACCESS_KEY_ID=r3test AWS_SECRET_ACCESS_KEY=r3test t_timeout 60 "$R3RUN" --size 64M --source "$uri" -- true 2>err || rc=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    [ $rc -eq 125 ] || t_fail "unreachable $uri: exit $rc: $(cat err)"
    grep -q "^r3run: cannot open the source ${uri%%\?*}" err || t_fail "unreachable $uri: $(cat err)"
    grep -Eqi "127.0.0.1:$port.*(connection refused|cannot connect|couldn't connect)" err ||
        t_fail "unreachable $uri: the sentence does not say the connection was refused: $(cat err)"
    [ "$(wc -l < err)" -eq 1 ] || t_fail "unreachable $uri: more than one line: $(cat err)"
    [ "$ms" -lt 20000 ] || t_fail "unreachable $uri: took $ms ms"
    reached=$((reached + 1))
    t_log "unreachable source -> $rc in $ms ms: $(cat err)"
done
[ "$reached" -eq 4 ] || t_fail "only $reached of 4 network schemes refused an unreachable server"

# Options stop at the first non-option: --stats here belongs to the program.
out=$(t_timeout 60 "$R3RUN" echo --stats) || t_fail "echo under r3run failed"
[ "$out" = "--stats" ] || t_fail "options did not stop at the program: '$out'"
"$R3RUN" --help | grep -q -- "--record-access" || t_fail "--help lacks options"
"$R3RUN" --version | grep -q "^r3run (r3) " || t_fail "--version"
"$R3RUN" --probe > probe.out || t_fail "--probe failed"
grep -q "userfaultfd" probe.out && grep -q "uffd" probe.out || t_fail "--probe: $(cat probe.out)"

# The shim itself refuses a region it cannot open: same program, clear
# message, non-zero exit, no silent run on glibc. (The region opens at the
# first large allocation: the program must make one.)
# (env, not t_timeout, is the process that loads the shim first: the first
# process that loads it without R3_PID is the one that owns the region.)
rc=0
t_timeout 60 env R3_SOURCE="file://$T_DIR/small.img" R3_SIZE=64M \
    LD_PRELOAD="$top_builddir/.libs/libr3preload.so" python3 -c 'bytearray(1 << 20)' 2>err || rc=$?
[ $rc -eq 125 ] || t_fail "the shim ran on with a region it could not open (exit $rc)"
grep -q "cannot open the region" err || t_fail "shim message: $(cat err)"
t_log "shim on a too-small source -> $rc: $(cat err)"
rc=0
R3_SOURCE="file://$T_DIR/small.img" R3_CHUNK=5000 LD_PRELOAD="$top_builddir/.libs/libr3preload.so" \
    t_timeout 60 true 2>err || rc=$?
[ $rc -eq 125 ] && grep -q "R3_CHUNK" err || t_fail "shim accepted R3_CHUNK=5000 (exit $rc: $(cat err))"
t_log "ok"
