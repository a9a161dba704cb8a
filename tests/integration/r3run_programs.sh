#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Real, unmodified programs under r3run --strategy uffd give byte-identical
# output to running them plainly, and their large allocations really were
# served by the region (--stats: faults > 0). Then the data the region wrote
# back is read again through a different path (a second r3run on the same
# image, which must fault the chunks in from the file).
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/r3run/needs_uffd.sh"
r3_needs_uffd
t_need python3
t_need xz
R3RUN="$top_builddir/r3run"
cd "$T_DIR"

# run_both NAME CMD...: plain and under r3run; same stdout, faults > 0.
run_both() {
    local name=$1
    shift
    local t0=$SECONDS
    t_timeout 300 "$@" > "$name.plain" || t_fail "$name: plain run failed"
    local t1=$SECONDS rc=0
    t_timeout 300 "$R3RUN" --strategy uffd --stats -- "$@" > "$name.r3" 2> "$name.err" || rc=$?
    [ $rc -eq 0 ] || t_fail "$name under r3run: exit $rc: $(cat "$name.err")"
    cmp -s "$name.plain" "$name.r3" || t_fail "$name: output under r3run differs from the plain run"
    local faults
    faults=$(sed -n 's/^r3run: faults \([0-9]*\),.*/\1/p' "$name.err")
    [ -n "$faults" ] && [ "$faults" -gt 0 ] || t_fail "$name: no faults served: $(cat "$name.err")"
    t_log "$name: identical output ($(wc -c < "$name.plain") bytes), plain $((t1 - t0)) s, r3run $((SECONDS - t1)) s"
    sed 's/^/    /' "$name.err" >&2
}

# python3: a 512 MiB bytearray filled with a pattern, SHA-256 printed.
run_both python python3 "$top_srcdir/examples/fill.py" 512

# sort -S 256M of a 100 MB random text file.
head -c 75000000 /dev/urandom | base64 -w 76 > random.txt
run_both sort sort -S 256M random.txt

# xz -9 -T1 (674 MiB of match finder and dictionary) of a 64 MB file:
# mutated copies of a random 1 MiB block, which xz -9 compresses in ~10 s.
python3 - <<'PY'
import random
random.seed(3)
blk = bytearray(random.randbytes(1 << 20))
with open("x64", "wb") as f:
    for i in range(64):
        for j in range(64):
            blk[random.randrange(len(blk))] = random.randrange(256)
        f.write(blk)
PY
run_both xz xz -9 -T1 -c x64
xz -d -c xz.r3 | cmp -s - x64 || t_fail "xz output under r3run does not decompress to the input"

# Written back: python's array, synced to an explicit file source at exit,
# is found in the image file by reading the file directly (not through r3).
[ ! -e r3run.img ] || t_fail "r3run left a default image r3run.img in the current directory"
t_timeout 300 "$R3RUN" --source "file://$T_DIR/py.img?size=1G" -- \
    python3 "$top_srcdir/examples/fill.py" 256 > py.r3 || t_fail "python on py.img failed"
python3 - "$T_DIR/py.img" "$(cat py.r3)" <<'PY' || t_fail "py.img does not hold the array python wrote"
import hashlib, mmap, sys
pat = bytes((i * 7 + 3) & 0xff for i in range(1 << 16))
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    off = m.find(pat[1:])
    while off >= 0 and (off - 1) % 4096:
        off = m.find(pat[1:], off + 1)
    if off < 0:
        sys.exit("pattern not found in the image")
    h = hashlib.sha256(m[off - 1:off - 1 + (256 << 20)]).hexdigest()
    if h != sys.argv[2]:
        sys.exit("image at %d: sha256 %s, python printed %s" % (off - 1, h, sys.argv[2]))
    print("array found at offset %d of the image, sha256 matches" % (off - 1), file=sys.stderr)
PY
t_log "ok"
