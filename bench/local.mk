# SPDX-License-Identifier: BSD-3-Clause
# Benchmarks: programs that print CSV (never tests). Run them by hand, e.g.
#   bench/pipeline --size 1G --rtt-ms 0,1,10,40
noinst_PROGRAMS += bench/pipeline
bench_pipeline_SOURCES = bench/pipeline.c
bench_pipeline_LDADD = libr3core.la

# r3bench: one command for every experiment (bench/README.md). The driver is
# bench/r3bench.py; `r3bench` in the build directory runs it with this
# build's engines. bench/r3bench_region is its region engine.
noinst_PROGRAMS += bench/r3bench_region
bench_r3bench_region_SOURCES = bench/r3bench_region.c
bench_r3bench_region_LDADD = libr3.la
noinst_SCRIPTS = r3bench
CLEANFILES += r3bench
EXTRA_DIST += bench/r3bench.in bench/r3bench.py bench/study.csv bench/README.md
r3bench: $(top_srcdir)/bench/r3bench.in Makefile
	$(AM_V_GEN)sed -e 's|%BUILDDIR%|$(abs_top_builddir)|g' -e 's|%SRCDIR%|$(abs_top_srcdir)|g' \
		-e 's|%VERSION%|$(PACKAGE_VERSION)|g' $(top_srcdir)/bench/r3bench.in >$@.tmp && \
	chmod +x $@.tmp && mv $@.tmp $@
EXTRA_DIST += bench/r3bench_proxy.py docs/r3bench.pod

# Eviction under r3run --max-resident (issue 11): plain vs budgets, file:// and r3://
#   bench/evict --script ../tests/r3run/twopass.py --mib 4096 --budgets 4G,1G,512M --r3serve ./r3serve
noinst_PROGRAMS += bench/evict
bench_evict_SOURCES = bench/evict.c
