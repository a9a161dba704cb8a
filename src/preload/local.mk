# SPDX-License-Identifier: BSD-3-Clause
# src/preload: libr3preload.so, the LD_PRELOAD shim r3run puts in front of a
# program. It carries its own copy of every libr3 source, compiled WITHOUT the
# sanitizer flags (a preloaded, non-sanitized program must not need libasan)
# and with initial-exec TLS (the shim's malloc reads thread-locals, which must
# never allocate). Only the malloc family is exported: the r3_* copy stays
# private, so a program that links libr3.so itself keeps its own.
#
# libr3preload.so itself is a small stub (stub.c, glibc only): every process
# of the program's tree loads it, and only the process r3run started loads
# the shim proper, libr3shim.so (shim.c with libr3 and every source's
# libraries), installed next to it, and forwards to it.
lib_LTLIBRARIES += libr3preload.la libr3shim.la
noinst_HEADERS += src/preload/palloc.h src/preload/env.h
libr3preload_la_SOURCES = src/preload/stub.c
libr3preload_la_CFLAGS = -std=gnu11 $(WARN_CFLAGS) $(COV_CFLAGS) -pthread
libr3preload_la_LIBADD = -ldl
libr3preload_la_LDFLAGS = -module -avoid-version -shared -pthread $(COV_CFLAGS) \
	-export-symbols-regex '^(malloc|free|calloc|realloc|reallocarray|posix_memalign|aligned_alloc|memalign|valloc|pvalloc|malloc_usable_size|_exit|_Exit|pthread_create|sigaction|signal|mremap)$$'
libr3shim_la_SOURCES = src/preload/shim.c src/preload/palloc.c src/preload/env.c \
	$(libr3core_la_SOURCES)
libr3shim_la_CFLAGS = -std=gnu11 $(WARN_CFLAGS) $(COV_CFLAGS) -pthread -ftls-model=initial-exec \
	$(CURL_CFLAGS) $(HIREDIS_CFLAGS) $(MSGPACK_CFLAGS) $(OPENSSL_CFLAGS) $(FUSE3_CFLAGS) $(XXHASH_CFLAGS)
libr3shim_la_LIBADD = $(CURL_LIBS) $(HIREDIS_LIBS) $(MSGPACK_LIBS) $(OPENSSL_LIBS) \
	$(FUSE3_LIBS) $(XXHASH_LIBS) -ldl
libr3shim_la_LDFLAGS = -module -avoid-version -shared -pthread $(COV_CFLAGS) \
	-export-symbols-regex '^(malloc|free|calloc|realloc|reallocarray|posix_memalign|aligned_alloc|memalign|valloc|pvalloc|malloc_usable_size|_exit|_Exit|pthread_create|sigaction|signal|mremap)$$'
