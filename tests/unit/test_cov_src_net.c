/* SPDX-License-Identifier: BSD-3-Clause */
/* src/net/conn.c, dial.c and util.c at their edges, on socketpairs and real
 * sockets: a closed r3_io, negative and many (more than 16, some empty)
 * write pieces read back whole at the peer, read and write timeouts and
 * passed deadlines with their sentences, a peer that closes (read, skip,
 * write), input readiness; dialing a missing unix socket and a closed TCP
 * port; the backoff's doubling, cap, jitter bounds and give-up; the size
 * and duration parsers' refusals and the byte formatters. */
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include "testutil.h"
#include "internal.h"
#include "net/net.h"

#define ERR_IS(want) ck_assert_msg(strcmp(r3_last_error(), (want)) == 0, "error: '%s', not '%s'", \
                                   r3_last_error(), (want))

static void pair(struct r3_io *io, int *peer)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(r3_io_init(io, sv[0]), 0);
    *peer = sv[1];
}

/* Fill the socket's send buffer until a write would block. */
static void fill(struct r3_io *io)
{
    static char junk[65536];
    for (;;) {
        struct iovec v = { junk, sizeof junk };
        ssize_t n = r3_io_writev_some(io, &v, 1);
        ck_assert_int_ge(n, 0);
        if (n == 0)
            return;
    }
}

START_TEST(io_closed_and_pieces)
{
    struct r3_io io;
    int peer;
    char b[64];
    pair(&io, &peer);
    struct iovec none[3] = { { b, 0 }, { b, 0 }, { b, 0 } };
    ck_assert_int_eq(r3_io_writev_some(&io, none, 3), 0);       /* nothing to write */
    ck_assert_int_eq(r3_io_writev_all(&io, none, -1), -EINVAL);
    ERR_IS("write: a negative number of pieces");

    /* 20 pieces, every third empty: the peer reads them joined */
    char src[200], got[200];
    struct iovec v[20];
    size_t total = 0;
    for (int i = 0; i < 200; i++)
        src[i] = (char)(i * 7 + 1);
    for (int i = 0; i < 20; i++) {
        size_t len = i % 3 == 2 ? 0 : 10 + (size_t)i % 3;
        v[i] = (struct iovec){ src + total, len };
        total += len;
    }
    ck_assert_int_eq(r3_io_writev_all(&io, v, 20), 0);
    ck_assert(tu_recv_all(peer, got, total));
    ck_assert(memcmp(src, got, total) == 0);
    ck_assert_uint_eq(io.nwritten, total);

    /* input readiness, skip, and a peer that closes */
    ck_assert(!r3_io_input_ready(&io));
    tu_send_all(peer, "0123456789abcdef", 16);
    ck_assert(r3_io_input_ready(&io));
    ck_assert_int_eq(r3_io_skip(&io, 10), 0);
    ck_assert_int_eq(r3_io_read_all(&io, b, 6), 0);
    ck_assert(memcmp(b, "abcdef", 6) == 0);
    ck_assert_uint_eq(io.nread, 16);
    tu_send_all(peer, "xyz", 3);
    shutdown(peer, SHUT_WR);
    ck_assert_int_eq(r3_io_skip(&io, 10), -EPIPE);
    ERR_IS("read: the peer closed the connection");
    ck_assert_int_eq(r3_io_read_all(&io, b, 1), -EPIPE);
    close(peer);
    ck_assert_int_eq(r3_io_write_all(&io, "x", 1), -EPIPE);
    ck_assert_msg(strcmp(r3_last_error(), "write: Broken pipe") == 0, "%s", r3_last_error());

    r3_io_close(&io);
    r3_io_close(&io);                                           /* twice: nothing */
    ck_assert(!r3_io_input_ready(&io));
    ck_assert_int_eq(r3_io_read_some(&io, b, 1), -EBADF);
    ERR_IS("read: the connection is closed");
    ck_assert_int_eq(r3_io_writev_some(&io, none, 1), -EBADF);
    ERR_IS("write: the connection is closed");
    ck_assert_int_eq(r3_io_write_all(&io, "x", 1), -EBADF);
    ERR_IS("write: the connection is closed");
    r3_io_shutdown(&io);                                        /* closed: nothing */

    ck_assert_int_eq(r3_io_init(&io, -1), -EBADF);
    ck_assert_msg(strncmp(r3_last_error(), "socket: cannot make it non-blocking: ", 37) == 0, "%s",
                  r3_last_error());
}
END_TEST

START_TEST(io_timeouts)
{
    struct r3_io io;
    int peer;
    char b[8];
    pair(&io, &peer);
    io.rtimeout_ms = 20;
    ck_assert_int_eq(r3_io_read_some(&io, b, 1), -ETIMEDOUT);
    ERR_IS("read: timed out");
    io.rtimeout_ms = -1;
    io.rdeadline = r3_net_deadline(20);
    ck_assert_int_eq(r3_io_read_all(&io, b, 1), -ETIMEDOUT);
    ERR_IS("read: deadline passed");
    ck_assert_int_eq(r3_io_read_some(&io, b, 1), -ETIMEDOUT);   /* already passed: no wait */
    ERR_IS("read: deadline passed");
    r3_io_set_timeout(&io, -1);
    ck_assert_uint_eq(io.rdeadline, 0);
    ck_assert_uint_eq(io.wdeadline, 0);

    fill(&io);
    io.wtimeout_ms = 20;
    ck_assert_int_eq(r3_io_write_all(&io, "x", 1), -ETIMEDOUT);
    ERR_IS("write: timed out");
    io.wtimeout_ms = -1;
    r3_io_set_timeout(&io, 20);
    ck_assert_int_eq(r3_io_write_all(&io, "x", 1), -ETIMEDOUT);
    ERR_IS("write: deadline passed");
    ck_assert_int_eq(r3_io_write_all(&io, "x", 1), -ETIMEDOUT);
    ERR_IS("write: deadline passed");
    r3_io_close(&io);
    close(peer);

    ck_assert_int_eq(r3_net_remaining_ms(0), -1);
    ck_assert_int_eq(r3_net_remaining_ms(1), 0);
    int ms = r3_net_remaining_ms(r3_net_deadline(5000));
    ck_assert(ms > 4000 && ms <= 5000);
}
END_TEST

START_TEST(dial_refusals)
{
    struct r3_net_addr a;
    int fd = 7;
    char *tmp = tu_tmpdir();
    char spec[600];
    snprintf(spec, sizeof spec, "unix:%s/none.sock", tmp);
    ck_assert_int_eq(r3_net_addr_parse(spec, 0, 0, &a), 0);
    ck_assert_int_eq(r3_net_dial(&a, 1000, &fd), -ENOENT);
    ck_assert_int_eq(fd, -1);
    char want[700];
    snprintf(want, sizeof want, "%s: no such socket", spec);
    ERR_IS(want);
    tu_rmrf(tmp);
    free(tmp);

    /* a TCP port nobody listens on: bind one, learn it, close it */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ck_assert_int_eq(bind(s, (struct sockaddr *)&sin, sizeof sin), 0);
    socklen_t sl = sizeof sin;
    ck_assert_int_eq(getsockname(s, (struct sockaddr *)&sin, &sl), 0);
    close(s);
    snprintf(spec, sizeof spec, "127.0.0.1:%d", ntohs(sin.sin_port));
    ck_assert_int_eq(r3_net_addr_parse(spec, 0, 0, &a), 0);
    ck_assert_int_eq(r3_net_dial(&a, 2000, &fd), -ECONNREFUSED);
    snprintf(want, sizeof want, "%s: connection refused", spec);
    ERR_IS(want);
    ck_assert_int_eq(r3_net_addr_parse("unix:/x", 0, 0, &a), 0);
    struct addrinfo *ai;
    ck_assert_int_eq(r3_net_addr_resolve(&a, false, &ai), -EINVAL);
    ERR_IS("unix:/x: not a TCP address");
}
END_TEST

START_TEST(backoff)
{
    struct r3_net_backoff b;
    r3_net_backoff_init(&b, 100, 400, 0);
    int lo[] = { 50, 100, 200, 200, 200 }, hi[] = { 100, 200, 400, 400, 400 };
    for (int i = 0; i < 5; i++) {
        int d = r3_net_backoff_next(&b);
        ck_assert_msg(d >= lo[i] && d <= hi[i], "attempt %d: %d ms", i, d);
    }
    r3_net_backoff_reset(&b);
    int d = r3_net_backoff_next(&b);
    ck_assert(d >= 50 && d <= 100);
    /* base 0 becomes 1, a cap below the base becomes the base */
    r3_net_backoff_init(&b, 0, 0, 0);
    ck_assert_int_eq(r3_net_backoff_next(&b), 1);
    r3_net_backoff_init(&b, 300, 10, 0);
    d = r3_net_backoff_next(&b);
    ck_assert(d >= 150 && d <= 300);
    /* giving up: the last delay is cut to what is left, then a refusal */
    r3_net_backoff_init(&b, 10000, 10000, 1000);
    d = r3_net_backoff_next(&b);
    ck_assert_msg(d <= 1000 && d > 900, "%d", d);
    b.start -= 2000ull * 1000000u;
    ck_assert_int_eq(r3_net_backoff_next(&b), -ETIMEDOUT);
    ck_assert_msg(strncmp(r3_last_error(), "gave up after ", 14) == 0, "%s", r3_last_error());
}
END_TEST

START_TEST(util_parsers)
{
    uint64_t v = 0;
    char b[64];
    ck_assert_int_eq(r3_parse_size("4Ki", &v), 0);
    ck_assert_uint_eq(v, 4096);
    ck_assert_int_eq(r3_parse_size("2MiB", &v), 0);
    ck_assert_uint_eq(v, 2u << 20);
    ck_assert_int_eq(r3_parse_size("3gb", &v), 0);
    ck_assert_uint_eq(v, 3ull << 30);
    ck_assert_int_eq(r3_parse_size("1T", &v), 0);
    ck_assert_uint_eq(v, 1ull << 40);
    ck_assert_int_eq(r3_parse_size(NULL, &v), -EINVAL);
    ERR_IS("'' is not a size (a number with an optional K/M/G/T suffix)");
    ck_assert_int_eq(r3_parse_size("-1", &v), -EINVAL);
    ERR_IS("'-1' is not a size (a number with an optional K/M/G/T suffix)");
    ck_assert_int_eq(r3_parse_size("99999999999999999999", &v), -EINVAL);
    ERR_IS("size '99999999999999999999' is too large");
    ck_assert_int_eq(r3_parse_size("5X", &v), -EINVAL);
    ERR_IS("size '5X': unknown suffix 'X' (K, M, G or T)");
    ck_assert_int_eq(r3_parse_size("5Kx", &v), -EINVAL);
    ERR_IS("size '5Kx': unknown suffix 'x' (K, M, G or T)");
    ck_assert_int_eq(r3_parse_size("16777216T", &v), -EINVAL);
    ERR_IS("size '16777216T' is too large");

    ck_assert_int_eq(r3_util_parse_duration_us(".5us", &v), 0);
    ck_assert_uint_eq(v, 1);                                    /* rounded up, not 0 */
    ck_assert_int_eq(r3_util_parse_duration_us("2min", &v), 0);
    ck_assert_uint_eq(v, 120000000);
    ck_assert_int_eq(r3_util_parse_duration_ms("1us", &v), 0);
    ck_assert_uint_eq(v, 1);
    ck_assert_int_eq(r3_util_parse_duration_us(NULL, &v), -EINVAL);
    ERR_IS("'' is not a duration (a number with a unit: us, ms, s or m)");
    ck_assert_int_eq(r3_util_parse_duration_us(".x", &v), -EINVAL);
    ck_assert_int_eq(r3_util_parse_duration_us("1e999s", &v), -EINVAL);
    ERR_IS("duration '1e999s' is too large");
    ck_assert_int_eq(r3_util_parse_duration_us("5", &v), -EINVAL);
    ERR_IS("duration '5' needs a unit: us, ms, s or m ('5s' or '5ms')");
    ck_assert_int_eq(r3_util_parse_duration_us("5h", &v), -EINVAL);
    ERR_IS("duration '5h': unknown unit 'h' (us, ms, s or m)");
    ck_assert_int_eq(r3_util_parse_duration_ms("999999999m", &v), -EINVAL);
    ERR_IS("duration '999999999m' is too large");

    ck_assert_str_eq(r3_fmt_size(3u << 20, b, sizeof b), "3 MiB");
    ck_assert_str_eq(r3_fmt_size(1025, b, sizeof b), "1025 B");
    ck_assert_str_eq(r3_fmt_size(1ull << 50, b, sizeof b), "1024 TiB");
    ck_assert_str_eq(r3_fmt_bytes(1023, b, sizeof b), "1023 B");
    ck_assert_str_eq(r3_fmt_bytes(1536, b, sizeof b), "1.5 KiB");
    ck_assert_str_eq(r3_fmt_bytes(3u << 20, b, sizeof b), "3.0 MiB");
    ck_assert_str_eq(r3_fmt_bytes(3ull << 30, b, sizeof b), "3.00 GiB");
    ck_assert_int_eq(r3_opts_check(0, 8, "x"), 0);
    ck_assert_int_eq(r3_opts_check(8, 8, "x"), 0);
    ck_assert_int_eq(r3_opts_check(9, 8, "r3_x_opts"), -EINVAL);
    ERR_IS("struct r3_x_opts has struct_size 9, but this libr3 knows only 8 (rebuild against its "
           "headers, or use r3_x_opts_init)");

    /* pread/pwrite on a descriptor that cannot: -errno, nothing else */
    char *tmp = tu_tmpdir();
    char p[600];
    snprintf(p, sizeof p, "%s/f", tmp);
    int fd = open(p, O_RDONLY | O_CREAT, 0644);
    ck_assert_int_eq(r3_pwrite_all(fd, "x", 1, 0), -EBADF);
    close(fd);
    fd = open(p, O_WRONLY);
    ck_assert_int_eq(r3_pread_all(fd, b, 1, 0), -EBADF);
    ck_assert_int_eq(r3_pwrite_all(fd, "abc", 3, 5), 0);
    close(fd);
    fd = open(p, O_RDONLY);
    memset(b, 1, sizeof b);
    ck_assert_int_eq(r3_pread_all(fd, b, 12, 0), 0);            /* past its end: zeros */
    ck_assert(b[0] == 0 && b[4] == 0 && memcmp(b + 5, "abc", 3) == 0 && b[8] == 0 && b[11] == 0);
    close(fd);
    tu_rmrf(tmp);
    free(tmp);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cov_src_net");
    TCase *tc = tcase_create("net");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, io_closed_and_pieces);
    tcase_add_test(tc, io_timeouts);
    tcase_add_test(tc, dial_refusals);
    tcase_add_test(tc, backoff);
    tcase_add_test(tc, util_parsers);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
