# SPDX-License-Identifier: BSD-3-Clause
# libr3 core: errors, URIs, registry, sources, stages, region dispatch.
noinst_HEADERS += src/internal.h src/cover.h
libr3core_la_SOURCES += src/error.c src/util.c src/uri.c src/registry.c src/source.c src/region.c src/thread.c src/order.c \
	src/sources/mem.c src/sources/file.c src/sources/dir.c

# Remote chunk sources: Redis (+ Cluster) and S3.
noinst_HEADERS += src/sources/redis.h
libr3core_la_SOURCES += src/sources/redis.c src/sources/redis_cluster.c src/sources/s3.c
# Their tests are registered in tests/local.mk.
# bench/sources: every source side by side (CSV; run by hand, never a test).
noinst_PROGRAMS += bench/sources
bench_sources_SOURCES = bench/sources.c
bench_sources_LDADD = libr3core.la

# src/kernel: kernel helpers shared by the strategies (uffd open, PAGEMAP_SCAN, probe).
noinst_HEADERS += src/kernel/kernel.h src/kernel/compat.h
pkginclude_HEADERS += include/r3/probe.h
libr3core_la_SOURCES += src/kernel/uffd.c src/kernel/pagemap.c src/kernel/wptrack.c src/kernel/probe.c
