/* The nbd-direct and nbd-managed strategies. An in-process NBD server serves
 * the source (direct) or a cache + pull + push + chunk pipeline over it
 * (managed) on a private Unix socket; the export is mounted (kernel device or
 * FUSE file) by a helper process (nbd/helper.h: a FUSE daemon inside the
 * process that maps its file hangs that process when it execs or dies) and
 * the region is that file mmapped MAP_SHARED.
 *   sync  = msync + fsync (an NBD flush, which flushes the served source) +
 *           pipeline flush
 *   close = sync, unmap, unmount, stop the server, close the pipeline/source */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"
#include "nbd/helper.h"
#include "nbd/mount.h"
#include "nbd/server.h"

struct nbd_region {
    struct r3_region r;
    bool managed;
    struct r3_pipeline *pipe;
    struct r3_source *served;
    struct r3_nbd_server *srv;
    struct r3_nbd_helper *mnt;      /* the mount lives in a helper process */
    struct r3_region_hooks hooks;
    int fd;
    uint64_t syncs;
    char dir[PATH_MAX], sock[PATH_MAX + 16], mdir[PATH_MAX + 16];
};


static void teardown(struct nbd_region *n)
{
    if (n->r.base && n->r.base != MAP_FAILED)
        munmap(n->r.base, n->r.len);
    if (n->fd >= 0)
        close(n->fd);
    r3_nbd_helper_stop(n->mnt);
    r3_nbd_server_stop(n->srv);
    if (n->pipe)
        r3_pipeline_close(n->pipe);         /* owns the source */
    else
        r3_source_close(n->r.src);
    if (n->mdir[0])
        rmdir(n->mdir);
    if (n->dir[0])
        rmdir(n->dir);
    free(n);
}

static int nbd_open(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out,
                    bool managed)
{
    struct nbd_region *n = calloc(1, sizeof *n);
    if (!n) {
        r3_source_close(src);
        return r3_error(-ENOMEM, "nbd region: out of memory");
    }
    n->fd = -1;
    n->managed = managed;
    n->r.ops = managed ? &r3_strategy_nbd_managed : &r3_strategy_nbd_direct;
    n->r.src = src;
    n->r.chunk = o->chunk ? o->chunk : R3_DEFAULT_CHUNK;
    n->r.len = o->size ? o->size : src->size;
    n->hooks = o->hooks;
    n->served = src;
    int rc = 0;
    /* Scratch paths first: the mount helper is forked before any thread of
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
    struct r3_nbd_mount_opts mo = {
        .client = { .unix_path = n->sock, .export_name = "" },
        .mountpoint = n->mdir, .name = "region", .fsname = managed ? "r3:nbd-managed" : "r3:nbd-direct",
    };
    if ((rc = r3_nbd_helper_spawn(&mo, &n->mnt)) < 0)
        goto fail;
    if (managed) {
        /* The pipeline (and its pull workers) starts before the device is
         * ready, as in the study. */
        struct r3_pipeline_opts po = {
            .chunk = n->r.chunk,
            .pull_workers = o->prefetch == R3_PREFETCH_NONE ? 0 : o->pull_workers,
            .push_workers = o->push_workers ? o->push_workers : 1,
            .push_interval_ms = o->push_interval_ms,
        };
        rc = r3_pipeline_open(src, &po, &n->pipe);
        if (rc < 0) {
            n->r.src = NULL;                 /* closed by the failed pipeline */
            goto fail;
        }
        n->served = n->pipe->top;
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
    *out = &n->r;
    return 0;
fail:
    teardown(n);
    return rc;
}

static int open_direct(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out)
{
    return nbd_open(o, src, out, false);
}

static int open_managed(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out)
{
    return nbd_open(o, src, out, true);
}

static int nbd_sync(struct r3_region *r)
{
    struct nbd_region *n = (struct nbd_region *)r;
    int rc = 0;
    if (n->hooks.before_sync && (rc = n->hooks.before_sync(n->hooks.arg, r)) < 0)
        return rc;
    if (msync(r->base, r->len, MS_SYNC) < 0)
        return r3_error(-errno, "nbd region: msync: %s", strerror(errno));
    if (fsync(n->fd) < 0)
        return r3_error(-errno, "nbd region: fsync: %s", strerror(errno));
    /* fsync sent an NBD flush, which flushed the served source; for the
     * managed pipeline flush once more so a push round started by the flush
     * is finished before we say "synced". */
    if (n->pipe && (rc = r3_source_flush(n->served)) < 0)
        return rc;
    n->syncs++;
    if (n->hooks.after_sync)
        n->hooks.after_sync(n->hooks.arg, r, NULL, 0);
    return 0;
}

static int nbd_close(struct r3_region *r)
{
    struct nbd_region *n = (struct nbd_region *)r;
    int rc = nbd_sync(r);
    if (n->hooks.before_close)
        n->hooks.before_close(n->hooks.arg, r);
    teardown(n);
    return rc;
}

static int nbd_stats(struct r3_region *r, struct r3_region_stats *st)
{
    struct nbd_region *n = (struct nbd_region *)r;
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
    return 0;
}

const struct r3_strategy_ops r3_strategy_nbd_direct = {
    .name = "nbd-direct", .open = open_direct, .sync = nbd_sync, .close = nbd_close, .stats = nbd_stats,
};
const struct r3_strategy_ops r3_strategy_nbd_managed = {
    .name = "nbd-managed", .open = open_managed, .sync = nbd_sync, .close = nbd_close, .stats = nbd_stats,
};
