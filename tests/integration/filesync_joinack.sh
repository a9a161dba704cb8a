#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A receiver that joins while a round is relayed gets the round's END before
# its own catch-up: it must not acknowledge that round (the advertiser's
# "ack round=N receiver=ID" tells the writer the receiver holds the file as
# of round N), but say "round N incomplete (catching up)"; the next round
# it acknowledges, and its file then equals the source (cmp). Found while
# writing the r3sync path of tests/chaos/run.sh (a receiver restarted
# mid-round acknowledged the round before its catch-up had arrived; the
# chaos read-back comes too late to see it, the catch-up being quick).
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/integration/filesync_lib.sh"
fs_certs
W="$top_srcdir/tests/integration/filesync_writer.py"
mkdir -p "$T_DIR/src" "$T_DIR/r1"
head -c 64M /dev/urandom > "$T_DIR/src/data.bin"
PORT=$(t_free_port)
fs_hub "$PORT"
cd "$T_DIR/src"
t_bg "$R3SYNC" advertise data.bin --hub "127.0.0.1:$PORT" $(fs_client a) --interval 0 --no-progress \
    >"$T_DIR/adv.log" 2>"$T_DIR/adv.err"
ADV=$T_LAST_PID
t_bg "$R3SYNC" receive "$T_DIR/r1" --hub "127.0.0.1:$PORT" $(fs_client a) --no-progress \
    >"$T_DIR/r1.log" 2>"$T_DIR/r1.err"
fs_wait "$T_DIR/r1.log" "^synced data.bin" 1
fs_wait "$T_DIR/adv.err" "connected to" 1

# A big round (most blocks change), and a new, empty receiver started right
# after it: its hashes reach the advertiser while the round is being sent,
# so its catch-up follows the round's END. Up to 3 tries for that overlap
# (each try a new receiver); fail if none has it.
joined=""
for try in 1 2 3; do
    python3 "$W" data.bin "$try" 16000 65536 >/dev/null
    kill -USR1 "$ADV"
    mkdir -p "$T_DIR/j$try"
    t_bg "$R3SYNC" receive "$T_DIR/j$try" --hub "127.0.0.1:$PORT" $(fs_client a2) --no-progress \
        >"$T_DIR/j$try.log" 2>"$T_DIR/j$try.err"
    fs_wait "$T_DIR/adv.log" "^round $try:" 1
    fs_wait "$T_DIR/r1.log" "^round $try done" 1
    fs_wait "$T_DIR/j$try.log" "^synced data.bin" 1
    id=$(sed -n 's/^connected receiver=//p' "$T_DIR/j$try.log" | tail -1)
    [ -n "$id" ] || t_fail "receiver j$try printed no 'connected receiver=ID' line"
    # the round's END reached it before its catch-up ended: the case
    rl=$(grep -n -m1 "^round $try " "$T_DIR/j$try.log" | cut -d: -f1)
    sl=$(grep -n -m1 "^synced data.bin" "$T_DIR/j$try.log" | cut -d: -f1)
    if [ -n "$rl" ] && [ "$rl" -lt "$sl" ]; then
        joined=$try
        break
    fi
    t_log "try $try: receiver j$try's catch-up did not overlap round $try's END; again"
done
[ -n "$joined" ] || t_fail "in 3 tries no receiver got a round's END before its catch-up ended"
J="$T_DIR/j$joined"
t_log "receiver j$joined (id $id) joined inside round $joined: $(grep "^round $joined " "$J.log")"
# its END came before its catch-up: no acknowledgement of that round
grep -q "^round $joined incomplete (catching up)" "$J.log" ||
    t_fail "j$joined acknowledged round $joined before its catch-up: $(grep -E "^(round $joined |synced)" "$J.log" | tr '\n' '|')"
grep -q "^ack round=$joined receiver=$id\$" "$T_DIR/adv.log" &&
    t_fail "the advertiser got an ack of round $joined from j$joined"
# the next round it acknowledges, holding the whole file
r=$((joined + 1))
python3 "$W" data.bin 99 50 65536 >/dev/null
kill -USR1 "$ADV"
fs_wait "$T_DIR/adv.log" "^ack round=$r receiver=$id\$" 1
cmp data.bin "$J/data.bin" || t_fail "j$joined acknowledged round $r without holding the file"
fs_finish
