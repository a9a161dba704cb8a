/* SPDX-License-Identifier: BSD-3-Clause */
/* Opening a userfaultfd and negotiating its features, in one place (the
 * shape of the kernel's tools/testing/selftests/mm/uffd-common.c). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "internal.h"
#include "kernel/kernel.h"

int r3_kernel_uffd_raw(int flags, bool *via_dev)
{
    int fd = (int)syscall(SYS_userfaultfd, flags);
    if (fd >= 0) {
        if (via_dev)
            *via_dev = false;
        return fd;
    }
    int e = errno;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev < 0)
        return -e;
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
    close(dev);
    if (fd < 0)
        return -e;
    if (via_dev)
        *via_dev = true;
    return fd;
}

static int open_error(int rc, int flags)
{
    return r3_error(rc, "cannot open a userfaultfd (userfaultfd(2) or /dev/userfaultfd): %s%s",
                    strerror(-rc), flags & UFFD_USER_MODE_ONLY ? ""
                    : " (as non-root, kernel-mode faults need vm.unprivileged_userfaultfd=1 or"
                      " access to /dev/userfaultfd)");
}

int r3_kernel_uffd_features(int flags, uint64_t *features, uint64_t *ioctls)
{
    int fd = r3_kernel_uffd_raw(flags, NULL);
    if (fd < 0)
        return open_error(fd, flags);
    struct uffdio_api api = { .api = UFFD_API, .features = 0 };
    int rc = ioctl(fd, UFFDIO_API, &api) < 0 ? -errno : 0;
    close(fd);
    if (rc < 0)
        return r3_error(rc, "userfaultfd: UFFDIO_API failed: %s", strerror(-rc));
    *features = api.features;
    if (ioctls)
        *ioctls = api.ioctls;
    return 0;
}

int r3_kernel_uffd_open(int flags, uint64_t want, uint64_t need, uint64_t *got, uint64_t *ioctls)
{
    uint64_t have;
    int rc = r3_kernel_uffd_features(flags, &have, NULL);
    if (rc < 0)
        return rc;
    if ((need & have) != need)
        return r3_error(-ENOTSUP, "userfaultfd: this kernel lacks feature bits 0x%llx that are"
                        " needed (it offers 0x%llx)", (unsigned long long)(need & ~have),
                        (unsigned long long)have);
    uint64_t use = want & have;
    int fd = r3_kernel_uffd_raw(flags, NULL);
    if (fd < 0)
        return open_error(fd, flags);
    struct uffdio_api api = { .api = UFFD_API, .features = use };
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        int e = errno;
        close(fd);
        return r3_error(-e, "userfaultfd: UFFDIO_API with features 0x%llx failed: %s",
                        (unsigned long long)use, strerror(e));
    }
    *got = use;
    if (ioctls)
        *ioctls = api.ioctls;
    return fd;
}
