# filesync: mmap + hash delta sync (hasher, tracker, hub, advertiser,
# receiver, strategy) and the r3sync tool, tests and benchmark.
noinst_HEADERS += filesync/filesync.h
libr3_la_SOURCES += filesync/hash.c filesync/track.c filesync/conn.c \
	filesync/hub.c filesync/advertise.c filesync/receive.c filesync/report.c filesync/dial.c filesync/strategy.c

bin_PROGRAMS += r3sync
r3sync_SOURCES = src/cmd/r3sync.c
r3sync_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) $(OPENSSL_CFLAGS)
r3sync_LDADD = libr3.la $(MSGPACK_LIBS) $(OPENSSL_LIBS)

TESTS += tests/integration/filesync_rounds.sh tests/integration/filesync_late.sh \
	tests/integration/filesync_certs.sh tests/integration/filesync_reconnect.sh \
	tests/integration/filesync_badinput.sh tests/integration/filesync_strategy.sh
TESTS += tests/integration/filesync_giveup.sh tests/integration/filesync_usage.sh \
	tests/integration/filesync_limits.sh
EXTRA_DIST += tests/integration/filesync_giveup.sh tests/integration/filesync_usage.sh \
	tests/integration/filesync_limits.sh
EXTRA_DIST += tests/integration/filesync_rounds.sh tests/integration/filesync_late.sh \
	tests/integration/filesync_certs.sh tests/integration/filesync_reconnect.sh \
	tests/integration/filesync_badinput.sh tests/integration/filesync_strategy.sh \
	tests/integration/filesync_lib.sh tests/integration/filesync_client.py \
	tests/integration/filesync_writer.py

check_PROGRAMS += tests/unit/test_filesync
tests_unit_test_filesync_SOURCES = tests/unit/test_filesync.c
tests_unit_test_filesync_CFLAGS = $(UNIT_CFLAGS) $(MSGPACK_CFLAGS) $(OPENSSL_CFLAGS)
tests_unit_test_filesync_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/test_filesync

# Benchmark (CSV, not a test): bench/filesync [--size 1G] [--r3sync ./r3sync]
noinst_PROGRAMS += bench/filesync
bench_filesync_SOURCES = bench/filesync.c
bench_filesync_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) $(OPENSSL_CFLAGS)
bench_filesync_LDADD = libr3.la $(MSGPACK_LIBS) $(OPENSSL_LIBS)

check_PROGRAMS += tests/filesync_region
tests_filesync_region_SOURCES = tests/filesync_region.c
tests_filesync_region_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS)
tests_filesync_region_LDADD = libr3.la $(OPENSSL_LIBS)
