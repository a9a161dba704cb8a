/* SPDX-License-Identifier: BSD-3-Clause */
/* mem: an anonymous, lazily populated mapping. mem:?size=1G
 * A bitmap of granules ever written answers extent queries: a granule never
 * written reads as zeros (one bit per 4 KiB or more, at most 2^20 bits).
 * Calls on overlapping bytes from several threads (an NBD client's writes in
 * flight to one block, a reader beside a writer) are ordered by striped
 * reader-writer locks: without them the two memcpy()s are a data race, which
 * C leaves undefined and ThreadSanitizer reports (nbd_badinput's fence case). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "internal.h"

#define MEM_STRIPES      64
#define MEM_STRIPE_SHIFT 16

struct mem_source {
    struct r3_source src;
    char *base;
    unsigned gshift;              /* granule: 1 << gshift bytes */
    uint64_t ngran;
    _Atomic uint64_t *written;    /* per granule: ever written */
    pthread_rwlock_t stripe[MEM_STRIPES];   /* stripe i: the 64 KiB blocks b with b % MEM_STRIPES == i */
};

/* The stripes that [off, off+len) touches, taken in index order (so two
 * calls never wait on each other crosswise); len > 0. */
static void stripes(struct mem_source *m, uint64_t off, size_t len, bool wr, bool lock)
{
    uint64_t b0 = off >> MEM_STRIPE_SHIFT, b1 = (off + len - 1) >> MEM_STRIPE_SHIFT;
    unsigned lo[2], hi[2], runs = 1;
    if (b1 - b0 + 1 >= MEM_STRIPES) {
        lo[0] = 0, hi[0] = MEM_STRIPES - 1;
    } else if (b0 % MEM_STRIPES <= b1 % MEM_STRIPES) {
        lo[0] = (unsigned)(b0 % MEM_STRIPES), hi[0] = (unsigned)(b1 % MEM_STRIPES);
    } else {                                /* wraps: [0, b1] then [b0, end] */
        lo[0] = 0, hi[0] = (unsigned)(b1 % MEM_STRIPES);
        lo[1] = (unsigned)(b0 % MEM_STRIPES), hi[1] = MEM_STRIPES - 1, runs = 2;
    }
    for (unsigned r = 0; r < runs; r++)
        for (unsigned i = lo[r]; i <= hi[r]; i++) {
            if (!lock)
                pthread_rwlock_unlock(&m->stripe[i]);
            else if (wr)
                pthread_rwlock_wrlock(&m->stripe[i]);
            else
                pthread_rwlock_rdlock(&m->stripe[i]);
        }
}

static int mem_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct mem_source *m = (struct mem_source *)s;
    if (len == 0)
        return 0;
    stripes(m, off, len, false, true);
    memcpy(buf, m->base + off, len);
    stripes(m, off, len, false, false);
    return 0;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23          /* Linux 5.14 */
#endif

/* Pages of [off, off+len) made present at once, before a first write
 * copies into them. Taking them one fault at a time cost 2.9 ms per MiB in
 * this VM and one madvise 0.2 ms: filling a mem: source (bench/sources)
 * went from 330 to 660 MB/s. An error (an old kernel, no memory now)
 * leaves them to the faults. */
static void populate(struct mem_source *m, uint64_t off, size_t len)
{
    uint64_t page = 4096, a = off & ~(page - 1), b = (off + len + page - 1) & ~(page - 1);
    if (b > m->src.size)
        b = m->src.size;
    if (b > a)
        (void)madvise(m->base + a, b - a, MADV_POPULATE_WRITE);
}

static int mem_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct mem_source *m = (struct mem_source *)s;
    bool fresh = false;                 /* a granule never written: its pages are not there yet */
    if (len) {
        /* marked before the bytes land: an extent query never says ZERO
         * over a write that has begun */
        uint64_t g0 = off >> m->gshift, g1 = (off + len - 1) >> m->gshift;
        for (uint64_t g = g0; g <= g1;) {
            uint64_t w = g >> 6, b = g & 63, n = 64 - b;
            if (n > g1 - g + 1)
                n = g1 - g + 1;
            uint64_t mask = (n == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << n) - 1)) << b;
            if ((atomic_load_explicit(&m->written[w], memory_order_relaxed) & mask) != mask) {
                atomic_fetch_or_explicit(&m->written[w], mask, memory_order_seq_cst);
                fresh = true;
            }
            g += n;
        }
    }
    if (len == 0)
        return 0;
    if (fresh && len >= 2 * 4096)         /* one page: one fault, as cheap */
        populate(m, off, len);
    stripes(m, off, len, true, true);
    memcpy(m->base + off, buf, len);
    stripes(m, off, len, true, false);
    return 0;
}

static int mem_extent(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    struct mem_source *m = (struct mem_source *)s;
    uint64_t end = off + len, g = off >> m->gshift;
    bool zero = !(atomic_load(&m->written[g >> 6]) >> (g & 63) & 1);
    uint64_t pos = (g + 1) << m->gshift;
    for (g++; pos < end && g < m->ngran; g++, pos += UINT64_C(1) << m->gshift)
        if ((!(atomic_load(&m->written[g >> 6]) >> (g & 63) & 1)) != zero)
            break;
    *run = (pos < end ? pos : end) - off;
    return zero ? R3_EXTENT_ZERO : R3_EXTENT_DATA;
}

static int mem_flush(struct r3_source *s)
{
    return 0;
}

static void mem_close(struct r3_source *s)
{
    struct mem_source *m = (struct mem_source *)s;
    munmap(m->base, s->size);
    for (int i = 0; i < MEM_STRIPES; i++)
        pthread_rwlock_destroy(&m->stripe[i]);
    free((void *)m->written);
    free(m);
}

static const struct r3_source_ops mem_ops = {
    .scheme = "mem", .read = mem_read, .write = mem_write, .flush = mem_flush, .close = mem_close,
    .extent = mem_extent,
};

int r3_mem_create(uint64_t size, struct r3_source **out)
{
    if (size == 0 || size > (UINT64_C(1) << 46))
        return r3_error(-EINVAL, "mem: size %llu is out of range", (unsigned long long)size);
    struct mem_source *m = calloc(1, sizeof *m);
    if (!m)
        return r3_error(-ENOMEM, "mem: out of memory");
    m->gshift = 12;
    while ((size >> m->gshift) > (UINT64_C(1) << 20))
        m->gshift++;
    m->ngran = (size + (UINT64_C(1) << m->gshift) - 1) >> m->gshift;
    m->written = calloc((m->ngran + 63) / 64, sizeof *m->written);
    if (!m->written) {
        free(m);
        return r3_error(-ENOMEM, "mem: out of memory");
    }
    m->base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m->base == MAP_FAILED) {
        int e = errno;
        free((void *)m->written);
        free(m);
        return r3_error(-e, "mem: cannot map %llu bytes: %s", (unsigned long long)size, strerror(e));
    }
    for (int i = 0; i < MEM_STRIPES; i++)
        pthread_rwlock_init(&m->stripe[i], NULL);
    m->src.ops = &mem_ops;
    m->src.size = size;
    m->src.align = 1;
    m->src.flags = R3_SRC_PARALLEL;
    *out = &m->src;
    return 0;
}

/* Before a write through r3_source_direct's pointer (the cache's fetch):
 * the pages of [off, off+len) made present at once (see populate). */
void r3_source_direct_populate(struct r3_source *s, uint64_t off, size_t len)
{
    if (s && s->ops == &mem_ops && off <= s->size && len <= s->size - off && len >= 2 * 4096)
        populate((struct mem_source *)s, off, len);
}

/* For reading only: a write through the pointer would not be seen by
 * extent queries. */
void *r3_source_direct(struct r3_source *s, uint64_t off, size_t len)
{
    if (!s || s->ops != &mem_ops || off > s->size || len > s->size - off)
        return NULL;
    return ((struct mem_source *)s)->base + off;
}

int r3_mem_open(const struct r3_uri *u, struct r3_source **out)
{
    static const char *const allowed[] = { "size", "chunk", NULL };
    uint64_t size;
    uint32_t chunk;
    int rc = r3_uri_check_params(u, allowed);
    if (rc == 0)
        rc = r3_uri_size_chunk(u, true, &size, &chunk);
    if (rc == 0 && (u->host || (u->path && u->path[0])))
        rc = r3_error(-EINVAL, "mem: takes no host or path (write mem:?size=1G)");
    return rc < 0 ? rc : r3_mem_create(size, out);
}
