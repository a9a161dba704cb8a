/* SPDX-License-Identifier: BSD-3-Clause */
/* uffd paths whose tests elsewhere end in a process killed by SIGBUS (so
 * nothing of what ran is known, not even the sentence): here the child
 * catches the SIGBUS, checks what the region told its on_error hook (once,
 * with the chunk, the offset and the source's own sentence), checks that
 * the rest of the region still works, closes it and exits normally. With
 * and without UFFDIO_POISON, with the faulting-page-first path (a source
 * named like a memory-speed one) and without; and a fault at memory moved
 * away by mremap. Plus the open's refusals of a chunk below the page size
 * and of an unknown prefetch order. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include "testutil.h"
#include "internal.h"

#define MiB (1024ull * 1024)
#define FAIL_AT (2 * MiB)        /* the source fails from here on */

/* ---- a source that serves pattern 13 below FAIL_AT and fails above */

struct half_source { struct r3_source src; };

static int half_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    (void)s;
    if (off + len > FAIL_AT)
        return r3_error(-EIO, "test: the source fails at %llu", (unsigned long long)off);
    tu_fill(buf, len, off, 13);
    return 0;
}

static int half_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    (void)s; (void)buf; (void)len; (void)off;
    return r3_error(-EIO, "test: no writes");
}

static int half_flush(struct r3_source *s)
{
    (void)s;
    return 0;
}

static void half_close(struct r3_source *s)
{
    free(s);
}

static const struct r3_source_ops half_ops = {
    .scheme = "half", .read = half_read, .write = half_write, .flush = half_flush, .close = half_close,
};
/* named like a memory-speed source: the faulting page goes in first */
static const struct r3_source_ops half_mem_ops = {
    .scheme = "mem", .read = half_read, .write = half_write, .flush = half_flush, .close = half_close,
};

/* Page reads work everywhere, larger reads fail above FAIL_AT: the fault's
 * own page goes in first (a memory-speed source), then its chunk fails. */
static int pages_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    if (len > 4096 && off + len > FAIL_AT)
        return r3_error(-EIO, "test: only single pages at %llu", (unsigned long long)off);
    return half_read(s, buf, len, off);
}

static const struct r3_source_ops pages_mem_ops = {
    .scheme = "mem", .read = pages_read, .write = half_write, .flush = half_flush, .close = half_close,
};

/* ---- what the child sees */

static sigjmp_buf jb;
static volatile sig_atomic_t nbus;
static atomic_int nerr, first_err, msg_ready;
static char first_msg[512];

/* The first sentence once the hook has written it ("" before): the hook
 * runs before the kernel lets the faulting thread go (SIGBUS), an order
 * the flag also makes visible to ThreadSanitizer. */
static const char *msg(void)
{
    return atomic_load(&msg_ready) ? first_msg : "";
}

static void on_bus(int sig)
{
    (void)sig;
    nbus++;
    siglongjmp(jb, 1);
}

static void on_error(void *arg, struct r3_region *r, int err, const char *text)
{
    (void)arg;
    (void)r;
    if (atomic_fetch_add(&nerr, 1) == 0) {
        snprintf(first_msg, sizeof first_msg, "%s", text);
        atomic_store(&first_err, err);
        atomic_store(&msg_ready, 1);
    }
}

static void catch_bus(void)
{
    struct sigaction sa = { .sa_handler = on_bus };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

/* Touch p; 1 if that raised SIGBUS. */
static int touch_bus(volatile uint8_t *p)
{
    int before = nbus;
    if (sigsetjmp(jb, 1) == 0)
        (void)*p;
    return nbus != before;
}

/* Run fn in a child that exits normally (so its coverage is written): its
 * exit status is the number of the first check that failed, 0 if none. */
static void in_child(int (*fn)(void *), void *arg)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(30);                           /* a hang ends as SIGALRM */
        exit(fn(arg));
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status 0x%x (exit %d)", st,
                  WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

struct case_ { bool poison; const struct r3_source_ops *ops; };

static int source_error_child(void *arg)
{
    const struct case_ *k = arg;
    catch_bus();
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.uffd_no_poison = !k->poison;
    o.uffd_readahead = 0;                    /* only the chunks touched are asked for */
    o.hooks.on_error = on_error;
    struct half_source *h = calloc(1, sizeof *h);
    h->src = (struct r3_source){ .ops = k->ops, .size = 8 * MiB, .align = 1, .flags = R3_SRC_PARALLEL };
    struct r3_region *r;
    if (r3_region_open(&o, &h->src, &r) != 0)
        return 3;
    volatile uint8_t *p = r->base;
    /* below FAIL_AT: the source's bytes */
    if (touch_bus(p + 4096) || p[4096] != tu_byte(4096, 13) || p[MiB + 5] != tu_byte(MiB + 5, 13))
        return 4;
    if (atomic_load(&nerr) != 0)
        return 5;
    /* above: SIGBUS, and the hook says which chunk and why */
    if (!touch_bus(p + 3 * MiB))
        return 6;
    if (atomic_load(&nerr) != 1 || atomic_load(&first_err) != -EIO)
        return 7;
    if (!strstr(msg(), "cannot fill chunk 48 (region offset 3145728)") ||
        !strstr(msg(), "test: the source fails at") || !strstr(msg(), "gets SIGBUS"))
        return 8;
    /* another failing chunk: SIGBUS again, but the hook was told once */
    if (!touch_bus(p + 6 * MiB + 8192))
        return 9;
    if (atomic_load(&nerr) != 1)
        return 10;
    /* the good part still works after all that */
    if (touch_bus(p + FAIL_AT - 1) || p[FAIL_AT - 1] != tu_byte(FAIL_AT - 1, 13))
        return 11;
    struct r3_region_stats st;
    if (r3_region_stats(r, &st) != 0 || st.faults < 4)
        return 12;
    if (r3_region_close(r) != 0)
        return 13;                           /* nothing was written: nothing to write back */
    return 0;
}

START_TEST(source_error_caught)
{
    static const struct case_ cases[] = {
        { true, &half_ops }, { true, &half_mem_ops }, { false, &half_ops }, { false, &half_mem_ops },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        in_child(source_error_child, (void *)&cases[i]);
}
END_TEST

static int mremap_child(void *arg)
{
    bool poison = arg != NULL;
    catch_bus();
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.uffd_no_poison = !poison;
    o.uffd_readahead = 0;
    o.hooks.on_error = on_error;
    struct half_source *h = calloc(1, sizeof *h);
    h->src = (struct r3_source){ .ops = &half_ops, .size = 8 * MiB, .align = 1, .flags = R3_SRC_PARALLEL };
    struct r3_region *r;
    if (r3_region_open(&o, &h->src, &r) != 0)
        return 3;
    uint8_t *b = r->base;
    size_t c = r->chunk;
    if (touch_bus(b) || tu_check(b, c, 0, 13) != -1)
        return 4;                            /* the whole first chunk is in */
    /* two chunks moved away: the first filled, the second never touched */
    void *to = mmap(NULL, 2 * c, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *m = (void *)syscall(SYS_mremap, b, 2 * c, 2 * c, MREMAP_MAYMOVE | MREMAP_FIXED, to);
    if (m != to)
        return 5;
    if (tu_check(m, c, 0, 13) != -1)
        return 6;                            /* moved with its bytes */
    if (!touch_bus((uint8_t *)m + c + 100))
        return 7;                            /* never filled: SIGBUS, not zeros */
    if (atomic_load(&nerr) != 1 || atomic_load(&first_err) != -EFAULT ||
        !strstr(msg(), "a fault outside the region"))
        return 8;
    /* the rest of the region is untouched by that */
    if (touch_bus(b + 4 * c) || b[4 * c + 1] != tu_byte(4 * c + 1, 13))
        return 9;
    munmap(m, 2 * c);
    if (r3_region_close(r) != 0)
        return 10;
    return 0;
}

/* The faulting page could be read, its chunk could not: the thread gets
 * SIGBUS all the same (a page that went in first is not kept as if its
 * chunk had come), every time it tries, never zeros or made-up bytes; the
 * failure is told once; the rest of the region works. */
static int page_first_child(void *arg)
{
    (void)arg;
    catch_bus();
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.uffd_readahead = 0;
    o.hooks.on_error = on_error;
    struct half_source *h = calloc(1, sizeof *h);
    h->src = (struct r3_source){ .ops = &pages_mem_ops, .size = 8 * MiB, .align = 1,
                                 .flags = R3_SRC_PARALLEL };
    struct r3_region *r;
    if (r3_region_open(&o, &h->src, &r) != 0)
        return 3;
    volatile uint8_t *p = r->base;
    if (touch_bus(p + 100) || p[100] != tu_byte(100, 13))
        return 4;
    uint64_t at[] = { 3 * MiB + 100, 3 * MiB + 100, 3 * MiB + 4096 + 5, 5 * MiB };
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++)
        if (!touch_bus(p + at[i]))
            return 10 + (int)i;
    if (atomic_load(&nerr) != 1 || !strstr(msg(), "cannot fill chunk 48") ||
        !strstr(msg(), "only single pages"))
        return 5;
    if (touch_bus(p + FAIL_AT - 4096) || p[FAIL_AT - 4096] != tu_byte(FAIL_AT - 4096, 13))
        return 6;
    if (r3_region_close(r) != 0)
        return 7;
    return 0;
}

START_TEST(page_first_chunk_fails)
{
    in_child(page_first_child, NULL);
}
END_TEST

START_TEST(mremap_caught)
{
    in_child(mremap_child, (void *)1);
    in_child(mremap_child, NULL);
}
END_TEST

/* r3_region_read (the migration's read) gives the region's bytes without
 * filling anything, whatever eviction did meanwhile: written chunks that
 * are resident, written chunks evicted (their bytes went to the source),
 * chunks never touched (the source's), and a page the program dropped
 * (MADV_DONTNEED: zeros). No fault is taken by the read. */
START_TEST(read_without_filling)
{
    char *dir = tu_tmpdir(), *path, *uri;
    ck_assert_int_ge(asprintf(&path, "%s/f", dir), 0);
    ck_assert_int_ge(asprintf(&uri, "file://%s", path), 0);
    size_t size = 32 * MiB;
    FILE *f = fopen(path, "w");
    char *b = malloc(size);
    tu_fill(b, size, 0, 21);
    ck_assert_uint_eq(fwrite(b, 1, size, f), size);
    fclose(f);
    struct r3_source *src;
    TU_OPEN(uri, &src);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.max_resident = 4 * MiB;
    struct r3_region *r;
    ck_assert_msg(r3_region_open(&o, src, &r) == 0, "%s", r3_last_error());
    uint8_t *m = r->base;
    /* write the first 24 MiB (one byte a page); the last 8 MiB never touched */
    for (size_t off = 0; off < 24 * MiB; off += 4096) {
        m[off] ^= 0xff;
        b[off] ^= (char)0xff;
    }
    /* a page of the last chunk written: dropped, reads zeros */
    size_t drop = 24 * MiB - 4096;
    ck_assert_int_eq(madvise(m + drop, 4096, MADV_DONTNEED), 0);
    memset(b + drop, 0, 4096);
    struct r3_region_stats st0, st1;
    ck_assert_int_eq(r3_region_stats(r, &st0), 0);
    ck_assert_uint_gt(st0.chunks_evicted, 0);
    char *got = malloc(size);
    memset(got, 0x5a, size);
    ck_assert_msg(r3_region_read(r, got, size, 0) == 0, "%s", r3_last_error());
    size_t bad = SIZE_MAX;
    for (size_t i = 0; i < size && bad == SIZE_MAX; i++)
        if (got[i] != b[i])
            bad = i;
    ck_assert_msg(bad == SIZE_MAX, "r3_region_read differs at %zu", bad);
    ck_assert_int_eq(r3_region_stats(r, &st1), 0);
    ck_assert_uint_eq(st1.chunks_fault, st0.chunks_fault);   /* nothing was filled */
    /* a read past the end is refused */
    ck_assert_int_eq(r3_region_read(r, got, 2, size - 1), -EINVAL);
    ck_assert_int_eq(r3_region_close(r), 0);
    free(got);
    free(b);
    free(uri);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(open_refusals)
{
    long pg = sysconf(_SC_PAGESIZE);
    struct r3_source *src;
    struct r3_region *r;
    struct r3_region_opts o;
    TU_OPEN("mem:?size=1M", &src);
    r3_region_opts_init(&o);
    o.chunk = (uint32_t)pg / 2;
    ck_assert_int_eq(r3_region_open(&o, src, &r), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "chunk"), "%s", r3_last_error());
    TU_OPEN("mem:?size=1M", &src);
    r3_region_opts_init(&o);
    o.prefetch = 7;
    ck_assert_int_eq(r3_region_open(&o, src, &r), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "unknown prefetch order 7"), "%s", r3_last_error());
}
END_TEST

/* A region longer than its source is refused (so every fill is a whole
 * chunk: uffd/view.c and uffd/track.c rely on it), and the source is
 * closed with the refusal. */
START_TEST(short_source_tail)
{
    char *dir = tu_tmpdir(), *path, *uri;
    ck_assert_int_ge(asprintf(&path, "%s/f", dir), 0);
    ck_assert_int_ge(asprintf(&uri, "file://%s", path), 0);
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, 100000), 0);
    close(fd);
    struct r3_source *src;
    TU_OPEN(uri, &src);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.size = 128 * 1024;
    struct r3_region *r = (void *)1;
    ck_assert_int_eq(r3_region_open(&o, src, &r), -EINVAL);
    ck_assert_ptr_null(r);
    ck_assert_str_eq(r3_last_error(), "the source holds 100000 bytes, less than the region size 131072");
    free(uri);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("cov_uffd");
    TCase *t = tcase_create("uffd");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, source_error_caught);
    tcase_add_test(t, page_first_chunk_fails);
    tcase_add_test(t, mremap_caught);
    tcase_add_test(t, read_without_filling);
    tcase_add_test(t, short_source_tail);
    tcase_add_test(t, open_refusals);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    r3t_require("uffd");
    return tu_run(suite());
}
