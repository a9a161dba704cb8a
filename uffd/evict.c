/* SPDX-License-Identifier: BSD-3-Clause */
/* Eviction (max_resident): a region larger than the memory it may use.
 * Filled chunks are counted; when they pass the budget an evictor thread
 * takes chunks out, by CLOCK, until a little below it (faults only wait
 * past the budget plus the chunks in flight).
 *
 * Taking chunk c out, without ever losing a write:
 *  0. if nothing marks c dirty, a copy of its bytes (process_vm_readv);
 *  1. c goes FILLED -> EVICTING (faults on it wait for the end);
 *  2. c is clean if nothing owed is recorded for it (pdirty, pw, zpage,
 *     gone) and a PAGEMAP_SCAN of c finds no page written since the last
 *     collect (written pages found join pw);
 *  3. UFFDIO_MOVE moves its pages, atomically, to a one-chunk staging area
 *     (registered, as MOVE wants, with a userfaultfd of its own that has no
 *     events: dropping its pages sends the region's handlers nothing): a
 *     write by the program lands either in the moved page or, after the
 *     move, faults. (The move does not carry the uffd-wp bit, so a write
 *     between 2 and 3 is found by comparing the pages with the copy of 0.)
 *  4. a dirty chunk's moved bytes are written back to the source (pages the
 *     program had removed are zeros); on a source error they are moved back
 *     and c stays resident (reported once through on_error). A clean chunk
 *     is not written: its bytes are the source's;
 *  5. the staging pages are dropped (MADV_DONTNEED: no REMOVE event, see
 *     3), the cache forgets c, c goes to 0: the next touch faults it back
 *     from the source.
 * Steps 2-4 hold c's write-back lock: the push stage's page runs of c are
 * never in flight meanwhile (a clean drop before they land would refault
 * stale bytes).
 * Young bits: set when a chunk is filled or found written by a collect; the
 * hand clears them and takes chunks whose bit is clear (reads after the
 * fill are not seen: an approximation of LRU); each round starts at a
 * random chunk (plain CLOCK on a loop a little larger than the budget
 * evicts exactly what the loop touches next). Pages shared with a forked
 * child cannot be moved (EBUSY): such a chunk stays until the child is
 * gone. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#include "internal.h"
#include "uffd/uffd.h"

uint64_t r3u_evict_min_chunks(unsigned fault_threads, unsigned readahead)
{
    return (uint64_t)fault_threads * (readahead + 1u) + 4u;
}

void r3u_wb_lock(struct r3u_region *r, uint64_t c0, uint64_t c1)
{
    for (uint64_t c = c0; r->wbusy && c <= c1 && c < r->nchunks; c++) {
        uint64_t bit = UINT64_C(1) << (c & 63);
        for (unsigned spins = 0; atomic_fetch_or(&r->wbusy[c >> 6], bit) & bit; spins++) {
            struct timespec ts = { 0, spins < 100 ? 1000 : 50000 };
            nanosleep(&ts, NULL);
        }
    }
}

/* The evictor never waits for it (a push holding it may be reading the
 * chunk, which waits for the eviction to end): busy, the chunk is skipped. */
static bool wb_trylock(struct r3u_region *r, uint64_t c)
{
    uint64_t bit = UINT64_C(1) << (c & 63);
    return !(atomic_fetch_or(&r->wbusy[c >> 6], bit) & bit);
}

void r3u_wb_unlock(struct r3u_region *r, uint64_t c0, uint64_t c1)
{
    for (uint64_t c = c0; r->wbusy && c <= c1 && c < r->nchunks; c++)
        r3u_bit_clear(r->wbusy, c);
}

/* Pages at the start of [at, at+len) that are present (mapped). */
static size_t present_prefix(struct r3u_region *r, uintptr_t at, size_t len)
{
    size_t np = len >> r->page_shift, i = 0;
    unsigned char vec[np ? np : 1];
    if (np && mincore((void *)at, len, vec) == 0)
        while (i < np && (vec[i] & 1))
            i++;
    return i << r->page_shift;
}

/* Move len bytes from src to dst (both page aligned), holes allowed.
 * 0 or -errno; *moved gets the bytes done before an error.
 * The kernel can move pages and still fail the call without counting them
 * (seen here: EAGAIN or EEXIST with no progress said, and every page of
 * the chunk at dst): retried, those pages are EEXIST at dst. dst was empty
 * where this call moves (the staging area, or the holes the eviction left
 * in the region), so pages present there are ones this call moved: they
 * are counted and skipped, never taken for a failure that would leave the
 * program's bytes in the staging area. */
int r3u_move(struct r3u_region *r, int fd, uintptr_t dst, uintptr_t src, size_t len, size_t *moved)
{
    size_t done = 0;
    unsigned again = 0;
    *moved = 0;
    while (done < len) {
        struct uffdio_move mv = {
            .dst = dst + done, .src = src + done, .len = len - done,
            .mode = UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
        };
        int rc = ioctl(fd, UFFDIO_MOVE, &mv);
        int e = errno;
        if (rc == 0) {
            done = len;
            break;
        }
        if (mv.move > 0) {
            done += (size_t)mv.move;
            continue;
        }
        if (e == EEXIST || e == EAGAIN) {
            size_t skip = present_prefix(r, dst + done, len - done);
            if (skip) {
                done += skip;
                continue;
            }
        }
        if (e == EAGAIN && again++ < 100000) {
            struct timespec ts = { 0, 20000 };
            nanosleep(&ts, NULL);
            continue;
        }
        *moved = done;
        return -e;
    }
    *moved = done;
    return 0;
}

/* Put the staging pages back where they came from (after a failure). If a
 * page cannot be moved back, it is copied back (UFFDIO_COPY; a page already
 * there is EEXIST and kept); only then is the staging area emptied, so it
 * never holds a leftover page that would make every later move fail
 * (EEXIST) or that is the only copy of the program's bytes. */
static void move_back(struct r3u_region *r, uint64_t off)
{
    size_t moved;
    r3u_move(r, r->uffd, (uintptr_t)r->r.base + off, (uintptr_t)r->staging, r->r.chunk, &moved);
    /* whatever the move said, nothing may stay behind in the staging area */
    size_t np = r->r.chunk >> r->page_shift;
    unsigned char vec[np];
    if (mincore(r->staging, r->r.chunk, vec) < 0)
        memset(vec, 1, np);
    bool any = false;
    for (size_t i = 0; i < np && !any; i++)
        any = vec[i] & 1;
    if (!any)
        return;
    for (size_t i = 0; i < np; i++) {
        if (!(vec[i] & 1))
            continue;
        size_t at = i << r->page_shift;
        for (unsigned again = 0;; again++) {
            struct uffdio_copy c = {
                .dst = (uintptr_t)r->r.base + off + at,
                .src = (uintptr_t)r->staging + at,
                .len = r->pagesz,
                .mode = r->track_wp ? UFFDIO_COPY_MODE_WP : 0,
            };
            if (ioctl(r->uffd, UFFDIO_COPY, &c) == 0 || errno != EAGAIN || again >= 100000)
                break;
            struct timespec ts = { 0, 20000 };
            nanosleep(&ts, NULL);
        }
    }
    madvise(r->staging, r->r.chunk, MADV_DONTNEED);
}

static void report(struct r3u_region *r, int rc, uint64_t c)
{
    if (atomic_exchange(&r->evict_reported, 1) == 0 && r->hooks.on_error) {
        char msg[512];
        snprintf(msg, sizeof msg, "uffd: cannot evict chunk %llu: %s; it stays resident (the"
                 " region may go over its max_resident budget)", (unsigned long long)c,
                 r3_last_error());
        r->hooks.on_error(r->hooks.arg, &r->r, rc, msg);
    }
}

struct scan_dirty {
    struct r3u_region *r;
    bool any;
};

/* A run of pages written since the last scan (now protected again): owed
 * to the source, so it goes into pw at once (a later collect no longer
 * sees it). */
static void scan_dirty_run(void *arg, uint64_t s, uint64_t e)
{
    struct scan_dirty *d = arg;
    struct r3u_region *r = d->r;
    uint64_t base = (uintptr_t)r->r.base;
    for (uint64_t pg = (s - base) >> r->page_shift; pg < (e - base + r->pagesz - 1) >> r->page_shift; pg++)
        r3u_bit_set(r->pw, pg);
    d->any = true;
}

/* Is chunk c, as the source holds it, still what the region holds? Called
 * with c EVICTING, before its pages are moved out. Dirty if: a fault or a
 * REMOVE marked it (pdirty), a collect found written pages not yet written
 * back (pw), a page was removed (zpage) or unmapped (gone), or a scan of
 * just this chunk finds pages written since the last collect (WP_ASYNC;
 * those join pw). Under collect_lock: a collect moves pdirty into pw in two
 * steps. A write after the scan is not seen here: the caller compares the
 * moved pages with a copy taken before the scan. */
static bool chunk_clean(struct r3u_region *r, uint64_t c, int *rc)
{
    uint64_t off = c << r->chunk_shift;
    uint64_t p0 = off >> r->page_shift, p1 = (off + r->r.chunk) >> r->page_shift;
    pthread_mutex_lock(&r->collect_lock);
    bool clean = !r3u_bit(r->pdirty, c) && !r3u_bits_any(r->pw, p0, p1) &&
                 !r3u_bits_any(r->zpage, p0, p1) &&
                 !(atomic_load(&r->any_gone) && r3u_bits_any(r->gone, p0, p1));
    if (r->track_wp) {
        /* always scanned: written pages must not stay unprotected and
         * unrecorded once the chunk is gone */
        struct scan_dirty d = { r, false };
        uint64_t base = (uintptr_t)r->r.base + off;
        *rc = r3_pm_scan_written(&r->scan, base, base + r->r.chunk, scan_dirty_run, &d);
        if (*rc < 0 || d.any)
            clean = false;
    }
    pthread_mutex_unlock(&r->collect_lock);
    return clean;
}

/* Copy chunk c's bytes as the program sees them now into evict_copy, with
 * process_vm_readv: a page the program unmapped meanwhile is an error
 * (false), never a SIGSEGV in this thread. Before c goes EVICTING: a
 * missing page is filled by a handler as for any fault. */
static bool copy_chunk(struct r3u_region *r, uint64_t c)
{
    struct iovec l = { r->evict_copy, r->r.chunk };
    struct iovec rv = { (uint8_t *)r->r.base + (c << r->chunk_shift), r->r.chunk };
    return process_vm_readv(getpid(), &l, 1, &rv, 1, 0) == (ssize_t)r->r.chunk;
}

/* 0 evicted, 1 skipped (not evictable now), -errno failed (stays).
 * A clean chunk (its bytes are the source's) is dropped without I/O; a
 * dirty one is written back first. */
static int evict_one(struct r3u_region *r, uint64_t c)
{
    /* Clean candidates: a copy of the bytes before the scan (see
     * chunk_clean); a write between the scan and the move shows as a
     * difference from it. With hash tracking the chunk's hash says. */
    bool maybe_clean = r->pw && !r->cow && !r3u_bit(r->pdirty, c);
    if (maybe_clean && r->track_wp)
        maybe_clean = copy_chunk(r, c);
    uint8_t st = R3U_FILLED;
    if (!atomic_compare_exchange_strong(&r->filled[c], &st, R3U_EVICTING))
        return 1;
    /* A chunk is FILLED a moment before its fetch is finished in the cache
     * (LOCAL): taken out meanwhile, the cache would go LOCAL after our
     * invalidate and the next fault would find a chunk "local" but gone.
     * While the cache says LOCAL nobody fetches the chunk, so no fetch can
     * read the source before the write-back below. */
    if (!r3_cache_is_local(r->p->cache, c)) {
        atomic_store(&r->filled[c], R3U_FILLED);
        return 1;
    }
    uint64_t off = c << r->chunk_shift;
    size_t moved;
    int rc = 0;
    /* The gate is held from the scan to the end of the write-back: a fork
     * never sees the chunk's bytes neither in the region nor in the source.
     * The chunk's write-back lock keeps the push stage's page runs of it
     * (taken from pw, in flight to the source) from crossing this: a chunk
     * is never dropped before they land, nor written here under them. */
    r3u_gate_enter(r);
    if (!wb_trylock(r, c)) {
        atomic_store(&r->filled[c], R3U_FILLED);
        r3u_gate_leave(r);
        return 1;
    }
    bool clean = r->pw && !r->cow ? chunk_clean(r, c, &rc) && maybe_clean : false;
    if (rc < 0) {
        /* the scan failed: its pages may be written; the push must see them */
        r3u_bit_set(r->pdirty, c);
        atomic_store(&r->filled[c], R3U_FILLED);
        r3u_wb_unlock(r, c, c);
        r3u_gate_leave(r);
        return rc;
    }
    rc = r3u_move(r, r->staging_uffd, (uintptr_t)r->staging, (uintptr_t)r->r.base + off, r->r.chunk, &moved);
    if (rc < 0) {
        move_back(r, off);        /* (whatever moved, counted or not) */
        atomic_store(&r->filled[c], R3U_FILLED);
        r3u_bit_set(r->young, c);
        /* pw bits the scan set are owed: a push round must take them, and
         * re-read their bytes (they may be newer than its buffer) */
        r3u_bit_set(r->pdirty, c);
        atomic_store(&r->recheck, true);
        r3u_wb_unlock(r, c, c);
        r3u_gate_leave(r);
        return rc == -EBUSY ? 1 : r3_error(rc, "UFFDIO_MOVE: %s", strerror(-rc));
    }
    /* What the program had there: present pages as moved, removed ones zeros. */
    size_t np = r->r.chunk >> r->page_shift;
    unsigned char vec[np];
    const uint8_t *buf = r->staging;
    if (mincore(r->staging, r->r.chunk, vec) == 0) {
        bool all = true;
        for (size_t i = 0; i < np && all; i++)
            all = vec[i] & 1;
        if (!all) {
            clean = false;
            for (size_t i = 0; i < np; i++) {
                uint8_t *d = r->evict_buf + (i << r->page_shift);
                if (vec[i] & 1)
                    memcpy(d, (uint8_t *)r->staging + (i << r->page_shift), r->pagesz);
                else
                    memset(d, 0, r->pagesz);
            }
            buf = r->evict_buf;
        }
    } else {
        rc = r3_error(-errno, "mincore: %s", strerror(errno));
        clean = false;
    }
    if (clean) {
        if (r->track_wp) {
            clean = memcmp(r->staging, r->evict_copy, r->r.chunk) == 0;
        } else {
            /* hash tracking: the hash of the chunk as last collected; a
             * collect that finds it changed marks it (pw), so equal bytes
             * with nothing owed are the source's bytes */
            pthread_mutex_lock(&r->collect_lock);
            clean = XXH3_64bits(r->staging, r->r.chunk) == r->hash[c] &&
                    !r3u_bit(r->pdirty, c) &&
                    !r3u_bits_any(r->pw, off >> r->page_shift, (off + r->r.chunk) >> r->page_shift);
            pthread_mutex_unlock(&r->collect_lock);
        }
    }
    size_t len = r->r.chunk;
    if (off + len > r->remote_size)
        len = off < r->remote_size ? (size_t)(r->remote_size - off) : 0;
    if (rc == 0 && len && !clean)
        rc = r3u_write_back(r, buf, len, off);
    if (rc < 0) {
        move_back(r, off);
        /* pages found written by the scan are in pw: the push must take
         * them, and re-read their bytes */
        r3u_bit_set(r->pdirty, c);
        atomic_store(&r->recheck, true);
        atomic_store(&r->filled[c], R3U_FILLED);
        r3u_bit_set(r->young, c);
        r3u_wb_unlock(r, c, c);
        r3u_gate_leave(r);
        return rc;
    }
    madvise(r->staging, r->r.chunk, MADV_DONTNEED);
    r3_cache_invalidate(r->p->cache, c);
    if (!clean) {
        /* the source now holds those zeros: a refill needs no zero pages */
        for (uint64_t pg = off >> r->page_shift; pg < (off + r->r.chunk) >> r->page_shift; pg++)
            r3u_bit_clear(r->zpage, pg);
    } else {
        atomic_fetch_add(&r->evict_clean, 1);
    }
    r3u_bit_set(r->evicted, c);
    r3u_bit_clear(r->young, c);
    atomic_fetch_sub(&r->resident, 1);
    atomic_fetch_add(&r->evictions, 1);
    atomic_store(&r->filled[c], 0);
    r3u_wb_unlock(r, c, c);
    r3u_gate_leave(r);
    return 0;
}

static void *evictor_main(void *arg)
{
    struct r3u_region *r = arg;
    pthread_mutex_lock(&r->evict_m);
    while (!r->evict_stop) {
        if (atomic_load(&r->resident) <= r->evict_high) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 20 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&r->evict_cv, &r->evict_m, &ts);
            continue;
        }
        pthread_mutex_unlock(&r->evict_m);
        uint64_t scanned = 0, failed = 0;
        /* Each round starts at a random chunk: a loop over a little more
         * than the budget would otherwise, by plain CLOCK, evict just the
         * chunks it is about to touch, and miss on every one of them (a
         * working set 0.03 % over the budget re-read all of it). */
        r->rng ^= r->rng << 13;
        r->rng ^= r->rng >> 7;
        r->rng ^= r->rng << 17;
        r->hand = r->rng % r->nchunks;
        while (atomic_load(&r->resident) > r->evict_low && !r->evict_stop &&
               scanned < 4 * r->nchunks) {
            uint64_t c = r->hand;
            r->hand = (r->hand + 1) % r->nchunks;
            scanned++;
            if (atomic_load_explicit(&r->filled[c], memory_order_acquire) != R3U_FILLED)
                continue;
            if (r3u_bit(r->young, c)) {
                r3u_bit_clear(r->young, c);
                continue;
            }
            int rc = evict_one(r, c);
            if (rc < 0) {
                report(r, rc, c);
                if (++failed > 8) {
                    /* the source is failing: faults may go over the budget
                     * (said by on_error) rather than wait; again later */
                    atomic_store(&r->evict_failing, true);
                    break;
                }
            } else if (rc == 0) {
                atomic_store(&r->evict_failing, false);
            }
        }
        pthread_mutex_lock(&r->evict_m);
        if (failed > 8 || scanned >= 4 * r->nchunks) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 100 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&r->evict_cv, &r->evict_m, &ts);
        }
    }
    pthread_mutex_unlock(&r->evict_m);
    return NULL;
}

void r3u_evict_kick(struct r3u_region *r)
{
    if (!r->max_resident || atomic_load(&r->resident) <= r->evict_high)
        return;
    pthread_mutex_lock(&r->evict_m);
    pthread_cond_signal(&r->evict_cv);
    pthread_mutex_unlock(&r->evict_m);
}

void r3u_evict_wait_room(struct r3u_region *r)
{
    if (!r->max_resident)
        return;
    for (unsigned tries = 1; atomic_load(&r->resident) >= r->evict_hard &&
                             !atomic_load(&r->evict_failing); tries++) {
        r3u_evict_kick(r);
        atomic_fetch_add(&r->evict_waits, tries == 1);
        r3u_layout_wait(r, tries);
        if (atomic_load(&r->stopping))
            return;
    }
}

int r3u_evict_start(struct r3u_region *r, uint64_t max_resident, unsigned nh)
{
    char a[32], b[32];
    uint64_t min = r3u_evict_min_chunks(nh, r->readahead);
    r->budget_chunks = max_resident >> r->chunk_shift;
    if (r->budget_chunks < min)
        return r3_error(-EINVAL, "max_resident %s is too small: the chunks that can be in flight"
                        " at once need at least %s (%llu chunks of %u bytes)",
                        r3_fmt_size(max_resident, a, sizeof a),
                        r3_fmt_size(min << r->chunk_shift, b, sizeof b),
                        (unsigned long long)min, r->r.chunk);
    if (r->cow)
        return r3_error(-EINVAL, "max_resident cannot be used with copy_on_write: an evicted"
                        " chunk's writes would have nowhere to go");
    if (!(r->features & UFFD_FEATURE_MOVE))
        return r3_error(-ENOTSUP, "max_resident needs UFFDIO_MOVE (Linux 6.8), which this kernel"
                        " lacks");
    /* The budget counts the region's chunks only. The evictor starts at
     * the budget itself (not below it: a working set the budget covers is
     * never evicted) and takes out a little more (up to 1/64 of the budget,
     * at most 256 chunks); faults wait only past the budget plus the
     * chunks that can be in flight at once. */
    uint64_t inflight = (uint64_t)nh * (r->readahead + 1u);
    uint64_t slack = r->budget_chunks / 64;
    if (slack > 256)
        slack = 256;
    if (slack < 1)
        slack = 1;
    r->evict_high = r->budget_chunks;
    r->evict_low = r->evict_high > slack ? r->evict_high - slack : 0;
    r->evict_hard = r->budget_chunks + inflight;
    r->rng = (uint64_t)r3_now_ns() | 1;
    r->max_resident = max_resident;
    r->young = calloc((r->nchunks + 63) / 64, 8);
    r->evicted = calloc((r->nchunks + 63) / 64, 8);
    r->evict_buf = malloc(r->r.chunk);
    r->evict_copy = malloc(r->r.chunk);
    r->wbusy = calloc((r->nchunks + 63) / 64, 8);
    void *m = mmap(NULL, 2 * (size_t)r->r.chunk, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (!r->young || !r->evicted || !r->evict_buf || !r->evict_copy || !r->wbusy || m == MAP_FAILED)
        return r3_error(-ENOMEM, "uffd: out of memory for eviction");
    uintptr_t al = ((uintptr_t)m + r->r.chunk - 1) & ~((uintptr_t)r->r.chunk - 1);
    r->staging_map = m;
    r->staging = (void *)al;
    madvise(r->staging, r->r.chunk, MADV_NOHUGEPAGE);
    madvise(r->staging, r->r.chunk, MADV_DONTFORK);
    struct uffdio_register reg = {
        .range = { .start = al, .len = r->r.chunk }, .mode = UFFDIO_REGISTER_MODE_MISSING,
    };
    uint64_t got;
    r->staging_uffd = r3_kernel_uffd_open(O_CLOEXEC | O_NONBLOCK, UFFD_FEATURE_MOVE,
                                          UFFD_FEATURE_MOVE, &got, NULL);
    if (r->staging_uffd < 0)
        return r3_error_prefix(r->staging_uffd, "uffd: eviction: ");
    if (ioctl(r->staging_uffd, UFFDIO_REGISTER, &reg) < 0)
        return r3_error(-errno, "uffd: cannot register the eviction staging area: %s",
                        strerror(errno));
    pthread_mutex_init(&r->evict_m, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->evict_cv, &ca);
    pthread_condattr_destroy(&ca);
    r->evict_init = true;
    int rc = r3_thread_create(&r->evict_thread, evictor_main, r);
    if (rc < 0)
        return rc;
    r->evict_started = true;
    return 0;
}

void r3u_evict_stop(struct r3u_region *r)
{
    if (r->evict_started) {
        pthread_mutex_lock(&r->evict_m);
        r->evict_stop = true;
        pthread_cond_broadcast(&r->evict_cv);
        pthread_mutex_unlock(&r->evict_m);
        pthread_join(r->evict_thread, NULL);
        r->evict_started = false;
    }
}

void r3u_evict_free(struct r3u_region *r)
{
    r3u_evict_stop(r);
    if (r->evict_init) {
        pthread_mutex_destroy(&r->evict_m);
        pthread_cond_destroy(&r->evict_cv);
        r->evict_init = false;
    }
    if (r->staging_map)
        munmap(r->staging_map, 2 * (size_t)r->r.chunk);
    if (r->staging_uffd > 0)
        close(r->staging_uffd);
    r->staging_uffd = -1;
    r->staging_map = r->staging = NULL;
    free(r->young);
    free(r->evicted);
    free(r->evict_buf);
    free(r->evict_copy);
    free(r->wbusy);
    r->wbusy = NULL;
    r->young = r->evicted = NULL;
    r->evict_buf = r->evict_copy = NULL;
}
