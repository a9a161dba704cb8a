/* SPDX-License-Identifier: BSD-3-Clause */
/* The written-chunks source (see written.h): an atomic bitmap, one bit per
 * chunk, set by every write before it goes on to the inner source; and the
 * order in which chunks were first read or written (a seeder's access
 * order). */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "internal.h"
#include <r3/region.h>
#include "nbd/written.h"

struct written {
    struct r3_source src;
    struct r3_source *inner;
    uint32_t chunk;
    size_t nwords;
    _Atomic uint64_t *bits;
    _Atomic uint64_t bytes_read, bytes_written;
    /* migration: chunks written since START, never taken away */
    _Atomic uint64_t *tracked;
    _Atomic bool tracking;
    /* access order: a bit per chunk once seen */
    _Atomic uint64_t *seen;
    struct r3_order order;
    uint64_t nchunks;
};

/* Chunks of [off, off+len) read or written for the first time. */
static void note_access(struct written *w, size_t len, uint64_t off)
{
    for (uint64_t c = off / w->chunk; len && c <= (off + len - 1) / w->chunk && c < w->nchunks; c++) {
        uint64_t bit = UINT64_C(1) << (c % 64);
        if (atomic_load_explicit(&w->seen[c / 64], memory_order_relaxed) & bit ||
            atomic_fetch_or_explicit(&w->seen[c / 64], bit, memory_order_relaxed) & bit)
            continue;
        r3_order_note(&w->order, c);
    }
}

static int w_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct written *w = (struct written *)s;
    note_access(w, len, off);
    int rc = r3_source_read(w->inner, buf, len, off);
    if (rc == 0)
        atomic_fetch_add_explicit(&w->bytes_read, len, memory_order_relaxed);
    return rc;
}

static int w_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct written *w = (struct written *)s;
    /* Marked before the write: a sync that flushes after it reports it. */
    bool track = atomic_load_explicit(&w->tracking, memory_order_acquire);
    note_access(w, len, off);
    for (uint64_t c = off / w->chunk; len && c <= (off + len - 1) / w->chunk; c++) {
        atomic_fetch_or_explicit(&w->bits[c / 64], UINT64_C(1) << (c % 64), memory_order_relaxed);
        if (track)
            atomic_fetch_or_explicit(&w->tracked[c / 64], UINT64_C(1) << (c % 64), memory_order_relaxed);
    }
    int rc = r3_source_write(w->inner, buf, len, off);
    if (rc == 0)
        atomic_fetch_add_explicit(&w->bytes_written, len, memory_order_relaxed);
    return rc;
}

static int w_flush(struct r3_source *s)
{
    return r3_source_flush(((struct written *)s)->inner);
}

static void w_close(struct r3_source *s)
{
    struct written *w = (struct written *)s;
    r3_source_close(w->inner);
    free(w->bits);
    free(w->tracked);
    free(w->seen);
    r3_order_free(&w->order);
    free(w);
}

static const struct r3_source_ops written_ops = {
    .scheme = "nbd-written", .read = w_read, .write = w_write, .flush = w_flush, .close = w_close,
};

int r3_nbd_written_open(struct r3_source *inner, uint32_t chunk, struct r3_source **out)
{
    struct written *w = calloc(1, sizeof *w);
    uint64_t nchunks = chunk ? (inner->size + chunk - 1) / chunk : 0;
    if (w)
        w->nwords = (size_t)((nchunks + 63) / 64);
    if (w)
        w->nchunks = nchunks;
    if (!w || !chunk || !(w->bits = calloc(w->nwords ? w->nwords : 1, sizeof *w->bits)) ||
        !(w->seen = calloc(w->nwords ? w->nwords : 1, sizeof *w->seen)) ||
        r3_order_init(&w->order, nchunks) < 0) {
        if (w) {
            free(w->bits);
            free(w->seen);
        }
        free(w);
        return r3_error(chunk ? -ENOMEM : -EINVAL, "nbd region: %s", chunk ? "out of memory" : "chunk 0");
    }
    w->inner = inner;
    w->chunk = chunk;
    w->src.ops = &written_ops;
    w->src.size = inner->size;
    w->src.align = inner->align;
    w->src.flags = inner->flags;
    *out = &w->src;
    return 0;
}

int r3_nbd_written_take(struct r3_source *s, uint64_t **list, size_t *n)
{
    struct written *w = (struct written *)s;
    size_t cap = 0, k = 0;
    uint64_t *l = NULL;
    for (size_t i = 0; i < w->nwords; i++) {
        uint64_t b = atomic_exchange_explicit(&w->bits[i], 0, memory_order_relaxed);
        while (b) {
            if (k == cap) {
                size_t nc = cap ? cap * 2 : 64;
                uint64_t *nl = realloc(l, nc * sizeof *nl);
                if (!nl) {
                    /* Put the rest back: a later sync reports it. */
                    atomic_fetch_or_explicit(&w->bits[i], b, memory_order_relaxed);
                    for (size_t j = 0; j < k; j++)
                        atomic_fetch_or_explicit(&w->bits[l[j] / 64], UINT64_C(1) << (l[j] % 64),
                                                 memory_order_relaxed);
                    free(l);
                    return r3_error(-ENOMEM, "nbd region: out of memory");
                }
                l = nl;
                cap = nc;
            }
            l[k++] = (uint64_t)i * 64 + (uint64_t)__builtin_ctzll(b);
            b &= b - 1;
        }
    }
    *list = l;
    *n = k;
    return 0;
}

void r3_nbd_written_counts(struct r3_source *s, struct r3_nbd_written_counts *c)
{
    struct written *w = (struct written *)s;
    c->bytes_read = atomic_load_explicit(&w->bytes_read, memory_order_relaxed);
    c->bytes_written = atomic_load_explicit(&w->bytes_written, memory_order_relaxed);
}

int r3_nbd_written_track(struct r3_source *s, int op, uint64_t **list, size_t *n)
{
    struct written *w = (struct written *)s;
    if (op == R3_TRACK_STOP) {
        atomic_store(&w->tracking, false);
        return 0;
    }
    if (op == R3_TRACK_START) {
        atomic_store(&w->tracking, false);
        if (!w->tracked && !(w->tracked = calloc(w->nwords ? w->nwords : 1, sizeof *w->tracked)))
            return r3_error(-ENOMEM, "nbd region: out of memory");
        for (size_t i = 0; i < w->nwords; i++)
            atomic_store(&w->tracked[i], 0);
        atomic_store(&w->tracking, true);
        return 0;
    }
    if (op != R3_TRACK_TAKE || !list || !n)
        return r3_error(-EINVAL, "nbd region: bad track operation %d", op);
    if (!atomic_load(&w->tracking))
        return r3_error(-EINVAL, "nbd region: writes are not being tracked");
    size_t k = 0, j = 0;
    for (size_t i = 0; i < w->nwords; i++)
        k += (size_t)__builtin_popcountll(atomic_load(&w->tracked[i]));
    uint64_t *l = malloc((k ? k : 1) * sizeof *l);
    if (!l)
        return r3_error(-ENOMEM, "nbd region: out of memory");
    for (size_t i = 0; i < w->nwords && j < k; i++)
        for (uint64_t b = atomic_load(&w->tracked[i]); b && j < k; b &= b - 1)
            l[j++] = (uint64_t)i * 64 + (uint64_t)__builtin_ctzll(b);
    *list = l;
    *n = j;
    return 0;
}

int r3_nbd_written_order(struct r3_source *s, uint64_t **list, size_t *n)
{
    int rc = r3_order_list(&((struct written *)s)->order, list, n);
    return rc < 0 ? r3_error_prefix(rc, "nbd region: ") : 0;
}
