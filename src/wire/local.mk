# src/wire: the r3 wire protocol (frames, server, r3:// client) and the TLS layer.
noinst_HEADERS += src/wire/tls.h src/wire/frame.h
pkginclude_HEADERS += include/r3/wire.h
libr3_la_SOURCES += src/wire/tls.c src/wire/frame.c src/wire/server.c src/wire/client.c

# Tests of this part: r3cat (copies between a source URI and a file through
# the library), frame unit tests, integration tests against a real r3serve.
check_PROGRAMS += tests/r3cat
tests_r3cat_SOURCES = tests/r3cat.c
tests_r3cat_LDADD = libr3.la
