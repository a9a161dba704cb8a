/* SPDX-License-Identifier: BSD-3-Clause */
/* An NBD server (fixed newstyle, doc/proto.md of NetworkBlockDevice/nbd)
 * serving r3 sources, embeddable: r3serve --nbd, r3mount and the nbd-direct /
 * nbd-managed strategies start it in-process. It runs on the one network
 * layer (src/net): its accept loop, connection cap, handshake deadline,
 * send queues, in-flight budget and TLS.
 *
 *   struct r3_nbd_export e = { .name = "", .src = src };
 *   struct r3_nbd_server_opts o = { .listen = "127.0.0.1:10809", .exports = &e, .nexports = 1 };
 *   struct r3_nbd_server *s;
 *   r3_nbd_server_start(&o, &s);  ...  r3_nbd_server_stop(s);
 */
#ifndef R3_NBD_SERVER_H
#define R3_NBD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <r3/source.h>

struct r3_nbd_export {
    const char *name;             /* "" is the default export */
    const char *description;      /* NULL = none */
    struct r3_source *src;        /* borrowed: outlives the server */
    bool readonly;
};

struct r3_nbd_server_opts {
    /* "HOST:PORT" ("[::1]:PORT"; port 0 picks a free one; a bare HOST is
     * port 10809), "unix:PATH", or an absolute PATH (a Unix socket). */
    const char *listen;
    const struct r3_nbd_export *exports;
    size_t nexports;
    unsigned workers;             /* request threads per connection; 0 = 4 */
    uint32_t max_request;         /* largest READ/WRITE payload; 0 = 32 MiB */
    /* Connections served at once; one more is closed at once (and logged).
     * 0 = 1024. */
    unsigned max_conns;
    /* Bytes of requests and replies in memory at once, over all
     * connections (the net layer's budget). 0 = 256 MiB. */
    size_t max_inflight;
    /* Listen on a non-loopback address without TLS (refused otherwise,
     * with a sentence saying why). */
    bool insecure;
    /* The whole handshake (options, STARTTLS, TLS) must end within this, or
     * the connection is closed: idle or trickling clients cannot hold the
     * server's slots. 0 = 10000. */
    unsigned handshake_timeout_ms;
    /* TLS (STARTTLS): certificates in the nbdkit/qemu layout (tls_dir with
     * ca-cert.pem server-cert.pem server-key.pem) or explicit files, and/or a
     * PSK file ("identity:hexkey" lines). */
    const char *tls_dir, *tls_cert, *tls_key, *tls_ca, *tls_psk;
    bool tls_verify_peer;         /* require client certificates signed by the CA */
    /* Refuse everything but STARTTLS/ABORT before TLS. Always on when TLS is
     * configured (a port with TLS never serves plaintext); set without TLS
     * it is an error. */
    bool tls_required;
    /* Answer NBD_OPT_LIST with the export names (otherwise refused by policy,
     * so a client with a wrong name learns nothing about the real ones). */
    bool list_exports;
    /* One line per connection when it ends (peer, TLS, export, requests,
     * bytes, why it ended), and one per refused connection. The library
     * never prints: the caller decides where lines go. NULL = none. */
    void (*log)(void *arg, const char *line);
    void *log_arg;
};

struct r3_nbd_server;

/* Binds and starts accepting in r3 threads. 0 or -errno (r3_last_error()). */
int  r3_nbd_server_start(const struct r3_nbd_server_opts *o, struct r3_nbd_server **out);
/* The TCP port bound (useful with port 0); 0 for a Unix socket. */
int  r3_nbd_server_port(const struct r3_nbd_server *s);
/* Number of connections being served. */
unsigned r3_nbd_server_conns(struct r3_nbd_server *s);
/* Stops accepting, disconnects every client, waits for their threads, and
 * removes a Unix socket file. The exports' sources are not closed. */
void r3_nbd_server_stop(struct r3_nbd_server *s);

#endif
