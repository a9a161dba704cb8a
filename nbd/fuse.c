/* SPDX-License-Identifier: BSD-3-Clause */
/* FUSE single-file bridge to an NBD export (see fuse.h). Inode 1 is the
 * mountpoint directory, inode 2 the file. */
#define FUSE_USE_VERSION 35
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"
#include "nbd/fuse.h"
#include "nbd/proto.h"

#define FILE_INO 2
/* Requests are at most this long (max_write; libfuse sets max_pages from it). */
#define READ_BUF (1u << 20)

struct r3_nbd_fuse {
    struct r3_nbd_fuse_opts o;
    struct fuse_session *se;
    char *mnt, *path, *name;
    uint64_t size;
    unsigned nthreads;            /* running (joined at unmount) */
    unsigned want;                /* to run once r3_nbd_fuse_grow is called */
    atomic_bool read_done;        /* a read was answered (r3_nbd_fuse_wait_read) */
    pthread_t *threads;
    atomic_uint alive;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool unmounted;
    unsigned waiters;             /* in r3_nbd_fuse_wait: unmount frees f only once they left */
    char dev[32];                 /* "0:N" of the FUSE connection */
    struct r3_nbd_client *_Atomic client;   /* NULL until attached */
    int client_err;               /* attach's error (under mu) */
    pthread_cond_t client_cv;
    struct timespec atime, mtime, ctime;   /* kept in memory: mount time, then real */
};

static void now(struct timespec *t)
{
    clock_gettime(CLOCK_REALTIME, t);
}

static void fill_attr(struct r3_nbd_fuse *f, fuse_ino_t ino, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_uid = getuid();
    st->st_gid = getgid();
    if (ino == FUSE_ROOT_ID) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | (f->o.readonly ? 0444 : 0644);
        st->st_nlink = 1;
        st->st_size = (off_t)f->size;
        st->st_blocks = (blkcnt_t)((f->size + 511) / 512);
        st->st_blksize = 65536;
    }
    pthread_mutex_lock(&f->mu);
    st->st_atim = f->atime;
    st->st_mtim = f->mtime;
    st->st_ctim = f->ctime;
    pthread_mutex_unlock(&f->mu);
}

/* The client, once attached (0), or the error it came with. */
static int get_client(struct r3_nbd_fuse *f, struct r3_nbd_client **c)
{
    if ((*c = atomic_load(&f->client)))
        return 0;
    pthread_mutex_lock(&f->mu);
    while (!(*c = atomic_load(&f->client)) && !f->client_err)
        pthread_cond_wait(&f->client_cv, &f->mu);
    int err = *c ? 0 : f->client_err;
    pthread_mutex_unlock(&f->mu);
    return err;
}

void r3_nbd_fuse_attach(struct r3_nbd_fuse *f, struct r3_nbd_client *c, int err)
{
    pthread_mutex_lock(&f->mu);
    if (c) {
        if (r3_nbd_client_flags(c) & NBD_FLAG_READ_ONLY)
            f->o.readonly = true;
        atomic_store(&f->client, c);
    } else {
        f->client_err = err < 0 ? err : -EIO;
    }
    pthread_cond_broadcast(&f->client_cv);
    pthread_mutex_unlock(&f->mu);
}

static void op_init(void *ud, struct fuse_conn_info *conn)
{
    /* Large requests: page-cache readahead and writeback in 1 MiB pieces. */
    conn->max_write = READ_BUF;
    conn->max_readahead = READ_BUF;
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    /* No writeback cache: with it the kernel keeps the file size itself, so
     * a write past the end would grow the file in the page cache and fail
     * only at writeback. Without it every write() reaches op_write, which
     * refuses bytes past the end at write time. (mmap writes still go
     * through the page cache.) */
    conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
    conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;   /* only we change the file */
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct r3_nbd_fuse *f = fuse_req_userdata(req);
    if (parent != FUSE_ROOT_ID || strcmp(name, f->name) != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    /* Attributes are cached 1 s: times change with writes. */
    struct fuse_entry_param e = { .ino = FILE_INO, .attr_timeout = 1, .entry_timeout = 3600 };
    fill_attr(f, FILE_INO, &e.attr);
    fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct r3_nbd_fuse *f = fuse_req_userdata(req);
    if (ino != FUSE_ROOT_ID && ino != FILE_INO) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st;
    fill_attr(f, ino, &st);
    fuse_reply_attr(req, &st, 1);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    struct r3_nbd_fuse *f = fuse_req_userdata(req);
    /* The size is the export's; modes are fixed; times are kept (in memory). */
    if ((to_set & FUSE_SET_ATTR_SIZE) && (uint64_t)attr->st_size != f->size) {
        fuse_reply_err(req, (uint64_t)attr->st_size > f->size ? EFBIG : EPERM);
        return;
    }
    if (ino == FILE_INO && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
                                      FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_SIZE))) {
        struct timespec t;
        now(&t);
        pthread_mutex_lock(&f->mu);
        if (to_set & FUSE_SET_ATTR_ATIME_NOW)
            f->atime = t;
        else if (to_set & FUSE_SET_ATTR_ATIME)
            f->atime = attr->st_atim;
        if (to_set & FUSE_SET_ATTR_MTIME_NOW)
            f->mtime = t;
        else if (to_set & FUSE_SET_ATTR_MTIME)
            f->mtime = attr->st_mtim;
        f->ctime = t;
        pthread_mutex_unlock(&f->mu);
    }
    op_getattr(req, ino, fi);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct r3_nbd_fuse *f = fuse_req_userdata(req);
    if (ino != FILE_INO) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if (f->o.readonly && (fi->flags & O_ACCMODE) != O_RDONLY) {
        fuse_reply_err(req, EROFS);
        return;
    }
    fi->keep_cache = 1;       /* the page cache stays valid across opens */
    fi->direct_io = 0;        /* page cache on: mmap MAP_SHARED works */
    fuse_reply_open(req, fi);
}

static __thread char *thread_buf;   /* a FUSE thread's read buffer (READ_BUF) */

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    struct r3_nbd_fuse *f = fuse_req_userdata(req);
    if ((uint64_t)off >= f->size) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if (size > f->size - (uint64_t)off)
        size = (size_t)(f->size - (uint64_t)off);
    struct r3_nbd_client *c;
    int rc = get_client(f, &c);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    /* The thread's own buffer (see loop); a larger read has its own. */
    char *buf = size <= READ_BUF && thread_buf ? thread_buf : malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    rc = r3_nbd_client_pread(c, buf, size, (uint64_t)off);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_buf(req, buf, size);
    if (buf != thread_buf)
        free(buf);
    if (!atomic_load(&f->read_done)) {
        pthread_mutex_lock(&f->mu);
        atomic_store(&f->read_done, true);
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
    }
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    struct r3_nbd_fuse *f = fuse_req_userdata(req);
    /* The export's size is fixed: bytes past the end fail now (a write that
     * starts inside writes what fits, as on a block device). */
    if ((uint64_t)off >= f->size && size) {
        fuse_reply_err(req, ENOSPC);
        return;
    }
    if (size > f->size - (uint64_t)off)
        size = (size_t)(f->size - (uint64_t)off);
    struct r3_nbd_client *c;
    int rc = get_client(f, &c);
    if (rc == 0)
        rc = r3_nbd_client_pwrite(c, buf, size, (uint64_t)off, false);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    struct timespec t;
    now(&t);
    pthread_mutex_lock(&f->mu);
    f->mtime = f->ctime = t;
    pthread_mutex_unlock(&f->mu);
    fuse_reply_write(req, size);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    struct r3_nbd_fuse *f = fuse_req_userdata(req);
    struct r3_nbd_client *c;
    int rc = get_client(f, &c);
    if (rc == 0)
        rc = r3_nbd_client_flush(c);
    fuse_reply_err(req, rc < 0 ? -rc : 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (ino != FUSE_ROOT_ID)
        fuse_reply_err(req, ENOTDIR);
    else
        fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    struct r3_nbd_fuse *f = fuse_req_userdata(req);
    char buf[1024];
    size_t n = 0;
    const char *names[3] = { ".", "..", f->name };
    for (off_t i = off; i < 3; i++) {
        struct stat st;
        fill_attr(f, i == 2 ? FILE_INO : FUSE_ROOT_ID, &st);
        size_t e = fuse_add_direntry(req, buf + n, sizeof buf - n, names[i], &st, i + 1);
        if (e > sizeof buf - n || n + e > size)
            break;
        n += e;
    }
    fuse_reply_buf(req, buf, n);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct r3_nbd_fuse *f = fuse_req_userdata(req);
    struct statvfs sv = { .f_bsize = 4096, .f_frsize = 4096, .f_blocks = f->size / 4096,
                          .f_files = 2, .f_namemax = 255 };
    fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init, .lookup = op_lookup, .getattr = op_getattr, .setattr = op_setattr,
    .open = op_open, .read = op_read, .write = op_write, .fsync = op_fsync, .flush = op_flush,
    .release = op_release, .opendir = op_opendir, .readdir = op_readdir, .statfs = op_statfs,
};

static void *loop(void *arg)
{
    struct r3_nbd_fuse *f = arg;
    struct fuse_buf fb = { .mem = NULL };
    pthread_setname_np(pthread_self(), R3_NBD_FUSE_THREAD_NAME);
    /* The read buffer, its pages present before the first read: a fresh
     * 1 MiB malloc per read came back from the kernel as new zeroed pages
     * each time (glibc trims the heap), and faulting them in one by one as
     * a reply filled them took 2.9 ms of a region's first read (exp. 6). */
    void *p = mmap(NULL, READ_BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    thread_buf = p == MAP_FAILED ? NULL : p;
    while (!fuse_session_exited(f->se)) {
        int rc = fuse_session_receive_buf(f->se, &fb);
        if (rc == -EINTR || rc == -EAGAIN)
            continue;
        if (rc <= 0)
            break;                /* -ENODEV: unmounted */
        fuse_session_process_buf(f->se, &fb);
    }
    free(fb.mem);
    if (thread_buf)
        munmap(thread_buf, READ_BUF);
    thread_buf = NULL;
    fuse_session_exit(f->se);
    if (atomic_fetch_sub(&f->alive, 1) == 1) {
        pthread_mutex_lock(&f->mu);
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
    }
    return NULL;
}

/* FUSE mounts get a writeback device with a strict 1% dirty limit, which
 * throttles writers of a mapping long before the page cache is busy. Our
 * mount's own device may have the normal limits (root only; best effort). */
static void tune_bdi(const char *mnt, char *dev_out, size_t devn)
{
    /* The device number comes from mountinfo: a stat() of the mountpoint
     * would be a FUSE request, and no thread serves them yet. */
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[4096], dev[32] = "";
    while (f && fgets(line, sizeof line, f)) {
        char d[32], m[2048];
        if (sscanf(line, "%*s %*s %31s %*s %2047s", d, m) == 2 && strcmp(m, mnt) == 0)
            snprintf(dev, sizeof dev, "%s", d);           /* the last one mounted there */
    }
    if (f)
        fclose(f);
    snprintf(dev_out, devn, "%s", dev);
    if (geteuid() != 0)
        return;
    static const char *const knobs[][2] = { { "strict_limit", "0" }, { "max_ratio", "100" } };
    for (size_t i = 0; dev[0] && i < 2; i++) {
        char p[128];
        snprintf(p, sizeof p, "/sys/class/bdi/%s/%s", dev, knobs[i][0]);
        int fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t w = write(fd, knobs[i][1], strlen(knobs[i][1]));
            (void)w;
            close(fd);
        }
    }
}

/* Starts threads up to n in all; the number now running. */
static unsigned start_threads(struct r3_nbd_fuse *f, unsigned n)
{
    while (f->nthreads < n) {
        atomic_fetch_add(&f->alive, 1);
        if (r3_thread_create(&f->threads[f->nthreads], loop, f) < 0) {
            atomic_fetch_sub(&f->alive, 1);
            break;
        }
        f->nthreads++;
    }
    return f->nthreads;
}

void r3_nbd_fuse_wait_read(struct r3_nbd_fuse *f, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&f->mu);
    while (!atomic_load(&f->read_done) && !f->unmounted && atomic_load(&f->alive) > 0)
        if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) != 0)
            break;
    pthread_mutex_unlock(&f->mu);
}

void r3_nbd_fuse_grow(struct r3_nbd_fuse *f)
{
    if (f)
        start_threads(f, f->want);       /* fewer is fine: one serves */
}

int r3_nbd_fuse_mount(const struct r3_nbd_fuse_opts *o, struct r3_nbd_fuse **out)
{
    *out = NULL;
    struct r3_nbd_fuse *f = calloc(1, sizeof *f);
    if (!f)
        return r3_error(-ENOMEM, "fuse: out of memory");
    f->o = *o;
    f->size = o->client ? r3_nbd_client_size(o->client) : o->size;
    atomic_store(&f->client, o->client);
    f->name = strdup(o->name ? o->name : "disk");
    f->mnt = realpath(o->mountpoint, NULL);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    pthread_cond_init(&f->client_cv, NULL);
    now(&f->mtime);
    f->atime = f->ctime = f->mtime;
    int rc = 0;
    if (!f->mnt) {
        rc = r3_error(-errno, "fuse: mountpoint %s: %s", o->mountpoint, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (stat(f->mnt, &st) != 0 || !S_ISDIR(st.st_mode)) {
        /* The kernel mounts a file-system root onto a file too: the disk
         * file would then be a path nobody can open. */
        rc = r3_error(-ENOTDIR, "fuse: mountpoint %s is not a directory", o->mountpoint);
        goto fail;
    }
    if (!f->name || !f->name[0] || strchr(f->name, '/')) {
        rc = r3_error(-EINVAL, "fuse: bad file name");
        goto fail;
    }
    if (asprintf(&f->path, "%s/%s", f->mnt, f->name) < 0) {
        f->path = NULL;
        rc = r3_error(-ENOMEM, "fuse: out of memory");
        goto fail;
    }
    if (access("/dev/fuse", R_OK | W_OK) != 0) {
        rc = r3_error(-ENODEV, "fuse: /dev/fuse is not available: %s", strerror(errno));
        goto fail;
    }
    char opt[512];
    snprintf(opt, sizeof opt, "fsname=%s,subtype=r3nbd%s", o->fsname ? o->fsname : "r3nbd",
             geteuid() == 0 ? ",allow_other" : "");
    char *argv[] = { "r3nbd", "-o", opt, NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    f->se = fuse_session_new(&args, &ops, sizeof ops, f);
    fuse_opt_free_args(&args);        /* libfuse may have copied them */
    if (!f->se) {
        rc = r3_error(-EIO, "fuse: cannot create a session");
        goto fail;
    }
    if (fuse_session_mount(f->se, f->mnt) != 0) {
        fuse_session_destroy(f->se);
        f->se = NULL;
        rc = r3_error(-EIO, "fuse: cannot mount on %s (see the message above)", f->mnt);
        goto fail;
    }
    tune_bdi(f->mnt, f->dev, sizeof f->dev);
    /* One thread serves the first requests (the owner's open); the others
     * start in r3_nbd_fuse_grow, off the open's path: each start is a
     * stack mapping and a clone, about 0.3 ms here, and all four took a
     * fifth of an nbd region's open (exp. 6). */
    f->want = o->threads ? o->threads : R3_NBD_FUSE_THREADS;
    f->threads = calloc(f->want, sizeof *f->threads);
    if (!f->threads || start_threads(f, 1) == 0) {
        rc = r3_error(-EAGAIN, "fuse: cannot start threads");
        fuse_session_unmount(f->se);
        fuse_session_destroy(f->se);
        f->se = NULL;
        goto fail;
    }
    *out = f;
    return 0;
fail:
    free(f->threads);
    free(f->mnt);
    free(f->path);
    free(f->name);
    free(f);
    return rc;
}

const char *r3_nbd_fuse_path(const struct r3_nbd_fuse *f)
{
    return f->path;
}

void r3_nbd_fuse_wait(struct r3_nbd_fuse *f)
{
    pthread_mutex_lock(&f->mu);
    f->waiters++;
    while (atomic_load(&f->alive) > 0 && !f->unmounted)
        pthread_cond_wait(&f->cv, &f->mu);
    f->waiters--;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

void r3_nbd_fuse_unmount(struct r3_nbd_fuse *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->unmounted = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    fuse_session_exit(f->se);
    /* Unmounting ends the kernel connection, which wakes every thread
     * blocked reading /dev/fuse with ENODEV. A plain umount first (dirty
     * pages are written back through our threads); if someone still holds
     * the file, MNT_FORCE aborts the connection (their I/O fails from now
     * on) and the mount is detached: nothing stays busy. Without root,
     * libfuse's fusermount3 does a lazy unmount. */
    if (geteuid() == 0 && umount2(f->mnt, 0) < 0 && errno == EBUSY) {
        umount2(f->mnt, MNT_FORCE);
        umount2(f->mnt, MNT_DETACH);
    }
    fuse_session_unmount(f->se);
    /* A lazy unmount keeps the connection while someone still holds the
     * file open; then abort it (fusectl) so no thread and no mount stay. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 2;
    for (unsigned i = 0; i < f->nthreads; i++) {
        if (pthread_timedjoin_np(f->threads[i], NULL, &ts) == 0)
            continue;
        const char *minor = strchr(f->dev, ':');
        char p[96];
        snprintf(p, sizeof p, "/sys/fs/fuse/connections/%s/abort", minor ? minor + 1 : "none");
        int fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t w = write(fd, "1", 1);
            (void)w;
            close(fd);
        }
        pthread_join(f->threads[i], NULL);
    }
    pthread_mutex_lock(&f->mu);           /* a waiter woken above may still be inside f->mu */
    while (f->waiters > 0)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    fuse_session_destroy(f->se);
    free(f->threads);
    free(f->mnt);
    free(f->path);
    free(f->name);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    pthread_cond_destroy(&f->client_cv);
    free(f);
}
