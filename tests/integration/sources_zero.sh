#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Zeros move as no data: a sparse dir://, redis:// and s3:// source (8 MiB,
# 64 KiB chunks, 6 chunks written straight into the store: chunk files,
# redis-cli SET, curl PUT; one of them all zeros) read through chunk + cache
# (+ pull). The bytes equal the image built here; the cache holds the 122
# missing chunks as zero without reading them (the remote gave 6 chunks'
# bytes, nothing else) and its extent op says so; with 128 KiB pipeline
# chunks two source chunks make one, zero only if both are.
source "$top_srcdir/tests/integration/lib.sh"
SC="$top_builddir/tests/r3check"
ZR="$top_builddir/tests/zeroread"
CH=65536
DATA="0 3 4 50 77 127"           # chunk 50 holds zeros but exists: data
piece() {                          # the bytes of chunk $1 as written
    if [ "$1" = 50 ]; then head -c $CH /dev/zero; else "$SC" -s 41 gen $(($1 * CH)) $CH; fi
}
for i in $(seq 0 127); do
    case " $DATA " in *" $i "*) piece "$i" ;; *) head -c $CH /dev/zero ;; esac
done > "$T_DIR/want"

# check NAME URI CHUNK WORKERS ZERO DATA REMOTE_BYTES
check() {
    local name=$1 uri=$2 chunk=$3 w=$4
    t_log "$name: chunk $chunk, $w pull workers"
    t_timeout 60 "$ZR" "$uri" "$chunk" "$w" > "$T_DIR/got" 2> "$T_DIR/zr.err" \
        || { cat "$T_DIR/zr.err" >&2; t_fail "$name: zeroread failed"; }
    cmp "$T_DIR/got" "$T_DIR/want" || t_fail "$name: the bytes differ from what was written"
    local want="zero=$5 data=$6 remote_bytes=$7 extent_zero_bytes=$(($5 * $(numfmt --from=iec "$chunk")))"
    grep -qx "$want" "$T_DIR/zr.err" || t_fail "$name: expected '$want', got '$(cat "$T_DIR/zr.err")'"
}
all() {                            # the four shapes over one source
    check "$1" "$2" 64K 4 122 6 $((6 * CH))
    check "$1" "$2" 64K 0 122 6 $((6 * CH))
    check "$1" "$2" 128K 4 58 6 $((12 * CH))
    check "$1" "$2" 128K 0 58 6 $((12 * CH))
}

t_log "dir: chunk files written with the shell"
D="$T_DIR/dir"
"$SC" size "dir://$D?size=8M&chunk=64K" >/dev/null || t_fail "dir create"
for i in $DATA; do piece "$i" > "$D/$i"; done
: > "$D/60"                        # an empty chunk file: zeros too
all dir "dir://$D"

if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    t_log "redis: keys SET with redis-cli"
    P=$(t_free_port)
    t_bg redis-server --port "$P" --bind 127.0.0.1 --save '' --appendonly no --dir "$T_DIR" \
        --logfile "$T_DIR/redis.log"
    t_wait_port "$P"
    for t in $(seq 50); do [ "$(redis-cli -p "$P" PING 2>/dev/null)" = PONG ] && break; sleep 0.1; done
    "$SC" size "redis://127.0.0.1:$P/z?size=8M&chunk=64K" >/dev/null || t_fail "redis create"
    for i in $DATA; do piece "$i" | redis-cli -p "$P" -x SET "z:$i" >/dev/null || t_fail "SET z:$i"; done
    [ "$(redis-cli -p "$P" STRLEN z:3)" = $CH ] || t_fail "redis-cli SET did not store the chunk"
    all redis "redis://127.0.0.1:$P/z"
else
    t_log "redis-server not installed: redis part not run"
fi

if command -v s3rver >/dev/null && command -v curl >/dev/null; then
    t_log "s3: objects PUT with curl"
    P=$(t_free_port)
    mkdir -p "$T_DIR/s3"
    # s3rver_atomic.js: s3rver answers a PUT before its file is written (see there)
    NODE_OPTIONS="--require $top_srcdir/tests/integration/s3rver_atomic.js" \
        t_bg s3rver -d "$T_DIR/s3" -a 127.0.0.1 -p "$P" -s --configure-bucket bk
    t_wait_port "$P"
    export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
    U="s3://bk/z?endpoint=http://127.0.0.1:$P"
    "$SC" size "$U&size=8M&chunk=64K" >/dev/null || t_fail "s3 create"
    for i in $DATA; do
        piece "$i" > "$T_DIR/obj"
        curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user S3RVER:S3RVER -T "$T_DIR/obj" \
            -H "x-amz-content-sha256: $(sha256sum < "$T_DIR/obj" | cut -d' ' -f1)" \
            "http://127.0.0.1:$P/bk/z/$i" || t_fail "curl PUT z/$i"
    done
    all s3 "$U"
else
    t_log "s3rver not installed: s3 part not run"
fi
exit 0
