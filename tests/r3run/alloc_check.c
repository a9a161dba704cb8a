/* SPDX-License-Identifier: BSD-3-Clause */
/* The malloc family through the shim: routing by size (region blocks are
 * whole pages, glibc's never are), calloc zeroing reused region pages,
 * realloc across the threshold both ways, every aligned allocator, bad
 * arguments, and 8 threads at once. "region" expects the shim (r3run
 * --min-alloc 64K); "plain" runs the same calls on glibc alone. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int region;
/* volatile: the compiler must not see the overflow coming. */
static volatile size_t huge = SIZE_MAX / 2;
#define MIN (64u << 10)
#define FAIL(...) do { fprintf(stderr, "alloc_check: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static int in_region(void *p)
{
    return malloc_usable_size(p) % 4096 == 0;
}

static void expect(void *p, size_t size, const char *what)
{
    if (!p)
        FAIL("%s returned NULL", what);
    if (malloc_usable_size(p) < size)
        FAIL("%s: usable size %zu < %zu", what, malloc_usable_size(p), size);
    /* glibc's aligned blocks may happen to be whole pages: only big ones count. */
    int aligned = strstr(what, "align") || strstr(what, "valloc");
    if (region && (size >= MIN || !aligned) && in_region(p) != (size >= MIN))
        FAIL("%s of %zu bytes is %s the region", what, size, in_region(p) ? "in" : "not in");
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 0x9E3779B1u) >> 11 ^ seed);
}

static int check(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)((i * 0x9E3779B1u) >> 11 ^ seed))
            return 0;
    return 1;
}

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    enum { N = 16 };
    unsigned char *p[N] = { 0 };
    size_t n[N] = { 0 };
    for (int it = 0; it < 4000; it++) {
        int i = (int)(rand_r(&seed) % N);
        unsigned tag = (unsigned)(uintptr_t)arg * 100 + (unsigned)i;
        if (p[i] && !check(p[i], n[i], tag))
            FAIL("thread data overwritten");
        size_t m = rand_r(&seed) % 2 ? (size_t)(1 + rand_r(&seed) % 4096)
                                      : (size_t)(MIN / 2 + rand_r(&seed) % (4 * MIN));
        switch (rand_r(&seed) % 3) {
        case 0: {                 /* realloc keeps the common prefix */
            unsigned char *q = realloc(p[i], m);
            if (!q)
                FAIL("realloc");
            size_t keep = n[i] < m ? n[i] : m;
            if (!check(q, keep, tag))
                FAIL("realloc lost data");
            p[i] = q;
            n[i] = m;
            fill(p[i], m, tag);
            break;
        }
        case 1:
            free(p[i]);
            p[i] = malloc(m);
            if (!p[i])
                FAIL("malloc");
            n[i] = m;
            fill(p[i], m, tag);
            break;
        default:
            free(p[i]);
            if (posix_memalign((void **)&p[i], (size_t)1 << (4 + rand_r(&seed) % 14), m))
                FAIL("posix_memalign");
            n[i] = m;
            fill(p[i], m, tag);
        }
    }
    for (int i = 0; i < N; i++)
        free(p[i]);
    return NULL;
}

int main(int argc, char **argv)
{
    region = argc > 1 && strcmp(argv[1], "region") == 0;

    /* Routing by size around the threshold. */
    void *a = malloc(MIN - 1), *b = malloc(MIN), *c = malloc(5u << 20);
    expect(a, MIN - 1, "malloc");
    expect(b, MIN, "malloc");
    expect(c, 5u << 20, "malloc");
    free(a);
    free(b);
    free(c);
    free(NULL);

    /* calloc zeroes a region block even where an old block left bytes. */
    unsigned char *d = malloc(1u << 20);
    memset(d, 0xAB, 1u << 20);
    free(d);
    unsigned char *z = calloc(256, 4096);
    expect(z, 1u << 20, "calloc");
    for (size_t i = 0; i < (1u << 20); i++)
        if (z[i])
            FAIL("calloc byte %zu is %d", i, z[i]);
    /* Partly over pages handed out before (written), partly fresh: the
     * shim clears only the first part; all of it reads zeros. */
    memset(z, 0xCD, 1u << 20);
    free(z);
    z = calloc(1024, 4096);
    expect(z, 4u << 20, "calloc (part fresh)");
    for (size_t i = 0; i < (4u << 20); i++)
        if (z[i])
            FAIL("calloc (part fresh) byte %zu is %d", i, z[i]);
    free(z);
    errno = 0;
    if (calloc(huge, 4) || errno != ENOMEM)
        FAIL("calloc overflow not refused");

    /* realloc across the threshold, up and down, keeps the data. */
    unsigned char *r = malloc(1000);
    fill(r, 1000, 5);
    r = realloc(r, 200000);
    expect(r, 200000, "realloc up");
    if (!check(r, 1000, 5))
        FAIL("realloc up lost data");
    fill(r, 200000, 6);
    r = realloc(r, 300000);
    expect(r, 300000, "realloc grow");
    if (!check(r, 200000, 6))
        FAIL("realloc grow lost data");
    r = realloc(r, 150000);
    expect(r, 150000, "realloc shrink");
    if (!check(r, 150000, 6))
        FAIL("realloc shrink lost data");
    r = realloc(r, 100);
    expect(r, 100, "realloc down");
    if (!check(r, 100, 6))
        FAIL("realloc down lost data");
    r = realloc(r, MIN * 3);
    expect(r, MIN * 3, "realloc up again");
    if (!check(r, 100, 6))
        FAIL("realloc up again lost data");
    errno = 0;
    if (reallocarray(r, huge, 4) || errno != ENOMEM)
        FAIL("reallocarray overflow not refused");
    r = reallocarray(r, 4, MIN);
    expect(r, 4 * MIN, "reallocarray");
    if (!check(r, 100, 6))
        FAIL("reallocarray lost data");
    r = realloc(r, 0);            /* glibc: frees, returns NULL */
    if (r)
        free(r);

    /* The aligned allocators, small and large. */
    static const size_t al[] = { 8, 64, 4096, 65536, 1u << 21 };
    for (int i = 0; i < 5; i++) {
        for (int big = 0; big < 2; big++) {
            size_t n = big ? MIN + 12345 : 200;
            void *p;
            if (posix_memalign(&p, al[i], n))
                FAIL("posix_memalign(%zu, %zu)", al[i], n);
            expect(p, n, "posix_memalign");
            void *q = aligned_alloc(al[i], n), *s = memalign(al[i], n);
            expect(q, n, "aligned_alloc");
            expect(s, n, "memalign");
            if ((uintptr_t)p % al[i] || (uintptr_t)q % al[i] || (uintptr_t)s % al[i])
                FAIL("alignment %zu not kept", al[i]);
            memset(p, 1, n);
            memset(q, 2, n);
            memset(s, 3, n);
            free(p);
            free(q);
            free(s);
        }
    }
    void *bad;
    if (posix_memalign(&bad, 24, 100) != EINVAL || posix_memalign(&bad, 2, 100) != EINVAL)
        FAIL("posix_memalign accepted a bad alignment");
    void *v = valloc(MIN * 2), *pv = pvalloc(MIN + 1), *sv = valloc(100);
    expect(v, MIN * 2, "valloc");
    expect(pv, MIN + 1, "pvalloc");
    expect(sv, 100, "valloc");
    if ((uintptr_t)v % 4096 || (uintptr_t)pv % 4096 || (uintptr_t)sv % 4096)
        FAIL("valloc/pvalloc not page aligned");
    free(v);
    free(pv);
    free(sv);
    if (malloc_usable_size(NULL) != 0)
        FAIL("malloc_usable_size(NULL)");

    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    printf("alloc_check ok\n");
    return 0;
}
