/* SPDX-License-Identifier: BSD-3-Clause */
/* The leecher: a region (any strategy) or a source whose remote is the
 * seeder (an r3:// client), filled in the background by pull threads in the
 * seeder's access order, then finalized.
 *
 * Where the bytes land:
 *  - uffd with its memory as the local copy (opts.local NULL or "mem:"):
 *    the region reads the seeder itself (copy-on-write) and the pull
 *    threads fill it through its cache (the same fetch a fault does);
 *  - otherwise a cache over the seeder whose local side is opts.local
 *    ("own": mem:, or a file:// / dir:// that keeps the copy) and the
 *    region opened over it: uffd fills from it (its writes reach the local
 *    copy on sync), nbd-managed serves it, filesync copies it (after the
 *    pull, so its pre-copy reads local bytes). The source leecher is own.
 *
 * The pull threads take chunk numbers from one queue. At FINALIZE they are
 * paused and drained, so no fetch that read the seeder before its pause
 * can land afterwards; the seeder's dirty list then splits in two: chunks
 * already local are made remote again (own's copy is dropped, and the
 * region's by r3_region_invalidate; a strategy that cannot, nbd-managed
 * and filesync, has them read again and copied over its memory before the
 * region is usable); chunks not local yet will be fetched after the pause
 * anyway. Both go first in the new queue, and the region is usable at once
 * (post-copy). The seeder is read-only: B's writes stay on B. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"
#include "wire/call.h"
#include "migrate/leech.h"
#include "migrate/proto.h"

#define OVW (UINT64_C(1) << 63)      /* queue entry: copy the chunk over (it was stale) */
#define RUN_BYTES (1u << 20)         /* a pull request before FINALIZE reads up to this */

void r3_leech_opts_init(struct r3_leech_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
}

static bool bit(_Atomic uint64_t *m, uint64_t i)
{
    return atomic_load(&m[i >> 6]) >> (i & 63) & 1;
}

static void set_bit(_Atomic uint64_t *m, uint64_t i, bool on)
{
    if (on)
        atomic_fetch_or(&m[i >> 6], UINT64_C(1) << (i & 63));
    else
        atomic_fetch_and(&m[i >> 6], ~(UINT64_C(1) << (i & 63)));
}

/* Record the first error (under mu) and stop pulling: the seeder is gone or
 * lying, and asking again only waits out more timeouts. */
static void fail_locked(struct r3_leech *l, int rc, const char *msg)
{
    if (!l->err) {
        l->err = rc;
        snprintf(l->msg, sizeof l->msg, "%s", msg);
    }
    l->phase = R3_LEECH_FAILED;
    l->paused = true;
    pthread_cond_broadcast(&l->changed);
}

static int run_one(struct r3_leech *l, uint64_t e, uint8_t *buf)
{
    uint64_t idx = e & ~OVW;
    if (e & OVW) {
        /* own's copy was dropped: reading through it fetches the new bytes */
        int rc = r3_source_read(l->own ? l->own : l->data, buf, l->chunk, idx * l->chunk);
        if (rc < 0)
            return r3_error_prefix(rc, "leecher: re-pulling chunk %" PRIu64 ": ", idx);
        /* The region holds the chunk (or may) and nobody runs on it yet: a
         * plain copy replaces it. */
        memcpy((uint8_t *)l->r->base + idx * l->chunk, buf, l->chunk);
        set_bit(l->stale, idx, false);
    } else if (!r3_cache_is_local(l->cache, idx)) {
        int rc = r3_cache_fetch(l->cache, idx, R3_FETCH_PULL);
        if (rc < 0)
            return r3_error_prefix(rc, "leecher: pulling chunk %" PRIu64 ": ", idx);
    } else {
        return 0;
    }
    if (l->o.on_chunk_local)
        l->o.on_chunk_local(l->o.arg, idx);
    return 0;
}

/* Before FINALIZE nobody uses B's copy but the pull threads: a run of
 * consecutive chunks is read from the seeder in one request (the round
 * trip and the per-request cost paid once per run, not per chunk) and
 * written straight into the cache's local side, then marked local. After
 * FINALIZE chunks go one by one through the cache, whose claim orders them
 * with B's own reads and writes. */
static int run_many(struct r3_leech *l, uint64_t first, size_t n, uint8_t *buf)
{
    int rc = r3_source_read(l->data, buf, n * l->chunk, first * l->chunk);
    if (rc < 0)
        return r3_error_prefix(rc, "leecher: pulling chunks %" PRIu64 "-%" PRIu64 ": ", first, first + n - 1);
    for (size_t j = 0; j < n; j++) {
        uint64_t idx = first + j;
        /* claimed, written under its lock, marked local: a region's own
         * read of the chunk meanwhile waits or fetches it itself */
        if ((rc = r3_cache_fill(l->cache, idx, buf + j * l->chunk)) < 0)
            return r3_error_prefix(rc, "leecher: pulling chunk %" PRIu64 ": ", idx);
        if (rc == 1 && l->o.on_chunk_local)
            l->o.on_chunk_local(l->o.arg, idx);
    }
    return 0;
}

static void *worker_main(void *arg)
{
    struct r3_leech *l = arg;
    size_t maxrun = l->run > 1 ? l->run : 1;
    uint8_t *buf = malloc(maxrun * l->chunk);
    pthread_mutex_lock(&l->mu);
    if (!buf)
        fail_locked(l, -ENOMEM, "leecher: out of memory");
    for (;;) {
        while (!l->stop && (l->paused || l->qpos >= l->qlen))
            pthread_cond_wait(&l->work, &l->mu);
        if (l->stop)
            break;
        uint64_t e = l->queue[l->qpos++];
        size_t n = 1;
        if (!(e & OVW) && l->phase == R3_LEECH_PULLING)
            while (n < maxrun && l->qpos < l->qlen && l->queue[l->qpos] == e + n)
                l->qpos++, n++;
        l->active++;
        pthread_mutex_unlock(&l->mu);
        int rc = n > 1 ? run_many(l, e, n, buf) : run_one(l, e, buf);
        pthread_mutex_lock(&l->mu);
        l->active--;
        if (e & OVW)
            l->ovw_left--;
        if (rc < 0)
            fail_locked(l, rc, r3_last_error());
        if (l->active == 0 || (e & OVW) || l->qpos >= l->qlen)
            pthread_cond_broadcast(&l->changed);
    }
    pthread_mutex_unlock(&l->mu);
    free(buf);
    return NULL;
}

/* A migration call, delayed like every request when delay_us is set. */
static int ctl(struct r3_leech *l, const char *method, uint64_t a, uint64_t b, void *buf, uint64_t *val)
{
    if (l->o.delay_us)
        usleep((useconds_t)l->o.delay_us);
    return r3_wire_call(l->remote, method, a, b, buf, val);
}

/* Read entries [from, n) of a list of chunk indexes (method order/dirty)
 * into list, in slices. */
static int read_list(struct r3_leech *l, const char *method, uint64_t from, uint64_t n, uint64_t *list)
{
    uint64_t step = r3_wire_max_request(l->remote) / 8 * 8;
    if (step > (1u << 20))
        step = 1u << 20;
    uint8_t *buf = malloc(step);
    int rc = buf ? 0 : r3_error(-ENOMEM, "leecher: out of memory");
    for (uint64_t off = from * 8; rc == 0 && off < n * 8; off += step) {
        uint64_t len = n * 8 - off < step ? n * 8 - off : step;
        rc = ctl(l, method, off, len, buf, NULL);
        for (uint64_t i = 0; rc == 0 && i < len / 8; i++)
            list[off / 8 + i] = r3m_get64(buf + i * 8);
    }
    free(buf);
    for (uint64_t i = from; rc == 0 && i < n; i++)
        if (list[i] >= l->nchunks)
            rc = r3_error(-EPROTO, "leecher: the seeder's %s list names chunk %" PRIu64 " of %" PRIu64,
                          method, list[i], l->nchunks);
    return rc;
}

/* FINALIZE: the count and the dirty list's head come in one answer (A is
 * paused from its arrival); the rest, if any, in slices. */
static int finalize_call(struct r3_leech *l, uint64_t *n, uint64_t **dirty)
{
    uint64_t head = l->nchunks < 4096 ? l->nchunks : 4096, mr = r3_wire_max_request(l->remote);
    if (8 + head * 8 > mr)
        head = mr > 16 ? (mr - 8) / 8 : 1;
    uint8_t *b = malloc(8 + head * 8);
    if (!b)
        return r3_error(-ENOMEM, "leecher: out of memory");
    int rc = ctl(l, R3M_FINALIZE, l->session, 8 + head * 8, b, NULL);
    *n = rc == 0 ? r3m_get64(b) : 0;
    if (rc == 0 && *n > l->nchunks)
        rc = r3_error(-EPROTO, "leecher: the seeder names %" PRIu64 " dirty chunks of %" PRIu64, *n, l->nchunks);
    if (rc == 0 && !(*dirty = malloc((*n ? *n : 1) * sizeof **dirty)))
        rc = r3_error(-ENOMEM, "leecher: out of memory");
    for (uint64_t i = 0; rc == 0 && i < *n && i < head; i++)
        if (((*dirty)[i] = r3m_get64(b + 8 + i * 8)) >= l->nchunks)
            rc = r3_error(-EPROTO, "leecher: the seeder's dirty list names chunk %" PRIu64 " of %" PRIu64,
                          (*dirty)[i], l->nchunks);
    free(b);
    if (rc == 0 && *n > head)
        rc = read_list(l, R3M_DIRTY, head, *n, *dirty);
    if (rc < 0) {
        free(*dirty);
        *dirty = NULL;
    }
    return rc;
}

struct ranked { int64_t prio; uint64_t idx; };

static int by_rank(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;
    if (x->prio != y->prio)
        return x->prio < y->prio ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Pull order: opts.priority, else the seeder's first-fault order, then the
 * rest ascending. Chunks with a negative priority are not pulled ahead. */
static int plan(struct r3_leech *l, const uint64_t *order, size_t norder)
{
    struct ranked *rk = malloc(l->nchunks * sizeof *rk);
    l->byprio = malloc(l->nchunks * sizeof *l->byprio);
    if (!rk || !l->byprio) {
        free(rk);
        return r3_error(-ENOMEM, "leecher: out of memory");
    }
    for (uint64_t i = 0; i < l->nchunks; i++) {
        rk[i].idx = i;
        rk[i].prio = l->o.priority ? l->o.priority(l->o.arg, i) : (int64_t)(l->nchunks + i);
    }
    if (!l->o.priority)
        for (size_t k = norder; k-- > 0;)
            rk[order[k]].prio = (int64_t)k;     /* the first mention wins */
    qsort(rk, l->nchunks, sizeof *rk, by_rank);
    size_t n = 0;
    for (uint64_t i = 0; i < l->nchunks; i++)
        if (rk[i].prio >= 0)
            l->byprio[n++] = rk[i].idx;
    /* after finalize, everything is pulled: those last */
    for (uint64_t i = 0, k = n; i < l->nchunks; i++)
        if (rk[i].prio < 0)
            l->byprio[k++] = rk[i].idx;
    free(rk);
    l->queue = malloc((l->nchunks + 1) * sizeof *l->queue);
    if (!l->queue)
        return r3_error(-ENOMEM, "leecher: out of memory");
    memcpy(l->queue, l->byprio, n * sizeof *l->queue);
    l->qlen = n;
    return 0;
}

void r3m_leech_free(struct r3_leech *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
    for (unsigned i = 0; i < l->nworkers; i++)
        pthread_join(l->workers[i], NULL);
    if (l->owns)
        r3_source_close(l->own ? l->own : l->data);   /* own closes data, data the remote */
    free(l->workers);
    free(l->queue);
    free(l->byprio);
    free(l->stale);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->work);
    pthread_cond_destroy(&l->changed);
    free(l);
}

int r3m_leech_connect(const char *uri, const struct r3_leech_opts *o, struct r3_leech **out)
{
    struct r3_leech_opts def;
    *out = NULL;
    if (!o) {
        r3_leech_opts_init(&def);
        o = &def;
    }
    if (r3_opts_check(o->struct_size, sizeof *o, "r3_leech_opts") < 0)
        return -EINVAL;
    struct r3_source *src = NULL;
    int rc = r3_source_open(uri, &src);
    if (rc < 0)
        return r3_error_prefix(rc, "leecher: ");
    if (!r3_wire_max_request(src)) {
        r3_source_close(src);
        return r3_error(-EINVAL, "leecher: %s is not an r3:// seeder address", uri);
    }
    struct r3_leech *l = calloc(1, sizeof *l);
    if (!l) {
        r3_source_close(src);
        return r3_error(-ENOMEM, "leecher: out of memory");
    }
    l->o = *o;
    l->remote = l->data = src;
    l->owns = true;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work, NULL);
    pthread_cond_init(&l->changed, NULL);
    l->session = (r3_now_ns() * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)getpid() << 40) ^ (uintptr_t)l;
    if (!l->session)
        l->session = 1;
    uint64_t chunk = 0, norder = 0, *order = NULL;
    rc = ctl(l, R3M_HELLO, R3_MIGRATE_VERSION, l->session, NULL, &chunk);
    if (rc == -ENOSYS || rc == -ENOTSUP)
        rc = r3_error_prefix(rc, "leecher: %s is not a seeder (a plain r3serve?): ", uri);
    else if (rc == 0 && (!r3_is_pow2(chunk) || chunk < 4096 || chunk > (1u << 30) || src->size % chunk))
        rc = r3_error(-EPROTO, "leecher: the seeder's chunk (%" PRIu64 ") does not fit its size (%" PRIu64 ")",
                      chunk, src->size);
    if (rc == 0) {
        l->chunk = (uint32_t)chunk;
        l->nchunks = src->size / chunk;
        rc = ctl(l, R3M_TRACK, l->session, 0, NULL, &norder);
        if (rc == 0 && norder > l->nchunks)
            rc = r3_error(-EPROTO, "leecher: the seeder's access order has %" PRIu64 " entries for %" PRIu64
                          " chunks", norder, l->nchunks);
        if (rc == 0 && norder && !(order = malloc(norder * sizeof *order)))
            rc = r3_error(-ENOMEM, "leecher: out of memory");
        if (rc == 0 && norder)
            rc = read_list(l, R3M_ORDER, 0, norder, order);
    }
    if (rc == 0)
        rc = plan(l, order, (size_t)norder);
    free(order);
    if (rc == 0 && !(l->stale = calloc((l->nchunks + 63) / 64 + 1, 8)))
        rc = r3_error(-ENOMEM, "leecher: out of memory");
    if (rc == 0 && o->delay_us && (rc = r3_stage_delay_open(src, o->delay_us, &l->data)) < 0)
        r3_error_prefix(rc, "leecher: ");
    if (rc < 0) {
        r3m_leech_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

/* The local side: opts.local (a new file:// or dir:// gets the seeder's size), else mem:. */
static int open_local(const char *local, uint64_t size, struct r3_source **out)
{
    char uri[4200];
    if (!local || !strcmp(local, "mem:"))
        snprintf(uri, sizeof uri, "mem:?size=%" PRIu64, size);
    else if ((!strncmp(local, "file://", 7) || !strncmp(local, "dir://", 6)) && !strstr(local, "size="))
        snprintf(uri, sizeof uri, "%s%csize=%" PRIu64, local, strchr(local, '?') ? '&' : '?', size);
    else
        snprintf(uri, sizeof uri, "%s", local);
    int rc = r3_source_open(uri, out);
    if (rc < 0)
        return r3_error_prefix(rc, "leecher: the local copy: ");
    uint64_t have = (*out)->size;
    if (have < size || ((*out)->flags & R3_SRC_RDONLY)) {
        r3_source_close(*out);
        *out = NULL;
        return r3_error(-EINVAL, "leecher: the local copy %s is read-only or smaller (%" PRIu64
                        " bytes) than the seeder's %" PRIu64, local, have, size);
    }
    return 0;
}

int r3m_leech_own(struct r3_leech *l)
{
    struct r3_source *local = NULL;
    int rc = open_local(l->o.local, l->remote->size, &local);
    if (rc < 0)
        return rc;
    struct r3_cache_opts co;
    r3_cache_opts_init(&co);
    co.chunk = l->chunk;
    co.mode = R3_CACHE_WRITE_LOCAL;   /* the seeder is read-only; B's writes stay here */
    if ((rc = r3_stage_cache_open(l->data, local, &co, &l->own)) < 0) {
        r3_source_close(local);
        l->own = NULL;
        return rc;
    }
    l->own->flags &= ~R3_SRC_RDONLY;    /* the seeder is; B's copy is not */
    return 0;
}

int r3m_leech_start(struct r3_leech *l)
{
    /* Runs only where the cache reads the seeder itself (own, or a uffd
     * region in memory; not uffd over own, whose own copy must see every
     * chunk) and requests may be that long. */
    uint64_t mr = r3_wire_max_request(l->remote), bytes = mr < RUN_BYTES ? mr : RUN_BYTES;
    bool direct = l->cache == l->own || (l->r && !l->own);
    l->run = direct && r3_cache_local(l->cache) && bytes / l->chunk > 1 ? (size_t)(bytes / l->chunk) : 1;
    unsigned n = l->o.pull_workers ? l->o.pull_workers : 8;
    if (!(l->workers = calloc(n, sizeof *l->workers)))
        return r3_error(-ENOMEM, "leecher: out of memory");
    while (l->nworkers < n) {
        int rc = r3_thread_create(&l->workers[l->nworkers], worker_main, l);
        if (rc < 0)
            return r3_error(rc, "leecher: cannot start pull threads");
        l->nworkers++;
    }
    return 0;
}

int r3m_leech_drain(struct r3_leech *l)
{
    pthread_mutex_lock(&l->mu);
    while (!l->err && !(l->qpos >= l->qlen && l->active == 0))
        pthread_cond_wait(&l->changed, &l->mu);
    int rc = l->err ? r3_error(l->err, "%s", l->msg) : 0;
    pthread_mutex_unlock(&l->mu);
    return rc;
}

int r3m_leech_finalize(struct r3_leech *l)
{
    uint64_t t0 = r3_now_ns();
    pthread_mutex_lock(&l->mu);
    if (l->phase != R3_LEECH_PULLING) {
        int rc = l->phase == R3_LEECH_FAILED ? l->err : -EINVAL;
        pthread_mutex_unlock(&l->mu);
        return rc == -EINVAL ? r3_error(rc, "leecher: already finalized")
                             : r3_error(rc, "leecher: the seeder failed before FINALIZE: %s", l->msg);
    }
    /* Drain: no fetch that read the seeder before its pause lands after. */
    l->paused = true;
    while (l->active)
        pthread_cond_wait(&l->changed, &l->mu);
    if (l->err) {
        pthread_mutex_unlock(&l->mu);
        return r3_error(l->err, "leecher: the seeder failed before FINALIZE (nothing was finalized;"
                        " the seeder's region is untouched): %s", l->msg);
    }
    l->phase = R3_LEECH_FINALIZING;
    pthread_mutex_unlock(&l->mu);

    uint64_t n = 0, *dirty = NULL;
    int rc = finalize_call(l, &n, &dirty);
    uint64_t *st = rc == 0 ? malloc((n ? n : 1) * sizeof *st) : NULL;
    if (rc == 0 && !st)
        rc = r3_error(-ENOMEM, "leecher: out of memory");
    pthread_mutex_lock(&l->mu);
    if (rc < 0) {
        free(dirty);
        fail_locked(l, rc, r3_last_error());
        pthread_mutex_unlock(&l->mu);
        return r3_error(rc, "leecher: the seeder did not answer FINALIZE (it is gone, or lying; the region is"
                        " not usable): %s", l->msg);
    }
    l->ndirty = n;
    /* The dirty chunks B holds are stale: own's copy is dropped, the
     * region's made remote again (post-copy: the first access or the pull
     * fetches them), or, where the strategy cannot, copied over before the
     * region is usable. */
    size_t ns = 0, q = 0;
    for (uint64_t i = 0; i < n; i++)
        if (r3_cache_is_local(l->cache, dirty[i]))
            st[ns++] = dirty[i];
    for (uint64_t i = 0; l->own && i < n && rc == 0; i++)
        rc = r3_cache_invalidate(l->own, dirty[i]);
    if (rc == 0 && l->r) {
        for (size_t i = 0; i < ns; i++)
            set_bit(l->stale, st[i], true);
        rc = r3_region_invalidate(l->r, st, ns);
        if (rc == 0) {
            for (size_t i = 0; i < ns; i++)
                set_bit(l->stale, st[i], false);
        } else if (rc == -ENOTSUP) {
            for (size_t i = 0; i < ns; i++)
                l->queue[q++] = st[i] | OVW;
            rc = 0;
        }
    }
    free(st);
    uint64_t *rest = rc == 0 ? realloc(l->queue, (q + n + l->nchunks + 1) * sizeof *l->queue) : NULL;
    if (rc == 0 && !rest)
        rc = r3_error(-ENOMEM, "leecher: out of memory");
    if (rc < 0) {
        free(dirty);
        fail_locked(l, rc, r3_last_error());
        pthread_mutex_unlock(&l->mu);
        return r3_error(rc, "leecher: cannot make the dirty chunks remote again: %s", l->msg);
    }
    l->queue = rest;
    l->ovw_left = q;
    for (uint64_t i = 0; i < n; i++)
        if (!r3_cache_is_local(l->cache, dirty[i]) && !bit(l->stale, dirty[i]))
            l->queue[q++] = dirty[i];
    free(dirty);
    for (uint64_t i = 0; i < l->nchunks; i++)
        if (!r3_cache_is_local(l->cache, l->byprio[i]) && !bit(l->stale, l->byprio[i]))
            l->queue[q++] = l->byprio[i];
    l->qlen = q;
    l->qpos = 0;
    l->paused = false;
    pthread_cond_broadcast(&l->work);
    while (l->ovw_left && !l->err)
        pthread_cond_wait(&l->changed, &l->mu);
    if (l->err) {
        /* stale chunks stay marked: r3_leech_missing names them */
        pthread_mutex_unlock(&l->mu);
        return r3_error(l->err, "leecher: the seeder failed during FINALIZE; the region is not usable: %s",
                        l->msg);
    }
    l->finalize_ns = r3_now_ns() - t0;
    l->phase = R3_LEECH_POSTCOPY;
    pthread_mutex_unlock(&l->mu);
    return 0;
}

int r3m_leech_missing(struct r3_leech *l, uint64_t **chunks, size_t *n)
{
    size_t k = 0;
    uint64_t *list = malloc((l->nchunks ? l->nchunks : 1) * sizeof *list);
    if (!list)
        return r3_error(-ENOMEM, "leecher: out of memory");
    for (uint64_t i = 0; i < l->nchunks; i++)
        if (!r3_cache_is_local(l->cache, i) || bit(l->stale, i))
            list[k++] = i;
    *chunks = list;
    *n = k;
    return 0;
}

int r3m_leech_wait(struct r3_leech *l)
{
    pthread_mutex_lock(&l->mu);
    if (l->phase == R3_LEECH_PULLING || l->phase == R3_LEECH_FINALIZING) {
        pthread_mutex_unlock(&l->mu);
        return r3_error(-EINVAL, "leecher: waiting comes after finalizing");
    }
    while (!l->err && l->phase != R3_LEECH_DONE && !(l->qpos >= l->qlen && l->active == 0))
        pthread_cond_wait(&l->changed, &l->mu);
    bool done = l->phase == R3_LEECH_DONE;
    pthread_mutex_unlock(&l->mu);
    if (done)
        return 0;
    uint64_t *miss = NULL;
    size_t nm = 0;
    int rc = r3m_leech_missing(l, &miss, &nm);
    if (rc < 0)
        return rc;
    if (nm) {
        char list[160] = "";
        size_t o = 0;
        for (size_t i = 0; i < nm && i < 12 && o < sizeof list - 24; i++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s%" PRIu64, i ? ", " : "", miss[i]);
        free(miss);
        pthread_mutex_lock(&l->mu);
        char why[256];
        snprintf(why, sizeof why, "%s", l->err ? l->msg : "a chunk could not be pulled");
        int err = l->err ? l->err : -EIO;
        l->phase = R3_LEECH_FAILED;
        pthread_mutex_unlock(&l->mu);
        return r3_error(err, "leecher: %zu chunk%s still missing (%s%s) and the seeder cannot give them: %s",
                        nm, nm == 1 ? "" : "s", list, nm > 12 ? ", ..." : "", why);
    }
    free(miss);
    rc = ctl(l, R3M_RELEASE, l->session, 0, NULL, NULL);
    pthread_mutex_lock(&l->mu);
    if (rc == 0)
        l->phase = R3_LEECH_DONE;
    pthread_mutex_unlock(&l->mu);
    /* Every chunk is here: a failed RELEASE only means the seeder waits for
     * its own timeout; the copy is complete. */
    return rc < 0 ? r3_error_prefix(rc, "leecher: every chunk is local, but RELEASE failed: ") : 0;
}

void r3m_leech_progress(struct r3_leech *l, struct r3_leech_progress *p)
{
    memset(p, 0, sizeof *p);
    uint64_t nstale = 0;
    for (uint64_t w = 0; w < (l->nchunks + 63) / 64; w++)
        nstale += (uint64_t)__builtin_popcountll(atomic_load(&l->stale[w]));
    p->chunks_total = l->nchunks;
    uint64_t nl = l->cache ? r3_cache_nlocal(l->cache) : 0;
    p->chunks_local = nl > nstale ? nl - nstale : 0;
    p->bytes_local = p->chunks_local * l->chunk;
    pthread_mutex_lock(&l->mu);
    p->chunks_dirty = l->ndirty;
    p->phase = l->phase;
    p->finalize_ns = l->finalize_ns;
    p->error = l->err;
    snprintf(p->message, sizeof p->message, "%s", l->msg);
    pthread_mutex_unlock(&l->mu);
}

/* ---- the region leecher */

void r3_leech_detach_(struct r3_region *r)
{
    struct r3_leech *l = r->leech;
    r->leech = NULL;
    r3m_leech_free(l);
}

int r3_leech_open(const char *uri, const struct r3_leech_opts *o, struct r3_region **out)
{
    *out = NULL;
    if (o && r3_opts_check(o->struct_size, sizeof *o, "r3_leech_opts") < 0)
        return -EINVAL;
    const char *strategy = o && o->strategy ? o->strategy : "uffd", *local = o ? o->local : NULL;
    const struct r3_strategy_ops *ops = r3_strategy_find(strategy);
    if (!ops)
        return r3_error(-EINVAL, "leecher: unknown strategy '%s'", strategy);
    bool uffd = !strcmp(ops->name, "uffd"), in_memory = uffd && (!local || !strcmp(local, "mem:"));
    /* filesync copies its whole source when it opens: it opens once the
     * pull is done, so that copy reads local bytes */
    bool pull_first = !strcmp(ops->name, "filesync");
    struct r3_leech *l;
    int rc = r3m_leech_connect(uri, o, &l);
    if (rc < 0)
        return rc;
    if (!in_memory && (rc = r3m_leech_own(l)) < 0) {
        r3m_leech_free(l);
        return rc;
    }
    if (pull_first) {
        l->cache = l->own;
        if ((rc = r3m_leech_start(l)) < 0 || (rc = r3m_leech_drain(l)) < 0) {
            r3m_leech_free(l);
            return rc;
        }
    }
    struct r3_region_opts ro;
    r3_region_opts_init(&ro);
    ro.strategy = ops->name;
    ro.chunk = l->chunk;
    ro.copy_on_write = in_memory;     /* the seeder is read-only; writes stay here */
    ro.pull_workers = 0;              /* ours pull */
    ro.fault_threads = uffd ? l->o.fault_threads : 0;
    ro.hooks.on_error = l->o.on_error;
    ro.hooks.arg = l->o.arg;
    struct r3_region *r = NULL;
    l->owns = false;                  /* the region takes its source, also on failure */
    if ((rc = r3_region_open(&ro, l->own ? l->own : l->data, &r)) < 0) {
        r3m_leech_free(l);            /* its pull threads are idle */
        return r3_error_prefix(rc, "leecher: ");
    }
    l->r = r;
    r->leech = l;
    if (!l->cache)
        l->cache = r3_region_cache(r) ? r3_region_cache(r) : l->own;
    if (!l->cache)
        rc = r3_error(-ENOTSUP, "leecher: the %s strategy has no cache to fill", ops->name);
    if (rc == 0 && !l->workers)
        rc = r3m_leech_start(l);
    if (rc < 0) {
        r3_region_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

static struct r3_leech *leech_of(struct r3_region *r)
{
    if (!r || !r->leech)
        r3_error(-EINVAL, "not a leeched region (r3_leech_open)");
    return r ? r->leech : NULL;
}

int r3_leech_finalize(struct r3_region *r)
{
    struct r3_leech *l = leech_of(r);
    return l ? r3m_leech_finalize(l) : -EINVAL;
}

int r3_leech_missing(struct r3_region *r, uint64_t **chunks, size_t *n)
{
    struct r3_leech *l = leech_of(r);
    return l ? r3m_leech_missing(l, chunks, n) : -EINVAL;
}

int r3_leech_wait(struct r3_region *r)
{
    struct r3_leech *l = leech_of(r);
    return l ? r3m_leech_wait(l) : -EINVAL;
}

int r3_leech_progress(struct r3_region *r, struct r3_leech_progress *p)
{
    struct r3_leech *l = leech_of(r);
    memset(p, 0, sizeof *p);
    if (!l)
        return -EINVAL;
    r3m_leech_progress(l, p);
    return 0;
}
