/* SPDX-License-Identifier: BSD-3-Clause */
/* src/net/tls.c: every refusal of a TLS context (unreadable directory or
 * files, no certificate, a certificate without its key, files that are not
 * PEM, a key of another certificate, a CA that is not one, mTLS without a
 * CA, each malformed PSK file and an identity it lacks) with its sentence;
 * and handshakes that fail (a peer that is not TLS, one that closes, one
 * that says nothing, a server certificate of another CA, a name that does
 * not match, TLS twice), certificates made with openssl. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/socket.h>
#include "testutil.h"
#include "tu_certs.h"
#include "internal.h"
#include "net/net.h"

#define ERR_IS(want) ck_assert_msg(strcmp(r3_last_error(), (want)) == 0, "error: '%s', not '%s'", \
                                   r3_last_error(), (want))
#define ERR_STARTS(want) ck_assert_msg(strncmp(r3_last_error(), (want), strlen(want)) == 0, \
                                       "error: '%s', not '%s...'", r3_last_error(), (want))

static char *tmp;


static char *path(const char *name)
{
    static char b[64][700];              /* every path of one test stays valid */
    static int i;
    i = (i + 1) % 64;
    snprintf(b[i], sizeof b[i], "%s/%s", tmp, name);
    return b[i];
}

static void put(const char *name, const char *text)
{
    FILE *f = fopen(path(name), "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void setup(void)
{
    tmp = tu_tmpdir();
    ck_assert_ptr_nonnull(tmp);
    tu_ca(tmp, "ca", "ca");
    tu_ca(tmp, "ca2", "ca2");
    tu_cert(tmp, "srv", "/CN=localhost", "ca", "localhost");
    tu_cert(tmp, "other", "/CN=localhost", "ca2", "localhost");
    put("junk.pem", "not a PEM file\n");
}

static void teardown(void)
{
    tu_rmrf(tmp);
    free(tmp);
}

static int srv(struct r3_tls_opts o)
{
    struct r3_tls_ctx *c = (void *)1;
    int rc = r3_tls_server_ctx(&o, &c);
    if (rc == 0)
        r3_tls_ctx_free(c);
    return rc;
}

static int cli(struct r3_tls_opts o)
{
    struct r3_tls_ctx *c = (void *)1;
    int rc = r3_tls_client_ctx(&o, &c);
    if (rc == 0)
        r3_tls_ctx_free(c);
    return rc;
}

START_TEST(ctx_refusals)
{
    char want[2000], d[700];
    snprintf(d, sizeof d, "%s", path("nodir"));
    ck_assert_int_eq(srv((struct r3_tls_opts){ .dir = d }), -ENOENT);
    snprintf(want, sizeof want, "TLS server: cannot read the certificate directory %s: %s", d, strerror(ENOENT));
    ERR_IS(want);
    ck_assert_int_eq(srv((struct r3_tls_opts){ .cert = path("none.pem"), .key = path("srv.key") }), -ENOENT);
    snprintf(want, sizeof want, "TLS server: cannot read certificate %s: %s", path("none.pem"), strerror(ENOENT));
    ERR_IS(want);
    ck_assert_int_eq(cli((struct r3_tls_opts){ .cert = path("srv.pem"), .key = path("none.key") }), -ENOENT);
    snprintf(want, sizeof want, "TLS client: cannot read key %s: %s", path("none.key"), strerror(ENOENT));
    ERR_IS(want);
    ck_assert_int_eq(cli((struct r3_tls_opts){ .ca = path("none.pem") }), -ENOENT);
    snprintf(want, sizeof want, "TLS client: cannot read CA file %s: %s", path("none.pem"), strerror(ENOENT));
    ERR_IS(want);

    ck_assert_int_eq(srv((struct r3_tls_opts){ 0 }), -EINVAL);
    ERR_IS("TLS server: needs a certificate and a key (or a PSK file)");
    snprintf(d, sizeof d, "%s", path("empty"));
    tu_sh("mkdir '%s'", d);
    ck_assert_int_eq(srv((struct r3_tls_opts){ .dir = d }), -EINVAL);
    snprintf(want, sizeof want, "TLS server: needs a certificate and a key (or a PSK file) in %s", d);
    ERR_IS(want);
    ck_assert_int_eq(srv((struct r3_tls_opts){ .cert = path("srv.pem") }), -EINVAL);
    ERR_IS("TLS server: a certificate needs both a cert and a key file");
    ck_assert_int_eq(cli((struct r3_tls_opts){ .key = path("srv.key") }), -EINVAL);
    ERR_IS("TLS client: a certificate needs both a cert and a key file");

    ck_assert_int_eq(srv((struct r3_tls_opts){ .cert = path("junk.pem"), .key = path("srv.key") }), -EINVAL);
    snprintf(want, sizeof want, "TLS server: cannot load certificate %s: ", path("junk.pem"));
    ERR_STARTS(want);
    ck_assert_int_eq(srv((struct r3_tls_opts){ .cert = path("srv.pem"), .key = path("junk.pem") }), -EINVAL);
    snprintf(want, sizeof want, "TLS server: cannot load private key %s: ", path("junk.pem"));
    ERR_STARTS(want);
    /* a key of another certificate: OpenSSL refuses it as it is loaded */
    ck_assert_int_eq(srv((struct r3_tls_opts){ .cert = path("srv.pem"), .key = path("other.key") }), -EINVAL);
    snprintf(want, sizeof want, "TLS server: cannot load private key %s: ", path("other.key"));
    ERR_STARTS(want);
    ck_assert_int_eq(cli((struct r3_tls_opts){ .ca = path("junk.pem") }), -EINVAL);
    snprintf(want, sizeof want, "TLS client: cannot load CA file %s: ", path("junk.pem"));
    ERR_STARTS(want);
    ck_assert_int_eq(srv((struct r3_tls_opts){ .cert = path("srv.pem"), .key = path("srv.key"),
                                               .verify_peer = true }), -EINVAL);
    ERR_IS("TLS server: verifying client certificates needs a CA (ca-cert.pem)");

    /* good ones: a plain server, mTLS, a client trusting the system store, an insecure one */
    ck_assert_int_eq(srv((struct r3_tls_opts){ .cert = path("srv.pem"), .key = path("srv.key") }), 0);
    ck_assert_int_eq(srv((struct r3_tls_opts){ .cert = path("srv.pem"), .key = path("srv.key"),
                                               .ca = path("ca.pem") }), 0);
    ck_assert_int_eq(cli((struct r3_tls_opts){ 0 }), 0);
    ck_assert_int_eq(cli((struct r3_tls_opts){ .insecure = true }), 0);
}
END_TEST

START_TEST(psk_files)
{
    char want[2000], *p = path("psk");
    snprintf(want, sizeof want, "%s", p);
    ck_assert_int_eq(srv((struct r3_tls_opts){ .psk_file = path("nopsk") }), -ENOENT);
    static const char *const bad[] = { "nocolon\n", ":abcd\n", "id:\n", "id:abc\n",
                                       "id:" "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
                                       "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00\n",
                                       "0123456789012345678901234567890123456789012345678901234567890123"
                                       "0123456789012345678901234567890123456789012345678901234567890123:00\n" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        put("psk", bad[i]);
        ck_assert_int_eq(srv((struct r3_tls_opts){ .psk_file = p }), -EINVAL);
        char w[2200];
        snprintf(w, sizeof w, "TLS server: PSK file %s line 1 is not 'identity:hexkey' (a key of 1 to 64 bytes)", want);
        ERR_IS(w);
    }
    put("psk", "# comment\n\nalice:zz\n");
    ck_assert_int_eq(cli((struct r3_tls_opts){ .psk_file = p }), -EINVAL);
    char w[2200];
    snprintf(w, sizeof w, "TLS client: PSK file %s line 3: the key is not hexadecimal", want);
    ERR_IS(w);
    put("psk", "# only a comment\n\n");
    ck_assert_int_eq(srv((struct r3_tls_opts){ .psk_file = p }), -EINVAL);
    snprintf(w, sizeof w, "TLS server: PSK file %s has no 'identity:hexkey' line", want);
    ERR_IS(w);
    FILE *f = fopen(p, "w");
    for (int i = 0; i < 33; i++)
        fprintf(f, "id%d:%02x\n", i, i);
    fclose(f);
    ck_assert_int_eq(srv((struct r3_tls_opts){ .psk_file = p }), -EINVAL);
    snprintf(w, sizeof w, "TLS server: PSK file %s has more than 32 keys", want);
    ERR_IS(w);
    put("psk", "alice:00ff\r\nbob:AbCd\n");
    ck_assert_int_eq(cli((struct r3_tls_opts){ .psk_file = p, .psk_identity = "carol" }), -EINVAL);
    snprintf(w, sizeof w, "TLS client: PSK file %s has no key for identity 'carol'", want);
    ERR_IS(w);
    ck_assert_int_eq(cli((struct r3_tls_opts){ .psk_file = p, .psk_identity = "bob" }), 0);
    ck_assert_int_eq(srv((struct r3_tls_opts){ .psk_file = p }), 0);
}
END_TEST

/* ---- handshakes on a socketpair: the other end is a thread (a TLS peer)
 * or scripted by the test */
struct end { struct r3_tls_ctx *ctx; struct r3_io io; int rc; const char *host; char err[400]; };
static void *accept_main(void *p)
{
    struct end *e = p;
    e->rc = r3_tls_accept(e->ctx, &e->io, 5000);
    snprintf(e->err, sizeof e->err, "%s", r3_last_error());
    return NULL;
}

/* The client's result of a handshake with a server of sopts; the server's in *s. */
static int handshake_with(struct r3_tls_opts sopts, struct r3_tls_opts copts, const char *host, struct end *s)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    *s = (struct end){ 0 };
    ck_assert_msg(r3_tls_server_ctx(&sopts, &s->ctx) == 0, "%s", r3_last_error());
    ck_assert_int_eq(r3_io_init(&s->io, sv[0]), 0);
    struct r3_tls_ctx *cc;
    ck_assert_msg(r3_tls_client_ctx(&copts, &cc) == 0, "%s", r3_last_error());
    struct r3_io io;
    ck_assert_int_eq(r3_io_init(&io, sv[1]), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, accept_main, s), 0);
    int rc = r3_tls_connect(cc, &io, host, 5000);
    char err[400];
    snprintf(err, sizeof err, "%s", r3_last_error());
    if (rc < 0)
        r3_io_shutdown(&io);
    pthread_join(t, NULL);
    if (rc == 0) {
        ck_assert_int_eq(r3_tls_connect(cc, &io, host, 5000), -EINVAL);
        ERR_IS("TLS connect: the connection is already TLS");
    }
    r3_io_close(&io);
    r3_io_close(&s->io);
    r3_tls_ctx_free(cc);
    r3_tls_ctx_free(s->ctx);
    if (rc < 0)
        r3_error(rc, "%s", err);
    return rc;
}

START_TEST(handshake_failures)
{
    struct end s;
    struct r3_tls_opts so = { .cert = path("srv.pem"), .key = path("srv.key") };
    /* trusted, the name matches: both sides done */
    ck_assert_int_eq(handshake_with(so, (struct r3_tls_opts){ .ca = path("ca.pem") }, "localhost", &s), 0);
    ck_assert_int_eq(s.rc, 0);
    /* a server certificate of another CA, and a name it does not carry */
    ck_assert_int_eq(handshake_with(so, (struct r3_tls_opts){ .ca = path("ca2.pem") }, "localhost", &s), -EACCES);
    ERR_STARTS("TLS connect: certificate verify failed: ");
    ck_assert_int_lt(s.rc, 0);
    ck_assert_int_eq(handshake_with(so, (struct r3_tls_opts){ .ca = path("ca.pem") }, "elsewhere", &s), -EACCES);
    ERR_STARTS("TLS connect: certificate verify failed: ");
    ck_assert_int_eq(handshake_with(so, (struct r3_tls_opts){ .ca = path("ca.pem") }, "127.0.0.1", &s), -EACCES);
    /* mTLS: a client without a certificate is refused by the server */
    struct r3_tls_opts mo = so;
    mo.ca = path("ca.pem");
    handshake_with(mo, (struct r3_tls_opts){ .ca = path("ca.pem") }, "localhost", &s);
    ck_assert_int_lt(s.rc, 0);
    /* PSK: an identity the server does not know */
    put("spsk", "alice:00112233\n");
    put("cpsk", "mallory:00112233\n");
    int rc = handshake_with((struct r3_tls_opts){ .psk_file = path("spsk") },
                            (struct r3_tls_opts){ .psk_file = path("cpsk") }, NULL, &s);
    ck_assert_int_eq(rc, -EACCES);
    ERR_STARTS("TLS connect: the server refused PSK identity 'mallory' (unknown to it, or another key)");
    ck_assert_int_eq(s.rc, -EACCES);
    ck_assert_msg(strcmp(s.err, "TLS accept: unknown PSK identity 'mallory'") == 0, "%s", s.err);

    /* peers that are not TLS: garbage, a close, silence */
    struct r3_tls_ctx *cc;
    ck_assert_int_eq(r3_tls_client_ctx(&(struct r3_tls_opts){ .ca = path("ca.pem") }, &cc), 0);
    int sv[2];
    struct r3_io io;
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(r3_io_init(&io, sv[0]), 0);
    tu_send_all(sv[1], "HTTP/1.1 400 Bad Request\r\n\r\n", 28);
    ck_assert_int_eq(r3_tls_connect(cc, &io, "localhost", 5000), -EPROTO);
    ERR_STARTS("TLS connect: ");
    r3_io_close(&io);
    close(sv[1]);

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(r3_io_init(&io, sv[0]), 0);
    close(sv[1]);
    rc = r3_tls_connect(cc, &io, "localhost", 5000);
    ck_assert_int_lt(rc, 0);
    ERR_STARTS("TLS connect: connection closed during the handshake");
    r3_io_close(&io);

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(r3_io_init(&io, sv[0]), 0);
    ck_assert_int_eq(r3_tls_connect(cc, &io, "localhost", 50), -ETIMEDOUT);
    ERR_IS("TLS connect: handshake timed out");
    r3_io_close(&io);
    close(sv[1]);
    r3_tls_ctx_free(cc);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cov_src_tls");
    TCase *tc = tcase_create("tls");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, ctx_refusals);
    tcase_add_test(tc, psk_files);
    tcase_add_test(tc, handshake_failures);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
