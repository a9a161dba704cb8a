/* nbd_io: blocking plain sockets, or TLS sessions driven under a lock on a
 * non-blocking socket (see io.h for why). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include "internal.h"
#include "nbd/io.h"

void nbd_io_init(struct nbd_io *io, int fd)
{
    io->fd = fd;
    io->ssl = NULL;
    io->deadline_ns = 0;
    io->wtimeout_ms = 0;
    pthread_mutex_init(&io->mu, NULL);
}

void nbd_io_set_deadline(struct nbd_io *io, uint64_t deadline_ns)
{
    io->deadline_ns = deadline_ns;
}

/* The deadline of one call: the whole one, or now + the write timeout. */
static uint64_t call_deadline(const struct nbd_io *io, bool wr)
{
    uint64_t d = io->deadline_ns;
    if (wr && io->wtimeout_ms > 0) {
        uint64_t w = r3_now_ns() + (uint64_t)io->wtimeout_ms * 1000000u;
        if (!d || w < d)
            d = w;
    }
    return d;
}

/* Wait until fd is ready for ev or the deadline passes (-ETIMEDOUT). */
static int wait_until(int fd, short ev, uint64_t deadline)
{
    for (;;) {
        uint64_t now = r3_now_ns();
        if (now >= deadline)
            return -ETIMEDOUT;
        uint64_t ms = (deadline - now + 999999) / 1000000;
        struct pollfd p = { .fd = fd, .events = ev };
        int n = poll(&p, 1, ms > 1000 ? 1000 : (int)ms);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

bool nbd_io_is_tls(const struct nbd_io *io)
{
    return io->ssl != NULL;
}

static void wait_fd(int fd, short ev)
{
    struct pollfd p = { .fd = fd, .events = ev };
    /* The timeout is a safety net: the other side of the session may have
     * pulled our bytes into OpenSSL's buffer between our unlock and poll. */
    poll(&p, 1, 50);
}

/* One SSL_read/SSL_write step under the lock; returns bytes, 0 = EOF, -errno,
 * or -EAGAIN after waiting for the socket. */
static ssize_t tls_step(struct nbd_io *io, void *buf, size_t len, bool wr)
{
    SSL *ssl = io->ssl;
    int n = len > INT_MAX ? INT_MAX : (int)len;
    pthread_mutex_lock(&io->mu);
    ERR_clear_error();
    int r = wr ? SSL_write(ssl, buf, n) : SSL_read(ssl, buf, n);
    int err = r > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl, r);
    pthread_mutex_unlock(&io->mu);
    switch (err) {
    case SSL_ERROR_NONE: return r;
    case SSL_ERROR_ZERO_RETURN: return 0;
    case SSL_ERROR_WANT_READ: wait_fd(io->fd, POLLIN); return -EAGAIN;
    case SSL_ERROR_WANT_WRITE: wait_fd(io->fd, POLLOUT); return -EAGAIN;
    case SSL_ERROR_SYSCALL: return errno ? -errno : (wr ? -EPIPE : 0);
    default: return -EPROTO;
    }
}

/* One recv: blocking, or bounded by the deadline. */
static ssize_t plain_recv(struct nbd_io *io, void *buf, size_t len, uint64_t deadline, bool all)
{
    if (deadline) {
        int rc = wait_until(io->fd, POLLIN, deadline);
        if (rc < 0)
            return rc;
    }
    ssize_t n = recv(io->fd, buf, len, deadline ? MSG_DONTWAIT : all ? MSG_WAITALL : 0);
    return n < 0 ? -errno : n;
}

ssize_t nbd_io_read_some(struct nbd_io *io, void *buf, size_t len)
{
    uint64_t deadline = io->deadline_ns;
    for (;;) {
        ssize_t n;
        if (deadline && r3_now_ns() >= deadline)
            return -ETIMEDOUT;
        if (io->ssl)
            n = tls_step(io, buf, len, false);
        else
            n = plain_recv(io, buf, len, deadline, false);
        if (n == -EINTR || (n == -EAGAIN && (io->ssl || deadline)))
            continue;
        return n == -EAGAIN ? -ETIMEDOUT : n;
    }
}

int nbd_io_read(struct nbd_io *io, void *buf, size_t len)
{
    char *p = buf;
    uint64_t deadline = io->deadline_ns;
    while (len) {
        ssize_t n;
        if (deadline && r3_now_ns() >= deadline)
            return -ETIMEDOUT;
        if (io->ssl)
            n = tls_step(io, p, len, false);
        else
            n = plain_recv(io, p, len, deadline, true);
        if (n == -EINTR || (n == -EAGAIN && (io->ssl || deadline)))
            continue;
        if (n == 0)
            return -EPIPE;
        if (n < 0)
            return n == -EAGAIN ? -ETIMEDOUT : (int)n;   /* SO_RCVTIMEO */
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int nbd_io_skip(struct nbd_io *io, size_t len)
{
    char tmp[4096];
    while (len) {
        size_t n = len < sizeof tmp ? len : sizeof tmp;
        int rc = nbd_io_read(io, tmp, n);
        if (rc < 0)
            return rc;
        len -= n;
    }
    return 0;
}

int nbd_io_writev(struct nbd_io *io, struct iovec *iov, int n)
{
    uint64_t deadline = call_deadline(io, true);
    while (n > 0) {
        ssize_t w;
        if (deadline && r3_now_ns() >= deadline)
            return -ETIMEDOUT;
        if (io->ssl) {
            if (iov->iov_len == 0) {
                iov++, n--;
                continue;
            }
            w = tls_step(io, iov->iov_base, iov->iov_len, true);
        } else {
            struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)(n > IOV_MAX ? IOV_MAX : n) };
            w = sendmsg(io->fd, &m, MSG_NOSIGNAL | (deadline ? MSG_DONTWAIT : 0));
            if (w < 0)
                w = -errno;
            if (w == -EAGAIN && deadline && (w = wait_until(io->fd, POLLOUT, deadline)) == 0)
                continue;
        }
        if (w == -EINTR || w == -EAGAIN)
            continue;
        if (w <= 0)
            return w == 0 ? -EPIPE : (int)w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++, n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

int nbd_io_write(struct nbd_io *io, const void *buf, size_t len)
{
    struct iovec v = { (void *)buf, len };
    return nbd_io_writev(io, &v, 1);
}

void nbd_io_shutdown(struct nbd_io *io)
{
    if (io->fd >= 0)
        shutdown(io->fd, SHUT_RDWR);
}

void nbd_io_close(struct nbd_io *io)
{
    if (io->ssl) {
        SSL_free(io->ssl);
        io->ssl = NULL;
    }
    if (io->fd >= 0)
        close(io->fd);
    io->fd = -1;
    pthread_mutex_destroy(&io->mu);
}

/* ---- TLS contexts */

struct psk_entry { char id[128]; unsigned char key[64]; unsigned keylen; };
struct psk_store { size_t n; const char *want; struct psk_entry e[32]; };

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int psk_load(const char *path, struct psk_store **out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return r3_error(-errno, "nbd: cannot open PSK file %s: %s", path, strerror(errno));
    struct psk_store *s = calloc(1, sizeof *s);
    char line[512];
    while (s && fgets(line, sizeof line, f) && s->n < 32) {
        line[strcspn(line, "\r\n")] = 0;
        char *colon = strchr(line, ':');
        if (!colon || colon == line || (size_t)(colon - line) >= sizeof s->e[0].id)
            continue;
        struct psk_entry *e = &s->e[s->n];
        memcpy(e->id, line, (size_t)(colon - line));
        const char *h = colon + 1;
        size_t hl = strlen(h);
        if (hl % 2 || hl / 2 > sizeof e->key || hl == 0)
            continue;
        bool ok = true;
        for (size_t i = 0; i < hl / 2; i++) {
            int a = hexval(h[2 * i]), b = hexval(h[2 * i + 1]);
            if (a < 0 || b < 0) { ok = false; break; }
            e->key[i] = (unsigned char)(a << 4 | b);
        }
        if (!ok)
            continue;
        e->keylen = (unsigned)(hl / 2);
        s->n++;
    }
    fclose(f);
    if (!s)
        return r3_error(-ENOMEM, "nbd: out of memory");
    if (s->n == 0) {
        free(s);
        return r3_error(-EINVAL, "nbd: PSK file %s has no 'identity:hexkey' line", path);
    }
    *out = s;
    return 0;
}

static unsigned psk_server_cb(SSL *ssl, const char *identity, unsigned char *psk, unsigned max)
{
    struct psk_store *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    for (size_t i = 0; s && i < s->n; i++)
        if (strcmp(s->e[i].id, identity) == 0 && s->e[i].keylen <= max) {
            memcpy(psk, s->e[i].key, s->e[i].keylen);
            return s->e[i].keylen;
        }
    return 0;
}

/* TLS 1.3 PSK (GnuTLS clients such as libnbd use it): a session made from
 * the key, with a SHA-256 cipher as the PSK binder hash. */
static int psk_find_cb(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **sess)
{
    struct psk_store *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    *sess = NULL;
    for (size_t i = 0; s && i < s->n; i++) {
        if (strlen(s->e[i].id) != idlen || memcmp(s->e[i].id, id, idlen) != 0)
            continue;
        static const unsigned char aes128gcm_sha256[2] = { 0x13, 0x01 };
        const SSL_CIPHER *c = SSL_CIPHER_find(ssl, aes128gcm_sha256);
        SSL_SESSION *ns = c ? SSL_SESSION_new() : NULL;
        if (!ns || !SSL_SESSION_set1_master_key(ns, s->e[i].key, s->e[i].keylen) ||
            !SSL_SESSION_set_cipher(ns, c) || !SSL_SESSION_set_protocol_version(ns, TLS1_3_VERSION)) {
            SSL_SESSION_free(ns);
            return 0;
        }
        *sess = ns;
        return 1;
    }
    return 1;                     /* unknown identity: no PSK, the handshake goes on without */
}

static unsigned psk_client_cb(SSL *ssl, const char *hint, char *identity, unsigned max_id,
                              unsigned char *psk, unsigned max)
{
    struct psk_store *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    for (size_t i = 0; s && i < s->n; i++) {
        if (s->want && strcmp(s->want, s->e[i].id) != 0)
            continue;
        if (strlen(s->e[i].id) >= max_id || s->e[i].keylen > max)
            return 0;
        strcpy(identity, s->e[i].id);
        memcpy(psk, s->e[i].key, s->e[i].keylen);
        return s->e[i].keylen;
    }
    return 0;
}

static int tls_fail(int err, const char *what)
{
    unsigned long e = ERR_get_error();
    char msg[256] = "";
    if (e)
        ERR_error_string_n(e, msg, sizeof msg);
    ERR_clear_error();
    return r3_error(err, "nbd: TLS: %s%s%s", what, msg[0] ? ": " : "", msg);
}

static const char *pick(char *buf, size_t n, const char *explicit, const char *dir, const char *name)
{
    if (explicit)
        return explicit;
    if (!dir)
        return NULL;
    snprintf(buf, n, "%s/%s", dir, name);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

static int ctx_new(const struct nbd_tls_opts *o, bool server, void **out)
{
    char cb[4096], kb[4096], ab[4096];
    const char *cert = pick(cb, sizeof cb, o->cert, o->dir, server ? "server-cert.pem" : "client-cert.pem");
    const char *key = pick(kb, sizeof kb, o->key, o->dir, server ? "server-key.pem" : "client-key.pem");
    const char *ca = pick(ab, sizeof ab, o->ca, o->dir, "ca-cert.pem");
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx)
        return tls_fail(-ENOMEM, "cannot create a context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int rc = 0;
    struct psk_store *psk = NULL;
    if (o->psk_file) {
        rc = psk_load(o->psk_file, &psk);
        if (rc < 0)
            goto fail;
        psk->want = o->psk_identity;
        SSL_CTX_set_app_data(ctx, psk);
        if (server) {
            SSL_CTX_set_psk_server_callback(ctx, psk_server_cb);
            SSL_CTX_set_psk_find_session_callback(ctx, psk_find_cb);
        }
        else
            SSL_CTX_set_psk_client_callback(ctx, psk_client_cb);
        SSL_CTX_set_cipher_list(ctx, "PSK:DHEPSK:ECDHEPSK:HIGH:@SECLEVEL=0");
        /* External PSKs use SHA-256 binders (GnuTLS' default): a SHA-384
         * suite chosen first would make the server drop the PSK. */
        SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
                                      "TLS_AES_256_GCM_SHA384");
        if (server)
            SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    }
    if (server && !psk && (!cert || !key)) {
        rc = r3_error(-EINVAL, "nbd: TLS needs a certificate and key (or a PSK file)%s%s",
                      o->dir ? " in " : "", o->dir ? o->dir : "");
        goto fail;
    }
    if (cert && key && (!psk || server)) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
            rc = tls_fail(-EINVAL, cert);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
            rc = tls_fail(-EINVAL, key);
            goto fail;
        }
    }
    if (!psk && ca) {
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
            rc = tls_fail(-EINVAL, ca);
            goto fail;
        }
    }
    if (!server && !psk)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (server && o->verify_peer && ca)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    *out = ctx;
    return 0;
fail:
    free(psk);
    SSL_CTX_free(ctx);
    return rc;
}

int nbd_tls_server_ctx(const struct nbd_tls_opts *o, void **ctx) { return ctx_new(o, true, ctx); }
int nbd_tls_client_ctx(const struct nbd_tls_opts *o, void **ctx) { return ctx_new(o, false, ctx); }

void nbd_tls_ctx_free(void *ctx)
{
    if (!ctx)
        return;
    free(SSL_CTX_get_app_data((SSL_CTX *)ctx));
    SSL_CTX_free(ctx);
}

static int handshake(void *ctx, struct nbd_io *io, bool server, const char *host)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return tls_fail(-ENOMEM, "cannot create a session");
    SSL_set_fd(ssl, io->fd);
    if (!server && host) {
        SSL_set_tlsext_host_name(ssl, host);
        SSL_set1_host(ssl, host);
    }
    int fl = fcntl(io->fd, F_GETFL);
    fcntl(io->fd, F_SETFL, fl | O_NONBLOCK);
    uint64_t deadline = io->deadline_ns ? io->deadline_ns : r3_now_ns() + UINT64_C(30000000000);
    for (;;) {
        ERR_clear_error();
        int r = server ? SSL_accept(ssl) : SSL_connect(ssl);
        if (r == 1)
            break;
        int e = SSL_get_error(ssl, r);
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && r3_now_ns() < deadline) {
            struct pollfd p = { .fd = io->fd, .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT };
            poll(&p, 1, 1000);
            continue;
        }
        int rc = tls_fail(-ECONNABORTED, server ? "handshake with the client failed"
                                                : "handshake with the server failed");
        SSL_free(ssl);
        fcntl(io->fd, F_SETFL, fl);
        return rc;
    }
    io->ssl = ssl;
    return 0;
}

int nbd_tls_accept(void *ctx, struct nbd_io *io) { return handshake(ctx, io, true, NULL); }
int nbd_tls_connect(void *ctx, struct nbd_io *io, const char *host) { return handshake(ctx, io, false, host); }
