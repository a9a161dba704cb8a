# src/migrate: seeder + leecher (issue 12) on regions and the r3 protocol.
pkginclude_HEADERS += include/r3/migrate.h
noinst_HEADERS += src/migrate/proto.h
libr3_la_SOURCES += src/migrate/seed.c src/migrate/leech.c
