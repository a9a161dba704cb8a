/* Framed msgpack messages over one TLS connection. One thread runs the I/O
 * loop (an SSL object must not be read and written from two threads at
 * once); other threads queue frames, which are shared by reference so the
 * hub relays one copy of a block to every receiver. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <openssl/err.h>
#include "internal.h"
#include "filesync/filesync.h"

struct fs_qent {
    struct fs_qent *next;
    struct fs_frame *f;
};

struct fs_frame *fs_frame_raw(const void *body, size_t len)
{
    if (len + 4 > FS_MAX_FRAME)
        return NULL;
    struct fs_frame *f = malloc(sizeof *f + 4 + len);
    if (!f)
        return NULL;
    atomic_init(&f->refs, 1);
    f->len = (uint32_t)(4 + len);
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
    if (f && atomic_fetch_sub(&f->refs, 1) == 1)
        free(f);
}

struct fs_conn *fs_conn_new(int fd, SSL *ssl)
{
    struct fs_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->efd < 0) {
        free(c);
        return NULL;
    }
    c->fd = fd;
    c->ssl = ssl;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return c;
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
    c->qoff = 0;
}

void fs_conn_free(struct fs_conn *c)
{
    if (!c)
        return;
    q_clear(c);
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    close(c->efd);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->rbuf);
    free(c);
}

static void wake(struct fs_conn *c)
{
    uint64_t one = 1;
    if (write(c->efd, &one, sizeof one) < 0) {
        /* counter saturated: the loop is awake anyway */
    }
}

static void die_locked(struct fs_conn *c, const char *fmt, ...)
{
    if (!c->dead && fmt) {
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
    if (!c->dead && why)
        snprintf(c->err, sizeof c->err, "%s", why);
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    wake(c);
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
    pthread_mutex_unlock(&c->mu);
    wake(c);
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
    while (!c->dead && c->qh)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT) {
            rc = -ETIMEDOUT;
            break;
        }
    if (c->dead && c->qh)
        rc = -EPIPE;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static const char *ssl_why(int e)
{
    static const char *const why[] = { "", "ssl error", "want read", "want write", "", "I/O error",
                                       "peer closed" };
    return e >= 0 && e < 7 ? why[e] : "error";
}

/* Parse and dispatch every complete frame in rbuf. <0 ends the connection. */
static int dispatch(struct fs_conn *c, fs_msg_fn fn, void *arg)
{
    size_t off = 0;
    int rc = 0;
    while (c->rlen - off >= 4) {
        const unsigned char *h = c->rbuf + off;
        uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        if (len == 0 || (size_t)len + 4 > FS_MAX_FRAME) {
            rc = r3_error(-EPROTO, "frame of %u bytes (limit %u)", len, FS_MAX_FRAME - 4);
            break;
        }
        if (c->rlen - off < (size_t)len + 4)
            break;
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t used = 0;
        msgpack_unpack_return ur = msgpack_unpack_next(&u, (const char *)h + 4, len, &used);
        if (ur != MSGPACK_UNPACK_SUCCESS || used != len || u.data.type != MSGPACK_OBJECT_ARRAY ||
            u.data.via.array.size < 1) {
            msgpack_unpacked_destroy(&u);
            rc = r3_error(-EPROTO, "malformed frame");
            break;
        }
        atomic_fetch_add(&c->bytes_in, (uint64_t)len + 4);
        rc = fn(arg, c, &u.data, h + 4, len);
        msgpack_unpacked_destroy(&u);
        off += (size_t)len + 4;
        if (rc < 0)
            break;
    }
    if (off) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    return rc;
}

void fs_conn_run(struct fs_conn *c, fs_msg_fn fn, void *arg)
{
    bool want_out = false;          /* the last SSL call needs POLLOUT */
    for (;;) {
        pthread_mutex_lock(&c->mu);
        bool stop = c->stop || c->dead;
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
        /* read everything available */
        bool read_blocked_on_write = false, fail = false;
        for (;;) {
            if (c->rcap - c->rlen < 65536 && c->rcap < FS_MAX_FRAME + 65536) {
                size_t ncap = c->rcap ? c->rcap * 2 : 262144;
                if (ncap > FS_MAX_FRAME + 65536)
                    ncap = FS_MAX_FRAME + 65536;
                unsigned char *nb = realloc(c->rbuf, ncap);
                if (!nb) {
                    pthread_mutex_lock(&c->mu);
                    die_locked(c, "out of memory");
                    pthread_mutex_unlock(&c->mu);
                    fail = true;
                    break;
                }
                c->rbuf = nb;
                c->rcap = ncap;
            }
            ERR_clear_error();
            int n = SSL_read(c->ssl, c->rbuf + c->rlen, (int)(c->rcap - c->rlen));
            if (n > 0) {
                c->rlen += (size_t)n;
                if (dispatch(c, fn, arg) < 0) {
                    pthread_mutex_lock(&c->mu);
                    die_locked(c, "%s", r3_last_error());
                    pthread_mutex_unlock(&c->mu);
                    fail = true;
                    break;
                }
                continue;
            }
            int e = SSL_get_error(c->ssl, n);
            if (e == SSL_ERROR_WANT_READ)
                break;
            if (e == SSL_ERROR_WANT_WRITE) {
                read_blocked_on_write = true;
                break;
            }
            pthread_mutex_lock(&c->mu);
            die_locked(c, "connection %s", ssl_why(e));
            pthread_mutex_unlock(&c->mu);
            fail = true;
            break;
        }
        if (fail)
            break;
        /* write what is queued */
        want_out = read_blocked_on_write;
        for (;;) {
            pthread_mutex_lock(&c->mu);
            struct fs_qent *e = c->qh;
            size_t qoff = c->qoff;
            pthread_mutex_unlock(&c->mu);
            if (!e)
                break;
            ERR_clear_error();
            int n = SSL_write(c->ssl, e->f->data + qoff, (int)(e->f->len - qoff));
            if (n > 0) {
                atomic_fetch_add(&c->bytes_out, (uint64_t)n);
                pthread_mutex_lock(&c->mu);
                c->qoff += (size_t)n;
                if (c->qoff == e->f->len) {
                    c->qh = e->next;
                    if (!c->qh)
                        c->qt = NULL;
                    c->qbytes -= e->f->len;
                    c->qoff = 0;
                    pthread_cond_broadcast(&c->cv);
                } else
                    e = NULL;
                pthread_mutex_unlock(&c->mu);
                if (e) {
                    fs_frame_put(e->f);
                    free(e);
                }
                continue;
            }
            int se = SSL_get_error(c->ssl, n);
            if (se == SSL_ERROR_WANT_WRITE) {
                want_out = true;
                break;
            }
            if (se == SSL_ERROR_WANT_READ)
                break;
            pthread_mutex_lock(&c->mu);
            die_locked(c, "connection %s", ssl_why(se));
            pthread_mutex_unlock(&c->mu);
            fail = true;
            break;
        }
        if (fail)
            break;
        struct pollfd p[2] = { { c->fd, POLLIN | (want_out ? POLLOUT : 0), 0 },
                               { c->efd, POLLIN, 0 } };
        if (poll(p, 2, 1000) < 0 && errno != EINTR) {
            pthread_mutex_lock(&c->mu);
            die_locked(c, "poll: %s", strerror(errno));
            pthread_mutex_unlock(&c->mu);
            break;
        }
        if (p[1].revents & POLLIN) {
            uint64_t v;
            if (read(c->efd, &v, sizeof v) < 0) {
                /* EAGAIN: someone else drained it */
            }
        }
    }
    pthread_mutex_lock(&c->mu);
    die_locked(c, c->stop ? "closed" : NULL);
    pthread_mutex_unlock(&c->mu);
    /* Best effort close_notify; the socket is non-blocking so this never hangs. */
    SSL_shutdown(c->ssl);
    shutdown(c->fd, SHUT_RDWR);
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
