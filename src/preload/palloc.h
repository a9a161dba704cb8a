/* SPDX-License-Identifier: BSD-3-Clause */
/* A page-granular allocator over one address range (the region), for the
 * preload shim. Its metadata lives in a separate anonymous mapping, never in
 * the range itself: freeing or sizing a block touches no region page, so it
 * never faults and never dirties a chunk. */
#ifndef R3_PALLOC_H
#define R3_PALLOC_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define R3_PALLOC_CLASSES 33

struct r3_palloc_page;

struct r3_palloc {
    uintptr_t base;
    size_t len, page, npages;
    struct r3_palloc_page *meta;      /* one entry per page, mmap'ed, sparse */
    uint32_t head[R3_PALLOC_CLASSES]; /* free lists by floor(log2(pages)) */
    pthread_mutex_t lock;
    size_t in_use, peak;              /* bytes in blocks handed out */
    uint64_t hwm;                     /* pages [hwm, npages) were never handed out */
    uint64_t nalloc, nfree;
};

/* base and len must be page aligned; len / page < 2^32. 0 or -errno. */
int  r3_palloc_init(struct r3_palloc *a, void *base, size_t len, size_t page);
void r3_palloc_destroy(struct r3_palloc *a);

static inline bool r3_palloc_owns(const struct r3_palloc *a, const void *p)
{
    return (uintptr_t)p - a->base < a->len;
}

/* A block of at least size bytes aligned to align (a power of two; page
 * alignment is always given); NULL when no free range fits. */
void  *r3_palloc_alloc(struct r3_palloc *a, size_t size, size_t align);
/* The same; *used gets the bytes at the block's start that were handed out
 * before (they may hold old data); the rest never were (calloc: they hold
 * what the range held at init). */
void  *r3_palloc_alloc_fresh(struct r3_palloc *a, size_t size, size_t align, size_t *used);
void   r3_palloc_free(struct r3_palloc *a, void *p);
/* Bytes usable in the block p starts (whole pages); 0 if p starts none. */
size_t r3_palloc_usable(struct r3_palloc *a, const void *p);
/* Grow or shrink the block in place to at least size bytes: true if done. */
bool   r3_palloc_resize(struct r3_palloc *a, void *p, size_t size);

/* For pthread_atfork: hold the lock across fork. */
void r3_palloc_lock(struct r3_palloc *a);
void r3_palloc_unlock(struct r3_palloc *a);

#endif
