/* SPDX-License-Identifier: BSD-3-Clause */
/* r3:// r3s:// r3+unix:// — the client source of the r3 protocol.
 *
 * A pool of connections (?conns=N). Callers pick a connection round-robin,
 * register a call under a fresh id and send their request themselves (under
 * the connection's write lock, data as a second iovec: no copy). One reader
 * thread per connection matches replies by id and reads a read reply's bytes
 * straight into the caller's buffer. When a connection breaks, its reader
 * fails the calls in flight and reconnects with backoff; reads, flushes and
 * writes of whole chunks are retried, other writes fail with -EIO. A flush
 * after a lost connection reports -EIO once: acknowledged writes may be gone. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "internal.h"
#include "net/net.h"
#include "wire/frame.h"
#include "wire/call.h"

#define MAX_CONNS 64
#define HEAD 32            /* bytes read before deciding where a reply's data goes */
#define SLOW_MAX (1u << 20) /* largest reply decoded whole (errors, size) */

struct call {
    struct call *next;
    uint64_t id;
    void *buf;             /* read: destination */
    size_t len;
    int rc;
    bool done, lost, claimed;
    uint64_t val;          /* a uint result (r3_wire_call); an extent's run */
    int ext;               /* an extent's kind (R3_EXTENT_*) */
    char msg[512];
    pthread_cond_t cv;
};

struct client;

struct rconn {
    struct client *cl;
    pthread_mutex_t mu;        /* up, gen, io lifetime, pending */
    pthread_cond_t cv;         /* up changed */
    pthread_mutex_t wmu;       /* one request frame at a time */
    struct r3_io io;
    bool up, have_io;
    unsigned features;         /* R3_WIRE_F_* of the current connection (under mu) */
    struct call *pending;
    uint64_t next_id;
    msgpack_sbuffer sb;        /* under wmu */
    pthread_t reader;
    bool reader_started;
    char err[512];             /* why it is down */
};

struct client {
    struct r3_source src;
    char name[160];            /* "r3 127.0.0.1:7001" for sentences */
    char *host, *export_name;     /* host: TLS name check */
    char scheme[16];
    struct r3_net_addr addr;
    uint64_t client_id;           /* sent in the hello: the server logs one line per client */
    struct r3_tls_ctx *tls;
    int connect_ms, timeout_ms;
    uint32_t chunk;
    uint64_t max_request;
    unsigned nconns;
    struct rconn *conns;
    atomic_uint rr;
    atomic_bool closing;
    atomic_bool lost_writes;   /* a connection broke with acknowledged, unflushed writes */
    atomic_uint_fast64_t acked_writes;
    pthread_mutex_t sleep_mu;
    pthread_cond_t sleep_cv;   /* wakes reconnect backoff sleeps at close */
};

/* ---- connecting */

static int sock_connect(struct client *cl, int *out)
{
    int rc = r3_net_dial(&cl->addr, cl->connect_ms, out);
    if (rc == -ETIMEDOUT)
        return r3_error(rc, "%s: connect timed out after %d ms", cl->name, cl->connect_ms);
    if (rc == -ECONNREFUSED)
        return r3_error(rc, "%s: connection refused", cl->name);
    if (rc == -ENOENT && cl->addr.kind == R3_NET_UNIX)
        return r3_error(rc, "%s: no such socket", cl->name);
    if (rc == -EHOSTUNREACH)
        return r3_error_prefix(rc, "%s: ", cl->scheme);
    if (rc < 0)
        return r3_error(rc, "%s: %s", cl->name, strerror(-rc));
    return 0;
}

/* The first bytes of a peer that is not an r3 server, printable, for the sentence. */
static const char *show_bytes(const uint8_t *b, size_t n, char *buf, size_t bn)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < bn; i++)
        o += (size_t)snprintf(buf + o, bn - o, b[i] >= 32 && b[i] < 127 && b[i] != '"' && b[i] != '\\' ? "%c" : "\\x%02x", b[i]);
    buf[o] = 0;
    return buf;
}

/* Connect, TLS, hello. On success io is ready, the hello fields are stored
 * and *features holds what the server agreed to. */
static int dial(struct client *cl, struct r3_io *io, bool first, unsigned *features)
{
    /* connect_timeout bounds the whole of connect, TLS and hello */
    uint64_t deadline = r3_net_deadline(cl->connect_ms);
    int fd = -1, rc = sock_connect(cl, &fd);
    if (rc < 0)
        return rc;
    if ((rc = r3_io_init(io, fd)) < 0) {
        r3_io_close(io);
        return rc;
    }
    io->rdeadline = io->wdeadline = deadline;
    if (cl->tls && (rc = r3_tls_connect(cl->tls, io, cl->host, r3_net_remaining_ms(deadline))) < 0) {
        r3_io_close(io);
        if (rc == -ECONNRESET || rc == -EPROTO) {
            char keep[400];
            snprintf(keep, sizeof keep, "%s", r3_last_error());
            return r3_error(rc, "%s: %s (does the server speak TLS?)", cl->name, keep);
        }
        return r3_error_prefix(rc, "%s: ", cl->name);
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    r3_wire_start(&sb, &pk);
    r3_wire_pack_client_hello(&pk, cl->export_name, cl->client_id, R3_WIRE_FEATURES);
    r3_wire_finish(&sb, 0);
    rc = r3_io_write_all(io, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    if (rc < 0 && r3_io_is_tls(io)) {
        /* TLS 1.3 servers check client certificates after the handshake and
         * send an alert: read it, it says why better than EPIPE does. */
        uint8_t b;
        if (r3_io_read_some(io, &b, 1) == -EPROTO)
            rc = -EACCES;
    }
    uint8_t hdr[R3_WIRE_HDR];
    uint32_t len = 0;
    char *f = NULL;
    if (rc == 0)
        rc = r3_io_read_all(io, hdr, sizeof hdr);
    if (rc == 0 && r3_wire_frame_len(hdr, R3_WIRE_HELLO_MAX, &len) < 0) {
        char shown[64];
        r3_io_close(io);
        return r3_error(-EPROTO, "%s is not an r3 server (it answered \"%s\"...)", cl->name,
                        show_bytes(hdr, sizeof hdr, shown, sizeof shown));
    }
    if (rc == 0 && !(f = malloc(len)))
        rc = r3_error(-ENOMEM, "out of memory");
    if (rc == 0)
        rc = r3_io_read_all(io, f, len);
    if (rc < 0) {
        free(f);
        r3_io_close(io);
        if (rc == -ETIMEDOUT)
            return r3_error(rc, "%s: no hello from the server within %d ms (is it an r3serve?)",
                            cl->name, cl->connect_ms);
        if ((rc == -EPROTO || rc == -EACCES) && strncmp(r3_last_error(), "TLS", 3) == 0)
            return r3_error_prefix(-EACCES, "%s: the server refused the connection: ", cl->name);
        if (rc == -EPIPE && !cl->tls)
            return r3_error(rc, "%s: the server closed the connection during the hello "
                            "(is it a TLS server? then use r3s://)", cl->name);
        return r3_error_prefix(rc, "%s: hello failed: ", cl->name);
    }
    msgpack_unpacked up;
    struct r3_wire_msg m;
    rc = r3_wire_decode(f, len, &up, &m);
    if (rc < 0 || m.type != R3_WIRE_HELLO) {
        rc = r3_error(-EPROTO, "%s is not an r3 server (its answer is not an r3 hello)", cl->name);
    } else if (m.err) {
        rc = r3_error(m.err, "%s: %.*s", cl->name, (int)m.errmsg_len, m.errmsg);
    } else if (m.version != R3_WIRE_VERSION) {
        rc = r3_error(-EPROTONOSUPPORT, "%s: the server speaks protocol version %" PRIu64, cl->name, m.version);
    } else if (m.size == 0 || m.max_request < 4096 || m.max_request > (1u << 30) ||
               (m.align && !r3_is_pow2(m.align))) {
        rc = r3_error(-EPROTO, "%s: the server's hello has a bad size, alignment or max_request", cl->name);
    } else if (first) {
        cl->src.size = m.size;
        cl->src.align = m.align ? (uint32_t)m.align : 1;
        cl->src.flags = R3_SRC_PARALLEL | ((m.flags & R3_SRC_RDONLY) ? R3_SRC_RDONLY : 0);
        cl->max_request = m.max_request;
    } else if (m.size != cl->src.size) {
        rc = r3_error(-EIO, "%s: the export changed size (%" PRIu64 " bytes, was %" PRIu64 ")",
                      cl->name, m.size, cl->src.size);
    }
    *features = rc == 0 ? (unsigned)(m.features & R3_WIRE_FEATURES) : 0;
    msgpack_unpacked_destroy(&up);
    free(f);
    if (rc < 0) {
        r3_io_close(io);
        return rc;
    }
    io->rdeadline = io->wdeadline = 0;
    io->rtimeout_ms = -1;       /* the reader idles; calls time out on their own */
    io->wtimeout_ms = cl->timeout_ms;
    return 0;
}

/* ---- the reader */

static struct call *find_call(struct rconn *c, uint64_t id, bool unlink)
{
    for (struct call **pp = &c->pending; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            struct call *k = *pp;
            if (unlink)
                *pp = k->next;
            return k;
        }
    }
    return NULL;
}

static void complete(struct rconn *c, struct call *k, int rc)
{
    /* under c->mu, k already unlinked */
    k->rc = rc;
    k->done = true;
    pthread_cond_signal(&k->cv);
    (void)c;
}

/* The connection broke: fail every call in flight and drop the socket. */
static void conn_fail(struct rconn *c, const char *why)
{
    struct client *cl = c->cl;
    pthread_mutex_lock(&c->wmu);          /* no sender inside the io */
    pthread_mutex_lock(&c->mu);
    c->up = false;
    snprintf(c->err, sizeof c->err, "%s", why);
    while (c->pending) {
        struct call *k = c->pending;
        c->pending = k->next;
        k->lost = true;
        snprintf(k->msg, sizeof k->msg, "%s", why);
        complete(c, k, -EIO);
    }
    if (c->have_io) {
        r3_io_close(&c->io);
        c->have_io = false;
    }
    if (atomic_load(&cl->acked_writes) > 0)
        atomic_store(&cl->lost_writes, true);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_unlock(&c->wmu);
}

/* Read and dispatch one reply frame. 0, or -errno with the reason in why. */
static int read_reply(struct rconn *c, char *why, size_t whyn)
{
    struct client *cl = c->cl;
    uint8_t hdr[R3_WIRE_HDR], head[HEAD];
    uint32_t len;
    int rc = r3_io_read_all(&c->io, hdr, sizeof hdr);
    if (rc < 0) {
        snprintf(why, whyn, "%s: %s", cl->name,
                 rc == -EPIPE ? "the server closed the connection" : r3_last_error());
        return rc;
    }
    size_t max = cl->max_request + R3_WIRE_OVERHEAD;
    if (r3_wire_frame_len(hdr, max, &len) < 0) {
        snprintf(why, whyn, "%s: protocol error: a reply of %" PRIu32 " bytes (the maximum is %zu)",
                 cl->name, len, max);
        return -EPROTO;
    }
    size_t hn = len < HEAD ? len : HEAD;
    if ((rc = r3_io_read_all(&c->io, head, hn)) < 0)
        goto ioerr;
    uint64_t id;
    size_t hl;
    uint32_t dlen;
    int p = r3_wire_peek_data_reply(head, hn, &id, &hl, &dlen);
    if (p == 0 && hl + dlen == len) {
        pthread_mutex_lock(&c->mu);
        struct call *k = find_call(c, id, false);
        bool ok = k && k->buf && k->len == dlen;
        if (ok)
            k->claimed = true;
        pthread_mutex_unlock(&c->mu);
        if (!ok) {
            snprintf(why, whyn, "%s: protocol error: a reply of %" PRIu32 " bytes to request %" PRIu64
                     " that does not expect it", cl->name, dlen, id);
            return -EPROTO;
        }
        /* k cannot go away: only this thread completes claimed calls */
        memcpy(k->buf, head + hl, hn - hl);
        if ((rc = r3_io_read_all(&c->io, (char *)k->buf + (hn - hl), dlen - (hn - hl))) < 0)
            goto ioerr;
        pthread_mutex_lock(&c->mu);
        find_call(c, id, true);
        complete(c, k, 0);
        pthread_mutex_unlock(&c->mu);
        return 0;
    }
    if (p < 0 && p != -EAGAIN) {
        snprintf(why, whyn, "%s: protocol error: a reply that is not msgpack", cl->name);
        return -EPROTO;
    }
    if (len > SLOW_MAX) {       /* only data replies are big, and they take the path above */
        snprintf(why, whyn, "%s: protocol error: a %" PRIu32 " byte reply without data", cl->name, len);
        return -EPROTO;
    }
    /* small replies (acks, zeros, extents, errors) are read on the stack */
    char small[512];
    char *f = len <= sizeof small ? small : malloc(len);
    if (!f) {
        snprintf(why, whyn, "%s: out of memory for a %" PRIu32 " byte reply", cl->name, len);
        return -ENOMEM;
    }
    memcpy(f, head, hn);
    if ((rc = r3_io_read_all(&c->io, f + hn, len - hn)) < 0) {
        if (f != small)
            free(f);
        goto ioerr;
    }
    msgpack_unpacked up;
    struct r3_wire_msg m;
    rc = r3_wire_decode(f, len, &up, &m);
    if (rc < 0 || m.type != R3_WIRE_REPLY) {
        snprintf(why, whyn, "%s: protocol error: a frame that is not a reply", cl->name);
        rc = -EPROTO;
    } else {
        pthread_mutex_lock(&c->mu);
        struct call *k = find_call(c, m.id, true);
        if (k) {
            int r = m.err;
            if (r) {
                snprintf(k->msg, sizeof k->msg, "%.*s", (int)m.errmsg_len, m.errmsg);
            } else if (m.zero && k->buf && (c->features & R3_WIRE_F_ZERO)) {
                memset(k->buf, 0, k->len);        /* the range reads as zeros: no payload came */
            } else if (m.has_extent && !k->buf && (c->features & R3_WIRE_F_EXTENT)) {
                k->ext = (int)m.ext_kind;
                k->val = m.val;
            } else if (m.zero || m.has_extent) {
                r = -EPROTO;
                snprintf(k->msg, sizeof k->msg, "%s: protocol error: a zero or extent reply that was not "
                         "negotiated or not expected", cl->name);
            } else if (k->buf && (!m.has_data || m.len != k->len)) {
                r = -EPROTO;
                snprintf(k->msg, sizeof k->msg, "%s: protocol error: a read reply of the wrong length", cl->name);
            } else if (k->buf) {
                memcpy(k->buf, m.data, k->len);
            } else if (m.has_val) {
                k->val = m.val;
            }
            complete(c, k, r);
        }
        pthread_mutex_unlock(&c->mu);
        if (!k) {
            if (m.err && m.id == 0)
                snprintf(why, whyn, "%s: the server dropped the connection: %.*s", cl->name,
                         (int)m.errmsg_len, m.errmsg);
            else
                snprintf(why, whyn, "%s: protocol error: a reply to unknown request %" PRIu64, cl->name, m.id);
            rc = -EPROTO;
        }
    }
    msgpack_unpacked_destroy(&up);
    if (f != small)
        free(f);
    return rc;
ioerr:
    snprintf(why, whyn, "%s: %s", cl->name,
             rc == -EPIPE ? "the server closed the connection in the middle of a reply" : r3_last_error());
    return rc;
}

static void backoff_sleep(struct client *cl, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&cl->sleep_mu);
    if (!atomic_load(&cl->closing))
        pthread_cond_timedwait(&cl->sleep_cv, &cl->sleep_mu, &ts);
    pthread_mutex_unlock(&cl->sleep_mu);
}

static void *reader_main(void *arg)
{
    struct rconn *c = arg;
    struct client *cl = c->cl;
    char why[400];
    struct r3_net_backoff bo;  /* never gives up: each call has its own deadline */
    r3_net_backoff_init(&bo, 20, 1000, 0);
    bool served = true;        /* the current connection answered a request */
    while (!atomic_load(&cl->closing)) {
        pthread_mutex_lock(&c->mu);
        bool up = c->up;
        pthread_mutex_unlock(&c->mu);
        if (!up) {
            /* Back off before every redial, and keep backing off while
             * connections fail before answering anything (a bad server). */
            if (served)
                r3_net_backoff_reset(&bo);
            backoff_sleep(cl, r3_net_backoff_next(&bo));
            if (atomic_load(&cl->closing))
                break;
            struct r3_io io;
            unsigned feat = 0;
            if (dial(cl, &io, false, &feat) < 0) {
                pthread_mutex_lock(&c->mu);
                snprintf(c->err, sizeof c->err, "%s", r3_last_error());
                pthread_mutex_unlock(&c->mu);
                served = false;
                continue;
            }
            pthread_mutex_lock(&c->mu);
            c->io = io;
            c->have_io = true;
            c->features = feat;
            c->up = !atomic_load(&cl->closing);
            pthread_cond_broadcast(&c->cv);
            pthread_mutex_unlock(&c->mu);
            served = false;
            continue;
        }
        if (read_reply(c, why, sizeof why) < 0)
            conn_fail(c, atomic_load(&cl->closing) ? "the source is being closed" : why);
        else
            served = true;
    }
    return NULL;
}

/* ---- calls */

static bool idempotent(struct client *cl, const char *method, size_t len, uint64_t off)
{
    if (strcmp(method, "write") != 0)
        return true;        /* read, flush */
    return off % cl->chunk == 0 && len % cl->chunk == 0;
}

/* A connection that is up, waiting until the deadline. */
static struct rconn *pick(struct client *cl, uint64_t deadline)
{
    unsigned start = atomic_fetch_add(&cl->rr, 1);
    for (unsigned i = 0; i < cl->nconns; i++) {
        struct rconn *c = &cl->conns[(start + i) % cl->nconns];
        pthread_mutex_lock(&c->mu);
        bool up = c->up;
        pthread_mutex_unlock(&c->mu);
        if (up)
            return c;
    }
    struct rconn *c = &cl->conns[start % cl->nconns];
    pthread_mutex_lock(&c->mu);
    while (!c->up && !atomic_load(&cl->closing) && r3_now_ns() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;       /* re-check other connections and the deadline */
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    bool up = c->up;
    if (!up)
        r3_error(-EIO, "%s (not connected for %d ms)", c->err[0] ? c->err : cl->name, cl->timeout_ms);
    pthread_mutex_unlock(&c->mu);
    return up ? c : NULL;
}

/* One request/reply on one connection. -EAGAIN: the connection was lost. */
static int call_once(struct client *cl, struct rconn *c, const char *method, void *rbuf,
                     const void *wbuf, size_t len, uint64_t off, uint64_t deadline, uint64_t *val, int *ext)
{
    struct call k = { .buf = rbuf, .len = len };
    pthread_cond_init(&k.cv, NULL);
    pthread_mutex_lock(&c->wmu);
    pthread_mutex_lock(&c->mu);
    if (!c->up) {
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&c->wmu);
        pthread_cond_destroy(&k.cv);
        return -EAGAIN;
    }
    if (ext && !(c->features & R3_WIRE_F_EXTENT)) {
        /* an older server: it cannot tell, so the range may hold data */
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_unlock(&c->wmu);
        pthread_cond_destroy(&k.cv);
        *ext = R3_EXTENT_DATA;
        *val = len;
        return 0;
    }
    k.id = ++c->next_id;
    k.next = c->pending;
    c->pending = &k;
    pthread_mutex_unlock(&c->mu);
    msgpack_packer pk;
    r3_wire_start(&c->sb, &pk);
    r3_wire_pack_request(&pk, k.id, method, off, len, wbuf != NULL);
    r3_wire_finish(&c->sb, wbuf ? len : 0);
    struct iovec v[2] = { { c->sb.data, c->sb.size }, { (void *)wbuf, wbuf ? len : 0 } };
    if (r3_io_writev_all(&c->io, v, 2) < 0)
        r3_io_shutdown(&c->io);           /* the reader fails the calls */
    pthread_mutex_unlock(&c->wmu);

    pthread_mutex_lock(&c->mu);
    bool timed_out = false;
    while (!k.done) {
        struct timespec ts;
        uint64_t now = r3_now_ns();
        if (now >= deadline && !timed_out) {
            timed_out = true;                  /* unblock the reader: it fails the calls */
            if (c->have_io)
                r3_io_shutdown(&c->io);
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t wait = timed_out ? 100000000u : deadline - now;
        if (wait > 100000000u)
            wait = 100000000u;
        ts.tv_sec += (time_t)(wait / 1000000000u);
        ts.tv_nsec += (long)(wait % 1000000000u);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&k.cv, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    pthread_cond_destroy(&k.cv);
    if (timed_out)             /* a loss after our own shutdown at the deadline is the timeout */
        return r3_error(-ETIMEDOUT, "%s: %s of %zu bytes at %" PRIu64 " timed out after %d ms", cl->name,
                        method, len, off, cl->timeout_ms);
    if (k.lost) {
        r3_error(-EIO, "%s", k.msg);
        return -EAGAIN;
    }
    if (k.rc < 0)
        return r3_error(k.rc, "%s", k.msg[0] ? k.msg : strerror(-k.rc));
    if (val)
        *val = k.val;
    if (ext)
        *ext = k.ext;
    return 0;
}

static int call(struct client *cl, const char *method, void *rbuf, const void *wbuf, size_t len, uint64_t off,
                uint64_t *val, int *ext)
{
    uint64_t deadline = r3_now_ns() + (uint64_t)cl->timeout_ms * 1000000u;
    char last[400] = "";       /* why the previous attempt was lost */
    for (;;) {
        if (atomic_load(&cl->closing))
            return r3_error(-EIO, "%s: the source is closed", cl->name);
        struct rconn *c = pick(cl, deadline);
        if (!c)
            return -EIO;
        int rc = call_once(cl, c, method, rbuf, wbuf, len, off, deadline, val, ext);
        if (rc == -ETIMEDOUT && last[0]) {
            char now[400];
            snprintf(now, sizeof now, "%s", r3_last_error());
            return r3_error(rc, "%s (earlier attempts: %s)", now, last);
        }
        if (rc != -EAGAIN)
            return rc;
        snprintf(last, sizeof last, "%s", r3_last_error());
        if (!idempotent(cl, method, len, off))
            return r3_error_prefix(-EIO, "%s of %zu bytes at %" PRIu64 " may not have been applied: ",
                                   method, len, off);
        if (r3_now_ns() >= deadline)
            return r3_error_prefix(-EIO, "gave up after %d ms: ", cl->timeout_ms);
    }
}

static int r3c_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct client *cl = (struct client *)s;
    while (len > 0) {
        size_t n = len > cl->max_request ? cl->max_request : len;
        int rc = call(cl, "read", buf, NULL, n, off, NULL, NULL);
        if (rc < 0)
            return rc;
        buf = (char *)buf + n;
        len -= n;
        off += n;
    }
    return 0;
}

static int r3c_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct client *cl = (struct client *)s;
    while (len > 0) {
        size_t n = len > cl->max_request ? cl->max_request : len;
        int rc = call(cl, "write", NULL, buf, n, off, NULL, NULL);
        if (rc < 0)
            return rc;
        atomic_fetch_add(&cl->acked_writes, 1);
        buf = (const char *)buf + n;
        len -= n;
        off += n;
    }
    return 0;
}

static int r3c_flush(struct r3_source *s)
{
    struct client *cl = (struct client *)s;
    uint64_t acked = atomic_exchange(&cl->acked_writes, 0);
    int rc = call(cl, "flush", NULL, NULL, 0, 0, NULL, NULL);
    if (rc < 0) {
        atomic_fetch_add(&cl->acked_writes, acked);
        return rc;
    }
    if (atomic_exchange(&cl->lost_writes, false))
        return r3_error(-EIO, "%s: the connection was lost since the last flush; writes acknowledged "
                        "before that may be lost", cl->name);
    return 0;
}

/* EXTENT: one round trip to the server's r3_source_extent of its export. */
static int r3c_extent(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    struct client *cl = (struct client *)s;
    uint64_t v = 0;
    int kind = R3_EXTENT_DATA;
    int rc = call(cl, "extent", NULL, NULL, (size_t)len, off, &v, &kind);
    if (rc < 0)
        return rc;
    if (v == 0 || v > len)
        return r3_error(-EPROTO, "%s: protocol error: an extent of %" PRIu64 " bytes for a query of %" PRIu64,
                        cl->name, v, len);
    *run = v;
    return kind == R3_EXTENT_ZERO ? R3_EXTENT_ZERO : R3_EXTENT_DATA;
}

static void r3c_close(struct r3_source *s)
{
    struct client *cl = (struct client *)s;
    atomic_store(&cl->closing, true);
    pthread_mutex_lock(&cl->sleep_mu);
    pthread_cond_broadcast(&cl->sleep_cv);
    pthread_mutex_unlock(&cl->sleep_mu);
    for (unsigned i = 0; cl->conns && i < cl->nconns; i++) {
        struct rconn *c = &cl->conns[i];
        pthread_mutex_lock(&c->mu);
        if (c->have_io)
            r3_io_shutdown(&c->io);
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    for (unsigned i = 0; cl->conns && i < cl->nconns; i++) {
        struct rconn *c = &cl->conns[i];
        if (c->reader_started)
            pthread_join(c->reader, NULL);
        if (c->have_io)
            r3_io_close(&c->io);
        msgpack_sbuffer_destroy(&c->sb);
        pthread_mutex_destroy(&c->mu);
        pthread_mutex_destroy(&c->wmu);
        pthread_cond_destroy(&c->cv);
    }
    free(cl->conns);
    r3_tls_ctx_free(cl->tls);
    pthread_mutex_destroy(&cl->sleep_mu);
    pthread_cond_destroy(&cl->sleep_cv);
    free(cl->host);
    free(cl->export_name);
    free(cl);
}

static const struct r3_source_ops r3c_ops = {
    .scheme = "r3", .read = r3c_read, .write = r3c_write, .flush = r3c_flush, .close = r3c_close,
    .extent = r3c_extent,
};

int r3_wire_call(struct r3_source *s, const char *method, uint64_t a, uint64_t b, void *buf, uint64_t *val)
{
    if (s->ops != &r3c_ops)
        return r3_error(-EINVAL, "%s: not an r3:// source", method);
    struct client *cl = (struct client *)s;
    if (buf && (b == 0 || b > cl->max_request))
        return r3_error(-EINVAL, "%s: a reply of %" PRIu64 " bytes (1 to %" PRIu64 ")", method, b,
                        cl->max_request);
    if (val)
        *val = 0;
    return call(cl, method, buf, NULL, buf ? (size_t)b : b, a, val, NULL);
}

uint64_t r3_wire_max_request(struct r3_source *s)
{
    return s->ops == &r3c_ops ? ((struct client *)s)->max_request : 0;
}

/* timeout= and connect_timeout=: a duration with a unit, as in every network URI. */
static int ms_param(const struct r3_uri *u, const char *key, uint64_t dflt_ms, int *out)
{
    uint64_t ms;
    int rc = r3_uri_param_duration_ms(u, key, dflt_ms, &ms);
    if (rc == 0)
        *out = (int)ms;
    return rc;
}

int r3_wire_open(const struct r3_uri *u, struct r3_source **out)
{
    static const char *const allowed[] = { "conns", "timeout", "connect_timeout", "ca", "cert", "key",
                                           "insecure", "chunk", "socket", NULL };
    bool is_unix = strcmp(u->scheme, "r3+unix") == 0 || strcmp(u->scheme, "r3s+unix") == 0;
    bool is_tls = strncmp(u->scheme, "r3s", 3) == 0;
    uint64_t conns, chunk, insecure;
    int rc = r3_uri_check_params(u, allowed);
    if (rc == 0)
        rc = r3_uri_param_uint(u, "conns", 8, &conns);
    if (rc == 0)
        rc = r3_uri_param_size(u, "chunk", R3_DEFAULT_CHUNK, &chunk);
    if (rc == 0)
        rc = r3_uri_param_uint(u, "insecure", 0, &insecure);
    if (rc < 0)
        return rc;
    if (conns < 1 || conns > MAX_CONNS)
        return r3_error(-EINVAL, "%s: conns must be between 1 and %d", u->scheme, MAX_CONNS);
    if (!r3_is_pow2(chunk) || chunk < 4096 || chunk > (1u << 30))
        return r3_error(-EINVAL, "%s: chunk %" PRIu64 " is not a power of two between 4K and 1G", u->scheme, chunk);
    if (is_unix && !r3_uri_param(u, "socket"))
        return r3_error(-EINVAL, "%s: needs ?socket=PATH (%s:///export?socket=/run/r3.sock)", u->scheme, u->scheme);
    if (!is_unix && (!u->host || !u->host[0]))
        return r3_error(-EINVAL, "%s: needs a host (%s://host:port/export)", u->scheme, u->scheme);
    if (!is_unix && !u->port)
        return r3_error(-EINVAL, "%s: needs a port (%s://%s:PORT/export)", u->scheme, u->scheme, u->host);
    if (!is_tls && (r3_uri_param(u, "ca") || r3_uri_param(u, "cert") || r3_uri_param(u, "key")))
        return r3_error(-EINVAL, "%s: ca/cert/key are TLS parameters: use r3s://", u->scheme);

    struct client *cl = calloc(1, sizeof *cl);
    if (!cl)
        return r3_error(-ENOMEM, "%s: out of memory", u->scheme);
    pthread_mutex_init(&cl->sleep_mu, NULL);
    pthread_cond_init(&cl->sleep_cv, NULL);
    cl->src.ops = &r3c_ops;
    cl->chunk = (uint32_t)chunk;
    cl->nconns = (unsigned)conns;
    const char *path = u->path ? u->path : "";
    while (*path == '/')
        path++;
    cl->export_name = strdup(path);
    snprintf(cl->scheme, sizeof cl->scheme, "%s", u->scheme);
    rc = 0;
    if (is_unix) {
        const char *sock = r3_uri_param(u, "socket");
        cl->addr.kind = R3_NET_UNIX;
        if (strlen(sock) >= sizeof cl->addr.path)
            rc = r3_error(-EINVAL, "%s: the socket path is too long", u->scheme);
        else
            strcpy(cl->addr.path, sock);
        cl->host = strdup("localhost");
        snprintf(cl->name, sizeof cl->name, "%s %s", u->scheme, sock);
    } else {
        cl->addr.kind = R3_NET_TCP;
        if (strlen(u->host) >= sizeof cl->addr.host || u->port < 1 || u->port > 65535)
            rc = r3_error(-EINVAL, "%s: bad host or port", u->scheme);
        else
            strcpy(cl->addr.host, u->host);
        cl->addr.port = u->port;
        cl->host = strdup(u->host);
        snprintf(cl->name, sizeof cl->name, strchr(u->host, ':') ? "%s [%s]:%d" : "%s %s:%d",
                 u->scheme, u->host, u->port);
    }
    /* one id for all of this client's connections: the server logs them as one */
    cl->client_id = (r3_now_ns() * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)cl;
    if (!cl->client_id)
        cl->client_id = 1;
    if (rc == 0 && (!cl->export_name || !cl->host))
        rc = r3_error(-ENOMEM, "out of memory");
    if (rc == 0)
        rc = ms_param(u, "connect_timeout", 5000, &cl->connect_ms);
    if (rc == 0)
        rc = ms_param(u, "timeout", 30000, &cl->timeout_ms);
    if (rc == 0 && is_tls) {
        struct r3_tls_opts to = { .ca = r3_uri_param(u, "ca"), .cert = r3_uri_param(u, "cert"),
                                  .key = r3_uri_param(u, "key"), .insecure = insecure != 0 };
        rc = r3_tls_client_ctx(&to, &cl->tls);
        if (rc < 0)
            r3_error_prefix(rc, "%s: ", cl->name);
    }
    if (rc == 0 && !(cl->conns = calloc(cl->nconns, sizeof *cl->conns)))
        rc = r3_error(-ENOMEM, "out of memory");
    for (unsigned i = 0; rc == 0 && i < cl->nconns; i++) {
        struct rconn *c = &cl->conns[i];
        c->cl = cl;
        pthread_mutex_init(&c->mu, NULL);
        pthread_mutex_init(&c->wmu, NULL);
        pthread_cond_init(&c->cv, NULL);
        msgpack_sbuffer_init(&c->sb);
    }
    /* Connect every connection now, so a bad address/CA/export is one clear error at open. */
    for (unsigned i = 0; rc == 0 && i < cl->nconns; i++) {
        struct rconn *c = &cl->conns[i];
        rc = dial(cl, &c->io, i == 0, &c->features);
        if (rc == 0) {
            c->have_io = c->up = true;
            rc = r3_thread_create(&c->reader, reader_main, c);
            c->reader_started = rc == 0;
            if (rc < 0)
                r3_error(rc, "%s: cannot start a reader thread", cl->name);
        }
    }
    if (rc < 0) {
        char keep[512];
        snprintf(keep, sizeof keep, "%s", r3_last_error());
        if (!cl->conns)
            cl->nconns = 0;
        r3c_close(&cl->src);
        return r3_error(rc, "%s", keep);
    }
    *out = &cl->src;
    return 0;
}
