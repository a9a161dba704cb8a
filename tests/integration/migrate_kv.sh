#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# examples/kvmigrate moved while its load client keeps writing and reading:
# zero acknowledged writes lost across the move, the client follows the
# table to the new instance, and the old one exits after RELEASE.
. "$(dirname "$0")/lib.sh"
KV="$top_builddir/examples/kvmigrate"
LOAD="$top_builddir/examples/kvmigrate-load"
[ -x "$KV" ] && [ -x "$LOAD" ] || t_fail "kvmigrate is not built"
D=$T_DIR
PA=$(t_free_port); PS=$(t_free_port); PB=$(t_free_port)

t_bg "$KV" --listen "127.0.0.1:$PA" --seed "127.0.0.1:$PS" 2>"$D/a.err"
A=$T_LAST_PID
t_wait_port "$PA"
t_wait_port "$PS"
t_bg "$LOAD" --servers "127.0.0.1:$PA,127.0.0.1:$PB" --duration 4s >"$D/load.out" 2>"$D/load.err"
LOAD_PID=$T_LAST_PID
sleep 1.5
t_bg "$KV" --listen "127.0.0.1:$PB" --leech "r3://127.0.0.1:$PS/?timeout=5s" 2>"$D/b.err"
B=$T_LAST_PID
wait "$LOAD_PID"; rc=$?
cat "$D/load.out" "$D/load.err" >&2
cat "$D/a.err" "$D/b.err" >&2
[ "$rc" = 0 ] || t_fail "the load client failed (exit $rc)"
grep -qE ' lost=0 wrong_reads=0 .* moved=1 server=127.0.0.1:'"$PB"'$' "$D/load.out" || t_fail "writes lost, or the client did not follow the move"
acked=$(sed -n 's/.* acked=\([0-9]*\) .*/\1/p' "$D/load.out")
[ "${acked:-0}" -gt 100 ] || t_fail "too few writes ($acked)"
t_timeout 10 tail --pid="$A" -f /dev/null || t_fail "the old instance did not exit after RELEASE"
grep -q "RELEASE" "$D/a.err" || t_fail "the old instance did not say it was released"
grep -q "every chunk is local" "$D/b.err" || t_fail "the new instance did not finish pulling"
t_log "$(cat "$D/load.out")"

# usage errors: two lines, exit 2
"$KV" --bogus >/dev/null 2>"$D/u.err"; rc=$?
[ "$rc" = 2 ] && [ "$(wc -l <"$D/u.err")" = 2 ] || t_fail "kvmigrate --bogus: exit $rc, $(cat "$D/u.err")"
"$LOAD" --servers x --duration 5 >/dev/null 2>"$D/u.err"; rc=$?
[ "$rc" = 2 ] && grep -q unit "$D/u.err" || t_fail "kvmigrate-load --duration 5: exit $rc"
exit 0
