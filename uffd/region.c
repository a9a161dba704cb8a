/* SPDX-License-Identifier: BSD-3-Clause */
/* The uffd strategy: an anonymous mapping whose missing pages are filled
 * by r3's fault handlers, chunk by chunk, from the source through the one
 * pipeline (cache + pull + push) whose local side is the region itself
 * (view.c). Written pages are found by WP_ASYNC + PAGEMAP_SCAN (or by
 * hashing on older kernels) and written back by the push stage.
 *
 * Fork: with UFFD_FEATURE_EVENT_FORK the mapping is inherited and a forked
 * child sees the region as it was at the fork (fork.c). Without it the
 * region is MADV_DONTFORK: a child never reads silent zeros where data
 * should be; touching region memory there gets SIGSEGV. */
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include "internal.h"
#include "uffd/uffd.h"

static void destroy(struct r3u_region *r)
{
    r3u_evict_stop(r);
    if (r->nh)
        r3u_handlers_stop(r);
    if (r->p)
        r3_pipeline_close(r->p);       /* closes the source too */
    if (r->r.base) {
        if (r->uffd >= 0) {
            struct uffdio_range rg = { .start = (uintptr_t)r->r.base, .len = r->maplen };
            ioctl(r->uffd, UFFDIO_UNREGISTER, &rg);
        }
        if (!atomic_load(&r->any_gone)) {
            munmap(r->r.base, r->maplen);
        } else {
            /* Leave alone what the program unmapped (it may hold other
             * mappings now): unmap only the runs still ours. */
            for (uint64_t pg = 0; pg < r->npages;) {
                uint64_t end = pg;
                while (end < r->npages && !r3u_bit(r->gone, end))
                    end++;
                if (end > pg)
                    munmap((char *)r->r.base + (pg << r->page_shift), (end - pg) << r->page_shift);
                pg = end + 1;
            }
        }
    }
    r3u_kids_stop(r);
    r3u_evict_free(r);
    r3u_drop_free(r);
    if (r->uffd >= 0)
        close(r->uffd);
    r3_pm_scanner_close(&r->scan);
    if (r->stopfd >= 0)
        close(r->stopfd);
    if (r->zeros)
        munmap((void *)r->zeros, r->r.chunk);
    free(r->filled);
    free(r->zpage);
    free(r->gone);
    free(r->pdirty);
    free(r->ahead);
    free(r->seen);
    free((void *)r->order);
    free(r->prio);
    free(r->hash);
    free(r->scratch);
    free(r->unsynced);
    free(r->written);
    free(r->tracked);
    free(r->dropping);
    free(r->pw);
    r3u_zero_free(r);
    free(r->record_path);
    pthread_mutex_destroy(&r->collect_lock);
    free(r);
}

static int uffd_open(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out)
{
    uint32_t chunk = o->chunk ? o->chunk : R3_DEFAULT_CHUNK;
    uint64_t len = o->size ? o->size : src->size;
    long pg = sysconf(_SC_PAGESIZE);
    if (len == 0 || len % chunk) {
        char a[32], b[32];
        r3_source_close(src);
        return r3_error(-EINVAL, "uffd: the region size (%s) must be a non-zero multiple of the"
                        " chunk (%s)", r3_fmt_size(len, a, sizeof a), r3_fmt_size(chunk, b, sizeof b));
    }
    if ((uint64_t)pg > chunk) {
        r3_source_close(src);
        return r3_error(-EINVAL, "uffd: chunk %u is smaller than the page size %ld", chunk, pg);
    }
    struct r3u_region *r = calloc(1, sizeof *r);
    if (!r) {
        r3_source_close(src);
        return r3_error(-ENOMEM, "uffd: out of memory");
    }
    pthread_mutex_init(&r->collect_lock, NULL);
    r->uffd = r->stopfd = r->kids_ep = r->kids_wake = -1;
    r->scan.fd = -1;
    r->r.ops = &r3_uffd_strategy;
    r->r.chunk = chunk;
    r->r.len = len;
    r->r.src = src;
    r->hooks = o->hooks;
    r->pagesz = (size_t)pg;
    r->page_shift = (unsigned)__builtin_ctzl((unsigned long)pg);
    r->chunk_shift = (unsigned)__builtin_ctz(chunk);
    r->maplen = len;
    r->remote_size = src->size;
    r->nchunks = len >> r->chunk_shift;
    r->npages = len >> r->page_shift;
    int rc = 0;
    r->cow = o->copy_on_write;
    r->sync_timeout_ms = o->sync_timeout_ms;
    /* Sequential faults fill this many chunks ahead (0 = off). */
    r->readahead = o->uffd_readahead < 0 ? 16 : (unsigned)o->uffd_readahead;
    if (o->prefetch == R3_PREFETCH_NONE)
        r->readahead = 0;             /* "none" means no prefetch of any kind */
    atomic_store(&r->last_fault, UINT64_MAX - 1);
    /* Sources read at memory speed: fill the faulting page before its chunk
     * (uffd_no_first_page turns it off). A remote source would pay a
     * second round trip for it, so only these. */
    r->first_page = !o->uffd_no_first_page && chunk > (uint32_t)pg &&
                    (src->flags & R3_SRC_PARALLEL) &&
                    (uint64_t)pg % (src->align ? src->align : 1) == 0 &&
                    (strcmp(src->ops->scheme, "mem") == 0 || strcmp(src->ops->scheme, "file") == 0);

    /* Kernel features: never assumed, asked for. */
    uint64_t want = UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
                    UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_POISON | UFFD_FEATURE_EVENT_FORK |
                    UFFD_FEATURE_MOVE;    /* eviction and invalidate move pages out (evict.c, drop.c) */
    /* Written pages need no tracking when nothing is written back. */
    bool wp_ok = !o->uffd_no_wp_async && !r->cow;
    if (wp_ok)
        want |= UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_ASYNC;
    uint64_t ioctls = 0;
    r->uffd = r3_kernel_uffd_open(O_CLOEXEC | O_NONBLOCK, want, 0, &r->features, &ioctls);
    if (r->uffd < 0) {
        rc = r3_error_prefix(r->uffd, "uffd: ");
        r->uffd = -1;
        goto fail_src;
    }
    /* uffd_no_poison tests the path of kernels without UFFDIO_POISON. */
    r->poison = (r->features & UFFD_FEATURE_POISON) && !o->uffd_no_poison;
    r->thread_id = r->features & UFFD_FEATURE_THREAD_ID;
    if (wp_ok && (r->features & UFFD_FEATURE_WP_ASYNC) &&
        (r->features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
        r->track_wp = r3_kernel_pagemap_scan_works() && r3_pm_scanner_open(&r->scan, 4096) == 0;
        r3_error_clear();
    }
    r->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->stopfd < 0) {
        rc = r3_error(-errno, "uffd: eventfd: %s", strerror(errno));
        goto fail_src;
    }

    /* The mapping: chunk aligned, never inherited, no THP unless chunks are
     * huge pages (a THP fault would bypass chunk fills). */
    size_t resv = len + chunk;
    void *m = mmap(NULL, resv, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        char a[32];
        rc = r3_error(-errno, "uffd: cannot map %s: %s", r3_fmt_size(len, a, sizeof a), strerror(errno));
        goto fail_src;
    }
    uintptr_t al = ((uintptr_t)m + chunk - 1) & ~((uintptr_t)chunk - 1);
    if (al > (uintptr_t)m)
        munmap(m, al - (uintptr_t)m);
    if ((uintptr_t)m + resv > al + len)
        munmap((void *)(al + len), (uintptr_t)m + resv - (al + len));
    r->r.base = (void *)al;
    if (chunk != 2u * 1024 * 1024)
        madvise(r->r.base, len, MADV_NOHUGEPAGE);
    if (!(r->features & UFFD_FEATURE_EVENT_FORK))
        madvise(r->r.base, len, MADV_DONTFORK);

    r->zeros = mmap(NULL, chunk, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r->zeros == MAP_FAILED) {
        r->zeros = NULL;
        rc = r3_error(-ENOMEM, "uffd: out of memory");
        goto fail_src;
    }
    uint64_t pwords = (r->npages + 63) / 64, cwords = (r->nchunks + 63) / 64;
    r->filled = calloc(r->nchunks, 1);
    r->zpage = calloc(pwords, 8);
    r->gone = calloc(pwords, 8);
    r->pdirty = calloc(cwords, 8);
    r->unsynced = calloc(cwords, 8);
    r->written = calloc(cwords, 8);
    r->tracked = calloc(cwords, 8);
    r->dropping = calloc(cwords, 8);
    r->ahead = calloc(cwords, 8);
    if (!r->track_wp && !r->cow) {
        r->hash = calloc(r->nchunks, sizeof *r->hash);
        r->scratch = malloc(chunk);
    }
    if (!r->filled || !r->zpage || !r->gone || !r->pdirty || !r->ahead || !r->unsynced ||
        !r->written || !r->tracked || !r->dropping || (!r->track_wp && !r->cow && (!r->hash || !r->scratch))) {
        rc = r3_error(-ENOMEM, "uffd: out of memory for the region's bitmaps");
        goto fail_src;
    }
    /* The first-fault order is always kept (9 bytes a chunk): a seeder
     * sends it so that its leecher pulls hot chunks first. */
    r->seen = calloc(r->nchunks, 1);
    r->order = calloc(r->nchunks, sizeof *r->order);
    if (!r->seen || !r->order) {
        rc = r3_error(-ENOMEM, "uffd: out of memory for the access log");
        goto fail_src;
    }
    if (o->record_access) {
        r->record_path = strdup(o->record_access);
        if (!r->record_path) {
            rc = r3_error(-ENOMEM, "uffd: out of memory for the access log");
            goto fail_src;
        }
    }
    if (o->prefetch == R3_PREFETCH_HOT) {
        if (!o->prefetch_file) {
            rc = r3_error(-EINVAL, "uffd: prefetch \"hot\" needs an access log (prefetch_file)");
            goto fail_src;
        }
        if ((rc = r3u_access_load(r, o->prefetch_file)) < 0)
            goto fail_src;
    } else if (o->prefetch != R3_PREFETCH_SEQUENTIAL && o->prefetch != R3_PREFETCH_NONE) {
        rc = r3_error(-EINVAL, "uffd: unknown prefetch order %d", o->prefetch);
        goto fail_src;
    }

    struct uffdio_register reg = {
        .range = { .start = (uintptr_t)r->r.base, .len = len },
        .mode = UFFDIO_REGISTER_MODE_MISSING | (r->track_wp ? UFFDIO_REGISTER_MODE_WP : 0),
    };
    if (ioctl(r->uffd, UFFDIO_REGISTER, &reg) < 0) {
        rc = r3_error(-errno, "uffd: UFFDIO_REGISTER failed: %s", strerror(errno));
        goto fail_src;
    }
    /* Zero chunks of the source become zero pages (zero.c); the scanner
     * then skips zero pages. uffd_no_zero_fill turns it off. */
    r->zero_fill = (reg.ioctls & (UINT64_C(1) << _UFFDIO_ZEROPAGE)) && !o->uffd_no_zero_fill;
    r->zero_cheap = strcmp(src->ops->scheme, "mem") == 0 || strcmp(src->ops->scheme, "file") == 0;
    r->scan.skip_zero = true;
    r->scan.mapped_only = true;
    if (r->zero_fill && (rc = r3u_zero_init(r)) < 0)
        goto fail_src;
    /* Write-back by page runs when writes are tracked (track.c, remote.c). */
    if (!r->cow && !(r->pw = calloc(pwords, 8))) {
        rc = r3_error(-ENOMEM, "uffd: out of memory for the region's bitmaps");
        goto fail_src;
    }

    r3u_view_init(r, src->size);
    r3u_remote_init(r, src);
    /* Copy-on-write: no push stage, so nothing ever reaches the source;
     * the region (the cache's local side) keeps every write. */
    struct r3_pipeline_opts po = {
        .chunk = chunk,
        /* background pulls would fill past a max_resident budget */
        .pull_workers = o->prefetch == R3_PREFETCH_NONE || o->max_resident ? 0 : o->pull_workers,
        .push_workers = r->cow ? 0 : o->push_workers ? o->push_workers : 1,
        .push_interval_ms = o->push_interval_ms,
        .priority = r3u_priority, .priority_arg = r,
        .local = &r->view, .borrow_local = true,
        .collect = r3u_collect, .hook_arg = r,
    };
    rc = r3_pipeline_open(&r->remote, &po, &r->p);
    src = NULL;                       /* the pipeline owns it now, also on failure */
    if (rc < 0) {
        r->p = NULL;
        goto fail;
    }
    /* Handlers after the pipeline: they read r->p (thread creation orders
     * that for them). Nothing faults before open returns; pull workers
     * fill without handlers. */
    if ((r->features & UFFD_FEATURE_EVENT_FORK) && (rc = r3u_kids_start(r)) < 0)
        goto fail;
    if (o->max_resident &&
        (rc = r3u_evict_start(r, o->max_resident, o->fault_threads ? o->fault_threads : 2)) < 0)
        goto fail;
    if ((rc = r3u_handlers_start(r, o->fault_threads ? o->fault_threads : 2)) < 0)
        goto fail;
    *out = &r->r;
    return 0;

fail_src:
    r3_source_close(src);
fail:
    destroy(r);
    return rc;
}

/* One sync: before_sync (may veto), one push round + flush of the source,
 * then after_sync once with what was written back since the last one. */
static int uffd_sync(struct r3_region *rr)
{
    struct r3u_region *r = (struct r3u_region *)rr;
    if (r->hooks.before_sync) {
        int rc = r->hooks.before_sync(r->hooks.arg, rr);
        if (rc < 0)
            return rc;
    }
    if (r->cow) {
        /* Nothing is written back: the sync has nothing to wait for. */
        atomic_fetch_add(&r->syncs, 1);
        if (r->hooks.after_sync)
            r->hooks.after_sync(r->hooks.arg, rr, NULL, 0);
        return 0;
    }
    if (r->sync_timeout_ms)
        atomic_store(&r->sync_deadline, r3_now_ns() + r->sync_timeout_ms * 1000000u);
    int rc = r3_source_flush(r->p->top);
    atomic_store(&r->sync_deadline, 0);
    atomic_fetch_add(&r->syncs, 1);
    if (rc < 0 && r->sync_timeout_ms && rc == -ETIMEDOUT) {
        uint64_t bytes, n = r3u_unsynced(r, &bytes);
        char b[32];
        return r3_error(-ETIMEDOUT, "the sync did not finish within %llu ms: %llu chunk%s (%s) not"
                        " written back to the source", (unsigned long long)r->sync_timeout_ms,
                        (unsigned long long)n, n == 1 ? "" : "s", r3_fmt_size(bytes, b, sizeof b));
    }
    if (rc == 0 && r->hooks.after_sync) {
        size_t n = 0;
        uint64_t *list = r3u_take_written(r, &n);
        r->hooks.after_sync(r->hooks.arg, rr, list, n);
        free(list);
    }
    return rc;
}

static int uffd_unsynced(struct r3_region *rr, uint64_t *chunks, uint64_t *bytes)
{
    struct r3u_region *r = (struct r3u_region *)rr;
    *chunks = r3u_unsynced(r, bytes);
    return 0;
}

static int uffd_close(struct r3_region *rr)
{
    struct r3u_region *r = (struct r3u_region *)rr;
    r3u_evict_stop(r);                /* nothing moves out of the region from here */
    int rc = uffd_sync(rr);
    if (r->hooks.before_close)
        r->hooks.before_close(r->hooks.arg, rr);
    if (r->p->pull)
        r3_pull_stop(r->p->pull);
    /* Handlers stop before the pipeline closes (they use its cache). Then
     * the range is unregistered, which also wakes any fault still waiting
     * (a push round reading a page removed after the final sync gets an
     * ordinary zero page, which is what a removed page holds). */
    r3u_handlers_stop(r);
    r3u_kids_stop(r);                 /* uses the source: before the pipeline closes */
    struct uffdio_range rg = { .start = (uintptr_t)r->r.base, .len = r->maplen };
    ioctl(r->uffd, UFFDIO_UNREGISTER, &rg);
    r3_pipeline_close(r->p);
    r->p = NULL;
    int rc2 = r3u_access_write(r);
    destroy(r);
    return rc < 0 ? rc : rc2;
}

static int uffd_stats(struct r3_region *rr, struct r3_region_stats *st)
{
    struct r3u_region *r = (struct r3u_region *)rr;
    st->faults = atomic_load(&r->faults);
    st->chunks_fault = atomic_load(&r->chunks_fault);
    st->chunks_prefetch = atomic_load(&r->chunks_prefetch);
    st->bytes_pulled = atomic_load(&r->bytes_pulled);
    st->chunks_zero = atomic_load(&r->chunks_zero);
    st->syncs = atomic_load(&r->syncs);
    if (r->p && r->p->push) {
        struct r3_push_progress pp;
        r3_push_progress(r->p->push, &pp);
        st->chunks_pushed = pp.chunks_pushed;
        /* what reached the source: written page runs, not whole chunks */
        st->bytes_pushed = r->pw ? atomic_load(&r->bytes_back) : pp.bytes_pushed;
    }
    st->chunks_evicted = atomic_load(&r->evictions);
    st->fault_wait_p50_ns = r3u_wait_percentile(r, 50);
    st->fault_wait_p99_ns = r3u_wait_percentile(r, 99);
    return 0;
}

/* ---- migration hooks (src/migrate) */

/* The region's current bytes: installed chunks from the memory, the others
 * from the source (they hold what the source holds until filled). */
static int uffd_read(struct r3_region *rr, void *buf, size_t len, uint64_t off)
{
    struct r3u_region *r = (struct r3u_region *)rr;
    uint8_t *out = buf;
    while (len) {
        uint64_t idx = off >> r->chunk_shift;
        size_t in = r->r.chunk - (off & (r->r.chunk - 1));
        if (in > len)
            in = len;
        int rc = atomic_load_explicit(&r->filled[idx], memory_order_acquire)
                     ? r3_source_read(&r->view, out, in, off)
                     : r3_source_read(r->inner, out, in, off);
        if (rc < 0)
            return rc;
        out += in;
        off += in;
        len -= in;
    }
    return 0;
}

static int take_bits(_Atomic uint64_t *map, uint64_t n, uint64_t **list, size_t *cnt)
{
    size_t k = 0;
    for (uint64_t w = 0; w < (n + 63) / 64; w++)
        k += (size_t)__builtin_popcountll(atomic_load(&map[w]));
    uint64_t *l = malloc((k ? k : 1) * sizeof *l);
    if (!l)
        return r3_error(-ENOMEM, "uffd: out of memory");
    size_t i = 0;
    for (uint64_t w = 0; w < (n + 63) / 64 && i < k; w++) {
        uint64_t bits = atomic_load(&map[w]);
        while (bits && i < k) {
            l[i++] = w * 64 + (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
        }
    }
    *list = l;
    *cnt = i;
    return 0;
}

static int uffd_track(struct r3_region *rr, int op, uint64_t **list, size_t *n)
{
    struct r3u_region *r = (struct r3u_region *)rr;
    if (r->cow || !r->p || !r->p->push)
        return r3_error(-ENOTSUP, "uffd: a copy-on-write region does not track its writes");
    /* collects outside push rounds: write-back re-reads what it sends */
    atomic_store(&r->recheck, true);
    if (op == R3_TRACK_START) {
        /* Collect what was written before the start (it goes to the push
         * stage, not to the list), then track. A write between that collect
         * and the start is older than any read the leecher makes after it. */
        atomic_store(&r->tracking, false);
        int rc = r3u_collect(r, r->p->push);
        for (uint64_t w = 0; w < (r->nchunks + 63) / 64; w++)
            atomic_store(&r->tracked[w], 0);
        atomic_store(&r->tracking, true);
        return rc;
    }
    if (op == R3_TRACK_STOP) {
        atomic_store(&r->tracking, false);
        return 0;
    }
    if (op != R3_TRACK_TAKE || !list || !n)
        return r3_error(-EINVAL, "uffd: bad track operation %d", op);
    if (!atomic_load(&r->tracking))
        return r3_error(-EINVAL, "uffd: writes are not being tracked");
    /* One collect (PAGEMAP_SCAN or hashes) finds what was written up to now. */
    int rc = r3u_collect(r, r->p->push);
    if (rc < 0)
        return rc;
    return take_bits(r->tracked, r->nchunks, list, n);
}

static int uffd_access_order(struct r3_region *rr, uint64_t **list, size_t *n)
{
    struct r3u_region *r = (struct r3u_region *)rr;
    uint64_t k = atomic_load(&r->norder);
    if (k > r->nchunks)
        k = r->nchunks;
    uint64_t *l = malloc((k ? k : 1) * sizeof *l);
    if (!l)
        return r3_error(-ENOMEM, "uffd: out of memory");
    /* A slot being written right now may still read 0: a hint, not data. */
    for (uint64_t i = 0; i < k; i++)
        l[i] = atomic_load_explicit(&r->order[i], memory_order_relaxed);
    *list = l;
    *n = (size_t)k;
    return 0;
}

/* Chunks remote again (uffd/drop.c). Nothing may use the chunks meanwhile
 * (the leecher calls this before its program runs). */
static int uffd_invalidate(struct r3_region *rr, const uint64_t *list, size_t n)
{
    return r3u_drop((struct r3u_region *)rr, list, n);
}

static struct r3_source *uffd_cache(struct r3_region *rr)
{
    struct r3u_region *r = (struct r3u_region *)rr;
    return r->p ? r->p->cache : NULL;
}

const struct r3_strategy_ops r3_uffd_strategy = {
    .name = "uffd", .open = uffd_open, .sync = uffd_sync, .close = uffd_close, .stats = uffd_stats,
    .unsynced = uffd_unsynced, .caps = R3_STRATEGY_COPY_ON_WRITE,
    .read = uffd_read, .track = uffd_track, .access_order = uffd_access_order, .cache = uffd_cache,
    .invalidate = uffd_invalidate,
    .fork_prepare = r3u_fork_prepare, .fork_done = r3u_fork_done, .children = r3u_children,
};
