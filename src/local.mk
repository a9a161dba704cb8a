# libr3 core: errors, URIs, registry, sources, stages, region dispatch.
noinst_HEADERS += src/internal.h
libr3core_la_SOURCES += src/error.c src/util.c src/uri.c src/registry.c src/source.c src/region.c src/thread.c \
	src/sources/mem.c src/sources/file.c src/sources/dir.c

# Remote chunk sources: Redis (+ Cluster) and S3 (issue 4, branch stores).
noinst_HEADERS += src/sources/redis.h
libr3core_la_SOURCES += src/sources/redis.c src/sources/redis_cluster.c src/sources/s3.c
noinst_PROGRAMS += tests/srccheck
tests_srccheck_SOURCES = tests/srccheck.c
tests_srccheck_LDADD = libr3core.la
EXTRA_DIST += tests/integration/sigv4proxy.py tests/integration/sources_lib.sh
TESTS += tests/integration/redis.sh tests/integration/redis_cluster.sh tests/integration/s3.sh \
	tests/integration/sources_bad.sh
EXTRA_DIST += tests/integration/redis.sh tests/integration/redis_cluster.sh tests/integration/s3.sh \
	tests/integration/sources_bad.sh
check_PROGRAMS += tests/unit/test_redis_slot
tests_unit_test_redis_slot_SOURCES = tests/unit/test_redis_slot.c
tests_unit_test_redis_slot_CFLAGS = $(UNIT_CFLAGS) $(HIREDIS_CFLAGS)
tests_unit_test_redis_slot_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/test_redis_slot
# bench/sources: every source side by side (CSV; run by hand, never a test).
noinst_PROGRAMS += bench/sources
bench_sources_SOURCES = bench/sources.c
bench_sources_LDADD = libr3core.la
