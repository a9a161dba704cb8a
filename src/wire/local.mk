# src/wire: the r3 wire protocol (frames, server, r3:// client) and the TLS layer.
noinst_HEADERS += src/wire/tls.h src/wire/frame.h
pkginclude_HEADERS += include/r3/wire.h
libr3core_la_SOURCES += src/wire/tls.c src/wire/frame.c src/wire/server.c src/wire/client.c

# bench/wire: r3:// and r3s:// sequential read and latency (CSV; run by hand).
noinst_PROGRAMS += bench/wire
bench_wire_SOURCES = bench/wire.c
bench_wire_LDADD = libr3core.la
