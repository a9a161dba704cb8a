#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The filesync strategy: a 128 MiB region pre-copied from a file source,
# filled with a pattern, and pushed back on close; the source is then read by
# an independent tool (sha256sum) and compared with the program's own hash
# and with python3's hash of the same pattern. Run twice: PAGEMAP_SCAN
# detection and hashing (--detect hash, the region option). When r3run is built, the
# python3 workload (a 512 MiB bytearray filled with a pattern, its SHA-256
# printed) also runs under `r3run --strategy filesync`: identical output to
# plain python3, and the source holds the final bytes after exit.
source "$top_srcdir/tests/integration/lib.sh"
# (the t_timeout bounds below only guard against a hang: wide enough for a
# sanitizer build on a loaded machine)
t_need python3
t_need sha256sum
SIZE=$((128 * 1024 * 1024))
want=$(python3 "$PATTERN_PY" sha256 1 0 $SIZE)
for detect in pagemap hash; do
    img="$T_DIR/src-$detect.img"
    head -c 1M /dev/urandom > "$T_DIR/head.bin"
    cp "$T_DIR/head.bin" "$img"; truncate -s $SIZE "$img"
    before=$(sha256sum < "$img" | cut -d' ' -f1)
    dflag=""; [ "$detect" = hash ] && dflag="--detect hash"
    out=$(t_timeout 300 "$R3CHECK" region --strategy filesync --interval 200 --sha256 -S 1 $dflag "file://$img" \
        2>"$T_DIR/err") || { cat "$T_DIR/err"; t_fail "r3check region failed ($detect)"; }
    grep -q "detect=$detect" "$T_DIR/err" || { cat "$T_DIR/err"; t_fail "expected $detect detection"; }
    [ "$(echo "$out" | sed -n 's/^before //p')" = "$before" ] || t_fail "pre-copy differs from the source ($detect)"
    got=$(echo "$out" | sed -n 's/^after //p')
    [ "$got" = "$want" ] || t_fail "program hash $got, python3 says $want ($detect)"
    src=$(sha256sum < "$img" | cut -d' ' -f1)
    [ "$src" = "$want" ] || t_fail "the source does not hold the final bytes ($detect)"
    rm -f "$img"
    t_log "$detect: region, program and source agree ($want)"
done

# r3run with the python3 bytearray workload, if r3run is in this build
if [ -x "$top_builddir/r3run" ] && [ -e "$top_builddir/.libs/libr3preload.so" ]; then
    img="$T_DIR/run.img"
    SIZE=$((512 * 1024 * 1024))
    cat > "$T_DIR/w.py" <<PY
import hashlib
n = $SIZE
b = bytearray(n)
b[:] = (bytes(range(251)) * (n // 251 + 1))[:n]
b[0:16] = b'R3FILESYNCMARK!!'
print(hashlib.sha256(b).hexdigest())
PY
    out=$(t_timeout 300 "$top_builddir/r3run" --strategy filesync --source "file://$img?size=1G" -- python3 "$T_DIR/w.py") ||
        t_fail "r3run --strategy filesync failed"
    plain=$(python3 "$T_DIR/w.py")
    [ "$out" = "$plain" ] || t_fail "r3run output $out, plain python3 $plain"
    # the bytearray is somewhere in the image: find the marker, hash from there
    off=$(grep -obUa 'R3FILESYNCMARK!!' "$img" | head -n 1 | cut -d: -f1)
    [ -n "$off" ] || t_fail "the source does not hold the bytearray"
    img_hash=$(tail -c +$((off + 1)) "$img" | head -c $SIZE | sha256sum | cut -d' ' -f1)
    [ "$img_hash" = "$plain" ] || t_fail "the source holds other bytes than the program's"
    t_log "r3run: identical output, the source holds the final bytes"
else
    t_log "r3run is not in this build: the strategy was tested through the region API only"
fi
exit 0
