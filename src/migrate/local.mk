# SPDX-License-Identifier: BSD-3-Clause
# src/migrate: seeder + leecher (issue 12) on regions and the r3 protocol.
pkginclude_HEADERS += include/r3/migrate.h
noinst_HEADERS += src/migrate/proto.h
libr3core_la_SOURCES += src/migrate/seed.c src/migrate/leech.c
noinst_HEADERS += src/migrate/gate.h
libr3core_la_SOURCES += src/migrate/gate.c src/migrate/leech_source.c

# Its tests (test_migrate, migrate_peer, migrate_*.sh) are registered in tests/local.mk.

# examples/kvmigrate: a key-value server moved between hosts (libr3 API only).
noinst_PROGRAMS += examples/kvmigrate examples/kvmigrate-load
examples_kvmigrate_SOURCES = examples/kvmigrate.c
examples_kvmigrate_LDADD = libr3.la
examples_kvmigrate_load_SOURCES = examples/kvmigrate-load.c
examples_kvmigrate_load_LDADD = libr3.la

# bench/migrate: downtime and total time of a migration (CSV; run by hand).
noinst_PROGRAMS += bench/migrate
bench_migrate_SOURCES = bench/migrate.c
bench_migrate_LDADD = libr3.la
noinst_HEADERS += src/migrate/leech.h
