/* How the advertiser and the receiver reach the hub: dial, TLS, hello, and
 * on failure retry with exponential backoff and jitter (so a hub restart
 * does not meet every client at the same instant). A refusal is final: the
 * hub rejecting our certificate (a TLS alert) or our hello, or our CA
 * rejecting the hub's certificate, does not get better by retrying. A
 * client that could not connect for give_up_ms gives up with a sentence. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include "internal.h"
#include "filesync/filesync.h"

#define DIAL_TIMEOUT_MS  5000u
#define HELLO_TIMEOUT_MS 10000u
#define BACKOFF_BASE_MS  100u
#define BACKOFF_CAP_MS   5000u

unsigned fs_backoff_ms(unsigned attempt)
{
    unsigned d = BACKOFF_CAP_MS;
    if (attempt < 16 && (BACKOFF_BASE_MS << attempt) < BACKOFF_CAP_MS)
        d = BACKOFF_BASE_MS << attempt;
    unsigned r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r)
        r = (unsigned)r3_now_ns();
    return d / 2 + r % (d / 2 + 1);          /* "equal jitter": [d/2, d] */
}

void fs_dial_lost(struct fs_dial *d)
{
    d->down_since = r3_now_ns();
    d->attempts = 0;
}

static unsigned ms_left(const struct fs_dial *d, uint64_t now)
{
    if (!d->give_up_ms)
        return UINT32_MAX;
    uint64_t end = d->down_since + (uint64_t)d->give_up_ms * 1000000u;
    return now >= end ? 0 : (unsigned)((end - now) / 1000000u) + 1;
}

static int give_up(struct fs_dial *d, uint64_t now)
{
    return r3_error(-ETIMEDOUT, "could not connect to the hub %s for %.1f s (%u attempts); "
                    "giving up. Last error: %s", d->hub, (double)(now - d->down_since) / 1e9,
                    d->attempts, d->why[0] ? d->why : "none");
}

int fs_dial(struct fs_dial *d, struct fs_conn **out)
{
    *out = NULL;
    if (!d->down_since)
        d->down_since = r3_now_ns();
    for (;;) {
        if (*d->stop)
            return r3_error(-EINTR, "stopped");
        unsigned left = ms_left(d, r3_now_ns());
        if (left == 0)
            return give_up(d, r3_now_ns());
        unsigned tmo = left < DIAL_TIMEOUT_MS ? left : DIAL_TIMEOUT_MS;
        struct fs_conn *c = NULL;
        int rc = fs_conn_connect(d->ctx, d->hub, (int)tmo, &c);
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
            d->down_since = 0;
            d->attempts = 0;
            d->warned = false;
            *out = c;
            return 0;
        }
        if (rc == -EACCES)
            return rc;                         /* refused: final */
        snprintf(d->why, sizeof d->why, "%s", r3_last_error());
        if (!d->warned)
            fs_say(d->rep, FS_SAY_DIAG, "%s (retrying)", d->why);
        d->warned = true;
        uint64_t t0 = r3_now_ns(), wait = (uint64_t)fs_backoff_ms(d->attempts - 1) * 1000000u;
        while (!*d->stop && r3_now_ns() - t0 < wait && ms_left(d, r3_now_ns()) > 0)
            usleep(20000);
    }
}
