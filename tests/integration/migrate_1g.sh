#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# Issue 12's library acceptance at its size, in make check: a 1 GiB uffd
# region on A over a file:// source with a thread writing random chunks the
# whole time; B leeches it (uffd), finalizes, and B's bytes must equal A's
# checksum taken inside before_finalize, with 0, 10, 50 and 100 % of the
# chunks written again after TRACK; plus the seeder/leecher deaths and the
# protocol checks of the same test case (tests/unit/test_migrate.c, case
# "migrate"). The other strategies run at 64 MiB in test_migrate itself, and
# at 1 GiB by hand (migrate_big.sh). Under a sanitizer (ASan, TSan: several
# times slower, with shadow memory for three 1 GiB buffers) and in a coverage
# build (-O0, counters; its 5 s request deadlines were missed at 1 GiB on a
# loaded machine) it runs at 256 MiB instead, and says so.
: "${top_builddir:=$(cd "$(dirname "$0")/../.." && pwd)}"
T="$top_builddir/tests/unit/test_migrate"
SIZE=1G
if ldd "$T" 2>/dev/null | grep -q 'lib[at]san'; then
    SIZE=256M
    echo "migrate_1g: a sanitizer build: 256 MiB instead of 1 GiB"
elif grep -q '__gcov_dump' "$T" 2>/dev/null; then
    SIZE=256M
    echo "migrate_1g: a coverage build: 256 MiB instead of 1 GiB"
fi
echo "migrate_1g: test_migrate case 'migrate' at $SIZE"
R3_TEST_MIGRATE_SIZE=$SIZE CK_DEFAULT_TIMEOUT=1200 CK_RUN_CASE=migrate exec "$T"
