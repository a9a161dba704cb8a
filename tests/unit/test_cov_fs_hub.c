/* SPDX-License-Identifier: BSD-3-Clause */
/* filesync/hub.c in-process (mTLS on a unix socket, certificates made with
 * openssl), against clients that use the real client code (connect, TLS,
 * hello) and then send what a well-behaved peer never does. Each refusal
 * is checked by the ERR frame's exact text and the hub closing after it:
 * every hello refusal (not a hello, a bad one, another version, an unknown
 * role, a certificate without a common name), and per role each malformed
 * or forbidden message; two advertisers of one id fighting over a file id.
 * The relay is checked too: FILE, HAVE, targeted blocks, END, ACK and GONE
 * arrive at the other side with the ids the hub adds. Then the refusals of
 * fs_hub_run, fs_client_ctx and fs_dial (give-up with its sentence, stop,
 * a final refusal). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include "testutil.h"
#include "tu_certs.h"
#include "tu_log.h"
#include "internal.h"
#include "filesync/filesync.h"

#define ERR_IS(want) ck_assert_msg(strcmp(r3_last_error(), (want)) == 0, "error: '%s', not '%s'", \
                                   r3_last_error(), (want))

static char *tmp;
static char sock[600], hubaddr[620];

/* ---- the hub's lines, waited on */
static void on_line(void *arg, int kind, const char *text)
{
    (void)arg;
    (void)kind;
    tu_log_add(text);
}


static struct fs_hub_opts hub_o;
static atomic_int hub_stop;
static pthread_t hub_t;
static int hub_rc;
static char p_ca[700], p_hub[700], p_hubk[700];

static void *hub_main(void *arg)
{
    (void)arg;
    hub_rc = fs_hub_run(&hub_o, &hub_stop);
    return NULL;
}

static void setup(void)
{
    tmp = tu_tmpdir();
    ck_assert_ptr_nonnull(tmp);
    tu_ca(tmp, "ca", "cov ca");
    tu_cert(tmp, "hub", "/CN=hub", "ca", NULL);
    tu_cert(tmp, "a", "/CN=syncA", "ca", NULL);
    tu_cert(tmp, "nocn", "/O=r3 test", "ca", NULL);
    snprintf(p_ca, sizeof p_ca, "%s/ca.pem", tmp);
    snprintf(p_hub, sizeof p_hub, "%s/hub.pem", tmp);
    snprintf(p_hubk, sizeof p_hubk, "%s/hub.key", tmp);
    snprintf(sock, sizeof sock, "%s/hub.sock", tmp);
    snprintf(hubaddr, sizeof hubaddr, "unix:%s", sock);
    tu_log_clear();
    hub_o = (struct fs_hub_opts){ .listen = hubaddr, .verbose = true,
                                  .tls = { .cert = p_hub, .key = p_hubk, .ca = p_ca },
                                  .report = { .line = on_line } };
    atomic_store(&hub_stop, 0);
    ck_assert_int_eq(pthread_create(&hub_t, NULL, hub_main, NULL), 0);
    ck_assert_msg(tu_log_wait("listening on unix:"), "the hub did not start: %s", tu_log_buf);
}

static void teardown(void)
{
    atomic_store(&hub_stop, 1);
    pthread_join(hub_t, NULL);
    ck_assert_int_eq(hub_rc, 0);
    tu_rmrf(tmp);
    free(tmp);
}

static struct r3_tls_ctx *client_ctx(const char *name)
{
    char c[700], k[700];
    snprintf(c, sizeof c, "%s/%s.pem", tmp, name);
    snprintf(k, sizeof k, "%s/%s.key", tmp, name);
    struct r3_tls_opts o = { .cert = c, .key = k, .ca = p_ca };
    struct r3_tls_ctx *ctx;
    ck_assert_msg(fs_client_ctx(&o, &ctx) == 0, "%s", r3_last_error());
    return ctx;
}

/* A connection of certificate name, TLS done, no hello yet. */
static struct fs_conn *dial_raw(const char *name)
{
    struct r3_tls_ctx *ctx = client_ctx(name);
    struct fs_conn *c;
    ck_assert_msg(fs_conn_connect(ctx, hubaddr, 5000, &c) == 0, "%s", r3_last_error());
    r3_tls_ctx_free(ctx);
    c->io.rtimeout_ms = 10000;
    return c;
}

static struct fs_conn *join(const char *name, const char *role)
{
    struct fs_conn *c = dial_raw(name);
    ck_assert_msg(fs_conn_hello(c, role, 10000) == 0, "%s", r3_last_error());
    c->io.rtimeout_ms = 10000;
    return c;
}

static const unsigned char zbuf[65536];

/* Send [items]: 'u' a number, 's' a string, 'b' a bin of that many bytes
 * (size_t), 'n' nil. */
static void sendm(struct fs_conn *c, const char *fmt, ...)
{
    msgpack_sbuffer b;
    msgpack_packer pk;
    msgpack_sbuffer_init(&b);
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, (uint32_t)strlen(fmt));
    va_list ap;
    va_start(ap, fmt);
    for (const char *p = fmt; *p; p++) {
        if (*p == 'u') {
            msgpack_pack_uint64(&pk, va_arg(ap, uint64_t));
        } else if (*p == 's') {
            const char *s = va_arg(ap, const char *);
            msgpack_pack_str(&pk, strlen(s));
            msgpack_pack_str_body(&pk, s, strlen(s));
        } else if (*p == 'b') {
            size_t n = va_arg(ap, size_t);
            msgpack_pack_bin(&pk, n);
            ck_assert_uint_le(n, sizeof zbuf);
            msgpack_pack_bin_body(&pk, zbuf, n);
        } else {
            msgpack_pack_nil(&pk);
        }
    }
    va_end(ap);
    struct fs_frame *f = fs_frame_new(&b);
    msgpack_sbuffer_destroy(&b);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(r3_io_write_all(&c->io, f->data, f->len), 0);
    fs_frame_put(f);
}

/* The next frame: its type and items (numbers into v[], a string into s). */
struct got { uint64_t type, v[6]; char s[300]; uint32_t binlen; int n; };
static int next(struct fs_conn *c, struct got *g)
{
    struct fs_frame *f;
    memset(g, 0, sizeof *g);
    int rc = fs_frame_read(&c->io, FS_MAX_FRAME, NULL, NULL, &f);
    if (rc < 0)
        return rc;
    msgpack_unpacked u;
    ck_assert_int_eq(fs_frame_unpack(f, &u), 0);
    ck_assert(fs_msg_uint(&u.data, 0, &g->type));
    g->n = (int)u.data.via.array.size;
    for (uint32_t i = 1; i < u.data.via.array.size && i < 7; i++) {
        const char *s;
        const void *p;
        uint32_t n;
        if (fs_msg_uint(&u.data, i, &g->v[i - 1]))
            continue;
        if (fs_msg_str(&u.data, i, &s, &n))
            snprintf(g->s, sizeof g->s, "%.*s", (int)n, s);
        else if (fs_msg_bin(&u.data, i, &p, &n))
            g->binlen = n;
    }
    msgpack_unpacked_destroy(&u);
    fs_frame_put(f);
    return 0;
}

/* The next frame is ERR with text, then the hub closes. */
static void refused(struct fs_conn *c, const char *text)
{
    struct got g;
    ck_assert_msg(next(c, &g) == 0, "no ERR '%s': %s", text, r3_last_error());
    ck_assert_msg(g.type == FS_ERR, "type %llu, not ERR '%s'", (unsigned long long)g.type, text);
    ck_assert_msg(strcmp(g.s, text) == 0, "ERR '%s', not '%s'", g.s, text);
    ck_assert_int_lt(next(c, &g), 0);
    fs_conn_free(c);
}

START_TEST(hello_refusals)
{
    struct fs_conn *c = dial_raw("a");
    sendm(c, "uu", (uint64_t)FS_FILE, (uint64_t)1);
    refused(c, "hello expected");
    c = dial_raw("a");
    sendm(c, "us", (uint64_t)FS_HELLO, "r3sync");
    refused(c, "bad hello");
    c = dial_raw("a");
    sendm(c, "usus", (uint64_t)FS_HELLO, "r3sync", (uint64_t)2, "adv");
    refused(c, "protocol version 2 not supported");
    c = dial_raw("a");
    sendm(c, "n");
    refused(c, "hello expected");

    /* through the client's own hello: the refusal becomes its sentence */
    c = dial_raw("a");
    ck_assert_int_eq(fs_conn_hello(c, "boss", 10000), -EACCES);
    ERR_IS("the hub refused: unknown role");
    fs_conn_free(c);
    c = dial_raw("nocn");
    ck_assert_int_eq(fs_conn_hello(c, "recv", 10000), -EACCES);
    ERR_IS("the hub refused: the client certificate has no common name");
    fs_conn_free(c);
    ck_assert(tu_log_wait("refused: the client certificate has no common name"));
    ck_assert(tu_log_wait("refused: unknown role"));
}
END_TEST

START_TEST(adv_refusals)
{
#define ADV_REFUSED(text, ...) do { struct fs_conn *c_ = join("a", "adv"); \
        sendm(c_, __VA_ARGS__); refused(c_, text); } while (0)
    ADV_REFUSED("message type 99 not allowed for an advertiser", "u", (uint64_t)99);
    ADV_REFUSED("message type 6 not allowed for an advertiser", "uu", (uint64_t)FS_HAVE, (uint64_t)1);
    ADV_REFUSED("message without a type", "s", "FILE");
    ADV_REFUSED("second hello", "usus", (uint64_t)FS_HELLO, "r3sync", (uint64_t)1, "adv");
    ADV_REFUSED("bad FILE message", "us", (uint64_t)FS_FILE, "x");
    ADV_REFUSED("bad FILE message", "uusu", (uint64_t)FS_FILE, (uint64_t)1, "f", (uint64_t)10);
    ADV_REFUSED("bad block size or file size", "uusuu", (uint64_t)FS_FILE, (uint64_t)1, "f",
                (uint64_t)10, (uint64_t)1000);
    ADV_REFUSED("bad block size or file size", "uusuu", (uint64_t)FS_FILE, (uint64_t)1, "f",
                (uint64_t)10, (uint64_t)2048);
    ADV_REFUSED("bad block size or file size", "uusuu", (uint64_t)FS_FILE, (uint64_t)1, "f",
                (uint64_t)10, (uint64_t)(8u << 20));
    ADV_REFUSED("bad block size or file size", "uusuu", (uint64_t)FS_FILE, (uint64_t)1, "f",
                (uint64_t)1 << 51, (uint64_t)65536);
    ADV_REFUSED("file name 'a//b' refused (empty, '.' or '..' component)", "uusuu", (uint64_t)FS_FILE,
                (uint64_t)1, "a//b", (uint64_t)10, (uint64_t)65536);
    ADV_REFUSED("bad message", "u", (uint64_t)FS_SIZE);
    ADV_REFUSED("bad message", "uu", (uint64_t)FS_TBLK, (uint64_t)1);
    ADV_REFUSED("bad message", "us", (uint64_t)FS_TDONE, "rid");
    ADV_REFUSED("bad END message", "u", (uint64_t)FS_END);

    /* with a file of its own: 100000 bytes in blocks of 65536 (two blocks) */
    struct fs_conn *c = join("a", "adv");
#define FILE1(c) sendm(c, "uusuu", (uint64_t)FS_FILE, (uint64_t)1, "f.bin", (uint64_t)100000, (uint64_t)65536)
    FILE1(c);
    sendm(c, "uu", (uint64_t)FS_SIZE, (uint64_t)1);
    refused(c, "bad SIZE message");
    c = join("a", "adv");
    FILE1(c);
    sendm(c, "uuu", (uint64_t)FS_SIZE, (uint64_t)1, (uint64_t)1 << 51);
    refused(c, "bad SIZE message");
    c = join("a", "adv");
    FILE1(c);
    sendm(c, "uuu", (uint64_t)FS_BLK, (uint64_t)1, (uint64_t)0);
    refused(c, "bad block message");
    c = join("a", "adv");
    FILE1(c);
    sendm(c, "uuub", (uint64_t)FS_BLK, (uint64_t)1, (uint64_t)1, (size_t)65536);   /* the last is short */
    refused(c, "block 1 of 65536 bytes does not fit the file");
    c = join("a", "adv");
    FILE1(c);
    sendm(c, "uuub", (uint64_t)FS_BLK, (uint64_t)1, (uint64_t)2, (size_t)34464);
    refused(c, "block 2 of 34464 bytes does not fit the file");
    c = join("a", "adv");
    FILE1(c);
    sendm(c, "uuuub", (uint64_t)FS_TBLK, (uint64_t)0, (uint64_t)1, (uint64_t)1, (size_t)34464);
    refused(c, "targeted message without a receiver");
    c = join("a", "adv");
    FILE1(c);
    sendm(c, "uuuu", (uint64_t)FS_TDONE, (uint64_t)0, (uint64_t)1, (uint64_t)2);
    refused(c, "targeted message without a receiver");

    /* two advertisers of one id: the file id is the first one's */
    struct fs_conn *a1 = join("a", "adv"), *a2 = join("a", "adv");
    tu_log_clear();
    FILE1(a1);
    sendm(a1, "uu", (uint64_t)FS_END, (uint64_t)1);          /* a1 stays: answered by nothing */
    ck_assert(tu_log_wait("advertises f.bin (100000 bytes)"));
    sendm(a2, "uusuu", (uint64_t)FS_FILE, (uint64_t)1, "g.bin", (uint64_t)10, (uint64_t)65536);
    refused(a2, "file id in use by another advertiser");
    a2 = join("a", "adv");
    sendm(a2, "uuu", (uint64_t)FS_SIZE, (uint64_t)1, (uint64_t)5);
    refused(a2, "message for a file this advertiser does not own");
    /* a message for a file nobody has: dropped, the connection stays */
    a2 = join("a", "adv");
    sendm(a2, "uuu", (uint64_t)FS_SIZE, (uint64_t)4242, (uint64_t)5);
    ck_assert(tu_log_wait("message for unknown file 4242 dropped"));
    sendm(a2, "u", (uint64_t)77);
    refused(a2, "message type 77 not allowed for an advertiser");
    fs_conn_free(a1);
}
END_TEST

START_TEST(recv_refusals_and_relay)
{
#define RECV_REFUSED(text, ...) do { struct fs_conn *c_ = join("a", "recv"); \
        sendm(c_, __VA_ARGS__); refused(c_, text); } while (0)
    RECV_REFUSED("bad HAVE message", "uu", (uint64_t)FS_HAVE, (uint64_t)1);
    RECV_REFUSED("bad HAVE message", "uuubu", (uint64_t)FS_HAVE, (uint64_t)1, (uint64_t)0, (size_t)15,
                 (uint64_t)0);
    RECV_REFUSED("bad ACK message", "uu", (uint64_t)FS_ACK, (uint64_t)1);
    RECV_REFUSED("message type 4 not allowed for a receiver", "uuub", (uint64_t)FS_BLK, (uint64_t)1,
                 (uint64_t)0, (size_t)1);

    /* relay: an advertiser's file reaches a receiver that joins later */
    struct got g;
    struct fs_conn *adv = join("a", "adv");
    uint64_t adv_id = adv->id;
    tu_log_clear();
    FILE1(adv);
    ck_assert(tu_log_wait("advertises f.bin"));
    struct fs_conn *rc = join("a", "recv");
    ck_assert_int_eq(next(rc, &g), 0);
    ck_assert(g.type == FS_FILE && g.v[0] == 1 && strcmp(g.s, "f.bin") == 0);
    ck_assert(g.v[2] == 100000 && g.v[3] == 65536);
    /* HAVE for a file nobody advertises, and an ACK for no advertiser: ignored */
    sendm(rc, "uuubu", (uint64_t)FS_HAVE, (uint64_t)999, (uint64_t)0, (size_t)16, (uint64_t)1);
    sendm(rc, "uuu", (uint64_t)FS_ACK, (uint64_t)1, (uint64_t)adv_id + 1000);
    /* HAVE reaches the advertiser with the receiver's id */
    sendm(rc, "uuubu", (uint64_t)FS_HAVE, (uint64_t)1, (uint64_t)0, (size_t)32, (uint64_t)1);
    ck_assert_int_eq(next(adv, &g), 0);
    ck_assert(g.type == FS_HAVE && g.v[0] == 1 && g.v[1] == 0 && g.binlen == 32 && g.v[3] == 1);
    ck_assert_uint_eq(g.v[4], rc->id);
    /* a block for that receiver, a broadcast block, the done, an END */
    sendm(adv, "uuuub", (uint64_t)FS_TBLK, rc->id, (uint64_t)1, (uint64_t)1, (size_t)34464);
    sendm(adv, "uuub", (uint64_t)FS_BLK, (uint64_t)1, (uint64_t)0, (size_t)65536);
    sendm(adv, "uuuu", (uint64_t)FS_TDONE, rc->id, (uint64_t)1, (uint64_t)1);
    sendm(adv, "uuu", (uint64_t)FS_SIZE, (uint64_t)1, (uint64_t)100000);
    sendm(adv, "uu", (uint64_t)FS_END, (uint64_t)3);
    ck_assert_int_eq(next(rc, &g), 0);
    ck_assert(g.type == FS_TBLK && g.v[0] == rc->id && g.v[1] == 1 && g.v[2] == 1 && g.binlen == 34464);
    ck_assert_int_eq(next(rc, &g), 0);
    ck_assert(g.type == FS_BLK && g.v[0] == 1 && g.v[1] == 0 && g.binlen == 65536);
    ck_assert_int_eq(next(rc, &g), 0);
    ck_assert(g.type == FS_TDONE && g.v[2] == 1);
    ck_assert_int_eq(next(rc, &g), 0);
    ck_assert(g.type == FS_SIZE && g.v[1] == 100000);
    ck_assert_int_eq(next(rc, &g), 0);
    ck_assert(g.type == FS_END && g.v[0] == 3 && g.v[1] == adv_id);
    /* the ACK goes back to that advertiser with the receiver's id */
    sendm(rc, "uuu", (uint64_t)FS_ACK, (uint64_t)3, adv_id);
    ck_assert_int_eq(next(adv, &g), 0);
    ck_assert(g.type == FS_ACK && g.v[0] == 3 && g.v[1] == rc->id);
    /* the advertiser leaves: the receiver hears GONE */
    fs_conn_free(adv);
    ck_assert_int_eq(next(rc, &g), 0);
    ck_assert(g.type == FS_GONE && g.v[0] == 1);
    fs_conn_free(rc);
}
END_TEST

START_TEST(run_and_dial_refusals)
{
    struct fs_hub_opts o = { .listen = "unix:/nonexistent/x" };
    atomic_int stop = 0;
    ck_assert_int_eq(fs_hub_run(&o, &stop), -EINVAL);
    ERR_IS("the hub needs a certificate, its key and a CA (mTLS only)");
    o.tls = hub_o.tls;
    o.listen = "nohost";
    ck_assert_int_eq(fs_hub_run(&o, &stop), -EINVAL);
    ERR_IS("bad address 'nohost': the port is missing (HOST:PORT)");

    struct r3_tls_opts t = { .cert = p_hub };
    struct r3_tls_ctx *ctx = NULL;
    ck_assert_int_eq(fs_client_ctx(&t, &ctx), -EINVAL);
    ERR_IS("needs a client certificate, its key and a CA (mTLS only)");

    /* nobody at the address: retries, a diagnostic once, then gives up */
    char gone[700];
    snprintf(gone, sizeof gone, "unix:%s/nobody.sock", tmp);
    atomic_int dstop = 0;
    struct fs_dial d = { .hub = gone, .ctx = client_ctx("a"), .role = "recv", .give_up_ms = 300,
                         .rep = &hub_o.report, .stop = &dstop };
    struct fs_conn *c = (void *)1;
    int rc = fs_dial(&d, &c);
    ck_assert_int_eq(rc, -ETIMEDOUT);
    ck_assert_ptr_null(c);
    char want[900];
    snprintf(want, sizeof want, "could not connect to the hub %s for ", gone);
    ck_assert_msg(strncmp(r3_last_error(), want, strlen(want)) == 0, "%s", r3_last_error());
    ck_assert_msg(strstr(r3_last_error(), "giving up. Last error: "), "%s", r3_last_error());
    ck_assert_uint_ge(d.attempts, 2);
    ck_assert(tu_log_wait("(retrying)"));
    /* stopped: at once */
    atomic_store(&dstop, 1);
    d.started = false;
    ck_assert_int_eq(fs_dial(&d, &c), -EINTR);
    ERR_IS("stopped");
    r3_tls_ctx_free(d.ctx);

    /* the hub refuses the hello: final, no retry */
    atomic_store(&dstop, 0);
    d = (struct fs_dial){ .hub = hubaddr, .ctx = client_ctx("nocn"), .role = "recv", .give_up_ms = 0,
                          .rep = &hub_o.report, .stop = &dstop };
    ck_assert_int_eq(fs_dial(&d, &c), -EACCES);
    ck_assert_uint_eq(d.attempts, 1);
    ck_assert_msg(strstr(r3_last_error(), "the hub refused: the client certificate has no common name"),
                  "%s", r3_last_error());
    r3_tls_ctx_free(d.ctx);

    /* and a good dial: connected, then lost at once (the backoff goes on) */
    d = (struct fs_dial){ .hub = hubaddr, .ctx = client_ctx("a"), .role = "adv", .give_up_ms = 0,
                          .rep = &hub_o.report, .stop = &dstop };
    ck_assert_int_eq(fs_dial(&d, &c), 0);
    ck_assert_uint_gt(c->id, 0);
    fs_conn_free(c);
    fs_dial_lost(&d);
    ck_assert(d.pause);
    r3_tls_ctx_free(d.ctx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cov_fs_hub");
    TCase *tc = tcase_create("hub");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, hello_refusals);
    tcase_add_test(tc, adv_refusals);
    tcase_add_test(tc, recv_refusals_and_relay);
    tcase_add_test(tc, run_and_dial_refusals);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
