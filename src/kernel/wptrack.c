/* SPDX-License-Identifier: BSD-3-Clause */
/* Write tracking of a whole mapping by WP_ASYNC + PAGEMAP_SCAN (kernel.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include "internal.h"
#include "kernel/kernel.h"

struct r3_wp_track {
    int uffd;
    uintptr_t base;
    size_t len;
    struct r3_pm_scanner scan;
};

static void ignore(void *arg, uint64_t s, uint64_t e)
{
    (void)arg, (void)s, (void)e;
}

int r3_wp_track_open(void *base, size_t len, struct r3_wp_track **out)
{
    *out = NULL;
    struct r3_wp_track *t = calloc(1, sizeof *t);
    if (!t)
        return r3_error(-ENOMEM, "out of memory");
    t->base = (uintptr_t)base;
    t->len = len;
    t->scan.fd = -1;
    /* A PMD-mapped large folio (ext4 has them) loses its PTE-level state
     * when a write splits it: the whole 2 MiB would then read as written.
     * Keep the mapping at page granularity and drop existing PMDs (for a
     * shared file mapping MADV_DONTNEED only unmaps; the data stays). */
    madvise(base, len, MADV_NOHUGEPAGE);
    madvise(base, len, MADV_DONTNEED);
    /* Writes from user space are all we track: user-mode-only faults
     * suffice and need no privilege; fall back to a full fd. */
    uint64_t got;
    t->uffd = r3_kernel_uffd_open(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY,
                                  UFFD_FEATURE_WP_ASYNC, UFFD_FEATURE_WP_ASYNC, &got, NULL);
    if (t->uffd < 0 && t->uffd != -ENOTSUP)
        t->uffd = r3_kernel_uffd_open(O_CLOEXEC | O_NONBLOCK, UFFD_FEATURE_WP_ASYNC,
                                      UFFD_FEATURE_WP_ASYNC, &got, NULL);
    int rc = 0;
    if (t->uffd < 0) {
        rc = t->uffd;
        if (rc == -ENOTSUP)
            r3_error(rc, "userfaultfd has no WP_ASYNC here (Linux < 6.7)");
        goto fail;
    }
    struct uffdio_register reg = { .range = { t->base, len }, .mode = UFFDIO_REGISTER_MODE_WP };
    if (ioctl(t->uffd, UFFDIO_REGISTER, &reg) < 0) {
        rc = r3_error(-errno, "userfaultfd: cannot register the mapping for write-protection: %s",
                      strerror(errno));
        goto fail;
    }
    if ((rc = r3_pm_scanner_open(&t->scan, 1024)) < 0)
        goto fail;
    t->scan.check_wpasync = true;
    /* protect everything: clean from now on */
    if ((rc = r3_pm_scan_written(&t->scan, t->base, t->base + len, ignore, NULL)) < 0) {
        if (rc == -ENOTTY || rc == -EINVAL)
            rc = r3_error(-ENOTSUP, "PAGEMAP_SCAN is not supported here (Linux < 6.7): %s",
                          r3_last_error());
        goto fail;
    }
    *out = t;
    return 0;
fail:
    r3_wp_track_close(t);
    return rc;
}

int r3_wp_track_scan(struct r3_wp_track *t, void (*fn)(void *arg, uint64_t s, uint64_t e), void *arg)
{
    return r3_pm_scan_written(&t->scan, t->base, t->base + t->len, fn, arg);
}

void r3_wp_track_close(struct r3_wp_track *t)
{
    if (!t)
        return;
    if (t->uffd >= 0) {
        struct uffdio_range r = { t->base, t->len };
        ioctl(t->uffd, UFFDIO_UNREGISTER, &r);
        close(t->uffd);
    }
    r3_pm_scanner_close(&t->scan);
    free(t);
}
