/* SPDX-License-Identifier: BSD-3-Clause */
/* sparse_touch GIB MIB SEED: one malloc of GIB GiB (under r3run: a region
 * block, never memset), MIB MiB of it touched at random 64 KiB chunks: each
 * touched chunk gets a pattern of its offset and SEED; a second pass in
 * another random order checks every touched chunk; prints the number of
 * chunks and a checksum (the same plainly and under r3run). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHUNK 65536u

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 29);
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    uint64_t size = strtoull(argv[1], NULL, 10) << 30, n = strtoull(argv[2], NULL, 10) << 20;
    uint64_t seed = strtoull(argv[3], NULL, 10), nch = size / CHUNK, k = n / CHUNK;
    uint8_t *b = malloc(size);
    uint64_t *pick = malloc(k * sizeof *pick);
    if (!b || !pick)
        return 1;
    for (uint64_t i = 0; i < k; i++)
        pick[i] = mix(seed * 1000003u + i) % nch;
    for (uint64_t i = 0; i < k; i++) {
        uint64_t *w = (uint64_t *)(b + pick[i] * CHUNK);
        for (unsigned j = 0; j < CHUNK / 8; j++)
            w[j] = mix(pick[i] * CHUNK + j * 8u + seed);
    }
    uint64_t sum = 0, bad = 0;
    for (uint64_t i = k; i-- > 0;) {
        const uint64_t *w = (const uint64_t *)(b + pick[i] * CHUNK);
        for (unsigned j = 0; j < CHUNK / 8; j++) {
            bad += w[j] != mix(pick[i] * CHUNK + j * 8u + seed);
            sum += w[j];
        }
    }
    printf("%llu chunks touched, %llu bad words, sum %016llx\n", (unsigned long long)k,
           (unsigned long long)bad, (unsigned long long)sum);
    return bad != 0;
}
