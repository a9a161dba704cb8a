# SPDX-License-Identifier: BSD-3-Clause
# src/cmd: the command-line tools.
bin_PROGRAMS += r3serve
r3serve_SOURCES = src/cmd/r3serve.c
r3serve_LDADD = libr3core.la

bin_PROGRAMS += r3mount
r3mount_SOURCES = src/cmd/r3mount.c
r3mount_LDADD = libr3core.la
bin_PROGRAMS += r3run
r3run_SOURCES = src/cmd/r3run.c src/preload/env.c
r3run_CPPFLAGS = $(AM_CPPFLAGS) -DR3_LIBDIR='"$(libdir)"'
r3run_LDADD = libr3core.la

# Their tests are registered in tests/local.mk.
