/* SPDX-License-Identifier: BSD-3-Clause */
/* The one PAGEMAP_SCAN scanner of written pages (see kernel.h for the
 * behaviour on each of the kernel's answers, and why). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"
#include "kernel/kernel.h"

bool r3_kernel_pagemap_scan_works(void)
{
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    long pg = sysconf(_SC_PAGESIZE);
    void *m = mmap(NULL, (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bool ok = false;
    if (m != MAP_FAILED) {
        struct page_region reg;
        struct pm_scan_arg a = {
            .size = sizeof a, .start = (uintptr_t)m, .end = (uintptr_t)m + (uintptr_t)pg,
            .vec = (uintptr_t)&reg, .vec_len = 1, .return_mask = PAGE_IS_PRESENT,
        };
        ok = ioctl(fd, PAGEMAP_SCAN, &a) >= 0;
        munmap(m, (size_t)pg);
    }
    close(fd);
    return ok;
}

static long real_ioctl(int fd, struct pm_scan_arg *a)
{
    return ioctl(fd, PAGEMAP_SCAN, a);
}

int r3_pm_scanner_open(struct r3_pm_scanner *s, size_t cap)
{
    memset(s, 0, sizeof *s);
    s->cap = cap ? cap : 1024;
    s->ioctl = real_ioctl;
    s->stall_ms = R3_PM_SCAN_STALL_MS;
    s->fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (s->fd < 0)
        return r3_error(-errno, "/proc/self/pagemap: %s", strerror(errno));
    s->vec = calloc(s->cap, sizeof *s->vec);
    if (!s->vec) {
        close(s->fd);
        s->fd = -1;
        return r3_error(-ENOMEM, "out of memory for the PAGEMAP_SCAN vector");
    }
    return 0;
}

void r3_pm_scanner_close(struct r3_pm_scanner *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    free(s->vec);
    s->vec = NULL;
}

/* Entries the kernel filled: they are written from vec[0] on, and the
 * vector was zeroed before the call, so the first empty one ends them. */
static size_t filled(const struct r3_pm_scanner *s)
{
    size_t k = 0;
    while (k < s->cap && s->vec[k].end > s->vec[k].start)
        k++;
    return k;
}

/* One walk: written pages (and protect them again), or present ones. */
static int scan(struct r3_pm_scanner *s, bool present, uint64_t start, uint64_t end,
                void (*fn)(void *arg, uint64_t s, uint64_t e), void *arg)
{
    uint64_t stall_since = 0;
    while (start < end) {
        memset(s->vec, 0, s->cap * sizeof *s->vec);
        struct pm_scan_arg a = {
            .size = sizeof a,
            .flags = PM_SCAN_WP_MATCHING | (s->check_wpasync ? PM_SCAN_CHECK_WPASYNC : 0),
            .start = start, .end = end,
            .vec = (uintptr_t)s->vec, .vec_len = s->cap,
            .category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN,
        };
        if (s->skip_zero) {
            a.category_inverted = PAGE_IS_PFNZERO;       /* written and not the zero page */
            a.category_mask = PAGE_IS_WRITTEN | PAGE_IS_PFNZERO;
        }
        if (s->mapped_only)
            a.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
        if (present) {
            a.flags = 0;
            a.category_mask = a.return_mask = PAGE_IS_PRESENT;
            a.category_inverted = a.category_anyof_mask = 0;
        }
        long n = s->ioctl(s->fd, &a);
        int e = n < 0 ? errno : 0;
        if (n < 0 && e != EINTR && e != EAGAIN)
            return r3_error(-e, "PAGEMAP_SCAN of [0x%llx, 0x%llx) failed: %s",
                            (unsigned long long)start, (unsigned long long)end, strerror(e));
        size_t k = n >= 0 ? ((size_t)n < s->cap ? (size_t)n : s->cap) : filled(s);
        for (size_t i = 0; i < k; i++) {
            uint64_t rs = s->vec[i].start, re = s->vec[i].end;
            if (rs < start)
                rs = start;
            if (re > end)
                re = end;
            if (re > rs)
                fn(arg, rs, re);
        }
        uint64_t next = n >= 0 ? a.walk_end : k ? s->vec[k - 1].end : start;
        if (next > start) {
            start = next;
            stall_since = 0;
            continue;
        }
        /* No progress: the layout is changing under the walk. */
        uint64_t now = r3_now_ns();
        if (!stall_since)
            stall_since = now;
        else if (now - stall_since > (uint64_t)s->stall_ms * 1000000u)
            return r3_error(-EAGAIN, "PAGEMAP_SCAN made no progress at 0x%llx for %u ms (%s)",
                            (unsigned long long)start, s->stall_ms,
                            n < 0 ? strerror(e) : "walk_end did not advance");
        s->retries++;
        if (s->retries % 64 == 0) {
            struct timespec ts = { 0, 100000 };
            nanosleep(&ts, NULL);
        } else {
            sched_yield();
        }
    }
    return 0;
}

int r3_pm_scan_written(struct r3_pm_scanner *s, uint64_t start, uint64_t end,
                       void (*fn)(void *arg, uint64_t s, uint64_t e), void *arg)
{
    return scan(s, false, start, end, fn, arg);
}

int r3_pm_scan_present(struct r3_pm_scanner *s, uint64_t start, uint64_t end,
                       void (*fn)(void *arg, uint64_t s, uint64_t e), void *arg)
{
    return scan(s, true, start, end, fn, arg);
}
