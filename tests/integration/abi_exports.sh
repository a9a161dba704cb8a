#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The ABI: libr3.so exports exactly the r3_* functions that the installed
# headers declare (nothing internal: no fs_*, nbd_*, r3u_*), and the preload
# shim exports only the malloc family it replaces, and sigaction, signal and mremap (exits by signal, region memory).
. "$(dirname "$0")/lib.sh"
t_need nm

lib="$top_builddir/.libs/libr3.so"
[ -e "$lib" ] || t_fail "$lib was not built"
nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@.*//' | LC_ALL=C sort -u > "$T_DIR/exported"
[ -s "$T_DIR/exported" ] || t_fail "nm found no symbol in $lib"

# What the headers declare, read by the same rule as the version script
# (build-aux/mksyms.sh), from the source headers rather than the built script.
sh "$top_srcdir/build-aux/mksyms.sh" "${CC:-cc} -E -P -I$top_srcdir/include" \
    "$top_srcdir"/include/r3/*.h | sed -n 's/^    \(r3_[A-Za-z0-9_]*\);$/\1/p' |
    LC_ALL=C sort -u > "$T_DIR/declared"
[ "$(wc -l < "$T_DIR/declared")" -ge 20 ] || t_fail "found too few declarations in include/r3/*.h"

bad=$(grep -v '^r3_' "$T_DIR/exported" || true)
[ -z "$bad" ] || t_fail "libr3.so exports names outside r3_*: $(echo $bad | head -c 600)"
extra=$(LC_ALL=C comm -23 "$T_DIR/exported" "$T_DIR/declared")
[ -z "$extra" ] || t_fail "libr3.so exports r3_ functions no installed header declares: $(echo $extra)"
missing=$(LC_ALL=C comm -13 "$T_DIR/exported" "$T_DIR/declared")
[ -z "$missing" ] || t_fail "installed headers declare functions libr3.so does not define: $(echo $missing)"
t_log "libr3.so exports $(wc -l < "$T_DIR/exported") functions, all declared in include/r3/"

# R3_VERSION in <r3/r3.h> follows configure.ac.
pv=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"$/\1/p' "$top_builddir/config.h")
hv=$(sed -n 's/^#define R3_VERSION "\([^"]*\)".*/\1/p' "$top_srcdir/include/r3/r3.h")
[ -n "$pv" ] && [ "$pv" = "$hv" ] || t_fail "R3_VERSION in include/r3/r3.h is '$hv', configure.ac says '$pv'"

shim="$top_builddir/.libs/libr3preload.so"
if [ -e "$shim" ]; then
    other=$(nm -D --defined-only "$shim" | awk '{print $3}' | sed 's/@.*//' |
        grep -Ev '^(malloc|free|calloc|realloc|reallocarray|posix_memalign|aligned_alloc|memalign|valloc|pvalloc|malloc_usable_size|_exit|_Exit|pthread_create|sigaction|signal|mremap)$' || true)
    [ -z "$other" ] || t_fail "libr3preload.so exports more than the malloc family: $(echo $other | head -c 600)"
fi
exit 0
