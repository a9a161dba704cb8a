/* Probe the kernel for what the strategies need: userfaultfd (syscall or
 * /dev/userfaultfd) and its features, PAGEMAP_SCAN, FUSE, NBD devices.
 * Nothing is assumed from the headers r3 was built with. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>
#include "internal.h"
#include "uffd/uffd.h"

bool r3_uffd_wp_async_disabled(void)
{
    const char *e = getenv("R3_UFFD_NO_WP_ASYNC");
    return e && *e && strcmp(e, "0") != 0;
}

static int open_raw(int flags, bool *via_dev)
{
    int fd = (int)syscall(SYS_userfaultfd, flags);
    if (fd >= 0) {
        *via_dev = false;
        return fd;
    }
    int e = errno;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev < 0)
        return -e;
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
    e = errno;
    close(dev);
    if (fd < 0)
        return -e;
    *via_dev = true;
    return fd;
}

int r3_uffd_open_fd(uint64_t want, uint64_t *got, uint64_t *ioctls)
{
    bool dev;
    /* UFFDIO_API enables features once per fd: ask what exists on one fd,
     * then open the fd we keep with the wanted subset. */
    int fd = open_raw(O_CLOEXEC | O_NONBLOCK, &dev);
    if (fd < 0)
        return r3_error(fd, "uffd: cannot open a userfaultfd (userfaultfd(2) or /dev/userfaultfd): %s"
                        " (as non-root, kernel-mode faults need vm.unprivileged_userfaultfd=1 or access"
                        " to /dev/userfaultfd)", strerror(-fd));
    struct uffdio_api api = { .api = UFFD_API, .features = 0 };
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        int e = errno;
        close(fd);
        return r3_error(-e, "uffd: UFFDIO_API failed: %s", strerror(e));
    }
    close(fd);
    uint64_t use = want & api.features;
    fd = open_raw(O_CLOEXEC | O_NONBLOCK, &dev);
    if (fd < 0)
        return r3_error(fd, "uffd: cannot open a second userfaultfd: %s", strerror(-fd));
    api.api = UFFD_API;
    api.features = use;
    api.ioctls = 0;
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        int e = errno;
        close(fd);
        return r3_error(-e, "uffd: UFFDIO_API with features 0x%llx failed: %s",
                        (unsigned long long)use, strerror(e));
    }
    *got = use;
    if (ioctls)
        *ioctls = api.ioctls;
    return fd;
}

static bool probe_pagemap_scan(void)
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

int r3_uffd_probe(struct r3_uffd_probe *o)
{
    memset(o, 0, sizeof *o);
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(o->kernel, sizeof o->kernel, "%s", u.release);

    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    int err = fd < 0 ? errno : 0;
    if (fd >= 0) {
        o->uffd_syscall = true;
        close(fd);
    } else {
        int f2 = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
        if (f2 >= 0) {
            o->uffd_syscall_user = true;
            close(f2);
        }
    }
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
        int f3 = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        if (f3 >= 0) {
            o->uffd_dev = true;
            close(f3);
        } else if (!err) {
            err = errno;
        }
        close(dev);
    } else if (!err) {
        err = errno;
    }
    if (o->uffd_syscall || o->uffd_dev) {
        bool via;
        struct uffdio_api api = { .api = UFFD_API };
        int f = open_raw(O_CLOEXEC | O_NONBLOCK, &via);
        if (f >= 0 && ioctl(f, UFFDIO_API, &api) == 0) {
            o->features = api.features;
            o->ioctls = api.ioctls;
        }
        if (f >= 0)
            close(f);
    } else {
        o->uffd_errno = err ? err : ENOSYS;
    }
    uint64_t ft = o->features;
    o->wp = ft & UFFD_FEATURE_PAGEFAULT_FLAG_WP;
    o->wp_async = ft & UFFD_FEATURE_WP_ASYNC;
    o->wp_unpopulated = ft & UFFD_FEATURE_WP_UNPOPULATED;
    o->poison = ft & UFFD_FEATURE_POISON;
    o->move = ft & UFFD_FEATURE_MOVE;
    o->event_fork = ft & UFFD_FEATURE_EVENT_FORK;
    o->event_remove = ft & UFFD_FEATURE_EVENT_REMOVE;
    o->event_unmap = ft & UFFD_FEATURE_EVENT_UNMAP;
    o->event_remap = ft & UFFD_FEATURE_EVENT_REMAP;
    o->thread_id = ft & UFFD_FEATURE_THREAD_ID;
    o->pagemap_scan = probe_pagemap_scan();
    o->wp_async_disabled = r3_uffd_wp_async_disabled();

    int fu = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fu >= 0) {
        o->fuse = true;
        close(fu);
    }
    DIR *d = opendir("/dev");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (strncmp(e->d_name, "nbd", 3) == 0 && e->d_name[3] >= '0' && e->d_name[3] <= '9'
                && !strchr(e->d_name, 'p'))
                o->nbd_devices++;
        closedir(d);
    }
    return 0;
}

static const char *yesno(bool b)
{
    return b ? "yes" : "no";
}

void r3_uffd_probe_print(FILE *f)
{
    struct r3_uffd_probe p;
    r3_uffd_probe(&p);
    bool uffd = p.uffd_syscall || p.uffd_dev;
    fprintf(f, "kernel                       %s\n", p.kernel);
    fprintf(f, "userfaultfd(2)               %s%s\n", yesno(p.uffd_syscall),
            !p.uffd_syscall && p.uffd_syscall_user ? " (user-mode faults only: not enough)" : "");
    fprintf(f, "/dev/userfaultfd             %s\n", yesno(p.uffd_dev));
    if (!uffd)
        fprintf(f, "  userfaultfd unavailable:   %s\n", strerror(p.uffd_errno));
    fprintf(f, "uffd features                0x%llx\n", (unsigned long long)p.features);
    fprintf(f, "  write-protect (MODE_WP)    %s\n", yesno(p.wp));
    fprintf(f, "  WP_ASYNC (6.7)             %s%s\n", yesno(p.wp_async),
            p.wp_async && p.wp_async_disabled ? " (not used: R3_UFFD_NO_WP_ASYNC is set)" : "");
    fprintf(f, "  WP_UNPOPULATED (6.5)       %s\n", yesno(p.wp_unpopulated));
    fprintf(f, "  POISON (6.6)               %s\n", yesno(p.poison));
    fprintf(f, "  MOVE (6.8)                 %s\n", yesno(p.move));
    fprintf(f, "  events fork/remove/unmap/remap  %s/%s/%s/%s\n", yesno(p.event_fork),
            yesno(p.event_remove), yesno(p.event_unmap), yesno(p.event_remap));
    fprintf(f, "  THREAD_ID                  %s\n", yesno(p.thread_id));
    fprintf(f, "PAGEMAP_SCAN (6.7)           %s\n", yesno(p.pagemap_scan));
    fprintf(f, "/dev/fuse                    %s\n", yesno(p.fuse));
    fprintf(f, "/dev/nbd*                    %d device%s\n", p.nbd_devices,
            p.nbd_devices == 1 ? "" : "s");

    fprintf(f, "\nstrategies on this machine:\n");
    bool tracked = p.wp && p.wp_async && !p.wp_async_disabled && p.pagemap_scan;
    if (!uffd)
        fprintf(f, "  uffd         unavailable (no userfaultfd)\n");
    else if (tracked)
        fprintf(f, "  uffd         read-write, write-back of written pages found by PAGEMAP_SCAN "
                "(WP_ASYNC), chunk fills, prefetch\n");
    else
        fprintf(f, "  uffd         read-write, write-back by hashing filled chunks (XXH3; no %s), "
                "chunk fills, prefetch\n",
                p.wp_async_disabled ? "WP_ASYNC: disabled by R3_UFFD_NO_WP_ASYNC"
                : !p.wp_async ? "WP_ASYNC" : "PAGEMAP_SCAN");
    if (uffd)
        fprintf(f, "               source errors during a fault: %s\n",
                p.poison ? "SIGBUS via UFFDIO_POISON" : p.thread_id ? "SIGBUS sent to the faulting thread"
                : "SIGBUS to the process");
    const char *dev = p.nbd_devices ? "kernel /dev/nbdX" : p.fuse ? "FUSE file bridge (no /dev/nbdX)" : NULL;
    if (dev) {
        fprintf(f, "  nbd-direct   available via %s\n", dev);
        fprintf(f, "  nbd-managed  available via %s\n", dev);
    } else {
        fprintf(f, "  nbd-direct   unavailable (no /dev/nbdX, no /dev/fuse)\n");
        fprintf(f, "  nbd-managed  unavailable (no /dev/nbdX, no /dev/fuse)\n");
    }
    fprintf(f, "  filesync     available (mmap + XXH3 block hashing)\n");
}
