/* SPDX-License-Identifier: BSD-3-Clause */
/* Run under r3run: system() and fork() from a program whose large blocks
 * live in the region. The child (the region is there as it was at the
 * fork) must get glibc memory for new blocks, may free region blocks
 * (metadata only) and must not sync; the parent's region data must
 * survive, also while other threads allocate across the forks. Prints a
 * checksum of the region data. */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BIG (8u << 20)

static int region;               /* 1: large blocks must be region blocks */
static atomic_int stop;

static int is_region_block(void *p)
{
    /* Region blocks are whole pages; glibc's usable sizes never are. */
    return malloc_usable_size(p) % 4096 == 0;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 2654435761u) >> 13 ^ seed);
}

static int check(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)((i * 2654435761u) >> 13 ^ seed))
            return 0;
    return 1;
}

#define FAIL(...) do { fprintf(stderr, "forker: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static void *churn(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&stop)) {
        size_t n = (64u << 10) + rand_r(&seed) % (1u << 20);
        unsigned char *p = malloc(n);
        if (!p)
            FAIL("malloc in thread");
        fill(p, n, seed);
        if (!check(p, n, seed))
            FAIL("thread data");
        free(p);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    region = argc > 1 && strcmp(argv[1], "region") == 0;
    unsigned char *big = malloc(BIG), *spare = malloc(BIG);
    if (!big || !spare)
        FAIL("malloc");
    if (region && (!is_region_block(big) || !is_region_block(spare)))
        FAIL("large blocks are not in the region");
    fill(big, BIG, 1);

    if (system("true") != 0)
        FAIL("system(\"true\") failed");
    int st = system("exit 7");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 7)
        FAIL("system(\"exit 7\") gave %d", st);

    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 10));
    for (int round = 0; round < 20; round++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            FAIL("fork");
        if (pid == 0) {
            unsigned char *c = malloc(BIG);
            if (!c)
                FAIL("child malloc");
            if (region && is_region_block(c))
                FAIL("child got region memory");
            fill(c, BIG, 3);
            if (!check(c, BIG, 3))
                FAIL("child data");
            free(c);
            if (round == 0)
                free(spare);      /* a region block, freed by bookkeeping only */
            exit(round == 0 ? 0 : 40);
        }
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != (round ? 40 : 0))
            FAIL("child %d ended with status %d", round, st);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);

    if (!check(big, BIG, 1))
        FAIL("region data changed across fork/system");
    unsigned char *more = malloc(BIG);
    if (region && !is_region_block(more))
        FAIL("no region block after fork");
    memcpy(more, big, BIG);
    free(big);
    free(spare);
    uint64_t sum = 14695981039346656037ull;
    for (size_t i = 0; i < BIG; i++)
        sum = (sum ^ more[i]) * 0x100000001b3ull;
    free(more);
    printf("forker ok %016llx\n", (unsigned long long)sum);
    return 0;
}
