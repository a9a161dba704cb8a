/* SPDX-License-Identifier: BSD-3-Clause */
/* dir: one file per chunk in a directory; a missing chunk file reads as
 * zeros. dir:///path?size=1G&chunk=64K. The size and chunk are recorded in
 * PATH/r3dir.meta so the directory can be reopened without them. Open
 * chunk files are kept in a small bounded cache. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"

#define DIR_FDS 64              /* bound on open chunk files */
#define DIR_META "r3dir.meta"

struct dir_fd {
    uint64_t idx;
    int fd;                      /* -1 = empty slot */
    bool dirty;                  /* written since the last flush */
    uint64_t used;               /* LRU clock */
};

struct dir_source {
    struct r3_source src;
    int dfd;                     /* the directory */
    char *path;
    uint32_t chunk;
    pthread_mutex_t lock;        /* guards fds[] and clock */
    struct dir_fd fds[DIR_FDS];
    uint64_t clock;
};

/* Get an fd for chunk idx (create: make the file if absent). Returns the fd,
 * -ENOENT if absent and !create, or -errno. Called with d->lock held. */
static int chunk_fd(struct dir_source *d, uint64_t idx, bool create)
{
    struct dir_fd *victim = &d->fds[0];
    for (int i = 0; i < DIR_FDS; i++) {
        struct dir_fd *f = &d->fds[i];
        if (f->fd >= 0 && f->idx == idx) {
            f->used = ++d->clock;
            return f->fd;
        }
        if (f->fd < 0 || (victim->fd >= 0 && f->used < victim->used))
            victim = f;
    }
    char name[32];
    snprintf(name, sizeof name, "%" PRIu64, idx);
    int fd = openat(d->dfd, name, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
    if (fd < 0)
        return -errno;
    if (victim->fd >= 0) {
        if (victim->dirty && fdatasync(victim->fd) < 0) {
            int e = -errno;
            close(fd);
            return e;
        }
        close(victim->fd);
    }
    victim->fd = fd;
    victim->idx = idx;
    victim->dirty = false;
    victim->used = ++d->clock;
    return fd;
}

static void mark_dirty(struct dir_source *d, int fd)
{
    for (int i = 0; i < DIR_FDS; i++)
        if (d->fds[i].fd == fd)
            d->fds[i].dirty = true;
}

/* The lock is held across the I/O so that an fd is never closed under a
 * reader; chunk files are local, so the section is short. */
static int dir_io(struct r3_source *s, void *buf, size_t len, uint64_t off, bool wr)
{
    struct dir_source *d = (struct dir_source *)s;
    char *p = buf;
    int rc = 0;
    pthread_mutex_lock(&d->lock);
    while (len > 0 && rc == 0) {
        uint64_t idx = off / d->chunk, in = off % d->chunk;
        size_t n = d->chunk - in < len ? d->chunk - in : len;
        int fd = chunk_fd(d, idx, wr);
        if (fd == -ENOENT && !wr) {
            memset(p, 0, n);
        } else if (fd < 0) {
            rc = fd;
        } else if (wr) {
            rc = r3_pwrite_all(fd, p, n, in);
            if (rc == 0)
                mark_dirty(d, fd);
        } else {
            rc = r3_pread_all(fd, p, n, in);
        }
        p += n;
        off += n;
        len -= n;
    }
    pthread_mutex_unlock(&d->lock);
    if (rc < 0)
        return r3_error(rc, "dir %s: %s at offset %llu: %s", d->path, wr ? "write" : "read",
                        (unsigned long long)off, strerror(-rc));
    return 0;
}

static int dir_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    return dir_io(s, buf, len, off, false);
}

static int dir_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    return dir_io(s, (void *)buf, len, off, true);
}

static int dir_flush(struct r3_source *s)
{
    struct dir_source *d = (struct dir_source *)s;
    int rc = 0;
    pthread_mutex_lock(&d->lock);
    for (int i = 0; i < DIR_FDS; i++) {
        struct dir_fd *f = &d->fds[i];
        if (f->fd >= 0 && f->dirty) {
            if (fdatasync(f->fd) < 0 && rc == 0)
                rc = -errno;
            else
                f->dirty = false;
        }
    }
    if (rc == 0 && fsync(d->dfd) < 0)       /* new chunk files' names */
        rc = -errno;
    pthread_mutex_unlock(&d->lock);
    return rc < 0 ? r3_error(rc, "dir %s: flush: %s", d->path, strerror(-rc)) : 0;
}

static void dir_close(struct r3_source *s)
{
    struct dir_source *d = (struct dir_source *)s;
    for (int i = 0; i < DIR_FDS; i++)
        if (d->fds[i].fd >= 0)
            close(d->fds[i].fd);
    close(d->dfd);
    pthread_mutex_destroy(&d->lock);
    free(d->path);
    free(d);
}

#define DIR_EXTENT_MAX 1024        /* chunk files one extent query looks at */

/* A chunk whose file is missing or empty reads as zeros (a file with data
 * may still hold holes: it says DATA). One fstatat per chunk, no lock: a
 * file that exists stays (chunk files are never removed). */
static int dir_extent(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    struct dir_source *d = (struct dir_source *)s;
    uint64_t end = off + len, idx = off / d->chunk, e = off;
    int first = -1;
    for (unsigned k = 0; e < end && k < DIR_EXTENT_MAX; k++, idx++) {
        char name[32];
        struct stat st;
        snprintf(name, sizeof name, "%" PRIu64, idx);
        int cls;
        if (fstatat(d->dfd, name, &st, 0) == 0)
            cls = st.st_size == 0 ? R3_EXTENT_ZERO : R3_EXTENT_DATA;
        else if (errno == ENOENT)
            cls = R3_EXTENT_ZERO;
        else
            return r3_error(-errno, "dir %s: chunk %" PRIu64 ": %s", d->path, idx, strerror(errno));
        if (first < 0)
            first = cls;
        else if (cls != first)
            break;
        e = (idx + 1) * d->chunk;
    }
    *run = (e < end ? e : end) - off;
    return first;
}

static const struct r3_source_ops dir_ops = {
    .scheme = "dir", .read = dir_read, .write = dir_write, .flush = dir_flush, .close = dir_close,
    .extent = dir_extent,
};

/* Read PATH/r3dir.meta ("size chunk\n"); 0, -ENOENT, or -EINVAL. */
static int meta_read(int dfd, uint64_t *size, uint64_t *chunk)
{
    char buf[128] = { 0 };
    int fd = openat(dfd, DIR_META, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    unsigned long long s, c;
    if (n <= 0 || sscanf(buf, "%llu %llu", &s, &c) != 2)
        return -EINVAL;
    *size = s;
    *chunk = c;
    return 0;
}

static int meta_write(int dfd, uint64_t size, uint32_t chunk)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%llu %u\n", (unsigned long long)size, chunk);
    int fd = openat(dfd, DIR_META ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int rc = r3_pwrite_all(fd, buf, (size_t)n, 0);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && renameat(dfd, DIR_META ".tmp", dfd, DIR_META) < 0)
        rc = -errno;
    if (rc == 0 && fsync(dfd) < 0)
        rc = -errno;
    return rc;
}

int r3_dir_open(const struct r3_uri *u, struct r3_source **out)
{
    static const char *const allowed[] = { "size", "chunk", NULL };
    uint64_t size, msize = 0, mchunk = 0;
    uint32_t chunk;
    int rc = r3_uri_check_params(u, allowed);
    if (rc == 0)
        rc = r3_uri_size_chunk(u, false, &size, &chunk);
    if (rc < 0)
        return rc;
    if (!u->path || u->path[0] != '/')
        return r3_error(-EINVAL, "dir: needs an absolute path (dir:///path?size=1G)");

    bool made = false;
    int dfd = open(u->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 && errno == ENOENT) {
        if (size == 0)
            return r3_error(-ENOENT, "dir: %s does not exist (give ?size= to create it)", u->path);
        if (mkdir(u->path, 0755) < 0)
            return r3_error(-errno, "dir: cannot create %s: %s", u->path, strerror(errno));
        made = true;
        dfd = open(u->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (dfd < 0)
        return r3_error(-errno, "dir: cannot open %s: %s", u->path, strerror(errno));

    rc = meta_read(dfd, &msize, &mchunk);
    if (rc == 0) {
        if (size && size != msize)
            rc = r3_error(-EINVAL, "dir: %s holds %llu bytes, not size=%llu", u->path,
                          (unsigned long long)msize, (unsigned long long)size);
        else if (r3_uri_param(u, "chunk") && chunk != mchunk)
            rc = r3_error(-EINVAL, "dir: %s uses chunk %llu, not chunk=%u", u->path,
                          (unsigned long long)mchunk, chunk);
        else if (!r3_is_pow2(mchunk) || mchunk < 4096 || mchunk > (1u << 30) || msize == 0 || msize % mchunk)
            rc = r3_error(-EINVAL, "dir: %s/" DIR_META " is corrupt", u->path);
        size = msize;
        chunk = (uint32_t)mchunk;
    } else if (rc == -ENOENT && size) {
        rc = meta_write(dfd, size, chunk);
        if (rc < 0)
            r3_error(rc, "dir: cannot write to %s: %s", u->path, strerror(-rc));
    } else if (rc == -ENOENT) {
        rc = r3_error(-EINVAL, "dir: %s is not an r3 directory (give ?size= to make it one)", u->path);
    } else {
        rc = r3_error(rc, "dir: %s/" DIR_META " is unreadable or corrupt", u->path);
    }
    struct dir_source *d = rc == 0 ? calloc(1, sizeof *d) : NULL;
    if (rc == 0 && !d)
        rc = r3_error(-ENOMEM, "dir: out of memory");
    if (rc == 0 && !(d->path = strdup(u->path)))
        rc = r3_error(-ENOMEM, "dir: out of memory");
    if (rc < 0) {
        if (d)
            free(d);
        close(dfd);
        if (made)
            rmdir(u->path);
        return rc;
    }
    d->dfd = dfd;
    d->chunk = chunk;
    for (int i = 0; i < DIR_FDS; i++)
        d->fds[i].fd = -1;
    pthread_mutex_init(&d->lock, NULL);
    d->src.ops = &dir_ops;
    d->src.size = size;
    d->src.align = 1;
    d->src.flags = R3_SRC_PARALLEL;
    *out = &d->src;
    return 0;
}
