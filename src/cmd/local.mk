# src/cmd: the command-line tools.
bin_PROGRAMS += r3serve
r3serve_SOURCES = src/cmd/r3serve.c
r3serve_LDADD = libr3.la
bin_PROGRAMS += r3mount
r3mount_SOURCES = src/cmd/r3mount.c
r3mount_LDADD = libr3.la
