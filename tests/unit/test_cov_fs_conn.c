/* SPDX-License-Identifier: BSD-3-Clause */
/* filesync/conn.c against a scripted peer on a socketpair (plain r3_io: the
 * framing, the hello and the queue do not depend on TLS): each answer a
 * client's hello can get (accepted with its id, refused with and without a
 * reason, not a hub in five ways, silence, a closed peer) with its exact
 * sentence; the frame reader's bounds and budget; the connection loop
 * (messages handed over in order, a malformed or oversized frame, the
 * handler's refusal, the peer's close, a kill from another thread); the
 * queue's limit, timeouts and refusals once dead; the message helpers and
 * the file-name rule. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/socket.h>
#include "testutil.h"
#include "internal.h"
#include "filesync/filesync.h"

/* A connection on one end of a socketpair; *peer is the other end. */
static struct fs_conn *pair_conn(int *peer)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct fs_conn *c = calloc(1, sizeof *c);
    ck_assert_ptr_nonnull(c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    ck_assert_int_eq(r3_io_init(&c->io, sv[0]), 0);
    *peer = sv[1];
    return c;
}

/* The frame of a message built by fn-style calls: header + body. */
static void send_frame(int fd, const msgpack_sbuffer *b)
{
    struct fs_frame *f = fs_frame_new(b);
    ck_assert_ptr_nonnull(f);
    tu_send_all(fd, f->data, f->len);
    fs_frame_put(f);
}

/* [type, then str/uint items given as a format: 's' string, 'u' number] */
static void send_msg(int fd, unsigned type, const char *fmt, ...)
{
    msgpack_sbuffer b;
    msgpack_packer pk;
    fs_msg_begin(&b, &pk, 1 + (uint32_t)strlen(fmt), type);
    va_list ap;
    va_start(ap, fmt);
    for (const char *p = fmt; *p; p++) {
        if (*p == 's') {
            const char *s = va_arg(ap, const char *);
            msgpack_pack_str(&pk, strlen(s));
            msgpack_pack_str_body(&pk, s, strlen(s));
        } else {
            msgpack_pack_uint64(&pk, va_arg(ap, uint64_t));
        }
    }
    va_end(ap);
    send_frame(fd, &b);
    msgpack_sbuffer_destroy(&b);
}

static void send_raw(int fd, const void *body, uint32_t n)
{
    unsigned char h[4] = { (unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                           (unsigned char)n };
    tu_send_all(fd, h, 4);
    tu_send_all(fd, body, n);
}

/* Read one frame off the peer end and check it is the client's hello. */
static void expect_hello(int fd, const char *role)
{
    unsigned char h[4], body[256];
    ck_assert(tu_recv_all(fd, h, 4));
    uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    ck_assert_uint_lt(n, sizeof body);
    ck_assert(tu_recv_all(fd, body, n));
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    ck_assert(msgpack_unpack_next(&u, (const char *)body, n, NULL) == MSGPACK_UNPACK_SUCCESS);
    uint64_t t, v;
    const char *s;
    uint32_t sn;
    ck_assert(fs_msg_uint(&u.data, 0, &t) && t == FS_HELLO);
    ck_assert(fs_msg_str(&u.data, 1, &s, &sn) && sn == 6 && memcmp(s, "r3sync", 6) == 0);
    ck_assert(fs_msg_uint(&u.data, 2, &v) && v == FS_PROTO_VERSION);
    ck_assert(fs_msg_str(&u.data, 3, &s, &sn) && sn == strlen(role) && memcmp(s, role, sn) == 0);
    msgpack_unpacked_destroy(&u);
}

#define ERR_IS(want) ck_assert_msg(strcmp(r3_last_error(), (want)) == 0, "error: '%s', not '%s'", \
                                   r3_last_error(), (want))

/* The hub's answer is written before the hello is sent (the socket buffers
 * it); then the hello is read back off the peer end. */
static int hello_with(void (*answer)(int), const char *role)
{
    int peer;
    struct fs_conn *c = pair_conn(&peer);
    answer(peer);
    int rc = fs_conn_hello(c, role, 5000);
    if (rc == 0)
        ck_assert_uint_eq(c->id, 77);
    expect_hello(peer, role);
    close(peer);
    fs_conn_free(c);
    return rc;
}

/* the items of a hello in their order: "r3sync", version, "ok", id */
static void a_ok_real(int fd)
{
    msgpack_sbuffer b;
    msgpack_packer pk;
    fs_msg_begin(&b, &pk, 5, FS_HELLO);
    msgpack_pack_str(&pk, 6);
    msgpack_pack_str_body(&pk, "r3sync", 6);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "ok", 2);
    msgpack_pack_uint64(&pk, 77);
    send_frame(fd, &b);
    msgpack_sbuffer_destroy(&b);
}
static void a_err(int fd) { send_msg(fd, FS_ERR, "s", "the receiver limit is reached"); }
static void a_err_bare(int fd) { send_msg(fd, FS_ERR, ""); }
static void a_magic(int fd) { send_msg(fd, FS_HELLO, "susu", "r3sink", (uint64_t)1, "ok", (uint64_t)77); }
static void a_no(int fd) { send_msg(fd, FS_HELLO, "susu", "r3sync", (uint64_t)1, "no", (uint64_t)77); }
static void a_noid(int fd) { send_msg(fd, FS_HELLO, "sus", "r3sync", (uint64_t)1, "ok"); }
static void a_type(int fd) { send_msg(fd, FS_FILE, "susu", "r3sync", (uint64_t)1, "ok", (uint64_t)77); }
static void a_notarray(int fd) { send_raw(fd, "\x05", 1); }
static void a_strtype(int fd) { send_raw(fd, "\x91\xa1x", 3); }
static void a_big(int fd) { tu_send_all(fd, "\x00\x10\x00\x00", 4); }   /* 1 MiB */
static void a_eof(int fd) { shutdown(fd, SHUT_WR); }

START_TEST(hello_answers)
{
    ck_assert_int_eq(hello_with(a_ok_real, "recv"), 0);
    ck_assert_int_eq(hello_with(a_err, "adv"), -EACCES);
    ERR_IS("the hub refused: the receiver limit is reached");
    ck_assert_int_eq(hello_with(a_err_bare, "adv"), -EACCES);
    ERR_IS("the hub refused without a reason");
    ck_assert_int_eq(hello_with(a_magic, "recv"), -EPROTO);
    ERR_IS("not an r3sync hub (unexpected hello)");
    ck_assert_int_eq(hello_with(a_no, "recv"), -EPROTO);
    ERR_IS("not an r3sync hub (unexpected hello)");
    ck_assert_int_eq(hello_with(a_type, "recv"), -EPROTO);
    ERR_IS("not an r3sync hub (unexpected hello)");
    ck_assert_int_eq(hello_with(a_noid, "recv"), -EPROTO);
    ERR_IS("not an r3sync hub (hello without an id)");
    ck_assert_int_eq(hello_with(a_notarray, "recv"), -EPROTO);
    ERR_IS("not an r3sync hub (malformed hello)");
    ck_assert_int_eq(hello_with(a_strtype, "recv"), -EPROTO);
    ERR_IS("not an r3sync hub (malformed hello)");
    ck_assert_int_eq(hello_with(a_big, "recv"), -EPROTO);
    ERR_IS("not an r3sync hub (its first frame is not a hello)");
    ck_assert_int_eq(hello_with(a_eof, "recv"), -EPIPE);
    ERR_IS("hello: read: the peer closed the connection");
}
END_TEST

START_TEST(hello_silent_and_gone)
{
    /* a peer that says nothing: the timeout, with its prefix */
    int peer;
    struct fs_conn *c = pair_conn(&peer);
    int rc = fs_conn_hello(c, "recv", 30);
    ck_assert_int_eq(rc, -ETIMEDOUT);
    ck_assert_msg(strncmp(r3_last_error(), "hello: ", 7) == 0, "%s", r3_last_error());
    expect_hello(peer, "recv");
    close(peer);
    fs_conn_free(c);

    /* a peer already gone: the write fails, and the read after it too;
     * the sentence is the write's */
    c = pair_conn(&peer);
    close(peer);
    rc = fs_conn_hello(c, "adv", 1000);
    ck_assert_int_lt(rc, 0);
    ck_assert_msg(strncmp(r3_last_error(), "hello: ", 7) == 0, "%s", r3_last_error());
    fs_conn_free(c);
}
END_TEST

START_TEST(refused_alert)
{
    r3_error(-EPROTO, "TLS: tlsv1 alert unknown ca");
    ck_assert(fs_refused_alert());
    ERR_IS("the hub refused our certificate (TLS: tlsv1 alert unknown ca)");
    r3_error(-EPROTO, "TLS: wrong version number");
    ck_assert(!fs_refused_alert());
    ERR_IS("TLS: wrong version number");
}
END_TEST

START_TEST(frame_read_bounds)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct r3_io io;
    ck_assert_int_eq(r3_io_init(&io, sv[0]), 0);
    struct fs_frame *f = (void *)1;

    /* above the limit: refused before anything is allocated */
    send_raw(sv[1], "\x91\x01\x02", 3);
    ck_assert_int_eq(fs_frame_read(&io, 2, NULL, NULL, &f), -EMSGSIZE);
    ERR_IS("frame of 3 bytes refused (limit 2)");
    ck_assert_ptr_null(f);
    char junk[3];
    ck_assert(tu_recv_all(sv[0], junk, 3));      /* the body the reader left */

    /* a budget: taken while the frame lives, given back when it is put */
    struct r3_net_budget bud;
    r3_net_budget_init(&bud, 64);
    send_raw(sv[1], "\x92\x01\x02", 3);
    ck_assert_int_eq(fs_frame_read(&io, 100, &bud, NULL, &f), 0);
    ck_assert_uint_eq(f->len, 7);
    ck_assert_uint_eq(bud.used, 7);
    msgpack_unpacked u;
    ck_assert_int_eq(fs_frame_unpack(f, &u), 0);
    uint64_t v;
    ck_assert(fs_msg_uint(&u.data, 1, &v) && v == 2);
    msgpack_unpacked_destroy(&u);
    fs_frame_put(f);
    ck_assert_uint_eq(bud.used, 0);

    /* a budget used up and the connection stopping: no wait, no frame */
    bud.used = 64;
    bool stop = true;
    send_raw(sv[1], "\x91\x01", 2);
    ck_assert_int_eq(fs_frame_read(&io, 100, &bud, &stop, &f), -ESHUTDOWN);
    ERR_IS("the connection is closing");
    ck_assert_ptr_null(f);
    ck_assert(tu_recv_all(sv[0], junk, 2));
    /* larger than the whole budget: refused, nothing taken */
    bud.used = 0;
    char body[100];
    memset(body, 0xc0, sizeof body);
    send_raw(sv[1], body, sizeof body);
    ck_assert_int_eq(fs_frame_read(&io, 1000, &bud, NULL, &f), -EMSGSIZE);
    ERR_IS("a request of 104 bytes is larger than the in-flight budget (64 bytes)");
    ck_assert_uint_eq(bud.used, 0);
    ck_assert(tu_recv_all(sv[0], body, sizeof body));
    r3_net_budget_destroy(&bud);

    /* the peer closes inside a body */
    unsigned char h[4] = { 0, 0, 0, 10 };
    tu_send_all(sv[1], h, 4);
    tu_send_all(sv[1], "\x93", 1);
    close(sv[1]);
    ck_assert_int_eq(fs_frame_read(&io, 100, NULL, NULL, &f), -EPIPE);
    ck_assert_ptr_null(f);
    r3_io_close(&io);

    /* unpack: not msgpack, not one array, an empty array, a trailing byte */
    static const struct { const char *b; uint32_t n; } bad[] = {
        { "\xc1", 1 }, { "\x05", 1 }, { "\x90", 1 }, { "\x91\x01\x01", 3 }, { "\x92\x01", 2 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = fs_frame_raw(bad[i].b, bad[i].n);
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(fs_frame_unpack(f, &u), -EPROTO);
        ERR_IS("malformed frame");
        msgpack_unpacked_destroy(&u);
        fs_frame_put(f);
    }
}
END_TEST

/* ---- the connection loop */
struct seen {
    pthread_mutex_t mu;
    uint64_t types[8];
    int n;
    int refuse_at;             /* refuse the message of this type (0: none) */
};

static int on_msg(void *arg, struct fs_conn *c, const msgpack_object *m, const unsigned char *raw,
                  size_t rawlen)
{
    (void)c;
    (void)raw;
    ck_assert_uint_gt(rawlen, 0);
    struct seen *s = arg;
    uint64_t t = 0;
    ck_assert(fs_msg_uint(m, 0, &t));
    pthread_mutex_lock(&s->mu);
    if (s->n < 8)
        s->types[s->n++] = t;
    pthread_mutex_unlock(&s->mu);
    if (s->refuse_at && t == (uint64_t)s->refuse_at)
        return r3_error(-EPROTO, "message %llu refused by the handler", (unsigned long long)t);
    return 0;
}

static const char *run_with(void (*script)(int), struct seen *s, char *err, size_t errn)
{
    int peer;
    struct fs_conn *c = pair_conn(&peer);
    script(peer);
    fs_conn_run(c, on_msg, s);
    ck_assert(c->dead);
    snprintf(err, errn, "%s", c->err);
    close(peer);
    fs_conn_free(c);
    return err;
}

static void s_malformed(int fd)
{
    send_msg(fd, FS_SIZE, "uu", (uint64_t)1, (uint64_t)2);
    send_msg(fd, FS_END, "u", (uint64_t)3);
    send_raw(fd, "\x92\x01", 2);
}
static void s_big(int fd)
{
    send_msg(fd, FS_GONE, "u", (uint64_t)1);
    unsigned char h[4] = { 0x7f, 0, 0, 0 };
    tu_send_all(fd, h, 4);
}
static void s_refuse(int fd)
{
    send_msg(fd, FS_SIZE, "uu", (uint64_t)1, (uint64_t)2);
    send_msg(fd, FS_ACK, "uu", (uint64_t)1, (uint64_t)2);
    send_msg(fd, FS_SIZE, "uu", (uint64_t)1, (uint64_t)2);   /* never handed over */
}
static void s_close(int fd)
{
    send_msg(fd, FS_END, "u", (uint64_t)4);
    shutdown(fd, SHUT_WR);
}

START_TEST(run_loop_ends)
{
    char err[256];
    struct seen s = { .mu = PTHREAD_MUTEX_INITIALIZER };
    ck_assert_str_eq(run_with(s_malformed, &s, err, sizeof err), "malformed frame");
    ck_assert_int_eq(s.n, 2);
    ck_assert(s.types[0] == FS_SIZE && s.types[1] == FS_END);

    s = (struct seen){ .mu = PTHREAD_MUTEX_INITIALIZER };
    run_with(s_big, &s, err, sizeof err);
    ck_assert_msg(strcmp(err, "frame of 2130706432 bytes refused (limit 4198396)") == 0, "%s", err);
    ck_assert_int_eq(s.n, 1);

    s = (struct seen){ .mu = PTHREAD_MUTEX_INITIALIZER, .refuse_at = FS_ACK };
    ck_assert_str_eq(run_with(s_refuse, &s, err, sizeof err), "message 9 refused by the handler");
    ck_assert_int_eq(s.n, 2);

    s = (struct seen){ .mu = PTHREAD_MUTEX_INITIALIZER };
    ck_assert_str_eq(run_with(s_close, &s, err, sizeof err), "the peer closed the connection");
    ck_assert_int_eq(s.n, 1);
}
END_TEST

/* A reader thread, frames both ways, and a kill from this thread. */
START_TEST(run_send_kill)
{
    int peer;
    struct fs_conn *c = pair_conn(&peer);
    struct seen s = { .mu = PTHREAD_MUTEX_INITIALIZER };
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    bool done = false;
    struct fs_reader r = { .c = c, .fn = on_msg, .arg = &s, .mu = &mu, .cv = &cv, .done = &done };
    ck_assert_int_eq(fs_reader_start(&r), 0);

    /* three frames out: they arrive whole and in order */
    for (unsigned i = 0; i < 3; i++) {
        msgpack_sbuffer b;
        msgpack_packer pk;
        fs_msg_begin(&b, &pk, 2, FS_TDONE);
        msgpack_pack_uint32(&pk, i);
        ck_assert_int_eq(fs_conn_send_buf(c, &b, 0, -1), 0);
        msgpack_sbuffer_destroy(&b);
    }
    ck_assert_int_eq(fs_conn_drain(c, 5000), 0);
    for (unsigned i = 0; i < 3; i++) {
        unsigned char fr[7];
        ck_assert(tu_recv_all(peer, fr, sizeof fr));
        static const unsigned char want_hdr[4] = { 0, 0, 0, 3 };
        ck_assert(memcmp(fr, want_hdr, 4) == 0);
        ck_assert_uint_eq(fr[4], 0x92);
        ck_assert_uint_eq(fr[5], FS_TDONE);
        ck_assert_uint_eq(fr[6], i);
    }
    ck_assert_uint_eq(atomic_load(&c->bytes_out), 21);

    /* one frame in, then a kill: the loop ends with the kill's reason */
    send_msg(peer, FS_GONE, "u", (uint64_t)5);
    fs_conn_kill(c, "stopping for the test");
    pthread_mutex_lock(&mu);
    while (!done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    pthread_join(r.t, NULL);
    ck_assert(c->dead);
    ck_assert_str_eq(c->err, "stopping for the test");

    /* once dead, nothing more is queued */
    msgpack_sbuffer b;
    msgpack_packer pk;
    fs_msg_begin(&b, &pk, 1, FS_END);
    ck_assert_int_eq(fs_conn_send_buf(c, &b, 0, 100), -EPIPE);
    ck_assert_int_eq(fs_conn_send_buf(c, &b, 0, -1), -EPIPE);
    msgpack_sbuffer_destroy(&b);
    close(peer);
    fs_conn_free(c);

    /* a kill without a reason: "closed" */
    c = pair_conn(&peer);
    fs_conn_kill(c, NULL);
    fs_conn_run(c, on_msg, &s);
    ck_assert_str_eq(c->err, "closed");
    close(peer);
    fs_conn_free(c);
}
END_TEST

START_TEST(queue_limits)
{
    int peer;
    struct fs_conn *c = pair_conn(&peer);
    msgpack_sbuffer b;
    msgpack_packer pk;
    fs_msg_begin(&b, &pk, 2, FS_BLK);
    msgpack_pack_bin(&pk, 100);
    msgpack_pack_bin_body(&pk, r3_zeros(), 100);
    /* no writer: the queue only grows */
    ck_assert_int_eq(fs_conn_send_buf(c, &b, 0, -1), 0);
    ck_assert_uint_eq(c->qbytes, 4 + b.size);
    ck_assert_int_eq(fs_conn_send_buf(c, &b, 50, 20), -ETIMEDOUT);   /* over the limit */
    ck_assert_int_eq(fs_conn_send_buf(c, &b, 10000, 20), 0);         /* under it */
    ck_assert_int_eq(fs_conn_drain(c, 20), -ETIMEDOUT);               /* nobody writes */
    fs_conn_kill(c, "gone");
    ck_assert_int_eq(fs_conn_send_buf(c, &b, 0, -1), -EPIPE);

    /* twenty frames queued, the peer gone: the writer's first batch fails,
     * the rest stays, and drain says the connection died with them */
    close(peer);
    struct fs_conn *d = pair_conn(&peer);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(fs_conn_send_buf(d, &b, 0, -1), 0);
    close(peer);
    struct seen s = { .mu = PTHREAD_MUTEX_INITIALIZER };
    fs_conn_run(d, on_msg, &s);
    ck_assert(d->dead);
    ck_assert_int_eq(fs_conn_drain(d, 1000), -EPIPE);
    ck_assert_int_eq(s.n, 0);
    fs_conn_free(d);
    msgpack_sbuffer_destroy(&b);
    fs_conn_free(c);
}
END_TEST

START_TEST(msg_helpers_and_names)
{
    msgpack_sbuffer b;
    msgpack_packer pk;
    fs_msg_begin(&b, &pk, 4, FS_FILE);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "n", 1);
    msgpack_pack_bin(&pk, 2);
    msgpack_pack_bin_body(&pk, "xy", 2);
    msgpack_pack_nil(&pk);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    ck_assert(msgpack_unpack_next(&u, b.data, b.size, NULL) == MSGPACK_UNPACK_SUCCESS);
    uint64_t v;
    const char *s;
    const void *p;
    uint32_t n;
    ck_assert(fs_msg_uint(&u.data, 0, &v) && v == FS_FILE);
    ck_assert(!fs_msg_uint(&u.data, 1, &v));          /* a string */
    ck_assert(!fs_msg_uint(&u.data, 4, &v));          /* past the end */
    ck_assert(fs_msg_str(&u.data, 1, &s, &n) && n == 1 && *s == 'n');
    ck_assert(!fs_msg_str(&u.data, 2, &s, &n));
    ck_assert(!fs_msg_str(&u.data, 9, &s, &n));
    ck_assert(fs_msg_bin(&u.data, 2, &p, &n) && n == 2 && memcmp(p, "xy", 2) == 0);
    ck_assert(!fs_msg_bin(&u.data, 3, &p, &n));       /* nil */
    ck_assert(!fs_msg_bin(&u.data, 4, &p, &n));
    /* not an array at all */
    const msgpack_object *first = &u.data.via.array.ptr[0];
    ck_assert(!fs_msg_uint(first, 0, &v));
    ck_assert(!fs_msg_str(first, 0, &s, &n));
    ck_assert(!fs_msg_bin(first, 0, &p, &n));
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&b);

    ck_assert_int_eq(fs_name_check("a/b.c", 5), 0);
    ck_assert_int_eq(fs_name_check("..a/.b", 6), 0);
    ck_assert_int_eq(fs_name_check("", 0), -EINVAL);
    ERR_IS("file name of 0 bytes refused");
    ck_assert_int_eq(fs_name_check("x", FS_MAX_NAME + 1), -EINVAL);
    ERR_IS("file name of 4097 bytes refused");
    ck_assert_int_eq(fs_name_check("a\0b", 3), -EINVAL);
    ERR_IS("file name with a NUL byte refused");
    ck_assert_int_eq(fs_name_check("/etc/x", 6), -EINVAL);
    ERR_IS("absolute file name '/etc/x' refused");
    static const char *const bad[] = { "a//b", "a/", "./a", "a/.", "../a", "a/../b", "a/.." };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(fs_name_check(bad[i], (uint32_t)strlen(bad[i])) == -EINVAL, "%s accepted", bad[i]);
        char want[64];
        snprintf(want, sizeof want, "file name '%s' refused (empty, '.' or '..' component)", bad[i]);
        ERR_IS(want);
    }
}
END_TEST

/* ---- reporting: lines and progress reach the callbacks, or nothing does */
struct rep_seen { int lines, progress, finals; uint64_t done, total; char last[64]; };
static void rep_line(void *arg, int kind, const char *text)
{
    struct rep_seen *r = arg;
    r->lines++;
    snprintf(r->last, sizeof r->last, "%d %s", kind, text);
}
static void rep_progress(void *arg, const char *what, uint64_t done, uint64_t total, double secs, bool final)
{
    struct rep_seen *r = arg;
    ck_assert_str_eq(what, "copy");
    ck_assert(secs >= 0);
    r->progress++;
    r->finals += final;
    r->done = done;
    r->total = total;
}

START_TEST(report_lines_and_progress)
{
    struct rep_seen seen = { 0 };
    struct fs_report none = { 0 }, rep = { .line = rep_line, .progress = rep_progress, .arg = &seen };
    fs_say(NULL, FS_SAY_OUT, "nobody %d", 1);
    fs_say(&none, FS_SAY_OUT, "nobody %d", 2);
    fs_say(&rep, FS_SAY_DIAG, "round %d done", 3);
    ck_assert_int_eq(seen.lines, 1);
    ck_assert_str_eq(seen.last, "1 round 3 done");

    struct fs_progress p;
    fs_progress_start(&p, &rep, "copy", 1u << 20);        /* small: not shown */
    fs_progress_add(&p, 1u << 20);
    fs_progress_end(&p);
    fs_progress_start(&p, &none, "copy", 64u << 20);      /* no callback: not shown */
    fs_progress_add(&p, 1u << 20);
    fs_progress_end(&p);
    ck_assert_int_eq(seen.progress, 0);

    fs_progress_start(&p, &rep, "copy", 64u << 20);
    fs_progress_end(&p);                                  /* nothing done: no final either */
    ck_assert_int_eq(seen.progress, 0);
    fs_progress_start(&p, &rep, "copy", 64u << 20);
    fs_progress_add(&p, 1u << 20);                        /* within 200 ms of the start: quiet */
    ck_assert_int_eq(seen.progress, 0);
    p.last -= 300000000u;                                 /* 300 ms later */
    fs_progress_add(&p, 1u << 20);
    ck_assert_int_eq(seen.progress, 1);
    ck_assert_int_eq(seen.finals, 0);
    ck_assert(seen.done == (2u << 20) && seen.total == (64u << 20));
    fs_progress_end(&p);
    ck_assert_int_eq(seen.progress, 2);
    ck_assert_int_eq(seen.finals, 1);
    fs_progress_end(&p);                                  /* once */
    ck_assert_int_eq(seen.progress, 2);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cov_fs_conn");
    TCase *tc = tcase_create("conn");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, hello_answers);
    tcase_add_test(tc, hello_silent_and_gone);
    tcase_add_test(tc, refused_alert);
    tcase_add_test(tc, frame_read_bounds);
    tcase_add_test(tc, run_loop_ends);
    tcase_add_test(tc, run_send_kill);
    tcase_add_test(tc, queue_limits);
    tcase_add_test(tc, msg_helpers_and_names);
    tcase_add_test(tc, report_lines_and_progress);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
