/* SPDX-License-Identifier: BSD-3-Clause */
/* The seeder: an open region served read-only on the r3 protocol (the wire
 * server of src/wire on src/net, TLS and mTLS as r3serve), plus the
 * migration methods (include/r3/wire.h):
 *
 *   migrate  version check, answers the chunk size
 *   track    starts tracking written chunks (one leecher session at a time)
 *            and snapshots the access order (first-fault order)
 *   order    the snapshot, in slices
 *   finalize before_finalize pauses the writers, (opts.sync: the region is
 *            synced,) one collect finds what was written, the list of
 *            chunks written since track is kept; from then on A must not
 *            write (the served view is read-only anyway)
 *   dirty    that list, in slices
 *   release  the leecher holds everything; r3_seed_wait returns
 *
 * Reads come from r3_region_read: the region's current bytes, chunks it
 * never filled from its source, nothing filled by reading. Repeating
 * track/finalize/release with the same session answers the same thing, so a
 * leecher's retry after a lost connection is harmless. A monitor stops
 * tracking when the tracking leecher's connections are all gone (a leecher
 * that died costs A nothing). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "r3/migrate.h"
#include "r3/wire.h"
#include "net/net.h"
#include "migrate/proto.h"
#include "migrate/gate.h"

enum { S_IDLE, S_TRACKING, S_FINALIZED, S_RELEASED };

struct view {
    struct r3_source src;
    struct r3_region *r;
    struct r3_source *inner;      /* source mode: what the gate wraps */
};

struct r3_seeder {
    struct view view;             /* first: the served source */
    struct r3_region *r;          /* region mode, or NULL */
    struct r3_source *gate;       /* source mode: the served gate (owned), or NULL */
    uint32_t chunk;
    struct r3_seed_opts o;
    struct r3_tls_ctx *tls;
    struct r3_wire_server *ws;
    pthread_mutex_t mu;           /* state, session, lists */
    pthread_mutex_t fmu;          /* one finalize at a time (the hook runs under it) */
    pthread_cond_t cv;            /* state changed; monitor wake-ups */
    int state;
    uint64_t session;
    uint8_t *order, *dirty;       /* 8-byte big-endian chunk indexes */
    bool halted;                  /* r3_seed_halt_writes: held writes fail */
    size_t norder, ndirty;
    pthread_t monitor;
    bool monitor_started, stop;
};

static int view_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct view *v = (struct view *)s;
    return v->r ? r3_region_read(v->r, buf, len, off) : r3_source_read(v->inner, buf, len, off);
}

static void view_close(struct r3_source *s)
{
    (void)s;                      /* part of the seeder */
}

static const struct r3_source_ops view_ops = {
    .scheme = "seed-view", .read = view_read, .close = view_close,
};

void r3_seed_opts_init(struct r3_seed_opts *o)
{
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
}

/* A list as the wire carries it: 8-byte big-endian indexes. */
static uint8_t *encode(const uint64_t *l, size_t n)
{
    uint8_t *b = malloc(n ? n * 8 : 1);
    if (b)
        for (size_t i = 0; i < n; i++)
            r3m_put64(b + i * 8, l[i]);
    return b;
}

static int slice(const char *what, const uint8_t *b, size_t n, uint64_t off, uint64_t len, void **data,
                 size_t *dlen)
{
    uint64_t bytes = (uint64_t)n * 8;
    if (!b || len == 0 || off > bytes || len > bytes - off)
        return r3_error(-EINVAL, "seeder: %s bytes %" PRIu64 "+%" PRIu64 " are outside the list (%" PRIu64
                        " bytes)", what, off, len, bytes);
    if (!(*data = malloc(len)))
        return r3_error(-ENOMEM, "seeder: out of memory");
    memcpy(*data, b + off, len);
    *dlen = len;
    return 0;
}

static int do_track(struct r3_seeder *s, uint64_t session, uint64_t *val)
{
    pthread_mutex_lock(&s->mu);
    if (s->state != S_IDLE && s->session == session) {
        *val = s->norder;         /* a retry */
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    if (s->state == S_FINALIZED || s->state == S_RELEASED) {
        pthread_mutex_unlock(&s->mu);
        return r3_error(-EBUSY, "seeder: the region was already finalized for another leecher");
    }
    uint64_t *l = NULL;
    size_t n = 0;
    int rc = 0;
    if (s->gate) {
        r3m_gate_track(s->gate, 1);   /* a source keeps no access order */
    } else {
        rc = r3_region_track(s->r, R3_TRACK_START, NULL, NULL);
        if (rc == 0)
            rc = r3_region_access_order(s->r, &l, &n);
    }
    uint8_t *b = NULL;
    if (rc == 0 && !(b = encode(l, n)))
        rc = r3_error(-ENOMEM, "seeder: out of memory");
    free(l);
    if (rc == 0) {
        /* a new leecher replaces one that went away before finalize */
        free(s->order);
        s->order = b;
        s->norder = n;
        s->session = session;
        s->state = S_TRACKING;
        *val = n;
    }
    pthread_mutex_unlock(&s->mu);
    if (rc == 0 && s->o.after_track)
        s->o.after_track(s->o.arg, s->r);
    return rc < 0 ? r3_error_prefix(rc, "seeder: ") : 0;
}

static void track_stop(struct r3_seeder *s)
{
    if (s->gate)
        r3m_gate_track(s->gate, 0);
    else
        r3_region_track(s->r, R3_TRACK_STOP, NULL, NULL);
}

static int do_finalize(struct r3_seeder *s, uint64_t session, uint64_t *val)
{
    pthread_mutex_lock(&s->fmu);
    pthread_mutex_lock(&s->mu);
    int state = s->state;
    bool mine = s->session == session;
    size_t nd = s->ndirty;
    pthread_mutex_unlock(&s->mu);
    int rc = 0;
    if (!mine || state == S_IDLE) {
        rc = r3_error(-EPROTO, "seeder: FINALIZE without TRACK from this leecher (was the connection lost"
                      " for long enough that tracking stopped?)");
    } else if (state != S_TRACKING) {
        *val = nd;                /* a retry */
    } else if (s->gate && (r3m_gate_set(s->gate, R3M_GATE_PAUSED), 0)) {
    } else if (s->o.before_finalize && (rc = s->o.before_finalize(s->o.arg, s->r)) < 0) {
        if (s->gate)
            r3m_gate_set(s->gate, R3M_GATE_OPEN);
        r3_error_prefix(rc, "seeder: before_finalize refused: ");
    } else if (s->o.sync && (rc = s->r ? r3_region_sync(s->r) : r3_source_flush(s->view.inner)) < 0) {
        if (s->gate)
            r3m_gate_set(s->gate, R3M_GATE_OPEN);
        r3_error_prefix(rc, "seeder: the sync at FINALIZE failed: ");
    } else {
        uint64_t *l = NULL;
        size_t n = 0;
        rc = s->gate ? r3m_gate_take(s->gate, &l, &n) : r3_region_track(s->r, R3_TRACK_TAKE, &l, &n);
        uint8_t *b = NULL;
        if (rc == 0 && !(b = encode(l, n)))
            rc = r3_error(-ENOMEM, "seeder: out of memory");
        if (rc == 0) {
            track_stop(s);
            pthread_mutex_lock(&s->mu);
            free(s->dirty);
            s->dirty = b;
            s->ndirty = n;
            s->state = S_FINALIZED;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            *val = n;
            if (s->o.after_finalize)
                s->o.after_finalize(s->o.arg, s->r, l, n);
        } else {
            r3_error_prefix(rc, "seeder: cannot find the written chunks: ");
            if (s->gate)
                r3m_gate_set(s->gate, R3M_GATE_OPEN);    /* not finalized: A goes on */
        }
        free(l);
    }
    pthread_mutex_unlock(&s->fmu);
    return rc;
}

static int seed_call(void *arg, const char *m, uint64_t a, uint64_t b, uint64_t *val, void **data, size_t *dlen)
{
    struct r3_seeder *s = arg;
    if (strcmp(m, R3M_HELLO) == 0) {
        if (a != R3_MIGRATE_VERSION)
            return r3_error(-EPROTONOSUPPORT, "seeder: migration protocol version %" PRIu64 " is not"
                            " supported (this seeder speaks %d)", a, R3_MIGRATE_VERSION);
        *val = s->chunk;
        return 0;
    }
    if (strcmp(m, R3M_TRACK) == 0)
        return a ? do_track(s, a, val) : r3_error(-EINVAL, "seeder: TRACK without a session");
    if (strcmp(m, R3M_FINALIZE) == 0) {
        uint64_t n = 0;
        int rc = do_finalize(s, a, &n);
        if (rc < 0 || b == 0) {
            *val = n;
            return rc;
        }
        /* b bytes: the count, then the list's head (zero padded), so the
         * leecher has both from the one round trip A is paused for */
        if (b < 8 || b > (1u << 20))
            return r3_error(-EINVAL, "seeder: a FINALIZE answer of %" PRIu64 " bytes (8 to 1 MiB)", b);
        uint8_t *d = calloc(1, b);
        if (!d)
            return r3_error(-ENOMEM, "seeder: out of memory");
        pthread_mutex_lock(&s->mu);
        uint64_t bytes = (uint64_t)s->ndirty * 8;
        r3m_put64(d, s->ndirty);
        memcpy(d + 8, s->dirty, bytes < b - 8 ? bytes : b - 8);
        pthread_mutex_unlock(&s->mu);
        *data = d;
        *dlen = b;
        return 0;
    }
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (strcmp(m, R3M_ORDER) == 0) {
        rc = slice("order", s->order, s->norder, a, b, data, dlen);
    } else if (strcmp(m, R3M_DIRTY) == 0) {
        rc = s->state >= S_FINALIZED ? slice("dirty", s->dirty, s->ndirty, a, b, data, dlen)
                                     : r3_error(-EPROTO, "seeder: the dirty list comes after FINALIZE");
    } else if (strcmp(m, R3M_RELEASE) == 0) {
        if (s->session != a || s->state < S_FINALIZED) {
            rc = r3_error(-EPROTO, "seeder: RELEASE before FINALIZE, or from another leecher");
        } else if (s->state == S_FINALIZED) {
            s->state = S_RELEASED;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            if (s->gate)
                r3m_gate_set(s->gate, R3M_GATE_GONE);     /* A's writers: EIO from now on */
            if (s->o.on_release)
                s->o.on_release(s->o.arg, s->r);
            return 0;
        }
    } else {
        rc = r3_error(-ENOSYS, "seeder: unknown method '%s'", m);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Tracking stops when the tracking leecher has had no connection for 2 s. */
static void *monitor_main(void *arg)
{
    struct r3_seeder *s = arg;
    unsigned idle = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        if (s->stop || s->state != S_TRACKING || !s->ws) {
            idle = 0;
            continue;
        }
        idle = r3_wire_server_conns(s->ws) ? 0 : idle + 1;
        if (idle >= 20) {
            track_stop(s);
            s->state = S_IDLE;
            s->session = 0;
            idle = 0;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void seed_log(void *arg, const char *line)
{
    struct r3_seeder *s = arg;
    s->o.log(s->o.arg, line);
}

static int check_opts(const struct r3_seed_opts *o, bool need_hook)
{
    int rc = r3_opts_check(o ? o->struct_size : 1, sizeof *o, "r3_seed_opts");
    if (rc < 0)
        return rc;
    if (!o->listen)
        return r3_error(-EINVAL, "seeder: no address to listen on (opts.listen)");
    if (need_hook && !o->before_finalize)
        return r3_error(-EINVAL, "seeder: a before_finalize hook is required (it pauses the writers)");
    if ((o->tls_cert != NULL) != (o->tls_key != NULL))
        return r3_error(-EINVAL, "seeder: tls_cert and tls_key go together");
    if (o->tls_ca && !o->tls_cert)
        return r3_error(-EINVAL, "seeder: tls_ca (mTLS) needs tls_cert and tls_key");
    return 0;
}

static int seed_start(struct r3_seeder *s, const struct r3_seed_opts *o, struct r3_seeder **out);

int r3_seed_open(struct r3_region *r, const struct r3_seed_opts *o, struct r3_seeder **out)
{
    *out = NULL;
    int rc = check_opts(o, true);
    if (rc < 0)
        return rc;
    /* What the strategy must do, asked before anything listens. */
    uint8_t probe[1];
    if ((rc = r3_region_read(r, probe, 1, 0)) < 0)
        return r3_error_prefix(rc, "seeder: ");
    if ((rc = r3_region_track(r, R3_TRACK_STOP, NULL, NULL)) < 0)     /* can it track at all? */
        return r3_error_prefix(rc, "seeder: ");
    struct r3_seeder *s = calloc(1, sizeof *s);
    if (!s)
        return r3_error(-ENOMEM, "seeder: out of memory");
    s->r = r;
    s->chunk = r->chunk;
    s->view.r = r;
    s->view.src.size = r->len;
    return seed_start(s, o, out);
}

int r3_seed_source_open(struct r3_source *src, uint32_t chunk, const struct r3_seed_opts *o,
                        struct r3_source **served, struct r3_seeder **out)
{
    *out = NULL;
    *served = NULL;
    int rc = check_opts(o, false);
    if (rc < 0)
        return rc;
    if (!chunk)
        chunk = 64 * 1024;
    if (!r3_is_pow2(chunk) || chunk < 4096 || src->size % chunk)
        return r3_error(-EINVAL, "seeder: the source's size (%" PRIu64 " bytes) is not a multiple of the"
                        " chunk size (%u, a power of two >= 4096)", src->size, chunk);
    struct r3_seeder *s = calloc(1, sizeof *s);
    if (!s)
        return r3_error(-ENOMEM, "seeder: out of memory");
    if ((rc = r3m_gate_open(src, chunk, &s->gate)) < 0) {
        free(s);
        return rc;
    }
    s->chunk = chunk;
    s->view.inner = src;
    s->view.src.size = src->size;
    if ((rc = seed_start(s, o, out)) == 0)
        *served = (*out)->gate;
    return rc;
}

static int seed_start(struct r3_seeder *s, const struct r3_seed_opts *o, struct r3_seeder **out)
{
    int rc;
    s->o = *o;
    s->view.src.ops = &view_ops;
    s->view.src.align = 1;
    s->view.src.flags = R3_SRC_PARALLEL | R3_SRC_RDONLY;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->fmu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (o->tls_cert) {
        struct r3_tls_opts to = { .cert = o->tls_cert, .key = o->tls_key, .ca = o->tls_ca };
        if ((rc = r3_tls_server_ctx(&to, &s->tls)) < 0) {
            r3_error_prefix(rc, "seeder: ");
            r3_seed_close(s);
            return rc;
        }
    }
    if ((rc = r3_thread_create(&s->monitor, monitor_main, s)) < 0) {
        r3_seed_close(s);
        return r3_error(rc, "seeder: cannot start a thread");
    }
    s->monitor_started = true;
    struct r3_wire_server_opts wo = {
        .src = &s->view.src, .read_only = true, .listen = o->listen, .tls = s->tls,
        .insecure = o->insecure, .timeout_ms = o->timeout_ms,
        .log = o->log ? seed_log : NULL, .log_arg = s,
        .call = seed_call, .call_arg = s,
    };
    struct r3_wire_server *ws = NULL;
    if ((rc = r3_wire_server_new(&wo, &ws)) < 0) {
        char keep[512];
        snprintf(keep, sizeof keep, "%s", r3_last_error());
        r3_seed_close(s);
        return r3_error(rc, "seeder: %s", keep);
    }
    pthread_mutex_lock(&s->mu);
    s->ws = ws;
    pthread_mutex_unlock(&s->mu);
    *out = s;
    return 0;
}

const char *r3_seed_address(struct r3_seeder *s, char *buf, size_t n)
{
    return r3_wire_server_address(s->ws, buf, n);
}

int r3_seed_wait(struct r3_seeder *s, uint64_t timeout_ms)
{
    uint64_t deadline = timeout_ms ? r3_now_ns() + timeout_ms * 1000000u : 0;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    while (s->state != S_RELEASED) {
        uint64_t now = r3_now_ns();
        if (deadline && now >= deadline) {
            rc = r3_error(-ETIMEDOUT, "seeder: no RELEASE within %" PRIu64 " ms", timeout_ms);
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

bool r3_seed_finalized(struct r3_seeder *s)
{
    pthread_mutex_lock(&s->mu);
    bool f = s->state >= S_FINALIZED;
    pthread_mutex_unlock(&s->mu);
    return f;
}

void r3_seed_halt_writes(struct r3_seeder *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    bool held = s->gate && s->state == S_FINALIZED;
    if (held)
        s->halted = true;
    pthread_mutex_unlock(&s->mu);
    if (held)
        r3m_gate_set(s->gate, R3M_GATE_GONE);
}

void r3_seed_close(struct r3_seeder *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    struct r3_wire_server *ws = s->ws;
    s->ws = NULL;
    s->stop = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    r3_wire_server_free(ws);          /* requests being run finish first */
    if (s->monitor_started)
        pthread_join(s->monitor, NULL);
    if (s->state == S_TRACKING)
        track_stop(s);
    if (s->gate) {
        if (!s->halted)
            r3m_gate_set(s->gate, R3M_GATE_OPEN);
        r3_source_close(s->gate);
    }
    r3_tls_ctx_free(s->tls);
    free(s->order);
    free(s->dirty);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->fmu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
