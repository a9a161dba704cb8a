# SPDX-License-Identifier: BSD-3-Clause
# tests/fuzz: libFuzzer targets, one per parser of outside bytes (issue 15).
# ./configure --enable-fuzz (clang) && make fuzz builds tests/fuzz/fuzz_<target>;
# make fuzz-smoke runs each for FUZZ_SECONDS (30) over its seed corpus
# tests/fuzz/corpus/<target>/. Every build also has tests/fuzz/replay_<target>
# (make check): the target's code replaying its seeds and every input fuzzing
# found (tests/fuzz/regress/<target>/), without libFuzzer.
FUZZ_NAMES = wire_frame wire_server wire_client uri redis_reply redis_cluster s3 access_log dir_meta nbd_client nbd_server
# filesync's three roles and the migration seeder / leecher (fs_peer.h: the fake hub)
FUZZ_NAMES += fs_hub fs_adv fs_recv mig_seed mig_leech
FUZZ_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) $(HIREDIS_CFLAGS)
FUZZ_LIBS = libr3core.la $(MSGPACK_LIBS) $(HIREDIS_LIBS)
noinst_HEADERS += tests/fuzz/fuzz.h tests/fuzz/fs_peer.h
EXTRA_DIST += tests/fuzz/smoke.sh tests/fuzz/seeds.py tests/fuzz/corpus tests/fuzz/regress tests/fuzz/known
EXTRA_DIST += tests/fuzz/RUNS.md

check_PROGRAMS += tests/fuzz/replay_wire_frame
tests_fuzz_replay_wire_frame_SOURCES = tests/fuzz/replay.c tests/fuzz/wire_frame.c
tests_fuzz_replay_wire_frame_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"wire_frame"'
tests_fuzz_replay_wire_frame_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_wire_frame
check_PROGRAMS += tests/fuzz/replay_wire_server
tests_fuzz_replay_wire_server_SOURCES = tests/fuzz/replay.c tests/fuzz/wire_server.c
tests_fuzz_replay_wire_server_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"wire_server"'
tests_fuzz_replay_wire_server_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_wire_server
check_PROGRAMS += tests/fuzz/replay_wire_client
tests_fuzz_replay_wire_client_SOURCES = tests/fuzz/replay.c tests/fuzz/wire_client.c
tests_fuzz_replay_wire_client_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"wire_client"'
tests_fuzz_replay_wire_client_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_wire_client
check_PROGRAMS += tests/fuzz/replay_uri
tests_fuzz_replay_uri_SOURCES = tests/fuzz/replay.c tests/fuzz/uri.c
tests_fuzz_replay_uri_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"uri"'
tests_fuzz_replay_uri_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_uri
check_PROGRAMS += tests/fuzz/replay_redis_reply
tests_fuzz_replay_redis_reply_SOURCES = tests/fuzz/replay.c tests/fuzz/redis_reply.c
tests_fuzz_replay_redis_reply_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"redis_reply"'
tests_fuzz_replay_redis_reply_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_redis_reply
check_PROGRAMS += tests/fuzz/replay_redis_cluster
tests_fuzz_replay_redis_cluster_SOURCES = tests/fuzz/replay.c tests/fuzz/redis_cluster.c
tests_fuzz_replay_redis_cluster_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"redis_cluster"'
tests_fuzz_replay_redis_cluster_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_redis_cluster
check_PROGRAMS += tests/fuzz/replay_s3
tests_fuzz_replay_s3_SOURCES = tests/fuzz/replay.c tests/fuzz/s3.c
tests_fuzz_replay_s3_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"s3"'
tests_fuzz_replay_s3_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_s3
check_PROGRAMS += tests/fuzz/replay_access_log
tests_fuzz_replay_access_log_SOURCES = tests/fuzz/replay.c tests/fuzz/access_log.c
tests_fuzz_replay_access_log_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"access_log"'
tests_fuzz_replay_access_log_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_access_log
check_PROGRAMS += tests/fuzz/replay_dir_meta
tests_fuzz_replay_dir_meta_SOURCES = tests/fuzz/replay.c tests/fuzz/dir_meta.c
tests_fuzz_replay_dir_meta_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"dir_meta"'
tests_fuzz_replay_dir_meta_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_dir_meta
check_PROGRAMS += tests/fuzz/replay_nbd_client
tests_fuzz_replay_nbd_client_SOURCES = tests/fuzz/replay.c tests/fuzz/nbd_client.c
tests_fuzz_replay_nbd_client_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"nbd_client"'
tests_fuzz_replay_nbd_client_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_nbd_client
check_PROGRAMS += tests/fuzz/replay_nbd_server
tests_fuzz_replay_nbd_server_SOURCES = tests/fuzz/replay.c tests/fuzz/nbd_server.c
tests_fuzz_replay_nbd_server_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"nbd_server"'
tests_fuzz_replay_nbd_server_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_nbd_server
check_PROGRAMS += tests/fuzz/replay_fs_hub
tests_fuzz_replay_fs_hub_SOURCES = tests/fuzz/replay.c tests/fuzz/fs_hub.c
tests_fuzz_replay_fs_hub_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"fs_hub"'
tests_fuzz_replay_fs_hub_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_fs_hub
check_PROGRAMS += tests/fuzz/replay_fs_adv
tests_fuzz_replay_fs_adv_SOURCES = tests/fuzz/replay.c tests/fuzz/fs_adv.c
tests_fuzz_replay_fs_adv_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"fs_adv"'
tests_fuzz_replay_fs_adv_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_fs_adv
check_PROGRAMS += tests/fuzz/replay_fs_recv
tests_fuzz_replay_fs_recv_SOURCES = tests/fuzz/replay.c tests/fuzz/fs_recv.c
tests_fuzz_replay_fs_recv_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"fs_recv"'
tests_fuzz_replay_fs_recv_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_fs_recv
check_PROGRAMS += tests/fuzz/replay_mig_seed
tests_fuzz_replay_mig_seed_SOURCES = tests/fuzz/replay.c tests/fuzz/mig_seed.c
tests_fuzz_replay_mig_seed_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"mig_seed"'
tests_fuzz_replay_mig_seed_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_mig_seed
check_PROGRAMS += tests/fuzz/replay_mig_leech
tests_fuzz_replay_mig_leech_SOURCES = tests/fuzz/replay.c tests/fuzz/mig_leech.c
tests_fuzz_replay_mig_leech_CFLAGS = $(FUZZ_CFLAGS) -DFUZZ_TARGET='"mig_leech"'
tests_fuzz_replay_mig_leech_LDADD = $(FUZZ_LIBS)
TESTS += tests/fuzz/replay_mig_leech

if R3_FUZZ
FUZZ_PROGS = tests/fuzz/fuzz_wire_frame tests/fuzz/fuzz_wire_server tests/fuzz/fuzz_wire_client tests/fuzz/fuzz_uri tests/fuzz/fuzz_redis_reply tests/fuzz/fuzz_redis_cluster tests/fuzz/fuzz_s3 tests/fuzz/fuzz_access_log tests/fuzz/fuzz_dir_meta tests/fuzz/fuzz_nbd_client tests/fuzz/fuzz_nbd_server
noinst_PROGRAMS += $(FUZZ_PROGS)
tests_fuzz_fuzz_wire_frame_SOURCES = tests/fuzz/wire_frame.c
tests_fuzz_fuzz_wire_frame_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_wire_frame_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_wire_frame_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_wire_server_SOURCES = tests/fuzz/wire_server.c
tests_fuzz_fuzz_wire_server_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_wire_server_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_wire_server_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_wire_client_SOURCES = tests/fuzz/wire_client.c
tests_fuzz_fuzz_wire_client_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_wire_client_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_wire_client_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_uri_SOURCES = tests/fuzz/uri.c
tests_fuzz_fuzz_uri_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_uri_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_uri_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_redis_reply_SOURCES = tests/fuzz/redis_reply.c
tests_fuzz_fuzz_redis_reply_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_redis_reply_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_redis_reply_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_redis_cluster_SOURCES = tests/fuzz/redis_cluster.c
tests_fuzz_fuzz_redis_cluster_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_redis_cluster_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_redis_cluster_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_s3_SOURCES = tests/fuzz/s3.c
tests_fuzz_fuzz_s3_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_s3_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_s3_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_access_log_SOURCES = tests/fuzz/access_log.c
tests_fuzz_fuzz_access_log_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_access_log_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_access_log_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_dir_meta_SOURCES = tests/fuzz/dir_meta.c
tests_fuzz_fuzz_dir_meta_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_dir_meta_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_dir_meta_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_nbd_client_SOURCES = tests/fuzz/nbd_client.c
tests_fuzz_fuzz_nbd_client_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_nbd_client_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_nbd_client_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_nbd_server_SOURCES = tests/fuzz/nbd_server.c
tests_fuzz_fuzz_nbd_server_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_nbd_server_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_nbd_server_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
FUZZ_PROGS += tests/fuzz/fuzz_fs_hub tests/fuzz/fuzz_fs_adv tests/fuzz/fuzz_fs_recv tests/fuzz/fuzz_mig_seed tests/fuzz/fuzz_mig_leech
tests_fuzz_fuzz_fs_hub_SOURCES = tests/fuzz/fs_hub.c
tests_fuzz_fuzz_fs_hub_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_fs_hub_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_fs_hub_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_fs_adv_SOURCES = tests/fuzz/fs_adv.c
tests_fuzz_fuzz_fs_adv_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_fs_adv_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_fs_adv_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_fs_recv_SOURCES = tests/fuzz/fs_recv.c
tests_fuzz_fuzz_fs_recv_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_fs_recv_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_fs_recv_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_mig_seed_SOURCES = tests/fuzz/mig_seed.c
tests_fuzz_fuzz_mig_seed_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_mig_seed_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_mig_seed_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_mig_leech_SOURCES = tests/fuzz/mig_leech.c
tests_fuzz_fuzz_mig_leech_CFLAGS = $(FUZZ_CFLAGS)
tests_fuzz_fuzz_mig_leech_LDADD = $(FUZZ_LIBS)
tests_fuzz_fuzz_mig_leech_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer

FUZZ_SECONDS = 30
fuzz: $(FUZZ_PROGS)
fuzz-smoke: fuzz
	@FUZZ_SECONDS=$(FUZZ_SECONDS) $(SHELL) $(top_srcdir)/tests/fuzz/smoke.sh $(abs_top_srcdir) \
		$(abs_top_builddir)/tests/fuzz $(FUZZ_NAMES)
else
fuzz fuzz-smoke:
	@echo "make $@: configure with --enable-fuzz (needs clang with libFuzzer)"; exit 1
endif
.PHONY: fuzz fuzz-smoke

# tests/chaos: SIGKILL the server of each path mid-write, then read every
# acknowledged round back through another path (8 rounds per path here;
# tests/chaos/run.sh --rounds N for longer runs).
dist_check_SCRIPTS += tests/chaos/run.sh
TESTS += tests/chaos/run.sh
