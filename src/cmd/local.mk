# src/cmd: the command-line tools.
bin_PROGRAMS += r3run
r3run_SOURCES = src/cmd/r3run.c src/preload/env.c
r3run_CPPFLAGS = $(AM_CPPFLAGS) -DR3_LIBDIR='"$(libdir)"'
r3run_LDADD = libr3.la
