/* Change tracking of a mapping without hashing: the range is registered with
 * userfaultfd in WP mode with UFFD_FEATURE_WP_ASYNC, so a write to a
 * protected page just clears the protection (no fault message); PAGEMAP_SCAN
 * with PAGE_IS_WRITTEN + PM_SCAN_WP_MATCHING lists those pages and protects
 * them again in one call. Checked on 6.18 for MAP_SHARED ext4 file mappings:
 * works without WP_UNPOPULATED or pre-populating (file-backed uffd-wp always
 * uses PTE markers); pages zapped by MADV_DONTNEED keep reporting written.
 * Only writes through page tables of this process are seen (not write(2), not
 * other processes' mappings). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include "internal.h"
#include "uffd/compat.h"
#include "filesync/filesync.h"

#define FS_TRACK_VEC 1024

struct fs_track {
    int uffd, pagemap;
    uintptr_t base;
    size_t len;
    struct page_region vec[FS_TRACK_VEC];
};

static long scan(struct fs_track *t, uint32_t block, uint8_t *dirty)
{
    long marked = 0;
    uintptr_t start = t->base, end = t->base + t->len;
    while (start < end) {
        struct pm_scan_arg a = {
            .size = sizeof a,
            .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
            .start = start, .end = end,
            .vec = (uintptr_t)t->vec, .vec_len = FS_TRACK_VEC,
            .category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN,
        };
        long n = ioctl(t->pagemap, PAGEMAP_SCAN, &a);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return r3_error(-errno, "PAGEMAP_SCAN: %s", strerror(errno));
        }
        for (long i = 0; i < n && dirty; i++) {
            uint64_t b0 = (t->vec[i].start - t->base) / block;
            uint64_t b1 = (t->vec[i].end - t->base + block - 1) / block;
            for (uint64_t b = b0; b < b1; b++)
                if (!dirty[b]) {
                    dirty[b] = 1;
                    marked++;
                }
        }
        if (a.walk_end <= start)      /* no progress: layout changing, retry */
            continue;
        start = a.walk_end;
    }
    return marked;
}

int fs_track_open(void *base, size_t len, struct fs_track **out)
{
    *out = NULL;
    struct fs_track *t = calloc(1, sizeof *t);
    if (!t)
        return r3_error(-ENOMEM, "out of memory");
    t->base = (uintptr_t)base;
    t->len = len;
    t->pagemap = -1;
    /* A PMD-mapped large folio (ext4 has them) loses its PTE-level state
     * when a write splits it: the whole 2 MiB would then read as written.
     * Keep the mapping at page granularity and drop existing PMDs (for a
     * shared file mapping MADV_DONTNEED only unmaps; the data stays). */
    madvise(base, len, MADV_NOHUGEPAGE);
    madvise(base, len, MADV_DONTNEED);
    t->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (t->uffd < 0)
        t->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    int rc = 0;
    if (t->uffd < 0) {
        rc = r3_error(-errno, "userfaultfd: %s", strerror(errno));
        goto fail;
    }
    struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC };
    if (ioctl(t->uffd, UFFDIO_API, &api) < 0) {
        rc = r3_error(-errno, "userfaultfd: WP_ASYNC not supported (kernel < 6.7?): %s",
                      strerror(errno));
        goto fail;
    }
    struct uffdio_register reg = { .range = { t->base, len }, .mode = UFFDIO_REGISTER_MODE_WP };
    if (ioctl(t->uffd, UFFDIO_REGISTER, &reg) < 0) {
        rc = r3_error(-errno, "userfaultfd: cannot register the mapping for WP: %s",
                      strerror(errno));
        goto fail;
    }
    t->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (t->pagemap < 0) {
        rc = r3_error(-errno, "/proc/self/pagemap: %s", strerror(errno));
        goto fail;
    }
    long n = scan(t, 4096, NULL);       /* protect everything: clean from now on */
    if (n < 0) {
        rc = (int)n;
        goto fail;
    }
    *out = t;
    return 0;
fail:
    fs_track_close(t);
    return rc;
}

long fs_track_scan(struct fs_track *t, uint32_t block, uint8_t *dirty)
{
    return scan(t, block, dirty);
}

void fs_track_close(struct fs_track *t)
{
    if (!t)
        return;
    if (t->uffd >= 0) {
        struct uffdio_range r = { t->base, t->len };
        ioctl(t->uffd, UFFDIO_UNREGISTER, &r);
        close(t->uffd);
    }
    if (t->pagemap >= 0)
        close(t->pagemap);
    free(t);
}
