#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Two processes share a file:// source through uffd regions: one writes a
# 1 GiB pattern and syncs (then dies without closing), the other reads the
# same bytes; the file itself is compared with cmp against the pattern
# written by plain write(2).
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/r3run/needs_uffd.sh"
r3_needs_uffd
t_need cmp
RW="$top_builddir/tests/r3check"
img="$T_DIR/region.img"
truncate -s 1G "$img"

# 300 s: a hang guard (1 GiB of faults takes minutes under ThreadSanitizer on
# a loaded machine). timeout's own SIGKILL is also 137: the writer's report,
# printed after its sync and before it kills itself, tells the two apart.
t_timeout 300 "$RW" region -S 7 --die "file://$img" 2>"$T_DIR/writer.err"
rc=$?
cat "$T_DIR/writer.err" >&2
[ $rc -eq 137 ] || t_fail "writer should die by SIGKILL after its sync (exit $rc)"
grep -q "^r3check: region .*: first byte" "$T_DIR/writer.err" || t_fail "the writer did not reach its sync within 300 s"
t_timeout 300 "$RW" region -s 7 "file://$img" || t_fail "the second process read different bytes"
t_timeout 60 "$RW" -s 7 gen 0 1G > "$T_DIR/plain.img" || t_fail "cannot write the reference file"
cmp "$img" "$T_DIR/plain.img" || t_fail "the file differs from the pattern"
# And the other way: a wrong seed must be noticed.
t_timeout 120 "$RW" region -s 8 "file://$img" 2>/dev/null && t_fail "a wrong pattern was not detected"
t_log "ok: 1 GiB written by one process, read by another, file equal to the pattern"
exit 0
