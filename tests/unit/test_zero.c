/* SPDX-License-Identifier: BSD-3-Clause */
/* Zeros never move (issue 14): the extent op of file (holes) and mem
 * (granules never written); a uffd region over a sparse file reads zeros in
 * the holes and data elsewhere, maps zero chunks without reading them, and
 * still writes back what is written there; the write-back of a region moves
 * only the page runs written, counted at the source. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include "testutil.h"
#include "internal.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir();
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

/* A sparse file of size bytes with pattern data (seed) in [d0, d1) and
 * [d2, d3); holes elsewhere. */
static char *sparse_file(const char *name, uint64_t size, uint64_t d0, uint64_t d1, uint64_t d2,
                         uint64_t d3)
{
    char *path;
    ck_assert_int_ge(asprintf(&path, "%s/%s", dir, name), 0);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
    uint64_t r[2][2] = { { d0, d1 }, { d2, d3 } };
    for (int i = 0; i < 2; i++) {
        if (r[i][1] <= r[i][0])
            continue;
        size_t n = (size_t)(r[i][1] - r[i][0]);
        uint8_t *b = malloc(n);
        tu_fill(b, n, r[i][0], 7);
        ck_assert_int_eq(r3_pwrite_all(fd, b, n, r[i][0]), 0);
        free(b);
    }
    ck_assert_int_eq(fsync(fd), 0);
    close(fd);
    return path;
}

static struct r3_source *open_file(const char *path)
{
    char *uri;
    struct r3_source *s;
    ck_assert_int_ge(asprintf(&uri, "file://%s", path), 0);
    TU_OPEN(uri, &s);
    free(uri);
    return s;
}

/* Does this file system report holes at all? (tmpfs, ext4, xfs do) */
static bool has_holes(const char *path)
{
    int fd = open(path, O_RDONLY);
    off_t d = lseek(fd, 0, SEEK_DATA);
    close(fd);
    return d != 0;
}

START_TEST(test_file_extent)
{
    char *path = sparse_file("a.img", 8 * MiB, 2 * MiB, 3 * MiB, 0, 0);
    if (!has_holes(path)) {
        free(path);
        return;                       /* no holes here: DATA everywhere is right */
    }
    struct r3_source *s = open_file(path);
    uint64_t run = 0;
    ck_assert_int_eq(r3_source_extent(s, 0, 8 * MiB, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 2 * MiB);
    ck_assert_int_eq(r3_source_extent(s, 2 * MiB, 6 * MiB, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 1 * MiB);
    ck_assert_int_eq(r3_source_extent(s, 3 * MiB, 5 * MiB, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 5 * MiB);
    /* a query shorter than the hole ends at the query */
    ck_assert_int_eq(r3_source_extent(s, 4 * MiB, 64 * KiB, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 64 * KiB);
    /* a write fills the hole: data from then on */
    uint8_t b[4096];
    memset(b, 1, sizeof b);
    ck_assert_int_eq(r3_source_write(s, b, sizeof b, 6 * MiB), 0);
    ck_assert_int_eq(r3_source_extent(s, 6 * MiB, 4096, &run), R3_EXTENT_DATA);
    ck_assert_int_eq(r3_source_extent(s, 3 * MiB, 5 * MiB, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 3 * MiB);
    r3_source_close(s);
    free(path);
}
END_TEST

START_TEST(test_mem_extent)
{
    struct r3_source *s;
    TU_OPEN("mem:?size=16M", &s);
    uint64_t run = 0;
    ck_assert_int_eq(r3_source_extent(s, 0, 16 * MiB, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 16 * MiB);
    uint8_t b[100];
    memset(b, 9, sizeof b);
    ck_assert_int_eq(r3_source_write(s, b, sizeof b, 5 * MiB + 10), 0);
    ck_assert_int_eq(r3_source_extent(s, 0, 16 * MiB, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 5 * MiB);
    ck_assert_int_eq(r3_source_extent(s, 5 * MiB, 11 * MiB, &run), R3_EXTENT_DATA);
    ck_assert_uint_ge(run, 100);
    ck_assert_uint_le(run, 64 * KiB);
    uint64_t z = 5 * MiB + run;
    ck_assert_int_eq(r3_source_extent(s, z, 16 * MiB - z, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 16 * MiB - z);
    /* a read never makes data */
    ck_assert_int_eq(r3_source_read(s, b, sizeof b, 9 * MiB), 0);
    ck_assert_int_eq(r3_source_extent(s, 9 * MiB, 4096, &run), R3_EXTENT_ZERO);
    r3_source_close(s);
}
END_TEST

/* A region over a sparse file: zeros where the holes are, the data where
 * it is (compared with the file read plainly); the holes' chunks are
 * mapped as zero pages with no read; a write into one of them still goes
 * back to the file at sync, and nothing else does. */
START_TEST(test_region_sparse)
{
    const uint64_t size = 32 * MiB;
    char *path = sparse_file("b.img", size, 1 * MiB, 1 * MiB + 200 * KiB, 20 * MiB, 21 * MiB);
    struct r3_source *s = open_file(path);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    struct r3_region *r;
    ck_assert_msg(r3_region_open(&o, s, &r) == 0, "region: %s", r3_last_error());
    uint8_t *plain = malloc(size);
    int fd = open(path, O_RDONLY);
    ck_assert_int_eq(r3_pread_all(fd, plain, size, 0), 0);
    close(fd);
    ck_assert_msg(memcmp(r->base, plain, size) == 0, "the region differs from the file");
    /* and the holes really are zeros, the data the pattern */
    const uint8_t *b = r->base;
    ck_assert_uint_eq(b[0], 0);
    ck_assert_uint_eq(b[size - 1], 0);
    ck_assert_int_eq(tu_check(b + 1 * MiB, 200 * KiB, 1 * MiB, 7), -1);
    ck_assert_int_eq(tu_check(b + 20 * MiB, 1 * MiB, 20 * MiB, 7), -1);
    struct r3_region_stats st;
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    if (has_holes(path)) {
        /* 32 MiB of 64 KiB chunks, 20 hold data (1 MiB + 200 KiB spans 4) */
        ck_assert_uint_ge(st.chunks_zero, 512 - 16 - 4);
        ck_assert_uint_le(st.bytes_pulled, 2 * MiB);
    }
    /* written into a zero chunk (and one data chunk): only those go back */
    uint8_t *w = r->base;
    w[10 * MiB + 5] = 0xab;
    w[20 * MiB + 4096] = 0xcd;
    ck_assert_msg(r3_region_sync(r) == 0, "sync: %s", r3_last_error());
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    char why[256];
    if (r3t_missing("wp-async", why, sizeof why) == 0 && r3t_missing("pagemap-scan", why, sizeof why) == 0)
        ck_assert_uint_eq(st.bytes_pushed, 2 * 4096);
    ck_assert_int_eq(r3_region_close(r), 0);
    fd = open(path, O_RDONLY);
    ck_assert_int_eq(r3_pread_all(fd, plain, size, 0), 0);
    close(fd);
    ck_assert_uint_eq(plain[10 * MiB + 5], 0xab);
    ck_assert_uint_eq(plain[10 * MiB + 4], 0);
    ck_assert_uint_eq(plain[20 * MiB + 4096], 0xcd);
    ck_assert_int_eq(tu_check(plain + 20 * MiB, 4096, 20 * MiB, 7), -1);
    free(plain);
    free(path);
}
END_TEST

/* ---- a counting stage: bytes and calls that reach the source */
struct counting {
    struct r3_source src;
    _Atomic uint64_t bytes, writes;
};

static int count_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct counting *c = (struct counting *)s;
    atomic_fetch_add(&c->bytes, len);
    atomic_fetch_add(&c->writes, 1);
    return r3_source_write(s->next, buf, len, off);
}

static const struct r3_source_ops counting_ops = { .scheme = "counting", .write = count_write };

/* 1% of the pages of a region written: the write-back moves those pages
 * (in runs), not their chunks; the source then equals the region, read
 * back through the source itself. */
static void written_pages(bool zero_fill, bool hash)
{
    const uint64_t size = 64 * MiB, pg = 4096, npages = size / pg;
    struct r3_source *mem;
    TU_OPEN("mem:?size=64M", &mem);
    struct counting *c = calloc(1, sizeof *c);
    r3_stage_init(&c->src, &counting_ops, mem);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.uffd_no_zero_fill = !zero_fill;
    o.uffd_no_wp_async = hash;
    struct r3_region *r;
    ck_assert_msg(r3_region_open(&o, &c->src, &r) == 0, "region: %s", r3_last_error());
    uint8_t *b = r->base;
    uint64_t x = 12345, written = 0;
    uint8_t *hit = calloc(npages, 1);
    for (uint64_t i = 0; i < npages / 100; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t p = (x >> 33) % npages;
        b[p * pg + (x & 4095)] = (uint8_t)(x >> 8) | 1;
        if (!hit[p]++)
            written++;
    }
    ck_assert_msg(r3_region_sync(r) == 0, "sync: %s", r3_last_error());
    uint64_t moved = atomic_load(&c->bytes);
    char why[256];
    if (!hash && r3t_missing("wp-async", why, sizeof why) == 0 &&
        r3t_missing("pagemap-scan", why, sizeof why) == 0)
        ck_assert_msg(moved == written * pg, "%llu bytes written back for %llu written pages",
                      (unsigned long long)moved, (unsigned long long)written);
    else                          /* found by hashing chunks: whole chunks go */
        ck_assert_uint_ge(moved, written * pg);
    /* a second sync with nothing new moves nothing */
    ck_assert_msg(r3_region_sync(r) == 0, "sync: %s", r3_last_error());
    ck_assert_uint_eq(atomic_load(&c->bytes), moved);
    /* the source equals the region (another path: the source's own read) */
    uint8_t *back = malloc(size);
    ck_assert_int_eq(r3_source_read(mem, back, size, 0), 0);
    ck_assert_msg(memcmp(back, r->base, size) == 0, "the source differs from the region");
    ck_assert_int_eq(r3_region_close(r), 0);
    free(back);
    free(hit);
}

START_TEST(test_written_pages)
{
    written_pages(true, false);
}
END_TEST

/* Without WP_ASYNC (hashing chunks): whole changed chunks go, and the
 * source still equals the region. */
START_TEST(test_written_pages_hash)
{
    written_pages(true, true);
}
END_TEST

START_TEST(test_written_pages_no_zero_fill)
{
    written_pages(false, false);
}
END_TEST

/* Zero pages stay tracked: every page of a zero chunk written later is
 * written back, and the chunks left alone are not. */
START_TEST(test_zero_chunk_writes)
{
    struct r3_source *mem;
    TU_OPEN("mem:?size=8M", &mem);
    struct counting *c = calloc(1, sizeof *c);
    r3_stage_init(&c->src, &counting_ops, mem);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    struct r3_region *r;
    ck_assert_msg(r3_region_open(&o, &c->src, &r) == 0, "region: %s", r3_last_error());
    uint8_t *b = r->base;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < 8 * MiB; i += 512)
        sum += b[i];                  /* every chunk mapped as zeros */
    ck_assert_uint_eq(sum, 0);
    struct r3_region_stats st;
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_eq(st.chunks_zero, 128);
    ck_assert_uint_eq(st.bytes_pulled, 0);
    ck_assert_msg(r3_region_sync(r) == 0, "sync: %s", r3_last_error());
    ck_assert_uint_eq(atomic_load(&c->bytes), 0);        /* read only: nothing back */
    memset(b + 3 * MiB, 0x5a, 3 * 4096);
    b[7 * MiB + 100] = 1;
    ck_assert_msg(r3_region_sync(r) == 0, "sync: %s", r3_last_error());
    char why[256];
    if (r3t_missing("wp-async", why, sizeof why) == 0 && r3t_missing("pagemap-scan", why, sizeof why) == 0)
        ck_assert_uint_eq(atomic_load(&c->bytes), 4 * 4096);
    else
        ck_assert_uint_eq(atomic_load(&c->bytes), 2 * 64 * 1024);   /* two chunks, hashed */
    uint8_t back[3 * 4096];
    ck_assert_int_eq(r3_source_read(mem, back, sizeof back, 3 * MiB), 0);
    for (size_t i = 0; i < sizeof back; i++)
        ck_assert_uint_eq(back[i], 0x5a);
    ck_assert_int_eq(r3_source_read(mem, back, 1, 7 * MiB + 100), 0);
    ck_assert_uint_eq(back[0], 1);
    ck_assert_int_eq(r3_region_close(r), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("zero");
    TCase *t = tcase_create("zero");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_file_extent);
    tcase_add_test(t, test_mem_extent);
    suite_add_tcase(s, t);
    TCase *u = tcase_create("uffd");
    tcase_add_checked_fixture(u, setup, teardown);
    tcase_set_timeout(u, 120);
    tcase_add_test(u, test_region_sparse);
    tcase_add_test(u, test_written_pages);
    tcase_add_test(u, test_written_pages_no_zero_fill);
    tcase_add_test(u, test_written_pages_hash);
    tcase_add_test(u, test_zero_chunk_writes);
    suite_add_tcase(s, u);
    return s;
}

int main(void)
{
    char why[256];
    if (r3t_missing("uffd", why, sizeof why) == 1) {
        printf("SKIP: %s\n", why);
        return 77;
    }
    return tu_run(suite());
}
