/* SPDX-License-Identifier: BSD-3-Clause */
/* src/net: the address parser, deadlines, backoff, the in-flight budget,
 * and a real server on loopback (connection cap, handshake deadline, idle
 * connections cost no thread, a non-reading client stalls only itself). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include "testutil.h"
#include "internal.h"
#include "net/net.h"

/* ---- addresses */

START_TEST(addr_parse)
{
    struct r3_net_addr a;
    ck_assert_int_eq(r3_net_addr_parse("127.0.0.1:7000", 0, 0, &a), 0);
    ck_assert_int_eq(a.kind, R3_NET_TCP);
    ck_assert_str_eq(a.host, "127.0.0.1");
    ck_assert_int_eq(a.port, 7000);
    ck_assert_int_eq(r3_net_addr_parse("[::1]:65535", 0, 0, &a), 0);
    ck_assert_str_eq(a.host, "::1");
    ck_assert_int_eq(a.port, 65535);
    ck_assert_int_eq(r3_net_addr_parse("localhost:1", 0, 0, &a), 0);
    ck_assert_int_eq(r3_net_addr_parse("unix:/tmp/x.sock", 0, 0, &a), 0);
    ck_assert_int_eq(a.kind, R3_NET_UNIX);
    ck_assert_str_eq(a.path, "/tmp/x.sock");
    /* default port */
    ck_assert_int_eq(r3_net_addr_parse("example.org", 10809, 0, &a), 0);
    ck_assert_int_eq(a.port, 10809);
    ck_assert_int_eq(r3_net_addr_parse("example.org", 0, 0, &a), -EINVAL);
    /* out of range, with a sentence */
    ck_assert_int_eq(r3_net_addr_parse("127.0.0.1:99999", 0, R3_NET_PASSIVE, &a), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "out of range"));
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "99999"));
    ck_assert_int_eq(r3_net_addr_parse("127.0.0.1:65536", 0, 0, &a), -EINVAL);
    ck_assert_int_eq(r3_net_addr_parse("127.0.0.1:-1", 0, 0, &a), -EINVAL);
    ck_assert_int_eq(r3_net_addr_parse("127.0.0.1:12ab", 0, 0, &a), -EINVAL);
    ck_assert_int_eq(r3_net_addr_parse("127.0.0.1:", 0, 0, &a), -EINVAL);
    ck_assert_int_eq(r3_net_addr_parse(":7000", 0, 0, &a), -EINVAL);
    ck_assert_int_eq(r3_net_addr_parse("::1:7000", 0, 0, &a), -EINVAL);     /* needs brackets */
    ck_assert_int_eq(r3_net_addr_parse("[::1", 0, 0, &a), -EINVAL);
    ck_assert_int_eq(r3_net_addr_parse("[nothost]:1", 0, 0, &a), -EINVAL);
    ck_assert_int_eq(r3_net_addr_parse("unix:", 0, 0, &a), -EINVAL);
    ck_assert_int_eq(r3_net_addr_parse("", 0, 0, &a), -EINVAL);
    /* port 0 only for listening */
    ck_assert_int_eq(r3_net_addr_parse("127.0.0.1:0", 0, 0, &a), -EINVAL);
    ck_assert_int_eq(r3_net_addr_parse("127.0.0.1:0", 0, R3_NET_PASSIVE, &a), 0);
    ck_assert_int_eq(a.port, 0);
}
END_TEST

START_TEST(addr_loopback_format)
{
    struct r3_net_addr a;
    char buf[128];
    const char *yes[] = { "127.0.0.1:1", "127.5.6.7:1", "[::1]:1", "localhost:1", "unix:/x" };
    const char *no[] = { "0.0.0.0:1", "[::]:1", "10.1.2.3:1", "[2001:db8::1]:1", "nonexistent.invalid:1" };
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        ck_assert_int_eq(r3_net_addr_parse(yes[i], 0, 0, &a), 0);
        ck_assert_msg(r3_net_addr_is_loopback(&a), "%s is loopback", yes[i]);
    }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
        ck_assert_int_eq(r3_net_addr_parse(no[i], 0, 0, &a), 0);
        ck_assert_msg(!r3_net_addr_is_loopback(&a), "%s is not loopback", no[i]);
    }
    r3_net_addr_parse("[::1]:7000", 0, 0, &a);
    ck_assert_str_eq(r3_net_addr_format(&a, buf, sizeof buf), "[::1]:7000");
    r3_net_addr_parse("127.0.0.1:7000", 0, 0, &a);
    ck_assert_str_eq(r3_net_addr_format(&a, buf, sizeof buf), "127.0.0.1:7000");
    r3_net_addr_parse("unix:/run/a", 0, 0, &a);
    ck_assert_str_eq(r3_net_addr_format(&a, buf, sizeof buf), "unix:/run/a");
}
END_TEST

/* ---- deadlines */

START_TEST(deadline_read)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct r3_io io;
    ck_assert_int_eq(r3_io_init(&io, sv[0]), 0);
    char b[8];
    /* absolute deadline: a silent peer is -ETIMEDOUT near the deadline */
    io.rdeadline = r3_net_deadline(200);
    uint64_t t0 = r3_now_ns();
    ck_assert_int_eq(r3_io_read_all(&io, b, sizeof b), -ETIMEDOUT);
    uint64_t ms = (r3_now_ns() - t0) / 1000000u;
    ck_assert_msg(ms >= 150 && ms < 2000, "waited %llu ms", (unsigned long long)ms);
    /* a trickling peer does not extend an absolute deadline */
    io.rdeadline = r3_net_deadline(300);
    t0 = r3_now_ns();
    int rc = 0;
    for (int i = 0; i < 8 && rc == 0; i++) {
        ck_assert_int_eq(write(sv[1], "x", 1), 1);
        usleep(60000);
        rc = (int)r3_io_read_some(&io, b, 1);
        rc = rc == 1 ? 0 : rc;
    }
    ck_assert_int_eq(rc, -ETIMEDOUT);
    ms = (r3_now_ns() - t0) / 1000000u;
    ck_assert_msg(ms < 1000, "waited %llu ms", (unsigned long long)ms);
    /* per-wait timeout (after the byte left over from the trickle) */
    io.rdeadline = 0;
    io.rtimeout_ms = 100;
    ck_assert_int_eq(r3_io_read_some(&io, b, 1), 1);
    ck_assert_int_eq(r3_io_read_some(&io, b, 1), -ETIMEDOUT);
    /* skip */
    io.rtimeout_ms = 1000;
    ck_assert_int_eq(write(sv[1], "abcdefgh", 8), 8);
    ck_assert_int_eq(r3_io_skip(&io, 5), 0);
    ck_assert_int_eq(r3_io_read_all(&io, b, 3), 0);
    ck_assert_int_eq(memcmp(b, "fgh", 3), 0);
    close(sv[1]);
    ck_assert_int_eq(r3_io_read_all(&io, b, 1), -EPIPE);
    r3_io_close(&io);
    ck_assert_int_eq(r3_net_remaining_ms(0), -1);
    ck_assert_int_eq(r3_net_deadline(-1), 0);
}
END_TEST

START_TEST(dial_timeout_refused)
{
    struct r3_net_addr a;
    int fd;
    /* a port nobody listens on: refused quickly, with a sentence */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in si = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof si;
    ck_assert_int_eq(bind(l, (struct sockaddr *)&si, sizeof si), 0);
    ck_assert_int_eq(getsockname(l, (struct sockaddr *)&si, &sl), 0);
    close(l);
    char spec[64];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", ntohs(si.sin_port));
    ck_assert_int_eq(r3_net_addr_parse(spec, 0, 0, &a), 0);
    ck_assert_int_eq(r3_net_dial(&a, 1000, &fd), -ECONNREFUSED);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "refused"));
}
END_TEST

/* ---- backoff */

START_TEST(backoff)
{
    struct r3_net_backoff b;
    r3_net_backoff_init(&b, 100, 1000, 0);
    int prev_max = 0;
    for (int i = 0; i < 10; i++) {
        int d = r3_net_backoff_next(&b);
        int full = 100 << (i < 4 ? i : 4);
        if (full > 1000)
            full = 1000;
        ck_assert_msg(d >= full / 2 && d <= full, "attempt %d: %d ms not in [%d, %d]", i, d, full / 2, full);
        prev_max = d > prev_max ? d : prev_max;
    }
    ck_assert_int_le(prev_max, 1000);
    r3_net_backoff_reset(&b);
    int d = r3_net_backoff_next(&b);
    ck_assert_msg(d >= 50 && d <= 100, "after reset: %d", d);
    /* jitter: two clients do not sync up */
    struct r3_net_backoff b2;
    r3_net_backoff_init(&b2, 1000, 100000, 0);
    r3_net_backoff_init(&b, 1000, 100000, 0);
    b2.rng ^= 0x5555;
    int same = 0;
    for (int i = 0; i < 6; i++)
        same += r3_net_backoff_next(&b) == r3_net_backoff_next(&b2);
    ck_assert_int_lt(same, 6);
    /* give up after a total */
    r3_net_backoff_init(&b, 20, 40, 150);
    uint64_t t0 = r3_now_ns();
    int rc;
    while ((rc = r3_net_backoff_next(&b)) > 0)
        usleep((useconds_t)rc * 1000);
    ck_assert_int_eq(rc, -ETIMEDOUT);
    uint64_t ms = (r3_now_ns() - t0) / 1000000u;
    ck_assert_msg(ms >= 150 && ms < 400, "gave up after %llu ms", (unsigned long long)ms);
}
END_TEST

/* ---- budget */

struct taker { struct r3_net_budget *b; size_t bytes, *mine, share; bool stop; atomic_int state; int rc; };

static void *take_main(void *arg)
{
    struct taker *t = arg;
    atomic_store(&t->state, 1);
    t->rc = r3_net_budget_take(t->b, t->bytes, t->mine, t->share, &t->stop);
    atomic_store(&t->state, 2);
    return NULL;
}

START_TEST(budget)
{
    struct r3_net_budget b;
    r3_net_budget_init(&b, 100);
    size_t m1 = 0, m2 = 0;
    ck_assert_int_eq(r3_net_budget_take(&b, 60, &m1, 80, NULL), 0);
    /* larger than a share or the whole budget: refused, not waited for */
    ck_assert_int_eq(r3_net_budget_take(&b, 81, &m2, 80, NULL), -EMSGSIZE);
    ck_assert_int_eq(r3_net_budget_take(&b, 101, NULL, 0, NULL), -EMSGSIZE);
    /* exhausted: waits, then gets it when released */
    struct taker t = { .b = &b, .bytes = 50, .mine = &m2, .share = 80 };
    pthread_t th;
    pthread_create(&th, NULL, take_main, &t);
    usleep(100000);
    ck_assert_int_eq(atomic_load(&t.state), 1);
    r3_net_budget_give(&b, 30, &m1);
    pthread_join(th, NULL);
    ck_assert_int_eq(t.rc, 0);
    ck_assert_uint_eq(b.used, 80);
    ck_assert_uint_eq(m2, 50);
    /* a holder's share: m1 (30) + 60 > 80 waits although the budget has... no: stop ends the wait */
    r3_net_budget_give(&b, 50, &m2);
    struct taker t2 = { .b = &b, .bytes = 60, .mine = &m1, .share = 80 };
    ck_assert_int_eq(r3_net_budget_take(&b, 40, &m1, 80, NULL), 0);   /* m1 = 70 */
    pthread_create(&th, NULL, take_main, &t2);
    usleep(100000);
    ck_assert_int_eq(atomic_load(&t2.state), 1);
    pthread_mutex_lock(&b.mu);
    t2.stop = true;
    pthread_mutex_unlock(&b.mu);
    r3_net_budget_wake(&b);
    pthread_join(th, NULL);
    ck_assert_int_eq(t2.rc, -ESHUTDOWN);
    ck_assert_uint_eq(b.used, 70);
    r3_net_budget_destroy(&b);
}
END_TEST

/* ---- a real server: an echo-ish protocol. Handshake: one byte 'H' must
 * arrive; each request is a byte n: reply n KiB through the send queue,
 * holding budget until sent. */

struct echo { atomic_int handshakes, closes; };
static struct echo E;

static int t_handshake(struct r3_net_conn *c)
{
    char h;
    int rc = r3_io_read_all(&c->io, &h, 1);
    if (rc == 0 && h != 'H')
        rc = -EPROTO;
    if (rc == 0)
        atomic_fetch_add(&E.handshakes, 1);
    return rc;
}

struct reply { struct r3_net_conn *c; char *buf; size_t n; };

static void reply_done(void *arg)
{
    struct reply *r = arg;
    r3_net_budget_release(r->c, r->n);
    free(r->buf);
    free(r);
}

static int t_readable(struct r3_net_conn *c)
{
    unsigned char n;
    int rc = r3_io_read_all(&c->io, &n, 1);
    if (rc < 0)
        return rc;
    if (n == 200) {                         /* a slow request: holds its pool thread */
        usleep(300000);
        n = 0;
    }
    size_t len = (size_t)n << 10;
    if ((rc = r3_net_budget_acquire(c, len)) < 0)
        return rc;
    struct reply *r = calloc(1, sizeof *r);
    r->c = c;
    r->n = len;
    r->buf = malloc(len ? len : 1);
    memset(r->buf, n, len);
    uint32_t hdr = htonl((uint32_t)len);
    return r3_net_conn_send(c, &hdr, 4, r->buf, len, reply_done, r);
}

static bool t_close(struct r3_net_conn *c)
{
    (void)c;
    atomic_fetch_add(&E.closes, 1);
    return false;
}

static void t_refuse(void *arg, int fd, const char *why)
{
    (void)arg;
    (void)why;
    ssize_t w = write(fd, "BUSY\n", 5);
    (void)w;
}

static size_t share;

static struct r3_net_server *start(unsigned maxc, int hs_ms, size_t inflight)
{
    struct r3_net_server_opts o = { .name = "test", .max_connections = maxc, .handshake_ms = hs_ms,
                                    .max_inflight = inflight, .send_timeout_ms = 3000,
                                    .conn_inflight = share,
                                    .h = { .handshake = t_handshake, .on_readable = t_readable,
                                           .on_close = t_close, .refuse = t_refuse } };
    ck_assert_int_eq(r3_net_addr_parse("127.0.0.1:0", 0, R3_NET_PASSIVE, &o.listen), 0);
    struct r3_net_server *s;
    ck_assert_msg(r3_net_server_start(&o, &s) == 0, "%s", r3_last_error());
    return s;
}

static int cli(struct r3_net_server *s)
{
    int fd;
    ck_assert_int_eq(r3_net_dial(r3_net_server_addr(s), 2000, &fd), 0);
    return fd;
}

/* read exactly n bytes within ms, blocking fd */
static int readn(int fd, void *buf, size_t n, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0)
            return r == 0 ? -EPIPE : -errno;
        got += (size_t)r;
    }
    return 0;
}

START_TEST(server_refuses_insecure)
{
    struct r3_net_server_opts o = { .name = "test" };
    ck_assert_int_eq(r3_net_addr_parse("0.0.0.0:0", 0, R3_NET_PASSIVE, &o.listen), 0);
    struct r3_net_server *s;
    ck_assert_int_eq(r3_net_server_start(&o, &s), -EACCES);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "without TLS"));
    o.insecure = true;
    ck_assert_int_eq(r3_net_server_start(&o, &s), 0);
    r3_net_server_stop(s);
}
END_TEST

START_TEST(server_cap_and_idle)
{
    memset(&E, 0, sizeof E);
    struct r3_net_server *s = start(200, 10000, 0);
    int fds[201];
    for (int i = 0; i < 200; i++)
        fds[i] = cli(s);
    for (int i = 0; i < 100 && r3_net_server_conns(s) < 200; i++)
        usleep(20000);
    ck_assert_uint_eq(r3_net_server_conns(s), 200);
    /* idle connections cost no thread */
    ck_assert_uint_le(r3_net_server_threads(s), 2);
    /* over the cap: a one-line refusal */
    fds[200] = cli(s);
    char b[8] = "";
    ck_assert_int_eq(readn(fds[200], b, 5, 2000), 0);
    ck_assert_int_eq(memcmp(b, "BUSY\n", 5), 0);
    close(fds[200]);
    /* the connections work: handshake then a request on each of a few */
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(write(fds[i], "H\x01", 2), 2);
        uint32_t h;
        char buf[1024];
        ck_assert_int_eq(readn(fds[i], &h, 4, 2000), 0);
        ck_assert_uint_eq(ntohl(h), 1024);
        ck_assert_int_eq(readn(fds[i], buf, 1024, 2000), 0);
        ck_assert_int_eq(buf[1023], 1);
    }
    ck_assert_int_eq(atomic_load(&E.handshakes), 5);
    for (int i = 0; i < 200; i++)
        close(fds[i]);
    for (int i = 0; i < 200 && r3_net_server_conns(s) > 0; i++)
        usleep(20000);
    ck_assert_uint_eq(r3_net_server_conns(s), 0);
    ck_assert_int_eq(atomic_load(&E.closes), 200);
    r3_net_server_stop(s);
}
END_TEST

START_TEST(server_handshake_deadline)
{
    memset(&E, 0, sizeof E);
    struct r3_net_server *s = start(16, 500, 0);
    int idle = cli(s), slow = cli(s);
    /* slow: sends nothing useful, 1 byte at a time of a bad... never 'H' completes: trickle spaces */
    uint64_t t0 = r3_now_ns();
    char b;
    int rc_idle = 1;
    for (int i = 0; i < 30; i++) {
        if (write(slow, "", 0) < 0) {}
        usleep(100000);
        struct pollfd p = { .fd = idle, .events = POLLIN };
        if (poll(&p, 1, 0) > 0) {
            rc_idle = (int)read(idle, &b, 1);
            break;
        }
    }
    uint64_t ms = (r3_now_ns() - t0) / 1000000u;
    ck_assert_int_le(rc_idle, 0);            /* closed by the server */
    ck_assert_msg(ms >= 400 && ms < 2000, "idle connection cut after %llu ms", (unsigned long long)ms);
    close(idle);
    close(slow);
    r3_net_server_stop(s);
}
END_TEST

/* A client that never reads its replies: only it stalls. */
START_TEST(server_slow_reader)
{
    memset(&E, 0, sizeof E);
    share = 2u << 20;
    struct r3_net_server *s = start(16, 10000, 8u << 20);
    share = 0;
    int bad = cli(s), good = cli(s);
    int sz = 32 * 1024;
    setsockopt(bad, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    ck_assert_int_eq(write(bad, "H", 1), 1);
    unsigned char req[64];
    memset(req, 255, sizeof req);           /* 64 × 255 KiB: far more than the socket takes */
    ck_assert_int_eq(write(bad, req, sizeof req), (ssize_t)sizeof req);
    usleep(300000);
    ck_assert_int_eq(write(good, "H", 1), 1);
    for (int i = 0; i < 20; i++) {
        uint64_t t0 = r3_now_ns();
        unsigned char n = 16;
        ck_assert_int_eq(write(good, &n, 1), 1);
        uint32_t h;
        static char buf[16 << 10];
        ck_assert_int_eq(readn(good, &h, 4, 2000), 0);
        ck_assert_int_eq(readn(good, buf, 16 << 10, 2000), 0);
        ck_assert_msg(r3_now_ns() - t0 < 1000000000ull, "good client waited");
    }
    /* the bad client is stalled, holding no more than its share of the budget
     * (waited for, 10 s at most: a slow build takes longer to fill it) */
    size_t used = r3_net_server_inflight(s);
    for (int i = 0; i < 1000 && used < (1u << 20); i++) {
        usleep(10000);
        used = r3_net_server_inflight(s);
    }
    ck_assert_msg(used >= (1u << 20) && used <= (2u << 20) + (16u << 10), "in flight: %zu", used);   /* + a good reply being released */
    /* and it is closed after send_timeout_ms without progress */
    char tmp;
    struct timeval tv = { 6, 0 };
    setsockopt(bad, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (int i = 0; i < 80 && r3_net_server_conns(s) > 1; i++)
        usleep(100000);
    ck_assert_uint_eq(r3_net_server_conns(s), 1);
    (void)tmp;
    close(good);
    close(bad);
    r3_net_server_stop(s);
}
END_TEST

/* Busy connections each get a thread, even when an idle thread was woken
 * for another one just before (a pool that signals one idle thread twice
 * serves the two in sequence). */
START_TEST(server_parallel)
{
    memset(&E, 0, sizeof E);
    struct r3_net_server *s = start(16, 10000, 0);
    enum { N = 8 };
    int fd[N];
    char buf[1024];
    uint32_t h;
    for (int i = 0; i < N; i++) {
        fd[i] = cli(s);
        ck_assert_int_eq(write(fd[i], "H\x01", 2), 2);     /* leaves idle pool threads behind */
        ck_assert_int_eq(readn(fd[i], &h, 4, 2000), 0);
        ck_assert_int_eq(readn(fd[i], buf, 1024, 2000), 0);
        usleep(30000);
    }
    for (int round = 0; round < 3; round++) {
        usleep(50000);
        uint64_t t0 = r3_now_ns();
        unsigned char slow = 200;
        for (int i = 0; i < N; i++)
            ck_assert_int_eq(write(fd[i], &slow, 1), 1);
        for (int i = 0; i < N; i++)
            ck_assert_int_eq(readn(fd[i], &h, 4, 5000), 0);
        uint64_t ms = (r3_now_ns() - t0) / 1000000u;
        ck_assert_msg(ms < 550, "%d slow requests on %d connections took %llu ms (in sequence?)", N, N,
                      (unsigned long long)ms);
    }
    for (int i = 0; i < N; i++)
        close(fd[i]);
    r3_net_server_stop(s);
}
END_TEST

/* ---- TLS: PSK over a STARTTLS upgrade, and the nbdkit/qemu certificate directory */

struct tls_end { struct r3_tls_ctx *ctx; struct r3_io io; int rc; char got[16]; bool server; };

static void *tls_side(void *arg)
{
    struct tls_end *e = arg;
    /* plain first: one line each way, then STARTTLS */
    if (e->server) {
        e->rc = r3_io_read_all(&e->io, e->got, 9);
        if (e->rc == 0)
            e->rc = r3_io_write_all(&e->io, "go-ahead\n", 9);
        if (e->rc == 0)
            e->rc = r3_tls_accept(e->ctx, &e->io, 5000);
        if (e->rc == 0)
            e->rc = r3_io_read_all(&e->io, e->got, 6);
        if (e->rc == 0)
            e->rc = r3_io_write_all(&e->io, "secret", 6);
    } else {
        e->rc = r3_io_write_all(&e->io, "starttls\n", 9);
        if (e->rc == 0)
            e->rc = r3_io_read_all(&e->io, e->got, 9);
        if (e->rc == 0)
            e->rc = r3_tls_connect(e->ctx, &e->io, "localhost", 5000);
        if (e->rc == 0)
            e->rc = r3_io_write_all(&e->io, "hello!", 6);
        if (e->rc == 0)
            e->rc = r3_io_read_all(&e->io, e->got, 6);
    }
    return NULL;
}

static void tls_pair(struct r3_tls_ctx *sctx, struct r3_tls_ctx *cctx, int *src, int *crc)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct tls_end a = { .ctx = sctx, .server = true }, b = { .ctx = cctx };
    ck_assert_int_eq(r3_io_init(&a.io, sv[0]), 0);
    ck_assert_int_eq(r3_io_init(&b.io, sv[1]), 0);
    pthread_t t;
    pthread_create(&t, NULL, tls_side, &a);
    tls_side(&b);
    if (b.rc < 0)
        r3_io_shutdown(&b.io);
    pthread_join(t, NULL);
    *src = a.rc;
    *crc = b.rc;
    if (a.rc == 0 && b.rc == 0) {
        ck_assert(r3_io_is_tls(&a.io) && r3_io_is_tls(&b.io));
        ck_assert_int_eq(memcmp(a.got, "hello!", 6), 0);
        ck_assert_int_eq(memcmp(b.got, "secret", 6), 0);
    }
    r3_io_close(&a.io);
    r3_io_close(&b.io);
}

START_TEST(tls_psk_starttls)
{
    char *dir = tu_tmpdir(), path[512], bad[512];
    snprintf(path, sizeof path, "%s/psk", dir);
    snprintf(bad, sizeof bad, "%s/psk-other", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "alice:000102030405060708090a0b0c0d0e0f\nbob:ffeeddccbbaa99887766554433221100\n");
    fclose(f);
    f = fopen(bad, "w");
    fprintf(f, "alice:11111111111111111111111111111111\n");
    fclose(f);
    struct r3_tls_ctx *sctx, *cctx, *cbad;
    struct r3_tls_opts so = { .psk_file = path }, co = { .psk_file = path, .psk_identity = "bob" },
                       bo = { .psk_file = bad };
    ck_assert_msg(r3_tls_server_ctx(&so, &sctx) == 0, "%s", r3_last_error());
    ck_assert(r3_tls_ctx_psk(sctx));
    ck_assert_msg(r3_tls_client_ctx(&co, &cctx) == 0, "%s", r3_last_error());
    ck_assert_msg(r3_tls_client_ctx(&bo, &cbad) == 0, "%s", r3_last_error());
    int src, crc;
    tls_pair(sctx, cctx, &src, &crc);
    ck_assert_msg(src == 0 && crc == 0, "PSK over STARTTLS: server %d, client %d: %s", src, crc, r3_last_error());
    tls_pair(sctx, cbad, &src, &crc);                /* the wrong key is refused */
    ck_assert(src < 0 || crc < 0);
    r3_tls_ctx_free(cbad);
    /* a malformed PSK file is a sentence naming the line */
    f = fopen(bad, "w");
    fprintf(f, "no-colon-here\n");
    fclose(f);
    ck_assert_int_eq(r3_tls_server_ctx(&bo, &cbad), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "line 1"));
    r3_tls_ctx_free(sctx);
    r3_tls_ctx_free(cctx);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(tls_cert_dir)
{
    if (system("command -v openssl >/dev/null 2>&1") != 0) {
        fprintf(stderr, "openssl(1) not found: certificate directory not checked\n");
        return;
    }
    char *dir = tu_tmpdir(), cmd[4096];
    snprintf(cmd, sizeof cmd,
             "(cd '%s' && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem -days 2 "
             "-subj /CN=ca && openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out s.csr "
             "-subj /CN=localhost && printf 'subjectAltName=DNS:localhost\\n' >ext && openssl x509 -req -in s.csr "
             "-CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -days 2 -extfile ext "
             "&& openssl req -newkey rsa:2048 -nodes -keyout client-key.pem -out c.csr -subj /CN=client-one "
             "&& openssl x509 -req -in c.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial "
             "-out client-cert.pem -days 2) >/dev/null 2>&1", dir);
    ck_assert_int_eq(system(cmd) == 0 ? 0 : -1, 0);
    struct r3_tls_ctx *sctx, *cctx, *nocert;
    struct r3_tls_opts so = { .dir = dir, .verify_peer = true }, co = { .dir = dir }, no = { .ca = NULL };
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca-cert.pem", dir);
    no.ca = ca;
    ck_assert_msg(r3_tls_server_ctx(&so, &sctx) == 0, "%s", r3_last_error());
    ck_assert(r3_tls_ctx_mtls(sctx));
    ck_assert_msg(r3_tls_client_ctx(&co, &cctx) == 0, "%s", r3_last_error());
    ck_assert_msg(r3_tls_client_ctx(&no, &nocert) == 0, "%s", r3_last_error());
    int src, crc;
    tls_pair(sctx, cctx, &src, &crc);
    ck_assert_msg(src == 0 && crc == 0, "cert dir + mTLS: server %d, client %d: %s", src, crc, r3_last_error());
    tls_pair(sctx, nocert, &src, &crc);              /* no client certificate: refused */
    ck_assert(src < 0 || crc < 0);
    r3_tls_ctx_free(sctx);
    r3_tls_ctx_free(cctx);
    r3_tls_ctx_free(nocert);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("net");
    TCase *t = tcase_create("net");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, addr_parse);
    tcase_add_test(t, addr_loopback_format);
    tcase_add_test(t, deadline_read);
    tcase_add_test(t, dial_timeout_refused);
    tcase_add_test(t, backoff);
    tcase_add_test(t, budget);
    tcase_add_test(t, server_refuses_insecure);
    tcase_add_test(t, server_cap_and_idle);
    tcase_add_test(t, server_handshake_deadline);
    tcase_add_test(t, server_slow_reader);
    tcase_add_test(t, server_parallel);
    tcase_add_test(t, tls_psk_starttls);
    tcase_add_test(t, tls_cert_dir);
    suite_add_tcase(s, t);
    return tu_run(s);
}
