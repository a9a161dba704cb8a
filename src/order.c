/* SPDX-License-Identifier: BSD-3-Clause */
/* An access order (see internal.h): the chunks in the order they were first
 * used, appended by any thread without a lock. A slot holds chunk + 1, so a
 * slot taken but not yet written reads 0 and is skipped: the order is a
 * hint for a leecher's pull, not data. Who calls r3_order_note decides
 * what "first" means (each caller notes a chunk once). */
#include <errno.h>
#include <stdlib.h>
#include "internal.h"

int r3_order_init(struct r3_order *o, uint64_t cap)
{
    o->cap = cap;
    atomic_init(&o->n, 0);
    o->slot = calloc(cap ? cap : 1, sizeof *o->slot);
    return o->slot ? 0 : r3_error(-ENOMEM, "out of memory for an access order of %llu chunks",
                                  (unsigned long long)cap);
}

void r3_order_note(struct r3_order *o, uint64_t chunk)
{
    uint64_t k = atomic_fetch_add_explicit(&o->n, 1, memory_order_relaxed);
    if (k < o->cap)
        atomic_store_explicit(&o->slot[k], chunk + 1, memory_order_release);
}

int r3_order_list(struct r3_order *o, uint64_t **list, size_t *n)
{
    uint64_t k = atomic_load_explicit(&o->n, memory_order_relaxed);
    if (k > o->cap)
        k = o->cap;
    uint64_t *l = malloc((k ? k : 1) * sizeof *l);
    if (!l)
        return r3_error(-ENOMEM, "out of memory");
    size_t m = 0;
    for (uint64_t i = 0; i < k; i++) {
        uint64_t v = atomic_load_explicit(&o->slot[i], memory_order_acquire);
        if (v)
            l[m++] = v - 1;
    }
    *list = l;
    *n = m;
    return 0;
}

void r3_order_free(struct r3_order *o)
{
    free((void *)o->slot);
    o->slot = NULL;
}
