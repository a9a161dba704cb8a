/* SPDX-License-Identifier: BSD-3-Clause */
/* The "filesync" strategy: pre-copy. The source's content is copied into a
 * local file (opts->workdir, default /tmp) before the region opens; the
 * region is that file mapped MAP_SHARED. Write-back is the push stage
 * (src/stages/push.c) over a view of the mapping: its collect hook marks the
 * blocks (one block = one chunk) changed since the last round, found with
 * uffd WP_ASYNC + PAGEMAP_SCAN on the mapping where the kernel allows, else
 * by hashing every block (XXH3); its workers write them back on the push
 * interval and on r3_region_sync.
 *
 * The region contract (include/r3/region.h): before_sync runs first in
 * every r3_region_sync (and close's) and may veto it; after_sync runs once
 * per successful sync with the chunks written back since the previous
 * after_sync (by that sync and by interval rounds), ascending, each once,
 * maybe none; stats count what was pre-copied and written back.
 * Options it cannot honour (background pull, access-ordered prefetch, access
 * logs, fault threads) are -EINVAL with a sentence; opts->filesync_detect chooses
 * "pagemap" or "hash" (the library reads no environment).
 * Migration (a seeder): read is the mapping; track adds what every scan
 * finds (pagemap) or compares blocks with what was served (hash); the
 * access order comes from scans of the mapping's present pages. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include "internal.h"
#include "filesync/filesync.h"
#include "kernel/kernel.h"

#define PRECOPY_IO (4u << 20)    /* bytes per source read while pre-copying */

struct fsr;
/* The push stage's inner source: the mapping's bytes. */
struct fsview {
    struct r3_source src;
    struct fsr *f;
};

struct fsr {
    struct r3_region r;
    struct r3_region_hooks hooks;
    char *path;
    int fd;
    uint64_t nblocks;
    struct fs_track *track;      /* NULL: hashing */
    struct fs_hash *last;        /* hashing: hash of what was last read for a push */
    uint8_t *dirty;              /* collect's scratch: one byte per block */
    struct fsview view;
    struct r3_source *push;      /* the push stage over view; writes to r.src */
    pthread_mutex_t sync_mu;     /* one r3_region_sync at a time */
    pthread_mutex_t wmu;         /* written */
    uint64_t *written;           /* bitmap: written back since the last after_sync */
    uint64_t *list;              /* after_sync's list (under sync_mu) */
    _Atomic uint64_t syncs;
    uint64_t bytes_pulled, chunks_pulled;
    /* migration tracking (fsr_track), under tmu; scans of the tracker
     * (collect and TAKE) under scan_mu */
    pthread_mutex_t scan_mu, tmu;
    _Atomic bool tracking;
    bool track_hash;             /* hashing: compare with what was served */
    bool track_lost;             /* the tracker failed while tracking */
    uint64_t *tracked;           /* pagemap: bitmap of blocks written since START */
    struct fs_hash *shash;       /* hashing: hash of the block as last served */
    uint8_t *sstate;             /* hashing: 0 not served, 1 served whole, 2 in part */
    /* access order (scan_mu): chunks in the order scans first found them
     * present in the mapping */
    struct r3_pm_scanner oscan;
    int oscan_state;             /* 0 not opened, 1 open, -1 unusable */
    uint64_t *oseen, *order;
    size_t norder;
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

/* ---- the view: what the push workers read is what gets written back, and
 * (hashing) its hash becomes the block's baseline, so a block is compared
 * with exactly the bytes the source holds. */
static int view_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct fsr *f = ((struct fsview *)s)->f;
    uint32_t block = f->r.chunk;
    copy_racy(buf, (const unsigned char *)f->r.base + off, len);
    if (f->last && off % block == 0)
        for (uint64_t k = off / block, o = off; o < off + len; k++, o += block) {
            size_t n = off + len - o < block ? (size_t)(off + len - o) : block;
            f->last[k] = fs_hash_block((const unsigned char *)buf + (o - off), n);
        }
    return 0;
}

static int view_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct fsr *f = ((struct fsview *)s)->f;
    memcpy((unsigned char *)f->r.base + off, buf, len);
    return 0;
}

static int view_flush(struct r3_source *s) { (void)s; return 0; }
static void view_close(struct r3_source *s) { (void)s; }   /* part of struct fsr */

static const struct r3_source_ops view_ops = {
    .scheme = "filesync-view", .read = view_read, .write = view_write, .flush = view_flush,
    .close = view_close,
};

/* The push stage's collect hook: mark the blocks changed since the last
 * round. Runs under the stage's round lock (never twice at once). */
/* The access order a seeder sends. The program's first touch of a page
 * maps it in this process's page tables (the pre-copy wrote the file, not
 * the mapping), so a scan of the present pages finds the chunks touched
 * since the last scan: each push round's collect and each request for the
 * order scan once, and chunks first touched between two scans come
 * ascending. A hint: a failed scan only stops the recording. */
static void touched_run(void *arg, uint64_t s, uint64_t e)
{
    struct fsr *f = arg;
    uint64_t base = (uintptr_t)f->r.base;
    for (uint64_t c = (s - base) / f->r.chunk; c <= (e - 1 - base) / f->r.chunk && c < f->nblocks; c++)
        if (!(f->oseen[c / 64] & (1ull << (c % 64)))) {
            f->oseen[c / 64] |= 1ull << (c % 64);
            f->order[f->norder++] = c;
        }
}

static void note_touched_locked(struct fsr *f)
{
    if (f->oscan_state == 0) {
        f->oseen = calloc((f->nblocks + 63) / 64, sizeof *f->oseen);
        f->order = malloc((f->nblocks ? f->nblocks : 1) * sizeof *f->order);
        f->oscan_state = f->oseen && f->order && r3_pm_scanner_open(&f->oscan, 0) == 0 ? 1 : -1;
    }
    if (f->oscan_state < 0 || f->norder == f->nblocks)
        return;
    uint64_t base = (uintptr_t)f->r.base;
    if (r3_pm_scan_present(&f->oscan, base, base + f->r.len, touched_run, f) < 0)
        f->oscan_state = -1;
}

static int fsr_order(struct r3_region *r, uint64_t **list, size_t *n)
{
    struct fsr *f = (struct fsr *)r;
    pthread_mutex_lock(&f->scan_mu);
    note_touched_locked(f);
    size_t k = f->oscan_state > 0 ? f->norder : 0;
    uint64_t *l = malloc((k ? k : 1) * sizeof *l);
    if (l && k)
        memcpy(l, f->order, k * sizeof *l);
    pthread_mutex_unlock(&f->scan_mu);
    if (!l)
        return r3_error(-ENOMEM, "filesync: out of memory");
    *list = l;
    *n = k;
    return 0;
}

static int collect_locked(struct fsr *f, struct r3_source *push)
{
    note_touched_locked(f);
    uint32_t block = f->r.chunk;
    memset(f->dirty, 0, f->nblocks);
    if (f->track && fs_track_scan(f->track, block, f->dirty) < 0) {
        /* lost the tracker: hash from now on; a zero baseline pushes
         * every block once, so nothing written meanwhile is missed */
        fs_track_close(f->track);
        f->track = NULL;
        if (atomic_load(&f->tracking) && !f->track_hash)
            f->track_lost = true;      /* a migration's TAKE fails */
        if (!(f->last = calloc(f->nblocks, sizeof *f->last)))
            return r3_error(-ENOMEM, "filesync: out of memory");
    }
    if (!f->track)
        fs_hash_diff(f->r.base, f->r.len, block, f->last, f->dirty, 2);
    bool track = f->tracked && atomic_load(&f->tracking) && !f->track_hash;
    for (uint64_t k = 0; k < f->nblocks; k++)
        if (f->dirty[k]) {
            r3_push_mark(push, k);
            if (track)
                f->tracked[k / 64] |= 1ull << (k % 64);
        }
    return 0;
}

static int collect(void *arg, struct r3_source *push)
{
    struct fsr *f = arg;
    pthread_mutex_lock(&f->scan_mu);
    int rc = collect_locked(f, push);
    pthread_mutex_unlock(&f->scan_mu);
    return rc;
}

/* The push stage's after hook: a write-back round (interval or sync) wrote
 * these chunks; the next successful sync reports them. */
static void after_push(void *arg, const uint64_t *chunks, size_t n)
{
    struct fsr *f = arg;
    pthread_mutex_lock(&f->wmu);
    for (size_t i = 0; i < n; i++)
        f->written[chunks[i] / 64] |= 1ull << (chunks[i] % 64);
    pthread_mutex_unlock(&f->wmu);
}

/* after_sync with every chunk written back since the last call, ascending. */
static void report_written(struct fsr *f)
{
    size_t n = 0;
    pthread_mutex_lock(&f->wmu);
    for (uint64_t w = 0; w < (f->nblocks + 63) / 64; w++) {
        for (uint64_t bits = f->written[w]; bits; bits &= bits - 1)
            f->list[n++] = w * 64 + (uint64_t)__builtin_ctzll(bits);
        f->written[w] = 0;
    }
    pthread_mutex_unlock(&f->wmu);
    f->hooks.after_sync(f->hooks.arg, &f->r, f->list, n);
}

static int fsr_sync(struct r3_region *r)
{
    struct fsr *f = (struct fsr *)r;
    pthread_mutex_lock(&f->sync_mu);
    int rc = f->hooks.before_sync ? f->hooks.before_sync(f->hooks.arg, r) : 0;
    if (rc == 0) {
        if ((rc = r3_source_flush(f->push)) < 0)
            r3_error_prefix(rc, "filesync: write-back: ");
        else if (f->hooks.after_sync)
            report_written(f);
        atomic_fetch_add(&f->syncs, 1);
    }
    pthread_mutex_unlock(&f->sync_mu);
    return rc;
}

/* ---- migration (src/migrate: the seeder) */

/* The region's current bytes: the mapping (filesync pre-copied everything:
 * nothing is ever filled). Hashing: what is served is remembered per block,
 * for TAKE. */
static int fsr_read(struct r3_region *r, void *buf, size_t len, uint64_t off)
{
    struct fsr *f = (struct fsr *)r;
    unsigned char *out = buf;
    while (len) {
        uint64_t k = off / r->chunk, bend = (k + 1) * r->chunk < r->len ? (k + 1) * r->chunk : r->len;
        size_t in = bend - off < len ? (size_t)(bend - off) : len;
        copy_racy(out, (const unsigned char *)r->base + off, in);
        if (atomic_load(&f->tracking) && f->track_hash) {
            pthread_mutex_lock(&f->tmu);
            if (off == k * r->chunk && in == bend - off && f->sstate[k] != 2) {
                f->shash[k] = fs_hash_block(out, in);
                f->sstate[k] = 1;
            } else {
                f->sstate[k] = 2;      /* served in part: always re-sent */
            }
            pthread_mutex_unlock(&f->tmu);
        }
        out += in;
        off += in;
        len -= in;
    }
    return 0;
}

/* START: pagemap scans once (what was written before goes to write-back,
 * not to the list; a write between that scan and the start is older than
 * any read the leecher makes after it), then every scan (write-back rounds
 * and TAKE) adds what it finds to the tracked set. Hashing cannot see a
 * write that puts the old bytes back, so it reports instead every block
 * whose bytes differ from what was served for it (or that was served in
 * part): exactly what the leecher must fetch again. */
static int fsr_track(struct r3_region *r, int op, uint64_t **list, size_t *n)
{
    struct fsr *f = (struct fsr *)r;
    uint64_t words = (f->nblocks + 63) / 64;
    int rc = 0;
    if (op == R3_TRACK_STOP) {
        atomic_store(&f->tracking, false);
        return 0;
    }
    if (op != R3_TRACK_START && (op != R3_TRACK_TAKE || !list || !n))
        return r3_error(-EINVAL, "filesync: bad track operation %d", op);
    pthread_mutex_lock(&f->scan_mu);
    pthread_mutex_lock(&f->tmu);
    if (op == R3_TRACK_START) {
        atomic_store(&f->tracking, false);
        f->track_lost = false;
        f->track_hash = f->track == NULL;
        if (!f->tracked)
            f->tracked = calloc(words, sizeof *f->tracked);
        if (f->track_hash && !f->shash) {
            f->shash = calloc(f->nblocks, sizeof *f->shash);
            f->sstate = calloc(f->nblocks, 1);
        }
        if (!f->tracked || (f->track_hash && (!f->shash || !f->sstate))) {
            rc = r3_error(-ENOMEM, "filesync: out of memory");
        } else {
            if (!f->track_hash)
                rc = collect_locked(f, f->push);
            memset(f->tracked, 0, words * sizeof *f->tracked);
            if (f->sstate)
                memset(f->sstate, 0, f->nblocks);
            if (rc == 0)
                atomic_store(&f->tracking, true);
        }
    } else if (!atomic_load(&f->tracking)) {
        rc = r3_error(-EINVAL, "filesync: writes are not being tracked");
    } else if (f->track_hash) {
        memset(f->tracked, 0, words * sizeof *f->tracked);
        for (uint64_t k = 0; k < f->nblocks; k++) {
            uint64_t off = k * r->chunk;
            size_t bl = r->len - off < r->chunk ? (size_t)(r->len - off) : r->chunk;
            if (f->sstate[k] == 2 ||
                (f->sstate[k] == 1 &&
                 !fs_hash_eq(f->shash[k], fs_hash_block((const unsigned char *)r->base + off, bl))))
                f->tracked[k / 64] |= 1ull << (k % 64);
        }
    } else {
        rc = collect_locked(f, f->push);   /* one scan finds what was written up to now */
        if (rc == 0 && f->track_lost)
            rc = r3_error(-EIO, "filesync: the write tracker failed while tracking");
    }
    if (rc == 0 && op == R3_TRACK_TAKE) {
        size_t k = 0, i = 0;
        for (uint64_t w = 0; w < words; w++)
            k += (size_t)__builtin_popcountll(f->tracked[w]);
        uint64_t *l = malloc((k ? k : 1) * sizeof *l);
        if (!l) {
            rc = r3_error(-ENOMEM, "filesync: out of memory");
        } else {
            for (uint64_t w = 0; w < words; w++)
                for (uint64_t b = f->tracked[w]; b; b &= b - 1)
                    l[i++] = w * 64 + (uint64_t)__builtin_ctzll(b);
            *list = l;
            *n = i;
        }
    }
    pthread_mutex_unlock(&f->tmu);
    pthread_mutex_unlock(&f->scan_mu);
    return rc;
}

static void teardown(struct fsr *f)
{
    r3_source_close(f->push);              /* stops its workers; view_close is a no-op */
    fs_track_close(f->track);
    if (f->r.base)
        munmap(f->r.base, f->r.len);
    if (f->fd >= 0)
        close(f->fd);
    free(f->path);
    r3_source_close(f->r.src);
    free(f->last);
    free(f->dirty);
    free(f->written);
    free(f->list);
    free(f->tracked);
    free(f->shash);
    free(f->sstate);
    if (f->oscan_state > 0)
        r3_pm_scanner_close(&f->oscan);
    free(f->oseen);
    free(f->order);
    pthread_mutex_destroy(&f->scan_mu);
    pthread_mutex_destroy(&f->tmu);
    pthread_mutex_destroy(&f->sync_mu);
    pthread_mutex_destroy(&f->wmu);
    free(f);
}

static int fsr_close(struct r3_region *r)
{
    struct fsr *f = (struct fsr *)r;
    int rc = fsr_sync(r);
    if (f->hooks.before_close)
        f->hooks.before_close(f->hooks.arg, r);
    teardown(f);
    return rc;
}

static int fsr_stats(struct r3_region *r, struct r3_region_stats *st)
{
    struct fsr *f = (struct fsr *)r;
    struct r3_push_progress pp;
    r3_push_progress(f->push, &pp);
    st->chunks_pushed = pp.chunks_pushed;
    st->bytes_pushed = pp.bytes_pushed;
    st->syncs = atomic_load(&f->syncs);
    st->bytes_pulled = f->bytes_pulled;
    st->chunks_prefetch = f->chunks_pulled;
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

/* Where the next bytes that may hold data are, from off: [*from, *to)
 * within [off, end). A file source says where its data is (SEEK_DATA /
 * SEEK_HOLE): holes are skipped without reading them. false: no data left. */
static bool next_data(int sfd, uint64_t off, uint64_t end, uint64_t *from, uint64_t *to)
{
    *from = off;
    *to = end;
    if (sfd < 0)
        return true;
    off_t d = lseek(sfd, (off_t)off, SEEK_DATA);
    if (d < 0)
        return errno != ENXIO;          /* ENXIO: only a hole up to the end */
    if ((uint64_t)d >= end)
        return false;
    uint64_t start = (uint64_t)d & ~(uint64_t)4095;
    *from = start > off ? start : off;
    off_t h = lseek(sfd, d, SEEK_HOLE);
    if (h > d && (uint64_t)h < end)
        *to = ((uint64_t)h + 4095) & ~(uint64_t)4095;
    if (*to > end)
        *to = end;
    return true;
}

static void progress(struct fsr *f, uint64_t t0, uint64_t *last, uint64_t done, bool end)
{
    if (!f->hooks.on_progress)
        return;
    uint64_t now = r3_now_ns();
    if (now - t0 < 1000000000u && !(end && *last))
        return;                         /* short copies say nothing */
    if (!end && *last && now - *last < 500000000u)
        return;
    *last = now;
    f->hooks.on_progress(f->hooks.arg, NULL, "copying", done, f->r.len);
}

/* Copy what holds data: holes of a file source are not read, all-zero
 * pieces of any source are not written (the local file starts as a hole:
 * it stays sparse, saving disk, page cache and writeback). */
static int precopy(struct fsr *f)
{
    unsigned char *buf = malloc(PRECOPY_IO);
    if (!buf)
        return r3_error(-ENOMEM, "filesync: out of memory");
    int rc = 0, sfd = r3_file_source_fd(f->r.src);
    uint64_t t0 = r3_now_ns(), last = 0, off = 0, len = f->r.len;
    while (off < len && rc == 0) {
        uint64_t from, to;
        if (!next_data(sfd, off, len, &from, &to))
            break;
        if (to > from + PRECOPY_IO)
            to = from + PRECOPY_IO;
        size_t n = (size_t)(to - from);
        rc = r3_source_read(f->r.src, buf, n, from);
        if (rc == 0 && !all_zero(buf, n))
            rc = r3_pwrite_all(f->fd, buf, n, from);
        if (rc < 0)
            r3_error_prefix(rc, "filesync: pre-copy at %llu: ", (unsigned long long)from);
        off = to;
        progress(f, t0, &last, off, false);
    }
    if (rc == 0)
        progress(f, t0, &last, len, true);
    f->bytes_pulled = rc == 0 ? f->r.len : 0;
    f->chunks_pulled = rc == 0 ? f->nblocks : 0;
    free(buf);
    return rc;
}

/* The region contract: an option this strategy cannot honour is an error. */
static int check_opts(const struct r3_region_opts *o)
{
    if (o->prefetch == R3_PREFETCH_HOT || o->prefetch_file)
        return r3_error(-EINVAL, "filesync cannot prefetch in access order (prefetch \"hot\", "
                        "an access log): it copies the whole source before the region opens");
    if (o->prefetch != R3_PREFETCH_SEQUENTIAL && o->prefetch != R3_PREFETCH_NONE)
        return r3_error(-EINVAL, "filesync: unknown prefetch order %d", o->prefetch);
    if (o->record_access)
        return r3_error(-EINVAL, "filesync cannot record an access log: the program's reads "
                        "are plain memory reads it never sees");
    if (o->pull_workers)
        return r3_error(-EINVAL, "filesync cannot pull in the background (pull workers %u): it "
                        "copies the whole source before the region opens", o->pull_workers);
    if (o->fault_threads && o->fault_threads != 2)
        return r3_error(-EINVAL, "filesync cannot use fault handler threads (%u): it takes no "
                        "faults; leave the default", o->fault_threads);
    const char *d = o->filesync_detect;
    if (d && strcmp(d, "pagemap") && strcmp(d, "hash"))
        return r3_error(-EINVAL, "filesync: detection '%s' is unknown (pagemap or hash)", d);
    return 0;
}

/* Local file of len bytes in dir, unlinked at once: the mapping keeps it
 * alive and no crash (or a process that exits without closing the region)
 * leaves it behind. */
static int local_file(struct fsr *f, const char *dir)
{
    if (asprintf(&f->path, "%s/r3-filesync-XXXXXX", dir) < 0) {
        f->path = NULL;
        return r3_error(-ENOMEM, "filesync: out of memory");
    }
    f->fd = mkostemp(f->path, O_CLOEXEC);
    if (f->fd < 0)
        return r3_error(-errno, "filesync: cannot create a file in %s: %s", dir, strerror(errno));
    unlink(f->path);
    /* Sparse: only what holds data takes disk (a 4 GiB image with 1 MiB of
     * data takes 1 MiB). The price: a disk that fills up later fails the
     * program's write (SIGBUS), as with any sparse file mapped. */
    if (ftruncate(f->fd, (off_t)f->r.len) < 0)
        return r3_error(-errno, "filesync: %s: %s", f->path, strerror(errno));
    return 0;
}

/* Change detection: PAGEMAP_SCAN unless hashing was asked for or the kernel
 * cannot track this mapping; hashing starts from the pre-copied content. */
static int detect_open(struct fsr *f, const char *want)
{
    bool hash = want && !strcmp(want, "hash");
    if (!hash && fs_track_open(f->r.base, f->r.len, &f->track) < 0) {
        f->track = NULL;
        if (want)      /* "pagemap" asked for explicitly */
            return r3_error_prefix(-ENOTSUP, "filesync cannot track writes with PAGEMAP_SCAN "
                                   "here: ");
    }
    if (f->track)
        return 0;
    if (!(f->last = malloc(f->nblocks * sizeof *f->last)))
        return r3_error(-ENOMEM, "filesync: out of memory");
    fs_hash_blocks(f->r.base, f->r.len, f->r.chunk, f->last, 2);
    return 0;
}

static int fsr_open(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out);

const struct r3_strategy_ops r3_strategy_filesync = {
    .name = "filesync", .open = fsr_open, .sync = fsr_sync, .close = fsr_close, .stats = fsr_stats,
    .read = fsr_read, .track = fsr_track, .access_order = fsr_order,
};

static int fsr_open(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out)
{
    *out = NULL;
    int rc = check_opts(o);
    struct fsr *f = rc < 0 ? NULL : calloc(1, sizeof *f);
    if (!f) {
        r3_source_close(src);
        return rc < 0 ? rc : r3_error(-ENOMEM, "filesync: out of memory");
    }
    f->fd = -1;
    f->r.src = src;
    f->r.ops = &r3_strategy_filesync;
    f->r.chunk = o->chunk ? o->chunk : R3_DEFAULT_CHUNK;
    f->r.len = (size_t)(o->size ? o->size : src->size);
    f->hooks = o->hooks;
    pthread_mutex_init(&f->sync_mu, NULL);
    pthread_mutex_init(&f->wmu, NULL);
    pthread_mutex_init(&f->scan_mu, NULL);
    pthread_mutex_init(&f->tmu, NULL);
    if (f->r.len == 0) {
        rc = r3_error(-EINVAL, "filesync: the region is empty");
        goto fail;
    }
    if (f->r.chunk > FS_MAX_BLOCK) {
        rc = r3_error(-EINVAL, "filesync: chunk %u is above %u", f->r.chunk, FS_MAX_BLOCK);
        goto fail;
    }
    f->nblocks = (f->r.len + f->r.chunk - 1) / f->r.chunk;
    f->written = calloc((f->nblocks + 63) / 64, sizeof *f->written);
    f->list = calloc(f->nblocks, sizeof *f->list);
    if (!(f->dirty = calloc(f->nblocks, 1)) || !f->written || !f->list) {
        rc = r3_error(-ENOMEM, "filesync: out of memory");
        goto fail;
    }
    if ((rc = local_file(f, o->workdir ? o->workdir : "/tmp")) < 0 || (rc = precopy(f)) < 0)
        goto fail;
    void *p = mmap(NULL, f->r.len, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
    if (p == MAP_FAILED) {
        rc = r3_error(-errno, "filesync: mmap of %zu bytes: %s", f->r.len, strerror(errno));
        goto fail;
    }
    f->r.base = p;
    if ((rc = detect_open(f, o->filesync_detect)) < 0)
        goto fail;
    f->view = (struct fsview){ .src = { .ops = &view_ops, .size = f->r.len, .align = 1,
                                        .flags = R3_SRC_PARALLEL }, .f = f };
    struct r3_push_opts po = {
        .chunk = f->r.chunk, .workers = o->push_workers, .interval_ms = o->push_interval_ms,
        .collect = collect, .after = after_push, .arg = f,
    };
    if ((rc = r3_stage_push_open(&f->view.src, src, &po, &f->push)) < 0) {
        f->push = NULL;
        goto fail;
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
