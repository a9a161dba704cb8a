/* SPDX-License-Identifier: BSD-3-Clause */
/* Forked children (UFFD_FEATURE_EVENT_FORK). The region's mapping is
 * inherited; the kernel hands the parent a userfaultfd of the child's copy
 * (a FORK message), on which the child's faults arrive. What the child has
 * is what the parent had at the fork: present pages are shared
 * copy-on-write by the kernel; missing pages are served here, by a thread of
 * the parent ("kids" thread), with the bytes of the moment of the fork:
 *  - a chunk the parent had filled: a missing page was removed (zeros);
 *  - any other chunk ("needed"): the source's bytes, which stay the bytes of
 *    the fork until the parent writes that chunk back. So before any write
 *    of chunk c to the source (remote.c), every child that still needs c
 *    gets it installed first (its pre-image), then the write goes on.
 *  - a page the child removed (its own MADV_DONTNEED: a REMOVE message)
 *    reads zeros; a chunk fully installed in the child is no longer needed.
 * The child's writes land in its own pages: nothing of the child is ever
 * written back. A child of a child gets the same service on the fd of its
 * fork; it needs (conservatively) every chunk its parent needed at its own
 * fork. A child that exits or execs is found by an ioctl failing with ESRCH
 * (its memory is gone) and forgotten.
 *
 * The moment of the fork: fork_prepare stops fills into the parent and
 * writes to the source (a gate), waits for those in flight, and fork_done
 * reopens it once the FORK message was handled; so the filled bitmap read
 * when the message is handled is exactly what the child's page tables got.
 * A fork not announced by fork_prepare (a raw clone) gets the same service
 * without that guarantee. For a child of a child the parent process cannot
 * hold the gate: a chunk the top process writes back while a child forks
 * may reach the grandchild as the newer bytes (a narrow window; documented). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"
#include "uffd/uffd.h"

struct r3u_kid {
    struct r3u_kid *next;
    int ufd;
    _Atomic int refs;
    _Atomic bool dead;
    _Atomic uint64_t *need;       /* per chunk: still served from the source's bytes */
    uint64_t *need0;              /* need at this child's fork (for its children) */
    _Atomic uint64_t *zpage;      /* per page: reads zeros */
    struct uffd_msg q[R3U_BATCH];
    size_t qlen;
};

static void kid_unref(struct r3u_kid *k)
{
    if (atomic_fetch_sub(&k->refs, 1) != 1)
        return;
    if (k->ufd >= 0)
        close(k->ufd);
    free((void *)k->need);
    free(k->need0);
    free((void *)k->zpage);
    free(k);
}

void r3u_gate_enter(struct r3u_region *r)
{
    for (unsigned tries = 1;; tries++) {
        if (!atomic_load(&r->forking)) {
            atomic_fetch_add(&r->inflight, 1);
            if (!atomic_load(&r->forking))
                return;
            atomic_fetch_sub(&r->inflight, 1);
        }
        /* A handler keeps reading messages meanwhile: the FORK message
         * must be read for the fork to end. */
        r3u_layout_wait(r, tries);
    }
}

void r3u_gate_leave(struct r3u_region *r)
{
    atomic_fetch_sub(&r->inflight, 1);
}

void r3u_fork_prepare(struct r3_region *rr)
{
    struct r3u_region *r = (struct r3u_region *)rr;
    if (!r->kids_ep_ok)
        return;
    r->forks_before = atomic_load(&r->forks_seen);
    atomic_store(&r->forking, true);
    while (atomic_load(&r->inflight) > 0) {
        struct timespec ts = { 0, 20000 };
        nanosleep(&ts, NULL);
    }
}

void r3u_fork_done(struct r3_region *rr)
{
    struct r3u_region *r = (struct r3u_region *)rr;
    if (!r->kids_ep_ok)
        return;
    /* The FORK message was read before fork() returned; wait (briefly) for
     * its handler to have registered the child. A failed fork sent none. */
    uint64_t t0 = r3_now_ns();
    while (atomic_load(&r->forks_seen) == r->forks_before && r3_now_ns() - t0 < 200000000u) {
        struct timespec ts = { 0, 20000 };
        nanosleep(&ts, NULL);
    }
    atomic_store(&r->forking, false);
}

static struct r3u_kid *kid_new(struct r3u_region *r, int ufd)
{
    uint64_t cw = (r->nchunks + 63) / 64, pw = (r->npages + 63) / 64;
    struct r3u_kid *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->ufd = ufd;
    atomic_init(&k->refs, 1);
    k->need = calloc(cw, 8);
    k->need0 = calloc(cw, 8);
    k->zpage = calloc(pw, 8);
    if (!k->need || !k->need0 || !k->zpage) {
        k->ufd = -1;
        kid_unref(k);
        return NULL;
    }
    return k;
}

static void kid_add(struct r3u_region *r, struct r3u_kid *k)
{
    int fl = fcntl(k->ufd, F_GETFL);
    if (fl >= 0)
        fcntl(k->ufd, F_SETFL, fl | O_NONBLOCK);
    fcntl(k->ufd, F_SETFD, FD_CLOEXEC);
    pthread_mutex_lock(&r->kids_lock);
    k->next = r->kids;
    r->kids = k;
    r->nkids++;
    pthread_mutex_unlock(&r->kids_lock);
    struct epoll_event e = { .events = EPOLLIN, .data.ptr = k };
    if (epoll_ctl(r->kids_ep, EPOLL_CTL_ADD, k->ufd, &e) < 0)
        atomic_store(&k->dead, true);   /* unserved: its faults would hang; dropped below */
    uint64_t one = 1;
    if (write(r->kids_wake, &one, sizeof one) < 0) { /* the loop polls anyway */ }
}

/* A FORK message on the parent's own userfaultfd (a handler thread). */
void r3u_fork_event(struct r3u_region *r, int ufd)
{
    struct r3u_kid *k = r->kids_ep_ok ? kid_new(r, ufd) : NULL;
    if (!k) {
        /* Cannot serve it: closing the fd unregisters the child's copy,
         * whose missing pages would then read zeros. Say so. */
        close(ufd);
        if (r->hooks.on_error)
            r->hooks.on_error(r->hooks.arg, &r->r, -ENOMEM, "uffd: a forked child cannot be"
                              " served (out of memory): it reads zeros where the region had"
                              " not been filled");
        atomic_fetch_add(&r->forks_seen, 1);
        return;
    }
    for (uint64_t c = 0; c < r->nchunks; c++) {
        uint8_t st = atomic_load_explicit(&r->filled[c], memory_order_acquire);
        if (st != R3U_FILLED && st != R3U_ZEROING)   /* (zeroing: filled, the child has it) */
            k->need0[c >> 6] |= UINT64_C(1) << (c & 63);
    }
    for (uint64_t w = 0; w < (r->nchunks + 63) / 64; w++)
        atomic_store(&k->need[w], k->need0[w]);
    for (uint64_t w = 0; w < (r->npages + 63) / 64; w++)
        atomic_store(&k->zpage[w], atomic_load(&r->zpage[w]));
    kid_add(r, k);
    atomic_fetch_add(&r->forks_seen, 1);
}

/* Install len bytes at region offset off into child k; pages already
 * there count as done. 0, or -ESRCH when the child is gone. */
static int kid_copy(struct r3u_region *r, struct r3u_kid *k, uint64_t off, const uint8_t *src,
                    size_t len, bool in_kids_thread)
{
    size_t done = 0;
    unsigned again = 0;
    while (done < len) {
        struct uffdio_copy c = {
            .dst = (uintptr_t)r->r.base + off + done, .src = (uintptr_t)(src + done),
            .len = len - done, .mode = 0,
        };
        if (ioctl(k->ufd, UFFDIO_COPY, &c) == 0)
            return 0;
        int e = errno;
        if (c.copy > 0) {
            done += (size_t)c.copy;
            continue;
        }
        if (e == EEXIST || e == ENOENT) {
            struct uffdio_range w = { .start = (uintptr_t)r->r.base + off + done, .len = r->pagesz };
            ioctl(k->ufd, UFFDIO_WAKE, &w);
            done += r->pagesz;
            continue;
        }
        if (e == ESRCH) {
            atomic_store(&k->dead, true);
            return -ESRCH;
        }
        if (e == EAGAIN) {
            /* The child's layout is changing: its message is read by the
             * kids thread (which, when it is us, reads it here). */
            if (in_kids_thread)
                r3u_kid_read(r, k);
            if (again > 20000)
                return r3_error(-EAGAIN, "uffd: a forked child's address space kept changing"
                                " while filling offset %llu", (unsigned long long)(off + done));
            struct timespec ts = { 0, (again++ % 64) ? 20000 : 1000000 };
            nanosleep(&ts, NULL);
            continue;
        }
        return r3_error(-e, "uffd: filling a forked child at offset %llu: %s",
                        (unsigned long long)(off + done), strerror(e));
    }
    return 0;
}

/* Chunk c of child k as it was at the fork: buf holds the source's bytes
 * (len of them, zero-padded to the chunk); removed pages get zeros. */
static int kid_fill(struct r3u_region *r, struct r3u_kid *k, uint64_t c, const uint8_t *buf,
                    bool in_kids_thread)
{
    uint64_t off = c << r->chunk_shift;
    uint64_t p0 = off >> r->page_shift, np = r->r.chunk >> r->page_shift;
    int rc = 0;
    for (uint64_t i = 0; i < np && rc == 0;) {
        bool z = r3u_bit(k->zpage, p0 + i);
        uint64_t j = i + 1;
        while (j < np && r3u_bit(k->zpage, p0 + j) == z)
            j++;
        rc = kid_copy(r, k, off + (i << r->page_shift), z ? r->zeros : buf + (i << r->page_shift),
                      (j - i) << r->page_shift, in_kids_thread);
        i = j;
    }
    if (rc == 0)
        r3u_bit_clear(k->need, c);
    return rc;
}

/* The source's bytes of chunk c, zero-padded (buf holds one chunk). */
static int read_chunk(struct r3u_region *r, uint64_t c, uint8_t *buf)
{
    uint64_t off = c << r->chunk_shift;
    size_t len = r->r.chunk;
    memset(buf, 0, len);
    if (!r->inner)
        return r3_error(-EIO, "uffd: the source is closed");
    if (off >= r->remote_size)
        return 0;
    if (len > r->remote_size - off)
        len = (size_t)(r->remote_size - off);
    return r3_source_read(r->inner, buf, len, off);
}

int r3u_fork_preserve(struct r3u_region *r, uint64_t c0, uint64_t c1)
{
    if (!atomic_load_explicit(&r->nkids, memory_order_acquire))
        return 0;
    for (uint64_t c = c0; c <= c1 && c < r->nchunks; c++) {
        struct r3u_kid *list[64];
        size_t n = 0;
        pthread_mutex_lock(&r->kids_lock);
        for (struct r3u_kid *k = r->kids; k; k = k->next)
            if (!atomic_load(&k->dead) && r3u_bit(k->need, c)) {
                if (n == sizeof list / sizeof list[0])
                    break;
                atomic_fetch_add(&k->refs, 1);
                list[n++] = k;
            }
        pthread_mutex_unlock(&r->kids_lock);
        if (!n)
            continue;
        uint8_t *buf = malloc(r->r.chunk);
        int rc = buf ? read_chunk(r, c, buf) : r3_error(-ENOMEM, "uffd: out of memory");
        for (size_t i = 0; i < n; i++) {
            if (rc == 0) {
                int k_rc = kid_fill(r, list[i], c, buf, false);
                if (k_rc < 0 && k_rc != -ESRCH)
                    rc = k_rc;
            }
            kid_unref(list[i]);
        }
        free(buf);
        if (rc < 0)
            return r3_error_prefix(rc, "keeping a forked child's copy before writing back: ");
        if (n == sizeof list / sizeof list[0])
            c--;                      /* more children need it: again */
    }
    return 0;
}

static void kid_fault(struct r3u_region *r, struct r3u_kid *k, const struct uffd_msg *m)
{
    uint64_t addr = m->arg.pagefault.address & ~(uint64_t)(r->pagesz - 1);
    uint64_t base = (uintptr_t)r->r.base;
    if (addr < base || addr >= base + r->maplen || (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
        struct uffdio_range w = { .start = addr, .len = r->pagesz };
        ioctl(k->ufd, UFFDIO_WAKE, &w);
        return;
    }
    uint64_t off = addr - base, c = off >> r->chunk_shift;
    atomic_fetch_add_explicit(&r->kid_faults, 1, memory_order_relaxed);
    if (r3u_bit(k->need, c)) {
        int rc = read_chunk(r, c, r->kid_buf);
        if (rc == 0)
            rc = kid_fill(r, k, c, r->kid_buf, true);
        if (rc < 0 && rc != -ESRCH) {
            /* The child's thread gets SIGBUS (where the kernel can), never
             * a hang or made-up bytes. */
            if (atomic_exchange(&r->reported, 1) == 0 && r->hooks.on_error)
                r->hooks.on_error(r->hooks.arg, &r->r, rc, r3_last_error());
            struct uffdio_poison p = { .range = { .start = addr, .len = r->pagesz } };
            if (r->poison)
                ioctl(k->ufd, UFFDIO_POISON, &p);
        }
    } else {
        kid_copy(r, k, off, r->zeros, r->pagesz, true);   /* removed by the child: zeros */
    }
    struct uffdio_range w = { .start = addr, .len = r->pagesz };
    ioctl(k->ufd, UFFDIO_WAKE, &w);
}

static void kid_event(struct r3u_region *r, struct r3u_kid *k, const struct uffd_msg *m)
{
    uint64_t base = (uintptr_t)r->r.base;
    if (m->event == UFFD_EVENT_REMOVE) {
        uint64_t s = m->arg.remove.start, e = m->arg.remove.end;
        if (e <= base || s >= base + r->maplen)
            return;
        if (s < base)
            s = base;
        if (e > base + r->maplen)
            e = base + r->maplen;
        for (uint64_t pg = (s - base) >> r->page_shift; pg < (e - base + r->pagesz - 1) >> r->page_shift; pg++)
            r3u_bit_set(k->zpage, pg);
    } else if (m->event == UFFD_EVENT_FORK) {
        /* A child of this child: it needs what this child needed at its
         * own fork (conservative: installs into pages it has are no-ops). */
        struct r3u_kid *g = kid_new(r, (int)m->arg.fork.ufd);
        if (!g) {
            close((int)m->arg.fork.ufd);
            return;
        }
        memcpy(g->need0, k->need0, (r->nchunks + 63) / 64 * 8);
        for (uint64_t w = 0; w < (r->nchunks + 63) / 64; w++)
            atomic_store(&g->need[w], g->need0[w]);
        for (uint64_t w = 0; w < (r->npages + 63) / 64; w++)
            atomic_store(&g->zpage[w], atomic_load(&k->zpage[w]));
        kid_add(r, g);
    }
    /* UNMAP, REMAP: the child's own layout; its faults there are not ours. */
}

void r3u_kid_read(struct r3u_region *r, struct r3u_kid *k)
{
    size_t room = sizeof k->q / sizeof k->q[0] - k->qlen;
    if (!room)
        return;
    ssize_t n = read(k->ufd, &k->q[k->qlen], room * sizeof k->q[0]);
    if (n <= 0)
        return;
    size_t got = (size_t)n / sizeof k->q[0];
    for (size_t i = k->qlen; i < k->qlen + got; i++)
        if (k->q[i].event != UFFD_EVENT_PAGEFAULT) {
            kid_event(r, k, &k->q[i]);
            k->q[i].event = 0;
        }
    k->qlen += got;
}

/* Is the child still there? (an ioctl on a gone process fails with ESRCH) */
static bool kid_alive(struct r3u_region *r, struct r3u_kid *k)
{
    if (atomic_load(&k->dead))
        return false;
    struct uffdio_writeprotect wp = {
        .range = { .start = (uintptr_t)r->r.base, .len = r->pagesz }, .mode = 0,
    };
    if (ioctl(k->ufd, UFFDIO_WRITEPROTECT, &wp) < 0 && errno == ESRCH) {
        atomic_store(&k->dead, true);
        return false;
    }
    return true;
}

static void reap(struct r3u_region *r, bool probe)
{
    pthread_mutex_lock(&r->kids_lock);
    for (struct r3u_kid **pp = &r->kids; *pp;) {
        struct r3u_kid *k = *pp;
        if ((probe && !kid_alive(r, k)) || atomic_load(&k->dead)) {
            *pp = k->next;
            r->nkids--;
            epoll_ctl(r->kids_ep, EPOLL_CTL_DEL, k->ufd, NULL);
            kid_unref(k);
        } else {
            pp = &k->next;
        }
    }
    pthread_mutex_unlock(&r->kids_lock);
}

static void *kids_main(void *arg)
{
    struct r3u_region *r = arg;
    uint64_t last_probe = r3_now_ns();
    while (!atomic_load(&r->kids_stop)) {
        struct epoll_event ev[16];
        int n = epoll_wait(r->kids_ep, ev, 16, atomic_load(&r->nkids) ? 100 : -1);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++) {
            if (!ev[i].data.ptr) {
                uint64_t v;
                if (read(r->kids_wake, &v, sizeof v) < 0) { /* drained */ }
                continue;
            }
            struct r3u_kid *k = ev[i].data.ptr;
            if (atomic_load(&k->dead))
                continue;
            /* the kid stays listed while we use it: only this thread unlists */
            r3u_kid_read(r, k);
            for (size_t j = 0; j < k->qlen; j++)
                if (k->q[j].event == UFFD_EVENT_PAGEFAULT && !atomic_load(&k->dead))
                    kid_fault(r, k, &k->q[j]);
            k->qlen = 0;
        }
        uint64_t now = r3_now_ns();
        if (now - last_probe > 100000000u) {
            last_probe = now;
            reap(r, true);
        } else {
            reap(r, false);
        }
    }
    return NULL;
}

int r3u_kids_start(struct r3u_region *r)
{
    pthread_mutex_init(&r->kids_lock, NULL);
    r->kids_ep = epoll_create1(EPOLL_CLOEXEC);
    r->kids_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->kid_buf = malloc(r->r.chunk);
    struct epoll_event e = { .events = EPOLLIN, .data.ptr = NULL };
    if (r->kids_ep < 0 || r->kids_wake < 0 || !r->kid_buf ||
        epoll_ctl(r->kids_ep, EPOLL_CTL_ADD, r->kids_wake, &e) < 0)
        return r3_error(-ENOMEM, "uffd: cannot set up the service of forked children");
    int rc = r3_thread_create(&r->kids_thread, kids_main, r);
    if (rc < 0)
        return rc;
    r->kids_started = true;
    r->kids_ep_ok = true;
    return 0;
}

/* Children still running when the region closes: once r3's threads are
 * gone their missing pages would read zeros, so each gets, first, every
 * chunk it still needs that holds anything but zeros. */
void r3u_kids_stop(struct r3u_region *r)
{
    if (r->kids_started) {
        atomic_store(&r->kids_stop, true);
        uint64_t one = 1;
        if (write(r->kids_wake, &one, sizeof one) < 0) { /* stop flag seen on timeout */ }
        pthread_join(r->kids_thread, NULL);
        r->kids_started = false;
        reap(r, true);
        for (struct r3u_kid *k = r->kids; k; k = k->next) {
            for (uint64_t c = 0; c < r->nchunks && !atomic_load(&k->dead); c++) {
                if (!r3u_bit(k->need, c) || read_chunk(r, c, r->kid_buf) < 0)
                    continue;
                bool zero = true;
                for (size_t i = 0; i < r->r.chunk && zero; i += 8)
                    zero = *(const uint64_t *)(r->kid_buf + i) == 0;
                if (!zero)
                    kid_fill(r, k, c, r->kid_buf, false);
            }
        }
    }
    while (r->kids) {
        struct r3u_kid *k = r->kids;
        r->kids = k->next;
        kid_unref(k);
    }
    r->nkids = 0;
    if (r->kids_ep >= 0)
        close(r->kids_ep);
    if (r->kids_wake >= 0)
        close(r->kids_wake);
    r->kids_ep = r->kids_wake = -1;
    free(r->kid_buf);
    r->kid_buf = NULL;
}

unsigned r3u_children(struct r3_region *rr)
{
    struct r3u_region *r = (struct r3u_region *)rr;
    if (!r->kids_ep_ok)
        return 0;
    unsigned n = 0;
    pthread_mutex_lock(&r->kids_lock);   /* the kids thread alone unlists them */
    for (struct r3u_kid *k = r->kids; k; k = k->next)
        n += kid_alive(r, k);
    pthread_mutex_unlock(&r->kids_lock);
    return n;
}
