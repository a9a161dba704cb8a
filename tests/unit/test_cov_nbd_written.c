/* SPDX-License-Identifier: BSD-3-Clause */
/* nbd/written.c, the pass-through source of nbd-direct that remembers the
 * chunks written: which chunks a write marks (boundaries, across bitmap
 * words, length 0), take's list (ascending, each once, then forgotten;
 * more than its first allocation), the byte counts, and the migration
 * tracking (START/TAKE/STOP, a second bitmap take never clears, and the
 * refused operations with their sentences). The bytes go through to the
 * inner source, read back there. */
#include <errno.h>
#include "testutil.h"
#include "internal.h"
#include <r3/region.h>
#include "nbd/written.h"

#define CH 65536u

static struct r3_source *open_w(void)
{
    struct r3_source *inner, *w;
    TU_OPEN("mem:?size=10M", &inner);           /* 160 chunks: three bitmap words */
    ck_assert_int_eq(r3_nbd_written_open(inner, CH, &w), 0);
    ck_assert_uint_eq(w->size, 10u << 20);
    return w;
}

static void wr(struct r3_source *w, uint64_t off, size_t len, uint64_t seed)
{
    char *b = malloc(len ? len : 1);
    tu_fill(b, len, off, seed);
    ck_assert_int_eq(r3_source_write(w, b, len, off), 0);
    free(b);
}

static void take_eq(struct r3_source *w, const uint64_t *want, size_t nwant)
{
    uint64_t *l = (void *)1;
    size_t n = 99;
    ck_assert_int_eq(r3_nbd_written_take(w, &l, &n), 0);
    ck_assert_uint_eq(n, nwant);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(l[i] == want[i], "entry %zu: %llu, not %llu", i, (unsigned long long)l[i],
                      (unsigned long long)want[i]);
    if (!n)
        ck_assert_ptr_null(l);
    free(l);
}

START_TEST(marks_and_take)
{
    struct r3_source *inner;
    struct r3_source *w = (void *)1;
    TU_OPEN("mem:?size=1M", &inner);
    ck_assert_int_eq(r3_nbd_written_open(inner, 0, &w), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "chunk 0"), "%s", r3_last_error());
    r3_source_close(inner);

    w = open_w();
    take_eq(w, NULL, 0);                         /* nothing written yet */
    wr(w, 1, 1, 1);                              /* chunk 0 */
    wr(w, 60 * 1024, 200 * 1024, 2);             /* 60K..260K: chunks 0-4 */
    wr(w, 64 * CH - 10, 20, 3);                  /* across the first word's end: 63, 64 */
    wr(w, 159 * CH + CH - 1, 1, 4);              /* the last byte: chunk 159 */
    wr(w, 4 * CH, 0, 5);                         /* length 0: nothing */
    static const uint64_t want[] = { 0, 1, 2, 3, 4, 63, 64, 159 };
    take_eq(w, want, sizeof want / sizeof want[0]);
    take_eq(w, NULL, 0);                         /* forgotten */

    /* more chunks than take's first allocation, each marked twice */
    uint64_t many[150];
    for (size_t i = 0; i < 150; i++) {
        many[i] = i;
        wr(w, i * CH + 1000, 3, 6);
        wr(w, i * CH + 2000, 3, 6);
    }
    take_eq(w, many, 150);

    /* the bytes went through, and were counted */
    struct r3_nbd_written_counts c;
    r3_nbd_written_counts(w, &c);
    ck_assert_uint_eq(c.bytes_written, 1 + 200 * 1024 + 20 + 1 + 150 * 6);
    ck_assert_uint_eq(c.bytes_read, 0);
    char b[200 * 1024];
    ck_assert_int_eq(r3_source_read(w, b, 4096, 64 * CH - 10 + 20), 0);
    ck_assert_int_eq(r3_source_read(w, b, 20, 64 * CH - 10), 0);
    ck_assert_int_eq(tu_check(b, 20, 64 * CH - 10, 3), -1);
    r3_nbd_written_counts(w, &c);
    ck_assert_uint_eq(c.bytes_read, 4096 + 20);
    ck_assert_int_eq(r3_source_flush(w), 0);
    take_eq(w, NULL, 0);                         /* reads mark nothing */
    r3_source_close(w);
}
END_TEST

START_TEST(tracking)
{
    struct r3_source *w = open_w();
    uint64_t *l = NULL;
    size_t n = 0;
    ck_assert_int_eq(r3_nbd_written_track(w, R3_TRACK_TAKE, &l, &n), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "not being tracked"), "%s", r3_last_error());
    wr(w, 3 * CH, 10, 1);                        /* before START: not tracked */
    ck_assert_int_eq(r3_nbd_written_track(w, R3_TRACK_START, NULL, NULL), 0);
    wr(w, 7 * CH, 10, 1);
    wr(w, 70 * CH + CH - 1, 2, 1);               /* 70 and 71 */
    /* take clears its own bitmap, not the tracked one */
    static const uint64_t t1[] = { 3, 7, 70, 71 };
    take_eq(w, t1, 4);
    wr(w, 7 * CH + 5, 10, 1);
    ck_assert_int_eq(r3_nbd_written_track(w, R3_TRACK_TAKE, &l, &n), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert(l[0] == 7 && l[1] == 70 && l[2] == 71);
    free(l);
    /* TAKE again: the same (never cleared) */
    ck_assert_int_eq(r3_nbd_written_track(w, R3_TRACK_TAKE, &l, &n), 0);
    ck_assert_uint_eq(n, 3);
    free(l);
    ck_assert_int_eq(r3_nbd_written_track(w, 99, &l, &n), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "bad track operation 99"), "%s", r3_last_error());
    ck_assert_int_eq(r3_nbd_written_track(w, R3_TRACK_TAKE, NULL, &n), -EINVAL);
    /* START again starts over */
    ck_assert_int_eq(r3_nbd_written_track(w, R3_TRACK_START, NULL, NULL), 0);
    ck_assert_int_eq(r3_nbd_written_track(w, R3_TRACK_TAKE, &l, &n), 0);
    ck_assert_uint_eq(n, 0);
    free(l);
    wr(w, 100 * CH, 1, 1);
    ck_assert_int_eq(r3_nbd_written_track(w, R3_TRACK_TAKE, &l, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert(l[0] == 100);
    free(l);
    /* STOP: TAKE is refused, writes are not tracked */
    ck_assert_int_eq(r3_nbd_written_track(w, R3_TRACK_STOP, NULL, NULL), 0);
    wr(w, 101 * CH, 1, 1);
    ck_assert_int_eq(r3_nbd_written_track(w, R3_TRACK_TAKE, &l, &n), -EINVAL);
    static const uint64_t t2[] = { 7, 100, 101 };
    take_eq(w, t2, 3);
    r3_source_close(w);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("cov_nbd_written");
    TCase *t = tcase_create("written");
    tcase_add_test(t, marks_and_take);
    tcase_add_test(t, tracking);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return tu_run(suite());
}
