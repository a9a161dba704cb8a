/* SPDX-License-Identifier: BSD-3-Clause */
/* mem, file and dir sources: the contract every source keeps. */
#include <errno.h>
#include <sys/stat.h>
#include "internal.h"
#include "testutil.h"

static char *tmp;

static void setup(void)
{
    tmp = tu_tmpdir();
    ck_assert_ptr_nonnull(tmp);
}

static void teardown(void)
{
    tu_rmrf(tmp);
    free(tmp);
}

/* Writes of odd sizes at odd offsets (crossing 64 KiB boundaries, ending at
 * the end) read back equal; past-the-end calls fail and change nothing. */
static void conformance(struct r3_source *s)
{
    uint64_t size = s->size;
    size_t big = 300000;
    char *buf = malloc(big), *back = malloc(big);
    static const struct { uint64_t off; size_t len; } io[] = {
        { 0, 1 }, { 1, 4095 }, { 4096, 8249 }, { 12345, 777 }, { 13122, 52313 },
        { 65435, 2 }, { 65437, 200099 },
    };
    for (size_t i = 0; i < sizeof io / sizeof io[0]; i++) {
        tu_fill(buf, io[i].len, io[i].off, 7);
        ck_assert_int_eq(r3_source_write(s, buf, io[i].len, io[i].off), 0);
    }
    tu_fill(buf, 4096, size - 4096, 7);
    ck_assert_int_eq(r3_source_write(s, buf, 4096, size - 4096), 0);
    ck_assert_int_eq(r3_source_flush(s), 0);

    /* Read back in different pieces than written. */
    ck_assert_int_eq(r3_source_read(s, back, 265536, 0), 0);
    ck_assert_int_eq(tu_check(back, 265536, 0, 7), -1);
    ck_assert_int_eq(r3_source_read(s, back, 4096, size - 4096), 0);
    ck_assert_int_eq(tu_check(back, 4096, size - 4096, 7), -1);
    ck_assert_int_eq(r3_source_read(s, back, 1, size - 1), 0);
    ck_assert_int_eq(back[0], (char)tu_byte(size - 1, 7));

    /* Past the end: errors, nothing written. */
    memset(buf, 0xAA, 8192);
    ck_assert_int_eq(r3_source_read(s, back, 2, size - 1), -EINVAL);
    ck_assert_int_eq(r3_source_read(s, back, 1, size), -EINVAL);
    ck_assert_int_eq(r3_source_read(s, back, 1, UINT64_MAX), -EINVAL);
    ck_assert_int_eq(r3_source_write(s, buf, 8192, size - 4096), -ENOSPC);
    ck_assert_int_eq(r3_source_write(s, buf, 1, UINT64_MAX - 1), -ENOSPC);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "past the end"));
    ck_assert_int_eq(r3_source_read(s, back, 4096, size - 4096), 0);
    ck_assert_int_eq(tu_check(back, 4096, size - 4096, 7), -1);
    /* A zero-length call is a no-op. */
    ck_assert_int_eq(r3_source_read(s, back, 0, size), 0);
    free(buf);
    free(back);
}

START_TEST(test_mem)
{
    struct r3_source *s;
    TU_OPEN("mem:?size=4M", &s);
    ck_assert_uint_eq(s->size, 4u << 20);
    ck_assert(s->flags & R3_SRC_PARALLEL);
    char z[64] = { 1 };
    ck_assert_int_eq(r3_source_read(s, z, sizeof z, 1 << 20), 0);
    for (size_t i = 0; i < sizeof z; i++)
        ck_assert_int_eq(z[i], 0);
    conformance(s);
    r3_source_close(s);
}
END_TEST

START_TEST(test_file)
{
    char uri[512], path[400];
    struct r3_source *s;
    snprintf(path, sizeof path, "%s/img", tmp);
    snprintf(uri, sizeof uri, "file://%s?size=2M", path);
    TU_OPEN(uri, &s);
    ck_assert_uint_eq(s->size, 2u << 20);
    conformance(s);
    r3_source_close(s);

    /* Reopen without a size: the file's size; the data is there. */
    snprintf(uri, sizeof uri, "file://%s", path);
    TU_OPEN(uri, &s);
    ck_assert_uint_eq(s->size, 2u << 20);
    char b[777];
    ck_assert_int_eq(r3_source_read(s, b, sizeof b, 12345), 0);
    ck_assert_int_eq(tu_check(b, sizeof b, 12345, 7), -1);
    r3_source_close(s);

    /* Read through a different path: plain stdio. */
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 65535, SEEK_SET);
    ck_assert_int_eq(fread(b, 1, 2, f), 2);
    fclose(f);
    ck_assert_int_eq(tu_check(b, 2, 65535, 7), -1);

    /* Read-only: writes refused. */
    snprintf(uri, sizeof uri, "file://%s?readonly=1", path);
    TU_OPEN(uri, &s);
    ck_assert_int_eq(r3_source_write(s, b, 1, 0), -EROFS);
    r3_source_close(s);
}
END_TEST

START_TEST(test_file_errors)
{
    char uri[512], path[400];
    struct r3_source *s;
    struct stat st;
    snprintf(path, sizeof path, "%s/missing/img", tmp);
    snprintf(uri, sizeof uri, "file://%s?size=1M", path);
    ck_assert_int_eq(r3_source_open(uri, &s), -ENOENT);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "directory does not exist"));
    snprintf(path, sizeof path, "%s/nosize", tmp);
    snprintf(uri, sizeof uri, "file://%s", path);
    ck_assert_int_eq(r3_source_open(uri, &s), -ENOENT);
    ck_assert_int_ne(stat(path, &st), 0);          /* nothing created */
    snprintf(uri, sizeof uri, "file://%s?size=0", path);
    ck_assert_int_eq(r3_source_open(uri, &s), -EINVAL);
    ck_assert_int_ne(stat(path, &st), 0);
    ck_assert_int_eq(r3_source_open("file://relative/x?size=1M", &s), -EINVAL);
    snprintf(uri, sizeof uri, "file://%s?size=1M&bogus=1", path);
    ck_assert_int_eq(r3_source_open(uri, &s), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "bogus"));
    ck_assert_int_ne(stat(path, &st), 0);
}
END_TEST

START_TEST(test_dir)
{
    char uri[512], path[400];
    struct r3_source *s;
    snprintf(path, sizeof path, "%s/chunks", tmp);
    snprintf(uri, sizeof uri, "dir://%s?size=8M&chunk=64K", path);
    TU_OPEN(uri, &s);
    conformance(s);
    /* Many chunks: more than the fd cache holds. */
    char *buf = malloc(8u << 20);
    tu_fill(buf, 8u << 20, 0, 9);
    ck_assert_int_eq(r3_source_write(s, buf, 8u << 20, 0), 0);
    ck_assert_int_eq(r3_source_flush(s), 0);
    r3_source_close(s);

    /* Reopened without size: the same bytes. */
    snprintf(uri, sizeof uri, "dir://%s", path);
    TU_OPEN(uri, &s);
    ck_assert_uint_eq(s->size, 8u << 20);
    memset(buf, 0, 8u << 20);
    ck_assert_int_eq(r3_source_read(s, buf, 8u << 20, 0), 0);
    ck_assert_int_eq(tu_check(buf, 8u << 20, 0, 9), -1);
    r3_source_close(s);

    /* One chunk through a different path: the chunk file itself. */
    char cpath[512];
    snprintf(cpath, sizeof cpath, "%s/5", path);
    FILE *f = fopen(cpath, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fread(buf, 1, 65536, f), 65536);
    fclose(f);
    ck_assert_int_eq(tu_check(buf, 65536, 5 * 65536, 9), -1);

    /* A size that contradicts the recorded one is refused. */
    snprintf(uri, sizeof uri, "dir://%s?size=16M", path);
    ck_assert_int_eq(r3_source_open(uri, &s), -EINVAL);
    free(buf);
}
END_TEST

START_TEST(test_dir_missing_chunks)
{
    char uri[512];
    struct r3_source *s;
    snprintf(uri, sizeof uri, "dir://%s/d?size=1M&chunk=4K", tmp);
    TU_OPEN(uri, &s);
    char b[10000];
    memset(b, 0x55, sizeof b);
    ck_assert_int_eq(r3_source_read(s, b, sizeof b, 5000), 0);
    for (size_t i = 0; i < sizeof b; i++)
        ck_assert_int_eq(b[i], 0);
    r3_source_close(s);
}
END_TEST

START_TEST(test_dir_errors)
{
    char uri[512], path[400];
    struct r3_source *s;
    struct stat st;
    snprintf(uri, sizeof uri, "dir://%s/a/b?size=1M", tmp);
    ck_assert_int_eq(r3_source_open(uri, &s), -ENOENT);
    snprintf(path, sizeof path, "%s/d2", tmp);
    snprintf(uri, sizeof uri, "dir://%s?size=1000K&chunk=64K", path);
    ck_assert_int_eq(r3_source_open(uri, &s), -EINVAL);
    ck_assert_int_ne(stat(path, &st), 0);
    snprintf(uri, sizeof uri, "dir://%s", path);
    ck_assert_int_eq(r3_source_open(uri, &s), -ENOENT);
    /* A path below a regular file, and an unwritable place. */
    snprintf(path, sizeof path, "%s/plain", tmp);
    FILE *f = fopen(path, "w");
    fclose(f);
    snprintf(uri, sizeof uri, "dir://%s/sub?size=1M", path);
    ck_assert_int_eq(r3_source_open(uri, &s), -ENOTDIR);
    ck_assert_int_eq(r3_source_open("dir:///proc/r3-no?size=1M", &s) < 0, 1);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "/proc/r3-no"));
    ck_assert_int_eq(r3_source_open("dir:///proc/self?size=1M", &s) < 0, 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sources");
    TCase *tc = tcase_create("sources");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_mem);
    tcase_add_test(tc, test_file);
    tcase_add_test(tc, test_file_errors);
    tcase_add_test(tc, test_dir);
    tcase_add_test(tc, test_dir_missing_chunks);
    tcase_add_test(tc, test_dir_errors);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
