/* A fast deterministic 64-bit-word pattern for the uffd tests (1 GiB in a
 * fraction of a second): the word at byte offset off (a multiple of 8). */
#ifndef R3_UFFD_TEST_PATTERN_H
#define R3_UFFD_TEST_PATTERN_H
#include <stddef.h>
#include <stdint.h>

static inline uint64_t up_word(uint64_t off, uint32_t seed)
{
    uint64_t x = (off / 8 + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed << 32 | seed);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 29);
}

static inline void up_fill(void *buf, size_t len, uint64_t off, uint32_t seed)
{
    uint64_t *p = buf;
    for (size_t i = 0; i < len / 8; i++)
        p[i] = up_word(off + i * 8, seed);
}

/* Byte offset of the first word that differs, or -1. */
static inline long long up_check(const void *buf, size_t len, uint64_t off, uint32_t seed)
{
    const uint64_t *p = buf;
    for (size_t i = 0; i < len / 8; i++)
        if (p[i] != up_word(off + i * 8, seed))
            return (long long)(i * 8);
    return -1;
}
#endif
