/* SPDX-License-Identifier: BSD-3-Clause */
/* redis: one key per chunk, "<prefix>:<chunk index>", binary-safe values.
 *   redis://[[user:]password@]host:port/prefix?size=&chunk=&db=N&conns=N&timeout=DUR
 *          &connect_timeout=DUR[&cluster=1]      (defaults as r3://: 30s and 5s)
 * A missing key reads as zeros. Whole-chunk writes are SET; partial ones are
 * SETRANGE, which the server applies atomically, so concurrent writers to
 * different bytes of one chunk never lose each other's bytes (no client-side
 * read-modify-write). A value shorter than a chunk (made by SETRANGE) reads
 * as zero-padded. Requests that span several chunks are pipelined on one
 * connection per node; each node has a pool of up to conns connections, so
 * calls run in parallel (R3_SRC_PARALLEL). Every command is idempotent, so a
 * broken connection is dropped and the command retried on a new one.
 * "<prefix>:meta" records "r3 SIZE CHUNK" so a URI without size can reopen.
 * flush: every write was acknowledged by the server before it returned;
 * durability beyond that is the server's persistence (appendfsync).
 * Replies are bounded by what the request can need (r3_redis_reply): a GET
 * reply longer than the chunk, an array no command of ours gets, garbage or a
 * reply that does not finish within timeout= are errors with a sentence,
 * never a buffer that grows with what the server sends. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include "sources/redis.h"

#define BATCH_PIECES 128                 /* bound on one pipeline */
#define BATCH_BYTES  (16u << 20)
#define CONN_RETRIES 6                   /* reconnects per call: ~2.5 s of backoff */
#define ROUNDS       32                  /* redirection rounds per call */

enum { OP_GET, OP_GETRANGE, OP_SET, OP_SETRANGE, OP_META_GET, OP_META_SET, OP_EXISTS };

struct piece {
    int op;
    uint64_t idx;
    uint32_t in, n;              /* byte range inside the chunk */
    char *buf;
    int ask;                     /* node to send ASKING + command to, -1 none */
    bool done;
};

static int conn_errno(const redisContext *c)
{
    if (c->err == REDIS_ERR_IO && strstr(c->errstr, "refused"))
        return -ECONNREFUSED;
    if (strstr(c->errstr, "timed out") || strstr(c->errstr, "Timeout") ||
        strstr(c->errstr, "temporarily unavailable"))
        return -ETIMEDOUT;
    return -EIO;
}

/* The sentence for a broken or silent connection. */
int r3_redis_conn_fail(const struct redis_source *r, const struct redis_node *n,
                     const redisContext *c, const char *what)
{
    int e = conn_errno(c);
    bool connecting = strcmp(what, "cannot connect") == 0;
    const struct timeval *tv = connecting ? &r->connect_timeout : &r->timeout;
    if (e == -ETIMEDOUT)
        return r3_error(e, "redis %s:%d: %s: no answer within %ld ms (%s)", n->host, n->port,
                        what, (long)tv->tv_sec * 1000 + (long)tv->tv_usec / 1000,
                        connecting ? "connect_timeout=" : "timeout=");
    return r3_error(e, "redis %s:%d: %s: %s", n->host, n->port, what,
                    c->errstr[0] ? c->errstr : "connection lost");
}

/* Charge bytes of reply objects to the reply's budget; false when over (the
 * builder then returns NULL, which stops hiredis' reader with an error). */
static bool charge(struct redis_sink *k, size_t bytes)
{
    if (bytes > k->budget) {
        k->over = true;
        return false;
    }
    k->budget -= bytes;
    return true;
}

/* createString: a top-level bulk string goes straight to the sink. */
static void *sink_string(const redisReadTask *t, char *str, size_t len)
{
    struct redis_sink *k = t->privdata;
    if (!k->dst || t->parent || t->type != REDIS_REPLY_STRING) {
        if (!charge(k, len + sizeof(redisReply)))
            return NULL;
        return k->dflt->createString(t, str, len);
    }
    redisReply *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->type = REDIS_REPLY_STRING;
    r->len = len;                        /* r->str stays NULL: the bytes are in dst */
    k->used = true;
    if (len > k->cap) {
        k->too_long = true;
        return r;
    }
    memcpy(k->dst, str, len);
    k->got = len;
    return r;
}

#if HIREDIS_MAJOR >= 1
typedef size_t array_len_t;
#else
typedef int array_len_t;
#endif

/* createArray: charged for its slots and the objects that will fill them. */
static void *sink_array(const redisReadTask *t, array_len_t n)
{
    struct redis_sink *k = t->privdata;
    if (n > 0 && (size_t)n > k->budget / (sizeof(redisReply *) + sizeof(redisReply))) {
        k->over = true;
        return NULL;
    }
    if (!charge(k, sizeof(redisReply) + (size_t)(n > 0 ? n : 0) * (sizeof(redisReply *) + sizeof(redisReply))))
        return NULL;
    return k->dflt->createArray(t, n);
}

/* The length a bulk string announces at the reader's position, when the
 * reader is about to parse one (-1 otherwise). hiredis keeps its position at
 * the length line until the whole string has arrived, so the length can be
 * refused before any of the string is buffered. With part of the digits,
 * a lower bound. */
static long long announced_bulk(const redisReader *rd)
{
    const char *p = rd->buf + rd->pos, *e = rd->buf + rd->len;
    int type = -1;
    if (rd->ridx >= 0)
#if HIREDIS_MAJOR >= 1
        type = rd->task[rd->ridx]->type;
#else
        type = rd->rstack[rd->ridx].type;
#endif
    if (type < 0) {                          /* the type byte comes next */
        if (p >= e || *p != '$')
            return -1;
        p++;
    } else if (type != REDIS_REPLY_STRING) {
        return -1;
    }
    long long v = -1;
    for (; p < e && *p >= '0' && *p <= '9'; p++) {
        if (v > (LLONG_MAX - 9) / 10)
            return LLONG_MAX;
        v = (v < 0 ? 0 : v * 10) + (*p - '0');
    }
    return v;
}

/* Is the reader between top-level replies (the next byte is a type)? */
static bool reader_idle(const redisReader *rd)
{
    if (rd->ridx < 0)
        return true;
#if HIREDIS_MAJOR >= 1
    return rd->ridx == 0 && rd->task[0]->type < 0;
#else
    return rd->ridx == 0 && rd->rstack[0].type < 0;
#endif
}

#define DIRECT_MIN (64u << 10)   /* bulk strings this big skip the reader's buffer */

/* A big bulk string for the sink (a GET of a chunk): once its length line is
 * in the reader's buffer, the rest comes from the socket straight into dst,
 * instead of 16 KiB at a time through hiredis' stack buffer and its reader
 * buffer and a copy out of that (three copies per byte become one). 1 done
 * (*out set, as sink_string would), 0 not this case (the reader goes on),
 * <0 an error (the connection is then dropped). */
static int direct_bulk(struct redis_node *n, redisContext *c, uint64_t deadline, long tmo_ms,
                       redisReply **out, bool *lying)
{
    redisReader *rd = c->reader;
    struct redis_sink *k = rd->privdata;
    if (!k->dst || k->cap < DIRECT_MIN || !reader_idle(rd) || rd->pos >= rd->len ||
        rd->buf[rd->pos] != '$')
        return 0;
    const char *p = rd->buf + rd->pos + 1, *e = rd->buf + rd->len;
    const char *nl = memchr(p, '\n', (size_t)(e - p));
    if (!nl || nl - p < 2 || nl[-1] != '\r')
        return 0;                            /* no whole length line yet, or "$\r\n" */
    size_t len = 0;
    for (const char *q = p; q < nl - 1; q++) {
        if (*q < '0' || *q > '9' || len > SIZE_MAX / 10 - 1)
            return 0;                        /* "$-1" (nil) or garbage: the reader's case */
        len = len * 10 + (size_t)(*q - '0');
    }
    size_t have = (size_t)(e - (nl + 1));
    if (len > k->cap || len < DIRECT_MIN || have >= len + 2)
        return 0;                            /* too long (refused earlier) or all here */
    size_t pay = have < len ? have : len;
    char crlf[2];
    size_t ncrlf = have - pay;               /* 0 or 1 byte of the trailing CRLF */
    memcpy(k->dst, nl + 1, pay);
    if (ncrlf)
        crlf[0] = nl[1 + len];
    rd->pos = rd->len;                       /* all the reader held is consumed */
    size_t want = len + 2;
    for (size_t got = have; got < want;) {
        if (r3_now_ns() > deadline)          /* a trickle is no answer either */
            return r3_error(-ETIMEDOUT, "redis %s:%d: no complete reply within %ld ms (timeout=)",
                            n->host, n->port, tmo_ms);
        char *to = got < len ? k->dst + got : crlf + (got - len);
        ssize_t m = recv(c->fd, to, got < len ? len - got : want - got, 0);
        if (m > 0) {
            got += (size_t)m;
        } else if (m < 0 && errno == EINTR) {
            continue;
        } else if (m < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return r3_error(-ETIMEDOUT, "redis %s:%d: no complete reply within %ld ms (timeout=)",
                            n->host, n->port, tmo_ms);
        } else {
            return r3_error(-EIO, "redis %s:%d: connection: %s", n->host, n->port,
                            m == 0 ? "the server closed the connection" : strerror(errno));
        }
    }
    if (crlf[0] != '\r' || crlf[1] != '\n') {
        *lying = true;
        return r3_error(-EIO, "redis %s:%d: not a Redis reply (a bulk string not ended by CRLF)",
                        n->host, n->port);
    }
    redisReply *rep = calloc(1, sizeof *rep);
    if (!rep)
        return r3_error(-ENOMEM, "redis %s:%d: out of memory", n->host, n->port);
    rep->type = REDIS_REPLY_STRING;
    rep->len = len;                          /* rep->str stays NULL: the bytes are in dst */
    k->used = true;
    k->got = len;
    *out = rep;
    return 1;
}

int r3_redis_reply(struct redis_source *r, struct redis_node *n, redisContext *c, size_t bulk,
                   size_t budget, redisReply **out, bool *lying)
{
    struct redis_sink *k = c->reader->privdata;
    k->budget = budget;
    k->over = false;
    *out = NULL;
    *lying = false;
    int done = 0;
    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK)
            return r3_redis_conn_fail(r, n, c, "send");
    long tmo_ms = (long)r->timeout.tv_sec * 1000 + (long)r->timeout.tv_usec / 1000;
    uint64_t deadline = r3_now_ns() + (uint64_t)tmo_ms * 1000000u;
    for (;;) {
        long long len = announced_bulk(c->reader);
        if (len >= 0 && (unsigned long long)len > bulk) {
            *lying = true;
            return r3_error(-EIO, "redis %s:%d: the server announced a %lld-byte value where at "
                            "most %zu bytes can come (not a Redis server, or not r3's data)",
                            n->host, n->port, len, bulk);
        }
        if (c->reader->len - c->reader->pos > bulk + budget + REDIS_SMALL_REPLY) {
            *lying = true;
            return r3_error(-EIO, "redis %s:%d: a reply longer than the %zu bytes this request "
                            "can need (not a Redis server?)", n->host, n->port, bulk + budget);
        }
        int d = direct_bulk(n, c, deadline, tmo_ms, out, lying);
        if (d != 0)
            return d < 0 ? d : 0;
        void *rep = NULL;
        if (redisReaderGetReply(c->reader, &rep) != REDIS_OK) {
            *lying = true;
            if (k->over)
                return r3_error(-EIO, "redis %s:%d: a reply larger than the %zu bytes this "
                                "request can need (not a Redis server?)", n->host, n->port, budget);
            return r3_error(-EIO, "redis %s:%d: not a Redis reply (%s)", n->host, n->port,
                            c->reader->errstr);
        }
        if (rep) {
            *out = rep;
            return 0;
        }
        if (r3_now_ns() > deadline)
            return r3_error(-ETIMEDOUT, "redis %s:%d: no complete reply within %ld ms (timeout=)",
                            n->host, n->port, tmo_ms);
        if (redisBufferRead(c) != REDIS_OK)
            return r3_redis_conn_fail(r, n, c, "connection");
    }
}

/* A command on a fresh connection (AUTH, SELECT): its reply or NULL with
 * the error in *rc. */
static redisReply *small_command(struct redis_source *r, struct redis_node *n, redisContext *c,
                                 int *rc, const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int ok = redisvAppendCommand(c, fmt, ap);
    va_end(ap);
    redisReply *rep = NULL;
    bool lying;
    *rc = ok == REDIS_OK ? r3_redis_reply(r, n, c, REDIS_SMALL_REPLY, REDIS_SMALL_REPLY, &rep, &lying)
                         : r3_redis_conn_fail(r, n, c, what);
    return rep;
}

static void ctx_free(redisContext *c)
{
    if (c->reader)
        free(c->reader->privdata);
    redisFree(c);
}

static int node_connect(struct redis_source *r, struct redis_node *n, redisContext **out)
{
    redisContext *c = redisConnectWithTimeout(n->host, n->port, r->connect_timeout);
    if (!c)
        return r3_error(-ENOMEM, "redis %s:%d: out of memory", n->host, n->port);
    if (c->err) {
        int rc = r3_redis_conn_fail(r, n, c, "cannot connect");
        redisFree(c);
        return rc;
    }
    struct redis_sink *k = calloc(1, sizeof *k);
    if (!k) {
        redisFree(c);
        return r3_error(-ENOMEM, "redis %s:%d: out of memory", n->host, n->port);
    }
    k->dflt = &r->dflt;
    c->reader->privdata = k;
    c->reader->fn = &r->fns;
    c->reader->maxbuf = 0;                   /* keep the read buffer: no regrowth per reply */
    redisSetTimeout(c, r->timeout);
    redisEnableKeepAlive(c);
    int rc = 0;
    redisReply *rep = NULL;
    if (r->password) {
        rep = r->user ? small_command(r, n, c, &rc, "AUTH", "AUTH %s %s", r->user, r->password)
                      : small_command(r, n, c, &rc, "AUTH", "AUTH %s", r->password);
        if (rep && rep->type == REDIS_REPLY_ERROR)
            rc = r3_error(-EACCES, "redis %s:%d: authentication failed: %s", n->host, n->port,
                          rep->str);
        freeReplyObject(rep);
    }
    if (rc == 0 && r->db) {
        rep = small_command(r, n, c, &rc, "SELECT", "SELECT %u", r->db);
        if (rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOAUTH", 6) == 0)
            rc = r3_error(-EACCES, "redis %s:%d: the server needs a password "
                          "(redis://:PASSWORD@host:port/prefix)", n->host, n->port);
        else if (rep && rep->type == REDIS_REPLY_ERROR)
            rc = r3_error(-EINVAL, "redis %s:%d: cannot select database %u: %s", n->host,
                          n->port, r->db, rep->str);
        freeReplyObject(rep);
    }
    if (rc < 0) {
        ctx_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int r3_redis_node_get(struct redis_source *r, struct redis_node *n, redisContext **out)
{
    pthread_mutex_lock(&n->lock);
    while (n->nidle == 0 && n->nopen >= r->conns)
        pthread_cond_wait(&n->cv, &n->lock);
    if (n->nidle > 0) {
        *out = n->idle[--n->nidle];
        pthread_mutex_unlock(&n->lock);
        return 0;
    }
    n->nopen++;
    pthread_mutex_unlock(&n->lock);
    int rc = node_connect(r, n, out);
    if (rc < 0) {
        pthread_mutex_lock(&n->lock);
        n->nopen--;
        pthread_cond_signal(&n->cv);
        pthread_mutex_unlock(&n->lock);
    }
    return rc;
}

void r3_redis_node_put(struct redis_node *n, redisContext *c, bool broken)
{
    pthread_mutex_lock(&n->lock);
    if (broken) {                        /* its idle siblings likely died with it */
        ctx_free(c);
        n->nopen--;
        while (n->nidle > 0) {
            ctx_free(n->idle[--n->nidle]);
            n->nopen--;
        }
    } else {
        n->idle[n->nidle++] = c;
    }
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->lock);
}

static int piece_key(const struct redis_source *r, const struct piece *p, char *key, size_t cap)
{
    if (p->op == OP_META_GET || p->op == OP_META_SET)
        return snprintf(key, cap, "%s:meta", r->prefix);
    return snprintf(key, cap, "%s:%" PRIu64, r->prefix, p->idx);
}

static int piece_append(redisContext *c, const char *key, const struct piece *p)
{
    switch (p->op) {
    case OP_GET:
    case OP_META_GET:
        return redisAppendCommand(c, "GET %s", key);
    case OP_GETRANGE:
        return redisAppendCommand(c, "GETRANGE %s %u %u", key, p->in, p->in + p->n - 1);
    case OP_SET:
        return redisAppendCommand(c, "SET %s %b", key, p->buf, (size_t)p->n);
    case OP_SETRANGE:
        return redisAppendCommand(c, "SETRANGE %s %u %b", key, p->in, p->buf, (size_t)p->n);
    case OP_EXISTS:
        return redisAppendCommand(c, "EXISTS %s", key);
    default:
        return redisAppendCommand(c, "SET %s %b NX", key, p->buf, (size_t)p->n);
    }
}

/* 0 = done, 1 = redirected or busy (run again), <0 = error. */
static int piece_reply(struct redis_source *r, struct piece *p, const char *key, redisReply *rep)
{
    if (rep->type == REDIS_REPLY_ERROR) {
        unsigned slot, node;
        int rd = r->cluster ? r3_redis_redirect(r, rep->str, &slot, &node) : 0;
        if (rd < 0)
            return rd;
        if (rd == 1) {                       /* MOVED: the slot lives elsewhere now */
            pthread_rwlock_wrlock(&r->maplock);
            r->slot[slot] = (uint16_t)node;
            pthread_rwlock_unlock(&r->maplock);
            return 1;
        }
        if (rd == 2) {                       /* ASK: this key only, this once */
            p->ask = (int)node;
            return 1;
        }
        if (strncmp(rep->str, "TRYAGAIN", 8) == 0 || strncmp(rep->str, "CLUSTERDOWN", 11) == 0 ||
            strncmp(rep->str, "LOADING", 7) == 0)
            return 1;
        if (strncmp(rep->str, "NOAUTH", 6) == 0)
            return r3_error(-EACCES, "%s: the server needs a password "
                            "(redis://:PASSWORD@host:port/prefix)", r->name);
        if (strncmp(rep->str, "MOVED", 5) == 0)
            return r3_error(-EINVAL, "%s: the server is a Redis Cluster node (add cluster=1): %s",
                            r->name, rep->str);
        return r3_error(-EIO, "%s: key %s: %s", r->name, key, rep->str);
    }
    switch (p->op) {
    case OP_GET:
    case OP_GETRANGE:
        if (rep->type == REDIS_REPLY_NIL) {
            memset(p->buf, 0, p->n);
            return 0;
        }
        if (rep->type != REDIS_REPLY_STRING)
            break;
        if (rep->len > (p->op == OP_GET ? r->chunk : p->n))
            return r3_error(-EIO, "%s: key %s holds %zu bytes, more than the %u-byte chunk",
                            r->name, key, rep->len, r->chunk);
        memcpy(p->buf, rep->str, rep->len);
        memset(p->buf + rep->len, 0, p->n - rep->len);
        return 0;
    case OP_META_GET:
        p->buf[0] = '\0';
        if (rep->type == REDIS_REPLY_NIL)
            return 0;
        if (rep->type != REDIS_REPLY_STRING)
            break;
        snprintf(p->buf, p->n, "%.*s", (int)(rep->len < p->n ? rep->len : p->n - 1), rep->str);
        return 0;
    case OP_SET:
    case OP_META_SET:
        if (rep->type == REDIS_REPLY_STATUS || rep->type == REDIS_REPLY_NIL)
            return 0;
        break;
    case OP_SETRANGE:
        if (rep->type == REDIS_REPLY_INTEGER)
            return 0;
        break;
    case OP_EXISTS:
        if (rep->type != REDIS_REPLY_INTEGER)
            break;
        p->buf[0] = rep->integer != 0;
        return 0;
    }
    return r3_error(-EIO, "%s: key %s: unexpected reply type %d", r->name, key, rep->type);
}

static struct redis_node *node_at(struct redis_source *r, unsigned i)
{
    pthread_rwlock_rdlock(&r->maplock);
    struct redis_node *n = r->nodes[i];
    pthread_rwlock_unlock(&r->maplock);
    return n;
}

/* Pipeline ps[0..k) on node ni. *again counts pieces to run again. Returns 0,
 * a server error (<0, final), or a connection error with *conn set. */
static int node_batch(struct redis_source *r, unsigned ni, struct piece **ps, unsigned k,
                      bool asking, unsigned *again, bool *conn)
{
    struct redis_node *n = node_at(r, ni);
    redisContext *c;
    char key[320];
    int rc = r3_redis_node_get(r, n, &c);
    if (rc < 0) {
        *conn = rc == -ECONNREFUSED || rc == -EIO;   /* a timeout already waited long enough */
        return rc;
    }
    bool broken = false;
    for (unsigned i = 0; i < k && !broken; i++) {
        piece_key(r, ps[i], key, sizeof key);
        if ((asking && redisAppendCommand(c, "ASKING") != REDIS_OK) ||
            piece_append(c, key, ps[i]) != REDIS_OK)
            broken = true;
    }
    int err = 0;
    bool lying = false;
    for (unsigned i = 0; i < k && !broken; i++) {
        redisReply *rep = NULL;
        if (asking) {
            if ((rc = r3_redis_reply(r, n, c, REDIS_SMALL_REPLY, REDIS_SMALL_REPLY, &rep, &lying)) < 0) {
                broken = true;
                break;
            }
            freeReplyObject(rep);
        }
        struct redis_sink *sk = c->reader->privdata;
        bool get = ps[i]->op == OP_GET || ps[i]->op == OP_GETRANGE;
        size_t cap = ps[i]->op == OP_GET ? r->chunk : ps[i]->n;
        *sk = (struct redis_sink){ .dflt = sk->dflt, .dst = get ? ps[i]->buf : NULL, .cap = cap };
        /* a GET may bring a chunk; nothing else brings more than a small reply */
        rc = r3_redis_reply(r, n, c, get ? cap : REDIS_SMALL_REPLY, REDIS_SMALL_REPLY, &rep, &lying);
        sk->dst = NULL;
        if (rc < 0) {
            broken = true;
            break;
        }
        piece_key(r, ps[i], key, sizeof key);
        if (sk->used) {                      /* the bytes are already in the buffer */
            freeReplyObject(rep);
            ps[i]->ask = -1;
            if (sk->too_long) {
                if (err == 0)
                    err = r3_error(-EIO, "%s: key %s holds more than the %u-byte chunk",
                                   r->name, key, r->chunk);
                continue;
            }
            memset(ps[i]->buf + sk->got, 0, ps[i]->n - sk->got);
            ps[i]->done = true;
            continue;
        }
        ps[i]->ask = -1;
        int pr = piece_reply(r, ps[i], key, rep);
        freeReplyObject(rep);
        if (pr == 0)
            ps[i]->done = true;
        else if (pr == 1)
            (*again)++;
        else if (err == 0)
            err = pr;                        /* keep reading: the connection stays in step */
    }
    if (broken) {
        err = rc < 0 ? rc : r3_redis_conn_fail(r, n, c, "connection");
        *conn = err != -ETIMEDOUT && !lying;      /* a lie or a timeout is final */
    }
    r3_redis_node_put(n, c, broken);
    return err;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Run every piece to completion: group by node, pipeline, follow redirections,
 * reconnect on broken connections. */
static int run_pieces(struct redis_source *r, struct piece *ps, unsigned np)
{
    struct piece *group[BATCH_PIECES];
    int target[BATCH_PIECES];
    char key[320];
    unsigned conn_fail = 0;
    for (unsigned i = 0; i < np; i++) {
        ps[i].ask = -1;
        ps[i].done = false;
    }
    for (unsigned round = 0;; round++) {
        unsigned pending = 0;
        pthread_rwlock_rdlock(&r->maplock);
        for (unsigned i = 0; i < np; i++) {
            if (ps[i].done)
                continue;
            pending++;
            if (ps[i].ask >= 0) {
                target[i] = (int)(REDIS_MAXNODES + ps[i].ask);
            } else {
                int kl = piece_key(r, &ps[i], key, sizeof key);
                target[i] = (int)r3_redis_route(r, key, (size_t)kl);
            }
        }
        pthread_rwlock_unlock(&r->maplock);
        if (pending == 0)
            return 0;
        if (round >= ROUNDS)
            return r3_error(-EIO, "%s: still redirected after %u rounds (cluster resharding?)",
                            r->name, ROUNDS);
        unsigned again = 0;
        bool conn = false;
        int err = 0;
        for (unsigned i = 0; i < np && err == 0; i++) {
            if (ps[i].done || target[i] < 0)
                continue;
            int t = target[i];
            unsigned k = 0;
            for (unsigned j = i; j < np; j++) {
                if (!ps[j].done && target[j] == t) {
                    group[k++] = &ps[j];
                    target[j] = -1;
                }
            }
            bool asking = t >= REDIS_MAXNODES;
            bool c = false;
            err = node_batch(r, asking ? (unsigned)(t - REDIS_MAXNODES) : (unsigned)t, group, k,
                             asking, &again, &c);
            if (c) {
                conn = true;
                if (++conn_fail > CONN_RETRIES)
                    return err;
                err = 0;
            }
        }
        if (err < 0)
            return err;
        if (conn) {
            sleep_ms(20u << (conn_fail < 6 ? conn_fail : 6));
            if (r->cluster)
                r3_redis_refresh(r);         /* a master may have failed over */
        } else if (again && round > 2) {
            sleep_ms(round < 10 ? round : 10);  /* TRYAGAIN / migration in progress */
        }
    }
}

static int redis_io(struct r3_source *s, void *buf, size_t len, uint64_t off, bool wr)
{
    struct redis_source *r = (struct redis_source *)s;
    struct piece ps[BATCH_PIECES];
    char *p = buf;
    while (len > 0) {
        unsigned np = 0;
        size_t bytes = 0;
        while (len > 0 && np < BATCH_PIECES && (np == 0 || bytes + r->chunk <= BATCH_BYTES)) {
            uint64_t in = off % r->chunk;
            size_t n = r->chunk - in < len ? r->chunk - in : len;
            bool whole = n == r->chunk;
            ps[np++] = (struct piece){
                .op = wr ? (whole ? OP_SET : OP_SETRANGE) : (whole ? OP_GET : OP_GETRANGE),
                .idx = off / r->chunk, .in = (uint32_t)in, .n = (uint32_t)n, .buf = p,
            };
            p += n;
            off += n;
            len -= n;
            bytes += n;
        }
        int rc = run_pieces(r, ps, np);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int redis_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    return redis_io(s, buf, len, off, false);
}

static int redis_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    return redis_io(s, (void *)buf, len, off, true);
}

/* Every write was acknowledged before it returned; persistence is the
 * server's (appendonly/appendfsync). A round-trip proves the server is up. */
static int redis_flush(struct r3_source *s)
{
    struct redis_source *r = (struct redis_source *)s;
    char meta[64];
    struct piece p = { .op = OP_META_GET, .buf = meta, .n = sizeof meta };
    return run_pieces(r, &p, 1);
}

static void node_free(struct redis_node *n)
{
    if (!n)
        return;
    for (unsigned i = 0; i < n->nidle; i++)
        ctx_free(n->idle[i]);
    free(n->idle);
    free(n->host);
    pthread_mutex_destroy(&n->lock);
    pthread_cond_destroy(&n->cv);
    free(n);
}

static void redis_close(struct r3_source *s)
{
    struct redis_source *r = (struct redis_source *)s;
    for (unsigned i = 0; i < r->nnodes; i++)
        node_free(r->nodes[i]);
    pthread_rwlock_destroy(&r->maplock);
    free(r->prefix);
    free(r->user);
    free(r->password);
    free(r);
}

/* A missing key reads as zeros: EXISTS for every chunk of the range (up to
 * one pipeline), pipelined per node, so one round trip answers it. A key
 * that exists says DATA even if it holds zeros. */
static int redis_extent(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    struct redis_source *r = (struct redis_source *)s;
    struct piece ps[BATCH_PIECES];
    char ex[BATCH_PIECES];
    uint64_t first = off / r->chunk, last = (off + len - 1) / r->chunk;
    unsigned np = last - first + 1 < BATCH_PIECES ? (unsigned)(last - first + 1) : BATCH_PIECES;
    for (unsigned i = 0; i < np; i++)
        ps[i] = (struct piece){ .op = OP_EXISTS, .idx = first + i, .buf = &ex[i], .n = 1 };
    int rc = run_pieces(r, ps, np);
    if (rc < 0)
        return rc;
    unsigned k = 1;
    while (k < np && ex[k] == ex[0])
        k++;
    uint64_t e = (first + k) * r->chunk;
    *run = (e < off + len ? e : off + len) - off;
    return ex[0] ? R3_EXTENT_DATA : R3_EXTENT_ZERO;
}

static const struct r3_source_ops redis_ops = {
    .scheme = "redis", .read = redis_read, .write = redis_write, .flush = redis_flush,
    .close = redis_close, .extent = redis_extent,
};

int r3_redis_node_index(struct redis_source *r, const char *host, int port)
{
    for (unsigned i = 0; i < r->nnodes; i++)
        if (r->nodes[i]->port == port && strcmp(r->nodes[i]->host, host) == 0)
            return (int)i;
    if (r->nnodes >= REDIS_MAXNODES)
        return r3_error(-ENOSPC, "%s: more than %d cluster nodes", r->name, REDIS_MAXNODES);
    struct redis_node *n = calloc(1, sizeof *n);
    if (!n || !(n->host = strdup(host)) || !(n->idle = calloc(r->conns, sizeof *n->idle))) {
        if (n)
            free(n->host);
        free(n);
        return r3_error(-ENOMEM, "%s: out of memory", r->name);
    }
    n->port = port;
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->cv, NULL);
    r->nodes[r->nnodes] = n;
    return (int)r->nnodes++;
}

/* Check or record "<prefix>:meta"; fills size/chunk when the URI has none. */
static int meta_sync(struct redis_source *r, bool have_size, bool have_chunk)
{
    char meta[64];
    struct piece p = { .op = OP_META_GET, .buf = meta, .n = sizeof meta };
    int rc = run_pieces(r, &p, 1);
    if (rc < 0)
        return rc;
    unsigned long long ms, mc;
    if (meta[0]) {
        if (sscanf(meta, "r3 %llu %llu", &ms, &mc) != 2 || !r3_is_pow2(mc) || mc < 4096 ||
            mc > (1u << 30) || ms == 0 || ms % mc)
            return r3_error(-EINVAL, "%s: key %s:meta is not r3 metadata ('%s')", r->name,
                            r->prefix, meta);
        if (have_size && ms != r->src.size)
            return r3_error(-EINVAL, "%s: holds %llu bytes, not size=%llu", r->name, ms,
                            (unsigned long long)r->src.size);
        if (have_chunk && mc != r->chunk)
            return r3_error(-EINVAL, "%s: uses chunk %llu, not chunk=%u", r->name, mc, r->chunk);
        r->src.size = ms;
        r->chunk = (uint32_t)mc;
        return 0;
    }
    if (!have_size)
        return r3_error(-EINVAL, "%s: the URI needs a size (add ?size=1G); no r3 data under "
                        "prefix '%s' yet", r->name, r->prefix);
    int n = snprintf(meta, sizeof meta, "r3 %llu %u", (unsigned long long)r->src.size, r->chunk);
    p = (struct piece){ .op = OP_META_SET, .buf = meta, .n = (uint32_t)n };
    return run_pieces(r, &p, 1);
}

int r3_redis_open(const struct r3_uri *u, struct r3_source **out)
{
    static const char *const allowed[] = { "size", "chunk", "db", "conns", "cluster", "timeout",
                                           "connect_timeout", NULL };
    uint64_t size, db, conns, cluster, tmo, ctmo;
    uint32_t chunk;
    int rc = r3_uri_check_params(u, allowed);
    if (rc == 0)
        rc = r3_uri_size_chunk(u, false, &size, &chunk);
    if (rc == 0)
        rc = r3_uri_param_uint(u, "db", 0, &db);
    if (rc == 0)
        rc = r3_uri_param_uint(u, "conns", 16, &conns);
    if (rc == 0)
        rc = r3_uri_param_uint(u, "cluster", 0, &cluster);
    if (rc == 0)
        rc = r3_uri_param_duration_ms(u, "timeout", R3_TIMEOUT_MS, &tmo);
    if (rc == 0)
        rc = r3_uri_param_duration_ms(u, "connect_timeout", R3_CONNECT_TIMEOUT_MS, &ctmo);
    if (rc < 0)
        return rc;
    if (!u->host || !u->host[0])
        return r3_error(-EINVAL, "redis: the URI needs a host (redis://host:port/prefix?size=1G)");
    if (conns < 1 || conns > 1024)
        return r3_error(-EINVAL, "redis: conns=%llu is not between 1 and 1024",
                        (unsigned long long)conns);
    if (cluster > 1 || (cluster && db))
        return r3_error(-EINVAL, "redis: cluster=%llu%s", (unsigned long long)cluster,
                        cluster > 1 ? " is not 0 or 1" : " with db: a cluster has only database 0");
    if (db > 100000)
        return r3_error(-EINVAL, "redis: db=%llu is out of range", (unsigned long long)db);
    const char *prefix = u->path[0] == '/' ? u->path + 1 : u->path;
    if (!prefix[0])
        prefix = "r3";
    if (strlen(prefix) > 256)
        return r3_error(-EINVAL, "redis: key prefix longer than 256 bytes");

    struct redis_source *r = calloc(1, sizeof *r);
    if (!r)
        return r3_error(-ENOMEM, "redis: out of memory");
    pthread_rwlock_init(&r->maplock, NULL);
    redisReader *rd = redisReaderCreate();   /* to learn hiredis' default reply builders */
    if (!rd) {
        free(r);
        return r3_error(-ENOMEM, "redis: out of memory");
    }
    r->dflt = *rd->fn;
    redisReaderFree(rd);
    r->fns = r->dflt;
    r->fns.createString = sink_string;
    r->fns.createArray = sink_array;
    r->chunk = chunk;
    r->db = (unsigned)db;
    r->conns = (unsigned)conns;
    r->cluster = cluster;
    r->timeout = (struct timeval){ (time_t)(tmo / 1000), (suseconds_t)(tmo % 1000) * 1000 };
    r->connect_timeout = (struct timeval){ (time_t)(ctmo / 1000), (suseconds_t)(ctmo % 1000) * 1000 };
    int port = u->port ? u->port : 6379;
    snprintf(r->name, sizeof r->name, "redis %s:%d/%s", u->host, port, prefix);
    r->prefix = strdup(prefix);
    /* redis://password@host (no colon) is a password, as in redis-cli -u */
    if (u->password) {
        r->password = strdup(u->password);
        if (u->user && u->user[0])
            r->user = strdup(u->user);
    } else if (u->user && u->user[0]) {
        r->password = strdup(u->user);
    }
    r->src.ops = &redis_ops;
    r->src.size = size;
    r->src.align = 1;
    r->src.flags = R3_SRC_PARALLEL;
    rc = r->prefix ? r3_redis_node_index(r, u->host, port) : r3_error(-ENOMEM, "redis: out of memory");
    if (rc >= 0 && cluster)
        rc = r3_redis_refresh(r);
    if (rc >= 0)
        rc = meta_sync(r, r3_uri_param(u, "size") != NULL, r3_uri_param(u, "chunk") != NULL);
    if (rc < 0) {
        redis_close(&r->src);
        return rc;
    }
    *out = &r->src;
    return 0;
}
