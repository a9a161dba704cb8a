#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Remote sources facing servers that are not there or never answer: one clear
# sentence from r3_last_error() within the timeout, no hang, no crash.
source "$top_srcdir/tests/integration/lib.sh"
SC="$top_builddir/tests/r3check"
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
DEAD=$(t_free_port)          # nothing listens here

# A listener that accepts TCP connections but never reads or answers.
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True); time.sleep(120)' > "$T_DIR/mute.port" &
T_PIDS="$T_PIDS $!"
for i in $(seq 100); do [ -s "$T_DIR/mute.port" ] && break; sleep 0.05; done
MUTE=$(cat "$T_DIR/mute.port")
[ -n "$MUTE" ] || t_fail "mute listener did not start"

t_log "unreachable hosts"
"$SC" -w 3000 fail "redis://127.0.0.1:$DEAD/x?size=1M" "connection refused" || t_fail "redis refused"
"$SC" -w 3000 fail "redis://127.0.0.1:$DEAD/x?size=1M&cluster=1" "connection refused" || t_fail "cluster refused"
"$SC" -w 4000 fail "s3://bk/x?endpoint=http://127.0.0.1:$DEAD&size=1M" "failed to connect" || t_fail "s3 refused"

t_log "servers that never answer: the timeout= bounds the wait"
"$SC" -w 3000 fail "redis://127.0.0.1:$MUTE/x?size=1M&timeout=800ms" "no answer within 800 ms" || t_fail "redis mute"
"$SC" -w 3000 fail "redis://127.0.0.1:$MUTE/x?size=1M&timeout=800ms&cluster=1" "no answer within 800 ms" || t_fail "cluster mute"
"$SC" -w 4000 fail "s3://bk/x?endpoint=http://127.0.0.1:$MUTE&size=1M&timeout=1000ms" "no answer within 1000 ms" || t_fail "s3 mute"

t_log "bad URIs"
"$SC" fail "redis://127.0.0.1:$DEAD/x?size=1M&chunk=1000" "power of two" || t_fail "bad chunk"
"$SC" fail "redis://127.0.0.1:$DEAD/x?size=1M&conns=0" "conns" || t_fail "bad conns"
"$SC" fail "redis:///x?size=1M" "needs a host" || t_fail "no host"
"$SC" fail "s3://bk/x?endpoint=ftp://h&size=1M" "not an http" || t_fail "bad endpoint"
"$SC" fail "s3:///x?size=1M" "needs a bucket" || t_fail "no bucket"
"$SC" fail "s3://bk/a%20b?size=1M" "only letters" || t_fail "bad prefix"
"$SC" fail "redis://127.0.0.1:$DEAD/x?size=1M&timeout=800" "needs a unit" || t_fail "redis bare timeout"
"$SC" fail "redis://127.0.0.1:$DEAD/x?size=1M&connect_timeout=0ms" "connect_timeout=0ms is not between" || t_fail "redis zero connect_timeout"
"$SC" fail "s3://bk/x?endpoint=http://127.0.0.1:$DEAD&size=1M&connect_timeout=5" "needs a unit" || t_fail "s3 bare connect_timeout"
"$SC" fail "s3://bk/x?endpoint=http://127.0.0.1:$DEAD&size=1M&timeout=2h" "unknown unit" || t_fail "s3 bad unit"
exit 0
