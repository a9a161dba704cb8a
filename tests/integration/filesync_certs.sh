#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Certificates: no client certificate, a certificate from another CA, or an
# id with no advertiser: refused or idle, never given another id's files
# (asserted by reading after the handshake with an independent client).
source "$top_srcdir/tests/integration/lib.sh"
source "$top_srcdir/tests/integration/filesync_lib.sh"
fs_certs
C="$T_DIR/c"
mkdir -p "$T_DIR/src" "$T_DIR/evil" "$T_DIR/b" "$T_DIR/wrongca"
head -c 1M /dev/urandom > "$T_DIR/src/secret.bin"
PORT=$(t_free_port)
fs_hub "$PORT"
cd "$T_DIR/src"
t_bg "$R3SYNC" advertise secret.bin --hub "127.0.0.1:$PORT" $(fs_client a) --interval 0 >"$T_DIR/adv.log" 2>&1
ADV=$T_LAST_PID
cd "$T_DIR"
t_bg "$R3SYNC" receive "$T_DIR/good" --hub "127.0.0.1:$PORT" $(fs_client a) >"$T_DIR/good.log" 2>&1
fs_wait "$T_DIR/good.log" "^synced secret.bin" 1

# positive control: the same client with syncA's certificate gets the file
python3 "$FS_CLIENT" "127.0.0.1:$PORT" "$C/ca.pem" --cert "$C/a.pem" --key "$C/a.key" --send hello --read 1.5 >"$T_DIR/ctl.out" 2>&1
grep -q "^msg FILE .* secret.bin" "$T_DIR/ctl.out" || { cat "$T_DIR/ctl.out"; t_fail "control client did not get the file"; }

# no client certificate
python3 "$FS_CLIENT" "127.0.0.1:$PORT" "$C/ca.pem" --send hello --read 1.5 >"$T_DIR/nocert.out" 2>&1
grep -q "^msg" "$T_DIR/nocert.out" && { cat "$T_DIR/nocert.out"; t_fail "a client without a certificate got messages"; }
grep -Eq "^(handshake-failed|closed|send-failed)" "$T_DIR/nocert.out" || { cat "$T_DIR/nocert.out"; t_fail "a client without a certificate was not refused"; }

# a certificate from another CA with the same CN
python3 "$FS_CLIENT" "127.0.0.1:$PORT" "$C/ca.pem" --cert "$C/evil.pem" --key "$C/evil.key" --send hello --read 1.5 >"$T_DIR/evil.out" 2>&1
grep -q "^msg" "$T_DIR/evil.out" && { cat "$T_DIR/evil.out"; t_fail "a certificate of another CA got messages"; }
grep -Eq "^(handshake-failed|closed|send-failed)" "$T_DIR/evil.out" || { cat "$T_DIR/evil.out"; t_fail "a certificate of another CA was not refused"; }

# an id with no advertiser: accepted, idle, never sees syncA's file
python3 "$FS_CLIENT" "127.0.0.1:$PORT" "$C/ca.pem" --cert "$C/b.pem" --key "$C/b.key" --send hello --read 1.5 >"$T_DIR/b.out" 2>&1
grep -q "^msg HELLO" "$T_DIR/b.out" || { cat "$T_DIR/b.out"; t_fail "syncB was not accepted"; }
grep -Eq "secret|^msg (FILE|BLK|TBLK)" "$T_DIR/b.out" && { cat "$T_DIR/b.out"; t_fail "syncB was given syncA's file"; }

# the same through r3sync receive: nothing is written for the wrong ones
t_bg "$R3SYNC" receive "$T_DIR/evil" --hub "127.0.0.1:$PORT" --cert "$C/evil.pem" --key "$C/evil.key" --ca "$C/ca.pem" >"$T_DIR/evil.log" 2>&1
t_bg "$R3SYNC" receive "$T_DIR/b" --hub "127.0.0.1:$PORT" $(fs_client b) >"$T_DIR/b.log" 2>&1
# a receiver that does not trust the hub's CA refuses the hub
t_bg "$R3SYNC" receive "$T_DIR/wrongca" --hub "127.0.0.1:$PORT" --cert "$C/a.pem" --key "$C/a.key" --ca "$C/ca2.pem" >"$T_DIR/wrongca.log" 2>&1
# the round starts once every one of them has been refused or joined, as the
# hub and the receivers log it (not after a sleep): each refusal is asserted
# by its reason, the python clients' and r3sync's
H="$T_DIR/hub.log"
fs_wait "$H" "refused: TLS accept: peer did not return a certificate" 1      # no certificate
fs_wait "$H" "refused: TLS accept: certificate verify failed" 2                # evil: python, r3sync
fs_wait "$H" "refused: TLS accept: .*unknown ca" 1                             # r3sync that distrusts the hub
fs_wait "$H" "receiver joined id 'syncB'" 2                                    # python b, r3sync b
fs_wait "$T_DIR/evil.log" "the hub refused our certificate" 1
fs_wait "$T_DIR/wrongca.log" "TLS connect: certificate verify failed" 1
fs_wait "$T_DIR/b.log" "^r3sync receive: connected" 1
# a round while they are connected
head -c 65536 /dev/urandom | dd of="$T_DIR/src/secret.bin" conv=notrunc 2>/dev/null
kill -USR1 "$ADV"
fs_wait "$T_DIR/good.log" "^round 1 done" 1
fs_wait "$T_DIR/adv.log" "^ack round=1 receiver=" 1       # syncA's receiver acked: the round is over
[ "$(grep -c "^ack round=1 " "$T_DIR/adv.log")" = 1 ] || t_fail "another receiver acked syncA's round: $(grep "^ack" "$T_DIR/adv.log")"
cmp "$T_DIR/src/secret.bin" "$T_DIR/good/secret.bin" || t_fail "the right receiver differs"
[ -z "$(ls -A "$T_DIR/evil")" ] || t_fail "receiver with another CA's certificate wrote files"
[ -z "$(ls -A "$T_DIR/b")" ] || t_fail "receiver of syncB wrote files"
[ -z "$(ls -A "$T_DIR/wrongca")" ] || t_fail "receiver that does not trust the hub wrote files"
fs_finish
