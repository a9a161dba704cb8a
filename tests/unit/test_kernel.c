/* SPDX-License-Identifier: BSD-3-Clause */
/* src/kernel: the PAGEMAP_SCAN scanner's behaviour on every answer the
 * kernel can give (played by a fake ioctl: partial results with EAGAIN, no
 * progress, a stall, a hard error), then the real thing: write tracking of
 * a shared file mapping finds exactly the pages written, also when the
 * vector holds one entry. */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include "internal.h"
#include "kernel/kernel.h"
#include "testutil.h"
#include <r3/probe.h>

#define PG 4096ull
#define BASE (1ull << 30)

/* ---- the fake kernel: a script of answers, one per call */
struct answer {
    int err;                      /* 0: success (returns the entries) */
    uint64_t walk_end;            /* written back, as the kernel does */
    unsigned n;                   /* entries written to vec */
    uint64_t runs[4][2];
};

static const struct answer *script;
static unsigned nscript, calls;
static uint64_t starts[32];

static long fake_ioctl(int fd, struct pm_scan_arg *a)
{
    (void)fd;
    /* past the script, the last answer repeats (a kernel that never moves) */
    const struct answer *x = &script[calls < nscript ? calls : nscript - 1];
    starts[calls < 32 ? calls : 31] = a->start;
    calls++;
    struct page_region *v = (struct page_region *)(uintptr_t)a->vec;
    ck_assert_uint_le(x->n, a->vec_len);
    for (unsigned i = 0; i < x->n; i++)
        v[i] = (struct page_region){ x->runs[i][0], x->runs[i][1], PAGE_IS_WRITTEN };
    a->walk_end = x->walk_end;
    if (x->err) {
        errno = x->err;
        return -1;
    }
    return x->n;
}

static uint64_t seen[16][2];
static unsigned nseen;

static void collect(void *arg, uint64_t s, uint64_t e)
{
    (void)arg;
    ck_assert_uint_lt(nseen, 16);
    seen[nseen][0] = s;
    seen[nseen][1] = e;
    nseen++;
}

static int play(const struct answer *a, unsigned n, size_t cap, unsigned stall_ms)
{
    struct r3_pm_scanner s;
    ck_assert_int_eq(r3_pm_scanner_open(&s, cap), 0);
    s.ioctl = fake_ioctl;
    if (stall_ms)
        s.stall_ms = stall_ms;
    script = a;
    nscript = n;
    calls = nseen = 0;
    int rc = r3_pm_scan_written(&s, BASE, BASE + 100 * PG, collect, NULL);
    r3_pm_scanner_close(&s);
    return rc;
}

START_TEST(test_scan_success_walks_on)
{
    /* A full vector: the walk resumes at walk_end until the end. */
    const struct answer a[] = {
        { 0, BASE + 10 * PG, 1, { { BASE + 2 * PG, BASE + 3 * PG } } },
        { 0, BASE + 100 * PG, 1, { { BASE + 50 * PG, BASE + 52 * PG } } },
    };
    ck_assert_int_eq(play(a, 2, 1, 0), 0);
    ck_assert_uint_eq(calls, 2);
    ck_assert_uint_eq(starts[1], BASE + 10 * PG);
    ck_assert_uint_eq(nseen, 2);
    ck_assert_uint_eq(seen[1][0], BASE + 50 * PG);
}
END_TEST

START_TEST(test_scan_eagain_keeps_partial_results)
{
    /* EAGAIN after two entries, walk_end claiming the whole range (the
     * kernel sets it to the end when an error stopped the walk): both
     * entries count, and the walk resumes after the last one, not at the
     * end (else pages 31..99 would never be looked at). */
    const struct answer a[] = {
        { EAGAIN, BASE + 100 * PG, 2, { { BASE, BASE + PG }, { BASE + 20 * PG, BASE + 30 * PG } } },
        { 0, BASE + 100 * PG, 1, { { BASE + 70 * PG, BASE + 71 * PG } } },
    };
    ck_assert_int_eq(play(a, 2, 8, 0), 0);
    ck_assert_uint_eq(calls, 2);
    ck_assert_uint_eq(starts[1], BASE + 30 * PG);
    ck_assert_uint_eq(nseen, 3);
    ck_assert_uint_eq(seen[1][1], BASE + 30 * PG);
    ck_assert_uint_eq(seen[2][0], BASE + 70 * PG);
}
END_TEST

START_TEST(test_scan_no_progress_retries)
{
    /* EINTR/EAGAIN with nothing, then a success that does not advance:
     * all retried from the same start, never a silent early stop. */
    const struct answer a[] = {
        { EAGAIN, 0, 0, { { 0 } } },
        { EINTR, 0, 0, { { 0 } } },
        { 0, BASE, 0, { { 0 } } },
        { 0, BASE + 100 * PG, 1, { { BASE + 99 * PG, BASE + 100 * PG } } },
    };
    ck_assert_int_eq(play(a, 4, 8, 0), 0);
    ck_assert_uint_eq(calls, 4);
    for (unsigned i = 0; i < 4; i++)
        ck_assert_uint_eq(starts[i], BASE);
    ck_assert_uint_eq(nseen, 1);
}
END_TEST

START_TEST(test_scan_stall_gives_up)
{
    /* EAGAIN forever: retried for stall_ms (50 ms here), then an error. */
    static const struct answer a[] = { { EAGAIN, 0, 0, { { 0 } } } };
    uint64_t t0 = r3_now_ns();
    ck_assert_int_eq(play(a, 1, 8, 50), -EAGAIN);
    uint64_t ms = (r3_now_ns() - t0) / 1000000;
    ck_assert_uint_ge(ms, 50);
    ck_assert_uint_lt(ms, 5000);
    ck_assert_uint_gt(calls, 2);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "no progress"));
}
END_TEST

START_TEST(test_scan_hard_error)
{
    const struct answer a[] = { { EPERM, 0, 0, { { 0 } } } };
    ck_assert_int_eq(play(a, 1, 8, 0), -EPERM);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "PAGEMAP_SCAN"));
}
END_TEST

/* ---- the real kernel */
static struct r3_probe pr;

START_TEST(test_track_file_mapping)
{
    if (!pr.file_tracking) {
        fprintf(stderr, "test_track_file_mapping: skipped: %s\n", pr.file_tracking_why);
        return;
    }
    char *dir = tu_tmpdir(), *path;
    ck_assert_int_ge(asprintf(&path, "%s/f", dir), 0);
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    ck_assert_int_ge(fd, 0);
    size_t len = 64 * PG;
    ck_assert_int_eq(ftruncate(fd, (off_t)len), 0);
    uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(m, MAP_FAILED);
    m[PG] = 1;                                  /* written before tracking: not reported */
    struct r3_wp_track *t;
    ck_assert_msg(r3_wp_track_open(m, len, &t) == 0, "%s", r3_last_error());
    m[3 * PG + 1] = 1;
    m[10 * PG] = 2;
    m[11 * PG + 4095] = 3;
    m[40 * PG] = 4;
    nseen = 0;
    ck_assert_int_eq(r3_wp_track_scan(t, collect, NULL), 0);
    uint64_t b = (uintptr_t)m;
    ck_assert_uint_eq(nseen, 3);
    ck_assert_uint_eq(seen[0][0], b + 3 * PG);
    ck_assert_uint_eq(seen[0][1], b + 4 * PG);
    ck_assert_uint_eq(seen[1][0], b + 10 * PG);
    ck_assert_uint_eq(seen[1][1], b + 12 * PG);
    ck_assert_uint_eq(seen[2][0], b + 40 * PG);
    nseen = 0;
    ck_assert_int_eq(r3_wp_track_scan(t, collect, NULL), 0);
    ck_assert_uint_eq(nseen, 0);                 /* protected again by the scan */
    m[63 * PG] = 5;
    ck_assert_int_eq(r3_wp_track_scan(t, collect, NULL), 0);
    ck_assert_uint_eq(nseen, 1);
    ck_assert_uint_eq(seen[0][0], b + 63 * PG);
    r3_wp_track_close(t);
    munmap(m, len);
    close(fd);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* One-entry vector over the real kernel: the walk continues at walk_end. */
struct scanned { uint64_t n, lo, hi; };

static void count(void *arg, uint64_t s, uint64_t e)
{
    struct scanned *c = arg;
    c->n++;
    if (!c->lo)
        c->lo = s;
    c->hi = e;
}

START_TEST(test_track_small_vector)
{
    if (!pr.file_tracking)
        return;
    char *dir = tu_tmpdir(), *path;
    ck_assert_int_ge(asprintf(&path, "%s/g", dir), 0);
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    size_t len = 32 * PG;
    ck_assert_int_eq(ftruncate(fd, (off_t)len), 0);
    uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(m, MAP_FAILED);
    struct r3_wp_track *t;
    ck_assert_msg(r3_wp_track_open(m, len, &t) == 0, "%s", r3_last_error());
    for (unsigned i = 1; i < 32; i += 3)
        m[i * PG] = 1;                           /* 11 separate runs */
    /* a second scanner over the same range, with room for one entry */
    struct r3_pm_scanner s;
    ck_assert_int_eq(r3_pm_scanner_open(&s, 1), 0);
    struct scanned c = { 0 };
    uint64_t b = (uintptr_t)m;
    ck_assert_int_eq(r3_pm_scan_written(&s, b, b + len, count, &c), 0);
    ck_assert_uint_eq(c.n, 11);
    ck_assert_uint_eq(c.lo, b + PG);
    ck_assert_uint_eq(c.hi, b + 32 * PG);
    r3_pm_scanner_close(&s);
    r3_wp_track_close(t);
    munmap(m, len);
    close(fd);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("kernel");
    TCase *tc = tcase_create("kernel");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_scan_success_walks_on);
    tcase_add_test(tc, test_scan_eagain_keeps_partial_results);
    tcase_add_test(tc, test_scan_no_progress_retries);
    tcase_add_test(tc, test_scan_stall_gives_up);
    tcase_add_test(tc, test_scan_hard_error);
    tcase_add_test(tc, test_track_file_mapping);
    tcase_add_test(tc, test_track_small_vector);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    r3_probe(&pr, NULL);
    if (!pr.file_tracking)
        printf("the real-kernel cases are skipped: %s\n", pr.file_tracking_why);
    return tu_run(suite());
}
