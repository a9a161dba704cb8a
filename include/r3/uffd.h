/* The uffd strategy: what this kernel offers (userfaultfd features,
 * PAGEMAP_SCAN, FUSE, NBD devices) and what each strategy can do here. */
#ifndef R3_UFFD_H
#define R3_UFFD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct r3_uffd_probe {
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
    bool wp_async_disabled;     /* R3_UFFD_NO_WP_ASYNC=1 is set: r3 will not use it */
    bool fuse;                  /* /dev/fuse opens read-write */
    int  nbd_devices;           /* number of /dev/nbdN nodes */
};

/* Fill *out; never fails for lack of a feature (absent = false). 0 or -errno. */
int  r3_uffd_probe(struct r3_uffd_probe *out);
/* A readable report: each feature found, then what each strategy can do. */
void r3_uffd_probe_print(FILE *f);

#ifdef __cplusplus
}
#endif
#endif
