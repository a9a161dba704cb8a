/* NBD server: fixed newstyle handshake, then transmission with several
 * worker threads per connection taking turns at reading requests (leader /
 * followers, no hand-off queue) and sending each reply as soon as its request
 * is done. Every length from the wire is bounded before use. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "internal.h"
#include "nbd/io.h"
#include "nbd/proto.h"
#include "nbd/server.h"

#define RBUF_SIZE (64u << 10)
#define ZERO_SIZE (1u << 20)
#define KEEP_BUF  (4u << 20)      /* worker buffers above this are freed after use */
#define BATCH_MAX 32              /* READs answered together by one worker */
#define BATCH_BYTES (1u << 20)
#define FAST_NS 30000             /* a source faster than this gets batched */

struct export {
    struct r3_nbd_export e;
    char *name, *desc;
    bool serialize;               /* source is not R3_SRC_PARALLEL */
    bool direct;                  /* the source's bytes are in our memory (mem:) */
    _Atomic uint64_t read_ns;     /* moving average of a source read */
    pthread_mutex_t mu;
};

struct conn;

struct r3_nbd_server {
    struct r3_nbd_server_opts o;
    struct export *exp;
    size_t nexp;
    int lfd, port;
    char *unix_path;
    void *tls;                    /* SSL_CTX * */
    unsigned char *zeros;
    pthread_t acceptor;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct conn *conns;           /* live connections */
    unsigned nconns;
    bool stopping;
};

struct conn {
    struct r3_nbd_server *srv;
    struct conn *next, *prev;
    struct nbd_io io;
    const struct export *exp;
    bool structured, no_zeroes;
    uint16_t tflags;
    pthread_mutex_t recv_mu, send_mu;
    pthread_rwlock_t gate;        /* writes hold it shared; death takes it exclusive */
    atomic_bool dead;             /* no more writes may land */
    atomic_bool disc;             /* NBD_CMD_DISC seen: finish what is in flight */
    atomic_uint running;          /* worker threads alive */
    uint64_t t0;                  /* accepted at (r3_now_ns) */
    atomic_uint_fast64_t nreq, rbytes, wbytes;   /* for the log line */
    char peer[96];
    char why[200];                /* how it ended (first reason wins) */
    unsigned char rbuf[RBUF_SIZE];
    size_t rpos, rlen;
};

/* A line for the caller's log (never printed here). */
static void logf_(struct r3_nbd_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct r3_nbd_server *s, const char *fmt, ...)
{
    if (!s->o.log)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->o.log(s->o.log_arg, line);
}

/* Why the connection ends; the first reason is kept. */
static void conn_why(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_why(struct conn *c, const char *fmt, ...)
{
    pthread_mutex_lock(&c->send_mu);
    if (!c->why[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->why, sizeof c->why, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&c->send_mu);
}

static const char *human(uint64_t v, char *buf, size_t n)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double d = (double)v;
    int u = 0;
    while (d >= 1024 && u < 4) {
        d /= 1024;
        u++;
    }
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", d, unit[u]);
    return buf;
}

/* The one line per connection, when it ends. */
static void conn_log(struct conn *c)
{
    char a[32], b[32];
    struct r3_nbd_server *s = c->srv;
    double secs = (double)(r3_now_ns() - c->t0) / 1e9;
    pthread_mutex_lock(&s->mu);
    bool stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (!c->exp) {
        logf_(s, "nbd %s%s: no export chosen in %.1f s; %s", c->peer, nbd_io_is_tls(&c->io) ? " tls" : "",
              secs, c->why[0] ? c->why : "closed");
        return;
    }
    logf_(s, "nbd %s%s export '%s': %" PRIu64 " requests, %s read, %s written in %.1f s; %s", c->peer,
          nbd_io_is_tls(&c->io) ? " tls" : "", c->exp->name, (uint64_t)atomic_load(&c->nreq),
          human(atomic_load(&c->rbytes), a, sizeof a), human(atomic_load(&c->wbytes), b, sizeof b), secs,
          stopping ? "server shutting down" : c->why[0] ? c->why : "closed");
}

/* ---- buffered input (transmission phase; recv_mu held) */

static int conn_read(struct conn *c, void *dst, size_t len)
{
    char *p = dst;
    while (len) {
        if (c->rpos < c->rlen) {
            size_t n = c->rlen - c->rpos < len ? c->rlen - c->rpos : len;
            memcpy(p, c->rbuf + c->rpos, n);
            c->rpos += n;
            p += n;
            len -= n;
            continue;
        }
        if (len >= RBUF_SIZE)             /* big payloads go straight to their buffer */
            return nbd_io_read(&c->io, p, len);
        ssize_t n = nbd_io_read_some(&c->io, c->rbuf, RBUF_SIZE);
        if (n <= 0)
            return n == 0 ? -EPIPE : (int)n;
        c->rpos = 0;
        c->rlen = (size_t)n;
    }
    return 0;
}

static int conn_skip(struct conn *c, uint64_t len)
{
    size_t have = c->rlen - c->rpos;
    size_t n = have < len ? have : (size_t)len;
    c->rpos += n;
    len -= n;
    return len ? nbd_io_skip(&c->io, (size_t)len) : 0;
}

/* ---- connection lifetime */

/* Fence: after this returns no write of this connection is in progress and
 * none will start, so a write that outlived its client cannot overwrite
 * newer data written through another connection. */
static void conn_kill(struct conn *c)
{
    if (atomic_load(&c->dead))
        return;
    nbd_io_shutdown(&c->io);
    pthread_rwlock_wrlock(&c->gate);
    atomic_store(&c->dead, true);
    pthread_rwlock_unlock(&c->gate);
}

static void conn_free(struct conn *c)
{
    struct r3_nbd_server *s = c->srv;
    pthread_mutex_lock(&s->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&s->mu);
    conn_log(c);
    nbd_io_close(&c->io);
    pthread_mutex_destroy(&c->recv_mu);
    pthread_mutex_destroy(&c->send_mu);
    pthread_rwlock_destroy(&c->gate);
    free(c);
    /* Counted down last: stop() frees the server once this reaches 0. */
    pthread_mutex_lock(&s->mu);
    s->nconns--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void conn_leave(struct conn *c)
{
    if (atomic_fetch_sub(&c->running, 1) == 1)
        conn_free(c);
}

/* ---- handshake */

static int send_rep(struct conn *c, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
    unsigned char h[20];
    nbd_put64(h, NBD_REP_MAGIC);
    nbd_put32(h + 8, opt);
    nbd_put32(h + 12, type);
    nbd_put32(h + 16, len);
    struct iovec v[2] = { { h, sizeof h }, { (void *)data, len } };
    return nbd_io_writev(&c->io, v, len ? 2 : 1);
}

static int send_err(struct conn *c, uint32_t opt, uint32_t type, const char *msg)
{
    return send_rep(c, opt, type, msg, (uint32_t)strlen(msg));
}

static const struct export *find_export(struct r3_nbd_server *s, const char *name)
{
    for (size_t i = 0; i < s->nexp; i++)
        if (strcmp(s->exp[i].name, name) == 0)
            return &s->exp[i];
    return NULL;
}

static uint16_t export_flags(const struct export *x)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE;
    if (x->e.readonly)
        f |= NBD_FLAG_READ_ONLY;
    else
        f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
    /* Every connection writes straight to the one shared source and replies
     * after the write is in it, and FLUSH flushes that source: a flush on any
     * connection covers completed writes from all of them. */
    f |= NBD_FLAG_CAN_MULTI_CONN;
    return f;
}

static int send_info(struct conn *c, uint32_t opt, uint16_t type, const void *data, size_t len)
{
    unsigned char b[2 + NBD_MAX_NAME + 1];
    nbd_put16(b, type);
    memcpy(b + 2, data, len);
    return send_rep(c, opt, NBD_REP_INFO, b, (uint32_t)(2 + len));
}

/* NBD_OPT_INFO / NBD_OPT_GO. Returns 1 when transmission should start. */
static int opt_info_go(struct conn *c, uint32_t opt, const unsigned char *d, uint32_t len)
{
    struct r3_nbd_server *s = c->srv;
    if (len < 6)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "option too short");
    uint32_t nl = nbd_get32(d);
    if (nl > NBD_MAX_NAME || nl > len - 6)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "export name length out of range");
    uint16_t nreq = nbd_get16(d + 4 + nl);
    if (6 + nl + 2u * nreq != len)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "option length does not match its content");
    char name[NBD_MAX_NAME + 1];
    memcpy(name, d + 4, nl);
    name[nl] = 0;
    if (memchr(name, 0, nl))
        return send_err(c, opt, NBD_REP_ERR_INVALID, "export name contains NUL");
    const struct export *x = find_export(s, name);
    if (!x)
        return send_err(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");
    unsigned char b[12];
    nbd_put64(b, x->e.src->size);
    nbd_put16(b + 8, export_flags(x));
    int rc = send_info(c, opt, NBD_INFO_EXPORT, b, 10);
    for (uint16_t i = 0; rc == 0 && i < nreq; i++) {
        uint16_t t = nbd_get16(d + 6 + nl + 2 * i);
        if (t == NBD_INFO_NAME)
            rc = send_info(c, opt, NBD_INFO_NAME, x->name, strlen(x->name));
        else if (t == NBD_INFO_DESCRIPTION && x->desc)
            rc = send_info(c, opt, NBD_INFO_DESCRIPTION, x->desc, strlen(x->desc));
    }
    /* Any alignment works (the source layer handles it); 4 KiB is what we
     * prefer, and max_request is the most we take in one request. */
    unsigned char bs[12];
    nbd_put32(bs, 1);
    nbd_put32(bs + 4, 4096);
    nbd_put32(bs + 8, s->o.max_request);
    if (rc == 0)
        rc = send_info(c, opt, NBD_INFO_BLOCK_SIZE, bs, 12);
    if (rc == 0)
        rc = send_rep(c, opt, NBD_REP_ACK, NULL, 0);
    if (rc == 0 && opt == NBD_OPT_GO) {
        c->exp = x;
        c->tflags = export_flags(x);
        return 1;
    }
    return rc;
}

static int opt_list(struct conn *c)
{
    for (size_t i = 0; i < c->srv->nexp; i++) {
        const struct export *x = &c->srv->exp[i];
        size_t nl = strlen(x->name), dl = x->desc ? strlen(x->desc) : 0;
        if (dl > NBD_MAX_NAME)
            dl = NBD_MAX_NAME;
        unsigned char b[4 + 2 * NBD_MAX_NAME];
        nbd_put32(b, (uint32_t)nl);
        memcpy(b + 4, x->name, nl);
        if (dl)
            memcpy(b + 4 + nl, x->desc, dl);
        int rc = send_rep(c, NBD_OPT_LIST, NBD_REP_SERVER, b, (uint32_t)(4 + nl + dl));
        if (rc < 0)
            return rc;
    }
    return send_rep(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

/* 1 = go to transmission, 0 = close quietly, <0 = error. */
static int handshake(struct conn *c)
{
    struct r3_nbd_server *s = c->srv;
    unsigned char h[18];
    nbd_put64(h, NBD_MAGIC);
    nbd_put64(h + 8, NBD_IHAVEOPT);
    nbd_put16(h + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    int rc = nbd_io_write(&c->io, h, sizeof h);
    unsigned char cf[4];
    if (rc == 0)
        rc = nbd_io_read(&c->io, cf, 4);
    if (rc < 0)
        return rc;
    uint32_t cflags = nbd_get32(cf);
    if (cflags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
        return r3_error(-EPROTO, "unknown client flags 0x%x", cflags);
    bool fixed = cflags & NBD_FLAG_C_FIXED_NEWSTYLE;
    c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;
    unsigned char *d = malloc(NBD_MAX_OPTION);
    if (!d)
        return -ENOMEM;
    for (unsigned nopt = 0;; nopt++) {
        unsigned char oh[16];
        if (nopt > 1000) {
            rc = r3_error(-EPROTO, "too many options");
            break;
        }
        if ((rc = nbd_io_read(&c->io, oh, 16)) < 0)
            break;
        if (nbd_get64(oh) != NBD_IHAVEOPT) {
            rc = r3_error(-EPROTO, "bad option magic");
            break;
        }
        uint32_t opt = nbd_get32(oh + 8), len = nbd_get32(oh + 12);
        bool known = opt == NBD_OPT_EXPORT_NAME || opt == NBD_OPT_ABORT || opt == NBD_OPT_LIST ||
                     opt == NBD_OPT_STARTTLS || opt == NBD_OPT_INFO || opt == NBD_OPT_GO ||
                     opt == NBD_OPT_STRUCTURED_REPLY;
        if (opt == NBD_OPT_EXPORT_NAME) {
            if (len > NBD_MAX_NAME) {
                rc = r3_error(-EPROTO, "export name of %u bytes", len);
                break;
            }
            char name[NBD_MAX_NAME + 1];
            if ((rc = nbd_io_read(&c->io, name, len)) < 0)
                break;
            name[len] = 0;
            /* No error reply is possible here: refusing means closing. */
            if (s->tls && !nbd_io_is_tls(&c->io)) {
                rc = r3_error(-EACCES, "EXPORT_NAME without TLS refused");
                break;
            }
            const struct export *x = find_export(s, name);
            if (!x) {
                rc = r3_error(-ENOENT, "unknown export '%s'", name);
                break;
            }
            unsigned char r[10 + 124] = { 0 };
            nbd_put64(r, x->e.src->size);
            nbd_put16(r + 8, export_flags(x));
            if ((rc = nbd_io_write(&c->io, r, c->no_zeroes ? 10 : sizeof r)) < 0)
                break;
            c->exp = x;
            c->tflags = export_flags(x);
            rc = 1;
            break;
        }
        if (!known || len > NBD_MAX_OPTION) {
            if (!fixed) {
                rc = r3_error(-EPROTO, "option %u from a non-fixed-newstyle client", opt);
                break;
            }
            if (len > NBD_MAX_SKIP) {
                rc = r3_error(-EPROTO, "option %u with %u bytes of payload", opt, len);
                break;
            }
            if ((rc = nbd_io_skip(&c->io, len)) < 0)
                break;
            rc = known ? send_err(c, opt, NBD_REP_ERR_TOO_BIG, "option payload too large")
                       : send_err(c, opt, NBD_REP_ERR_UNSUP, "option not supported");
            if (rc < 0)
                break;
            continue;
        }
        if ((rc = nbd_io_read(&c->io, d, len)) < 0)
            break;
        if (opt == NBD_OPT_ABORT) {
            send_rep(c, opt, NBD_REP_ACK, NULL, 0);
            rc = 0;
            break;
        }
        /* With TLS configured, a plaintext client may only start TLS or
         * leave (tls_required is implied). */
        if (s->tls && !nbd_io_is_tls(&c->io) && opt != NBD_OPT_STARTTLS) {
            if ((rc = send_err(c, opt, NBD_REP_ERR_TLS_REQD, "TLS is required")) < 0)
                break;
            continue;
        }
        switch (opt) {
        case NBD_OPT_LIST:
            if (!s->o.list_exports)
                rc = send_err(c, opt, NBD_REP_ERR_POLICY, "listing exports is disabled");
            else
                rc = len ? send_err(c, opt, NBD_REP_ERR_INVALID, "LIST takes no data") : opt_list(c);
            break;
        case NBD_OPT_STRUCTURED_REPLY:
            if (len)
                rc = send_err(c, opt, NBD_REP_ERR_INVALID, "STRUCTURED_REPLY takes no data");
            else {
                c->structured = true;
                rc = send_rep(c, opt, NBD_REP_ACK, NULL, 0);
            }
            break;
        case NBD_OPT_STARTTLS:
            if (len)
                rc = send_err(c, opt, NBD_REP_ERR_INVALID, "STARTTLS takes no data");
            else if (!s->tls)
                rc = send_err(c, opt, NBD_REP_ERR_UNSUP, "TLS is not configured");
            else if (nbd_io_is_tls(&c->io))
                rc = send_err(c, opt, NBD_REP_ERR_INVALID, "TLS is already on");
            else if ((rc = send_rep(c, opt, NBD_REP_ACK, NULL, 0)) == 0) {
                rc = nbd_tls_accept(s->tls, &c->io);
                /* Options negotiated before TLS are forgotten (spec). */
                c->structured = false;
            }
            break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO:
            rc = opt_info_go(c, opt, d, len);
            break;
        }
        if (rc != 0)
            break;
    }
    free(d);
    return rc;
}

/* ---- transmission */

static int nbd_errno(int rc)
{
    switch (-rc) {
    case EPERM: case EROFS: case EACCES: return NBD_EPERM;
    case ENOMEM: return NBD_ENOMEM;
    case EINVAL: return NBD_EINVAL;
    case ENOSPC: case EFBIG: return NBD_ENOSPC;
    case EOVERFLOW: return NBD_EOVERFLOW;
    case ENOTSUP: return NBD_ENOTSUP;
    case ESHUTDOWN: return NBD_ESHUTDOWN;
    default: return NBD_EIO;
    }
}

/* One request of a batch, and its reply. */
struct req {
    uint16_t flags, type;
    uint64_t cookie, off;
    uint32_t len;
    int err;
    bool drop;                    /* fenced write: no reply */
    const void *data;             /* READ payload to send */
    size_t rlen;
    unsigned char h[32];
};

static size_t build_reply(struct conn *c, struct req *r)
{
    unsigned char *h = r->h;
    if (c->structured && r->type == NBD_CMD_READ) {
        nbd_put32(h, NBD_STRUCTURED_REPLY_MAGIC);
        nbd_put16(h + 4, NBD_REPLY_FLAG_DONE);
        nbd_put64(h + 8, r->cookie);
        if (r->err) {
            nbd_put16(h + 6, NBD_REPLY_TYPE_ERROR);
            nbd_put32(h + 16, 6);
            nbd_put32(h + 20, (uint32_t)r->err);
            nbd_put16(h + 24, 0);
            return 26;
        }
        nbd_put16(h + 6, NBD_REPLY_TYPE_OFFSET_DATA);
        nbd_put32(h + 16, (uint32_t)(8 + r->rlen));
        nbd_put64(h + 20, r->off);
        return 28;
    }
    nbd_put32(h, NBD_SIMPLE_REPLY_MAGIC);
    nbd_put32(h + 4, (uint32_t)r->err);
    nbd_put64(h + 8, r->cookie);
    return 16;
}

static int send_replies(struct conn *c, struct req *rs, int n)
{
    struct iovec v[2 * BATCH_MAX];
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (rs[i].drop)
            continue;
        v[k++] = (struct iovec){ rs[i].h, build_reply(c, &rs[i]) };
        if (!rs[i].err && rs[i].rlen)
            v[k++] = (struct iovec){ (void *)rs[i].data, rs[i].rlen };
    }
    if (k == 0)
        return 0;
    /* Replies of an in-memory source point straight at its bytes: the
     * kernel copies them once, into the socket. (Splicing the pages instead
     * measured slower on loopback: the receiver copies 4 KiB fragments.) */
    pthread_mutex_lock(&c->send_mu);
    int rc = atomic_load(&c->dead) ? -EPIPE : nbd_io_writev(&c->io, v, k);
    pthread_mutex_unlock(&c->send_mu);
    return rc;
}

static int src_call(const struct export *x, int (*fn)(struct r3_source *, void *, size_t, uint64_t),
                    void *buf, size_t len, uint64_t off)
{
    if (x->serialize)
        pthread_mutex_lock((pthread_mutex_t *)&x->mu);
    int rc = fn(x->e.src, buf, len, off);
    if (x->serialize)
        pthread_mutex_unlock((pthread_mutex_t *)&x->mu);
    return rc;
}

static int do_read(struct r3_source *s, void *b, size_t l, uint64_t o) { return r3_source_read(s, b, l, o); }
static int do_write(struct r3_source *s, void *b, size_t l, uint64_t o) { return r3_source_write(s, b, l, o); }
static int do_flush(struct r3_source *s, void *b, size_t l, uint64_t o) { return r3_source_flush(s); }

struct wbuf { unsigned char *p; size_t cap; };

static int wbuf_need(struct wbuf *b, size_t len)
{
    if (b->cap >= len)
        return 0;
    free(b->p);
    b->p = malloc(len < 4096 ? 4096 : len);
    b->cap = b->p ? (len < 4096 ? 4096 : len) : 0;
    return b->p ? 0 : -ENOMEM;
}

static void wbuf_trim(struct wbuf *b)
{
    if (b->cap > KEEP_BUF) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}

/* Is a DISC still waiting in our input buffer? Walks the buffered requests
 * (recv_mu held). */
static bool disc_buffered(struct conn *c)
{
    size_t p = c->rpos;
    while (c->rlen - p >= NBD_REQUEST_SIZE) {
        const unsigned char *h = c->rbuf + p;
        if (nbd_get32(h) != NBD_REQUEST_MAGIC)
            return false;
        if (nbd_get16(h + 6) == NBD_CMD_DISC)
            return true;
        uint64_t skip = NBD_REQUEST_SIZE + (nbd_get16(h + 6) == NBD_CMD_WRITE ? nbd_get32(h + 24) : 0);
        if (skip > c->rlen - p)
            return false;
        p += (size_t)skip;
    }
    return false;
}

/* Has the client gone away (reset, or closed without NBD_CMD_DISC)? Writes
 * it left behind in our buffers must not land after newer writes from
 * other connections, so each write asks before it starts. POLLRDHUP is set
 * as soon as the peer's FIN or RST arrives, even with its requests still
 * queued unread. */
static bool peer_gone(struct conn *c)
{
    struct pollfd p = { .fd = c->io.fd, .events = POLLIN | POLLRDHUP };
    if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
        return false;
    pthread_mutex_lock(&c->recv_mu);
    bool gone = !atomic_load(&c->disc) && !disc_buffered(c);
    pthread_mutex_unlock(&c->recv_mu);
    return gone;
}

/* Run one mutating request under the connection's gate; -ESHUTDOWN if the
 * connection is dead (the write is dropped, nothing is replied). */
static int gated(struct conn *c, int (*fn)(struct conn *, void *, size_t, uint64_t, uint16_t),
                 void *buf, size_t len, uint64_t off, uint16_t flags)
{
    if (!atomic_load(&c->dead) && peer_gone(c))
        conn_kill(c);
    pthread_rwlock_rdlock(&c->gate);
    int rc = atomic_load(&c->dead) ? -ESHUTDOWN : fn(c, buf, len, off, flags);
    pthread_rwlock_unlock(&c->gate);
    return rc;
}

static int op_write(struct conn *c, void *buf, size_t len, uint64_t off, uint16_t flags)
{
    int rc = src_call(c->exp, do_write, buf, len, off);
    if (rc == 0 && (flags & NBD_CMD_FLAG_FUA))
        rc = src_call(c->exp, do_flush, NULL, 0, 0);
    return rc;
}

static int op_zero(struct conn *c, void *unused, size_t len, uint64_t off, uint16_t flags)
{
    int rc = 0;
    while (rc == 0 && len) {
        size_t n = len < ZERO_SIZE ? len : ZERO_SIZE;
        rc = src_call(c->exp, do_write, c->srv->zeros, n, off);
        off += n;
        len -= n;
    }
    if (rc == 0 && (flags & NBD_CMD_FLAG_FUA))
        rc = src_call(c->exp, do_flush, NULL, 0, 0);
    return rc;
}

static int op_trim(struct conn *c, void *unused, size_t len, uint64_t off, uint16_t flags)
{
    /* Trim is advisory: the data may stay. FUA still means durable. */
    return (flags & NBD_CMD_FLAG_FUA) ? src_call(c->exp, do_flush, NULL, 0, 0) : 0;
}

static bool export_fast(const struct export *x)
{
    return x->direct || atomic_load_explicit(&x->read_ns, memory_order_relaxed) < FAST_NS;
}

/* Read one request (recv_mu held), a WRITE's payload into b. Returns 0, 1 to
 * stop this worker quietly (DISC), or -errno with the connection killed. */
static int take_request(struct conn *c, struct req *r, struct wbuf *b)
{
    struct r3_nbd_server *s = c->srv;
    const struct export *x = c->exp;
    uint64_t size = x->e.src->size;
    unsigned char h[NBD_REQUEST_SIZE];
    int rc = conn_read(c, h, sizeof h);
    if (rc < 0 || nbd_get32(h) != NBD_REQUEST_MAGIC) {
        if (rc == 0)
            conn_why(c, "bad request magic");
        else if (rc == -EPIPE)
            conn_why(c, "peer closed without NBD_CMD_DISC");
        else
            conn_why(c, "reading a request: %s", strerror(-rc));
        conn_kill(c);
        return rc < 0 ? rc : -EPROTO;
    }
    memset(r, 0, offsetof(struct req, h));
    r->flags = nbd_get16(h + 4);
    r->type = nbd_get16(h + 6);
    r->cookie = nbd_get64(h + 8);
    r->off = nbd_get64(h + 16);
    r->len = nbd_get32(h + 24);
    if (r->type == NBD_CMD_DISC) {
        conn_why(c, "client disconnected");
        atomic_store(&c->disc, true);
        return 1;
    }
    atomic_fetch_add_explicit(&c->nreq, 1, memory_order_relaxed);
    if (r->type != NBD_CMD_WRITE)
        return 0;
    /* The payload must be consumed to stay in step, but an oversized one is
     * never allocated: it is discarded in small pieces. */
    bool range_ok = r->off <= size && r->len <= size - r->off;
    if (r->len > s->o.max_request || !range_ok || x->e.readonly || r->len == 0) {
        r->err = x->e.readonly ? NBD_EPERM : r->len > s->o.max_request ? NBD_EOVERFLOW
                 : r->len == 0 ? NBD_EINVAL : NBD_ENOSPC;
        if (r->len > 64u * s->o.max_request) {
            conn_why(c, "a WRITE of %u bytes (too much to skip)", r->len);
            conn_kill(c);             /* too much to skip: drop the client */
            return -EPROTO;
        }
        rc = conn_skip(c, r->len);
    } else if ((rc = wbuf_need(b, r->len)) == 0) {
        rc = conn_read(c, b->p, r->len);
    } else {
        r->err = NBD_ENOMEM;
        rc = conn_skip(c, r->len);
    }
    if (rc < 0) {
        conn_why(c, "peer closed in the middle of a WRITE payload");
        conn_kill(c);                 /* truncated payload: the write never happens */
        return rc;
    }
    return 0;
}

/* Run one request; READ data goes to buf (unless the source is in memory). */
static void run_request(struct conn *c, struct req *r, void *wdata, void *buf)
{
    struct r3_nbd_server *s = c->srv;
    struct export *x = (struct export *)c->exp;
    uint64_t size = x->e.src->size;
    bool range_ok = r->off <= size && r->len <= size - r->off;
    int rc;
    if (r->err)
        return;
    if (r->flags & ~(uint16_t)(NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_DF)) {
        r->err = NBD_EINVAL;
        return;
    }
    switch (r->type) {
    case NBD_CMD_READ:
        if (r->len == 0 || !range_ok)
            r->err = NBD_EINVAL;
        else if (r->len > s->o.max_request)
            r->err = NBD_EOVERFLOW;
        else if (x->direct) {
            r->data = r3_source_direct(x->e.src, r->off, r->len);
            r->rlen = r->len;
        } else if (!buf) {
            r->err = NBD_ENOMEM;
        } else {
            uint64_t t0 = r3_now_ns();
            if ((rc = src_call(x, do_read, buf, r->len, r->off)) < 0)
                r->err = nbd_errno(rc);
            uint64_t dt = r3_now_ns() - t0, avg = atomic_load_explicit(&x->read_ns, memory_order_relaxed);
            atomic_store_explicit(&x->read_ns, avg - avg / 8 + dt / 8, memory_order_relaxed);
            r->data = buf;
            r->rlen = r->err ? 0 : r->len;
        }
        break;
    case NBD_CMD_WRITE:
        rc = gated(c, op_write, wdata, r->len, r->off, r->flags);
        r->drop = rc == -ESHUTDOWN;
        r->err = rc < 0 ? nbd_errno(rc) : 0;
        if (rc == 0)
            atomic_fetch_add_explicit(&c->wbytes, r->len, memory_order_relaxed);
        break;
    case NBD_CMD_WRITE_ZEROES:
    case NBD_CMD_TRIM:
        if (x->e.readonly)
            r->err = NBD_EPERM;
        else if (!range_ok)
            r->err = r->type == NBD_CMD_TRIM ? NBD_EINVAL : NBD_ENOSPC;
        else {
            rc = gated(c, r->type == NBD_CMD_TRIM ? op_trim : op_zero, NULL, r->len, r->off, r->flags);
            r->drop = rc == -ESHUTDOWN;
            r->err = rc < 0 ? nbd_errno(rc) : 0;
        }
        break;
    case NBD_CMD_FLUSH:
        rc = src_call(x, do_flush, NULL, 0, 0);
        r->err = rc < 0 ? nbd_errno(rc) : 0;
        break;
    case NBD_CMD_CACHE:
        /* Reading through the source warms a cache stage below. */
        if (!range_ok) {
            r->err = NBD_EINVAL;
            break;
        }
        char *tmp = malloc(ZERO_SIZE);
        if (!tmp) {
            r->err = NBD_ENOMEM;
            break;
        }
        for (uint64_t o = r->off; o < r->off + r->len && !r->err;) {
            size_t n = r->off + r->len - o < ZERO_SIZE ? (size_t)(r->off + r->len - o) : ZERO_SIZE;
            if ((rc = src_call(x, do_read, tmp, n, o)) < 0)
                r->err = nbd_errno(rc);
            o += n;
        }
        free(tmp);
        break;
    default:
        r->err = NBD_EINVAL;
    }
}

static void *worker(void *arg)
{
    struct conn *c = arg;
    struct r3_nbd_server *s = c->srv;
    const struct export *x = c->exp;
    struct wbuf b = { 0 }, rb = { 0 };
    struct req rs[BATCH_MAX];
    for (;;) {
        pthread_mutex_lock(&c->recv_mu);
        if (atomic_load(&c->dead) || atomic_load(&c->disc)) {
            pthread_mutex_unlock(&c->recv_mu);
            break;
        }
        int rc = take_request(c, &rs[0], &b);
        if (rc != 0) {
            pthread_mutex_unlock(&c->recv_mu);
            break;
        }
        /* A fast source (in memory, or answering in microseconds): take every
         * READ already buffered, run them here and answer them with one
         * writev. A slow one: one request per worker, so they overlap. */
        int n = 1;
        size_t total = rs[0].type == NBD_CMD_READ && rs[0].len <= BATCH_BYTES ? rs[0].len : 0;
        if (total && export_fast(x)) {
            while (n < BATCH_MAX && c->rlen - c->rpos >= NBD_REQUEST_SIZE) {
                const unsigned char *h = c->rbuf + c->rpos;
                uint32_t l = nbd_get32(h + 24);
                if (nbd_get32(h) != NBD_REQUEST_MAGIC || nbd_get16(h + 6) != NBD_CMD_READ ||
                    l > BATCH_BYTES - total)
                    break;
                struct req *r = &rs[n++];
                memset(r, 0, offsetof(struct req, h));
                r->flags = nbd_get16(h + 4);
                r->type = NBD_CMD_READ;
                r->cookie = nbd_get64(h + 8);
                r->off = nbd_get64(h + 16);
                r->len = l;
                total += l;
                c->rpos += NBD_REQUEST_SIZE;
                atomic_fetch_add_explicit(&c->nreq, 1, memory_order_relaxed);
            }
        }
        pthread_mutex_unlock(&c->recv_mu);

        size_t need = 0;
        for (int i = 0; i < n && !x->direct; i++)
            if (rs[i].type == NBD_CMD_READ && rs[i].len <= s->o.max_request)
                need += rs[i].len;
        bool have = need == 0 || wbuf_need(&rb, need) == 0;
        size_t at = 0;
        for (int i = 0; i < n; i++) {
            void *buf = NULL;
            if (have && need && rs[i].type == NBD_CMD_READ && rs[i].len <= s->o.max_request) {
                buf = rb.p + at;
                at += rs[i].len;
            }
            run_request(c, &rs[i], b.p, buf);
        }
        for (int i = 0; i < n; i++)
            if (rs[i].type == NBD_CMD_READ && !rs[i].err)
                atomic_fetch_add_explicit(&c->rbytes, rs[i].rlen, memory_order_relaxed);
        if ((rc = send_replies(c, rs, n)) < 0) {
            conn_why(c, "sending a reply: %s", strerror(-rc));
            conn_kill(c);
            break;
        }
        wbuf_trim(&b);
        wbuf_trim(&rb);
    }
    free(b.p);
    free(rb.p);
    conn_leave(c);
    return NULL;
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct r3_nbd_server *s = c->srv;
    /* One deadline for the whole handshake, not one per read: a client
     * sending a byte a second cannot keep its slot. */
    nbd_io_set_deadline(&c->io, c->t0 + (uint64_t)s->o.handshake_timeout_ms * 1000000u);
    int rc = handshake(c);
    nbd_io_set_deadline(&c->io, 0);
    if (rc != 1) {
        if (rc == -ETIMEDOUT)
            conn_why(c, "handshake not finished within %u ms", s->o.handshake_timeout_ms);
        else if (rc == -EPIPE)
            conn_why(c, "peer closed during the handshake");
        else if (rc < 0)
            conn_why(c, "handshake: %s", r3_last_error());
        else
            conn_why(c, "client aborted");
        conn_leave(c);
        return NULL;
    }
    unsigned n = s->o.workers;
    for (unsigned i = 1; i < n; i++) {
        pthread_t t;
        atomic_fetch_add(&c->running, 1);
        if (r3_thread_create(&t, worker, c) < 0) {
            atomic_fetch_sub(&c->running, 1);
            break;
        }
        pthread_detach(t);
    }
    return worker(c);
}

static void peer_name(const struct sockaddr_storage *sa, socklen_t sl, char *out, size_t n)
{
    char h[INET6_ADDRSTRLEN] = "?";
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, h, sizeof h);
        snprintf(out, n, "%s:%u", h, ntohs(a->sin_port));
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof h);
        snprintf(out, n, "[%s]:%u", h, ntohs(a->sin6_port));
    } else {
        (void)sl;
        snprintf(out, n, "unix");
    }
}

static void *acceptor(void *arg)
{
    struct r3_nbd_server *s = arg;
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        int fd = accept4(s->lfd, (struct sockaddr *)&sa, &sl, SOCK_CLOEXEC);
        pthread_mutex_lock(&s->mu);
        bool stop = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stop) {
            if (fd >= 0)
                close(fd);
            break;
        }
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                usleep(10000);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char peer[96];
        peer_name(&sa, sl, peer, sizeof peer);
        struct conn *c = calloc(1, sizeof *c);
        pthread_mutex_lock(&s->mu);
        bool full = s->nconns >= s->o.max_conns;
        pthread_mutex_unlock(&s->mu);
        if (!c || full) {
            if (c)
                logf_(s, "nbd %s: refused: %u connections already (the cap)", peer, s->o.max_conns);
            else
                logf_(s, "nbd %s: refused: out of memory", peer);
            free(c);
            close(fd);
            continue;
        }
        c->srv = s;
        c->t0 = r3_now_ns();
        snprintf(c->peer, sizeof c->peer, "%s", peer);
        nbd_io_init(&c->io, fd);
        pthread_mutex_init(&c->recv_mu, NULL);
        pthread_mutex_init(&c->send_mu, NULL);
        pthread_rwlockattr_t ra;
        pthread_rwlockattr_init(&ra);
        pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        pthread_rwlock_init(&c->gate, &ra);
        pthread_rwlockattr_destroy(&ra);
        atomic_init(&c->running, 1);
        pthread_mutex_lock(&s->mu);
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        s->nconns++;
        pthread_mutex_unlock(&s->mu);
        pthread_t t;
        if (r3_thread_create(&t, conn_main, c) < 0)
            conn_leave(c);
        else
            pthread_detach(t);
    }
    return NULL;
}

static int listen_on(struct r3_nbd_server *s, const char *spec)
{
    const char *path = NULL;
    if (strncmp(spec, "unix:", 5) == 0)
        path = spec + 5;
    else if (spec[0] == '/')
        path = spec;
    if (path) {
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof a.sun_path)
            return r3_error(-ENAMETOOLONG, "nbd: socket path %s is too long", path);
        strcpy(a.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return r3_error(-errno, "nbd: socket: %s", strerror(errno));
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
            unlink(path);          /* a stale socket from an earlier run */
        if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 128) < 0) {
            int e = errno;
            close(fd);
            return r3_error(-e, "nbd: cannot listen on %s: %s", path, strerror(e));
        }
        s->lfd = fd;
        s->unix_path = strdup(path);
        return 0;
    }
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof host)
        return r3_error(-EINVAL, "nbd: listen address '%s' is not HOST:PORT, unix:PATH or /PATH", spec);
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = 0;
    char *h = host;
    if (h[0] == '[' && h[strlen(h) - 1] == ']') {
        h[strlen(h) - 1] = 0;
        h++;
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *ai;
    int g = getaddrinfo(h[0] ? h : NULL, colon + 1, &hints, &ai);
    if (g)
        return r3_error(-EINVAL, "nbd: listen address '%s': %s", spec, gai_strerror(g));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return r3_error(-e, "nbd: cannot listen on %s: %s", spec, strerror(e));
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    s->lfd = fd;
    return 0;
}

int r3_nbd_server_start(const struct r3_nbd_server_opts *o, struct r3_nbd_server **out)
{
    *out = NULL;
    if (!o->listen || o->nexports == 0)
        return r3_error(-EINVAL, "nbd: the server needs a listen address and an export");
    struct r3_nbd_server *s = calloc(1, sizeof *s);
    if (!s)
        return r3_error(-ENOMEM, "nbd: out of memory");
    s->o = *o;
    if (!s->o.workers)
        s->o.workers = 4;
    if (s->o.workers > 64)
        s->o.workers = 64;
    if (!s->o.max_request || s->o.max_request > (256u << 20))
        s->o.max_request = NBD_MAX_REQUEST;
    if (!s->o.max_conns)
        s->o.max_conns = 1024;
    if (!s->o.handshake_timeout_ms)
        s->o.handshake_timeout_ms = 10000;
    s->lfd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    int rc = 0;
    s->exp = calloc(o->nexports, sizeof *s->exp);
    s->zeros = calloc(1, ZERO_SIZE);
    if (!s->exp || !s->zeros)
        rc = r3_error(-ENOMEM, "nbd: out of memory");
    for (size_t i = 0; rc == 0 && i < o->nexports; i++) {
        struct export *x = &s->exp[i];
        x->e = o->exports[i];
        x->name = strdup(x->e.name ? x->e.name : "");
        x->desc = x->e.description ? strdup(x->e.description) : NULL;
        x->serialize = !(x->e.src->flags & R3_SRC_PARALLEL);
        x->direct = r3_source_direct(x->e.src, 0, x->e.src->size) != NULL;
        atomic_init(&x->read_ns, 1000000);
        if (x->e.src->flags & R3_SRC_RDONLY)
            x->e.readonly = true;
        pthread_mutex_init(&x->mu, NULL);
        s->nexp++;
        if (!x->name || strlen(x->name) > NBD_MAX_NAME)
            rc = r3_error(-EINVAL, "nbd: export name too long");
    }
    if (rc == 0 && (o->tls_dir || o->tls_cert || o->tls_psk)) {
        struct nbd_tls_opts t = { .dir = o->tls_dir, .cert = o->tls_cert, .key = o->tls_key,
                                  .ca = o->tls_ca, .psk_file = o->tls_psk,
                                  .verify_peer = o->tls_verify_peer };
        rc = nbd_tls_server_ctx(&t, &s->tls);
        s->o.tls_required = true;
    } else if (rc == 0 && o->tls_required) {
        rc = r3_error(-EINVAL, "nbd: TLS is required but no certificates or PSK file were given");
    }
    if (rc == 0)
        rc = listen_on(s, o->listen);
    if (rc == 0)
        rc = r3_thread_create(&s->acceptor, acceptor, s);
    if (rc < 0) {
        if (s->lfd >= 0)
            close(s->lfd);
        s->lfd = -1;
        if (s->unix_path)
            unlink(s->unix_path);
        s->acceptor = 0;
        s->nconns = 0;
        r3_nbd_server_stop(s);
        return rc;
    }
    *out = s;
    return 0;
}

int r3_nbd_server_port(const struct r3_nbd_server *s)
{
    return s->port;
}

unsigned r3_nbd_server_conns(struct r3_nbd_server *s)
{
    pthread_mutex_lock(&s->mu);
    unsigned n = s->nconns;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void r3_nbd_server_stop(struct r3_nbd_server *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_mutex_unlock(&s->mu);
    if (s->lfd >= 0) {
        shutdown(s->lfd, SHUT_RDWR);      /* wakes accept() */
        if (s->acceptor)
            pthread_join(s->acceptor, NULL);
        close(s->lfd);
    }
    pthread_mutex_lock(&s->mu);
    for (struct conn *c = s->conns; c; c = c->next)
        nbd_io_shutdown(&c->io);
    while (s->nconns)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    if (s->unix_path) {
        unlink(s->unix_path);
        free(s->unix_path);
    }
    for (size_t i = 0; i < s->nexp; i++) {
        free(s->exp[i].name);
        free(s->exp[i].desc);
        pthread_mutex_destroy(&s->exp[i].mu);
    }
    free(s->exp);
    free(s->zeros);
    nbd_tls_ctx_free(s->tls);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
