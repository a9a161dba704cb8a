/* SPDX-License-Identifier: BSD-3-Clause */
/* push stage: writes go to the inner source and mark their chunks dirty;
 * a round copies every dirty chunk from inner to the remote with N workers.
 * Rounds run every interval and on flush. A chunk's dirty bit is cleared
 * before its bytes are read, so a write racing the copy marks it again and
 * the next round carries it.
 * Write-behind (r3_push_write_behind, the nbd-managed strategy): a write
 * that reaches the end of a chunk queues that chunk for background workers,
 * which push it at once (same dirty-bit protocol), so a sequential writer's
 * chunks travel while it still writes and a flush only waits for the tail.
 * Tracking (r3_push_track, a seeder of migration): a second bitmap that
 * rounds never clear, set with the dirty bit from START on. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include "bitmap.h"
#include "internal.h"

struct push_stage {
    struct r3_source src;
    struct r3_source *remote;          /* borrowed; the inner source is src.next */
    uint32_t chunk;
    uint64_t nchunks;
    r3_bitword *dirty;
    unsigned workers;
    struct r3_push_opts o;
    pthread_mutex_t round_lock;      /* one round at a time */
    _Atomic uint64_t pushed, bytes, rounds;
    _Atomic int error;
    /* the interval thread */
    pthread_t ticker;
    bool has_ticker;
    pthread_mutex_t m;
    pthread_cond_t cv;
    bool stop;
    /* write-behind: a FIFO of chunks (each queued once), its workers, and
     * the pushes in flight a flush must wait for (all under m) */
    uint64_t *wq;
    r3_bitword *queued;
    uint64_t wq_head, wq_len;
    unsigned nbehind, inflight;
    pthread_t *behind;
    pthread_cond_t wq_cv, idle_cv;
    /* migration (r3_push_track): every chunk written or marked since
     * START, kept across rounds */
    r3_bitword *tracked;
    _Atomic bool tracking;
};

struct round {
    struct push_stage *p;
    uint64_t *list;
    uint64_t n;
    _Atomic uint64_t next;
    _Atomic int error;
};

static const struct r3_source_ops push_ops;

static struct push_stage *as_push(struct r3_source *s)
{
    return s && s->ops == &push_ops ? (struct push_stage *)s : NULL;
}

static int not_push(struct r3_source *s)
{
    return r3_error(-EINVAL, "push: %s is not a push stage", s ? s->ops->scheme : "NULL");
}

int r3_push_mark(struct r3_source *s, uint64_t idx)
{
    struct push_stage *p = as_push(s);
    if (!p)
        return not_push(s);
    if (idx >= p->nchunks)
        return r3_error(-EINVAL, "push: chunk %llu out of range (%llu chunks)",
                        (unsigned long long)idx, (unsigned long long)p->nchunks);
    r3_bit_set(p->dirty, idx);
    if (atomic_load_explicit(&p->tracking, memory_order_acquire))
        r3_bit_set(p->tracked, idx);
    return 0;
}

int r3_push_track(struct r3_source *s, int op, uint64_t **list, size_t *n)
{
    struct push_stage *p = as_push(s);
    if (!p)
        return not_push(s);
    if (op == R3_TRACK_STOP) {
        atomic_store(&p->tracking, false);
        return 0;
    }
    if (op == R3_TRACK_START) {
        pthread_mutex_lock(&p->m);
        if (!p->tracked && !(p->tracked = r3_bitmap_new(p->nchunks))) {
            pthread_mutex_unlock(&p->m);
            return r3_error(-ENOMEM, "push: out of memory");
        }
        pthread_mutex_unlock(&p->m);
        atomic_store(&p->tracking, false);
        for (uint64_t w = 0; w < (p->nchunks + 63) / 64; w++)
            atomic_store(&p->tracked[w], 0);
        atomic_store(&p->tracking, true);
        return 0;
    }
    if (op != R3_TRACK_TAKE || !list || !n)
        return r3_error(-EINVAL, "push: bad track operation %d", op);
    if (!atomic_load(&p->tracking))
        return r3_error(-EINVAL, "push: writes are not being tracked");
    size_t k = 0;
    for (uint64_t w = 0; w < (p->nchunks + 63) / 64; w++)
        k += (size_t)__builtin_popcountll(atomic_load(&p->tracked[w]));
    uint64_t *l = malloc((k ? k : 1) * sizeof *l);
    if (!l)
        return r3_error(-ENOMEM, "push: out of memory");
    size_t i = 0;
    for (uint64_t w = 0; w < (p->nchunks + 63) / 64 && i < k; w++)
        for (uint64_t bits = atomic_load(&p->tracked[w]); bits && i < k; bits &= bits - 1)
            l[i++] = w * 64 + (uint64_t)__builtin_ctzll(bits);
    *list = l;
    *n = i;
    return 0;
}

int r3_push_progress(struct r3_source *s, struct r3_push_progress *pr)
{
    struct push_stage *p = as_push(s);
    *pr = (struct r3_push_progress){ 0 };
    if (!p)
        return not_push(s);
    for (uint64_t w = 0; w < (p->nchunks + 63) / 64; w++)
        pr->chunks_dirty += (uint64_t)__builtin_popcountll(atomic_load(&p->dirty[w]));
    pr->chunks_pushed = atomic_load(&p->pushed);
    pr->bytes_pushed = atomic_load(&p->bytes);
    pr->rounds = atomic_load(&p->rounds);
    pr->error = atomic_load(&p->error);
    return 0;
}

static size_t chunk_len(struct push_stage *p, uint64_t idx)
{
    uint64_t off = idx * p->chunk;
    return p->src.size - off < p->chunk ? (size_t)(p->src.size - off) : p->chunk;
}

static void *round_worker(void *arg)
{
    struct round *r = arg;
    struct push_stage *p = r->p;
    void *buf = malloc(p->chunk);
    if (!buf) {
        int zero = 0;
        atomic_compare_exchange_strong(&r->error, &zero, -ENOMEM);
        return NULL;
    }
    for (;;) {
        uint64_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->n)
            break;
        uint64_t idx = r->list[i];
        size_t len = chunk_len(p, idx);
        int rc = r3_source_read(p->src.next, buf, len, idx * p->chunk);
        if (rc == 0)
            rc = r3_source_write(p->remote, buf, len, idx * p->chunk);
        if (rc < 0) {
            r3_bit_set(p->dirty, idx);        /* keep it for the next round */
            int zero = 0;
            atomic_compare_exchange_strong(&r->error, &zero, rc);
        } else {
            atomic_fetch_add(&p->pushed, 1);
            atomic_fetch_add(&p->bytes, len);
        }
    }
    free(buf);
    return NULL;
}

/* One round: collect, take the dirty set, copy it out. 0 or -errno. */
static int push_round(struct push_stage *p)
{
    pthread_mutex_lock(&p->round_lock);
    int rc = p->o.collect ? p->o.collect(p->o.arg, &p->src) : 0;
    uint64_t cap = 0, n = 0, *list = NULL;
    for (uint64_t w = 0; rc == 0 && w < (p->nchunks + 63) / 64; w++) {
        uint64_t bits = atomic_exchange(&p->dirty[w], 0);
        while (bits) {
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                uint64_t *nl = realloc(list, cap * sizeof *nl);
                if (!nl) {
                    atomic_fetch_or(&p->dirty[w], bits);
                    rc = r3_error(-ENOMEM, "push: out of memory");
                    break;
                }
                list = nl;
            }
            int b = __builtin_ctzll(bits);
            bits &= bits - 1;
            list[n++] = w * 64 + (uint64_t)b;
        }
    }
    if (rc < 0) {
        for (uint64_t i = 0; i < n; i++)
            r3_bit_set(p->dirty, list[i]);
        n = 0;
    }
    struct round r = { .p = p, .list = list, .n = n };
    if (n > 0) {
        unsigned nw = p->workers < n ? p->workers : (unsigned)n;
        pthread_t *t = calloc(nw, sizeof *t);
        unsigned started = 0;
        for (unsigned i = 0; t && i + 1 < nw; i++)
            if (r3_thread_create(&t[started], round_worker, &r) == 0)
                started++;
        round_worker(&r);                     /* this thread works too */
        for (unsigned i = 0; i < started; i++)
            pthread_join(t[i], NULL);
        free(t);
        if (rc == 0)
            rc = atomic_load(&r.error);
    }
    if (rc == 0 && n > 0 && p->o.after)
        p->o.after(p->o.arg, list, n);
    free(list);
    atomic_fetch_add(&p->rounds, 1);
    if (rc < 0) {
        int zero = 0;
        atomic_compare_exchange_strong(&p->error, &zero, rc);
    }
    pthread_mutex_unlock(&p->round_lock);
    return rc;
}

static void *ticker(void *arg)
{
    struct push_stage *p = arg;
    pthread_mutex_lock(&p->m);
    while (!p->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)p->o.interval_ms * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&p->cv, &p->m, &ts);
        if (p->stop)
            break;
        pthread_mutex_unlock(&p->m);
        push_round(p);                        /* errors stay dirty and are reported by flush */
        pthread_mutex_lock(&p->m);
    }
    pthread_mutex_unlock(&p->m);
    return NULL;
}

/* Push one chunk now (write-behind): if still dirty, clear, copy out. */
static int push_one(struct push_stage *p, uint64_t idx, void *buf)
{
    if (!r3_bit_clear(p->dirty, idx))
        return 0;                             /* a round took it, or nothing new */
    size_t len = chunk_len(p, idx);
    int rc = r3_source_read(p->src.next, buf, len, idx * p->chunk);
    if (rc == 0)
        rc = r3_source_write(p->remote, buf, len, idx * p->chunk);
    if (rc < 0) {
        r3_bit_set(p->dirty, idx);            /* the next round retries it */
        return rc;
    }
    atomic_fetch_add(&p->pushed, 1);
    atomic_fetch_add(&p->bytes, len);
    if (p->o.after)
        p->o.after(p->o.arg, &idx, 1);
    return 0;
}

static void *behind_worker(void *arg)
{
    struct push_stage *p = arg;
    void *buf = malloc(p->chunk);
    pthread_mutex_lock(&p->m);
    for (;;) {
        while (!p->stop && p->wq_len == 0)
            pthread_cond_wait(&p->wq_cv, &p->m);
        if (p->stop)
            break;
        uint64_t idx = p->wq[p->wq_head];
        p->wq_head = (p->wq_head + 1) % p->nchunks;
        p->wq_len--;
        r3_bit_clear(p->queued, idx);
        p->inflight++;
        pthread_mutex_unlock(&p->m);
        int rc = buf ? push_one(p, idx, buf) : 0;   /* no buffer: the round pushes it */
        if (rc < 0) {
            int zero = 0;
            atomic_compare_exchange_strong(&p->error, &zero, rc);
        }
        pthread_mutex_lock(&p->m);
        if (--p->inflight == 0)
            pthread_cond_broadcast(&p->idle_cv);
    }
    pthread_mutex_unlock(&p->m);
    free(buf);
    return NULL;
}

/* Queue the chunks whose last byte [off, off+len) wrote. */
static void queue_behind(struct push_stage *p, uint64_t off, size_t len)
{
    uint64_t first = off / p->chunk, last = (off + len - 1) / p->chunk;
    bool any = false;
    pthread_mutex_lock(&p->m);
    for (uint64_t i = first; i <= last; i++) {
        uint64_t end = i * p->chunk + chunk_len(p, i);
        if (off + len < end || r3_bit_get(p->queued, i) || p->wq_len == p->nchunks)
            continue;
        r3_bit_set(p->queued, i);
        p->wq[(p->wq_head + p->wq_len) % p->nchunks] = i;
        p->wq_len++;
        any = true;
    }
    if (any)
        pthread_cond_signal(&p->wq_cv);
    pthread_mutex_unlock(&p->m);
}

static int push_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct push_stage *p = (struct push_stage *)s;
    int rc = r3_source_write(p->src.next, buf, len, off);
    if (rc < 0)
        return rc;
    bool track = atomic_load_explicit(&p->tracking, memory_order_acquire);
    for (uint64_t i = off / p->chunk; len && i <= (off + len - 1) / p->chunk; i++) {
        r3_bit_set(p->dirty, i);
        if (track)
            r3_bit_set(p->tracked, i);
    }
    if (p->nbehind && len)
        queue_behind(p, off, len);
    return 0;
}

int r3_push_write_behind(struct r3_source *s, unsigned workers)
{
    struct push_stage *p = as_push(s);
    if (!p)
        return not_push(s);
    if (p->nbehind || !workers)
        return 0;
    if (!(p->remote->flags & R3_SRC_PARALLEL))
        workers = 1;
    p->wq = malloc(p->nchunks * sizeof *p->wq);
    p->queued = r3_bitmap_new(p->nchunks);
    p->behind = calloc(workers, sizeof *p->behind);
    if (!p->wq || !p->queued || !p->behind) {
        free(p->wq);
        free(p->queued);
        free(p->behind);
        p->wq = NULL;
        p->queued = NULL;
        p->behind = NULL;
        return r3_error(-ENOMEM, "push: out of memory");
    }
    unsigned started = 0;
    for (unsigned i = 0; i < workers; i++)
        if (r3_thread_create(&p->behind[started], behind_worker, p) == 0)
            started++;
    pthread_mutex_lock(&p->m);
    p->nbehind = started;                     /* 0: writes are pushed by rounds only */
    pthread_mutex_unlock(&p->m);
    return 0;
}

/* Flush: the write-behind pushes already taken out of the dirty set must
 * reach the remote before the flush says so. */
static void wait_behind(struct push_stage *p)
{
    if (!p->nbehind)
        return;
    pthread_mutex_lock(&p->m);
    while (p->inflight > 0)
        pthread_cond_wait(&p->idle_cv, &p->m);
    pthread_mutex_unlock(&p->m);
}

static int push_flush(struct r3_source *s)
{
    struct push_stage *p = (struct push_stage *)s;
    int rc = push_round(p);
    wait_behind(p);
    /* a write-behind push that failed left its chunk dirty: one more round */
    if (rc == 0 && p->nbehind && atomic_load(&p->error) < 0)
        rc = push_round(p);
    if (rc == 0)
        atomic_store(&p->error, 0);           /* everything is out now */
    if (rc == 0)
        rc = r3_source_flush(p->remote);
    return rc;
}

static void push_close(struct r3_source *s)
{
    struct push_stage *p = (struct push_stage *)s;
    pthread_mutex_lock(&p->m);
    p->stop = true;
    pthread_cond_signal(&p->cv);
    pthread_cond_broadcast(&p->wq_cv);
    pthread_mutex_unlock(&p->m);
    if (p->has_ticker)
        pthread_join(p->ticker, NULL);
    for (unsigned i = 0; i < p->nbehind; i++)
        pthread_join(p->behind[i], NULL);
    free(p->behind);
    free(p->wq);
    free(p->queued);
    pthread_cond_destroy(&p->wq_cv);
    pthread_cond_destroy(&p->idle_cv);
    r3_source_close(p->src.next);
    pthread_mutex_destroy(&p->round_lock);
    pthread_mutex_destroy(&p->m);
    pthread_cond_destroy(&p->cv);
    free(p->dirty);
    free(p->tracked);
    free(p);
}

static const struct r3_source_ops push_ops = {
    .scheme = "push", .write = push_write, .flush = push_flush, .close = push_close,
};                                     /* read: the inner's (src.next) */

void r3_push_opts_init(struct r3_push_opts *o)
{
    *o = (struct r3_push_opts){ .struct_size = sizeof *o };
}

int r3_stage_push_open(struct r3_source *inner, struct r3_source *remote,
                       const struct r3_push_opts *o, struct r3_source **out)
{
    static const struct r3_push_opts none = { 0 };
    if (!o)
        o = &none;
    if (r3_opts_check(o->struct_size, sizeof *o, "r3_push_opts") < 0)
        return -EINVAL;
    uint32_t chunk = o->chunk ? o->chunk : R3_DEFAULT_CHUNK;
    if (!r3_is_pow2(chunk) || chunk < 512)
        return r3_error(-EINVAL, "push: chunk %u is not a power of two of at least 512", chunk);
    if (remote->size < inner->size)
        return r3_error(-EINVAL, "push: the remote is smaller than the inner source");
    if (remote->flags & R3_SRC_RDONLY)
        return r3_error(-EROFS, "push: the remote is read-only");
    struct push_stage *p = calloc(1, sizeof *p);
    if (!p)
        return r3_error(-ENOMEM, "push: out of memory");
    p->nchunks = (inner->size + chunk - 1) / chunk;
    if (!(p->dirty = r3_bitmap_new(p->nchunks))) {
        free(p);
        return r3_error(-ENOMEM, "push: out of memory");
    }
    p->remote = remote;
    p->chunk = chunk;
    p->o = *o;
    /* A remote that is not parallel gets one writer. */
    p->workers = !(remote->flags & R3_SRC_PARALLEL) ? 1 : o->workers ? o->workers : 1;
    pthread_mutex_init(&p->round_lock, NULL);
    pthread_mutex_init(&p->m, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&p->wq_cv, NULL);
    pthread_cond_init(&p->idle_cv, NULL);
    r3_stage_init(&p->src, &push_ops, inner);
    p->src.align = 1;
    if (o->interval_ms) {
        int rc = r3_thread_create(&p->ticker, ticker, p);
        if (rc < 0) {
            p->src.next = NULL;
            free(p->dirty);
            free(p);
            return rc;
        }
        p->has_ticker = true;
    }
    *out = &p->src;
    return 0;
}
