/* The r3 protocol server: one reader thread per connection decodes frames and
 * queues read/write requests to a worker pool shared by all connections, so
 * requests of one connection run concurrently (when the source allows it)
 * and are answered in any order. size, unknown methods and errors are
 * answered by the reader; flush is a barrier: the reader waits until the
 * connection's earlier requests are done, then flushes. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"
#include "r3/wire.h"
#include "wire/frame.h"
#include "wire/tls.h"

#define HANDSHAKE_TIMEOUT_MS 10000
#define WRITE_TIMEOUT_MS 30000

struct conn;

struct job {
    struct job *next;
    struct conn *c;
    uint64_t id, off, len;
    bool write;
    char *frame;               /* write: owns the frame that holds the data */
    const char *data;
};

struct conn {
    struct r3_wire_server *s;
    struct conn *prev, *next;
    struct r3_io io;
    pthread_mutex_t wmu;       /* one reply frame at a time */
    bool wdead;                /* a reply write failed: stop writing */
    int refs;                  /* reader + queued jobs (under s->mu) */
    unsigned inflight;         /* queued or running jobs (under s->mu) */
    char peer[96], cn[64], export_name[64];
    uint64_t t0;
    atomic_uint_fast64_t nreq, rbytes, wbytes;
    char why[200];             /* why the connection ended */
};

struct r3_wire_server {
    struct r3_wire_server_opts o;
    size_t max_frame;
    pthread_mutex_t mu;
    pthread_cond_t work, changed;   /* jobs queued; a job finished / a conn ended */
    struct job *head, *tail;
    bool closing, stop;
    struct conn *conns;
    unsigned nconns;
    pthread_t *workers;
    unsigned nworkers;
    pthread_mutex_t src_mu;         /* serializes calls to a source without R3_SRC_PARALLEL */
};

static bool parallel(struct r3_wire_server *s)
{
    return s->o.src->flags & R3_SRC_PARALLEL;
}

/* Send one reply (header in sb, then optional data). Errors end the connection. */
static void send_frame(struct conn *c, msgpack_sbuffer *sb, const void *data, size_t dlen)
{
    struct iovec v[2] = { { sb->data, sb->size }, { (void *)data, dlen } };
    pthread_mutex_lock(&c->wmu);
    if (!c->wdead && r3_io_writev_all(&c->io, v, data ? 2 : 1) < 0) {
        c->wdead = true;
        if (!c->why[0])
            snprintf(c->why, sizeof c->why, "reply not delivered: %s", r3_last_error());
        r3_io_shutdown(&c->io);
    }
    pthread_mutex_unlock(&c->wmu);
}

static void reply(struct conn *c, msgpack_sbuffer *sb, uint64_t id, int err, const char *msg,
                  bool has_val, uint64_t val, const void *data, uint32_t dlen)
{
    msgpack_packer pk;
    r3_wire_start(sb, &pk);
    r3_wire_pack_reply(&pk, id, err, msg, has_val, val, data != NULL, dlen);
    r3_wire_finish(sb, data ? dlen : 0);
    send_frame(c, sb, data, data ? dlen : 0);
}

static const char *human(uint64_t v, char *buf, size_t n)
{
    if (v < 1024)
        snprintf(buf, n, "%" PRIu64 " B", v);
    else if (v < (1u << 20))
        snprintf(buf, n, "%.1f KiB", (double)v / 1024);
    else if (v < (1u << 30))
        snprintf(buf, n, "%.1f MiB", (double)v / (1 << 20));
    else
        snprintf(buf, n, "%.2f GiB", (double)v / (1 << 30));
    return buf;
}

static void conn_put(struct conn *c)
{
    struct r3_wire_server *s = c->s;
    pthread_mutex_lock(&s->mu);
    bool last = --c->refs == 0, closing = s->closing;
    if (last) {
        if (c->prev)
            c->prev->next = c->next;
        else
            s->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
    }
    pthread_mutex_unlock(&s->mu);
    if (!last)
        return;
    if (s->o.log) {
        char line[512], a[32], b[32];
        double secs = (double)(r3_now_ns() - c->t0) / 1e9;
        snprintf(line, sizeof line, "%s%s%s%s%s export '%s': %" PRIu64 " requests, %s read, %s written "
                 "in %.1f s; %s", c->peer, r3_io_is_tls(&c->io) ? " tls" : "",
                 c->cn[0] ? " (cn=" : "", c->cn, c->cn[0] ? ")" : "", c->export_name,
                 (uint64_t)c->nreq, human(c->rbytes, a, sizeof a),
                 human(c->wbytes, b, sizeof b), secs,
                 closing ? "server shutting down" : c->why[0] ? c->why : "closed");
        s->o.log(s->o.log_arg, line);
    }
    r3_io_close(&c->io);
    pthread_mutex_destroy(&c->wmu);
    free(c);
    pthread_mutex_lock(&s->mu);
    s->nconns--;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->mu);
}

static void run_job(struct r3_wire_server *s, struct job *j, msgpack_sbuffer *sb, char **buf, size_t *cap)
{
    struct conn *c = j->c;
    int rc;
    if (!parallel(s))
        pthread_mutex_lock(&s->src_mu);
    if (j->write) {
        rc = r3_source_write(s->o.src, j->data, j->len, j->off);
    } else {
        if (*cap < j->len) {
            char *nb = realloc(*buf, j->len);
            if (nb) {
                *buf = nb;
                *cap = j->len;
            }
        }
        rc = *cap < j->len ? r3_error(-ENOMEM, "r3serve: out of memory for a %" PRIu64 " byte read",
                                      j->len)
                           : r3_source_read(s->o.src, *buf, j->len, j->off);
    }
    if (!parallel(s))
        pthread_mutex_unlock(&s->src_mu);
    if (rc < 0)
        reply(c, sb, j->id, rc, r3_last_error(), false, 0, NULL, 0);
    else if (j->write)
        reply(c, sb, j->id, 0, NULL, false, 0, NULL, 0);
    else
        reply(c, sb, j->id, 0, NULL, false, 0, *buf, (uint32_t)j->len);
    if (rc == 0)
        atomic_fetch_add(j->write ? &c->wbytes : &c->rbytes, j->len);
}

static void *worker_main(void *arg)
{
    struct r3_wire_server *s = arg;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char *buf = NULL;
    size_t cap = 0;
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
        run_job(s, j, &sb, &buf, &cap);
        struct conn *c = j->c;
        free(j->frame);
        free(j);
        pthread_mutex_lock(&s->mu);
        c->inflight--;
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->mu);
        conn_put(c);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    free(buf);
    msgpack_sbuffer_destroy(&sb);
    return NULL;
}

/* Read one frame (bounded by max) into a new buffer. 0, -EPIPE at a clean end, -errno. */
static int read_frame(struct conn *c, size_t max, char **out, uint32_t *len)
{
    uint8_t hdr[R3_WIRE_HDR];
    ssize_t n = r3_io_read_some(&c->io, hdr, 1);
    if (n == 0)
        return -EPIPE;
    if (n < 0)
        return (int)n;
    int rc = r3_io_read_all(&c->io, hdr + 1, R3_WIRE_HDR - 1);
    if (rc < 0)
        return rc == -EPIPE ? r3_error(-EPROTO, "truncated frame header") : rc;
    if (r3_wire_frame_len(hdr, max, len) < 0)
        return r3_error(-EMSGSIZE, "frame of %" PRIu32 " bytes (the maximum is %zu)", *len, max);
    char *b = malloc(*len);
    if (!b)
        return r3_error(-ENOMEM, "out of memory for a frame of %" PRIu32 " bytes", *len);
    rc = r3_io_read_all(&c->io, b, *len);
    if (rc < 0) {
        free(b);
        return rc == -EPIPE ? r3_error(-EPROTO, "truncated frame (%" PRIu32 " bytes announced)", *len)
                            : rc;
    }
    *out = b;
    return 0;
}

static bool method_is(const struct r3_wire_msg *m, const char *name)
{
    return m->method_len == strlen(name) && memcmp(m->method, name, m->method_len) == 0;
}

/* Hello exchange; 0 or -errno with c->why set. */
static int do_hello(struct conn *c, msgpack_sbuffer *sb)
{
    struct r3_wire_server *s = c->s;
    char *f = NULL;
    uint32_t len;
    msgpack_unpacked up;
    struct r3_wire_msg m;
    c->io.rtimeout_ms = HANDSHAKE_TIMEOUT_MS;
    int rc = read_frame(c, R3_WIRE_HELLO_MAX, &f, &len);
    if (rc < 0) {
        snprintf(c->why, sizeof c->why, "no hello: %s", rc == -EPIPE ? "peer closed" : r3_last_error());
        return rc;
    }
    rc = r3_wire_decode(f, len, &up, &m);
    int err = 0;
    char msg[160] = "";
    if (rc < 0 || m.type != R3_WIRE_HELLO) {
        err = -EPROTO;
        snprintf(msg, sizeof msg, "r3serve: expected a hello [\"r3\", 1, {...}]");
    } else if (m.version != R3_WIRE_VERSION) {
        err = -EPROTONOSUPPORT;
        snprintf(msg, sizeof msg, "r3serve: protocol version %" PRIu64 " is not supported (this server speaks %d)",
                 m.version, R3_WIRE_VERSION);
    } else {
        snprintf(c->export_name, sizeof c->export_name, "%.*s", (int)m.export_len,
                 m.export_name ? m.export_name : "");
        const char *want = s->o.export_name;
        if (want && want[0] && (m.export_len != strlen(want) || memcmp(m.export_name, want, m.export_len))) {
            err = -ENOENT;
            snprintf(msg, sizeof msg, "r3serve: no export '%s' (this server has '%s')", c->export_name, want);
        }
    }
    msgpack_unpacked_destroy(&up);
    free(f);
    msgpack_packer pk;
    r3_wire_start(sb, &pk);
    unsigned flags = (s->o.src->flags & R3_SRC_PARALLEL) |
                     ((s->o.read_only || (s->o.src->flags & R3_SRC_RDONLY)) ? R3_SRC_RDONLY : 0);
    r3_wire_pack_server_hello(&pk, err, msg, s->o.src->size, s->o.src->align, flags, s->o.max_request);
    r3_wire_finish(sb, 0);
    send_frame(c, sb, NULL, 0);
    if (err < 0)
        snprintf(c->why, sizeof c->why, "refused: %s", msg);
    c->io.rtimeout_ms = -1;
    return err;
}

static void wait_inflight(struct conn *c, unsigned below)
{
    struct r3_wire_server *s = c->s;
    pthread_mutex_lock(&s->mu);
    while (c->inflight > below)
        pthread_cond_wait(&s->changed, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

static void serve(struct conn *c, msgpack_sbuffer *sb)
{
    struct r3_wire_server *s = c->s;
    bool ro = s->o.read_only || (s->o.src->flags & R3_SRC_RDONLY);
    for (;;) {
        char *f = NULL;
        uint32_t len;
        int rc = read_frame(c, s->max_frame, &f, &len);
        if (rc == -EPIPE) {
            snprintf(c->why, sizeof c->why, "peer closed the connection");
            return;
        }
        if (rc < 0) {
            snprintf(c->why, sizeof c->why, "dropped: %s", r3_last_error());
            if (rc == -EMSGSIZE)     /* tell the client why before hanging up */
                reply(c, sb, 0, rc, c->why + 9, false, 0, NULL, 0);
            return;
        }
        msgpack_unpacked up;
        struct r3_wire_msg m;
        rc = r3_wire_decode(f, len, &up, &m);
        if (rc < 0 || m.type != R3_WIRE_REQUEST) {
            msgpack_unpacked_destroy(&up);
            free(f);
            snprintf(c->why, sizeof c->why, "dropped: %s", rc < 0 ? "a frame that is not a well-formed request"
                                                                  : "a frame that is not a request");
            reply(c, sb, 0, -EPROTO, "r3serve: bad frame: expected [0, id, method, args]", false, 0, NULL, 0);
            return;
        }
        atomic_fetch_add(&c->nreq, 1);
        bool rd = method_is(&m, "read"), wr = method_is(&m, "write");
        if (rd || wr) {
            char msg[160] = "";
            int err = 0;
            if (m.len > s->o.max_request) {
                err = -EMSGSIZE;
                snprintf(msg, sizeof msg, "r3serve: %s of %" PRIu64 " bytes is larger than --max-request %zu",
                         rd ? "read" : "write", m.len, s->o.max_request);
            } else if (wr && ro) {
                err = -EROFS;
                snprintf(msg, sizeof msg, "r3serve: the export is read-only");
            } else if (m.off > s->o.src->size || m.len > s->o.src->size - m.off) {
                err = wr ? -ENOSPC : -EINVAL;
                snprintf(msg, sizeof msg, "r3serve: %s of %" PRIu64 " bytes at %" PRIu64 " is past the end (%" PRIu64 " bytes)",
                         rd ? "read" : "write", m.len, m.off, s->o.src->size);
            }
            if (err < 0 || m.len == 0) {
                reply(c, sb, m.id, err, msg, false, 0, rd ? "" : NULL, 0);
                msgpack_unpacked_destroy(&up);
                free(f);
                continue;
            }
            struct job *j = calloc(1, sizeof *j);
            if (!j) {
                reply(c, sb, m.id, -ENOMEM, "r3serve: out of memory", false, 0, NULL, 0);
                msgpack_unpacked_destroy(&up);
                free(f);
                continue;
            }
            j->c = c;
            j->id = m.id;
            j->off = m.off;
            j->len = m.len;
            j->write = wr;
            j->data = m.data;
            j->frame = wr ? f : NULL;
            if (!wr)
                free(f);
            msgpack_unpacked_destroy(&up);   /* m.data points into the frame, not the zone */
            wait_inflight(c, (s->o.max_inflight ? s->o.max_inflight : 64) - 1);
            pthread_mutex_lock(&s->mu);
            c->refs++;
            c->inflight++;
            if (s->tail)
                s->tail->next = j;
            else
                s->head = j;
            s->tail = j;
            pthread_cond_signal(&s->work);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        if (method_is(&m, "size")) {
            reply(c, sb, m.id, 0, NULL, true, s->o.src->size, NULL, 0);
        } else if (method_is(&m, "flush")) {
            wait_inflight(c, 0);
            if (!parallel(s))
                pthread_mutex_lock(&s->src_mu);
            rc = ro ? 0 : r3_source_flush(s->o.src);
            if (!parallel(s))
                pthread_mutex_unlock(&s->src_mu);
            reply(c, sb, m.id, rc, rc < 0 ? r3_last_error() : NULL, false, 0, NULL, 0);
        } else if (method_is(&m, "track") || method_is(&m, "finalize") || method_is(&m, "close")) {
            char msg[96];
            snprintf(msg, sizeof msg, "r3serve: method '%.*s' is not supported yet", (int)m.method_len, m.method);
            reply(c, sb, m.id, -ENOTSUP, msg, false, 0, NULL, 0);
        } else {
            char msg[96];
            snprintf(msg, sizeof msg, "r3serve: unknown method '%.*s'",
                     (int)(m.method_len > 32 ? 32 : m.method_len), m.method);
            reply(c, sb, m.id, -ENOSYS, msg, false, 0, NULL, 0);
        }
        msgpack_unpacked_destroy(&up);
        free(f);
    }
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct r3_wire_server *s = c->s;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    c->io.wtimeout_ms = WRITE_TIMEOUT_MS;
    int rc = 0;
    if (s->o.tls) {
        rc = r3_tls_accept(s->o.tls, &c->io, HANDSHAKE_TIMEOUT_MS);
        if (rc < 0)
            snprintf(c->why, sizeof c->why, "%s", r3_last_error());
        else
            r3_tls_peer_cn(&c->io, c->cn, sizeof c->cn);
    }
    if (rc == 0 && do_hello(c, &sb) == 0)
        serve(c, &sb);
    r3_io_shutdown(&c->io);
    msgpack_sbuffer_destroy(&sb);
    conn_put(c);
    return NULL;
}

int r3_wire_server_add_conn(struct r3_wire_server *s, int fd, const char *peer)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return r3_error(-ENOMEM, "r3serve: out of memory");
    }
    c->s = s;
    c->refs = 1;
    c->t0 = r3_now_ns();
    snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "?");
    pthread_mutex_init(&c->wmu, NULL);
    int rc = r3_io_init(&c->io, fd);
    pthread_mutex_lock(&s->mu);
    if (rc == 0 && s->closing)
        rc = r3_error(-ESHUTDOWN, "r3serve: shutting down");
    if (rc < 0) {
        pthread_mutex_unlock(&s->mu);
        r3_io_close(&c->io);
        pthread_mutex_destroy(&c->wmu);
        free(c);
        return rc;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    pthread_mutex_unlock(&s->mu);
    pthread_t t;
    if ((rc = r3_thread_create(&t, conn_main, c)) == 0) {
        pthread_detach(t);
        return 0;
    }
    snprintf(c->why, sizeof c->why, "cannot start a thread");
    conn_put(c);
    return r3_error(rc, "r3serve: cannot start a connection thread");
}

unsigned r3_wire_server_conns(struct r3_wire_server *s)
{
    pthread_mutex_lock(&s->mu);
    unsigned n = s->nconns;
    pthread_mutex_unlock(&s->mu);
    return n;
}

int r3_wire_server_new(const struct r3_wire_server_opts *o, struct r3_wire_server **out)
{
    *out = NULL;
    if (!o->src)
        return r3_error(-EINVAL, "r3serve: no source to serve");
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
    pthread_mutex_init(&s->src_mu, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->changed, NULL);
    unsigned n = o->workers ? o->workers : 8;
    s->workers = calloc(n, sizeof *s->workers);
    if (!s->workers) {
        r3_wire_server_free(s);
        return r3_error(-ENOMEM, "r3serve: out of memory");
    }
    for (; s->nworkers < n; s->nworkers++) {
        int rc = r3_thread_create(&s->workers[s->nworkers], worker_main, s);
        if (rc < 0) {
            r3_wire_server_free(s);
            return r3_error(rc, "r3serve: cannot start worker threads");
        }
    }
    *out = s;
    return 0;
}

void r3_wire_server_free(struct r3_wire_server *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->closing = true;
    for (struct conn *c = s->conns; c; c = c->next)
        r3_io_shutdown(&c->io);
    while (s->nconns > 0)
        pthread_cond_wait(&s->changed, &s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i], NULL);
    free(s->workers);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->src_mu);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->changed);
    free(s);
}
