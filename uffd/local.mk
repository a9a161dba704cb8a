# SPDX-License-Identifier: BSD-3-Clause
# uffd: the userfaultfd strategy (see Makefile.am)
noinst_HEADERS += uffd/uffd.h
libr3core_la_SOURCES += uffd/region.c uffd/view.c uffd/fault.c uffd/track.c uffd/access.c uffd/remote.c uffd/fork.c uffd/evict.c uffd/drop.c uffd/zero.c

# Its tests are registered in tests/local.mk.

# Benchmark (prints CSV; not a test): bench/uffd --help
noinst_PROGRAMS += bench/uffd
bench_uffd_SOURCES = bench/uffd.c
bench_uffd_CFLAGS = $(AM_CFLAGS) $(XXHASH_CFLAGS)
bench_uffd_LDADD = libr3core.la $(XXHASH_LIBS)
