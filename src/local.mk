# libr3 core: errors, URIs, registry, sources, stages, region dispatch.
noinst_HEADERS += src/internal.h
libr3_la_SOURCES += src/error.c src/util.c src/uri.c src/registry.c src/source.c src/region.c src/thread.c \
	src/sources/mem.c src/sources/file.c src/sources/dir.c
