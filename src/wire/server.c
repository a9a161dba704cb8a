/* SPDX-License-Identifier: BSD-3-Clause */
/* The r3 protocol server, on the src/net server loop.
 *
 * src/net owns the sockets: it accepts (connection cap, refusal with an r3
 * hello error), runs TLS and our hello under one deadline from accept,
 * keeps idle connections in epoll (no thread), and hands a readable
 * connection to a pool thread that calls on_readable: we read one frame,
 * bounded by max_request, after taking its bytes from the in-flight budget.
 * read/write requests go to a worker pool shared by all connections, so
 * requests of one connection run concurrently (when the source allows it)
 * and are answered in any order; size, errors and unknown methods are
 * answered at once; flush is a barrier (it waits for the connection's
 * earlier requests, then flushes). Replies go to the connection's send
 * queue, never blocking a worker: a client that does not read its replies
 * stalls only itself, and its budget share bounds what it pins. Each request
 * holds its budget until its reply is sent. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include "internal.h"
#include "r3/wire.h"
#include "net/net.h"
#include "wire/frame.h"

#define REPLY_OVERHEAD 1024u   /* budget for a reply's header (error sentences included) */

struct client;

struct wconn {
    struct r3_wire_server *s;
    struct r3_net_conn *c;
    unsigned inflight;         /* jobs queued or running (under s->mu) */
    char export_name[64];
    unsigned features;         /* R3_WIRE_F_* both sides speak (from the hello) */
    struct client *cl;         /* the client this connection belongs to, or NULL */
    atomic_uint_fast64_t nreq, rbytes, wbytes;
};

/* One log line per client: its connections (same client id from the same
 * host) are summed and logged when the last one goes. */
struct client {
    struct client *next;
    uint64_t id;
    char host[96], cn[64], export_name[64], why[256];
    bool tls;
    unsigned open, total;
    uint64_t t0, nreq, rbytes, wbytes;
};

enum job_kind { JOB_READ, JOB_WRITE, JOB_EXTENT };

struct job {
    struct job *next;
    struct wconn *w;
    uint64_t id, off, len;
    enum job_kind kind;
    bool write;                /* kind == JOB_WRITE */
    char *frame;               /* write: the frame that holds the data */
    const char *data;
    char *buf;                 /* read: the reply data (from the buffer pool when pooled) */
    bool pooled;
    size_t budget;             /* bytes of the in-flight budget held */
};

/* Read reply buffers are reused: a fresh 1 MiB malloc is a fresh mmap whose
 * every page faults in, and that cost more than the copy itself. */
#define POOL_SLOTS 64
#define POOL_BYTES (64u << 20)
struct bufpool {
    pthread_mutex_t mu;
    struct { void *p; size_t n; } slot[POOL_SLOTS];
    unsigned count;
    size_t bytes;
};

struct r3_wire_server {
    struct r3_wire_server_opts o;
    size_t max_frame;
    struct r3_net_server *net;
    pthread_mutex_t mu;
    pthread_cond_t work, changed;   /* jobs queued; a job finished */
    struct job *head, *tail;
    bool stop;
    struct bufpool pool;
    pthread_t *workers;
    unsigned nworkers;
    struct client *clients;
};

static bool read_only(struct r3_wire_server *s)
{
    return s->o.read_only || (s->o.src->flags & R3_SRC_RDONLY);
}

/* ---- reply buffers */

static void *pool_get(struct bufpool *bp, size_t n)
{
    pthread_mutex_lock(&bp->mu);
    for (unsigned i = bp->count; i-- > 0;) {
        if (bp->slot[i].n == n) {
            void *p = bp->slot[i].p;
            bp->slot[i] = bp->slot[--bp->count];
            bp->bytes -= n;
            pthread_mutex_unlock(&bp->mu);
            return p;
        }
    }
    pthread_mutex_unlock(&bp->mu);
    return malloc(n);
}

static void pool_put(struct bufpool *bp, void *p, size_t n)
{
    pthread_mutex_lock(&bp->mu);
    if (bp->count == POOL_SLOTS || bp->bytes + n > POOL_BYTES) {
        /* make room by dropping a buffer of another size, else drop this one */
        unsigned i = 0;
        while (i < bp->count && bp->slot[i].n == n)
            i++;
        if (i == bp->count) {
            pthread_mutex_unlock(&bp->mu);
            free(p);
            return;
        }
        free(bp->slot[i].p);
        bp->bytes -= bp->slot[i].n;
        bp->slot[i] = bp->slot[--bp->count];
        if (bp->bytes + n > POOL_BYTES) {
            pthread_mutex_unlock(&bp->mu);
            free(p);
            return;
        }
    }
    bp->slot[bp->count].p = p;
    bp->slot[bp->count].n = n;
    bp->count++;
    bp->bytes += n;
    pthread_mutex_unlock(&bp->mu);
}

/* ---- replies */

static void job_free(struct job *j)
{
    struct r3_net_conn *c = j->w->c;
    free(j->frame);
    if (j->pooled)
        pool_put(&j->w->s->pool, j->buf, j->len);
    else
        free(j->buf);
    if (j->budget)
        r3_net_budget_release(c, j->budget);
    free(j);
    r3_net_conn_put(c);
}

static void job_done(void *arg)
{
    job_free(arg);
}

/* Queue j's reply (sb holds the header, data follows); j is freed once sent. */
static void send_reply(struct job *j, msgpack_sbuffer *sb, const void *data, size_t dlen)
{
    r3_net_conn_send(j->w->c, sb->data, sb->size, data, dlen, job_done, j);
}

static void reply(struct job *j, msgpack_sbuffer *sb, int err, const char *msg, bool has_val, uint64_t val,
                  const void *data, uint32_t dlen)
{
    msgpack_packer pk;
    r3_wire_start(sb, &pk);
    r3_wire_pack_reply(&pk, j->id, err, msg, has_val, val, data != NULL, dlen);
    r3_wire_finish(sb, data ? dlen : 0);
    send_reply(j, sb, data, data ? dlen : 0);
}

/* A job for a request the reader answers itself (or a connection-level error, id 0). */
static struct job *new_job(struct wconn *w, uint64_t id, size_t budget)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j) {
        if (budget)
            r3_net_budget_release(w->c, budget);
        return NULL;
    }
    j->w = w;
    j->id = id;
    j->budget = budget;
    r3_net_conn_hold(w->c);
    return j;
}

/* ---- workers */

/* True if the source says the whole range reads as zeros (a few extent
 * queries at most; an error or a DATA run says no). */
static bool range_is_zero(struct r3_source *src, uint64_t off, uint64_t len)
{
    uint64_t end = off + len;
    for (int i = 0; i < 16 && off < end; i++) {
        uint64_t run = 0;
        if (r3_source_extent(src, off, end - off, &run) != R3_EXTENT_ZERO || run == 0)
            return false;
        off += run;
    }
    return off >= end;
}

/* An extent request: answered from the source's own extent op. */
static void run_extent(struct r3_wire_server *s, struct job *j, msgpack_sbuffer *sb)
{
    struct wconn *w = j->w;
    uint64_t run = 0;
    int rc = r3_source_extent(s->o.src, j->off, j->len, &run);
    pthread_mutex_lock(&s->mu);
    w->inflight--;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0) {
        reply(j, sb, rc, r3_last_error(), false, 0, NULL, 0);
        return;
    }
    msgpack_packer pk;
    r3_wire_start(sb, &pk);
    r3_wire_pack_reply_extent(&pk, j->id, rc, run);
    r3_wire_finish(sb, 0);
    send_reply(j, sb, NULL, 0);
}

static void run_job(struct r3_wire_server *s, struct job *j, msgpack_sbuffer *sb)
{
    struct wconn *w = j->w;
    int rc;
    if (j->kind == JOB_EXTENT) {
        run_extent(s, j, sb);
        return;
    }
    if (!j->write && (w->features & R3_WIRE_F_ZERO) && range_is_zero(s->o.src, j->off, j->len)) {
        /* zeros: a flag, no payload; the client fills its buffer itself */
        atomic_fetch_add(&w->rbytes, j->len);
        pthread_mutex_lock(&s->mu);
        w->inflight--;
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->mu);
        msgpack_packer pk;
        r3_wire_start(sb, &pk);
        r3_wire_pack_reply_zero(&pk, j->id);
        r3_wire_finish(sb, 0);
        send_reply(j, sb, NULL, 0);
        return;
    }
    if (!j->write && !(j->buf = pool_get(&s->pool, j->len)))
        rc = r3_error(-ENOMEM, "r3serve: out of memory for a %" PRIu64 " byte read", j->len);
    else {
        j->pooled = !j->write;
        /* r3_source_* serializes a source that is not R3_SRC_PARALLEL */
        rc = j->write ? r3_source_write(s->o.src, j->data, j->len, j->off)
                      : r3_source_read(s->o.src, j->buf, j->len, j->off);
    }
    if (j->write) {
        /* the data is written: give its memory back before the ack waits in the queue */
        free(j->frame);
        j->frame = NULL;
        r3_net_budget_release(w->c, j->budget - REPLY_OVERHEAD);
        j->budget = REPLY_OVERHEAD;
    }
    if (rc == 0)
        atomic_fetch_add(j->write ? &w->wbytes : &w->rbytes, j->len);
    pthread_mutex_lock(&s->mu);
    w->inflight--;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        reply(j, sb, rc, r3_last_error(), false, 0, NULL, 0);
    else if (j->write)
        reply(j, sb, 0, NULL, false, 0, NULL, 0);
    else
        reply(j, sb, 0, NULL, false, 0, j->buf, (uint32_t)j->len);
}

static void *worker_main(void *arg)
{
    struct r3_wire_server *s = arg;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->work, &s->mu);
        if (!s->head)
            break;
        struct job *j = s->head;
        s->head = j->next;
        if (!s->head)
            s->tail = NULL;
        pthread_mutex_unlock(&s->mu);
        run_job(s, j, &sb);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    msgpack_sbuffer_destroy(&sb);
    return NULL;
}

/* ---- reading frames */

/* Read one frame (bounded by max) into a new buffer, after taking its bytes
 * (plus extra) from the budget. 0, -EPIPE at a clean end, -errno (why in
 * r3_last_error()). *len is set even when the frame is too long. */
static int read_frame(struct wconn *w, size_t max, size_t extra, char **out, uint32_t *len)
{
    struct r3_io *io = &w->c->io;
    uint8_t hdr[R3_WIRE_HDR];
    *len = 0;
    ssize_t n = r3_io_read_some(io, hdr, 1);
    if (n == 0)
        return -EPIPE;
    if (n < 0)
        return (int)n;
    int rc = r3_io_read_all(io, hdr + 1, R3_WIRE_HDR - 1);
    if (rc < 0)
        return rc == -EPIPE ? r3_error(-EPROTO, "truncated frame header") : rc;
    if (r3_wire_frame_len(hdr, max, len) < 0)
        return r3_error(-EMSGSIZE, "frame of %" PRIu32 " bytes (the maximum is %zu)", *len, max);
    if (extra && (rc = r3_net_budget_acquire(w->c, *len + extra)) < 0)
        return rc;
    char *b = malloc(*len);
    if (!b) {
        if (extra)
            r3_net_budget_release(w->c, *len + extra);
        return r3_error(-ENOMEM, "out of memory for a frame of %" PRIu32 " bytes", *len);
    }
    rc = r3_io_read_all(io, b, *len);
    if (rc < 0) {
        free(b);
        if (extra)
            r3_net_budget_release(w->c, *len + extra);
        return rc == -EPIPE ? r3_error(-EPROTO, "truncated frame (%" PRIu32 " bytes announced)", *len) : rc;
    }
    *out = b;
    return 0;
}

static bool method_is(const struct r3_wire_msg *m, const char *name)
{
    return m->method_len == strlen(name) && memcmp(m->method, name, m->method_len) == 0;
}

/* ---- hello */

static void pack_hello_error(msgpack_sbuffer *sb, int err, const char *msg)
{
    msgpack_packer pk;
    r3_wire_start(sb, &pk);
    r3_wire_pack_server_hello(&pk, err, msg, 0, 1, 0, 0, 0);
    r3_wire_finish(sb, 0);
}

/* Over the connection cap: an r3 hello error the client reports as is. */
static void refuse(void *arg, int fd, const char *why)
{
    (void)arg;
    char msg[200];
    snprintf(msg, sizeof msg, "r3serve: %s", why);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pack_hello_error(&sb, -EBUSY, msg);
    ssize_t n = send(fd, sb.data, sb.size, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)n;
    msgpack_sbuffer_destroy(&sb);
}

static void client_join(struct r3_wire_server *s, struct wconn *w, uint64_t id)
{
    const char *peer = w->c->peer;
    char host[96];
    snprintf(host, sizeof host, "%s", peer);
    char *colon = strrchr(host, ':');
    if (colon && colon != host && strcmp(host, "unix") != 0)
        *colon = 0;                        /* the host, without the connection's port */
    pthread_mutex_lock(&s->mu);
    struct client *cl = s->clients;
    while (cl && !(cl->id == id && strcmp(cl->host, host) == 0))
        cl = cl->next;
    if (!cl && (cl = calloc(1, sizeof *cl))) {
        cl->id = id;
        snprintf(cl->host, sizeof cl->host, "%s", host);
        snprintf(cl->cn, sizeof cl->cn, "%s", w->c->cn);
        snprintf(cl->export_name, sizeof cl->export_name, "%s", w->export_name);
        cl->tls = r3_io_is_tls(&w->c->io);
        cl->t0 = w->c->t_accept;
        cl->next = s->clients;
        s->clients = cl;
    }
    if (cl) {
        cl->open++;
        cl->total++;
    }
    w->cl = cl;
    pthread_mutex_unlock(&s->mu);
}

static int on_handshake(struct r3_net_conn *c)
{
    struct r3_wire_server *s = r3_net_server_arg(c);
    struct wconn *w = calloc(1, sizeof *w);
    if (!w)
        return r3_error(-ENOMEM, "out of memory");
    w->s = s;
    w->c = c;
    c->data = w;
    char *f = NULL;
    uint32_t len;
    int rc = read_frame(w, R3_WIRE_HELLO_MAX, 0, &f, &len);
    if (rc < 0) {
        r3_net_conn_why(c, "no hello: %s",
                 rc == -EPIPE ? "peer closed" : rc == -ETIMEDOUT ? "handshake deadline passed" : r3_last_error());
        return rc;
    }
    msgpack_unpacked up;
    struct r3_wire_msg m;
    rc = r3_wire_decode(f, len, &up, &m);
    int err = 0;
    char msg[200] = "";
    uint64_t client = 0;
    if (rc < 0 || m.type != R3_WIRE_HELLO) {
        err = -EPROTO;
        snprintf(msg, sizeof msg, "r3serve: expected a hello [\"r3\", 1, {...}]");
    } else if (m.version != R3_WIRE_VERSION) {
        err = -EPROTONOSUPPORT;
        snprintf(msg, sizeof msg, "r3serve: protocol version %" PRIu64 " is not supported (this server speaks %d)",
                 m.version, R3_WIRE_VERSION);
    } else {
        snprintf(w->export_name, sizeof w->export_name, "%.*s", (int)m.export_len,
                 m.export_name ? m.export_name : "");
        const char *want = s->o.export_name;
        if (want && want[0] && (m.export_len != strlen(want) || memcmp(m.export_name, want, m.export_len)))
            err = -ENOENT;
        /* never name the real export to a stranger */
        if (err)
            snprintf(msg, sizeof msg, "r3serve: no such export '%s'", w->export_name);
        client = m.has_client ? m.client : 0;
        w->features = (unsigned)(m.features & R3_WIRE_FEATURES);
    }
    msgpack_unpacked_destroy(&up);
    free(f);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (err) {
        pack_hello_error(&sb, err, msg);
    } else {
        msgpack_packer pk;
        r3_wire_start(&sb, &pk);
        unsigned flags = (s->o.src->flags & R3_SRC_PARALLEL) | (read_only(s) ? R3_SRC_RDONLY : 0);
        r3_wire_pack_server_hello(&pk, 0, NULL, s->o.src->size, s->o.src->align, flags, s->o.max_request,
                                  w->features);
        r3_wire_finish(&sb, 0);
    }
    r3_net_conn_send(c, sb.data, sb.size, NULL, 0, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
    if (err) {
        r3_net_conn_why(c, "refused: %s", msg);
        return err;
    }
    if (client)
        client_join(s, w, client);
    return 0;
}

/* ---- requests */

static void wait_inflight(struct wconn *w)
{
    struct r3_wire_server *s = w->s;
    pthread_mutex_lock(&s->mu);
    while (w->inflight > 0)
        pthread_cond_wait(&s->changed, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

/* A connection-level error: a reply with id 0, then the connection closes. */
static int drop(struct wconn *w, int err, const char *sentence, const char *reply_msg)
{
    r3_net_conn_why(w->c, "dropped: %s", sentence);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    struct job *j = new_job(w, 0, 0);
    if (j)
        reply(j, &sb, err, reply_msg, false, 0, NULL, 0);
    msgpack_sbuffer_destroy(&sb);
    return err;
}

static int on_readable(struct r3_net_conn *c)
{
    struct wconn *w = c->data;
    struct r3_wire_server *s = w->s;
    char *f = NULL;
    uint32_t len;
    int rc = read_frame(w, s->max_frame, REPLY_OVERHEAD, &f, &len);
    if (rc == -EPIPE) {
        r3_net_conn_why(c, "peer closed the connection");
        return rc;
    }
    if (rc == -EMSGSIZE) {
        char sentence[200];
        snprintf(sentence, sizeof sentence, "%s", r3_last_error());
        return drop(w, rc, sentence, sentence);
    }
    if (rc < 0) {
        r3_net_conn_why(c, "dropped: %s", r3_last_error());
        return rc;
    }
    size_t budget = len + REPLY_OVERHEAD;
    msgpack_unpacked up;
    struct r3_wire_msg m;
    rc = r3_wire_decode(f, len, &up, &m);
    if (rc < 0 || m.type != R3_WIRE_REQUEST) {
        msgpack_unpacked_destroy(&up);
        free(f);
        r3_net_budget_release(c, budget);
        return drop(w, -EPROTO, rc < 0 ? "a frame that is not a well-formed request" : "a frame that is not a request",
                    "r3serve: bad frame: expected [0, id, method, args]");
    }
    atomic_fetch_add(&w->nreq, 1);
    struct job *j = new_job(w, m.id, budget);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    bool rd = method_is(&m, "read"), wr = method_is(&m, "write");
    if (!j) {
        rc = r3_error(-ENOMEM, "out of memory");
    } else if (rd || wr) {
        char msg[200] = "";
        int err = 0;
        if (m.len > s->o.max_request) {
            err = -EMSGSIZE;
            snprintf(msg, sizeof msg, "r3serve: %s of %" PRIu64 " bytes is larger than the server's largest request (%zu)",
                     rd ? "read" : "write", m.len, s->o.max_request);
        } else if (wr && read_only(s)) {
            err = -EROFS;
            snprintf(msg, sizeof msg, "r3serve: the export is read-only");
        } else if (m.off > s->o.src->size || m.len > s->o.src->size - m.off) {
            err = wr ? -ENOSPC : -EINVAL;
            snprintf(msg, sizeof msg, "r3serve: %s of %" PRIu64 " bytes at %" PRIu64 " is past the end (%" PRIu64 " bytes)",
                     rd ? "read" : "write", m.len, m.off, s->o.src->size);
        }
        if (err < 0 || m.len == 0) {
            reply(j, &sb, err, msg, false, 0, rd && !err ? "" : NULL, 0);
        } else {
            j->off = m.off;
            j->len = m.len;
            j->write = wr;
            j->kind = wr ? JOB_WRITE : JOB_READ;
            if (wr) {
                j->frame = f;          /* m.data points into the frame */
                j->data = m.data;
                f = NULL;
            } else {
                /* the request frame is small; the reply is len bytes: take them first */
                free(f);
                f = NULL;
                r3_net_budget_release(c, len);
                j->budget = REPLY_OVERHEAD;
                rc = r3_net_budget_acquire(c, m.len);
                if (rc == 0) {
                    j->budget += m.len;
                } else if (rc == -EMSGSIZE) {
                    char why[200];
                    snprintf(why, sizeof why, "r3serve: %s (the server's in-flight budget)", r3_last_error());
                    reply(j, &sb, rc, why, false, 0, NULL, 0);
                    j = NULL;
                    rc = 0;
                }
            }
            if (rc == 0 && j) {
                pthread_mutex_lock(&s->mu);
                w->inflight++;
                if (s->tail)
                    s->tail->next = j;
                else
                    s->head = j;
                s->tail = j;
                pthread_cond_signal(&s->work);
                pthread_mutex_unlock(&s->mu);
            } else if (j) {
                job_free(j);
            }
        }
    } else if (method_is(&m, "extent") && (w->features & R3_WIRE_F_EXTENT)) {
        /* [OFF, LEN] -> [KIND, RUN], on a worker: the source may ask its own remote */
        r3_net_budget_release(c, len);
        j->budget = REPLY_OVERHEAD;
        if (m.len == 0 || m.off > s->o.src->size || m.len > s->o.src->size - m.off) {
            char msg[200];
            snprintf(msg, sizeof msg, "r3serve: extent of %" PRIu64 " bytes at %" PRIu64 " is outside the export "
                     "(%" PRIu64 " bytes)", m.len, m.off, s->o.src->size);
            reply(j, &sb, -EINVAL, msg, false, 0, NULL, 0);
        } else {
            j->off = m.off;
            j->len = m.len;
            j->kind = JOB_EXTENT;
            pthread_mutex_lock(&s->mu);
            w->inflight++;
            if (s->tail)
                s->tail->next = j;
            else
                s->head = j;
            s->tail = j;
            pthread_cond_signal(&s->work);
            pthread_mutex_unlock(&s->mu);
        }
    } else if (method_is(&m, "size")) {
        reply(j, &sb, 0, NULL, true, s->o.src->size, NULL, 0);
    } else if (method_is(&m, "flush")) {
        wait_inflight(w);
        int frc = read_only(s) ? 0 : r3_source_flush(s->o.src);
        reply(j, &sb, frc, frc < 0 ? r3_last_error() : NULL, false, 0, NULL, 0);
    } else if (s->o.call && m.method_len < 32) {
        /* the seeder's migration methods (src/migrate) */
        char name[32];
        memcpy(name, m.method, m.method_len);
        name[m.method_len] = 0;
        uint64_t val = 0;
        void *data = NULL;
        size_t dlen = 0;
        int crc = s->o.call(s->o.call_arg, name, m.off, m.len, &val, &data, &dlen);
        if (crc == 0 && data && dlen > s->o.max_request) {
            free(data);
            data = NULL;
            crc = r3_error(-EMSGSIZE, "r3serve: a '%s' reply of %zu bytes is larger than --max-request", name, dlen);
        }
        if (crc < 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s", r3_last_error());
            reply(j, &sb, crc, msg, false, 0, NULL, 0);
        } else if (data) {
            j->buf = data;             /* freed with the job, once sent */
            reply(j, &sb, 0, NULL, false, 0, data, (uint32_t)dlen);
        } else {
            reply(j, &sb, 0, NULL, true, val, NULL, 0);
        }
    } else if (method_is(&m, "track") || method_is(&m, "finalize") || method_is(&m, "close")) {
        char msg[96];
        snprintf(msg, sizeof msg, "r3serve: method '%.*s' is not supported yet", (int)m.method_len, m.method);
        reply(j, &sb, -ENOTSUP, msg, false, 0, NULL, 0);
    } else {
        char msg[96];
        snprintf(msg, sizeof msg, "r3serve: unknown method '%.*s'",
                 (int)(m.method_len > 32 ? 32 : m.method_len), m.method);
        reply(j, &sb, -ENOSYS, msg, false, 0, NULL, 0);
    }
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&up);
    free(f);
    if (rc < 0)
        r3_net_conn_why(c, "dropped: %s", r3_last_error());
    return rc;
}

/* ---- logging */

static bool normal_end(const char *why)
{
    return !why[0] || strcmp(why, "peer closed the connection") == 0 || strcmp(why, "server shutting down") == 0;
}

static bool on_close(struct r3_net_conn *c)
{
    struct wconn *w = c->data;
    if (!w)
        return false;              /* no hello started: src/net logs it */
    struct r3_wire_server *s = w->s;
    char line[700], a[32], b[32];
    bool logged = true;
    struct client *cl = w->cl;
    if (cl) {
        pthread_mutex_lock(&s->mu);
        cl->nreq += w->nreq;
        cl->rbytes += w->rbytes;
        cl->wbytes += w->wbytes;
        if (!normal_end(c->why) && !cl->why[0])
            snprintf(cl->why, sizeof cl->why, "%s", c->why);
        bool last = --cl->open == 0;
        if (last) {
            struct client **pp = &s->clients;
            while (*pp != cl)
                pp = &(*pp)->next;
            *pp = cl->next;
        }
        pthread_mutex_unlock(&s->mu);
        if (last) {
            snprintf(line, sizeof line, "%s%s%s%s%s export '%s': %u connection%s, %" PRIu64 " requests, %s read, "
                     "%s written in %.1f s; %s", cl->host, cl->tls ? " tls" : "", cl->cn[0] ? " (cn=" : "", cl->cn,
                     cl->cn[0] ? ")" : "", cl->export_name, cl->total, cl->total == 1 ? "" : "s", cl->nreq,
                     r3_fmt_bytes(cl->rbytes, a, sizeof a), r3_fmt_bytes(cl->wbytes, b, sizeof b),
                     (double)(r3_now_ns() - cl->t0) / 1e9,
                     cl->why[0] ? cl->why : c->why[0] ? c->why : "closed");
            if (s->o.log)
                s->o.log(s->o.log_arg, line);
            free(cl);
        }
    } else {
        snprintf(line, sizeof line, "%s%s%s%s%s export '%s': %" PRIu64 " requests, %s read, %s written in %.1f s; %s",
                 c->peer, r3_io_is_tls(&c->io) ? " tls" : "", c->cn[0] ? " (cn=" : "", c->cn, c->cn[0] ? ")" : "",
                 w->export_name, (uint64_t)w->nreq, r3_fmt_bytes(w->rbytes, a, sizeof a), r3_fmt_bytes(w->wbytes, b, sizeof b),
                 (double)(r3_now_ns() - c->t_accept) / 1e9, c->why[0] ? c->why : "closed");
        if (s->o.log)
            s->o.log(s->o.log_arg, line);
    }
    free(w);
    c->data = NULL;
    return logged;
}

/* ---- life */

int r3_wire_server_new(const struct r3_wire_server_opts *o, struct r3_wire_server **out)
{
    *out = NULL;
    if (!o->src)
        return r3_error(-EINVAL, "r3serve: no source to serve");
    if (!o->listen)
        return r3_error(-EINVAL, "r3serve: no address to listen on");
    struct r3_wire_server *s = calloc(1, sizeof *s);
    if (!s)
        return r3_error(-ENOMEM, "r3serve: out of memory");
    s->o = *o;
    if (!s->o.max_request)
        s->o.max_request = R3_WIRE_DEFAULT_MAX_REQUEST;
    if (s->o.max_request > (1u << 30))
        s->o.max_request = 1u << 30;
    s->max_frame = s->o.max_request + R3_WIRE_OVERHEAD;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->pool.mu, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->changed, NULL);
    struct r3_net_server_opts no = {
        .name = "r3serve", .tls = o->tls, .insecure = o->insecure, .max_connections = o->max_connections,
        .handshake_ms = (int)o->handshake_ms, .read_timeout_ms = (int)o->timeout_ms,
        .send_timeout_ms = (int)o->timeout_ms, .max_inflight = o->max_inflight,
        .h = { .handshake = on_handshake, .on_readable = on_readable, .on_close = on_close,
               .refuse = refuse, .arg = s },
        .log = o->log, .log_arg = o->log_arg,
    };
    int rc = r3_net_addr_parse(o->listen, 0, R3_NET_PASSIVE, &no.listen);
    if (rc < 0) {
        r3_error_prefix(rc, "r3serve: ");
        r3_wire_server_free(s);
        return rc;
    }
    unsigned n = o->workers ? o->workers : 8;
    s->workers = calloc(n, sizeof *s->workers);
    if (!s->workers) {
        r3_wire_server_free(s);
        return r3_error(-ENOMEM, "r3serve: out of memory");
    }
    for (; s->nworkers < n; s->nworkers++) {
        rc = r3_thread_create(&s->workers[s->nworkers], worker_main, s);
        if (rc < 0) {
            r3_wire_server_free(s);
            return r3_error(rc, "r3serve: cannot start worker threads");
        }
    }
    if ((rc = r3_net_server_start(&no, &s->net)) < 0) {
        char keep[512];
        snprintf(keep, sizeof keep, "%s", r3_last_error());
        r3_wire_server_free(s);
        return r3_error(rc, "%s", keep);
    }
    *out = s;
    return 0;
}

const char *r3_wire_server_address(struct r3_wire_server *s, char *buf, size_t n)
{
    return r3_net_addr_format(r3_net_server_addr(s->net), buf, n);
}

unsigned r3_wire_server_conns(struct r3_wire_server *s)
{
    return s->net ? r3_net_server_conns(s->net) : 0;
}

void r3_wire_server_free(struct r3_wire_server *s)
{
    if (!s)
        return;
    r3_net_server_stop(s->net);       /* every connection gone: no job is queued or running */
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i], NULL);
    free(s->workers);
    while (s->clients) {
        struct client *cl = s->clients;
        s->clients = cl->next;
        free(cl);
    }
    for (unsigned i = 0; i < s->pool.count; i++)
        free(s->pool.slot[i].p);
    pthread_mutex_destroy(&s->pool.mu);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->changed);
    free(s);
}
