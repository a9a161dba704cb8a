# uffd: the userfaultfd strategy (see Makefile.am)
pkginclude_HEADERS += include/r3/uffd.h
noinst_HEADERS += uffd/compat.h uffd/uffd.h
libr3core_la_SOURCES += uffd/probe.c uffd/region.c uffd/view.c uffd/fault.c uffd/track.c uffd/access.c

# Its tests are registered in tests/local.mk.

# Benchmark (prints CSV; not a test): bench/uffd --help
noinst_PROGRAMS += bench/uffd
bench_uffd_SOURCES = bench/uffd.c
bench_uffd_CFLAGS = $(AM_CFLAGS) $(XXHASH_CFLAGS)
bench_uffd_LDADD = libr3core.la $(XXHASH_LIBS)
