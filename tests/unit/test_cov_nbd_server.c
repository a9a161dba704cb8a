/* SPDX-License-Identifier: BSD-3-Clause */
/* nbd/server.c against a scripted client on a unix socket: every option
 * the negotiation knows, with the malformed variants a real client never
 * sends (each must get its error reply, or a close with the reason in the
 * server's log line), TLS-required refusals, and the transmission phase on
 * a sparse file export (data and hole chunks, DF, block status with and
 * without REQ_ONE, write zeroes, trim, cache, flush, every refused request
 * with its errno, and a WRITE cut short that must not land). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include "testutil.h"
#include "tu_threads.h"
#include "tu_log.h"
#include "internal.h"
#include "nbd/proto.h"
#include "nbd/server.h"
#include "nbd/client.h"

#define FSIZE (4u << 20)
#define MAXREQ (1u << 20)

static char *dir;
static char sock_path[256], file_path[256];
static struct r3_source *fsrc, *msrc;
static struct r3_nbd_server *srv;
static void log_line(void *arg, const char *line)
{
    (void)arg;
    tu_log_add(line);
}

#define log_wait(s) TU_LOG_WAIT(s)

/* The file: 4 MiB, data (pattern 7) in [0, 64K) and [1M, 1M + 64K), holes elsewhere. */
static void setup(void)
{
    dir = tu_tmpdir();
    ck_assert_ptr_nonnull(dir);
    snprintf(sock_path, sizeof sock_path, "%s/s", dir);
    snprintf(file_path, sizeof file_path, "%s/f", dir);
    int fd = open(file_path, O_CREAT | O_RDWR, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, FSIZE), 0);
    char *b = malloc(65536);
    tu_fill(b, 65536, 0, 7);
    ck_assert_int_eq(pwrite(fd, b, 65536, 0), 65536);
    tu_fill(b, 65536, 1 << 20, 7);
    ck_assert_int_eq(pwrite(fd, b, 65536, 1 << 20), 65536);
    free(b);
    fsync(fd);
    close(fd);
    char uri[300];
    snprintf(uri, sizeof uri, "file://%s", file_path);
    TU_OPEN(uri, &fsrc);
    TU_OPEN("mem:?size=1M", &msrc);
    char *m = malloc(1 << 20);
    tu_fill(m, 1 << 20, 0, 9);
    ck_assert_int_eq(r3_source_write(msrc, m, 1 << 20, 0), 0);
    free(m);
    tu_log_clear();
}

static void teardown(void)
{
    if (srv)
        r3_nbd_server_stop(srv);
    srv = NULL;
    r3_source_close(fsrc);
    r3_source_close(msrc);
    tu_rmrf(dir);
    free(dir);
}

static size_t start_inflight;           /* the server's max_inflight: 0 = its default */

static void start(bool list, const char *psk)
{
    static struct r3_nbd_export ex[2];
    ex[0] = (struct r3_nbd_export){ .name = "", .src = fsrc };
    ex[1] = (struct r3_nbd_export){ .name = "two", .description = "second disk", .src = msrc, .readonly = true };
    char listen[300];
    snprintf(listen, sizeof listen, "unix:%s", sock_path);
    struct r3_nbd_server_opts o = { .listen = listen, .exports = ex, .nexports = 2, .workers = 2,
                                    .max_request = MAXREQ, .list_exports = list, .tls_psk = psk,
                                    .max_inflight = start_inflight, .log = log_line };
    ck_assert_msg(r3_nbd_server_start(&o, &srv) == 0, "%s", r3_last_error());
}

/* ---- the scripted client */

/* Connect, take the greeting, send our flags. */
static int cl(uint32_t cflags)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strcpy(a.sun_path, sock_path);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = { 20, 0 };           /* hang guard */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    unsigned char g[18], f[4];
    ck_assert(tu_recv_all(fd, g, 18));
    ck_assert(r3_nbd_get64(g) == NBD_MAGIC);
    ck_assert(r3_nbd_get64(g + 8) == NBD_IHAVEOPT);
    ck_assert_uint_eq(r3_nbd_get16(g + 16), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    r3_nbd_put32(f, cflags);
    tu_send_all(fd, f, 4);
    return fd;
}

#define FIXED (NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)

static void opt(int fd, uint32_t o, const void *d, uint32_t n)
{
    unsigned char h[16];
    r3_nbd_put64(h, NBD_IHAVEOPT);
    r3_nbd_put32(h + 8, o);
    r3_nbd_put32(h + 12, n);
    tu_send_all(fd, h, 16);
    if (n)
        tu_send_all(fd, d, n);
}

struct rep { uint32_t opt, type, len; unsigned char d[4200]; };

static void rep_in(int fd, struct rep *r)
{
    unsigned char h[20];
    ck_assert_msg(tu_recv_all(fd, h, 20), "no option reply");
    ck_assert(r3_nbd_get64(h) == NBD_REP_MAGIC);
    r->opt = r3_nbd_get32(h + 8);
    r->type = r3_nbd_get32(h + 12);
    r->len = r3_nbd_get32(h + 16);
    ck_assert_uint_lt(r->len, sizeof r->d);
    ck_assert(tu_recv_all(fd, r->d, r->len));
    r->d[r->len] = 0;
}

/* The next reply is an error of this type whose message holds msg. */
static void rep_err(int fd, uint32_t o, uint32_t type, const char *msg)
{
    struct rep r;
    rep_in(fd, &r);
    ck_assert_uint_eq(r.opt, o);
    ck_assert_msg(r.type == type, "option %u: reply type 0x%x, not 0x%x (%s)", o, r.type, type, r.d);
    ck_assert_msg(strstr((char *)r.d, msg), "option %u: '%s' lacks '%s'", o, r.d, msg);
}

static void rep_ack(int fd, uint32_t o)
{
    struct rep r;
    rep_in(fd, &r);
    ck_assert_uint_eq(r.opt, o);
    ck_assert_msg(r.type == NBD_REP_ACK, "option %u: reply 0x%x, not ACK (%s)", o, r.type, r.d);
}

/* The server closed the connection. */
static void closed(int fd)
{
    char b;
    ck_assert_int_le(recv(fd, &b, 1, 0), 0);
    close(fd);
}

/* name, then nreq info requests */
static uint32_t go_data(unsigned char *b, const char *name, const uint16_t *req, uint16_t nreq)
{
    uint32_t nl = (uint32_t)strlen(name);
    r3_nbd_put32(b, nl);
    memcpy(b + 4, name, nl);
    r3_nbd_put16(b + 4 + nl, nreq);
    for (uint16_t i = 0; i < nreq; i++)
        r3_nbd_put16(b + 6 + nl + 2 * i, req[i]);
    return 6 + nl + 2u * nreq;
}

/* name, then queries */
static uint32_t meta_data(unsigned char *b, const char *name, const char *const *q, uint32_t nq)
{
    uint32_t nl = (uint32_t)strlen(name), p;
    r3_nbd_put32(b, nl);
    memcpy(b + 4, name, nl);
    r3_nbd_put32(b + 4 + nl, nq);
    p = 8 + nl;
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t ql = (uint32_t)strlen(q[i]);
        r3_nbd_put32(b + p, ql);
        memcpy(b + p + 4, q[i], ql);
        p += 4 + ql;
    }
    return p;
}

/* GO on name: the INFO_EXPORT's size and flags, through to the ACK. */
static void go(int fd, const char *name, uint64_t *size, uint16_t *flags)
{
    unsigned char b[64];
    opt(fd, NBD_OPT_GO, b, go_data(b, name, NULL, 0));
    for (;;) {
        struct rep r;
        rep_in(fd, &r);
        ck_assert_uint_eq(r.opt, NBD_OPT_GO);
        if (r.type == NBD_REP_ACK)
            break;
        ck_assert_uint_eq(r.type, NBD_REP_INFO);
        if (r3_nbd_get16(r.d) == NBD_INFO_EXPORT) {
            *size = r3_nbd_get64(r.d + 2);
            *flags = r3_nbd_get16(r.d + 10);
        }
    }
}

/* ---- negotiation */

START_TEST(list_exports)
{
    start(true, NULL);
    int fd = cl(FIXED);
    opt(fd, NBD_OPT_LIST, NULL, 0);
    struct rep r;
    rep_in(fd, &r);
    ck_assert_uint_eq(r.type, NBD_REP_SERVER);
    ck_assert_uint_eq(r3_nbd_get32(r.d), 0);             /* "" with no description */
    ck_assert_uint_eq(r.len, 4);
    rep_in(fd, &r);
    ck_assert_uint_eq(r.type, NBD_REP_SERVER);
    ck_assert_uint_eq(r3_nbd_get32(r.d), 3);
    ck_assert(memcmp(r.d + 4, "twosecond disk", 14) == 0);
    ck_assert_uint_eq(r.len, 4 + 3 + 11);
    rep_ack(fd, NBD_OPT_LIST);
    opt(fd, NBD_OPT_LIST, "x", 1);
    rep_err(fd, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "LIST takes no data");
    opt(fd, NBD_OPT_ABORT, NULL, 0);
    rep_ack(fd, NBD_OPT_ABORT);
    closed(fd);
    log_wait("no export chosen");
    log_wait("client aborted");
}
END_TEST

START_TEST(list_disabled_and_small_options)
{
    start(false, NULL);
    int fd = cl(FIXED);
    opt(fd, NBD_OPT_LIST, NULL, 0);
    rep_err(fd, NBD_OPT_LIST, NBD_REP_ERR_POLICY, "listing exports is disabled");
    opt(fd, NBD_OPT_STRUCTURED_REPLY, "x", 1);
    rep_err(fd, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID, "takes no data");
    opt(fd, NBD_OPT_STARTTLS, NULL, 0);
    rep_err(fd, NBD_OPT_STARTTLS, NBD_REP_ERR_UNSUP, "TLS is not configured");
    opt(fd, NBD_OPT_STARTTLS, "x", 1);
    rep_err(fd, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "STARTTLS takes no data");
    opt(fd, 99, "hello", 5);
    rep_err(fd, 99, NBD_REP_ERR_UNSUP, "option not supported");
    /* a known option over 64 KiB: skipped, refused as too big */
    unsigned char *big = calloc(1, 70000);
    opt(fd, NBD_OPT_GO, big, 70000);
    rep_err(fd, NBD_OPT_GO, NBD_REP_ERR_TOO_BIG, "option payload too large");
    free(big);
    /* still in step: a GO works after all that */
    uint64_t size = 0;
    uint16_t flags = 0;
    go(fd, "", &size, &flags);
    ck_assert_uint_eq(size, FSIZE);
    ck_assert(flags & NBD_FLAG_HAS_FLAGS);
    ck_assert(!(flags & NBD_FLAG_READ_ONLY));
    close(fd);
    log_wait("export '': 0 requests");
}
END_TEST

START_TEST(info_variants)
{
    start(false, NULL);
    int fd = cl(FIXED);
    unsigned char b[128];
    opt(fd, NBD_OPT_INFO, b, 4);
    rep_err(fd, NBD_OPT_INFO, NBD_REP_ERR_INVALID, "option too short");
    r3_nbd_put32(b, 100);
    r3_nbd_put16(b + 4, 0);
    opt(fd, NBD_OPT_INFO, b, 6);
    rep_err(fd, NBD_OPT_INFO, NBD_REP_ERR_INVALID, "export name length out of range");
    uint32_t n = go_data(b, "two", NULL, 0);
    opt(fd, NBD_OPT_INFO, b, n + 2);                        /* two stray bytes */
    rep_err(fd, NBD_OPT_INFO, NBD_REP_ERR_INVALID, "does not match its content");
    n = go_data(b, "t\0o", NULL, 0);
    r3_nbd_put32(b, 3);
    memcpy(b + 4, "t\0o", 3);
    r3_nbd_put16(b + 7, 0);
    opt(fd, NBD_OPT_INFO, b, 9);
    rep_err(fd, NBD_OPT_INFO, NBD_REP_ERR_INVALID, "export name contains NUL");
    opt(fd, NBD_OPT_INFO, b, go_data(b, "three", NULL, 0));
    rep_err(fd, NBD_OPT_INFO, NBD_REP_ERR_UNKNOWN, "no such export");
    /* INFO on "two" with NAME, DESCRIPTION and an unknown request */
    static const uint16_t req[] = { NBD_INFO_NAME, NBD_INFO_DESCRIPTION, 77 };
    opt(fd, NBD_OPT_INFO, b, go_data(b, "two", req, 3));
    bool got[4] = { false };
    for (;;) {
        struct rep r;
        rep_in(fd, &r);
        ck_assert_uint_eq(r.opt, NBD_OPT_INFO);
        if (r.type == NBD_REP_ACK)
            break;
        ck_assert_uint_eq(r.type, NBD_REP_INFO);
        uint16_t t = r3_nbd_get16(r.d);
        ck_assert_uint_lt(t, 4);
        got[t] = true;
        if (t == NBD_INFO_EXPORT) {
            ck_assert_uint_eq(r.len, 12);
            ck_assert_uint_eq(r3_nbd_get64(r.d + 2), 1 << 20);
            ck_assert(r3_nbd_get16(r.d + 10) & NBD_FLAG_READ_ONLY);
        } else if (t == NBD_INFO_NAME) {
            ck_assert_str_eq((char *)r.d + 2, "two");
        } else if (t == NBD_INFO_DESCRIPTION) {
            ck_assert_str_eq((char *)r.d + 2, "second disk");
        } else {
            ck_assert_uint_eq(r.len, 14);
            ck_assert_uint_eq(r3_nbd_get32(r.d + 2), 1);
            ck_assert_uint_eq(r3_nbd_get32(r.d + 6), 4096);
            ck_assert_uint_eq(r3_nbd_get32(r.d + 10), MAXREQ);
        }
    }
    ck_assert(got[0] && got[1] && got[2] && got[3]);
    /* INFO does not end the negotiation: GO still can */
    uint64_t size = 0;
    uint16_t flags = 0;
    go(fd, "two", &size, &flags);
    ck_assert_uint_eq(size, 1 << 20);
    ck_assert(flags & NBD_FLAG_READ_ONLY);
    close(fd);
    log_wait("export 'two'");
}
END_TEST

START_TEST(meta_variants)
{
    start(false, NULL);
    int fd = cl(FIXED);
    unsigned char b[256];
    static const char *const alloc[] = { "base:allocation" }, *const base[] = { "base:" },
                             *const other[] = { "qemu:dirty-bitmap:x" };
    opt(fd, NBD_OPT_SET_META_CONTEXT, b, meta_data(b, "", alloc, 1));
    rep_err(fd, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID, "negotiate structured replies first");
    opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
    rep_ack(fd, NBD_OPT_STRUCTURED_REPLY);
    opt(fd, NBD_OPT_LIST_META_CONTEXT, b, 7);
    rep_err(fd, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID, "option too short");
    r3_nbd_put32(b, 200);
    opt(fd, NBD_OPT_LIST_META_CONTEXT, b, 8);
    rep_err(fd, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID, "export name length out of range");
    r3_nbd_put32(b, 1);
    b[4] = 0;
    r3_nbd_put32(b + 5, 0);
    opt(fd, NBD_OPT_LIST_META_CONTEXT, b, 9);
    rep_err(fd, NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID, "export name contains NUL");
    uint32_t n = meta_data(b, "", alloc, 1);
    r3_nbd_put32(b + 4, 2);                                /* says 2 queries, has 1 */
    opt(fd, NBD_OPT_SET_META_CONTEXT, b, n);
    rep_err(fd, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID, "query count out of range");
    n = meta_data(b, "", alloc, 1);
    r3_nbd_put32(b + 8, 500);                              /* a query longer than the option */
    opt(fd, NBD_OPT_SET_META_CONTEXT, b, n);
    rep_err(fd, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID, "query length out of range");
    n = meta_data(b, "", alloc, 1);
    opt(fd, NBD_OPT_SET_META_CONTEXT, b, n + 3);
    rep_err(fd, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID, "does not match its content");
    opt(fd, NBD_OPT_SET_META_CONTEXT, b, meta_data(b, "nope", alloc, 1));
    rep_err(fd, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_UNKNOWN, "no such export");
    /* LIST with no query, and with "base:": base:allocation, id 0 */
    for (int i = 0; i < 2; i++) {
        opt(fd, NBD_OPT_LIST_META_CONTEXT, b, meta_data(b, "two", base, (uint32_t)i));
        struct rep r;
        rep_in(fd, &r);
        ck_assert_uint_eq(r.type, NBD_REP_META_CONTEXT);
        ck_assert_uint_eq(r3_nbd_get32(r.d), 0);
        ck_assert_str_eq((char *)r.d + 4, "base:allocation");
        rep_ack(fd, NBD_OPT_LIST_META_CONTEXT);
    }
    /* SET with a context we do not have: just ACK; SET "base:" is not a SET query */
    opt(fd, NBD_OPT_SET_META_CONTEXT, b, meta_data(b, "", other, 1));
    rep_ack(fd, NBD_OPT_SET_META_CONTEXT);
    opt(fd, NBD_OPT_SET_META_CONTEXT, b, meta_data(b, "", base, 1));
    rep_ack(fd, NBD_OPT_SET_META_CONTEXT);
    /* SET for "two", then GO on "": the context does not carry over */
    opt(fd, NBD_OPT_SET_META_CONTEXT, b, meta_data(b, "two", alloc, 1));
    struct rep r;
    rep_in(fd, &r);
    ck_assert_uint_eq(r.type, NBD_REP_META_CONTEXT);
    ck_assert_uint_eq(r3_nbd_get32(r.d), 1);
    rep_ack(fd, NBD_OPT_SET_META_CONTEXT);
    uint64_t size;
    uint16_t flags;
    go(fd, "", &size, &flags);
    unsigned char q[28] = { 0 };
    r3_nbd_put32(q, NBD_REQUEST_MAGIC);
    r3_nbd_put16(q + 6, NBD_CMD_BLOCK_STATUS);
    r3_nbd_put64(q + 8, 77);
    r3_nbd_put32(q + 24, 4096);
    tu_send_all(fd, q, 28);
    unsigned char s[16];
    ck_assert(tu_recv_all(fd, s, 16));
    ck_assert_uint_eq(r3_nbd_get32(s), NBD_SIMPLE_REPLY_MAGIC);
    ck_assert_uint_eq(r3_nbd_get32(s + 4), NBD_EINVAL);
    ck_assert(r3_nbd_get64(s + 8) == 77);
    close(fd);
    log_wait("peer closed without NBD_CMD_DISC");
}
END_TEST

/* Each of these ends the connection; the log line says why. */
START_TEST(handshake_violations)
{
    start(false, NULL);
    int fd = cl(0x80 | FIXED);
    closed(fd);
    log_wait("handshake: unknown client flags 0x83");

    fd = cl(FIXED);
    tu_send_all(fd, "IHAVEOPX\0\0\0\1\0\0\0\0", 16);
    closed(fd);
    log_wait("handshake: bad option magic");

    fd = cl(NBD_FLAG_C_NO_ZEROES);                          /* not fixed newstyle */
    opt(fd, 99, NULL, 0);
    closed(fd);
    log_wait("option 99 from a non-fixed-newstyle client");

    fd = cl(FIXED);
    opt(fd, 98, NULL, 2u << 20);                            /* header only: closed before the payload */
    closed(fd);
    log_wait("option 98 with 2097152 bytes of payload");

    fd = cl(FIXED);
    opt(fd, NBD_OPT_EXPORT_NAME, NULL, 5000);
    closed(fd);
    log_wait("export name of 5000 bytes");

    fd = cl(FIXED);
    opt(fd, NBD_OPT_EXPORT_NAME, "zz", 2);
    closed(fd);
    log_wait("unknown export 'zz'");

    fd = cl(FIXED);
    unsigned char *many = malloc(1002 * 16);
    for (int i = 0; i < 1002; i++) {
        r3_nbd_put64(many + 16 * i, NBD_IHAVEOPT);
        r3_nbd_put32(many + 16 * i + 8, NBD_OPT_STRUCTURED_REPLY);
        r3_nbd_put32(many + 16 * i + 12, 0);
    }
    tu_send_all(fd, many, 1002 * 16);
    free(many);
    for (int i = 0; i < 1001; i++)
        rep_ack(fd, NBD_OPT_STRUCTURED_REPLY);
    closed(fd);
    log_wait("handshake: too many options");

    fd = cl(FIXED);
    opt(fd, NBD_OPT_GO, NULL, 0);
    rep_err(fd, NBD_OPT_GO, NBD_REP_ERR_INVALID, "option too short");
    close(fd);
    log_wait("peer closed during the handshake");
}
END_TEST

/* EXPORT_NAME: no reply header; 134 bytes without NO_ZEROES, 10 with. */
START_TEST(export_name_ok)
{
    start(false, NULL);
    for (int nz = 0; nz < 2; nz++) {
        int fd = cl(NBD_FLAG_C_FIXED_NEWSTYLE | (nz ? NBD_FLAG_C_NO_ZEROES : 0));
        opt(fd, NBD_OPT_EXPORT_NAME, "two", 3);
        unsigned char e[134];
        memset(e, 0xee, sizeof e);
        ck_assert(tu_recv_all(fd, e, nz ? 10 : 134));
        ck_assert_uint_eq(r3_nbd_get64(e), 1 << 20);
        ck_assert(r3_nbd_get16(e + 8) & NBD_FLAG_READ_ONLY);
        for (int i = 10; i < 134; i++)
            ck_assert_int_eq(e[i], nz ? 0xee : 0);
        /* and the export is live: a read of the mem source's pattern */
        unsigned char q[28] = { 0 };
        r3_nbd_put32(q, NBD_REQUEST_MAGIC);
        r3_nbd_put64(q + 8, 5);
        r3_nbd_put32(q + 24, 512);
        tu_send_all(fd, q, 28);
        unsigned char s[16 + 512];
        ck_assert(tu_recv_all(fd, s, sizeof s));
        ck_assert_uint_eq(r3_nbd_get32(s + 4), 0);
        ck_assert_int_eq(tu_check(s + 16, 512, 0, 9), -1);
        r3_nbd_put16(q + 6, NBD_CMD_DISC);
        tu_send_all(fd, q, 28);
        closed(fd);
    }
    log_wait("client disconnected");
}
END_TEST

START_TEST(tls_required)
{
    char psk[300];
    snprintf(psk, sizeof psk, "%s/psk", dir);
    FILE *f = fopen(psk, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "alice:00112233445566778899aabbccddeeff\n");
    fclose(f);
    start(false, psk);
    int fd = cl(FIXED);
    unsigned char b[64];
    opt(fd, NBD_OPT_GO, b, go_data(b, "", NULL, 0));
    rep_err(fd, NBD_OPT_GO, NBD_REP_ERR_TLS_REQD, "TLS is required");
    opt(fd, NBD_OPT_LIST, NULL, 0);
    rep_err(fd, NBD_OPT_LIST, NBD_REP_ERR_TLS_REQD, "TLS is required");
    opt(fd, NBD_OPT_EXPORT_NAME, "", 0);
    closed(fd);
    log_wait("EXPORT_NAME without TLS refused");
}
END_TEST

/* ---- transmission on the sparse file */

static uint64_t cookie_n;

static void req(int fd, uint16_t flags, uint16_t type, uint64_t off, uint32_t len, const void *data)
{
    unsigned char q[28];
    r3_nbd_put32(q, NBD_REQUEST_MAGIC);
    r3_nbd_put16(q + 4, flags);
    r3_nbd_put16(q + 6, type);
    r3_nbd_put64(q + 8, ++cookie_n);
    r3_nbd_put64(q + 16, off);
    r3_nbd_put32(q + 24, len);
    tu_send_all(fd, q, 28);
    if (type == NBD_CMD_WRITE && data)
        tu_send_all(fd, data, len);
}

/* A simple reply to the last request: its error. */
static uint32_t simple_err(int fd)
{
    unsigned char s[16];
    ck_assert(tu_recv_all(fd, s, 16));
    ck_assert_uint_eq(r3_nbd_get32(s), NBD_SIMPLE_REPLY_MAGIC);
    ck_assert(r3_nbd_get64(s + 8) == cookie_n);
    return r3_nbd_get32(s + 4);
}

struct chunk_in { uint16_t flags, type; uint32_t len; unsigned char *p; };

static void chunk_in(int fd, struct chunk_in *c)
{
    unsigned char h[20];
    ck_assert(tu_recv_all(fd, h, 20));
    ck_assert_uint_eq(r3_nbd_get32(h), NBD_STRUCTURED_REPLY_MAGIC);
    ck_assert(r3_nbd_get64(h + 8) == cookie_n);
    c->flags = r3_nbd_get16(h + 4);
    c->type = r3_nbd_get16(h + 6);
    c->len = r3_nbd_get32(h + 16);
    ck_assert_uint_le(c->len, MAXREQ + 8);
    c->p = malloc(c->len + 1);
    ck_assert(tu_recv_all(fd, c->p, c->len));
}

/* A structured READ into buf: counts the data and hole chunks. */
static void sread(int fd, uint16_t flags, uint64_t off, uint32_t len, char *buf, unsigned *ndata,
                  unsigned *nhole)
{
    req(fd, flags, NBD_CMD_READ, off, len, NULL);
    memset(buf, 0x5a, len);
    *ndata = *nhole = 0;
    uint64_t got = 0;
    for (;;) {
        struct chunk_in c;
        chunk_in(fd, &c);
        if (c.type == NBD_REPLY_TYPE_OFFSET_DATA) {
            uint64_t o = r3_nbd_get64(c.p);
            ck_assert(o >= off && o + c.len - 8 <= off + len);
            memcpy(buf + (o - off), c.p + 8, c.len - 8);
            got += c.len - 8;
            (*ndata)++;
        } else {
            ck_assert_uint_eq(c.type, NBD_REPLY_TYPE_OFFSET_HOLE);
            ck_assert_uint_eq(c.len, 12);
            uint64_t o = r3_nbd_get64(c.p);
            uint32_t n = r3_nbd_get32(c.p + 8);
            ck_assert(o >= off && o + n <= off + len);
            memset(buf + (o - off), 0, n);
            got += n;
            (*nhole)++;
        }
        free(c.p);
        if (c.flags & NBD_REPLY_FLAG_DONE)
            break;
    }
    ck_assert_uint_eq(got, len);
}

/* What the file holds at off (pattern 7 in the data, zeros elsewhere). */
static void expect_file(const char *buf, uint64_t off, size_t len)
{
    static const uint64_t data[][2] = { { 0, 65536 }, { 1u << 20, (1u << 20) + 65536 } };
    uint64_t end = off + len, o = off;
    while (o < end) {
        /* the next boundary: the start or end of a data range, or the end */
        uint64_t next = end;
        bool in = false;
        for (int d = 0; d < 2; d++) {
            if (o >= data[d][0] && o < data[d][1]) {
                in = true;
                next = data[d][1] < end ? data[d][1] : end;
            } else if (data[d][0] > o && data[d][0] < next) {
                next = data[d][0];
            }
        }
        const char *p = buf + (o - off);
        if (in) {
            ck_assert_msg(tu_check(p, next - o, o, 7) == -1, "data at %llu", (unsigned long long)o);
        } else {
            for (uint64_t i = 0; i < next - o; i++)
                ck_assert_msg(p[i] == 0, "byte at %llu", (unsigned long long)(o + i));
        }
        o = next;
    }
}

static int open_fixed_structured(bool meta)
{
    int fd = cl(FIXED);
    opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
    rep_ack(fd, NBD_OPT_STRUCTURED_REPLY);
    if (meta) {
        static const char *const alloc[] = { "base:allocation" };
        unsigned char b[64];
        opt(fd, NBD_OPT_SET_META_CONTEXT, b, meta_data(b, "", alloc, 1));
        struct rep r;
        rep_in(fd, &r);
        ck_assert_uint_eq(r.type, NBD_REP_META_CONTEXT);
        rep_ack(fd, NBD_OPT_SET_META_CONTEXT);
    }
    uint64_t size;
    uint16_t flags;
    go(fd, "", &size, &flags);
    ck_assert_uint_eq(size, FSIZE);
    return fd;
}

START_TEST(reads_with_holes)
{
    start(false, NULL);
    /* Does this file system report the holes? (the server can only say what it is told) */
    int ffd = open(file_path, O_RDONLY);
    bool holes = lseek(ffd, 0, SEEK_HOLE) == 65536;
    close(ffd);
    int fd = open_fixed_structured(true);
    char *buf = malloc(MAXREQ);
    unsigned nd, nh;
    sread(fd, 0, 0, 256 << 10, buf, &nd, &nh);
    expect_file(buf, 0, 256 << 10);
    if (holes) {
        ck_assert_uint_eq(nd, 1);
        ck_assert_uint_ge(nh, 1);
    }
    /* across the second data range */
    sread(fd, 0, (1 << 20) - (128 << 10), 512 << 10, buf, &nd, &nh);
    expect_file(buf, (1 << 20) - (128 << 10), 512 << 10);
    /* DF: one data chunk, holes or not */
    sread(fd, NBD_CMD_FLAG_DF, 0, 256 << 10, buf, &nd, &nh);
    ck_assert_uint_eq(nd, 1);
    ck_assert_uint_eq(nh, 0);
    expect_file(buf, 0, 256 << 10);

    /* BLOCK_STATUS over 2 MiB: descriptors in order, summing to the request */
    req(fd, 0, NBD_CMD_BLOCK_STATUS, 0, 2 << 20, NULL);
    struct chunk_in c;
    chunk_in(fd, &c);
    ck_assert_uint_eq(c.type, NBD_REPLY_TYPE_BLOCK_STATUS);
    ck_assert(c.flags & NBD_REPLY_FLAG_DONE);
    ck_assert_uint_eq((c.len - 4) % 8, 0);
    ck_assert_uint_eq(r3_nbd_get32(c.p), 1);
    uint64_t sum = 0;
    for (uint32_t i = 4; i < c.len; i += 8) {
        uint32_t l = r3_nbd_get32(c.p + i), st = r3_nbd_get32(c.p + i + 4);
        if (sum < 65536 || (sum >= (1u << 20) && sum < (1u << 20) + 65536))
            ck_assert_uint_eq(st, 0);                       /* data is never called zero */
        if (i > 4)
            ck_assert_uint_ne(st, r3_nbd_get32(c.p + i - 4)); /* neighbours merged */
        sum += l;
    }
    if (holes)
        ck_assert_uint_ge((c.len - 4) / 8, 3);
    ck_assert_uint_eq(sum, 2 << 20);
    free(c.p);
    /* REQ_ONE: one descriptor, the data at 0 */
    req(fd, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS, 0, 2 << 20, NULL);
    chunk_in(fd, &c);
    ck_assert_uint_eq(c.len, 12);
    ck_assert_uint_eq(r3_nbd_get32(c.p + 8), 0);
    if (holes)
        ck_assert_uint_eq(r3_nbd_get32(c.p + 4), 65536);
    free(c.p);
    /* refused: past the end, length 0 */
    req(fd, 0, NBD_CMD_BLOCK_STATUS, FSIZE - 4096, 8192, NULL);
    ck_assert_uint_eq(simple_err(fd), NBD_EINVAL);
    req(fd, 0, NBD_CMD_BLOCK_STATUS, 0, 0, NULL);
    ck_assert_uint_eq(simple_err(fd), NBD_EINVAL);

    /* READ errors come as error chunks with structured replies */
    req(fd, 0, NBD_CMD_READ, 0, MAXREQ + 4096, NULL);
    chunk_in(fd, &c);
    ck_assert_uint_eq(c.type, NBD_REPLY_TYPE_ERROR);
    ck_assert_uint_eq(r3_nbd_get32(c.p), NBD_EOVERFLOW);
    free(c.p);
    req(fd, 0, NBD_CMD_READ, FSIZE, 1, NULL);
    chunk_in(fd, &c);
    ck_assert_uint_eq(c.type, NBD_REPLY_TYPE_ERROR);
    ck_assert_uint_eq(r3_nbd_get32(c.p), NBD_EINVAL);
    free(c.p);
    req(fd, 0, NBD_CMD_DISC, 0, 0, NULL);
    closed(fd);
    free(buf);
    log_wait("export '': 9 requests");
}
END_TEST

START_TEST(write_family)
{
    start(false, NULL);
    int fd = open_fixed_structured(false);
    char *w = malloc(8192);
    memset(w, 0x33, 8192);
    /* WRITE_ZEROES with FUA over data, then read it back through the file */
    req(fd, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE_ZEROES, 4096, 8192, NULL);
    ck_assert_uint_eq(simple_err(fd), 0);
    req(fd, 0, NBD_CMD_WRITE_ZEROES, FSIZE - 4096, 8192, NULL);
    ck_assert_uint_eq(simple_err(fd), NBD_ENOSPC);
    /* TRIM is advisory: ok (FUA flushes), out of range EINVAL */
    req(fd, NBD_CMD_FLAG_FUA, NBD_CMD_TRIM, 0, 4096, NULL);
    ck_assert_uint_eq(simple_err(fd), 0);
    req(fd, 0, NBD_CMD_TRIM, FSIZE, 1, NULL);
    ck_assert_uint_eq(simple_err(fd), NBD_EINVAL);
    /* CACHE reads through; out of range EINVAL */
    req(fd, 0, NBD_CMD_CACHE, 0, 3 << 20, NULL);
    ck_assert_uint_eq(simple_err(fd), 0);
    req(fd, 0, NBD_CMD_CACHE, FSIZE - 1, 2, NULL);
    ck_assert_uint_eq(simple_err(fd), NBD_EINVAL);
    req(fd, 0, NBD_CMD_FLUSH, 0, 0, NULL);
    ck_assert_uint_eq(simple_err(fd), 0);
    /* unknown command, unknown flag */
    req(fd, 0, 42, 0, 0, NULL);
    ck_assert_uint_eq(simple_err(fd), NBD_EINVAL);
    req(fd, 0x100, NBD_CMD_FLUSH, 0, 0, NULL);
    ck_assert_uint_eq(simple_err(fd), NBD_EINVAL);
    req(fd, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_FLUSH, 0, 0, NULL);   /* REQ_ONE is for BLOCK_STATUS only */
    ck_assert_uint_eq(simple_err(fd), NBD_EINVAL);
    /* refused WRITEs: their payload is skipped and the stream stays in step */
    req(fd, 0, NBD_CMD_WRITE, 0, 0, NULL);
    ck_assert_uint_eq(simple_err(fd), NBD_EINVAL);
    req(fd, 0, NBD_CMD_WRITE, FSIZE - 4096, 8192, w);
    ck_assert_uint_eq(simple_err(fd), NBD_ENOSPC);
    char *big = calloc(1, MAXREQ + 4096);
    req(fd, 0, NBD_CMD_WRITE, 0, MAXREQ + 4096, big);
    ck_assert_uint_eq(simple_err(fd), NBD_EOVERFLOW);
    free(big);
    /* a WRITE with FUA that lands */
    req(fd, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 2 << 20, 8192, w);
    ck_assert_uint_eq(simple_err(fd), 0);
    req(fd, 0, NBD_CMD_DISC, 0, 0, NULL);
    closed(fd);
    log_wait("client disconnected");

    char rb[8192];
    int ffd = open(file_path, O_RDONLY);
    ck_assert_int_eq(pread(ffd, rb, 8192, 4096), 8192);
    for (int i = 0; i < 8192; i++)
        ck_assert_int_eq(rb[i], 0);
    ck_assert_int_eq(pread(ffd, rb, 8192, 2 << 20), 8192);
    ck_assert(memcmp(rb, w, 8192) == 0);
    /* the refused writes left the end of the file alone */
    ck_assert_int_eq(pread(ffd, rb, 4096, FSIZE - 4096), 4096);
    for (int i = 0; i < 4096; i++)
        ck_assert_int_eq(rb[i], 0);
    /* what zeroes and trim did not touch is still the pattern */
    ck_assert_int_eq(pread(ffd, rb, 4096, 0), 4096);
    ck_assert_int_eq(tu_check(rb, 4096, 0, 7), -1);
    close(ffd);
    free(w);
}
END_TEST

START_TEST(readonly_and_cut)
{
    start(false, NULL);
    /* the read-only export refuses every change */
    int fd = cl(FIXED);
    uint64_t size;
    uint16_t flags;
    go(fd, "two", &size, &flags);
    char w[4096] = { 1 };
    req(fd, 0, NBD_CMD_WRITE, 0, 4096, w);
    ck_assert_uint_eq(simple_err(fd), NBD_EPERM);
    req(fd, 0, NBD_CMD_TRIM, 0, 4096, NULL);
    ck_assert_uint_eq(simple_err(fd), NBD_EPERM);
    req(fd, 0, NBD_CMD_WRITE_ZEROES, 0, 4096, NULL);
    ck_assert_uint_eq(simple_err(fd), NBD_EPERM);
    /* a WRITE too large even to skip ends the connection */
    req(fd, 0, NBD_CMD_WRITE, 0, 65u * MAXREQ, NULL);
    closed(fd);
    log_wait("too much to skip");

    /* bad request magic */
    fd = cl(FIXED);
    go(fd, "", &size, &flags);
    tu_send_all(fd, "\x25\x60\x95\x14 garbage garbage garbage", 28);
    closed(fd);
    log_wait("bad request magic");

    /* a WRITE cut short: that write never lands */
    fd = cl(FIXED);
    go(fd, "", &size, &flags);
    memset(w, 0x44, sizeof w);
    req(fd, 0, NBD_CMD_WRITE, 3 << 20, 8192, NULL);
    tu_send_all(fd, w, 4096);
    shutdown(fd, SHUT_WR);
    closed(fd);
    log_wait("peer closed in the middle of a WRITE payload");
    char rb[8192];
    int ffd = open(file_path, O_RDONLY);
    ck_assert_int_eq(pread(ffd, rb, 8192, 3 << 20), 8192);
    for (int i = 0; i < 8192; i++)
        ck_assert_int_eq(rb[i], 0);
    close(ffd);
}
END_TEST

/* Several small READs of the in-memory export sent at once are answered
 * together (one send): each reply still carries its own cookie and bytes,
 * in order, simple and structured; a batch stops at anything but a READ. */
START_TEST(read_batch)
{
    start(false, NULL);
    for (int structured = 0; structured < 2; structured++) {
        int fd = cl(FIXED);
        if (structured) {
            opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
            rep_ack(fd, NBD_OPT_STRUCTURED_REPLY);
        }
        uint64_t size;
        uint16_t flags;
        go(fd, "two", &size, &flags);
        static const uint64_t offs[] = { 4096, 100000, 512, 700000, 5 };
        static const uint32_t lens[] = { 4096, 3000, 65536, 1, 8192 };
        unsigned char q[6 * 28];
        for (int i = 0; i < 6; i++) {
            r3_nbd_put32(q + 28 * i, NBD_REQUEST_MAGIC);
            r3_nbd_put16(q + 28 * i + 4, 0);
            r3_nbd_put16(q + 28 * i + 6, i < 5 ? NBD_CMD_READ : NBD_CMD_FLUSH);
            r3_nbd_put64(q + 28 * i + 8, 1000 + (uint64_t)i);
            r3_nbd_put64(q + 28 * i + 16, i < 5 ? offs[i] : 0);
            r3_nbd_put32(q + 28 * i + 24, i < 5 ? lens[i] : 0);
        }
        tu_send_all(fd, q, sizeof q);
        char *b = malloc(65536);
        for (int i = 0; i < 5; i++) {
            unsigned char h[28];
            ck_assert(tu_recv_all(fd, h, structured ? 28 : 16));
            ck_assert(r3_nbd_get64(h + 8) == 1000 + (uint64_t)i);
            if (structured) {
                ck_assert_uint_eq(r3_nbd_get32(h), NBD_STRUCTURED_REPLY_MAGIC);
                ck_assert_uint_eq(r3_nbd_get16(h + 6), NBD_REPLY_TYPE_OFFSET_DATA);
                ck_assert_uint_eq(r3_nbd_get32(h + 16), 8 + lens[i]);
                ck_assert(r3_nbd_get64(h + 20) == offs[i]);
            } else {
                ck_assert_uint_eq(r3_nbd_get32(h), NBD_SIMPLE_REPLY_MAGIC);
                ck_assert_uint_eq(r3_nbd_get32(h + 4), 0);
            }
            ck_assert(tu_recv_all(fd, b, lens[i]));
            ck_assert_int_eq(tu_check(b, lens[i], offs[i], 9), -1);
        }
        free(b);
        unsigned char s[16];
        ck_assert(tu_recv_all(fd, s, 16));                         /* the FLUSH, not batched */
        ck_assert(r3_nbd_get64(s + 8) == 1005);
        ck_assert_uint_eq(r3_nbd_get32(s + 4), 0);
        close(fd);
    }
    log_wait("export 'two': 6 requests");
}
END_TEST

/* WRITE, DISC, then the client shuts its side: the FIN is behind a DISC,
 * so the write is not a leftover of a vanished client: it lands. */
START_TEST(write_then_disc)
{
    start(false, NULL);
    int fd = cl(FIXED);
    uint64_t size;
    uint16_t flags;
    go(fd, "", &size, &flags);
    char w[8192];
    tu_fill(w, sizeof w, 3 << 20, 4);
    req(fd, 0, NBD_CMD_WRITE, 3 << 20, sizeof w, w);
    req(fd, 0, NBD_CMD_DISC, 0, 0, NULL);
    shutdown(fd, SHUT_WR);
    log_wait("client disconnected");
    close(fd);
    /* The disconnect is logged when the reader sees the FIN; a worker may
     * still be running the WRITE then: it must land, so wait for it (a
     * write that never lands fails after 30 s). */
    char rb[8192];
    int landed = 0;
    for (int i = 0; i < 3000 && landed != -1; i++) {
        int ffd = open(file_path, O_RDONLY);
        ck_assert_int_eq(pread(ffd, rb, sizeof rb, 3 << 20), 8192);
        close(ffd);
        landed = tu_check(rb, sizeof rb, 3 << 20, 4);
        if (landed != -1)
            usleep(10000);
    }
    ck_assert_int_eq(landed, -1);
}
END_TEST

/* Many small WRITEs, a DISC and the FIN, sent at once: a worker that meets
 * the FIN while the reader has not reached the DISC finds it in the socket
 * behind the other writes, so every write lands. */
static void writes_then_disc(size_t inflight)
{
    start_inflight = inflight;
    start(false, NULL);
    start_inflight = 0;
    int fd = cl(FIXED);
    uint64_t size;
    uint16_t flags;
    go(fd, "", &size, &flags);
    enum { N = 12, W = 4096 };
    static unsigned char msg[N * (28 + W) + 28];
    size_t at = 0;
    for (int i = 0; i < N; i++) {
        unsigned char *q = msg + at;
        memset(q, 0, 28);
        r3_nbd_put32(q, NBD_REQUEST_MAGIC);
        r3_nbd_put16(q + 6, NBD_CMD_WRITE);
        r3_nbd_put64(q + 8, (uint64_t)i + 1);
        r3_nbd_put64(q + 16, (1u << 20) + (uint64_t)i * W);
        r3_nbd_put32(q + 24, W);
        tu_fill((char *)q + 28, W, (1u << 20) + (uint64_t)i * W, 6);
        at += 28 + W;
    }
    memset(msg + at, 0, 28);
    r3_nbd_put32(msg + at, NBD_REQUEST_MAGIC);
    r3_nbd_put16(msg + at + 6, NBD_CMD_DISC);
    at += 28;
    tu_send_all(fd, msg, at);
    shutdown(fd, SHUT_WR);
    log_wait("client disconnected");
    close(fd);
    char rb[N * W];
    int landed = 0;
    for (int i = 0; i < 3000 && landed != -1; i++) {
        int ffd = open(file_path, O_RDONLY);
        ck_assert_int_eq(pread(ffd, rb, sizeof rb, 1 << 20), (ssize_t)sizeof rb);
        close(ffd);
        landed = tu_check(rb, sizeof rb, 1 << 20, 6);
        if (landed != -1)
            usleep(10000);
    }
    ck_assert_msg(landed == -1, "byte %d of the writes did not land", landed);
}

START_TEST(writes_then_disc_at_once)
{
    writes_then_disc(0);
}
END_TEST

/* The same with an in-flight budget of two writes: the reader waits for
 * budget with the later writes and the DISC still in the socket when the
 * FIN arrives, so the server finds the DISC by looking into the socket
 * (disc_pending), past the payload the reader has yet to take. */
START_TEST(writes_then_disc_budget)
{
    writes_then_disc(2 * 4096);
    log_wait("client disconnected");
}
END_TEST

static void *no_op(void *arg)
{
    return arg;
}

/* No worker thread can start (every new thread's stack would be larger
 * than the address space): the connection's requests run on its reader
 * rather than never, and are answered; the write lands in the file. */
START_TEST(no_worker_thread)
{
    start(false, NULL);
    int fd = cl(FIXED);
    uint64_t size;
    uint16_t flags;
    go(fd, "", &size, &flags);
    pthread_attr_t old;
    tu_threads_refuse(&old);
    pthread_t t;
    int prc = pthread_create(&t, NULL, no_op, NULL);      /* the premise */
    unsigned char w[8192], rb[8192];
    tu_fill(w, sizeof w, 3u << 20, 9);
    req(fd, 0, NBD_CMD_WRITE, 3u << 20, sizeof w, w);
    uint32_t werr = simple_err(fd);
    req(fd, 0, NBD_CMD_FLUSH, 0, 0, NULL);
    uint32_t ferr = simple_err(fd);
    tu_threads_restore(&old);
    if (prc == 0)
        pthread_join(t, NULL);
    ck_assert_msg(prc != 0, "a thread with a 64 TiB stack started: the test proves nothing");
    ck_assert_uint_eq(werr, 0);
    ck_assert_uint_eq(ferr, 0);
    close(fd);
    int ffd = open(file_path, O_RDONLY);
    ck_assert_int_eq(pread(ffd, rb, sizeof rb, 3u << 20), (ssize_t)sizeof rb);
    close(ffd);
    ck_assert_int_eq(tu_check(rb, sizeof rb, 3u << 20, 9), -1);
}
END_TEST

/* No thread can start to serve a new connection (the server's pool has
 * none left): the connection is closed with the reason in the log, not
 * left waiting; with threads again the next client is served. */
START_TEST(no_pool_thread)
{
    start(false, NULL);
    pthread_attr_t old;
    tu_threads_refuse(&old);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strcpy(sa.sun_path, sock_path);
    int crc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    struct timeval tv = { 20, 0 };           /* hang guard */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    unsigned char f[4];
    r3_nbd_put32(f, NBD_FLAG_C_FIXED_NEWSTYLE);
    tu_send_all(fd, f, 4);
    char b[256];
    ssize_t n;
    while ((n = recv(fd, b, sizeof b, 0)) > 0)
        ;
    int e = errno;
    tu_threads_restore(&old);
    ck_assert_int_eq(crc, 0);
    ck_assert_msg(n == 0 || e == ECONNRESET, "the connection was left waiting: %s", strerror(e));
    close(fd);
    log_wait("no thread could be started to serve it");
    /* threads again: served */
    fd = cl(FIXED);
    uint64_t size;
    uint16_t flags;
    go(fd, "", &size, &flags);
    ck_assert_uint_eq(size, FSIZE);
    close(fd);
}
END_TEST

START_TEST(start_refused)
{
    struct r3_nbd_server_opts o = { 0 };
    struct r3_nbd_server *s = (void *)1;
    ck_assert_int_eq(r3_nbd_server_start(&o, &s), -EINVAL);
    ck_assert_ptr_null(s);
    ck_assert(strstr(r3_last_error(), "needs a listen address and an export"));
}
END_TEST

/* The real client over STARTTLS with a PSK: the TLS side of the
 * negotiation (options before TLS forgotten, structured replies and the
 * meta context asked again inside), data both ways; a wrong key and a
 * client without TLS are refused with their sentences. */
START_TEST(tls_psk_client)
{
    char psk[300];
    snprintf(psk, sizeof psk, "%s/psk", dir);
    FILE *f = fopen(psk, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "alice:00112233445566778899aabbccddeeff\n");
    fclose(f);
    start(false, psk);
    struct r3_nbd_client *c = NULL;
    struct r3_nbd_client_opts o = { .unix_path = sock_path, .tls = true, .tls_psk = psk, .tls_user = "alice",
                                    .connect_timeout_ms = 10000, .timeout_ms = 10000 };
    ck_assert_msg(r3_nbd_client_connect(&o, &c) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(r3_nbd_client_size(c), FSIZE);
    ck_assert(r3_nbd_client_has_extents(c));
    char *b = malloc(65536);
    ck_assert_int_eq(r3_nbd_client_pread(c, b, 65536, 1 << 20), 0);
    ck_assert_int_eq(tu_check(b, 65536, 1 << 20, 7), -1);
    tu_fill(b, 4096, 0, 12);
    ck_assert_int_eq(r3_nbd_client_pwrite(c, b, 4096, 2 << 20, true), 0);
    r3_nbd_client_close(c);
    log_wait(" tls export '': ");
    char r[4096];
    ck_assert_int_eq(r3_source_read(fsrc, r, 4096, 2 << 20), 0);
    ck_assert_int_eq(memcmp(r, b, 4096), 0);
    free(b);

    /* the same identity, another key */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/bad", dir);
    f = fopen(bad, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "alice:ffeeddccbbaa99887766554433221100\n");
    fclose(f);
    o.tls_psk = bad;
    c = (void *)1;
    ck_assert_int_lt(r3_nbd_client_connect(&o, &c), 0);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(r3_last_error(), sock_path), "%s", r3_last_error());
    /* no TLS at all: the export is refused, TLS is required */
    struct r3_nbd_client_opts p = { .unix_path = sock_path, .connect_timeout_ms = 10000 };
    ck_assert_int_eq(r3_nbd_client_connect(&p, &c), -ECONNREFUSED);
    ck_assert_msg(strstr(r3_last_error(), "the server refused export ''"), "%s", r3_last_error());
    ck_assert_msg(strstr(r3_last_error(), "TLS is required"), "%s", r3_last_error());
}
END_TEST

/* Wait (20 s at most) until s appears n times in the log. */
static void log_count_wait(const char *s, int n)
{
    int k = tu_log_wait_n(s, n);
    ck_assert_msg(k == n, "%d lines with '%s', not %d, in:\n%s", k, s, n, tu_log_buf);
}

/* A client that hangs up right after each option: the server's reply
 * cannot go out (EPIPE on a Unix socket), or went out and was left unread
 * (the server's next read is reset); each connection ends with the same
 * reason, whatever the option was. */
START_TEST(hangup_after_each_option)
{
    start(true, NULL);
    unsigned char b[128];
    const uint16_t inf[] = { NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE };
    const char *const q[] = { NBD_META_ALLOCATION };
    int n = 0;
    for (int k = 0; k < 12; k++, n++) {
        int fd = cl(FIXED);
        if (k >= 4 && k <= 6) {
            opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
            rep_ack(fd, NBD_OPT_STRUCTURED_REPLY);
        }
        switch (k) {
        case 0: opt(fd, NBD_OPT_INFO, b, go_data(b, "two", inf, 3)); break;
        /* (a GO or EXPORT_NAME that succeeds may reach transmission before
         * the hang-up is seen: only options that choose no export here) */
        case 1: opt(fd, NBD_OPT_GO, b, go_data(b, "nope", NULL, 0)); break;
        case 2: opt(fd, NBD_OPT_LIST, NULL, 0); break;
        case 3: opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0); break;
        case 4: opt(fd, NBD_OPT_SET_META_CONTEXT, b, meta_data(b, "", q, 1)); break;
        case 5: opt(fd, NBD_OPT_LIST_META_CONTEXT, b, meta_data(b, "", NULL, 0)); break;
        case 6: opt(fd, NBD_OPT_SET_META_CONTEXT, b, meta_data(b, "", NULL, 0)); break;
        case 7: opt(fd, 99, b, 8); break;
        case 8: opt(fd, NBD_OPT_INFO, b, go_data(b, "nope", inf, 1)); break;
        case 9: opt(fd, NBD_OPT_STARTTLS, NULL, 0); break;
        case 10: opt(fd, NBD_OPT_INFO, b, 3); break;
        case 11:                          /* the reply came and is left unread: a reset, same reason */
            opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
            ck_assert_int_eq(recv(fd, b, 1, MSG_PEEK), 1);
            break;
        }
        close(fd);
    }
    log_count_wait("no export chosen", n);
    log_count_wait("peer closed during the handshake", n);
    for (int i = 0; i < 4000 && r3_nbd_server_conns(srv) > 0; i++)   /* the line comes first */
        usleep(5000);
    ck_assert_uint_eq(r3_nbd_server_conns(srv), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("cov_nbd_server");
    TCase *t = tcase_create("server");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, list_exports);
    tcase_add_test(t, list_disabled_and_small_options);
    tcase_add_test(t, info_variants);
    tcase_add_test(t, meta_variants);
    tcase_add_test(t, handshake_violations);
    tcase_add_test(t, export_name_ok);
    tcase_add_test(t, tls_required);
    tcase_add_test(t, reads_with_holes);
    tcase_add_test(t, write_family);
    tcase_add_test(t, readonly_and_cut);
    tcase_add_test(t, read_batch);
    tcase_add_test(t, write_then_disc);
    tcase_add_test(t, writes_then_disc_at_once);
    tcase_add_test(t, writes_then_disc_budget);
    tcase_add_test(t, no_worker_thread);
    tcase_add_test(t, no_pool_thread);
    tcase_add_test(t, start_refused);
    tcase_add_test(t, tls_psk_client);
    tcase_add_test(t, hangup_after_each_option);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return tu_run(suite());
}
