/* SPDX-License-Identifier: BSD-3-Clause */
/* chunk stage: every request reaching the inner source is one whole, aligned
 * chunk ("server-side chunking" in the study). Partial writes are
 * read-modify-write under a per-chunk stripe lock so two partial writes to
 * one chunk cannot lose each other's bytes. An inner source that is not
 * parallel is serialized by r3_source_read/write, not here. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define CHUNK_STRIPES 64

struct chunk_stage {
    struct r3_source src;
    uint32_t chunk;
    pthread_mutex_t stripe[CHUNK_STRIPES];
};

static int inner_io(struct chunk_stage *c, void *buf, size_t len, uint64_t off, bool wr)
{
    return wr ? r3_source_write(c->src.next, buf, len, off) : r3_source_read(c->src.next, buf, len, off);
}

/* Length of chunk idx (the last one may be short). */
static size_t chunk_len(struct chunk_stage *c, uint64_t idx)
{
    uint64_t off = idx * c->chunk;
    return c->src.size - off < c->chunk ? (size_t)(c->src.size - off) : c->chunk;
}

static int chunk_io(struct r3_source *s, void *buf, size_t len, uint64_t off, bool wr)
{
    struct chunk_stage *c = (struct chunk_stage *)s;
    char *p = buf, *tmp = NULL;
    int rc = 0;
    while (len > 0 && rc == 0) {
        uint64_t idx = off / c->chunk, in = off % c->chunk;
        size_t clen = chunk_len(c, idx);
        size_t n = clen - in < len ? clen - in : len;
        if (in == 0 && n == clen) {
            rc = inner_io(c, p, n, off, wr);
        } else {
            if (!tmp && !(tmp = malloc(c->chunk))) {
                rc = r3_error(-ENOMEM, "chunk: out of memory");
                break;
            }
            pthread_mutex_t *m = &c->stripe[idx % CHUNK_STRIPES];
            if (wr)
                pthread_mutex_lock(m);
            rc = inner_io(c, tmp, clen, idx * c->chunk, false);
            if (rc == 0 && wr) {
                memcpy(tmp + in, p, n);
                rc = inner_io(c, tmp, clen, idx * c->chunk, true);
            } else if (rc == 0) {
                memcpy(p, tmp + in, n);
            }
            if (wr)
                pthread_mutex_unlock(m);
        }
        p += n;
        off += n;
        len -= n;
    }
    free(tmp);
    return rc;
}

static int chunk_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    return chunk_io(s, buf, len, off, false);
}

static int chunk_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    return chunk_io(s, (void *)buf, len, off, true);
}

/* The inner's extent over the whole chunks around [off, off+len), one
 * question, rounded to whole chunks: a chunk that is only partly zero is
 * data, so a ZERO answer always covers whole chunks. */
static int chunk_extent(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    struct chunk_stage *c = (struct chunk_stage *)s;
    uint64_t a = off - off % c->chunk, b = off + len;
    if (b % c->chunk)
        b = b - b % c->chunk + c->chunk < s->size ? b - b % c->chunk + c->chunk : s->size;
    uint64_t r = 0;
    int rc = r3_source_extent(c->src.next, a, b - a, &r);
    if (rc < 0)
        return rc;
    uint64_t e;                                /* end of the answer, at a chunk boundary */
    if (rc == R3_EXTENT_ZERO) {
        e = a + r >= s->size ? s->size : a + r - r % c->chunk;
        if (e <= off) {                        /* not even off's chunk is all zero */
            rc = R3_EXTENT_DATA;
            e = a + c->chunk;
        }
    } else {
        e = a + r + (r % c->chunk ? c->chunk - r % c->chunk : 0);
    }
    if (e > off + len)
        e = off + len;
    *run = e - off;
    return rc;
}

static void chunk_close(struct r3_source *s)
{
    struct chunk_stage *c = (struct chunk_stage *)s;
    r3_source_close(c->src.next);
    for (int i = 0; i < CHUNK_STRIPES; i++)
        pthread_mutex_destroy(&c->stripe[i]);
    free(c);
}

static const struct r3_source_ops chunk_ops = {
    .scheme = "chunk", .read = chunk_read, .write = chunk_write, .close = chunk_close,
    .extent = chunk_extent,
};

int r3_stage_chunk_open(struct r3_source *inner, uint32_t chunk, struct r3_source **out)
{
    if (!r3_is_pow2(chunk) || chunk < 512)
        return r3_error(-EINVAL, "chunk: size %u is not a power of two of at least 512", chunk);
    if (inner->align > chunk || (inner->align > 1 && chunk % inner->align))
        return r3_error(-EINVAL, "chunk: %u does not fit the inner alignment %u", chunk, inner->align);
    struct chunk_stage *c = calloc(1, sizeof *c);
    if (!c)
        return r3_error(-ENOMEM, "chunk: out of memory");
    c->chunk = chunk;
    for (int i = 0; i < CHUNK_STRIPES; i++)
        pthread_mutex_init(&c->stripe[i], NULL);
    r3_stage_init(&c->src, &chunk_ops, inner);
    c->src.align = 1;
    *out = &c->src;
    return 0;
}
