/* SPDX-License-Identifier: BSD-3-Clause */
/* Page-granular allocator with boundary tags kept outside the range: each
 * block (used or free) records its length at its first and last page's
 * metadata entry, so free coalesces with both neighbours in O(1). Free
 * blocks sit on lists by size class (floor(log2(pages))); allocation is
 * first fit from the smallest class that can hold the request. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include "preload/palloc.h"

#define NIL UINT32_MAX
enum { HEAD = 1, TAIL = 2, USED = 4, FREE = 8 };

struct r3_palloc_page {
    uint32_t len;          /* pages in the block (valid at head and tail) */
    uint32_t state;        /* HEAD/TAIL | USED/FREE, 0 inside a block */
    uint32_t next, prev;   /* free-list links (valid at the head of a free block) */
};

static unsigned cls(uint64_t n)
{
    return 63u - (unsigned)__builtin_clzll(n);
}

static void mark(struct r3_palloc *a, uint32_t s, uint32_t n, uint32_t kind)
{
    struct r3_palloc_page *m = a->meta;
    m[s].len = n;
    m[s].state = HEAD | kind | (n == 1 ? TAIL : 0);
    m[s + n - 1].len = n;
    m[s + n - 1].state = TAIL | kind | (n == 1 ? HEAD : 0);
}

/* Forget the boundary tags of block s (they become interior pages). */
static void unmark(struct r3_palloc *a, uint32_t s)
{
    uint32_t n = a->meta[s].len;
    a->meta[s].state = 0;
    a->meta[s + n - 1].state = 0;
}

static void list_insert(struct r3_palloc *a, uint32_t s)
{
    unsigned c = cls(a->meta[s].len);
    a->meta[s].prev = NIL;
    a->meta[s].next = a->head[c];
    if (a->head[c] != NIL)
        a->meta[a->head[c]].prev = s;
    a->head[c] = s;
}

static void list_remove(struct r3_palloc *a, uint32_t s)
{
    struct r3_palloc_page *m = a->meta;
    if (m[s].prev != NIL)
        m[m[s].prev].next = m[s].next;
    else
        a->head[cls(m[s].len)] = m[s].next;
    if (m[s].next != NIL)
        m[m[s].next].prev = m[s].prev;
}

/* Make pages [s, s+n) one free block, merged with free neighbours. */
static void release(struct r3_palloc *a, uint32_t s, uint32_t n)
{
    struct r3_palloc_page *m = a->meta;
    if (s > 0 && (m[s - 1].state & FREE)) {
        uint32_t l = s - m[s - 1].len;
        list_remove(a, l);
        unmark(a, l);
        n += s - l;
        s = l;
    }
    uint32_t r = s + n;
    if (r < a->npages && (m[r].state & FREE)) {
        list_remove(a, r);
        n += m[r].len;
        unmark(a, r);
    }
    mark(a, s, n, FREE);
    list_insert(a, s);
}

int r3_palloc_init(struct r3_palloc *a, void *base, size_t len, size_t page)
{
    memset(a, 0, sizeof *a);
    if (!page || (page & (page - 1)) || (uintptr_t)base % page || len % page || len < page ||
        len / page >= NIL)
        return -EINVAL;
    size_t mlen = (len / page) * sizeof(struct r3_palloc_page);
    mlen = (mlen + page - 1) / page * page;
    /* NORESERVE: only the entries at block boundaries are ever touched. */
    void *m = mmap(NULL, mlen, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return -errno;
    a->base = (uintptr_t)base;
    a->len = len;
    a->page = page;
    a->npages = len / page;
    a->meta = m;
    for (unsigned c = 0; c < R3_PALLOC_CLASSES; c++)
        a->head[c] = NIL;
    pthread_mutex_init(&a->lock, NULL);
    mark(a, 0, (uint32_t)a->npages, FREE);
    list_insert(a, 0);
    return 0;
}

void r3_palloc_destroy(struct r3_palloc *a)
{
    if (a->meta) {
        size_t mlen = a->npages * sizeof(struct r3_palloc_page);
        munmap(a->meta, (mlen + a->page - 1) / a->page * a->page);
        pthread_mutex_destroy(&a->lock);
    }
    memset(a, 0, sizeof *a);
}

void *r3_palloc_alloc(struct r3_palloc *a, size_t size, size_t align)
{
    size_t used;
    return r3_palloc_alloc_fresh(a, size, align, &used);
}

void *r3_palloc_alloc_fresh(struct r3_palloc *a, size_t size, size_t align, size_t *used)
{
    *used = 0;
    if (size > a->len || align > a->len)
        return NULL;
    uint64_t n = size ? (size + a->page - 1) / a->page : 1;
    if (align < a->page)
        align = a->page;
    void *res = NULL;
    pthread_mutex_lock(&a->lock);
    for (unsigned c = cls(n); c < R3_PALLOC_CLASSES && !res; c++) {
        for (uint32_t s = a->head[c]; s != NIL; s = a->meta[s].next) {
            uint32_t l = a->meta[s].len;
            uintptr_t at = a->base + (uintptr_t)s * a->page;
            uint64_t front = (((at + align - 1) & ~(uintptr_t)(align - 1)) - at) / a->page;
            if (front + n > l)
                continue;
            list_remove(a, s);
            unmark(a, s);
            uint32_t u = s + (uint32_t)front;
            if (front) {
                mark(a, s, (uint32_t)front, FREE);
                list_insert(a, s);
            }
            mark(a, u, (uint32_t)n, USED);
            uint32_t rest = l - (uint32_t)front - (uint32_t)n;
            if (rest) {
                mark(a, u + (uint32_t)n, rest, FREE);
                list_insert(a, u + (uint32_t)n);
            }
            a->in_use += n * a->page;
            if (a->in_use > a->peak)
                a->peak = a->in_use;
            a->nalloc++;
            /* pages at or past the high-water mark were never handed out */
            *used = u >= a->hwm ? 0 : (size_t)((a->hwm - u < n ? a->hwm - u : n) * a->page);
            if (u + n > a->hwm)
                a->hwm = u + n;
            res = (void *)(a->base + (uintptr_t)u * a->page);
            break;
        }
    }
    pthread_mutex_unlock(&a->lock);
    return res;
}

/* The page index p starts, or NIL if p is not the start of a used block.
 * Called with the lock held. */
static uint32_t block_of(struct r3_palloc *a, const void *p)
{
    uintptr_t off = (uintptr_t)p - a->base;
    if (off >= a->len || off % a->page)
        return NIL;
    uint32_t s = (uint32_t)(off / a->page);
    uint32_t st = a->meta[s].state;
    return (st & HEAD) && (st & USED) ? s : NIL;
}

void r3_palloc_free(struct r3_palloc *a, void *p)
{
    pthread_mutex_lock(&a->lock);
    uint32_t s = block_of(a, p);
    if (s != NIL) {
        uint32_t n = a->meta[s].len;
        unmark(a, s);
        release(a, s, n);
        a->in_use -= (size_t)n * a->page;
        a->nfree++;
    }
    pthread_mutex_unlock(&a->lock);
}

size_t r3_palloc_usable(struct r3_palloc *a, const void *p)
{
    pthread_mutex_lock(&a->lock);
    uint32_t s = block_of(a, p);
    size_t r = s == NIL ? 0 : (size_t)a->meta[s].len * a->page;
    pthread_mutex_unlock(&a->lock);
    return r;
}

bool r3_palloc_resize(struct r3_palloc *a, void *p, size_t size)
{
    if (size > a->len)
        return false;
    uint64_t n = size ? (size + a->page - 1) / a->page : 1;
    bool ok = false;
    pthread_mutex_lock(&a->lock);
    uint32_t s = block_of(a, p);
    if (s != NIL) {
        struct r3_palloc_page *m = a->meta;
        uint32_t l = m[s].len, r = s + l;
        if (n == l) {
            ok = true;
        } else if (n < l) {
            unmark(a, s);
            mark(a, s, (uint32_t)n, USED);
            release(a, s + (uint32_t)n, l - (uint32_t)n);
            a->in_use -= (size_t)(l - n) * a->page;
            ok = true;
        } else if (r < a->npages && (m[r].state & FREE) && l + (uint64_t)m[r].len >= n) {
            uint32_t rl = m[r].len;
            list_remove(a, r);
            unmark(a, r);
            unmark(a, s);
            mark(a, s, (uint32_t)n, USED);
            uint32_t rest = l + rl - (uint32_t)n;
            if (rest) {
                mark(a, s + (uint32_t)n, rest, FREE);
                list_insert(a, s + (uint32_t)n);
            }
            a->in_use += (size_t)(n - l) * a->page;
            if (a->in_use > a->peak)
                a->peak = a->in_use;
            if (s + n > a->hwm)
                a->hwm = s + (uint32_t)n;
            ok = true;
        }
    }
    pthread_mutex_unlock(&a->lock);
    return ok;
}

void r3_palloc_lock(struct r3_palloc *a)
{
    pthread_mutex_lock(&a->lock);
}

void r3_palloc_unlock(struct r3_palloc *a)
{
    pthread_mutex_unlock(&a->lock);
}
