/* SPDX-License-Identifier: BSD-3-Clause */
/* TLS over OpenSSL 3: contexts (PEM files, the nbdkit/qemu certificate
 * directory, mTLS, pre-shared keys) and the TLS half of struct r3_io. A
 * session is not safe for a concurrent SSL_read and SSL_write, so every SSL
 * call runs under io->mu on the non-blocking socket; waits happen outside it. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "internal.h"
#include "net/net.h"
#include "net/tls_io.h"

#define PSK_MAX 32

struct psk_entry { char id[128]; unsigned char key[64]; unsigned keylen; };

struct r3_tls_ctx {
    SSL_CTX *ctx;
    bool server, mtls;
    size_t npsk;
    const char *psk_want;      /* client: identity to use */
    char psk_want_buf[128];
    struct psk_entry *psk;
};

/* The most useful OpenSSL error on this thread's queue, as a sentence part. */
static const char *ssl_reason(char *buf, size_t n)
{
    unsigned long e, last = 0;
    while ((e = ERR_get_error()) != 0)
        last = e;
    if (!last) {
        snprintf(buf, n, "unexpected end of stream");
        return buf;
    }
    const char *r = ERR_reason_error_string(last);
    snprintf(buf, n, "%s", r ? r : "unknown TLS error");
    return buf;
}

/* ---- pre-shared keys: "identity:hexkey" lines */

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int psk_load(struct r3_tls_ctx *c, const char *path, const char *who)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return r3_error(-errno, "%s: cannot open PSK file %s: %s", who, path, strerror(errno));
    c->psk = calloc(PSK_MAX, sizeof *c->psk);
    char line[512];
    int lineno = 0, rc = 0;
    while (c->psk && rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || line[0] == '#')
            continue;
        if (c->npsk == PSK_MAX) {
            rc = r3_error(-EINVAL, "%s: PSK file %s has more than %d keys", who, path, PSK_MAX);
            break;
        }
        struct psk_entry *e = &c->psk[c->npsk];
        char *colon = strchr(line, ':');
        size_t hl = colon ? strlen(colon + 1) : 0;
        if (!colon || colon == line || (size_t)(colon - line) >= sizeof e->id || hl == 0 || hl % 2 ||
            hl / 2 > sizeof e->key) {
            rc = r3_error(-EINVAL, "%s: PSK file %s line %d is not 'identity:hexkey' (a key of 1 to 64 "
                          "bytes)", who, path, lineno);
            break;
        }
        memcpy(e->id, line, (size_t)(colon - line));
        for (size_t i = 0; i < hl / 2; i++) {
            int a = hexval(colon[1 + 2 * i]), b = hexval(colon[2 + 2 * i]);
            if (a < 0 || b < 0) {
                rc = r3_error(-EINVAL, "%s: PSK file %s line %d: the key is not hexadecimal", who, path,
                              lineno);
                break;
            }
            e->key[i] = (unsigned char)(a << 4 | b);
        }
        e->keylen = (unsigned)(hl / 2);
        if (rc == 0)
            c->npsk++;
    }
    fclose(f);
    if (!c->psk)
        return r3_error(-ENOMEM, "%s: out of memory", who);
    if (rc == 0 && c->npsk == 0)
        rc = r3_error(-EINVAL, "%s: PSK file %s has no 'identity:hexkey' line", who, path);
    return rc;
}

static struct r3_tls_ctx *ctx_of(SSL *ssl)
{
    return SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
}

/* A server handshake remembers an identity it does not know (the SSL's app
 * data, a buffer in handshake()), so the refusal names it: without it,
 * TLS 1.3 only says "no suitable signature algorithm". */
static void psk_unknown(SSL *ssl, const unsigned char *id, size_t idlen)
{
    char *out = SSL_get_app_data(ssl);
    size_t n = 0;
    for (size_t i = 0; out && i < idlen && n < 63; i++)
        out[n++] = id[i] >= 0x20 && id[i] < 0x7f ? (char)id[i] : '?';
    if (out)
        out[n] = '\0';
}

static unsigned psk_server_cb(SSL *ssl, const char *identity, unsigned char *psk, unsigned max)
{
    struct r3_tls_ctx *c = ctx_of(ssl);
    for (size_t i = 0; c && i < c->npsk; i++)
        if (strcmp(c->psk[i].id, identity) == 0 && c->psk[i].keylen <= max) {
            memcpy(psk, c->psk[i].key, c->psk[i].keylen);
            return c->psk[i].keylen;
        }
    psk_unknown(ssl, (const unsigned char *)identity, strlen(identity));
    return 0;
}

/* TLS 1.3 PSK (GnuTLS clients such as libnbd use it): a session made from
 * the key, with a SHA-256 cipher as the PSK binder hash. */
static int psk_find_cb(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **sess)
{
    struct r3_tls_ctx *c = ctx_of(ssl);
    *sess = NULL;
    for (size_t i = 0; c && i < c->npsk; i++) {
        if (strlen(c->psk[i].id) != idlen || memcmp(c->psk[i].id, id, idlen) != 0)
            continue;
        static const unsigned char aes128gcm_sha256[2] = { 0x13, 0x01 };
        const SSL_CIPHER *ci = SSL_CIPHER_find(ssl, aes128gcm_sha256);
        SSL_SESSION *ns = ci ? SSL_SESSION_new() : NULL;
        if (!ns || !SSL_SESSION_set1_master_key(ns, c->psk[i].key, c->psk[i].keylen) ||
            !SSL_SESSION_set_cipher(ns, ci) || !SSL_SESSION_set_protocol_version(ns, TLS1_3_VERSION)) {
            SSL_SESSION_free(ns);
            return 0;
        }
        *sess = ns;
        return 1;
    }
    psk_unknown(ssl, id, idlen);
    return 1;                     /* unknown identity: no PSK, the handshake goes on without */
}

/* The client's TLS 1.3 PSK: the same session shape. */
static int psk_use_cb(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen,
                      SSL_SESSION **sess)
{
    struct r3_tls_ctx *c = ctx_of(ssl);
    *sess = NULL;
    for (size_t i = 0; c && i < c->npsk; i++) {
        if (c->psk_want && strcmp(c->psk_want, c->psk[i].id) != 0)
            continue;
        static const unsigned char aes128gcm_sha256[2] = { 0x13, 0x01 };
        const SSL_CIPHER *ci = SSL_CIPHER_find(ssl, aes128gcm_sha256);
        if (!ci || (md && md != SSL_CIPHER_get_handshake_digest(ci)))
            return 1;
        SSL_SESSION *ns = SSL_SESSION_new();
        if (!ns || !SSL_SESSION_set1_master_key(ns, c->psk[i].key, c->psk[i].keylen) ||
            !SSL_SESSION_set_cipher(ns, ci) || !SSL_SESSION_set_protocol_version(ns, TLS1_3_VERSION)) {
            SSL_SESSION_free(ns);
            return 0;
        }
        *id = (const unsigned char *)c->psk[i].id;
        *idlen = strlen(c->psk[i].id);
        *sess = ns;
        return 1;
    }
    return 1;
}

static unsigned psk_client_cb(SSL *ssl, const char *hint, char *identity, unsigned max_id,
                              unsigned char *psk, unsigned max)
{
    (void)hint;
    struct r3_tls_ctx *c = ctx_of(ssl);
    for (size_t i = 0; c && i < c->npsk; i++) {
        if (c->psk_want && strcmp(c->psk_want, c->psk[i].id) != 0)
            continue;
        if (strlen(c->psk[i].id) >= max_id || c->psk[i].keylen > max)
            return 0;
        strcpy(identity, c->psk[i].id);
        memcpy(psk, c->psk[i].key, c->psk[i].keylen);
        return c->psk[i].keylen;
    }
    return 0;
}

/* ---- contexts */

/* Explicit file, else dir/name if it exists, else NULL. */
static const char *pick(char *buf, size_t n, const char *explicit, const char *dir, const char *name)
{
    if (explicit)
        return explicit;
    if (!dir)
        return NULL;
    snprintf(buf, n, "%s/%s", dir, name);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

/* OpenSSL fills an X509's extension cache (key ids, purposes) the first time
 * a handshake looks at it, under the certificate's lock but read by other
 * handshakes without it. Fill it here, in the one thread that builds the
 * context, for every certificate the context shares between connections:
 * its own chain and its trusted CAs. */
static void warm_certs(SSL_CTX *ctx)
{
    X509 *own = SSL_CTX_get0_certificate(ctx);
    if (own)
        X509_check_purpose(own, -1, 0);
    STACK_OF(X509) *chain = NULL;
    if (SSL_CTX_get0_chain_certs(ctx, &chain) == 1 && chain)
        for (int i = 0; i < sk_X509_num(chain); i++)
            X509_check_purpose(sk_X509_value(chain, i), -1, 0);
    X509_STORE *st = SSL_CTX_get_cert_store(ctx);
    STACK_OF(X509_OBJECT) *objs = st ? X509_STORE_get0_objects(st) : NULL;
    for (int i = 0; objs && i < sk_X509_OBJECT_num(objs); i++) {
        X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        if (x)
            X509_check_purpose(x, -1, 0);
    }
}

/* OpenSSL frees its global locks from an atexit handler, while a detached
 * connection thread may still be ending (its thread-local OpenSSL state is
 * released under one of those locks). The process is ending anyway: leave
 * them. */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static void init_openssl(void)
{
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
    OPENSSL_init_ssl(0, NULL);
}

static int ctx_new(const struct r3_tls_opts *o, bool server, struct r3_tls_ctx **out)
{
    pthread_once(&init_once, init_openssl);
    const char *who = server ? "TLS server" : "TLS client";
    char eb[160], cb[4096], kb[4096], ab[4096];
    *out = NULL;
    ERR_clear_error();
    if (o->dir && access(o->dir, R_OK | X_OK) < 0)
        return r3_error(-errno, "%s: cannot read the certificate directory %s: %s", who, o->dir,
                        strerror(errno));
    const char *cert = pick(cb, sizeof cb, o->cert, o->dir, server ? "server-cert.pem" : "client-cert.pem");
    const char *key = pick(kb, sizeof kb, o->key, o->dir, server ? "server-key.pem" : "client-key.pem");
    const char *ca = pick(ab, sizeof ab, o->ca, o->dir, "ca-cert.pem");
    const char *files[] = { cert, key, ca }, *what[] = { "certificate", "key", "CA file" };
    for (int i = 0; i < 3; i++)
        if (files[i] && access(files[i], R_OK) < 0) {
            int e = errno;
            return r3_error(-e, "%s: cannot read %s %s: %s", who, what[i], files[i], strerror(e));
        }
    struct r3_tls_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return r3_error(-ENOMEM, "%s: out of memory", who);
    c->server = server;
    c->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    int rc = c->ctx ? 0 : r3_error(-ENOMEM, "%s: cannot create an OpenSSL context", who);
    if (rc < 0)
        goto out;
    SSL_CTX_set_app_data(c->ctx, c);
    if (!SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION)) {
        rc = r3_error(-EINVAL, "%s: cannot set TLS 1.2 as the minimum", who);
        goto out;
    }
    SSL_CTX_set_mode(c->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* A peer that closes without close_notify is an end of stream, not an
     * error: protocols above are framed, they detect truncation themselves. */
    SSL_CTX_set_options(c->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Bulk transfers: read several records per read(2). */
    SSL_CTX_set_read_ahead(c->ctx, 1);
    SSL_CTX_set_default_read_buffer_len(c->ctx, 256 * 1024);
    if (o->psk_file) {
        if ((rc = psk_load(c, o->psk_file, who)) < 0)
            goto out;
        if (o->psk_identity) {
            snprintf(c->psk_want_buf, sizeof c->psk_want_buf, "%s", o->psk_identity);
            c->psk_want = c->psk_want_buf;
            size_t i = 0;
            while (i < c->npsk && strcmp(c->psk[i].id, c->psk_want) != 0)
                i++;
            if (i == c->npsk) {
                rc = r3_error(-EINVAL, "%s: PSK file %s has no key for identity '%s'", who,
                              o->psk_file, o->psk_identity);
                goto out;
            }
        }
        if (server) {
            SSL_CTX_set_psk_server_callback(c->ctx, psk_server_cb);
            SSL_CTX_set_psk_find_session_callback(c->ctx, psk_find_cb);
            SSL_CTX_set_options(c->ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
        } else {
            SSL_CTX_set_psk_client_callback(c->ctx, psk_client_cb);
            SSL_CTX_set_psk_use_session_callback(c->ctx, psk_use_cb);
        }
        SSL_CTX_set_cipher_list(c->ctx, "PSK:DHEPSK:ECDHEPSK:HIGH:@SECLEVEL=0");
        /* External PSKs use SHA-256 binders (GnuTLS' default): a SHA-384
         * suite chosen first would make the server drop the PSK. */
        SSL_CTX_set_ciphersuites(c->ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
                                         "TLS_AES_256_GCM_SHA384");
    }
    if (!o->psk_file) {
        /* Bulk data: AES-128-GCM first (OpenSSL's default puts AES-256 first,
         * about 15% slower with AES-NI for no gain here). A client without
         * AES instructions puts ChaCha20 first, and the server honours that. */
        bool aes = true;
#if defined(__x86_64__) || defined(__i386__)
        aes = __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
#endif
        SSL_CTX_set_ciphersuites(c->ctx, aes ? "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                               "TLS_CHACHA20_POLY1305_SHA256"
                                             : "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:"
                                               "TLS_AES_256_GCM_SHA384");
        SSL_CTX_set_cipher_list(c->ctx, aes ? "ECDHE+AESGCM+AES128:ECDHE+AESGCM:ECDHE+CHACHA20:HIGH:!aNULL"
                                            : "ECDHE+CHACHA20:ECDHE+AESGCM+AES128:ECDHE+AESGCM:HIGH:!aNULL");
        if (server)
            SSL_CTX_set_options(c->ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
    }
    if (server && !c->npsk && !cert) {
        rc = r3_error(-EINVAL, "%s: needs a certificate and a key (or a PSK file)%s%s", who,
                      o->dir ? " in " : "", o->dir ? o->dir : "");
        goto out;
    }
    if ((cert != NULL) != (key != NULL) && (o->cert || o->key || server)) {
        rc = r3_error(-EINVAL, "%s: a certificate needs both a cert and a key file", who);
        goto out;
    }
    if (cert && key && (server || !c->npsk)) {
        if (SSL_CTX_use_certificate_chain_file(c->ctx, cert) != 1) {
            rc = r3_error(-EINVAL, "%s: cannot load certificate %s: %s", who, cert, ssl_reason(eb, sizeof eb));
            goto out;
        }
        if (SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM) != 1) {
            rc = r3_error(-EINVAL, "%s: cannot load private key %s: %s", who, key, ssl_reason(eb, sizeof eb));
            goto out;
        }
        if (SSL_CTX_check_private_key(c->ctx) != 1) {
            rc = r3_error(-EINVAL, "%s: key %s does not match certificate %s", who, key, cert);
            goto out;
        }
    }
    if (ca && SSL_CTX_load_verify_locations(c->ctx, ca, NULL) != 1) {
        rc = r3_error(-EINVAL, "%s: cannot load CA file %s: %s", who, ca, ssl_reason(eb, sizeof eb));
        goto out;
    }
    warm_certs(c->ctx);
    if (server) {
        /* An explicit CA means mTLS; a directory's CA only with verify_peer (as nbdkit). */
        bool want = o->ca || o->verify_peer;
        if (want && !ca) {
            rc = r3_error(-EINVAL, "%s: verifying client certificates needs a CA (ca-cert.pem)", who);
            goto out;
        }
        if (want) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
            if (names)
                SSL_CTX_set_client_CA_list(c->ctx, names);
            SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
            c->mtls = true;
        }
    } else if (c->npsk || o->insecure) {
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    } else {
        if (!ca && SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
            rc = r3_error(-EINVAL, "%s: cannot load the system CA store", who);
            goto out;
        }
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    }
out:
    if (rc < 0) {
        r3_tls_ctx_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int r3_tls_server_ctx(const struct r3_tls_opts *o, struct r3_tls_ctx **out)
{
    return ctx_new(o, true, out);
}

int r3_tls_client_ctx(const struct r3_tls_opts *o, struct r3_tls_ctx **out)
{
    return ctx_new(o, false, out);
}

void r3_tls_ctx_free(struct r3_tls_ctx *c)
{
    if (!c)
        return;
    SSL_CTX_free(c->ctx);
    free(c->psk);
    free(c);
}

bool r3_tls_ctx_mtls(const struct r3_tls_ctx *c)
{
    return c && c->mtls;
}

bool r3_tls_ctx_psk(const struct r3_tls_ctx *c)
{
    return c && c->npsk > 0;
}

/* ---- handshakes */

/* A failed handshake that is about TLS versions, not keys. */
static bool version_error(int e)
{
    int r = e == SSL_ERROR_SSL ? ERR_GET_REASON(ERR_peek_last_error()) : 0;
    return r == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION || r == SSL_R_UNSUPPORTED_PROTOCOL ||
           r == SSL_R_NO_PROTOCOLS_AVAILABLE;
}

/* One SSL_accept/SSL_connect step. Its writes go through write(2) too: a
 * peer that closed before or during the handshake must give an error, not
 * SIGPIPE (as r3_tls_io_write; errno is kept for the sentence). */
static int handshake_step(SSL *ssl, bool server)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    int r = server ? SSL_accept(ssl) : SSL_connect(ssl);
    int e = errno;
    if (r != 1 && e == EPIPE && !sigismember(&old, SIGPIPE)) {
        struct timespec zero = { 0, 0 };
        while (sigtimedwait(&pipe_set, NULL, &zero) > 0) {}
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return r;
}

static int handshake(struct r3_tls_ctx *c, struct r3_io *io, const char *host, int timeout_ms)
{
    char eb[160], unknown_id[64] = "";
    const char *who = c->server ? "TLS accept" : "TLS connect";
    if (io->ssl)
        return r3_error(-EINVAL, "%s: the connection is already TLS", who);
    ERR_clear_error();
    SSL *ssl = SSL_new(c->ctx);
    if (!ssl || SSL_set_fd(ssl, io->fd) != 1) {
        SSL_free(ssl);
        return r3_error(-ENOMEM, "%s: cannot create a TLS session", who);
    }
    if (c->server)
        SSL_set_app_data(ssl, unknown_id);
    if (!c->server && host && host[0]) {
        struct in6_addr a6;
        struct in_addr a4;
        bool ip = inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
        if (!ip)
            SSL_set_tlsext_host_name(ssl, host);
        if (SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE) {
            X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
            int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host) : SSL_set1_host(ssl, host);
            if (ok != 1) {
                SSL_free(ssl);
                return r3_error(-EINVAL, "%s: cannot check the name '%s'", who, host);
            }
        }
    }
    uint64_t deadline = r3_net_deadline(timeout_ms < 0 ? 3600000 : timeout_ms);
    if (io->rdeadline && io->rdeadline < deadline)
        deadline = io->rdeadline;
    for (;;) {
        int r = handshake_step(ssl, c->server);
        if (r == 1)
            break;
        int e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            struct r3_io tmp = *io;          /* plain wait: the session is not installed yet */
            tmp.ssl = NULL;
            int w = r3_io_wait(&tmp, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
            if (w == 0)
                continue;
            SSL_free(ssl);
            return r3_error(w, "%s: handshake %s", who, w == -ETIMEDOUT ? "timed out" : strerror(-w));
        }
        long vr = SSL_get_verify_result(ssl);
        int err = -ECONNRESET;
        if (vr != X509_V_OK) {
            ERR_clear_error();
            r3_error(-EACCES, "%s: certificate verify failed: %s", who, X509_verify_cert_error_string(vr));
            err = -EACCES;
        } else if (e == SSL_ERROR_SSL && unknown_id[0]) {
            ERR_clear_error();
            r3_error(-EACCES, "%s: unknown PSK identity '%s'", who, unknown_id);
            err = -EACCES;
        } else if (!c->server && c->npsk && !version_error(e)) {  /* a refusal says no more */
            int se = errno;
            const char *why = e == SSL_ERROR_SSL ? ssl_reason(eb, sizeof eb)
                            : se ? strerror(se) : "connection closed";
            ERR_clear_error();
            r3_error(-EACCES, "%s: the server refused PSK identity '%s' (unknown to it, or "
                     "another key): %s", who, c->psk_want ? c->psk_want : c->psk[0].id, why);
            err = -EACCES;
        } else if (e == SSL_ERROR_SSL) {
            r3_error(-EPROTO, "%s: %s", who, ssl_reason(eb, sizeof eb));
            err = -EPROTO;
        } else {
            int se = errno;
            ERR_clear_error();
            r3_error(err, "%s: connection closed during the handshake%s%s", who, se ? ": " : "",
                     se ? strerror(se) : "");
        }
        SSL_free(ssl);
        return err;
    }
    SSL_set_app_data(ssl, NULL);          /* unknown_id goes out of scope */
    io->ssl = ssl;
    return 0;
}

int r3_tls_connect(struct r3_tls_ctx *c, struct r3_io *io, const char *host, int timeout_ms)
{
    return handshake(c, io, host, timeout_ms);
}

int r3_tls_accept(struct r3_tls_ctx *c, struct r3_io *io, int timeout_ms)
{
    return handshake(c, io, NULL, timeout_ms);
}

int r3_tls_peer_cn(struct r3_io *io, char *buf, size_t n)
{
    if (!io->ssl)
        return -ENOENT;
    X509 *x = SSL_get1_peer_certificate(io->ssl);
    if (!x)
        return -ENOENT;
    int rc = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, (int)n);
    X509_free(x);
    return rc < 0 ? -ENOENT : 0;
}

/* ---- the TLS half of r3_io */

static ssize_t ssl_op(struct r3_io *io, void *rbuf, const void *wbuf, size_t len, short *want)
{
    size_t done = 0;
    char eb[160];
    pthread_mutex_lock(&io->mu);
    ERR_clear_error();
    int r = rbuf ? SSL_read_ex(io->ssl, rbuf, len, &done) : SSL_write_ex(io->ssl, wbuf, len, &done);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(io->ssl, r);
    ssize_t out;
    switch (e) {
    case SSL_ERROR_NONE: out = (ssize_t)done; break;
    case SSL_ERROR_WANT_READ: *want = POLLIN; out = -EAGAIN; break;
    case SSL_ERROR_WANT_WRITE: *want = POLLOUT; out = -EAGAIN; break;
    case SSL_ERROR_ZERO_RETURN: out = rbuf ? 0 : -EPIPE; break;
    case SSL_ERROR_SYSCALL:
        out = errno ? -errno : (rbuf ? 0 : -EPIPE);
        if (out < 0 && out != -EAGAIN && out != -EINTR)
            r3_error((int)out, "TLS: %s", strerror((int)-out));
        ERR_clear_error();
        break;
    default:
        out = r3_error(-EPROTO, "TLS: %s", ssl_reason(eb, sizeof eb));
        break;
    }
    pthread_mutex_unlock(&io->mu);
    return out;
}

ssize_t r3_tls_io_read(struct r3_io *io, void *buf, size_t len, short *want)
{
    return ssl_op(io, buf, NULL, len, want);
}

/* SSL writes go through write(2), which raises SIGPIPE on a dead peer: keep
 * it blocked in this thread and swallow a pending one, so the library never
 * changes the process's signal dispositions. */
ssize_t r3_tls_io_write(struct r3_io *io, const void *buf, size_t len, short *want)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t n = ssl_op(io, NULL, buf, len > INT_MAX ? INT_MAX : len, want);
    if (n == -EPIPE && !sigismember(&old, SIGPIPE)) {
        struct timespec zero = { 0, 0 };
        while (sigtimedwait(&pipe_set, NULL, &zero) > 0) {}
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return n;
}

bool r3_tls_io_pending(struct r3_io *io)
{
    pthread_mutex_lock(&io->mu);
    bool p = SSL_has_pending(io->ssl) == 1;
    pthread_mutex_unlock(&io->mu);
    return p;
}

void r3_tls_io_free(struct r3_io *io)
{
    if (io->ssl) {
        SSL_free(io->ssl);
        io->ssl = NULL;
    }
}
