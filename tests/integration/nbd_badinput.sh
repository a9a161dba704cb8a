#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Bad input against the NBD server from raw sockets (nbd_badinput.py):
# garbage/truncated handshakes, EOF in the handshake (no log flood), unknown
# options and commands, oversized and out-of-range requests (no allocation),
# clients vanishing with requests in flight, fenced writes of dead clients.
source "$top_srcdir/tests/integration/lib.sh"
t_need python3
R3SERVE="$top_builddir/r3serve"
P=$(t_free_port); F=$(t_free_port)
t_bg "$R3SERVE" --nbd 127.0.0.1:$P --source mem:?size=64M 2>"$T_DIR/serve.log"
PID=$T_LAST_PID
t_bg "$R3SERVE" --nbd 127.0.0.1:$F --source mem:?size=64M --delay-us 100000 --nbd-workers 2 2>"$T_DIR/fence.log"
t_wait_port $P; t_wait_port $F
t_timeout 120 python3 "$top_srcdir/tests/integration/nbd_badinput.py" $P $PID $F "$T_DIR/serve.log" \
    || t_fail "bad input cases failed"
kill -0 $PID || t_fail "the server died"
t_log "ok"
