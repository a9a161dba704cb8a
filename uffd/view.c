/* SPDX-License-Identifier: BSD-3-Clause */
/* The region as a source: the local side of the one pipeline (cache + pull +
 * push) that serves uffd. write() installs a chunk into the region with
 * UFFDIO_COPY (MODE_WP when writes are tracked by WP_ASYNC), so a fetch
 * by a fault handler or by a pull worker is the same call; read() copies
 * from pages already installed (the push stage reads dirty chunks here). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include "internal.h"
#include "uffd/uffd.h"

static int wake(struct r3u_region *r, uint64_t off, size_t len)
{
    struct uffdio_range w = { .start = (uintptr_t)r->r.base + off, .len = len };
    if (ioctl(r->uffd, UFFDIO_WAKE, &w) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

/* After a chunk leaves INSTALLING: a fault whose handler saw INSTALLING
 * counts on the installer's wake, but a page installed and then removed
 * (MADV_DONTNEED) before that fault was never woken by any copy. Woken now,
 * its thread touches the page again and faults on the FILLED chunk. */
void r3u_wake_chunk(struct r3u_region *r, uint64_t idx)
{
    uint64_t off = idx << r->chunk_shift;
    size_t len = r->r.chunk;
    if (off >= r->maplen)
        return;
    if (len > r->maplen - off)
        len = (size_t)(r->maplen - off);
    wake(r, off, (len + r->pagesz - 1) & ~(r->pagesz - 1));
}

/* A fill ioctl made no progress (EAGAIN: the layout is changing): wait
 * for the change to end, or -EAGAIN once the region is closing. A handler
 * reads the events meanwhile; any other filler steps aside for longer
 * after a while. Shared by UFFDIO_COPY here and UFFDIO_ZEROPAGE (zero.c). */
int r3u_fill_backoff(struct r3u_region *r, uint64_t at, unsigned *again)
{
    if (atomic_load(&r->stopping))
        return r3_error(-EAGAIN, "uffd: the region closed while filling offset %llu",
                        (unsigned long long)at);
    if (++*again > 64 && !r3u_in_handler(r)) {
        struct timespec ts = { 0, *again > 1024 ? 1000000 : 100000 };
        nanosleep(&ts, NULL);
    } else {
        r3u_layout_wait(r, *again);
    }
    return 0;
}

/* One UFFDIO_COPY loop over [off, off+len): partial copies continue where
 * they stopped, an existing page (EEXIST) counts as done and is woken,
 * zero progress with EAGAIN means the layout is changing. *n_new counts
 * bytes really installed. */
static int copy_range(struct r3u_region *r, uint64_t off, const uint8_t *src, size_t len,
                      size_t *n_new, uint64_t mode)
{
    size_t done = 0;
    unsigned again = 0;
    while (done < len) {
        struct uffdio_copy c = {
            .dst = (uintptr_t)r->r.base + off + done,
            .src = (uintptr_t)(src + done),
            .len = len - done,
            .mode = mode | (r->track_wp ? UFFDIO_COPY_MODE_WP : 0),
        };
        r3u_gate_enter(r);
        int ok = ioctl(r->uffd, UFFDIO_COPY, &c);
        int e = errno;
        r3u_gate_leave(r);
        if (ok == 0) {
            *n_new += len - done;
            return 0;
        }
        if (c.copy > 0) {
            done += (size_t)c.copy;
            *n_new += (size_t)c.copy;
            continue;
        }
        if (e == EEXIST) {
            /* Already present (a zero fill raced us, or a stale fault): the
             * page is valid; wake whoever waits on it and go on. */
            int rc = wake(r, off + done, r->pagesz);
            if (rc < 0)
                return rc;
            done += r->pagesz;
            continue;
        }
        if (e == EAGAIN) {
            /* Zero progress: an event (REMOVE, UNMAP, ...) is pending or its
             * thread has not resumed yet. Read events, let that thread run,
             * retry at once: the window between two events of a thread
             * that keeps calling madvise() is a few microseconds. */
            /* No time limit: a busy machine can keep an event unread for
             * long, and a thread is never given SIGBUS for contention; only
             * a region being closed stops the retries. A handler reads the
             * events meanwhile; any other filler (a pull worker) steps
             * aside for longer after a while, leaving the CPU to the
             * threads that end the change. */
            int rc = r3u_fill_backoff(r, off + done, &again);
            if (rc < 0)
                return rc;
            continue;
        }
        if (e == ENOENT || e == ESRCH) {
            /* The range is no longer registered (unmapped) or the process is
             * exiting: nothing waits there any more. */
            done += r->pagesz;
            continue;
        }
        return r3_error(-e, "uffd: UFFDIO_COPY at offset %llu failed: %s",
                        (unsigned long long)(off + done), strerror(e));
    }
    return 0;
}

/* Each UFFDIO_COPY wakes the threads waiting in its range; the caller has
 * published the chunk as R3U_INSTALLING before, so a woken thread that
 * writes and syncs at once has its chunk looked at by the sync. */
int r3u_install(struct r3u_region *r, uint64_t off, const void *buf, size_t len)
{
    const uint64_t dw = 0;
    size_t n_new = 0;
    uint64_t p0 = off >> r->page_shift, p1 = (off + len + r->pagesz - 1) >> r->page_shift;
    size_t whole = len & ~(r->pagesz - 1);
    const uint8_t *b = buf;
    int rc = 0;
    if (!r3u_bits_any(r->zpage, p0, p1)) {
        if (whole)
            rc = copy_range(r, off, b, whole, &n_new, dw);
    } else {
        /* Pages removed before their chunk was ever filled read as zeros. */
        for (uint64_t pg = p0; rc == 0 && pg < p0 + (whole >> r->page_shift); pg++) {
            uint64_t o = pg << r->page_shift;
            bool z = r3u_bit(r->zpage, pg);
            rc = copy_range(r, o, z ? r->zeros : b + (o - off), r->pagesz, &n_new, dw);
            if (z)
                r3u_bit_clear(r->zpage, pg);
        }
    }
    /* (len is whole pages: fills are whole chunks, see r3u_track_filled) */
    return rc;
}

int r3u_install_page(struct r3u_region *r, uint64_t off, const void *page)
{
    size_t n_new = 0;
    return copy_range(r, off, page, r->pagesz, &n_new, 0);
}

int r3u_install_zero(struct r3u_region *r, uint64_t off, bool *installed)
{
    size_t n_new = 0;
    int rc = copy_range(r, off, r->zeros, r->pagesz, &n_new, 0);
    r3u_bit_clear(r->zpage, off >> r->page_shift);
    *installed = n_new > 0;
    return rc;
}

static int view_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct r3u_region *r = (struct r3u_region *)((char *)s - offsetof(struct r3u_region, view));
    /* The source said zeros (remote.c read nothing): zero pages, no copy. */
    bool zero = r3u_zero_taken(buf, off);
    if (off >= r->maplen)
        return 0;            /* past the region: the remote is larger */
    if (len > r->maplen - off)
        len = r->maplen - off;
    uint64_t idx = off >> r->chunk_shift;
    if ((off & (r->r.chunk - 1)) != 0 || len > r->r.chunk)
        return r3_error(-EINVAL, "uffd: the region takes whole chunks (offset %llu, %zu bytes)",
                        (unsigned long long)off, len);
    /* The eviction of this chunk ends (its bytes are in the source, which
     * this fetch read after the cache forgot the chunk) before it goes in
     * again: never claim a chunk being moved out. */
    uint8_t st = atomic_load_explicit(&r->filled[idx], memory_order_acquire);
    for (unsigned tries = 1; st == R3U_EVICTING; tries++) {
        r3u_layout_wait(r, tries);
        st = atomic_load_explicit(&r->filled[idx], memory_order_acquire);
    }
    if (st == R3U_FILLED) {
        /* Installed already (a fetch after invalidate): pages present win. */
        return 0;
    }
    const uint8_t *b = buf;
    if (r->hash)
        r3u_track_filled(r, idx, buf, len);     /* before any page can be written */
    struct r3u_handler *h = r3u_current(r);
    bool fault = h && !h->ra;
    /* Published (and counted, so a woken thread reads exact stats) before
     * the first page goes in: see r3u_install. */
    if (atomic_exchange_explicit(&r->filled[idx], R3U_INSTALLING, memory_order_acq_rel) == 0)
        atomic_fetch_add(&r->resident, 1);
    _Atomic uint64_t *ctr = fault ? &r->chunks_fault : &r->chunks_prefetch;
    atomic_fetch_add_explicit(ctr, 1, memory_order_relaxed);
    size_t pulled = zero ? 0 : len;
    atomic_fetch_add_explicit(&r->bytes_pulled, pulled, memory_order_relaxed);
    int rc = 0;
    if (zero) {
        /* One ioctl for the chunk (its waiters are woken by it). Pages
         * removed before the fill read as zeros: these are. */
        atomic_fetch_add_explicit(&r->chunks_zero, 1, memory_order_relaxed);   /* before the wake */
        size_t zl = (len + r->pagesz - 1) & ~(r->pagesz - 1);
        if (atomic_load_explicit(&r->last_write, memory_order_relaxed)) {
            /* The program is writing: the zero page would be replaced at
             * once (a copy-on-write fault per page, allocating and zeroing
             * it); real pages copied from the shared zero buffer cost one
             * fault less. Reads keep the zero page (no memory). */
            for (size_t d = 0; rc == 0 && d < zl; d += R3_ZEROS_LEN)
                rc = r3u_install(r, off + d, r3_zeros(), zl - d < R3_ZEROS_LEN ? zl - d : R3_ZEROS_LEN);
        } else {
            rc = r3u_install_zeros(r, off, zl);
        }
        for (uint64_t pg = off >> r->page_shift; rc == 0 && pg < (off + len + r->pagesz - 1) >> r->page_shift; pg++)
            if (r3u_bit(r->zpage, pg))
                r3u_bit_clear(r->zpage, pg);
        if (rc < 0)
            atomic_fetch_sub_explicit(&r->chunks_zero, 1, memory_order_relaxed);
        if (fault)
            r3u_fault_woken(h);
    } else if (fault && h->fault_off >= off && h->fault_off < off + len && len > r->pagesz) {
        /* The faulting page first: its thread runs on while the rest of
         * the chunk goes in; faults on the other pages wait for their
         * copies, which wake them. */
        uint64_t po = h->fault_off, in = po - off;
        size_t n = len - in < r->pagesz ? len - in : r->pagesz;
        if (!h->first_done)           /* else fault.c installed it already */
            rc = r3u_install(r, po, b + in, n);
        r3u_fault_woken(h);
        if (rc == 0 && in)
            rc = r3u_install(r, off, b, in);
        if (rc == 0 && in + n < len)
            rc = r3u_install(r, po + n, b + in + n, len - in - n);
    } else {
        rc = r3u_install(r, off, buf, len);
        if (fault)
            r3u_fault_woken(h);
    }
    if (rc == 0) {
        if (r->young) {
            r3u_bit_set(r->young, idx);
            r3u_bit_clear(r->evicted, idx);
        }
        atomic_store_explicit(&r->filled[idx], R3U_FILLED, memory_order_release);
        r3u_wake_chunk(r, idx);
        r3u_evict_kick(r);
        return 0;
    }
    atomic_fetch_sub_explicit(ctr, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&r->bytes_pulled, pulled, memory_order_relaxed);
    atomic_store_explicit(&r->filled[idx], 0, memory_order_release);
    atomic_fetch_sub(&r->resident, 1);
    /* Wake after a failure: the waiters fault again and see the error. */
    wake(r, off, (len + r->pagesz - 1) & ~(r->pagesz - 1));
    return rc;
}

/* Copy out of the region. The program's writes race with this by design:
 * the kernel orders them (a write after a PAGEMAP_SCAN re-protection is
 * found by the next scan), which ThreadSanitizer cannot see; under TSan
 * the copy is an uninstrumented loop instead of the intercepted memcpy. */
#if defined(__SANITIZE_THREAD__)
__attribute__((no_sanitize("thread"), noinline))
static void region_copy(void *dst, const void *src, size_t n)
{
    volatile uint8_t *d = dst;
    const volatile uint8_t *p = src;
    for (size_t i = 0; i < n; i++)
        d[i] = p[i];
}
#else
#define region_copy memcpy
#endif

static int view_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct r3u_region *r = (struct r3u_region *)((char *)s - offsetof(struct r3u_region, view));
    uint8_t *out = buf;
    r3u_events_settle(r);          /* the gone bits are current */
    while (len) {
        if (off >= r->maplen) {
            memset(out, 0, len);
            return 0;
        }
        uint64_t pg = off >> r->page_shift;
        size_t in = r->pagesz - (off & (r->pagesz - 1));
        if (in > len)
            in = len;
        uint8_t st = atomic_load_explicit(&r->filled[off >> r->chunk_shift], memory_order_acquire);
        if (!st && r->evicted && r3u_bit(r->evicted, off >> r->chunk_shift)) {
            /* Evicted: its bytes were written back; the source has them. */
            int rc = r3_source_read(r->inner, out, in, off);
            if (rc < 0)
                return rc;
        } else if (!st || r3u_bit(r->zpage, pg)) {
            /* Never installed (the cache does not ask) or removed: zeros,
             * without touching the page. */
            memset(out, 0, in);
        } else if (atomic_load(&r->any_gone) && r3u_bit(r->gone, pg)) {
            /* Unmapped by the program: keep what the source holds. */
            int rc = r3_source_read(r3_cache_remote(r->p->cache), out, in, off);
            if (rc < 0)
                return rc;
        } else {
            region_copy(out, (const uint8_t *)r->r.base + off, in);
        }
        out += in;
        off += in;
        len -= in;
    }
    return 0;
}

static int view_flush(struct r3_source *s)
{
    (void)s;
    return 0;
}

static void view_close(struct r3_source *s)
{
    (void)s;                 /* part of the region; freed with it */
}

static const struct r3_source_ops view_ops = {
    .scheme = "uffd-region", .read = view_read, .write = view_write,
    .flush = view_flush, .close = view_close,
};

void r3u_view_init(struct r3u_region *r, uint64_t size)
{
    r->view.ops = &view_ops;
    r->view.size = size;
    r->view.align = 1;
    r->view.flags = R3_SRC_PARALLEL;
}
