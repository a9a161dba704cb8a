/* SPDX-License-Identifier: BSD-3-Clause */
/* Skip a test when the kernel lacks what it needs, asking the library's
 * probe (the same one `r3run --probe` prints), never guessing: exit 77, the
 * automake code for "skipped", with a line that says what is missing.
 * Only for kernel features; a missing tool or server is a failure. */
#ifndef R3_TESTS_COMMON_REQUIRES_H
#define R3_TESTS_COMMON_REQUIRES_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <r3/r3.h>

/* The features a test may require:
 *   uffd          userfaultfd with faults from the kernel (the syscall or /dev/userfaultfd)
 *   uffd-wp       ... and write-protect (UFFDIO_REGISTER_MODE_WP)
 *   wp-async      ... and UFFD_FEATURE_WP_ASYNC (6.7)
 *   poison        ... and UFFDIO_POISON (6.6)
 *   pagemap-scan  the PAGEMAP_SCAN ioctl (6.7)
 *   fuse          /dev/fuse opens
 *   nbd           /dev/nbdN devices exist
 * 1 with a reason in why[] if the feature is absent, 0 if present, -1 if
 * the name is unknown (a mistake in the test, not a skip). */
static inline int r3t_missing(const char *feature, char *why, size_t n)
{
    struct r3_probe p;
    if (r3_probe(&p, NULL) < 0) {
        snprintf(why, n, "the probe failed: %s", r3_last_error());
        return 1;
    }
    bool uffd = p.uffd_syscall || p.uffd_dev;
    const char *lack = NULL;
    if (strcmp(feature, "uffd") == 0)
        lack = uffd ? NULL : "userfaultfd with kernel-mode faults";
    else if (strcmp(feature, "uffd-wp") == 0)
        lack = uffd && p.wp ? NULL : "userfaultfd write-protect";
    else if (strcmp(feature, "wp-async") == 0)
        lack = uffd && p.wp_async ? NULL : "UFFD_FEATURE_WP_ASYNC (Linux 6.7)";
    else if (strcmp(feature, "poison") == 0)
        lack = uffd && p.poison ? NULL : "UFFDIO_POISON (Linux 6.6)";
    else if (strcmp(feature, "pagemap-scan") == 0)
        lack = p.pagemap_scan ? NULL : "the PAGEMAP_SCAN ioctl (Linux 6.7)";
    else if (strcmp(feature, "fuse") == 0)
        lack = p.fuse ? NULL : "/dev/fuse";
    else if (strcmp(feature, "nbd") == 0)
        lack = p.nbd_devices > 0 ? NULL : "/dev/nbdN devices (modprobe nbd)";
    else
        return -1;
    if (!lack)
        return 0;
    if (strncmp(feature, "uffd", 4) == 0 && !uffd && p.uffd_errno)
        snprintf(why, n, "this kernel (%s) lacks %s: %s", p.kernel, lack, strerror(p.uffd_errno));
    else
        snprintf(why, n, "this kernel (%s) lacks %s", p.kernel, lack);
    return 1;
}

/* Exit 77 (skip) with the reason if the kernel lacks feature. */
static inline void r3t_require(const char *feature)
{
    char why[256];
    int m = r3t_missing(feature, why, sizeof why);
    if (m < 0) {
        fprintf(stderr, "r3t_require: unknown feature '%s'\n", feature);
        exit(99);
    }
    if (m > 0) {
        printf("SKIP: %s\n", why);
        fflush(stdout);
        exit(77);
    }
}

#endif
