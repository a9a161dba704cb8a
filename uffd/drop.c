/* SPDX-License-Identifier: BSD-3-Clause */
/* Dropping chunks (r3_region_invalidate: a leecher's FINALIZE makes the
 * chunks the seeder changed remote again). Their pages go with
 * MADV_DONTNEED, one call per run of consecutive chunks, and the next
 * access fetches them; the chunk states change in bulk (the dropping bits
 * a word at a time, the zero knowledge a run at a time). With REMOVE
 * events on, each call returns only once a handler has read its event (a
 * wake-up per run, about 18 us here): that wait is most of the cost.
 * Calling from several threads at once so that a handler reads many events
 * per read() was tried and was slower on a loaded machine (median 17.9 ms
 * against 3.1 ms for 164 runs, 4 interleaved pairs). Nothing may use the
 * chunks meanwhile. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "internal.h"
#include "uffd/uffd.h"

#define DROP_WAIT_NS 5000000000ull

struct run { uint64_t c0, n; };

/* Set, test or clear the bits of chunks [c0, c0+n) a word at a time. */
static void bits_set(_Atomic uint64_t *m, uint64_t c0, uint64_t n)
{
    for (uint64_t i = c0, end = c0 + n; i < end;) {
        uint64_t lo = i & 63, k = 64 - lo < end - i ? 64 - lo : end - i;
        uint64_t mask = (k == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << k) - 1)) << lo;
        atomic_fetch_or_explicit(&m[i >> 6], mask, memory_order_acq_rel);
        i += k;
    }
}

static bool bits_any(_Atomic uint64_t *m, uint64_t c0, uint64_t n)
{
    for (uint64_t i = c0, end = c0 + n; i < end;) {
        uint64_t lo = i & 63, k = 64 - lo < end - i ? 64 - lo : end - i;
        uint64_t mask = (k == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << k) - 1)) << lo;
        if (atomic_load_explicit(&m[i >> 6], memory_order_acquire) & mask)
            return true;
        i += k;
    }
    return false;
}

static void bits_clear(_Atomic uint64_t *m, uint64_t c0, uint64_t n)
{
    for (uint64_t i = c0, end = c0 + n; i < end;) {
        uint64_t lo = i & 63, k = 64 - lo < end - i ? 64 - lo : end - i;
        uint64_t mask = (k == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << k) - 1)) << lo;
        atomic_fetch_and_explicit(&m[i >> 6], ~mask, memory_order_acq_rel);
        i += k;
    }
}

int r3u_drop(struct r3u_region *r, const uint64_t *list, size_t n)
{
    bool ev = r->features & UFFD_FEATURE_EVENT_REMOVE;
    for (size_t i = 0; i < n; i++)
        if (list[i] >= r->nchunks || (i && list[i] <= list[i - 1]))
            return r3_error(-EINVAL, "uffd: invalidate: chunk %llu is not in the region (or not ascending)",
                            (unsigned long long)list[i]);
    if (n == 0)
        return 0;
    struct run *runs = malloc(n * sizeof *runs);
    if (!runs)
        return r3_error(-ENOMEM, "uffd: invalidate: out of memory");
    size_t nruns = 0;
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && list[j] == list[j - 1] + 1;)
            j++;
        runs[nruns++] = (struct run){ list[i], list[j - 1] + 1 - list[i] };
    }
    for (size_t k = 0; k < nruns; k++) {
        if (ev)
            bits_set(r->dropping, runs[k].c0, runs[k].n);
        /* the source changed there: its zeros are not known any more */
        r3u_zero_dead(r, runs[k].c0, runs[k].c0 + runs[k].n - 1);
    }
    int rc = 0;
    for (size_t k = 0; k < nruns && rc == 0; k++)
        if (madvise((char *)r->r.base + (runs[k].c0 << r->chunk_shift), runs[k].n << r->chunk_shift,
                    MADV_DONTNEED) < 0)
            rc = r3_error(-errno, "uffd: invalidate: madvise: %s", strerror(errno));
    /* Every handler has read its event; wait until it has handled it
     * (r3u_dropped clears the dropping bits last). */
    uint64_t deadline = r3_now_ns() + DROP_WAIT_NS;
    for (size_t k = 0; k < nruns; k++) {
        const struct run *u = &runs[k];
        while (ev && bits_any(r->dropping, u->c0, u->n)) {
            if (rc < 0 || r3_now_ns() > deadline) {
                bits_clear(r->dropping, u->c0, u->n);
                if (rc == 0)
                    rc = r3_error(-ETIMEDOUT, "uffd: invalidate: the fault handlers did not see the REMOVE"
                                  " event of chunk %llu", (unsigned long long)u->c0);
                break;
            }
            sched_yield();
        }
        if (rc < 0)
            continue;
        for (uint64_t c = u->c0; c < u->c0 + u->n; c++) {
            if (!ev)
                atomic_store_explicit(&r->filled[c], 0, memory_order_release);
            r3_cache_invalidate(r->p->cache, c);
        }
    }
    free(runs);
    return rc;
}
