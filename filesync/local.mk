# SPDX-License-Identifier: BSD-3-Clause
# filesync: mmap + hash delta sync (hasher, tracker, hub, advertiser,
# receiver, strategy) and the r3sync tool, tests and benchmark.
noinst_HEADERS += filesync/filesync.h
libr3core_la_SOURCES += filesync/hash.c filesync/track.c filesync/conn.c \
	filesync/hub.c filesync/advertise.c filesync/receive.c filesync/report.c filesync/dial.c filesync/strategy.c

bin_PROGRAMS += r3sync
r3sync_SOURCES = src/cmd/r3sync.c
r3sync_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) $(OPENSSL_CFLAGS)
r3sync_LDADD = libr3core.la $(MSGPACK_LIBS) $(OPENSSL_LIBS)

# Its tests are registered in tests/local.mk.

# Benchmark (CSV, not a test): bench/filesync [--size 1G] [--r3sync ./r3sync]
noinst_PROGRAMS += bench/filesync
bench_filesync_SOURCES = bench/filesync.c
bench_filesync_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) $(OPENSSL_CFLAGS)
bench_filesync_LDADD = libr3core.la $(MSGPACK_LIBS) $(OPENSSL_LIBS)
