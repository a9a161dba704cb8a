#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Exits by signal and the lazy open (issue 11).
#  - A program ended by SIGTERM, SIGINT, SIGHUP or SIGQUIT while its handler
#    is the default one: its region is synced before it dies (the source
#    holds what it wrote) and its exit status is still the signal's.
#  - A program with its own handler is left alone (its handler runs).
#  - The region is opened at the first allocation that goes there: a chain
#    of bash wrappers that exec each other opens nothing until python
#    allocates (R3_TRACE_OPEN counts the opens), and a program that never
#    allocates a large block opens nothing.
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/r3run/needs_uffd.sh"
r3_needs_uffd
R3RUN="$top_builddir/r3run"
cd "$T_DIR"
sig="$top_srcdir/tests/r3run/sig_exit.py"

count5a() { python3 -c 'import sys; print(open(sys.argv[1],"rb").read().count(b"\x5a"*4096))' "$1"; }

for m in term:143 int:130 hup:129 quit:131 own:7; do
    mode=${m%%:*} want=${m#*:}
    head -c 32M /dev/zero > img
    rc=0
    t_timeout 60 "$R3RUN" --source "file://$T_DIR/img" -- python3 "$sig" "$mode" > out 2> err || rc=$?
    [ "$rc" -eq "$want" ] || t_fail "$mode: exit $rc, expected $want: $(cat err)"
    pages=$(count5a img)
    # 8 MiB written: at least 2000 of its 2048 pages are whole 0x5a pages.
    [ "$pages" -ge 2000 ] || t_fail "$mode: the source holds $pages pages of what was written (not synced)"
    grep -q "not killed" out && t_fail "$mode: the signal did not end the program"
    [ "$mode" != int ] || grep -q '^True$' out || t_fail "int: python does not see SIG_DFL: $(cat out)"
    [ "$mode" != own ] || grep -q '^own handler$' out || t_fail "own: the program's handler did not run"
    t_log "$mode: exit $rc, $pages pages of 0x5a in the source"
done

# Without r3's handler (a program that blocks nothing but is SIGKILLed) the
# bound is the push interval: written, pushed by a round, then killed.
head -c 32M /dev/zero > img
rc=0
t_timeout 60 "$R3RUN" --source "file://$T_DIR/img" --push-interval 100ms -- python3 -c '
import os, time
b = bytearray(8 << 20)
b[:] = b"\x5a" * len(b)
time.sleep(1)
os.kill(os.getpid(), 9)' 2> err || rc=$?
[ "$rc" -eq 137 ] || t_fail "SIGKILL: exit $rc"
pages=$(count5a img)
[ "$pages" -ge 2000 ] || t_fail "SIGKILL after a push round: only $pages pages in the source"
t_log "SIGKILL after 1 s with --push-interval 100ms: $pages pages in the source"

# Lazy open: bash -> bash -> python (python3 may itself be a wrapper).
printf '#!/bin/bash\nexec ./w2.sh "$@"\n' > w1.sh
printf '#!/bin/bash\nexec python3 -c "b = bytearray(4 << 20); b[0] = 1; print(len(b))"\n' > w2.sh
chmod +x w1.sh w2.sh
rm -f trace
mkdir -p imgs
out=$(TMPDIR="$T_DIR/imgs" R3_TRACE_OPEN="$T_DIR/trace" t_timeout 60 "$R3RUN" --size 64M -- ./w1.sh 2> err) ||
    t_fail "wrapper chain: $(cat err)"
[ "$out" = 4194304 ] || t_fail "wrapper chain printed '$out'"
[ "$(wc -l < trace)" -eq 1 ] || t_fail "wrapper chain: $(wc -l < trace) opens: $(cat trace)"
grep -q "^open [0-9]* python" trace || t_fail "the open was not python's: $(cat trace)"
[ -z "$(ls imgs)" ] || t_fail "the default image was left behind: $(ls imgs)"
t_log "bash -> bash -> python: one open ($(cat trace))"
rm -f trace
TMPDIR="$T_DIR/imgs" R3_TRACE_OPEN="$T_DIR/trace" t_timeout 60 "$R3RUN" --size 64M -- bash -c 'exec bash -c true' 2> err ||
    t_fail "bash chain: $(cat err)"
[ ! -e trace ] || t_fail "a chain that never allocates opened the region: $(cat trace)"
[ -z "$(ls imgs)" ] || t_fail "the default image was left behind: $(ls imgs)"
t_log "a bash chain that never allocates: no open"

# mremap of region memory is refused with EINVAL; of other memory it works.
out=$(t_timeout 60 "$R3RUN" --size 64M -- python3 -c '
import ctypes, mmap
libc = ctypes.CDLL(None, use_errno=True)
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
b = bytearray(1 << 20)
addr = ctypes.addressof((ctypes.c_char * len(b)).from_buffer(b))
r = libc.mremap(addr, 1 << 20, 2 << 20, 1)
print("region", r == ctypes.c_void_p(-1).value, ctypes.get_errno())
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
m = libc.mmap(None, 1 << 20, 3, 0x22, -1, 0)
r = libc.mremap(m, 1 << 20, 2 << 20, 1)
print("other", r != ctypes.c_void_p(-1).value)
' 2> err) || t_fail "mremap: $(cat err)"
[ "$out" = "region True 22
other True" ] || t_fail "mremap: $out"
t_log "mremap: region memory refused with EINVAL, other memory moved"
t_log "ok"
