/* SPDX-License-Identifier: BSD-3-Clause */
/* The file:, dir: and mem: sources' refusals at open, each with its
 * sentence and without leaving anything behind (a file or directory a
 * failed open created is removed): other hosts, relative paths, size 0, a
 * missing parent, something that is not a file or directory, a read-only
 * file smaller than size=, an empty file without size=, a file that cannot
 * grow that far; a directory whose metadata disagrees, is corrupt, empty or
 * cannot be written. And the file source's extents around a hole, read
 * back against what was written. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>
#include "testutil.h"
#include "internal.h"

#define ERR_IS(want) ck_assert_msg(strcmp(r3_last_error(), (want)) == 0, "error: '%s', not '%s'", \
                                   r3_last_error(), (want))

static char *tmp;
static void setup(void) { tmp = tu_tmpdir(); ck_assert_ptr_nonnull(tmp); }
static void teardown(void) { tu_rmrf(tmp); free(tmp); }

static int open_fmt(struct r3_source **s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int open_fmt(struct r3_source **s, const char *fmt, ...)
{
    char uri[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(uri, sizeof uri, fmt, ap);
    va_end(ap);
    *s = (void *)1;
    int rc = r3_source_open(uri, s);
    if (rc < 0)
        ck_assert_ptr_null(*s);
    return rc;
}

static void put(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

START_TEST(file_refusals)
{
    struct r3_source *s;
    char p[600], want[1400];
    ck_assert_int_eq(open_fmt(&s, "file://elsewhere%s/f?size=1M", tmp), -EINVAL);
    ERR_IS("file: host 'elsewhere' is not supported (write file:///path)");
    ck_assert_int_eq(open_fmt(&s, "file:relative?size=1M"), -EINVAL);
    ERR_IS("file: needs an absolute path (file:///path)");
    ck_assert_int_eq(open_fmt(&s, "file://%s/f?size=0", tmp), -EINVAL);
    ERR_IS("file: size must be greater than 0");
    snprintf(p, sizeof p, "%s/f", tmp);
    ck_assert(!exists(p));

    ck_assert_int_eq(open_fmt(&s, "file://%s/no/f?size=1M", tmp), -ENOENT);
    snprintf(want, sizeof want, "file: cannot create %s/no/f: the directory does not exist", tmp);
    ERR_IS(want);
    ck_assert_int_eq(open_fmt(&s, "file://%s/f", tmp), -ENOENT);
    snprintf(want, sizeof want, "file: %s/f does not exist (give ?size= to create it)", tmp);
    ERR_IS(want);
    ck_assert_int_eq(open_fmt(&s, "file://%s/f?readonly=1&size=1M", tmp), -ENOENT);   /* never created */
    ck_assert(!exists(p));

    ck_assert_int_eq(open_fmt(&s, "file:///dev/null"), -EINVAL);
    ERR_IS("file: /dev/null is not a regular file or block device");

    snprintf(p, sizeof p, "%s/small", tmp);
    put(p, "0123456789");
    ck_assert_int_eq(open_fmt(&s, "file://%s/small/below?size=1M", tmp), -ENOTDIR);
    snprintf(want, sizeof want, "file: cannot open %s/small/below: %s", tmp, strerror(ENOTDIR));
    ERR_IS(want);
    ck_assert_int_eq(open_fmt(&s, "file://%s?readonly=1&size=1M", p), -EINVAL);
    snprintf(want, sizeof want, "file: %s is 10 bytes, smaller than size=1048576", p);
    ERR_IS(want);
    /* read-only and no size: the file's; writes refused, reads past its end are zeros */
    ck_assert_int_eq(open_fmt(&s, "file://%s?readonly=1", p), 0);
    ck_assert_uint_eq(s->size, 10);
    ck_assert_int_eq(r3_source_write(s, "x", 1, 0), -EROFS);
    char b[10];
    ck_assert_int_eq(r3_source_read(s, b, 10, 0), 0);
    ck_assert(memcmp(b, "0123456789", 10) == 0);
    r3_source_close(s);

    snprintf(p, sizeof p, "%s/empty", tmp);
    put(p, "");
    ck_assert_int_eq(open_fmt(&s, "file://%s", p), -EINVAL);
    snprintf(want, sizeof want, "file: %s is empty; give its size (?size=1G)", p);
    ERR_IS(want);
    ck_assert(exists(p));                        /* not ours: kept */

    /* too large to grow to: the file the open created is removed again */
    snprintf(p, sizeof p, "%s/huge", tmp);
    int rc = open_fmt(&s, "file://%s?size=4194304T", p);
    ck_assert_int_lt(rc, 0);
    snprintf(want, sizeof want, "file: cannot grow %s to 4611686018427387904 bytes: ", p);
    ck_assert_msg(strncmp(r3_last_error(), want, strlen(want)) == 0, "%s", r3_last_error());
    ck_assert(!exists(p));
}
END_TEST

START_TEST(file_extents)
{
    struct r3_source *s;
    char p[600];
    snprintf(p, sizeof p, "%s/sparse", tmp);
    ck_assert_int_eq(open_fmt(&s, "file://%s?size=1M", p), 0);
    char blk[4096];
    tu_fill(blk, sizeof blk, 512 * 1024, 3);
    ck_assert_int_eq(r3_source_write(s, blk, sizeof blk, 512 * 1024), 0);
    ck_assert_int_eq(r3_source_flush(s), 0);
    uint64_t run = 0;
    ck_assert_int_eq(r3_source_extent(s, 0, 1 << 20, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 512 * 1024);
    ck_assert_int_eq(r3_source_extent(s, 0, 4096, &run), R3_EXTENT_ZERO);    /* the hole goes on */
    ck_assert_uint_eq(run, 4096);
    ck_assert_int_eq(r3_source_extent(s, 512 * 1024, 1 << 19, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 4096);
    ck_assert_int_eq(r3_source_extent(s, 512 * 1024, 100, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 100);
    ck_assert_int_eq(r3_source_extent(s, 768 * 1024, 4096, &run), R3_EXTENT_ZERO);  /* no data after */
    ck_assert_uint_eq(run, 4096);
    memset(blk, 0, sizeof blk);
    ck_assert_int_eq(r3_source_read(s, blk, sizeof blk, 512 * 1024), 0);
    ck_assert_int_eq(tu_check(blk, sizeof blk, 512 * 1024, 3), -1);
    ck_assert_int_eq(r3_file_source_fd(s) >= 0, 1);
    r3_source_close(s);
    struct r3_source *m;
    TU_OPEN("mem:?size=1M", &m);
    ck_assert_int_eq(r3_file_source_fd(m), -1);
    r3_source_close(m);
}
END_TEST

START_TEST(dir_refusals)
{
    struct r3_source *s;
    char p[600], q[700], want[1600];
    ck_assert_int_eq(open_fmt(&s, "dir:relative?size=1M"), -EINVAL);
    ERR_IS("dir: needs an absolute path (dir:///path?size=1G)");
    ck_assert_int_eq(open_fmt(&s, "dir://%s/d", tmp), -ENOENT);
    snprintf(want, sizeof want, "dir: %s/d does not exist (give ?size= to create it)", tmp);
    ERR_IS(want);
    ck_assert_int_eq(open_fmt(&s, "dir://%s/no/d?size=1M", tmp), -ENOENT);
    snprintf(want, sizeof want, "dir: cannot create %s/no/d: %s", tmp, strerror(ENOENT));
    ERR_IS(want);
    snprintf(p, sizeof p, "%s/file", tmp);
    put(p, "x");
    ck_assert_int_eq(open_fmt(&s, "dir://%s?size=1M", p), -ENOTDIR);
    snprintf(want, sizeof want, "dir: cannot open %s: %s", p, strerror(ENOTDIR));
    ERR_IS(want);

    /* made with size and chunk; opened again with others */
    snprintf(p, sizeof p, "%s/d", tmp);
    ck_assert_int_eq(open_fmt(&s, "dir://%s?size=1M&chunk=64K", p), 0);
    ck_assert_int_eq(r3_source_write(s, "abc", 3, 70000), 0);
    r3_source_close(s);
    ck_assert_int_eq(open_fmt(&s, "dir://%s?size=2M", p), -EINVAL);
    snprintf(want, sizeof want, "dir: %s holds 1048576 bytes, not size=2097152", p);
    ERR_IS(want);
    ck_assert_int_eq(open_fmt(&s, "dir://%s?chunk=128K", p), -EINVAL);
    snprintf(want, sizeof want, "dir: %s uses chunk 65536, not chunk=131072", p);
    ERR_IS(want);
    ck_assert_int_eq(open_fmt(&s, "dir://%s", p), 0);          /* the metadata's size and chunk */
    ck_assert_uint_eq(s->size, 1u << 20);
    char b[3];
    ck_assert_int_eq(r3_source_read(s, b, 3, 70000), 0);
    ck_assert(memcmp(b, "abc", 3) == 0);
    r3_source_close(s);

    /* metadata that is corrupt, empty, or in the way */
    static const char *const corrupt[] = { "1048576 1000\n", "1048576 2048\n", "0 65536\n",
                                           "1000000 65536\n", "1048576 2147483648\n" };
    snprintf(q, sizeof q, "%s/r3dir.meta", p);
    for (size_t i = 0; i < sizeof corrupt / sizeof corrupt[0]; i++) {
        put(q, corrupt[i]);
        ck_assert_msg(open_fmt(&s, "dir://%s", p) == -EINVAL, "meta '%s' accepted", corrupt[i]);
        snprintf(want, sizeof want, "dir: %s/r3dir.meta is corrupt", p);
        ERR_IS(want);
    }
    put(q, "");
    ck_assert_int_eq(open_fmt(&s, "dir://%s", p), -EINVAL);
    snprintf(want, sizeof want, "dir: %s/r3dir.meta is unreadable or corrupt", p);
    ERR_IS(want);
    put(q, "words, not numbers\n");
    ck_assert_int_eq(open_fmt(&s, "dir://%s", p), -EINVAL);
    ERR_IS(want);

    /* a directory that is not an r3 one; one whose metadata cannot be written */
    snprintf(p, sizeof p, "%s/plain", tmp);
    ck_assert_int_eq(mkdir(p, 0755), 0);
    ck_assert_int_eq(open_fmt(&s, "dir://%s", p), -EINVAL);
    snprintf(want, sizeof want, "dir: %s is not an r3 directory (give ?size= to make it one)", p);
    ERR_IS(want);
    snprintf(q, sizeof q, "%s/r3dir.meta.tmp", p);
    ck_assert_int_eq(mkdir(q, 0755), 0);
    ck_assert_int_eq(open_fmt(&s, "dir://%s?size=1M", p), -EISDIR);
    snprintf(want, sizeof want, "dir: cannot write to %s: %s", p, strerror(EISDIR));
    ERR_IS(want);
    ck_assert(exists(p));                        /* not made by the open: kept */
}
END_TEST

START_TEST(mem_refusals)
{
    struct r3_source *s;
    ck_assert_int_eq(open_fmt(&s, "mem://host?size=1M"), -EINVAL);
    ERR_IS("mem: takes no host or path (write mem:?size=1G)");
    ck_assert_int_eq(open_fmt(&s, "mem:/some/path?size=1M"), -EINVAL);
    ERR_IS("mem: takes no host or path (write mem:?size=1G)");
    ck_assert_int_eq(open_fmt(&s, "nosuch:?size=1M"), -EINVAL);
    ERR_IS("URI 'nosuch:?size=1M': unknown scheme 'nosuch'");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cov_src_sources");
    TCase *tc = tcase_create("sources");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, file_refusals);
    tcase_add_test(tc, file_extents);
    tcase_add_test(tc, dir_refusals);
    tcase_add_test(tc, mem_refusals);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
