/* SPDX-License-Identifier: BSD-3-Clause */
/* Fault-handler threads. Each reads fault messages in batches (poll, then
 * one read() of up to R3U_BATCH messages) and fills the whole chunk around
 * each fault through the pipeline's cache, so a fault jumps ahead of the
 * pull workers and two faults on one chunk cause one fetch (the cache
 * waits for a fetch in flight). Handlers never touch region memory and
 * take no lock a faulting thread could hold: fills are ioctls from
 * buffers, the bitmaps are atomics.
 *
 * Events: REMOVE (MADV_DONTNEED/MADV_REMOVE) makes the range read as zeros
 * again: its pages are marked in zpage, later faults there get zero pages
 * and the chunks are marked dirty so the zeros are written back. UNMAP and
 * REMAP take the range out of the region (its source bytes stay as they
 * are). Fork: the region is MADV_DONTFORK (see region.c), so children never
 * see it and no FORK event is asked for. */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"
#include "uffd/uffd.h"

static _Thread_local struct r3u_handler *tl_handler;

static unsigned hist_bucket(uint64_t ns)
{
    if (ns < 4)
        return (unsigned)ns;
    unsigned lg = 63u - (unsigned)__builtin_clzll(ns);
    unsigned b = lg * 4 + (unsigned)((ns >> (lg - 2)) & 3);
    return b < R3U_HIST ? b : R3U_HIST - 1;
}

static uint64_t bucket_value(unsigned b)
{
    if (b < 4)
        return b;
    unsigned lg = b / 4, sub = b % 4;
    /* The middle of the bucket. */
    uint64_t lo = (UINT64_C(1) << lg) + ((uint64_t)sub << (lg - 2));
    return lo + (UINT64_C(1) << (lg - 2)) / 2;
}

uint64_t r3u_wait_percentile(struct r3u_region *r, double pct)
{
    uint64_t h[R3U_HIST], total = 0;
    for (unsigned i = 0; i < R3U_HIST; i++)
        total += h[i] = atomic_load(&r->wait_hist[i]);
    if (!total)
        return 0;
    uint64_t want = (uint64_t)(pct / 100.0 * (double)total + 0.5), acc = 0;
    if (want < 1)
        want = 1;
    for (unsigned i = 0; i < R3U_HIST; i++) {
        acc += h[i];
        if (acc >= want)
            return bucket_value(i);
    }
    return bucket_value(R3U_HIST - 1);
}

/* A fault that cannot be filled: SIGBUS in the faulting thread, never a hang. */
static void fail_fault(struct r3u_region *r, uint64_t off, uint64_t idx, int rc, uint32_t ptid)
{
    if (atomic_exchange(&r->reported, 1) == 0 && r->hooks.on_error) {
        char msg[512];
        snprintf(msg, sizeof msg, "uffd: cannot fill chunk %llu (region offset %llu): %s; the"
                 " faulting thread gets SIGBUS", (unsigned long long)idx, (unsigned long long)off,
                 rc < 0 ? r3_last_error() : "unknown error");
        r->hooks.on_error(r->hooks.arg, &r->r, rc < 0 ? rc : -EIO, msg);
    }
    if (r->poison) {
        struct uffdio_poison p = {
            .range = { .start = (uintptr_t)r->r.base + off, .len = r->pagesz },
        };
        if (ioctl(r->uffd, UFFDIO_POISON, &p) == 0 || errno == EEXIST) {
            if (errno == EEXIST) {
                struct uffdio_range w = p.range;
                ioctl(r->uffd, UFFDIO_WAKE, &w);
            }
            return;
        }
    }
    /* No UFFDIO_POISON: a signal interrupts the waiting fault. */
    if (r->thread_id && ptid)
        syscall(SYS_tgkill, getpid(), (pid_t)ptid, SIGBUS);
    else
        kill(getpid(), SIGBUS);
}

static void fill_ahead(struct r3u_handler *h, uint64_t idx);

/* On a memory-speed source (mem, file) the faulting page is read and
 * installed on its own before the chunk: the thread runs on after one page
 * instead of after a whole chunk's copy. The chunk is published as
 * installing first (a write to that page must be seen by the next sync),
 * and only if nobody else has started on it. */
static void first_page(struct r3u_handler *h, uint64_t off, uint64_t idx)
{
    struct r3u_region *r = h->r;
    uint8_t zero = 0;
    if (off + r->pagesz > r->r.src->size ||
        !atomic_compare_exchange_strong(&r->filled[idx], &zero, R3U_INSTALLING))
        return;
    atomic_fetch_add(&r->resident, 1);
    uint64_t pg = off >> r->page_shift;
    const void *src = r->zeros;
    if (!r3u_bit(r->zpage, pg)) {
        if (r3_source_read(r->r.src, h->page, r->pagesz, off) < 0) {
            uint8_t inst = R3U_INSTALLING;
            if (atomic_compare_exchange_strong(&r->filled[idx], &inst, 0))
                atomic_fetch_sub(&r->resident, 1);
            return;                   /* the chunk fetch reports the error */
        }
        src = h->page;
    }
    if (r3u_install_page(r, off, src) == 0) {
        r3u_bit_clear(r->zpage, pg);
        h->first_done = true;
        r3u_fault_woken(h);
    }
}

static void handle_fault(struct r3u_handler *h, const struct uffd_msg *m, uint64_t t0)
{
    struct r3u_region *r = h->r;
    uint64_t addr = m->arg.pagefault.address & ~(uint64_t)(r->pagesz - 1);
    uint64_t base = (uintptr_t)r->r.base;
    atomic_fetch_add_explicit(&r->faults, 1, memory_order_relaxed);
    if (addr < base || addr >= base + r->maplen) {
        /* Region memory the program moved away (mremap): r3 has no bytes
         * for it there; SIGBUS, never a hang or wrong data. */
        if (atomic_exchange(&r->reported, 1) == 0 && r->hooks.on_error)
            r->hooks.on_error(r->hooks.arg, &r->r, -EFAULT, "uffd: a fault outside the region"
                              " (memory moved away by mremap): the thread gets SIGBUS");
        struct uffdio_poison p = { .range = { .start = addr, .len = r->pagesz } };
        if (!r->poison || ioctl(r->uffd, UFFDIO_POISON, &p) < 0) {
            uint32_t ptid = m->arg.pagefault.feat.ptid;
            if (r->thread_id && ptid)
                syscall(SYS_tgkill, getpid(), (pid_t)ptid, SIGBUS);
            else
                kill(getpid(), SIGBUS);
        }
        return;
    }
    uint64_t off = addr - base, idx = off >> r->chunk_shift;
    if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
        /* Not expected with WP_ASYNC; never leave a thread waiting. */
        struct uffdio_writeprotect wp = { .range = { .start = addr, .len = r->pagesz }, .mode = 0 };
        ioctl(r->uffd, UFFDIO_WRITEPROTECT, &wp);
        return;
    }
    if (r->seen)
        r3u_access_note(r, idx);
    atomic_store_explicit(&r->last_write, (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0,
                          memory_order_relaxed);
    h->t0 = t0;
    h->waited = false;
    /* Sequential: this fault is in the chunk after the previous fault's. */
    uint64_t prev = atomic_exchange_explicit(&r->last_fault, idx, memory_order_relaxed);
    h->seq = prev + 1 == idx;
    uint8_t st;
    unsigned spins = 0;
again:
    st = atomic_load_explicit(&r->filled[idx], memory_order_acquire);
    for (unsigned tries = 1; st == R3U_EVICTING; tries++) {
        /* Being taken out: wait for its bytes to reach the source, then
         * fault it back in (events are read meanwhile). */
        r3u_layout_wait(r, tries);
        st = atomic_load_explicit(&r->filled[idx], memory_order_acquire);
    }
    if (st == R3U_INSTALLING || st == R3U_ZEROING) {
        /* Being installed right now: the installer wakes the whole chunk.
         * The reader caught up with the fills: keep ahead of it. (Not
         * timed: the wake is not ours.) */
        h->waited = true;
        fill_ahead(h, idx);
        return;
    } else if (st == R3U_FILLED) {
        /* A missing page in a filled chunk was removed (MADV_DONTNEED or
         * reclaimed MADV_FREE): it reads as zeros, and the zeros are data.
         * The chunk is held ZEROING meanwhile: the evictor must not move it
         * out under the zero page (the page would stay, zeros, over the
         * written-back bytes). Other faults on it are woken at the end. */
        if (!atomic_compare_exchange_strong(&r->filled[idx], &st, R3U_ZEROING))
            goto again;
        bool installed = false;
        int rc = r3u_install_zero(r, off, &installed);
        atomic_store_explicit(&r->filled[idx], R3U_FILLED, memory_order_release);
        r3u_wake_chunk(r, idx);
        if (rc < 0)
            fail_fault(r, off, idx, rc, m->arg.pagefault.feat.ptid);
        else if (installed)
            r3u_bit_set(r->pdirty, idx);
        else {
            /* Stale: the page came in meanwhile (readahead beat the message);
             * its thread was woken by that fill, so this one is not timed. */
            h->waited = true;
            fill_ahead(h, idx);
            return;
        }
    } else if (r3_cache_is_fetching(r->p->cache, idx)) {
        /* Another thread fetches it: wait here for its install to start,
         * reading events, not asleep in the cache (its UFFDIO_COPY may wait
         * for an event only a handler can read: a REMOVE, say). */
        r3u_layout_wait(r, ++spins);
        goto again;
    } else {
        r3u_evict_wait_room(r);
        h->fault_off = off;
        h->first_done = false;
        if (r->first_page && !r3u_zero_chunk(r, idx))
            first_page(h, off, idx);    /* (zeros: one ioctl maps the chunk) */
        int rc = r3_cache_fetch(r->p->cache, idx, R3_FETCH_FAULT);
        h->fault_off = UINT64_MAX;
        if (rc == 0 && !atomic_load_explicit(&r->filled[idx], memory_order_acquire) &&
            r3_cache_is_local(r->p->cache, idx))
            /* (not local: filled, which woke the thread, and evicted since) */
            rc = r3_error(-EIO, "uffd: chunk %llu is local in the cache but was never installed",
                          (unsigned long long)idx);
        if (rc < 0 && h->first_done) {
            /* The chunk never came: undo "installing" and wake whoever
             * waits on its other pages, so they fault again and see it. */
            uint8_t inst = R3U_INSTALLING;
            if (atomic_compare_exchange_strong(&r->filled[idx], &inst, 0))
                atomic_fetch_sub(&r->resident, 1);
            struct uffdio_range w = { .start = base + (idx << r->chunk_shift), .len = r->r.chunk };
            ioctl(r->uffd, UFFDIO_WAKE, &w);
        }
        h->first_done = false;
        if (rc < 0)
            fail_fault(r, off, idx, rc, m->arg.pagefault.feat.ptid);
        r3u_fault_woken(h);
        if (rc == 0)
            fill_ahead(h, idx);
        return;
    }
    r3u_fault_woken(h);
}

static void mark_range(struct r3u_region *r, _Atomic uint64_t *map, uint64_t start, uint64_t end,
                       bool dirty)
{
    uint64_t base = (uintptr_t)r->r.base;
    if (end <= base || start >= base + r->maplen)
        return;
    if (start < base)
        start = base;
    if (end > base + r->maplen)
        end = base + r->maplen;
    uint64_t p0 = (start - base) >> r->page_shift, p1 = (end - base + r->pagesz - 1) >> r->page_shift;
    for (uint64_t pg = p0; pg < p1; pg++)
        r3u_bit_set(map, pg);
    if (dirty) {
        /* Marked for the push stage by the next collect (the handler does
         * not call into the push stage: a pusher may be faulting on us). */
        uint64_t c0 = (p0 << r->page_shift) >> r->chunk_shift;
        uint64_t c1 = ((p1 << r->page_shift) + r->r.chunk - 1) >> r->chunk_shift;
        for (uint64_t c = c0; c < c1 && c < r->nchunks; c++)
            r3u_bit_set(r->pdirty, c);
    }
}

static void handle_event(struct r3u_region *r, const struct uffd_msg *m)
{
    switch (m->event) {
    case UFFD_EVENT_REMOVE:
        mark_range(r, r->zpage, m->arg.remove.start, m->arg.remove.end, true);
        r3u_dropped(r, m->arg.remove.start, m->arg.remove.end);
        break;
    case UFFD_EVENT_UNMAP:
        atomic_store(&r->any_gone, true);
        mark_range(r, r->gone, m->arg.remove.start, m->arg.remove.end, false);
        break;
    case UFFD_EVENT_REMAP:
        /* Pages moved out of the region: r3 stops tracking them there (a
         * fault at their new place gets SIGBUS, see handle_fault). */
        atomic_store(&r->any_gone, true);
        mark_range(r, r->gone, m->arg.remap.from, m->arg.remap.from + m->arg.remap.len, false);
        break;
    case UFFD_EVENT_FORK:
        r3u_fork_event(r, (int)m->arg.fork.ufd);
        break;
    default:
        break;
    }
}

/* Read what is pending into the handler's queue (non-blocking); events are
 * handled at once, faults wait their turn. Returns messages read. */
static size_t read_more(struct r3u_handler *h)
{
    struct r3u_region *r = h->r;
    size_t room = sizeof h->q / sizeof h->q[0] - h->qlen;
    if (room > R3U_BATCH)
        room = R3U_BATCH;
    if (!room)
        return 0;
    /* Counted from before the read: the thread that made the event (an
     * munmap) goes on once the message is read, before it is handled. */
    atomic_fetch_add(&r->ev_busy, 1);
    ssize_t n = read(r->uffd, &h->q[h->qlen], room * sizeof h->q[0]);
    if (n <= 0) {
        atomic_fetch_sub(&r->ev_busy, 1);
        return 0;
    }
    size_t k = (size_t)n / sizeof h->q[0];
    for (size_t i = h->qlen; i < h->qlen + k; i++)
        if (h->q[i].event != UFFD_EVENT_PAGEFAULT) {
            handle_event(r, &h->q[i]);
            h->q[i].event = 0;          /* done */
        }
    atomic_fetch_sub(&r->ev_busy, 1);
    h->qlen += k;
    return k;
}

void r3u_events_settle(struct r3u_region *r)
{
    if (r3u_in_handler(r))
        return;                       /* (its own events are handled) */
    for (unsigned tries = 1; atomic_load(&r->ev_busy) > 0; tries++)
        r3u_layout_wait(r, tries);
}

bool r3u_in_handler(struct r3u_region *r)
{
    return tl_handler && tl_handler->r == r;
}

struct r3u_handler *r3u_current(struct r3u_region *r)
{
    return tl_handler && tl_handler->r == r && tl_handler->fault_off != UINT64_MAX ? tl_handler : NULL;
}

void r3u_fault_woken(struct r3u_handler *h)
{
    if (h->waited)
        return;
    h->waited = true;
    uint64_t dt = r3_now_ns() - h->t0;
    atomic_fetch_add_explicit(&h->r->wait_hist[hist_bucket(dt)], 1, memory_order_relaxed);
}

/* Is a message waiting on the uffd? (readahead yields to faults) */
static bool pending(struct r3u_region *r)
{
    struct pollfd pf = { .fd = r->uffd, .events = POLLIN };
    return poll(&pf, 1, 0) > 0;
}

/* A sequential fault (the chunk before is filled): fill the next chunks
 * too. With one handler, stop when a new message arrives (faults first);
 * with more, the others serve faults meanwhile. */
static void fill_ahead(struct r3u_handler *h, uint64_t idx)
{
    struct r3u_region *r = h->r;
    if (!r->readahead || !h->seq)
        return;
    h->ra = true;
    for (uint64_t j = idx + 1; j <= idx + r->readahead && j < r->nchunks; j++) {
        if (r->max_resident && atomic_load(&r->resident) >= r->evict_high)
            break;                    /* no read-ahead into a full budget */
        /* Each chunk is read ahead by one handler only, so several handlers
         * fill disjoint chunks in parallel instead of waiting on each other. */
        if (atomic_load_explicit(&r->filled[j], memory_order_acquire) ||
            r3u_bit(r->ahead, j) || r3_cache_is_local(r->p->cache, j) ||
            r3_cache_is_fetching(r->p->cache, j))
            continue;
        if (atomic_fetch_or(&r->ahead[j >> 6], UINT64_C(1) << (j & 63)) & (UINT64_C(1) << (j & 63)))
            continue;
        if ((r->nh == 1 && pending(r)) || r3_cache_fetch(r->p->cache, j, R3_FETCH_PULL) < 0)
            break;
    }
    h->ra = false;
}

void r3u_layout_wait(struct r3u_region *r, unsigned tries)
{
    struct r3u_handler *h = tl_handler;
    if (h && h->r == r)
        read_more(h);
    if (tries % 256 == 0) {
        struct timespec ts = { 0, 50000 };
        nanosleep(&ts, NULL);         /* now and then, really step aside */
    } else {
        sched_yield();
    }
}

static void *handler_main(void *arg)
{
    struct r3u_handler *h = arg;
    struct r3u_region *r = h->r;
    tl_handler = h;
    int ep = h->ep;
    while (!atomic_load_explicit(&r->stopping, memory_order_acquire)) {
        struct epoll_event ev[2];
        int n = epoll_wait(ep, ev, 2, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        bool stop = false, in = false;
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u32 == 1)
                stop = true;
            else
                in = true;
        }
        if (stop)
            break;
        if (!in)
            continue;
        /* Drain: keep reading while messages come, then sleep again. */
        for (;;) {
            h->qlen = 0;
            if (!read_more(h))
                break;
            uint64_t t0 = r3_now_ns();
            /* q may grow while we work (read_more from a fill meeting EAGAIN). */
            for (size_t i = 0; i < h->qlen; i++)
                if (h->q[i].event == UFFD_EVENT_PAGEFAULT)
                    handle_fault(h, &h->q[i], t0);
        }
    }
    tl_handler = NULL;
    return NULL;
}

/* One epoll set that every handler waits in: epoll_wait queues its
 * waiters exclusively, so a fault wakes one handler that is waiting, not
 * all of them (a herd costs a fault a context switch on small machines).
 * (One set per handler with EPOLLEXCLUSIVE wakes the first set in the
 * uffd's queue whether its handler waits or is busy filling a chunk: a
 * fault then waited for that fill while another handler slept.) Made
 * before the threads start, so a failure is an error of open, not a
 * handler that silently never serves. */
static int handler_epoll(struct r3u_region *r)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    /* Edge-triggered: each new message wakes one waiting handler (level
     * triggering would wake a second one for every message the first
     * takes); a handler reads until the uffd is empty before it waits
     * again, so no message is left unseen. The stop eventfd stays level
     * triggered: it wakes every handler in turn. */
    struct epoll_event e1 = { .events = EPOLLIN | EPOLLET, .data.u32 = 0 };
    struct epoll_event e2 = { .events = EPOLLIN, .data.u32 = 1 };
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, r->uffd, &e1) < 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, r->stopfd, &e2) < 0) {
        int e = errno;
        if (ep >= 0)
            close(ep);
        return r3_error(-e, "uffd: cannot set up a fault handler's epoll: %s", strerror(e));
    }
    return ep;
}

int r3u_handlers_start(struct r3u_region *r, unsigned n)
{
    r->h = calloc(n, sizeof *r->h);
    if (!r->h)
        return r3_error(-ENOMEM, "uffd: out of memory");
    r->nh = n;
    for (unsigned i = 0; i < n; i++) {
        r->h[i].r = r;
        r->h[i].fault_off = UINT64_MAX;
        r->h[i].ep = -1;
        r->h[i].page = aligned_alloc(r->pagesz, r->pagesz);
        if (!r->h[i].page)
            return r3_error(-ENOMEM, "uffd: out of memory");
        int rc = i ? r->h[0].ep : handler_epoll(r);
        if (rc < 0)
            return rc;
        r->h[i].ep = rc;
        rc = r3_thread_create(&r->h[i].thread, handler_main, &r->h[i]);
        if (rc < 0)
            return rc;
        r->h[i].started = true;
    }
    return 0;
}

void r3u_handlers_stop(struct r3u_region *r)
{
    atomic_store(&r->stopping, true);
    uint64_t one = 1;
    if (write(r->stopfd, &one, sizeof one) < 0) {
        /* eventfd cannot fail here short of EBADF; the flag still stops them */
    }
    for (unsigned i = 0; i < r->nh; i++)
        if (r->h[i].started)
            pthread_join(r->h[i].thread, NULL);
    for (unsigned i = 0; i < r->nh; i++)
        free(r->h[i].page);
    if (r->nh && r->h[0].ep >= 0)
        close(r->h[0].ep);              /* shared by all */
    free(r->h);
    r->h = NULL;
    r->nh = 0;
}
