/* SPDX-License-Identifier: BSD-3-Clause */
/* nbd/client.c and nbd/source.c against a scripted NBD server (a thread on a
 * unix socket): the handshake variants real servers rarely take (not fixed
 * newstyle, EXPORT_NAME fallback, refusals with a message, TLS refusals, meta
 * contexts, block sizes), replies out of order, split requests, and
 * malformed replies no real server sends. Each case checks the result and
 * the sentence, so a wrong answer fails the test. The hostile cases of
 * tests/integration/hostile_nbd.sh (greeting, timeouts, overlap, range) are
 * not repeated here. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include "testutil.h"
#include "internal.h"
#include "nbd/client.h"
#include "nbd/proto.h"

/* ---- the scripted server */

typedef void (*script_fn)(int fd);

static char *dir;
static char sock_path[256];
static int lfd = -1;
static pthread_t srv;
static script_fn script;
/* what the script saw, for the test to check after the client is done */
static struct {
    uint32_t client_flags;
    uint32_t opts[16];
    unsigned nopts;
    char export_name[64];
    uint16_t req_flags[8], req_type[8];
    uint64_t req_off[8];
    uint32_t req_len[8];
    unsigned nreq;
} seen;

static void setup(void)
{
    dir = tu_tmpdir();
    ck_assert_ptr_nonnull(dir);
    snprintf(sock_path, sizeof sock_path, "%s/s", dir);
    memset(&seen, 0, sizeof seen);
    lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(lfd, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strcpy(a.sun_path, sock_path);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(lfd, 4), 0);
}

static void teardown(void)
{
    if (lfd >= 0)
        close(lfd);
    lfd = -1;
    tu_rmrf(dir);
    free(dir);
}

static void *srv_main(void *arg)
{
    (void)arg;
    /* hang guards only: a client that never comes, or stops talking */
    struct pollfd p = { .fd = lfd, .events = POLLIN };
    if (poll(&p, 1, 20000) != 1)
        return NULL;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    script(fd);
    close(fd);
    return NULL;
}

static void srv_start(script_fn fn)
{
    script = fn;
    ck_assert_int_eq(pthread_create(&srv, NULL, srv_main, NULL), 0);
}

static void srv_join(void)
{
    pthread_join(srv, NULL);
}

/* Greeting (newstyle with the given handshake flags), then the client's flags. */
static bool greet(int fd, uint16_t hflags)
{
    unsigned char h[18], cf[4];
    r3_nbd_put64(h, NBD_MAGIC);
    r3_nbd_put64(h + 8, NBD_IHAVEOPT);
    r3_nbd_put16(h + 16, hflags);
    tu_send_all(fd, h, 18);
    if (!tu_recv_all(fd, cf, 4))
        return false;
    seen.client_flags = r3_nbd_get32(cf);
    return true;
}

/* One option from the client: its number (or 0 when the client is gone);
 * the payload into data (up to cap bytes, the rest dropped). */
static uint32_t opt_in(int fd, unsigned char *data, size_t cap, uint32_t *len)
{
    unsigned char h[16];
    if (!tu_recv_all(fd, h, 16) || r3_nbd_get64(h) != NBD_IHAVEOPT)
        return 0;
    uint32_t opt = r3_nbd_get32(h + 8), n = r3_nbd_get32(h + 12);
    if (seen.nopts < 16)
        seen.opts[seen.nopts++] = opt;
    for (uint32_t i = 0; i < n; i++) {
        unsigned char b;
        if (!tu_recv_all(fd, &b, 1))
            return 0;
        if (data && i < cap)
            data[i] = b;
    }
    if (len)
        *len = n;
    return opt;
}

static void rep(int fd, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
    unsigned char h[20];
    r3_nbd_put64(h, NBD_REP_MAGIC);
    r3_nbd_put32(h + 8, opt);
    r3_nbd_put32(h + 12, type);
    r3_nbd_put32(h + 16, len);
    tu_send_all(fd, h, 20);
    if (len)
        tu_send_all(fd, data, len);
}

static void info_export(int fd, uint64_t size, uint16_t flags)
{
    unsigned char b[12];
    r3_nbd_put16(b, NBD_INFO_EXPORT);
    r3_nbd_put64(b + 2, size);
    r3_nbd_put16(b + 10, flags);
    rep(fd, NBD_OPT_GO, NBD_REP_INFO, b, 12);
}

static void info_block(int fd, uint32_t min, uint32_t pref, uint32_t max)
{
    unsigned char b[14];
    r3_nbd_put16(b, NBD_INFO_BLOCK_SIZE);
    r3_nbd_put32(b + 2, min);
    r3_nbd_put32(b + 6, pref);
    r3_nbd_put32(b + 10, max);
    rep(fd, NBD_OPT_GO, NBD_REP_INFO, b, 14);
}

#define FLAGS_RW (NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA)

/* The usual fixed-newstyle handshake: structured replies ACKed,
 * base:allocation as context 7 (when meta), GO with size and flags. */
static bool std_hs(int fd, bool meta, uint64_t size, uint16_t flags, uint32_t max_req)
{
    unsigned char d[256];
    uint32_t n, opt;
    if (!greet(fd, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
        return false;
    while ((opt = opt_in(fd, d, sizeof d, &n)) != 0) {
        if (opt == NBD_OPT_STRUCTURED_REPLY) {
            rep(fd, opt, NBD_REP_ACK, NULL, 0);
        } else if (opt == NBD_OPT_SET_META_CONTEXT) {
            if (meta) {
                unsigned char m[4 + 15];
                r3_nbd_put32(m, 7);
                memcpy(m + 4, NBD_META_ALLOCATION, 15);
                rep(fd, opt, NBD_REP_META_CONTEXT, m, sizeof m);
                rep(fd, opt, NBD_REP_ACK, NULL, 0);
            } else {
                rep(fd, opt, NBD_REP_ERR_UNSUP, NULL, 0);
            }
        } else if (opt == NBD_OPT_GO) {
            uint32_t nl = r3_nbd_get32(d);
            if (nl < sizeof seen.export_name)
                memcpy(seen.export_name, d + 4, nl);
            info_export(fd, size, flags);
            if (max_req)
                info_block(fd, 1, 4096, max_req);
            rep(fd, opt, NBD_REP_ACK, NULL, 0);
            return true;
        } else {
            rep(fd, opt, NBD_REP_ERR_UNSUP, NULL, 0);
        }
    }
    return false;
}

struct req { uint16_t flags, type; uint64_t cookie, off; uint32_t len; };

/* One request (a write's payload into data, at most cap bytes kept). */
static bool req_in(int fd, struct req *r, void *data, size_t cap)
{
    unsigned char h[28];
    if (!tu_recv_all(fd, h, 28) || r3_nbd_get32(h) != NBD_REQUEST_MAGIC)
        return false;
    r->flags = r3_nbd_get16(h + 4);
    r->type = r3_nbd_get16(h + 6);
    r->cookie = r3_nbd_get64(h + 8);
    r->off = r3_nbd_get64(h + 16);
    r->len = r3_nbd_get32(h + 24);
    if (r->type != NBD_CMD_DISC && seen.nreq < 8) {
        seen.req_flags[seen.nreq] = r->flags;
        seen.req_type[seen.nreq] = r->type;
        seen.req_off[seen.nreq] = r->off;
        seen.req_len[seen.nreq] = r->len;
        seen.nreq++;
    }
    if (r->type == NBD_CMD_WRITE) {
        char *p = data;
        for (uint32_t i = 0; i < r->len; i++) {
            char b;
            if (!tu_recv_all(fd, &b, 1))
                return false;
            if (p && i < cap)
                p[i] = b;
        }
    }
    return r->type != NBD_CMD_DISC;
}

static void simple(int fd, uint64_t cookie, uint32_t err, const void *data, size_t len)
{
    unsigned char h[16];
    r3_nbd_put32(h, NBD_SIMPLE_REPLY_MAGIC);
    r3_nbd_put32(h + 4, err);
    r3_nbd_put64(h + 8, cookie);
    tu_send_all(fd, h, 16);
    if (len)
        tu_send_all(fd, data, len);
}

static void chunk(int fd, uint16_t flags, uint16_t type, uint64_t cookie, const void *p, uint32_t len)
{
    unsigned char h[20];
    r3_nbd_put32(h, NBD_STRUCTURED_REPLY_MAGIC);
    r3_nbd_put16(h + 4, flags);
    r3_nbd_put16(h + 6, type);
    r3_nbd_put64(h + 8, cookie);
    r3_nbd_put32(h + 16, len);
    tu_send_all(fd, h, 20);
    if (len)
        tu_send_all(fd, p, len);
}

static void data_chunk(int fd, uint16_t flags, uint64_t cookie, uint64_t off, const void *p, uint32_t len)
{
    unsigned char *b = malloc(8 + (size_t)len);
    r3_nbd_put64(b, off);
    memcpy(b + 8, p, len);
    chunk(fd, flags, NBD_REPLY_TYPE_OFFSET_DATA, cookie, b, 8 + len);
    free(b);
}

static void error_chunk(int fd, uint64_t cookie, uint32_t err, const char *msg, uint16_t claimed)
{
    unsigned char b[64];
    size_t ml = strlen(msg);
    r3_nbd_put32(b, err);
    r3_nbd_put16(b + 4, claimed);
    memcpy(b + 6, msg, ml);
    chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cookie, b, (uint32_t)(6 + ml));
}

/* Reads until the client's DISC or close. */
static void drain(int fd)
{
    struct req r;
    while (req_in(fd, &r, NULL, 0))
        ;
}

/* ---- the client side */

static struct r3_nbd_client_opts opts(void)
{
    return (struct r3_nbd_client_opts){ .unix_path = sock_path, .connect_timeout_ms = 10000,
                                        .timeout_ms = 10000 };
}

static int connect_with(script_fn fn, struct r3_nbd_client_opts o, struct r3_nbd_client **c)
{
    srv_start(fn);
    int rc = r3_nbd_client_connect(&o, c);
    return rc;
}

#define ERR_HAS(s) ck_assert_msg(strstr(r3_last_error(), (s)), "error '%s' lacks '%s'", r3_last_error(), (s))

/* ---- handshake variants */

static void s_oldstyle(int fd)
{
    unsigned char h[18] = { 0 };
    r3_nbd_put64(h, NBD_MAGIC);
    r3_nbd_put64(h + 8, UINT64_C(0x00420281861253));   /* the oldstyle magic */
    tu_send_all(fd, h, 18);
    unsigned char b[4];
    tu_recv_all(fd, b, 4);                                        /* the client hangs up */
}

START_TEST(oldstyle_refused)
{
    struct r3_nbd_client *c;
    ck_assert_int_eq(connect_with(s_oldstyle, opts(), &c), -EPROTO);
    ck_assert_ptr_null(c);
    ERR_HAS("old-style NBD server");
    srv_join();
}
END_TEST

/* Not fixed newstyle: no options but EXPORT_NAME, which has no reply
 * header, then the size, flags and 124 zero bytes (no NO_ZEROES). */
static void s_plain_newstyle(int fd)
{
    if (!greet(fd, 0))
        return;
    unsigned char d[64];
    uint32_t n;
    if (opt_in(fd, d, sizeof d, &n) != NBD_OPT_EXPORT_NAME)
        return;
    memcpy(seen.export_name, d, n < 63 ? n : 63);
    unsigned char e[134] = { 0 };
    r3_nbd_put64(e, 1 << 20);
    r3_nbd_put16(e + 8, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY);
    tu_send_all(fd, e, sizeof e);
    struct req r;
    while (req_in(fd, &r, NULL, 0)) {
        char buf[4096];
        for (unsigned i = 0; i < r.len && i < sizeof buf; i++)
            buf[i] = (char)tu_byte(r.off + i, 5);
        simple(fd, r.cookie, 0, buf, r.len);
    }
}

START_TEST(plain_newstyle_export_name)
{
    struct r3_nbd_client *c;
    struct r3_nbd_client_opts o = opts();
    o.export_name = "disk1";
    ck_assert_int_eq(connect_with(s_plain_newstyle, o, &c), 0);
    ck_assert_uint_eq(r3_nbd_client_size(c), 1 << 20);
    ck_assert(r3_nbd_client_flags(c) & NBD_FLAG_READ_ONLY);
    ck_assert_uint_eq(r3_nbd_client_min_block(c), 1);
    ck_assert(!r3_nbd_client_has_extents(c));
    char buf[4096];
    ck_assert_int_eq(r3_nbd_client_pread(c, buf, sizeof buf, 8192), 0);
    ck_assert_int_eq(tu_check(buf, sizeof buf, 8192, 5), -1);
    /* read-only: refused locally, no request sent */
    ck_assert_int_eq(r3_nbd_client_pwrite(c, buf, 512, 0, false), -EROFS);
    ERR_HAS("read-only");
    /* no SEND_FLUSH: nothing to do */
    ck_assert_int_eq(r3_nbd_client_flush(c), 0);
    /* no base:allocation: all DATA, no request */
    uint64_t run = 0;
    ck_assert_int_eq(r3_nbd_client_block_status(c, 0, 65536, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 65536);
    r3_nbd_client_close(c);
    srv_join();
    /* the client asked for neither fixed newstyle nor no-zeroes, and sent
     * nothing but EXPORT_NAME and the one read */
    ck_assert_uint_eq(seen.client_flags, 0);
    ck_assert_uint_eq(seen.nopts, 1);
    ck_assert_str_eq(seen.export_name, "disk1");
    ck_assert_uint_eq(seen.nreq, 1);
    ck_assert_uint_eq(seen.req_type[0], NBD_CMD_READ);
}
END_TEST

START_TEST(plain_newstyle_no_tls)
{
    struct r3_nbd_client *c;
    struct r3_nbd_client_opts o = opts();
    o.tls = true;
    ck_assert_int_eq(connect_with(s_plain_newstyle, o, &c), -EPROTO);
    ERR_HAS("cannot do TLS (not fixed newstyle)");
    srv_join();
    ck_assert_uint_eq(seen.nopts, 0);      /* no option went out in clear */
}
END_TEST

/* Fixed newstyle, but an old server: every option but EXPORT_NAME is
 * unsupported, so GO falls back to EXPORT_NAME (with NO_ZEROES: 10 bytes). */
static void s_old_fixed(int fd)
{
    if (!greet(fd, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
        return;
    uint32_t opt;
    while ((opt = opt_in(fd, NULL, 0, NULL)) != 0) {
        if (opt == NBD_OPT_EXPORT_NAME) {
            unsigned char e[10];
            r3_nbd_put64(e, 3 << 20);
            r3_nbd_put16(e + 8, FLAGS_RW);
            tu_send_all(fd, e, 10);
            break;
        }
        rep(fd, opt, NBD_REP_ERR_UNSUP, NULL, 0);
    }
    struct req r;
    char w[4096];
    while (req_in(fd, &r, w, sizeof w)) {
        if (r.type == NBD_CMD_WRITE)
            simple(fd, r.cookie, tu_check(w, r.len, r.off, 9) == -1 ? 0 : NBD_EIO, NULL, 0);
        else
            simple(fd, r.cookie, 0, NULL, 0);
    }
}

START_TEST(fixed_fallback_export_name)
{
    struct r3_nbd_client *c;
    ck_assert_int_eq(connect_with(s_old_fixed, opts(), &c), 0);
    ck_assert_uint_eq(r3_nbd_client_size(c), 3 << 20);
    ck_assert(!r3_nbd_client_has_extents(c));
    char w[4096];
    tu_fill(w, sizeof w, 12288, 9);
    ck_assert_int_eq(r3_nbd_client_pwrite(c, w, sizeof w, 12288, true), 0);
    ck_assert_int_eq(r3_nbd_client_flush(c), 0);
    r3_nbd_client_close(c);
    srv_join();
    ck_assert_uint_eq(seen.client_flags, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    /* STRUCTURED_REPLY, GO, EXPORT_NAME: no meta context without structured replies */
    ck_assert_uint_eq(seen.nopts, 3);
    ck_assert_uint_eq(seen.opts[0], NBD_OPT_STRUCTURED_REPLY);
    ck_assert_uint_eq(seen.opts[1], NBD_OPT_GO);
    ck_assert_uint_eq(seen.opts[2], NBD_OPT_EXPORT_NAME);
    ck_assert_uint_eq(seen.nreq, 2);
    ck_assert_uint_eq(seen.req_type[0], NBD_CMD_WRITE);
    ck_assert_uint_eq(seen.req_flags[0], NBD_CMD_FLAG_FUA);   /* the export says SEND_FUA */
    ck_assert_uint_eq(seen.req_type[1], NBD_CMD_FLUSH);
}
END_TEST

/* GO unsupported, and the server drops the connection at EXPORT_NAME: the
 * way an old server says "no such export". */
static void s_export_name_close(int fd)
{
    if (!greet(fd, NBD_FLAG_FIXED_NEWSTYLE))
        return;
    uint32_t opt;
    while ((opt = opt_in(fd, NULL, 0, NULL)) != 0 && opt != NBD_OPT_EXPORT_NAME)
        rep(fd, opt, NBD_REP_ERR_UNSUP, NULL, 0);
}

START_TEST(export_name_closed)
{
    struct r3_nbd_client *c;
    struct r3_nbd_client_opts o = opts();
    o.export_name = "nope";
    o.no_structured = true;
    ck_assert_int_eq(connect_with(s_export_name_close, o, &c), -ENOENT);
    ERR_HAS("no export 'nope'");
    srv_join();
    ck_assert_uint_eq(seen.nopts, 2);                    /* GO, EXPORT_NAME: no_structured honoured */
    ck_assert_uint_eq(seen.opts[0], NBD_OPT_GO);
}
END_TEST

/* GO refused with an error and a message. */
static uint32_t go_err;
static void s_go_refused(int fd)
{
    if (!greet(fd, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
        return;
    uint32_t opt;
    while ((opt = opt_in(fd, NULL, 0, NULL)) != 0) {
        if (opt == NBD_OPT_GO) {
            /* an INFO we do not know and a short one come first: ignored */
            unsigned char i[3] = { 0, 9, 1 };
            rep(fd, opt, NBD_REP_INFO, i, 3);
            rep(fd, opt, NBD_REP_INFO, i, 1);
            rep(fd, opt, go_err, "go away", 7);
            break;
        }
        rep(fd, opt, NBD_REP_ERR_UNSUP, NULL, 0);
    }
    opt_in(fd, NULL, 0, NULL);
}

START_TEST(go_refused_unknown)
{
    struct r3_nbd_client *c;
    struct r3_nbd_client_opts o = opts();
    o.export_name = "x";
    go_err = NBD_REP_ERR_UNKNOWN;
    ck_assert_int_eq(connect_with(s_go_refused, o, &c), -ENOENT);
    ERR_HAS("refused export 'x': unknown export: go away");
    srv_join();
}
END_TEST

START_TEST(go_refused_policy)
{
    static const struct { uint32_t err; const char *name; } t[] = {
        { NBD_REP_ERR_POLICY, "refused by policy" }, { NBD_REP_ERR_INVALID, "invalid" },
        { NBD_REP_ERR_PLATFORM, "not supported on the platform" }, { NBD_REP_ERR_TLS_REQD, "TLS required" },
        { NBD_REP_ERR_SHUTDOWN, "server shutting down" },
        { NBD_REP_ERR_BLOCK_SIZE_REQD, "block size required" }, { NBD_REP_ERR_TOO_BIG, "too big" },
        { NBD_REP_FLAG_ERROR | 77, ": error: go away" },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct r3_nbd_client *c;
        go_err = t[i].err;
        ck_assert_int_eq(connect_with(s_go_refused, opts(), &c), -ECONNREFUSED);
        ERR_HAS(t[i].name);
        srv_join();
    }
}
END_TEST

START_TEST(export_name_too_long)
{
    char *name = malloc(NBD_MAX_NAME + 2);
    memset(name, 'a', NBD_MAX_NAME + 1);
    name[NBD_MAX_NAME + 1] = 0;
    struct r3_nbd_client *c;
    struct r3_nbd_client_opts o = opts();
    o.export_name = name;
    ck_assert_int_eq(connect_with(s_go_refused, o, &c), -EINVAL);
    ERR_HAS("export name too long");
    free(name);
    srv_join();
    ck_assert_uint_eq(seen.nopts, 0);
}
END_TEST

/* An option reply to another option than the one asked. */
static void s_wrong_opt_reply(int fd)
{
    if (!greet(fd, NBD_FLAG_FIXED_NEWSTYLE))
        return;
    uint32_t opt = opt_in(fd, NULL, 0, NULL);
    rep(fd, opt + 1, NBD_REP_ACK, NULL, 0);
    opt_in(fd, NULL, 0, NULL);
}

START_TEST(wrong_option_reply)
{
    struct r3_nbd_client *c;
    ck_assert_int_eq(connect_with(s_wrong_opt_reply, opts(), &c), -EPROTO);
    ERR_HAS("bad option reply");
    srv_join();
}
END_TEST

/* The server hangs up in the middle of the options. */
static void s_close_in_options(int fd)
{
    if (!greet(fd, NBD_FLAG_FIXED_NEWSTYLE))
        return;
    opt_in(fd, NULL, 0, NULL);
    unsigned char h[10] = { 0 };
    r3_nbd_put64(h, NBD_REP_MAGIC);
    tu_send_all(fd, h, sizeof h);                                  /* half a reply header */
}

START_TEST(close_in_options)
{
    struct r3_nbd_client *c;
    ck_assert_int_eq(connect_with(s_close_in_options, opts(), &c), -EPROTO);
    ERR_HAS("closed the connection during the NBD handshake");
    srv_join();
}
END_TEST

/* STARTTLS refused: the client must not go on in clear. */
static void s_tls_refused(int fd)
{
    if (!greet(fd, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
        return;
    uint32_t opt = opt_in(fd, NULL, 0, NULL);
    rep(fd, opt, NBD_REP_ERR_POLICY, NULL, 0);
    opt_in(fd, NULL, 0, NULL);
}

START_TEST(starttls_refused)
{
    struct r3_nbd_client *c;
    struct r3_nbd_client_opts o = opts();
    o.tls = true;
    ck_assert_int_eq(connect_with(s_tls_refused, o, &c), -ECONNREFUSED);
    ERR_HAS("refused STARTTLS (refused by policy)");
    srv_join();
    ck_assert_uint_eq(seen.nopts, 1);
    ck_assert_uint_eq(seen.opts[0], NBD_OPT_STARTTLS);
}
END_TEST

/* STARTTLS accepted, then the server talks plain text: the TLS handshake fails. */
static void s_tls_fake(int fd)
{
    if (!greet(fd, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
        return;
    uint32_t opt = opt_in(fd, NULL, 0, NULL);
    rep(fd, opt, NBD_REP_ACK, NULL, 0);
    unsigned char b[5];
    if (tu_recv_all(fd, b, 5))                                     /* the ClientHello's record header */
        tu_send_all(fd, "HTTP/1.0 400 nope\r\n\r\n", 21);
}

START_TEST(starttls_not_tls)
{
    struct r3_nbd_client *c;
    struct r3_nbd_client_opts o = opts();
    o.tls = true;
    int rc = connect_with(s_tls_fake, o, &c);
    ck_assert_int_lt(rc, 0);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(r3_last_error(), "nbd+unix"), "%s", r3_last_error());   /* says who */
    srv_join();
}
END_TEST

/* A META_CONTEXT for another context, ours, then an error instead of the
 * ACK: the client must not use block status (the selection failed). */
static void s_meta_err(int fd)
{
    unsigned char d[256];
    uint32_t n, opt;
    if (!greet(fd, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
        return;
    while ((opt = opt_in(fd, d, sizeof d, &n)) != 0) {
        if (opt == NBD_OPT_SET_META_CONTEXT) {
            unsigned char m[4 + 15];
            r3_nbd_put32(m, 3);
            memcpy(m + 4, "base:elsewhere!", 15);
            rep(fd, opt, NBD_REP_META_CONTEXT, m, sizeof m);
            r3_nbd_put32(m, 7);
            memcpy(m + 4, NBD_META_ALLOCATION, 15);
            rep(fd, opt, NBD_REP_META_CONTEXT, m, sizeof m);
            rep(fd, opt, NBD_REP_ERR_INVALID, "changed my mind", 15);
        } else if (opt == NBD_OPT_GO) {
            info_export(fd, 1 << 20, FLAGS_RW);
            rep(fd, opt, NBD_REP_ACK, NULL, 0);
            break;
        } else {
            rep(fd, opt, NBD_REP_ACK, NULL, 0);
        }
    }
    drain(fd);
}

START_TEST(meta_then_error)
{
    struct r3_nbd_client *c;
    ck_assert_int_eq(connect_with(s_meta_err, opts(), &c), 0);
    ck_assert(!r3_nbd_client_has_extents(c));
    uint64_t run = 0;
    ck_assert_int_eq(r3_nbd_client_block_status(c, 0, 4096, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 4096);
    r3_nbd_client_close(c);
    srv_join();
    ck_assert_uint_eq(seen.nreq, 0);                     /* no BLOCK_STATUS went out */
}
END_TEST

/* ---- transmission */

/* Meta context 7, structured replies, max request 64 KiB. */
static void s_split(int fd)
{
    if (!std_hs(fd, true, 1 << 20, FLAGS_RW, 65536))
        return;
    /* a 160 KiB read is three requests: answer them last first, the last
     * one in two data chunks in reverse order and a hole in between */
    struct req r[3];
    for (int i = 0; i < 3; i++)
        if (!req_in(fd, &r[i], NULL, 0))
            return;
    char *buf = malloc(65536);
    for (int i = 2; i >= 0; i--) {
        for (uint32_t j = 0; j < r[i].len; j++)
            buf[j] = (char)tu_byte(r[i].off + j, 3);
        if (i == 2) {
            uint32_t h = r[i].len / 2;
            data_chunk(fd, 0, r[i].cookie, r[i].off + h + 512, buf + h + 512, r[i].len - h - 512);
            unsigned char hole[12];
            r3_nbd_put64(hole, r[i].off + h);
            r3_nbd_put32(hole + 8, 512);
            chunk(fd, 0, NBD_REPLY_TYPE_OFFSET_HOLE, r[i].cookie, hole, 12);
            /* an informational chunk type we do not know: skipped */
            chunk(fd, 0, 42, r[i].cookie, "ignored", 7);
            data_chunk(fd, NBD_REPLY_FLAG_DONE, r[i].cookie, r[i].off, buf, h);
        } else {
            data_chunk(fd, NBD_REPLY_FLAG_DONE, r[i].cookie, r[i].off, buf, r[i].len);
        }
    }
    free(buf);
    drain(fd);
}

START_TEST(split_out_of_order)
{
    struct r3_nbd_client *c;
    struct r3_nbd_client_opts o = opts();
    o.export_name = "meta";
    ck_assert_int_eq(connect_with(s_split, o, &c), 0);
    ck_assert(r3_nbd_client_has_extents(c));
    size_t len = 160 << 10;
    char *buf = malloc(len);
    memset(buf, 0x55, len);
    ck_assert_int_eq(r3_nbd_client_pread(c, buf, len, 4096), 0);
    /* all but the hole's 512 bytes are the pattern */
    size_t h = 4096 + 128 * 1024 + 16 * 1024;      /* third request at 4096+128K, 32 KiB, hole at half */
    ck_assert_int_eq(tu_check(buf, h - 4096, 4096, 3), -1);
    for (size_t i = 0; i < 512; i++)
        ck_assert_int_eq(buf[h - 4096 + i], 0);
    ck_assert_int_eq(tu_check(buf + h - 4096 + 512, 4096 + len - h - 512, h + 512, 3), -1);
    free(buf);
    r3_nbd_client_close(c);
    srv_join();
    ck_assert_str_eq(seen.export_name, "meta");
    ck_assert_uint_eq(seen.nreq, 3);
    ck_assert_uint_eq(seen.req_len[0], 65536);
    ck_assert_uint_eq(seen.req_len[1], 65536);
    ck_assert_uint_eq(seen.req_len[2], 32768);
    ck_assert_uint_eq(seen.req_off[2], 4096 + 131072);
}
END_TEST

/* Block status: a ZERO extent, a DATA extent longer than asked, then the
 * malformed ones, each ending the connection. */
static int bs_mode;
static void s_block_status(int fd)
{
    if (!std_hs(fd, true, 1 << 30, FLAGS_RW, 0))
        return;
    struct req r;
    unsigned char d[28];
    while (req_in(fd, &r, NULL, 0)) {
        if (r.type != NBD_CMD_BLOCK_STATUS) {
            simple(fd, r.cookie, NBD_EINVAL, NULL, 0);
            continue;
        }
        r3_nbd_put32(d, 7);
        r3_nbd_put32(d + 4, 8192);
        r3_nbd_put32(d + 8, NBD_STATE_ZERO | NBD_STATE_HOLE);
        r3_nbd_put32(d + 12, 4096);                       /* a second descriptor: skipped */
        r3_nbd_put32(d + 16, 0);
        switch (bs_mode) {
        case 0:                                           /* zero, then data past the request */
            if (r.off == 0) {
                chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, r.cookie, d, 20);
            } else {
                r3_nbd_put32(d + 4, UINT32_MAX);
                r3_nbd_put32(d + 8, 0);
                chunk(fd, 0, NBD_REPLY_TYPE_BLOCK_STATUS, r.cookie, d, 12);
                chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, r.cookie, NULL, 0);
            }
            break;
        case 1:                                           /* another context id */
            r3_nbd_put32(d, 8);
            chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, r.cookie, d, 12);
            break;
        case 2:                                           /* a descriptor of length 0 */
            r3_nbd_put32(d + 4, 0);
            chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, r.cookie, d, 12);
            break;
        case 3:                                           /* no descriptor, structured */
            chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, r.cookie, NULL, 0);
            break;
        case 4:                                           /* no descriptor, simple */
            simple(fd, r.cookie, 0, NULL, 0);
            break;
        case 5:                                           /* a length not 4 + 8n */
            chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, r.cookie, d, 14);
            break;
        case 6:                                           /* two descriptor chunks */
            chunk(fd, 0, NBD_REPLY_TYPE_BLOCK_STATUS, r.cookie, d, 12);
            chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, r.cookie, d, 12);
            break;
        case 7:                                           /* a data chunk for a block status */
            data_chunk(fd, NBD_REPLY_FLAG_DONE, r.cookie, r.off, "abcd", 4);
            break;
        case 8:                                           /* a NONE chunk with a payload */
            chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, r.cookie, d, 4);
            break;
        }
    }
}

START_TEST(block_status_answers)
{
    struct r3_nbd_client *c;
    bs_mode = 0;
    ck_assert_int_eq(connect_with(s_block_status, opts(), &c), 0);
    ck_assert(r3_nbd_client_has_extents(c));
    uint64_t run = 0;
    ck_assert_int_eq(r3_nbd_client_block_status(c, 0, 1 << 20, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 8192);
    /* a descriptor past the request says no more than the request (capped at 1 GiB) */
    ck_assert_int_eq(r3_nbd_client_block_status(c, 4096, UINT64_C(3) << 30, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 1u << 30);
    run = 1;
    ck_assert_int_eq(r3_nbd_client_block_status(c, 4096, 0, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 0);
    /* the server's simple error to a read */
    char b[512];
    ck_assert_int_eq(r3_nbd_client_pread(c, b, sizeof b, 0), -EINVAL);
    ERR_HAS("the server answered the read: ");
    r3_nbd_client_close(c);
    srv_join();
    ck_assert_uint_eq(seen.nreq, 3);
    ck_assert_uint_eq(seen.req_flags[0], NBD_CMD_FLAG_REQ_ONE);
    ck_assert_uint_eq(seen.req_len[1], 1u << 30);
}
END_TEST

START_TEST(block_status_malformed)
{
    static const char *want[] = {
        [1] = "a context we did not ask for", [2] = "descriptor of length 0",
        [3] = "without a descriptor", [4] = "without a descriptor", [5] = "malformed block status chunk",
        [6] = "malformed block status chunk", [7] = "does not fit the request",
        [8] = "a NONE chunk with a payload",
    };
    for (bs_mode = 1; bs_mode <= 8; bs_mode++) {
        struct r3_nbd_client *c;
        ck_assert_int_eq(connect_with(s_block_status, opts(), &c), 0);
        uint64_t run = 0;
        ck_assert_int_eq(r3_nbd_client_block_status(c, 0, 65536, &run), -EIO);
        ck_assert_msg(strstr(r3_last_error(), want[bs_mode]), "mode %d: '%s' lacks '%s'", bs_mode,
                      r3_last_error(), want[bs_mode]);
        if (bs_mode != 3 && bs_mode != 4) {
            /* a protocol error ends the connection: later requests fail at once */
            ck_assert_int_eq(r3_nbd_client_block_status(c, 0, 65536, &run), -EIO);
            ERR_HAS("the connection is lost: protocol error from the server");
        }
        r3_nbd_client_close(c);
        srv_join();
    }
}
END_TEST

/* Error chunks and simple errors: the errno the server gave (unknown ones
 * become EIO), and malformed error chunks end the connection. */
static int err_mode;
static void s_errors(int fd)
{
    if (!std_hs(fd, false, 1 << 20, FLAGS_RW, 0))
        return;
    struct req r;
    unsigned char b[8];
    while (req_in(fd, &r, NULL, 0)) {
        switch (err_mode) {
        case 0:
            if (r.type == NBD_CMD_WRITE)
                error_chunk(fd, r.cookie, NBD_ENOSPC, "full", 4);
            else if (r.type == NBD_CMD_FLUSH)
                simple(fd, r.cookie, 12345, NULL, 0);          /* not an NBD errno */
            else
                error_chunk(fd, r.cookie, NBD_EPERM, "no", 2);
            break;
        case 1:                                               /* shorter than 6 bytes */
            r3_nbd_put32(b, NBD_EIO);
            chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, r.cookie, b, 4);
            break;
        case 2:                                               /* a message longer than the chunk */
            error_chunk(fd, r.cookie, NBD_EIO, "abc", 60);
            break;
        case 3:                                               /* an error of 0 */
            error_chunk(fd, r.cookie, 0, "zero", 4);
            break;
        case 5:                                               /* a simple reply with another cookie */
            simple(fd, r.cookie ^ 0x10000, 0, NULL, 0);
            break;
        }
    }
}

START_TEST(error_replies)
{
    struct r3_nbd_client *c;
    err_mode = 0;
    ck_assert_int_eq(connect_with(s_errors, opts(), &c), 0);
    char b[4096];
    tu_fill(b, sizeof b, 0, 1);
    ck_assert_int_eq(r3_nbd_client_pwrite(c, b, sizeof b, 0, false), -ENOSPC);
    ERR_HAS("the server answered the write");
    ck_assert_int_eq(r3_nbd_client_flush(c), -EIO);
    ERR_HAS("the server answered the flush");
    ck_assert_int_eq(r3_nbd_client_pread(c, b, sizeof b, 0), -EPERM);
    /* errors leave the connection usable */
    ck_assert_int_eq(r3_nbd_client_pread(c, b, sizeof b, 0), -EPERM);
    r3_nbd_client_close(c);
    srv_join();
    ck_assert_uint_eq(seen.req_flags[0], 0);    /* fua=false: no FUA flag */
}
END_TEST

START_TEST(error_chunks_malformed)
{
    static const struct { int mode, rc; const char *want; } t[] = {
        { 1, -EIO, "error chunk shorter than 6 bytes" },
        { 2, -EIO, "whose message overruns it" },
        { 3, -EIO, "the server answered the read: Input/output error" },
        { 5, -EIO, "a reply to a request we did not send" },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct r3_nbd_client *c;
        err_mode = t[i].mode;
        ck_assert_int_eq(connect_with(s_errors, opts(), &c), 0);
        char b[512];
        ck_assert_int_eq(r3_nbd_client_pread(c, b, sizeof b, 0), t[i].rc);
        ck_assert_msg(strstr(r3_last_error(), t[i].want), "mode %d: '%s'", t[i].mode, r3_last_error());
        r3_nbd_client_close(c);
        srv_join();
    }
}
END_TEST

/* A structured reply to a client that did not ask for them. */
static void s_structured_unasked(int fd)
{
    if (!greet(fd, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
        return;
    uint32_t opt;
    while ((opt = opt_in(fd, NULL, 0, NULL)) != 0) {
        if (opt == NBD_OPT_GO) {
            info_export(fd, 1 << 20, FLAGS_RW);
            rep(fd, opt, NBD_REP_ACK, NULL, 0);
            break;
        }
        rep(fd, opt, NBD_REP_ERR_UNSUP, NULL, 0);
    }
    struct req r;
    if (req_in(fd, &r, NULL, 0))
        data_chunk(fd, NBD_REPLY_FLAG_DONE, r.cookie, r.off, "abcd", 4);
    drain(fd);
}

START_TEST(structured_unasked)
{
    struct r3_nbd_client *c;
    struct r3_nbd_client_opts o = opts();
    o.no_structured = true;
    ck_assert_int_eq(connect_with(s_structured_unasked, o, &c), 0);
    char b[4];
    ck_assert_int_eq(r3_nbd_client_pread(c, b, 4, 0), -EIO);
    ERR_HAS("bad magic 0x668e33ef");
    r3_nbd_client_close(c);
    srv_join();
    /* not a single structured option was sent */
    for (unsigned i = 0; i < seen.nopts; i++)
        ck_assert_uint_ne(seen.opts[i], NBD_OPT_STRUCTURED_REPLY);
}
END_TEST

/* Hole chunks that do not fit, and more pieces than the client tracks. */
static int hole_mode;
static void s_holes(int fd)
{
    if (!std_hs(fd, false, 1 << 20, FLAGS_RW, 0))
        return;
    struct req r;
    unsigned char h[16];
    while (req_in(fd, &r, NULL, 0)) {
        switch (hole_mode) {
        case 0:                                   /* 11 bytes */
            r3_nbd_put64(h, r.off);
            chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_HOLE, r.cookie, h, 11);
            break;
        case 1:                                   /* past the end of the request */
            r3_nbd_put64(h, r.off + 512);
            r3_nbd_put32(h + 8, r.len);
            chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_HOLE, r.cookie, h, 12);
            break;
        case 2:                                   /* overlapping holes */
            r3_nbd_put64(h, r.off);
            r3_nbd_put32(h + 8, 1024);
            chunk(fd, 0, NBD_REPLY_TYPE_OFFSET_HOLE, r.cookie, h, 12);
            r3_nbd_put64(h, r.off + 512);
            r3_nbd_put32(h + 8, 256);
            chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_HOLE, r.cookie, h, 12);
            break;
        case 3:                                   /* 33 separate one-byte holes */
            for (unsigned i = 0; i < 33; i++) {
                r3_nbd_put64(h, r.off + 2 * i);
                r3_nbd_put32(h + 8, 1);
                chunk(fd, 0, NBD_REPLY_TYPE_OFFSET_HOLE, r.cookie, h, 12);
            }
            break;
        case 4:                                   /* pieces that join up: every other byte, then the gaps */
            for (unsigned i = 0; i < 32; i++) {
                r3_nbd_put64(h, r.off + 2 * i);
                r3_nbd_put32(h + 8, 1);
                chunk(fd, 0, NBD_REPLY_TYPE_OFFSET_HOLE, r.cookie, h, 12);
            }
            for (unsigned i = 0; i < 32; i++) {
                char byte = (char)(0x40 + i);
                data_chunk(fd, i == 31 ? NBD_REPLY_FLAG_DONE : 0, r.cookie, r.off + 2 * i + 1, &byte, 1);
            }
            break;
        case 5:                                   /* a gap between two pieces: -ENODATA */
            r3_nbd_put64(h, r.off);
            r3_nbd_put32(h + 8, 16);
            chunk(fd, 0, NBD_REPLY_TYPE_OFFSET_HOLE, r.cookie, h, 12);
            r3_nbd_put64(h, r.off + 32);
            r3_nbd_put32(h + 8, 32);
            chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_HOLE, r.cookie, h, 12);
            break;
        case 6:                                   /* a piece before the first one, then its join */
            r3_nbd_put64(h, r.off + 32);
            r3_nbd_put32(h + 8, 32);
            chunk(fd, 0, NBD_REPLY_TYPE_OFFSET_HOLE, r.cookie, h, 12);
            data_chunk(fd, 0, r.cookie, r.off + 16, "0123456789abcdef", 16);
            r3_nbd_put64(h, r.off);
            r3_nbd_put32(h + 8, 16);
            chunk(fd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_HOLE, r.cookie, h, 12);
            break;
        }
    }
}

START_TEST(hole_chunks)
{
    static const char *want[] = { "a malformed hole chunk", "hole chunk outside the requested range",
                                  "overlapping or too fragmented chunks",
                                  "overlapping or too fragmented chunks" };
    for (hole_mode = 0; hole_mode < 4; hole_mode++) {
        struct r3_nbd_client *c;
        ck_assert_int_eq(connect_with(s_holes, opts(), &c), 0);
        char b[1024];
        ck_assert_int_eq(r3_nbd_client_pread(c, b, sizeof b, 4096), -EIO);
        ck_assert_msg(strstr(r3_last_error(), want[hole_mode]), "mode %d: '%s'", hole_mode, r3_last_error());
        r3_nbd_client_close(c);
        srv_join();
    }
}
END_TEST

START_TEST(hole_chunks_join)
{
    struct r3_nbd_client *c;
    char b[64];
    hole_mode = 4;
    ck_assert_int_eq(connect_with(s_holes, opts(), &c), 0);
    memset(b, 0x7f, sizeof b);
    ck_assert_int_eq(r3_nbd_client_pread(c, b, sizeof b, 4096), 0);
    for (unsigned i = 0; i < 32; i++) {
        ck_assert_int_eq(b[2 * i], 0);
        ck_assert_int_eq(b[2 * i + 1], 0x40 + (int)i);
    }
    r3_nbd_client_close(c);
    srv_join();

    hole_mode = 5;
    ck_assert_int_eq(connect_with(s_holes, opts(), &c), 0);
    ck_assert_int_eq(r3_nbd_client_pread(c, b, sizeof b, 4096), -EIO);
    ERR_HAS("read of 64 bytes at 4096 left 16 bytes unfilled");
    r3_nbd_client_close(c);
    srv_join();

    hole_mode = 6;
    ck_assert_int_eq(connect_with(s_holes, opts(), &c), 0);
    memset(b, 0x7f, sizeof b);
    ck_assert_int_eq(r3_nbd_client_pread(c, b, sizeof b, 4096), 0);
    for (unsigned i = 0; i < 16; i++)
        ck_assert_int_eq(b[i], 0);
    ck_assert(memcmp(b + 16, "0123456789abcdef", 16) == 0);
    for (unsigned i = 32; i < 64; i++)
        ck_assert_int_eq(b[i], 0);
    r3_nbd_client_close(c);
    srv_join();
}
END_TEST

/* handshake_only: the socket is handed over; the client sends nothing more. */
static void s_handover(int fd)
{
    if (!std_hs(fd, false, 1 << 20, FLAGS_RW, 0))
        return;
    char b;
    tu_recv_all(fd, &b, 1);                     /* ends when the test closes the handed-over fd */
}

START_TEST(take_fd)
{
    struct r3_nbd_client *c;
    struct r3_nbd_client_opts o = opts();
    o.handshake_only = true;
    o.no_structured = true;
    ck_assert_int_eq(connect_with(s_handover, o, &c), 0);
    int fd = r3_nbd_client_take_fd(c);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);   /* blocking, as the kernel wants */
    /* a second take has no socket to give */
    ck_assert_int_eq(r3_nbd_client_take_fd(c), -EINVAL);
    ERR_HAS("only a plain connection can be handed over");
    r3_nbd_client_close(c);
    /* the socket is still ours and open: a request goes through it */
    unsigned char h[28] = { 0 };
    r3_nbd_put32(h, NBD_REQUEST_MAGIC);
    r3_nbd_put16(h + 6, NBD_CMD_DISC);
    ck_assert_int_eq(write(fd, h, sizeof h), (ssize_t)sizeof h);
    close(fd);
    srv_join();
}
END_TEST

START_TEST(connect_bad_args)
{
    struct r3_nbd_client *c = (void *)1;
    struct r3_nbd_client_opts o = { 0 };
    ck_assert_int_eq(r3_nbd_client_connect(&o, &c), -EINVAL);
    ck_assert_ptr_null(c);
    ERR_HAS("no host or socket given");
    char path[200];
    memset(path, 'p', sizeof path - 1);
    path[sizeof path - 1] = 0;
    o.unix_path = path;
    ck_assert_int_eq(r3_nbd_client_connect(&o, &c), -ENAMETOOLONG);
    ERR_HAS("the socket path is too long");
    o.unix_path = NULL;
    char host[400];
    memset(host, 'h', sizeof host - 1);
    host[sizeof host - 1] = 0;
    o.host = host;
    ck_assert_int_eq(r3_nbd_client_connect(&o, &c), -EINVAL);
    ERR_HAS("the host name is too long");
    o.host = "::1";
    o.port = 1;
    o.connect_timeout_ms = 2000;
    ck_assert_int_lt(r3_nbd_client_connect(&o, &c), 0);
    ERR_HAS("nbd [::1]:1 export ''");
}
END_TEST

/* ---- the nbd source: URIs and the block size check */

START_TEST(source_uri_errors)
{
    static const struct { const char *uri, *want; } t[] = {
        { "nbd+unix:///x", "needs ?socket=PATH" },
        { "nbd+unix://host/x?socket=/s", "takes no host" },
        { "nbd:///x", "needs a host" },
        { "nbd://h/x?tls-certificates=/d", "TLS parameters need the nbds scheme" },
        { "nbd://h/x?timeout=5x", "bad timeout '5x'" },
        { "nbd://h/x?timeout=0", "bad timeout '0'" },
        { "nbd://h/x?connect_timeout=-1", "bad connect_timeout '-1'" },
        { "nbd://h/x?timeout=2d", "bad timeout '2d'" },
        { "nbd://h/x?bogus=1", "bogus" },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct r3_source *s = NULL;
        ck_assert_int_eq(r3_source_open(t[i].uri, &s), -EINVAL);
        ck_assert_ptr_null(s);
        ck_assert_msg(strstr(r3_last_error(), t[i].want), "%s: '%s' lacks '%s'", t[i].uri, r3_last_error(),
                      t[i].want);
    }
}
END_TEST

START_TEST(source_uri_units)
{
    static const struct { const char *q; unsigned ms; } t[] = {
        { "timeout=2", 2000 }, { "timeout=0.5", 500 }, { "timeout=250ms", 250 }, { "timeout=3s", 3000 },
        { "timeout=2m", 120000 }, { "timeout=10us", 1 }, { "connect_timeout=1.5", 1500 },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char u[128];
        snprintf(u, sizeof u, "nbds+unix:///e?socket=/s&%s", t[i].q);
        struct r3_uri uri;
        ck_assert_int_eq(r3_uri_parse(u, &uri), 0);
        struct r3_nbd_client_opts o;
        ck_assert_int_eq(r3_nbd_client_opts_from_uri(&uri, &o), 0);
        ck_assert(o.tls);
        ck_assert_str_eq(o.unix_path, "/s");
        ck_assert_str_eq(o.export_name, "e");
        ck_assert_uint_eq(strncmp(t[i].q, "timeout", 7) ? o.connect_timeout_ms : o.timeout_ms, t[i].ms);
        ck_assert_uint_eq(strncmp(t[i].q, "timeout", 7) ? o.timeout_ms : o.connect_timeout_ms,
                          strncmp(t[i].q, "timeout", 7) ? 30000 : 5000);
        r3_uri_free(&uri);
    }
}
END_TEST

static uint32_t src_min_block;
static void s_source(int fd)
{
    if (!greet(fd, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
        return;
    uint32_t opt;
    while ((opt = opt_in(fd, NULL, 0, NULL)) != 0) {
        if (opt == NBD_OPT_GO) {
            info_export(fd, 1 << 20, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY);
            info_block(fd, src_min_block, 4096, 1 << 20);
            rep(fd, opt, NBD_REP_ACK, NULL, 0);
            break;
        }
        rep(fd, opt, NBD_REP_ERR_UNSUP, NULL, 0);
    }
    struct req r;
    while (req_in(fd, &r, NULL, 0)) {
        char *b = malloc(r.len);
        for (uint32_t i = 0; i < r.len; i++)
            b[i] = (char)tu_byte(r.off + i, 11);
        simple(fd, r.cookie, 0, b, r.len);
        free(b);
    }
}

START_TEST(source_block_size)
{
    char uri[300];
    snprintf(uri, sizeof uri, "nbd+unix:///?socket=%s&connect_timeout=10s", sock_path);
    struct r3_source *s = NULL;
    src_min_block = 3000;
    srv_start(s_source);
    ck_assert_int_eq(r3_source_open(uri, &s), -EINVAL);
    ERR_HAS("minimum block size 3000 is not usable");
    srv_join();

    src_min_block = 512;
    srv_start(s_source);
    TU_OPEN(uri, &s);
    ck_assert_uint_eq(s->size, 1 << 20);
    ck_assert_uint_eq(s->align, 512);
    ck_assert(s->flags & R3_SRC_RDONLY);
    char b[8192];
    ck_assert_int_eq(s->ops->read(s, b, sizeof b, 65536), 0);
    ck_assert_int_eq(tu_check(b, sizeof b, 65536, 11), -1);
    ck_assert_int_eq(s->ops->write(s, b, 512, 0), -EROFS);
    ck_assert_int_eq(s->ops->flush(s), 0);                /* no SEND_FLUSH */
    uint64_t run = 0;
    ck_assert_int_eq(s->ops->extent(s, 0, 65536, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 65536);
    r3_source_close(s);
    srv_join();
}
END_TEST

/* ---- servers that stop talking, or die, at each step (covnbd) */

/* Waits until the client hangs up (it gives up at its deadline). */
static void wait_gone(int fd)
{
    char b[256];
    while (recv(fd, b, sizeof b, 0) > 0)
        ;
}

static void s_silent(int fd) { wait_gone(fd); }
static void s_close_at_once(int fd) { (void)fd; }

static void s_not_nbd(int fd)
{
    tu_send_all(fd, "HTTP/1.1 200 OK\r\n\r\n", 18);
    wait_gone(fd);
}

static void s_silent_in_options(int fd)
{
    if (greet(fd, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
        wait_gone(fd);
}

static void s_huge_opt_reply(int fd)
{
    if (!greet(fd, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
        return;
    uint32_t opt = opt_in(fd, NULL, 0, NULL);
    unsigned char h[20];
    r3_nbd_put64(h, NBD_REP_MAGIC);
    r3_nbd_put32(h + 8, opt);
    r3_nbd_put32(h + 12, NBD_REP_ACK);
    r3_nbd_put32(h + 16, 1u << 20);
    tu_send_all(fd, h, 20);
    wait_gone(fd);
}

/* Answers options until `last`, then hangs up without a reply. */
static uint32_t close_on;
static void s_close_on(int fd)
{
    uint32_t opt;
    if (!greet(fd, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
        return;
    while ((opt = opt_in(fd, NULL, 0, NULL)) != 0 && opt != close_on)
        rep(fd, opt, NBD_REP_ACK, NULL, 0);        /* structured on, no meta context */
}

/* Not fixed newstyle: EXPORT_NAME straight away, and no answer to it. */
static void s_silent_export_name(int fd)
{
    if (greet(fd, NBD_FLAG_NO_ZEROES) && opt_in(fd, NULL, 0, NULL) == NBD_OPT_EXPORT_NAME)
        wait_gone(fd);
}

START_TEST(handshake_stalls)
{
    struct r3_nbd_client *c;
    struct r3_nbd_client_opts o = opts();
    o.connect_timeout_ms = 300;
    char want[512];

    ck_assert_int_eq(connect_with(s_silent, o, &c), -ETIMEDOUT);
    snprintf(want, sizeof want, "nbd+unix %s export '': the server sent no NBD greeting within 300 ms"
             " (connect_timeout)", sock_path);
    ck_assert_str_eq(r3_last_error(), want);
    srv_join();

    ck_assert_int_eq(connect_with(s_silent_in_options, o, &c), -ETIMEDOUT);
    snprintf(want, sizeof want, "nbd+unix %s export '': the NBD handshake did not finish within 300 ms"
             " (connect_timeout)", sock_path);
    ck_assert_str_eq(r3_last_error(), want);
    srv_join();

    ck_assert_int_eq(connect_with(s_silent_export_name, o, &c), -ETIMEDOUT);
    ck_assert_str_eq(r3_last_error(), want);
    ck_assert_ptr_null(c);
    srv_join();
}
END_TEST

START_TEST(handshake_hangups)
{
    struct r3_nbd_client *c;
    ck_assert_int_eq(connect_with(s_close_at_once, opts(), &c), -EPROTO);
    ERR_HAS("the server closed the connection before the NBD greeting");
    srv_join();
    ck_assert_int_eq(connect_with(s_not_nbd, opts(), &c), -EPROTO);
    ERR_HAS("not an NBD server (its greeting is not NBDMAGIC)");
    srv_join();
    ck_assert_int_eq(connect_with(s_huge_opt_reply, opts(), &c), -EPROTO);
    ERR_HAS("option reply too large");
    srv_join();
    /* a hang-up in answer to each option the client sends */
    static const uint32_t at[] = { NBD_OPT_STRUCTURED_REPLY, NBD_OPT_SET_META_CONTEXT, NBD_OPT_GO };
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        close_on = at[i];
        memset(&seen, 0, sizeof seen);
        ck_assert_int_eq(connect_with(s_close_on, opts(), &c), -EPROTO);
        ck_assert_ptr_null(c);
        ERR_HAS("the server closed the connection during the NBD handshake");
        srv_join();
        ck_assert_uint_eq(seen.opts[seen.nopts - 1], at[i]);
    }
}
END_TEST

/* After the handshake: the server dies in the middle of a reply. */
static int die_how;
static void s_die_mid_reply(int fd)
{
    if (!std_hs(fd, die_how >= 2, 1 << 20, FLAGS_RW, 0))
        return;
    struct req r;
    if (!req_in(fd, &r, NULL, 0))
        return;
    char *d = calloc(1, r.len);
    switch (die_how) {
    case 0:                                       /* a simple reply, half its data */
        simple(fd, r.cookie, 0, d, r.len / 2);
        break;
    case 1:                                       /* a reply to a cookie never sent */
        simple(fd, r.cookie + 1000, 0, NULL, 0);
        wait_gone(fd);
        break;
    case 2: {                                     /* a data chunk, half its data */
        unsigned char h[28];
        r3_nbd_put32(h, NBD_STRUCTURED_REPLY_MAGIC);
        r3_nbd_put16(h + 4, NBD_REPLY_FLAG_DONE);
        r3_nbd_put16(h + 6, NBD_REPLY_TYPE_OFFSET_DATA);
        r3_nbd_put64(h + 8, r.cookie);
        r3_nbd_put32(h + 16, 8 + r.len);
        r3_nbd_put64(h + 20, r.off);
        tu_send_all(fd, h, 28);
        tu_send_all(fd, d, r.len / 2);
        break;
    }
    case 3:                                       /* a chunk for a cookie never sent */
        data_chunk(fd, NBD_REPLY_FLAG_DONE, r.cookie ^ 0x5a5a0000, r.off, d, r.len);
        wait_gone(fd);
        break;
    case 4:                                       /* a structured header cut short */
        tu_send_all(fd, "\x66\x8e\x33\xef\x00\x01\x00\x01\x00\x00", 10);
        break;
    case 5:                                       /* no reply at all */
        wait_gone(fd);
        break;
    default: {                                    /* 6..: a structured chunk cut at `cut` bytes */
        static const struct { uint16_t type; uint32_t len, cut; } k[] = {
            { NBD_REPLY_TYPE_OFFSET_DATA, 8 + 4096, 18 },   /* in its length field */
            { NBD_REPLY_TYPE_OFFSET_DATA, 8 + 4096, 24 },   /* in its offset */
            { NBD_REPLY_TYPE_OFFSET_HOLE, 12, 26 },         /* in the hole's offset and length */
            { NBD_REPLY_TYPE_BLOCK_STATUS, 12, 25 },        /* in the descriptor */
            { 0x42, 100000, 20 },                           /* informational, too long */
            { 0x42, 100, 70 },                              /* informational, cut */
            { NBD_REPLY_TYPE_ERROR, 20, 26 },               /* an error chunk, cut */
        };
        int i = die_how - 6;
        unsigned char h[64] = { 0 };
        r3_nbd_put32(h, NBD_STRUCTURED_REPLY_MAGIC);
        r3_nbd_put16(h + 4, NBD_REPLY_FLAG_DONE);
        r3_nbd_put16(h + 6, k[i].type);
        r3_nbd_put64(h + 8, r.cookie);
        r3_nbd_put32(h + 16, k[i].len);
        r3_nbd_put64(h + 20, r.off);
        if (k[i].type == NBD_REPLY_TYPE_BLOCK_STATUS)
            r3_nbd_put32(h + 20, 7);                      /* our context id */
        tu_send_all(fd, h, k[i].cut < sizeof h ? k[i].cut : sizeof h);
        if (k[i].len > 65536)
            wait_gone(fd);
        break;
    }
    }
    free(d);
}

START_TEST(server_dies_mid_reply)
{
    static const char *const why[] = {
        "the server closed the connection",
        "protocol error from the server: a reply to a request we did not send",
        "the server closed the connection",
        "protocol error from the server: a reply to a request we did not send",
        "the server closed the connection",
        NULL,
        "the server closed the connection",
        "the server closed the connection",
        "the server closed the connection",
        "the server closed the connection",
        "protocol error from the server: a chunk of more than 64 KiB that is not data",
        "the server closed the connection",
        "the server closed the connection",
    };
    char b[8192], want[512];
    for (die_how = 0; die_how < (int)(sizeof why / sizeof why[0]); die_how++) {
        if (!why[die_how])
            continue;                             /* no reply: request_timeout */
        struct r3_nbd_client *c;
        ck_assert_int_eq(connect_with(s_die_mid_reply, opts(), &c), 0);
        if (die_how == 9) {
            uint64_t run;
            ck_assert(r3_nbd_client_has_extents(c));
            ck_assert_int_eq(r3_nbd_client_block_status(c, 4096, 8192, &run), -EIO);
        } else {
            ck_assert_int_eq(r3_nbd_client_pread(c, b, sizeof b, 4096), -EIO);
        }
        snprintf(want, sizeof want, "nbd+unix %s export '': %s", sock_path, why[die_how]);
        ck_assert_msg(strcmp(r3_last_error(), want) == 0, "case %d: '%s'", die_how, r3_last_error());
        /* and the next request says the connection is lost, at once */
        ck_assert_int_eq(r3_nbd_client_pread(c, b, 512, 0), -EIO);
        snprintf(want, sizeof want, "nbd+unix %s export '': the connection is lost: %s", sock_path,
                 why[die_how]);
        ck_assert_msg(strcmp(r3_last_error(), want) == 0, "case %d: '%s'", die_how, r3_last_error());
        r3_nbd_client_close(c);
        srv_join();
    }
}
END_TEST

/* No reply within timeout_ms: -ETIMEDOUT saying which request. */
START_TEST(request_timeout)
{
    struct r3_nbd_client *c;
    struct r3_nbd_client_opts o = opts();
    o.timeout_ms = 300;
    die_how = 5;
    ck_assert_int_eq(connect_with(s_die_mid_reply, o, &c), 0);
    char b[4096], want[512];
    ck_assert_int_eq(r3_nbd_client_pread(c, b, sizeof b, 8192), -ETIMEDOUT);
    snprintf(want, sizeof want, "nbd+unix %s export '': no reply to a read of 4096 bytes at 8192 within"
             " 300 ms (timeout)", sock_path);
    ck_assert_str_eq(r3_last_error(), want);
    ck_assert_int_eq(r3_nbd_client_flush(c), -EIO);
    ERR_HAS("the connection is lost: no reply to a read");
    r3_nbd_client_close(c);
    srv_join();
}
END_TEST

/* An error chunk whose error is 0 is still an error (EIO), and the
 * connection goes on. */
static void s_error_zero(int fd)
{
    if (!std_hs(fd, false, 1 << 20, FLAGS_RW, 0))
        return;
    struct req r;
    if (!req_in(fd, &r, NULL, 0))
        return;
    error_chunk(fd, r.cookie, 0, "zero", 4);
    if (!req_in(fd, &r, NULL, 0))
        return;
    simple(fd, r.cookie, 0, NULL, 0);
    drain(fd);
}

START_TEST(error_chunk_zero)
{
    struct r3_nbd_client *c;
    ck_assert_int_eq(connect_with(s_error_zero, opts(), &c), 0);
    char b[512], want[512];
    ck_assert_int_eq(r3_nbd_client_pread(c, b, sizeof b, 0), -EIO);
    snprintf(want, sizeof want, "nbd+unix %s export '': the server answered the read: Input/output error",
             sock_path);
    ck_assert_str_eq(r3_last_error(), want);
    ck_assert_int_eq(r3_nbd_client_flush(c), 0);
    r3_nbd_client_close(c);
    srv_join();
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("cov_nbd_client");
    TCase *t = tcase_create("client");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, oldstyle_refused);
    tcase_add_test(t, plain_newstyle_export_name);
    tcase_add_test(t, plain_newstyle_no_tls);
    tcase_add_test(t, fixed_fallback_export_name);
    tcase_add_test(t, export_name_closed);
    tcase_add_test(t, go_refused_unknown);
    tcase_add_test(t, go_refused_policy);
    tcase_add_test(t, export_name_too_long);
    tcase_add_test(t, wrong_option_reply);
    tcase_add_test(t, close_in_options);
    tcase_add_test(t, starttls_refused);
    tcase_add_test(t, starttls_not_tls);
    tcase_add_test(t, meta_then_error);
    tcase_add_test(t, split_out_of_order);
    tcase_add_test(t, block_status_answers);
    tcase_add_test(t, block_status_malformed);
    tcase_add_test(t, error_replies);
    tcase_add_test(t, error_chunks_malformed);
    tcase_add_test(t, structured_unasked);
    tcase_add_test(t, hole_chunks);
    tcase_add_test(t, hole_chunks_join);
    tcase_add_test(t, take_fd);
    tcase_add_test(t, connect_bad_args);
    tcase_add_test(t, source_uri_errors);
    tcase_add_test(t, source_uri_units);
    tcase_add_test(t, source_block_size);
    tcase_add_test(t, handshake_stalls);
    tcase_add_test(t, handshake_hangups);
    tcase_add_test(t, server_dies_mid_reply);
    tcase_add_test(t, request_timeout);
    tcase_add_test(t, error_chunk_zero);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return tu_run(suite());
}
