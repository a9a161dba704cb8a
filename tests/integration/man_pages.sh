#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The manual pages: each POD source is clean (podchecker), each built page
# renders with man -l without a warning, every long flag that a tool's
# --help prints (each r3sync subcommand's too) is in its page, every function
# libr3.so exports is in libr3(3), and every source scheme and URI parameter
# the code accepts is in r3-uri(7).
. "$(dirname "$0")/lib.sh"
t_need man
t_need podchecker
t_need nm
t_need col
t_need python3

docs="$top_srcdir/docs"
pages="r3run.1 r3serve.1 r3mount.1 r3sync.1 libr3.3 r3-uri.7"

for p in $pages; do
    pod="$docs/${p%.*}.pod"
    [ -f "$pod" ] || t_fail "$pod is missing"
    podchecker -warnings "$pod" > "$T_DIR/pc" 2>&1 || t_fail "podchecker: $(cat "$T_DIR/pc")"
    ! grep -q WARNING "$T_DIR/pc" || t_fail "podchecker: $(grep WARNING "$T_DIR/pc")"
    page="$top_builddir/docs/$p"
    [ -s "$page" ] || t_fail "$page was not built"
    # man -l through groff with every warning on; anything on stderr fails.
    LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings=all -E ascii -l "$page" \
        > "$T_DIR/$p.txt" 2> "$T_DIR/$p.err" || t_fail "man -l $page exited $?: $(cat "$T_DIR/$p.err")"
    [ ! -s "$T_DIR/$p.err" ] || t_fail "man -l $page warns: $(head -5 "$T_DIR/$p.err")"
    grep -q '^NAME' "$T_DIR/$p.txt" || t_fail "man -l $page shows no NAME section"
    col -b < "$T_DIR/$p.txt" > "$T_DIR/$p.plain"
done

# in_page PAGE WORD: WORD stands in the rendered page as a whole word.
in_page() { grep -Eq -- "(^|[^A-Za-z0-9_-])$2([^A-Za-z0-9_-]|\$)" "$T_DIR/$1.plain"; }

# Every long flag of a tool's --help, in that tool's page.
check_flags() {  # PAGE HELP-TEXT-FILE WHAT
    local f n=0
    for f in $(grep -Eo -- '--[a-z0-9][a-z0-9-]*' "$2" | sort -u); do
        in_page "$1" "$f" || t_fail "$3 --help shows $f, which $1 does not mention"
        n=$((n + 1))
    done
    [ "$n" -gt 0 ] || t_fail "$3 --help shows no long flag"
}
for tool in r3run r3serve r3mount r3sync; do
    exe="$top_builddir/$tool"
    [ -x "$exe" ] || t_fail "$exe was not built"
    "$exe" --help > "$T_DIR/$tool.help" 2>/dev/null || t_fail "$tool --help exited $?"
    check_flags "$tool.1" "$T_DIR/$tool.help" "$tool"
done
for sub in hub advertise receive; do
    "$top_builddir/r3sync" "$sub" --help > "$T_DIR/r3sync-$sub.help" 2>/dev/null ||
        t_fail "r3sync $sub --help exited $?"
    check_flags r3sync.1 "$T_DIR/r3sync-$sub.help" "r3sync $sub"
done

# Every exported function in libr3(3).
n=0
for fn in $(nm -D --defined-only "$top_builddir/.libs/libr3.so" | awk '{print $3}' | sed 's/@.*//'); do
    in_page libr3.3 "$fn" || t_fail "libr3(3) does not describe $fn"
    n=$((n + 1))
done
[ "$n" -ge 20 ] || t_fail "libr3.so exports only $n functions"

# Every scheme of the registry and every URI parameter a source accepts
# (the allowed[] lists given to r3_uri_check_params), in r3-uri(7).
schemes=$(sed -n 's/^ *{ *"\([a-z0-9+]*\)", *r3_[a-z0-9_]* *},.*/\1/p' "$top_srcdir/src/registry.c")
[ -n "$schemes" ] || t_fail "found no scheme in src/registry.c"
for s in $schemes; do
    grep -Fq -- "$s:" "$T_DIR/r3-uri.7.plain" || t_fail "r3-uri(7) does not describe the scheme $s:"
done
params=$(cat "$top_srcdir"/src/*.c "$top_srcdir"/src/*/*.c "$top_srcdir"/nbd/*.c 2>/dev/null |
    python3 -c 'import re,sys
for m in re.finditer(r"allowed\[\]\s*=\s*\{([^}]*)\}", sys.stdin.read()):
    print("\n".join(re.findall(r"\"([a-z0-9_-]+)\"", m.group(1))))' | sort -u)
[ -n "$params" ] || t_fail "found no URI parameter list in the sources"
for p in $params; do
    grep -Eq -- "(^|[^a-z0-9_-])$p=" "$T_DIR/r3-uri.7.plain" ||
        t_fail "r3-uri(7) does not describe the URI parameter $p="
done
t_log "6 pages render cleanly; flags, functions, schemes and parameters all documented"
exit 0
