/* The hub: accepts mTLS connections only; the client certificate's CN is the
 * sync id. Advertisers register files under their id; receivers of that id
 * get every file (also ones advertised later). The advertiser's stream is
 * sent once and relayed to every receiver of its id; catch-up blocks go to
 * one receiver; hashes from receivers go to the file's advertiser. */
#include <errno.h>
#include <stdarg.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <openssl/crypto.h>
#include <r3/thread.h>
#include "internal.h"
#include "filesync/filesync.h"

enum { ROLE_NONE, ROLE_ADV, ROLE_RECV };

struct hub;
struct hconn {
    struct hconn *next;
    struct hub *hub;
    struct fs_conn *c;
    int fd;
    int refs;                       /* under hub->mu */
    int role;
    char sid[256];
    char peer[64];
};

struct hfile {
    struct hfile *next;
    uint64_t fid, size;
    uint32_t block;
    struct hconn *adv;
    char *name;
};

struct hub {
    struct r3_tls_ctx *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct hconn *conns;
    struct hfile *files;
    uint64_t next_id;
    unsigned nthreads;
    size_t qlimit;
    bool verbose;
    const struct fs_report *rep;
};

#define SEND_TIMEOUT_MS 10000

static void hlog(struct hub *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hlog(struct hub *h, const char *fmt, ...)
{
    if (!h->rep->line)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    h->rep->line(h->rep->arg, FS_SAY_DIAG, buf);
}

static void unref_locked(struct hconn *hc)
{
    if (--hc->refs > 0)
        return;
    fs_conn_free(hc->c);
    free(hc);
}

static void unref(struct hconn *hc)
{
    struct hub *h = hc->hub;
    pthread_mutex_lock(&h->mu);
    unref_locked(hc);
    pthread_mutex_unlock(&h->mu);
}

static struct hfile *file_find(struct hub *h, const char *sid, uint64_t fid)
{
    for (struct hfile *f = h->files; f; f = f->next)
        if (f->fid == fid && strcmp(f->adv->sid, sid) == 0)
            return f;
    return NULL;
}

static void pack_file(msgpack_sbuffer *b, const struct hfile *f)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, FS_FILE);
    msgpack_pack_uint64(&pk, f->fid);
    size_t n = strlen(f->name);
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, f->name, n);
    msgpack_pack_uint64(&pk, f->size);
    msgpack_pack_uint32(&pk, f->block);
}

/* Queue a small frame to every receiver of sid (under h->mu; never blocks). */
static void to_receivers_locked(struct hub *h, const char *sid, struct fs_frame *fr)
{
    for (struct hconn *r = h->conns; r; r = r->next)
        if (r->role == ROLE_RECV && strcmp(r->sid, sid) == 0)
            fs_conn_send(r->c, fr, 0, 0);
}

/* Relay a (big) frame to the receivers of sid, or to one receiver (rid);
 * a receiver that cannot take it within the timeout is dropped (it will
 * reconnect and repair). */
static void relay(struct hub *h, const char *sid, uint64_t rid, struct fs_frame *fr)
{
    struct hconn *list[256];
    size_t n = 0;
    bool more = true;
    struct hconn *skip_upto = NULL;   /* simple batching for > 256 receivers */
    while (more) {
        more = false;
        n = 0;
        pthread_mutex_lock(&h->mu);
        bool passed = skip_upto == NULL;
        for (struct hconn *r = h->conns; r; r = r->next) {
            if (!passed) {
                passed = r == skip_upto;
                continue;
            }
            if (r->role != ROLE_RECV || strcmp(r->sid, sid) != 0 || (rid && r->c->id != rid))
                continue;
            if (n == 256) {
                more = true;
                break;
            }
            r->refs++;
            list[n++] = r;
        }
        pthread_mutex_unlock(&h->mu);
        for (size_t i = 0; i < n; i++) {
            int rc = fs_conn_send(list[i]->c, fr, h->qlimit, SEND_TIMEOUT_MS);
            if (rc == -ETIMEDOUT) {
                hlog(h, "%s: receiver too slow, dropped", list[i]->peer);
                fs_conn_kill(list[i]->c, "too slow");
            }
        }
        skip_upto = n ? list[n - 1] : NULL;
        for (size_t i = 0; i < n; i++)
            unref(list[i]);
    }
}

static int refuse(struct hconn *hc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(struct hconn *hc, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    hlog(hc->hub, "%s (%s): %s", hc->peer, hc->sid, msg);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, FS_ERR);
    msgpack_pack_str(&pk, strlen(msg));
    msgpack_pack_str_body(&pk, msg, strlen(msg));
    fs_conn_send_buf(hc->c, &b, 0, 0);
    msgpack_sbuffer_destroy(&b);
    fs_conn_drain(hc->c, 1000);
    return r3_error(-EPROTO, "%s", msg);
}

static int on_hello(struct hconn *hc, const msgpack_object *m)
{
    struct hub *h = hc->hub;
    const char *s, *role;
    uint32_t sn, rn;
    uint64_t ver;
    if (!fs_msg_str(m, 1, &s, &sn) || sn != 6 || memcmp(s, "r3sync", 6) ||
        !fs_msg_uint(m, 2, &ver) || !fs_msg_str(m, 3, &role, &rn))
        return refuse(hc, "bad hello");
    if (ver != FS_PROTO_VERSION)
        return refuse(hc, "protocol version %llu not supported", (unsigned long long)ver);
    int r = rn == 3 && !memcmp(role, "adv", 3) ? ROLE_ADV
          : rn == 4 && !memcmp(role, "recv", 4) ? ROLE_RECV : ROLE_NONE;
    if (r == ROLE_NONE)
        return refuse(hc, "unknown role");
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint8(&pk, FS_HELLO);
    msgpack_pack_str(&pk, 6);
    msgpack_pack_str_body(&pk, "r3sync", 6);
    msgpack_pack_uint8(&pk, FS_PROTO_VERSION);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "ok", 2);
    msgpack_pack_uint64(&pk, hc->c->id);
    pthread_mutex_lock(&h->mu);
    fs_conn_send_buf(hc->c, &b, 0, 0);
    hc->role = r;
    if (r == ROLE_RECV) {
        /* every file of this id, in the same locked step that makes this
         * receiver visible to relays, so no block can precede its FILE */
        for (struct hfile *f = h->files; f; f = f->next)
            if (strcmp(f->adv->sid, hc->sid) == 0) {
                msgpack_sbuffer fb;
                msgpack_sbuffer_init(&fb);
                pack_file(&fb, f);
                fs_conn_send_buf(hc->c, &fb, 0, 0);
                msgpack_sbuffer_destroy(&fb);
            }
    }
    pthread_mutex_unlock(&h->mu);
    msgpack_sbuffer_destroy(&b);
    if (h->verbose)
        hlog(h, "%s: %s joined id '%s'", hc->peer, r == ROLE_ADV ? "advertiser" : "receiver",
             hc->sid);
    return 0;
}

static int adv_msg(struct hconn *hc, uint64_t type, const msgpack_object *m,
                   const unsigned char *raw, size_t rawlen)
{
    struct hub *h = hc->hub;
    uint64_t fid, size, block, idx, rid, round;
    const char *name;
    const void *data;
    uint32_t nn, dn;
    switch (type) {
    case FS_FILE: {
        if (!fs_msg_uint(m, 1, &fid) || !fs_msg_str(m, 2, &name, &nn) ||
            !fs_msg_uint(m, 3, &size) || !fs_msg_uint(m, 4, &block))
            return refuse(hc, "bad FILE message");
        if (fs_name_check(name, nn) < 0)
            return refuse(hc, "%s", r3_last_error());
        if (block < 4096 || block > FS_MAX_BLOCK || !r3_is_pow2(block) || size > (1ull << 50))
            return refuse(hc, "bad block size or file size");
        pthread_mutex_lock(&h->mu);
        struct hfile *f = file_find(h, hc->sid, fid);
        if (f && f->adv != hc) {
            pthread_mutex_unlock(&h->mu);
            return refuse(hc, "file id in use by another advertiser");
        }
        /* the same name from another advertiser of this id: the new one wins */
        for (struct hfile **pp = &h->files; *pp;) {
            struct hfile *o = *pp;
            if (o != f && strcmp(o->adv->sid, hc->sid) == 0 && strlen(o->name) == nn &&
                !memcmp(o->name, name, nn)) {
                *pp = o->next;
                free(o->name);
                free(o);
            } else
                pp = &o->next;
        }
        if (!f) {
            f = calloc(1, sizeof *f);
            if (!f || !(f->name = strndup(name, nn))) {
                free(f);
                pthread_mutex_unlock(&h->mu);
                return refuse(hc, "out of memory");
            }
            f->fid = fid;
            f->adv = hc;
            f->next = h->files;
            h->files = f;
        } else if (strlen(f->name) != nn || memcmp(f->name, name, nn)) {
            char *nm = strndup(name, nn);
            if (nm) {
                free(f->name);
                f->name = nm;
            }
        }
        f->size = size;
        f->block = (uint32_t)block;
        msgpack_sbuffer b;
        msgpack_sbuffer_init(&b);
        pack_file(&b, f);
        struct fs_frame *fr = fs_frame_new(&b);
        msgpack_sbuffer_destroy(&b);
        if (fr) {
            to_receivers_locked(h, hc->sid, fr);
            fs_frame_put(fr);
        }
        pthread_mutex_unlock(&h->mu);
        if (h->verbose)
            hlog(h, "%s: id '%s' advertises %.*s (%llu bytes)", hc->peer, hc->sid, (int)nn, name,
                 (unsigned long long)size);
        return 0;
    }
    case FS_SIZE:
    case FS_BLK:
    case FS_TBLK:
    case FS_TDONE: {
        uint32_t fi = type == FS_TBLK || type == FS_TDONE ? 2 : 1;
        rid = 0;
        if ((fi == 2 && !fs_msg_uint(m, 1, &rid)) || !fs_msg_uint(m, fi, &fid))
            return refuse(hc, "bad message");
        pthread_mutex_lock(&h->mu);
        struct hfile *f = file_find(h, hc->sid, fid);
        bool mine = f && f->adv == hc;
        uint64_t fsize = f ? f->size : 0;
        uint32_t fblock = f ? f->block : 0;
        if (mine && type == FS_SIZE) {
            if (!fs_msg_uint(m, 2, &size) || size > (1ull << 50)) {
                pthread_mutex_unlock(&h->mu);
                return refuse(hc, "bad SIZE message");
            }
            f->size = size;
            struct fs_frame *fr = fs_frame_raw(raw, rawlen);
            if (fr) {
                to_receivers_locked(h, hc->sid, fr);
                fs_frame_put(fr);
            }
        }
        bool other = f && !mine;
        pthread_mutex_unlock(&h->mu);
        if (other)
            return refuse(hc, "message for a file this advertiser does not own");
        if (!f) {
            /* unknown (e.g. its name was taken over by another advertiser
             * of this id): dropped, so two advertisers never fight */
            if (h->verbose)
                hlog(h, "%s (%s): message for unknown file %llu dropped", hc->peer, hc->sid,
                     (unsigned long long)fid);
            return 0;
        }
        if (type == FS_SIZE)
            return 0;
        if (type != FS_TDONE) {
            if (!fs_msg_uint(m, fi + 1, &idx) || !fs_msg_bin(m, fi + 2, &data, &dn))
                return refuse(hc, "bad block message");
            uint64_t off = idx * fblock;
            if (idx >= (fsize + fblock - 1) / fblock ||
                dn != (fsize - off < fblock ? fsize - off : fblock))
                return refuse(hc, "block %llu of %u bytes does not fit the file",
                              (unsigned long long)idx, dn);
        }
        if (type != FS_BLK && rid == 0)
            return refuse(hc, "targeted message without a receiver");
        struct fs_frame *fr = fs_frame_raw(raw, rawlen);
        if (!fr)
            return refuse(hc, "out of memory");
        relay(h, hc->sid, type == FS_BLK ? 0 : rid, fr);
        fs_frame_put(fr);
        return 0;
    }
    case FS_END: {
        if (!fs_msg_uint(m, 1, &round))
            return refuse(hc, "bad END message");
        msgpack_sbuffer b;
        msgpack_sbuffer_init(&b);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 3);
        msgpack_pack_uint8(&pk, FS_END);
        msgpack_pack_uint64(&pk, round);
        msgpack_pack_uint64(&pk, hc->c->id);
        struct fs_frame *fr = fs_frame_new(&b);
        msgpack_sbuffer_destroy(&b);
        if (fr) {
            relay(h, hc->sid, 0, fr);
            fs_frame_put(fr);
        }
        return 0;
    }
    default:
        return refuse(hc, "message type %llu not allowed for an advertiser",
                      (unsigned long long)type);
    }
}

static struct hconn *find_conn_ref(struct hub *h, const char *sid, uint64_t id, int role)
{
    struct hconn *r = NULL;
    pthread_mutex_lock(&h->mu);
    for (struct hconn *x = h->conns; x; x = x->next)
        if (x->c->id == id && x->role == role && strcmp(x->sid, sid) == 0) {
            x->refs++;
            r = x;
            break;
        }
    pthread_mutex_unlock(&h->mu);
    return r;
}

static int recv_msg(struct hconn *hc, uint64_t type, const msgpack_object *m)
{
    struct hub *h = hc->hub;
    uint64_t fid, first, last, round, adv;
    const void *data;
    uint32_t dn;
    msgpack_sbuffer b;
    msgpack_packer pk;
    struct hconn *to = NULL;
    switch (type) {
    case FS_HAVE:
        if (!fs_msg_uint(m, 1, &fid) || !fs_msg_uint(m, 2, &first) ||
            !fs_msg_bin(m, 3, &data, &dn) || !fs_msg_uint(m, 4, &last) || dn % FS_HASH_LEN)
            return refuse(hc, "bad HAVE message");
        pthread_mutex_lock(&h->mu);
        struct hfile *f = file_find(h, hc->sid, fid);
        if (f) {
            to = f->adv;
            to->refs++;
        }
        pthread_mutex_unlock(&h->mu);
        if (!to)
            return 0;            /* the advertiser left: it re-announces on return */
        msgpack_sbuffer_init(&b);
        msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 6);
        msgpack_pack_uint8(&pk, FS_HAVE);
        msgpack_pack_uint64(&pk, fid);
        msgpack_pack_uint64(&pk, first);
        msgpack_pack_bin(&pk, dn);
        msgpack_pack_bin_body(&pk, data, dn);
        msgpack_pack_uint64(&pk, last);
        msgpack_pack_uint64(&pk, hc->c->id);
        break;
    case FS_ACK:
        if (!fs_msg_uint(m, 1, &round) || !fs_msg_uint(m, 2, &adv))
            return refuse(hc, "bad ACK message");
        to = find_conn_ref(h, hc->sid, adv, ROLE_ADV);
        if (!to)
            return 0;
        msgpack_sbuffer_init(&b);
        msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 3);
        msgpack_pack_uint8(&pk, FS_ACK);
        msgpack_pack_uint64(&pk, round);
        msgpack_pack_uint64(&pk, hc->c->id);
        break;
    default:
        return refuse(hc, "message type %llu not allowed for a receiver", (unsigned long long)type);
    }
    fs_conn_send_buf(to->c, &b, 0, 0);
    msgpack_sbuffer_destroy(&b);
    unref(to);
    return 0;
}

static int on_msg(void *arg, struct fs_conn *c, const msgpack_object *m, const unsigned char *raw,
                  size_t rawlen)
{
    struct hconn *hc = arg;
    uint64_t type;
    if (!fs_msg_uint(m, 0, &type))
        return refuse(hc, "message without a type");
    if (hc->role == ROLE_NONE)
        return type == FS_HELLO ? on_hello(hc, m) : refuse(hc, "hello expected");
    if (type == FS_HELLO)
        return refuse(hc, "second hello");
    return hc->role == ROLE_ADV ? adv_msg(hc, type, m, raw, rawlen) : recv_msg(hc, type, m);
}

static void *conn_main(void *p)
{
    struct hconn *hc = p;
    struct hub *h = hc->hub;
    /* a client that does not finish the handshake in 10 s is dropped */
    if (fs_conn_accept(h->ctx, hc->fd, 10000, &hc->c) < 0) {
        hlog(h, "%s: refused: %s", hc->peer, r3_last_error());
        goto out_free;
    }
    if (r3_tls_peer_cn(&hc->c->io, hc->sid, sizeof hc->sid) < 0 || !hc->sid[0]) {
        static const char why[] = "the client certificate has no common name";
        hlog(h, "%s: refused: %s", hc->peer, why);
        /* say why (the client stops retrying), then close */
        msgpack_sbuffer b;
        msgpack_sbuffer_init(&b);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint8(&pk, FS_ERR);
        msgpack_pack_str(&pk, sizeof why - 1);
        msgpack_pack_str_body(&pk, why, sizeof why - 1);
        struct fs_frame *fr = fs_frame_new(&b);
        msgpack_sbuffer_destroy(&b);
        hc->c->io.wtimeout_ms = 1000;
        if (fr)
            r3_io_write_all(&hc->c->io, fr->data, fr->len);
        fs_frame_put(fr);
        fs_conn_free(hc->c);
        goto out_free;
    }
    pthread_mutex_lock(&h->mu);
    hc->c->id = ++h->next_id;
    hc->refs = 1;
    hc->next = h->conns;
    h->conns = hc;
    pthread_mutex_unlock(&h->mu);

    fs_conn_run(hc->c, on_msg, hc);
    if (h->verbose || hc->role != ROLE_NONE)
        hlog(h, "%s (%s): closed: %s", hc->peer, hc->sid, hc->c->err);

    pthread_mutex_lock(&h->mu);
    for (struct hconn **pp = &h->conns; *pp; pp = &(*pp)->next)
        if (*pp == hc) {
            *pp = hc->next;
            break;
        }
    if (hc->role == ROLE_ADV) {
        for (struct hfile **pp = &h->files; *pp;) {
            struct hfile *f = *pp;
            if (f->adv != hc) {
                pp = &f->next;
                continue;
            }
            msgpack_sbuffer b;
            msgpack_sbuffer_init(&b);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
            msgpack_pack_array(&pk, 2);
            msgpack_pack_uint8(&pk, FS_GONE);
            msgpack_pack_uint64(&pk, f->fid);
            struct fs_frame *fr = fs_frame_new(&b);
            msgpack_sbuffer_destroy(&b);
            if (fr) {
                to_receivers_locked(h, hc->sid, fr);
                fs_frame_put(fr);
            }
            *pp = f->next;
            free(f->name);
            free(f);
        }
    }
    unref_locked(hc);
    pthread_mutex_unlock(&h->mu);
    /* free this thread's OpenSSL state now: the process may exit as soon
     * as nthreads reaches 0, before thread-exit destructors run */
    OPENSSL_thread_stop();
    pthread_mutex_lock(&h->mu);
    h->nthreads--;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return NULL;
out_free:
    free(hc);
    OPENSSL_thread_stop();
    pthread_mutex_lock(&h->mu);
    h->nthreads--;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

int fs_hub_run(const struct fs_hub_opts *o, volatile int *stop)
{
    struct hub h = { .qlimit = o->queue_limit ? o->queue_limit : (64u << 20), .verbose = o->verbose,
                     .rep = &o->report };
    if (!o->tls.cert || !o->tls.key || !o->tls.ca)
        return r3_error(-EINVAL, "the hub needs --tls-cert, --tls-key and --tls-ca (mTLS only)");
    int rc = r3_tls_server_ctx(&o->tls, &h.ctx);
    if (rc < 0)
        return rc;
    int lfd = fs_tcp_listen(o->listen);
    if (lfd < 0) {
        r3_tls_ctx_free(h.ctx);
        return lfd;
    }
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    hlog(&h, "listening on %s", o->listen);
    while (!*stop) {
        struct pollfd p = { lfd, POLLIN, 0 };
        if (poll(&p, 1, 200) <= 0)
            continue;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        struct hconn *hc = calloc(1, sizeof *hc);
        if (!hc) {
            close(fd);
            continue;
        }
        hc->hub = &h;
        hc->fd = fd;
        char hs[64] = "?", ps[16] = "?";
        getnameinfo((struct sockaddr *)&ss, sl, hs, sizeof hs, ps, sizeof ps,
                    NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(hc->peer, sizeof hc->peer, "%s:%s", hs, ps);
        pthread_t t;
        pthread_mutex_lock(&h.mu);
        h.nthreads++;
        pthread_mutex_unlock(&h.mu);
        if (r3_thread_create(&t, conn_main, hc) < 0) {
            close(fd);
            free(hc);
            pthread_mutex_lock(&h.mu);
            h.nthreads--;
            pthread_mutex_unlock(&h.mu);
            continue;
        }
        pthread_detach(t);
    }
    close(lfd);
    pthread_mutex_lock(&h.mu);
    for (struct hconn *c = h.conns; c; c = c->next)
        fs_conn_kill(c->c, "hub stopping");
    while (h.nthreads > 0)
        pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);
    r3_tls_ctx_free(h.ctx);
    pthread_mutex_destroy(&h.mu);
    pthread_cond_destroy(&h.cv);
    hlog(&h, "stopped");
    return 0;
}
