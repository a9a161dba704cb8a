/* SPDX-License-Identifier: BSD-3-Clause */
/* src/wire/server.c against a raw client on its unix socket (frames
 * written here): a frame that is not a request, a write larger than the
 * server's largest request, writes to a read-only export, reads and writes
 * past the end, a source whose extent query fails (its sentence reaches the
 * client), a frame header cut short; each answer checked by the reply's
 * errno and text, and the drop by the server's log line. Then the refusals
 * of r3_wire_server_new. */
#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "testutil.h"
#include "internal.h"
#include "r3/wire.h"
#include "wire/frame.h"

#define ERR_IS(want) ck_assert_msg(strcmp(r3_last_error(), (want)) == 0, "error: '%s', not '%s'", \
                                   r3_last_error(), (want))

/* a source whose extent query fails */
static int bad_extent(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    (void)s;
    (void)off;
    (void)len;
    (void)run;
    return r3_error(-EIO, "fake: the remote is gone");
}
static int fake_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    (void)s;
    tu_fill(buf, len, off, 4);
    return 0;
}
static void fake_close(struct r3_source *s) { (void)s; }
static const struct r3_source_ops fake_ops = {
    .scheme = "fake", .read = fake_read, .extent = bad_extent, .close = fake_close,
};

static char *tmp;
static char sockp[100], listen_at[120];
static pthread_mutex_t lmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t lcv = PTHREAD_COND_INITIALIZER;
static char logs[8192];

static void on_log(void *arg, const char *line)
{
    (void)arg;
    pthread_mutex_lock(&lmu);
    size_t n = strlen(logs);
    snprintf(logs + n, sizeof logs - n, "%s\n", line);
    pthread_cond_broadcast(&lcv);
    pthread_mutex_unlock(&lmu);
}

static bool wait_log(const char *text)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 20;
    pthread_mutex_lock(&lmu);
    bool ok;
    while (!(ok = strstr(logs, text) != NULL))
        if (pthread_cond_timedwait(&lcv, &lmu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&lmu);
    return ok;
}

static struct r3_source fake = { .ops = &fake_ops, .size = 1 << 20, .align = 1 };
static struct r3_wire_server *srv;

static void start(bool ro)
{
    tmp = tu_tmpdir();
    snprintf(sockp, sizeof sockp, "%s/s.sock", tmp);
    snprintf(listen_at, sizeof listen_at, "unix:%s", sockp);
    logs[0] = 0;
    struct r3_wire_server_opts o = { .src = &fake, .listen = listen_at, .read_only = ro,
                                     .max_request = 4096, .workers = 2, .log = on_log };
    ck_assert_msg(r3_wire_server_new(&o, &srv) == 0, "%s", r3_last_error());
}

static void stop(void)
{
    r3_wire_server_free(srv);
    tu_rmrf(tmp);
    free(tmp);
}

static void send_payload(int fd, msgpack_sbuffer *sb, const void *data, size_t dlen)
{
    r3_wire_finish(sb, dlen);
    tu_send_all(fd, sb->data, sb->size);
    if (dlen)
        tu_send_all(fd, data, dlen);
}

/* Connected with a hello (extent feature asked); returns the socket. */
static int client(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sockp);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = { .tv_sec = 20 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    r3_wire_start(&sb, &pk);
    r3_wire_pack_client_hello(&pk, "", 0, R3_WIRE_FEATURES);
    send_payload(fd, &sb, NULL, 0);
    msgpack_sbuffer_destroy(&sb);
    return fd;
}

/* The next frame: decoded into m (the frame in *buf, free it). */
static void next(int fd, struct r3_wire_msg *m, char **buf)
{
    unsigned char h[4];
    ck_assert(tu_recv_all(fd, h, 4));
    uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    ck_assert_uint_le(n, 1u << 20);
    *buf = malloc(n);
    ck_assert(tu_recv_all(fd, *buf, n));
    msgpack_unpacked up;
    ck_assert_int_eq(r3_wire_decode(*buf, n, &up, m), 0);
    msgpack_unpacked_destroy(&up);          /* m's strings point into *buf */
}

/* Send a request; the reply's errno and text must be these. */
static void request(int fd, uint64_t id, const char *method, uint64_t off, uint64_t len, bool data,
                    int want_err, const char *want_msg)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    r3_wire_start(&sb, &pk);
    r3_wire_pack_request(&pk, id, method, off, len, data);
    char *d = data ? calloc(1, len) : NULL;
    send_payload(fd, &sb, d, data ? len : 0);
    free(d);
    msgpack_sbuffer_destroy(&sb);
    struct r3_wire_msg m;
    char *buf;
    next(fd, &m, &buf);
    ck_assert_int_eq(m.type, R3_WIRE_REPLY);
    ck_assert_uint_eq(m.id, id);
    ck_assert_int_eq(m.err, want_err);
    ck_assert_msg(m.errmsg_len == strlen(want_msg) && memcmp(m.errmsg, want_msg, m.errmsg_len) == 0,
                  "reply '%.*s', not '%s'", (int)m.errmsg_len, m.errmsg, want_msg);
    free(buf);
}

START_TEST(refusals)
{
    start(false);
    int fd = client();
    struct r3_wire_msg m;
    char *buf;
    next(fd, &m, &buf);
    ck_assert_int_eq(m.type, R3_WIRE_HELLO);
    ck_assert_uint_eq(m.size, 1 << 20);
    ck_assert_uint_eq(m.max_request, 4096);
    ck_assert(m.features & R3_WIRE_F_EXTENT);
    free(buf);

    request(fd, 1, "write", 0, 5000, true, -EMSGSIZE,
            "r3serve: write of 5000 bytes is larger than the server's largest request (4096)");
    request(fd, 2, "read", (1 << 20) - 10, 20, false, -EINVAL,
            "r3serve: read of 20 bytes at 1048566 is past the end (1048576 bytes)");
    request(fd, 3, "write", 1 << 20, 1, true, -ENOSPC,
            "r3serve: write of 1 bytes at 1048576 is past the end (1048576 bytes)");
    request(fd, 4, "extent", 0, 4096, false, -EIO, "fake: the remote is gone");
    request(fd, 5, "frobnicate", 0, 0, false, -ENOSYS, "r3serve: unknown method 'frobnicate'");
    /* a good read: the source's bytes */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    r3_wire_start(&sb, &pk);
    r3_wire_pack_request(&pk, 6, "read", 100, 64, false);
    send_payload(fd, &sb, NULL, 0);
    next(fd, &m, &buf);
    ck_assert(m.id == 6 && m.err == 0 && m.has_data && m.len == 64);
    ck_assert_int_eq(tu_check(m.data, 64, 100, 4), -1);
    free(buf);

    /* a frame that is a reply, not a request: answered, then dropped */
    r3_wire_start(&sb, &pk);
    r3_wire_pack_reply(&pk, 7, 0, NULL, true, 1, false, 0);
    send_payload(fd, &sb, NULL, 0);
    next(fd, &m, &buf);
    ck_assert(m.id == 0 && m.err == -EPROTO);
    static const char bad[] = "r3serve: bad frame: expected [0, id, method, args]";
    ck_assert_msg(m.errmsg_len == strlen(bad) && memcmp(m.errmsg, bad, m.errmsg_len) == 0, "%.*s",
                  (int)m.errmsg_len, m.errmsg);
    free(buf);
    char c;
    ck_assert_int_eq(recv(fd, &c, 1, 0), 0);
    close(fd);
    ck_assert_msg(wait_log("dropped: a frame that is not a request"), "%s", logs);

    /* garbage after the hello, and a header cut short */
    fd = client();
    next(fd, &m, &buf);
    free(buf);
    tu_send_all(fd, "\x00\x00\x00\x02\xc1\xc1", 6);
    next(fd, &m, &buf);
    ck_assert(m.id == 0 && m.err == -EPROTO);
    free(buf);
    close(fd);
    ck_assert_msg(wait_log("dropped: a frame that is not a well-formed request"), "%s", logs);
    fd = client();
    next(fd, &m, &buf);
    free(buf);
    tu_send_all(fd, "\x00\x00", 2);
    shutdown(fd, SHUT_WR);
    ck_assert_int_eq(recv(fd, &c, 1, 0), 0);
    close(fd);
    ck_assert_msg(wait_log("truncated frame header"), "%s", logs);
    msgpack_sbuffer_destroy(&sb);
    stop();
}
END_TEST

START_TEST(read_only_and_new)
{
    start(true);
    int fd = client();
    struct r3_wire_msg m;
    char *buf;
    next(fd, &m, &buf);
    ck_assert(m.flags & R3_SRC_RDONLY);
    free(buf);
    request(fd, 1, "write", 0, 16, true, -EROFS, "r3serve: the export is read-only");
    request(fd, 2, "extent", 0, 0, false, -EINVAL, "r3serve: extent of 0 bytes at 0 is outside the export (1048576 bytes)");
    close(fd);
    stop();

    struct r3_wire_server *s = (void *)1;
    struct r3_wire_server_opts o = { .listen = "unix:/x" };
    ck_assert_int_eq(r3_wire_server_new(&o, &s), -EINVAL);
    ERR_IS("r3serve: no source to serve");
    ck_assert_ptr_null(s);
    o = (struct r3_wire_server_opts){ .src = &fake };
    ck_assert_int_eq(r3_wire_server_new(&o, &s), -EINVAL);
    ERR_IS("r3serve: no address to listen on");
    o.listen = "nohost";
    ck_assert_int_eq(r3_wire_server_new(&o, &s), -EINVAL);
    ERR_IS("r3serve: bad address 'nohost': the port is missing (HOST:PORT)");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cov_src_server");
    TCase *tc = tcase_create("server");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, refusals);
    tcase_add_test(tc, read_only_and_new);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
