# SPDX-License-Identifier: BSD-3-Clause
# src/net: the one network layer (addresses, connections + TLS, dial + backoff,
# the server loop, the in-flight budget). Listed here so Makefile.am needs no
# new include line; it may move to src/net/local.mk.
noinst_HEADERS += src/net/net.h src/net/tls_io.h
libr3core_la_SOURCES += src/net/addr.c src/net/conn.c src/net/tls.c src/net/dial.c src/net/budget.c \
	src/net/server.c

# src/wire: the r3 wire protocol (frames, server, r3:// client) on top of src/net.
noinst_HEADERS += src/wire/frame.h
noinst_HEADERS += src/wire/call.h
pkginclude_HEADERS += include/r3/wire.h
libr3core_la_SOURCES += src/wire/frame.c src/wire/server.c src/wire/client.c

# bench/wire: r3:// and r3s:// sequential read and latency (CSV; run by hand).
noinst_PROGRAMS += bench/wire
bench_wire_SOURCES = bench/wire.c
bench_wire_LDADD = libr3core.la
