# SPDX-License-Identifier: BSD-3-Clause
# Every test is registered here, the one place: the Check unit tests
# (tests/unit/), the programs the scripts drive, and the integration scripts
# (tests/integration/), which start real servers on free loopback ports.
# tests/common/ holds what tests share: the pattern, the temp-dir fixture,
# the certificate maker and the skip-when-the-kernel-lacks-it helper.
noinst_HEADERS += tests/unit/testutil.h tests/unit/tu_log.h tests/unit/tu_certs.h tests/unit/tu_threads.h tests/common/pattern.h tests/common/tmpdir.h \
	tests/common/requires.h tests/uffd/pattern.h
EXTRA_DIST += tests/integration/lib.sh tests/common/certs.sh tests/common/pattern.py

# ---- unit tests (Check)
UNIT_TESTS = tests/unit/test_uri tests/unit/test_sources tests/unit/test_redis_slot \
	tests/unit/test_stages tests/unit/test_wire tests/unit/test_uffd tests/unit/test_palloc \
	tests/unit/test_filesync tests/unit/test_net tests/unit/test_kernel tests/unit/test_migrate
check_PROGRAMS += $(UNIT_TESTS)
TESTS += $(UNIT_TESTS)
tests_unit_test_uri_SOURCES = tests/unit/test_uri.c
tests_unit_test_uri_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_uri_LDADD = $(UNIT_LDADD)
tests_unit_test_sources_SOURCES = tests/unit/test_sources.c
tests_unit_test_sources_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_sources_LDADD = $(UNIT_LDADD)
tests_unit_test_redis_slot_SOURCES = tests/unit/test_redis_slot.c
tests_unit_test_redis_slot_CFLAGS = $(UNIT_CFLAGS) $(HIREDIS_CFLAGS)
tests_unit_test_redis_slot_LDADD = $(UNIT_LDADD)
tests_unit_test_stages_SOURCES = tests/unit/test_stages.c
tests_unit_test_stages_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_stages_LDADD = $(UNIT_LDADD)
tests_unit_test_wire_SOURCES = tests/unit/test_wire.c
tests_unit_test_wire_CFLAGS = $(UNIT_CFLAGS) $(MSGPACK_CFLAGS)
tests_unit_test_wire_LDADD = $(UNIT_LDADD) $(MSGPACK_LIBS)
tests_unit_test_uffd_SOURCES = tests/unit/test_uffd.c
tests_unit_test_uffd_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_uffd_LDADD = $(UNIT_LDADD)
# The allocator against plain memory: alignment, realloc across the
# threshold, coalescing, many threads.
tests_unit_test_palloc_SOURCES = tests/unit/test_palloc.c src/preload/palloc.c
tests_unit_test_palloc_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_palloc_LDADD = $(UNIT_LDADD)
tests_unit_test_filesync_SOURCES = tests/unit/test_filesync.c
tests_unit_test_filesync_CFLAGS = $(UNIT_CFLAGS) $(MSGPACK_CFLAGS) $(OPENSSL_CFLAGS)
tests_unit_test_filesync_LDADD = $(UNIT_LDADD)
tests_unit_test_net_SOURCES = tests/unit/test_net.c
tests_unit_test_net_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_net_LDADD = $(UNIT_LDADD)
tests_unit_test_kernel_SOURCES = tests/unit/test_kernel.c
tests_unit_test_kernel_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_kernel_LDADD = $(UNIT_LDADD)
tests_unit_test_migrate_SOURCES = tests/unit/test_migrate.c
tests_unit_test_migrate_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_migrate_LDADD = $(UNIT_LDADD)

# ---- programs the scripts drive
# r3check: the one checker (pattern through sources and regions, copies,
# expected failures, kernel requirements); see its header comment.
# A migration peer in its own process, for the tests that kill one.
check_PROGRAMS += tests/migrate_peer
tests_migrate_peer_SOURCES = tests/migrate_peer.c
tests_migrate_peer_LDADD = libr3.la

# nbd_status_map: a source's extents (r3_source_extent), for nbd_status.sh.
check_PROGRAMS += tests/integration/nbd_status_map
tests_integration_nbd_status_map_SOURCES = tests/integration/nbd_status_map.c
tests_integration_nbd_status_map_LDADD = libr3core.la

check_PROGRAMS += tests/r3check
tests_r3check_SOURCES = tests/r3check.c
tests_r3check_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS)
tests_r3check_LDADD = libr3core.la $(OPENSSL_LIBS)

# zeroread: a source through chunk + cache (+ pull), with what the cache
# learned of its zeros (tests/integration/sources_zero.sh).
check_PROGRAMS += tests/zeroread
tests_zeroread_SOURCES = tests/zeroread.c
tests_zeroread_LDADD = libr3core.la

# Unmodified programs to run under r3run's shim: never sanitized (a sanitizer
# runtime replaces malloc itself and refuses to come after LD_PRELOAD).
check_PROGRAMS += tests/r3run/alloc_check tests/r3run/forker tests/r3run/static_true
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

# ---- integration tests, by part
INTEGRATION_TESTS = \
	tests/integration/abi_exports.sh tests/integration/pipeline_tools.sh \
	tests/integration/migrate_kill.sh tests/integration/migrate_tls.sh tests/integration/migrate_kv.sh \
	tests/integration/migrate_1g.sh \
	tests/integration/man_pages.sh \
	tests/integration/tools_cli.sh \
	tests/integration/redis.sh tests/integration/redis_cluster.sh tests/integration/s3.sh \
	tests/integration/sources_bad.sh \
	tests/integration/wire.sh tests/integration/wire_limits.sh tests/integration/hostile_r3.sh \
	tests/integration/hostile_resp.sh tests/integration/sources_hostile_s3.sh \
	tests/integration/r3run_sync_timeout.sh tests/integration/programs_fork.sh \
	tests/integration/programs_signals.sh tests/integration/programs_evict.sh \
	tests/integration/programs_nbd_signals.sh tests/integration/programs_nbd_unmount.sh \
	tests/integration/programs_filesync_sparse.sh tests/integration/programs_pool.sh \
	tests/integration/uffd_two_procs.sh \
	tests/integration/r3run_exit.sh tests/integration/r3run_fork.sh \
	tests/integration/r3run_programs.sh \
	tests/integration/nbd_server.sh tests/integration/nbd_tls.sh tests/integration/nbd_client.sh \
	tests/integration/nbd_badinput.sh tests/integration/nbd_region.sh \
	tests/integration/nbd_mount_cycles.sh tests/integration/nbd_kernel.sh \
	tests/integration/nbd_r3run.sh tests/integration/hostile_nbd.sh \
	tests/integration/nbd_exposure.sh tests/integration/nbd_r3mount.sh \
	tests/integration/nbd_status.sh tests/integration/nbd_status_file.sh \
	tests/integration/filesync_rounds.sh tests/integration/filesync_late.sh \
	tests/integration/filesync_certs.sh tests/integration/filesync_reconnect.sh \
	tests/integration/filesync_badinput.sh tests/integration/filesync_strategy.sh \
	tests/integration/filesync_giveup.sh tests/integration/filesync_usage.sh \
	tests/integration/filesync_limits.sh \
	tests/integration/migrate_mount.sh \
	tests/integration/r3bench_smoke.sh
INTEGRATION_TESTS += tests/integration/filesync_joinack.sh
INTEGRATION_TESTS += tests/integration/sources_zero.sh
TESTS += $(INTEGRATION_TESTS)
EXTRA_DIST += $(INTEGRATION_TESTS) \
	tests/integration/sigv4proxy.py tests/integration/sources_lib.sh \
	tests/integration/nbd_mount_cycles.py tests/integration/nbd_badinput.py \
	tests/integration/filesync_lib.sh tests/integration/filesync_client.py \
	tests/integration/filesync_writer.py \
	tests/integration/wire_peer.py tests/integration/hostile_r3.py \
	tests/integration/hostile_resp.py tests/integration/sources_hostile_s3.py \
	tests/r3run/needs_uffd.sh tests/integration/hostile_nbd.py \
	tests/integration/nbd_status.py \
	tests/r3run/twopass.py tests/r3run/rss_max.sh tests/r3run/sig_exit.py \
	tests/r3run/forkcow_check.py tests/r3run/mp_hash.py tests/integration/migrate_lib.sh

# tools_cli.sh checks the tools' surface (--help, --version, usage errors) of
# every tool, subcommand, bench program and example.

# ---- zeros never move (issue 14, uffdspeed)
check_PROGRAMS += tests/unit/test_zero
TESTS += tests/unit/test_zero
tests_unit_test_zero_SOURCES = tests/unit/test_zero.c
tests_unit_test_zero_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_zero_LDADD = $(UNIT_LDADD)
INTEGRATION_TESTS += tests/integration/zero_strategies.sh
# managed (issue 14): zeros of a sparse file through nbd-managed
INTEGRATION_TESTS += tests/integration/managed_zero.sh
# the migration acceptance at 1 GiB, run by hand (make check runs it at 64 MiB)
EXTRA_DIST += tests/integration/migrate_big.sh
# Issue 11's programs at the issue's full sizes: not in the default make check
# (tens of minutes, ~12 GiB of RAM); run it by hand:
#   nice make check TESTS=tests/integration/programs_full.sh
EXTRA_DIST += tests/integration/programs_full.sh
# s3rver made read-after-write consistent for the tests (tsan, issue 15)
EXTRA_DIST += tests/integration/s3rver_atomic.js

# ---- paths never run (issue 15): retries, PSK, the wire client's errors, NBD trim/zero
INTEGRATION_TESTS += tests/integration/s3_retry.sh
EXTRA_DIST += tests/integration/s3_retry_proxy.py
INTEGRATION_TESTS += tests/integration/tls_psk.sh
INTEGRATION_TESTS += tests/integration/nbd_trimzero.sh
EXTRA_DIST += tests/integration/nbd_trimzero.py
INTEGRATION_TESTS += tests/integration/wire_client.sh
EXTRA_DIST += tests/integration/wire_client_peer.py

# ---- coverage of issue 15 (cover): behaviour tests for nbd/ and uffd/ paths
# the rest of the suite does not reach (a scripted NBD server, uffd variants)
check_PROGRAMS += tests/unit/test_cov_nbd_client
TESTS += tests/unit/test_cov_nbd_client
tests_unit_test_cov_nbd_client_SOURCES = tests/unit/test_cov_nbd_client.c
tests_unit_test_cov_nbd_client_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cov_nbd_client_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/test_cov_nbd_server
TESTS += tests/unit/test_cov_nbd_server
tests_unit_test_cov_nbd_server_SOURCES = tests/unit/test_cov_nbd_server.c
tests_unit_test_cov_nbd_server_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cov_nbd_server_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/test_cov_uffd
TESTS += tests/unit/test_cov_uffd
tests_unit_test_cov_uffd_SOURCES = tests/unit/test_cov_uffd.c
tests_unit_test_cov_uffd_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cov_uffd_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/test_cov_nbd_written
TESTS += tests/unit/test_cov_nbd_written
tests_unit_test_cov_nbd_written_SOURCES = tests/unit/test_cov_nbd_written.c
tests_unit_test_cov_nbd_written_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cov_nbd_written_LDADD = $(UNIT_LDADD)
# covnbd (wave 6): the mount side of nbd/ (mount.c, fuse.c, kernel.c absent paths, strategy checks)
check_PROGRAMS += tests/unit/test_cov_nbd_mount
TESTS += tests/unit/test_cov_nbd_mount
tests_unit_test_cov_nbd_mount_SOURCES = tests/unit/test_cov_nbd_mount.c
tests_unit_test_cov_nbd_mount_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cov_nbd_mount_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/test_cov_nbd_faults
TESTS += tests/unit/test_cov_nbd_faults
tests_unit_test_cov_nbd_faults_SOURCES = tests/unit/test_cov_nbd_faults.c
tests_unit_test_cov_nbd_faults_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cov_nbd_faults_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/test_cov_nbd_region
TESTS += tests/unit/test_cov_nbd_region
tests_unit_test_cov_nbd_region_SOURCES = tests/unit/test_cov_nbd_region.c
tests_unit_test_cov_nbd_region_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cov_nbd_region_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/test_cov_nbd_helper
TESTS += tests/unit/test_cov_nbd_helper
tests_unit_test_cov_nbd_helper_SOURCES = tests/unit/test_cov_nbd_helper.c
tests_unit_test_cov_nbd_helper_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cov_nbd_helper_LDADD = $(UNIT_LDADD)
# ---- coverage of issue 15 (covsrcfs): behaviour tests for src/ and filesync/ paths
check_PROGRAMS += tests/unit/test_cov_src_wire
TESTS += tests/unit/test_cov_src_wire
tests_unit_test_cov_src_wire_SOURCES = tests/unit/test_cov_src_wire.c
tests_unit_test_cov_src_wire_CFLAGS = $(UNIT_CFLAGS) $(MSGPACK_CFLAGS)
tests_unit_test_cov_src_wire_LDADD = $(UNIT_LDADD) $(MSGPACK_LIBS)
check_PROGRAMS += tests/unit/test_cov_fs_conn
TESTS += tests/unit/test_cov_fs_conn
tests_unit_test_cov_fs_conn_SOURCES = tests/unit/test_cov_fs_conn.c
tests_unit_test_cov_fs_conn_CFLAGS = $(UNIT_CFLAGS) $(MSGPACK_CFLAGS) $(OPENSSL_CFLAGS)
tests_unit_test_cov_fs_conn_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/test_cov_src_stages
TESTS += tests/unit/test_cov_src_stages
tests_unit_test_cov_src_stages_SOURCES = tests/unit/test_cov_src_stages.c
tests_unit_test_cov_src_stages_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cov_src_stages_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/test_cov_src_sources
TESTS += tests/unit/test_cov_src_sources
tests_unit_test_cov_src_sources_SOURCES = tests/unit/test_cov_src_sources.c
tests_unit_test_cov_src_sources_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cov_src_sources_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/test_cov_fs_hub
TESTS += tests/unit/test_cov_fs_hub
tests_unit_test_cov_fs_hub_SOURCES = tests/unit/test_cov_fs_hub.c
tests_unit_test_cov_fs_hub_CFLAGS = $(UNIT_CFLAGS) $(MSGPACK_CFLAGS) $(OPENSSL_CFLAGS)
tests_unit_test_cov_fs_hub_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/test_cov_fs_peers
TESTS += tests/unit/test_cov_fs_peers
tests_unit_test_cov_fs_peers_SOURCES = tests/unit/test_cov_fs_peers.c
tests_unit_test_cov_fs_peers_CFLAGS = $(UNIT_CFLAGS) $(MSGPACK_CFLAGS) $(OPENSSL_CFLAGS)
tests_unit_test_cov_fs_peers_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/test_cov_src_net
TESTS += tests/unit/test_cov_src_net
tests_unit_test_cov_src_net_SOURCES = tests/unit/test_cov_src_net.c
tests_unit_test_cov_src_net_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cov_src_net_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/test_cov_src_tls
TESTS += tests/unit/test_cov_src_tls
tests_unit_test_cov_src_tls_SOURCES = tests/unit/test_cov_src_tls.c
tests_unit_test_cov_src_tls_CFLAGS = $(UNIT_CFLAGS) $(OPENSSL_CFLAGS)
tests_unit_test_cov_src_tls_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/test_cov_src_client
TESTS += tests/unit/test_cov_src_client
tests_unit_test_cov_src_client_SOURCES = tests/unit/test_cov_src_client.c
tests_unit_test_cov_src_client_CFLAGS = $(UNIT_CFLAGS) $(MSGPACK_CFLAGS)
tests_unit_test_cov_src_client_LDADD = $(UNIT_LDADD) $(MSGPACK_LIBS)
check_PROGRAMS += tests/unit/test_cov_src_server
TESTS += tests/unit/test_cov_src_server
tests_unit_test_cov_src_server_SOURCES = tests/unit/test_cov_src_server.c
tests_unit_test_cov_src_server_CFLAGS = $(UNIT_CFLAGS) $(MSGPACK_CFLAGS)
tests_unit_test_cov_src_server_LDADD = $(UNIT_LDADD) $(MSGPACK_LIBS)
check_PROGRAMS += tests/unit/test_cov_src_env
TESTS += tests/unit/test_cov_src_env
tests_unit_test_cov_src_env_SOURCES = tests/unit/test_cov_src_env.c src/preload/env.c
tests_unit_test_cov_src_env_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cov_src_env_LDADD = $(UNIT_LDADD)
# covuffd (wave 6): zero fills against a scripted source, hash tracking's
# edges, forked children and invalidate of shared chunks
check_PROGRAMS += tests/unit/test_cov_uffd_paths
TESTS += tests/unit/test_cov_uffd_paths
tests_unit_test_cov_uffd_paths_SOURCES = tests/unit/test_cov_uffd_paths.c
tests_unit_test_cov_uffd_paths_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_cov_uffd_paths_LDADD = $(UNIT_LDADD)
