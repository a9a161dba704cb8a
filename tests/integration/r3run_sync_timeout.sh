#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# A dead remote at exit (issue 9, item 9): a program under r3run writes to a
# region on r3://, the server is killed -9 before the program exits, and the
# final sync gives up after --sync-timeout instead of retrying each chunk for
# its own timeout (hours): one message saying how much was not written back,
# exit status 125, back within the timeout plus slack. Then the same with a
# live server: everything written back, read through r3serve's file.
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/r3run/needs_uffd.sh"
r3_needs_uffd
t_need python3
R3RUN="$top_builddir/r3run"
SERVE="$top_builddir/r3serve"
cd "$T_DIR"

cat > w.py <<'PY'
import os, sys, time
b = bytearray(32 << 20)                 # 512 chunks of 64 KiB in the region
for i in range(0, len(b), 4096):
    b[i] = (i >> 12) & 0xff or 1
open("ready", "w").close()
while not os.path.exists("go"):
    time.sleep(0.02)
PY

port=$(t_free_port)
t_bg "$SERVE" --listen "127.0.0.1:$port" --source "file://$T_DIR/served.img?size=64M" --export disk 2>> serve.log
serve_pid=$T_LAST_PID
t_wait_port "$port"
t_bg "$R3RUN" --sync-timeout 3s --source "r3://127.0.0.1:$port/disk" -- python3 w.py 2> err
run_pid=$T_LAST_PID
for i in $(seq 1 600); do [ -e ready ] && break; sleep 0.05; done
[ -e ready ] || t_fail "the program did not start: $(cat err)"
kill -9 "$serve_pid"
wait "$serve_pid" 2>/dev/null || true
t0=$(date +%s%N)
touch go
rc=0
wait "$run_pid" || rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
t_log "dead server: exit $rc after $ms ms: $(cat err)"
[ "$rc" -eq 125 ] || t_fail "exit $rc, expected 125 (stderr: $(cat err))"
grep -q "did not finish within 3 s" err || t_fail "no timeout message: $(cat err)"
grep -Eq "[1-9][0-9]* chunks? \([0-9.]+ [KMG]?i?B\) not written back" err ||
    t_fail "the message does not say how much was not written back: $(cat err)"
[ "$(grep -c . err)" -eq 1 ] || t_fail "more than one line on stderr: $(cat err)"
[ "$ms" -lt 13000 ] || t_fail "took $ms ms to give up with --sync-timeout 3s"

# A bare number is refused: durations need a unit.
rc=0; "$R3RUN" --sync-timeout 3 -- true 2> err || rc=$?
[ "$rc" -eq 2 ] && grep -q "needs a unit" err || t_fail "--sync-timeout 3: exit $rc: $(cat err)"

# A live server: the same program exits 0 and its bytes are in the file.
rm -f ready go
port=$(t_free_port)
t_bg "$SERVE" --listen "127.0.0.1:$port" --source "file://$T_DIR/served.img?size=64M" --export disk 2>> serve.log
t_wait_port "$port"
touch go
t_timeout 120 "$R3RUN" --sync-timeout 30s --source "r3://127.0.0.1:$port/disk" -- python3 w.py 2> err ||
    t_fail "live server: $(cat err)"
python3 - "$T_DIR/served.img" <<'PY' || t_fail "the served file lacks what the program wrote"
import sys
d = open(sys.argv[1], "rb").read()
want = bytes(((i >> 12) & 0xff or 1) for i in range(0, 32 << 20, 4096))
# the array sits somewhere in the region: find its first page's marker run
for off in range(0, len(d) - (32 << 20) + 1, 4096):
    if d[off] == want[0] and d[off + 4096] == want[1] and d[off:off + (32 << 20):4096] == want:
        sys.exit(0)
sys.exit("pattern not found")
PY
t_log "ok"
