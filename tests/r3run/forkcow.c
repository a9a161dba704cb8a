/* SPDX-License-Identifier: BSD-3-Clause */
/* Run under r3run with a source holding known bytes and --push-interval:
 *     forkcow MIB KIDS SEED
 * The first large block (region offset 0) is MIB MiB. The parent writes
 * pattern A into its first half and leaves the second half untouched (the
 * source's bytes, never filled), then forks KIDS children. Each child
 * waits until the parent has overwritten the whole block with pattern B
 * and written it back (push rounds), then reads chunks at random and
 * prints "kid N off OFF sha SHA256" for each (the test compares with
 * pattern A / the source's original bytes), writes pattern C over its copy
 * (which must never reach the source), and every 5th child forks a child
 * of its own that does the same reads. The parent prints "done". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536

static uint8_t pat_a(size_t i) { return (uint8_t)(i * 7 + 1); }
static uint8_t pat_b(size_t i) { return (uint8_t)(i * 13 + 5); }

/* A small SHA-256 (the test needs no crypto library). */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};
#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static void block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64], a[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(a, h, sizeof a);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = a[7] + (ROR(a[4], 6) ^ ROR(a[4], 11) ^ ROR(a[4], 25)) +
                      ((a[4] & a[5]) ^ (~a[4] & a[6])) + K[i] + w[i];
        uint32_t t2 = (ROR(a[0], 2) ^ ROR(a[0], 13) ^ ROR(a[0], 22)) +
                      ((a[0] & a[1]) ^ (a[0] & a[2]) ^ (a[1] & a[2]));
        memmove(a + 1, a, 7 * sizeof a[0]);
        a[4] += t1;
        a[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++)
        h[i] += a[i];
}
static void sha256(const uint8_t *p, size_t n, char out[65])
{
    uint32_t h[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        block(h, p + i);
    uint8_t t[128] = { 0 };
    size_t r = n - i;
    memcpy(t, p + i, r);
    t[r] = 0x80;
    size_t tl = r + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int j = 0; j < 8; j++)
        t[tl - 1 - j] = (uint8_t)(bits >> (8 * j));
    block(h, t);
    if (tl == 128)
        block(h, t + 64);
    for (int j = 0; j < 8; j++)
        sprintf(out + 8 * j, "%08x", h[j]);
}

static void reads(const uint8_t *b, size_t n, int id, unsigned seed)
{
    char line[128 * 16];
    size_t len = 0;
    for (int i = 0; i < 8; i++) {
        size_t off = (size_t)(rand_r(&seed) % (n / CHUNK)) * CHUNK;
        char h[65];
        sha256(b + off, CHUNK, h);
        len += (size_t)snprintf(line + len, sizeof line - len, "kid %d off %zu sha %s\n", id, off, h);
    }
    if (write(1, line, len) < 0)
        _exit(3);
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    size_t n = (size_t)atoi(argv[1]) << 20;
    int kids = atoi(argv[2]);
    unsigned seed = (unsigned)atoi(argv[3]);
    uint8_t *b = malloc(n);
    if (!b)
        return 1;
    for (size_t i = 0; i < n / 2; i++)
        b[i] = pat_a(i);
    int go[2];
    if (pipe(go) < 0)
        return 1;
    for (int k = 0; k < kids; k++) {
        pid_t p = fork();
        if (p < 0)
            return 1;
        if (p == 0) {
            close(go[1]);
            char c;
            if (read(go[0], &c, 1) < 0)   /* the parent has overwritten and pushed */
                _exit(3);
            pid_t g = -1;
            if (k % 5 == 0)
                g = fork();
            reads(b, n, g == 0 ? 1000 + k : k, seed + (unsigned)k * 77u + (g == 0 ? 5u : 0u));
            memset(b, 0xcc, n);           /* private to this child */
            if (g > 0)
                waitpid(g, NULL, 0);
            _exit(0);
        }
    }
    close(go[0]);
    for (size_t i = 0; i < n; i++)
        b[i] = pat_b(i);
    struct timespec ts = { 0, 400 * 1000 * 1000 };
    nanosleep(&ts, NULL);                 /* push rounds write B back */
    close(go[1]);                         /* the children read now */
    for (int k = 0; k < kids; k++) {
        int st;
        if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "forkcow: a child failed (status %d)\n", st);
            return 1;
        }
    }
    printf("done\n");
    free(b);
    return 0;
}
