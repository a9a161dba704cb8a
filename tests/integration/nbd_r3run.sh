#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# nbd-direct and nbd-managed under r3run: a real program (python3 filling a
# bytearray) gives the same output as a plain run, through a wrapper that
# execs it (the shim first opens a region in the wrapper, which then execs:
# the mount must not hang the process), and the image holds the array after
# exit (read as a plain file). No mount or
# scratch directory is left behind.
source "$top_srcdir/tests/integration/lib.sh"
t_need python3
R3RUN="$top_builddir/r3run"
cd "$T_DIR"
export TMPDIR="$T_DIR"
plain=$(python3 "$top_srcdir/examples/fill.py" 128)
cat > wrapper.sh <<'SH'
#!/bin/sh
exec python3 "$@"
SH
chmod +x wrapper.sh
for s in nbd-direct nbd-managed; do
    rc=0
    out=$(t_timeout 120 "$R3RUN" --strategy "$s" --stats --source "file://$T_DIR/$s.img?size=512M" \
          -- ./wrapper.sh "$top_srcdir/examples/fill.py" 128 2> "$s.err") || rc=$?
    [ $rc -eq 0 ] || t_fail "$s: exit $rc: $(cat "$s.err")"
    [ "$out" = "$plain" ] || t_fail "$s: output differs: '$out' vs '$plain'"
    grep -q "chunks pushed\|syncs 1" "$s.err" || t_fail "$s: no stats: $(cat "$s.err")"
    grep -q "$T_DIR" /proc/mounts && t_fail "$s: a mount was left behind: $(grep "$T_DIR" /proc/mounts)"
    ls -d "$T_DIR"/r3nbd.* >/dev/null 2>&1 && t_fail "$s: a scratch directory was left behind"
    t_log "$s: identical output through an exec'ing wrapper"
done
# The array python wrote is in the image, read as a plain file (another path).
for s in nbd-direct nbd-managed; do
    python3 - "$T_DIR/$s.img" "$plain" <<'PY' || t_fail "$s: the image does not hold the array python wrote"
import hashlib, mmap, sys
pat = bytes((i * 7 + 3) & 0xff for i in range(1 << 16))
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    off = m.find(pat[1:])
    while off >= 0 and (off - 1) % 4096:
        off = m.find(pat[1:], off + 1)
    if off < 0:
        sys.exit("pattern not found in the image")
    h = hashlib.sha256(m[off - 1:off - 1 + (128 << 20)]).hexdigest()
    if h != sys.argv[2]:
        sys.exit("image at %d: sha256 %s, python printed %s" % (off - 1, h, sys.argv[2]))
PY
done
t_log "PASS"
