/* The "filesync" strategy: pre-copy. The source's content is copied into a
 * local file (opts->workdir, default /tmp) before the region opens; the
 * region is that file mapped MAP_SHARED; changed blocks (one block = one
 * chunk) are pushed back to the source on the push interval and on
 * r3_region_sync. Changes are found with uffd WP_ASYNC + PAGEMAP_SCAN on the
 * mapping where the kernel allows, else by hashing every block (XXH3). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <r3/thread.h>
#include "internal.h"
#include "filesync/filesync.h"

#define PRECOPY_IO (4u << 20)    /* bytes per source read while pre-copying */
#define PUSH_IO    (4u << 20)    /* most bytes per source write while pushing */

struct fsr {
    struct r3_region r;
    struct r3_region_hooks hooks;
    char *path;
    int fd;
    uint64_t nblocks;
    struct fs_track *track;      /* NULL: hashing */
    struct fs_hash *last;        /* hashing: content last pushed */
    uint8_t *dirty;
    uint8_t *retry;              /* blocks whose last push failed */
    uint64_t *list;              /* dirty block numbers for after_sync */
    unsigned char *bounce;       /* PUSH_IO bytes: what is written to the source */
    pthread_mutex_t mu;          /* one sync at a time */
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    pthread_t pusher;
    bool has_pusher, stop;
    unsigned interval_ms;
    struct r3_region_stats st;
};

/* Copy region bytes the program may be writing right now. The race is the
 * design (a later write is caught by the next scan), so this copy is not
 * instrumented by ThreadSanitizer, and written as a plain loop so it is not
 * turned into an (intercepted) memcpy call. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((no_sanitize_thread, optimize("no-tree-loop-distribute-patterns")))
#elif defined(__clang__)
__attribute__((no_sanitize("thread")))
#endif
static void copy_racy(unsigned char *dst, const unsigned char *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        __builtin_memcpy(&v, src + i, 8);
        __builtin_memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i];
}

static int push(struct fsr *f)
{
    uint32_t block = f->r.chunk;
    if (f->hooks.before_sync) {
        int rc = f->hooks.before_sync(f->hooks.arg, &f->r);
        if (rc < 0)
            return rc;
    }
    memset(f->dirty, 0, f->nblocks);
    if (f->track) {
        long n = fs_track_scan(f->track, block, f->dirty);
        if (n < 0) {
            /* lost the tracker: hash from now on, pushing everything once */
            fprintf(stderr, "r3 filesync: %s; falling back to hashing\n", r3_last_error());
            fs_track_close(f->track);
            f->track = NULL;
            f->last = calloc(f->nblocks ? f->nblocks : 1, sizeof *f->last);
            if (!f->last)
                return r3_error(-ENOMEM, "filesync: out of memory");
        }
    }
    if (!f->track)
        fs_hash_diff(f->r.base, f->r.len, block, f->last, f->dirty, 2);
    for (uint64_t k = 0; k < f->nblocks; k++) {
        f->dirty[k] |= f->retry[k];
        f->retry[k] = 0;
    }
    size_t n = 0;
    int rc = 0;
    uint64_t e_last = 0;
    for (uint64_t b = 0; b < f->nblocks && rc == 0;) {
        if (!f->dirty[b]) {
            b++;
            continue;
        }
        uint64_t e = b;
        do
            e++;
        while (e < f->nblocks && f->dirty[e] && (e - b + 1) * block <= PUSH_IO);
        uint64_t off = b * block;
        uint64_t end = e * block < f->r.len ? e * block : f->r.len;
        copy_racy(f->bounce, (const unsigned char *)f->r.base + off, (size_t)(end - off));
        if (f->last)      /* the hash of exactly what is written */
            for (uint64_t k = b; k < e; k++) {
                uint64_t ko = k * block;
                f->last[k] = fs_hash_block(f->bounce + (ko - off), (size_t)((k + 1) * block < f->r.len ?
                                           block : f->r.len - ko));
            }
        rc = r3_source_write(f->r.src, f->bounce, (size_t)(end - off), off);
        e_last = e;
        for (uint64_t k = b; k < e; k++)
            f->list[n++] = k;
        if (rc == 0)
            f->st.bytes_pushed += end - off;
        b = e;
    }
    if (rc < 0) {
        /* nothing of this push is flushed: all of it goes out on the next try */
        for (size_t i = 0; i < n; i++)
            f->retry[f->list[i]] = 1;
        for (uint64_t k = e_last; k < f->nblocks; k++)
            f->retry[k] |= f->dirty[k];
        return r3_error_prefix(rc, "filesync: push: ");
    }
    rc = r3_source_flush(f->r.src);
    if (rc < 0) {
        for (size_t i = 0; i < n; i++)
            f->retry[f->list[i]] = 1;
        return r3_error_prefix(rc, "filesync: flush: ");
    }
    f->st.chunks_pushed += n;
    f->st.syncs++;
    if (f->hooks.after_sync)
        f->hooks.after_sync(f->hooks.arg, &f->r, f->list, n);
    return 0;
}

static int fsr_sync(struct r3_region *r)
{
    struct fsr *f = (struct fsr *)r;
    pthread_mutex_lock(&f->mu);
    int rc = push(f);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static void *pusher_main(void *p)
{
    struct fsr *f = p;
    pthread_mutex_lock(&f->wmu);
    while (!f->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += f->interval_ms / 1000;
        ts.tv_nsec += (long)(f->interval_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&f->wcv, &f->wmu, &ts);
        if (f->stop)
            break;
        pthread_mutex_unlock(&f->wmu);
        if (fsr_sync(&f->r) < 0)
            fprintf(stderr, "r3 filesync: background push: %s\n", r3_last_error());
        pthread_mutex_lock(&f->wmu);
    }
    pthread_mutex_unlock(&f->wmu);
    return NULL;
}

static void teardown(struct fsr *f)
{
    if (f->has_pusher) {
        pthread_mutex_lock(&f->wmu);
        f->stop = true;
        pthread_cond_broadcast(&f->wcv);
        pthread_mutex_unlock(&f->wmu);
        pthread_join(f->pusher, NULL);
    }
    fs_track_close(f->track);
    if (f->r.base)
        munmap(f->r.base, f->r.len);
    if (f->fd >= 0)
        close(f->fd);
    free(f->path);
    r3_source_close(f->r.src);
    pthread_mutex_destroy(&f->mu);
    pthread_mutex_destroy(&f->wmu);
    pthread_cond_destroy(&f->wcv);
    free(f->last);
    free(f->dirty);
    free(f->list);
    free(f->bounce);
    free(f->retry);
    free(f);
}

static int fsr_close(struct r3_region *r)
{
    struct fsr *f = (struct fsr *)r;
    if (f->has_pusher) {
        pthread_mutex_lock(&f->wmu);
        f->stop = true;
        pthread_cond_broadcast(&f->wcv);
        pthread_mutex_unlock(&f->wmu);
        pthread_join(f->pusher, NULL);
        f->has_pusher = false;
    }
    int rc = fsr_sync(r);
    if (f->hooks.before_close)
        f->hooks.before_close(f->hooks.arg, r);
    teardown(f);
    return rc;
}

static int fsr_stats(struct r3_region *r, struct r3_region_stats *st)
{
    struct fsr *f = (struct fsr *)r;
    pthread_mutex_lock(&f->mu);
    *st = f->st;
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    const uint64_t *q = (const uint64_t *)p;
    for (size_t i = 0; i < n / 8; i++)
        if (q[i])
            return false;
    for (size_t i = n & ~(size_t)7; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static int precopy(struct fsr *f)
{
    struct fs_progress pr;
    fs_progress_start(&pr, isatty(2), "filesync pre-copy", f->r.len);
    unsigned char *buf = malloc(PRECOPY_IO);
    if (!buf)
        return r3_error(-ENOMEM, "filesync: out of memory");
    int rc = 0;
    for (uint64_t off = 0; off < f->r.len && rc == 0; off += PRECOPY_IO) {
        size_t n = (size_t)(f->r.len - off < PRECOPY_IO ? f->r.len - off : PRECOPY_IO);
        rc = r3_source_read(f->r.src, buf, n, off);
        /* the local file starts as zeros: zero ranges (sparse images) need
         * no write, which saves page cache and disk writeback */
        if (rc == 0 && !all_zero(buf, n))
            rc = r3_pwrite_all(f->fd, buf, n, off);
        if (rc < 0)
            r3_error_prefix(rc, "filesync: pre-copy at %llu: ", (unsigned long long)off);
        fs_progress_add(&pr, n);
    }
    fs_progress_end(&pr);
    f->st.bytes_pulled = rc == 0 ? f->r.len : 0;
    f->st.chunks_prefetch = rc == 0 ? f->nblocks : 0;
    free(buf);
    return rc;
}

static int fsr_open(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out);

const struct r3_strategy_ops r3_strategy_filesync = {
    .name = "filesync", .open = fsr_open, .sync = fsr_sync, .close = fsr_close, .stats = fsr_stats,
};

static int fsr_open(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out)
{
    *out = NULL;
    struct fsr *f = calloc(1, sizeof *f);
    if (!f) {
        r3_source_close(src);
        return r3_error(-ENOMEM, "filesync: out of memory");
    }
    f->fd = -1;
    f->r.src = src;
    f->r.ops = &r3_strategy_filesync;
    f->r.chunk = o->chunk ? o->chunk : R3_DEFAULT_CHUNK;
    f->r.len = (size_t)(o->size ? o->size : src->size);
    f->hooks = o->hooks;
    f->interval_ms = o->push_interval_ms;
    pthread_mutex_init(&f->mu, NULL);
    pthread_mutex_init(&f->wmu, NULL);
    pthread_cond_init(&f->wcv, NULL);
    int rc = 0;
    if (f->r.len == 0) {
        rc = r3_error(-EINVAL, "filesync: the region is empty");
        goto fail;
    }
    if (f->r.chunk > FS_MAX_BLOCK) {
        rc = r3_error(-EINVAL, "filesync: chunk %u is above %u", f->r.chunk, FS_MAX_BLOCK);
        goto fail;
    }
    f->nblocks = (f->r.len + f->r.chunk - 1) / f->r.chunk;
    f->dirty = calloc(f->nblocks, 1);
    f->list = calloc(f->nblocks, sizeof *f->list);
    f->retry = calloc(f->nblocks, 1);
    f->bounce = malloc(PUSH_IO > f->r.chunk ? PUSH_IO : f->r.chunk);
    if (!f->dirty || !f->list || !f->bounce || !f->retry) {
        rc = r3_error(-ENOMEM, "filesync: out of memory");
        goto fail;
    }
    const char *dir = o->workdir ? o->workdir : "/tmp";
    if (asprintf(&f->path, "%s/r3-filesync-XXXXXX", dir) < 0) {
        f->path = NULL;
        rc = r3_error(-ENOMEM, "filesync: out of memory");
        goto fail;
    }
    f->fd = mkostemp(f->path, O_CLOEXEC);
    if (f->fd < 0) {
        rc = r3_error(-errno, "filesync: cannot create a file in %s: %s", dir, strerror(errno));
        free(f->path);
        f->path = NULL;
        goto fail;
    }
    /* unlinked at once: the mapping keeps it alive and no crash (or a
     * process that exits without closing the region) leaves it behind */
    unlink(f->path);
    if (ftruncate(f->fd, (off_t)f->r.len) < 0) {
        rc = r3_error(-errno, "filesync: %s: %s", f->path, strerror(errno));
        goto fail;
    }
    int e = posix_fallocate(f->fd, 0, (off_t)f->r.len);
    if (e == ENOSPC) {
        rc = r3_error(-ENOSPC, "filesync: %s: no space for %zu bytes", dir, f->r.len);
        goto fail;
    }
    if ((rc = precopy(f)) < 0)
        goto fail;
    void *p = mmap(NULL, f->r.len, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
    if (p == MAP_FAILED) {
        rc = r3_error(-errno, "filesync: mmap of %zu bytes: %s", f->r.len, strerror(errno));
        goto fail;
    }
    f->r.base = p;
    /* R3_FILESYNC_DETECT=hash forces hashing (tests, comparisons) */
    const char *det = getenv("R3_FILESYNC_DETECT");
    bool want_hash = det && strcmp(det, "hash") == 0;
    if (want_hash || fs_track_open(p, f->r.len, &f->track) < 0) {
        /* no WP_ASYNC here: hash the pre-copied content as the baseline */
        f->track = NULL;
        f->last = malloc(f->nblocks * sizeof *f->last);
        if (!f->last) {
            rc = r3_error(-ENOMEM, "filesync: out of memory");
            goto fail;
        }
        fs_hash_blocks(p, f->r.len, f->r.chunk, f->last, 2);
    }
    if (f->interval_ms) {
        rc = r3_thread_create(&f->pusher, pusher_main, f);
        if (rc < 0)
            goto fail;
        f->has_pusher = true;
    }
    *out = &f->r;
    return 0;
fail:
    teardown(f);
    return rc;
}

/* Which change detection a filesync region uses ("pagemap" or "hash"). */
const char *r3_filesync_detect(const struct r3_region *r)
{
    return r->ops == &r3_strategy_filesync && ((const struct fsr *)r)->track ? "pagemap" : "hash";
}
