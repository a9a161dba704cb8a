/* SPDX-License-Identifier: BSD-3-Clause */
/* The chunk-source contract: a random-access byte store. Every backend (mem,
 * file, dir, redis, s3, r3, nbd) and every stage implements these ops. */
#ifndef R3_SOURCE_H
#define R3_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define R3_SRC_RDONLY   0x1u   /* writes fail with -EROFS */
#define R3_SRC_PARALLEL 0x2u   /* read/write/flush may be called concurrently */

/* Threading rules (one serialization point, like nbdkit's server/locks.c):
 *  - A source without R3_SRC_PARALLEL is called by one thread at a time:
 *    r3_source_read/write/flush take the source's own lock around its op.
 *    Nobody else serializes: not the stages, not the servers. Callers of
 *    any source, parallel or not, just call r3_source_read/write/flush.
 *  - A source with R3_SRC_PARALLEL gets concurrent calls and guards its own
 *    state. Every stage in src/stages/ is parallel: it calls its inner source
 *    through r3_source_*, which serializes the inner if it needs it.
 *  - The lock is held only around the source's own op, not around a
 *    fall-through to next. Locks are taken from a stage down to what it
 *    wraps, never back up, so they cannot deadlock. An op must not call
 *    r3_source_* on its own source (the lock is not recursive).
 *  - close is never serialized: the caller makes sure no call is in flight. */

struct r3_source;

struct r3_source_ops {
    const char *scheme;                       /* "mem", "redis", "cache", ... */
    /* read/write move all len bytes and return 0, or return -errno; never a
     * short count. Callers go through r3_source_read/write, which bound
     * off/len against size first. */
    int  (*read) (struct r3_source *, void *buf, size_t len, uint64_t off);
    int  (*write)(struct r3_source *, const void *buf, size_t len, uint64_t off);
    int  (*flush)(struct r3_source *);        /* durable at the source on 0 */
    void (*close)(struct r3_source *);        /* frees the source (and owned inner) */
    /* A stage fills only the ops it changes (like nbdkit filters): an op left
     * NULL falls through to the source's `next`. NULL read/write without a
     * next are -ENOTSUP, a NULL flush without a next is 0, and a NULL close
     * closes next and free()s the stage (which then must be one malloc'd block
     * starting with its struct r3_source). */
    /* Optional, like NBD's BLOCK_STATUS: what the range starting at off
     * holds. Returns R3_EXTENT_ZERO when the first *run bytes surely read as
     * zeros without a copy (a file hole, a missing key, object or file),
     * R3_EXTENT_DATA when they may hold data, or -errno. It sets *run to the
     * length of that first extent, 1 <= *run <= len. At most one round trip;
     * callers use it to fill zero chunks with no copy and to skip zeros when
     * copying. NULL falls through to next; NULL with no next says DATA for
     * the whole range. */
    int  (*extent)(struct r3_source *, uint64_t off, uint64_t len, uint64_t *run);
};

#define R3_EXTENT_DATA 0
#define R3_EXTENT_ZERO 1

struct r3_source {
    const struct r3_source_ops *ops;
    uint64_t size;       /* bytes */
    uint32_t align;      /* required alignment of off/len; 1 = any */
    unsigned flags;      /* R3_SRC_* */
    /* A stage: the source it wraps, where NULL ops fall through (set by
     * r3_stage_init). A backend: NULL. */
    struct r3_source *next;
    void *lock_;         /* src/source.c's: zero it (calloc) and never touch it */
};

/* Open a source from a URI (see README: mem:, file://, dir://, redis://, s3://,
 * r3://, r3s://, nbd://, nbd+unix://). 0 or -errno; r3_last_error() says why. */
int r3_source_open(const char *uri, struct r3_source **out);

/* Bounded calls: a read past the end is -EINVAL, a write past the end is
 * -ENOSPC, a write to a read-only source -EROFS; nothing is moved then. */
int  r3_source_read(struct r3_source *src, void *buf, size_t len, uint64_t off);
int  r3_source_write(struct r3_source *src, const void *buf, size_t len, uint64_t off);
int  r3_source_flush(struct r3_source *src);
/* The extent at off (see the extent op): R3_EXTENT_ZERO or R3_EXTENT_DATA with
 * *run set (1 <= *run <= len), or -errno. off/len are bounded like a read;
 * len == 0 is -EINVAL. A source that cannot tell says DATA. */
int  r3_source_extent(struct r3_source *src, uint64_t off, uint64_t len, uint64_t *run);
void r3_source_close(struct r3_source *src);

/* For a stage's open function: fill s (ops, next = inner, inner's size and
 * align, flags = R3_SRC_PARALLEL | inner's R3_SRC_RDONLY) and keep the rest. */
void r3_stage_init(struct r3_source *s, const struct r3_source_ops *ops, struct r3_source *inner);
/* The nearest source, from s down through the `next` chain, whose scheme is
 * `scheme` ("cache", "push", ...); NULL if none. Borrowed. */
struct r3_source *r3_source_find(struct r3_source *s, const char *scheme);

/* Parse a size with an optional K/M/G/T suffix (powers of 1024, an optional
 * "iB"/"B" after it). 0 or -EINVAL (with a sentence in r3_last_error()). */
int r3_parse_size(const char *s, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif
