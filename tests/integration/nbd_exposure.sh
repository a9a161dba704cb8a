#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# What an NBD port exposes and how long it can be held (issue 9): 80 idle
# connections and one sending a byte a second do not lock a new client out,
# and the handshake deadline (10 s) closes them; export listing only with
# --list-exports; one log line per connection. Through r3mount --nbd-listen.
source "$top_srcdir/tests/integration/lib.sh"
[ -c /dev/fuse ] || t_skip "no /dev/fuse (FUSE is not available in this kernel/container)"
for t in nbdinfo python3; do t_need $t; done
R3MOUNT="$top_builddir/r3mount"
mkdir -p "$T_DIR/m" "$T_DIR/m2"
P=$(t_free_port); P2=$(t_free_port)
t_timeout 30 "$R3MOUNT" -q --mount fuse --nbd-listen 127.0.0.1:$P --log "$T_DIR/log" "mem:?size=16M" "$T_DIR/m" \
    || t_fail "r3mount"
cleanup_mounts() { "$R3MOUNT" -u "$T_DIR/m" 2>/dev/null; "$R3MOUNT" -u "$T_DIR/m2" 2>/dev/null; t_cleanup; }
trap cleanup_mounts EXIT
t_wait_port $P

# 80 idle connections and one trickling a byte per second; then nbdinfo must
# work at once, and the server must close all 81 within the deadline.
python3 - $P "$top_builddir" <<'PY' || t_fail "slowloris"
import socket, subprocess, sys, time
port = int(sys.argv[1])
idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(80)]
slow = socket.create_connection(("127.0.0.1", port))
slow.recv(18)
t0 = time.time()
r = subprocess.run(["nbdinfo", "nbd://127.0.0.1:%d/" % port], capture_output=True, text=True, timeout=20)
assert r.returncode == 0, "nbdinfo failed with 81 connections held: " + r.stderr
assert "export-size: 16777216" in r.stdout, r.stdout
print("nbdinfo with 81 held connections: %.2f s" % (time.time() - t0), file=sys.stderr)
# trickle the client flags and an option header, a byte a second
msg = b"\0\0\0\3" + b"IHAVEOPT" + b"\0\0\0\7" + b"\0\0\0\6"
closed_at = None
for b in msg:
    try:
        slow.send(bytes([b]))
    except OSError:
        closed_at = time.time() - t0
        break
    slow.settimeout(1.0)
    try:
        if slow.recv(1) == b"":
            closed_at = time.time() - t0
            break
    except socket.timeout:
        pass
    except OSError:
        closed_at = time.time() - t0
        break
assert closed_at is not None and closed_at < 13, "the trickling client was not closed by the deadline (%r)" % closed_at
print("trickling client closed after %.1f s" % closed_at, file=sys.stderr)
for s in idle:
    s.settimeout(5)
    try:
        assert s.recv(4096) and s.recv(4096) == b"", "an idle connection is still open"
    except ConnectionResetError:
        pass
PY
grep -q "handshake not finished within 10000 ms" "$T_DIR/log" || t_fail "no log line for a timed-out handshake: $(tail -3 "$T_DIR/log")"

# Listing: refused by default, and a wrong name is not answered with the real ones
t_timeout 20 nbdinfo --list "nbd://127.0.0.1:$P/" >"$T_DIR/list" 2>&1 && t_fail "listing allowed without --list-exports"
t_timeout 20 "$R3MOUNT" -q --mount fuse --nbd-listen 127.0.0.1:$P2 --list-exports "mem:?size=8M" "$T_DIR/m2" \
    || t_fail "r3mount --list-exports"
t_wait_port $P2
t_timeout 20 nbdinfo --list "nbd://127.0.0.1:$P2/" >"$T_DIR/list" 2>&1 || t_fail "listing refused with --list-exports: $(cat "$T_DIR/list")"
grep -q 'export=""' "$T_DIR/list" || t_fail "the listing does not show the export: $(cat "$T_DIR/list")"

# One line per connection, with what it did
before=$(grep -c "^r3mount: nbd 127.0.0.1" "$T_DIR/log")
t_timeout 20 nbdinfo "nbd://127.0.0.1:$P/" >/dev/null || t_fail "nbdinfo"
sleep 0.3
after=$(grep -c "^r3mount: nbd 127.0.0.1" "$T_DIR/log")
[ $((after - before)) -eq 1 ] || t_fail "one nbdinfo gave $((after - before)) log lines"
tail -1 "$T_DIR/log" | grep -qE "export '': [0-9]+ requests, .* read, .* written in .* s; client disconnected" \
    || t_fail "the connection's log line: $(tail -1 "$T_DIR/log")"
# The cap is the server's --max-connections (r3serve): one more is closed,
# and once one leaves a new client is served
P3=$(t_free_port)
t_bg "$top_builddir/r3serve" --nbd 127.0.0.1:$P3 --source "mem:?size=4M" --max-connections 3 2>"$T_DIR/serve.log"
t_wait_port $P3
python3 - $P3 <<'PY' || t_fail "connection cap"
import socket, subprocess, sys, time
port = int(sys.argv[1])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
time.sleep(0.3)
r = subprocess.run(["nbdinfo", "nbd://127.0.0.1:%d/" % port], capture_output=True, text=True, timeout=20)
assert r.returncode != 0, "a 4th connection was served with a cap of 3"
held.pop().close()
time.sleep(0.3)
r = subprocess.run(["nbdinfo", "nbd://127.0.0.1:%d/" % port], capture_output=True, text=True, timeout=20)
assert r.returncode == 0, "not served after a connection left: " + r.stderr
PY
"$R3MOUNT" -u "$T_DIR/m" || t_fail "r3mount -u"
"$R3MOUNT" -u "$T_DIR/m2" || t_fail "r3mount -u (2)"
t_log "ok"
