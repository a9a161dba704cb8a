/* SPDX-License-Identifier: BSD-3-Clause */
/* stats stage: counts ops, bytes and errors, and keeps a log2 histogram of
 * latencies, without locks (atomic counters). */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "internal.h"

struct stats_stage {
    struct r3_source src;
    _Atomic uint64_t reads, writes, flushes, errors, bytes_read, bytes_written;
    _Atomic uint64_t hist[R3_STATS_BUCKETS];
};

static const struct r3_source_ops stats_ops;

static void record(struct stats_stage *st, uint64_t t0, int rc)
{
    uint64_t ns = r3_now_ns() - t0;
    int b = ns ? 63 - __builtin_clzll(ns) : 0;
    if (b >= R3_STATS_BUCKETS)
        b = R3_STATS_BUCKETS - 1;
    atomic_fetch_add_explicit(&st->hist[b], 1, memory_order_relaxed);
    if (rc < 0)
        atomic_fetch_add_explicit(&st->errors, 1, memory_order_relaxed);
}

static int stats_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct stats_stage *st = (struct stats_stage *)s;
    uint64_t t0 = r3_now_ns();
    int rc = r3_source_read(st->src.next, buf, len, off);
    atomic_fetch_add_explicit(&st->reads, 1, memory_order_relaxed);
    if (rc == 0)
        atomic_fetch_add_explicit(&st->bytes_read, len, memory_order_relaxed);
    record(st, t0, rc);
    return rc;
}

static int stats_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct stats_stage *st = (struct stats_stage *)s;
    uint64_t t0 = r3_now_ns();
    int rc = r3_source_write(st->src.next, buf, len, off);
    atomic_fetch_add_explicit(&st->writes, 1, memory_order_relaxed);
    if (rc == 0)
        atomic_fetch_add_explicit(&st->bytes_written, len, memory_order_relaxed);
    record(st, t0, rc);
    return rc;
}

static int stats_flush(struct r3_source *s)
{
    struct stats_stage *st = (struct stats_stage *)s;
    uint64_t t0 = r3_now_ns();
    int rc = r3_source_flush(st->src.next);
    atomic_fetch_add_explicit(&st->flushes, 1, memory_order_relaxed);
    record(st, t0, rc);
    return rc;
}

static const struct r3_source_ops stats_ops = {
    .scheme = "stats", .read = stats_read, .write = stats_write, .flush = stats_flush,
};                                     /* close: the framework's (close inner, free) */

int r3_stats_get(struct r3_source *s, struct r3_stats *out)
{
    *out = (struct r3_stats){ 0 };
    if (!s || s->ops != &stats_ops)
        return r3_error(-EINVAL, "stats: %s is not a stats stage", s ? s->ops->scheme : "NULL");
    struct stats_stage *st = (struct stats_stage *)s;
    out->reads = atomic_load(&st->reads);
    out->writes = atomic_load(&st->writes);
    out->flushes = atomic_load(&st->flushes);
    out->errors = atomic_load(&st->errors);
    out->bytes_read = atomic_load(&st->bytes_read);
    out->bytes_written = atomic_load(&st->bytes_written);
    for (int i = 0; i < R3_STATS_BUCKETS; i++)
        out->hist[i] = atomic_load(&st->hist[i]);
    return 0;
}

/* The upper bound of the bucket holding the pct-th percentile (pct in 0..100). */
uint64_t r3_stats_percentile_ns(const struct r3_stats *s, double pct)
{
    uint64_t total = 0, seen = 0;
    for (int i = 0; i < R3_STATS_BUCKETS; i++)
        total += s->hist[i];
    if (total == 0)
        return 0;
    uint64_t want = (uint64_t)(pct / 100.0 * (double)total + 0.5);
    if (want == 0)
        want = 1;
    for (int i = 0; i < R3_STATS_BUCKETS; i++) {
        seen += s->hist[i];
        if (seen >= want)
            return UINT64_C(2) << i;
    }
    return UINT64_MAX;
}

int r3_stage_stats_open(struct r3_source *inner, struct r3_source **out)
{
    struct stats_stage *st = calloc(1, sizeof *st);
    if (!st)
        return r3_error(-ENOMEM, "stats: out of memory");
    r3_stage_init(&st->src, &stats_ops, inner);
    *out = &st->src;
    return 0;
}
