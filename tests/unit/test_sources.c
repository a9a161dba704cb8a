/* SPDX-License-Identifier: BSD-3-Clause */
/* mem, file and dir sources: the contract every source keeps; the extent
 * op of dir, redis and s3 (redis-server and s3rver started here when
 * installed) and of the chunk and cache stages. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include "internal.h"
#include "testutil.h"

extern char **environ;

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

    /* A large first write at an odd offset that ends at the end (its pages
     * are made present at once, the first one shared with bytes before it)
     * reads back, and the bytes before it are still zeros. */
    TU_OPEN("mem:?size=1M", &s);
    size_t n = 100001;
    uint64_t off = s->size - n;
    char *buf = malloc(n + 4096), *back = malloc(n + 4096);
    tu_fill(buf, n, off, 9);
    ck_assert_int_eq(r3_source_write(s, buf, n, off), 0);
    ck_assert_int_eq(r3_source_read(s, back, n + 4096, off - 4096), 0);
    for (size_t i = 0; i < 4096; i++)
        ck_assert_int_eq(back[i], 0);
    ck_assert_int_eq(tu_check(back + 4096, n, off, 9), -1);
    free(buf);
    free(back);
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

/* The extent at off: its kind, and its run in *run. */
static int ext(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    *run = 0;
    return r3_source_extent(s, off, len, run);
}

/* A source of 64 chunks (64 KiB) where chunks 2, 3 and 40 hold data (3
 * written as all zeros: it exists, so DATA) and the rest were never
 * written: the runs the extent op gives. */
static void extent_contract(struct r3_source *s)
{
    const uint64_t C = 65536;
    char *buf = malloc(C);
    tu_fill(buf, C, 2 * C, 3);
    ck_assert_int_eq(r3_source_write(s, buf, C, 2 * C), 0);
    memset(buf, 0, C);
    ck_assert_int_eq(r3_source_write(s, buf, C, 3 * C), 0);
    tu_fill(buf, 100, 40 * C + 5, 3);
    ck_assert_int_eq(r3_source_write(s, buf, 100, 40 * C + 5), 0);   /* part of a chunk */
    uint64_t run;
    ck_assert_int_eq(ext(s, 0, 64 * C, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 2 * C);
    ck_assert_int_eq(ext(s, 100, 64 * C - 100, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 2 * C - 100);
    ck_assert_int_eq(ext(s, 2 * C, 62 * C, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 2 * C);
    ck_assert_int_eq(ext(s, 3 * C + 7, 10, &run), R3_EXTENT_DATA);   /* clamped to len */
    ck_assert_uint_eq(run, 10);
    /* a zero run ends where data starts; a source may answer in pieces
     * (up to its batch), so walk it */
    uint64_t off = 4 * C, zero = 0;
    int k;
    while ((k = ext(s, off, 64 * C - off, &run)) == R3_EXTENT_ZERO && off < 40 * C) {
        zero += run;
        off += run;
    }
    ck_assert_uint_eq(off, 40 * C);
    ck_assert_uint_eq(zero, 36 * C);
    ck_assert_int_eq(k, R3_EXTENT_DATA);
    ck_assert_uint_eq(run, C);
    ck_assert_int_eq(ext(s, 63 * C, C, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, C);
    /* bounds like a read */
    ck_assert_int_eq(ext(s, 64 * C, 1, &run), -EINVAL);
    ck_assert_int_eq(ext(s, 0, 0, &run), -EINVAL);
    /* what the extent says zero reads as zeros */
    memset(buf, 0x77, C);
    ck_assert_int_eq(r3_source_read(s, buf, C, 10 * C), 0);
    for (size_t i = 0; i < C; i++)
        ck_assert_int_eq(buf[i], 0);
    free(buf);
}

START_TEST(test_dir_extent)
{
    char uri[512];
    struct r3_source *s;
    snprintf(uri, sizeof uri, "dir://%s/x?size=4M&chunk=64K", tmp);
    TU_OPEN(uri, &s);
    extent_contract(s);
    r3_source_close(s);
    /* an empty chunk file is zero too */
    char path[512];
    snprintf(path, sizeof path, "%s/x/2", tmp);
    ck_assert_int_eq(truncate(path, 0), 0);
    snprintf(uri, sizeof uri, "dir://%s/x", tmp);
    TU_OPEN(uri, &s);
    uint64_t run;
    ck_assert_int_eq(ext(s, 0, 4u << 20, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 3 * 65536);
    r3_source_close(s);
}
END_TEST

/* The cache answers from its chunk states; chunks it knows nothing of are
 * one question to the remote; the chunk stage rounds to whole chunks. */
START_TEST(test_stage_extent)
{
    char uri[512];
    struct r3_source *s;
    const uint64_t C = 65536;
    snprintf(uri, sizeof uri, "dir://%s/y?size=4M&chunk=64K", tmp);
    TU_OPEN(uri, &s);
    char *buf = malloc(4 * C);
    tu_fill(buf, C, 5 * C, 4);
    ck_assert_int_eq(r3_source_write(s, buf, C, 5 * C), 0);
    struct r3_pipeline *p;
    struct r3_pipeline_opts o = { .struct_size = sizeof o, .chunk = 2 * C };   /* 128 KiB */
    ck_assert_int_eq(r3_pipeline_open(s, &o, &p), 0);
    uint64_t run;
    /* nothing local yet: the remote through the chunk stage (chunk 2 =
     * source chunks 4 and 5, only 5 written: data) */
    ck_assert_int_eq(ext(p->top, 0, 4u << 20, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 4 * C);
    ck_assert_int_eq(ext(p->top, 4 * C + 3, C, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, C);
    /* a read fetches: chunk 0 becomes zero without a copy, chunk 2 data */
    memset(buf, 0x33, 4 * C);
    ck_assert_int_eq(r3_source_read(p->top, buf, 4 * C, 2 * C), 0);   /* chunks 1 and 2 */
    for (size_t i = 0; i < 3 * C; i++)
        ck_assert_int_eq(buf[i], 0);
    ck_assert_int_eq(tu_check(buf + 3 * C, C, 5 * C, 4), -1);
    ck_assert_int_eq(r3_cache_is_zero(p->cache, 1), 1);
    ck_assert_int_eq(r3_cache_is_local(p->cache, 1), 1);
    ck_assert_int_eq(r3_cache_is_zero(p->cache, 2), 0);
    ck_assert_int_eq(r3_cache_is_local(p->cache, 2), 1);
    ck_assert_uint_eq(r3_cache_nlocal(p->cache), 2);
    /* what the cache holds it answers itself, even if the remote changes */
    tu_fill(buf, C, 2 * C, 4);
    ck_assert_int_eq(r3_source_write(s, buf, C, 2 * C), 0);         /* behind the cache */
    ck_assert_int_eq(ext(p->top, 2 * C, 2 * C, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 2 * C);
    ck_assert_int_eq(ext(p->top, 4 * C, 8 * C, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 2 * C);
    /* a partial write into a zero chunk: it becomes data, the rest stays zero */
    memset(buf, 0x11, 10);
    ck_assert_int_eq(r3_source_write(p->top, buf, 10, 2 * C + 100), 0);
    ck_assert_int_eq(r3_cache_is_zero(p->cache, 1), 0);
    ck_assert_int_eq(ext(p->top, 2 * C, 2 * C, &run), R3_EXTENT_DATA);
    memset(buf, 0x33, 2 * C);
    ck_assert_int_eq(r3_source_read(p->top, buf, 2 * C, 2 * C), 0);
    for (size_t i = 0; i < 2 * C; i++)
        ck_assert_int_eq(buf[i], i >= 100 && i < 110 ? 0x11 : 0);
    /* invalidated: asked again (the write-through wrote chunk 1 to the remote) */
    ck_assert_int_eq(r3_cache_invalidate(p->cache, 1), 0);
    ck_assert_int_eq(ext(p->top, 2 * C, 2 * C, &run), R3_EXTENT_DATA);
    r3_pipeline_close(p);
    free(buf);
}
END_TEST

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Start a server listening on port (output to /dev/null); 0 if it is not
 * installed, else its pid once the port answers. */
static pid_t server(char *const argv[], int port)
{
    char which[256];
    snprintf(which, sizeof which, "command -v %s >/dev/null 2>&1", argv[0]);
    if (system(which) != 0)
        return 0;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    ck_assert_int_eq(posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; i < 600 && !port_open(port); i++)
        usleep(50000);
    ck_assert_msg(port_open(port), "%s did not listen on %d", argv[0], port);
    return pid;
}

static void server_stop(pid_t pid)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

START_TEST(test_redis_extent)
{
    int port = free_port();
    char ps[16], uri[256];
    snprintf(ps, sizeof ps, "%d", port);
    char *argv[] = { "redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", tmp, NULL };
    pid_t pid = server(argv, port);
    if (!pid)
        return;                                /* not installed: the integration tests say so */
    struct r3_source *s = NULL;
    snprintf(uri, sizeof uri, "redis://127.0.0.1:%d/e?size=4M&chunk=64K", port);
    for (int i = 0; i < 50 && r3_source_open(uri, &s) < 0; i++)
        usleep(100000);                        /* LOADING just after the start */
    ck_assert_ptr_nonnull(s);
    extent_contract(s);
    r3_source_close(s);
    server_stop(pid);
}
END_TEST

START_TEST(test_s3_extent)
{
    int port = free_port();
    char ps[16], uri[256], dir[512];
    snprintf(ps, sizeof ps, "%d", port);
    snprintf(dir, sizeof dir, "%s/s3", tmp);
    mkdir(dir, 0700);
    char *argv[] = { "s3rver", "-d", dir, "-a", "127.0.0.1", "-p", ps, "-s",
                     "--configure-bucket", "bk", NULL };
    pid_t pid = server(argv, port);
    if (!pid)
        return;
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    struct r3_source *s;
    snprintf(uri, sizeof uri, "s3://bk/e?endpoint=http://127.0.0.1:%d&size=4M&chunk=64K", port);
    TU_OPEN(uri, &s);
    extent_contract(s);
    r3_source_close(s);
    server_stop(pid);
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
    tcase_add_test(tc, test_dir_extent);
    tcase_add_test(tc, test_stage_extent);
    tcase_add_test(tc, test_redis_extent);
    tcase_add_test(tc, test_s3_extent);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
