/* A small reusable TLS layer over OpenSSL 3, and a connection type (struct
 * r3_io) that works the same on a plain socket or a TLS session. Used by the
 * r3 wire protocol (r3serve, r3://, r3s://), the NBD server (STARTTLS) and
 * the filesync hub (mTLS, the client certificate's CN is the sync id).
 *
 * Contexts:
 *   struct r3_tls_opts o = { .cert = "srv.pem", .key = "srv.key", .ca = "ca.pem" };
 *   r3_tls_server_ctx(&o, &ctx);   // .ca set: client certificates are REQUIRED and verified (mTLS)
 *   r3_tls_client_ctx(&o, &ctx);   // verifies the server against .ca (or the system store if NULL);
 *                                   // .cert/.key optional: presented to the server for mTLS
 * TLS 1.2 is the minimum for both.
 *
 * Connections:
 *   struct r3_io io;
 *   r3_io_init(&io, fd);                                // plain: fd is owned by io from now on
 *   r3_tls_connect(ctx, &io, "host", timeout_ms);      // upgrade to TLS (client): SNI + host check
 *   r3_tls_accept(ctx, &io, timeout_ms);               // upgrade to TLS (server)
 *   r3_io_read_all / r3_io_write_all / r3_io_writev_all / r3_io_read_some
 *   r3_io_close(&io);                                   // frees the session and closes fd
 *
 * Thread safety: one thread may read while another writes on the same r3_io
 * (a pipelined client's reader thread and its senders). Writers must
 * serialize among themselves (take your own lock around a whole frame), and
 * so must readers. For TLS this is made safe with a lock inside r3_io and a
 * non-blocking socket; for plain sockets the kernel already allows it.
 *
 * All functions return 0 (or a byte count) or -errno and set r3_last_error()
 * with a sentence; a clean end of stream on read_all is -EPIPE. SIGPIPE is
 * never raised by r3_io writes. */
#ifndef R3_WIRE_TLS_H
#define R3_WIRE_TLS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

struct r3_tls_ctx;

struct r3_tls_opts {
    const char *cert;      /* PEM certificate (chain) file: server always, client for mTLS */
    const char *key;       /* PEM private key for cert */
    const char *ca;        /* PEM CA file: server → require+verify client certs; client → verify server */
    bool insecure;         /* client only: do not verify the server (tests/debugging) */
};

/* 0 or -errno (-EINVAL for a bad/missing file, with a sentence naming it). */
int  r3_tls_server_ctx(const struct r3_tls_opts *o, struct r3_tls_ctx **out);
int  r3_tls_client_ctx(const struct r3_tls_opts *o, struct r3_tls_ctx **out);
void r3_tls_ctx_free(struct r3_tls_ctx *ctx);
/* True if a server ctx requires client certificates. */
bool r3_tls_ctx_mtls(const struct r3_tls_ctx *ctx);

struct r3_io {
    int fd;                /* -1 once closed */
    void *ssl;             /* SSL *, NULL for a plain connection */
    int rtimeout_ms;       /* -1 = wait forever (default); applies to each wait for data */
    int wtimeout_ms;       /* -1 = wait forever (default) */
    pthread_mutex_t mu;    /* serializes SSL_* calls between the reader and the writer */
};

/* Take ownership of a connected socket (set non-blocking, TCP_NODELAY if TCP). */
int  r3_io_init(struct r3_io *io, int fd);
/* TLS handshakes on an initialised r3_io. host: SNI and the name the server
 * certificate must match (an IP address is matched as an IP). On failure the
 * r3_io stays plain; the caller closes it. */
int  r3_tls_connect(struct r3_tls_ctx *ctx, struct r3_io *io, const char *host, int timeout_ms);
int  r3_tls_accept(struct r3_tls_ctx *ctx, struct r3_io *io, int timeout_ms);
bool r3_io_is_tls(const struct r3_io *io);
/* Subject CN of the peer's verified certificate into buf; -ENOENT if none. */
int  r3_tls_peer_cn(struct r3_io *io, char *buf, size_t n);

/* Up to len bytes (>0), 0 at end of stream, or -errno (-ETIMEDOUT). */
ssize_t r3_io_read_some(struct r3_io *io, void *buf, size_t len);
/* Exactly len bytes: 0, -EPIPE at a clean end of stream, or -errno. */
int  r3_io_read_all(struct r3_io *io, void *buf, size_t len);
int  r3_io_write_all(struct r3_io *io, const void *buf, size_t len);
int  r3_io_writev_all(struct r3_io *io, const struct iovec *iov, int n);
/* Wake a reader blocked in another thread (shutdown(2) of both directions). */
void r3_io_shutdown(struct r3_io *io);
/* Free the TLS session (no close_notify wait) and close fd. Idempotent. */
void r3_io_close(struct r3_io *io);

#endif
