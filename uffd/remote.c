/* SPDX-License-Identifier: BSD-3-Clause */
/* The source as the uffd region's pipeline sees it: every call goes to the
 * source itself; a write that succeeds marks its chunks written back (for
 * after_sync, once per sync) and no longer unsynced (for the message of a
 * sync that timed out). Past the deadline of a sync that ran out of time,
 * writes fail at once instead of each waiting for a dead server, so the
 * abandoned sync ends soon after its caller was told. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
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
    struct r3u_region *r = of(s);
    uint64_t c = off >> r->chunk_shift;
    if ((off & (r->r.chunk - 1)) == 0 && r->zero_fill && c < r->nchunks &&
        len == (r->remote_size - off < r->r.chunk ? r->remote_size - off : r->r.chunk) &&
        r3u_zero_chunk(r, c)) {
        /* A chunk of zeros: not read. The buffer is cleared for any other
         * reader; the region's fill (the next call on this thread) takes
         * the note and maps zero pages instead of copying it. */
        memset(buf, 0, len);
        r3u_zero_note(buf, off);
        return 0;
    }
    r3u_zero_note(NULL, 0);
    return r3_source_read(r->inner, buf, len, off);
}

static void done_chunks(struct r3u_region *r, uint64_t off, size_t len, bool moved)
{
    for (uint64_t c = off >> r->chunk_shift; c <= (off + len - 1) >> r->chunk_shift && c < r->nchunks; c++) {
        r3u_bit_clear(r->unsynced, c);
        if (moved)
            r3u_bit_set(r->written, c);
    }
}

/* The push stage writes whole chunks; only the page runs a collect found
 * written go out (the rest of the chunk is what the source holds already).
 * Their bits are taken first, then their bytes read: buf, which the push
 * worker read before, unless a collect outside push rounds may have set
 * bits since (recheck: then from the region itself, after the take). On
 * failure the bits go back for the next round. */
static int write_pages(struct r3u_region *r, const void *buf, size_t len, uint64_t off)
{
    uint64_t p0 = off >> r->page_shift, p1 = (off + len + r->pagesz - 1) >> r->page_shift;
    uint64_t w0 = p0 >> 6, w1 = (p1 - 1) >> 6, nw = w1 - w0 + 1;
    uint64_t small[8], *took = nw <= 8 ? small : malloc(nw * 8);
    if (!took)
        return r3_error(-ENOMEM, "uffd: out of memory");
    bool any = false;
    for (uint64_t w = w0; w <= w1; w++) {
        uint64_t lo = w == w0 ? (p0 & 63) : 0, hi = w == w1 ? ((p1 - 1) & 63) + 1 : 64;
        uint64_t mask = (hi - lo == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << (hi - lo)) - 1)) << lo;
        took[w - w0] = atomic_load_explicit(&r->pw[w], memory_order_acquire) & mask
                           ? atomic_fetch_and(&r->pw[w], ~mask) & mask : 0;
        any |= took[w - w0] != 0;
    }
    int rc = 0;
    uint8_t *tmp = NULL;
    bool recheck = atomic_load(&r->recheck), moved = false;
    if (any)
        rc = r3u_fork_preserve(r, off >> r->chunk_shift, (off + len - 1) >> r->chunk_shift);
    if (any && rc == 0)
        r3u_zero_dead(r, off >> r->chunk_shift, (off + len - 1) >> r->chunk_shift);
    for (uint64_t pg = p0; any && rc == 0 && pg < p1;) {
        if (!(took[(pg >> 6) - w0] >> (pg & 63) & 1)) {
            pg++;
            continue;
        }
        uint64_t e = pg;
        while (e < p1 && (took[(e >> 6) - w0] >> (e & 63) & 1))
            e++;
        uint64_t o = pg << r->page_shift, oe = e << r->page_shift;
        if (oe > off + len)
            oe = off + len;
        size_t n = (size_t)(oe - o);
        const uint8_t *src = (const uint8_t *)buf + (o - off);
        if (recheck) {
            if (!tmp && !(tmp = malloc(len)))
                rc = r3_error(-ENOMEM, "uffd: out of memory");
            if (rc == 0)
                rc = r3_source_read(&r->view, tmp, n, o);
            src = tmp;
        }
        if (rc == 0)
            rc = r3_source_write(r->inner, src, n, o);
        if (rc == 0) {
            moved = true;
            atomic_fetch_add_explicit(&r->bytes_back, n, memory_order_relaxed);
        }
        pg = e;
    }
    free(tmp);
    if (rc < 0) {
        for (uint64_t w = w0; w <= w1; w++)
            if (took[w - w0])
                atomic_fetch_or(&r->pw[w], took[w - w0]);
    } else {
        done_chunks(r, off, len, moved);
    }
    if (took != small)
        free(took);
    return rc;
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
    uint64_t c0 = off >> r->chunk_shift, c1 = (off + len - 1) >> r->chunk_shift;
    r3u_wb_lock(r, c0, c1);       /* an eviction of these chunks waits (evict.c) */
    int rc = r->pw ? write_pages(r, buf, len, off) : r3u_write_back(r, buf, len, off);
    r3u_wb_unlock(r, c0, c1);
    r3u_gate_leave(r);
    return rc;
}

int r3u_write_back(struct r3u_region *r, const void *buf, size_t len, uint64_t off)
{
    /* Forked children that still need these chunks get them first. */
    int rc = r3u_fork_preserve(r, off >> r->chunk_shift, (off + len - 1) >> r->chunk_shift);
    if (rc == 0)
        r3u_zero_dead(r, off >> r->chunk_shift, (off + len - 1) >> r->chunk_shift);
    if (rc == 0)
        rc = r3_source_write(r->inner, buf, len, off);
    if (rc < 0)
        return rc;
    atomic_fetch_add_explicit(&r->bytes_back, len, memory_order_relaxed);
    if (r->pw) {
        /* all of it is out: nothing of these pages is owed any more */
        for (uint64_t pg = off >> r->page_shift; pg < (off + len + r->pagesz - 1) >> r->page_shift; pg++)
            if (r3u_bit(r->pw, pg))
                r3u_bit_clear(r->pw, pg);
    }
    done_chunks(r, off, len, true);
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

void r3u_mark_pages(struct r3u_region *r, struct r3_source *push, uint64_t c, uint64_t pg0,
                    uint64_t pg1)
{
    /* the pages first: a push round that takes the chunk finds them */
    for (uint64_t pg = pg0; r->pw && pg < pg1; pg++)
        if (!r3u_bit(r->pw, pg))
            r3u_bit_set(r->pw, pg);
    if (atomic_load_explicit(&r->tracking, memory_order_acquire))
        r3u_bit_set(r->tracked, c);
    r3u_bit_set(r->unsynced, c);
    r3_push_mark(push, c);
}

void r3u_mark(struct r3u_region *r, struct r3_source *push, uint64_t c)
{
    r3u_mark_pages(r, push, c, (c << r->chunk_shift) >> r->page_shift,
                   ((c + 1) << r->chunk_shift) >> r->page_shift);
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
