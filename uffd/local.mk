# uffd: the userfaultfd strategy (see Makefile.am)
pkginclude_HEADERS += include/r3/uffd.h
noinst_HEADERS += uffd/compat.h uffd/uffd.h
libr3_la_SOURCES += uffd/probe.c uffd/region.c uffd/view.c uffd/fault.c uffd/track.c uffd/access.c
