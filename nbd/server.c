/* SPDX-License-Identifier: BSD-3-Clause */
/* NBD server: the fixed newstyle handshake and the transmission phase, on
 * the one network layer (src/net: listen + accept, the connection cap, the
 * whole-handshake deadline from accept, send queues, the in-flight budget,
 * TLS). The greeting goes out at accept; the handshake runs when the
 * client answers. Then each readable turn reads one request (a WRITE with
 * its payload, under the budget) and hands it to the connection's workers
 * (up to opts.workers, started on demand, gone when idle), which run it on
 * the source and queue the reply: replies go out as requests finish, in any
 * order. Every length from the wire is bounded before use. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "internal.h"
#include "net/net.h"
#include "nbd/proto.h"
#include "nbd/server.h"

#define ZERO_SIZE (1u << 20)
#define WORKER_IDLE_MS 50         /* a worker with nothing to do for this long exits */
#define PEEK_MAX (64u << 10)      /* input looked at for a DISC behind the peer's FIN */
#define PEEK_CAP (64u << 20)      /* at most, whatever the socket holds */
#define BATCH_MAX 32              /* small READs of an in-memory source answered together */
#define BATCH_ONE (64u << 10)     /* ... each at most this long */
#define META_ID 1                 /* our id of base:allocation */
#define STATUS_MAX 64             /* descriptors in one BLOCK_STATUS reply */
#define STATUS_CALLS 1024         /* extent queries for one BLOCK_STATUS */
#define HOLE_MIN (64u << 10)      /* READs this long are checked for zero ranges */
#define HOLE_SEGS 16              /* data/hole pieces of one READ reply */
#define HOLE_FAST_NS 500000u      /* an extent query slower than this is a round trip: */
#define HOLE_SLOW_MAX 3           /* ... after this many, READs no longer ask */

#define POOL_N   8                /* buffers kept per export */
#define POOL_MAX (2u << 20)       /* larger ones are freed */

struct export {
    struct r3_nbd_export e;
    char *name, *desc;
    bool serialize;               /* source is not R3_SRC_PARALLEL */
    bool direct;                  /* the source's bytes are in our memory (mem:) */
    bool extents;                 /* the source (or a stage of it) can tell zeros */
    atomic_uint slow_extents;     /* extent queries that took a round trip's time */
    pthread_mutex_t mu;
    /* direct reads' buffers, kept for the next (a fresh 1 MiB malloc is an
     * mmap and its page faults each time) */
    pthread_mutex_t pool_mu;
    void *pool[POOL_N];
    size_t pool_cap[POOL_N];
};

struct r3_nbd_server {
    struct r3_nbd_server_opts o;
    struct export *exp;
    size_t nexp;
    struct r3_tls_ctx *tls;
    struct r3_net_server *net;
    unsigned char greeting[18];
    unsigned char *zeros;
};

/* One request on its way: read by the reader, run by a worker. */
struct job {
    struct job *next;
    uint16_t flags, type;
    uint64_t cookie, off;
    uint32_t len;
    int err;                      /* set by the reader: answer with this at once */
    unsigned char *wdata;         /* WRITE payload (budget held: len) */
    size_t budget;                /* bytes of the budget this job holds */
};

/* The protocol's state of one connection (r3_net_conn.data). */
struct nconn {
    struct r3_nbd_server *srv;
    struct r3_net_conn *nc;
    struct r3_io *io;
    const struct export *exp;
    bool structured, no_zeroes;
    /* base:allocation selected (NBD_OPT_SET_META_CONTEXT) for meta_exp:
     * BLOCK_STATUS is answered only when that is the export in use. */
    bool meta_alloc;
    const struct export *meta_exp;
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* jobs queued / a worker left */
    struct job *qhead, *qtail;
    unsigned workers, idle;
    pthread_rwlock_t gate;        /* writes hold it shared; the fence takes it exclusive */
    atomic_bool gone;             /* the peer left without DISC: no more writes may land */
    atomic_bool disc;             /* NBD_CMD_DISC seen: finish what is queued */
    atomic_bool ending;           /* no more requests will come: workers leave once idle */
    atomic_uint_fast64_t nreq, rbytes, wbytes;
    /* Where the reader is in the request stream, for disc_pending: while
     * not reading, the socket's next bytes are `rest` payload bytes of the
     * request it parsed last, then whole requests; rgen counts its stops. */
    atomic_bool reading;
    atomic_uint_fast64_t rest, rgen;
};

/* ---- handshake */

static int send_rep(struct nconn *c, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
    unsigned char h[20];
    r3_nbd_put64(h, NBD_REP_MAGIC);
    r3_nbd_put32(h + 8, opt);
    r3_nbd_put32(h + 12, type);
    r3_nbd_put32(h + 16, len);
    struct iovec v[2] = { { h, sizeof h }, { (void *)data, len } };
    return r3_io_writev_all(c->io, v, len ? 2 : 1);
}

static int send_err(struct nconn *c, uint32_t opt, uint32_t type, const char *msg)
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

static int send_info(struct nconn *c, uint32_t opt, uint16_t type, const void *data, size_t len)
{
    unsigned char b[2 + NBD_MAX_NAME + 1];
    r3_nbd_put16(b, type);
    memcpy(b + 2, data, len);
    return send_rep(c, opt, NBD_REP_INFO, b, (uint32_t)(2 + len));
}

/* NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: export name, then
 * queries. The one context we have is base:allocation (from the source's
 * extent op); LIST with no query or "base:" names it too. Every length is
 * checked against the option's own length before use. */
static int opt_meta(struct nconn *c, uint32_t opt, const unsigned char *d, uint32_t len)
{
    static const char ctx[] = NBD_META_ALLOCATION;
    bool set = opt == NBD_OPT_SET_META_CONTEXT;
    if (set)
        c->meta_alloc = false;            /* replaced by this one, even if it fails */
    if (!c->structured)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "negotiate structured replies first");
    if (len < 8)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "option too short");
    uint32_t nl = r3_nbd_get32(d);
    if (nl > NBD_MAX_NAME || nl > len - 8)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "export name length out of range");
    char name[NBD_MAX_NAME + 1];
    memcpy(name, d + 4, nl);
    name[nl] = 0;
    if (memchr(name, 0, nl))
        return send_err(c, opt, NBD_REP_ERR_INVALID, "export name contains NUL");
    uint32_t nq = r3_nbd_get32(d + 4 + nl), p = 8 + nl;
    bool want = !set && nq == 0;
    for (uint32_t i = 0; i < nq; i++) {
        if (len - p < 4)
            return send_err(c, opt, NBD_REP_ERR_INVALID, "query count out of range");
        uint32_t ql = r3_nbd_get32(d + p);
        p += 4;
        if (ql > NBD_MAX_NAME || ql > len - p)
            return send_err(c, opt, NBD_REP_ERR_INVALID, "query length out of range");
        if ((ql == sizeof ctx - 1 && memcmp(d + p, ctx, ql) == 0) ||
            (!set && ql == 5 && memcmp(d + p, "base:", 5) == 0))
            want = true;
        p += ql;
    }
    if (p != len)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "option length does not match its content");
    const struct export *x = find_export(c->srv, name);
    if (!x)
        return send_err(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");
    if (set) {
        c->meta_alloc = want;
        c->meta_exp = x;
    }
    int rc = 0;
    if (want) {
        unsigned char b[4 + sizeof ctx];
        r3_nbd_put32(b, set ? META_ID : 0);
        memcpy(b + 4, ctx, sizeof ctx - 1);
        rc = send_rep(c, opt, NBD_REP_META_CONTEXT, b, (uint32_t)(4 + sizeof ctx - 1));
    }
    return rc < 0 ? rc : send_rep(c, opt, NBD_REP_ACK, NULL, 0);
}

/* NBD_OPT_INFO / NBD_OPT_GO. Returns 1 when transmission should start. */
static int opt_info_go(struct nconn *c, uint32_t opt, const unsigned char *d, uint32_t len)
{
    struct r3_nbd_server *s = c->srv;
    if (len < 6)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "option too short");
    uint32_t nl = r3_nbd_get32(d);
    if (nl > NBD_MAX_NAME || nl > len - 6)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "export name length out of range");
    uint16_t nreq = r3_nbd_get16(d + 4 + nl);
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
    r3_nbd_put64(b, x->e.src->size);
    r3_nbd_put16(b + 8, export_flags(x));
    int rc = send_info(c, opt, NBD_INFO_EXPORT, b, 10);
    for (uint16_t i = 0; rc == 0 && i < nreq; i++) {
        uint16_t t = r3_nbd_get16(d + 6 + nl + 2 * i);
        if (t == NBD_INFO_NAME)
            rc = send_info(c, opt, NBD_INFO_NAME, x->name, strlen(x->name));
        else if (t == NBD_INFO_DESCRIPTION && x->desc)
            rc = send_info(c, opt, NBD_INFO_DESCRIPTION, x->desc, strlen(x->desc));
    }
    /* Any alignment works (the source layer handles it); 4 KiB is what we
     * prefer, and max_request is the most we take in one request. */
    unsigned char bs[12];
    r3_nbd_put32(bs, 1);
    r3_nbd_put32(bs + 4, 4096);
    r3_nbd_put32(bs + 8, s->o.max_request);
    if (rc == 0)
        rc = send_info(c, opt, NBD_INFO_BLOCK_SIZE, bs, 12);
    if (rc == 0)
        rc = send_rep(c, opt, NBD_REP_ACK, NULL, 0);
    if (rc == 0 && opt == NBD_OPT_GO) {
        c->exp = x;
        if (c->meta_exp != x)
            c->meta_alloc = false;        /* contexts were chosen for another export */
        return 1;
    }
    return rc;
}

static int opt_list(struct nconn *c)
{
    for (size_t i = 0; i < c->srv->nexp; i++) {
        const struct export *x = &c->srv->exp[i];
        size_t nl = strlen(x->name), dl = x->desc ? strlen(x->desc) : 0;
        if (dl > NBD_MAX_NAME)
            dl = NBD_MAX_NAME;
        unsigned char b[4 + 2 * NBD_MAX_NAME];
        r3_nbd_put32(b, (uint32_t)nl);
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
static int handshake(struct nconn *c)
{
    struct r3_nbd_server *s = c->srv;
    /* The greeting went out at accept (the net layer's greeting). */
    unsigned char cf[4];
    int rc = r3_io_read_all(c->io, cf, 4);
    if (rc < 0)
        return rc;
    uint32_t cflags = r3_nbd_get32(cf);
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
        if ((rc = r3_io_read_all(c->io, oh, 16)) < 0)
            break;
        if (r3_nbd_get64(oh) != NBD_IHAVEOPT) {
            rc = r3_error(-EPROTO, "bad option magic");
            break;
        }
        uint32_t opt = r3_nbd_get32(oh + 8), len = r3_nbd_get32(oh + 12);
        bool known = opt == NBD_OPT_EXPORT_NAME || opt == NBD_OPT_ABORT || opt == NBD_OPT_LIST ||
                     opt == NBD_OPT_STARTTLS || opt == NBD_OPT_INFO || opt == NBD_OPT_GO ||
                     opt == NBD_OPT_STRUCTURED_REPLY || opt == NBD_OPT_LIST_META_CONTEXT ||
                     opt == NBD_OPT_SET_META_CONTEXT;
        if (opt == NBD_OPT_EXPORT_NAME) {
            if (len > NBD_MAX_NAME) {
                rc = r3_error(-EPROTO, "export name of %u bytes", len);
                break;
            }
            char name[NBD_MAX_NAME + 1];
            if ((rc = r3_io_read_all(c->io, name, len)) < 0)
                break;
            name[len] = 0;
            /* No error reply is possible here: refusing means closing. */
            if (s->tls && !r3_io_is_tls(c->io)) {
                rc = r3_error(-EACCES, "EXPORT_NAME without TLS refused");
                break;
            }
            const struct export *x = find_export(s, name);
            if (!x) {
                rc = r3_error(-ENOENT, "unknown export '%s'", name);
                break;
            }
            unsigned char r[10 + 124] = { 0 };
            r3_nbd_put64(r, x->e.src->size);
            r3_nbd_put16(r + 8, export_flags(x));
            if ((rc = r3_io_write_all(c->io, r, c->no_zeroes ? 10 : sizeof r)) < 0)
                break;
            c->exp = x;
            if (c->meta_exp != x)
                c->meta_alloc = false;
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
            if ((rc = r3_io_skip(c->io, len)) < 0)
                break;
            rc = known ? send_err(c, opt, NBD_REP_ERR_TOO_BIG, "option payload too large")
                       : send_err(c, opt, NBD_REP_ERR_UNSUP, "option not supported");
            if (rc < 0)
                break;
            continue;
        }
        if ((rc = r3_io_read_all(c->io, d, len)) < 0)
            break;
        if (opt == NBD_OPT_ABORT) {
            send_rep(c, opt, NBD_REP_ACK, NULL, 0);
            rc = 0;
            break;
        }
        /* With TLS configured, a plaintext client may only start TLS or
         * leave (tls_required is implied). */
        if (s->tls && !r3_io_is_tls(c->io) && opt != NBD_OPT_STARTTLS) {
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
            else if (r3_io_is_tls(c->io))
                rc = send_err(c, opt, NBD_REP_ERR_INVALID, "TLS is already on");
            else if ((rc = send_rep(c, opt, NBD_REP_ACK, NULL, 0)) == 0) {
                rc = r3_tls_accept(s->tls, c->io, r3_net_remaining_ms(c->io->rdeadline));
                /* Options negotiated before TLS are forgotten (spec). */
                c->structured = false;
                c->meta_alloc = false;
            }
            break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO:
            rc = opt_info_go(c, opt, d, len);
            break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
            rc = opt_meta(c, opt, d, len);
            break;
        }
        if (rc != 0)
            break;
    }
    free(d);
    return rc;
}

/* ---- transmission */

static int to_nbd_errno(int rc)
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
static int do_flush(struct r3_source *s, void *b, size_t l, uint64_t o) { (void)b; (void)l; (void)o; return r3_source_flush(s); }

/* r3_source_extent under the export's lock when it has one. */
static int src_extent(const struct export *x, uint64_t off, uint64_t len, uint64_t *run)
{
    if (x->serialize)
        pthread_mutex_lock((pthread_mutex_t *)&x->mu);
    int rc = r3_source_extent(x->e.src, off, len, run);
    if (x->serialize)
        pthread_mutex_unlock((pthread_mutex_t *)&x->mu);
    return rc;
}

/* Does any layer of src answer extent queries? (else every range is DATA
 * and asking is wasted work) */
static bool has_extents(const struct r3_source *src)
{
    for (; src; src = src->next)
        if (src->ops->extent)
            return true;
    return false;
}

/* A buffer of at least len bytes (*cap), from x's pool if it has one. */
static void *pool_get(struct export *x, size_t len, size_t *cap)
{
    pthread_mutex_lock(&x->pool_mu);
    for (int i = 0; i < POOL_N; i++)
        if (x->pool[i] && x->pool_cap[i] >= len) {
            void *b = x->pool[i];
            *cap = x->pool_cap[i];
            x->pool[i] = NULL;
            pthread_mutex_unlock(&x->pool_mu);
            return b;
        }
    pthread_mutex_unlock(&x->pool_mu);
    for (*cap = 65536; *cap < len; *cap *= 2)
        ;
    void *b = malloc(*cap);
    r3_mem_populate(b, *cap);           /* kept in the pool: populated once */
    return b;
}

static void pool_put(struct export *x, void *b, size_t cap)
{
    pthread_mutex_lock(&x->pool_mu);
    for (int i = 0; i < POOL_N && b && cap <= POOL_MAX; i++)
        if (!x->pool[i]) {
            x->pool[i] = b;
            x->pool_cap[i] = cap;
            b = NULL;
        }
    pthread_mutex_unlock(&x->pool_mu);
    free(b);
}

/* A reply's memory: freed (or given back to pool), and its budget given
 * back, once it is sent. */
struct sent {
    struct r3_net_conn *nc;
    void *buf;
    size_t budget;
    struct export *pool;
    size_t cap;
};

static void reply_done(void *arg)
{
    struct sent *d = arg;
    if (d->pool)
        pool_put(d->pool, d->buf, d->cap);
    else
        free(d->buf);
    if (d->budget)
        r3_net_budget_release(d->nc, d->budget);
    free(d);
}

/* Queue the reply of j: a simple reply, or for READs with structured
 * replies negotiated a data (or error) chunk. data (len bytes) is freed
 * with owned/budget once sent. */
static void reply_pooled(struct nconn *c, struct job *j, const void *data, size_t len, void *owned,
                         struct export *pool, size_t cap)
{
    unsigned char h[32];
    size_t hl;
    if (c->structured && j->type == NBD_CMD_READ) {
        r3_nbd_put32(h, NBD_STRUCTURED_REPLY_MAGIC);
        r3_nbd_put16(h + 4, NBD_REPLY_FLAG_DONE);
        r3_nbd_put64(h + 8, j->cookie);
        if (j->err) {
            r3_nbd_put16(h + 6, NBD_REPLY_TYPE_ERROR);
            r3_nbd_put32(h + 16, 6);
            r3_nbd_put32(h + 20, (uint32_t)j->err);
            r3_nbd_put16(h + 24, 0);
            hl = 26;
        } else {
            r3_nbd_put16(h + 6, NBD_REPLY_TYPE_OFFSET_DATA);
            r3_nbd_put32(h + 16, (uint32_t)(8 + len));
            r3_nbd_put64(h + 20, j->off);
            hl = 28;
        }
    } else {
        r3_nbd_put32(h, NBD_SIMPLE_REPLY_MAGIC);
        r3_nbd_put32(h + 4, (uint32_t)j->err);
        r3_nbd_put64(h + 8, j->cookie);
        hl = 16;
    }
    if (j->err)
        len = 0;
    struct sent *d = malloc(sizeof *d);
    if (!d) {
        free(owned);
        if (j->budget)
            r3_net_budget_release(c->nc, j->budget);
        r3_net_conn_close(c->nc, "out of memory for a reply");
        return;
    }
    *d = (struct sent){ .nc = c->nc, .buf = owned, .budget = j->budget, .pool = pool, .cap = cap };
    j->budget = 0;
    r3_net_conn_send(c->nc, h, hl, data, len, reply_done, d);
}

static void reply(struct nconn *c, struct job *j, const void *data, size_t len, void *owned)
{
    reply_pooled(c, j, data, len, owned, NULL, 0);
}

/* Is a DISC waiting in the socket behind the requests not read yet? (plain
 * connections; a TLS stream cannot be looked into) The socket is looked at
 * only while the reader stands still, from where it stands (past the
 * payload it has yet to take); a reader that moved meanwhile is waited for:
 * the peer's FIN is in, so it reaches the DISC or the end soon. */
static bool disc_pending(struct nconn *c)
{
    if (r3_io_is_tls(c->io))
        return false;
    uint64_t deadline = r3_now_ns() + 2000000000u;
    for (;;) {
        if (atomic_load(&c->disc))
            return true;
        if (atomic_load(&c->gone))
            return false;
        uint64_t g0 = atomic_load(&c->rgen);
        uint64_t skip = atomic_load(&c->rest);
        if (!atomic_load(&c->reading)) {
            int avail = 0;
            if (ioctl(c->io->fd, FIONREAD, &avail) < 0 || avail < 0)
                avail = 0;
            size_t cap = (size_t)avail < PEEK_MAX ? PEEK_MAX : (size_t)avail > PEEK_CAP ? PEEK_CAP : (size_t)avail;
            unsigned char *b = malloc(cap);
            if (!b)
                return false;
            ssize_t n = recv(c->io->fd, b, cap, MSG_PEEK | MSG_DONTWAIT);
            bool found = false;
            size_t have = n > 0 ? (size_t)n : 0;
            for (uint64_t p = skip; p <= have && have - p >= NBD_REQUEST_SIZE;) {
                const unsigned char *h = b + p;
                if (r3_nbd_get32(h) != NBD_REQUEST_MAGIC)
                    break;
                if (r3_nbd_get16(h + 6) == NBD_CMD_DISC) {
                    found = true;
                    break;
                }
                p += NBD_REQUEST_SIZE + (r3_nbd_get16(h + 6) == NBD_CMD_WRITE ? r3_nbd_get32(h + 24) : 0);
            }
            free(b);
            if (!atomic_load(&c->reading) && atomic_load(&c->rgen) == g0)
                return found;             /* the reader did not move: the look was exact */
        }
        if (r3_now_ns() > deadline)
            return false;
        usleep(200);
    }
}

/* The reader stops (rest: payload bytes of the parsed request still in the
 * socket) or goes on reading. */
static void reader_stop(struct nconn *c, uint64_t rest)
{
    atomic_store(&c->rest, rest);
    atomic_store(&c->reading, false);
    atomic_fetch_add(&c->rgen, 1);
}

static void reader_go(struct nconn *c)
{
    atomic_store(&c->reading, true);
}

/* Fence: after this no write of the connection is running and none will
 * start, so a write that outlived its client cannot land after newer data
 * written through another connection. */
static void fence(struct nconn *c)
{
    if (atomic_load(&c->gone))
        return;
    pthread_rwlock_wrlock(&c->gate);
    atomic_store(&c->gone, true);
    pthread_rwlock_unlock(&c->gate);
}

/* Has the client gone away (reset, or FIN without NBD_CMD_DISC)? Asked
 * before every write: its requests may still be queued here. POLLRDHUP is
 * set as soon as the peer's FIN or RST arrives. */
static bool peer_gone(struct nconn *c)
{
    if (atomic_load(&c->gone))
        return true;
    struct pollfd p = { .fd = c->io->fd, .events = POLLIN | POLLRDHUP };
    if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
        return false;
    return !atomic_load(&c->disc) && !disc_pending(c);
}

/* Run a mutating request under the gate; *fenced once fenced (the write is
 * dropped and nothing is replied). Not an errno: a source may itself answer
 * -ESHUTDOWN (an nbd:// source whose server is leaving), which is replied. */
static int gated(struct nconn *c, struct job *j, int (*fn)(struct nconn *, struct job *), bool *fenced)
{
    if (peer_gone(c))
        fence(c);
    pthread_rwlock_rdlock(&c->gate);
    *fenced = atomic_load(&c->gone);
    int rc = *fenced ? 0 : fn(c, j);
    pthread_rwlock_unlock(&c->gate);
    return rc;
}

/* Queue one structured reply chunk of j: a header, pay (plen bytes, copied
 * with the header), then data (dlen bytes, sent from where it is). The
 * DONE chunk also frees owned and gives back j's budget once sent. */
static void chunk(struct nconn *c, struct job *j, uint16_t type, bool done, const void *pay, size_t plen,
                  const void *data, size_t dlen, void *owned)
{
    unsigned char h[NBD_STRUCTURED_REPLY_SIZE + 16];
    r3_nbd_put32(h, NBD_STRUCTURED_REPLY_MAGIC);
    r3_nbd_put16(h + 4, done ? NBD_REPLY_FLAG_DONE : 0);
    r3_nbd_put16(h + 6, type);
    r3_nbd_put64(h + 8, j->cookie);
    r3_nbd_put32(h + 16, (uint32_t)(plen + dlen));
    if (plen)
        memcpy(h + NBD_STRUCTURED_REPLY_SIZE, pay, plen);
    if (!done) {
        r3_net_conn_send(c->nc, h, NBD_STRUCTURED_REPLY_SIZE + plen, data, dlen, NULL, NULL);
        return;
    }
    struct sent *d = malloc(sizeof *d);
    if (!d) {
        free(owned);
        if (j->budget)
            r3_net_budget_release(c->nc, j->budget);
        j->budget = 0;
        r3_net_conn_close(c->nc, "out of memory for a reply");
        return;
    }
    *d = (struct sent){ .nc = c->nc, .buf = owned, .budget = j->budget };
    j->budget = 0;
    r3_net_conn_send(c->nc, h, NBD_STRUCTURED_REPLY_SIZE + plen, data, dlen, reply_done, d);
}

/* NBD_CMD_BLOCK_STATUS on base:allocation: the source's extents from
 * j->off on, as descriptors (ZERO is a hole that reads as zeros; DATA may
 * hold data), adjacent ones of one kind merged. At most STATUS_MAX of them
 * (one with REQ_ONE); they never reach past the request. */
static void op_block_status(struct nconn *c, struct job *j)
{
    unsigned max = (j->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : STATUS_MAX;
    unsigned char *b = malloc(4 + 8 * STATUS_MAX);
    if (!b) {
        j->err = NBD_ENOMEM;
        reply(c, j, NULL, 0, NULL);
        return;
    }
    r3_nbd_put32(b, META_ID);
    unsigned n = 0;
    uint32_t last = 0, lastlen = 0;
    uint64_t off = j->off, end = j->off + j->len;
    for (unsigned calls = 0; off < end && calls < STATUS_CALLS; calls++) {
        uint64_t run = 0;
        int rc = src_extent(c->exp, off, end - off, &run);
        if (rc < 0 && n == 0) {
            free(b);
            j->err = to_nbd_errno(rc);
            reply(c, j, NULL, 0, NULL);
            return;
        }
        if (rc < 0)
            break;                        /* what we have is true: say that much */
        uint32_t st = rc == R3_EXTENT_ZERO ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0;
        if (n && st == last) {
            lastlen += (uint32_t)run;     /* run <= end - off, and the sum <= j->len */
        } else {
            if (n == max)
                break;
            if (n)
                r3_nbd_put32(b + 4 + 8 * (n - 1), lastlen);
            r3_nbd_put32(b + 4 + 8 * n + 4, st);
            n++;
            last = st;
            lastlen = (uint32_t)run;
        }
        off += run;
    }
    r3_nbd_put32(b + 4 + 8 * (n - 1), lastlen);
    chunk(c, j, NBD_REPLY_TYPE_BLOCK_STATUS, true, NULL, 0, b, 4 + 8 * (size_t)n, b);
}

/* A structured READ of a source that knows its zeros: ranges that are
 * ZERO go out as OFFSET_HOLE chunks (12 bytes instead of the data, and no
 * read of the source); the rest is read and sent as OFFSET_DATA chunks.
 * Returns false (nothing sent) when the whole range is DATA. */
static bool read_holes(struct nconn *c, struct job *j)
{
    struct export *x = (struct export *)c->exp;
    /* Asking costs a round trip on a remote source: READs of one whose
     * queries are slow (r3://, redis, a delay stage) do not ask, or every
     * read would wait twice. BLOCK_STATUS still asks. */
    if (atomic_load_explicit(&x->slow_extents, memory_order_relaxed) >= HOLE_SLOW_MAX)
        return false;
    uint64_t t0 = r3_now_ns();
    struct seg { uint64_t off, len; bool zero; } seg[HOLE_SEGS];
    unsigned n = 0;
    uint64_t off = j->off, end = j->off + j->len;
    bool any = false;
    while (off < end) {
        uint64_t run = end - off;
        bool z = false;
        if (n + 1 < HOLE_SEGS) {          /* the last piece takes the rest as data */
            int rc = src_extent(x, off, end - off, &run);
            if (rc < 0)
                run = end - off;          /* the read will say what is wrong */
            z = rc == R3_EXTENT_ZERO;
            if (n == 0 && r3_now_ns() - t0 > HOLE_FAST_NS)
                atomic_fetch_add_explicit(&x->slow_extents, 1, memory_order_relaxed);
        }
        any |= z;
        if (n && seg[n - 1].zero == z)
            seg[n - 1].len += run;
        else
            seg[n++] = (struct seg){ off, run, z };
        off += run;
    }
    if (!any)
        return false;
    size_t dlen = 0;
    for (unsigned i = 0; i < n; i++)
        dlen += seg[i].zero ? 0 : seg[i].len;
    char *buf = dlen ? malloc(dlen) : NULL;
    if (dlen && !buf) {
        j->err = NBD_ENOMEM;
        reply(c, j, NULL, 0, NULL);
        return true;
    }
    size_t at = 0;
    for (unsigned i = 0; i < n; i++) {
        if (seg[i].zero)
            continue;
        int rc = src_call(x, do_read, buf + at, seg[i].len, seg[i].off);
        if (rc < 0) {
            free(buf);
            j->err = to_nbd_errno(rc);
            reply(c, j, NULL, 0, NULL);
            return true;
        }
        at += seg[i].len;
    }
    at = 0;
    for (unsigned i = 0; i < n; i++) {
        unsigned char p[12];
        r3_nbd_put64(p, seg[i].off);
        bool last = i + 1 == n;
        if (seg[i].zero) {
            r3_nbd_put32(p + 8, (uint32_t)seg[i].len);
            chunk(c, j, NBD_REPLY_TYPE_OFFSET_HOLE, last, p, 12, NULL, 0, last ? buf : NULL);
        } else {
            chunk(c, j, NBD_REPLY_TYPE_OFFSET_DATA, last, p, 8, buf + at, seg[i].len, last ? buf : NULL);
            at += seg[i].len;
        }
    }
    atomic_fetch_add_explicit(&c->rbytes, j->len, memory_order_relaxed);
    return true;
}

static int op_write(struct nconn *c, struct job *j)
{
    int rc = src_call(c->exp, do_write, j->wdata, j->len, j->off);
    if (rc == 0 && (j->flags & NBD_CMD_FLAG_FUA))
        rc = src_call(c->exp, do_flush, NULL, 0, 0);
    return rc;
}

static int op_zero(struct nconn *c, struct job *j)
{
    int rc = 0;
    uint64_t off = j->off;
    size_t len = j->len;
    while (rc == 0 && len) {
        size_t n = len < ZERO_SIZE ? len : ZERO_SIZE;
        rc = src_call(c->exp, do_write, c->srv->zeros, n, off);
        off += n;
        len -= n;
    }
    if (rc == 0 && (j->flags & NBD_CMD_FLAG_FUA))
        rc = src_call(c->exp, do_flush, NULL, 0, 0);
    return rc;
}

static int op_trim(struct nconn *c, struct job *j)
{
    /* Trim is advisory: the data may stay. FUA still means durable. */
    return (j->flags & NBD_CMD_FLAG_FUA) ? src_call(c->exp, do_flush, NULL, 0, 0) : 0;
}

/* Run one request and queue its reply (none for a fenced write). */
static void run(struct nconn *c, struct job *j)
{
    struct export *x = (struct export *)c->exp;
    uint64_t size = x->e.src->size;
    bool range_ok = j->off <= size && j->len <= size - j->off;
    bool fenced;
    int rc;
    if (j->err) {
        reply(c, j, NULL, 0, NULL);
        return;
    }
    uint16_t okflags = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_DF |
                       (j->type == NBD_CMD_BLOCK_STATUS ? NBD_CMD_FLAG_REQ_ONE : 0);
    if (j->flags & ~okflags) {
        j->err = NBD_EINVAL;
        reply(c, j, NULL, 0, NULL);
        return;
    }
    switch (j->type) {
    case NBD_CMD_READ: {
        if (x->direct) {
            /* An in-memory source: copied here, under the source's own
             * stripe lock (mem_read), not sent from its memory: a write
             * through another port or connection may be changing those
             * bytes while the reply is on its way (a data race in C's terms,
             * reported by TSan in r3bench_smoke). */
            size_t cap;
            void *buf = pool_get(x, j->len, &cap);
            if (!buf || (rc = r3_source_read(x->e.src, buf, j->len, j->off)) < 0) {
                j->err = buf ? to_nbd_errno(rc) : NBD_ENOMEM;
                free(buf);
                reply(c, j, NULL, 0, NULL);
                return;
            }
            atomic_fetch_add_explicit(&c->rbytes, j->len, memory_order_relaxed);
            reply_pooled(c, j, buf, j->len, buf, x, cap);
            return;
        }
        /* DF asks for one content chunk: holes would make several. */
        if (c->structured && x->extents && j->len >= HOLE_MIN && !(j->flags & NBD_CMD_FLAG_DF) &&
            read_holes(c, j))
            return;
        void *buf = malloc(j->len);
        if (!buf)
            j->err = NBD_ENOMEM;
        else if ((rc = src_call(x, do_read, buf, j->len, j->off)) < 0)
            j->err = to_nbd_errno(rc);
        if (j->err) {
            free(buf);
            reply(c, j, NULL, 0, NULL);
            return;
        }
        atomic_fetch_add_explicit(&c->rbytes, j->len, memory_order_relaxed);
        reply(c, j, buf, j->len, buf);
        return;
    }
    case NBD_CMD_WRITE:
        rc = gated(c, j, op_write, &fenced);
        free(j->wdata);
        j->wdata = NULL;
        if (j->budget) {
            r3_net_budget_release(c->nc, j->budget);
            j->budget = 0;
        }
        if (fenced)
            return;                       /* the client is gone */
        j->err = rc < 0 ? to_nbd_errno(rc) : 0;
        if (rc == 0)
            atomic_fetch_add_explicit(&c->wbytes, j->len, memory_order_relaxed);
        break;
    case NBD_CMD_WRITE_ZEROES:
    case NBD_CMD_TRIM:
        if (x->e.readonly)
            j->err = NBD_EPERM;
        else if (!range_ok)
            j->err = j->type == NBD_CMD_TRIM ? NBD_EINVAL : NBD_ENOSPC;
        else {
            rc = gated(c, j, j->type == NBD_CMD_TRIM ? op_trim : op_zero, &fenced);
            if (fenced)
                return;
            j->err = rc < 0 ? to_nbd_errno(rc) : 0;
        }
        break;
    case NBD_CMD_BLOCK_STATUS:
        if (!c->meta_alloc || !range_ok || j->len == 0)
            j->err = NBD_EINVAL;
        else {
            op_block_status(c, j);
            return;
        }
        break;
    case NBD_CMD_FLUSH:
        rc = src_call(x, do_flush, NULL, 0, 0);
        j->err = rc < 0 ? to_nbd_errno(rc) : 0;
        break;
    case NBD_CMD_CACHE: {
        /* Reading through the source warms a cache stage below. */
        if (!range_ok) {
            j->err = NBD_EINVAL;
            break;
        }
        char *tmp = malloc(ZERO_SIZE);
        if (!tmp) {
            j->err = NBD_ENOMEM;
            break;
        }
        for (uint64_t o = j->off; o < j->off + j->len && !j->err;) {
            size_t n = j->off + j->len - o < ZERO_SIZE ? (size_t)(j->off + j->len - o) : ZERO_SIZE;
            if ((rc = src_call(x, do_read, tmp, n, o)) < 0)
                j->err = to_nbd_errno(rc);
            o += n;
        }
        free(tmp);
        break;
    }
    default:
        j->err = NBD_EINVAL;
    }
    reply(c, j, NULL, 0, NULL);
}

static struct timespec in_ms(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    return ts;
}

/* A worker holds the connection while it lives; it leaves when there has
 * been nothing to do for WORKER_IDLE_MS (idle connections cost no thread). */
static void *worker(void *arg)
{
    struct nconn *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (!c->qhead && atomic_load(&c->ending))
            break;                        /* the connection ends: let it go at once */
        if (!c->qhead) {
            c->idle++;
            struct timespec ts = in_ms(WORKER_IDLE_MS);
            pthread_cond_timedwait(&c->cv, &c->mu, &ts);
            c->idle--;
            if (!c->qhead)
                break;
        }
        struct job *j = c->qhead;
        c->qhead = j->next;
        if (!c->qhead)
            c->qtail = NULL;
        pthread_mutex_unlock(&c->mu);
        run(c, j);
        free(j->wdata);
        if (j->budget)
            r3_net_budget_release(c->nc, j->budget);
        free(j);
        pthread_mutex_lock(&c->mu);
    }
    c->workers--;
    pthread_mutex_unlock(&c->mu);
    r3_net_conn_put(c->nc);
    return NULL;
}

/* Hand j to a worker, starting one if none is free. */
static void dispatch(struct nconn *c, struct job *j)
{
    pthread_mutex_lock(&c->mu);
    j->next = NULL;
    if (c->qtail)
        c->qtail->next = j;
    else
        c->qhead = j;
    c->qtail = j;
    bool start = c->idle == 0 && c->workers < c->srv->o.workers;
    if (start)
        c->workers++;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (start) {
        pthread_t t;
        r3_net_conn_hold(c->nc);
        if (r3_thread_create(&t, worker, c) == 0) {
            pthread_detach(t);
        } else {
            r3_net_conn_put(c->nc);
            pthread_mutex_lock(&c->mu);
            c->workers--;
            bool none = c->workers == 0;
            pthread_mutex_unlock(&c->mu);
            if (none) {
                /* No thread at all: run it here rather than never. */
                pthread_mutex_lock(&c->mu);
                struct job *q = c->qhead;
                c->qhead = c->qtail = NULL;
                pthread_mutex_unlock(&c->mu);
                while (q) {
                    struct job *n = q->next;
                    run(c, q);
                    free(q->wdata);
                    if (q->budget)
                        r3_net_budget_release(c->nc, q->budget);
                    free(q);
                    q = n;
                }
            }
        }
    }
}

static void free_done(void *p)
{
    free(p);
}

/* An in-memory source, a plain socket, and several small READs waiting:
 * take them with one read and answer them with one send (one copy of the
 * data, two system calls for the lot, instead of two per request). 1 if a
 * batch was served, 0 if not (nothing was consumed), -errno. */
static int read_batch(struct nconn *c)
{
    const struct export *x = c->exp;
    uint64_t size = x->e.src->size;
    unsigned char pk[BATCH_MAX * NBD_REQUEST_SIZE];
    ssize_t n = recv(c->io->fd, pk, sizeof pk, MSG_PEEK | MSG_DONTWAIT);
    if (n < 2 * NBD_REQUEST_SIZE)
        return 0;
    size_t k = 0, total = 0, hl = c->structured ? 28 : 16;
    for (; k < (size_t)n / NBD_REQUEST_SIZE; k++) {
        const unsigned char *h = pk + k * NBD_REQUEST_SIZE;
        uint64_t off = r3_nbd_get64(h + 16);
        uint32_t len = r3_nbd_get32(h + 24);
        if (r3_nbd_get32(h) != NBD_REQUEST_MAGIC || r3_nbd_get16(h + 6) != NBD_CMD_READ ||
            (r3_nbd_get16(h + 4) & ~(uint16_t)(NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_DF)) ||
            len == 0 || len > BATCH_ONE || off > size || len > size - off)
            break;
        total += hl + len;
    }
    if (k < 2)
        return 0;
    unsigned char *out = malloc(total);
    if (!out)
        return 0;
    int rc = r3_io_read_all(c->io, pk, k * NBD_REQUEST_SIZE);   /* exactly what was peeked */
    if (rc < 0) {
        free(out);
        return rc;
    }
    unsigned char *p = out;
    uint64_t bytes = 0;
    for (size_t i = 0; i < k; i++) {
        const unsigned char *h = pk + i * NBD_REQUEST_SIZE;
        uint64_t off = r3_nbd_get64(h + 16);
        uint32_t len = r3_nbd_get32(h + 24);
        if (c->structured) {
            r3_nbd_put32(p, NBD_STRUCTURED_REPLY_MAGIC);
            r3_nbd_put16(p + 4, NBD_REPLY_FLAG_DONE);
            r3_nbd_put16(p + 6, NBD_REPLY_TYPE_OFFSET_DATA);
            memcpy(p + 8, h + 8, 8);                          /* the cookie */
            r3_nbd_put32(p + 16, 8 + len);
            r3_nbd_put64(p + 20, off);
        } else {
            r3_nbd_put32(p, NBD_SIMPLE_REPLY_MAGIC);
            r3_nbd_put32(p + 4, 0);
            memcpy(p + 8, h + 8, 8);
        }
        /* under the source's stripe lock, like any read (see run()); a
         * mem: read in range does not fail, but if it did the requests are
         * consumed already: the connection ends */
        if ((rc = r3_source_read(x->e.src, p + hl, len, off)) < 0) {
            free(out);
            return rc;
        }
        p += hl + len;
        bytes += len;
    }
    atomic_fetch_add_explicit(&c->nreq, k, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->rbytes, bytes, memory_order_relaxed);
    r3_net_conn_send(c->nc, NULL, 0, out, total, free_done, out);
    return 1;
}

/* Read one request (and a WRITE's payload) and dispatch it. */
static int read_request(struct r3_net_conn *nc)
{
    struct nconn *c = nc->data;
    struct r3_nbd_server *s = c->srv;
    const struct export *x = c->exp;
    uint64_t size = x->e.src->size;
    unsigned char h[NBD_REQUEST_SIZE];
    int rc = x->direct && !r3_io_is_tls(c->io) ? read_batch(c) : 0;
    if (rc > 0)
        return 0;
    if (rc == 0)
        rc = r3_io_read_all(c->io, h, sizeof h);
    if (rc < 0) {
        if (rc == -EPIPE || rc == -ECONNRESET) {
            fence(c);                 /* gone without NBD_CMD_DISC */
            r3_net_conn_why(nc, "peer closed without NBD_CMD_DISC");
        }
        return rc;
    }
    if (r3_nbd_get32(h) != NBD_REQUEST_MAGIC) {
        fence(c);
        r3_net_conn_why(nc, "bad request magic");
        return -EPROTO;
    }
    struct job *j = calloc(1, sizeof *j);
    if (!j) {
        r3_net_conn_why(nc, "out of memory");
        return -ENOMEM;
    }
    j->flags = r3_nbd_get16(h + 4);
    j->type = r3_nbd_get16(h + 6);
    j->cookie = r3_nbd_get64(h + 8);
    j->off = r3_nbd_get64(h + 16);
    j->len = r3_nbd_get32(h + 24);
    if (j->type == NBD_CMD_DISC) {
        free(j);
        atomic_store(&c->disc, true);
        r3_net_conn_close(nc, "client disconnected");   /* what is queued still runs and is answered */
        return 1;
    }
    atomic_fetch_add_explicit(&c->nreq, 1, memory_order_relaxed);
    bool range_ok = j->off <= size && j->len <= size - j->off;
    if (j->type == NBD_CMD_READ) {
        if (j->len > 0 && range_ok && j->len <= s->o.max_request) {
            reader_stop(c, 0);            /* a budget wait: the reader stands still */
            rc = r3_net_budget_acquire(nc, j->len);
            reader_go(c);
        }
        if (j->len == 0 || !range_ok)
            j->err = NBD_EINVAL;
        else if (j->len > s->o.max_request)
            j->err = NBD_EOVERFLOW;
        else if (rc == -EMSGSIZE)
            j->err = NBD_EOVERFLOW;       /* more than this connection may hold at once */
        else if (rc < 0) {                /* mem: too, a copy now */
            free(j);
            return rc;
        } else {
            j->budget = j->len;
        }
    } else if (j->type == NBD_CMD_WRITE) {
        /* The payload must be consumed to stay in step, but a refused one
         * is never allocated: it is discarded in small pieces. */
        bool refused = j->len > s->o.max_request || !range_ok || x->e.readonly || j->len == 0;
        if (!refused) {                   /* (the payload still in the socket while it waits) */
            reader_stop(c, j->len);
            rc = r3_net_budget_acquire(nc, j->len);
            reader_go(c);
        }
        if (!refused && rc == -EMSGSIZE) {
            refused = true;               /* more than this connection may hold at once */
            j->err = NBD_EOVERFLOW;
        }
        if (refused) {
            if (!j->err)
                j->err = x->e.readonly ? NBD_EPERM : j->len > s->o.max_request ? NBD_EOVERFLOW
                         : j->len == 0 ? NBD_EINVAL : NBD_ENOSPC;
            if (j->len > 64u * s->o.max_request) {
                r3_net_conn_why(nc, "a WRITE of %u bytes (too much to skip)", j->len);
                free(j);
                fence(c);
                return -EPROTO;
            }
            rc = r3_io_skip(c->io, j->len);
        } else if (rc == 0) {
            j->budget = j->len;
            j->wdata = malloc(j->len);
            rc = j->wdata ? r3_io_read_all(c->io, j->wdata, j->len) : -ENOMEM;
        }
        if (rc < 0) {
            /* A truncated payload: that write never happens. */
            r3_net_conn_why(nc, "peer closed in the middle of a WRITE payload");
            fence(c);
            free(j->wdata);
            if (j->budget)
                r3_net_budget_release(nc, j->budget);
            free(j);
            return rc;
        }
    }
    if (x->direct && j->type == NBD_CMD_READ) {
        /* In memory: the reply is copied and queued here, without a
         * hand-off to a worker. */
        run(c, j);
        free(j);
        return 0;
    }
    dispatch(c, j);
    return 0;
}

/* Readable: one request. When no more will come (DISC, EOF, an error),
 * idle workers are told to leave now rather than after their idle time. */
static int on_readable(struct r3_net_conn *nc)
{
    struct nconn *c = nc->data;
    reader_go(c);
    int rc = read_request(nc);
    reader_stop(c, 0);
    if (rc != 0) {
        pthread_mutex_lock(&c->mu);
        atomic_store(&c->ending, true);
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    return rc < 0 ? rc : 0;
}

/* ---- the net layer's callbacks */

static int on_handshake(struct r3_net_conn *nc)
{
    struct r3_nbd_server *s = r3_net_server_arg(nc);
    struct nconn *c = calloc(1, sizeof *c);
    if (!c)
        return r3_error(-ENOMEM, "out of memory");
    c->srv = s;
    c->nc = nc;
    c->io = &nc->io;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&c->gate, &ra);
    pthread_rwlockattr_destroy(&ra);
    nc->data = c;
    int rc = handshake(c);
    if (rc == 1)
        return 0;
    if (rc == -ETIMEDOUT)
        r3_net_conn_why(nc, "handshake not finished within %u ms", s->o.handshake_timeout_ms);
    else if (rc == -EPIPE || rc == -ECONNRESET)   /* reset: it left a reply unread */
        r3_net_conn_why(nc, "peer closed during the handshake");
    else if (rc < 0)
        r3_net_conn_why(nc, "handshake: %s", r3_last_error());
    else
        r3_net_conn_why(nc, "client aborted");
    return rc < 0 ? rc : -ECONNABORTED;
}

/* The one line per connection, then the protocol state goes. */
static bool on_close(struct r3_net_conn *nc)
{
    struct r3_nbd_server *s = r3_net_server_arg(nc);
    struct nconn *c = nc->data;
    if (!s->o.log) {
        /* nothing to say */
    } else if (!c || !c->exp) {
        char line[512];
        snprintf(line, sizeof line, "nbd %s%s: no export chosen in %.1f s; %s", nc->peer,
                 r3_io_is_tls(&nc->io) ? " tls" : "", (double)(r3_now_ns() - nc->t_accept) / 1e9,
                 nc->why[0] ? nc->why : "closed");
        s->o.log(s->o.log_arg, line);
    } else {
        char line[600], a[32], b[32];
        snprintf(line, sizeof line, "nbd %s%s%s%s%s export '%s': %" PRIu64 " requests, %s read, %s written "
                 "in %.1f s; %s", nc->peer, r3_io_is_tls(&nc->io) ? " tls" : "", nc->cn[0] ? " (cn=" : "",
                 nc->cn, nc->cn[0] ? ")" : "", c->exp->name, (uint64_t)atomic_load(&c->nreq),
                 r3_fmt_bytes(atomic_load(&c->rbytes), a, sizeof a), r3_fmt_bytes(atomic_load(&c->wbytes), b, sizeof b),
                 (double)(r3_now_ns() - nc->t_accept) / 1e9, nc->why[0] ? nc->why : "closed");
        s->o.log(s->o.log_arg, line);
    }
    if (c) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        pthread_rwlock_destroy(&c->gate);
        free(c);
        nc->data = NULL;
    }
    return true;
}

/* ---- start / stop */

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
    if (!s->o.handshake_timeout_ms)
        s->o.handshake_timeout_ms = 10000;
    r3_nbd_put64(s->greeting, NBD_MAGIC);
    r3_nbd_put64(s->greeting + 8, NBD_IHAVEOPT);
    r3_nbd_put16(s->greeting + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    struct r3_net_server_opts no = {
        .name = "nbd", .starttls = true, .insecure = o->insecure, .max_connections = o->max_conns,
        .handshake_ms = (int)s->o.handshake_timeout_ms, .max_inflight = o->max_inflight,
        .h = { .handshake = on_handshake, .on_readable = on_readable, .on_close = on_close, .arg = s },
        .greeting = s->greeting, .greeting_len = sizeof s->greeting,
        .log = o->log, .log_arg = o->log_arg,
    };
    /* An absolute path is a Unix socket too (as unix:PATH). */
    char spec[300];
    snprintf(spec, sizeof spec, "%s%s", o->listen[0] == '/' ? "unix:" : "", o->listen);
    int rc = r3_net_addr_parse(spec, NBD_DEFAULT_PORT, R3_NET_PASSIVE, &no.listen);
    if (rc < 0)
        r3_error_prefix(rc, "nbd: ");
    s->exp = calloc(o->nexports, sizeof *s->exp);
    s->zeros = calloc(1, ZERO_SIZE);
    if (rc == 0 && (!s->exp || !s->zeros))
        rc = r3_error(-ENOMEM, "nbd: out of memory");
    for (size_t i = 0; rc == 0 && i < o->nexports; i++) {
        struct export *x = &s->exp[i];
        x->e = o->exports[i];
        x->name = strdup(x->e.name ? x->e.name : "");
        x->desc = x->e.description ? strdup(x->e.description) : NULL;
        x->serialize = !(x->e.src->flags & R3_SRC_PARALLEL);
        x->direct = r3_source_direct(x->e.src, 0, x->e.src->size) != NULL;
        x->extents = has_extents(x->e.src);
        if (x->e.src->flags & R3_SRC_RDONLY)
            x->e.readonly = true;
        pthread_mutex_init(&x->mu, NULL);
        pthread_mutex_init(&x->pool_mu, NULL);
        s->nexp++;
        if (!x->name || strlen(x->name) > NBD_MAX_NAME)
            rc = r3_error(-EINVAL, "nbd: export name too long");
    }
    if (rc == 0 && (o->tls_dir || o->tls_cert || o->tls_psk)) {
        struct r3_tls_opts t = { .dir = o->tls_dir, .cert = o->tls_cert, .key = o->tls_key,
                                 .ca = o->tls_ca, .psk_file = o->tls_psk,
                                 .verify_peer = o->tls_verify_peer };
        rc = r3_tls_server_ctx(&t, &s->tls);
        s->o.tls_required = true;         /* a port with TLS never serves plaintext */
        no.tls = s->tls;
    } else if (rc == 0 && o->tls_required) {
        rc = r3_error(-EINVAL, "nbd: TLS is required but no certificates or PSK file were given");
    }
    if (rc == 0)
        rc = r3_net_server_start(&no, &s->net);
    if (rc < 0) {
        r3_nbd_server_stop(s);
        return rc;
    }
    *out = s;
    return 0;
}

int r3_nbd_server_port(const struct r3_nbd_server *s)
{
    const struct r3_net_addr *a = r3_net_server_addr(s->net);
    return a->kind == R3_NET_TCP ? a->port : 0;
}

unsigned r3_nbd_server_conns(struct r3_nbd_server *s)
{
    return r3_net_server_conns(s->net);
}

void r3_nbd_server_stop(struct r3_nbd_server *s)
{
    if (!s)
        return;
    r3_net_server_stop(s->net);
    for (size_t i = 0; i < s->nexp; i++) {
        free(s->exp[i].name);
        free(s->exp[i].desc);
        pthread_mutex_destroy(&s->exp[i].mu);
        for (int k = 0; k < POOL_N; k++)
            free(s->exp[i].pool[k]);
        pthread_mutex_destroy(&s->exp[i].pool_mu);
    }
    free(s->exp);
    free(s->zeros);
    r3_tls_ctx_free(s->tls);
    free(s);
}
