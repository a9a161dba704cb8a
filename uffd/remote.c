/* SPDX-License-Identifier: BSD-3-Clause */
/* The source as the uffd region's pipeline sees it: every call goes to the
 * source itself; a write that succeeds marks its chunks written back (for
 * after_sync, once per sync) and no longer unsynced (for the message of a
 * sync that timed out). Past the deadline of a sync that ran out of time,
 * writes fail at once instead of each waiting for a dead server, so the
 * abandoned sync ends soon after its caller was told. */
#include <errno.h>
#include <stdlib.h>
#include "internal.h"
#include "uffd/uffd.h"

static struct r3u_region *of(struct r3_source *s)
{
    return (struct r3u_region *)((char *)s - offsetof(struct r3u_region, remote));
}

static bool late(struct r3u_region *r)
{
    uint64_t d = atomic_load_explicit(&r->sync_deadline, memory_order_relaxed);
    return d && r3_now_ns() > d;
}

static int remote_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    return r3_source_read(of(s)->inner, buf, len, off);
}

static int remote_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct r3u_region *r = of(s);
    if (late(r))
        return r3_error(-ETIMEDOUT, "uffd: the sync ran out of time (%llu ms)",
                        (unsigned long long)r->sync_timeout_ms);
    if (!len)
        return r3_source_write(r->inner, buf, len, off);
    /* no fork is made while this runs (the gate) */
    r3u_gate_enter(r);
    int rc = r3u_write_back(r, buf, len, off);
    r3u_gate_leave(r);
    return rc;
}

int r3u_write_back(struct r3u_region *r, const void *buf, size_t len, uint64_t off)
{
    /* Forked children that still need these chunks get them first. */
    int rc = r3u_fork_preserve(r, off >> r->chunk_shift, (off + len - 1) >> r->chunk_shift);
    if (rc == 0)
        rc = r3_source_write(r->inner, buf, len, off);
    if (rc < 0)
        return rc;
    for (uint64_t c = off >> r->chunk_shift; c <= (off + len - 1) >> r->chunk_shift && c < r->nchunks; c++) {
        r3u_bit_clear(r->unsynced, c);
        r3u_bit_set(r->written, c);
    }
    return 0;
}

static int remote_flush(struct r3_source *s)
{
    struct r3u_region *r = of(s);
    if (late(r))
        return r3_error(-ETIMEDOUT, "uffd: the sync ran out of time (%llu ms)",
                        (unsigned long long)r->sync_timeout_ms);
    return r3_source_flush(r->inner);
}

static void remote_close(struct r3_source *s)
{
    struct r3u_region *r = of(s);
    r3_source_close(r->inner);
    r->inner = NULL;
}

static const struct r3_source_ops remote_ops = {
    .scheme = "uffd-remote", .read = remote_read, .write = remote_write,
    .flush = remote_flush, .close = remote_close,
};

void r3u_remote_init(struct r3u_region *r, struct r3_source *src)
{
    r->inner = src;
    r->remote.ops = &remote_ops;
    r->remote.size = src->size;
    r->remote.align = src->align;
    r->remote.flags = src->flags;
}

void r3u_mark(struct r3u_region *r, struct r3_source *push, uint64_t c)
{
    if (atomic_load_explicit(&r->tracking, memory_order_acquire))
        r3u_bit_set(r->tracked, c);
    r3u_bit_set(r->unsynced, c);
    r3_push_mark(push, c);
}

uint64_t r3u_unsynced(struct r3u_region *r, uint64_t *bytes)
{
    uint64_t n = 0;
    for (uint64_t w = 0; w < (r->nchunks + 63) / 64; w++)
        n += (uint64_t)__builtin_popcountll(atomic_load(&r->unsynced[w]) | atomic_load(&r->pdirty[w]));
    *bytes = n << r->chunk_shift;
    return n;
}

uint64_t *r3u_take_written(struct r3u_region *r, size_t *n)
{
    size_t cap = 0, k = 0;
    uint64_t *list = NULL;
    for (uint64_t w = 0; w < (r->nchunks + 63) / 64; w++) {
        uint64_t bits = atomic_exchange(&r->written[w], 0);
        while (bits) {
            if (k == cap) {
                cap = cap ? cap * 2 : 64;
                uint64_t *nl = realloc(list, cap * sizeof *nl);
                if (!nl) {
                    atomic_fetch_or(&r->written[w], bits);   /* told next time */
                    *n = k;
                    return list;
                }
                list = nl;
            }
            unsigned b = (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            list[k++] = w * 64 + b;
        }
    }
    *n = k;
    return list;
}
