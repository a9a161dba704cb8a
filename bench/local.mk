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
		-e 's|%ENGINES%|$(abs_top_builddir)/bench|g' -e 's|%TOOLS%|$(abs_top_builddir)|g' \
		-e 's|%DATA%|$(abs_top_srcdir)/bench|g' -e 's|%PYDIR%|$(abs_top_srcdir)/bench|g' \
		-e 's|%VERSION%|$(PACKAGE_VERSION)|g' $(top_srcdir)/bench/r3bench.in >$@.tmp && \
	chmod +x $@.tmp && mv $@.tmp $@
EXTRA_DIST += bench/r3bench_proxy.py docs/r3bench.pod

# Eviction under r3run --max-resident (issue 11): plain vs budgets, file:// and r3://
#   bench/evict --script ../tests/r3run/twopass.py --mib 4096 --budgets 4G,1G,512M --r3serve ./r3serve
noinst_PROGRAMS += bench/evict
bench_evict_SOURCES = bench/evict.c

# r3bench installed (make install): $(bindir)/r3bench; the driver, the proxy,
# nbd.sh and the engines in $(pkglibexecdir); the study's numbers in
# $(pkgdatadir). The engines stay noinst programs of their folders; the hook
# installs the built ones through libtool (which relinks them to the
# installed libr3).
R3BENCH_ENGINES = bench/r3bench_region bench/pipeline bench/wire bench/sources bench/uffd \
	bench/filesync bench/migrate bench/nbd bench/evict
pkglibexec_SCRIPTS = bench/r3bench.py bench/r3bench_proxy.py bench/nbd.sh
pkgdata_DATA = bench/study.csv
CLEANFILES += r3bench.inst
r3bench.inst: $(top_srcdir)/bench/r3bench.in Makefile
	$(AM_V_GEN)sed -e 's|%BUILDDIR%|$(pkglibexecdir)|g' -e 's|%SRCDIR%|$(pkglibexecdir)|g' \
		-e 's|%ENGINES%|$(pkglibexecdir)|g' -e 's|%TOOLS%|$(bindir)|g' \
		-e 's|%DATA%|$(pkgdatadir)|g' -e 's|%PYDIR%|$(pkglibexecdir)|g' \
		-e 's|%VERSION%|$(PACKAGE_VERSION)|g' $(top_srcdir)/bench/r3bench.in >$@.tmp && \
	chmod +x $@.tmp && mv $@.tmp $@
all-local: r3bench.inst
install-exec-local: r3bench.inst
	$(MKDIR_P) "$(DESTDIR)$(bindir)" "$(DESTDIR)$(pkglibexecdir)"
	$(INSTALL_SCRIPT) r3bench.inst "$(DESTDIR)$(bindir)/r3bench"
	@for e in $(R3BENCH_ENGINES); do \
	  test -f "$$e$(EXEEXT)" || { echo "r3bench: engine $$e not built: not installed"; continue; }; \
	  echo " $(LIBTOOL) --mode=install $(INSTALL_PROGRAM) $$e$(EXEEXT) $(DESTDIR)$(pkglibexecdir)"; \
	  $(LIBTOOL) $(AM_LIBTOOLFLAGS) $(LIBTOOLFLAGS) --mode=install $(INSTALL_PROGRAM) "$$e$(EXEEXT)" \
	    "$(DESTDIR)$(pkglibexecdir)/`basename $$e`$(EXEEXT)" >/dev/null || exit 1; \
	done
uninstall-local:
	rm -f "$(DESTDIR)$(bindir)/r3bench"
	for e in $(R3BENCH_ENGINES); do rm -f "$(DESTDIR)$(pkglibexecdir)/`basename $$e`$(EXEEXT)"; done
