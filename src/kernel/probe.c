/* SPDX-License-Identifier: BSD-3-Clause */
/* The machine probe (include/r3/probe.h): every answer is asked of the
 * running kernel, never inferred from the headers r3 was built with. */
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
#include "kernel/kernel.h"
#include <r3/probe.h>

struct seen { uint64_t lo, hi; };

static void note(void *arg, uint64_t s, uint64_t e)
{
    struct seen *w = arg;
    if (s < w->lo)
        w->lo = s;
    if (e > w->hi)
        w->hi = e;
}

/* What filesync does, on a small file in dir: map it shared, track it,
 * write one page, and see that exactly that page is reported. */
static void probe_file_tracking(struct r3_probe *o, const char *dir)
{
    snprintf(o->workdir, sizeof o->workdir, "%s", dir);
    char path[sizeof o->workdir + 32];
    snprintf(path, sizeof path, "%s/r3probe.XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        snprintf(o->file_tracking_why, sizeof o->file_tracking_why, "cannot create a file in %s: %s",
                 dir, strerror(errno));
        return;
    }
    unlink(path);
    long pg = sysconf(_SC_PAGESIZE);
    size_t len = 4 * (size_t)pg;
    void *m = MAP_FAILED;
    if (ftruncate(fd, (off_t)len) == 0)
        m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        snprintf(o->file_tracking_why, sizeof o->file_tracking_why, "cannot map a file in %s: %s",
                 dir, strerror(errno));
        close(fd);
        return;
    }
    struct r3_wp_track *t;
    if (r3_wp_track_open(m, len, &t) < 0) {
        snprintf(o->file_tracking_why, sizeof o->file_tracking_why, "%s", r3_last_error());
    } else {
        ((volatile char *)m)[2 * pg + 5] = 1;
        struct seen w = { UINT64_MAX, 0 };
        int rc = r3_wp_track_scan(t, note, &w);
        uintptr_t want = (uintptr_t)m + 2 * (uintptr_t)pg;
        if (rc < 0)
            snprintf(o->file_tracking_why, sizeof o->file_tracking_why, "%s", r3_last_error());
        else if (w.lo != want || w.hi != want + (uintptr_t)pg)
            snprintf(o->file_tracking_why, sizeof o->file_tracking_why,
                     "a write to one page of a file mapping in %s was not reported as exactly that"
                     " page", dir);
        else
            o->file_tracking = true;
        r3_wp_track_close(t);
    }
    munmap(m, len);
    close(fd);
}

int r3_probe(struct r3_probe *o, const char *workdir)
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
    int flags = O_CLOEXEC | O_NONBLOCK;
    if (!o->uffd_syscall && !o->uffd_dev && o->uffd_syscall_user)
        flags |= UFFD_USER_MODE_ONLY;       /* features still tell filesync's story */
    if (o->uffd_syscall || o->uffd_dev || o->uffd_syscall_user)
        r3_kernel_uffd_features(flags, &o->features, &o->ioctls);
    if (!o->uffd_syscall && !o->uffd_dev)
        o->uffd_errno = err ? err : ENOSYS;
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
    o->pagemap_scan = r3_kernel_pagemap_scan_works();
    probe_file_tracking(o, workdir ? workdir : "/tmp");

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
    r3_error_clear();
    return 0;
}

bool r3_probe_uffd_tracks_writes(const struct r3_probe *p)
{
    return p->wp && p->wp_async && p->pagemap_scan;
}

static const char *yesno(bool b)
{
    return b ? "yes" : "no";
}

void r3_probe_print(FILE *f, const struct r3_probe *p, const struct r3_region_opts *o)
{
    bool uffd = p->uffd_syscall || p->uffd_dev;
    bool no_wp_async = o && o->uffd_no_wp_async;
    const char *detect = o && o->filesync_detect ? o->filesync_detect : NULL;
    fprintf(f, "kernel                       %s\n", p->kernel);
    fprintf(f, "userfaultfd(2)               %s%s\n", yesno(p->uffd_syscall),
            !p->uffd_syscall && p->uffd_syscall_user ? " (user-mode faults only: not enough for uffd)"
            : "");
    fprintf(f, "/dev/userfaultfd             %s\n", yesno(p->uffd_dev));
    if (!uffd)
        fprintf(f, "  userfaultfd unavailable:   %s\n", strerror(p->uffd_errno));
    fprintf(f, "uffd features                0x%llx\n", (unsigned long long)p->features);
    fprintf(f, "  write-protect (MODE_WP)    %s\n", yesno(p->wp));
    fprintf(f, "  WP_ASYNC (6.7)             %s%s\n", yesno(p->wp_async),
            p->wp_async && no_wp_async ? " (not used by uffd: R3_UFFD_NO_WP_ASYNC is set)" : "");
    fprintf(f, "  WP_UNPOPULATED (6.5)       %s\n", yesno(p->wp_unpopulated));
    fprintf(f, "  POISON (6.6)               %s\n", yesno(p->poison));
    fprintf(f, "  MOVE (6.8)                 %s\n", yesno(p->move));
    fprintf(f, "  events fork/remove/unmap/remap  %s/%s/%s/%s\n", yesno(p->event_fork),
            yesno(p->event_remove), yesno(p->event_unmap), yesno(p->event_remap));
    fprintf(f, "  THREAD_ID                  %s\n", yesno(p->thread_id));
    fprintf(f, "PAGEMAP_SCAN (6.7)           %s\n", yesno(p->pagemap_scan));
    fprintf(f, "file mapping write tracking  %s (tried in %s%s%s)\n", yesno(p->file_tracking),
            p->workdir, p->file_tracking ? "" : ": ", p->file_tracking ? "" : p->file_tracking_why);
    fprintf(f, "/dev/fuse                    %s\n", yesno(p->fuse));
    fprintf(f, "/dev/nbd*                    %d device%s\n", p->nbd_devices,
            p->nbd_devices == 1 ? "" : "s");

    fprintf(f, "\nstrategies on this machine:\n");
    bool tracked = r3_probe_uffd_tracks_writes(p) && !no_wp_async;
    if (!uffd)
        fprintf(f, "  uffd         unavailable (no userfaultfd)\n");
    else if (tracked)
        fprintf(f, "  uffd         read-write, write-back of written pages found by PAGEMAP_SCAN "
                "(WP_ASYNC), chunk fills, prefetch\n");
    else
        fprintf(f, "  uffd         read-write, write-back by hashing filled chunks (XXH3; no %s), "
                "chunk fills, prefetch\n",
                no_wp_async ? "WP_ASYNC: disabled by R3_UFFD_NO_WP_ASYNC"
                : !p->wp_async ? "WP_ASYNC" : "PAGEMAP_SCAN");
    if (uffd)
        fprintf(f, "               source errors during a fault: %s\n",
                p->poison ? "SIGBUS via UFFDIO_POISON" : p->thread_id
                ? "SIGBUS sent to the faulting thread" : "SIGBUS to the process");
    const char *dev = p->nbd_devices ? "kernel /dev/nbdX" : p->fuse ? "FUSE file bridge (no /dev/nbdX)"
                      : NULL;
    if (dev) {
        fprintf(f, "  nbd-direct   available via %s\n", dev);
        fprintf(f, "  nbd-managed  available via %s\n", dev);
    } else {
        fprintf(f, "  nbd-direct   unavailable (no /dev/nbdX, no /dev/fuse)\n");
        fprintf(f, "  nbd-managed  unavailable (no /dev/nbdX, no /dev/fuse)\n");
    }
    if (detect && strcmp(detect, "hash") == 0)
        fprintf(f, "  filesync     available; changes found by XXH3 block hashing "
                "(R3_FILESYNC_DETECT=hash)\n");
    else if (p->file_tracking)
        fprintf(f, "  filesync     available; changes found by PAGEMAP_SCAN (WP_ASYNC on the file "
                "mapping in %s), no hashing\n", p->workdir);
    else
        fprintf(f, "  filesync     available; changes found by XXH3 block hashing (no write "
                "tracking of file mappings in %s)\n", p->workdir);
}
