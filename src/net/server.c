/* SPDX-License-Identifier: BSD-3-Clause */
/* The listen + accept loop every server uses.
 *
 * One epoll thread owns the listening socket and every connection that has
 * nothing to do: idle and not-yet-talking connections cost no thread. When
 * a connection becomes readable it is handed (EPOLLONESHOT) to a pool of
 * threads created on demand (at most max_threads, exiting when idle), which
 * runs the protocol's handshake or on_readable and gives the connection
 * back (when no pool thread runs and none can start, the connections
 * waiting for one are closed with that reason). Output goes through a
 * per-connection queue written without waiting; what the socket does not
 * take is sent by the epoll thread on EPOLLOUT, so a client that does not
 * read stalls only itself (and is closed after
 * send_timeout_ms without progress). A global byte budget bounds request
 * and reply memory. A 250 ms tick enforces the handshake deadline (from
 * accept) and the send timeout. Freed connections go to a graveyard that the
 * epoll thread empties between batches (an event fetched in a batch may
 * still name a connection closed earlier in that batch). */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "internal.h"
#include "net/net.h"

#define TICK_MS 250
#define LINGER_MS 20
#define POOL_IDLE_NS (5ull * 1000000000ull)

struct outq {
    struct outq *next;
    char *hdr;                 /* owned copy */
    size_t hlen;
    const char *data;
    size_t dlen;
    size_t sent;               /* of hlen + dlen */
    void (*done)(void *);
    void *arg;
};

struct conn {
    struct r3_net_conn pub;    /* first: the protocol's view */
    pthread_mutex_t mu;        /* everything below but budget_used/bstop */
    int refs;                  /* pool task + holds */
    bool established, closing, finished;
    bool in_pool, read_armed, wdead;
    struct outq *qhead, *qtail;
    size_t queued;
    uint64_t stall_since;      /* output queued and no progress since (ns), 0 = none */
    size_t budget_used;        /* under the budget's mu */
    bool bstop;                /* under the budget's mu: stop waiting for budget */
    struct conn *next, *prev;  /* server list (under s->mu) */
    struct conn *pool_next;    /* pool queue / graveyard (under s->mu) */
    struct conn *victim_next;  /* tick's list */
};

struct r3_net_server {
    struct r3_net_server_opts o;
    struct r3_net_addr bound;
    int lfd, ep;
    pthread_t loop;
    bool loop_started;
    atomic_bool stopping;
    pthread_mutex_t mu;        /* conns, pool, graveyard, counters */
    pthread_cond_t cv;         /* pool work / a conn or thread ended */
    struct conn *conns;
    unsigned nconns;
    struct conn *qhead, *qtail;    /* connections waiting for a pool thread */
    unsigned nqueued, nthreads, idle;
    struct conn *grave;
    struct r3_net_budget budget;
    size_t share;
    uint64_t refused, last_refusal_log;
};

static void logf_(struct r3_net_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct r3_net_server *s, const char *fmt, ...)
{
    if (!s->o.log)
        return;
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->o.log(s->o.log_arg, line);
}

/* ---- connection lifetime */

static void set_why(struct conn *c, const char *why)
{
    if (why && !c->pub.why[0]) {
        size_t n = 0;
        while (n < sizeof c->pub.why - 1 && why[n]) {
            c->pub.why[n] = why[n];
            n++;
        }
        c->pub.why[n] = 0;
    }
}

/* set_why from a thread that does not hold c->mu (the pool's serve_one). */
static void set_why_locked(struct conn *c, const char *why)
{
    pthread_mutex_lock(&c->mu);
    set_why(c, why);
    pthread_mutex_unlock(&c->mu);
}

/* Under c->mu: interest for the next epoll event (EPOLLONESHOT). */
static void rearm(struct conn *c)
{
    struct r3_net_server *s = c->pub.srv;
    if (c->finished || c->pub.io.fd < 0)
        return;
    uint32_t ev = (c->read_armed && !c->closing ? EPOLLIN | EPOLLRDHUP : 0) |
                  (c->qhead && !c->wdead ? EPOLLOUT : 0);
    if (!ev)
        return;                     /* stays disarmed: nothing to wait for */
    struct epoll_event e = { .events = ev | EPOLLONESHOT, .data.ptr = c };
    epoll_ctl(s->ep, EPOLL_CTL_MOD, c->pub.io.fd, &e);
}

/* Under c->mu: drop queued output (done callbacks collected in *list). */
static void drop_queue(struct conn *c, struct outq **list)
{
    while (c->qhead) {
        struct outq *q = c->qhead;
        c->qhead = q->next;
        q->next = *list;
        *list = q;
    }
    c->qtail = NULL;
    c->queued = 0;
    c->stall_since = 0;
}

static void run_done(struct outq *list)
{
    while (list) {
        struct outq *q = list;
        list = q->next;
        if (q->done)
            q->done(q->arg);
        free(q->hdr);
        free(q);
    }
}

/* Under c->mu: may the connection be torn down now? Marks it finished. */
static bool finish_ready(struct conn *c)
{
    if (c->finished || !c->closing || c->refs > 0 || c->in_pool || (c->qhead && !c->wdead))
        return false;
    c->finished = true;
    return true;
}

/* Tear down (c is finished; no lock held): protocol close, log, close fd,
 * leave the server's list, and go to the graveyard. */
static void destroy(struct conn *c)
{
    struct r3_net_server *s = c->pub.srv;
    struct outq *list = NULL;
    pthread_mutex_lock(&c->mu);
    drop_queue(c, &list);
    pthread_mutex_unlock(&c->mu);
    run_done(list);
    if (c->pub.io.fd >= 0)
        epoll_ctl(s->ep, EPOLL_CTL_DEL, c->pub.io.fd, NULL);
    bool logged = s->o.h.on_close ? s->o.h.on_close(&c->pub) : false;
    if (!logged) {
        char a[32], b[32];
        logf_(s, "%s%s%s%s%s: %.1f s, %s in, %s out; %s", c->pub.peer, r3_io_is_tls(&c->pub.io) ? " tls" : "",
              c->pub.cn[0] ? " (cn=" : "", c->pub.cn, c->pub.cn[0] ? ")" : "",
              (double)(r3_now_ns() - c->pub.t_accept) / 1e9, r3_fmt_bytes(c->pub.io.nread, a, sizeof a),
              r3_fmt_bytes(c->pub.io.nwritten, b, sizeof b), c->pub.why[0] ? c->pub.why : "closed");
    }
    r3_io_close(&c->pub.io);
    pthread_mutex_lock(&s->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    c->pool_next = s->grave;
    s->grave = c;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void r3_net_conn_why(struct r3_net_conn *pc, const char *fmt, ...)
{
    struct conn *c = (struct conn *)pc;
    va_list ap;
    pthread_mutex_lock(&c->mu);
    va_start(ap, fmt);
    vsnprintf(pc->why, sizeof pc->why, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&c->mu);
}

void r3_net_conn_close(struct r3_net_conn *pc, const char *why)
{
    struct conn *c = (struct conn *)pc;
    struct r3_net_server *s = pc->srv;
    pthread_mutex_lock(&c->mu);
    set_why(c, why);
    bool was = c->closing;
    c->closing = true;
    if (!was && c->pub.io.fd >= 0)
        shutdown(c->pub.io.fd, SHUT_RD);     /* wakes a reader blocked on this connection */
    bool fin = finish_ready(c);
    pthread_mutex_unlock(&c->mu);
    if (!was) {
        pthread_mutex_lock(&s->budget.mu);
        c->bstop = true;
        pthread_cond_broadcast(&s->budget.cv);
        pthread_mutex_unlock(&s->budget.mu);
    }
    if (fin)
        destroy(c);
}

void r3_net_conn_hold(struct r3_net_conn *pc)
{
    struct conn *c = (struct conn *)pc;
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
}

bool r3_net_conn_tryhold(struct r3_net_conn *pc)
{
    struct conn *c = (struct conn *)pc;
    pthread_mutex_lock(&c->mu);
    bool ok = !c->finished;
    if (ok)
        c->refs++;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void r3_net_conn_put(struct r3_net_conn *pc)
{
    struct conn *c = (struct conn *)pc;
    pthread_mutex_lock(&c->mu);
    c->refs--;
    bool fin = finish_ready(c);
    pthread_mutex_unlock(&c->mu);
    if (fin)
        destroy(c);
}

/* ---- output */

/* Under c->mu: write what the socket takes now. Completed items go to *list. */
static void flush_locked(struct conn *c, struct outq **list)
{
    while (c->qhead && !c->wdead) {
        struct iovec iov[16];
        int n = 0;
        for (struct outq *q = c->qhead; q && n < 15; q = q->next) {
            size_t off = q->sent;
            if (off < q->hlen)
                iov[n++] = (struct iovec){ q->hdr + off, q->hlen - off };
            size_t doff = off > q->hlen ? off - q->hlen : 0;
            if (q->dlen > doff)
                iov[n++] = (struct iovec){ (char *)q->data + doff, q->dlen - doff };
        }
        ssize_t w = n ? r3_io_writev_some(&c->pub.io, iov, n) : 0;
        if (w < 0) {
            c->wdead = true;
            char why[300];
            snprintf(why, sizeof why, "reply not delivered: %s", r3_last_error());
            set_why(c, why);
            c->closing = true;
            drop_queue(c, list);
            return;
        }
        if (w == 0)
            return;
        c->stall_since = r3_now_ns();
        size_t left = (size_t)w;
        while (c->qhead && left) {
            struct outq *q = c->qhead;
            size_t rest = q->hlen + q->dlen - q->sent, k = left < rest ? left : rest;
            q->sent += k;
            left -= k;
            c->queued -= k;
            if (q->sent == q->hlen + q->dlen) {
                c->qhead = q->next;
                if (!c->qhead)
                    c->qtail = NULL;
                q->next = *list;
                *list = q;
            }
        }
        if (!c->qhead)
            c->stall_since = 0;
    }
}

int r3_net_conn_send(struct r3_net_conn *pc, const void *hdr, size_t hlen, const void *data, size_t dlen,
                     void (*done)(void *), void *done_arg)
{
    struct conn *c = (struct conn *)pc;
    struct outq *q = calloc(1, sizeof *q);
    char *h = hlen ? malloc(hlen) : NULL;
    if (!q || (hlen && !h)) {
        free(q);
        free(h);
        if (done)
            done(done_arg);
        return r3_error(-ENOMEM, "out of memory for a reply");
    }
    if (hlen)
        memcpy(h, hdr, hlen);
    *q = (struct outq){ .hdr = h, .hlen = hlen, .data = data, .dlen = dlen, .done = done, .arg = done_arg };
    struct outq *list = NULL;
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    if (c->wdead || c->finished) {
        q->next = list;
        list = q;
        rc = r3_error(-EPIPE, "the connection is closed");
    } else {
        if (c->qtail)
            c->qtail->next = q;
        else
            c->qhead = q;
        c->qtail = q;
        c->queued += hlen + dlen;
        if (!c->stall_since)
            c->stall_since = r3_now_ns();
        if (c->qhead == q)
            flush_locked(c, &list);
        if (c->qhead)
            rearm(c);
    }
    bool fin = finish_ready(c);
    pthread_mutex_unlock(&c->mu);
    run_done(list);
    if (fin)
        destroy(c);
    return rc;
}

size_t r3_net_conn_queued(struct r3_net_conn *pc)
{
    struct conn *c = (struct conn *)pc;
    pthread_mutex_lock(&c->mu);
    size_t n = c->queued;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* ---- budget */

int r3_net_budget_acquire(struct r3_net_conn *pc, size_t bytes)
{
    struct conn *c = (struct conn *)pc;
    struct r3_net_server *s = pc->srv;
    return r3_net_budget_take(&s->budget, bytes, &c->budget_used, s->share, &c->bstop);
}

void r3_net_budget_release(struct r3_net_conn *pc, size_t bytes)
{
    struct conn *c = (struct conn *)pc;
    r3_net_budget_give(&pc->srv->budget, bytes, &c->budget_used);
}

/* ---- the pool */

/* A busy connection's next request usually follows its reply within
 * microseconds: wait a moment for it on this thread rather than going back
 * through epoll and a thread handoff (latency). Idle connections still end
 * up in epoll, LINGER_MS after their last request. */
static bool linger(struct r3_net_conn *pc)
{
    struct pollfd p = { .fd = pc->io.fd, .events = POLLIN };
    return poll(&p, 1, LINGER_MS) > 0;
}

static void serve_one(struct r3_net_server *s, struct conn *c)
{
    struct r3_net_conn *pc = &c->pub;
    pthread_mutex_lock(&c->mu);
    bool closing = c->closing, est = c->established;
    pthread_mutex_unlock(&c->mu);
    int rc = 0;
    if (!closing && !est) {
        uint64_t dl = c->pub.t_accept + (uint64_t)s->o.handshake_ms * 1000000u;
        pc->io.rdeadline = pc->io.wdeadline = dl;
        if (s->o.tls && !s->o.starttls) {
            rc = r3_tls_accept(s->o.tls, &pc->io, s->o.handshake_ms);
            if (rc < 0)
                set_why_locked(c, r3_last_error());
            else
                r3_tls_peer_cn(&pc->io, pc->cn, sizeof pc->cn);
        }
        if (rc == 0 && s->o.h.handshake) {
            rc = s->o.h.handshake(pc);
            if (rc < 0)
                set_why_locked(c, r3_last_error());       /* keeps a reason set earlier */
            if (rc == 0 && !pc->cn[0])
                r3_tls_peer_cn(&pc->io, pc->cn, sizeof pc->cn);    /* after a STARTTLS */
        }
        pc->io.rdeadline = pc->io.wdeadline = 0;
        pc->io.rtimeout_ms = s->o.read_timeout_ms;
        pthread_mutex_lock(&c->mu);
        c->established = rc == 0;
        pthread_mutex_unlock(&c->mu);
        if (rc < 0) {
            r3_net_conn_close(pc, NULL);
            return;
        }
        if (!r3_io_input_ready(&pc->io))
            goto idle;
    }
    while (!closing) {
        rc = s->o.h.on_readable ? s->o.h.on_readable(pc) : -ENOSYS;
        if (rc < 0) {
            set_why_locked(c, rc == -EPIPE ? "peer closed the connection" : r3_last_error());
            r3_net_conn_close(pc, NULL);
            return;
        }
        pthread_mutex_lock(&c->mu);
        closing = c->closing;
        pthread_mutex_unlock(&c->mu);
        if (atomic_load(&s->stopping) || (!r3_io_input_ready(&pc->io) && !linger(pc)))
            break;
    }
idle:
    pthread_mutex_lock(&c->mu);
    if (!c->closing) {
        c->read_armed = true;
        rearm(c);
    }
    pthread_mutex_unlock(&c->mu);
}

/* The pool is done with c (served, or never to be): give back the pool's
 * reference, and tear c down if that was the last thing holding it. */
static void pool_release(struct conn *c)
{
    pthread_mutex_lock(&c->mu);
    c->in_pool = false;
    c->refs--;
    bool fin = finish_ready(c);
    pthread_mutex_unlock(&c->mu);
    if (fin)
        destroy(c);
}

static void *pool_main(void *arg)
{
    struct r3_net_server *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        uint64_t idle_since = r3_now_ns();
        while (!s->qhead && !atomic_load(&s->stopping) && r3_now_ns() - idle_since < POOL_IDLE_NS) {
            s->idle++;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            s->idle--;
        }
        if (!s->qhead)
            break;
        struct conn *c = s->qhead;
        s->qhead = c->pool_next;
        if (!s->qhead)
            s->qtail = NULL;
        s->nqueued--;
        pthread_mutex_unlock(&s->mu);
        serve_one(s, c);
        pool_release(c);
        pthread_mutex_lock(&s->mu);
    }
    s->nthreads--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Hand c to the pool. Called without c->mu (the lock order is s->mu, then
 * c->mu); the caller has set c->in_pool and taken a ref under c->mu. */
static void to_pool(struct r3_net_server *s, struct conn *c)
{
    pthread_mutex_lock(&s->mu);
    c->pool_next = NULL;
    if (s->qtail)
        s->qtail->pool_next = c;
    else
        s->qhead = c;
    s->qtail = c;
    s->nqueued++;
    /* one thread per queued connection: an idle one already signalled for
     * an earlier connection does not count (it would serve only that one) */
    bool start = s->nqueued > s->idle && s->nthreads < s->o.max_threads;
    if (start)
        s->nthreads++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (start) {
        pthread_t t;
        if (r3_thread_create(&t, pool_main, s) == 0) {
            pthread_detach(t);
        } else {
            /* No thread at all would ever take the queue: its connections
             * are closed with the reason rather than left waiting. */
            pthread_mutex_lock(&s->mu);
            s->nthreads--;
            struct conn *orphans = NULL;
            if (s->nthreads == 0) {
                orphans = s->qhead;
                s->qhead = s->qtail = NULL;
                s->nqueued = 0;
            }
            pthread_mutex_unlock(&s->mu);
            while (orphans) {
                struct conn *o = orphans;
                orphans = o->pool_next;
                r3_net_conn_close(&o->pub, "no thread could be started to serve it");
                pool_release(o);
            }
        }
    }
}

/* ---- the epoll thread */

static void refuse(struct r3_net_server *s, int fd, const char *why)
{
    char peer[96];
    r3_net_peer_name(fd, peer, sizeof peer);
    if (s->o.h.refuse && !(s->o.tls && !s->o.starttls))
        s->o.h.refuse(s->o.h.arg, fd, why);
    close(fd);
    uint64_t now = r3_now_ns();
    s->refused++;
    if (now - s->last_refusal_log >= 1000000000ull) {
        logf_(s, "%s: refused: %s%s", peer, why,
              s->refused > 1 ? " (and others since the last such line)" : "");
        s->last_refusal_log = now;
        s->refused = 0;
    }
}

static void do_accept(struct r3_net_server *s)
{
    for (int i = 0; i < 64; i++) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                logf_(s, "accept: %s", strerror(errno));
                usleep(50000);
            }
            return;
        }
        pthread_mutex_lock(&s->mu);
        unsigned n = s->nconns;
        pthread_mutex_unlock(&s->mu);
        if (n >= s->o.max_connections) {
            char why[120];
            snprintf(why, sizeof why, "too many connections (the maximum is %u)", s->o.max_connections);
            refuse(s, fd, why);
            continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (!c || r3_io_init(&c->pub.io, fd) < 0) {
            free(c);
            refuse(s, fd, "out of memory");
            continue;
        }
        c->pub.srv = s;
        c->pub.t_accept = r3_now_ns();
        r3_net_peer_name(fd, c->pub.peer, sizeof c->pub.peer);
        pthread_mutex_init(&c->mu, NULL);
        c->read_armed = true;
        pthread_mutex_lock(&s->mu);
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        s->nconns++;
        pthread_mutex_unlock(&s->mu);
        /* Only this thread handles events, so c cannot be touched before the ADD returns. */
        struct epoll_event e = { .events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = c };
        if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &e) < 0)
            r3_net_conn_close(&c->pub, "cannot watch the socket");
        else if (s->o.greeting_len && !(s->o.tls && !s->o.starttls))
            r3_net_conn_send(&c->pub, s->o.greeting, s->o.greeting_len, NULL, 0, NULL, NULL);
    }
}

static void on_event(struct r3_net_server *s, struct conn *c, uint32_t ev)
{
    struct outq *list = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->finished) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    if (c->qhead && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        flush_locked(c, &list);
    bool pool = false;
    if (c->read_armed && !c->closing && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        c->read_armed = false;
        c->in_pool = pool = true;
        c->refs++;
    }
    rearm(c);
    bool fin = finish_ready(c);
    pthread_mutex_unlock(&c->mu);
    if (pool)
        to_pool(s, c);
    run_done(list);
    if (fin)
        destroy(c);
}

/* Every tick: the handshake deadline of connections not yet talking, and
 * the send timeout of queues that make no progress. */
static void tick(struct r3_net_server *s)
{
    uint64_t now = r3_now_ns(), hs = (uint64_t)s->o.handshake_ms * 1000000u,
             st = (uint64_t)s->o.send_timeout_ms * 1000000u;
    pthread_mutex_lock(&s->mu);
    struct conn *victims = NULL;
    struct outq *dropped = NULL;
    for (struct conn *c = s->conns; c; c = c->next) {
        pthread_mutex_lock(&c->mu);
        const char *why = NULL;
        char buf[200];
        if (!c->finished && !c->closing && !c->established && !c->in_pool && now - c->pub.t_accept > hs) {
            snprintf(buf, sizeof buf, "no handshake within %d ms", s->o.handshake_ms);
            why = buf;
        } else if (!c->finished && c->qhead && c->stall_since && c->stall_since < now &&
                   now - c->stall_since > st) {    /* set after `now` by a sender: not stalled */
            snprintf(buf, sizeof buf, "the peer does not read (%zu bytes queued, no progress for %d ms)",
                     c->queued, s->o.send_timeout_ms);
            why = buf;
            c->wdead = true;
            /* queued replies hold the connection (their done callbacks
             * release it): drop them now, or it never finishes */
            drop_queue(c, &dropped);
        }
        if (why) {
            set_why(c, why);
            c->refs++;                       /* keep it until closed below */
            c->victim_next = victims;
            victims = c;
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&s->mu);
    run_done(dropped);
    while (victims) {
        struct conn *c = victims;
        victims = c->victim_next;
        r3_net_conn_close(&c->pub, NULL);
        if (c->pub.io.fd >= 0)
            shutdown(c->pub.io.fd, SHUT_RDWR);
        r3_net_conn_put(&c->pub);
    }
}

static void bury(struct r3_net_server *s)
{
    pthread_mutex_lock(&s->mu);
    struct conn *g = s->grave;
    s->grave = NULL;
    pthread_mutex_unlock(&s->mu);
    while (g) {
        struct conn *c = g;
        g = c->pool_next;
        pthread_mutex_destroy(&c->mu);
        free(c);
    }
}

static void *loop_main(void *arg)
{
    struct r3_net_server *s = arg;
    struct epoll_event ev[64];
    uint64_t last_tick = r3_now_ns();
    while (!atomic_load(&s->stopping)) {
        int n = epoll_wait(s->ep, ev, 64, TICK_MS);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.ptr == NULL)
                do_accept(s);
            else
                on_event(s, ev[i].data.ptr, ev[i].events);
        }
        if (r3_now_ns() - last_tick >= TICK_MS * 1000000ull) {
            tick(s);
            last_tick = r3_now_ns();
        }
        bury(s);
    }
    return NULL;
}

/* ---- start / stop */

static int listen_socket(struct r3_net_server *s)
{
    const struct r3_net_addr *a = &s->o.listen;
    char ab[300];
    r3_net_addr_format(a, ab, sizeof ab);
    s->bound = *a;
    if (a->kind == R3_NET_UNIX) {
        struct sockaddr_un su = { .sun_family = AF_UNIX };
        snprintf(su.sun_path, sizeof su.sun_path, "%s", a->path);
        struct stat st;
        if (lstat(a->path, &st) == 0 && S_ISSOCK(st.st_mode))
            unlink(a->path);                 /* a stale socket from an earlier run */
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&su, sizeof su) < 0 || listen(fd, 512) < 0) {
            int e = errno;
            if (fd >= 0)
                close(fd);
            return r3_error(-e, "%s: cannot listen on %s: %s", s->o.name, ab, strerror(e));
        }
        s->lfd = fd;
        return 0;
    }
    struct addrinfo *ai;
    int rc = r3_net_addr_resolve(a, true, &ai);
    if (rc < 0)
        return rc;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 512) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return r3_error(-e, "%s: cannot listen on %s: %s", s->o.name, ab, strerror(e));
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        char nb[128];
        r3_net_sockaddr_format((struct sockaddr *)&ss, sl, nb, sizeof nb);
        struct r3_net_addr b;
        if (r3_net_addr_parse(nb, 0, R3_NET_PASSIVE, &b) == 0)
            s->bound = b;
    }
    s->lfd = fd;
    return 0;
}

int r3_net_server_start(const struct r3_net_server_opts *o, struct r3_net_server **out)
{
    *out = NULL;
    const char *name = o->name ? o->name : "server";
    char ab[300];
    if (!o->listen.kind)
        return r3_error(-EINVAL, "%s: no address to listen on", name);
    r3_net_addr_format(&o->listen, ab, sizeof ab);
    if (!o->tls && !o->insecure && !r3_net_addr_is_loopback(&o->listen))
        return r3_error(-EACCES, "%s: refusing to listen on %s without TLS: anyone who can reach that "
                        "address could use the server without authentication (configure TLS, or allow "
                        "it with the insecure option)", name, ab);
    struct r3_net_server *s = calloc(1, sizeof *s);
    if (!s)
        return r3_error(-ENOMEM, "%s: out of memory", name);
    s->o = *o;
    s->o.name = name;
    s->lfd = s->ep = -1;
    if (!s->o.max_connections)
        s->o.max_connections = 1024;
    if (s->o.handshake_ms <= 0)
        s->o.handshake_ms = 10000;
    if (s->o.read_timeout_ms <= 0)
        s->o.read_timeout_ms = 30000;
    if (s->o.send_timeout_ms <= 0)
        s->o.send_timeout_ms = 30000;
    if (!s->o.max_inflight)
        s->o.max_inflight = (size_t)256 << 20;
    if (!s->o.max_threads)
        s->o.max_threads = s->o.max_connections;
    s->share = s->o.conn_inflight;
    if (!s->share) {
        s->share = s->o.max_inflight / 4;
        if (s->share < ((size_t)64 << 20))
            s->share = (size_t)64 << 20;
    }
    if (s->share > s->o.max_inflight)
        s->share = s->o.max_inflight;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    r3_net_budget_init(&s->budget, s->o.max_inflight);
    int rc = listen_socket(s);
    if (rc == 0 && (s->ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        rc = r3_error(-errno, "%s: epoll: %s", name, strerror(errno));
    if (rc == 0) {
        struct epoll_event e = { .events = EPOLLIN, .data.ptr = NULL };
        if (epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &e) < 0)
            rc = r3_error(-errno, "%s: epoll: %s", name, strerror(errno));
    }
    if (rc == 0) {
        rc = r3_thread_create(&s->loop, loop_main, s);
        if (rc < 0)
            r3_error(rc, "%s: cannot start the accept thread", name);
        s->loop_started = rc == 0;
    }
    if (rc < 0) {
        r3_net_server_stop(s);
        return rc;
    }
    *out = s;
    return 0;
}

void *r3_net_server_arg(const struct r3_net_conn *c)
{
    return c->srv->o.h.arg;
}

const struct r3_net_addr *r3_net_server_addr(const struct r3_net_server *s)
{
    return &s->bound;
}

unsigned r3_net_server_conns(struct r3_net_server *s)
{
    pthread_mutex_lock(&s->mu);
    unsigned n = s->nconns;
    pthread_mutex_unlock(&s->mu);
    return n;
}

unsigned r3_net_server_threads(struct r3_net_server *s)
{
    pthread_mutex_lock(&s->mu);
    unsigned n = s->nthreads;
    pthread_mutex_unlock(&s->mu);
    return n;
}

size_t r3_net_server_inflight(struct r3_net_server *s)
{
    pthread_mutex_lock(&s->budget.mu);
    size_t n = s->budget.used;
    pthread_mutex_unlock(&s->budget.mu);
    return n;
}

void r3_net_server_stop(struct r3_net_server *s)
{
    if (!s)
        return;
    atomic_store(&s->stopping, true);
    if (s->loop_started)
        pthread_join(s->loop, NULL);
    if (s->lfd >= 0) {
        close(s->lfd);
        if (s->o.listen.kind == R3_NET_UNIX)
            unlink(s->o.listen.path);
    }
    /* Close every connection: wake its reader, drop its output. */
    for (;;) {
        pthread_mutex_lock(&s->mu);
        struct conn *c = s->conns;
        while (c) {
            pthread_mutex_lock(&c->mu);
            bool skip = c->finished || (c->closing && c->wdead);
            if (!skip)
                c->refs++;
            pthread_mutex_unlock(&c->mu);
            if (!skip)
                break;
            c = c->next;
        }
        if (!c) {
            while (s->nconns > 0)
                pthread_cond_wait(&s->cv, &s->mu);
            pthread_mutex_unlock(&s->mu);
            break;
        }
        pthread_mutex_unlock(&s->mu);
        struct outq *dropped = NULL;
        pthread_mutex_lock(&c->mu);
        c->wdead = true;
        drop_queue(c, &dropped);       /* their holds would keep c alive */
        pthread_mutex_unlock(&c->mu);
        run_done(dropped);
        r3_net_conn_close(&c->pub, "server shutting down");
        if (c->pub.io.fd >= 0)
            shutdown(c->pub.io.fd, SHUT_RDWR);
        r3_net_conn_put(&c->pub);
    }
    pthread_mutex_lock(&s->mu);
    pthread_cond_broadcast(&s->cv);
    while (s->nthreads > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    bury(s);
    if (s->ep >= 0)
        close(s->ep);
    r3_net_budget_destroy(&s->budget);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
