/* SPDX-License-Identifier: BSD-3-Clause */
/* How the advertiser and the receiver reach the hub: dial, TLS, hello, and
 * on failure retry with src/net's backoff (exponential with jitter, so a
 * hub restart does not meet every client at the same instant). A refusal is
 * final: the hub rejecting our certificate (a TLS alert) or our hello, or
 * our CA rejecting the hub's certificate, does not get better by retrying.
 * A client that could not connect for give_up_ms gives up with a sentence. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include "internal.h"
#include "filesync/filesync.h"

#define DIAL_TIMEOUT_MS  5000
#define HELLO_TIMEOUT_MS 10000
#define BACKOFF_BASE_MS  100u
#define BACKOFF_CAP_MS   5000u
/* A connection that lasted less than this does not reset the backoff: a hub
 * that accepts and drops at once must not cause a reconnect storm. */
#define STABLE_NS        (10ull * 1000000000ull)

int fs_client_ctx(const struct r3_tls_opts *tls, struct r3_tls_ctx **out)
{
    if (!tls->cert || !tls->key || !tls->ca)
        return r3_error(-EINVAL, "needs a client certificate, its key and a CA (mTLS only)");
    return r3_tls_client_ctx(tls, out);
}

static void begin(struct fs_dial *d)
{
    r3_net_backoff_init(&d->b, BACKOFF_BASE_MS, BACKOFF_CAP_MS, d->give_up_ms);
    d->b.start = r3_now_ns();        /* the give-up clock runs from here, not the first failure */
    d->attempts = 0;
    d->started = true;
}

void fs_dial_lost(struct fs_dial *d)
{
    if (!d->up_since || r3_now_ns() - d->up_since >= STABLE_NS)
        begin(d);
    else
        d->pause = true;             /* back off before the next attempt */
    d->up_since = 0;
}

/* Wait the backoff's next delay (0) or give up (-ETIMEDOUT). */
static int pause_(struct fs_dial *d)
{
    int wait = r3_net_backoff_next(&d->b);
    if (wait < 0)
        return -ETIMEDOUT;
    for (uint64_t t0 = r3_now_ns(); !*d->stop && r3_now_ns() - t0 < (uint64_t)wait * 1000000u;)
        usleep(20000);
    return 0;
}

/* Milliseconds before giving up (INT32_MAX: never). */
static int ms_left(const struct fs_dial *d)
{
    if (!d->give_up_ms)
        return INT32_MAX;
    uint64_t spent = (r3_now_ns() - d->b.start) / 1000000u;
    return spent >= d->give_up_ms ? 0 : (int)(d->give_up_ms - spent);
}

static int give_up(struct fs_dial *d)
{
    return r3_error(-ETIMEDOUT, "could not connect to the hub %s for %.1f s (%u attempts); "
                    "giving up. Last error: %s", d->hub, (double)(r3_now_ns() - d->b.start) / 1e9,
                    d->attempts, d->why[0] ? d->why : "none");
}

int fs_dial(struct fs_dial *d, struct fs_conn **out)
{
    *out = NULL;
    if (!d->started)
        begin(d);
    for (;;) {
        if (d->pause) {
            d->pause = false;
            if (pause_(d) < 0)
                return give_up(d);
        }
        if (*d->stop)
            return r3_error(-EINTR, "stopped");
        int left = ms_left(d);
        if (left == 0)
            return give_up(d);
        struct fs_conn *c = NULL;
        int rc = fs_conn_connect(d->ctx, d->hub, left < DIAL_TIMEOUT_MS ? left : DIAL_TIMEOUT_MS, &c);
        if (rc == 0) {
            rc = fs_conn_hello(c, d->role, HELLO_TIMEOUT_MS);
            if (rc < 0) {
                r3_error_prefix(rc, "%s: ", d->hub);
                fs_conn_free(c);
            }
        }
        d->attempts++;
        d->total_attempts++;
        if (rc == 0) {
            d->warned = false;
            d->up_since = r3_now_ns();   /* fs_dial_lost decides if it lasted */
            *out = c;
            return 0;
        }
        if (rc == -EACCES)
            return rc;                   /* refused: final */
        snprintf(d->why, sizeof d->why, "%s", r3_last_error());
        if (!d->warned)
            fs_say(d->rep, FS_SAY_DIAG, "%s (retrying)", d->why);
        d->warned = true;
        d->pause = true;
    }
}
