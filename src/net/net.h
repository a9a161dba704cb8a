/* SPDX-License-Identifier: BSD-3-Clause */
/* src/net: the one network layer of r3 (internal; not installed).
 *
 * Shaped like redis's anet.c + connection.h: one address type, one
 * listen/accept loop, one connection type with a plain and a TLS
 * implementation. Every server (r3serve, the NBD server, the filesync hub)
 * and every client (r3://, nbd://, the filesync advertiser) uses it.
 *
 *   addr.c    r3_net_addr: HOST:PORT, [V6]:PORT, unix:PATH; resolve; loopback test; format
 *   conn.c    struct r3_io: a socket, plain or TLS, with per-wait timeouts and absolute deadlines
 *   tls.c     TLS contexts (certificates, the nbdkit/qemu directory layout, mTLS, PSK) and
 *             the handshakes (at accept, or a STARTTLS upgrade of a plain r3_io)
 *   dial.c    connect with a timeout; reconnect backoff with jitter
 *   server.c  listen + accept: connection cap, handshake deadline, epoll for idle connections,
 *             per-connection send queue, global in-flight byte budget, one log line per connection
 *
 * Every function returns 0 (or a count) or -errno, and sets r3_last_error()
 * to a sentence. The layer never prints: servers log through a callback.
 *
 * From nbd/io.h: nbd_io -> r3_io (r3_io_init), nbd_io_read -> r3_io_read_all,
 * nbd_io_read_some -> r3_io_read_some, nbd_io_write(v) -> r3_io_write(v)_all,
 * nbd_io_skip -> r3_io_skip, nbd_tls_opts -> r3_tls_opts (dir, psk_file,
 * psk_identity, verify_peer), nbd_tls_server/client_ctx -> r3_tls_server/client_ctx,
 * nbd_tls_accept/connect -> r3_tls_accept/connect (STARTTLS: same call on the
 * plain r3_io, with a timeout). SO_RCVTIMEO -> io->rtimeout_ms / io->rdeadline.
 */
#ifndef R3_NET_NET_H
#define R3_NET_NET_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

struct addrinfo;

/* ------------------------------------------------------------------ addresses (addr.c) */

enum r3_net_kind { R3_NET_TCP = 1, R3_NET_UNIX = 2 };

struct r3_net_addr {
    enum r3_net_kind kind;
    char host[256];            /* TCP: a name or a literal, without the [] of IPv6 */
    int port;                  /* TCP: 1..65535 (0 only when parsed with R3_NET_PASSIVE) */
    char path[108];            /* UNIX: the socket path */
};

#define R3_NET_PASSIVE 1u      /* the address is for listening: port 0 = pick a free one */

/* Parse HOST:PORT, [V6]:PORT or unix:PATH. default_port > 0 allows a bare
 * HOST (NBD's 10809); 0 requires a port. -EINVAL with a sentence naming the
 * bad part ("port 99999 is out of range (1 to 65535)"). */
int  r3_net_addr_parse(const char *spec, int default_port, unsigned flags, struct r3_net_addr *a);
/* getaddrinfo for a TCP address (passive: for bind). Free with freeaddrinfo. */
int  r3_net_addr_resolve(const struct r3_net_addr *a, bool passive, struct addrinfo **out);
/* True for unix sockets and for TCP addresses all of whose resolutions are
 * loopback (127.0.0.0/8, ::1, ::ffff:127.x). A wildcard or unresolvable host is not. */
bool r3_net_addr_is_loopback(const struct r3_net_addr *a);
/* "127.0.0.1:7000", "[::1]:7000", "unix:/run/r3.sock" (for logs and sentences). */
const char *r3_net_addr_format(const struct r3_net_addr *a, char *buf, size_t n);
/* A socket address the same way ("unix" for an unnamed unix peer). */
const char *r3_net_sockaddr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t n);
/* The peer of a connected socket, formatted. */
const char *r3_net_peer_name(int fd, char *buf, size_t n);

/* ------------------------------------------------------------------ time */

/* An absolute deadline timeout_ms from now (CLOCK_MONOTONIC ns); 0 (= none) when timeout_ms < 0. */
uint64_t r3_net_deadline(int timeout_ms);
/* Milliseconds left before deadline (0 if passed); -1 if deadline is 0 (none). */
int  r3_net_remaining_ms(uint64_t deadline);

/* ------------------------------------------------------------------ TLS contexts (tls.c) */

struct r3_tls_ctx;

struct r3_tls_opts {
    const char *cert;          /* PEM certificate (chain): the server's; a client's for mTLS */
    const char *key;           /* PEM private key for cert */
    const char *ca;            /* PEM CA. Server: clients must present a certificate it signed (mTLS).
                                * Client: verifies the server (default: the system store) */
    const char *dir;           /* nbdkit/qemu layout, used for what cert/key/ca leave unset:
                                * ca-cert.pem, server-cert.pem + server-key.pem (server),
                                * client-cert.pem + client-key.pem (client, optional). A server
                                * verifies clients against dir's CA only with verify_peer */
    const char *psk_file;      /* "identity:hexkey" lines (the nbdkit/qemu PSK file) */
    const char *psk_identity;  /* client: the identity to use (NULL: the file's first line) */
    bool verify_peer;          /* server: require client certificates */
    bool insecure;             /* client: do not verify the server (tests, debugging) */
};

/* 0 or -errno (-EINVAL for a bad or missing file, with a sentence naming it). TLS 1.2 minimum. */
int  r3_tls_server_ctx(const struct r3_tls_opts *o, struct r3_tls_ctx **out);
int  r3_tls_client_ctx(const struct r3_tls_opts *o, struct r3_tls_ctx **out);
void r3_tls_ctx_free(struct r3_tls_ctx *ctx);
/* True if a server ctx requires client certificates. */
bool r3_tls_ctx_mtls(const struct r3_tls_ctx *ctx);
/* True if the ctx uses pre-shared keys. */
bool r3_tls_ctx_psk(const struct r3_tls_ctx *ctx);

/* ------------------------------------------------------------------ connections (conn.c, tls.c) */

/* A connected socket, plain or TLS. The socket is non-blocking; waits go
 * through poll(), so timeouts and deadlines work the same for both. One
 * thread may read while another writes (a TLS session's SSL calls are
 * serialized by mu; waits happen outside it). Writers serialize among
 * themselves (a lock around a whole frame), and so do readers. Writes never
 * raise SIGPIPE. */
struct r3_io {
    int fd;                    /* -1 once closed */
    void *ssl;                 /* SSL *, NULL while plain */
    int rtimeout_ms;           /* each wait for input: -1 = no limit (default) */
    int wtimeout_ms;           /* each wait for output space: -1 = no limit (default) */
    uint64_t rdeadline;        /* absolute (r3_net_deadline), 0 = none: the whole read fails after it */
    uint64_t wdeadline;        /* same for writes */
    uint64_t nread, nwritten;  /* payload bytes moved (for logs) */
    pthread_mutex_t mu;
};

/* Take ownership of a connected socket (made non-blocking; TCP_NODELAY on TCP). */
int  r3_io_init(struct r3_io *io, int fd);
/* Set both deadlines to timeout_ms from now (-1: none). */
void r3_io_set_timeout(struct r3_io *io, int timeout_ms);
/* TLS handshake on an initialised r3_io: at connect/accept, or later as a
 * STARTTLS upgrade of a plain connection (no unread input may be buffered
 * above this layer). host: SNI and the name the server certificate must
 * match (an IP literal is matched as an IP). timeout_ms bounds the whole
 * handshake (and io->rdeadline, when earlier). On failure the r3_io stays
 * plain; the caller closes it. -EACCES: certificate refused; -EPROTO: not
 * TLS or a TLS error; -ETIMEDOUT; -ECONNRESET. */
int  r3_tls_connect(struct r3_tls_ctx *ctx, struct r3_io *io, const char *host, int timeout_ms);
int  r3_tls_accept(struct r3_tls_ctx *ctx, struct r3_io *io, int timeout_ms);
bool r3_io_is_tls(const struct r3_io *io);
/* Subject CN of the peer's verified certificate into buf; -ENOENT if none. */
int  r3_tls_peer_cn(struct r3_io *io, char *buf, size_t n);

/* Up to len bytes (> 0), 0 at the end of stream, or -errno (-ETIMEDOUT). */
ssize_t r3_io_read_some(struct r3_io *io, void *buf, size_t len);
/* Exactly len bytes: 0, -EPIPE at a clean end of stream, or -errno. */
int  r3_io_read_all(struct r3_io *io, void *buf, size_t len);
/* Read and discard len bytes without allocating them. */
int  r3_io_skip(struct r3_io *io, uint64_t len);
int  r3_io_write_all(struct r3_io *io, const void *buf, size_t len);
int  r3_io_writev_all(struct r3_io *io, const struct iovec *iov, int n);   /* any n (IOV_MAX per call) */
/* Non-blocking write of as much of iov as the socket takes now: bytes
 * written (maybe 0), or -errno. Used by send queues. */
ssize_t r3_io_writev_some(struct r3_io *io, const struct iovec *iov, int n);
/* Input is buffered (in TLS) or readable now (or the peer closed): a read will not wait. */
bool r3_io_input_ready(struct r3_io *io);
/* Wake a reader blocked in another thread (shutdown(2) of both directions). */
void r3_io_shutdown(struct r3_io *io);
/* Free the TLS session (no close_notify wait) and close fd. Idempotent. */
void r3_io_close(struct r3_io *io);

/* ------------------------------------------------------------------ clients (dial.c) */

/* Connect to a (each resolved address in turn) within timeout_ms in total.
 * *fd is a connected blocking socket (give it to r3_io_init). -ECONNREFUSED,
 * -ETIMEDOUT ("connect to HOST:PORT timed out after N ms"), -EHOSTUNREACH. */
int  r3_net_dial(const struct r3_net_addr *a, int timeout_ms, int *fd);

/* Reconnect backoff: exponential with jitter, capped, with a total after
 * which the caller gives up. Every reconnecting client uses it:
 *   struct r3_net_backoff b; r3_net_backoff_init(&b, 50, 5000, 60000);
 *   for (;;) { if (try() == 0) { r3_net_backoff_reset(&b); ... }
 *              int ms = r3_net_backoff_next(&b); if (ms < 0) give up; sleep(ms); } */
struct r3_net_backoff {
    unsigned base_ms, cap_ms;
    uint64_t give_up_ms;       /* 0 = never */
    uint64_t start;            /* first failure since the last reset (ns), 0 = none */
    unsigned attempt;
    uint64_t rng;
};
void r3_net_backoff_init(struct r3_net_backoff *b, unsigned base_ms, unsigned cap_ms, uint64_t give_up_ms);
/* Delay before the next attempt: in [d/2, d] for d = min(cap, base * 2^attempt);
 * -ETIMEDOUT (with a sentence) once give_up_ms have passed since the first
 * failure (the returned delay never runs past that total). */
int  r3_net_backoff_next(struct r3_net_backoff *b);
/* A success: the next failure starts from base again. */
void r3_net_backoff_reset(struct r3_net_backoff *b);

/* ------------------------------------------------------------------ servers (server.c) */

struct r3_net_server;
struct r3_net_conn;

/* What a protocol plugs in. Callbacks run on the server's pool threads;
 * at most one of handshake/on_readable runs for a connection at a time. */
struct r3_net_handler {
    /* After accept (and after the TLS handshake when the server has implicit
     * TLS): the protocol's hello. c->io's read/write deadlines are the
     * whole-handshake deadline (accept + handshake_ms). 0: serve; -errno: close
     * (put the reason in c->why). Called only once input has arrived. */
    int  (*handshake)(struct r3_net_conn *c);
    /* Input is ready: read (and dispatch) at least one request; the call
     * may block on the rest of a request (io->rtimeout_ms is read_timeout_ms).
     * 0: keep the connection (it goes back to the idle set when no input is
     * buffered: no thread waits for an idle connection); -errno: close. */
    int  (*on_readable)(struct r3_net_conn *c);
    /* The connection is gone (no callback runs anymore, every hold is
     * released, queued output sent or dropped): free the protocol state.
     * Return true if the protocol logged the connection itself (no line is logged). */
    bool (*on_close)(struct r3_net_conn *c);
    /* Over the connection cap (or shutting down): write a one-line refusal
     * the protocol's clients understand on the plain socket, without
     * blocking (NULL: just close). Not called for TLS servers. */
    void (*refuse)(void *arg, int fd, const char *why);
    void *arg;
};

struct r3_net_server_opts {
    const char *name;              /* "r3serve" or "nbd": prefixes log lines and sentences */
    struct r3_net_addr listen;
    struct r3_tls_ctx *tls;        /* server TLS context or NULL */
    bool starttls;                 /* tls is negotiated by the protocol (NBD STARTTLS), not at accept */
    bool insecure;                 /* allow a non-loopback listen without TLS */
    unsigned max_connections;      /* 0 = 1024 */
    int handshake_ms;              /* whole handshake (TLS + hello), from accept; 0 = 10000 */
    int read_timeout_ms;           /* each wait for the rest of a started request; 0 = 30000 */
    int send_timeout_ms;           /* queued output making no progress this long closes it; 0 = 30000 */
    size_t max_inflight;           /* global budget of request/reply bytes; 0 = 256 MiB */
    size_t conn_inflight;          /* one connection's share of it; 0 = max(max_inflight / 4, 64 MiB),
                                    * at most max_inflight */
    unsigned max_threads;          /* pool threads (created on demand, exiting after 5 s idle);
                                    * 0 = max_connections: a connection waiting (for budget, for
                                    * the rest of a request) holds one, an idle one none */
    struct r3_net_handler h;
    /* Sent on every accepted connection before anything else, for protocols
     * where the server speaks first (the NBD greeting). Plain: not with
     * implicit TLS (starttls or no tls only). NULL: none. */
    const void *greeting;
    size_t greeting_len;
    /* One line per connection when it ends (peer, TLS/CN, duration, bytes,
     * why), one per refusal. Called from server threads. NULL: silent. */
    void (*log)(void *arg, const char *line);
    void *log_arg;
};

/* What a protocol sees of a connection. Fields are read-only for it except
 * data and why. */
struct r3_net_conn {
    struct r3_net_server *srv;
    struct r3_io io;
    void *data;                    /* the protocol's per-connection state */
    char peer[96];                 /* "127.0.0.1:51234", "unix" */
    char cn[64];                   /* verified client certificate CN ("" if none) */
    uint64_t t_accept;             /* r3_now_ns() at accept */
    char why[256];                 /* why it ended (set by the protocol or the server) */
};

/* Listen (refusing a non-loopback address without TLS unless insecure, with
 * a sentence saying why) and start the accept loop. 0 or -errno. */
int  r3_net_server_start(const struct r3_net_server_opts *o, struct r3_net_server **out);
/* The handler's arg (opts.h.arg), for callbacks that get only a connection. */
void *r3_net_server_arg(const struct r3_net_conn *c);
/* The address actually bound (the picked port for port 0). */
const struct r3_net_addr *r3_net_server_addr(const struct r3_net_server *s);
/* Connections open (accepted and not yet closed). */
unsigned r3_net_server_conns(struct r3_net_server *s);
/* Threads of the pool right now (for tests). */
unsigned r3_net_server_threads(struct r3_net_server *s);
/* Bytes of the in-flight budget in use. */
size_t r3_net_server_inflight(struct r3_net_server *s);
/* Stop accepting, close every connection, wait for callbacks and holds, free. */
void r3_net_server_stop(struct r3_net_server *s);

/* Keep c alive past the callback that got it (a request handed to a worker). */
void r3_net_conn_hold(struct r3_net_conn *c);
/* Like hold, but false (and no hold) once the connection is finishing: for
 * a protocol that finds c in its own list, from which its on_close (about to
 * run) removes it. c must be valid memory: on_close takes the lock the
 * caller holds while it looks c up. */
bool r3_net_conn_tryhold(struct r3_net_conn *c);
void r3_net_conn_put(struct r3_net_conn *c);
/* Ask for the connection to end (from any thread): no further on_readable;
 * queued output is still sent. why goes to the log (first reason wins). */
void r3_net_conn_close(struct r3_net_conn *c, const char *why);
/* Say why the connection ends (printf-style; replaces an earlier reason).
 * Takes the connection's lock: the server may set a reason from another
 * thread (a stop, a stalled peer), so protocols never write c->why directly. */
void r3_net_conn_why(struct r3_net_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Queue hdr (copied) then data (not copied) for sending, in order, without
 * ever waiting for the peer: a client that does not read stalls only itself
 * (its output stays queued; after send_timeout_ms without progress the
 * connection is closed). done(done_arg) runs once the bytes are sent or
 * dropped (free data there, release budget there). 0 or -errno (closed:
 * done has run already). */
int  r3_net_conn_send(struct r3_net_conn *c, const void *hdr, size_t hlen, const void *data,
                      size_t dlen, void (*done)(void *), void *done_arg);
/* Bytes queued and not yet sent. */
size_t r3_net_conn_queued(struct r3_net_conn *c);

/* The in-flight budget: acquire before allocating a request or reply
 * buffer, release when it is freed (after its reply is sent). Waits, never
 * fails, while the budget (global, or this connection's share) is in use;
 * -EMSGSIZE if bytes alone exceed the connection's share (with a sentence);
 * -ESHUTDOWN if the connection or the server closes while waiting. */
int  r3_net_budget_acquire(struct r3_net_conn *c, size_t bytes);
void r3_net_budget_release(struct r3_net_conn *c, size_t bytes);

/* A standalone budget (the server's is one of these), for unit tests and
 * clients: global limit and per-holder share. */
struct r3_net_budget {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t limit, used;
};
void r3_net_budget_init(struct r3_net_budget *b, size_t limit);
void r3_net_budget_destroy(struct r3_net_budget *b);
/* Take bytes, waiting while limit would be passed; with *mine (a holder's
 * usage, under b->mu) and share: also while *mine + bytes > share. -EMSGSIZE
 * if bytes > share or > limit; -ESHUTDOWN once *stop is true (checked on each wakeup). */
int  r3_net_budget_take(struct r3_net_budget *b, size_t bytes, size_t *mine, size_t share,
                        const bool *stop);
void r3_net_budget_give(struct r3_net_budget *b, size_t bytes, size_t *mine);
/* Wake waiters (after setting their stop flag). */
void r3_net_budget_wake(struct r3_net_budget *b);

#endif
