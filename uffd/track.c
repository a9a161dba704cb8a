/* SPDX-License-Identifier: BSD-3-Clause */
/* Dirty tracking for write-back: the push stage's collect callback, run
 * before each push round (interval or flush).
 *  - WP_ASYNC: one PAGEMAP_SCAN over the region returns the pages written
 *    since the last scan and write-protects them again in the same call
 *    (PM_SCAN_WP_MATCHING). Pages never filled also report as written, so
 *    only chunks in the filled bitmap count.
 *  - otherwise: every filled chunk is hashed (XXH3) and compared with its
 *    hash at fill time / at the last push. */
#include <errno.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#include "internal.h"
#include "uffd/uffd.h"

void r3u_track_filled(struct r3u_region *r, uint64_t idx, const void *buf, size_t len)
{
    /* What the region holds after the fill. Every fill is a whole chunk:
     * the region is a multiple of the chunk and no longer than its source
     * (r3_region_open refuses a longer one). */
    (void)len;
    r->hash[idx] = XXH3_64bits(buf, r->r.chunk);
}

static void take_pending(struct r3u_region *r, struct r3_source *push)
{
    uint64_t words = (r->nchunks + 63) / 64;
    for (uint64_t w = 0; w < words; w++) {
        if (!atomic_load_explicit(&r->pdirty[w], memory_order_relaxed))
            continue;
        uint64_t x = atomic_exchange(&r->pdirty[w], 0);
        while (x) {
            unsigned b = (unsigned)__builtin_ctzll(x);
            x &= x - 1;
            r3u_mark(r, push, w * 64 + b);
        }
    }
}

struct scan_mark {
    struct r3u_region *r;
    struct r3_source *push;
    uint64_t last;
};

static void mark_run(void *arg, uint64_t s, uint64_t t)
{
    struct scan_mark *m = arg;
    struct r3u_region *r = m->r;
    uint64_t base = (uintptr_t)r->r.base;
    uint64_t c0 = (s - base) >> r->chunk_shift, c1 = (t - base - 1) >> r->chunk_shift;
    uint64_t ps = (s - base) >> r->page_shift, pe = (t - base + r->pagesz - 1) >> r->page_shift;
    for (uint64_t c = c0; c <= c1 && c < r->nchunks; c++) {
        if (atomic_load_explicit(&r->filled[c], memory_order_acquire)) {
            /* only the written pages of the chunk go out (remote.c) */
            uint64_t a = (c << r->chunk_shift) >> r->page_shift, b = ((c + 1) << r->chunk_shift) >> r->page_shift;
            r3u_mark_pages(r, m->push, c, a > ps ? a : ps, b < pe ? b : pe);
            if (r->young && c != m->last)
                r3u_bit_set(r->young, c);     /* written: recently used */
            m->last = c;
        }
    }
}

static int collect_scan(struct r3u_region *r, struct r3_source *push)
{
    /* The scanner runs without PM_SCAN_CHECK_WPASYNC: a hole the program
     * unmapped and something else mapped again must not fail the sync (its
     * chunks are "gone"). */
    struct scan_mark m = { r, push, UINT64_MAX };
    uint64_t base = (uintptr_t)r->r.base;
    int rc = r3_pm_scan_written(&r->scan, base, base + r->maplen, mark_run, &m);
    return rc < 0 ? r3_error_prefix(rc, "uffd: ") : 0;
}

static int collect_hash(struct r3u_region *r, struct r3_source *push)
{
    r3u_events_settle(r);          /* an unmapped page is never read below */
    for (uint64_t c = 0; c < r->nchunks; c++) {
        if (!atomic_load_explicit(&r->filled[c], memory_order_acquire))
            continue;
        uint64_t off = c << r->chunk_shift;
        uint64_t p0 = off >> r->page_shift, p1 = (off + r->r.chunk) >> r->page_shift;
        uint64_t h;
        if (!r3u_bits_any(r->zpage, p0, p1) && !(atomic_load(&r->any_gone) && r3u_bits_any(r->gone, p0, p1))) {
            h = XXH3_64bits((const uint8_t *)r->r.base + off, r->r.chunk);
        } else {
            int rc = r3_source_read(&r->view, r->scratch, r->r.chunk, off);
            if (rc < 0)
                return rc;
            h = XXH3_64bits(r->scratch, r->r.chunk);
        }
        if (h != r->hash[c]) {
            r->hash[c] = h;
            r3u_mark(r, push, c);
        }
    }
    return 0;
}

int r3u_collect(void *arg, struct r3_source *push)
{
    struct r3u_region *r = arg;
    pthread_mutex_lock(&r->collect_lock);
    take_pending(r, push);
    int rc = r->track_wp ? collect_scan(r, push) : collect_hash(r, push);
    pthread_mutex_unlock(&r->collect_lock);
    return rc;
}
