/* SPDX-License-Identifier: BSD-3-Clause */
/* Atomic bitmaps for chunk state (dirty, local). Internal. */
#ifndef R3_BITMAP_H
#define R3_BITMAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

typedef _Atomic uint64_t r3_bitword;

static inline r3_bitword *r3_bitmap_new(uint64_t nbits)
{
    return calloc((nbits + 63) / 64 ? (nbits + 63) / 64 : 1, sizeof(r3_bitword));
}

static inline bool r3_bit_get(r3_bitword *b, uint64_t i)
{
    return atomic_load_explicit(&b[i / 64], memory_order_acquire) >> (i % 64) & 1;
}

/* Returns the previous value. */
static inline bool r3_bit_set(r3_bitword *b, uint64_t i)
{
    uint64_t m = UINT64_C(1) << (i % 64);
    return atomic_fetch_or_explicit(&b[i / 64], m, memory_order_acq_rel) & m;
}

static inline bool r3_bit_clear(r3_bitword *b, uint64_t i)
{
    uint64_t m = UINT64_C(1) << (i % 64);
    return atomic_fetch_and_explicit(&b[i / 64], ~m, memory_order_acq_rel) & m;
}

#endif
