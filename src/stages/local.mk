# SPDX-License-Identifier: BSD-3-Clause
# Stages: sources that wrap a source (chunk, cache, pull, push, lock, delay,
# stats) and the pipeline builder.
noinst_HEADERS += src/bitmap.h
libr3core_la_SOURCES += src/stages/chunk.c src/stages/cache.c src/stages/pull.c src/stages/push.c \
	src/stages/lock.c src/stages/delay.c src/stages/stats.c src/stages/pipeline.c
