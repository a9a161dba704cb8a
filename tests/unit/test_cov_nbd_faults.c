/* SPDX-License-Identifier: BSD-3-Clause */
/* nbd/server.c serving a source that fails on command (a backend of the
 * test's own, through the library's source seam), read by the real client
 * (nbd/client.c): every errno a source may return reaches the client as the
 * NBD error the protocol has for it (and back as the client's -errno and
 * sentence), for reads, writes, FUA writes and flushes; block status that
 * fails at once or part way (what was found is still said); READs split
 * into data and hole chunks with the hole never read, an extent query that
 * fails inside such a READ (the bytes are read instead), a read that fails
 * inside one, and a source whose extent queries are slow (READs stop
 * asking after a few). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include "testutil.h"
#include "tu_log.h"
#include "internal.h"
#include "nbd/proto.h"
#include "nbd/server.h"
#include "nbd/client.h"

#define SIZE (1u << 20)
#define HOLE_OFF (256u << 10)     /* [HOLE_OFF, HOLE_END) reads as zeros and says so */
#define HOLE_END (512u << 10)

struct faulty {
    struct r3_source s;           /* first: the library's view */
    unsigned char *mem;
    atomic_int fail_read, fail_write, fail_flush, fail_extent;
    atomic_int extent_ok;         /* with fail_extent: this many queries succeed first */
    atomic_int extent_delay_us;
    atomic_ulong bytes_read, extent_calls;
    atomic_bool short_runs;       /* DATA extents of 4 KiB at most */
};

static int f_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct faulty *f = (struct faulty *)s;
    int e = atomic_load(&f->fail_read);
    if (e)
        return -e;
    memcpy(buf, f->mem + off, len);
    atomic_fetch_add(&f->bytes_read, len);
    return 0;
}

static int f_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct faulty *f = (struct faulty *)s;
    int e = atomic_load(&f->fail_write);
    if (e)
        return -e;
    memcpy(f->mem + off, buf, len);
    return 0;
}

static int f_flush(struct r3_source *s)
{
    struct faulty *f = (struct faulty *)s;
    return -atomic_load(&f->fail_flush);
}

static int f_extent(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    struct faulty *f = (struct faulty *)s;
    atomic_fetch_add(&f->extent_calls, 1);
    int d = atomic_load(&f->extent_delay_us);
    if (d) {
        struct timespec ts = { 0, d * 1000L };
        nanosleep(&ts, NULL);
    }
    int e = atomic_load(&f->fail_extent);
    if (e && atomic_fetch_sub(&f->extent_ok, 1) <= 0)
        return -e;
    uint64_t end = off + len;
    if (off >= HOLE_OFF && off < HOLE_END) {
        *run = (end < HOLE_END ? end : HOLE_END) - off;
        return R3_EXTENT_ZERO;
    }
    uint64_t stop = off < HOLE_OFF ? HOLE_OFF : SIZE;
    *run = (end < stop ? end : stop) - off;
    if (atomic_load(&f->short_runs) && *run > 4096)
        *run = 4096;
    return R3_EXTENT_DATA;
}

static void f_close(struct r3_source *s)
{
    struct faulty *f = (struct faulty *)s;
    free(f->mem);
    free(f);
}

static const struct r3_source_ops fops = {
    .scheme = "faulty", .read = f_read, .write = f_write, .flush = f_flush,
    .extent = f_extent, .close = f_close,
};

static char *dir;
static char sock_path[256];
static struct faulty *fs;
static struct r3_nbd_server *srv;
static struct r3_nbd_client *cl;

#define ERR_IS(s) ck_assert_msg(strcmp(r3_last_error(), (s)) == 0, "error '%s', not '%s'", r3_last_error(), (s))

static void setup(void)
{
    dir = tu_tmpdir();
    ck_assert_ptr_nonnull(dir);
    snprintf(sock_path, sizeof sock_path, "%s/s", dir);
    fs = calloc(1, sizeof *fs);
    fs->s.ops = &fops;
    fs->s.size = SIZE;
    fs->s.align = 1;
    fs->mem = calloc(1, SIZE);
    tu_fill(fs->mem, HOLE_OFF, 0, 3);
    tu_fill(fs->mem + HOLE_END, SIZE - HOLE_END, HOLE_END, 3);
    static struct r3_nbd_export ex[2];
    ex[0] = (struct r3_nbd_export){ .name = "", .src = &fs->s };
    ex[1] = (struct r3_nbd_export){ .name = "ro", .src = &fs->s, .readonly = true };
    struct r3_nbd_server_opts o = { .listen = sock_path, .exports = ex, .nexports = 2, .workers = 2 };
    ck_assert_msg(r3_nbd_server_start(&o, &srv) == 0, "%s", r3_last_error());
    struct r3_nbd_client_opts co = { .unix_path = sock_path, .connect_timeout_ms = 10000, .timeout_ms = 10000 };
    ck_assert_msg(r3_nbd_client_connect(&co, &cl) == 0, "%s", r3_last_error());
    ck_assert(r3_nbd_client_has_extents(cl));
}

static void teardown(void)
{
    r3_nbd_client_close(cl);
    cl = NULL;
    r3_nbd_server_stop(srv);
    srv = NULL;
    r3_source_close(&fs->s);
    fs = NULL;
    tu_rmrf(dir);
    free(dir);
}

static char want[512];

static const char *sentence(const char *cmd, int err)
{
    snprintf(want, sizeof want, "nbd+unix %s export '': the server answered the %s: %s", sock_path, cmd,
             strerror(err));
    return want;
}

/* Each errno a source returns, as the client sees it: the protocol has
 * EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN. */
static const struct { int src, seen; } emap[] = {
    { EPERM, EPERM }, { EROFS, EPERM }, { EACCES, EPERM }, { ENOMEM, ENOMEM }, { EINVAL, EINVAL },
    { ENOSPC, ENOSPC }, { EFBIG, ENOSPC }, { EOVERFLOW, EOVERFLOW }, { ENOTSUP, ENOTSUP },
    { ESHUTDOWN, ESHUTDOWN }, { EIO, EIO }, { ETIMEDOUT, EIO }, { ECONNRESET, EIO },
};

START_TEST(read_errors)
{
    char b[4096];
    for (size_t i = 0; i < sizeof emap / sizeof emap[0]; i++) {
        atomic_store(&fs->fail_read, emap[i].src);
        ck_assert_int_eq(r3_nbd_client_pread(cl, b, sizeof b, 8192), -emap[i].seen);
        ERR_IS(sentence("read", emap[i].seen));
    }
    /* the connection is fine after all of them */
    atomic_store(&fs->fail_read, 0);
    ck_assert_int_eq(r3_nbd_client_pread(cl, b, sizeof b, 8192), 0);
    ck_assert_int_eq(tu_check(b, sizeof b, 8192, 3), -1);
}
END_TEST

START_TEST(write_and_flush_errors)
{
    char b[4096], r[4096];
    tu_fill(b, sizeof b, 0, 9);
    for (size_t i = 0; i < sizeof emap / sizeof emap[0]; i++) {
        atomic_store(&fs->fail_write, emap[i].src);
        ck_assert_int_eq(r3_nbd_client_pwrite(cl, b, sizeof b, 4096, false), -emap[i].seen);
        ERR_IS(sentence("write", emap[i].seen));
        atomic_store(&fs->fail_write, 0);
        atomic_store(&fs->fail_flush, emap[i].src);
        ck_assert_int_eq(r3_nbd_client_flush(cl), -emap[i].seen);
        ERR_IS(sentence("flush", emap[i].seen));
        /* FUA: the data lands, the flush after it fails, and that is the answer */
        ck_assert_int_eq(r3_nbd_client_pwrite(cl, b, sizeof b, 4096 * (i + 2), true), -emap[i].seen);
        ERR_IS(sentence("write", emap[i].seen));
        ck_assert_int_eq(memcmp(fs->mem + 4096 * (i + 2), b, sizeof b), 0);
        atomic_store(&fs->fail_flush, 0);
    }
    /* nothing of the refused writes landed */
    ck_assert_int_eq(tu_check(fs->mem + 4096, 4096, 4096, 3), -1);
    ck_assert_int_eq(r3_nbd_client_pwrite(cl, b, sizeof b, 4096, true), 0);
    ck_assert_int_eq(r3_nbd_client_pread(cl, r, sizeof r, 4096), 0);
    ck_assert_int_eq(memcmp(r, b, sizeof b), 0);
    ck_assert_int_eq(r3_nbd_client_flush(cl), 0);
}
END_TEST

START_TEST(readonly_export)
{
    struct r3_nbd_client *ro;
    struct r3_nbd_client_opts co = { .unix_path = sock_path, .export_name = "ro", .connect_timeout_ms = 10000,
                                     .timeout_ms = 10000 };
    ck_assert_msg(r3_nbd_client_connect(&co, &ro) == 0, "%s", r3_last_error());
    ck_assert(r3_nbd_client_flags(ro) & NBD_FLAG_READ_ONLY);
    char b[4096] = { 1 };
    ck_assert_int_eq(r3_nbd_client_pwrite(ro, b, sizeof b, 0, false), -EROFS);
    ck_assert_int_eq(tu_check(fs->mem, 4096, 0, 3), -1);
    ck_assert_int_eq(r3_nbd_client_pread(ro, b, sizeof b, 0), 0);
    ck_assert_int_eq(tu_check(b, sizeof b, 0, 3), -1);
    r3_nbd_client_close(ro);
    /* a read-only source makes a read-only export, whatever the export said */
    fs->s.flags |= R3_SRC_RDONLY;
    struct r3_nbd_export e = { .name = "", .src = &fs->s };
    char p[300];
    snprintf(p, sizeof p, "%s/ro", dir);
    struct r3_nbd_server_opts so = { .listen = p, .exports = &e, .nexports = 1 };
    struct r3_nbd_server *s;
    ck_assert_msg(r3_nbd_server_start(&so, &s) == 0, "%s", r3_last_error());
    co.unix_path = p;
    co.export_name = NULL;
    ck_assert_msg(r3_nbd_client_connect(&co, &ro) == 0, "%s", r3_last_error());
    ck_assert(r3_nbd_client_flags(ro) & NBD_FLAG_READ_ONLY);
    r3_nbd_client_close(ro);
    r3_nbd_server_stop(s);
    fs->s.flags &= ~(unsigned)R3_SRC_RDONLY;
}
END_TEST

START_TEST(block_status_errors)
{
    uint64_t run = 0;
    /* the map as it is */
    ck_assert_int_eq(r3_nbd_client_block_status(cl, 0, SIZE, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, HOLE_OFF);
    ck_assert_int_eq(r3_nbd_client_block_status(cl, HOLE_OFF + 4096, SIZE - HOLE_OFF - 4096, &run),
                     R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, HOLE_END - HOLE_OFF - 4096);
    /* short DATA runs are merged into one descriptor */
    atomic_store(&fs->short_runs, true);
    ck_assert_int_eq(r3_nbd_client_block_status(cl, 0, 65536, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 65536);
    /* the second query fails: the first one's answer is still true */
    atomic_store(&fs->extent_ok, 1);
    atomic_store(&fs->fail_extent, EIO);
    ck_assert_int_eq(r3_nbd_client_block_status(cl, 0, 65536, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 4096);
    /* the first fails: an error */
    for (size_t i = 0; i < sizeof emap / sizeof emap[0]; i++) {
        atomic_store(&fs->extent_ok, 0);
        atomic_store(&fs->fail_extent, emap[i].src);
        ck_assert_int_eq(r3_nbd_client_block_status(cl, 0, 65536, &run), -emap[i].seen);
        ERR_IS(sentence("block status query", emap[i].seen));
    }
    /* out of range, empty: refused by the server before the source */
    atomic_store(&fs->fail_extent, 0);
    unsigned long calls = atomic_load(&fs->extent_calls);
    ck_assert_int_eq(r3_nbd_client_block_status(cl, SIZE - 4096, 8192, &run), -EINVAL);
    ck_assert_uint_eq(atomic_load(&fs->extent_calls), calls);
}
END_TEST

/* A READ across the hole: the hole comes as a hole chunk, never read. */
START_TEST(read_holes_paths)
{
    size_t len = 512u << 10;
    char *b = malloc(len);
    unsigned long before = atomic_load(&fs->bytes_read);
    ck_assert_int_eq(r3_nbd_client_pread(cl, b, len, 128u << 10), 0);
    ck_assert_int_eq(tu_check(b, HOLE_OFF - (128u << 10), 128u << 10, 3), -1);
    for (size_t i = HOLE_OFF - (128u << 10); i < HOLE_END - (128u << 10); i++)
        ck_assert_int_eq(b[i], 0);
    ck_assert_int_eq(tu_check(b + (HOLE_END - (128u << 10)), (128u << 10), HOLE_END, 3), -1);
    ck_assert_uint_eq(atomic_load(&fs->bytes_read) - before, len - (HOLE_END - HOLE_OFF));

    /* the extent query fails: the whole range is read instead, right */
    atomic_store(&fs->extent_ok, 0);
    atomic_store(&fs->fail_extent, EIO);
    memset(b, 0x55, len);
    before = atomic_load(&fs->bytes_read);
    ck_assert_int_eq(r3_nbd_client_pread(cl, b, len, 128u << 10), 0);
    ck_assert_uint_eq(atomic_load(&fs->bytes_read) - before, len);
    ck_assert_int_eq(tu_check(b, HOLE_OFF - (128u << 10), 128u << 10, 3), -1);
    ck_assert_int_eq(b[HOLE_OFF - (128u << 10)], 0);

    /* a read that fails inside a READ with holes: the READ fails */
    atomic_store(&fs->fail_extent, 0);
    atomic_store(&fs->fail_read, ENOSPC);
    ck_assert_int_eq(r3_nbd_client_pread(cl, b, len, 128u << 10), -ENOSPC);
    ERR_IS(sentence("read", ENOSPC));
    atomic_store(&fs->fail_read, 0);

    /* the hole alone */
    memset(b, 0x55, 65536);
    before = atomic_load(&fs->bytes_read);
    ck_assert_int_eq(r3_nbd_client_pread(cl, b, 65536, HOLE_OFF), 0);
    ck_assert_uint_eq(atomic_load(&fs->bytes_read), before);
    for (size_t i = 0; i < 65536; i++)
        ck_assert_int_eq(b[i], 0);
    free(b);
}
END_TEST

/* Extent queries slower than a round trip: after a few, READs stop asking
 * (and read the hole like data); block status still asks. */
START_TEST(slow_extents)
{
    atomic_store(&fs->extent_delay_us, 2000);
    char *b = malloc(65536);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(r3_nbd_client_pread(cl, b, 65536, HOLE_OFF), 0);
    unsigned long calls = atomic_load(&fs->extent_calls);
    ck_assert_uint_ge(calls, 3);
    unsigned long before = atomic_load(&fs->bytes_read);
    for (int i = 0; i < 3; i++) {
        memset(b, 0x55, 65536);
        ck_assert_int_eq(r3_nbd_client_pread(cl, b, 65536, HOLE_OFF), 0);
        ck_assert_int_eq(b[100], 0);
    }
    ck_assert_uint_eq(atomic_load(&fs->extent_calls), calls);
    ck_assert_uint_eq(atomic_load(&fs->bytes_read) - before, 3 * 65536);
    uint64_t run;
    ck_assert_int_eq(r3_nbd_client_block_status(cl, HOLE_OFF, 65536, &run), R3_EXTENT_ZERO);
    ck_assert_uint_gt(atomic_load(&fs->extent_calls), calls);
    free(b);
}
END_TEST

/* ---- a scripted client for what the real one never sends (CACHE,
 * WRITE_ZEROES, TRIM): EXPORT_NAME, then simple replies. */

static int raw_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = { 20, 0 };           /* hang guard */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int raw_open(void)
{
    int fd = raw_connect(sock_path);
    unsigned char g[18], h[20];
    ck_assert(tu_recv_all(fd, g, 18));
    r3_nbd_put32(h, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    r3_nbd_put64(h + 4, NBD_IHAVEOPT);
    r3_nbd_put32(h + 12, NBD_OPT_EXPORT_NAME);
    r3_nbd_put32(h + 16, 0);
    tu_send_all(fd, h, 20);
    unsigned char r[10];
    ck_assert(tu_recv_all(fd, r, 10));
    ck_assert_uint_eq(r3_nbd_get64(r), SIZE);
    uint16_t fl = r3_nbd_get16(r + 8);
    ck_assert(fl & NBD_FLAG_SEND_CACHE);
    ck_assert(fl & NBD_FLAG_SEND_WRITE_ZEROES);
    ck_assert(fl & NBD_FLAG_SEND_TRIM);
    return fd;
}

/* One request, its simple reply's error. */
static uint32_t raw_req(int fd, uint16_t type, uint16_t flags, uint64_t off, uint32_t len)
{
    static uint64_t cookie = 100;
    unsigned char h[NBD_REQUEST_SIZE], r[16];
    r3_nbd_put32(h, NBD_REQUEST_MAGIC);
    r3_nbd_put16(h + 4, flags);
    r3_nbd_put16(h + 6, type);
    r3_nbd_put64(h + 8, ++cookie);
    r3_nbd_put64(h + 16, off);
    r3_nbd_put32(h + 24, len);
    tu_send_all(fd, h, sizeof h);
    ck_assert_msg(tu_recv_all(fd, r, 16), "no reply to command %u", type);
    ck_assert(r3_nbd_get32(r) == NBD_SIMPLE_REPLY_MAGIC);
    ck_assert(r3_nbd_get64(r + 8) == cookie);
    return r3_nbd_get32(r + 4);
}

START_TEST(scripted_commands)
{
    int fd = raw_open();
    /* CACHE reads through the source: its errors are the reply */
    unsigned long before = atomic_load(&fs->bytes_read);
    ck_assert_uint_eq(raw_req(fd, NBD_CMD_CACHE, 0, 0, 3u << 18), 0);
    ck_assert_uint_eq(atomic_load(&fs->bytes_read) - before, 3u << 18);
    atomic_store(&fs->fail_read, ENOMEM);
    ck_assert_uint_eq(raw_req(fd, NBD_CMD_CACHE, 0, 0, 65536), NBD_ENOMEM);
    atomic_store(&fs->fail_read, 0);
    ck_assert_uint_eq(raw_req(fd, NBD_CMD_CACHE, 0, SIZE, 1), NBD_EINVAL);
    /* WRITE_ZEROES: a failing source, and one that says ESHUTDOWN (replied,
     * not taken for the server's own fence) */
    atomic_store(&fs->fail_write, ENOSPC);
    ck_assert_uint_eq(raw_req(fd, NBD_CMD_WRITE_ZEROES, 0, 0, 4096), NBD_ENOSPC);
    atomic_store(&fs->fail_write, ESHUTDOWN);
    ck_assert_uint_eq(raw_req(fd, NBD_CMD_WRITE_ZEROES, 0, 0, 4096), NBD_ESHUTDOWN);
    ck_assert_int_eq(tu_check(fs->mem, 4096, 0, 3), -1);      /* nothing landed */
    atomic_store(&fs->fail_write, 0);
    /* zeroes that land, the FUA flush after them fails */
    atomic_store(&fs->fail_flush, EIO);
    ck_assert_uint_eq(raw_req(fd, NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FUA, 8192, 4096), NBD_EIO);
    for (int i = 0; i < 4096; i++)
        ck_assert_int_eq(fs->mem[8192 + i], 0);
    ck_assert_uint_eq(raw_req(fd, NBD_CMD_WRITE_ZEROES, 0, SIZE - 4096, 8192), NBD_ENOSPC);
    /* TRIM is advisory; with FUA it flushes, and says so when that fails */
    ck_assert_uint_eq(raw_req(fd, NBD_CMD_TRIM, 0, 0, 4096), 0);
    ck_assert_uint_eq(raw_req(fd, NBD_CMD_TRIM, NBD_CMD_FLAG_FUA, 0, 4096), NBD_EIO);
    atomic_store(&fs->fail_flush, 0);
    ck_assert_uint_eq(raw_req(fd, NBD_CMD_TRIM, NBD_CMD_FLAG_FUA, 0, 4096), 0);
    ck_assert_uint_eq(raw_req(fd, NBD_CMD_TRIM, 0, SIZE, 4096), NBD_EINVAL);
    ck_assert_int_eq(tu_check(fs->mem, 4096, 0, 3), -1);      /* trim kept the data */
    /* a flag the command does not take, a command nobody knows */
    ck_assert_uint_eq(raw_req(fd, NBD_CMD_FLUSH, NBD_CMD_FLAG_REQ_ONE, 0, 0), NBD_EINVAL);
    ck_assert_uint_eq(raw_req(fd, 42, 0, 0, 0), NBD_EINVAL);
    /* block status without the meta context negotiated */
    ck_assert_uint_eq(raw_req(fd, NBD_CMD_BLOCK_STATUS, 0, 0, 4096), NBD_EINVAL);
    close(fd);
}
END_TEST

/* ---- server options */

static void log_line(void *arg, const char *line)
{
    (void)arg;
    tu_log_add(line);
}

#define log_wait(s) TU_LOG_WAIT(s)

START_TEST(server_options)
{
    struct r3_nbd_export e = { .name = "", .src = &fs->s };
    struct r3_nbd_server *s = (void *)1;
    struct r3_nbd_server_opts o = { .listen = "127.0.0.1:notaport", .exports = &e, .nexports = 1 };
    ck_assert_int_lt(r3_nbd_server_start(&o, &s), 0);
    ck_assert_ptr_null(s);
    ck_assert_msg(strncmp(r3_last_error(), "nbd: ", 5) == 0, "%s", r3_last_error());
    /* TLS required, nothing to do it with */
    o.listen = "127.0.0.1:0";
    o.tls_required = true;
    ck_assert_int_eq(r3_nbd_server_start(&o, &s), -EINVAL);
    ck_assert_str_eq(r3_last_error(), "nbd: TLS is required but no certificates or PSK file were given");
    o.tls_required = false;
    /* certificates that are not there */
    char tdir[300];
    snprintf(tdir, sizeof tdir, "%s/no-certs", dir);
    o.tls_dir = tdir;
    ck_assert_int_lt(r3_nbd_server_start(&o, &s), 0);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(r3_last_error(), "no-certs"), "%s", r3_last_error());
    o.tls_dir = NULL;
    /* an export name longer than the protocol's */
    char *name = malloc(NBD_MAX_NAME + 2);
    memset(name, 'n', NBD_MAX_NAME + 1);
    name[NBD_MAX_NAME + 1] = 0;
    e.name = name;
    ck_assert_int_eq(r3_nbd_server_start(&o, &s), -EINVAL);
    ck_assert_str_eq(r3_last_error(), "nbd: export name too long");
    free(name);
    e.name = NULL;                         /* NULL is the default export */
    /* on TCP, port 0: a real port; far too many workers and a huge
     * max_request are brought back to their bounds */
    o.workers = 1000;
    o.max_request = ~0u;
    ck_assert_msg(r3_nbd_server_start(&o, &s) == 0, "%s", r3_last_error());
    int port = r3_nbd_server_port(s);
    ck_assert_int_gt(port, 0);
    struct r3_nbd_client *c;
    struct r3_nbd_client_opts co = { .host = "127.0.0.1", .port = port, .connect_timeout_ms = 10000,
                                     .timeout_ms = 10000 };
    ck_assert_msg(r3_nbd_client_connect(&co, &c) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(r3_nbd_server_conns(s), 1);
    char b[4096];
    ck_assert_int_eq(r3_nbd_client_pread(c, b, sizeof b, 0), 0);
    ck_assert_int_eq(tu_check(b, sizeof b, 0, 3), -1);
    r3_nbd_client_close(c);
    r3_nbd_server_stop(s);
    ck_assert_int_eq(r3_nbd_server_port(srv), 0);             /* a Unix socket */
}
END_TEST

/* A client that says nothing after the greeting is closed at the
 * handshake deadline, with the reason in the log line. */
START_TEST(handshake_deadline)
{
    struct r3_nbd_export e = { .name = "", .src = &fs->s };
    char p[300];
    snprintf(p, sizeof p, "unix:%s/h", dir);
    struct r3_nbd_server_opts o = { .listen = p, .exports = &e, .nexports = 1, .handshake_timeout_ms = 300,
                                    .log = log_line };
    struct r3_nbd_server *s;
    tu_log_clear();
    ck_assert_msg(r3_nbd_server_start(&o, &s) == 0, "%s", r3_last_error());
    int fd = raw_connect(p + 5);
    unsigned char g[18], x;
    ck_assert(tu_recv_all(fd, g, 18));
    log_wait("no handshake within 300 ms");
    log_wait("no export chosen");
    ck_assert_int_eq(recv(fd, &x, 1, 0), 0);                   /* and closed */
    close(fd);
    r3_nbd_server_stop(s);
}
END_TEST

/* A request within max_request but larger than what one connection may
 * hold in flight (max_inflight): refused with EOVERFLOW, the connection
 * goes on (it was closed without a reply). */
START_TEST(larger_than_budget)
{
    struct r3_source *mem;
    TU_OPEN("mem:?size=1M", &mem);
    struct r3_nbd_export e[2] = { { .name = "", .src = &fs->s }, { .name = "mem", .src = mem } };
    char p[300];
    snprintf(p, sizeof p, "%s/b", dir);
    struct r3_nbd_server_opts o = { .listen = p, .exports = e, .nexports = 2, .max_inflight = 256u << 10 };
    struct r3_nbd_server *s;
    ck_assert_msg(r3_nbd_server_start(&o, &s) == 0, "%s", r3_last_error());
    char *b = malloc(512u << 10);
    for (int k = 0; k < 2; k++) {
        struct r3_nbd_client *c;
        struct r3_nbd_client_opts co = { .unix_path = p, .export_name = k ? "mem" : "",
                                         .connect_timeout_ms = 10000, .timeout_ms = 10000 };
        ck_assert_msg(r3_nbd_client_connect(&co, &c) == 0, "%s", r3_last_error());
        ck_assert_int_eq(r3_nbd_client_pread(c, b, 512u << 10, 0), -EOVERFLOW);
        ck_assert(strstr(r3_last_error(), "the server answered the read: Value too large"));
        tu_fill(b, 512u << 10, 0, 13);
        ck_assert_int_eq(r3_nbd_client_pwrite(c, b, 512u << 10, 0, false), -EOVERFLOW);
        ck_assert(strstr(r3_last_error(), "the server answered the write: Value too large"));
        /* still connected, nothing of the refused write landed */
        ck_assert_int_eq(r3_nbd_client_pread(c, b, 128u << 10, 0), 0);
        if (k == 0)
            ck_assert_int_eq(tu_check(b, 128u << 10, 0, 3), -1);
        for (size_t i = 0; k == 1 && i < (128u << 10); i++)
            ck_assert_int_eq(b[i], 0);                    /* mem: still zeros */
        r3_nbd_client_close(c);
    }
    free(b);
    r3_nbd_server_stop(s);
    r3_source_close(mem);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("cov_nbd_faults");
    TCase *t = tcase_create("faults");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, read_errors);
    tcase_add_test(t, write_and_flush_errors);
    tcase_add_test(t, readonly_export);
    tcase_add_test(t, block_status_errors);
    tcase_add_test(t, read_holes_paths);
    tcase_add_test(t, slow_extents);
    tcase_add_test(t, scripted_commands);
    tcase_add_test(t, server_options);
    tcase_add_test(t, handshake_deadline);
    tcase_add_test(t, larger_than_budget);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return tu_run(suite());
}
