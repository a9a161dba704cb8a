#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Migration with peers killed by SIGKILL, each end in its own process
# (tests/migrate_peer): the leecher before FINALIZE (A keeps running and a
# second leecher migrates, bytes equal A's at the pause), the seeder before
# FINALIZE (a clear error within the timeout), the seeder after FINALIZE (a
# clear error naming the missing chunks; every chunk B holds is A's; touching
# a missing one is SIGBUS, not zeros).
. "$(dirname "$0")/lib.sh"
. "$top_srcdir/tests/integration/migrate_lib.sh"
[ -x "$PEER" ] || t_fail "$PEER is not built"
[ -e /proc/sys/vm/unprivileged_userfaultfd ] || [ -e /dev/userfaultfd ] || t_skip "no userfaultfd"
# The leechers' request timeout where the seeder is alive and must answer in
# time (a FINALIZE pauses and syncs A): 5 s, scaled under a sanitizer
# (R3_TEST_SLOW, lib.sh). Where the seeder is dead (part 2) the timeout is
# what is checked and stays 2 s.
TO=$(t_slow 5)s
# part 3: what is checked is the error after the seeder's death, not when it
# comes; the FINALIZE before it (A writing, paused and synced) once took more
# than 10 s under TSan on a loaded machine
TO3=2s
[ "${R3_TEST_SLOW:-0}" = 1 ] && TO3=40s

# ---- 1. leecher killed before FINALIZE
mig_seed a
t_bg "$PEER" leech --uri "r3://$ADDR/?timeout=$TO" --finalize-file "$D/never" >"$D/l1.out" 2>&1
L1=$T_LAST_PID
mig_wait_line "$D/l1.out" '^pulled'
kill -9 "$L1"
wait "$L1" 2>/dev/null
sleep 0.5
kill -0 "$SEED_PID" || t_fail "the seeder died with its leecher"
t_timeout 120 "$PEER" leech --uri "r3://$ADDR/?timeout=$TO" --hashes "$D/a.hashes" >"$D/l2.out" 2>&1 || \
    { cat "$D/l2.out" >&2; t_fail "the second leecher failed"; }
grep -q '^done checked=1024$' "$D/l2.out" || { cat "$D/l2.out" >&2; t_fail "second leecher: not every chunk checked"; }
t_timeout 10 tail --pid="$SEED_PID" -f /dev/null || t_fail "the seeder did not exit after RELEASE"
grep -q released "$D/a.seed.out" || t_fail "the seeder did not see RELEASE"
t_log "leecher killed before FINALIZE: A kept running; a second leecher got A's bytes at the pause"

# ---- 2. seeder killed before FINALIZE
mig_seed b
t_bg "$PEER" leech --uri "r3://$ADDR/?timeout=2s&connect_timeout=500ms" --finalize-file "$D/go" >"$D/l3.out" 2>&1
L3=$T_LAST_PID
mig_wait_line "$D/l3.out" '^pulled'
kill -9 "$SEED_PID"
t0=$(date +%s%N)
touch "$D/go"
wait "$L3"; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$rc" = 3 ] || { cat "$D/l3.out" >&2; t_fail "leecher exit $rc after its seeder died (expected 3)"; }
grep -qE '^finalize failed: .*seeder' "$D/l3.out" || { cat "$D/l3.out" >&2; t_fail "no clear error"; }
[ "$ms" -lt 6000 ] || t_fail "the error took $ms ms (timeout 2 s)"
t_log "seeder killed before FINALIZE: $(grep '^finalize failed' "$D/l3.out") ($ms ms)"

# ---- 3. seeder killed after FINALIZE, before every chunk is local (A writes
# in a tenth of its chunks, so most of what B pulled stays valid)
mig_seed c --write-pct 10
t_bg "$PEER" leech --uri "r3://$ADDR/?timeout=$TO3&connect_timeout=500ms" --hashes "$D/c.hashes" \
    --finalize-at 20 --slow-us 3000 --workers 1 >"$D/l4.out" 2>&1
L4=$T_LAST_PID
mig_wait_line "$D/l4.out" '^finalized'
kill -9 "$SEED_PID"
wait "$L4"; rc=$?
[ "$rc" = 3 ] || { cat "$D/l4.out" >&2; t_fail "leecher exit $rc after its seeder died after FINALIZE (expected 3)"; }
grep -qE '^wait failed: .*still missing \([0-9]' "$D/l4.out" || { cat "$D/l4.out" >&2; t_fail "the error does not name the missing chunks"; }
grep -q '^missing chunk: SIGBUS' "$D/l4.out" || { cat "$D/l4.out" >&2; t_fail "a missing chunk did not give SIGBUS"; }
checked=$(sed -n 's/^missing=[0-9]* checked=\([0-9]*\)$/\1/p' "$D/l4.out")
[ "${checked:-0}" -gt 30 ] || { cat "$D/l4.out" >&2; t_fail "too few chunks checked ($checked)"; }
t_log "seeder killed after FINALIZE: $(grep '^wait failed' "$D/l4.out" | cut -c1-160)...; $checked chunks held, all A's"
exit 0
