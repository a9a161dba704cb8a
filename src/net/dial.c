/* SPDX-License-Identifier: BSD-3-Clause */
/* Clients: connect within a timeout, and the one reconnect backoff
 * (exponential, jittered, capped, with a total after which a client gives
 * up) so that no client reconnects in a tight loop. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "internal.h"
#include "net/net.h"

static int dial_unix(const struct r3_net_addr *a, int *out)
{
    struct sockaddr_un su = { .sun_family = AF_UNIX };
    snprintf(su.sun_path, sizeof su.sun_path, "%s", a->path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&su, sizeof su) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return r3_error(-e, "unix:%s: %s", a->path, e == ENOENT ? "no such socket" : strerror(e));
    }
    *out = fd;
    return 0;
}

int r3_net_dial(const struct r3_net_addr *a, int timeout_ms, int *out)
{
    char ab[300];
    *out = -1;
    if (a->kind == R3_NET_UNIX)
        return dial_unix(a, out);
    uint64_t deadline = r3_net_deadline(timeout_ms);
    struct addrinfo *ai;
    int rc = r3_net_addr_resolve(a, false, &ai);
    if (rc < 0)
        return rc;
    rc = -ECONNREFUSED;
    for (struct addrinfo *p = ai; p; p = p->ai_next) {
        int fd = socket(p->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        if (connect(fd, p->ai_addr, p->ai_addrlen) < 0 && errno != EINPROGRESS) {
            rc = -errno;
            close(fd);
            continue;
        }
        struct pollfd pf = { .fd = fd, .events = POLLOUT };
        int n;
        do {
            n = poll(&pf, 1, r3_net_remaining_ms(deadline));
        } while (n < 0 && errno == EINTR);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (n <= 0) {
            rc = n == 0 ? -ETIMEDOUT : -errno;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
            rc = -(soerr ? soerr : errno);
        } else {
            freeaddrinfo(ai);
            int fl = fcntl(fd, F_GETFL);
            fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
            *out = fd;
            return 0;
        }
        close(fd);
        if (rc == -ETIMEDOUT)
            break;
    }
    freeaddrinfo(ai);
    r3_net_addr_format(a, ab, sizeof ab);
    if (rc == -ETIMEDOUT)
        return r3_error(rc, "connect to %s timed out after %d ms", ab, timeout_ms);
    return r3_error(rc, "%s: %s", ab, rc == -ECONNREFUSED ? "connection refused" : strerror(-rc));
}

/* ---- backoff */

static uint64_t next_rand(struct r3_net_backoff *b)
{
    /* xorshift64*: jitter only, not security */
    uint64_t x = b->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    b->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

void r3_net_backoff_init(struct r3_net_backoff *b, unsigned base_ms, unsigned cap_ms, uint64_t give_up_ms)
{
    memset(b, 0, sizeof *b);
    b->base_ms = base_ms ? base_ms : 1;
    b->cap_ms = cap_ms < b->base_ms ? b->base_ms : cap_ms;
    b->give_up_ms = give_up_ms;
    b->rng = (r3_now_ns() ^ (uintptr_t)b) | 1;
}

int r3_net_backoff_next(struct r3_net_backoff *b)
{
    uint64_t now = r3_now_ns();
    if (!b->start)
        b->start = now;
    uint64_t spent = (now - b->start) / 1000000u;
    if (b->give_up_ms && spent >= b->give_up_ms)
        return r3_error(-ETIMEDOUT, "gave up after %" PRIu64 " ms of failed attempts", spent);
    uint64_t d = b->base_ms;
    for (unsigned i = 0; i < b->attempt && d < b->cap_ms; i++)
        d *= 2;
    if (d > b->cap_ms)
        d = b->cap_ms;
    if (b->attempt < 64)
        b->attempt++;
    /* "equal jitter": half fixed, half random, so no two clients sync up and no delay is 0 */
    uint64_t half = d / 2;
    d = half + (d - half ? next_rand(b) % (d - half + 1) : 0);
    if (d == 0)
        d = 1;
    if (b->give_up_ms && spent + d > b->give_up_ms)
        d = b->give_up_ms - spent;
    return (int)d;
}

void r3_net_backoff_reset(struct r3_net_backoff *b)
{
    b->start = 0;
    b->attempt = 0;
}
