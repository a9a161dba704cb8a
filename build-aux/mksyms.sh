#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# Print the version script of libr3.so: every r3_* function that the
# installed headers declare is global, everything else is local.
#   mksyms.sh "CPP COMMAND" include/r3/a.h include/r3/b.h ... > libr3.sym
# The headers go through the preprocessor first, so comments (which mention
# functions) and macros do not count; a declaration is an r3_ name followed
# by "(", which excludes types (struct r3_x *) and function-pointer members.
set -e
cpp=$1; shift
echo "# Generated from the installed headers by build-aux/mksyms.sh; do not edit."
text=$(for h in "$@"; do $cpp "$h" || exit 1; done) || exit 1
echo "{"
echo "  global:"
printf '%s\n' "$text" | tr '\n' ' ' | grep -o '\br3_[A-Za-z0-9_]*[[:space:]]*(' | tr -d ' \t(' |
    LC_ALL=C sort -u | sed 's/^/    /; s/$/;/'
echo "  local: *;"
echo "};"
