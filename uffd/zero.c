/* SPDX-License-Identifier: BSD-3-Clause */
/* Zeros never move: a chunk the source says holds only zeros (a file hole,
 * a mem: granule never written, a missing key or object: the extent op) is
 * filled with UFFDIO_ZEROPAGE, with no read and no copy.
 *
 * The source is asked once per 64 chunks (one word of the bitmap), on the
 * first fill there: a local source (file, mem) is asked until the word is
 * known, a remote one once (one round trip per 64 chunks at most; what the
 * answer does not cover counts as data). A chunk written back (or made
 * remote again by invalidate) is "dead": its source bytes may be data now,
 * and it is never taken for zeros again (set before the write, so a query
 * racing the write cannot bring the zero bit back to life).
 *
 * Tracking: zero pages carry no uffd-wp bit, so PAGEMAP_SCAN would report
 * them written; the region's scanner skips PAGE_IS_PFNZERO pages (they read
 * as zeros, like the source). A write to one replaces it by a new page
 * (copy on write) with no wp bit: written, and found by the next scan. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include "internal.h"
#include "uffd/uffd.h"

int r3u_zero_init(struct r3u_region *r)
{
    uint64_t cwords = (r->nchunks + 63) / 64;
    r->zchunk = calloc(cwords, 8);
    r->zdead = calloc(cwords, 8);
    r->zasked = calloc((cwords + 63) / 64, 8);
    if (!r->zchunk || !r->zdead || !r->zasked)
        return r3_error(-ENOMEM, "uffd: out of memory for the zero bitmaps");
    return 0;
}

void r3u_zero_free(struct r3u_region *r)
{
    free(r->zchunk);
    free(r->zdead);
    free(r->zasked);
}

/* Ask the source about the chunks of bitmap word w. */
static void ask(struct r3u_region *r, uint64_t w)
{
    uint64_t c0 = w << 6, c1 = c0 + 64 < r->nchunks ? c0 + 64 : r->nchunks;
    uint64_t off = c0 << r->chunk_shift, end = c1 << r->chunk_shift;
    if (end > r->remote_size)
        end = r->remote_size;
    uint64_t bits = 0, zstart = UINT64_MAX;
    unsigned budget = r->zero_cheap ? 256 : 1;
    while (off < end && budget--) {
        uint64_t run = 0;
        int rc = r3_source_extent(r->inner, off, end - off, &run);
        if (rc < 0) {
            r3_error_clear();         /* not knowing is "data", not an error */
            break;
        }
        if (rc != R3_EXTENT_ZERO) {
            zstart = UINT64_MAX;
            off += run;
            continue;
        }
        if (zstart == UINT64_MAX)
            zstart = off;
        off += run;
        /* chunks wholly inside [zstart, off): zeros (a last chunk past the
         * source's end is padded with zeros anyway) */
        for (uint64_t c = (zstart + r->r.chunk - 1) >> r->chunk_shift; c < c1; c++) {
            uint64_t ce = (c + 1) << r->chunk_shift;
            if (ce > r->remote_size)
                ce = r->remote_size;
            if (ce > off)
                break;
            bits |= UINT64_C(1) << (c - c0);
        }
    }
    if (bits)
        atomic_fetch_or(&r->zchunk[w], bits);
    r3u_bit_set(r->zasked, w);
}

bool r3u_zero_chunk(struct r3u_region *r, uint64_t c)
{
    if (!r->zero_fill || c >= r->nchunks || (c << r->chunk_shift) >= r->remote_size)
        return false;
    if (!r3u_bit(r->zasked, c >> 6))
        ask(r, c >> 6);
    return r3u_bit(r->zchunk, c) && !r3u_bit(r->zdead, c);
}

void r3u_zero_dead(struct r3u_region *r, uint64_t c0, uint64_t c1)
{
    if (!r->zero_fill)
        return;
    for (uint64_t c = c0; c <= c1 && c < r->nchunks; c++)
        if (!r3u_bit(r->zdead, c))
            r3u_bit_set(r->zdead, c);
}

static _Thread_local struct {
    const void *buf;
    uint64_t off;
} tl_note;

void r3u_zero_note(const void *buf, uint64_t off)
{
    tl_note.buf = buf;
    tl_note.off = off;
}

bool r3u_zero_taken(const void *buf, uint64_t off)
{
    bool ok = tl_note.buf && tl_note.buf == buf && tl_note.off == off;
    tl_note.buf = NULL;
    return ok;
}

int r3u_install_zeros(struct r3u_region *r, uint64_t off, size_t len)
{
    size_t done = 0;
    unsigned again = 0;
    while (done < len) {
        struct uffdio_zeropage z = {
            .range = { .start = (uintptr_t)r->r.base + off + done, .len = len - done },
        };
        r3u_gate_enter(r);
        int ok = ioctl(r->uffd, UFFDIO_ZEROPAGE, &z);
        int e = errno;
        r3u_gate_leave(r);
        if (ok == 0)
            return 0;
        if (z.zeropage > 0) {
            done += (size_t)z.zeropage;
            continue;
        }
        if (e == EEXIST) {
            /* present already (another fill, a stale fault): wake its waiters */
            struct uffdio_range w = { .start = z.range.start, .len = r->pagesz };
            ioctl(r->uffd, UFFDIO_WAKE, &w);
            done += r->pagesz;
            continue;
        }
        if (e == EAGAIN) {
            /* the layout is changing: as in view.c's copy_range */
            int rc = r3u_fill_backoff(r, off + done, &again);
            if (rc < 0)
                return rc;
            continue;
        }
        if (e == ENOENT || e == ESRCH) {
            done += r->pagesz;
            continue;
        }
        return r3_error(-e, "uffd: UFFDIO_ZEROPAGE at offset %llu failed: %s",
                        (unsigned long long)(off + done), strerror(e));
    }
    return 0;
}
