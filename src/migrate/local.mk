# SPDX-License-Identifier: BSD-3-Clause
# src/migrate: seeder + leecher (issue 12) on regions and the r3 protocol.
pkginclude_HEADERS += include/r3/migrate.h
noinst_HEADERS += src/migrate/proto.h
libr3core_la_SOURCES += src/migrate/seed.c src/migrate/leech.c
noinst_HEADERS += src/migrate/gate.h
libr3core_la_SOURCES += src/migrate/gate.c src/migrate/leech_source.c

check_PROGRAMS += tests/unit/test_migrate
tests_unit_test_migrate_SOURCES = tests/unit/test_migrate.c
tests_unit_test_migrate_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_migrate_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/test_migrate

# A migration peer in its own process, for the tests that kill one.
check_PROGRAMS += tests/migrate_peer
tests_migrate_peer_SOURCES = tests/migrate_peer.c
tests_migrate_peer_LDADD = libr3.la
dist_check_SCRIPTS += tests/integration/migrate_kill.sh tests/integration/migrate_tls.sh
EXTRA_DIST += tests/integration/migrate_lib.sh
TESTS += tests/integration/migrate_kill.sh tests/integration/migrate_tls.sh

# examples/kvmigrate: a key-value server moved between hosts (libr3 API only).
noinst_PROGRAMS += examples/kvmigrate examples/kvmigrate-load
examples_kvmigrate_SOURCES = examples/kvmigrate.c
examples_kvmigrate_LDADD = libr3.la
examples_kvmigrate_load_SOURCES = examples/kvmigrate-load.c
examples_kvmigrate_load_LDADD = libr3.la
dist_check_SCRIPTS += tests/integration/migrate_kv.sh
TESTS += tests/integration/migrate_kv.sh

# bench/migrate: downtime and total time of a migration (CSV; run by hand).
noinst_PROGRAMS += bench/migrate
bench_migrate_SOURCES = bench/migrate.c
bench_migrate_LDADD = libr3.la
