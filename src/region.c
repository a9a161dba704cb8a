/* SPDX-License-Identifier: BSD-3-Clause */
/* Region dispatch: picks the strategy by name, checks what every strategy
 * must refuse the same way, forwards to it, and bounds a sync in time
 * (sync_timeout_ms) for every strategy alike. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

void r3_region_opts_init(struct r3_region_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->strategy = "uffd";
    o->chunk = R3_DEFAULT_CHUNK;
    o->pull_workers = 0;
    o->push_workers = 1;
    o->fault_threads = 2;
    o->prefetch = R3_PREFETCH_SEQUENTIAL;
    o->uffd_readahead = -1;
}

/* Options only the uffd strategy has: another strategy given one of them
 * (not at its default) says so. */
static const char *uffd_only(const struct r3_region_opts *o)
{
    if (o->uffd_readahead != -1)
        return "uffd_readahead";
    if (o->uffd_no_first_page)
        return "uffd_no_first_page";
    if (o->uffd_no_poison)
        return "uffd_no_poison";
    if (o->uffd_no_wp_async)
        return "uffd_no_wp_async";
    if (o->uffd_no_zero_fill)
        return "uffd_no_zero_fill";
    if (o->max_resident)
        return "max_resident";
    return NULL;
}

static int check(const struct r3_region_opts *o, const struct r3_strategy_ops *s, const char *name,
                 const struct r3_source *src)
{
    uint32_t chunk = o->chunk ? o->chunk : R3_DEFAULT_CHUNK;
    const char *opt;
    if (!s)
        return r3_error(-EINVAL, "unknown strategy '%s'", name);
    if (!r3_is_pow2(chunk) || chunk < 4096)
        return r3_error(-EINVAL, "chunk %u is not a power of two of at least 4 KiB", chunk);
    if (o->size > src->size)
        return r3_error(-EINVAL, "the source holds %llu bytes, less than the region size %llu",
                        (unsigned long long)src->size, (unsigned long long)o->size);
    if (o->copy_on_write && !(s->caps & R3_STRATEGY_COPY_ON_WRITE))
        return r3_error(-ENOTSUP, "the %s strategy cannot keep writes local (copy-on-write);"
                        " the uffd strategy can", s->name);
    if (!o->copy_on_write && (src->flags & R3_SRC_RDONLY))
        return r3_error(-EROFS, "the source is read-only; open the region copy-on-write to keep"
                        " writes local");
    if (strcmp(s->name, "uffd") != 0 && (opt = uffd_only(o)))
        return r3_error(-EINVAL, "%s is an option of the uffd strategy; the %s strategy cannot"
                        " honour it", opt, s->name);
    return 0;
}

int r3_region_open(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out)
{
    struct r3_region_opts def;
    *out = NULL;
    r3_region_opts_init(&def);
    int rc = 0;
    if (o && (o->struct_size < offsetof(struct r3_region_opts, strategy) + sizeof o->strategy ||
              o->struct_size > sizeof *o)) {
        rc = r3_error(-EINVAL, "region options of %u bytes: initialize them with"
                      " r3_region_opts_init() (this library knows %zu bytes)", o->struct_size,
                      sizeof *o);
    } else if (o) {
        /* A caller built against an older, shorter struct gets the defaults
         * for the fields it does not know. */
        memcpy(&def, o, o->struct_size);
        def.struct_size = sizeof def;
    }
    o = &def;
    const char *name = o->strategy ? o->strategy : "uffd";
    const struct r3_strategy_ops *s = r3_strategy_find(name);
    if (rc == 0)
        rc = check(o, s, name, src);
    if (rc < 0) {
        r3_source_close(src);
        return rc;
    }
    rc = s->open(o, src, out);
    if (rc == 0)
        (*out)->sync_timeout_ms = o->sync_timeout_ms;
    return rc;
}

/* ---- a sync bounded in time: the strategy's sync runs on a helper thread
 * that the caller waits for until the timeout. A sync that runs out of time
 * goes on in the background (a source call cannot be interrupted; each has
 * its own timeout) and is waited for by the next sync or by close. */
struct r3_region_syncer {
    pthread_mutex_t m;
    pthread_cond_t cv;
    pthread_t t;
    bool joinable;                /* t ran and was not joined yet */
    bool running;
    int rc;
    char err[512];
    struct r3_region *r;
};

static void *syncer_main(void *arg)
{
    struct r3_region_syncer *y = arg;
    int rc = y->r->ops->sync(y->r);
    pthread_mutex_lock(&y->m);
    y->rc = rc;
    snprintf(y->err, sizeof y->err, "%s", rc < 0 ? r3_last_error() : "");
    y->running = false;
    pthread_cond_broadcast(&y->cv);
    pthread_mutex_unlock(&y->m);
    return NULL;
}

static struct r3_region_syncer *syncer_get(struct r3_region *r)
{
    if (r->syncer)
        return r->syncer;
    struct r3_region_syncer *y = calloc(1, sizeof *y);
    if (!y)
        return NULL;
    pthread_mutex_init(&y->m, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&y->cv, &ca);
    pthread_condattr_destroy(&ca);
    y->r = r;
    r->syncer = y;
    return y;
}

/* Wait for the running sync until deadline (ns, 0 = forever). Called and
 * returns with y->m held. true if it ended (and was joined). */
static bool syncer_wait(struct r3_region_syncer *y, uint64_t deadline)
{
    while (y->running) {
        if (!deadline) {
            pthread_cond_wait(&y->cv, &y->m);
            continue;
        }
        uint64_t now = r3_now_ns();
        if (now >= deadline)
            return false;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (deadline - now);
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&y->cv, &y->m, &ts);
    }
    return true;
}

static int timed_out(struct r3_region *r, const char *what)
{
    uint64_t chunks = 0, bytes = 0;
    char t[32], b[32];
    snprintf(t, sizeof t, r->sync_timeout_ms % 1000 ? "%llu ms" : "%llu s",
             (unsigned long long)(r->sync_timeout_ms % 1000 ? r->sync_timeout_ms
                                  : r->sync_timeout_ms / 1000));
    if (r->ops->unsynced && r->ops->unsynced(r, &chunks, &bytes) == 0)
        return r3_error(-ETIMEDOUT, "%s did not finish within %s: %llu chunk%s (%s) not written"
                        " back to the source", what, t, (unsigned long long)chunks,
                        chunks == 1 ? "" : "s", r3_fmt_size(bytes, b, sizeof b));
    return r3_error(-ETIMEDOUT, "%s did not finish within %s: some writes were not written back"
                    " to the source (the %s strategy cannot say how many)", what, t, r->ops->name);
}

int r3_region_sync(struct r3_region *r)
{
    if (!r->sync_timeout_ms)
        return r->ops->sync(r);
    struct r3_region_syncer *y = syncer_get(r);
    if (!y)
        return r3_error(-ENOMEM, "out of memory");
    uint64_t deadline = r3_now_ns() + r->sync_timeout_ms * 1000000u;
    pthread_mutex_lock(&y->m);
    bool was_running = y->running;
    if (was_running && !syncer_wait(y, deadline)) {
        pthread_mutex_unlock(&y->m);
        return timed_out(r, "an earlier sync");
    }
    if (y->joinable)
        pthread_join(y->t, NULL);   /* it has ended: this does not block */
    y->joinable = false;
    y->running = true;
    int rc = r3_thread_create(&y->t, syncer_main, y);
    if (rc < 0) {
        y->running = false;
        pthread_mutex_unlock(&y->m);
        return rc;
    }
    y->joinable = true;
    if (!syncer_wait(y, deadline)) {
        pthread_mutex_unlock(&y->m);
        return timed_out(r, "the sync");
    }
    rc = y->rc;
    if (rc < 0)
        r3_error(rc, "%s", y->err);
    pthread_mutex_unlock(&y->m);
    return rc;
}

int r3_region_close(struct r3_region *r)
{
    if (!r)
        return 0;
    if (r->leech)
        r3_leech_detach_(r);           /* its pull workers use the region: stop them first */
    struct r3_region_syncer *y = r->syncer;
    if (y) {
        /* An abandoned sync still uses the region: let it end first. */
        pthread_mutex_lock(&y->m);
        syncer_wait(y, 0);
        if (y->joinable)
            pthread_join(y->t, NULL);
        pthread_mutex_unlock(&y->m);
        pthread_mutex_destroy(&y->m);
        pthread_cond_destroy(&y->cv);
        free(y);
        r->syncer = NULL;
    }
    return r->ops->close(r);
}

void r3_region_fork_prepare(struct r3_region *r)
{
    if (r && r->ops->fork_prepare)
        r->ops->fork_prepare(r);
}

void r3_region_fork_done(struct r3_region *r)
{
    if (r && r->ops->fork_done)
        r->ops->fork_done(r);
}

unsigned r3_region_children(struct r3_region *r)
{
    return r && r->ops->children ? r->ops->children(r) : 0;
}

int r3_region_stats(struct r3_region *r, struct r3_region_stats *st)
{
    memset(st, 0, sizeof *st);
    return r->ops->stats ? r->ops->stats(r, st) : 0;
}

/* ---- migration accessors */

int r3_region_read(struct r3_region *r, void *buf, size_t len, uint64_t off)
{
    if (off > r->len || len > r->len - off)
        return r3_error(-EINVAL, "a read of %zu bytes at %llu is past the region's end (%zu bytes)", len,
                        (unsigned long long)off, r->len);
    if (r->ops->read)
        return r->ops->read(r, buf, len, off);
    return r3_error(-ENOTSUP, "the %s strategy cannot be read without filling it",
                    r->ops->name);
}

int r3_region_track(struct r3_region *r, int op, uint64_t **chunks, size_t *n)
{
    if (!r->ops->track)
        return r3_error(-ENOTSUP, "the %s strategy cannot track written chunks",
                        r->ops->name);
    return r->ops->track(r, op, chunks, n);
}

int r3_region_access_order(struct r3_region *r, uint64_t **chunks, size_t *n)
{
    if (!r->ops->access_order) {
        *chunks = NULL;
        *n = 0;
        return 0;                      /* no order recorded: the leecher pulls ascending */
    }
    return r->ops->access_order(r, chunks, n);
}

struct r3_source *r3_region_cache(struct r3_region *r)
{
    return r->ops->cache ? r->ops->cache(r) : NULL;
}

int r3_region_invalidate(struct r3_region *r, const uint64_t *chunks, size_t n)
{
    if (!r->ops->invalidate)
        return r3_error(-ENOTSUP, "the %s strategy cannot make chunks remote again", r->ops->name);
    return r->ops->invalidate(r, chunks, n);
}
