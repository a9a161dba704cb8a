/* SPDX-License-Identifier: BSD-3-Clause */
/* The test pattern, one for every test: each little-endian 64-bit word is
 * its own byte offset XOR a 64-bit key made from the seed (top bit set). So
 * any range can be made or checked on its own, a word read from the wrong
 * offset never match, nearly every byte differs under another seed, no word
 * is zero, and a gigabyte takes a fraction of a second. The same bytes come
 * from tests/common/pattern.py (python3) and `r3check gen` (shell). */
#ifndef R3_TESTS_COMMON_PATTERN_H
#define R3_TESTS_COMMON_PATTERN_H

#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The key of a seed: splitmix64's finalizer of seed + 1, top bit set. */
static inline uint64_t r3t_key(uint64_t seed)
{
    uint64_t x = seed + 1;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return (x ^ (x >> 31)) | 1ull << 63;
}

/* The word that covers byte offset off (off rounded down to 8). */
static inline uint64_t r3t_word(uint64_t off, uint64_t seed)
{
    return (off & ~7ull) ^ r3t_key(seed);
}

static inline uint8_t r3t_byte(uint64_t off, uint64_t seed)
{
    return (uint8_t)(r3t_word(off, seed) >> (8 * (off & 7)));
}

/* buf[0..len) = the pattern bytes at offsets off..off+len. */
static inline void r3t_fill(void *buf, size_t len, uint64_t off, uint64_t seed)
{
    uint8_t *p = buf;
    size_t i = 0;
    for (; i < len && ((off + i) & 7); i++)
        p[i] = r3t_byte(off + i, seed);
    uint64_t key = r3t_key(seed);
    for (; i + 8 <= len; i += 8) {
        uint64_t w = htole64((off + i) ^ key);
        memcpy(p + i, &w, 8);
    }
    for (; i < len; i++)
        p[i] = r3t_byte(off + i, seed);
}

/* Index of the first byte of buf that differs from the pattern, or -1. */
static inline long long r3t_check(const void *buf, size_t len, uint64_t off, uint64_t seed)
{
    const uint8_t *p = buf;
    size_t i = 0;
    for (; i < len && ((off + i) & 7); i++)
        if (p[i] != r3t_byte(off + i, seed))
            return (long long)i;
    uint64_t key = r3t_key(seed), w;
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, p + i, 8);
        if (w != htole64((off + i) ^ key))
            break;                           /* the byte loop below finds which */
    }
    for (; i < len; i++)
        if (p[i] != r3t_byte(off + i, seed))
            return (long long)i;
    return -1;
}

#endif
