#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Programs that die under nbd-direct / nbd-managed (issue 11): a program
# ended by SIGKILL, SIGTERM or a segfault dies of its signal (no zombie, no
# thread left in D state), the mount helper notices and unmounts, and
# nothing is left (no FUSE mount in /proc/self/mountinfo, no scratch
# directory). A killed mount helper leaves no stale mount either.
# `pkill -f` of the program's command line ends the program alone (the
# helper is r3-nbd-helper, not a fork of the program) and its SIGTERM sync
# writes the image; with --push-interval, nbd-managed gets the program's
# writes to the image within a few intervals (a later SIGKILL loses none).
source "$top_srcdir/tests/integration/lib.sh"
t_need python3
[ -w /dev/fuse ] || t_skip "no /dev/fuse"
R3RUN="$top_builddir/r3run"
cd "$T_DIR"
# The program notes the file its region maps (SCRATCH/mnt/region): that
# mount and SCRATCH must be gone after it.
NOTE='
m = [l.split()[-1] for l in open("/proc/self/maps") if "/r3nbd." in l and l.rstrip().endswith("/region")]
open("mapped", "w").write(m[0] if m else "none")
'
left_behind() {
    local f mnt scratch
    f=$(cat mapped)
    mnt=${f%/region} scratch=${f%/mnt/region}
    awk -v m="$mnt" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo && { echo "mount $mnt"; return 0; }
    [ -e "$scratch" ] && { echo "scratch $scratch: $(ls -R "$scratch" 2>&1)"; return 0; }
    return 1
}
# Mounts and helpers go away shortly after the program: wait up to 10 s.
settle() {
    for _ in $(seq 100); do left_behind >/dev/null || return 0; sleep 0.1; done
    return 1
}

# The mount helper of the region the program maps (its guard holds no /dev/fuse).
find_helper() {
    local f mnt p
    f=$(cat mapped)
    mnt=${f%/region}
    for p in $(pgrep -f -- "--mountpoint=$mnt"); do
        ls -l /proc/$p/fd 2>/dev/null | grep -q /dev/fuse && { echo "$p"; return 0; }
    done
}

# How many 4 KiB pages of the image (a plain file) are all 0x5a.
count_pages() {
    python3 - "$1" <<'PY'
import sys
page = b"\x5a" * 4096
n = 0
with open(sys.argv[1], "rb") as f:
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        n += sum(b[i:i + 4096] == page for i in range(0, len(b), 4096))
print(n)
PY
}

for s in nbd-direct nbd-managed; do
    for m in kill:137 term:143 segv:139; do
        mode=${m%%:*} want=${m#*:}
        rc=0
        rm -f mapped
        t_timeout 60 "$R3RUN" --strategy "$s" --source "file://$T_DIR/$s.img?size=256M" -- python3 -c '
import ctypes, os, signal, sys
b = bytearray(64 << 20)
b[:] = b"\x5a" * len(b)
'"$NOTE"'
mode = sys.argv[1]
if mode == "segv":
    ctypes.string_at(0)
os.kill(os.getpid(), signal.SIGKILL if mode == "kill" else signal.SIGTERM)
print("not killed")' "$mode" > out 2> err || rc=$?
        grep -q /r3nbd. mapped || t_fail "$s $mode: the program did not map a mount: $(cat mapped err)"
        [ "$rc" -eq "$want" ] || t_fail "$s $mode: exit $rc, expected $want (124/137 after 60 s = a hang): $(cat err)"
        grep -q "not killed" out && t_fail "$s $mode: the signal did not end the program"
        settle || t_fail "$s $mode: left behind: $(left_behind)"
        t_log "$s $mode: exit $rc, nothing left behind"
    done

    # The mount helper killed while the program runs: the program's next
    # touch of the region fails (it is not served any more), and no mount
    # or scratch directory stays.
    rc=0
    t_bg t_timeout 60 "$R3RUN" --strategy "$s" --source "file://$T_DIR/$s.img?size=256M" -- python3 -c '
import time
b = bytearray(64 << 20)
'"$NOTE"'
open("ready", "w").close() # '$T_DIR'
time.sleep(30)' 2> err
    prog=$T_LAST_PID
    for _ in $(seq 300); do [ -e ready ] && break; sleep 0.1; done
    [ -e ready ] || t_fail "$s: the program did not start: $(cat err)"
    left_behind > /dev/null || t_fail "$s: no mount while the program runs: $(cat mapped err)"
    # The helper: r3-nbd-helper, the process holding /dev/fuse whose
    # command line names the mount point.
    helper=$(find_helper)
    [ -n "$helper" ] || t_fail "$s: cannot find the mount helper"
    owner=$(tr '\0' '\n' < /proc/$helper/cmdline | sed -n 's/^--owner=//p')
    kill -9 "$helper"
    settle || t_fail "$s: killed helper: left behind: $(left_behind)"
    kill "$owner" 2>/dev/null || true      # the program ($prog is its timeout's shell)
    wait "$prog" 2>/dev/null || true
    # its final sync fails, and says why in one sentence
    grep -q "the mount helper (r3-nbd-helper) was killed by signal 9" err ||
        t_fail "$s: killed helper: the program's stderr does not say so: $(cat err)"
    rm -f ready
    settle || t_fail "$s: killed helper, then the program: left behind: $(left_behind)"
    t_log "$s: mount helper killed: nothing left behind"

    # `pkill -f` on the program's command line reaches the program only: the
    # helper is its own program (r3-nbd-helper), not a fork carrying the
    # program's argv. SIGTERM's final sync then writes every page the program
    # wrote, read back from the image as a plain file.
    rm -f "$T_DIR/$s.img" mapped
    cat > "$T_DIR/pk_$s.py" <<'PY'
import time
b = bytearray(64 << 20)
b[:] = b"\x5a" * len(b)
PY
    echo "$NOTE" >> "$T_DIR/pk_$s.py"
    cat >> "$T_DIR/pk_$s.py" <<'PY'
open("ready", "w").close()
time.sleep(30)
PY
    t_bg t_timeout 60 "$R3RUN" --strategy "$s" --source "file://$T_DIR/$s.img?size=256M" -- python3 "$T_DIR/pk_$s.py" 2> err
    prog=$T_LAST_PID
    for _ in $(seq 300); do [ -e ready ] && break; sleep 0.1; done
    [ -e ready ] || t_fail "$s pkill: the program did not start: $(cat err)"
    helper=$(find_helper)
    [ -n "$helper" ] || t_fail "$s pkill: cannot find the mount helper"
    tr '\0' ' ' < /proc/$helper/cmdline | grep -q "r3-nbd-helper" ||
        t_fail "$s pkill: the helper is not r3-nbd-helper: $(tr '\0' ' ' < /proc/$helper/cmdline)"
    pkill -TERM -f "^[^ ]*python3 $T_DIR/pk_$s.py" || t_fail "$s pkill: pkill found no program"
    rc=0
    wait "$prog" || rc=$?
    rm -f ready
    [ "$rc" -eq 143 ] || t_fail "$s pkill: exit $rc, expected 143: $(cat err)"
    settle || t_fail "$s pkill: left behind: $(left_behind)"
    pages=$(count_pages "$T_DIR/$s.img")
    [ "$pages" -ge 16384 ] || t_fail "$s pkill: $pages of 16384 written pages are in the image: $(cat err)"
    t_log "$s: pkill -f of the program: exit 143, $pages pages in the image"

    # nbd-managed with --push-interval: what the program wrote through the
    # mapping reaches the image within a few intervals, so a SIGKILL
    # 2 s later loses none of it (the kernel alone would write the pages
    # back after 30 s).
    [ "$s" = nbd-managed ] || continue
    rm -f "$T_DIR/$s.img" mapped
    t_bg t_timeout 60 "$R3RUN" --strategy "$s" --push-interval 200ms \
        --source "file://$T_DIR/$s.img?size=256M" -- python3 "$T_DIR/pk_$s.py" 2> err
    prog=$T_LAST_PID
    for _ in $(seq 300); do [ -e ready ] && break; sleep 0.1; done
    [ -e ready ] || t_fail "$s kill -9: the program did not start: $(cat err)"
    sleep "$(t_slow 2)"
    pkill -KILL -f "^[^ ]*python3 $T_DIR/pk_$s.py" || t_fail "$s kill -9: pkill found no program"
    wait "$prog" || true
    rm -f ready
    settle || t_fail "$s kill -9: left behind: $(left_behind)"
    pages=$(count_pages "$T_DIR/$s.img")
    [ "$pages" -ge 16384 ] || t_fail "$s kill -9 after 10 push intervals: $pages of 16384 written pages are in the image"
    t_log "$s: SIGKILL 2 s after the writes with --push-interval 200ms: $pages pages in the image"
done
t_log PASS
