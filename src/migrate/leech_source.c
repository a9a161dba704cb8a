/* SPDX-License-Identifier: BSD-3-Clause */
/* The source-level leecher (r3mount --leech): a cache stage whose remote is
 * the seeder (an r3:// client) and whose local side is opts.local (mem: by
 * default, or a file:// / dir:// source to keep the copy), filled in the
 * background by pull threads in ascending order, then finalized.
 *
 * FINALIZE: the pull threads are paused and drained first (no fetch that
 * read the seeder before its pause can land afterwards), the seeder pauses
 * its writers and answers the chunks written since TRACK; those already
 * local are marked remote again in the cache, so the next access and the
 * resumed pull fetch them from the paused seeder. The source is then usable
 * (post-copy: chunks not local yet come on demand). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"
#include "r3/migrate.h"
#include "wire/call.h"
#include "migrate/proto.h"

struct r3_leech_source {
    struct r3_source *remote;      /* the r3:// client (owned by the cache) */
    struct r3_source *cache;       /* what the caller uses (owned) */
    struct r3_leech_opts o;
    uint64_t session, nchunks, next, ndirty, finalize_ns;
    uint32_t chunk;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned active, nworkers;
    bool paused, stop, released;
    pthread_t *workers;
    int phase, err;
    char msg[256];
};

static void fail_locked(struct r3_leech_source *l, int rc, const char *msg)
{
    if (!l->err) {
        l->err = rc;
        snprintf(l->msg, sizeof l->msg, "%s", msg);
    }
    l->phase = R3_LEECH_FAILED;
    l->paused = true;
    pthread_cond_broadcast(&l->cv);
}

static void *worker_main(void *arg)
{
    struct r3_leech_source *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && (l->paused || l->next >= l->nchunks))
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop)
            break;
        uint64_t idx = l->next++;
        l->active++;
        pthread_mutex_unlock(&l->mu);
        int rc = 0;
        if (!r3_cache_is_local(l->cache, idx) && (rc = r3_cache_fetch(l->cache, idx, R3_FETCH_PULL)) < 0)
            r3_error_prefix(rc, "leecher: pulling chunk %" PRIu64 ": ", idx);
        else if (rc == 0 && l->o.on_chunk_local)
            l->o.on_chunk_local(l->o.arg, idx);
        pthread_mutex_lock(&l->mu);
        l->active--;
        if (rc < 0)
            fail_locked(l, rc, r3_last_error());
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static int ctl(struct r3_leech_source *l, const char *method, uint64_t a, uint64_t b, void *buf, uint64_t *val)
{
    if (l->o.delay_us)
        usleep((useconds_t)l->o.delay_us);
    return r3_wire_call(l->remote, method, a, b, buf, val);
}

void r3_leech_source_close(struct r3_leech_source *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    for (unsigned i = 0; i < l->nworkers; i++)
        pthread_join(l->workers[i], NULL);
    free(l->workers);
    if (l->cache)
        r3_source_close(l->cache);
    else
        r3_source_close(l->remote);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
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

int r3_leech_source_open(const char *uri, const struct r3_leech_opts *o, struct r3_leech_source **out,
                         struct r3_source **src)
{
    struct r3_leech_opts def;
    *out = NULL;
    *src = NULL;
    if (!o) {
        r3_leech_opts_init(&def);
        o = &def;
    }
    if (r3_opts_check(o->struct_size, sizeof *o, "r3_leech_opts") < 0)
        return -EINVAL;
    struct r3_leech_source *l = calloc(1, sizeof *l);
    if (!l)
        return r3_error(-ENOMEM, "leecher: out of memory");
    l->o = *o;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    int rc = r3_source_open(uri, &l->remote);
    if (rc < 0) {
        r3_error_prefix(rc, "leecher: ");
        r3_leech_source_close(l);
        return rc;
    }
    if (!r3_wire_max_request(l->remote)) {
        r3_leech_source_close(l);
        return r3_error(-EINVAL, "leecher: %s is not an r3:// seeder address", uri);
    }
    l->session = (r3_now_ns() * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)getpid() << 40) ^ (uintptr_t)l;
    if (!l->session)
        l->session = 1;
    uint64_t chunk = 0, norder = 0;
    rc = ctl(l, R3M_HELLO, R3_MIGRATE_VERSION, l->session, NULL, &chunk);
    if (rc == -ENOSYS || rc == -ENOTSUP)
        rc = r3_error_prefix(rc, "leecher: %s is not a seeder (a plain r3serve?): ", uri);
    else if (rc == 0 && (!r3_is_pow2(chunk) || chunk < 4096 || chunk > (1u << 30) || l->remote->size % chunk))
        rc = r3_error(-EPROTO, "leecher: the seeder's chunk (%" PRIu64 ") does not fit its size (%" PRIu64 ")",
                      chunk, l->remote->size);
    if (rc == 0) {
        l->chunk = (uint32_t)chunk;
        l->nchunks = l->remote->size / chunk;
        rc = ctl(l, R3M_TRACK, l->session, 0, NULL, &norder);
    }
    struct r3_source *local = NULL, *data = l->remote;
    if (rc == 0)
        rc = open_local(o->local, l->remote->size, &local);
    if (rc == 0 && o->delay_us && (rc = r3_stage_delay_open(l->remote, o->delay_us, &data)) < 0)
        r3_source_close(local);
    if (rc == 0) {
        struct r3_cache_opts co;
        r3_cache_opts_init(&co);
        co.chunk = l->chunk;
        co.mode = R3_CACHE_WRITE_LOCAL;   /* the seeder is read-only; B's writes stay here */
        if ((rc = r3_stage_cache_open(data, local, &co, &l->cache)) == 0)
            l->cache->flags &= ~R3_SRC_RDONLY;    /* the seeder is; B's copy is not */
        else {
            r3_source_close(local);
            if (data != l->remote)
                r3_source_close(data);     /* closes the remote */
            l->remote = NULL;
        }
    }
    unsigned n = o->pull_workers ? o->pull_workers : 8;
    if (rc == 0 && !(l->workers = calloc(n, sizeof *l->workers)))
        rc = r3_error(-ENOMEM, "leecher: out of memory");
    while (rc == 0 && l->nworkers < n) {
        if ((rc = r3_thread_create(&l->workers[l->nworkers], worker_main, l)) < 0)
            r3_error(rc, "leecher: cannot start pull threads");
        else
            l->nworkers++;
    }
    if (rc < 0) {
        r3_leech_source_close(l);
        return rc;
    }
    *out = l;
    *src = l->cache;
    return 0;
}

int r3_leech_source_finalize(struct r3_leech_source *l)
{
    uint64_t t0 = r3_now_ns();
    pthread_mutex_lock(&l->mu);
    if (l->err) {
        int rc = r3_error(l->err, "%s", l->msg);
        pthread_mutex_unlock(&l->mu);
        return rc;
    }
    l->paused = true;
    l->phase = R3_LEECH_FINALIZING;
    while (l->active)
        pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
    uint64_t n = 0;
    int rc = ctl(l, R3M_FINALIZE, l->session, 0, NULL, &n);
    if (rc == 0 && n > l->nchunks)
        rc = r3_error(-EPROTO, "leecher: the seeder names %" PRIu64 " dirty chunks of %" PRIu64, n, l->nchunks);
    uint64_t step = r3_wire_max_request(l->remote) / 8 * 8;
    if (step > (1u << 20))
        step = 1u << 20;
    uint8_t *buf = rc == 0 ? malloc(step) : NULL;
    if (rc == 0 && !buf)
        rc = r3_error(-ENOMEM, "leecher: out of memory");
    for (uint64_t off = 0; rc == 0 && off < n * 8; off += step) {
        uint64_t len = n * 8 - off < step ? n * 8 - off : step;
        rc = ctl(l, R3M_DIRTY, off, len, buf, NULL);
        for (uint64_t i = 0; rc == 0 && i < len / 8; i++) {
            uint64_t c = r3m_get64(buf + i * 8);
            if (c >= l->nchunks)
                rc = r3_error(-EPROTO, "leecher: the seeder's dirty list names chunk %" PRIu64 " of %" PRIu64,
                              c, l->nchunks);
            else if (r3_cache_is_local(l->cache, c))
                rc = r3_cache_invalidate(l->cache, c);
        }
    }
    free(buf);
    pthread_mutex_lock(&l->mu);
    if (rc < 0) {
        r3_error_prefix(rc, "leecher: FINALIZE: ");
        fail_locked(l, rc, r3_last_error());
    } else {
        l->ndirty = n;
        l->next = 0;                /* one more pass: what was marked remote again */
        l->paused = false;
        l->phase = R3_LEECH_POSTCOPY;
        l->finalize_ns = r3_now_ns() - t0;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return rc;
}

int r3_leech_source_progress(struct r3_leech_source *l, struct r3_leech_progress *p)
{
    memset(p, 0, sizeof *p);
    p->chunks_total = l->nchunks;
    p->chunks_local = r3_cache_nlocal(l->cache);
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

int r3_leech_source_wait(struct r3_leech_source *l)
{
    pthread_mutex_lock(&l->mu);
    while (!l->err && l->phase != R3_LEECH_DONE &&
           !(l->phase == R3_LEECH_POSTCOPY && r3_cache_nlocal(l->cache) >= l->nchunks)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&l->cv, &l->mu, &ts);
    }
    int err = l->err, phase = l->phase;
    pthread_mutex_unlock(&l->mu);
    if (err)
        return r3_error(err, "%s (%" PRIu64 " of %" PRIu64 " chunks are local; the others cannot be read)",
                        l->msg, r3_cache_nlocal(l->cache), l->nchunks);
    if (phase == R3_LEECH_DONE)
        return 0;
    int rc = ctl(l, R3M_RELEASE, l->session, 0, NULL, NULL);
    if (rc < 0)
        return r3_error_prefix(rc, "leecher: RELEASE: ");
    pthread_mutex_lock(&l->mu);
    l->phase = R3_LEECH_DONE;
    pthread_mutex_unlock(&l->mu);
    return 0;
}
