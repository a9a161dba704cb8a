#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Programs that die under nbd-direct / nbd-managed (issue 11): a program
# ended by SIGKILL, SIGTERM or a segfault dies of its signal (no zombie, no
# thread left in D state), the mount helper notices and unmounts, and
# nothing is left (no FUSE mount in /proc/self/mountinfo, no scratch
# directory). A killed mount helper leaves no stale mount either.
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
    # The helper: a fork of the program (same command line) holding /dev/fuse.
    helper=""
    for p in $(pgrep -f "$T_DIR"); do
        ls -l /proc/$p/fd 2>/dev/null | grep -q /dev/fuse && helper=$p
    done
    [ -n "$helper" ] || t_fail "$s: cannot find the mount helper"
    kill -9 "$helper"
    settle || t_fail "$s: killed helper: left behind: $(left_behind)"
    kill "$prog" 2>/dev/null || true
    wait "$prog" 2>/dev/null || true
    rm -f ready
    settle || t_fail "$s: killed helper, then the program: left behind: $(left_behind)"
    t_log "$s: mount helper killed: nothing left behind"
done
t_log PASS
