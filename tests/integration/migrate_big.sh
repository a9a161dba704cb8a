#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# The migration acceptance at full size (issue 12), run by hand once: a
# 1 GiB uffd region on A over a file:// source with a writer thread, B
# leeches it on uffd (in memory and over a kept file), nbd-managed and
# filesync with 0/10/50/100 % of the chunks written again after TRACK, and
# B's bytes must equal A's at the pause. make check runs the same tests at
# 64 MiB (tests/unit/test_migrate). Usage: migrate_big.sh [BUILDDIR] [SIZE]
B=${1:-.}
R3_TEST_MIGRATE_SIZE=${2:-1G} CK_DEFAULT_TIMEOUT=1200 exec "$B/tests/unit/test_migrate"
