/* SPDX-License-Identifier: BSD-3-Clause */
/* Kernel interfaces newer than the Debian 12 (Linux 6.1) uapi headers.
 * Values from the kernel's include/uapi/linux/userfaultfd.h and
 * include/uapi/linux/fs.h; each is defined only where the system header
 * lacks it, and r3 probes the running kernel before using any of them. */
#ifndef R3_KERNEL_COMPAT_H
#define R3_KERNEL_COMPAT_H

#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <linux/userfaultfd.h>

/* /dev/userfaultfd (6.1) */
#ifndef USERFAULTFD_IOC
#define USERFAULTFD_IOC 0xAA
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

/* uffdio_api.features */
#ifndef UFFD_FEATURE_EXACT_ADDRESS
#define UFFD_FEATURE_EXACT_ADDRESS (1 << 11)
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)   /* 6.5 */
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)           /* 6.6 */
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)         /* 6.7 */
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)             /* 6.8 */
#endif

/* UFFDIO_COPY_MODE_WP exists since 5.7; kept for completeness. */
#ifndef UFFDIO_COPY_MODE_WP
#define UFFDIO_COPY_MODE_WP ((__u64)1 << 1)
#endif

/* UFFDIO_POISON (6.6): install poison markers, later access raises SIGBUS. */
#ifndef UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
    struct uffdio_range range;
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
    __u64 mode;
    __s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

/* UFFDIO_MOVE (6.8) */
#ifndef UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
struct uffdio_move {
    __u64 dst;
    __u64 src;
    __u64 len;
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
    __u64 mode;
    __s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

/* PAGEMAP_SCAN ioctl on /proc/PID/pagemap (6.7) */
#ifndef PAGEMAP_SCAN
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN   (1 << 1)
#define PAGE_IS_FILE      (1 << 2)
#define PAGE_IS_PRESENT   (1 << 3)
#define PAGE_IS_SWAPPED   (1 << 4)
#define PAGE_IS_PFNZERO   (1 << 5)
#define PAGE_IS_HUGE      (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)
struct page_region {
    __u64 start;
    __u64 end;          /* exclusive */
    __u64 categories;
};
#define PM_SCAN_WP_MATCHING   (1 << 0)   /* write-protect the matched pages */
#define PM_SCAN_CHECK_WPASYNC (1 << 1)   /* abort on a page without async WP */
struct pm_scan_arg {
    __u64 size;
    __u64 flags;
    __u64 start;
    __u64 end;
    __u64 walk_end;
    __u64 vec;
    __u64 vec_len;
    __u64 max_pages;
    __u64 category_inverted;
    __u64 category_mask;
    __u64 category_anyof_mask;
    __u64 return_mask;
};
#endif

#endif
