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
#include <sys/ioctl.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#include "internal.h"
#include "uffd/uffd.h"

void r3u_track_filled(struct r3u_region *r, uint64_t idx, const void *buf, size_t len)
{
    /* What the region holds after the fill: the source bytes, zero-padded
     * to the chunk (pages past a short last chunk are zero). */
    if (len == r->r.chunk) {
        r->hash[idx] = XXH3_64bits(buf, len);
    } else {
        XXH3_state_t st;
        XXH3_64bits_reset(&st);
        XXH3_64bits_update(&st, buf, len);
        XXH3_64bits_update(&st, r->zeros, r->r.chunk - len);
        r->hash[idx] = XXH3_64bits_digest(&st);
    }
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
            r3_push_mark(push, w * 64 + b);
        }
    }
}

static int collect_scan(struct r3u_region *r, struct r3_source *push)
{
    uint64_t base = (uintptr_t)r->r.base, end = base + r->maplen;
    struct pm_scan_arg a = {
        .size = sizeof a,
        /* No PM_SCAN_CHECK_WPASYNC: a hole the program unmapped and something
         * else mapped again must not fail the sync (its chunks are "gone"). */
        .flags = PM_SCAN_WP_MATCHING,
        .start = base, .end = end,
        .vec = (uintptr_t)r->scan, .vec_len = r->scan_cap,
        .category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN,
    };
    uint64_t last = UINT64_MAX;
    for (;;) {
        long n = ioctl(r->pagemap, PAGEMAP_SCAN, &a);
        if (n < 0) {
            int e = errno;
            if (e == EINTR || e == EAGAIN)
                continue;
            return r3_error(-e, "uffd: PAGEMAP_SCAN failed: %s", strerror(e));
        }
        for (long i = 0; i < n; i++) {
            uint64_t s = r->scan[i].start, t = r->scan[i].end;
            if (t <= base || s >= end)
                continue;
            uint64_t c0 = (s - base) >> r->chunk_shift, c1 = (t - base - 1) >> r->chunk_shift;
            for (uint64_t c = c0; c <= c1 && c < r->nchunks; c++) {
                if (c == last)
                    continue;
                if (atomic_load_explicit(&r->filled[c], memory_order_acquire)) {
                    r3_push_mark(push, c);
                    last = c;
                }
            }
        }
        if (a.walk_end >= end || (n == 0 && a.walk_end <= a.start))
            break;
        a.start = a.walk_end;
    }
    return 0;
}

static int collect_hash(struct r3u_region *r, struct r3_source *push)
{
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
            r3_push_mark(push, c);
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
