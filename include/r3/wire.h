/* SPDX-License-Identifier: BSD-3-Clause */
/* The r3 wire protocol: serve a source to r3:// and r3s:// clients.
 *
 * Protocol (version 1). Over TCP, a Unix socket, or TLS on either:
 *   frame   = u32 big-endian length L, then L bytes holding one msgpack array.
 *             Receivers reject L above their maximum before allocating
 *             (the server's maximum is max_request + 4 KiB).
 *   hello   client → ["r3", 1, {"export": NAME, "client": ID, "features": FEAT}]
 *           server → ["r3", 1, {"size": BYTES, "align": A, "flags": F, "max_request": M,
 *                               "features": FEAT}]
 *                 or ["r3", 1, {"error": [ERRNO, "sentence"]}] and the connection closes.
 *           Unknown feature keys are ignored (later versions add some). "client" and
 *           "features" are optional. FEAT bits: 1 = zero reads, 2 = the extent method; the
 *           server answers with the bits both sides know (none, or no key, for a client
 *           that sent none), so an older peer on either side keeps working. The version
 *           stays 1: features, not versions, say what a connection may use.
 *   request [0, ID, METHOD, ARGS]          (ID: any uint the client picks, unique among its
 *                                           requests in flight on that connection)
 *   reply   [1, ID, nil | [ERRNO, "sentence"], RESULT]   (in any order)
 *   methods size  []            → uint size
 *           read  [OFF, LEN]    → bin (LEN bytes; LEN ≤ max_request), or `true` when the
 *                                 zero feature was agreed and the range reads as zeros
 *                                 (the server's r3_source_extent says ZERO): no payload
 *           extent [OFF, LEN]   → [KIND, RUN] (feature 2): the server's r3_source_extent;
 *                                 KIND 0 = data, 1 = zeros, 1 ≤ RUN ≤ LEN
 *           write [OFF, bin]    → nil
 *           flush []            → nil (every write answered before the flush was sent is durable)
 *           track, finalize, close: answered ENOTSUP by a plain server; a seeder
 *           (r3_seed_open, include/r3/migrate.h) answers the migration methods:
 *           migrate [VERSION, SESSION] → uint chunk size (EPROTONOSUPPORT if
 *                                        the seeder speaks another version)
 *           track   [SESSION, 0]       → uint N: entries of the access order
 *           order   [OFF, LEN]         → bin: bytes OFF.. of the access order
 *                                        (8-byte big-endian chunk indexes)
 *           finalize [SESSION, 0]      → uint N: chunks written since track
 *           finalize [SESSION, LEN]    → bin of LEN bytes: N, then the list's head
 *                                        (zero padded; version 2)
 *           dirty   [OFF, LEN]         → bin: bytes of that list (as order)
 *           release [SESSION, 0]       → nil
 *   Other methods take [] or [A, B] (two uints).
 *   An unknown method gets an ENOSYS reply and the connection stays up; a frame that is
 *   too long, not msgpack, or of the wrong shape gets a reply with ID 0 (EMSGSIZE/EPROTO)
 *   and the connection is closed.
 * Flags: 1 = read-only, 2 = the source takes parallel requests (R3_SRC_*).
 */
#ifndef R3_WIRE_H
#define R3_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <r3/source.h>

#ifdef __cplusplus
extern "C" {
#endif

struct r3_tls_ctx;              /* src/net/net.h */
struct r3_wire_server;

struct r3_wire_server_opts {
    struct r3_source *src;      /* served (not owned; flush/close it after r3_wire_server_free) */
    const char *export_name;    /* clients must ask for this export; NULL or "" accepts any */
    bool read_only;             /* refuse writes with EROFS */
    const char *listen;         /* HOST:PORT, [IPv6]:PORT or unix:PATH (port 0 picks a free one) */
    struct r3_tls_ctx *tls;     /* server TLS context, or NULL for plain connections */
    bool insecure;              /* allow listening on a non-loopback address without TLS */
    size_t max_request;         /* largest read/write in bytes; 0 = 32 MiB */
    unsigned workers;           /* threads running requests, shared by all connections; 0 = 8 */
    size_t max_inflight;        /* bytes of requests and replies held in memory, all connections
                                 * together; readers wait for room; 0 = 256 MiB */
    unsigned max_connections;   /* more are refused with a message; 0 = 1024 */
    unsigned handshake_ms;      /* TLS + hello, from accept; 0 = 10000 */
    unsigned timeout_ms;        /* the rest of a started request, and a client that reads none
                                 * of its replies, is dropped after this; 0 = 30000 */
    /* One line per client (its connections together, when it sends a client
     * id; else per connection) when it goes, one per refusal; NULL: silent.
     * Called from server threads. */
    void (*log)(void *arg, const char *line);
    void *log_arg;
    /* Methods other than size/read/write/flush (the seeder's migration
     * methods); NULL keeps the plain server's answers. Called on the
     * connection's thread with the method's name and its two numbers
     * (0, 0 for []). 0 with a uint result in *val, or with a malloc'd bin
     * result in *data and *dlen (the server frees it; dlen <= max_request);
     * else -errno with r3_last_error() (-ENOSYS: an unknown method). */
    int (*call)(void *arg, const char *method, uint64_t a, uint64_t b, uint64_t *val,
                void **data, size_t *dlen);
    void *call_arg;
};

/* Listen on o->listen and serve in background threads. 0 or -errno (a
 * non-loopback address without TLS or insecure is -EACCES, with why). */
int  r3_wire_server_new(const struct r3_wire_server_opts *o, struct r3_wire_server **out);
/* The address listened on, formatted ("127.0.0.1:40123", "[::1]:7000", "unix:/run/r3.sock"). */
const char *r3_wire_server_address(struct r3_wire_server *s, char *buf, size_t n);
/* Number of connections open. */
unsigned r3_wire_server_conns(struct r3_wire_server *s);
/* Stop: close every connection (requests being run finish first), join the
 * workers and free. The caller then flushes and closes the source. */
void r3_wire_server_free(struct r3_wire_server *s);

#ifdef __cplusplus
}
#endif
#endif
