/* SPDX-License-Identifier: BSD-3-Clause */
/* delay stage: every request sleeps a fixed time before it reaches the inner
 * source. Each caller sleeps on its own, so N concurrent requests take one
 * delay, not N: a round trip, the way the study injected RTT. */
#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include "internal.h"

struct delay_stage {
    struct r3_source src;
    struct timespec ts;
};

static void wait_rtt(struct delay_stage *d)
{
    struct timespec left = d->ts;
    while (nanosleep(&left, &left) < 0 && errno == EINTR)
        ;
}

static int delay_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct delay_stage *d = (struct delay_stage *)s;
    wait_rtt(d);
    return r3_source_read(d->src.next, buf, len, off);
}

static int delay_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct delay_stage *d = (struct delay_stage *)s;
    wait_rtt(d);
    return r3_source_write(d->src.next, buf, len, off);
}

static int delay_flush(struct r3_source *s)
{
    struct delay_stage *d = (struct delay_stage *)s;
    wait_rtt(d);
    return r3_source_flush(d->src.next);
}

static const struct r3_source_ops delay_ops = {
    .scheme = "delay", .read = delay_read, .write = delay_write, .flush = delay_flush,
};                                     /* close: the framework's (close inner, free) */

int r3_stage_delay_open(struct r3_source *inner, uint64_t delay_us, struct r3_source **out)
{
    if (delay_us > 60u * 1000000u)
        return r3_error(-EINVAL, "delay: %llu us is more than a minute", (unsigned long long)delay_us);
    struct delay_stage *d = calloc(1, sizeof *d);
    if (!d)
        return r3_error(-ENOMEM, "delay: out of memory");
    d->ts.tv_sec = (time_t)(delay_us / 1000000u);
    d->ts.tv_nsec = (long)(delay_us % 1000000u) * 1000;
    r3_stage_init(&d->src, &delay_ops, inner);
    *out = &d->src;
    return 0;
}
