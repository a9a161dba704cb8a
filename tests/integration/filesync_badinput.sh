#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Bad input: truncated and oversized frames, garbage, file names with "..",
# an absolute path or a NUL byte, messages a role may not send, and a
# receiver whose disk is full: the hub and the other peers keep working, no
# file is written outside a receiver's directory, and a file that did not fit
# is never reported complete.
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/integration/filesync_lib.sh"
fs_certs
C="$T_DIR/c"
mkdir -p "$T_DIR/w/src" "$T_DIR/w/r1"
head -c 4M /dev/urandom > "$T_DIR/w/src/data.bin"
PORT=$(t_free_port)
fs_hub "$PORT"
cd "$T_DIR/w/src"
t_bg "$R3SYNC" advertise data.bin --hub "127.0.0.1:$PORT" $(fs_client a) --interval 0 >"$T_DIR/adv.log" 2>&1
ADV=$T_LAST_PID
t_bg "$R3SYNC" receive "$T_DIR/w/r1" --hub "127.0.0.1:$PORT" $(fs_client a2) >"$T_DIR/r1.log" 2>&1
fs_wait "$T_DIR/r1.log" "^synced data.bin" 1

# bad WANT ROLE SEND...: an independent client sends bad input as syncA; what
# it saw (bad.out) must match the extended regex WANT ("-" = no ERR reply and
# the hub did not close on it). Every case is asserted, not only logged.
bad() {
    local want=$1 role=$2; shift 2
    local args=()
    for s in "$@"; do args+=(--send "$s"); done
    python3 "$FS_CLIENT" "127.0.0.1:$PORT" "$C/ca.pem" --cert "$C/a.pem" --key "$C/a.key" \
        --role "$role" --send hello "${args[@]}" --read 1 >"$T_DIR/bad.out" 2>&1
    grep -q "^msg HELLO r3sync 1 ok" "$T_DIR/bad.out" || { cat "$T_DIR/bad.out" >&2; t_fail "$role $*: no HELLO"; }
    if [ "$want" = - ]; then
        grep -Eq "^msg ERR|^closed eof" "$T_DIR/bad.out" && { cat "$T_DIR/bad.out" >&2; t_fail "$role $*: refused, expected to be ignored"; }
    else
        grep -Eq "^msg ERR .*$want" "$T_DIR/bad.out" || { cat "$T_DIR/bad.out" >&2; t_fail "$role $*: no ERR matching '$want'"; }
        grep -q "^closed eof" "$T_DIR/bad.out" || { cat "$T_DIR/bad.out" >&2; t_fail "$role $*: the hub did not close after refusing"; }
    fi
    grep -q "^msg FILE .* ok.bin\|^msg FILE .*escape\|^msg FILE .*recv-may-not" "$T_DIR/bad.out" &&
        { cat "$T_DIR/bad.out" >&2; t_fail "$role $*: a refused file was announced"; }
    t_log "$role $*: $(grep -E '^msg ERR|^closed' "$T_DIR/bad.out" | tr '\n' ' ')"
}
bad "frame of 2147483647 bytes refused" adv oversize
bad - adv truncated                                    # the hub waits for the rest; the client leaves
bad "malformed frame" recv garbage
bad "'\.\./escape.bin' refused" adv "file:../escape.bin:4096"
bad "absolute file name '/tmp/abs-r3sync-escape.bin' refused" adv "file:/tmp/abs-r3sync-escape.bin:4096"
bad "'a/\.\./\.\./escape.bin' refused" adv "file:a/../../escape.bin:4096"
bad "NUL byte refused" adv "filehex:$(printf 'nul' | od -An -tx1 | tr -d ' \n')0078:4096"   # "nul\0x"
bad "block 5 of 65536 bytes does not fit" adv "file:ok.bin:4096" "blk:7777:5:65536"   # a block past the end
bad - adv "blk:1234:0:65536"                           # a file that does not exist: dropped
bad "message type 2 not allowed for a receiver" recv "file:recv-may-not.bin:4096"   # receivers may not advertise
H="$T_DIR/hub.log"
grep -q "frame of 2147483647 bytes refused" "$H" || t_fail "oversized frame not logged"
grep -q "absolute file name" "$H" || t_fail "absolute name not logged"
grep -q "'..' component" "$H" || t_fail "'..' not logged"
grep -q "NUL byte" "$H" || t_fail "a name with a NUL byte not logged"
grep -q "message for unknown file 1234 dropped" "$H" || t_fail "the block for an unknown file was not logged as dropped"
grep -q "malformed frame" "$H" || t_fail "garbage not logged"

# the hub and the good peers still work
python3 "$top_srcdir/tests/integration/filesync_writer.py" data.bin 3 20 65536 >/dev/null
kill -USR1 "$ADV"
fs_wait "$T_DIR/r1.log" "^round 1 done" 1
cmp data.bin "$T_DIR/w/r1/data.bin" || t_fail "receiver differs after bad input"
[ ! -e "$T_DIR/escape.bin" ] && [ ! -e "$T_DIR/w/escape.bin" ] && [ ! -e /tmp/abs-r3sync-escape.bin ] ||
    t_fail "a file was written outside the receiver's directory"
ls "$T_DIR/w/r1" | grep -qv '^\(data.bin\|ok.bin\)$' && t_fail "unexpected files: $(ls "$T_DIR/w/r1")"

# a receiver whose disk is full (tmpfs of 2 MiB; needs root for mount)
mkdir -p "$T_DIR/full"
if mount -t tmpfs -o size=2m tmpfs "$T_DIR/full" 2>/dev/null; then
    T_PIDS="$T_PIDS"
    t_bg "$R3SYNC" receive "$T_DIR/full" --hub "127.0.0.1:$PORT" $(fs_client a) >"$T_DIR/full.log" 2>"$T_DIR/full.err"
    FULL=$T_LAST_PID
    fs_wait "$T_DIR/full.log" "^error data.bin" 1
    grep -q "No space left" "$T_DIR/full.err" || t_fail "no clear disk-full error"
    grep -q "^synced data.bin" "$T_DIR/full.log" && t_fail "a file that did not fit was reported complete"
    python3 "$top_srcdir/tests/integration/filesync_writer.py" data.bin 4 20 65536 >/dev/null
    kill -USR1 "$ADV"
    fs_wait "$T_DIR/r1.log" "^round 2 done" 1
    fs_wait "$T_DIR/full.log" "^round 2 incomplete" 1
    grep -q "^round 2 done" "$T_DIR/full.log" && t_fail "full receiver reported a round complete"
    cmp data.bin "$T_DIR/w/r1/data.bin" || t_fail "the good receiver suffered from the full one"
    kill "$FULL"; wait "$FULL" 2>/dev/null
    umount "$T_DIR/full"
else
    t_log "not root: disk-full case not run"
fi
kill -0 "$HUB_PID" || t_fail "the hub died"
fs_finish
