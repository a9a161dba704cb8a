/* SPDX-License-Identifier: BSD-3-Clause */
/* src/wire/client.c at open: the URI refusals, and the hello against a
 * scripted server on a unix socket (a thread that reads the client's hello,
 * checks it, and answers as told): not an r3 server (other bytes, another
 * frame), a server that closes or stays silent, a refusal with its errno and
 * text, another protocol version, a hello with a bad size, alignment or
 * max_request; then a good hello, read back through the source's size and
 * flags. Each with the sentence the user sees. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "testutil.h"
#include "internal.h"
#include "wire/frame.h"

#define ERR_IS(want) ck_assert_msg(strcmp(r3_last_error(), (want)) == 0, "error: '%s', not '%s'", \
                                   r3_last_error(), (want))

static char *tmp;
static char sockp[600];
static int lfd = -1;

/* the script of the next connection */
enum { S_BYTES, S_CLOSE, S_SILENT };
static int mode;
static unsigned char reply[256];
static size_t nreply;
static bool hello_ok;

static void *server_main(void *arg)
{
    (void)arg;
    struct pollfd p = { .fd = lfd, .events = POLLIN };
    if (poll(&p, 1, 20000) != 1)
        return NULL;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    unsigned char h[4], body[4096];
    if (tu_recv_all(fd, h, 4)) {
        uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        if (n <= sizeof body && tu_recv_all(fd, body, n)) {
            msgpack_unpacked up;
            struct r3_wire_msg m;
            hello_ok = r3_wire_decode((const char *)body, n, &up, &m) == 0 && m.type == R3_WIRE_HELLO &&
                       m.export_len == 3 && memcmp(m.export_name, "exp", 3) == 0 && m.has_client;
            msgpack_unpacked_destroy(&up);
        }
    }
    if (mode == S_BYTES)
        tu_send_all(fd, reply, nreply);
    if (mode != S_CLOSE) {
        char b[256];
        while (recv(fd, b, sizeof b, 0) > 0) {}       /* until the client closes */
    }
    close(fd);
    return NULL;
}

static void setup(void)
{
    tmp = tu_tmpdir();
    ck_assert_ptr_nonnull(tmp);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/r3.sock", tmp);
    snprintf(sockp, sizeof sockp, "%s", sa.sun_path);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(lfd, 4), 0);
}

static void teardown(void)
{
    close(lfd);
    tu_rmrf(tmp);
    free(tmp);
}

/* Open r3+unix:///exp against the script; the source, if it opened, in *s. */
static int open_with(int m, const char *extra, struct r3_source **s)
{
    mode = m;
    hello_ok = false;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, server_main, NULL), 0);
    char uri[900];
    snprintf(uri, sizeof uri, "r3+unix:///exp?socket=%s&conns=1%s", sockp, extra ? extra : "");
    int rc = r3_source_open(uri, s);
    char keep[600];
    snprintf(keep, sizeof keep, "%s", r3_last_error());
    if (rc == 0)
        r3_source_close(*s);
    pthread_join(t, NULL);
    ck_assert(hello_ok);
    if (rc < 0)
        r3_error(rc, "%s", keep);
    return rc;
}

/* reply = one frame of the bytes given */
static void frame_of(const void *b, size_t n)
{
    reply[0] = 0;
    reply[1] = 0;
    reply[2] = (unsigned char)(n >> 8);
    reply[3] = (unsigned char)n;
    memcpy(reply + 4, b, n);
    nreply = 4 + n;
}

static void server_hello(int err, const char *msg, uint64_t size, uint32_t align, uint64_t max_req)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    r3_wire_start(&sb, &pk);
    r3_wire_pack_server_hello(&pk, err, msg, size, align, 0, max_req, R3_WIRE_FEATURES);
    r3_wire_finish(&sb, 0);
    memcpy(reply, sb.data, sb.size);
    nreply = sb.size;
    msgpack_sbuffer_destroy(&sb);
}

START_TEST(uri_refusals)
{
    struct r3_source *s;
    ck_assert_int_eq(r3_source_open("r3://h:1/x?conns=0", &s), -EINVAL);
    ERR_IS("r3: conns must be between 1 and 64");
    ck_assert_int_eq(r3_source_open("r3://h:1/x?conns=65", &s), -EINVAL);
    ERR_IS("r3: conns must be between 1 and 64");
    ck_assert_int_eq(r3_source_open("r3://h:1/x?chunk=1000", &s), -EINVAL);
    ERR_IS("r3: chunk 1000 is not a power of two between 4K and 1G");
    ck_assert_int_eq(r3_source_open("r3://h:1/x?chunk=2K", &s), -EINVAL);
    ERR_IS("r3: chunk 2048 is not a power of two between 4K and 1G");
    ck_assert_int_eq(r3_source_open("r3+unix:///x", &s), -EINVAL);
    ERR_IS("r3+unix: needs ?socket=PATH (r3+unix:///export?socket=/run/r3.sock)");
    ck_assert_int_eq(r3_source_open("r3:///x", &s), -EINVAL);
    ERR_IS("r3: needs a host (r3://host:port/export)");
    ck_assert_int_eq(r3_source_open("r3://h/x", &s), -EINVAL);
    ERR_IS("r3: needs a port (r3://h:PORT/export)");
    ck_assert_int_eq(r3_source_open("r3://h:1/x?ca=/nonexistent", &s), -EINVAL);
    ERR_IS("r3: ca/cert/key are TLS parameters: use r3s://");
    char uri[400];
    memset(uri, 0, sizeof uri);
    strcpy(uri, "r3+unix:///x?socket=/");
    memset(uri + strlen(uri), 'a', 200);
    ck_assert_int_eq(r3_source_open(uri, &s), -EINVAL);
    ERR_IS("r3+unix: the socket path is too long");
    ck_assert_int_eq(r3_source_open("r3+unix:///x?socket=/nonexistent/s&timeout=5", &s), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "needs a unit"), "%s", r3_last_error());
    ck_assert_int_eq(r3_source_open("r3s://127.0.0.1:1/x?ca=/nonexistent/ca.pem", &s), -ENOENT);
    ERR_IS("r3s 127.0.0.1:1: TLS client: cannot read CA file /nonexistent/ca.pem: No such file or directory");
    ck_assert_int_eq(r3_source_open("r3+unix:///x?socket=/nonexistent/s", &s), -ENOENT);
    ERR_IS("r3+unix /nonexistent/s: no such socket");
}
END_TEST

START_TEST(hello_answers)
{
    struct r3_source *s;
    char want[900];
    memcpy(reply, "HTTP/1.1 400 Bad Request\r\n\r\n", 28);
    nreply = 28;
    ck_assert_int_eq(open_with(S_BYTES, NULL, &s), -EPROTO);
    snprintf(want, sizeof want, "r3+unix %s is not an r3 server (it answered \"HTTP\"...)", sockp);
    ERR_IS(want);

    ck_assert_int_eq(open_with(S_CLOSE, NULL, &s), -EPIPE);
    snprintf(want, sizeof want, "r3+unix %s: the server closed the connection during the hello "
             "(is it a TLS server? then use r3s://)", sockp);
    ERR_IS(want);

    ck_assert_int_eq(open_with(S_SILENT, "&connect_timeout=100ms", &s), -ETIMEDOUT);
    snprintf(want, sizeof want, "r3+unix %s: no hello from the server within 100 ms (is it an r3serve?)", sockp);
    ERR_IS(want);

    static const unsigned char not_hello[] = { 0x94, 0x01, 0x01, 0xc0, 0xc0 };   /* a reply */
    frame_of(not_hello, sizeof not_hello);
    ck_assert_int_eq(open_with(S_BYTES, NULL, &s), -EPROTO);
    snprintf(want, sizeof want, "r3+unix %s is not an r3 server (its answer is not an r3 hello)", sockp);
    ERR_IS(want);
    static const unsigned char v2[] = { 0x93, 0xa2, 'r', '3', 0x02, 0x80 };
    frame_of(v2, sizeof v2);
    ck_assert_int_eq(open_with(S_BYTES, NULL, &s), -EPROTONOSUPPORT);
    snprintf(want, sizeof want, "r3+unix %s: the server speaks protocol version 2", sockp);
    ERR_IS(want);

    server_hello(-ENOENT, "no export 'exp'", 0, 0, 0);
    ck_assert_int_eq(open_with(S_BYTES, NULL, &s), -ENOENT);
    snprintf(want, sizeof want, "r3+unix %s: no export 'exp'", sockp);
    ERR_IS(want);
    snprintf(want, sizeof want, "r3+unix %s: the server's hello has a bad size, alignment or max_request",
             sockp);
    server_hello(0, NULL, 0, 1, 1 << 20);
    ck_assert_int_eq(open_with(S_BYTES, NULL, &s), -EPROTO);
    ERR_IS(want);
    server_hello(0, NULL, 1 << 20, 3, 1 << 20);
    ck_assert_int_eq(open_with(S_BYTES, NULL, &s), -EPROTO);
    ERR_IS(want);
    server_hello(0, NULL, 1 << 20, 1, 100);
    ck_assert_int_eq(open_with(S_BYTES, NULL, &s), -EPROTO);
    ERR_IS(want);
    server_hello(0, NULL, 1 << 20, 1, 2u << 30);
    ck_assert_int_eq(open_with(S_BYTES, NULL, &s), -EPROTO);
    ERR_IS(want);

    /* a good hello: the source has its size and alignment */
    server_hello(0, NULL, 3 << 20, 4096, 1 << 20);
    mode = S_BYTES;
    hello_ok = false;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, server_main, NULL), 0);
    char uri[900];
    snprintf(uri, sizeof uri, "r3+unix:///exp?socket=%s&conns=1", sockp);
    ck_assert_msg(r3_source_open(uri, &s) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(s->size, 3u << 20);
    ck_assert_uint_eq(s->align, 4096);
    ck_assert(!(s->flags & R3_SRC_RDONLY));
    r3_source_close(s);
    pthread_join(t, NULL);
    ck_assert(hello_ok);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cov_src_client");
    TCase *tc = tcase_create("client");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, uri_refusals);
    tcase_add_test(tc, hello_answers);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
