#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# multiprocessing.Pool(2) under r3run (uffd, issue 11): Pool(2).map over a
# list gives the same output as a plain run, with each start method (fork:
# the workers read a 64 MiB array the parent filled in the region before
# starting them; spawn and forkserver: fresh interpreters under the shim).
# A hang is a failure (bounded by a timeout), not a skip.
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/r3run/needs_uffd.sh"
r3_needs_uffd
t_need python3
R3RUN="$top_builddir/r3run"
cd "$T_DIR"
export TMPDIR="$T_DIR"
cat > pool.py <<'PY'
import hashlib, multiprocessing as mp, sys
big = None
def work(x):
    part = big[x * (1 << 20):(x + 1) * (1 << 20)] if big is not None else bytes([x]) * (1 << 20)
    return "%d %s" % (x * x, hashlib.sha256(part).hexdigest()[:16])
if __name__ == "__main__":
    method = sys.argv[1]
    mp.set_start_method(method)
    if method == "fork":
        big = bytearray(64 << 20)
        for i in range(64):
            big[i << 20:(i + 1) << 20] = bytes([(i * 37) & 0xff]) * (1 << 20)
    with mp.Pool(2) as p:
        for r in p.map(work, range(64 if method == "fork" else 20)):
            print(r)
PY
for m in fork spawn forkserver; do
    python3 pool.py "$m" > "plain.$m" || t_fail "$m: the plain run failed"
    rc=0
    t_timeout 120 "$R3RUN" --size 512M -- python3 pool.py "$m" > "r3.$m" 2> "err.$m" || rc=$?
    [ "$rc" -eq 0 ] || t_fail "$m: exit $rc (124/137: a hang): $(cat "err.$m")"
    cmp -s "plain.$m" "r3.$m" || t_fail "$m: output differs from a plain run: $(diff "plain.$m" "r3.$m" | head -5)"
    [ "$(wc -l < "r3.$m")" -ge 20 ] || t_fail "$m: only $(wc -l < "r3.$m") lines"
    t_log "$m: Pool(2).map output equal to a plain run ($(wc -l < "r3.$m") lines)"
done
t_log PASS
