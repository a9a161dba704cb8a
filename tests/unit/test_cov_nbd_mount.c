/* SPDX-License-Identifier: BSD-3-Clause */
/* The mount side of nbd/ through its public entry points (nbd/mount.h,
 * nbd/kernel.h, the nbd strategies' option checks): a real in-process
 * server on a Unix socket, a FUSE file read and written with plain system
 * calls and checked through the source (the other path), every request the
 * FUSE file refuses with its errno (wrong name, resize, past the end,
 * read-only), a mount prepared before its server (reads wait, a size that
 * does not match fails every request), an unreachable or vanished server,
 * and the kernel path where this machine has no /dev/nbd* (the refusal
 * with its sentence). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include "testutil.h"
#include "tu_threads.h"
#include "internal.h"
#include "nbd/proto.h"
#include "nbd/server.h"
#include "nbd/mount.h"
#include "nbd/kernel.h"
#include "nbd/fuse.h"

#define SIZE (1u << 20)

static char *dir;
static char sock_path[256], mnt[256], file[300];
static struct r3_source *msrc;
static struct r3_nbd_server *srv;

#define ERR_HAS(s) ck_assert_msg(strstr(r3_last_error(), (s)), "error '%s' lacks '%s'", r3_last_error(), (s))

static void setup(void)
{
    dir = tu_tmpdir();
    ck_assert_ptr_nonnull(dir);
    snprintf(sock_path, sizeof sock_path, "%s/s", dir);
    snprintf(mnt, sizeof mnt, "%s/mnt", dir);
    snprintf(file, sizeof file, "%s/disk", mnt);
    ck_assert_int_eq(mkdir(mnt, 0700), 0);
    TU_OPEN("mem:?size=1M", &msrc);
    char *m = malloc(SIZE);
    tu_fill(m, SIZE, 0, 5);
    ck_assert_int_eq(r3_source_write(msrc, m, SIZE, 0), 0);
    free(m);
}

static void teardown(void)
{
    r3_nbd_server_stop(srv);
    srv = NULL;
    r3_source_close(msrc);
    tu_rmrf(dir);
    free(dir);
}

static void serve(bool readonly)
{
    static struct r3_nbd_export e;
    e = (struct r3_nbd_export){ .name = "", .src = msrc, .readonly = readonly };
    struct r3_nbd_server_opts o = { .listen = sock_path, .exports = &e, .nexports = 1 };
    ck_assert_msg(r3_nbd_server_start(&o, &srv) == 0, "%s", r3_last_error());
}

static struct r3_nbd_mount_opts mopts(void)
{
    return (struct r3_nbd_mount_opts){
        .client = { .unix_path = sock_path, .connect_timeout_ms = 10000, .timeout_ms = 10000 },
        .mode = R3_NBD_MOUNT_FUSE, .mountpoint = mnt, .fsname = "r3:covtest",
    };
}

static bool mounted(void)
{
    FILE *f = fopen("/proc/self/mounts", "r");
    ck_assert_ptr_nonnull(f);
    char line[1024];
    bool found = false;
    while (fgets(line, sizeof line, f))
        if (strstr(line, mnt) && strstr(line, "r3:covtest"))
            found = true;
    fclose(f);
    return found;
}

/* ---- no mount needed */

START_TEST(mode_parse)
{
    ck_assert_int_eq(r3_nbd_mount_mode_parse(NULL), R3_NBD_MOUNT_AUTO);
    ck_assert_int_eq(r3_nbd_mount_mode_parse("auto"), R3_NBD_MOUNT_AUTO);
    ck_assert_int_eq(r3_nbd_mount_mode_parse("fuse"), R3_NBD_MOUNT_FUSE);
    ck_assert_int_eq(r3_nbd_mount_mode_parse("kernel"), R3_NBD_MOUNT_KERNEL);
    ck_assert_int_eq(r3_nbd_mount_mode_parse("Fuse"), -EINVAL);
    ck_assert_str_eq(r3_last_error(), "mount mode 'Fuse' is not auto, fuse or kernel");
}
END_TEST

/* This machine has no /dev/nbd*: the kernel mode is refused with a
 * sentence, before any connection; the raw calls say what is missing. */
START_TEST(kernel_absent)
{
    if (r3_nbd_kernel_available())
        return;                            /* the device path is tested by nbd_kernel.sh */
    serve(false);
    struct r3_nbd_mount_opts o = mopts();
    o.mode = R3_NBD_MOUNT_KERNEL;
    struct r3_nbd_mount *m = (void *)1;
    ck_assert_int_eq(r3_nbd_mount_open(&o, &m), -ENODEV);
    ck_assert_ptr_null(m);
    ck_assert_str_eq(r3_last_error(), "nbd mount: no kernel NBD support here (no nbd module or /dev/nbd0)");
    ck_assert_uint_eq(r3_nbd_server_conns(srv), 0);
    /* prepare cannot do the kernel's mount (it needs the connection first) */
    m = (void *)1;
    o.size = SIZE;
    ck_assert_int_eq(r3_nbd_mount_prepare(&o, &m), -EOPNOTSUPP);
    ck_assert_ptr_null(m);
    /* AUTO falls back to FUSE here, so prepare goes on to check the size */
    o.mode = R3_NBD_MOUNT_AUTO;
    o.size = 0;
    ck_assert_int_eq(r3_nbd_mount_prepare(&o, &m), -EINVAL);
    ck_assert_str_eq(r3_last_error(), "nbd mount: prepare needs the export's size");

    int idx = -1;
    int rc = r3_nbd_kernel_connect(-1, SIZE, 0, 100, &idx);
    ck_assert_int_lt(rc, 0);
    ck_assert_int_eq(idx, -1);
    if (rc == -ENODEV)
        ck_assert_str_eq(r3_last_error(), "nbd: the kernel has no nbd module loaded (genl family 'nbd' is missing)");
    else                                   /* module loaded, no device node: the kernel says no */
        ERR_HAS("nbd: the kernel refused the connection: ");
    rc = r3_nbd_kernel_disconnect(0, 100);
    ck_assert_int_lt(rc, 0);
    if (rc == -ENODEV)
        ck_assert_str_eq(r3_last_error(), "nbd: the nbd module is gone");
    else
        ERR_HAS("nbd: cannot disconnect /dev/nbd0: ");
}
END_TEST

START_TEST(unreachable)
{
    /* no server on the socket: the client's sentence, nothing mounted */
    struct r3_nbd_mount_opts o = mopts();
    struct r3_nbd_mount *m = (void *)1;
    ck_assert_int_lt(r3_nbd_mount_open(&o, &m), 0);
    ck_assert_ptr_null(m);
    ERR_HAS(sock_path);
    ck_assert(!mounted());
    /* a refused export name */
    serve(false);
    o.client.export_name = "nope";
    ck_assert_int_eq(r3_nbd_mount_open(&o, &m), -ENOENT);
    ck_assert_ptr_null(m);
    ERR_HAS("nope");
    ck_assert(!mounted());
    /* the server is fine, the mount is not: the connection is given back */
    o.client.export_name = NULL;
    o.name = "a/b";
    ck_assert_int_eq(r3_nbd_mount_open(&o, &m), -EINVAL);
    ck_assert_str_eq(r3_last_error(), "fuse: bad file name");
    o.name = "";
    ck_assert_int_eq(r3_nbd_mount_open(&o, &m), -EINVAL);
    o.name = NULL;
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none", dir);
    o.mountpoint = missing;
    ck_assert_int_eq(r3_nbd_mount_open(&o, &m), -ENOENT);
    char want[400];
    snprintf(want, sizeof want, "fuse: mountpoint %s: No such file or directory", missing);
    ck_assert_str_eq(r3_last_error(), want);
    ck_assert_ptr_null(m);
    /* a regular file as the mountpoint: the kernel would mount onto it */
    char plain[300];
    snprintf(plain, sizeof plain, "%s/plain", dir);
    int pfd = open(plain, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    ck_assert_int_ge(pfd, 0);
    close(pfd);
    o.mountpoint = plain;
    ck_assert_int_eq(r3_nbd_mount_open(&o, &m), -ENOTDIR);
    snprintf(want, sizeof want, "fuse: mountpoint %s is not a directory", plain);
    ck_assert_str_eq(r3_last_error(), want);
    ck_assert_ptr_null(m);
    ck_assert_int_ne(umount2(plain, MNT_DETACH), 0);     /* nothing was mounted there */
    unlink(plain);
    /* every refused mount closed its connection: none is left on the server */
    for (int i = 0; i < 2000 && r3_nbd_server_conns(srv) > 0; i++)
        usleep(5000);
    ck_assert_uint_eq(r3_nbd_server_conns(srv), 0);
}
END_TEST

/* ---- a FUSE mount of a live export */

START_TEST(fuse_file)
{
    serve(false);
    struct r3_nbd_mount_opts o = mopts();
    struct r3_nbd_mount *m;
    ck_assert_msg(r3_nbd_mount_open(&o, &m) == 0, "%s", r3_last_error());
    ck_assert(!r3_nbd_mount_is_kernel(m));
    ck_assert_str_eq(r3_nbd_mount_path(m), file);
    ck_assert(mounted());

    struct stat st;
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_int_eq(st.st_size, SIZE);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_int_eq(stat(mnt, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    /* only the one name exists */
    char other[300];
    snprintf(other, sizeof other, "%s/other", mnt);
    ck_assert_int_eq(stat(other, &st), -1);
    ck_assert_int_eq(errno, ENOENT);
    DIR *d = opendir(mnt);
    ck_assert_ptr_nonnull(d);
    int names = 0;
    bool disk = false;
    for (struct dirent *e; (e = readdir(d));) {
        names++;
        disk |= strcmp(e->d_name, "disk") == 0;
    }
    closedir(d);
    ck_assert_int_eq(names, 3);
    ck_assert(disk);
    struct statvfs sv;
    ck_assert_int_eq(statvfs(mnt, &sv), 0);
    ck_assert_uint_eq(sv.f_blocks * sv.f_frsize, SIZE);

    int fd = open(file, O_RDWR);
    ck_assert_int_ge(fd, 0);
    /* the export's bytes */
    char *b = malloc(SIZE);
    ck_assert_int_eq(pread(fd, b, SIZE, 0), SIZE);
    ck_assert_int_eq(tu_check(b, SIZE, 0, 5), -1);
    ck_assert_int_eq(pread(fd, b, 4096, SIZE), 0);            /* at the end: nothing */
    /* the size is the export's: no resize either way, the same size is fine */
    ck_assert_int_eq(ftruncate(fd, 2 * SIZE), -1);
    ck_assert_int_eq(errno, EFBIG);
    ck_assert_int_eq(ftruncate(fd, SIZE / 2), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(ftruncate(fd, SIZE), 0);
    /* times are kept */
    struct timespec ts[2] = { { 1000000, 0 }, { 2000000, 0 } };
    ck_assert_int_eq(futimens(fd, ts), 0);
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_int_eq(st.st_mtim.tv_sec, 2000000);
    ck_assert_int_eq(st.st_atim.tv_sec, 1000000);
    ck_assert_int_eq(futimens(fd, NULL), 0);
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_int_gt(st.st_mtim.tv_sec, 2000000);
    /* writes: past the end refused, across the end cut to what fits */
    tu_fill(b, 8192, 0, 11);
    ck_assert_int_eq(pwrite(fd, b, 4096, SIZE), -1);
    ck_assert_int_eq(errno, ENOSPC);
    ck_assert_int_eq(pwrite(fd, b, 8192, SIZE - 4096), 4096);
    ck_assert_int_eq(pwrite(fd, b, 8192, 65536), 8192);
    ck_assert_int_eq(fsync(fd), 0);
    close(fd);
    /* read back through the source, not the mount */
    char *s = malloc(8192);
    ck_assert_int_eq(r3_source_read(msrc, s, 8192, 65536), 0);
    ck_assert_int_eq(memcmp(s, b, 8192), 0);
    ck_assert_int_eq(r3_source_read(msrc, s, 4096, SIZE - 4096), 0);
    ck_assert_int_eq(memcmp(s, b, 4096), 0);
    free(s);
    free(b);
    ck_assert_int_eq(r3_nbd_mount_close(m), 0);
    ck_assert(!mounted());
    ck_assert_int_eq(r3_nbd_mount_close(NULL), 0);
    r3_nbd_fuse_unmount(NULL);                 /* nothing to do, no crash */
}
END_TEST

START_TEST(fuse_readonly)
{
    serve(true);
    struct r3_nbd_mount_opts o = mopts();
    o.name = "ro";
    if (!r3_nbd_kernel_available())
        o.mode = R3_NBD_MOUNT_AUTO;        /* AUTO is FUSE where the kernel has no NBD */
    struct r3_nbd_mount *m;
    ck_assert_msg(r3_nbd_mount_open(&o, &m) == 0, "%s", r3_last_error());
    char p[300];
    snprintf(p, sizeof p, "%s/ro", mnt);
    ck_assert_str_eq(r3_nbd_mount_path(m), p);
    ck_assert_int_eq(open(p, O_RDWR), -1);
    ck_assert_int_eq(errno, EROFS);
    int fd = open(p, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    char b[4096];
    ck_assert_int_eq(pread(fd, b, sizeof b, 8192), (ssize_t)sizeof b);
    ck_assert_int_eq(tu_check(b, sizeof b, 8192, 5), -1);
    close(fd);
    ck_assert_int_eq(r3_nbd_mount_close(m), 0);
}
END_TEST

/* The server goes away under a mount: a read not in the page cache fails
 * with EIO (not a hang), the mount still unmounts. */
START_TEST(fuse_server_gone)
{
    serve(false);
    struct r3_nbd_mount_opts o = mopts();
    o.client.timeout_ms = 5000;
    struct r3_nbd_mount *m;
    ck_assert_msg(r3_nbd_mount_open(&o, &m) == 0, "%s", r3_last_error());
    int fd = open(file, O_RDWR);
    ck_assert_int_ge(fd, 0);
    char b[4096];
    ck_assert_int_eq(pread(fd, b, sizeof b, 0), (ssize_t)sizeof b);
    r3_nbd_server_stop(srv);
    srv = NULL;
    ck_assert_int_eq(pread(fd, b, sizeof b, SIZE / 2), -1);
    ck_assert_int_eq(errno, EIO);
    ck_assert_int_eq(pwrite(fd, b, sizeof b, 0), -1);          /* writes too */
    ck_assert_int_eq(errno, EIO);
    ck_assert_int_eq(fsync(fd), -1);
    ck_assert_int_eq(errno, EIO);
    close(fd);
    ck_assert_int_eq(r3_nbd_mount_close(m), 0);
    ck_assert(!mounted());
}
END_TEST

/* ---- prepared before the server */

struct rd { int fd; char buf[4096]; ssize_t n; int err; };

static void *reader(void *arg)
{
    struct rd *r = arg;
    r->n = pread(r->fd, r->buf, sizeof r->buf, 12288);
    r->err = errno;
    return NULL;
}

START_TEST(prepare_then_connect)
{
    struct r3_nbd_mount_opts o = mopts();
    o.size = SIZE;
    struct r3_nbd_mount *m;
    ck_assert_msg(r3_nbd_mount_prepare(&o, &m) == 0, "%s", r3_last_error());
    ck_assert(mounted());
    struct stat st;
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_int_eq(st.st_size, SIZE);
    /* a read before the server is up waits for it */
    struct rd r = { .fd = open(file, O_RDONLY) };
    ck_assert_int_ge(r.fd, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, reader, &r), 0);
    serve(false);
    ck_assert_msg(r3_nbd_mount_connect(m, &o) == 0, "%s", r3_last_error());
    pthread_join(t, NULL);
    ck_assert_int_eq(r.n, (ssize_t)sizeof r.buf);
    ck_assert_int_eq(tu_check(r.buf, sizeof r.buf, 12288, 5), -1);
    close(r.fd);
    ck_assert_int_eq(r3_nbd_mount_close(m), 0);
    ck_assert(!mounted());
}
END_TEST

/* This process's FUSE request threads (by their name). */
static int nthreads_here(void)
{
    DIR *d = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        char p[300], name[64] = "";
        snprintf(p, sizeof p, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = e->d_name[0] != '.' ? fopen(p, "r") : NULL;
        if (f && fgets(name, sizeof name, f))
            n += strcmp(name, R3_NBD_FUSE_THREAD_NAME "\n") == 0;
        if (f)
            fclose(f);
    }
    closedir(d);
    return n;
}

/* A thread names itself once it runs: wait for that (bounded). */
static void expect_threads(int want)
{
    for (int i = 0; i < 2000 && nthreads_here() != want; i++)
        usleep(1000);
    ck_assert_int_eq(nthreads_here(), want);
}

/* A prepared mount serves with one thread; grow waits for the first read
 * (or its bound) and then starts the rest. */
START_TEST(prepare_grows)
{
    serve(false);
    struct r3_nbd_mount_opts o = mopts();
    o.size = SIZE;
    o.fuse_threads = 3;
    struct r3_nbd_mount *m;
    expect_threads(0);
    ck_assert_msg(r3_nbd_mount_prepare(&o, &m) == 0, "%s", r3_last_error());
    expect_threads(1);
    ck_assert_msg(r3_nbd_mount_connect(m, &o) == 0, "%s", r3_last_error());
    /* no read yet: grow waits out its bound */
    uint64_t t0 = r3_now_ns();
    r3_nbd_mount_grow(m, 100);
    uint64_t waited = r3_now_ns() - t0;
    ck_assert_msg(waited >= 90000000u, "grow waited %llu ns, not 100 ms", (unsigned long long)waited);
    expect_threads(3);
    ck_assert_int_eq(r3_nbd_mount_close(m), 0);
    expect_threads(0);

    /* a read answered: grow does not wait */
    ck_assert_msg(r3_nbd_mount_prepare(&o, &m) == 0, "%s", r3_last_error());
    ck_assert_msg(r3_nbd_mount_connect(m, &o) == 0, "%s", r3_last_error());
    int fd = open(file, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    char buf[4096];
    ck_assert_int_eq(pread(fd, buf, sizeof buf, 8192), (ssize_t)sizeof buf);
    ck_assert_int_eq(tu_check(buf, sizeof buf, 8192, 5), -1);
    expect_threads(1);
    t0 = r3_now_ns();
    r3_nbd_mount_grow(m, 20000);
    waited = r3_now_ns() - t0;
    ck_assert_msg(waited < 5000000000u, "grow waited %llu ns after a read", (unsigned long long)waited);
    expect_threads(3);
    /* the grown mount serves reads from several threads */
    ck_assert_int_eq(pread(fd, buf, sizeof buf, 4096 * 7), (ssize_t)sizeof buf);
    ck_assert_int_eq(tu_check(buf, sizeof buf, 4096 * 7, 5), -1);
    close(fd);
    ck_assert_int_eq(r3_nbd_mount_close(m), 0);
    ck_assert(!mounted());
}
END_TEST

START_TEST(prepare_wrong_size)
{
    serve(false);
    struct r3_nbd_mount_opts o = mopts();
    o.size = 2 * SIZE;
    struct r3_nbd_mount *m;
    ck_assert_msg(r3_nbd_mount_prepare(&o, &m) == 0, "%s", r3_last_error());
    ck_assert_int_eq(r3_nbd_mount_connect(m, &o), -EPROTO);
    ck_assert_str_eq(r3_last_error(), "nbd mount: the export has 1048576 bytes, the mount was made for 2097152");
    /* the mount stays, every request fails with the connect's error */
    int fd = open(file, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    char b[512];
    ck_assert_int_eq(pread(fd, b, sizeof b, 0), -1);
    ck_assert_int_eq(errno, EPROTO);
    close(fd);
    ck_assert_int_eq(r3_nbd_mount_close(m), 0);
    ck_assert(!mounted());
    for (int i = 0; i < 2000 && r3_nbd_server_conns(srv) > 0; i++)
        usleep(5000);
    ck_assert_uint_eq(r3_nbd_server_conns(srv), 0);
}
END_TEST

START_TEST(prepare_never_connected)
{
    struct r3_nbd_mount_opts o = mopts();
    o.size = SIZE;
    o.readonly = true;
    struct r3_nbd_mount *m;
    ck_assert_msg(r3_nbd_mount_prepare(&o, &m) == 0, "%s", r3_last_error());
    ck_assert_int_eq(open(file, O_WRONLY), -1);
    ck_assert_int_eq(errno, EROFS);
    ck_assert_int_eq(r3_nbd_mount_close(m), 0);
    ck_assert(!mounted());
    /* a prepare on a missing mountpoint */
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none", dir);
    o.mountpoint = missing;
    m = (void *)1;
    ck_assert_int_eq(r3_nbd_mount_prepare(&o, &m), -ENOENT);
    ck_assert_ptr_null(m);
    ERR_HAS("fuse: mountpoint ");
}
END_TEST

/* No FUSE thread can start (every new thread's stack would be larger than
 * the address space): the prepare says so, and no mount is left behind. */
START_TEST(prepare_no_threads)
{
    struct r3_nbd_mount_opts o = mopts();
    o.size = SIZE;
    pthread_attr_t old;
    tu_threads_refuse(&old);
    struct r3_nbd_mount *m = (void *)1;
    int rc = r3_nbd_mount_prepare(&o, &m);
    tu_threads_restore(&old);
    ck_assert_int_eq(rc, -EAGAIN);
    ck_assert_ptr_null(m);
    ERR_HAS("fuse: cannot start threads");
    ck_assert(!mounted());
}
END_TEST

/* ---- the nbd strategies' option checks (before anything is started) */

START_TEST(strategy_refusals)
{
    static const struct {
        const char *strategy;
        int what;
        const char *msg;
    } t[] = {
        { "nbd-direct", 1, "nbd-direct cannot record an access log (record_access): only the uffd strategy sees first touches" },
        { "nbd-managed", 2, "nbd-managed cannot replay an access log (prefetch=hot): only the uffd strategy can" },
        { "nbd-direct", 3, "nbd-direct cannot replay an access log (prefetch=hot): only the uffd strategy can" },
        { "nbd-managed", 4, "nbd-managed: unknown prefetch mode 77" },
        { "nbd-direct", 5, "nbd-direct has no fault threads (fault_threads is an option of the uffd strategy)" },
        { "nbd-direct", 6, "nbd-direct serves the source as is: pull_workers needs nbd-managed" },
        { "nbd-direct", 7, "nbd-direct serves the source as is: push_interval_ms needs nbd-managed" },
        { "nbd-direct", 8, "nbd-direct serves the source as is: push_workers needs nbd-managed" },
        { "nbd-managed", 9, "mount mode 'floppy' is not auto, fuse or kernel" },
        { "nbd-direct", 10, "nbd region: cannot make a directory in /nonexistent/r3: No such file or directory" },
        { "nbd-managed", 11, NULL },           /* a scratch path too long for a Unix socket */
    };
    char longdir[300];
    snprintf(longdir, sizeof longdir, "%s/%0100d", dir, 0);
    ck_assert_int_eq(mkdir(longdir, 0700), 0);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct r3_region_opts o;
        r3_region_opts_init(&o);
        o.strategy = t[i].strategy;
        switch (t[i].what) {
        case 1: o.record_access = "/tmp/x"; break;
        case 2: o.prefetch = R3_PREFETCH_HOT; break;
        case 3: o.prefetch_file = "/tmp/x"; break;
        case 4: o.prefetch = 77; break;
        case 5: o.fault_threads = 3; break;
        case 6: o.pull_workers = 2; break;
        case 7: o.push_interval_ms = 100; break;
        case 8: o.push_workers = 2; break;
        case 9: o.nbd_mount = "floppy"; break;
        case 10: o.workdir = "/nonexistent/r3"; break;
        case 11: o.workdir = longdir; break;
        }
        struct r3_source *src;
        TU_OPEN("mem:?size=256K", &src);
        struct r3_region *r = (void *)1;
        int rc = r3_region_open(&o, src, &r);          /* the source is the region's, even on failure */
        ck_assert_msg(rc < 0, "case %zu opened", i);
        ck_assert_ptr_null(r);
        /* case 11: the server cannot listen there, and says so (the
         * helper's stop in the teardown does not replace its sentence) */
        if (t[i].what == 11)
            ck_assert_msg(strstr(r3_last_error(), "socket path is longer than"), "case %zu: '%s'", i, r3_last_error());
        if (t[i].msg)
            ck_assert_msg(strcmp(r3_last_error(), t[i].msg) == 0, "case %zu: '%s'", i, r3_last_error());
    }
    FILE *f = fopen("/proc/self/mounts", "r");
    char line[1024];
    while (fgets(line, sizeof line, f))
        ck_assert_msg(!strstr(line, "00000000"), "still mounted: %s", line);
    fclose(f);
    /* nothing is left of the failed opens: no scratch directory, no mount */
    ck_assert_int_eq(rmdir(longdir), 0);
}
END_TEST

/* r3_nbd_mount_wait returns when the file is unmounted from outside. */
static void *waiter(void *arg)
{
    r3_nbd_mount_wait(arg);
    return NULL;
}

START_TEST(fuse_unmounted_outside)
{
    serve(false);
    struct r3_nbd_mount_opts o = mopts();
    struct r3_nbd_mount *m;
    ck_assert_msg(r3_nbd_mount_open(&o, &m) == 0, "%s", r3_last_error());
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, waiter, m), 0);
    ck_assert_int_eq(umount2(mnt, 0), 0);
    pthread_join(t, NULL);                  /* a hang here is the failure (the case's timeout) */
    ck_assert(!mounted());
    ck_assert_int_eq(r3_nbd_mount_close(m), 0);
}
END_TEST

/* Someone still holds the file at close: the mount goes anyway (forced),
 * and the holder's I/O fails instead of keeping it busy. */
START_TEST(fuse_busy_close)
{
    serve(false);
    struct r3_nbd_mount_opts o = mopts();
    struct r3_nbd_mount *m;
    ck_assert_msg(r3_nbd_mount_open(&o, &m) == 0, "%s", r3_last_error());
    int fd = open(file, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    char b[4096];
    ck_assert_int_eq(pread(fd, b, sizeof b, 0), (ssize_t)sizeof b);
    ck_assert_int_eq(r3_nbd_mount_close(m), 0);
    ck_assert(!mounted());
    ck_assert_int_eq(pread(fd, b, sizeof b, SIZE / 2), -1);
    close(fd);
    for (int i = 0; i < 2000 && r3_nbd_server_conns(srv) > 0; i++)
        usleep(5000);
    ck_assert_uint_eq(r3_nbd_server_conns(srv), 0);
}
END_TEST

/* Prepared read-write, the export turns out read-only: the file becomes
 * read-only when the client attaches. */
START_TEST(prepare_readonly_export)
{
    serve(true);
    struct r3_nbd_mount_opts o = mopts();
    o.size = SIZE;
    o.mode = R3_NBD_MOUNT_AUTO;            /* FUSE here: no /dev/nbd* */
    struct r3_nbd_mount *m;
    ck_assert_msg(r3_nbd_mount_prepare(&o, &m) == 0, "%s", r3_last_error());
    ck_assert_msg(r3_nbd_mount_connect(m, &o) == 0, "%s", r3_last_error());
    ck_assert_int_eq(open(file, O_RDWR), -1);
    ck_assert_int_eq(errno, EROFS);
    int fd = open(file, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    char b[4096];
    ck_assert_int_eq(pread(fd, b, sizeof b, 4096), (ssize_t)sizeof b);
    ck_assert_int_eq(tu_check(b, sizeof b, 4096, 5), -1);
    close(fd);
    ck_assert_int_eq(r3_nbd_mount_close(m), 0);
}
END_TEST

/* An export whose size is not a whole number of pages: the last page's
 * read is cut at the end, and reads there return just the tail. */
START_TEST(fuse_odd_size)
{
    struct r3_source *odd;
    char path[300], uri[320];
    snprintf(path, sizeof path, "%s/odd", dir);
    int ofd = open(path, O_CREAT | O_RDWR, 0600);
    ck_assert_int_ge(ofd, 0);
    char t[100];
    tu_fill(t, sizeof t, SIZE, 21);
    ck_assert_int_eq(pwrite(ofd, t, sizeof t, SIZE), (ssize_t)sizeof t);
    close(ofd);
    snprintf(uri, sizeof uri, "file://%s", path);
    TU_OPEN(uri, &odd);
    ck_assert_uint_eq(odd->size, SIZE + 100);
    struct r3_nbd_export e = { .name = "", .src = odd };
    struct r3_nbd_server_opts so = { .listen = sock_path, .exports = &e, .nexports = 1 };
    ck_assert_msg(r3_nbd_server_start(&so, &srv) == 0, "%s", r3_last_error());
    struct r3_nbd_mount_opts o = mopts();
    struct r3_nbd_mount *m;
    ck_assert_msg(r3_nbd_mount_open(&o, &m) == 0, "%s", r3_last_error());
    int fd = open(file, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_int_eq(st.st_size, SIZE + 100);
    char b[4096];
    ck_assert_int_eq(pread(fd, b, sizeof b, SIZE), 100);
    ck_assert_int_eq(tu_check(b, 100, SIZE, 21), -1);
    close(fd);
    ck_assert_int_eq(r3_nbd_mount_close(m), 0);
    r3_nbd_server_stop(srv);
    srv = NULL;
    r3_source_close(odd);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("cov_nbd_mount");
    TCase *t = tcase_create("mount");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, mode_parse);
    tcase_add_test(t, kernel_absent);
    tcase_add_test(t, unreachable);
    char why[256];
    if (r3t_missing("fuse", why, sizeof why) == 0) {
        tcase_add_test(t, fuse_file);
        tcase_add_test(t, fuse_readonly);
        tcase_add_test(t, fuse_server_gone);
        tcase_add_test(t, prepare_then_connect);
        tcase_add_test(t, prepare_grows);
        tcase_add_test(t, prepare_wrong_size);
        tcase_add_test(t, prepare_never_connected);
    tcase_add_test(t, prepare_no_threads);
        tcase_add_test(t, fuse_unmounted_outside);
        tcase_add_test(t, fuse_busy_close);
        tcase_add_test(t, prepare_readonly_export);
        tcase_add_test(t, fuse_odd_size);
    } else {
        printf("SKIP (the FUSE cases): %s\n", why);
    }
    tcase_add_test(t, strategy_refusals);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return tu_run(suite());
}
