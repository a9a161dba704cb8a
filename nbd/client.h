/* SPDX-License-Identifier: BSD-3-Clause */
/* An NBD client: fixed newstyle handshake with NBD_OPT_GO (falls back to
 * EXPORT_NAME), optional STARTTLS and structured replies, and pipelined
 * requests: any number of threads may call it at once; each request has its
 * own cookie and a reader thread completes them in whatever order the server
 * answers. Also the nbd:// / nbd+unix:// source (nbd/source.c). */
#ifndef R3_NBD_CLIENT_H
#define R3_NBD_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct r3_nbd_client_opts {
    const char *host;             /* TCP host, or NULL with unix_path */
    int port;                     /* 0 = 10809 */
    const char *unix_path;
    const char *export_name;      /* NULL = "" */
    bool no_structured;           /* do not ask for structured replies (the kernel path) */
    bool tls;                     /* STARTTLS, and refuse to go on without it */
    const char *tls_dir;          /* ca-cert.pem [client-cert.pem client-key.pem] */
    const char *tls_psk;          /* psk file */
    const char *tls_user;         /* PSK identity */
    unsigned max_inflight;        /* 0 = 64 */
    /* Connecting plus the whole handshake (incl. TLS) must end within
     * connect_timeout_ms (0 = 5000); each request must be answered within
     * timeout_ms (0 = 30000), else the connection is closed and the request
     * fails with -ETIMEDOUT and a sentence. The same names and defaults as
     * r3:// (URI parameters connect_timeout= and timeout=). timeout_ms =
     * R3_NBD_NO_TIMEOUT: requests wait as long as the server takes (a mount
     * of our own in-process server, whose source has its own timeouts: a
     * flush that pushes a whole region may take minutes). */
    unsigned connect_timeout_ms, timeout_ms;
    bool handshake_only;          /* no reader thread: the fd goes to the kernel */
};

#define R3_NBD_NO_TIMEOUT (~0u)

struct r3_nbd_client;

int  r3_nbd_client_connect(const struct r3_nbd_client_opts *o, struct r3_nbd_client **out);
uint64_t r3_nbd_client_size(const struct r3_nbd_client *c);
uint16_t r3_nbd_client_flags(const struct r3_nbd_client *c);     /* transmission flags */
uint32_t r3_nbd_client_min_block(const struct r3_nbd_client *c);
/* 0 or -errno; requests larger than the server's maximum are split and the
 * pieces pipelined. A read returns 0 only when every byte was filled. */
int  r3_nbd_client_pread(struct r3_nbd_client *c, void *buf, size_t len, uint64_t off);
int  r3_nbd_client_pwrite(struct r3_nbd_client *c, const void *buf, size_t len, uint64_t off, bool fua);
int  r3_nbd_client_flush(struct r3_nbd_client *c);
/* NBD_CMD_BLOCK_STATUS (base:allocation, one descriptor) at off:
 * R3_EXTENT_ZERO when the first *run bytes read as zeros (NBD_STATE_ZERO),
 * R3_EXTENT_DATA otherwise, or -errno. Without base:allocation on the
 * server, DATA for all len bytes and no request. */
int  r3_nbd_client_block_status(struct r3_nbd_client *c, uint64_t off, uint64_t len, uint64_t *run);
bool r3_nbd_client_has_extents(const struct r3_nbd_client *c);
/* handshake_only: take the connected socket (the caller owns it afterwards). */
int  r3_nbd_client_take_fd(struct r3_nbd_client *c);
struct r3_uri;
/* Fill o from an nbd:// nbds:// nbd+unix:// nbds+unix:// URI (strings borrowed from u). */
int  r3_nbd_client_opts_from_uri(const struct r3_uri *u, struct r3_nbd_client_opts *o);
/* Sends NBD_CMD_DISC, stops the reader and frees. */
void r3_nbd_client_close(struct r3_nbd_client *c);

#endif
