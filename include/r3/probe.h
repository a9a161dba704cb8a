/* SPDX-License-Identifier: BSD-3-Clause */
/* The machine probe: what this kernel offers r3 (userfaultfd and its
 * features, PAGEMAP_SCAN, write tracking of file mappings, FUSE, NBD
 * devices) and, from that, what each strategy would do here. Nothing is
 * assumed from the headers r3 was built with: every answer is asked of the
 * running kernel. Tests use it to skip (exit 77) with the reason when a
 * feature is truly absent. */
#ifndef R3_PROBE_H
#define R3_PROBE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <r3/region.h>

#ifdef __cplusplus
extern "C" {
#endif

struct r3_probe {
    char kernel[80];            /* uname release */
    bool uffd_syscall;          /* userfaultfd(2) opens (kernel-mode faults included) */
    bool uffd_syscall_user;     /* only with UFFD_USER_MODE_ONLY */
    bool uffd_dev;              /* /dev/userfaultfd opens */
    int  uffd_errno;            /* why neither opened (positive errno), 0 if one did */
    uint64_t features;          /* UFFDIO_API features the kernel offers */
    uint64_t ioctls;            /* UFFDIO_API ioctl bitmap */
    bool wp;                    /* UFFD_FEATURE_PAGEFAULT_FLAG_WP (register MODE_WP) */
    bool wp_async;              /* UFFD_FEATURE_WP_ASYNC (6.7) */
    bool wp_unpopulated;        /* UFFD_FEATURE_WP_UNPOPULATED (6.5) */
    bool poison;                /* UFFD_FEATURE_POISON / UFFDIO_POISON (6.6) */
    bool move;                  /* UFFD_FEATURE_MOVE / UFFDIO_MOVE (6.8) */
    bool event_fork, event_remove, event_unmap, event_remap, thread_id;
    bool pagemap_scan;          /* PAGEMAP_SCAN ioctl on /proc/self/pagemap (6.7) */
    /* A MAP_SHARED file mapping in the probed directory: a write to it was
     * found by WP_ASYNC + PAGEMAP_SCAN (tried, not inferred). This is what
     * filesync uses instead of hashing. */
    bool file_tracking;
    char file_tracking_why[160];  /* why not, when false */
    char workdir[128];          /* the directory tried */
    bool fuse;                  /* /dev/fuse opens read-write */
    int  nbd_devices;           /* number of /dev/nbdN nodes */
};

/* Fill *out; never fails for lack of a feature (absent = false). workdir is
 * where filesync would keep its file (NULL = /tmp, its default). 0 or -errno. */
int  r3_probe(struct r3_probe *out, const char *workdir);
/* The uffd strategy's write tracking on this machine: true for WP_ASYNC +
 * PAGEMAP_SCAN, false for hashing. */
bool r3_probe_uffd_tracks_writes(const struct r3_probe *p);
/* A readable report on f: each feature found, then what each strategy
 * would do with the options o (NULL = defaults: its uffd_no_wp_async and
 * filesync_detect change the answer). */
void r3_probe_print(FILE *f, const struct r3_probe *p, const struct r3_region_opts *o);

#ifdef __cplusplus
}
#endif
#endif
