/* SPDX-License-Identifier: BSD-3-Clause */
/* A pass-through source that remembers which chunks were written (the
 * nbd-direct strategy: its writes reach the source at once, through the
 * NBD server, and after_sync reports them) and counts the bytes moved. */
#ifndef R3_NBD_WRITTEN_H
#define R3_NBD_WRITTEN_H

#include <stddef.h>
#include <stdint.h>
#include <r3/source.h>

struct r3_nbd_written_counts { uint64_t bytes_read, bytes_written; };

/* Wraps inner (owned: closed with the wrapper). 0 or -errno. */
int  r3_nbd_written_open(struct r3_source *inner, uint32_t chunk, struct r3_source **out);
/* The chunks written since the last call, ascending, each once (malloc'd
 * into *list; NULL when n is 0), and forgets them. 0 or -ENOMEM. */
int  r3_nbd_written_take(struct r3_source *s, uint64_t **list, size_t *n);
/* Migration (R3_TRACK_*): from START on, every chunk written is also kept
 * in a second bitmap that take never clears; TAKE lists it (ascending,
 * malloc'd), STOP forgets. */
int  r3_nbd_written_track(struct r3_source *s, int op, uint64_t **list, size_t *n);
/* The chunks in the order they were first read or written (malloc'd). */
int  r3_nbd_written_order(struct r3_source *s, uint64_t **list, size_t *n);
void r3_nbd_written_counts(struct r3_source *s, struct r3_nbd_written_counts *c);

#endif
