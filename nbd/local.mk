# nbd: NBD server + client, mounts (kernel /dev/nbdX, FUSE file), strategies.
noinst_HEADERS += nbd/proto.h nbd/server.h nbd/client.h nbd/fuse.h nbd/kernel.h nbd/mount.h nbd/helper.h
libr3_la_SOURCES += nbd/server.c nbd/client.c nbd/source.c nbd/fuse.c nbd/kernel.c nbd/mount.c nbd/helper.c nbd/strategy.c
noinst_HEADERS += nbd/written.h
libr3_la_SOURCES += nbd/written.c

check_PROGRAMS += nbd/test/nbdcheck
nbd_test_nbdcheck_SOURCES = nbd/test/nbdcheck.c
nbd_test_nbdcheck_LDADD = libr3.la

check_PROGRAMS += nbd/test/nbdregion
nbd_test_nbdregion_SOURCES = nbd/test/nbdregion.c
nbd_test_nbdregion_LDADD = libr3.la

# Integration tests (tests/integration/lib.sh): real clients and servers.
TESTS += tests/integration/nbd_server.sh tests/integration/nbd_tls.sh tests/integration/nbd_client.sh tests/integration/nbd_badinput.sh tests/integration/nbd_region.sh tests/integration/nbd_mount_cycles.sh tests/integration/nbd_kernel.sh tests/integration/nbd_r3run.sh
EXTRA_DIST += tests/integration/nbd_server.sh tests/integration/nbd_tls.sh tests/integration/nbd_client.sh tests/integration/nbd_badinput.sh tests/integration/nbd_region.sh tests/integration/nbd_mount_cycles.sh tests/integration/nbd_kernel.sh tests/integration/nbd_r3run.sh tests/integration/nbd_mount_cycles.py tests/integration/nbd_badinput.py

# Benchmark (not a test): bench/nbd.sh drives bench/nbd, fio, nbdkit, nbdfuse.
noinst_PROGRAMS += bench/nbd
bench_nbd_SOURCES = bench/nbd.c
bench_nbd_LDADD = libr3.la
EXTRA_DIST += bench/nbd.sh
TESTS += tests/integration/hostile_nbd.sh tests/integration/nbd_exposure.sh
EXTRA_DIST += tests/integration/hostile_nbd.sh tests/integration/hostile_nbd.py tests/integration/nbd_exposure.sh
TESTS += tests/integration/nbd_r3mount.sh
EXTRA_DIST += tests/integration/nbd_r3mount.sh
