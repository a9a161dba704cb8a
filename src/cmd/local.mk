# src/cmd: the command-line tools.
bin_PROGRAMS += r3serve
r3serve_SOURCES = src/cmd/r3serve.c
r3serve_LDADD = libr3.la

bin_PROGRAMS += r3mount
r3mount_SOURCES = src/cmd/r3mount.c
r3mount_LDADD = libr3.la
bin_PROGRAMS += r3run
r3run_SOURCES = src/cmd/r3run.c src/preload/env.c
r3run_CPPFLAGS = $(AM_CPPFLAGS) -DR3_LIBDIR='"$(libdir)"'
r3run_LDADD = libr3.la

# Test programs run under r3run, and the integration tests.
check_PROGRAMS += tests/r3run/alloc_check tests/r3run/forker tests/r3run/static_true
check_PROGRAMS += tests/r3run/forkcow tests/r3run/sparse_touch tests/r3run/orphan
tests_r3run_orphan_SOURCES = tests/r3run/orphan.c
tests_r3run_orphan_CFLAGS = $(R3RUN_TEST_CFLAGS)
tests_r3run_orphan_LDFLAGS = -pthread
tests_r3run_sparse_touch_SOURCES = tests/r3run/sparse_touch.c
tests_r3run_sparse_touch_CFLAGS = $(R3RUN_TEST_CFLAGS)
tests_r3run_sparse_touch_LDFLAGS = -pthread
tests_r3run_forkcow_SOURCES = tests/r3run/forkcow.c
tests_r3run_forkcow_CFLAGS = $(R3RUN_TEST_CFLAGS)
tests_r3run_forkcow_LDFLAGS = -pthread
# Unmodified programs to run under the shim: never sanitized (a sanitizer
# runtime replaces malloc itself and refuses to come after LD_PRELOAD).
R3RUN_TEST_CFLAGS = -std=gnu11 $(WARN_CFLAGS) -pthread
tests_r3run_alloc_check_SOURCES = tests/r3run/alloc_check.c
tests_r3run_alloc_check_CFLAGS = $(R3RUN_TEST_CFLAGS)
tests_r3run_alloc_check_LDFLAGS = -pthread
tests_r3run_forker_SOURCES = tests/r3run/forker.c
tests_r3run_forker_CFLAGS = $(R3RUN_TEST_CFLAGS)
tests_r3run_forker_LDFLAGS = -pthread
# Static, and never sanitized (there is no static libasan to link).
tests_r3run_static_true_SOURCES = tests/r3run/static_true.c
tests_r3run_static_true_CFLAGS = -std=gnu11 $(WARN_CFLAGS)
tests_r3run_static_true_LDFLAGS = -all-static
TESTS += tests/integration/r3run_exit.sh tests/integration/r3run_fork.sh \
	tests/integration/r3run_programs.sh
EXTRA_DIST += tests/integration/r3run_exit.sh tests/integration/r3run_fork.sh \
	tests/integration/r3run_programs.sh
TESTS += tests/integration/r3run_sync_timeout.sh
EXTRA_DIST += tests/integration/r3run_sync_timeout.sh
EXTRA_DIST += tests/r3run/needs_uffd.sh

# Real programs under r3run (issue 11): forked children, exits by signal,
# lazy open, --max-resident.
TESTS += tests/integration/programs_fork.sh tests/integration/programs_signals.sh \
	tests/integration/programs_evict.sh
EXTRA_DIST += tests/integration/programs_fork.sh tests/integration/programs_signals.sh \
	tests/integration/programs_evict.sh tests/r3run/twopass.py tests/r3run/rss_max.sh tests/r3run/sig_exit.py tests/r3run/forkcow_check.py tests/r3run/mp_hash.py
