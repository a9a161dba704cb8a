/* SPDX-License-Identifier: BSD-3-Clause */
/* Framed msgpack messages over one TLS connection (r3_io of src/net/net.h,
 * frames as in src/wire/frame.h: 4-byte big-endian length + one msgpack
 * array, the length bounded before allocation). One thread reads, a writer
 * thread drains a queue of frames; frames are shared by reference so the
 * hub relays one copy of a block to every receiver. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <r3/thread.h>
#include "internal.h"
#include "filesync/filesync.h"
#include "wire/frame.h"

struct fs_qent {
    struct fs_qent *next;
    struct fs_frame *f;
};

struct fs_frame *fs_frame_alloc(size_t body, struct r3_net_budget *budget)
{
    if (body + 4 > FS_MAX_FRAME)
        return NULL;
    struct fs_frame *f = malloc(sizeof *f + 4 + body);
    if (!f)
        return NULL;
    atomic_init(&f->refs, 1);
    f->len = (uint32_t)(4 + body);
    f->budget = budget;
    return f;
}

struct fs_frame *fs_frame_raw(const void *body, size_t len)
{
    struct fs_frame *f = fs_frame_alloc(len, NULL);
    if (!f)
        return NULL;
    f->data[0] = (unsigned char)(len >> 24);
    f->data[1] = (unsigned char)(len >> 16);
    f->data[2] = (unsigned char)(len >> 8);
    f->data[3] = (unsigned char)len;
    memcpy(f->data + 4, body, len);
    return f;
}

struct fs_frame *fs_frame_new(const msgpack_sbuffer *b)
{
    return fs_frame_raw(b->data, b->size);
}

void fs_frame_put(struct fs_frame *f)
{
    if (!f || atomic_fetch_sub(&f->refs, 1) != 1)
        return;
    if (f->budget)
        r3_net_budget_give(f->budget, f->len, NULL);
    free(f);
}

int fs_frame_read(struct r3_io *io, uint32_t max, struct r3_net_budget *budget, const bool *stop,
                  struct fs_frame **out)
{
    unsigned char hdr[4];
    uint32_t len;
    *out = NULL;
    int rc = r3_io_read_all(io, hdr, 4);
    if (rc < 0)
        return rc;
    if (r3_wire_frame_len(hdr, max, &len) < 0)
        return r3_error(-EMSGSIZE, "frame of %u bytes refused (limit %u)",
                        (unsigned)hdr[0] << 24 | (unsigned)hdr[1] << 16 | (unsigned)hdr[2] << 8 | hdr[3],
                        max);
    if (budget && (rc = r3_net_budget_take(budget, len + 4u, NULL, 0, stop)) < 0)
        return rc;
    struct fs_frame *f = fs_frame_alloc(len, budget);
    if (!f) {
        if (budget)
            r3_net_budget_give(budget, len + 4u, NULL);
        return r3_error(-ENOMEM, "out of memory for a frame of %u bytes", len);
    }
    memcpy(f->data, hdr, 4);
    if ((rc = r3_io_read_all(io, f->data + 4, len)) < 0) {
        fs_frame_put(f);
        return rc;
    }
    *out = f;
    return 0;
}

int fs_frame_unpack(const struct fs_frame *f, msgpack_unpacked *u)
{
    size_t used = 0;
    msgpack_unpacked_init(u);
    if (!r3_wire_scan_ok(f->data + 4, f->len - 4))      /* counts bounded before msgpack allocates */
        return r3_error(-EPROTO, "malformed frame");
    if (msgpack_unpack_next(u, (const char *)f->data + 4, f->len - 4, &used) != MSGPACK_UNPACK_SUCCESS ||
        used != f->len - 4 || u->data.type != MSGPACK_OBJECT_ARRAY || u->data.via.array.size < 1)
        return r3_error(-EPROTO, "malformed frame");
    return 0;
}

static struct fs_conn *conn_alloc(void)
{
    struct fs_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->io.fd = -1;
    return c;
}

int fs_conn_connect(struct r3_tls_ctx *ctx, const char *addr, int timeout_ms, struct fs_conn **out)
{
    *out = NULL;
    struct r3_net_addr a;
    int fd, rc = r3_net_addr_parse(addr, 0, 0, &a);
    uint64_t deadline = r3_net_deadline(timeout_ms);
    if (rc < 0 || (rc = r3_net_dial(&a, timeout_ms, &fd)) < 0)
        return rc;
    struct fs_conn *c = conn_alloc();
    if (!c) {
        close(fd);
        return r3_error(-ENOMEM, "out of memory");
    }
    rc = r3_io_init(&c->io, fd);
    if (a.kind == R3_NET_TCP) {
        /* a hub that vanishes without a FIN (a partition, a dead machine) is
         * noticed within about a minute, not at the next write (which a
         * receiver may never do) */
        int on = 1, idle = 30, intvl = 10, cnt = 3;
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    }
    int left = r3_net_remaining_ms(deadline);
    if (rc == 0)
        rc = r3_tls_connect(ctx, &c->io, a.kind == R3_NET_TCP ? a.host : NULL, left > 0 ? left : 1);
    if (rc < 0 && rc != -EACCES && fs_refused_alert())
        rc = -EACCES;       /* TLS 1.2: the hub's alert comes during the handshake */
    if (rc < 0) {
        r3_error_prefix(rc, "%s: ", addr);
        fs_conn_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* After a failed TLS call: was it a fatal alert from the peer (it refused
 * our certificate, or the handshake)? The TLS layer says so only in its
 * sentence ("TLS: tlsv1 alert unknown ca"); then the sentence is rewritten
 * to say what it means. */
bool fs_refused_alert(void)
{
    char why[400];
    snprintf(why, sizeof why, "%s", r3_last_error());
    if (!strstr(why, " alert "))
        return false;
    r3_error(-EACCES, "the hub refused our certificate (%s)", why);
    return true;
}

/* The first frame from the hub, read synchronously (small: bounded). */

int fs_conn_hello(struct fs_conn *c, const char *role, int timeout_ms)
{
    msgpack_sbuffer b;
    msgpack_packer pk;
    fs_msg_begin(&b, &pk, 4, FS_HELLO);
    msgpack_pack_str(&pk, 6);
    msgpack_pack_str_body(&pk, "r3sync", 6);
    msgpack_pack_uint8(&pk, FS_PROTO_VERSION);
    msgpack_pack_str(&pk, strlen(role));
    msgpack_pack_str_body(&pk, role, strlen(role));
    struct fs_frame *hello = fs_frame_new(&b);
    msgpack_sbuffer_destroy(&b);
    if (!hello)
        return r3_error(-ENOMEM, "out of memory");
    int wrc = r3_io_write_all(&c->io, hello->data, hello->len);
    fs_frame_put(hello);
    /* even when the write failed, the hub's reason may be waiting (a TLS
     * alert sent as it refused our certificate): read it */
    char werr[256];
    snprintf(werr, sizeof werr, "%s", wrc < 0 ? r3_last_error() : "");
    c->io.rtimeout_ms = timeout_ms;
    struct fs_frame *f;
    int rc = fs_frame_read(&c->io, FS_HELLO_MAX, NULL, NULL, &f);
    c->io.rtimeout_ms = -1;
    if (rc == -EMSGSIZE)
        return r3_error(-EPROTO, "not an r3sync hub (its first frame is not a hello)");
    if (rc < 0) {
        if (fs_refused_alert())
            return -EACCES;
        if (wrc < 0)
            return r3_error(wrc, "hello: %s", werr);
        return r3_error_prefix(rc, "hello: ");
    }
    msgpack_unpacked u;
    const char *s, *ok;
    uint32_t sn, okn;
    uint64_t type = 0, ver = 0;
    if (fs_frame_unpack(f, &u) < 0 || !fs_msg_uint(&u.data, 0, &type))
        rc = r3_error(-EPROTO, "not an r3sync hub (malformed hello)");
    else if (type == FS_ERR)
        rc = fs_msg_str(&u.data, 1, &s, &sn)
           ? r3_error(-EACCES, "the hub refused: %.*s", (int)(sn > 300 ? 300 : sn), s)
           : r3_error(-EACCES, "the hub refused without a reason");
    else if (type != FS_HELLO || !fs_msg_str(&u.data, 1, &s, &sn) || sn != 6 ||
             memcmp(s, "r3sync", 6) || !fs_msg_uint(&u.data, 2, &ver) ||
             !fs_msg_str(&u.data, 3, &ok, &okn) || okn != 2 || memcmp(ok, "ok", 2))
        rc = r3_error(-EPROTO, "not an r3sync hub (unexpected hello)");
    else if (!fs_msg_uint(&u.data, 4, &c->id))
        rc = r3_error(-EPROTO, "not an r3sync hub (hello without an id)");
    fs_frame_put(f);
    msgpack_unpacked_destroy(&u);
    return rc;
}

static void q_clear(struct fs_conn *c)
{
    while (c->qh) {
        struct fs_qent *e = c->qh;
        c->qh = e->next;
        fs_frame_put(e->f);
        free(e);
    }
    c->qt = NULL;
    c->qbytes = 0;
}

void fs_conn_free(struct fs_conn *c)
{
    if (!c)
        return;
    q_clear(c);
    r3_io_close(&c->io);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

static void die_locked(struct fs_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void die_locked(struct fs_conn *c, const char *fmt, ...)
{
    if (!c->dead && !c->err[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, sizeof c->err, fmt, ap);
        va_end(ap);
    }
    c->dead = true;
    pthread_cond_broadcast(&c->cv);
}

void fs_conn_kill(struct fs_conn *c, const char *why)
{
    pthread_mutex_lock(&c->mu);
    if (!c->dead && !c->err[0] && why)
        snprintf(c->err, sizeof c->err, "%s", why);
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    r3_io_shutdown(&c->io);     /* wakes the reader */
}

static void deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int fs_conn_send(struct fs_conn *c, struct fs_frame *f, size_t limit, int timeout_ms)
{
    struct fs_qent *e = malloc(sizeof *e);
    if (!e)
        return -ENOMEM;
    struct timespec ts;
    if (timeout_ms >= 0)
        deadline(&ts, timeout_ms);
    pthread_mutex_lock(&c->mu);
    while (!c->dead && !c->stop && limit && c->qbytes > limit) {
        if (timeout_ms < 0)
            pthread_cond_wait(&c->cv, &c->mu);
        else if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT) {
            pthread_mutex_unlock(&c->mu);
            free(e);
            return -ETIMEDOUT;
        }
    }
    if (c->dead || c->stop) {
        pthread_mutex_unlock(&c->mu);
        free(e);
        return -EPIPE;
    }
    atomic_fetch_add(&f->refs, 1);
    e->f = f;
    e->next = NULL;
    if (c->qt)
        c->qt->next = e;
    else
        c->qh = e;
    c->qt = e;
    c->qbytes += f->len;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int fs_conn_send_buf(struct fs_conn *c, const msgpack_sbuffer *b, size_t limit, int timeout_ms)
{
    struct fs_frame *f = fs_frame_new(b);
    if (!f)
        return -ENOMEM;
    int rc = fs_conn_send(c, f, limit, timeout_ms);
    fs_frame_put(f);
    return rc;
}

int fs_conn_drain(struct fs_conn *c, int timeout_ms)
{
    struct timespec ts;
    deadline(&ts, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    while (!c->dead && (c->qh || c->writing))
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT) {
            rc = -ETIMEDOUT;
            break;
        }
    if (c->dead && c->qh)
        rc = -EPIPE;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* The writer: takes up to 16 frames at a time off the queue and writes them
 * with one writev. */
static void *writer_main(void *p)
{
    struct fs_conn *c = p;
    struct fs_qent *batch[16];
    for (;;) {
        pthread_mutex_lock(&c->mu);
        while (!c->qh && !c->dead && !c->stop)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->dead || (c->stop && !c->qh)) {
            pthread_mutex_unlock(&c->mu);
            break;
        }
        int n = 0;
        while (c->qh && n < 16) {
            batch[n++] = c->qh;
            c->qh = c->qh->next;
        }
        if (!c->qh)
            c->qt = NULL;
        c->writing = true;
        pthread_mutex_unlock(&c->mu);
        struct iovec iov[16];
        size_t total = 0;
        for (int i = 0; i < n; i++) {
            iov[i] = (struct iovec){ batch[i]->f->data, batch[i]->f->len };
            total += batch[i]->f->len;
        }
        int rc = r3_io_writev_all(&c->io, iov, n);
        for (int i = 0; i < n; i++) {
            fs_frame_put(batch[i]->f);
            free(batch[i]);
        }
        pthread_mutex_lock(&c->mu);
        c->writing = false;
        c->qbytes -= total;
        if (rc < 0)
            die_locked(c, "%s", r3_last_error());
        else
            atomic_fetch_add(&c->bytes_out, total);
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        if (rc < 0) {
            r3_io_shutdown(&c->io);
            break;
        }
    }
    return NULL;
}

void fs_conn_run(struct fs_conn *c, fs_msg_fn fn, void *arg)
{
    pthread_t wt;
    if (r3_thread_create(&wt, writer_main, c) < 0) {
        pthread_mutex_lock(&c->mu);
        die_locked(c, "cannot start the writer thread");
        pthread_mutex_unlock(&c->mu);
        return;
    }
    for (;;) {
        struct fs_frame *f;
        int rc = fs_frame_read(&c->io, FS_MAX_FRAME - 4, NULL, NULL, &f);
        if (rc == 0) {
            msgpack_unpacked u;
            if ((rc = fs_frame_unpack(f, &u)) == 0) {
                atomic_fetch_add(&c->bytes_in, f->len);
                rc = fn(arg, c, &u.data, f->data + 4, f->len - 4);
            }
            msgpack_unpacked_destroy(&u);
            fs_frame_put(f);
        }
        if (rc < 0) {
            pthread_mutex_lock(&c->mu);
            if (c->stop)
                die_locked(c, "closed");
            else
                die_locked(c, "%s", rc == -EPIPE ? "the peer closed the connection" : r3_last_error());
            pthread_mutex_unlock(&c->mu);
            break;
        }
    }
    r3_io_shutdown(&c->io);
    pthread_join(wt, NULL);
}

static void *reader_main(void *p)
{
    struct fs_reader *r = p;
    fs_conn_run(r->c, r->fn, r->arg);
    pthread_mutex_lock(r->mu);
    *r->done = true;
    if (r->cv)
        pthread_cond_broadcast(r->cv);
    pthread_mutex_unlock(r->mu);
    return NULL;
}

int fs_reader_start(struct fs_reader *r)
{
    return r3_thread_create(&r->t, reader_main, r);
}

void fs_msg_begin(msgpack_sbuffer *b, msgpack_packer *pk, uint32_t n, unsigned type)
{
    msgpack_sbuffer_init(b);
    msgpack_packer_init(pk, b, msgpack_sbuffer_write);
    msgpack_pack_array(pk, n);
    msgpack_pack_uint8(pk, (uint8_t)type);
}

bool fs_msg_uint(const msgpack_object *m, uint32_t i, uint64_t *v)
{
    if (m->type != MSGPACK_OBJECT_ARRAY || i >= m->via.array.size ||
        m->via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *v = m->via.array.ptr[i].via.u64;
    return true;
}

bool fs_msg_str(const msgpack_object *m, uint32_t i, const char **s, uint32_t *n)
{
    if (m->type != MSGPACK_OBJECT_ARRAY || i >= m->via.array.size ||
        m->via.array.ptr[i].type != MSGPACK_OBJECT_STR)
        return false;
    *s = m->via.array.ptr[i].via.str.ptr;
    *n = m->via.array.ptr[i].via.str.size;
    return true;
}

bool fs_msg_bin(const msgpack_object *m, uint32_t i, const void **p, uint32_t *n)
{
    if (m->type != MSGPACK_OBJECT_ARRAY || i >= m->via.array.size ||
        m->via.array.ptr[i].type != MSGPACK_OBJECT_BIN)
        return false;
    *p = m->via.array.ptr[i].via.bin.ptr;
    *n = m->via.array.ptr[i].via.bin.size;
    return true;
}

int fs_name_check(const char *name, uint32_t n)
{
    if (n == 0 || n > FS_MAX_NAME)
        return r3_error(-EINVAL, "file name of %u bytes refused", n);
    if (memchr(name, 0, n))
        return r3_error(-EINVAL, "file name with a NUL byte refused");
    if (name[0] == '/')
        return r3_error(-EINVAL, "absolute file name '%.*s' refused", (int)n, name);
    /* every component must be non-empty and neither "." nor ".." */
    uint32_t s = 0;
    for (uint32_t i = 0; i <= n; i++) {
        if (i < n && name[i] != '/')
            continue;
        uint32_t cl = i - s;
        if (cl == 0 || (cl == 1 && name[s] == '.') ||
            (cl == 2 && name[s] == '.' && name[s + 1] == '.'))
            return r3_error(-EINVAL, "file name '%.*s' refused (empty, '.' or '..' component)",
                            (int)n, name);
        s = i + 1;
    }
    return 0;
}
