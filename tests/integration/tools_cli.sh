#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The tools' surface (issue 10), for every tool, r3sync subcommand, bench
# program and example:
#   --help and -h      exit 0, usage on stdout, nothing on stderr;
#   --version and -V   exit 0, "NAME (r3) VERSION" on stdout;
#   a usage error      (unknown flag, bad value, missing value, missing
#                      argument) exits 2 with exactly two lines on stderr:
#                      "NAME: what is wrong", then
#                      "Try 'NAME --help' for more information."
# Every failure is listed before the test fails, not only the first.
. "$(dirname "$0")/lib.sh"

B=$top_builddir
version=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"$/\1/p' "$B/config.h")
[ -n "$version" ] || t_fail "no PACKAGE_VERSION in $B/config.h"
failures=0
bad() { echo "[$T_NAME] FAIL: $*" >&2; failures=$((failures + 1)); }

# run OUT-PREFIX ARGV...: stdout, stderr and status into files.
run() {
    local o=$1; shift
    t_timeout 5 "$@" < /dev/null > "$o.out" 2> "$o.err"
    echo $? > "$o.rc"
}

# surface NAME ARGV...: --help/-h/--version/-V of the command ARGV.
# NAME is how the command names itself; a bench program may name itself
# bench/X or X (the --version and Try lines must then agree).
surface() {
    local name=$1 o="$T_DIR/s" f; shift
    for f in --help -h; do
        run "$o" "$@" "$f"
        [ "$(cat "$o.rc")" = 0 ] || bad "$name $f exits $(cat "$o.rc") (want 0)"
        grep -qi 'usage' "$o.out" || bad "$name $f prints no usage on stdout"
        [ ! -s "$o.err" ] || bad "$name $f writes to stderr: $(head -c 200 "$o.err")"
    done
    for f in --version -V; do
        run "$o" "$@" "$f"
        [ "$(cat "$o.rc")" = 0 ] || bad "$name $f exits $(cat "$o.rc") (want 0)"
        grep -Eqx -- "($name|${name#bench/}) \\(r3\\) $version" "$o.out" ||
            bad "$name $f prints '$(head -1 "$o.out")' (want '$name (r3) $version')"
    done
}

# usage NAME ARGV...: ARGV is a usage error for the command called NAME.
usage() {
    local name=$1 o="$T_DIR/u" n l1 l2; shift
    run "$o" "$@"
    local what="'${*#$B/}'"
    [ "$(cat "$o.rc")" = 2 ] || bad "$what exits $(cat "$o.rc") (want 2)"
    n=$(wc -l < "$o.err")
    l1=$(sed -n 1p "$o.err"); l2=$(sed -n 2p "$o.err")
    if [ "$n" != 2 ]; then
        bad "$what writes $n lines on stderr (want 2): $(head -c 300 "$o.err" | tr '\n' '|')"
    elif ! { [[ "$l1" == "$name: "?* && "$l2" == "Try '$name --help' for more information." ]] ||
             [[ "$l1" == "${name#bench/}: "?* && "$l2" == "Try '${name#bench/} --help' for more information." ]]; }; then
        bad "$what stderr is '$l1|$l2' (want '$name: ...|Try '$name --help' for more information.')"
    fi
}

for exe in r3run r3serve r3mount r3sync bench/pipeline bench/filesync bench/nbd \
           bench/sources bench/uffd bench/wire examples/region_demo; do
    [ -x "$B/$exe" ] || t_fail "$B/$exe was not built"
done
M='mem:?size=1M'
# A mount point that does not exist: should a bad argument be accepted,
# r3mount fails to mount instead of mounting something.
D="$T_DIR/no-such-dir"

surface r3run "$B/r3run"
usage r3run "$B/r3run" --source "$M" --no-such-flag true
usage r3run "$B/r3run" --source "$M" --chunk 3K true
usage r3run "$B/r3run" --source "$M" --push-interval 500 true
usage r3run "$B/r3run" --source "$M" --pull-workers many true
usage r3run "$B/r3run" --source "$M" --strategy no-such-strategy true
usage r3run "$B/r3run" --size
usage r3run "$B/r3run"

surface r3serve "$B/r3serve"
usage r3serve "$B/r3serve" --no-such-flag
usage r3serve "$B/r3serve" --listen nonsense --source "$M"
usage r3serve "$B/r3serve" --listen 127.0.0.1:0 --source "$M" --workers many
usage r3serve "$B/r3serve" --listen 127.0.0.1:0 --source "$M" --max-request 3X
usage r3serve "$B/r3serve" --listen 127.0.0.1:0 --source "$M" --tls-cert "$T_DIR/c.pem"
usage r3serve "$B/r3serve" --listen 127.0.0.1:0 --source
usage r3serve "$B/r3serve" --source "$M"

surface r3mount "$B/r3mount"
usage r3mount "$B/r3mount" --no-such-flag "$M" "$D"
usage r3mount "$B/r3mount" --chunk 3K "$M" "$D"
usage r3mount "$B/r3mount" --mount sideways "$M" "$D"
usage r3mount "$B/r3mount" --push-interval 500 "$M" "$D"
usage r3mount "$B/r3mount" "$M" "$D" --name
usage r3mount "$B/r3mount" "$M"

surface r3sync "$B/r3sync"
usage r3sync "$B/r3sync"
usage r3sync "$B/r3sync" no-such-subcommand
usage r3sync "$B/r3sync" --no-such-flag
P="$T_DIR/none.pem"
surface "r3sync hub" "$B/r3sync" hub
usage "r3sync hub" "$B/r3sync" hub --no-such-flag
usage "r3sync hub" "$B/r3sync" hub --listen 127.0.0.1:0
usage "r3sync hub" "$B/r3sync" hub --listen nonsense --tls-cert "$P" --tls-key "$P" --tls-ca "$P"
usage "r3sync hub" "$B/r3sync" hub --tls-cert "$P" --tls-key "$P" --tls-ca "$P" --listen
surface "r3sync advertise" "$B/r3sync" advertise
A=(--hub 127.0.0.1:1 --cert "$P" --key "$P" --ca "$P")
usage "r3sync advertise" "$B/r3sync" advertise "$T_DIR/f" "${A[@]}" --no-such-flag
usage "r3sync advertise" "$B/r3sync" advertise "$T_DIR/f" "${A[@]}" --block 3K
usage "r3sync advertise" "$B/r3sync" advertise "$T_DIR/f" "${A[@]}" --interval 1000
usage "r3sync advertise" "$B/r3sync" advertise "$T_DIR/f" "${A[@]}" --threads many
usage "r3sync advertise" "$B/r3sync" advertise "$T_DIR/f" "${A[@]}" --rounds
usage "r3sync advertise" "$B/r3sync" advertise "${A[@]}"
surface "r3sync receive" "$B/r3sync" receive
usage "r3sync receive" "$B/r3sync" receive "$T_DIR" "${A[@]}" --no-such-flag
usage "r3sync receive" "$B/r3sync" receive "$T_DIR" "${A[@]}" --threads many
usage "r3sync receive" "$B/r3sync" receive "$T_DIR" "${A[@]}" --hub
usage "r3sync receive" "$B/r3sync" receive "${A[@]}"

# Bench programs: each with an unknown flag, a bad value and a missing value.
for b in pipeline sources uffd filesync; do
    surface "bench/$b" "$B/bench/$b"
    usage "bench/$b" "$B/bench/$b" --no-such-flag
    usage "bench/$b" "$B/bench/$b" --size 3X
    usage "bench/$b" "$B/bench/$b" --size
done
surface bench/wire "$B/bench/wire"
usage bench/wire "$B/bench/wire" --no-such-flag r3://127.0.0.1:1/x
usage bench/wire "$B/bench/wire" -c 3X r3://127.0.0.1:1/x
usage bench/wire "$B/bench/wire" -c
surface bench/nbd "$B/bench/nbd"
usage bench/nbd "$B/bench/nbd" --no-such-flag
usage bench/nbd "$B/bench/nbd" no-such-mode
usage bench/nbd "$B/bench/nbd" mmapread
surface bench/nbd.sh "$top_srcdir/bench/nbd.sh"
usage bench/nbd.sh "$top_srcdir/bench/nbd.sh" --no-such-flag

surface region_demo "$B/examples/region_demo"
usage region_demo "$B/examples/region_demo" --no-such-flag
usage region_demo "$B/examples/region_demo" write
usage region_demo "$B/examples/region_demo" read "$M" extra

[ "$failures" = 0 ] || t_fail "$failures check(s) of the tools' surface failed (listed above)"
t_log "every tool, subcommand, bench and example passes"
exit 0
