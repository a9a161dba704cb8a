# uffd: the userfaultfd strategy (see Makefile.am)
noinst_HEADERS += uffd/uffd.h
libr3_la_SOURCES += uffd/region.c uffd/view.c uffd/fault.c uffd/track.c uffd/access.c uffd/remote.c uffd/fork.c uffd/evict.c

# Tests of this part.
noinst_HEADERS += tests/uffd/pattern.h
check_PROGRAMS += tests/unit/test_uffd
tests_unit_test_uffd_SOURCES = tests/unit/test_uffd.c
tests_unit_test_uffd_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_uffd_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/test_uffd

check_PROGRAMS += tests/uffd/uffd_rw
tests_uffd_uffd_rw_SOURCES = tests/uffd/uffd_rw.c
tests_uffd_uffd_rw_LDADD = libr3.la
dist_check_SCRIPTS += tests/integration/uffd_two_procs.sh
TESTS += tests/integration/uffd_two_procs.sh

# Benchmark (prints CSV; not a test): bench/uffd --help
noinst_PROGRAMS += bench/uffd
bench_uffd_SOURCES = bench/uffd.c
bench_uffd_CFLAGS = $(AM_CFLAGS) $(XXHASH_CFLAGS)
bench_uffd_LDADD = libr3.la $(XXHASH_LIBS)
