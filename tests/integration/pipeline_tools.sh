#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# --pipeline in every tool that opens a source (issue 10): r3serve serves the
# stages, r3mount mounts them, r3run puts them under the region. Data written
# through the pipeline is read back through another path; a bad spec is a
# clear error before anything starts.
source "$top_srcdir/tests/integration/lib.sh"
for t in python3 cmp sha256sum; do t_need $t; done
R3SERVE="$top_builddir/r3serve"

# r3serve: a bad spec is refused with a sentence naming the bad part
"$R3SERVE" --listen 127.0.0.1:0 --source mem:?size=8M --pipeline 'cache,pull:threads=4' \
    >/dev/null 2>"$T_DIR/bad.err" && t_fail "r3serve accepted a bad --pipeline"
grep -q "threads" "$T_DIR/bad.err" || t_fail "r3serve's refusal does not name the bad part: $(cat "$T_DIR/bad.err")"

# r3serve: a file source behind delay + stats + chunk: written through r3://,
# read back from the file itself
P=$(t_free_port)
t_bg "$R3SERVE" --listen 127.0.0.1:$P --source "file://$T_DIR/served.img?size=16M" \
    --pipeline 'delay:us=200,stats,chunk:size=64K' 2>"$T_DIR/serve.log"
t_wait_port $P
t_timeout 60 "$R3CHECK" -s 7 write "r3://127.0.0.1:$P/x" || t_fail "write through r3serve --pipeline"
t_timeout 60 "$R3CHECK" -s 7 verify "file://$T_DIR/served.img" || t_fail "the file behind the pipeline differs"
t_log "r3serve --pipeline: written through r3://, the file holds it"

# r3run: a bad spec is a usage error (exit 2, two lines)
rc=0
"$top_builddir/r3run" --source "file://$T_DIR/run.img?size=64M" --pipeline 'delay:bogus=1' -- true \
    2>"$T_DIR/run.err" || rc=$?
[ "$rc" = 2 ] || t_fail "r3run with a bad --pipeline exited $rc (want 2): $(cat "$T_DIR/run.err")"
[ "$(wc -l < "$T_DIR/run.err")" = 2 ] || t_fail "r3run's usage error is not two lines: $(cat "$T_DIR/run.err")"

# r3run: a program's array through delay + stats under the region; the
# source file holds what the program wrote
. "$top_srcdir/tests/r3run/needs_uffd.sh"
r3_needs_uffd
cat > "$T_DIR/fill.py" <<'PY'
import hashlib, sys
n = 16 << 20
b = bytearray(n)
for i in range(0, n, 4096):
    b[i:i + 8] = i.to_bytes(8, "little")
print(hashlib.sha256(b).hexdigest())
PY
want=$(python3 "$T_DIR/fill.py")
got=$(t_timeout 120 "$top_builddir/r3run" --source "file://$T_DIR/run.img?size=64M" \
      --pipeline 'delay:us=100,stats' -- python3 "$T_DIR/fill.py") || t_fail "r3run --pipeline failed"
[ "$got" = "$want" ] || t_fail "under r3run --pipeline the program hashed $got, plainly $want"
python3 - "$T_DIR/run.img" <<'PY' || t_fail "the source file does not hold the program's writes"
import sys
data = open(sys.argv[1], "rb").read()
hits = 0
for i in range(0, len(data) - 8, 4096):
    v = int.from_bytes(data[i:i + 8], "little")
    if v and v % 4096 == 0 and v < (16 << 20):
        hits += 1
assert hits >= (16 << 20) // 4096 - 1, hits
PY
t_log "r3run --pipeline: same hash as a plain run, the source holds the array"

# r3mount: a bad spec is refused before anything is mounted
mkdir -p "$T_DIR/mnt"
if [ -e /dev/fuse ]; then
    "$top_builddir/r3mount" --pipeline 'cache,cache' mem:?size=8M "$T_DIR/mnt" 2>"$T_DIR/mnt.err" &&
        { "$top_builddir/r3mount" -u "$T_DIR/mnt"; t_fail "r3mount accepted a bad --pipeline"; }
    grep -q "cache" "$T_DIR/mnt.err" || t_fail "r3mount's refusal does not name the bad part: $(cat "$T_DIR/mnt.err")"
    # a good one: written through the mount, read back through r3serve's file
    t_timeout 60 "$top_builddir/r3mount" --pipeline 'delay:us=100,chunk:size=64K' \
        "file://$T_DIR/mount.img?size=16M" "$T_DIR/mnt" >/dev/null || t_fail "r3mount --pipeline failed"
    head -c 4M /dev/urandom > "$T_DIR/rand"
    dd if="$T_DIR/rand" of="$T_DIR/mnt/disk" bs=1M conv=notrunc,fsync status=none ||
        { "$top_builddir/r3mount" -u "$T_DIR/mnt"; t_fail "write to the mounted pipeline"; }
    t_timeout 60 "$top_builddir/r3mount" -u "$T_DIR/mnt" || t_fail "r3mount -u"
    cmp -n $((4 << 20)) "$T_DIR/rand" "$T_DIR/mount.img" || t_fail "the file behind r3mount --pipeline differs"
    t_log "r3mount --pipeline: written through the mount, the file holds it"
fi
t_log "all checks passed"
