/* SPDX-License-Identifier: BSD-3-Clause */
/* The leecher: a uffd region whose source is the seeder (an r3:// client),
 * filled in the background by pull threads in the seeder's access order,
 * then finalized.
 *
 * The pull threads take chunk numbers from one queue and make each local
 * through the region's cache (the same fetch a fault does: one fetch per
 * chunk even when a fault and a pull meet). At FINALIZE the threads are
 * paused and drained, so no fetch that read the seeder before its pause
 * can land afterwards; the seeder's dirty list then splits in two: chunks
 * already local are made remote again (r3_region_invalidate: their pages
 * are dropped, the next access fetches them; a strategy that cannot has
 * them read again and copied over before the region is usable); chunks not
 * local yet will be fetched after the pause anyway. Both go first in the
 * new queue, and the region is usable at once (post-copy). The region is copy-on-write: the
 * seeder is read-only and the leecher's writes stay in its memory. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"
#include "r3/migrate.h"
#include "wire/call.h"
#include "migrate/proto.h"

#define OVW (UINT64_C(1) << 63)      /* queue entry: copy the chunk over (it was stale) */

struct r3_leech {
    struct r3_region *r;
    struct r3_source *remote;         /* the r3:// client (owned by the region) */
    struct r3_source *data;           /* what chunks are read from: remote, or a delay stage over it */
    struct r3_source *cache;          /* the region's cache (borrowed) */
    struct r3_leech_opts o;
    uint64_t session, nchunks;
    uint32_t chunk;
    uint64_t *byprio;                 /* chunks in pull order */
    pthread_mutex_t mu;
    pthread_cond_t work, changed;
    uint64_t *queue;                  /* under mu */
    size_t qlen, qpos, ovw_left;
    unsigned active;
    bool paused, stop;
    pthread_t *workers;
    unsigned nworkers;
    _Atomic uint64_t *stale;          /* local in the cache but changed at the seeder */
    int phase, err;
    char msg[256];
    uint64_t ndirty, finalize_ns;
};

void r3_leech_opts_init(struct r3_leech_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
}

static bool bit(_Atomic uint64_t *m, uint64_t i)
{
    return atomic_load(&m[i >> 6]) >> (i & 63) & 1;
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
        int rc = r3_source_read(l->data, buf, l->chunk, idx * l->chunk);
        if (rc < 0)
            return r3_error_prefix(rc, "re-pulling chunk %" PRIu64 ": ", idx);
        /* The chunk is installed (it was local) and nobody runs on the
         * region yet: a plain copy replaces it. */
        memcpy((uint8_t *)l->r->base + idx * l->chunk, buf, l->chunk);
        atomic_fetch_and(&l->stale[idx >> 6], ~(UINT64_C(1) << (idx & 63)));
    } else if (!r3_cache_is_local(l->cache, idx)) {
        int rc = r3_cache_fetch(l->cache, idx, R3_FETCH_PULL);
        if (rc < 0)
            return r3_error_prefix(rc, "pulling chunk %" PRIu64 ": ", idx);
    } else {
        return 0;
    }
    if (l->o.on_chunk_local)
        l->o.on_chunk_local(l->o.arg, idx);
    return 0;
}

static void *worker_main(void *arg)
{
    struct r3_leech *l = arg;
    uint8_t *buf = malloc(l->chunk);
    pthread_mutex_lock(&l->mu);
    if (!buf)
        fail_locked(l, -ENOMEM, "leecher: out of memory");
    for (;;) {
        while (!l->stop && (l->paused || l->qpos >= l->qlen))
            pthread_cond_wait(&l->work, &l->mu);
        if (l->stop)
            break;
        uint64_t e = l->queue[l->qpos++];
        l->active++;
        pthread_mutex_unlock(&l->mu);
        int rc = run_one(l, e, buf);
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

/* Read a list of n chunk indexes (method order/dirty) in slices. */
static int read_list(struct r3_leech *l, const char *method, uint64_t n, uint64_t **out)
{
    uint64_t *list = malloc((n ? n : 1) * sizeof *list);
    uint64_t step = r3_wire_max_request(l->remote) / 8 * 8;
    if (step > (1u << 20))
        step = 1u << 20;
    uint8_t *buf = malloc(step);
    int rc = list && buf ? 0 : r3_error(-ENOMEM, "leecher: out of memory");
    for (uint64_t off = 0; rc == 0 && off < n * 8; off += step) {
        uint64_t len = n * 8 - off < step ? n * 8 - off : step;
        rc = ctl(l, method, off, len, buf, NULL);
        for (uint64_t i = 0; rc == 0 && i < len / 8; i++) {
            uint64_t c = r3m_get64(buf + i * 8);
            if (c >= l->nchunks)
                rc = r3_error(-EPROTO, "leecher: the seeder's %s list names chunk %" PRIu64 " of %" PRIu64,
                              method, c, l->nchunks);
            list[off / 8 + i] = c;
        }
    }
    free(buf);
    if (rc < 0) {
        free(list);
        return rc;
    }
    *out = list;
    return 0;
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

static void leech_free(struct r3_leech *l)
{
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
    for (unsigned i = 0; i < l->nworkers; i++)
        pthread_join(l->workers[i], NULL);
    free(l->workers);
    free(l->queue);
    free(l->byprio);
    free(l->stale);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->work);
    pthread_cond_destroy(&l->changed);
    free(l);
}

void r3_leech_detach_(struct r3_region *r)
{
    struct r3_leech *l = r->leech;
    r->leech = NULL;
    leech_free(l);
}

int r3_leech_open(const char *uri, const struct r3_leech_opts *o, struct r3_region **out)
{
    struct r3_leech_opts def;
    *out = NULL;
    if (!o) {
        r3_leech_opts_init(&def);
        o = &def;
    }
    if (r3_opts_check(o->struct_size, sizeof *o, "r3_leech_opts") < 0)
        return -EINVAL;
    if (o->strategy && strcmp(o->strategy, "uffd") != 0)
        return r3_error(-ENOTSUP, "leecher: the %s strategy cannot leech yet (uffd can)", o->strategy);
    if (o->local && strncmp(o->local, "mem:", 4) != 0)
        return r3_error(-ENOTSUP, "leecher: a uffd region's local copy is its memory (local \"mem:\");"
                        " %s is not supported", o->local);
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
    l->remote = src;
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
        if (rc == 0 && norder)
            rc = read_list(l, R3M_ORDER, norder, &order);
    }
    if (rc == 0)
        rc = plan(l, order, (size_t)norder);
    free(order);
    l->stale = calloc((l->nchunks + 63) / 64 + 1, 8);
    if (rc == 0 && !l->stale)
        rc = r3_error(-ENOMEM, "leecher: out of memory");
    if (rc < 0) {
        r3_source_close(src);
        leech_free(l);
        return rc;
    }
    l->data = src;
    if (o->delay_us && (rc = r3_stage_delay_open(src, o->delay_us, &l->data)) < 0) {
        r3_source_close(src);
        leech_free(l);
        return r3_error_prefix(rc, "leecher: ");
    }
    src = l->data;
    struct r3_region_opts ro;
    r3_region_opts_init(&ro);
    ro.strategy = "uffd";
    ro.chunk = l->chunk;
    ro.copy_on_write = true;          /* the seeder is read-only; writes stay here */
    ro.pull_workers = 0;              /* ours pull */
    ro.fault_threads = o->fault_threads;
    ro.hooks.on_error = o->on_error;
    ro.hooks.arg = o->arg;
    struct r3_region *r = NULL;
    if ((rc = r3_region_open(&ro, src, &r)) < 0) {       /* takes src */
        leech_free(l);
        return r3_error_prefix(rc, "leecher: ");
    }
    l->r = r;
    l->cache = r3_region_cache(r);
    unsigned n = o->pull_workers ? o->pull_workers : 8;
    l->workers = calloc(n, sizeof *l->workers);
    rc = l->cache && l->workers ? 0 : r3_error(-ENOMEM, "leecher: out of memory");
    while (rc == 0 && l->nworkers < n) {
        if ((rc = r3_thread_create(&l->workers[l->nworkers], worker_main, l)) < 0)
            r3_error(rc, "leecher: cannot start pull threads");
        else
            l->nworkers++;
    }
    r->leech = l;
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
    if (!l)
        return -EINVAL;
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
    int rc = ctl(l, R3M_FINALIZE, l->session, 0, NULL, &n);
    if (rc == 0 && n > l->nchunks)
        rc = r3_error(-EPROTO, "leecher: the seeder names %" PRIu64 " dirty chunks of %" PRIu64, n, l->nchunks);
    if (rc == 0 && n)
        rc = read_list(l, R3M_DIRTY, n, &dirty);
    pthread_mutex_lock(&l->mu);
    if (rc < 0) {
        fail_locked(l, rc, r3_last_error());
        pthread_mutex_unlock(&l->mu);
        return r3_error(rc, "leecher: the seeder did not answer FINALIZE (it is gone, or lying; the region is"
                        " not usable): %s", l->msg);
    }
    l->ndirty = n;
    /* The dirty chunks B holds are stale: made remote again (post-copy: the
     * first access or the pull fetches them), or, where the strategy cannot,
     * copied over before the region is usable. */
    size_t q = 0, ns = 0;
    uint64_t *st = malloc((n ? n : 1) * sizeof *st);
    if (!st) {
        free(dirty);
        fail_locked(l, -ENOMEM, "leecher: out of memory");
        pthread_mutex_unlock(&l->mu);
        return r3_error(-ENOMEM, "leecher: out of memory");
    }
    for (uint64_t i = 0; i < n; i++)
        if (r3_cache_is_local(l->cache, dirty[i]))
            st[ns++] = dirty[i];
    for (size_t i = 0; i < ns; i++)
        atomic_fetch_or(&l->stale[st[i] >> 6], UINT64_C(1) << (st[i] & 63));
    rc = r3_region_invalidate(l->r, st, ns);
    if (rc == 0) {
        for (size_t i = 0; i < ns; i++)
            atomic_fetch_and(&l->stale[st[i] >> 6], ~(UINT64_C(1) << (st[i] & 63)));
    } else if (rc == -ENOTSUP) {
        for (size_t i = 0; i < ns; i++)
            l->queue[q++] = st[i] | OVW;
    } else {
        free(st);
        free(dirty);
        fail_locked(l, rc, r3_last_error());
        pthread_mutex_unlock(&l->mu);
        return r3_error(rc, "leecher: cannot make the dirty chunks remote again: %s", l->msg);
    }
    free(st);
    l->ovw_left = q;
    for (uint64_t i = 0; i < n && q < l->nchunks; i++)
        if (!r3_cache_is_local(l->cache, dirty[i]))
            l->queue[q++] = dirty[i];
    free(dirty);
    uint64_t *rest = realloc(l->queue, (q + l->nchunks + 1) * sizeof *l->queue);
    if (!rest) {
        fail_locked(l, -ENOMEM, "leecher: out of memory");
        pthread_mutex_unlock(&l->mu);
        return r3_error(-ENOMEM, "leecher: out of memory");
    }
    l->queue = rest;
    for (uint64_t i = 0; i < l->nchunks; i++)
        if (!r3_cache_is_local(l->cache, l->byprio[i]))
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

int r3_leech_missing(struct r3_region *r, uint64_t **chunks, size_t *n)
{
    struct r3_leech *l = leech_of(r);
    if (!l)
        return -EINVAL;
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

int r3_leech_wait(struct r3_region *r)
{
    struct r3_leech *l = leech_of(r);
    if (!l)
        return -EINVAL;
    pthread_mutex_lock(&l->mu);
    if (l->phase == R3_LEECH_PULLING || l->phase == R3_LEECH_FINALIZING) {
        pthread_mutex_unlock(&l->mu);
        return r3_error(-EINVAL, "leecher: r3_leech_wait comes after r3_leech_finalize");
    }
    while (!l->err && l->phase != R3_LEECH_DONE && !(l->qpos >= l->qlen && l->active == 0))
        pthread_cond_wait(&l->changed, &l->mu);
    bool done = l->phase == R3_LEECH_DONE;
    pthread_mutex_unlock(&l->mu);
    if (done)
        return 0;
    uint64_t *miss = NULL;
    size_t nm = 0;
    int rc = r3_leech_missing(r, &miss, &nm);
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
     * its own timeout; the region is complete. */
    return rc < 0 ? r3_error_prefix(rc, "leecher: every chunk is local, but RELEASE failed: ") : 0;
}

int r3_leech_progress(struct r3_region *r, struct r3_leech_progress *p)
{
    struct r3_leech *l = leech_of(r);
    memset(p, 0, sizeof *p);
    if (!l)
        return -EINVAL;
    uint64_t nstale = 0;
    for (uint64_t w = 0; w < (l->nchunks + 63) / 64; w++)
        nstale += (uint64_t)__builtin_popcountll(atomic_load(&l->stale[w]));
    p->chunks_total = l->nchunks;
    uint64_t nl = r3_cache_nlocal(l->cache);
    p->chunks_local = nl > nstale ? nl - nstale : 0;
    p->bytes_local = p->chunks_local * l->chunk;
    pthread_mutex_lock(&l->mu);
    p->chunks_dirty = l->ndirty;
    p->phase = l->phase;
    p->finalize_ns = l->finalize_ns;
    p->error = l->err;
    snprintf(p->message, sizeof p->message, "%s", l->msg);
    pthread_mutex_unlock(&l->mu);
    return 0;
}
