/* SPDX-License-Identifier: BSD-3-Clause */
/* cache stage: a local source plus the state of every chunk (absent,
 * fetching, local, zero). A miss fetches the whole chunk from the remote into
 * the local source exactly once, however many threads miss it together: the
 * first claims it (absent -> fetching), the others wait for it. A remote or
 * local source that is not parallel is serialized by r3_source_*, not here.
 *
 * Copies: a local source with memory of its own (mem:) receives the remote's
 * bytes straight into that memory; other local sources get them through one
 * buffer. A chunk the remote's extent op says is zero is never read: it
 * becomes ZERO (present, and the local side holds zeros: dropped pages of
 * memory, or written from r3_zeros()), and reads of it are a memset.
 *
 * Bytes: every access of a chunk's local bytes through the cache (reads,
 * writes, fills, r3_cache_peek, r3_cache_fill) holds that chunk's lock, a
 * reader-writer word per chunk: a chunk read (the push stage's copy, a
 * seeder's read) never sees half of a write made to it meanwhile (a FUSE
 * write of the mapping), nor a refill after r3_cache_invalidate. Held only
 * around the copy, never while waiting for a claim. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>
#include "internal.h"

enum { ABSENT = 0, FETCHING = 1, LOCAL = 2, ZERO = 3 };
/* What the remote said of an absent chunk (known[]), so it is asked once per
 * run of chunks, not once per chunk. */
enum { UNKNOWN = 0, K_DATA = 1, K_ZERO = 2 };
#define CACHE_STRIPES 64       /* wait queues, by chunk index */
#define CACHE_POOL 64          /* spare fetch buffers kept */
#define EXTENT_AHEAD 64        /* chunks one extent query of the remote covers */

struct cache_stage {
    struct r3_source src;
    struct r3_source *remote, *local;
    uint32_t chunk;
    uint64_t nchunks;
    int mode;
    bool borrow_local;
    _Atomic uint8_t *state;
    _Atomic uint8_t *known;
    _Atomic uint64_t nlocal;
    _Atomic uint32_t *lock;       /* per chunk: WR_BIT, or the number of readers;
                                   * NULL over a uffd region (see r3_stage_cache_open) */
    struct { pthread_mutex_t m; pthread_cond_t c; } stripe[CACHE_STRIPES];
    pthread_mutex_t pool_lock;
    void *pool[CACHE_POOL];
    int npool;
    void (*on_fill)(void *arg, uint64_t chunk, int why);
    void *arg;
    /* r3_cache_record_order: set while fetches run, so the pointer is atomic */
    struct r3_order *_Atomic order;
};

static const struct r3_source_ops cache_ops;

#define WR_BIT 0x80000000u

/* The chunk locks: held for one copy of at most a chunk, so waiting is a
 * yield, not a sleep. */
static void rd_lock(_Atomic uint32_t *l)
{
    for (;;) {
        uint32_t v = atomic_load_explicit(l, memory_order_relaxed);
        if (!(v & WR_BIT) && atomic_compare_exchange_weak_explicit(l, &v, v + 1, memory_order_acquire,
                                                                   memory_order_relaxed))
            return;
        sched_yield();
    }
}

static void rd_unlock(_Atomic uint32_t *l)
{
    atomic_fetch_sub_explicit(l, 1, memory_order_release);
}

static void wr_lock(_Atomic uint32_t *l)
{
    for (;;) {
        uint32_t v = 0;
        if (atomic_compare_exchange_weak_explicit(l, &v, WR_BIT, memory_order_acquire, memory_order_relaxed))
            return;
        sched_yield();
    }
}

static void wr_unlock(_Atomic uint32_t *l)
{
    atomic_store_explicit(l, 0, memory_order_release);
}

static void chunk_rd_lock(struct cache_stage *c, uint64_t idx)
{
    if (c->lock)
        rd_lock(&c->lock[idx]);
}

static void chunk_rd_unlock(struct cache_stage *c, uint64_t idx)
{
    if (c->lock)
        rd_unlock(&c->lock[idx]);
}

static void chunk_wr_lock(struct cache_stage *c, uint64_t idx)
{
    if (c->lock)
        wr_lock(&c->lock[idx]);
}

static void chunk_wr_unlock(struct cache_stage *c, uint64_t idx)
{
    if (c->lock)
        wr_unlock(&c->lock[idx]);
}

static struct cache_stage *as_cache(struct r3_source *s)
{
    return s && s->ops == &cache_ops ? (struct cache_stage *)s : NULL;
}

static int side_io(struct r3_source *s, void *buf, size_t len, uint64_t off, bool wr)
{
    return wr ? r3_source_write(s, buf, len, off) : r3_source_read(s, buf, len, off);
}

static int remote_io(struct cache_stage *c, void *buf, size_t len, uint64_t off, bool wr)
{
    return side_io(c->remote, buf, len, off, wr);
}

static int local_io(struct cache_stage *c, void *buf, size_t len, uint64_t off, bool wr)
{
    return side_io(c->local, buf, len, off, wr);
}

static void *buf_get(struct cache_stage *c)
{
    void *b = NULL;
    pthread_mutex_lock(&c->pool_lock);
    if (c->npool > 0)
        b = c->pool[--c->npool];
    pthread_mutex_unlock(&c->pool_lock);
    return b ? b : malloc(c->chunk);
}

static void buf_put(struct cache_stage *c, void *b)
{
    pthread_mutex_lock(&c->pool_lock);
    if (c->npool < CACHE_POOL) {
        c->pool[c->npool++] = b;
        b = NULL;
    }
    pthread_mutex_unlock(&c->pool_lock);
    free(b);
}

static size_t chunk_len(struct cache_stage *c, uint64_t idx)
{
    uint64_t off = idx * c->chunk;
    return c->src.size - off < c->chunk ? (size_t)(c->src.size - off) : c->chunk;
}

/* Publish a new state for idx and wake its waiters. */
static void set_state(struct cache_stage *c, uint64_t idx, uint8_t st)
{
    int s = (int)(idx % CACHE_STRIPES);
    pthread_mutex_lock(&c->stripe[s].m);
    atomic_store_explicit(&c->state[idx], st, memory_order_release);
    pthread_cond_broadcast(&c->stripe[s].c);
    pthread_mutex_unlock(&c->stripe[s].m);
}

/* Claim idx for filling: 1 = claimed (state now FETCHING), 0 = already
 * local. Waits while another thread fetches it. */
static int claim(struct cache_stage *c, uint64_t idx)
{
    for (;;) {
        uint8_t st = atomic_load_explicit(&c->state[idx], memory_order_acquire);
        if (st == LOCAL || st == ZERO)
            return 0;
        if (st == ABSENT) {
            uint8_t exp = ABSENT;
            if (atomic_compare_exchange_strong(&c->state[idx], &exp, FETCHING))
                return 1;
            continue;
        }
        int s = (int)(idx % CACHE_STRIPES);
        pthread_mutex_lock(&c->stripe[s].m);
        while (atomic_load_explicit(&c->state[idx], memory_order_acquire) == FETCHING)
            pthread_cond_wait(&c->stripe[s].c, &c->stripe[s].m);
        pthread_mutex_unlock(&c->stripe[s].m);
    }
}

/* Finish a claim: LOCAL (or ZERO) on success, back to ABSENT on failure. */
static void finish_as(struct cache_stage *c, uint64_t idx, int rc, int why, uint8_t st)
{
    if (rc == 0) {
        atomic_fetch_add(&c->nlocal, 1);
        set_state(c, idx, st);
        if (c->on_fill)
            c->on_fill(c->arg, idx, why);
    } else {
        set_state(c, idx, ABSENT);
    }
}

static void finish(struct cache_stage *c, uint64_t idx, int rc, int why)
{
    finish_as(c, idx, rc, why, LOCAL);
}

static bool present(uint8_t st)
{
    return st == LOCAL || st == ZERO;
}

/* Make the local side of a claimed chunk read as zeros without reading the
 * remote: memory of its own is dropped (page-aligned) or cleared, any other
 * local source is written from the shared zero buffer. */
static int local_zero(struct cache_stage *c, uint64_t off, size_t len)
{
    char *d = r3_source_direct(c->local, off, len);
    if (d) {
        uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
        bool whole = off % pg == 0 && (len % pg == 0 || off + len == c->src.size);
        if (!whole || madvise(d, len, MADV_DONTNEED) != 0)
            memset(d, 0, len);
        return 0;
    }
    const char *z = r3_zeros();
    while (len > 0) {
        size_t n = len < R3_ZEROS_LEN ? len : R3_ZEROS_LEN;
        int rc = local_io(c, (void *)z, n, off, true);
        if (rc < 0)
            return rc;
        off += n;
        len -= n;
    }
    return 0;
}

/* Does the remote hold only zeros in chunk idx? 1 yes, 0 no (or it cannot
 * tell). One extent query covers up to EXTENT_AHEAD chunks; what it says of
 * the chunks after idx is kept in known[] for their own fetch. */
static int remote_is_zero(struct cache_stage *c, uint64_t idx)
{
    uint8_t k = atomic_load_explicit(&c->known[idx], memory_order_relaxed);
    if (k != UNKNOWN)
        return k == K_ZERO;
    uint64_t off = idx * c->chunk, end = c->src.size;
    if (end - off > (uint64_t)EXTENT_AHEAD * c->chunk)
        end = off + (uint64_t)EXTENT_AHEAD * c->chunk;
    uint64_t run = 0;
    int rc = r3_source_extent(c->remote, off, end - off, &run);
    if (rc < 0) {
        r3_error_clear();                  /* the read says what is wrong, if anything */
        return 0;
    }
    /* whole chunks the run covers (the last chunk may be short) */
    uint64_t n = off + run >= c->src.size ? (run + c->chunk - 1) / c->chunk : run / c->chunk;
    if (rc == R3_EXTENT_DATA && n == 0)
        n = 1;                              /* data in part of idx: idx is data */
    uint8_t v = rc == R3_EXTENT_ZERO ? K_ZERO : K_DATA;
    for (uint64_t i = idx + 1; i < idx + n && i < c->nchunks; i++)
        atomic_store_explicit(&c->known[i], v, memory_order_relaxed);
    return rc == R3_EXTENT_ZERO && n > 0;
}

/* A write reached the local side of a present chunk: ZERO becomes LOCAL. */
static void to_local(struct cache_stage *c, uint64_t idx)
{
    uint8_t exp = ZERO;
    atomic_compare_exchange_strong(&c->state[idx], &exp, LOCAL);
}

/* -EINVAL with a sentence unless s is a cache and idx one of its chunks. */
static int check_idx(struct r3_source *s, uint64_t idx)
{
    struct cache_stage *c = as_cache(s);
    if (!c)
        return r3_error(-EINVAL, "cache: %s is not a cache stage", s ? s->ops->scheme : "NULL");
    if (idx >= c->nchunks)
        return r3_error(-EINVAL, "cache: chunk %llu out of range (%llu chunks)",
                        (unsigned long long)idx, (unsigned long long)c->nchunks);
    return 0;
}

/* A chunk the program reads or writes for the first time (not a pull):
 * its place in the access order, when one is recorded. */
static void note_access(struct cache_stage *c, uint64_t idx, int why)
{
    struct r3_order *o = why == R3_FETCH_PULL ? NULL : atomic_load_explicit(&c->order, memory_order_acquire);
    if (o)
        r3_order_note(o, idx);
}

int r3_cache_record_order(struct r3_source *s)
{
    struct cache_stage *c = as_cache(s);
    if (!c)
        return r3_error(-EINVAL, "cache: %s is not a cache stage", s ? s->ops->scheme : "NULL");
    if (atomic_load_explicit(&c->order, memory_order_acquire))
        return 0;
    struct r3_order *o = malloc(sizeof *o), *none = NULL;
    if (!o || r3_order_init(o, c->nchunks) < 0) {
        free(o);
        return r3_error(-ENOMEM, "cache: out of memory for the access order");
    }
    if (!atomic_compare_exchange_strong_explicit(&c->order, &none, o, memory_order_acq_rel, memory_order_acquire)) {
        r3_order_free(o);                 /* another call set it first */
        free(o);
    }
    return 0;
}

int r3_cache_access_order(struct r3_source *s, uint64_t **list, size_t *n)
{
    struct cache_stage *c = as_cache(s);
    *list = NULL;
    *n = 0;
    if (!c)
        return r3_error(-EINVAL, "cache: %s is not a cache stage", s ? s->ops->scheme : "NULL");
    struct r3_order *o = atomic_load_explicit(&c->order, memory_order_acquire);
    if (o)
        return r3_order_list(o, list, n);
    *list = malloc(sizeof **list);
    return *list ? 0 : r3_error(-ENOMEM, "cache: out of memory");
}

/* Fetch idx; 1 if this call fetched it, 0 if it was already local, -errno. */
int r3_cache_fetch_counted(struct r3_source *s, uint64_t idx, int why)
{
    int rc = check_idx(s, idx);
    if (rc < 0)
        return rc;
    struct cache_stage *c = as_cache(s);
    if (present(atomic_load_explicit(&c->state[idx], memory_order_acquire)) || !claim(c, idx))
        return 0;
    note_access(c, idx, why);
    size_t len = chunk_len(c, idx);
    uint64_t off = idx * c->chunk;
    if (remote_is_zero(c, idx)) {
        chunk_wr_lock(c, idx);
        rc = local_zero(c, off, len);
        chunk_wr_unlock(c, idx);
        finish_as(c, idx, rc, why, ZERO);
        return rc < 0 ? rc : 2;
    }
    void *d = r3_source_direct(c->local, off, len);
    if (d) {                   /* straight into the local memory: no second copy */
        r3_source_direct_populate(c->local, off, len);
        chunk_wr_lock(c, idx);
        rc = remote_io(c, d, len, off, false);
        chunk_wr_unlock(c, idx);
    } else {
        void *b = buf_get(c);
        rc = b ? 0 : r3_error(-ENOMEM, "cache: out of memory");
        if (rc == 0)
            rc = remote_io(c, b, len, off, false);
        if (rc == 0) {
            chunk_wr_lock(c, idx);
            rc = local_io(c, b, len, off, true);
            chunk_wr_unlock(c, idx);
        }
        if (b)
            buf_put(c, b);
    }
    finish(c, idx, rc, why);
    return rc < 0 ? rc : 1;
}

int r3_cache_fetch(struct r3_source *s, uint64_t idx, int why)
{
    int rc = r3_cache_fetch_counted(s, idx, why);
    return rc < 0 ? rc : 0;
}

bool r3_cache_is_local(struct r3_source *s, uint64_t idx)
{
    struct cache_stage *c = as_cache(s);
    return c && idx < c->nchunks && present(atomic_load_explicit(&c->state[idx], memory_order_acquire));
}

bool r3_cache_is_zero(struct r3_source *s, uint64_t idx)
{
    struct cache_stage *c = as_cache(s);
    return c && idx < c->nchunks &&
           atomic_load_explicit(&c->state[idx], memory_order_acquire) == ZERO;
}

bool r3_cache_is_fetching(struct r3_source *s, uint64_t idx)
{
    struct cache_stage *c = as_cache(s);
    return c && idx < c->nchunks &&
           atomic_load_explicit(&c->state[idx], memory_order_acquire) == FETCHING;
}

int r3_cache_invalidate(struct r3_source *s, uint64_t idx)
{
    int rc = check_idx(s, idx);
    if (rc < 0)
        return rc;
    struct cache_stage *c = as_cache(s);
    /* the remote changed (or will be asked again): forget what it said */
    atomic_store_explicit(&c->known[idx], UNKNOWN, memory_order_relaxed);
    uint8_t exp = LOCAL;
    if (atomic_compare_exchange_strong(&c->state[idx], &exp, ABSENT) ||
        (exp == ZERO && atomic_compare_exchange_strong(&c->state[idx], &exp, ABSENT)))
        atomic_fetch_sub(&c->nlocal, 1);
    return 0;
}

int r3_cache_mark_local(struct r3_source *s, uint64_t idx)
{
    int rc = check_idx(s, idx);
    if (rc < 0)
        return rc;
    struct cache_stage *c = as_cache(s);
    if (claim(c, idx))
        finish(c, idx, 0, R3_FETCH_READ);
    else
        to_local(c, idx);          /* the local side was written: no longer all zeros */
    return 0;
}

int r3_cache_peek(struct r3_source *s, void *buf, size_t len, uint64_t off, bool *local)
{
    struct cache_stage *c = as_cache(s);
    if (!c)
        return r3_error(-EINVAL, "cache: %s is not a cache stage", s ? s->ops->scheme : "NULL");
    uint64_t idx = off / c->chunk;
    if (idx >= c->nchunks || len > chunk_len(c, idx) - (off - idx * c->chunk))
        return r3_error(-EINVAL, "cache: peek of %zu bytes at %llu is not within one chunk", len,
                        (unsigned long long)off);
    for (;;) {
        uint8_t st = atomic_load_explicit(&c->state[idx], memory_order_acquire);
        if (st == ZERO) {
            memset(buf, 0, len);
            *local = true;
            return 0;
        }
        if (st == LOCAL) {
            chunk_rd_lock(c, idx);
            int rc = local_io(c, buf, len, off, false);
            chunk_rd_unlock(c, idx);
            *local = true;
            return rc;
        }
        int rc = remote_io(c, buf, len, off, false);
        if (rc < 0 || !present(atomic_load_explicit(&c->state[idx], memory_order_acquire))) {
            *local = false;
            return rc;
        }
        /* filled or written meanwhile: its local bytes are the current ones */
    }
}

int r3_cache_fill(struct r3_source *s, uint64_t idx, const void *buf)
{
    int rc = check_idx(s, idx);
    if (rc < 0)
        return rc;
    struct cache_stage *c = as_cache(s);
    if (present(atomic_load_explicit(&c->state[idx], memory_order_acquire)) || !claim(c, idx))
        return 0;
    chunk_wr_lock(c, idx);
    rc = local_io(c, (void *)buf, chunk_len(c, idx), idx * c->chunk, true);
    chunk_wr_unlock(c, idx);
    finish(c, idx, rc, R3_FETCH_PULL);
    return rc < 0 ? rc : 1;
}

uint64_t r3_cache_nchunks(struct r3_source *s)
{
    struct cache_stage *c = as_cache(s);
    return c ? c->nchunks : 0;
}

uint32_t r3_cache_chunk(struct r3_source *s)
{
    struct cache_stage *c = as_cache(s);
    return c ? c->chunk : 0;
}

uint64_t r3_cache_nlocal(struct r3_source *s)
{
    struct cache_stage *c = as_cache(s);
    return c ? atomic_load(&c->nlocal) : 0;
}

struct r3_source *r3_cache_remote(struct r3_source *s)
{
    struct cache_stage *c = as_cache(s);
    return c ? c->remote : NULL;
}

struct r3_source *r3_cache_local(struct r3_source *s)
{
    struct cache_stage *c = as_cache(s);
    return c ? c->local : NULL;
}

static int cache_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct cache_stage *c = (struct cache_stage *)s;
    char *p = buf;
    while (len > 0) {
        uint64_t idx = off / c->chunk;
        size_t n = (idx + 1) * c->chunk - off < len ? (size_t)((idx + 1) * c->chunk - off) : len;
        int rc = r3_cache_fetch(s, idx, R3_FETCH_READ);
        if (rc == 0 && atomic_load_explicit(&c->state[idx], memory_order_acquire) == ZERO) {
            memset(p, 0, n);           /* nothing to copy from anywhere */
        } else if (rc == 0) {
            chunk_rd_lock(c, idx);
            rc = local_io(c, p, n, off, false);
            chunk_rd_unlock(c, idx);
        }
        if (rc < 0)
            return rc;
        p += n;
        off += n;
        len -= n;
    }
    return 0;
}

static int cache_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct cache_stage *c = (struct cache_stage *)s;
    const char *p = buf;
    uint64_t off0 = off;
    size_t len0 = len;
    while (len > 0) {
        uint64_t idx = off / c->chunk;
        size_t clen = chunk_len(c, idx);
        uint64_t in = off - idx * c->chunk;
        size_t n = clen - in < len ? clen - in : len;
        int rc;
        if (in == 0 && n == clen) {
            /* A whole chunk: no need to fetch the old bytes. */
            bool claimed = claim(c, idx);
            if (claimed)
                note_access(c, idx, R3_FETCH_READ);
            chunk_wr_lock(c, idx);
            rc = local_io(c, (void *)p, n, off, true);
            chunk_wr_unlock(c, idx);
            if (claimed)
                finish(c, idx, rc, R3_FETCH_READ);
            else
                to_local(c, idx);
        } else {
            rc = r3_cache_fetch(s, idx, R3_FETCH_READ);
            if (rc == 0) {
                chunk_wr_lock(c, idx);
                rc = local_io(c, (void *)p, n, off, true);
                chunk_wr_unlock(c, idx);
            }
            if (rc == 0)
                to_local(c, idx);
        }
        if (rc < 0)
            return rc;
        p += n;
        off += n;
        len -= n;
    }
    if (c->mode == R3_CACHE_WRITE_THROUGH)
        return remote_io(c, (void *)buf, len0, off0, true);
    return 0;
}

/* What the cache knows of chunk idx: ZERO, DATA, or -1 (ask the remote). */
static int classify(struct cache_stage *c, uint64_t idx)
{
    uint8_t st = atomic_load_explicit(&c->state[idx], memory_order_acquire);
    if (st == ZERO || st == LOCAL)
        return st == ZERO ? R3_EXTENT_ZERO : R3_EXTENT_DATA;
    uint8_t k = atomic_load_explicit(&c->known[idx], memory_order_relaxed);
    return k == UNKNOWN ? -1 : k == K_ZERO ? R3_EXTENT_ZERO : R3_EXTENT_DATA;
}

/* Answered from the chunk states (and what the remote said before); a run of
 * chunks the cache knows nothing of is one question to the remote. */
static int cache_extent(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    struct cache_stage *c = (struct cache_stage *)s;
    uint64_t end = off + len, idx = off / c->chunk;
    int cls = classify(c, idx);
    uint64_t e = (idx + 1) * c->chunk;
    for (uint64_t i = idx + 1; e < end && classify(c, i) == cls; i++)
        e += c->chunk;
    if (e > end)
        e = end;
    if (cls >= 0) {
        *run = e - off;
        return cls;
    }
    return r3_source_extent(c->remote, off, e - off, run);
}

static int cache_flush(struct r3_source *s)
{
    struct cache_stage *c = (struct cache_stage *)s;
    int rc = r3_source_flush(c->local);
    if (rc == 0 && c->mode == R3_CACHE_WRITE_THROUGH)
        rc = r3_source_flush(c->remote);
    return rc;
}

static void cache_close(struct r3_source *s)
{
    struct cache_stage *c = (struct cache_stage *)s;
    r3_source_close(c->remote);
    if (!c->borrow_local)
        r3_source_close(c->local);
    for (int i = 0; i < c->npool; i++)
        free(c->pool[i]);
    for (int i = 0; i < CACHE_STRIPES; i++) {
        pthread_mutex_destroy(&c->stripe[i].m);
        pthread_cond_destroy(&c->stripe[i].c);
    }
    pthread_mutex_destroy(&c->pool_lock);
    free((void *)c->state);
    free((void *)c->known);
    free((void *)c->lock);
    struct r3_order *o = atomic_load(&c->order);
    if (o) {
        r3_order_free(o);
        free(o);
    }
    free(c);
}

static const struct r3_source_ops cache_ops = {
    .scheme = "cache", .read = cache_read, .write = cache_write, .flush = cache_flush,
    .close = cache_close, .extent = cache_extent,
};

void r3_cache_opts_init(struct r3_cache_opts *o)
{
    *o = (struct r3_cache_opts){ .struct_size = sizeof *o };
}

int r3_stage_cache_open(struct r3_source *remote, struct r3_source *local,
                        const struct r3_cache_opts *o, struct r3_source **out)
{
    if (o && r3_opts_check(o->struct_size, sizeof *o, "r3_cache_opts") < 0)
        return -EINVAL;
    uint32_t chunk = o && o->chunk ? o->chunk : R3_DEFAULT_CHUNK;
    if (!r3_is_pow2(chunk) || chunk < 512)
        return r3_error(-EINVAL, "cache: chunk %u is not a power of two of at least 512", chunk);
    if (local->size < remote->size)
        return r3_error(-EINVAL, "cache: the local source (%llu bytes) is smaller than the remote (%llu)",
                        (unsigned long long)local->size, (unsigned long long)remote->size);
    if (local->flags & R3_SRC_RDONLY)
        return r3_error(-EINVAL, "cache: the local source is read-only");
    struct cache_stage *c = calloc(1, sizeof *c);
    if (!c)
        return r3_error(-ENOMEM, "cache: out of memory");
    c->nchunks = (remote->size + chunk - 1) / chunk;
    c->state = calloc(c->nchunks ? c->nchunks : 1, 1);
    c->known = calloc(c->nchunks ? c->nchunks : 1, 1);
    /* A uffd region as the local side is the program's memory: reading a
     * chunk there can fault, and the fault handler fetches that chunk, so a
     * chunk lock held across the read would deadlock. Its bytes are ordered
     * by the faults themselves; every other local side gets the locks. */
    bool locks = strcmp(local->ops->scheme ? local->ops->scheme : "", "uffd-region") != 0;
    c->lock = locks ? calloc(c->nchunks ? c->nchunks : 1, sizeof *c->lock) : NULL;
    if (!c->state || !c->known || (locks && !c->lock)) {
        uint64_t n = c->nchunks;
        free((void *)c->state);
        free((void *)c->known);
        free((void *)c->lock);
        free(c);
        return r3_error(-ENOMEM, "cache: out of memory for %llu chunk states",
                        (unsigned long long)n);
    }
    c->remote = remote;
    c->local = local;
    c->chunk = chunk;
    c->mode = o ? o->mode : R3_CACHE_WRITE_THROUGH;
    c->borrow_local = o && o->borrow_local;
    c->on_fill = o ? o->on_fill : NULL;
    c->arg = o ? o->arg : NULL;
    pthread_mutex_init(&c->pool_lock, NULL);
    for (int i = 0; i < CACHE_STRIPES; i++) {
        pthread_mutex_init(&c->stripe[i].m, NULL);
        pthread_cond_init(&c->stripe[i].c, NULL);
    }
    r3_stage_init(&c->src, &cache_ops, remote);
    c->src.align = 1;
    *out = &c->src;
    return 0;
}
