/* SPDX-License-Identifier: BSD-3-Clause */
/* The nbd-direct and nbd-managed strategies. An in-process NBD server serves
 * the source (direct) or a cache + pull + push + chunk pipeline over it
 * (managed) on a private Unix socket; the export is mounted (kernel device or
 * FUSE file) by a helper process (nbd/helper.h: a FUSE daemon inside the
 * process that maps its file hangs that process when it execs or dies) and
 * the region is that file mmapped MAP_SHARED.
 *   sync  = msync + fsync (an NBD flush, which flushes the served source) +
 *           pipeline flush
 *   close = sync, unmap, unmount, stop the server, close the pipeline/source
 * The region contract (include/r3/region.h), here:
 *   after_sync gets the chunks written back since the previous after_sync,
 *   ascending, each once: nbd-managed the push stage's rounds (interval and
 *   sync), nbd-direct every chunk a write touched (its writes reach the
 *   source at once, through the server; a pass-through source notes them).
 *   Options only uffd can honour (access logs, hot prefetch, fault threads)
 *   and pipeline options given to nbd-direct are errors that say so.
 *   Stats: pulled/pushed bytes and chunks as they happened, for both.
 * Migration (a seeder, src/migrate): read and track msync the mapping
 * first; managed reads the cache's local side or the source (nothing is
 * filled) and tracks with the push stage, direct reads the source and
 * tracks with its pass-through. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"
#include "nbd/helper.h"
#include "nbd/mount.h"
#include "nbd/server.h"
#include "nbd/written.h"

struct r3_nbd_region {
    struct r3_region r;
    bool managed;
    struct r3_pipeline *pipe;
    struct r3_source *served;
    struct r3_nbd_server *srv;
    struct r3_nbd_helper *mnt;      /* the mount lives in a helper process */
    struct r3_source *written;      /* direct: the pass-through that notes writes (owns src) */
    struct r3_region_hooks hooks;
    int fd;
    _Atomic int wb_fd;              /* fd, for the push rounds' write-back kick; -1 when none */
    uint64_t syncs, chunks_reported;
    pthread_mutex_t mu;             /* pushed: chunks of managed push rounds since after_sync */
    uint64_t *pushed;
    size_t npushed, cap;
    char dir[PATH_MAX], sock[PATH_MAX + 16], mdir[PATH_MAX + 16];
};


static void teardown(struct r3_nbd_region *n)
{
    if (n->r.base && n->r.base != MAP_FAILED)
        munmap(n->r.base, n->r.len);
    atomic_store(&n->wb_fd, -1);
    if (n->fd >= 0)
        close(n->fd);
    r3_nbd_helper_stop(n->mnt);
    r3_nbd_server_stop(n->srv);
    if (n->pipe)
        r3_pipeline_close(n->pipe);         /* owns the source */
    else if (n->written)
        r3_source_close(n->written);        /* owns the source */
    else
        r3_source_close(n->r.src);
    /* A helper killed before its guard started leaves its mount: detach it. */
    if (n->mdir[0] && rmdir(n->mdir) < 0 && errno == EBUSY && umount2(n->mdir, MNT_DETACH) == 0)
        rmdir(n->mdir);
    if (n->dir[0])
        rmdir(n->dir);
    free(n->pushed);
    pthread_mutex_destroy(&n->mu);
    free(n);
}

/* What the nbd strategies cannot do, said instead of ignored. */
static int check_opts(const struct r3_region_opts *o, bool managed)
{
    const char *name = managed ? "nbd-managed" : "nbd-direct";
    if (o->record_access)
        return r3_error(-EINVAL, "%s cannot record an access log (record_access): only the uffd"
                        " strategy sees first touches", name);
    if (o->prefetch == R3_PREFETCH_HOT || o->prefetch_file)
        return r3_error(-EINVAL, "%s cannot replay an access log (prefetch=hot): only the uffd"
                        " strategy can", name);
    if (o->prefetch != R3_PREFETCH_SEQUENTIAL && o->prefetch != R3_PREFETCH_NONE)
        return r3_error(-EINVAL, "%s: unknown prefetch mode %d", name, o->prefetch);
    if (o->fault_threads != 0 && o->fault_threads != 2)
        return r3_error(-EINVAL, "%s has no fault threads (fault_threads is an option of the uffd"
                        " strategy)", name);
    if (!managed && (o->pull_workers || o->push_interval_ms || o->push_workers > 1))
        return r3_error(-EINVAL, "nbd-direct serves the source as is: %s needs nbd-managed",
                        o->pull_workers ? "pull_workers" : o->push_interval_ms ? "push_interval_ms"
                                                                               : "push_workers");
    return 0;
}

/* The push stage's hook (its threads): remember the chunks for after_sync. */
static void on_push(void *arg, const uint64_t *chunks, size_t k)
{
    struct r3_nbd_region *n = arg;
    pthread_mutex_lock(&n->mu);
    if (n->npushed + k > n->cap) {
        size_t nc = n->cap ? n->cap : 256;
        while (nc < n->npushed + k)
            nc *= 2;
        uint64_t *nl = realloc(n->pushed, nc * sizeof *nl);
        if (nl) {
            n->pushed = nl;
            n->cap = nc;
        }
    }
    if (n->npushed + k <= n->cap) {
        memcpy(n->pushed + n->npushed, chunks, k * sizeof *chunks);
        n->npushed += k;
    }
    pthread_mutex_unlock(&n->mu);
}

/* The push stage's collect hook, before each round (its ticker thread):
 * pages the program wrote through the mapping sit in the kernel's page
 * cache until the kernel writes them back (up to 30 s) and only then reach
 * the push stage. Start their write-back now, without waiting for it: what
 * was written before this round is pushed by the next one, so
 * --push-interval bounds what a SIGKILL loses (to about two intervals). */
static int kick_writeback(void *arg, struct r3_source *push)
{
    (void)push;
    struct r3_nbd_region *n = arg;
    int fd = atomic_load(&n->wb_fd);
    if (fd >= 0)
        (void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The chunks written back since the last call: ascending, each once. */
static int take_written(struct r3_nbd_region *n, uint64_t **list, size_t *k)
{
    if (n->written)
        return r3_nbd_written_take(n->written, list, k);
    pthread_mutex_lock(&n->mu);
    uint64_t *l = n->pushed;
    size_t m = n->npushed;
    n->pushed = NULL;
    n->npushed = n->cap = 0;
    pthread_mutex_unlock(&n->mu);
    if (m > 1)
        qsort(l, m, sizeof *l, cmp_u64);
    size_t j = 0;
    for (size_t i = 0; i < m; i++)
        if (j == 0 || l[i] != l[j - 1])
            l[j++] = l[i];
    *list = l;
    *k = j;
    return 0;
}

static int region_open(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out,
                    bool managed)
{
    int rc = check_opts(o, managed);
    if (rc < 0) {
        r3_source_close(src);
        return rc;
    }
    struct r3_nbd_region *n = calloc(1, sizeof *n);
    if (!n) {
        r3_source_close(src);
        return r3_error(-ENOMEM, "nbd region: out of memory");
    }
    n->fd = -1;
    atomic_init(&n->wb_fd, -1);
    n->managed = managed;
    n->r.ops = managed ? &r3_strategy_nbd_managed : &r3_strategy_nbd_direct;
    n->r.src = src;
    n->r.chunk = o->chunk ? o->chunk : R3_DEFAULT_CHUNK;
    n->r.len = o->size ? o->size : src->size;
    n->hooks = o->hooks;
    n->served = src;
    pthread_mutex_init(&n->mu, NULL);
    /* Scratch paths first: the mount helper is started before any thread of
     * ours starts (pipeline workers, server), with the mount options ready. */
    snprintf(n->dir, sizeof n->dir, "%s/r3nbd.XXXXXX", o->workdir ? o->workdir : "/tmp");
    if (!mkdtemp(n->dir)) {
        rc = r3_error(-errno, "nbd region: cannot make a directory in %s: %s",
                      o->workdir ? o->workdir : "/tmp", strerror(errno));
        n->dir[0] = 0;
        goto fail;
    }
    snprintf(n->sock, sizeof n->sock, "%s/nbd.sock", n->dir);
    snprintf(n->mdir, sizeof n->mdir, "%s/mnt", n->dir);
    if (mkdir(n->mdir, 0700) < 0) {
        rc = r3_error(-errno, "nbd region: mkdir %s: %s", n->mdir, strerror(errno));
        n->mdir[0] = 0;
        goto fail;
    }
    int mode = r3_nbd_mount_mode_parse(o->nbd_mount);
    if (mode < 0) {
        rc = mode;
        goto fail;
    }
    struct r3_nbd_mount_opts mo = {
        /* our own server: its source bounds each request, however long a flush takes */
        .client = { .unix_path = n->sock, .export_name = "", .timeout_ms = R3_NBD_NO_TIMEOUT },
        .mountpoint = n->mdir, .name = "region", .fsname = managed ? "r3:nbd-managed" : "r3:nbd-direct",
        .mode = mode,
        /* known now: the helper mounts the FUSE file at once, while we start
         * the pipeline and the server (the mount was on the open's path) */
        .size = src->size, .readonly = (src->flags & R3_SRC_RDONLY) != 0,
    };
    if ((rc = r3_nbd_helper_spawn(&mo, &n->mnt)) < 0)
        goto fail;
    if (managed) {
        /* The pipeline starts before the device is ready, its pull workers
         * held until it is: at 0 ms sixteen of them pulling took the CPU
         * the mount helper needed to start, and the open took three times
         * as long (exp. 6). */
        struct r3_pipeline_opts po = {
            .chunk = n->r.chunk, .pull_held = true,
            .pull_workers = o->prefetch == R3_PREFETCH_NONE ? 0 : o->pull_workers,
            .push_workers = o->push_workers ? o->push_workers : 1,
            .push_interval_ms = o->push_interval_ms,
            .after_push = on_push, .hook_arg = n,
            .collect = o->push_interval_ms ? kick_writeback : NULL,
        };
        rc = r3_pipeline_open(src, &po, &n->pipe);
        if (rc < 0) {
            n->r.src = NULL;                 /* closed by the failed pipeline */
            goto fail;
        }
        n->served = n->pipe->top;
        /* Write-behind: the mapping's write-back (msync) hands us whole
         * chunks in order; pushing each as it completes keeps the push
         * workers busy while the write-back still runs, so sync waits for
         * the last few round trips instead of all of them. */
        if (n->pipe->push && (rc = r3_push_write_behind(n->pipe->push, po.push_workers)) < 0)
            goto fail;
        /* the order chunks are first read or written: a seeder sends it */
        if (n->pipe->cache && (rc = r3_cache_record_order(n->pipe->cache)) < 0)
            goto fail;
    } else {
        if ((rc = r3_nbd_written_open(src, n->r.chunk, &n->written)) < 0)
            goto fail;
        n->served = n->written;
    }
    struct r3_nbd_export e = { .name = "", .src = n->served };
    struct r3_nbd_server_opts so = { .listen = n->sock, .exports = &e, .nexports = 1 };
    if ((rc = r3_nbd_server_start(&so, &n->srv)) < 0)
        goto fail;
    if ((rc = r3_nbd_helper_mount(n->mnt)) < 0)
        goto fail;
    const char *path = r3_nbd_helper_path(n->mnt);
    n->fd = open(path, O_RDWR | O_CLOEXEC);
    if (n->fd < 0) {
        rc = r3_error(-errno, "nbd region: open %s: %s", path, strerror(errno));
        goto fail;
    }
    n->r.base = mmap(NULL, n->r.len, PROT_READ | PROT_WRITE, MAP_SHARED, n->fd, 0);
    if (n->r.base == MAP_FAILED) {
        rc = r3_error(-errno, "nbd region: mmap %s: %s", path, strerror(errno));
        n->r.base = NULL;
        goto fail;
    }
    /* the helper connected to the server meanwhile */
    if ((rc = r3_nbd_helper_ready(n->mnt)) < 0)
        goto fail;
    atomic_store(&n->wb_fd, n->fd);
    if (n->pipe && n->pipe->pull)
        r3_pull_start(n->pipe->pull);
    *out = &n->r;
    return 0;
fail: {
    /* the helper's and server's ends must not replace why the open failed */
    char why[1024];
    snprintf(why, sizeof why, "%s", r3_last_error());
    teardown(n);
    return r3_error(rc, "%s", why);
}
}

static int open_direct(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out)
{
    return region_open(o, src, out, false);
}

static int open_managed(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out)
{
    return region_open(o, src, out, true);
}

static int region_sync(struct r3_region *r)
{
    struct r3_nbd_region *n = (struct r3_nbd_region *)r;
    int rc = 0;
    if (n->hooks.before_sync && (rc = n->hooks.before_sync(n->hooks.arg, r)) < 0)
        return rc;
    if (msync(r->base, r->len, MS_SYNC) < 0 || fsync(n->fd) < 0) {
        int e = errno;
        char why[128];
        if (r3_nbd_helper_ended(n->mnt, why, sizeof why))
            return r3_error(-e, "nbd region: the mount helper (r3-nbd-helper) %s, so the"
                            " region's writes since the last sync cannot be written back", why);
        return r3_error(-e, "nbd region: writing the mapping back: %s", strerror(e));
    }
    /* fsync sent an NBD flush and its reply came after the served source's
     * flush returned: for nbd-managed a push round plus the write-behind in
     * flight, then the remote's flush. Nothing is left to flush here (a
     * second flush cost a round trip to the remote for nothing). */
    n->syncs++;
    uint64_t *list = NULL;
    size_t k = 0;
    if ((rc = take_written(n, &list, &k)) < 0)
        return rc;
    n->chunks_reported += k;
    if (n->hooks.after_sync)
        n->hooks.after_sync(n->hooks.arg, r, list, k);
    free(list);
    return 0;
}

static int region_close(struct r3_region *r)
{
    struct r3_nbd_region *n = (struct r3_nbd_region *)r;
    int rc = region_sync(r);
    if (n->hooks.before_close)
        n->hooks.before_close(n->hooks.arg, r);
    teardown(n);
    return rc;
}

static int region_stats(struct r3_region *r, struct r3_region_stats *st)
{
    struct r3_nbd_region *n = (struct r3_nbd_region *)r;
    st->syncs = n->syncs;
    if (n->pipe && n->pipe->pull) {
        struct r3_pull_progress p;
        r3_pull_progress(n->pipe->pull, &p);
        st->chunks_prefetch = p.chunks_pulled;
        st->bytes_pulled = p.bytes_pulled;
    }
    if (n->pipe && n->pipe->push) {
        struct r3_push_progress p;
        r3_push_progress(n->pipe->push, &p);
        st->chunks_pushed = p.chunks_pushed;
        st->bytes_pushed = p.bytes_pushed;
    }
    if (n->written) {
        /* Every write went straight to the source: that is what was pushed. */
        struct r3_nbd_written_counts c;
        r3_nbd_written_counts(n->written, &c);
        st->bytes_pulled = c.bytes_read;
        st->bytes_pushed = c.bytes_written;
        st->chunks_pushed = n->chunks_reported;
    }
    return 0;
}

/* ---- migration (src/migrate: the seeder)
 * The mapping's dirty pages reach the pipeline with msync (the FUSE write
 * is answered after the NBD write was, so MS_SYNC returns once the push
 * stage saw them). */
static int flush_map(struct r3_nbd_region *n, uint64_t off, uint64_t len)
{
    uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE), a = off & ~(pg - 1);
    if (len == 0)
        return 0;
    if (msync((char *)n->r.base + a, off + len - a, MS_SYNC) < 0)
        return r3_error(-errno, "nbd region: msync: %s", strerror(errno));
    return 0;
}

/* The region's current bytes without filling anything: chunks the cache
 * holds from its local side, the others from the source (they hold what
 * the source holds until filled). */
static int managed_read(struct r3_region *r, void *buf, size_t len, uint64_t off)
{
    struct r3_nbd_region *n = (struct r3_nbd_region *)r;
    struct r3_source *c = n->pipe->cache;
    int rc = flush_map(n, off, len);
    uint8_t *out = buf;
    while (rc == 0 && len) {
        uint64_t idx = off / r->chunk;
        size_t in = (size_t)((idx + 1) * r->chunk - off);
        if (in > len)
            in = len;
        bool local;
        rc = r3_cache_peek(c, out, in, off, &local);     /* under the chunk's lock */
        out += in;
        off += in;
        len -= in;
    }
    return rc < 0 ? r3_error_prefix(rc, "nbd-managed: ") : 0;
}

/* Chunks written since START: the push stage's tracking bitmap, every
 * write that reaches the pipeline; the mapping is flushed first so writes
 * still in the page cache are counted (START: they are older than it). */
static int managed_order(struct r3_region *r, uint64_t **list, size_t *n)
{
    struct r3_nbd_region *nr = (struct r3_nbd_region *)r;
    return r3_cache_access_order(nr->pipe->cache, list, n);
}

static int managed_track(struct r3_region *r, int op, uint64_t **list, size_t *k)
{
    struct r3_nbd_region *n = (struct r3_nbd_region *)r;
    if (!n->pipe->push)
        return r3_error(-ENOTSUP, "nbd-managed: no push stage to track writes with");
    if (op == R3_TRACK_START || op == R3_TRACK_TAKE) {
        int rc = flush_map(n, 0, r->len);
        if (rc < 0)
            return rc;
    }
    return r3_push_track(n->pipe->push, op, list, k);
}

/* nbd-direct: every write goes through to the source; its pass-through
 * (written.c) keeps the tracking bitmap. */
static int direct_read(struct r3_region *r, void *buf, size_t len, uint64_t off)
{
    struct r3_nbd_region *n = (struct r3_nbd_region *)r;
    int rc = flush_map(n, off, len);
    if (rc == 0)
        rc = r3_source_read(n->written, buf, len, off);
    return rc < 0 ? r3_error_prefix(rc, "nbd-direct: ") : 0;
}

static int direct_order(struct r3_region *r, uint64_t **list, size_t *n)
{
    return r3_nbd_written_order(((struct r3_nbd_region *)r)->written, list, n);
}

static int direct_track(struct r3_region *r, int op, uint64_t **list, size_t *k)
{
    struct r3_nbd_region *n = (struct r3_nbd_region *)r;
    if (op == R3_TRACK_START || op == R3_TRACK_TAKE) {
        int rc = flush_map(n, 0, r->len);
        if (rc < 0)
            return rc;
    }
    return r3_nbd_written_track(n->written, op, list, k);
}

const struct r3_strategy_ops r3_strategy_nbd_direct = {
    .name = "nbd-direct", .open = open_direct, .sync = region_sync, .close = region_close, .stats = region_stats,
    .read = direct_read, .track = direct_track, .access_order = direct_order,
};
const struct r3_strategy_ops r3_strategy_nbd_managed = {
    .name = "nbd-managed", .open = open_managed, .sync = region_sync, .close = region_close, .stats = region_stats,
    .read = managed_read, .track = managed_track, .access_order = managed_order,
};
