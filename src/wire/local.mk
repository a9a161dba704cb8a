# src/wire: the r3 wire protocol (frames, server, r3:// client) and the TLS layer.
noinst_HEADERS += src/wire/tls.h
libr3_la_SOURCES += src/wire/tls.c
