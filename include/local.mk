# SPDX-License-Identifier: BSD-3-Clause
pkginclude_HEADERS += include/r3/r3.h include/r3/error.h include/r3/source.h \
	include/r3/stage.h include/r3/region.h include/r3/thread.h
