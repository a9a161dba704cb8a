/* SPDX-License-Identifier: BSD-3-Clause */
/* NBD client: handshake (GO, falling back to EXPORT_NAME), pipelined
 * requests with cookies, simple and structured replies. A reader thread
 * reads each reply straight into the buffer of the request it answers. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "internal.h"
#include "nbd/client.h"
#include "net/net.h"
#include "nbd/proto.h"

#define PIECE (4u << 20)          /* largest single request we send */
#define MAX_SPANS 32              /* separate pieces of a structured read we track */

struct span { uint64_t a, b; };

struct slot {
    bool used, done;
    uint16_t type;
    uint64_t cookie;
    char *buf;
    size_t len;
    uint64_t off;
    uint64_t deadline;            /* r3_now_ns() by which the reply must be in */
    int err;
    pthread_cond_t cv;            /* CLOCK_MONOTONIC, as r3_now_ns() */
    struct span cov[MAX_SPANS];   /* structured read: the parts filled, sorted */
    unsigned ncov;
    size_t filled;
    bool ext_got;                 /* BLOCK_STATUS: the first descriptor */
    uint32_t ext_len, ext_flags;
};

struct r3_nbd_client {
    struct r3_io io;
    struct r3_tls_ctx *tls;
    char who[300];
    uint64_t size;
    uint16_t flags;
    uint32_t min_block, max_req;
    bool structured, has_reader;
    bool meta;                    /* base:allocation negotiated: BLOCK_STATUS works */
    uint32_t meta_id;
    pthread_mutex_t mu, send_mu;
    pthread_cond_t free_cv;
    struct slot *slots;
    unsigned nslots, nfree;
    uint64_t gen;
    bool dead;
    char why[256];                /* why the connection died */
    int timeout_ms, connect_ms;
    pthread_t reader;
};

static int fail(struct r3_nbd_client *c, int err, const char *what)
{
    return r3_error(err, "%s: %s", c->who, what);
}

/* ---- handshake */

static int hs_fail(struct r3_nbd_client *c, int rc);

static int opt_send(struct r3_nbd_client *c, uint32_t opt, const void *data, uint32_t len)
{
    unsigned char h[16];
    r3_nbd_put64(h, NBD_IHAVEOPT);
    r3_nbd_put32(h + 8, opt);
    r3_nbd_put32(h + 12, len);
    struct iovec v[2] = { { h, 16 }, { (void *)data, len } };
    int rc = r3_io_writev_all(&c->io, v, len ? 2 : 1);
    return rc < 0 ? hs_fail(c, rc) : 0;
}

/* A read or write of the handshake failed: say which way. */
static int hs_fail(struct r3_nbd_client *c, int rc)
{
    if (rc == -ETIMEDOUT)
        return r3_error(-ETIMEDOUT, "%s: the NBD handshake did not finish within %d ms (connect_timeout)",
                        c->who, c->connect_ms);
    if (rc == -EPIPE || rc == -ECONNRESET)
        return fail(c, -EPROTO, "the server closed the connection during the NBD handshake");
    return r3_error(rc, "%s: during the NBD handshake: %s", c->who, strerror(-rc));
}

/* Reads one option reply; its payload (at most 64 KiB) into buf. */
static int opt_reply(struct r3_nbd_client *c, uint32_t opt, uint32_t *type, unsigned char *buf,
                     uint32_t *len)
{
    unsigned char h[20];
    int rc = r3_io_read_all(&c->io, h, 20);
    if (rc < 0)
        return hs_fail(c, rc);
    if (r3_nbd_get64(h) != NBD_REP_MAGIC || r3_nbd_get32(h + 8) != opt)
        return fail(c, -EPROTO, "bad option reply from the server");
    *type = r3_nbd_get32(h + 12);
    *len = r3_nbd_get32(h + 16);
    if (*len > NBD_MAX_OPTION)
        return fail(c, -EPROTO, "option reply too large");
    rc = r3_io_read_all(&c->io, buf, *len);
    return rc < 0 ? hs_fail(c, rc) : 0;
}

static const char *rep_err_name(uint32_t t)
{
    switch (t) {
    case NBD_REP_ERR_UNSUP: return "unsupported";
    case NBD_REP_ERR_POLICY: return "refused by policy";
    case NBD_REP_ERR_INVALID: return "invalid";
    case NBD_REP_ERR_PLATFORM: return "not supported on the platform";
    case NBD_REP_ERR_TLS_REQD: return "TLS required";
    case NBD_REP_ERR_UNKNOWN: return "unknown export";
    case NBD_REP_ERR_SHUTDOWN: return "server shutting down";
    case NBD_REP_ERR_BLOCK_SIZE_REQD: return "block size required";
    case NBD_REP_ERR_TOO_BIG: return "too big";
    default: return "error";
    }
}

static int handshake(struct r3_nbd_client *c, const struct r3_nbd_client_opts *o)
{
    unsigned char h[18];
    int rc = r3_io_read_all(&c->io, h, 18);
    if (rc == -ETIMEDOUT)
        return r3_error(-ETIMEDOUT, "%s: the server sent no NBD greeting within %d ms (connect_timeout)",
                        c->who, c->connect_ms);
    if (rc == -EPIPE || rc == -ECONNRESET)
        return fail(c, -EPROTO, "the server closed the connection before the NBD greeting");
    if (rc < 0)
        return r3_error(rc, "%s: reading the NBD greeting: %s", c->who, strerror(-rc));
    if (r3_nbd_get64(h) != NBD_MAGIC)
        return fail(c, -EPROTO, "not an NBD server (its greeting is not NBDMAGIC)");
    if (r3_nbd_get64(h + 8) != NBD_IHAVEOPT)
        return fail(c, -EPROTO, "an old-style NBD server (only newstyle is supported)");
    uint16_t hf = r3_nbd_get16(h + 16);
    bool fixed = hf & NBD_FLAG_FIXED_NEWSTYLE, nz = hf & NBD_FLAG_NO_ZEROES;
    unsigned char cf[4];
    r3_nbd_put32(cf, (fixed ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) | (nz ? NBD_FLAG_C_NO_ZEROES : 0));
    if ((rc = r3_io_write_all(&c->io, cf, 4)) < 0)
        return hs_fail(c, rc);
    unsigned char *buf = malloc(NBD_MAX_OPTION + 8);
    if (!buf)
        return -ENOMEM;
    uint32_t type, len;
    const char *name = o->export_name ? o->export_name : "";
    size_t nl = strlen(name);
    if (nl > NBD_MAX_NAME) {
        rc = fail(c, -EINVAL, "export name too long");
        goto out;
    }
    if (o->tls) {
        rc = -EPROTO;
        if (!fixed || (rc = opt_send(c, NBD_OPT_STARTTLS, NULL, 0)) < 0 ||
            (rc = opt_reply(c, NBD_OPT_STARTTLS, &type, buf, &len)) < 0) {
            if (rc == -EPROTO && !fixed)
                fail(c, rc, "the server cannot do TLS (not fixed newstyle)");
            goto out;
        }
        if (type != NBD_REP_ACK) {
            rc = r3_error(-ECONNREFUSED, "%s: the server refused STARTTLS (%s)", c->who, rep_err_name(type));
            goto out;
        }
        int left = r3_net_remaining_ms(c->io.rdeadline);
        if ((rc = r3_tls_connect(c->tls, &c->io, o->host, left)) < 0) {
            r3_error_prefix(rc, "%s: ", c->who);
            goto out;
        }
    }
    if (fixed && !o->no_structured) {
        if ((rc = opt_send(c, NBD_OPT_STRUCTURED_REPLY, NULL, 0)) < 0 ||
            (rc = opt_reply(c, NBD_OPT_STRUCTURED_REPLY, &type, buf, &len)) < 0)
            goto out;
        c->structured = type == NBD_REP_ACK;
    }
    if (c->structured) {
        /* base:allocation, for the extent op (BLOCK_STATUS). A server
         * without it answers UNSUP or no context: extents say DATA then. */
        static const char ctx[] = NBD_META_ALLOCATION;
        unsigned char m[4 + NBD_MAX_NAME + 8 + sizeof ctx];
        r3_nbd_put32(m, (uint32_t)nl);
        memcpy(m + 4, name, nl);
        r3_nbd_put32(m + 4 + nl, 1);
        r3_nbd_put32(m + 8 + nl, (uint32_t)(sizeof ctx - 1));
        memcpy(m + 12 + nl, ctx, sizeof ctx - 1);
        if ((rc = opt_send(c, NBD_OPT_SET_META_CONTEXT, m, (uint32_t)(12 + nl + sizeof ctx - 1))) < 0)
            goto out;
        for (;;) {
            if ((rc = opt_reply(c, NBD_OPT_SET_META_CONTEXT, &type, buf, &len)) < 0)
                goto out;
            if (type != NBD_REP_META_CONTEXT)
                break;                    /* ACK, or an error: we go on without */
            if (len == 4 + sizeof ctx - 1 && memcmp(buf + 4, ctx, sizeof ctx - 1) == 0) {
                c->meta = true;
                c->meta_id = r3_nbd_get32(buf);
            }
        }
        if (type != NBD_REP_ACK)
            c->meta = false;
    }
    bool have_export = false;
    if (fixed) {
        unsigned char g[4 + NBD_MAX_NAME + 4];
        r3_nbd_put32(g, (uint32_t)nl);
        memcpy(g + 4, name, nl);
        r3_nbd_put16(g + 4 + nl, 1);
        r3_nbd_put16(g + 6 + nl, NBD_INFO_BLOCK_SIZE);
        if ((rc = opt_send(c, NBD_OPT_GO, g, (uint32_t)(8 + nl))) < 0)
            goto out;
        for (;;) {
            if ((rc = opt_reply(c, NBD_OPT_GO, &type, buf, &len)) < 0)
                goto out;
            if (type == NBD_REP_ACK)
                break;
            if (type == NBD_REP_INFO && len >= 2) {
                uint16_t it = r3_nbd_get16(buf);
                if (it == NBD_INFO_EXPORT && len == 12) {
                    c->size = r3_nbd_get64(buf + 2);
                    c->flags = r3_nbd_get16(buf + 10);
                    have_export = true;
                } else if (it == NBD_INFO_BLOCK_SIZE && len == 14) {
                    c->min_block = r3_nbd_get32(buf + 2);
                    c->max_req = r3_nbd_get32(buf + 10);
                }
                continue;
            }
            if (type == NBD_REP_ERR_UNSUP)
                break;                    /* an old server: EXPORT_NAME below */
            if (type & NBD_REP_FLAG_ERROR) {
                buf[len] = 0;
                rc = r3_error(type == NBD_REP_ERR_UNKNOWN ? -ENOENT : -ECONNREFUSED,
                              "%s: the server refused export '%s': %s%s%s", c->who, name,
                              rep_err_name(type), len ? ": " : "", (char *)buf);
                goto out;
            }
        }
    }
    if (!have_export) {
        if ((rc = opt_send(c, NBD_OPT_EXPORT_NAME, name, (uint32_t)nl)) < 0)
            goto out;
        if ((rc = r3_io_read_all(&c->io, buf, nz ? 10 : 134)) < 0) {
            if (rc == -EPIPE || rc == -ECONNRESET)
                rc = r3_error(-ENOENT, "%s: the server closed the connection (no export '%s'?)", c->who, name);
            else
                hs_fail(c, rc);
            goto out;
        }
        c->size = r3_nbd_get64(buf);
        c->flags = r3_nbd_get16(buf + 8);
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

/* ---- requests */

/* The connection is unusable from now on: say why (the first reason is
 * kept) and shut the socket, which ends the reader. Only the reader
 * completes slots (it may be writing into one's buffer). */
static void kill_conn(struct r3_nbd_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void kill_conn(struct r3_nbd_client *c, const char *fmt, ...)
{
    pthread_mutex_lock(&c->mu);
    if (!c->dead) {
        c->dead = true;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->why, sizeof c->why, fmt, ap);
        va_end(ap);
        r3_io_shutdown(&c->io);
    }
    pthread_mutex_unlock(&c->mu);
}

/* The reader's last act: every request still waiting fails. */
static void reader_exit(struct r3_nbd_client *c)
{
    pthread_mutex_lock(&c->mu);
    c->dead = true;
    for (unsigned i = 0; i < c->nslots; i++)
        if (c->slots[i].used && !c->slots[i].done) {
            c->slots[i].done = true;
            c->slots[i].err = -EIO;
            pthread_cond_signal(&c->slots[i].cv);
        }
    pthread_cond_broadcast(&c->free_cv);
    pthread_mutex_unlock(&c->mu);
}

static int reply_errno(uint32_t e)
{
    switch (e) {
    case NBD_EPERM: case NBD_EIO: case NBD_ENOMEM: case NBD_EINVAL: case NBD_ENOSPC:
    case NBD_EOVERFLOW: case NBD_ENOTSUP: case NBD_ESHUTDOWN:
        return -(int)e;
    default:
        return -EIO;
    }
}

static void complete(struct r3_nbd_client *c, struct slot *s, int err)
{
    pthread_mutex_lock(&c->mu);
    s->done = true;
    s->err = err;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&c->mu);
}

static struct slot *find(struct r3_nbd_client *c, uint64_t cookie)
{
    unsigned idx = (unsigned)(cookie & 0xffff);
    pthread_mutex_lock(&c->mu);
    struct slot *s = idx < c->nslots ? &c->slots[idx] : NULL;
    if (s && (!s->used || s->done || s->cookie != cookie))
        s = NULL;
    pthread_mutex_unlock(&c->mu);
    return s;
}

/* A structured READ reply fills [off, off+n) of the request: chunks may come
 * in any order but must not overlap (the spec), and the read succeeds only
 * when they cover the whole request. -EPROTO for an overlap or for more
 * separate pieces than we track. */
static int cover(struct slot *s, uint64_t a, uint64_t n)
{
    uint64_t b = a + n;
    if (n == 0)
        return 0;
    unsigned i = 0;
    while (i < s->ncov && s->cov[i].b < a)
        i++;
    if (i < s->ncov && s->cov[i].a < b && a < s->cov[i].b)
        return -EPROTO;                           /* overlaps a chunk already read */
    if (i < s->ncov && s->cov[i].b == a) {        /* extends the piece before it */
        s->cov[i].b = b;
        if (i + 1 < s->ncov && s->cov[i + 1].a < b)
            return -EPROTO;
        if (i + 1 < s->ncov && s->cov[i + 1].a == b) {
            s->cov[i].b = s->cov[i + 1].b;
            memmove(&s->cov[i + 1], &s->cov[i + 2], (s->ncov - i - 2) * sizeof s->cov[0]);
            s->ncov--;
        }
    } else if (i < s->ncov && s->cov[i].a == b) {  /* extends the piece after it */
        s->cov[i].a = a;
    } else {
        if (s->ncov == MAX_SPANS)
            return -EPROTO;
        memmove(&s->cov[i + 1], &s->cov[i], (s->ncov - i) * sizeof s->cov[0]);
        s->cov[i] = (struct span){ a, b };
        s->ncov++;
    }
    s->filled += n;
    return 0;
}

static int proto(struct r3_nbd_client *c, const char *what)
{
    kill_conn(c, "protocol error from the server: %s", what);
    return -EPROTO;
}

static int lost(struct r3_nbd_client *c, int rc)
{
    if (rc == -EPIPE)
        kill_conn(c, "the server closed the connection");
    else
        kill_conn(c, "reading from the server: %s", strerror(-rc));
    return rc;
}

static int read_structured(struct r3_nbd_client *c, const unsigned char *h)
{
    unsigned char t[4];
    int rc = r3_io_read_all(&c->io, t, 4);
    if (rc < 0)
        return lost(c, rc);
    uint16_t flags = r3_nbd_get16(h + 4), type = r3_nbd_get16(h + 6);
    uint64_t cookie = r3_nbd_get64(h + 8);
    uint32_t len = r3_nbd_get32(t);
    struct slot *s = find(c, cookie);
    if (!s)
        return proto(c, "a reply to a request we did not send");
    unsigned char b[16];
    switch (type) {
    case NBD_REPLY_TYPE_NONE:
        if (len)
            return proto(c, "a NONE chunk with a payload");
        break;
    case NBD_REPLY_TYPE_OFFSET_DATA: {
        if (s->type != NBD_CMD_READ || len < 8 || len - 8 > s->len)
            return proto(c, "a data chunk that does not fit the request");
        if ((rc = r3_io_read_all(&c->io, b, 8)) < 0)
            return lost(c, rc);
        uint64_t off = r3_nbd_get64(b);
        size_t n = len - 8;
        if (off < s->off || off - s->off > s->len || n > s->len - (off - s->off))
            return proto(c, "a data chunk outside the requested range");
        if (cover(s, off - s->off, n) < 0)
            return proto(c, "overlapping or too fragmented data chunks");
        if ((rc = r3_io_read_all(&c->io, s->buf + (off - s->off), n)) < 0)
            return lost(c, rc);
        break;
    }
    case NBD_REPLY_TYPE_OFFSET_HOLE: {
        if (len != 12 || s->type != NBD_CMD_READ)
            return proto(c, "a malformed hole chunk");
        if ((rc = r3_io_read_all(&c->io, b, 12)) < 0)
            return lost(c, rc);
        uint64_t off = r3_nbd_get64(b);
        uint32_t n = r3_nbd_get32(b + 8);
        if (off < s->off || off - s->off > s->len || n > s->len - (off - s->off))
            return proto(c, "a hole chunk outside the requested range");
        if (cover(s, off - s->off, n) < 0)
            return proto(c, "overlapping or too fragmented chunks");
        memset(s->buf + (off - s->off), 0, n);
        break;
    }
    case NBD_REPLY_TYPE_BLOCK_STATUS: {
        /* The context id and descriptors (length, flags): we asked for
         * base:allocation only, and need the first descriptor only. */
        if (s->type != NBD_CMD_BLOCK_STATUS || len < 12 || (len - 4) % 8 || len > NBD_MAX_OPTION || s->ext_got)
            return proto(c, "a malformed block status chunk");
        if ((rc = r3_io_read_all(&c->io, b, 12)) < 0 || (rc = r3_io_skip(&c->io, len - 12)) < 0)
            return lost(c, rc);
        if (r3_nbd_get32(b) != c->meta_id)
            return proto(c, "a block status chunk for a context we did not ask for");
        s->ext_len = r3_nbd_get32(b + 4);
        s->ext_flags = r3_nbd_get32(b + 8);
        if (s->ext_len == 0)
            return proto(c, "a block status descriptor of length 0");
        s->ext_got = true;
        break;
    }
    default:
        if (len > NBD_MAX_OPTION)
            return proto(c, "a chunk of more than 64 KiB that is not data");
        if (!(type & 0x8000)) {
            if ((rc = r3_io_skip(&c->io, len)) < 0)   /* an informational chunk we do not know */
                return lost(c, rc);
            break;
        }
        if (len < 6)
            return proto(c, "an error chunk shorter than 6 bytes");
        if ((rc = r3_io_read_all(&c->io, b, 6)) < 0 || (rc = r3_io_skip(&c->io, len - 6)) < 0)
            return lost(c, rc);
        if (r3_nbd_get16(b + 4) > len - 6)
            return proto(c, "an error chunk whose message overruns it");
        s->err = reply_errno(r3_nbd_get32(b));
        if (s->err == 0)
            s->err = -EIO;
        break;
    }
    if (flags & NBD_REPLY_FLAG_DONE) {
        if (s->err == 0 && s->type == NBD_CMD_READ && !(s->ncov == 1 && s->filled == s->len))
            s->err = -ENODATA;            /* reported as -EIO with the byte count by await() */
        if (s->err == 0 && s->type == NBD_CMD_BLOCK_STATUS && !s->ext_got)
            s->err = -ENOMSG;
        complete(c, s, s->err);
    }
    return 0;
}

static void *reader(void *arg)
{
    struct r3_nbd_client *c = arg;
    for (;;) {
        unsigned char h[16];
        int rc = r3_io_read_all(&c->io, h, 16);
        if (rc < 0) {
            lost(c, rc);
            break;
        }
        uint32_t magic = r3_nbd_get32(h);
        if (magic == NBD_SIMPLE_REPLY_MAGIC) {
            uint32_t err = r3_nbd_get32(h + 4);
            struct slot *s = find(c, r3_nbd_get64(h + 8));
            if (!s) {
                proto(c, "a reply to a request we did not send");
                break;
            }
            if (!err && s->type == NBD_CMD_READ && (rc = r3_io_read_all(&c->io, s->buf, s->len)) < 0) {
                lost(c, rc);
                break;
            }
            complete(c, s, err ? reply_errno(err) : 0);
        } else if (magic == NBD_STRUCTURED_REPLY_MAGIC && c->structured) {
            if (read_structured(c, h) < 0)
                break;
        } else {
            char m[64];
            snprintf(m, sizeof m, "a reply with a bad magic 0x%08x", magic);
            proto(c, m);
            break;
        }
    }
    reader_exit(c);
    return NULL;
}

static struct timespec abs_time(uint64_t deadline_ns)
{
    return (struct timespec){ (time_t)(deadline_ns / 1000000000u), (long)(deadline_ns % 1000000000u) };
}

static const char *cmd_name(uint16_t type)
{
    switch (type) {
    case NBD_CMD_READ: return "read";
    case NBD_CMD_WRITE: return "write";
    case NBD_CMD_FLUSH: return "flush";
    case NBD_CMD_BLOCK_STATUS: return "block status query";
    default: return "request";
    }
}

static int submit(struct r3_nbd_client *c, uint16_t type, uint16_t flags, void *buf, size_t len,
                  uint64_t off)
{
    uint64_t deadline = c->timeout_ms < 0 ? 0 : r3_now_ns() + (uint64_t)c->timeout_ms * 1000000u;
    pthread_mutex_lock(&c->mu);
    while (!c->dead && c->nfree == 0) {
        struct timespec ts = abs_time(deadline);
        if (!deadline)
            pthread_cond_wait(&c->free_cv, &c->mu);
        else if (pthread_cond_timedwait(&c->free_cv, &c->mu, &ts) == ETIMEDOUT && c->nfree == 0) {
            pthread_mutex_unlock(&c->mu);
            return r3_error(-ETIMEDOUT, "%s: all %u request slots stayed busy for %d ms", c->who,
                            c->nslots, c->timeout_ms);
        }
    }
    if (c->dead) {
        pthread_mutex_unlock(&c->mu);
        return r3_error(-EIO, "%s: the connection is lost: %s", c->who, c->why);
    }
    unsigned idx = 0;
    while (c->slots[idx].used)
        idx++;
    struct slot *s = &c->slots[idx];
    s->used = true;
    s->done = false;
    s->type = type;
    s->buf = buf;
    s->len = len;
    s->off = off;
    s->err = 0;
    s->ncov = 0;
    s->filled = 0;
    s->ext_got = false;
    s->deadline = deadline;
    s->cookie = (++c->gen << 16) | idx;
    c->nfree--;
    uint64_t cookie = s->cookie;
    pthread_mutex_unlock(&c->mu);
    unsigned char h[NBD_REQUEST_SIZE];
    r3_nbd_put32(h, NBD_REQUEST_MAGIC);
    r3_nbd_put16(h + 4, flags);
    r3_nbd_put16(h + 6, type);
    r3_nbd_put64(h + 8, cookie);
    r3_nbd_put64(h + 16, off);
    r3_nbd_put32(h + 24, (uint32_t)len);
    struct iovec v[2] = { { h, sizeof h }, { buf, len } };
    pthread_mutex_lock(&c->send_mu);
    int rc = r3_io_writev_all(&c->io, v, type == NBD_CMD_WRITE ? 2 : 1);
    pthread_mutex_unlock(&c->send_mu);
    if (rc == -ETIMEDOUT)
        kill_conn(c, "the server took no data for %d ms (sending a %s of %zu bytes)", c->timeout_ms,
                  cmd_name(type), len);
    else if (rc < 0)
        kill_conn(c, "sending a request: %s", strerror(-rc));
    return (int)idx;              /* on failure the reader completes the slot */
}

static int await_ext(struct r3_nbd_client *c, int idx, uint32_t *ext_len, uint32_t *ext_flags);

static int await(struct r3_nbd_client *c, int idx)
{
    return await_ext(c, idx, NULL, NULL);
}

/* Wait for the reply in slot idx (and take a BLOCK_STATUS's descriptor). */
static int await_ext(struct r3_nbd_client *c, int idx, uint32_t *ext_len, uint32_t *ext_flags)
{
    struct slot *s = &c->slots[idx];
    bool late = false;
    pthread_mutex_lock(&c->mu);
    while (!s->done) {
        if (late || !s->deadline) {
            pthread_cond_wait(&s->cv, &c->mu);    /* late: the reader ends soon, the socket is shut */
            continue;
        }
        struct timespec ts = abs_time(s->deadline);
        if (pthread_cond_timedwait(&s->cv, &c->mu, &ts) == ETIMEDOUT && !s->done) {
            late = true;
            pthread_mutex_unlock(&c->mu);
            kill_conn(c, "no reply to a %s of %zu bytes at %" PRIu64 " within %d ms (timeout)",
                      cmd_name(s->type), s->len, s->off, c->timeout_ms);
            pthread_mutex_lock(&c->mu);
        }
    }
    int err = s->err;
    uint16_t type = s->type;
    size_t len = s->len, filled = s->filled;
    uint64_t off = s->off;
    if (ext_len) {
        *ext_len = s->ext_len;
        *ext_flags = s->ext_flags;
    }
    s->used = false;
    c->nfree++;
    pthread_cond_signal(&c->free_cv);
    bool dead = c->dead;
    char why[sizeof c->why];
    memcpy(why, c->why, sizeof why);
    pthread_mutex_unlock(&c->mu);
    if (err == -EIO && dead)
        return r3_error(late ? -ETIMEDOUT : -EIO, "%s: %s", c->who, why);
    if (err == -ENOMSG)
        return r3_error(-EIO, "%s: the server answered a block status query without a descriptor", c->who);
    if (err == -ENODATA)
        return r3_error(-EIO, "%s: the server's reply to a read of %zu bytes at %" PRIu64
                        " left %zu bytes unfilled", c->who, len, off, len - filled);
    if (err)
        return r3_error(err, "%s: the server answered the %s: %s", c->who, cmd_name(type), strerror(-err));
    return 0;
}

/* Split into pieces, submit them all, then wait for all. */
static int rw(struct r3_nbd_client *c, uint16_t type, uint16_t flags, char *buf, size_t len, uint64_t off)
{
    int ids[16], n = 0, rc = 0;
    size_t piece = c->max_req < PIECE ? c->max_req : PIECE;
    while (len) {
        size_t m = len < piece ? len : piece;
        int id = submit(c, type, flags, buf, m, off);
        if (id < 0) {
            rc = id;
            break;
        }
        ids[n++] = id;
        buf += m;
        off += m;
        len -= m;
        if (n == 16 || len == 0) {
            for (int i = 0; i < n; i++) {
                int r = await(c, ids[i]);
                if (rc == 0)
                    rc = r;
            }
            n = 0;
            if (rc < 0 || len == 0)
                return rc;
        }
    }
    for (int i = 0; i < n; i++) {
        int r = await(c, ids[i]);
        if (rc == 0)
            rc = r;
    }
    return rc;
}

int r3_nbd_client_pread(struct r3_nbd_client *c, void *buf, size_t len, uint64_t off)
{
    return len ? rw(c, NBD_CMD_READ, 0, buf, len, off) : 0;
}

int r3_nbd_client_pwrite(struct r3_nbd_client *c, const void *buf, size_t len, uint64_t off, bool fua)
{
    if (c->flags & NBD_FLAG_READ_ONLY)
        return fail(c, -EROFS, "the export is read-only");
    return len ? rw(c, NBD_CMD_WRITE, fua && (c->flags & NBD_FLAG_SEND_FUA) ? NBD_CMD_FLAG_FUA : 0,
                    (char *)buf, len, off) : 0;
}

int r3_nbd_client_flush(struct r3_nbd_client *c)
{
    if (!(c->flags & NBD_FLAG_SEND_FLUSH))
        return 0;
    int id = submit(c, NBD_CMD_FLUSH, 0, NULL, 0, 0);
    return id < 0 ? id : await(c, id);
}

int r3_nbd_client_block_status(struct r3_nbd_client *c, uint64_t off, uint64_t len, uint64_t *run)
{
    if (!c->meta || len == 0) {
        *run = len;
        return R3_EXTENT_DATA;
    }
    /* A 32-bit length; 1 GiB keeps any power-of-two block size aligned. */
    uint32_t n = len < (1u << 30) ? (uint32_t)len : 1u << 30;
    int id = submit(c, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, NULL, n, off);
    if (id < 0)
        return id;
    uint32_t elen = 0, flags = 0;
    int rc = await_ext(c, id, &elen, &flags);
    if (rc < 0)
        return rc;
    if (elen == 0)                        /* a simple reply: no descriptor at all */
        return r3_error(-EIO, "%s: the server answered a block status query without a descriptor", c->who);
    *run = elen < n ? elen : n;           /* a descriptor past the request says no more than it */
    return (flags & NBD_STATE_ZERO) ? R3_EXTENT_ZERO : R3_EXTENT_DATA;
}

bool r3_nbd_client_has_extents(const struct r3_nbd_client *c) { return c->meta; }

uint64_t r3_nbd_client_size(const struct r3_nbd_client *c) { return c->size; }
uint16_t r3_nbd_client_flags(const struct r3_nbd_client *c) { return c->flags; }

/* ---- connect / close */

static int dial(const struct r3_nbd_client_opts *o, struct r3_nbd_client *c, int *out)
{
    struct r3_net_addr a = { 0 };
    if (o->unix_path) {
        if (strlen(o->unix_path) >= sizeof a.path)
            return r3_error(-ENAMETOOLONG, "%s: the socket path is too long", c->who);
        a.kind = R3_NET_UNIX;
        strcpy(a.path, o->unix_path);
    } else {
        if (strlen(o->host) >= sizeof a.host)
            return r3_error(-EINVAL, "%s: the host name is too long", c->who);
        a.kind = R3_NET_TCP;
        strcpy(a.host, o->host);
        a.port = o->port ? o->port : NBD_DEFAULT_PORT;
    }
    int rc = r3_net_dial(&a, c->connect_ms, out);
    if (rc < 0)
        r3_error_prefix(rc, "%s: ", c->who);
    return rc;
}

int r3_nbd_client_connect(const struct r3_nbd_client_opts *o, struct r3_nbd_client **out)
{
    *out = NULL;
    if (!o->unix_path && (!o->host || !o->host[0]))
        return r3_error(-EINVAL, "nbd: no host or socket given");
    struct r3_nbd_client *c = calloc(1, sizeof *c);
    if (!c)
        return r3_error(-ENOMEM, "nbd: out of memory");
    c->io.fd = -1;
    uint64_t t0 = r3_now_ns();
    c->connect_ms = o->connect_timeout_ms ? (int)o->connect_timeout_ms : 5000;
    c->timeout_ms = o->timeout_ms == R3_NBD_NO_TIMEOUT ? -1 : o->timeout_ms ? (int)o->timeout_ms : 30000;
    uint64_t deadline = t0 + (uint64_t)c->connect_ms * 1000000u;
    if (o->unix_path)
        snprintf(c->who, sizeof c->who, "nbd+unix %s export '%s'", o->unix_path,
                 o->export_name ? o->export_name : "");
    else
        snprintf(c->who, sizeof c->who, strchr(o->host, ':') ? "nbd [%s]:%d export '%s'" : "nbd %s:%d export '%s'",
                 o->host, o->port ? o->port : NBD_DEFAULT_PORT, o->export_name ? o->export_name : "");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);      /* deadlines are r3_now_ns() */
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->send_mu, NULL);
    pthread_cond_init(&c->free_cv, &ca);
    c->nslots = o->max_inflight ? (o->max_inflight > 1024 ? 1024 : o->max_inflight) : 64;
    c->nfree = c->nslots;
    c->slots = calloc(c->nslots, sizeof *c->slots);
    int rc = c->slots ? 0 : r3_error(-ENOMEM, "nbd: out of memory");
    for (unsigned i = 0; rc == 0 && i < c->nslots; i++)
        pthread_cond_init(&c->slots[i].cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc == 0 && o->tls) {
        struct r3_tls_opts t = { .dir = o->tls_dir, .psk_file = o->tls_psk, .psk_identity = o->tls_user };
        rc = r3_tls_client_ctx(&t, &c->tls);
    }
    int fd = -1;
    if (rc == 0)
        rc = dial(o, c, &fd);
    if (rc == 0 && (rc = r3_io_init(&c->io, fd)) < 0)
        close(fd);
    if (rc == 0) {
        /* connect_timeout bounds connecting and the whole handshake. */
        c->io.rdeadline = c->io.wdeadline = deadline;
        rc = handshake(c, o);
        c->io.rdeadline = c->io.wdeadline = 0;
        c->io.wtimeout_ms = c->timeout_ms;           /* a server that stops reading */
    }
    if (rc == 0) {
        if (!c->max_req || c->max_req > NBD_MAX_REQUEST)
            c->max_req = NBD_MAX_REQUEST;
        if (c->min_block == 0)
            c->min_block = 1;
        if (!o->handshake_only) {
            rc = r3_thread_create(&c->reader, reader, c);
            c->has_reader = rc == 0;
        }
    }
    if (rc < 0) {
        c->dead = true;
        r3_nbd_client_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

uint32_t r3_nbd_client_min_block(const struct r3_nbd_client *c) { return c->min_block; }

int r3_nbd_client_take_fd(struct r3_nbd_client *c)
{
    int fd = c->io.fd;
    if (fd < 0 || c->io.ssl)
        return r3_error(-EINVAL, "%s: only a plain connection can be handed over", c->who);
    c->io.fd = -1;
    pthread_mutex_destroy(&c->io.mu);
    c->dead = true;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);      /* the kernel's socket now */
    return fd;
}

void r3_nbd_client_close(struct r3_nbd_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);                 /* the reader sets dead under it */
    bool dead = c->dead;
    pthread_mutex_unlock(&c->mu);
    if (c->io.fd >= 0 && !dead) {
        unsigned char h[NBD_REQUEST_SIZE] = { 0 };
        r3_nbd_put32(h, NBD_REQUEST_MAGIC);
        r3_nbd_put16(h + 6, NBD_CMD_DISC);
        pthread_mutex_lock(&c->send_mu);
        r3_io_write_all(&c->io, h, sizeof h);
        pthread_mutex_unlock(&c->send_mu);
    }
    if (c->io.fd >= 0)
        r3_io_shutdown(&c->io);
    if (c->has_reader)
        pthread_join(c->reader, NULL);
    r3_io_close(&c->io);
    for (unsigned i = 0; c->slots && i < c->nslots; i++)
        pthread_cond_destroy(&c->slots[i].cv);
    free(c->slots);
    r3_tls_ctx_free(c->tls);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->send_mu);
    pthread_cond_destroy(&c->free_cv);
    free(c);
}
