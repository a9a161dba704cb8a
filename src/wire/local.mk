# src/net: the one network layer (addresses, connections + TLS, dial + backoff,
# the server loop, the in-flight budget). Listed here so Makefile.am needs no
# new include line; it may move to src/net/local.mk.
noinst_HEADERS += src/net/net.h src/net/tls_io.h
libr3_la_SOURCES += src/net/addr.c src/net/conn.c src/net/tls.c src/net/dial.c src/net/budget.c \
	src/net/server.c
check_PROGRAMS += tests/unit/test_net
tests_unit_test_net_SOURCES = tests/unit/test_net.c
tests_unit_test_net_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_net_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/test_net

# src/wire: the r3 wire protocol (frames, server, r3:// client) on top of src/net.
noinst_HEADERS += src/wire/tls.h src/wire/frame.h
noinst_HEADERS += src/wire/call.h
pkginclude_HEADERS += include/r3/wire.h
libr3_la_SOURCES += src/wire/frame.c src/wire/server.c src/wire/client.c

# Tests of this part: r3cat (copies between a source URI and a file through
# the library), frame unit tests, integration tests against a real r3serve.
check_PROGRAMS += tests/r3cat
tests_r3cat_SOURCES = tests/r3cat.c
tests_r3cat_LDADD = libr3.la

# bench/wire: r3:// and r3s:// sequential read and latency (CSV; run by hand).
noinst_PROGRAMS += bench/wire
bench_wire_SOURCES = bench/wire.c
bench_wire_LDADD = libr3.la
check_PROGRAMS += tests/unit/test_wire
tests_unit_test_wire_SOURCES = tests/unit/test_wire.c
tests_unit_test_wire_CFLAGS = $(UNIT_CFLAGS) $(MSGPACK_CFLAGS)
tests_unit_test_wire_LDADD = $(UNIT_LDADD) $(MSGPACK_LIBS)
TESTS += tests/unit/test_wire
dist_check_SCRIPTS += tests/integration/wire.sh tests/integration/wire_limits.sh \
	tests/integration/hostile_r3.sh
EXTRA_DIST += tests/integration/wire_peer.py tests/integration/hostile_r3.py
TESTS += tests/integration/wire.sh tests/integration/wire_limits.sh tests/integration/hostile_r3.sh
