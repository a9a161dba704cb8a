#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# s3:// retries, against a real s3rver behind s3_retry_proxy.py, which fails
# every chunk request N times before forwarding it:
#  - 500, 503, 429, 408 and a reset connection, twice per request: the data
#    is written and read back, checked in s3rver's own object files, and the
#    proxy saw exactly two failures then one success for every chunk request;
#  - a failure that does not end (503, reset): an error naming the status (or
#    the connection) and the 6 tries, within the backoff bound;
#  - 400 is not retried: one try, the error names it.
source "$top_srcdir/tests/integration/lib.sh"
t_need s3rver
t_need python3
SC="$top_builddir/tests/r3check"
P=$(t_free_port)
mkdir -p "$T_DIR/s3"
t_bg s3rver -d "$T_DIR/s3" -a 127.0.0.1 -p "$P" -s --configure-bucket bk
t_wait_port "$P"
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
CHUNKS=4

proxy() {                        # proxy NAME HOW N: start one, PROXY_PORT and PROXY_LOG set
    PROXY_LOG="$T_DIR/$1.log"
    python3 "$top_srcdir/tests/integration/s3_retry_proxy.py" "$P" "$2" "$3" \
        > "$T_DIR/$1.port" 2> "$PROXY_LOG" &
    PROXY_PID=$!
    T_PIDS="$T_PIDS $PROXY_PID"
    local i
    for i in $(seq 100); do [ -s "$T_DIR/$1.port" ] && break; sleep 0.05; done
    PROXY_PORT=$(cat "$T_DIR/$1.port")
    [ -n "$PROXY_PORT" ] || t_fail "$1: the proxy did not start"
}
stop_proxy() { kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; }

# every_twice LOG METHOD: each METHOD chunk request failed exactly twice, then was forwarded once
# (answered 2xx, or 404 for an object not written yet); at least one such request was seen.
every_twice() {
    awk -v m="$2" '$1 == m && $2 ~ /\/[0-9]+$/ { k = $2; if ($3 == "failed") f[k]++; else { s[k]++; if (f[k] != 2 || ($4 >= 300 && $4 != 404)) bad = bad " " k "(" f[k] "," $4 ")" } }
        END { n = 0; for (k in f) { n++; if (f[k] != 2 || !(k in s)) bad = bad " " k "(" f[k] ",none)" }
              if (n == 0) { print "no " m " chunk request failed"; exit 1 }
              if (bad != "") { print m ": not two failures then one success:" bad; exit 1 } }' "$1"
}

for how in 500 503 429 408 reset; do
    t_log "$how twice per chunk request: write, read back"
    proxy "$how" "$how" 2
    U="s3://bk/r$how?endpoint=http://127.0.0.1:$PROXY_PORT&timeout=5s"
    t_timeout 60 "$SC" -s 7 -t 2 -p 65536 write "$U&size=$((CHUNKS * 65536))&chunk=64K" 2> "$T_DIR/w.err" \
        || t_fail "$how: write through retries: $(cat "$T_DIR/w.err")"
    t_timeout 60 "$SC" -s 7 -t 2 -p 65536 verify "$U" 2> "$T_DIR/v.err" \
        || t_fail "$how: read back through retries: $(cat "$T_DIR/v.err")"
    stop_proxy
    why=$(every_twice "$PROXY_LOG" PUT) || t_fail "$how: $why"
    why=$(every_twice "$PROXY_LOG" GET) || t_fail "$how: $why"
    for i in $(seq 0 $((CHUNKS - 1))); do    # s3rver's own files: a different path than r3's reads
        cmp -s "$T_DIR/s3/bk/r$how/$i._S3rver_object" <("$SC" -s 7 gen $((i * 65536)) 65536) \
            || t_fail "$how: chunk $i in s3rver's directory is not what was written"
    done
    t_log "$how: $(grep -c failed "$PROXY_LOG") failures, $(grep -c forwarded "$PROXY_LOG") forwarded"
done

# A failure that does not end: fails within the backoff (6 tries, ~3.1 s of sleeps).
permanent() {                    # permanent HOW MIN_TRIES MAX_TRIES WORDS LIMIT_S
    proxy "perm$1" "$1" 1000
    local U="s3://bk/r500?endpoint=http://127.0.0.1:$PROXY_PORT&timeout=5s"
    local t0 t1 rc=0
    t0=$(date +%s%N)
    t_timeout 30 "$SC" read "$U" 65536 65536 > /dev/null 2> "$T_DIR/p.err" || rc=$?
    t1=$(date +%s%N)
    stop_proxy
    local ms=$(((t1 - t0) / 1000000)) tries
    tries=$(grep -c "^GET .*/1 failed" "$PROXY_LOG")
    t_log "$1 for ever: exit $rc in $ms ms after $tries tries: $(head -1 "$T_DIR/p.err")"
    [ "$rc" = 1 ] || t_fail "$1 for ever: exit $rc, not 1: $(cat "$T_DIR/p.err")"
    grep -q -- "$4" "$T_DIR/p.err" || t_fail "$1 for ever: no sentence with '$4': $(cat "$T_DIR/p.err")"
    [ "$tries" -ge "$2" ] && [ "$tries" -le "$3" ] || t_fail "$1 for ever: $tries tries, not $2-$3"
    [ "$ms" -le "$(($5 * 1000))" ] || t_fail "$1 for ever: took $ms ms (limit $5 s)"
    [ "$(wc -l < "$T_DIR/p.err")" = 1 ] || t_fail "$1 for ever: more than one line: $(cat "$T_DIR/p.err")"
}
permanent 503   6 6 "HTTP 503 Injected503: proxy failure after 6 tries" 8
# libcurl itself reopens, once, a kept-alive connection that dies unanswered
permanent reset 6 7 "(6 tries)" 8
permanent 400   1 1 "HTTP 400 Injected400: proxy failure" 3
exit 0
