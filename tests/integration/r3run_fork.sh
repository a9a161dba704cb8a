#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Under r3run: the malloc family through the shim (routing by size, calloc,
# realloc across the threshold, aligned allocators, 8 threads), and a
# program that calls system() and fork() while its data is in the region.
# Each runs plainly too; the outputs must agree.
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/r3run/needs_uffd.sh"
r3_needs_uffd
R3RUN="$top_builddir/r3run"
cd "$T_DIR"

for prog in alloc_check forker; do
    bin="$top_builddir/tests/r3run/$prog"
    t_timeout 120 "$bin" plain > "$prog.plain" || t_fail "$prog plain failed"
    rc=0
    t_timeout 120 "$R3RUN" --stats --size 1G -- "$bin" region > "$prog.r3" 2> "$prog.err" || rc=$?
    [ $rc -eq 0 ] || t_fail "$prog under r3run: exit $rc: $(cat "$prog.err")"
    cmp -s "$prog.plain" "$prog.r3" || t_fail "$prog: output differs: $(cat "$prog.plain" "$prog.r3")"
    blocks=$(sed -n 's/^r3run: blocks placed in the region \([0-9]*\) .*/\1/p' "$prog.err")
    faults=$(sed -n 's/^r3run: faults \([0-9]*\),.*/\1/p' "$prog.err")
    [ "${blocks:-0}" -gt 0 ] && [ "${faults:-0}" -gt 0 ] || t_fail "$prog: region unused: $(cat "$prog.err")"
    # Exactly one process served the region: one summary, not one per child.
    [ "$(grep -c '^r3run: faults' "$prog.err")" -eq 1 ] || t_fail "$prog: more than one summary"
    t_log "$prog: $(cat "$prog.r3"), $blocks region blocks, $faults faults"
done

# Options reach the region: record the access order, then replay it with
# pull workers (chunks arrive by prefetch), write back on an interval, with
# another chunk size; the output stays the same.
fill="$top_srcdir/examples/fill.py"
want=$(python3 "$fill" 64)
got=$(t_timeout 120 "$R3RUN" --stats --size 1G --chunk 128K --record-access acc.log -- python3 "$fill" 64 2>rec.err) ||
    t_fail "record-access run: $(cat rec.err)"
[ "$got" = "$want" ] || t_fail "record-access run: output differs"
[ -s acc.log ] || t_fail "--record-access wrote no access log"
got=$(t_timeout 120 "$R3RUN" --stats --size 1G --prefetch hot --record-access acc.log --pull-workers 4 \
    --push-interval 100ms --push-workers 2 --fault-threads 3 --chunk 128K -- python3 "$fill" 64 2>hot.err) ||
    t_fail "hot prefetch run: $(cat hot.err)"
[ "$got" = "$want" ] || t_fail "hot prefetch run: output differs"
pref=$(sed -n 's/^r3run: faults [0-9]*, .* by prefetch \([0-9]*\),.*/\1/p' hot.err)
[ "${pref:-0}" -gt 0 ] || t_fail "hot prefetch: no chunk came by prefetch: $(cat hot.err)"
grep -q "chunk 128 KiB" hot.err || t_fail "--chunk did not reach the region: $(cat hot.err)"
t_log "record/replay: $(wc -c < acc.log) bytes of access log, $pref chunks by prefetch"

# A region too small for a block: glibc serves it, the output is unchanged,
# and --stats says so.
got=$(t_timeout 120 "$R3RUN" --stats --size 64M -- python3 "$fill" 96 2>full.err) || t_fail "full region: $(cat full.err)"
[ "$got" = "$(python3 "$fill" 96)" ] || t_fail "full region: output differs"
grep -q "region was full [1-9]" full.err || t_fail "full region: no fallback counted: $(cat full.err)"

# The libr3 API example: write a table through a uffd region, sync, read it
# back in a new process; then the reading half alone, in yet another one.
uri="file://$T_DIR/demo.img?size=64M"
t_timeout 60 "$top_builddir/examples/region_demo" "$uri" > demo.out 2>&1 || t_fail "region_demo: $(cat demo.out)"
grep -q "^read 100000 records back" demo.out || t_fail "region_demo: $(cat demo.out)"
t_timeout 60 "$top_builddir/examples/region_demo" read "$uri" >> demo.out 2>&1 || t_fail "region_demo read: $(cat demo.out)"
# A torn image is detected: zero the first chunk (the table header).
dd if=/dev/zero of="$T_DIR/demo.img" bs=4096 count=1 conv=notrunc status=none
rc=0; t_timeout 60 "$top_builddir/examples/region_demo" read "$uri" >> demo.out 2>&1 || rc=$?
[ $rc -ne 0 ] || t_fail "region_demo read accepted a zeroed table"
t_log "region_demo: $(head -2 demo.out | tr '\n' ' ')"
t_log "ok"
