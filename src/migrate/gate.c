/* SPDX-License-Identifier: BSD-3-Clause */
/* The seeder's gate over a source: see gate.h. Writes are counted in
 * flight so a pause returns only once no write can still land: the dirty
 * list taken after it is complete. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "migrate/gate.h"

struct gate {
    struct r3_source src;         /* first: the stage */
    uint32_t chunk;
    uint64_t nchunks;
    _Atomic uint64_t *written;    /* one bit a chunk */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state;                    /* R3M_GATE_* */
    unsigned inflight;
    unsigned untracked;           /* writes in flight that began before tracking */
    bool tracking;
};

/* 0 and *tracked (whether this write must be remembered), or -EIO. */
static int gate_enter(struct gate *g, bool *tracked)
{
    pthread_mutex_lock(&g->mu);
    while (g->state == R3M_GATE_PAUSED)
        pthread_cond_wait(&g->cv, &g->mu);
    int rc = g->state == R3M_GATE_GONE
                 ? r3_error(-EIO, "the file was handed over to another host (migration released it)")
                 : 0;
    if (rc == 0) {
        g->inflight++;
        *tracked = g->tracking;
        g->untracked += !g->tracking;
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

static void gate_leave(struct gate *g, bool tracked)
{
    pthread_mutex_lock(&g->mu);
    g->inflight--;
    g->untracked -= !tracked;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static int gate_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct gate *g = (struct gate *)s;
    bool tracked;
    int rc = gate_enter(g, &tracked);
    if (rc < 0)
        return rc;
    /* marked before the write: a FINALIZE waits for it anyway */
    if (tracked && len)
        for (uint64_t c = off / g->chunk; c <= (off + len - 1) / g->chunk; c++)
            atomic_fetch_or(&g->written[c >> 6], UINT64_C(1) << (c & 63));
    rc = r3_source_write(s->next, buf, len, off);
    gate_leave(g, tracked);
    return rc;
}

static int gate_flush(struct r3_source *s)
{
    struct gate *g = (struct gate *)s;
    bool tracked;
    int rc = gate_enter(g, &tracked);
    if (rc < 0)
        return rc;
    rc = r3_source_flush(s->next);
    gate_leave(g, tracked);
    return rc;
}

static void gate_close(struct r3_source *s)
{
    struct gate *g = (struct gate *)s;
    free(g->written);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

static const struct r3_source_ops gate_ops = {
    .scheme = "migrate-gate", .write = gate_write, .flush = gate_flush, .close = gate_close,
};

int r3m_gate_open(struct r3_source *inner, uint32_t chunk, struct r3_source **out)
{
    *out = NULL;
    if (!chunk || (chunk & (chunk - 1)))
        return r3_error(-EINVAL, "seeder: the chunk size %u is not a power of two", chunk);
    struct gate *g = calloc(1, sizeof *g);
    if (!g)
        return r3_error(-ENOMEM, "seeder: out of memory");
    r3_stage_init(&g->src, &gate_ops, inner);
    g->chunk = chunk;
    g->nchunks = (inner->size + chunk - 1) / chunk;
    if (!(g->written = calloc(g->nchunks / 64 + 1, 8))) {
        free(g);
        return r3_error(-ENOMEM, "seeder: out of memory");
    }
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    *out = &g->src;
    return 0;
}

void r3m_gate_track(struct r3_source *s, int on)
{
    struct gate *g = (struct gate *)s;
    pthread_mutex_lock(&g->mu);
    if (on)
        for (uint64_t i = 0; i < g->nchunks / 64 + 1; i++)
            atomic_store(&g->written[i], 0);
    g->tracking = on;
    /* A write that began untracked may land after a leecher's read of its
     * chunk: tracking has started only once none is left in flight. */
    while (on && g->untracked)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

int r3m_gate_take(struct r3_source *s, uint64_t **list, size_t *n)
{
    struct gate *g = (struct gate *)s;
    size_t k = 0;
    for (uint64_t c = 0; c < g->nchunks; c++)
        k += atomic_load(&g->written[c >> 6]) >> (c & 63) & 1;
    uint64_t *l = malloc((k ? k : 1) * sizeof *l);
    if (!l)
        return r3_error(-ENOMEM, "seeder: out of memory");
    k = 0;
    for (uint64_t c = 0; c < g->nchunks; c++)
        if (atomic_load(&g->written[c >> 6]) >> (c & 63) & 1)
            l[k++] = c;
    *list = l;
    *n = k;
    return 0;
}

void r3m_gate_set(struct r3_source *s, int state)
{
    struct gate *g = (struct gate *)s;
    pthread_mutex_lock(&g->mu);
    g->state = state;
    pthread_cond_broadcast(&g->cv);
    while (state == R3M_GATE_PAUSED && g->inflight)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}
