/* SPDX-License-Identifier: BSD-3-Clause */
/* Dropping chunks: r3_region_invalidate (a leecher's FINALIZE makes the
 * chunks the seeder changed remote again; the next access fetches them).
 *
 * MADV_DONTNEED on the region would do, but with REMOVE events on, each call
 * returns only once a fault handler has read its event: a wake-up of another
 * thread per run of chunks, 20-70 us each on two busy CPUs, all of it inside
 * a migration's downtime. So the pages are moved instead (UFFDIO_MOVE, no
 * event) into a drop area registered with a userfaultfd of its own, and
 * dropped there, a batch at a time; the chunks' state is reset here, as the
 * handler would on the event. Where a move fails (EBUSY: pages shared with a
 * forked child; or no UFFDIO_MOVE) the chunk goes the madvise way.
 * Nothing may use the chunks meanwhile. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include "internal.h"
#include "uffd/uffd.h"

#define DROP_AREA (4u << 20)        /* bytes moved out before one MADV_DONTNEED */
#define DROP_WAIT_NS 5000000000ull  /* for the handlers to see a REMOVE */

/* Chunk c's pages are gone from the region: it is remote again. */
static void forget(struct r3u_region *r, uint64_t c)
{
    uint64_t p0 = (c << r->chunk_shift) >> r->page_shift, p1 = ((c + 1) << r->chunk_shift) >> r->page_shift;
    for (uint64_t pg = p0; pg < p1; pg++)
        r3u_bit_clear(r->zpage, pg);
    r3u_bit_clear(r->pdirty, c);
    atomic_store_explicit(&r->filled[c], 0, memory_order_release);
}

/* A REMOVE event (a handler thread): the chunks of [start, end) that an
 * invalidate is dropping are forgotten; the program's own MADV_DONTNEED
 * elsewhere is the handler's (zero pages). */
void r3u_dropped(struct r3u_region *r, uint64_t start, uint64_t end)
{
    uint64_t base = (uintptr_t)r->r.base;
    if (end <= base || start >= base + r->maplen)
        return;
    uint64_t c0 = ((start < base ? base : start) - base) >> r->chunk_shift;
    uint64_t c1 = ((end > base + r->maplen ? base + r->maplen : end) - base + r->r.chunk - 1) >> r->chunk_shift;
    for (uint64_t c = c0; c < c1 && c < r->nchunks; c++) {
        if (!r3u_bit(r->dropping, c))
            continue;
        forget(r, c);
        r3u_bit_clear(r->dropping, c);      /* last: the invalidating thread waits for it */
    }
}

/* The drop area, set up at the first invalidate. 0, or -errno: use madvise. */
static int area_open(struct r3u_region *r, size_t *len)
{
    size_t n = DROP_AREA < r->r.chunk ? r->r.chunk : DROP_AREA;
    *len = n;
    if (r->drop_uffd > 0)
        return 0;
    if (r->drop_nomove || !(r->features & UFFD_FEATURE_MOVE))
        return -ENOTSUP;
    r->drop_nomove = true;                 /* until it works */
    void *m = mmap(NULL, n + r->r.chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED)
        return -errno;
    uintptr_t al = ((uintptr_t)m + r->r.chunk - 1) & ~((uintptr_t)r->r.chunk - 1);
    madvise((void *)al, n, MADV_NOHUGEPAGE);
    madvise((void *)al, n, MADV_DONTFORK);
    uint64_t got;
    int fd = r3_kernel_uffd_open(O_CLOEXEC | O_NONBLOCK, UFFD_FEATURE_MOVE, UFFD_FEATURE_MOVE, &got, NULL);
    struct uffdio_register reg = { .range = { .start = al, .len = n }, .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (fd < 0 || ioctl(fd, UFFDIO_REGISTER, &reg) < 0) {
        int e = fd < 0 ? fd : -errno;
        if (fd >= 0)
            close(fd);
        munmap(m, n + r->r.chunk);
        return e;
    }
    r->drop_map = m;
    r->drop_area = (void *)al;
    r->drop_uffd = fd;
    r->drop_nomove = false;
    return 0;
}

void r3u_drop_free(struct r3u_region *r)
{
    if (r->drop_uffd > 0)
        close(r->drop_uffd);
    if (r->drop_map)
        munmap(r->drop_map, (DROP_AREA < r->r.chunk ? r->r.chunk : DROP_AREA) + r->r.chunk);
    r->drop_uffd = 0;
    r->drop_map = r->drop_area = NULL;
}

/* The madvise way for list[0..n): one call per run of consecutive chunks,
 * then wait for the handlers to have read every REMOVE. */
static int drop_madvise(struct r3u_region *r, const uint64_t *list, size_t n)
{
    bool ev = r->features & UFFD_FEATURE_EVENT_REMOVE;
    for (size_t i = 0; i < n && ev; i++)
        r3u_bit_set(r->dropping, list[i]);
    int rc = 0;
    for (size_t i = 0, j; i < n && rc == 0; i = j) {
        for (j = i + 1; j < n && list[j] == list[j - 1] + 1;)
            j++;
        if (madvise((char *)r->r.base + (list[i] << r->chunk_shift), (list[j - 1] + 1 - list[i]) << r->chunk_shift,
                    MADV_DONTNEED) < 0)
            rc = r3_error(-errno, "uffd: invalidate: madvise: %s", strerror(errno));
    }
    uint64_t deadline = r3_now_ns() + DROP_WAIT_NS;
    for (size_t i = 0; i < n; i++) {
        uint64_t c = list[i];
        while (ev && r3u_bit(r->dropping, c)) {
            if (rc < 0 || r3_now_ns() > deadline) {
                r3u_bit_clear(r->dropping, c);
                if (rc == 0)
                    rc = r3_error(-ETIMEDOUT, "uffd: invalidate: the fault handlers did not see the REMOVE"
                                  " event of chunk %llu", (unsigned long long)c);
                break;
            }
            sched_yield();
        }
        if (rc < 0)
            continue;
        if (!ev)
            forget(r, c);
        r3_cache_invalidate(r->p->cache, c);
    }
    return rc;
}

int r3u_drop(struct r3u_region *r, const uint64_t *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] >= r->nchunks || (i && list[i] <= list[i - 1]))
            return r3_error(-EINVAL, "uffd: invalidate: chunk %llu is not in the region (or not ascending)",
                            (unsigned long long)list[i]);
    /* the source changed there: its zeros are not known any more */
    for (size_t i = 0; i < n; i++)
        r3u_zero_dead(r, list[i], list[i]);
    /* A fill r3 started (a fault the program has already seen end, a pull
     * worker) may still be finishing: the chunk turns FILLED and the cache
     * LOCAL at its very end, which would undo the drop below (the pages
     * gone, the chunk "filled": zeros). Let it end first. */
    for (size_t i = 0; i < n; i++) {
        for (unsigned tries = 1;; tries++) {
            uint8_t st = atomic_load_explicit(&r->filled[list[i]], memory_order_acquire);
            if (st != R3U_INSTALLING && st != R3U_ZEROING && st != R3U_EVICTING &&
                !r3_cache_is_fetching(r->p->cache, list[i]))
                break;
            r3u_layout_wait(r, tries);
        }
    }
    size_t alen;
    if (n == 0 || area_open(r, &alen) < 0)
        return drop_madvise(r, list, n);
    uint64_t *slow = malloc(n * sizeof *slow);
    if (!slow)
        return r3_error(-ENOMEM, "uffd: out of memory");
    size_t nslow = 0, at = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t c = list[i];
        if (at + r->r.chunk > alen) {
            madvise(r->drop_area, at, MADV_DONTNEED);
            at = 0;
        }
        size_t moved;
        int rc = r3u_move(r, r->drop_uffd, (uintptr_t)r->drop_area + at, (uintptr_t)r->r.base + (c << r->chunk_shift),
                          r->r.chunk, &moved);
        if (rc < 0) {
            /* what moved is gone anyway; the rest goes with madvise (from
             * a fresh batch: the area's tail may hold this chunk's pages) */
            slow[nslow++] = c;
            madvise(r->drop_area, alen, MADV_DONTNEED);
            at = 0;
            continue;
        }
        at += r->r.chunk;
        forget(r, c);
        r3_cache_invalidate(r->p->cache, c);
    }
    if (at)
        madvise(r->drop_area, at, MADV_DONTNEED);
    int rc = nslow ? drop_madvise(r, slow, nslow) : 0;
    free(slow);
    return rc;
}
