/* SPDX-License-Identifier: BSD-3-Clause */
/* The hub: accepts mTLS connections only; the client certificate's CN is the
 * sync id. Advertisers register files under their id; receivers of that id
 * get every file (also ones advertised later). The advertiser's stream is
 * sent once and relayed to every receiver of its id (the frame as read, by
 * reference); catch-up blocks go to one receiver; hashes from receivers go
 * to the file's advertiser.
 *
 * Connections are served by the network layer's server (src/net/server.c:
 * connection cap, handshake deadline, per-connection send queues, pool
 * threads only for connections with input). Frames read from advertisers
 * take their bytes from a budget (max_inflight) until every receiver's queue
 * has sent them, so the hub's memory is bounded whatever clients do; a
 * receiver whose queue stays above queue_limit is dropped (it reconnects and
 * repairs). Lock order: never call into the server (send, put, close) in a
 * way that may end a connection while holding hub->mu: its on_close takes
 * hub->mu. Under hub->mu, connections are held first (r3_net_conn_tryhold:
 * one whose on_close is about to run is skipped),
 * and put after unlocking. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"
#include "filesync/filesync.h"
#include "wire/frame.h"

enum { ROLE_NONE, ROLE_ADV, ROLE_RECV };

struct hub;
struct hconn {                      /* r3_net_conn.data once the hello is done */
    struct hconn *next;             /* hub->conns */
    struct hub *hub;
    struct r3_net_conn *c;
    int role;
    uint64_t id;
    const char *sid;                /* c->cn */
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
    struct r3_net_server *srv;
    pthread_mutex_t mu;
    struct hconn *conns;
    struct hfile *files;
    uint64_t next_id;
    size_t qlimit;
    bool verbose;
    const struct fs_report *rep;
    struct r3_net_budget budget;    /* bytes of advertisers' frames alive */
    bool stopping;                  /* under budget.mu: stop waiting for budget */
};

#define SEND_TIMEOUT_MS 10000

#define hlog(h, ...) fs_say((h)->rep, FS_SAY_DIAG, __VA_ARGS__)

static void server_log(void *arg, const char *line)
{
    struct hub *h = arg;
    hlog(h, "%s", line);
}

/* ---- sending: a frame is queued by reference (its bytes are not copied) */
static void frame_done(void *p) { fs_frame_put(p); }

static int send_frame(struct r3_net_conn *c, struct fs_frame *f)
{
    atomic_fetch_add(&f->refs, 1);
    return r3_net_conn_send(c, NULL, 0, f->data, f->len, frame_done, f);
}

static int send_buf(struct r3_net_conn *c, const msgpack_sbuffer *b)
{
    struct fs_frame *f = fs_frame_new(b);
    if (!f)
        return r3_error(-ENOMEM, "out of memory");
    int rc = send_frame(c, f);
    fs_frame_put(f);
    return rc;
}

/* Connections held under hub->mu, put after unlocking. held_add: false if
 * c is closing (not held) or out of memory. */
struct held {
    struct r3_net_conn **v;
    size_t n, cap;
};

static bool held_add(struct held *hd, struct r3_net_conn *c)
{
    if (hd->n == hd->cap) {
        size_t nc = hd->cap ? hd->cap * 2 : 16;
        struct r3_net_conn **nv = realloc(hd->v, nc * sizeof *nv);
        if (!nv)
            return false;
        hd->v = nv;
        hd->cap = nc;
    }
    if (!r3_net_conn_tryhold(c))
        return false;
    hd->v[hd->n++] = c;
    return true;
}

static void held_put(struct held *hd)
{
    for (size_t i = 0; i < hd->n; i++)
        r3_net_conn_put(hd->v[i]);
    free(hd->v);
    *hd = (struct held){ 0 };
}

static struct hfile *file_find(struct hub *h, const char *sid, uint64_t fid)
{
    for (struct hfile *f = h->files; f; f = f->next)
        if (f->fid == fid && strcmp(f->adv->sid, sid) == 0)
            return f;
    return NULL;
}

/* [FILE, fid, name, size, block] into a new b */
static void pack_file(msgpack_sbuffer *b, const struct hfile *f)
{
    msgpack_packer pk;
    fs_msg_begin(b, &pk, 5, FS_FILE);
    msgpack_pack_uint64(&pk, f->fid);
    size_t n = strlen(f->name);
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, f->name, n);
    msgpack_pack_uint64(&pk, f->size);
    msgpack_pack_uint32(&pk, f->block);
}

/* Queue a small frame to every receiver of sid (under h->mu; never blocks).
 * The receivers are held in *hd: put them after unlocking. */
static void to_receivers_locked(struct hub *h, const char *sid, struct fs_frame *fr, struct held *hd)
{
    for (struct hconn *r = h->conns; r; r = r->next)
        if (r->role == ROLE_RECV && strcmp(r->sid, sid) == 0 && held_add(hd, r->c))
            send_frame(r->c, fr);
}

/* Relay a (big) frame to the receivers of sid, or to one receiver (rid). A
 * receiver with more than qlimit bytes queued gets SEND_TIMEOUT_MS to drain
 * below it, else it is dropped (it will reconnect and repair). */
static void relay(struct hub *h, const char *sid, uint64_t rid, struct fs_frame *fr)
{
    struct held hd = { 0 };
    pthread_mutex_lock(&h->mu);
    for (struct hconn *r = h->conns; r; r = r->next)
        if (r->role == ROLE_RECV && strcmp(r->sid, sid) == 0 && (!rid || r->id == rid))
            held_add(&hd, r->c);
    pthread_mutex_unlock(&h->mu);
    for (size_t i = 0; i < hd.n; i++) {
        struct r3_net_conn *c = hd.v[i];
        uint64_t t0 = r3_now_ns();
        while (r3_net_conn_queued(c) > h->qlimit) {
            if (r3_now_ns() - t0 > SEND_TIMEOUT_MS * 1000000ull) {
                hlog(h, "%s: receiver too slow, dropped", c->peer);
                r3_net_conn_close(c, "too slow");
                break;
            }
            usleep(5000);
        }
        send_frame(c, fr);
    }
    held_put(&hd);
}

/* Tell the peer why (an ERR frame, sent before the connection closes) and
 * fail with that sentence. */
static int refuse_conn(struct hub *h, struct r3_net_conn *c, const char *sid, const char *msg)
{
    hlog(h, "%s (%s): %s", c->peer, sid, msg);
    msgpack_sbuffer b;
    msgpack_packer pk;
    fs_msg_begin(&b, &pk, 2, FS_ERR);
    msgpack_pack_str(&pk, strlen(msg));
    msgpack_pack_str_body(&pk, msg, strlen(msg));
    send_buf(c, &b);
    msgpack_sbuffer_destroy(&b);
    return r3_error(-EPROTO, "%s", msg);
}

static int refuse(struct hconn *hc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(struct hconn *hc, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return refuse_conn(hc->hub, hc->c, hc->sid, msg);
}

/* One frame from c; an advertiser's frames take their bytes from the budget. */
static int read_frame(struct hub *h, struct r3_net_conn *c, uint32_t max, bool budget,
                      struct fs_frame **out)
{
    return fs_frame_read(&c->io, max, budget ? &h->budget : NULL, &h->stopping, out);
}

/* The server's handshake callback (after the TLS handshake, within the
 * handshake deadline): the client's hello. */
static int on_handshake(struct r3_net_conn *c)
{
    struct hub *h = r3_net_server_arg(c);
    struct fs_frame *f;
    int rc = read_frame(h, c, FS_HELLO_MAX, false, &f);
    if (rc < 0)
        return rc;
    if (!c->cn[0]) {
        fs_frame_put(f);
        return refuse_conn(h, c, "?", "the client certificate has no common name");
    }
    msgpack_unpacked u;
    const msgpack_object *m = &u.data;
    const char *s, *role;
    uint32_t sn, rn;
    uint64_t type, ver;
    int r = ROLE_NONE;
    if ((rc = fs_frame_unpack(f, &u)) < 0)
        ;
    else if (!fs_msg_uint(m, 0, &type) || type != FS_HELLO)
        rc = refuse_conn(h, c, c->cn, "hello expected");
    else if (!fs_msg_str(m, 1, &s, &sn) || sn != 6 || memcmp(s, "r3sync", 6) ||
             !fs_msg_uint(m, 2, &ver) || !fs_msg_str(m, 3, &role, &rn))
        rc = refuse_conn(h, c, c->cn, "bad hello");
    else if (ver != FS_PROTO_VERSION) {
        char msg[80];
        snprintf(msg, sizeof msg, "protocol version %llu not supported", (unsigned long long)ver);
        rc = refuse_conn(h, c, c->cn, msg);
    } else {
        r = rn == 3 && !memcmp(role, "adv", 3) ? ROLE_ADV
          : rn == 4 && !memcmp(role, "recv", 4) ? ROLE_RECV : ROLE_NONE;
        if (r == ROLE_NONE)
            rc = refuse_conn(h, c, c->cn, "unknown role");
    }
    msgpack_unpacked_destroy(&u);
    fs_frame_put(f);
    if (rc < 0)
        return rc;
    struct hconn *hc = calloc(1, sizeof *hc);
    if (!hc)
        return r3_error(-ENOMEM, "out of memory");
    *hc = (struct hconn){ .hub = h, .c = c, .role = r, .sid = c->cn };
    msgpack_sbuffer b;
    msgpack_packer pk;
    pthread_mutex_lock(&h->mu);
    hc->id = ++h->next_id;
    fs_msg_begin(&b, &pk, 5, FS_HELLO);
    msgpack_pack_str(&pk, 6);
    msgpack_pack_str_body(&pk, "r3sync", 6);
    msgpack_pack_uint8(&pk, FS_PROTO_VERSION);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "ok", 2);
    msgpack_pack_uint64(&pk, hc->id);
    send_buf(c, &b);        /* c is in its handshake: it cannot end under us */
    if (r == ROLE_RECV) {
        /* every file of this id, in the same locked step that makes this
         * receiver visible to relays, so no block can precede its FILE */
        for (struct hfile *fl = h->files; fl; fl = fl->next)
            if (strcmp(fl->adv->sid, hc->sid) == 0) {
                msgpack_sbuffer fb;
                pack_file(&fb, fl);
                send_buf(c, &fb);
                msgpack_sbuffer_destroy(&fb);
            }
    }
    hc->next = h->conns;
    h->conns = hc;
    c->data = hc;
    pthread_mutex_unlock(&h->mu);
    msgpack_sbuffer_destroy(&b);
    if (h->verbose)
        hlog(h, "%s: %s joined id '%s'", c->peer, r == ROLE_ADV ? "advertiser" : "receiver", hc->sid);
    return 0;
}

static int adv_msg(struct hconn *hc, uint64_t type, const msgpack_object *m, struct fs_frame *raw)
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
        pack_file(&b, f);
        struct fs_frame *fr = fs_frame_new(&b);
        msgpack_sbuffer_destroy(&b);
        struct held hd = { 0 };
        if (fr) {
            to_receivers_locked(h, hc->sid, fr, &hd);
            fs_frame_put(fr);
        }
        pthread_mutex_unlock(&h->mu);
        held_put(&hd);
        if (h->verbose)
            hlog(h, "%s: id '%s' advertises %.*s (%llu bytes)", hc->c->peer, hc->sid, (int)nn, name,
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
        struct held hd = { 0 };
        if (mine && type == FS_SIZE) {
            if (!fs_msg_uint(m, 2, &size) || size > (1ull << 50)) {
                pthread_mutex_unlock(&h->mu);
                return refuse(hc, "bad SIZE message");
            }
            f->size = size;
            to_receivers_locked(h, hc->sid, raw, &hd);
        }
        bool other = f && !mine;
        pthread_mutex_unlock(&h->mu);
        held_put(&hd);
        if (other)
            return refuse(hc, "message for a file this advertiser does not own");
        if (!f) {
            /* unknown (e.g. its name was taken over by another advertiser
             * of this id): dropped, so two advertisers never fight */
            if (h->verbose)
                hlog(h, "%s (%s): message for unknown file %llu dropped", hc->c->peer, hc->sid,
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
        relay(h, hc->sid, type == FS_BLK ? 0 : rid, raw);   /* the frame as read: no copy */
        return 0;
    }
    case FS_END: {
        if (!fs_msg_uint(m, 1, &round))
            return refuse(hc, "bad END message");
        msgpack_sbuffer b;
        msgpack_packer pk;
        fs_msg_begin(&b, &pk, 3, FS_END);
        msgpack_pack_uint64(&pk, round);
        msgpack_pack_uint64(&pk, hc->id);
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
        if (x->id == id && x->role == role && strcmp(x->sid, sid) == 0) {
            if (r3_net_conn_tryhold(x->c))
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
        if (f && r3_net_conn_tryhold(f->adv->c))
            to = f->adv;
        pthread_mutex_unlock(&h->mu);
        if (!to)
            return 0;            /* the advertiser left: it re-announces on return */
        fs_msg_begin(&b, &pk, 6, FS_HAVE);
        msgpack_pack_uint64(&pk, fid);
        msgpack_pack_uint64(&pk, first);
        msgpack_pack_bin(&pk, dn);
        msgpack_pack_bin_body(&pk, data, dn);
        msgpack_pack_uint64(&pk, last);
        msgpack_pack_uint64(&pk, hc->id);
        break;
    case FS_ACK:
        if (!fs_msg_uint(m, 1, &round) || !fs_msg_uint(m, 2, &adv))
            return refuse(hc, "bad ACK message");
        to = find_conn_ref(h, hc->sid, adv, ROLE_ADV);
        if (!to)
            return 0;
        fs_msg_begin(&b, &pk, 3, FS_ACK);
        msgpack_pack_uint64(&pk, round);
        msgpack_pack_uint64(&pk, hc->id);
        break;
    default:
        return refuse(hc, "message type %llu not allowed for a receiver", (unsigned long long)type);
    }
    send_buf(to->c, &b);
    msgpack_sbuffer_destroy(&b);
    r3_net_conn_put(to->c);      /* after this, to may be gone */
    return 0;
}

/* The server's on_readable callback: one frame, dispatched. */
static int on_readable(struct r3_net_conn *c)
{
    struct hconn *hc = c->data;
    struct hub *h = hc->hub;
    struct fs_frame *f;
    int rc = read_frame(h, c, FS_MAX_FRAME - 4, hc->role == ROLE_ADV, &f);
    if (rc == -EMSGSIZE)
        return refuse(hc, "%s", r3_last_error());
    if (rc < 0)
        return rc;
    msgpack_unpacked u;
    uint64_t type;
    if ((rc = fs_frame_unpack(f, &u)) < 0)
        rc = refuse(hc, "malformed frame");
    else if (!fs_msg_uint(&u.data, 0, &type))
        rc = refuse(hc, "message without a type");
    else if (type == FS_HELLO)
        rc = refuse(hc, "second hello");
    else
        rc = hc->role == ROLE_ADV ? adv_msg(hc, type, &u.data, f) : recv_msg(hc, type, &u.data);
    msgpack_unpacked_destroy(&u);
    fs_frame_put(f);
    return rc;
}

/* The server's on_close callback: the connection is gone (nothing holds
 * it). An advertiser's files go with it; its receivers hear GONE. */
static bool on_close(struct r3_net_conn *c)
{
    struct hub *h = r3_net_server_arg(c);
    struct hconn *hc = c->data;
    if (!hc) {
        hlog(h, "%s: refused: %s", c->peer, c->why[0] ? c->why : "closed before its hello");
        return true;
    }
    struct held hd = { 0 };
    pthread_mutex_lock(&h->mu);
    for (struct hconn **pp = &h->conns; *pp; pp = &(*pp)->next)
        if (*pp == hc) {
            *pp = hc->next;
            break;
        }
    for (struct hfile **pp = &h->files; *pp;) {
        struct hfile *f = *pp;
        if (f->adv != hc) {
            pp = &f->next;
            continue;
        }
        msgpack_sbuffer b;
        msgpack_packer pk;
        fs_msg_begin(&b, &pk, 2, FS_GONE);
        msgpack_pack_uint64(&pk, f->fid);
        struct fs_frame *fr = fs_frame_new(&b);
        msgpack_sbuffer_destroy(&b);
        if (fr) {
            to_receivers_locked(h, hc->sid, fr, &hd);
            fs_frame_put(fr);
        }
        *pp = f->next;
        free(f->name);
        free(f);
    }
    pthread_mutex_unlock(&h->mu);
    held_put(&hd);
    hlog(h, "%s (%s): closed: %s", c->peer, hc->sid, c->why[0] ? c->why : "closed");
    free(hc);
    return true;
}

int fs_hub_run(const struct fs_hub_opts *o, atomic_int *stop)
{
    struct hub h = { .qlimit = o->queue_limit ? o->queue_limit : (64u << 20), .verbose = o->verbose,
                     .rep = &o->report };
    if (!o->tls.cert || !o->tls.key || !o->tls.ca)
        return r3_error(-EINVAL, "the hub needs a certificate, its key and a CA (mTLS only)");
    struct r3_net_server_opts so = {
        .name = "r3sync hub", .max_connections = o->max_connections,
        .handshake_ms = 10000, .send_timeout_ms = SEND_TIMEOUT_MS,
        .h = { .handshake = on_handshake, .on_readable = on_readable, .on_close = on_close,
               .arg = &h },
        .log = server_log, .log_arg = &h,
    };
    int rc = r3_net_addr_parse(o->listen, 0, R3_NET_PASSIVE, &so.listen);
    if (rc < 0)
        return rc;
    if ((rc = r3_tls_server_ctx(&o->tls, &h.ctx)) < 0)
        return rc;
    so.tls = h.ctx;
    pthread_mutex_init(&h.mu, NULL);
    r3_net_budget_init(&h.budget, o->max_inflight ? o->max_inflight : (256u << 20));
    if ((rc = r3_net_server_start(&so, &h.srv)) < 0)
        goto out;
    char ab[300];
    hlog(&h, "listening on %s", r3_net_addr_format(r3_net_server_addr(h.srv), ab, sizeof ab));
    while (!*stop)
        usleep(100000);
    /* wake a reader waiting for budget, then close every connection */
    pthread_mutex_lock(&h.budget.mu);
    h.stopping = true;
    pthread_mutex_unlock(&h.budget.mu);
    r3_net_budget_wake(&h.budget);
    r3_net_server_stop(h.srv);
    hlog(&h, "stopped");
out:
    while (h.files) {
        struct hfile *f = h.files;
        h.files = f->next;
        free(f->name);
        free(f);
    }
    r3_net_budget_destroy(&h.budget);
    r3_tls_ctx_free(h.ctx);
    pthread_mutex_destroy(&h.mu);
    return rc;
}
