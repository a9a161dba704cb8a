/* A connection for the NBD server and client: a socket that may be upgraded
 * to TLS (STARTTLS). Plain sockets stay blocking (the fast path: one
 * recv/sendmsg per batch). A TLS session is not safe for a concurrent
 * SSL_read and SSL_write, so in TLS mode the socket is non-blocking and every
 * SSL call runs under a lock; waits for data happen outside the lock. One
 * reader and one writer may use an nbd_io at the same time. */
#ifndef R3_NBD_IO_H
#define R3_NBD_IO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct nbd_io {
    int fd;
    void *ssl;                 /* SSL *, NULL when plain */
    pthread_mutex_t mu;        /* TLS only */
    uint64_t deadline_ns;      /* r3_now_ns() after which reads/writes fail; 0 = none */
    int wtimeout_ms;           /* each write call gives up after this; 0 = never */
};

struct nbd_tls_opts {
    const char *dir;           /* nbdkit/qemu layout: ca-cert.pem, server-cert.pem, server-key.pem
                                * (server) or ca-cert.pem [client-cert.pem client-key.pem] (client) */
    const char *cert, *key, *ca;   /* explicit files (override dir) */
    const char *psk_file;      /* "identity:hexkey" lines (nbdkit/qemu psk file format) */
    const char *psk_identity;  /* client: which identity to use (NULL = first line) */
    bool verify_peer;          /* server: require and verify client certificates against ca */
};

void nbd_io_init(struct nbd_io *io, int fd);
/* A whole deadline (a handshake): every read and write after it fails with
 * -ETIMEDOUT. 0 = none. Set while no other thread uses the connection. */
void nbd_io_set_deadline(struct nbd_io *io, uint64_t deadline_ns);
/* 0, -EPIPE at end of stream, -ETIMEDOUT past the deadline, or -errno. */
int  nbd_io_read(struct nbd_io *io, void *buf, size_t len);
/* Up to len bytes; 0 at end of stream; -errno. */
ssize_t nbd_io_read_some(struct nbd_io *io, void *buf, size_t len);
int  nbd_io_write(struct nbd_io *io, const void *buf, size_t len);
int  nbd_io_writev(struct nbd_io *io, struct iovec *iov, int n);
/* Discard len bytes of input without allocating them. */
int  nbd_io_skip(struct nbd_io *io, size_t len);
void nbd_io_shutdown(struct nbd_io *io);
void nbd_io_close(struct nbd_io *io);
bool nbd_io_is_tls(const struct nbd_io *io);

/* TLS contexts (SSL_CTX *). 0 or -errno with r3_error set. */
int  nbd_tls_server_ctx(const struct nbd_tls_opts *o, void **ctx);
int  nbd_tls_client_ctx(const struct nbd_tls_opts *o, void **ctx);
void nbd_tls_ctx_free(void *ctx);
/* Upgrade a plain connection; on failure the connection stays plain and the
 * caller closes it. */
int  nbd_tls_accept(void *ctx, struct nbd_io *io);
int  nbd_tls_connect(void *ctx, struct nbd_io *io, const char *host);

#endif
