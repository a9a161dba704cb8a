#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# s3:// against a real s3rver (npm): 64 MiB in unaligned pieces from 4
# threads (partial chunks = read-modify-write), flush, close, reopen without
# size, compare; cross-check objects with curl (its own SigV4) and in the
# s3rver directory; bad credentials, missing bucket, a dead server.
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/integration/sources_lib.sh"
t_need curl
t_need s3rver
SC="$top_builddir/tests/r3check"
P=$(t_free_port)
start_s3() {
    # s3rver_atomic.js: s3rver answers a PUT before its file is written (see there)
    NODE_OPTIONS="--require $top_srcdir/tests/integration/s3rver_atomic.js" \
        t_bg s3rver -d "$T_DIR/s3" -a 127.0.0.1 -p "$P" -s --configure-bucket bk
    S3_PID=$T_LAST_PID
    t_wait_port "$P"
}
mkdir -p "$T_DIR/s3"
start_s3
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
E="endpoint=http://127.0.0.1:$P"
U="s3://bk/vm/a?$E"
EMPTY=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
get() { curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user S3RVER:S3RVER -H "x-amz-content-sha256: $EMPTY" \
    "http://127.0.0.1:$P/bk/$1"; }

t_log "write 64 MiB (64 KiB chunks), verify after reopening without size"
t_timeout 60 "$SC" -s 31 write "$U&size=64M&chunk=64K" || t_fail "write"
t_timeout 60 "$SC" -s 31 -t 3 -p 250000 verify "$U" || t_fail "verify"
[ "$(get vm/a/r3.meta)" = "r3 67108864 65536" ] || t_fail "meta object"

t_log "cross-check with curl and the s3rver directory"
get vm/a/3 | cmp - <("$SC" -s 31 gen $((3 * 65536)) 65536) || t_fail "curl GET vm/a/3"
get vm/a/1023 | cmp - <("$SC" -s 31 gen $((1023 * 65536)) 65536) || t_fail "curl GET vm/a/1023"
cmp "$T_DIR/s3/bk/vm/a/600._S3rver_object" <("$SC" -s 31 gen $((600 * 65536)) 65536) || t_fail "s3rver file 600"
n=$(ls "$T_DIR/s3/bk/vm/a/" | grep -c '^[0-9]*\._S3rver_object$')
[ "$n" = 1024 ] || t_fail "expected 1024 chunk objects, found $n"

t_log "1 MiB chunks, ranged reads; a missing object reads as zeros"
t_timeout 60 "$SC" -s 32 -p 3000000 write "s3://bk/vm/b?$E&size=16M&chunk=1M" || t_fail "write 1M"
t_timeout 60 "$SC" -s 32 -t 6 -p 100000 -n 2 loop "s3://bk/vm/b?$E" || t_fail "loop 1M"
rm -f "$T_DIR/s3/bk/vm/b/5._S3rver_"*
"$SC" read "s3://bk/vm/b?$E" $((5 << 20)) $((1 << 20)) | cmp - <(head -c $((1 << 20)) /dev/zero) \
    || t_fail "a missing object does not read as zeros"

t_log "SigV4 checked like AWS does (s3rver does not): through sigv4proxy.py"
python3 "$top_srcdir/tests/integration/sigv4proxy.py" 0 "$P" S3RVER S3RVER us-east-1 \
    > "$T_DIR/proxy.port" 2> "$T_DIR/proxy.log" &
T_PIDS="$T_PIDS $!"
for i in $(seq 100); do [ -s "$T_DIR/proxy.port" ] && break; sleep 0.05; done
V="s3://bk/vm/sig?endpoint=http://127.0.0.1:$(cat "$T_DIR/proxy.port")"
t_timeout 60 "$SC" -s 33 write "$V&size=4M&chunk=64K" || { cat "$T_DIR/proxy.log" >&2; t_fail "signed write"; }
t_timeout 60 "$SC" -s 33 -p 100000 verify "$V" || { cat "$T_DIR/proxy.log" >&2; t_fail "signed verify"; }
AWS_SECRET_ACCESS_KEY=wrong "$SC" fail "$V" "access denied" || t_fail "wrong secret accepted"
AWS_SESSION_TOKEN=tok3n t_timeout 60 "$SC" -s 33 -p 100000 verify "$V" || t_fail "signed verify with a session token"
grep -q "x-amz-security-token is not signed" "$T_DIR/proxy.log" && t_fail "session token not signed"
grep -q SignatureDoesNotMatch "$T_DIR/proxy.log" || t_fail "the proxy did not see the bad signature"
[ "$(grep -c . "$T_DIR/proxy.log")" = 1 ] || { cat "$T_DIR/proxy.log" >&2; t_fail "the proxy refused good requests"; }

t_log "bad inputs: one sentence each, nothing written"
"$SC" fail "s3://nobucket/x?$E&size=1M" "does not exist" || t_fail "missing bucket"
[ ! -e "$T_DIR/s3/nobucket" ] || t_fail "a bucket was created"
AWS_ACCESS_KEY_ID=NOBODY "$SC" fail "s3://bk/bad?$E&size=1M" "access denied" || t_fail "wrong key id"
env -u AWS_ACCESS_KEY_ID "$SC" fail "s3://bk/bad?$E&size=1M" "AWS_ACCESS_KEY_ID" || t_fail "no credentials"
"$SC" fail "s3://bk/fresh?$E" "needs a size" || t_fail "no size"
"$SC" fail "$U&size=1M" "holds 67108864 bytes" || t_fail "size mismatch"
[ ! -e "$T_DIR/s3/bk/bad" ] && [ ! -e "$T_DIR/s3/bk/fresh" ] || t_fail "a bad open wrote objects"

t_log "dead server: an error within the timeout, not a hang; restart: data intact"
kill -9 "$S3_PID"; wait "$S3_PID" 2>/dev/null
"$SC" -w 8000 fail "$U&timeout=1000ms" "failed to connect" || t_fail "dead server"
start_s3
t_timeout 60 "$SC" -s 31 verify "$U" || t_fail "verify after restart"
t_log "through a uffd region"
region_step 31 35 "$U"
exit 0
