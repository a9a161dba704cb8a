/* TLS contexts and r3_io: one connection type over a plain socket or an
 * OpenSSL session. Sockets are non-blocking and waits go through poll(), so
 * timeouts work the same for both and a TLS session can be read by one
 * thread while another writes (SSL calls are serialized by io->mu). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "internal.h"
#include "wire/tls.h"

struct r3_tls_ctx {
    SSL_CTX *ctx;
    bool server, mtls;
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

static int ctx_common(struct r3_tls_ctx *c, const struct r3_tls_opts *o, const char *who)
{
    char eb[160];
    const char *files[] = { o->cert, o->key, o->ca }, *what[] = { "certificate", "key", "CA file" };
    for (int i = 0; i < 3; i++)
        if (files[i] && access(files[i], R_OK) < 0) {
            int e = errno;
            return r3_error(-e, "%s: cannot read %s %s: %s", who, what[i], files[i], strerror(e));
        }
    if (!SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION))
        return r3_error(-EINVAL, "%s: cannot set TLS 1.2 as the minimum", who);
    SSL_CTX_set_mode(c->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* A peer that closes without close_notify is an end of stream, not an error:
     * frames are length-prefixed, so truncation is detected above this layer. */
    SSL_CTX_set_options(c->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Bulk transfers: read several records per read(2). */
    SSL_CTX_set_read_ahead(c->ctx, 1);
    SSL_CTX_set_default_read_buffer_len(c->ctx, 256 * 1024);
    if (o->cert || o->key) {
        if (!o->cert || !o->key)
            return r3_error(-EINVAL, "%s: a certificate needs both a cert and a key file", who);
        if (SSL_CTX_use_certificate_chain_file(c->ctx, o->cert) != 1)
            return r3_error(-EINVAL, "%s: cannot load certificate %s: %s", who, o->cert,
                            ssl_reason(eb, sizeof eb));
        if (SSL_CTX_use_PrivateKey_file(c->ctx, o->key, SSL_FILETYPE_PEM) != 1)
            return r3_error(-EINVAL, "%s: cannot load private key %s: %s", who, o->key,
                            ssl_reason(eb, sizeof eb));
        if (SSL_CTX_check_private_key(c->ctx) != 1)
            return r3_error(-EINVAL, "%s: key %s does not match certificate %s", who, o->key, o->cert);
    }
    if (o->ca && SSL_CTX_load_verify_locations(c->ctx, o->ca, NULL) != 1)
        return r3_error(-EINVAL, "%s: cannot load CA file %s: %s", who, o->ca, ssl_reason(eb, sizeof eb));
    return 0;
}

static int ctx_new(const struct r3_tls_opts *o, bool server, struct r3_tls_ctx **out)
{
    const char *who = server ? "TLS server" : "TLS client";
    *out = NULL;
    ERR_clear_error();
    struct r3_tls_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return r3_error(-ENOMEM, "%s: out of memory", who);
    c->server = server;
    c->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    int rc = c->ctx ? 0 : r3_error(-ENOMEM, "%s: cannot create an OpenSSL context", who);
    if (rc == 0)
        rc = ctx_common(c, o, who);
    if (rc == 0 && server) {
        if (!o->cert)
            rc = r3_error(-EINVAL, "TLS server: needs a certificate and a key");
        else if (o->ca) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca);
            if (names)
                SSL_CTX_set_client_CA_list(c->ctx, names);
            SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
            c->mtls = true;
        }
    } else if (rc == 0) {
        if (!o->insecure) {
            if (!o->ca && SSL_CTX_set_default_verify_paths(c->ctx) != 1)
                rc = r3_error(-EINVAL, "TLS client: cannot load the system CA store");
            SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
        } else {
            SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
        }
    }
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
    free(c);
}

bool r3_tls_ctx_mtls(const struct r3_tls_ctx *c)
{
    return c && c->mtls;
}

int r3_io_init(struct r3_io *io, int fd)
{
    io->fd = fd;
    io->ssl = NULL;
    io->rtimeout_ms = -1;
    io->wtimeout_ms = -1;
    pthread_mutex_init(&io->mu, NULL);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return r3_error(-errno, "socket: cannot make it non-blocking: %s", strerror(errno));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return 0;
}

bool r3_io_is_tls(const struct r3_io *io)
{
    return io->ssl != NULL;
}

/* Wait for events on fd; 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = events };
    for (;;) {
        int n = poll(&p, 1, timeout_ms);
        if (n > 0)
            return 0;
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

static int remaining_ms(uint64_t deadline)
{
    uint64_t now = r3_now_ns();
    return now >= deadline ? 0 : (int)((deadline - now) / 1000000u) + 1;
}

static int handshake(struct r3_tls_ctx *c, struct r3_io *io, const char *host, int timeout_ms)
{
    char eb[160];
    const char *who = c->server ? "TLS accept" : "TLS connect";
    ERR_clear_error();
    SSL *ssl = SSL_new(c->ctx);
    if (!ssl || SSL_set_fd(ssl, io->fd) != 1) {
        SSL_free(ssl);
        return r3_error(-ENOMEM, "%s: cannot create a TLS session", who);
    }
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
    uint64_t deadline = r3_now_ns() + (uint64_t)(timeout_ms < 0 ? 3600000 : timeout_ms) * 1000000u;
    for (;;) {
        int r = c->server ? SSL_accept(ssl) : SSL_connect(ssl);
        if (r == 1)
            break;
        int e = SSL_get_error(ssl, r), w;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            w = wait_fd(io->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, remaining_ms(deadline));
            if (w == 0)
                continue;
            SSL_free(ssl);
            return r3_error(w, "%s: handshake %s", who,
                            w == -ETIMEDOUT ? "timed out" : strerror(-w));
        }
        long vr = SSL_get_verify_result(ssl);
        int err = -ECONNRESET;
        if (vr != X509_V_OK) {
            ERR_clear_error();
            r3_error(-EACCES, "%s: certificate verify failed: %s", who,
                     X509_verify_cert_error_string(vr));
            err = -EACCES;
        } else if (e == SSL_ERROR_SSL) {
            r3_error(-EPROTO, "%s: %s", who, ssl_reason(eb, sizeof eb));
            err = -EPROTO;
        } else {
            int se = errno;
            ERR_clear_error();
            r3_error(err, "%s: connection closed during the handshake%s%s", who,
                     se ? ": " : "", se ? strerror(se) : "");
        }
        SSL_free(ssl);
        return err;
    }
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

/* One SSL_read/SSL_write under io->mu; *want says what to wait for. */
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
        if (out < 0)
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

ssize_t r3_io_read_some(struct r3_io *io, void *buf, size_t len)
{
    for (;;) {
        ssize_t n;
        short want = POLLIN;
        if (io->ssl) {
            n = ssl_op(io, buf, NULL, len, &want);
        } else {
            n = read(io->fd, buf, len);
            if (n < 0)
                n = -errno;
        }
        if (n >= 0)
            return n;
        if (n == -EINTR)
            continue;
        if (n != -EAGAIN && n != -EWOULDBLOCK)
            return n == -EPROTO ? n : r3_error((int)n, "read: %s", strerror((int)-n));
        int w = wait_fd(io->fd, want, io->rtimeout_ms);
        if (w < 0)
            return r3_error(w, "read: %s", w == -ETIMEDOUT ? "timed out" : strerror(-w));
    }
}

int r3_io_read_all(struct r3_io *io, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = r3_io_read_some(io, p, len);
        if (n == 0)
            return r3_error(-EPIPE, "read: the peer closed the connection");
        if (n < 0)
            return (int)n;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* SSL writes go through write(2), which raises SIGPIPE on a dead peer: keep
 * it blocked in this thread and swallow a pending one, so the library never
 * changes the process's signal dispositions. */
static ssize_t ssl_write_nosig(struct r3_io *io, const void *buf, size_t len, short *want)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t n = ssl_op(io, NULL, buf, len, want);
    if (n == -EPIPE && !sigismember(&old, SIGPIPE)) {
        struct timespec zero = { 0, 0 };
        while (sigtimedwait(&pipe_set, NULL, &zero) > 0) {}
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return n;
}

int r3_io_writev_all(struct r3_io *io, const struct iovec *iov_in, int cnt)
{
    struct iovec iov[16];
    if (cnt > 16)
        return r3_error(-EINVAL, "write: too many pieces");
    memcpy(iov, iov_in, (size_t)cnt * sizeof *iov);
    int i = 0;
    while (i < cnt) {
        if (iov[i].iov_len == 0) {
            i++;
            continue;
        }
        ssize_t n;
        short want = POLLOUT;
        if (io->ssl) {
            n = ssl_write_nosig(io, iov[i].iov_base, iov[i].iov_len, &want);
        } else {
            struct msghdr m = { .msg_iov = iov + i, .msg_iovlen = (size_t)(cnt - i) };
            n = sendmsg(io->fd, &m, MSG_NOSIGNAL);
            if (n < 0)
                n = -errno;
        }
        if (n == -EINTR)
            continue;
        if (n == -EAGAIN || n == -EWOULDBLOCK) {
            int w = wait_fd(io->fd, want, io->wtimeout_ms);
            if (w < 0)
                return r3_error(w, "write: %s", w == -ETIMEDOUT ? "timed out" : strerror(-w));
            continue;
        }
        if (n < 0)
            return n == -EPROTO ? (int)n : r3_error((int)n, "write: %s", strerror((int)-n));
        size_t left = (size_t)n;
        while (i < cnt && left >= iov[i].iov_len) {
            left -= iov[i].iov_len;
            i++;
        }
        if (left) {
            iov[i].iov_base = (char *)iov[i].iov_base + left;
            iov[i].iov_len -= left;
        }
    }
    return 0;
}

int r3_io_write_all(struct r3_io *io, const void *buf, size_t len)
{
    struct iovec v = { (void *)buf, len };
    return r3_io_writev_all(io, &v, 1);
}

void r3_io_shutdown(struct r3_io *io)
{
    if (io->fd >= 0)
        shutdown(io->fd, SHUT_RDWR);
}

void r3_io_close(struct r3_io *io)
{
    if (io->ssl) {
        SSL_free(io->ssl);
        io->ssl = NULL;
    }
    if (io->fd >= 0) {
        close(io->fd);
        io->fd = -1;
        pthread_mutex_destroy(&io->mu);
    }
}
