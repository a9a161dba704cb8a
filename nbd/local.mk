# SPDX-License-Identifier: BSD-3-Clause
# nbd: NBD server + client, mounts (kernel /dev/nbdX, FUSE file), strategies.
noinst_HEADERS += nbd/proto.h nbd/server.h nbd/client.h nbd/fuse.h nbd/kernel.h nbd/mount.h nbd/helper.h
libr3core_la_SOURCES += nbd/server.c nbd/client.c nbd/source.c nbd/fuse.c nbd/kernel.c nbd/mount.c nbd/helper.c nbd/strategy.c
noinst_HEADERS += nbd/written.h
libr3core_la_SOURCES += nbd/written.c

# Its tests are registered in tests/local.mk.

# Benchmark (not a test): bench/nbd.sh drives bench/nbd, fio, nbdkit, nbdfuse.
noinst_PROGRAMS += bench/nbd
bench_nbd_SOURCES = bench/nbd.c
bench_nbd_LDADD = libr3core.la
EXTRA_DIST += bench/nbd.sh

# The mount helper as a program of its own (nbd/helper.h): the library
# execs it right after fork; the build tree's copy first, else the installed.
pkglibexec_PROGRAMS = nbd/r3-nbd-helper
nbd_r3_nbd_helper_SOURCES = nbd/helper_prog.c
nbd_r3_nbd_helper_LDADD = libr3core.la
if R3_STATIC_HELPER
# started on every nbd region's open: static, it needs no dynamic loader
nbd_r3_nbd_helper_LDFLAGS = -all-static
endif
# r3run's shim carries its own copy of the library (src/preload/local.mk):
# it execs the same helper, so the helper never runs as a fork of the program
# (whose command line a `pkill -f program` would match).
R3_NBD_HELPER_DEFS = -DR3_NBD_HELPER_BUILD='"$(abs_top_builddir)/nbd/r3-nbd-helper"' \
	-DR3_NBD_HELPER_INSTALLED='"$(pkglibexecdir)/r3-nbd-helper"'
libr3core_la_CFLAGS += $(R3_NBD_HELPER_DEFS)
libr3shim_la_CFLAGS += $(R3_NBD_HELPER_DEFS)
