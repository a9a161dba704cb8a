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
