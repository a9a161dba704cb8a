/* SPDX-License-Identifier: BSD-3-Clause */
/* The uffd strategy: fills, write-back (PAGEMAP_SCAN and the hashing
 * fallback), REMOVE events, prefetch orders and access logs, source errors,
 * concurrency, and a huge sparse region. Data written through a region is
 * checked by reading the backing file directly. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#include "internal.h"
#include "uffd/uffd.h"
#include <r3/probe.h>
#include "testutil.h"
#include "tests/uffd/pattern.h"

#define MiB (1024ull * 1024)
#define GiB (1024 * MiB)

static char *tmp;

/* The pattern's byte at off (little-endian words). */
static uint8_t up_byte(uint64_t off, uint32_t seed)
{
    return (uint8_t)(up_word(off & ~(uint64_t)7, seed) >> (8 * (off & 7)));
}

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

/* A file of size bytes holding the pattern for seed (seed 0: sparse zeros). */
static char *make_file(const char *name, uint64_t size, uint32_t seed)
{
    char *path;
    ck_assert_int_ge(asprintf(&path, "%s/%s", tmp, name), 0);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
    if (seed) {
        size_t bl = 4 * MiB;
        void *b = malloc(bl);
        for (uint64_t off = 0; off < size; off += bl) {
            size_t n = size - off < bl ? (size_t)(size - off) : bl;
            up_fill(b, n, off, seed);
            ck_assert_int_eq(r3_pwrite_all(fd, b, n, off), 0);
        }
        free(b);
    }
    close(fd);
    return path;
}

static struct r3_region *open_region(const char *path, const struct r3_region_opts *o0)
{
    char *uri;
    struct r3_source *src;
    struct r3_region *r;
    ck_assert_int_ge(asprintf(&uri, "file://%s", path), 0);
    TU_OPEN(uri, &src);
    free(uri);
    struct r3_region_opts o;
    if (o0)
        o = *o0;
    else
        r3_region_opts_init(&o);
    ck_assert_msg(r3_region_open(&o, src, &r) == 0, "region: %s", r3_last_error());
    return r;
}

static void file_read(const char *path, void *buf, size_t len, uint64_t off)
{
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(r3_pread_all(fd, buf, len, off), 0);
    close(fd);
}

/* Reads fill from the source; writes in three chunks are pushed by sync as
 * exactly three chunks; the file holds them. */
START_TEST(test_fill_write_sync)
{
    char *path = make_file("a.img", 64 * MiB, 11);
    struct r3_region *r = open_region(path, NULL);
    ck_assert_uint_eq(r->len, 64 * MiB);
    ck_assert_int_eq((uintptr_t)r->base % r->chunk, 0);
    ck_assert_int_eq(up_check(r->base, r->len, 0, 11), -1);
    struct r3_region_stats st;
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_eq(st.chunks_fault + st.chunks_prefetch, 64 * MiB / r->chunk);
    ck_assert_uint_gt(st.chunks_fault, 0);
    ck_assert_uint_ge(st.faults, st.chunks_fault);
    ck_assert_uint_eq(st.bytes_pulled, 64 * MiB);
    ck_assert_uint_gt(st.fault_wait_p50_ns, 0);
    ck_assert_uint_ge(st.fault_wait_p99_ns, st.fault_wait_p50_ns);

    uint8_t *b = r->base;
    uint64_t offs[] = { 0, 5 * MiB + 4096 + 17, 64 * MiB - 1 };
    for (int i = 0; i < 3; i++)
        b[offs[i]] = (uint8_t)(0xA0 + i);
    ck_assert_int_eq(r3_region_sync(r), 0);
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_eq(st.chunks_pushed, 3);
    ck_assert_uint_eq(st.syncs, 1);
    for (int i = 0; i < 3; i++) {
        uint8_t c;
        file_read(path, &c, 1, offs[i]);
        ck_assert_uint_eq(c, 0xA0 + i);
    }
    /* Nothing written since: nothing pushed. One more write: one chunk. */
    ck_assert_int_eq(r3_region_sync(r), 0);
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_eq(st.chunks_pushed, 3);
    b[7 * MiB] = 0x55;
    ck_assert_int_eq(r3_region_close(r), 0);
    uint8_t c;
    file_read(path, &c, 1, 7 * MiB);
    ck_assert_uint_eq(c, 0x55);
    free(path);
}
END_TEST

/* Writes to never-read chunks (write faults) are written back too. */
START_TEST(test_write_first)
{
    char *path = make_file("w.img", 32 * MiB, 0);
    struct r3_region *r = open_region(path, NULL);
    up_fill((char *)r->base + 3 * MiB, 2 * MiB, 3 * MiB, 5);
    ck_assert_int_eq(r3_region_sync(r), 0);
    /* A system call writing into a never-touched chunk (a kernel-mode
     * fault, as read(2) into a malloc'ed buffer under r3run). */
    int fd = open(path, O_RDONLY);
    ck_assert_int_eq(pread(fd, (char *)r->base + 9 * MiB, 8192, 3 * MiB), 8192);
    close(fd);
    ck_assert_int_eq(up_check((char *)r->base + 9 * MiB, 8192, 3 * MiB, 5), -1);
    void *buf = malloc(2 * MiB);
    file_read(path, buf, 2 * MiB, 3 * MiB);
    ck_assert_int_eq(up_check(buf, 2 * MiB, 3 * MiB, 5), -1);
    ck_assert_int_eq(r3_region_close(r), 0);
    free(buf);
    free(path);
}
END_TEST

/* The fallback for kernels without WP_ASYNC: hashing finds the writes. */
START_TEST(test_no_wp_async)
{
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.uffd_no_wp_async = true;
    char *path = make_file("h.img", 32 * MiB, 21);
    struct r3_region *r = open_region(path, &o);
    ck_assert_int_eq(up_check(r->base, r->len, 0, 21), -1);
    uint8_t *b = r->base;
    b[100] = 1;
    b[20 * MiB + 3] = 2;
    ck_assert_int_eq(r3_region_sync(r), 0);
    struct r3_region_stats st;
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_eq(st.chunks_pushed, 2);
    ck_assert_int_eq(r3_region_sync(r), 0);
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_eq(st.chunks_pushed, 2);
    up_fill(b + 8 * MiB, MiB, 8 * MiB, 22);
    ck_assert_int_eq(r3_region_close(r), 0);
    uint8_t c[2];
    file_read(path, &c[0], 1, 100);
    file_read(path, &c[1], 1, 20 * MiB + 3);
    ck_assert_uint_eq(c[0], 1);
    ck_assert_uint_eq(c[1], 2);
    void *buf = malloc(MiB);
    file_read(path, buf, MiB, 8 * MiB);
    ck_assert_int_eq(up_check(buf, MiB, 8 * MiB, 22), -1);
    file_read(path, buf, MiB, 9 * MiB);
    ck_assert_int_eq(up_check(buf, MiB, 9 * MiB, 21), -1);
    free(buf);
    free(path);
}
END_TEST

/* MADV_DONTNEED: the range reads as zeros (filled, partly filled and never
 * filled chunks) and sync writes the zeros back. */
static void remove_case(bool no_wp)
{
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.uffd_no_wp_async = no_wp;
    char *path = make_file("r.img", 16 * MiB, 31);
    struct r3_region *r = open_region(path, &o);
    uint8_t *b = r->base;
    size_t ch = r->chunk;
    /* Fill chunks 0..7; chunk 20 and 21 are never touched before removal. */
    ck_assert_int_eq(up_check(b, 8 * ch, 0, 31), -1);
    ck_assert_int_eq(madvise(b + ch + 4096, 2 * 4096, MADV_DONTNEED), 0);   /* part of chunk 1 */
    ck_assert_int_eq(madvise(b + 3 * ch, ch, MADV_DONTNEED), 0);            /* all of chunk 3 */
    ck_assert_int_eq(madvise(b + 20 * ch, ch + 4096, MADV_DONTNEED), 0);    /* never filled */
    uint8_t *z = calloc(1, 2 * ch);
    ck_assert_int_eq(memcmp(b + ch + 4096, z, 2 * 4096), 0);
    ck_assert_int_eq(up_check(b + ch, 4096, ch, 31), -1);
    ck_assert_int_eq(up_check(b + ch + 3 * 4096, ch - 3 * 4096, ch + 3 * 4096, 31), -1);
    ck_assert_int_eq(memcmp(b + 3 * ch, z, ch), 0);
    ck_assert_int_eq(memcmp(b + 20 * ch, z, ch + 4096), 0);
    ck_assert_int_eq(up_check(b + 21 * ch + 4096, ch - 4096, 21 * ch + 4096, 31), -1);
    ck_assert_int_eq(r3_region_close(r), 0);
    uint8_t *f = malloc(32 * ch);
    file_read(path, f, 32 * ch, 0);
    ck_assert_int_eq(memcmp(f + ch + 4096, z, 2 * 4096), 0);
    ck_assert_int_eq(up_check(f + ch + 3 * 4096, ch - 3 * 4096, ch + 3 * 4096, 31), -1);
    ck_assert_int_eq(memcmp(f + 3 * ch, z, ch), 0);
    ck_assert_int_eq(memcmp(f + 20 * ch, z, ch + 4096), 0);
    ck_assert_int_eq(up_check(f + 21 * ch + 4096, ch - 4096, 21 * ch + 4096, 31), -1);
    ck_assert_int_eq(up_check(f + 4 * ch, 16 * ch, 4 * ch, 31), -1);
    free(f);
    free(z);
    free(path);
}

START_TEST(test_remove)
{
    remove_case(false);
}
END_TEST

START_TEST(test_remove_no_wp)
{
    remove_case(true);
}
END_TEST

/* 8 threads fault random pages of a 1 GiB region at once. */
struct rnd { uint8_t *base; uint64_t len; unsigned seed; long bad; uint64_t off0; uint32_t pat; };

static void *rnd_main(void *arg)
{
    struct rnd *t = arg;
    uint64_t x = t->seed * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < 4000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t off = (x % (t->len / 4096)) * 4096 + (x >> 50) % 512 * 8;
        if (*(uint64_t *)(t->base + off) != up_word(t->off0 + off, t->pat ? t->pat : 41))
            t->bad++;
    }
    return NULL;
}

START_TEST(test_threads_random)
{
    char *path = make_file("t.img", GiB, 41);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.fault_threads = 2;
    struct r3_region *r = open_region(path, &o);
    pthread_t th[8];
    struct rnd a[8];
    for (unsigned i = 0; i < 8; i++) {
        a[i] = (struct rnd){ r->base, r->len, i + 1, 0, 0, 41 };
        ck_assert_int_eq(pthread_create(&th[i], NULL, rnd_main, &a[i]), 0);
    }
    for (unsigned i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(a[i].bad, 0);
    }
    struct r3_region_stats st;
    r3_region_stats(r, &st);
    ck_assert_uint_gt(st.chunks_fault, 1000);
    ck_assert_int_eq(r3_region_close(r), 0);
    free(path);
}
END_TEST

/* MADV_DONTNEED storms while other threads fault: REMOVE events make fills
 * meet a changing layout (EAGAIN); nothing hangs, no byte is wrong. */
struct storm { uint8_t *base; size_t chunk; _Atomic bool stop; };

static void *storm_main(void *arg)
{
    struct storm *s = arg;
    /* a storm, not a lock-out: each REMOVE blocks fills until a handler has
     * read it, so back-to-back calls on a loaded 2-core machine could starve
     * the readers for minutes without telling anything about r3 */
    while (!atomic_load(&s->stop)) {
        madvise(s->base, s->chunk, MADV_DONTNEED);
        usleep(200);
    }
    return NULL;
}

START_TEST(test_remove_storm)
{
    char *path = make_file("s.img", 256 * MiB, 91);
    struct r3_region *r = open_region(path, NULL);
    struct storm st = { r->base, r->chunk, false };
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, storm_main, &st), 0);
    pthread_t th[3];
    struct rnd a[3];
    for (unsigned i = 0; i < 3; i++) {
        /* chunk 0 is being removed all the time: start the readers past it */
        a[i] = (struct rnd){ (uint8_t *)r->base + r->chunk, r->len - r->chunk, i + 11, 0, r->chunk, 91 };
        ck_assert_int_eq(pthread_create(&th[i], NULL, rnd_main, &a[i]), 0);
    }
    for (unsigned i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    atomic_store(&st.stop, true);
    pthread_join(t, NULL);
    for (unsigned i = 0; i < 3; i++)
        ck_assert_msg(a[i].bad == 0, "reader %u saw %ld wrong words during the storm", i, a[i].bad);
    uint8_t *z = calloc(1, r->chunk);
    ck_assert_int_eq(memcmp(r->base, z, r->chunk), 0);
    free(z);
    ck_assert_int_eq(r3_region_close(r), 0);
    free(path);
}
END_TEST

/* 64 GiB on a 64 GiB sparse file: no 64 GiB allocated anywhere. */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

START_TEST(test_huge_sparse)
{
    char *path = make_file("big.img", 64 * GiB, 0);
    long before = rss_kib();
    struct r3_region *r = open_region(path, NULL);
    ck_assert_uint_eq(r->len, 64 * GiB);
    uint8_t *b = r->base;
    ck_assert_uint_eq(b[0], 0);
    ck_assert_uint_eq(b[32 * GiB + 12345], 0);
    b[64 * GiB - 1] = 7;
    long during = rss_kib();
    ck_assert_int_eq(r3_region_close(r), 0);
    struct stat s;
    ck_assert_int_eq(stat(path, &s), 0);
    ck_assert_int_eq(s.st_size, (off_t)(64 * GiB));
    ck_assert_int_lt(s.st_blocks * 512, 64 * MiB);
    ck_assert_int_lt(during - before, 256 * 1024);     /* < 256 MiB more RSS */
    uint8_t c;
    file_read(path, &c, 1, 64 * GiB - 1);
    ck_assert_uint_eq(c, 7);
    free(path);
}
END_TEST

/* Access logs and prefetch orders. With a 2 ms delay per chunk and one
 * pull worker, only the first few chunks of the order are local soon. */
static struct r3_region *open_delayed(const char *path, struct r3_region_opts *o, uint64_t delay_us)
{
    char *uri;
    struct r3_source *src, *d;
    struct r3_region *r;
    ck_assert_int_ge(asprintf(&uri, "file://%s", path), 0);
    TU_OPEN(uri, &src);
    free(uri);
    ck_assert_int_eq(r3_stage_delay_open(src, delay_us, &d), 0);
    ck_assert_msg(r3_region_open(o, d, &r) == 0, "region: %s", r3_last_error());
    return r;
}

/* Wait until n chunks are in. A chunk is counted when its install starts,
 * so wait for the next one's: with one pull worker it starts after the
 * n-th is wholly in (else a busy machine reads a half-installed chunk). */
static void wait_prefetch(struct r3_region *r, uint64_t n)
{
    struct r3_region_stats st;
    for (int i = 0; i < 5000; i++) {
        r3_region_stats(r, &st);
        if (st.chunks_prefetch > n)
            return;
        usleep(1000);
    }
    ck_abort_msg("prefetch did not reach %llu chunks", (unsigned long long)n);
}

START_TEST(test_access_log_hot)
{
    char *path = make_file("p.img", 64 * MiB, 51), *log;
    ck_assert_int_ge(asprintf(&log, "%s/access.log", tmp), 0);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.prefetch = R3_PREFETCH_NONE;
    o.record_access = log;
    struct r3_region *r = open_region(path, &o);
    uint8_t *b = r->base;
    uint64_t ch = r->chunk, order[] = { 700, 5, 1000, 3, 5, 700 };
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(up_check(b + order[i] * ch, 8, order[i] * ch, 51), -1);
    ck_assert_int_eq(r3_region_close(r), 0);
    FILE *f = fopen(log, "r");
    ck_assert_ptr_nonnull(f);
    char text[256] = "";
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    ck_assert_str_eq(text, "r3-access-log 1\nchunk 65536\n700\n5\n1000\n3\n");

    /* Hot replay: 700, 5, 1000, 3 arrive first, then the rest ascending. */
    r3_region_opts_init(&o);
    o.prefetch = R3_PREFETCH_HOT;
    o.prefetch_file = log;
    o.pull_workers = 1;
    r = open_delayed(path, &o, 2000);
    wait_prefetch(r, 4);
    b = r->base;
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(up_check(b + order[i] * ch, ch, order[i] * ch, 51), -1);
    struct r3_region_stats st;
    r3_region_stats(r, &st);
    ck_assert_uint_eq(st.faults, 0);             /* all four were there already */
    ck_assert_int_eq(up_check(b + 900 * ch, 8, 900 * ch, 51), -1);
    r3_region_stats(r, &st);
    ck_assert_uint_ge(st.faults, 1);             /* 900 was not pulled yet */
    ck_assert_int_eq(r3_region_close(r), 0);

    /* Sequential: the same wait leaves chunk 700 missing. */
    r3_region_opts_init(&o);
    o.prefetch = R3_PREFETCH_SEQUENTIAL;
    o.pull_workers = 1;
    r = open_delayed(path, &o, 2000);
    wait_prefetch(r, 4);
    b = r->base;
    ck_assert_int_eq(up_check(b, 4 * ch, 0, 51), -1);
    r3_region_stats(r, &st);
    ck_assert_uint_eq(st.faults, 0);
    ck_assert_int_eq(up_check(b + 700 * ch, 8, 700 * ch, 51), -1);
    r3_region_stats(r, &st);
    ck_assert_uint_ge(st.faults, 1);
    ck_assert_int_eq(r3_region_close(r), 0);
    free(log);
    free(path);
}
END_TEST

static void bad_log(const char *path, const char *text, const char *want)
{
    char *log;
    ck_assert_int_ge(asprintf(&log, "%s/bad.log", tmp), 0);
    FILE *f = fopen(log, "w");
    fputs(text, f);
    fclose(f);
    char *uri;
    struct r3_source *src;
    struct r3_region *r = NULL;
    ck_assert_int_ge(asprintf(&uri, "file://%s", path), 0);
    TU_OPEN(uri, &src);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.prefetch = R3_PREFETCH_HOT;
    o.prefetch_file = log;
    o.pull_workers = 1;
    ck_assert_int_eq(r3_region_open(&o, src, &r), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), want), "error \"%s\" lacks \"%s\"", r3_last_error(), want);
    free(uri);
    free(log);
}

START_TEST(test_access_log_bad)
{
    char *path = make_file("b.img", 4 * MiB, 0);
    bad_log(path, "hello\n", "not an r3 access log");
    bad_log(path, "r3-access-log 1\nchunk 4096\n1\n", "recorded with chunk 4096");
    bad_log(path, "r3-access-log 1\nchunk 65536\n1\nx2\n", "line 4: not a chunk index");
    bad_log(path, "r3-access-log 1\nchunk 65536\n64\n", "past the region");
    bad_log(path, "r3-access-log 1\nchunk 65536\n99999999999999999999999\n", "not a chunk index");
    bad_log(path, "r3-access-log 1\n", "no \"chunk\" line");
    free(path);
}
END_TEST

/* A source that fails: the faulting thread gets SIGBUS, nothing hangs. */
struct bad_source { struct r3_source src; };

static int bad_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    (void)s; (void)buf; (void)len;
    return r3_error(-EIO, "test: the source fails at %llu", (unsigned long long)off);
}

static int bad_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    (void)s; (void)buf; (void)len; (void)off;
    return -EIO;
}

static int bad_flush(struct r3_source *s)
{
    (void)s;
    return 0;
}

static void bad_close(struct r3_source *s)
{
    free(s);
}

static const struct r3_source_ops bad_ops = {
    .scheme = "bad", .read = bad_read, .write = bad_write, .flush = bad_flush, .close = bad_close,
};

/* The same failing source, named like a memory-speed one, so the fault
 * takes the faulting-page-first path. */
static const struct r3_source_ops bad_mem_ops = {
    .scheme = "mem", .read = bad_read, .write = bad_write, .flush = bad_flush, .close = bad_close,
};

static void sigbus_case(bool poison, const struct r3_source_ops *ops)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(20);                          /* a hang ends as SIGALRM, not SIGBUS */
        signal(SIGBUS, SIG_DFL);            /* sanitizers catch it otherwise */
        struct r3_region_opts o;
        r3_region_opts_init(&o);
        o.uffd_no_poison = !poison;
        struct bad_source *b = calloc(1, sizeof *b);
        b->src = (struct r3_source){ .ops = ops, .size = 8 * MiB, .align = 1,
                                     .flags = R3_SRC_PARALLEL };
        struct r3_region *r;
        if (r3_region_open(&o, &b->src, &r) != 0)
            _exit(3);
        volatile uint8_t *p = r->base;
        (void)p[3 * MiB];
        _exit(4);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS, "child status 0x%x", st);
}

START_TEST(test_source_error_sigbus)
{
    sigbus_case(true, &bad_ops);
    sigbus_case(true, &bad_mem_ops);
}
END_TEST

START_TEST(test_source_error_sigbus_nopoison)
{
    sigbus_case(false, &bad_ops);
    sigbus_case(false, &bad_mem_ops);
}
END_TEST

/* Fork: the child sees the region as it was at the fork. A chunk the
 * parent had filled shows the parent's bytes of then; one it had not
 * filled shows the source's bytes of then, even after the parent wrote it
 * and synced (its pre-image is given to the child first). The child's own
 * writes never reach the source; system() still works. */
START_TEST(test_fork)
{
    char *path = make_file("f.img", 8 * MiB, 71);
    struct r3_region *r = open_region(path, NULL);
    uint8_t *b = r->base;
    ck_assert_int_eq(up_check(b, MiB, 0, 71), -1);      /* first MiB filled */
    b[4096] = 0x11;
    ck_assert_int_eq(system("true"), 0);
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    r3_region_fork_prepare(r);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        close(go[1]);
        char c;
        if (read(go[0], &c, 1) != 0)
            _exit(2);
        if (b[4096] != 0x11 || b[8192] != up_byte(8192, 71))
            _exit(3);                        /* filled at the fork */
        if (up_check(b + 5 * MiB, MiB, 5 * MiB, 71) != -1)
            _exit(4);                        /* not filled at the fork: the source's */
        b[6 * MiB] = 0x99;                   /* private */
        _exit(0);
    }
    r3_region_fork_done(r);
    close(go[0]);
    b[4096] = 0x22;
    memset(b + 5 * MiB, 0x77, MiB);
    ck_assert_int_eq(r3_region_sync(r), 0);
    close(go[1]);                            /* the child reads now */
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x", st);
    ck_assert_int_eq(r3_region_close(r), 0);
    uint8_t c;
    file_read(path, &c, 1, 5 * MiB);
    ck_assert_uint_eq(c, 0x77);
    file_read(path, &c, 1, 4096);
    ck_assert_uint_eq(c, 0x22);
    file_read(path, &c, 1, 6 * MiB);
    ck_assert_uint_eq(c, up_byte(6 * MiB, 71));
    free(path);
}
END_TEST

/* mremap of region memory by a library user (the shim refuses it): pages
 * that were in move with their bytes; a page that was missing faults at
 * its new place, outside the region: SIGBUS, never a hang or wrong data. */
START_TEST(test_mremap_sigbus)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(20);
        signal(SIGBUS, SIG_DFL);
        char *path = make_file("m.img", 8 * MiB, 61);
        struct r3_region *r = open_region(path, NULL);
        uint8_t *b = r->base;
        if (up_check(b, r->chunk, 0, 61) != -1)
            _exit(3);
        /* two chunks: the first filled, the second never touched */
        void *to = mmap(NULL, 2 * r->chunk, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        void *m = (void *)syscall(SYS_mremap, b, 2 * r->chunk, 2 * r->chunk,
                                  MREMAP_MAYMOVE | MREMAP_FIXED, to);
        if (m != to)
            _exit(4);
        if (up_check(m, r->chunk, 0, 61) != -1)
            _exit(5);                        /* moved with its bytes */
        volatile uint8_t *q = (uint8_t *)m + r->chunk;
        (void)q[0];                          /* never filled: SIGBUS */
        _exit(6);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS, "child status 0x%x", st);
}
END_TEST

/* max_resident: every chunk written, read back and synced through a budget
 * of a few chunks; too small a budget is refused with the minimum. */
START_TEST(test_evict)
{
    char *path = make_file("e.img", 64 * MiB, 91);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.max_resident = MiB;
    char *uri;
    struct r3_source *src;
    struct r3_region *r;
    ck_assert_int_ge(asprintf(&uri, "file://%s", path), 0);
    TU_OPEN(uri, &src);
    ck_assert_int_eq(r3_region_open(&o, src, &r), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "too small") && strstr(r3_last_error(), "at least"),
                  "%s", r3_last_error());
    free(uri);
    o.max_resident = 4 * MiB;
    r = open_region(path, &o);
    uint8_t *b = r->base;
    ck_assert_int_eq(up_check(b, 64 * MiB, 0, 91), -1);
    for (size_t off = 0; off < 64 * MiB; off += 4096)
        b[off] ^= 0xff;
    for (size_t off = 0; off < 64 * MiB; off += 4096)
        ck_assert_uint_eq(b[off], (uint8_t)(up_byte(off, 91) ^ 0xff));
    struct r3_region_stats st;
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_gt(st.chunks_evicted, 900);
    ck_assert_int_eq(r3_region_close(r), 0);
    uint8_t *f = malloc(64 * MiB);
    file_read(path, f, 64 * MiB, 0);
    size_t bad = SIZE_MAX;
    for (size_t off = 0; off < 64 * MiB && bad == SIZE_MAX; off++)
        if (f[off] != (uint8_t)(up_byte(off, 91) ^ (off % 4096 ? 0 : 0xff)))
            bad = off;
    ck_assert_msg(bad == SIZE_MAX, "the file differs at %zu", bad);
    free(f);
    free(path);
}
END_TEST

/* A source whose writes fail while evicting: reported once, the chunks
 * stay resident with their bytes (nothing dropped that was not written
 * back), the program goes on; once the source works again, sync writes
 * everything. */
struct flaky_source { struct r3_source src; uint8_t *data; _Atomic int fail; pthread_mutex_t mu; };

/* A parallel source guards its own bytes: the evictor may still write a
 * chunk back (the same bytes) while the test reads them after a sync. */
static int flaky_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct flaky_source *x = (struct flaky_source *)s;
    pthread_mutex_lock(&x->mu);
    memcpy(buf, x->data + off, len);
    pthread_mutex_unlock(&x->mu);
    return 0;
}

static int flaky_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct flaky_source *x = (struct flaky_source *)s;
    if (atomic_load(&x->fail))
        return r3_error(-EIO, "test: the source refuses writes");
    pthread_mutex_lock(&x->mu);
    memcpy(x->data + off, buf, len);
    pthread_mutex_unlock(&x->mu);
    return 0;
}

static void flaky_close(struct r3_source *s)
{
    (void)s;                    /* the test owns it */
}

static const struct r3_source_ops flaky_ops = {
    .scheme = "flaky", .read = flaky_read, .write = flaky_write, .flush = bad_flush,
    .close = flaky_close,
};

static _Atomic int evict_errors, evict_msg_ready;
static char evict_msg[512];

static void on_evict_error(void *arg, struct r3_region *r, int err, const char *msg)
{
    (void)arg, (void)r, (void)err;
    if (atomic_fetch_add(&evict_errors, 1) == 0) {
        snprintf(evict_msg, sizeof evict_msg, "%s", msg);
        atomic_store(&evict_msg_ready, 1);      /* published after it is written (TSan) */
    }
}

START_TEST(test_evict_source_error)
{
    static struct flaky_source x;
    x.src = (struct r3_source){ .ops = &flaky_ops, .size = 32 * MiB, .align = 1,
                                .flags = R3_SRC_PARALLEL };
    x.data = calloc(1, 32 * MiB);
    pthread_mutex_init(&x.mu, NULL);
    struct r3_region_opts o;
    struct r3_region *r;
    r3_region_opts_init(&o);
    o.max_resident = 4 * MiB;
    o.hooks.on_error = on_evict_error;
    ck_assert_msg(r3_region_open(&o, &x.src, &r) == 0, "%s", r3_last_error());
    atomic_store(&x.fail, 1);
    uint8_t *b = r->base;
    for (size_t off = 0; off < 16 * MiB; off += 4096)
        b[off] = (uint8_t)(off >> 12);
    for (size_t off = 0; off < 16 * MiB; off += 4096)
        ck_assert_uint_eq(b[off], (uint8_t)(off >> 12));
    ck_assert_int_ge(atomic_load(&evict_errors), 1);
    for (int i = 0; i < 10000 && !atomic_load(&evict_msg_ready); i++)
        usleep(1000);
    ck_assert_int_eq(atomic_load(&evict_msg_ready), 1);
    ck_assert_msg(strstr(evict_msg, "cannot evict") && strstr(evict_msg, "stays resident"),
                  "%s", evict_msg);
    atomic_store(&x.fail, 0);
    ck_assert_msg(r3_region_sync(r) == 0, "%s", r3_last_error());
    pthread_mutex_lock(&x.mu);
    for (size_t off = 0; off < 16 * MiB; off += 4096)
        ck_assert_uint_eq(x.data[off], (uint8_t)(off >> 12));
    pthread_mutex_unlock(&x.mu);
    ck_assert_int_eq(r3_region_close(r), 0);
    pthread_mutex_destroy(&x.mu);
    free(x.data);
}
END_TEST

/* A memory source that counts what is written to it (eviction cases). */
struct count_source {
    struct r3_source src;
    uint8_t *data;
    pthread_mutex_t mu;
    _Atomic uint64_t writes, bytes;
};

static int count_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct count_source *x = (struct count_source *)s;
    pthread_mutex_lock(&x->mu);
    memcpy(buf, x->data + off, len);
    pthread_mutex_unlock(&x->mu);
    return 0;
}

static int count_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct count_source *x = (struct count_source *)s;
    pthread_mutex_lock(&x->mu);
    memcpy(x->data + off, buf, len);
    pthread_mutex_unlock(&x->mu);
    atomic_fetch_add(&x->writes, 1);
    atomic_fetch_add(&x->bytes, len);
    return 0;
}

static const struct r3_source_ops count_ops = {
    .scheme = "count", .read = count_read, .write = count_write, .flush = bad_flush,
    .close = flaky_close,
};

static void count_init(struct count_source *x, uint64_t size, uint32_t seed)
{
    x->src = (struct r3_source){ .ops = &count_ops, .size = size, .align = 1,
                                 .flags = R3_SRC_PARALLEL };
    x->data = malloc(size);
    ck_assert_ptr_nonnull(x->data);
    up_fill(x->data, size, 0, seed);
    pthread_mutex_init(&x->mu, NULL);
    atomic_store(&x->writes, 0);
    atomic_store(&x->bytes, 0);
}

/* Clean chunks are dropped without I/O: a region read three times through
 * a budget of an eighth of it evicts hundreds of chunks and writes nothing
 * to the source; then one page in each of 8 chunks is written: only those
 * go out (at most their chunks), and they read back. */
START_TEST(test_evict_clean)
{
    static struct count_source x;
    count_init(&x, 32 * MiB, 17);
    struct r3_region_opts o;
    struct r3_region *r;
    r3_region_opts_init(&o);
    o.max_resident = 4 * MiB;
    ck_assert_msg(r3_region_open(&o, &x.src, &r) == 0, "%s", r3_last_error());
    uint8_t *b = r->base;
    for (int pass = 0; pass < 3; pass++)
        ck_assert_int_eq(up_check(b, 32 * MiB, 0, 17), -1);
    struct r3_region_stats st;
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_gt(st.chunks_evicted, 500);
    ck_assert_msg(atomic_load(&x.writes) == 0, "%llu clean chunks written back (%llu bytes)",
                  (unsigned long long)atomic_load(&x.writes),
                  (unsigned long long)atomic_load(&x.bytes));
    for (int i = 0; i < 8; i++)
        b[(size_t)i * 4 * MiB + 8192] ^= 0xff;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t off = 0; off < 32 * MiB; off += 4096)
            ck_assert_uint_eq(b[off + 1], up_byte(off + 1, 17));
        for (int i = 0; i < 8; i++)
            ck_assert_uint_eq(b[(size_t)i * 4 * MiB + 8192],
                              (uint8_t)(up_byte((size_t)i * 4 * MiB + 8192, 17) ^ 0xff));
    }
    ck_assert_msg(atomic_load(&x.bytes) <= 8 * (uint64_t)r->chunk,
                  "%llu bytes written back for 8 written pages",
                  (unsigned long long)atomic_load(&x.bytes));
    ck_assert_int_eq(r3_region_close(r), 0);
    for (int i = 0; i < 8; i++)
        ck_assert_uint_eq(x.data[(size_t)i * 4 * MiB + 8192],
                          (uint8_t)(up_byte((size_t)i * 4 * MiB + 8192, 17) ^ 0xff));
    pthread_mutex_destroy(&x.mu);
    free(x.data);
}
END_TEST

/* Dirty chunks are never dropped unwritten: writers keep bumping counters
 * in every chunk (one page each: the write can land between an eviction's
 * scan and its move) while a reader walks the region through a small
 * budget; each counter ends at its count, and the source, read directly
 * while the region is still open, holds every evicted chunk's count. */
struct bump_arg { uint8_t *base; size_t len, chunk; int rounds; unsigned stride; };

static void *bump_main(void *arg)
{
    struct bump_arg *a = arg;
    for (int k = 0; k < a->rounds; k++)
        for (size_t off = (size_t)a->stride * 64; off < a->len; off += a->chunk)
            (*(volatile uint32_t *)(a->base + off))++;
    return NULL;
}

START_TEST(test_evict_dirty)
{
    static struct count_source x;
    count_init(&x, 32 * MiB, 23);
    struct r3_region_opts o;
    struct r3_region *r;
    r3_region_opts_init(&o);
    o.max_resident = 4 * MiB;
    ck_assert_msg(r3_region_open(&o, &x.src, &r) == 0, "%s", r3_last_error());
    uint8_t *b = r->base;
    size_t ch = r->chunk, len = 32 * MiB;
    for (size_t off = 0; off < len; off += ch)
        for (unsigned t = 0; t < 2; t++)
            *(uint32_t *)(b + off + t * 64) = 0;
    pthread_t th[2];
    struct bump_arg a[2];
    for (unsigned t = 0; t < 2; t++) {
        a[t] = (struct bump_arg){ b, len, ch, 6, t };
        ck_assert_int_eq(pthread_create(&th[t], NULL, bump_main, &a[t]), 0);
    }
    volatile uint64_t sink = 0;
    for (int pass = 0; pass < 4; pass++)
        for (size_t off = 4096; off < len; off += 4096)
            sink += b[off + 2048];   /* not a counter's bytes */
    for (unsigned t = 0; t < 2; t++)
        pthread_join(th[t], NULL);
    (void)sink;
    struct r3_region_stats st;
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_gt(st.chunks_evicted, 200);
    /* Walk once more (evicting the counters' chunks), then read the source
     * directly for every chunk that is out now. */
    for (size_t off = 4096; off < len; off += 4096)
        sink += b[off + 2048];   /* not a counter's bytes */
    struct r3u_region *ur = (struct r3u_region *)r;
    uint64_t out = 0;
    pthread_mutex_lock(&x.mu);
    for (size_t off = 0; off < len; off += ch) {
        if (atomic_load(&ur->filled[off / ch]))
            continue;
        out++;
        for (unsigned t = 0; t < 2; t++)
            ck_assert_msg(*(uint32_t *)(x.data + off + t * 64) == 6,
                          "chunk %zu evicted with counter %u at %u (source)", off / ch, t,
                          *(uint32_t *)(x.data + off + t * 64));
    }
    pthread_mutex_unlock(&x.mu);
    ck_assert_uint_gt(out, 100);
    for (size_t off = 0; off < len; off += ch)
        for (unsigned t = 0; t < 2; t++)
            ck_assert_msg(*(uint32_t *)(b + off + t * 64) == 6, "chunk %zu counter %u at %u",
                          off / ch, t, *(uint32_t *)(b + off + t * 64));
    ck_assert_int_eq(r3_region_close(r), 0);
    pthread_mutex_destroy(&x.mu);
    free(x.data);
}
END_TEST

/* The program unmaps part of the region: sync and close go on; the
 * unmapped chunk keeps its source bytes. */
START_TEST(test_unmap)
{
    char *path = make_file("u.img", 8 * MiB, 81);
    struct r3_region *r = open_region(path, NULL);
    uint8_t *b = r->base;
    size_t ch = r->chunk;
    ck_assert_int_eq(up_check(b, 8 * ch, 0, 81), -1);
    b[2 * ch] = 1;
    b[6 * ch] = 2;
    ck_assert_int_eq(munmap(b + 2 * ch, 2 * ch), 0);
    ck_assert_int_eq(r3_region_sync(r), 0);
    b[7 * ch] = 3;
    ck_assert_int_eq(r3_region_close(r), 0);
    uint8_t *f = malloc(8 * ch);
    file_read(path, f, 8 * ch, 0);
    ck_assert_int_eq(up_check(f + 2 * ch, 2 * ch, 2 * ch, 81), -1);
    ck_assert_uint_eq(f[6 * ch], 2);
    ck_assert_uint_eq(f[7 * ch], 3);
    free(f);
    free(path);
}
END_TEST

/* Hooks: before_sync runs first (and can veto), after_sync gets the chunks
 * written back, before_close runs once. */
struct hookrec { int before, close; uint64_t chunks[8]; size_t n; int veto; };

static int h_before(void *arg, struct r3_region *r)
{
    (void)r;
    struct hookrec *h = arg;
    h->before++;
    return h->veto;
}

static void h_after(void *arg, struct r3_region *r, const uint64_t *dirty, size_t n)
{
    (void)r;
    struct hookrec *h = arg;
    for (size_t i = 0; i < n && h->n < 8; i++)
        h->chunks[h->n++] = dirty[i];
}

static void h_close(void *arg, struct r3_region *r)
{
    (void)r;
    ((struct hookrec *)arg)->close++;
}

START_TEST(test_hooks)
{
    char *path = make_file("k.img", 4 * MiB, 0);
    struct hookrec h = { 0 };
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.hooks = (struct r3_region_hooks){ .before_sync = h_before, .after_sync = h_after,
                                        .before_close = h_close, .arg = &h };
    struct r3_region *r = open_region(path, &o);
    uint8_t *b = r->base;
    b[5 * r->chunk + 9] = 1;
    b[2 * r->chunk] = 1;
    h.veto = -EBUSY;
    ck_assert_int_eq(r3_region_sync(r), -EBUSY);
    ck_assert_uint_eq(h.n, 0);
    h.veto = 0;
    ck_assert_int_eq(r3_region_sync(r), 0);
    ck_assert_int_eq(h.before, 2);
    ck_assert_uint_eq(h.n, 2);
    ck_assert_uint_eq(h.chunks[0] + h.chunks[1], 7);
    ck_assert_int_eq(r3_region_close(r), 0);
    ck_assert_int_eq(h.close, 1);
    free(path);
}
END_TEST

/* Bad options are clear errors. */
START_TEST(test_bad_opts)
{
    struct r3_source *src;
    struct r3_region *r;
    struct r3_region_opts o;
    TU_OPEN("mem:?size=1M", &src);
    r3_region_opts_init(&o);
    o.size = 1024 * 1024 + 4096;
    ck_assert_int_eq(r3_region_open(&o, src, &r), -EINVAL);
    TU_OPEN("mem:?size=1M", &src);
    r3_region_opts_init(&o);
    o.size = 96 * 1024;
    ck_assert_int_eq(r3_region_open(&o, src, &r), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "multiple of the chunk"));
    TU_OPEN("mem:?size=1M", &src);
    r3_region_opts_init(&o);
    o.prefetch = R3_PREFETCH_HOT;
    ck_assert_int_eq(r3_region_open(&o, src, &r), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "access log"));
    TU_OPEN("mem:?size=1M", &src);
    r3_region_opts_init(&o);
    o.prefetch = R3_PREFETCH_HOT;
    o.prefetch_file = "/nonexistent/log";
    ck_assert_int_eq(r3_region_open(&o, src, &r), -ENOENT);
}
END_TEST

/* A region smaller than its source, on mem:, with interval push. */
START_TEST(test_mem_interval)
{
    struct r3_source *src;
    struct r3_region *r;
    struct r3_region_opts o;
    TU_OPEN("mem:?size=8M", &src);
    r3_region_opts_init(&o);
    o.size = 4 * MiB;
    o.push_interval_ms = 10;
    o.pull_workers = 2;
    ck_assert_int_eq(r3_region_open(&o, src, &r), 0);
    ck_assert_uint_eq(r->len, 4 * MiB);
    up_fill(r->base, 4 * MiB, 0, 61);
    /* no sync: wait until the interval push has written every chunk and
     * then stays idle for 20 intervals (the push counter, an atomic the
     * pusher bumps after each write, orders those writes before our read),
     * then read the source itself, not the region: it must hold every byte,
     * which only the interval push can have put there; the half past the
     * region's end is never written */
    struct r3_region_stats st;
    uint64_t last = 0;
    int still = 0;
    for (int i = 0; i < 20000 && still < 20; i++) {
        usleep(10000);
        r3_region_stats(r, &st);
        still = st.chunks_pushed >= 64 && st.chunks_pushed == last ? still + 1 : 0;
        last = st.chunks_pushed;
    }
    ck_assert_msg(still >= 20, "the interval push never settled (%llu chunks pushed)",
                  (unsigned long long)last);
    uint8_t *back = malloc(8 * MiB);
    ck_assert_ptr_nonnull(back);
    ck_assert_int_eq(r3_source_read(src, back, 4 * MiB, 0), 0);
    long bad = up_check(back, 4 * MiB, 0, 61);
    ck_assert_msg(bad == -1, "the source differs at %ld after the interval pushes", bad);
    ck_assert_int_eq(r3_source_read(src, back + 4 * MiB, 4 * MiB, 4 * MiB), 0);
    for (size_t i = 4 * MiB; i < 8 * MiB; i++)
        ck_assert_msg(back[i] == 0, "byte %zu past the region is %u", i, back[i]);
    ck_assert_int_eq(r3_region_close(r), 0);
    free(back);
}
END_TEST

/* Copy-on-write: writes stay in the region; the source (read-only here)
 * is never written, sync succeeds and after_sync gets no chunks. */
START_TEST(test_copy_on_write)
{
    char *path = make_file("c.img", 4 * MiB, 91);
    char *uri;
    ck_assert_int_ge(asprintf(&uri, "file://%s?readonly=1", path), 0);
    struct r3_source *src;
    struct r3_region *r;
    struct r3_region_opts o;
    TU_OPEN(uri, &src);
    r3_region_opts_init(&o);
    ck_assert_int_eq(r3_region_open(&o, src, &r), -EROFS);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "read-only"));
    TU_OPEN(uri, &src);
    free(uri);
    struct hookrec h = { 0 };
    o.copy_on_write = true;
    o.hooks = (struct r3_region_hooks){ .before_sync = h_before, .after_sync = h_after,
                                        .before_close = h_close, .arg = &h };
    ck_assert_msg(r3_region_open(&o, src, &r) == 0, "%s", r3_last_error());
    uint8_t *b = r->base;
    ck_assert_int_eq(up_check(b, 4 * MiB, 0, 91), -1);
    memset(b + MiB, 0x77, MiB);
    ck_assert_int_eq(r3_region_sync(r), 0);
    ck_assert_int_eq(h.before, 1);
    ck_assert_uint_eq(h.n, 0);
    ck_assert_uint_eq(b[MiB + 5], 0x77);
    struct r3_region_stats st;
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_eq(st.chunks_pushed, 0);
    ck_assert_int_eq(r3_region_close(r), 0);
    uint8_t *f = malloc(4 * MiB);
    file_read(path, f, 4 * MiB, 0);
    ck_assert_int_eq(up_check(f, 4 * MiB, 0, 91), -1);     /* untouched */
    free(f);
    free(path);
}
END_TEST

/* A remote that stops answering: every write blocks until released (like a
 * killed server each call waits out its own timeout for). */
struct stuck_source {
    struct r3_source src;
    uint8_t *data;
    _Atomic int stuck;
    _Atomic uint64_t writes;
};

static int stuck_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    memcpy(buf, ((struct stuck_source *)s)->data + off, len);
    return 0;
}

static int stuck_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct stuck_source *x = (struct stuck_source *)s;
    while (atomic_load(&x->stuck))
        usleep(1000);
    memcpy(x->data + off, buf, len);
    atomic_fetch_add(&x->writes, 1);
    return 0;
}

static void stuck_close(struct r3_source *s)
{
    (void)s;                    /* the test owns it */
}

static const struct r3_source_ops stuck_ops = {
    .scheme = "stuck", .read = stuck_read, .write = stuck_write, .flush = bad_flush,
    .close = stuck_close,
};

/* sync_timeout_ms: a sync that cannot finish returns -ETIMEDOUT in time,
 * saying how much was not written back; once the remote answers again,
 * the next sync writes everything and close succeeds. */
START_TEST(test_sync_timeout)
{
    static struct stuck_source x;
    x.src = (struct r3_source){ .ops = &stuck_ops, .size = 4 * MiB, .align = 1,
                                .flags = R3_SRC_PARALLEL };
    x.data = calloc(1, 4 * MiB);
    struct r3_region_opts o;
    struct r3_region *r;
    r3_region_opts_init(&o);
    o.sync_timeout_ms = 300;
    ck_assert_msg(r3_region_open(&o, &x.src, &r) == 0, "%s", r3_last_error());
    uint8_t *b = r->base;
    for (size_t i = 0; i < 10; i++)
        b[i * r->chunk + 1] = (uint8_t)(i + 1);          /* 10 chunks */
    atomic_store(&x.stuck, 1);
    uint64_t t0 = r3_now_ns();
    ck_assert_int_eq(r3_region_sync(r), -ETIMEDOUT);
    uint64_t ms = (r3_now_ns() - t0) / 1000000;
    ck_assert_uint_ge(ms, 300);
    ck_assert_uint_lt(ms, 3000);
    /* at least the 10 written chunks; a chunk being read ahead while the
     * scan runs may be counted too (it is pushed, never lost) */
    unsigned nchunks = 0;
    const char *m = strstr(r3_last_error(), " chunks (");
    ck_assert_msg(m && strstr(m, "not written back"), "%s", r3_last_error());
    while (m > r3_last_error() && m[-1] >= '0' && m[-1] <= '9')
        m--;
    nchunks = (unsigned)strtoul(m, NULL, 10);
    ck_assert_msg(nchunks >= 10 && nchunks <= 16, "%s", r3_last_error());
    atomic_store(&x.stuck, 0);
    ck_assert_msg(r3_region_sync(r) == 0, "%s", r3_last_error());
    for (size_t i = 0; i < 10; i++)
        ck_assert_uint_eq(x.data[i * r->chunk + 1], i + 1);
    ck_assert_int_eq(r3_region_close(r), 0);
    free(x.data);
}
END_TEST

/* Options: an uninitialized struct and a uffd-only option on another
 * strategy are errors with a sentence. */
START_TEST(test_opts_contract)
{
    struct r3_source *src;
    struct r3_region *r;
    struct r3_region_opts o;
    memset(&o, 0, sizeof o);
    TU_OPEN("mem:?size=1M", &src);
    ck_assert_int_eq(r3_region_open(&o, src, &r), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "r3_region_opts_init"));
    r3_region_opts_init(&o);
    o.strategy = "filesync";
    o.uffd_readahead = 4;
    TU_OPEN("mem:?size=1M", &src);
    ck_assert_int_eq(r3_region_open(&o, src, &r), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "uffd_readahead"));
    r3_region_opts_init(&o);
    o.strategy = "nbd-direct";
    o.copy_on_write = true;
    TU_OPEN("mem:?size=1M", &src);
    ck_assert_int_eq(r3_region_open(&o, src, &r), -ENOTSUP);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "copy-on-write"));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("uffd");
    TCase *tc = tcase_create("uffd");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fill_write_sync);
    tcase_add_test(tc, test_write_first);
    tcase_add_test(tc, test_no_wp_async);
    tcase_add_test(tc, test_remove);
    tcase_add_test(tc, test_remove_no_wp);
    tcase_add_test(tc, test_threads_random);
    tcase_add_test(tc, test_remove_storm);
    tcase_add_test(tc, test_huge_sparse);
    tcase_add_test(tc, test_access_log_hot);
    tcase_add_test(tc, test_access_log_bad);
    tcase_add_test(tc, test_source_error_sigbus);
    tcase_add_test(tc, test_source_error_sigbus_nopoison);
    tcase_add_test(tc, test_bad_opts);
    tcase_add_test(tc, test_fork);
    tcase_add_test(tc, test_evict);
    tcase_add_test(tc, test_mremap_sigbus);
    tcase_add_test(tc, test_evict_source_error);
    tcase_add_test(tc, test_evict_clean);
    tcase_add_test(tc, test_evict_dirty);
    tcase_add_test(tc, test_hooks);
    tcase_add_test(tc, test_unmap);
    tcase_add_test(tc, test_mem_interval);
    tcase_add_test(tc, test_copy_on_write);
    tcase_add_test(tc, test_sync_timeout);
    tcase_add_test(tc, test_opts_contract);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    /* Skip (77) only when the kernel truly lacks userfaultfd here. */
    struct r3_probe pr;
    r3_probe(&pr, NULL);
    if (!pr.uffd_syscall && !pr.uffd_dev) {
        printf("SKIP: no userfaultfd on this machine (%s): the uffd strategy cannot run\n",
               strerror(pr.uffd_errno));
        return 77;
    }
    return tu_run(suite());
}
