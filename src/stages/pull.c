/* SPDX-License-Identifier: BSD-3-Clause */
/* pull stage: background workers make every chunk of a cache local, in
 * priority order (lowest first; negative = never). The order is fixed when
 * the stage opens; chunks that became local meanwhile are skipped. Reads
 * and writes fall through to the cache (NULL ops), so a read of a chunk being pulled
 * waits for that pull instead of fetching it twice. A chunk the remote's
 * extent op says is zero is not fetched: the cache records it as zero.
 * Held workers (r3_pull_opts.held) wait for r3_pull_start: an nbd-managed
 * region lets them go once its device is ready, so that they do not take
 * the CPU its mount helper needs to start. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>
#include "internal.h"

struct pull_stage {
    struct r3_source src;
    struct r3_source *cache;
    uint64_t *order;              /* chunk indices, in pull order */
    uint64_t norder;
    _Atomic uint64_t next;        /* cursor into order */
    _Atomic uint64_t pulled, bytes;
    _Atomic int error;
    _Atomic bool stop;
    unsigned want, nworkers;      /* workers asked for, started (under m) */
    pthread_t *workers;           /* [0] the first, which starts the others */
    pthread_mutex_t m;
    pthread_cond_t done_cv, go_cv;
    bool held;                    /* under m: workers wait on go_cv */
    unsigned running;             /* workers not yet finished (under m) */
    bool joined;
};

static const struct r3_source_ops pull_ops;

static struct pull_stage *as_pull(struct r3_source *s)
{
    return s && s->ops == &pull_ops ? (struct pull_stage *)s : NULL;
}

/* Pull workers yield the CPU to the program and to r3's demand path:
 * they run PULL_NICE steps below the thread that opens the stage (at most
 * 19; on Linux a nice value is a thread's own, and threads it starts
 * inherit it). At 0 ms,
 * sixteen workers copying at full speed starved an nbd-managed open and
 * its mount helper (exp. 6). Where the remote has a round trip the
 * workers mostly wait and lose nothing. */
#define PULL_NICE 10
static void background(void)
{
    errno = 0;
    int now = getpriority(PRIO_PROCESS, 0);
    if (now == -1 && errno)
        return;
    int want = now + PULL_NICE > 19 ? 19 : now + PULL_NICE;
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), want);
}

static void *pull_worker(void *arg)
{
    struct pull_stage *p = arg;
    uint32_t chunk = r3_cache_chunk(p->cache);
    while (!atomic_load(&p->stop)) {
        uint64_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->norder)
            break;
        uint64_t idx = p->order[i];
        if (r3_cache_is_local(p->cache, idx))
            continue;
        int rc = r3_cache_fetch_counted(p->cache, idx, R3_FETCH_PULL);
        /* 2: the remote said the chunk is zero; the cache recorded it as
         * present without reading it (it still counts as pulled) */
        if (rc == 1 || rc == 2) {
            atomic_fetch_add(&p->pulled, 1);
            atomic_fetch_add(&p->bytes, chunk);
        } else if (rc < 0) {
            int zero = 0;
            atomic_compare_exchange_strong(&p->error, &zero, rc);
        }
    }
    pthread_mutex_lock(&p->m);
    if (--p->running == 0)
        pthread_cond_broadcast(&p->done_cv);
    pthread_mutex_unlock(&p->m);
    return NULL;
}

/* The first worker: lowered to the background, it waits until the stage
 * is let go (held), starts the others (they inherit its nice value) and
 * pulls with them. Starting threads costs about half a millisecond each
 * here, so the opener starts one and not sixteen. */
static void *pull_first(void *arg)
{
    struct pull_stage *p = arg;
    background();
    pthread_mutex_lock(&p->m);
    while (p->held && !atomic_load(&p->stop))
        pthread_cond_wait(&p->go_cv, &p->m);
    pthread_mutex_unlock(&p->m);
    for (unsigned i = 1; i < p->want && !atomic_load(&p->stop); i++) {
        pthread_mutex_lock(&p->m);
        p->running++;
        pthread_mutex_unlock(&p->m);
        pthread_t t;
        if (r3_thread_create(&t, pull_worker, p) < 0) {
            pthread_mutex_lock(&p->m);
            p->running--;
            pthread_mutex_unlock(&p->m);
            break;                          /* the ones started pull it all */
        }
        pthread_mutex_lock(&p->m);
        p->workers[p->nworkers++] = t;
        pthread_mutex_unlock(&p->m);
    }
    return pull_worker(p);
}

struct prio { int64_t prio; uint64_t idx; };

static int prio_cmp(const void *a, const void *b)
{
    const struct prio *x = a, *y = b;
    if (x->prio != y->prio)
        return x->prio < y->prio ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int build_order(struct pull_stage *p, const struct r3_pull_opts *o)
{
    uint64_t n = r3_cache_nchunks(p->cache);
    p->order = malloc((n ? n : 1) * sizeof *p->order);
    if (!p->order)
        return r3_error(-ENOMEM, "pull: out of memory");
    if (!o->priority) {
        for (uint64_t i = 0; i < n; i++)
            p->order[i] = i;
        p->norder = n;
        return 0;
    }
    struct prio *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return r3_error(-ENOMEM, "pull: out of memory");
    uint64_t k = 0;
    for (uint64_t i = 0; i < n; i++) {
        int64_t pr = o->priority(o->arg, i);
        if (pr >= 0)
            v[k++] = (struct prio){ pr, i };
    }
    qsort(v, k, sizeof *v, prio_cmp);
    for (uint64_t i = 0; i < k; i++)
        p->order[i] = v[i].idx;
    p->norder = k;
    free(v);
    return 0;
}

static int not_pull(struct r3_source *s)
{
    return r3_error(-EINVAL, "pull: %s is not a pull stage", s ? s->ops->scheme : "NULL");
}

int r3_pull_progress(struct r3_source *s, struct r3_pull_progress *pr)
{
    struct pull_stage *p = as_pull(s);
    *pr = (struct r3_pull_progress){ 0 };
    if (!p)
        return not_pull(s);
    pr->chunks_total = r3_cache_nchunks(p->cache);
    pr->chunks_local = r3_cache_nlocal(p->cache);
    pr->chunks_pulled = atomic_load(&p->pulled);
    pr->bytes_pulled = atomic_load(&p->bytes);
    pr->error = atomic_load(&p->error);
    pthread_mutex_lock(&p->m);
    pr->done = p->running == 0 && pr->error == 0 && !atomic_load(&p->stop);
    pthread_mutex_unlock(&p->m);
    return 0;
}

/* Let held workers go (also when stopping: they see stop and end). */
static void release(struct pull_stage *p)
{
    pthread_mutex_lock(&p->m);
    p->held = false;
    pthread_cond_broadcast(&p->go_cv);
    pthread_mutex_unlock(&p->m);
}

int r3_pull_start(struct r3_source *s)
{
    struct pull_stage *p = as_pull(s);
    if (!p)
        return not_pull(s);
    release(p);
    return 0;
}

int r3_pull_wait(struct r3_source *s)
{
    struct pull_stage *p = as_pull(s);
    if (!p)
        return not_pull(s);
    release(p);                             /* waiting on held workers would never end */
    pthread_mutex_lock(&p->m);
    while (p->running > 0)
        pthread_cond_wait(&p->done_cv, &p->m);
    pthread_mutex_unlock(&p->m);
    int e = atomic_load(&p->error);
    if (e < 0)
        return r3_error(e, "pull: a background fetch failed");
    return 0;
}

/* The first worker first: once it has ended, no worker is started. */
static void join_all(struct pull_stage *p)
{
    pthread_mutex_lock(&p->m);              /* the first worker adds to nworkers */
    unsigned n = p->nworkers;
    pthread_mutex_unlock(&p->m);
    if (!n)
        return;
    pthread_join(p->workers[0], NULL);
    pthread_mutex_lock(&p->m);
    n = p->nworkers;
    pthread_mutex_unlock(&p->m);
    for (unsigned i = 1; i < n; i++)
        pthread_join(p->workers[i], NULL);
}

int r3_pull_stop(struct r3_source *s)
{
    struct pull_stage *p = as_pull(s);
    if (!p)
        return not_pull(s);
    atomic_store(&p->stop, true);
    release(p);
    pthread_mutex_lock(&p->m);
    bool join = !p->joined;
    p->joined = true;
    pthread_mutex_unlock(&p->m);
    if (join)
        join_all(p);
    return 0;
}

static void pull_close(struct r3_source *s)
{
    struct pull_stage *p = (struct pull_stage *)s;
    r3_pull_stop(s);
    r3_source_close(p->cache);
    pthread_mutex_destroy(&p->m);
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->go_cv);
    free(p->workers);
    free(p->order);
    free(p);
}

static const struct r3_source_ops pull_ops = {
    .scheme = "pull", .close = pull_close,     /* read, write, flush: the cache's */
};

void r3_pull_opts_init(struct r3_pull_opts *o)
{
    *o = (struct r3_pull_opts){ .struct_size = sizeof *o };
}

int r3_stage_pull_open(struct r3_source *cache, const struct r3_pull_opts *o,
                       struct r3_source **out)
{
    static const struct r3_pull_opts none = { 0 };
    if (!o)
        o = &none;
    if (r3_opts_check(o->struct_size, sizeof *o, "r3_pull_opts") < 0)
        return -EINVAL;
    if (r3_cache_nchunks(cache) == 0)
        return r3_error(-EINVAL, "pull: the inner source must be a cache stage");
    struct pull_stage *p = calloc(1, sizeof *p);
    if (!p)
        return r3_error(-ENOMEM, "pull: out of memory");
    p->cache = cache;
    pthread_mutex_init(&p->m, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    pthread_cond_init(&p->go_cv, NULL);
    p->held = o->held;
    r3_stage_init(&p->src, &pull_ops, cache);
    int rc = o->workers ? build_order(p, o) : 0;
    if (rc == 0 && o->workers && !(p->workers = calloc(o->workers, sizeof *p->workers)))
        rc = r3_error(-ENOMEM, "pull: out of memory");
    p->want = o->workers;
    if (rc == 0 && o->workers) {
        p->running = p->nworkers = 1;       /* set before the first worker can read them */
        if ((rc = r3_thread_create(&p->workers[0], pull_first, p)) < 0)
            p->running = p->nworkers = 0;
    }
    if (rc < 0) {
        p->cache = NULL;                    /* the caller keeps the cache */
        pthread_mutex_destroy(&p->m);
        pthread_cond_destroy(&p->done_cv);
        pthread_cond_destroy(&p->go_cv);
        free(p->workers);
        free(p->order);
        free(p);
        return rc;
    }
    *out = &p->src;
    return 0;
}
