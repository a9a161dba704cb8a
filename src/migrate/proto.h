/* SPDX-License-Identifier: BSD-3-Clause */
/* The migration methods' names and list encoding, shared by the seeder and
 * the leecher (internal; the protocol is described in include/r3/wire.h). */
#ifndef R3_MIGRATE_PROTO_H
#define R3_MIGRATE_PROTO_H

#include <stdint.h>

#define R3M_HELLO    "migrate"
#define R3M_TRACK    "track"
#define R3M_ORDER    "order"
#define R3M_FINALIZE "finalize"
#define R3M_DIRTY    "dirty"
#define R3M_RELEASE  "release"

static inline void r3m_put64(uint8_t *b, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (uint8_t)v;
}

static inline uint64_t r3m_get64(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

#endif
