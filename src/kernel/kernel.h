/* SPDX-License-Identifier: BSD-3-Clause */
/* Kernel helpers shared by the strategies (uffd/, filesync/): opening a
 * userfaultfd with feature negotiation, and the one PAGEMAP_SCAN scanner
 * of written pages. The machine probe is public: include/r3/probe.h.
 * Nothing here assumes a feature: callers ask, the kernel answers. */
#ifndef R3_KERNEL_H
#define R3_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kernel/compat.h"

/* ---- userfaultfd (src/kernel/uffd.c) */

/* Open a raw userfaultfd: userfaultfd(2) first, then /dev/userfaultfd
 * (root-only by default, but it allows kernel-mode faults without
 * vm.unprivileged_userfaultfd). flags: O_CLOEXEC, O_NONBLOCK,
 * UFFD_USER_MODE_ONLY. *via_dev (may be NULL) says which opened it.
 * Returns the fd or -errno (the syscall's errno if both fail). No API
 * handshake is done: the fd is fresh. */
int r3_kernel_uffd_raw(int flags, bool *via_dev);

/* What the kernel offers: one throw-away fd, UFFDIO_API with features 0.
 * 0 or -errno (r3_last_error() says why). */
int r3_kernel_uffd_features(int flags, uint64_t *features, uint64_t *ioctls);

/* Open a userfaultfd (flags as above) and enable the features of `want`
 * the kernel has; `need` (a subset of want) must all be there, else
 * -ENOTSUP with a sentence naming the missing ones. UFFDIO_API enables
 * features once per fd, so this asks on one fd and opens a second with
 * the subset (like the kernel's selftests/mm/uffd-common.c). *got gets
 * the enabled features, *ioctls (may be NULL) the ioctl bitmap.
 * Returns the fd or -errno; r3_last_error() says why. */
int r3_kernel_uffd_open(int flags, uint64_t want, uint64_t need, uint64_t *got,
                        uint64_t *ioctls);

/* ---- written pages (src/kernel/pagemap.c)
 *
 * Over a range registered with userfaultfd in WP mode with
 * UFFD_FEATURE_WP_ASYNC, a write to a protected page only clears its
 * protection; PAGEMAP_SCAN with PAGE_IS_WRITTEN + PM_SCAN_WP_MATCHING lists
 * those pages and protects them again in the same call.
 *
 * The behaviour on the kernel's answers, chosen once for every caller:
 *  - success: the entries are results; the walk goes on from walk_end
 *    (the vector was full, or max_pages) until it reaches the end.
 *  - EINTR, EAGAIN: entries the kernel wrote before the error are results
 *    too (their pages were protected again already: dropping them would
 *    lose writes), so the vector is zeroed before each call and the filled
 *    entries are taken. The walk resumes at the end of the last entry, not
 *    at walk_end (which the kernel sets to the range's end when an error
 *    stopped it early), so nothing between is skipped.
 *  - no progress (an error with no entry, or success with walk_end not
 *    past the start): the layout is changing under the walk (a fault, an
 *    madvise); yield and retry, for at most R3_PM_SCAN_STALL_MS, then
 *    -EAGAIN with a sentence. Never a silent early stop, never a spin.
 *  - any other error: -errno with a sentence. */
#define R3_PM_SCAN_STALL_MS 10000

/* Does PAGEMAP_SCAN exist here (6.7)? One scan of a page, no protection. */
bool r3_kernel_pagemap_scan_works(void);

struct r3_pm_scanner {
    int fd;                       /* /proc/self/pagemap */
    struct page_region *vec;
    size_t cap;                   /* entries in vec */
    bool check_wpasync;           /* PM_SCAN_CHECK_WPASYNC: a page without async WP is an error */
    /* Skip pages mapping the zero page (UFFDIO_ZEROPAGE fills carry no wp
     * bit, yet hold nothing written; a write replaces them by a new page,
     * which is seen). They are neither reported nor protected again. */
    bool skip_zero;
    /* Only pages with something behind them (present or swapped out):
     * missing pages of an anonymous range report "written" (no wp bit) but
     * hold nothing a program wrote (a write maps them). */
    bool mapped_only;
    /* the ioctl; tests replace it to play the kernel's rarer answers */
    long (*ioctl)(int fd, struct pm_scan_arg *a);
    uint64_t retries;             /* no-progress retries so far (for tests and stats) */
    unsigned stall_ms;            /* give up after this long without progress (R3_PM_SCAN_STALL_MS) */
};

/* Open /proc/self/pagemap and a vector of cap entries (0 = 1024). */
int  r3_pm_scanner_open(struct r3_pm_scanner *s, size_t cap);
void r3_pm_scanner_close(struct r3_pm_scanner *s);

/* Report each run of pages written in [start, end) since the last scan,
 * as fn(arg, run_start, run_end) (addresses, end exclusive), and protect
 * them again. 0 or -errno. */
int r3_pm_scan_written(struct r3_pm_scanner *s, uint64_t start, uint64_t end,
                       void (*fn)(void *arg, uint64_t s, uint64_t e), void *arg);

/* Report each run of pages present (mapped in this process's page tables)
 * in [start, end), changing nothing. 0 or -errno. */
int r3_pm_scan_present(struct r3_pm_scanner *s, uint64_t start, uint64_t end,
                       void (*fn)(void *arg, uint64_t s, uint64_t e), void *arg);

/* ---- write tracking of a whole mapping (src/kernel/wptrack.c)
 *
 * A userfaultfd of its own registered WP over [base, base+len) with
 * WP_ASYNC (no fault messages: a write just unprotects), and the scanner
 * above with PM_SCAN_CHECK_WPASYNC. Checked on 6.18 for MAP_SHARED ext4
 * file mappings: works without WP_UNPOPULATED or pre-populating
 * (file-backed uffd-wp uses PTE markers); pages zapped by MADV_DONTNEED
 * keep reporting written. Only writes through this process's page tables
 * are seen (not write(2), not other processes' mappings). */
struct r3_wp_track;
/* Starts clean: everything is protected when it returns. 0 or -errno with
 * a sentence (-ENOTSUP when the kernel lacks WP_ASYNC or PAGEMAP_SCAN). */
int  r3_wp_track_open(void *base, size_t len, struct r3_wp_track **out);
/* The runs written since the last scan (fn as for r3_pm_scan_written). */
int  r3_wp_track_scan(struct r3_wp_track *t, void (*fn)(void *arg, uint64_t s, uint64_t e),
                      void *arg);
void r3_wp_track_close(struct r3_wp_track *t);

#endif
