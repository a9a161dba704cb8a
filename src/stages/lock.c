/* SPDX-License-Identifier: BSD-3-Clause */
/* lock stage: while held, new requests wait; acquire waits for the requests
 * already in flight (migration finalize suspends writers this way). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include "internal.h"

struct lock_stage {
    struct r3_source src;
    pthread_mutex_t m;
    pthread_cond_t cv;
    unsigned inflight;
    bool held;
};

static const struct r3_source_ops lock_ops;

static void enter(struct lock_stage *l)
{
    pthread_mutex_lock(&l->m);
    while (l->held)
        pthread_cond_wait(&l->cv, &l->m);
    l->inflight++;
    pthread_mutex_unlock(&l->m);
}

static void leave(struct lock_stage *l)
{
    pthread_mutex_lock(&l->m);
    if (--l->inflight == 0)
        pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->m);
}

int r3_lock_acquire(struct r3_source *s)
{
    if (!s || s->ops != &lock_ops)
        return r3_error(-EINVAL, "lock: %s is not a lock stage", s ? s->ops->scheme : "NULL");
    struct lock_stage *l = (struct lock_stage *)s;
    pthread_mutex_lock(&l->m);
    while (l->held)                       /* one holder at a time */
        pthread_cond_wait(&l->cv, &l->m);
    l->held = true;
    while (l->inflight > 0)
        pthread_cond_wait(&l->cv, &l->m);
    pthread_mutex_unlock(&l->m);
    return 0;
}

int r3_lock_release(struct r3_source *s)
{
    if (!s || s->ops != &lock_ops)
        return r3_error(-EINVAL, "lock: %s is not a lock stage", s ? s->ops->scheme : "NULL");
    struct lock_stage *l = (struct lock_stage *)s;
    pthread_mutex_lock(&l->m);
    l->held = false;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->m);
    return 0;
}

static int lock_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct lock_stage *l = (struct lock_stage *)s;
    enter(l);
    int rc = r3_source_read(l->src.next, buf, len, off);
    leave(l);
    return rc;
}

static int lock_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct lock_stage *l = (struct lock_stage *)s;
    enter(l);
    int rc = r3_source_write(l->src.next, buf, len, off);
    leave(l);
    return rc;
}

static int lock_flush(struct r3_source *s)
{
    struct lock_stage *l = (struct lock_stage *)s;
    enter(l);
    int rc = r3_source_flush(l->src.next);
    leave(l);
    return rc;
}

static void lock_close(struct r3_source *s)
{
    struct lock_stage *l = (struct lock_stage *)s;
    r3_source_close(l->src.next);
    pthread_mutex_destroy(&l->m);
    pthread_cond_destroy(&l->cv);
    free(l);
}

static const struct r3_source_ops lock_ops = {
    .scheme = "lock", .read = lock_read, .write = lock_write, .flush = lock_flush,
    .close = lock_close,
};

int r3_stage_lock_open(struct r3_source *inner, struct r3_source **out)
{
    struct lock_stage *l = calloc(1, sizeof *l);
    if (!l)
        return r3_error(-ENOMEM, "lock: out of memory");
    pthread_mutex_init(&l->m, NULL);
    pthread_cond_init(&l->cv, NULL);
    r3_stage_init(&l->src, &lock_ops, inner);
    *out = &l->src;
    return 0;
}
