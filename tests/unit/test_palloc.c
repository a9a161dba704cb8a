/* SPDX-License-Identifier: BSD-3-Clause */
/* The shim's page allocator over plain memory: alignment, in-place resize,
 * coalescing back to one block, exhaustion, and many threads at once. */
#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>
#include "preload/palloc.h"
#include "testutil.h"

#define PG 4096u
#define LEN (64u << 20)

static void *mem;
static struct r3_palloc pa;

static void setup(void)
{
    mem = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ck_assert_ptr_ne(mem, MAP_FAILED);
    ck_assert_int_eq(r3_palloc_init(&pa, mem, LEN, PG), 0);
}

static void teardown(void)
{
    r3_palloc_destroy(&pa);
    munmap(mem, LEN);
}

/* All memory free again: one block spanning the whole range fits. */
static void assert_all_free(void)
{
    ck_assert_uint_eq(pa.in_use, 0);
    void *p = r3_palloc_alloc(&pa, LEN, 0);
    ck_assert_ptr_eq(p, mem);
    r3_palloc_free(&pa, p);
}

START_TEST(bad_init)
{
    struct r3_palloc b;
    ck_assert_int_eq(r3_palloc_init(&b, (char *)mem + 1, PG * 4, PG), -EINVAL);
    ck_assert_int_eq(r3_palloc_init(&b, mem, PG * 4 + 1, PG), -EINVAL);
    ck_assert_int_eq(r3_palloc_init(&b, mem, 0, PG), -EINVAL);
    ck_assert_int_eq(r3_palloc_init(&b, mem, PG * 4, 3000), -EINVAL);
}
END_TEST

START_TEST(sizes_and_coalescing)
{
    static const size_t sz[] = { 1, 4095, 4096, 4097, 65536, 65537, 1 << 20, 3 << 20, 12345678 };
    void *p[9];
    for (int i = 0; i < 9; i++) {
        p[i] = r3_palloc_alloc(&pa, sz[i], 0);
        ck_assert_ptr_nonnull(p[i]);
        ck_assert(r3_palloc_owns(&pa, p[i]));
        ck_assert_uint_eq((uintptr_t)p[i] % PG, 0);
        size_t u = r3_palloc_usable(&pa, p[i]);
        ck_assert_uint_ge(u, sz[i]);
        ck_assert_uint_lt(u - sz[i], PG);
        tu_fill(p[i], sz[i], 0, (uint32_t)i);
    }
    for (int i = 0; i < 9; i++)
        ck_assert_int_eq(tu_check(p[i], sz[i], 0, (uint32_t)i), -1);
    /* Interior pointers and foreign pointers start no block. */
    ck_assert_uint_eq(r3_palloc_usable(&pa, (char *)p[6] + PG), 0);
    ck_assert_uint_eq(r3_palloc_usable(&pa, (char *)p[6] + 1), 0);
    ck_assert(!r3_palloc_owns(&pa, &pa));
    /* Free in an order that needs left, right and two-sided merges. */
    static const int order[] = { 1, 3, 2, 7, 5, 6, 0, 8, 4 };
    for (int i = 0; i < 9; i++)
        r3_palloc_free(&pa, p[order[i]]);
    ck_assert_uint_eq(pa.nalloc, 9);
    ck_assert_uint_eq(pa.nfree, 9);
    assert_all_free();
}
END_TEST

START_TEST(alignment)
{
    static const size_t al[] = { 1, 16, 4096, 8192, 65536, 1 << 20, 2 << 20, 8 << 20 };
    void *pad = r3_palloc_alloc(&pa, PG, 0);   /* misalign the rest of the range */
    for (int i = 0; i < 8; i++) {
        void *p = r3_palloc_alloc(&pa, 70000, al[i]);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq((uintptr_t)p % (al[i] < PG ? PG : al[i]), 0);
        memset(p, 0x5a, 70000);
        r3_palloc_free(&pa, p);
    }
    r3_palloc_free(&pa, pad);
    assert_all_free();
}
END_TEST

START_TEST(resize_in_place)
{
    char *a = r3_palloc_alloc(&pa, 10 * PG, 0);
    char *b = r3_palloc_alloc(&pa, 10 * PG, 0);
    ck_assert_ptr_eq(b, a + 10 * PG);
    tu_fill(a, 10 * PG, 0, 1);
    /* a cannot grow: b is right behind it. */
    ck_assert(!r3_palloc_resize(&pa, a, 11 * PG));
    /* Shrink a: its tail becomes free, then a grows back into it. */
    ck_assert(r3_palloc_resize(&pa, a, 3 * PG + 1));
    ck_assert_uint_eq(r3_palloc_usable(&pa, a), 4 * PG);
    char *c = r3_palloc_alloc(&pa, 6 * PG, 0);
    ck_assert_ptr_eq(c, a + 4 * PG);
    r3_palloc_free(&pa, c);
    ck_assert(r3_palloc_resize(&pa, a, 10 * PG));
    ck_assert_int_eq(tu_check(a, 4 * PG, 0, 1), -1);
    /* b, last block before the free tail, grows to the end of the range. */
    ck_assert(r3_palloc_resize(&pa, b, LEN - 10 * PG));
    ck_assert(!r3_palloc_resize(&pa, b, LEN - 10 * PG + 1));
    ck_assert_ptr_null(r3_palloc_alloc(&pa, 1, 0));  /* full */
    ck_assert(r3_palloc_resize(&pa, b, PG));
    ck_assert(r3_palloc_resize(&pa, b, PG));         /* same size: nothing to do */
    r3_palloc_free(&pa, a);
    r3_palloc_free(&pa, b);
    assert_all_free();
}
END_TEST

/* calloc's help: the bytes of a block handed out before (they may hold old
 * data) and only those; pages never handed out are fresh, also after a
 * free, a split and an in-place growth. */
START_TEST(fresh_pages)
{
    size_t used;
    char *a = r3_palloc_alloc_fresh(&pa, 4 * PG, 0, &used);
    ck_assert_ptr_eq(a, mem);
    ck_assert_uint_eq(used, 0);
    char *b = r3_palloc_alloc_fresh(&pa, 2 * PG, 0, &used);
    ck_assert_uint_eq(used, 0);
    r3_palloc_free(&pa, a);
    /* a's 4 pages are used; the 2 after b are fresh */
    char *c = r3_palloc_alloc_fresh(&pa, 3 * PG, 0, &used);
    ck_assert_ptr_eq(c, mem);
    ck_assert_uint_eq(used, 3 * PG);
    r3_palloc_free(&pa, b);
    /* one page left of a, b's 2 pages, then fresh ones */
    char *d = r3_palloc_alloc_fresh(&pa, 8 * PG, 0, &used);
    ck_assert_ptr_eq(d, (char *)mem + 3 * PG);
    ck_assert_uint_eq(used, 3 * PG);
    /* d grows in place: those pages are no longer fresh */
    ck_assert(r3_palloc_resize(&pa, d, 12 * PG));
    r3_palloc_free(&pa, d);
    char *e = r3_palloc_alloc_fresh(&pa, 16 * PG, 0, &used);
    ck_assert_ptr_eq(e, (char *)mem + 3 * PG);
    ck_assert_uint_eq(used, 12 * PG);
    r3_palloc_free(&pa, c);
    r3_palloc_free(&pa, e);
    assert_all_free();
}
END_TEST

START_TEST(exhaustion)
{
    ck_assert_ptr_null(r3_palloc_alloc(&pa, LEN + 1, 0));
    void *p[64];
    for (int i = 0; i < 64; i++)
        ck_assert_ptr_nonnull(p[i] = r3_palloc_alloc(&pa, LEN / 64, 0));
    ck_assert_ptr_null(r3_palloc_alloc(&pa, 1, 0));
    ck_assert_uint_eq(pa.peak, LEN);
    /* Free every other one: 1 MiB holes, so 2 MiB does not fit. */
    for (int i = 0; i < 64; i += 2)
        r3_palloc_free(&pa, p[i]);
    ck_assert_ptr_null(r3_palloc_alloc(&pa, LEN / 32, 0));
    for (int i = 1; i < 64; i += 2)
        r3_palloc_free(&pa, p[i]);
    assert_all_free();
}
END_TEST

/* Random alloc/free/resize; each block carries its own pattern, so any
 * overlap between blocks shows as a mismatch. */
struct worker { unsigned seed; int id; long errors; long iters; double deadline; };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *churn(void *arg)
{
    struct worker *w = arg;
    enum { N = 32 };
    char *p[N] = { 0 };
    size_t n[N] = { 0 };
    /* up to 3000 operations, or until the deadline on a slow build (coverage,
     * sanitizers, a loaded machine): the work scales, the test's time does not */
    for (int it = 0; it < 3000 && (it % 64 || now_s() < w->deadline); it++, w->iters++) {
        int i = (int)(rand_r(&w->seed) % N);
        uint32_t tag = (uint32_t)(w->id * 1000 + i);
        if (p[i]) {
            if (tu_check(p[i], n[i], 0, tag) != -1)
                w->errors++;
            if (rand_r(&w->seed) % 3 == 0) {
                size_t m = 1 + rand_r(&w->seed) % (256 * 1024);
                if (r3_palloc_resize(&pa, p[i], m)) {
                    if (m > n[i])
                        tu_fill(p[i] + n[i], m - n[i], n[i], tag);
                    n[i] = m;
                    continue;
                }
            }
            r3_palloc_free(&pa, p[i]);
            p[i] = NULL;
        } else {
            n[i] = 1 + rand_r(&w->seed) % (256 * 1024);
            p[i] = r3_palloc_alloc(&pa, n[i], (size_t)1 << (rand_r(&w->seed) % 18));
            if (!p[i])
                continue;
            tu_fill(p[i], n[i], 0, tag);
        }
    }
    for (int i = 0; i < N; i++)
        if (p[i]) {
            if (tu_check(p[i], n[i], 0, (uint32_t)(w->id * 1000 + i)) != -1)
                w->errors++;
            r3_palloc_free(&pa, p[i]);
        }
    return NULL;
}

START_TEST(many_threads)
{
    enum { T = 8 };
    pthread_t t[T];
    struct worker w[T];
    double deadline = now_s() + 15;      /* well inside the case's 60 s */
    for (int i = 0; i < T; i++) {
        w[i] = (struct worker){ .seed = (unsigned)i * 7919u + 1, .id = i, .deadline = deadline };
        ck_assert_int_eq(pthread_create(&t[i], NULL, churn, &w[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(w[i].errors, 0);
        ck_assert_msg(w[i].iters >= 128, "thread %d did only %ld operations in 15 s", i, w[i].iters);
    }
    ck_assert_uint_eq(pa.nalloc, pa.nfree);
    assert_all_free();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("palloc");
    TCase *tc = tcase_create("palloc");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, bad_init);
    tcase_add_test(tc, sizes_and_coalescing);
    tcase_add_test(tc, alignment);
    tcase_add_test(tc, resize_in_place);
    tcase_add_test(tc, exhaustion);
    tcase_add_test(tc, fresh_pages);
    tcase_add_test(tc, many_threads);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
