# src/cmd: the command-line tools.
bin_PROGRAMS += r3serve
r3serve_SOURCES = src/cmd/r3serve.c
r3serve_LDADD = libr3.la
