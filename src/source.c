/* SPDX-License-Identifier: BSD-3-Clause */
/* r3_source_open and the dispatch every call goes through: bounds checks,
 * the fall-through of ops a stage leaves NULL to the source it wraps, and
 * the one lock that serializes calls into a source without R3_SRC_PARALLEL
 * (the rules are in include/r3/source.h). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

int r3_source_open(const char *uri, struct r3_source **out)
{
    struct r3_uri u;
    *out = NULL;
    r3_error_clear();
    int rc = r3_uri_parse(uri, &u);
    if (rc < 0)
        return rc;
    const struct r3_scheme *s = r3_scheme_find(u.scheme);
    if (!s) {
        rc = r3_error(-EINVAL, "URI '%s': unknown scheme '%s'", uri, u.scheme);
    } else {
        rc = s->open(&u, out);
        if (rc < 0 && r3_last_error()[0] == '\0')
            r3_error(rc, "%s: cannot open '%s'", u.scheme, uri);
    }
    r3_uri_free(&u);
    return rc;
}

void r3_stage_init(struct r3_source *s, const struct r3_source_ops *ops, struct r3_source *inner)
{
    s->ops = ops;
    s->next = inner;
    s->size = inner->size;
    s->align = inner->align;
    s->flags = R3_SRC_PARALLEL | (inner->flags & R3_SRC_RDONLY);
}

struct r3_source *r3_source_find(struct r3_source *s, const char *scheme)
{
    for (; s; s = s->next)
        if (s->ops && s->ops->scheme && strcmp(s->ops->scheme, scheme) == 0)
            return s;
    return NULL;
}

/* The lock of a non-parallel source, made at its first call (sources are
 * calloc'ed by code that knows nothing of it). NULL for a parallel source. */
static int serial_lock(struct r3_source *s, pthread_mutex_t **out)
{
    *out = NULL;
    if (s->flags & R3_SRC_PARALLEL)
        return 0;
    pthread_mutex_t *m = __atomic_load_n((pthread_mutex_t **)&s->lock_, __ATOMIC_ACQUIRE);
    if (!m) {
        pthread_mutex_t *fresh = malloc(sizeof *fresh);
        if (!fresh)
            return r3_error(-ENOMEM, "%s: out of memory", s->ops->scheme);
        pthread_mutex_init(fresh, NULL);
        void *expected = NULL;
        if (__atomic_compare_exchange_n(&s->lock_, &expected, fresh, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            m = fresh;
        } else {                               /* another thread made it first */
            pthread_mutex_destroy(fresh);
            free(fresh);
            m = expected;
        }
    }
    pthread_mutex_lock(m);
    *out = m;
    return 0;
}

static void serial_unlock(pthread_mutex_t *m)
{
    if (m)
        pthread_mutex_unlock(m);
}

static int check_range(struct r3_source *src, size_t len, uint64_t off, int past_end)
{
    if (off > src->size || len > src->size - off)
        return r3_error(past_end, "%s: request of %zu bytes at offset %llu is past the end (%llu bytes)",
                        src->ops->scheme, len, (unsigned long long)off,
                        (unsigned long long)src->size);
    if (src->align > 1 && ((off | len) % src->align))
        return r3_error(-EINVAL, "%s: request of %zu bytes at %llu is not aligned to %u",
                        src->ops->scheme, len, (unsigned long long)off, src->align);
    return 0;
}

int r3_source_read(struct r3_source *src, void *buf, size_t len, uint64_t off)
{
    int rc = check_range(src, len, off, -EINVAL);
    if (rc < 0 || len == 0)
        return rc;
    if (!src->ops->read)
        return src->next ? r3_source_read(src->next, buf, len, off)
                         : r3_error(-ENOTSUP, "%s: cannot read", src->ops->scheme);
    pthread_mutex_t *m;
    if ((rc = serial_lock(src, &m)) < 0)
        return rc;
    rc = src->ops->read(src, buf, len, off);
    serial_unlock(m);
    return rc;
}

int r3_source_write(struct r3_source *src, const void *buf, size_t len, uint64_t off)
{
    if (src->flags & R3_SRC_RDONLY)
        return r3_error(-EROFS, "%s: the source is read-only", src->ops->scheme);
    int rc = check_range(src, len, off, -ENOSPC);
    if (rc < 0 || len == 0)
        return rc;
    if (!src->ops->write)
        return src->next ? r3_source_write(src->next, buf, len, off)
                         : r3_error(-ENOTSUP, "%s: cannot write", src->ops->scheme);
    pthread_mutex_t *m;
    if ((rc = serial_lock(src, &m)) < 0)
        return rc;
    rc = src->ops->write(src, buf, len, off);
    serial_unlock(m);
    return rc;
}

int r3_source_flush(struct r3_source *src)
{
    if (!src->ops->flush)
        return src->next ? r3_source_flush(src->next) : 0;
    pthread_mutex_t *m;
    int rc = serial_lock(src, &m);
    if (rc < 0)
        return rc;
    rc = src->ops->flush(src);
    serial_unlock(m);
    return rc;
}

int r3_source_extent(struct r3_source *src, uint64_t off, uint64_t len, uint64_t *run)
{
    if (len == 0 || len > SIZE_MAX)
        return r3_error(-EINVAL, "%s: extent query of %llu bytes", src->ops->scheme,
                        (unsigned long long)len);
    int rc = check_range(src, (size_t)len, off, -EINVAL);
    if (rc < 0)
        return rc;
    if (!src->ops->extent) {
        if (src->next)
            return r3_source_extent(src->next, off, len, run);
        *run = len;
        return R3_EXTENT_DATA;
    }
    pthread_mutex_t *m;
    if ((rc = serial_lock(src, &m)) < 0)
        return rc;
    uint64_t got = 0;
    rc = src->ops->extent(src, off, len, &got);
    serial_unlock(m);
    if (rc < 0)
        return rc;
    if (rc != R3_EXTENT_ZERO && rc != R3_EXTENT_DATA)
        return r3_error(-EIO, "%s: extent query returned %d", src->ops->scheme, rc);
    /* A source that names no length (or too much) speaks for the whole range
     * only when it says DATA: ZERO must be exact, so clamp it. */
    if (got == 0 || got > len)
        got = len;
    *run = got;
    return rc;
}

void r3_source_close(struct r3_source *src)
{
    if (!src)
        return;
    pthread_mutex_t *m = src->lock_;           /* src is freed by its close */
    if (src->ops->close) {
        src->ops->close(src);
    } else {
        r3_source_close(src->next);
        free(src);
    }
    if (m) {
        pthread_mutex_destroy(m);
        free(m);
    }
}
