/* SPDX-License-Identifier: BSD-3-Clause */
/* file: a regular file (or block device) read and written with pread/pwrite.
 * file:///path[?size=1G][&readonly=1]. A new file is created; size= grows it. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>
#include "internal.h"

struct file_source {
    struct r3_source src;
    int fd;
    bool blk;            /* a block device: no holes to ask about */
};

static int file_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    int rc = r3_pread_all(((struct file_source *)s)->fd, buf, len, off);
    return rc < 0 ? r3_error(rc, "file: read of %zu bytes at %llu: %s", len,
                             (unsigned long long)off, strerror(-rc)) : 0;
}

static int file_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    int rc = r3_pwrite_all(((struct file_source *)s)->fd, buf, len, off);
    return rc < 0 ? r3_error(rc, "file: write of %zu bytes at %llu: %s", len,
                             (unsigned long long)off, strerror(-rc)) : 0;
}

static int file_flush(struct r3_source *s)
{
    if (fdatasync(((struct file_source *)s)->fd) < 0)
        return r3_error(-errno, "file: fdatasync: %s", strerror(errno));
    return 0;
}

/* Holes read as zeros: SEEK_DATA/SEEK_HOLE say where they are (a few
 * lseeks, no I/O). A block device, or a file system without them (EINVAL,
 * or the whole file reported as data), says DATA. */
static int file_extent(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    struct file_source *f = (struct file_source *)s;
    *run = len;
    if (f->blk)
        return R3_EXTENT_DATA;
    off_t d = lseek(f->fd, (off_t)off, SEEK_DATA);
    if (d < 0)
        /* ENXIO: no data from off to the end of the file (a source larger
         * than its file reads zeros there too) */
        return errno == ENXIO ? R3_EXTENT_ZERO : R3_EXTENT_DATA;
    if ((uint64_t)d > off) {
        if ((uint64_t)d - off < len)
            *run = (uint64_t)d - off;
        return R3_EXTENT_ZERO;
    }
    off_t h = lseek(f->fd, (off_t)off, SEEK_HOLE);
    if (h > (off_t)off && (uint64_t)h - off < len)
        *run = (uint64_t)h - off;
    return R3_EXTENT_DATA;
}

static void file_close(struct r3_source *s)
{
    close(((struct file_source *)s)->fd);
    free(s);
}

static const struct r3_source_ops file_ops = {
    .scheme = "file", .read = file_read, .write = file_write, .flush = file_flush, .close = file_close,
    .extent = file_extent,
};

int r3_file_source_fd(const struct r3_source *s)
{
    return s && s->ops == &file_ops ? ((const struct file_source *)s)->fd : -1;
}

int r3_file_open(const struct r3_uri *u, struct r3_source **out)
{
    static const char *const allowed[] = { "size", "readonly", NULL };
    uint64_t size, ro;
    int rc = r3_uri_check_params(u, allowed);
    if (rc == 0)
        rc = r3_uri_param_size(u, "size", 0, &size);
    if (rc == 0)
        rc = r3_uri_param_uint(u, "readonly", 0, &ro);
    if (rc < 0)
        return rc;
    if (u->host && u->host[0] && strcmp(u->host, "localhost") != 0)
        return r3_error(-EINVAL, "file: host '%s' is not supported (write file:///path)", u->host);
    if (!u->path || u->path[0] != '/')
        return r3_error(-EINVAL, "file: needs an absolute path (file:///path)");
    if (r3_uri_param(u, "size") && size == 0)
        return r3_error(-EINVAL, "file: size must be greater than 0");

    /* Open without O_CREAT first so that a failed open creates nothing. */
    bool created = false;
    int fd = open(u->path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && !ro && size > 0) {
        fd = open(u->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        created = fd >= 0;
    }
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT && size > 0 && !ro)
            return r3_error(-e, "file: cannot create %s: the directory does not exist", u->path);
        if (e == ENOENT)
            return r3_error(-e, "file: %s does not exist (give ?size= to create it)", u->path);
        return r3_error(-e, "file: cannot open %s: %s", u->path, strerror(e));
    }
    struct stat st;
    uint64_t cur = 0;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
    } else if (S_ISBLK(st.st_mode)) {
        if (ioctl(fd, BLKGETSIZE64, &cur) < 0)
            rc = -errno;
    } else if (S_ISREG(st.st_mode)) {
        cur = (uint64_t)st.st_size;
    } else {
        rc = r3_error(-EINVAL, "file: %s is not a regular file or block device", u->path);
    }
    if (rc == 0 && size > cur) {
        if (ro || S_ISBLK(st.st_mode))
            rc = r3_error(-EINVAL, "file: %s is %llu bytes, smaller than size=%llu", u->path,
                          (unsigned long long)cur, (unsigned long long)size);
        else if (ftruncate(fd, (off_t)size) < 0)
            rc = r3_error(-errno, "file: cannot grow %s to %llu bytes: %s", u->path,
                          (unsigned long long)size, strerror(errno));
    }
    if (rc == 0 && size == 0) {
        size = cur;
        if (size == 0)
            rc = r3_error(-EINVAL, "file: %s is empty; give its size (?size=1G)", u->path);
    }
    if (rc < 0) {
        close(fd);
        if (created)
            unlink(u->path);
        if (r3_last_error()[0] == '\0')
            r3_error(rc, "file: %s: %s", u->path, strerror(-rc));
        return rc;
    }
    struct file_source *f = calloc(1, sizeof *f);
    if (!f) {
        close(fd);
        return r3_error(-ENOMEM, "file: out of memory");
    }
    f->fd = fd;
    f->blk = S_ISBLK(st.st_mode);
    f->src.ops = &file_ops;
    f->src.size = size;
    f->src.align = 1;
    f->src.flags = R3_SRC_PARALLEL | (ro ? R3_SRC_RDONLY : 0);
    *out = &f->src;
    return 0;
}
