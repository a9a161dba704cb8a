/* srccheck: writes, reads and compares a deterministic pattern through any
 * r3 source URI; shared by the source integration tests.
 *   srccheck [-t THREADS] [-s SEED] [-p MAXPIECE] write URI      pattern, unaligned pieces, flush
 *   srccheck [-t THREADS] [-s SEED] [-p MAXPIECE] verify URI     read back (other piece sizes), compare
 *   srccheck [-t THREADS] [-s SEED] -n SECONDS loop URI          random reads + compare until time is up
 *   srccheck -s SEED gen OFF LEN                                 the pattern bytes to stdout
 *   srccheck read URI OFF LEN                                    the source's bytes to stdout
 *   srccheck -s SEED -S NEWSEED region URI                       open a uffd region on URI: its
 *                                                               memory must hold pattern SEED; write
 *                                                               NEWSEED into it in unaligned pieces,
 *                                                               sync, close (77 = no uffd strategy)
 *   srccheck [-w MS] fail URI WORDS                              open (and a write) must fail within
 *                                                               MS (default 10000) with a sentence containing WORDS
 * Byte o of the pattern depends only on (seed, o), so any range can be checked. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <r3/r3.h>

static uint64_t seed = 1, newseed = 2, maxpiece = 300000;
static unsigned nthreads = 4;
static double seconds = 5;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void pattern(unsigned char *p, uint64_t off, size_t len)
{
    for (size_t i = 0; i < len;) {
        uint64_t o = off + i, w = mix(seed * 0x100000001b3ull ^ (o >> 3));
        for (unsigned b = (unsigned)(o & 7); b < 8 && i < len; b++, i++)
            p[i] = (unsigned char)(w >> (8 * b));
    }
}

static uint64_t rnd(uint64_t *st)
{
    *st += 1;
    return mix(*st);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct job {
    struct r3_source *src;
    uint64_t from, to;
    int mode;            /* 0 write, 1 verify, 2 loop */
    unsigned id;
    int rc;
    uint64_t ops;
};

static void *worker(void *arg)
{
    struct job *j = arg;
    unsigned char *buf = malloc(maxpiece), *want = malloc(maxpiece);
    uint64_t st = seed * 7919 + j->id * 104729 + (uint64_t)j->mode;
    double end = now() + seconds;
    uint64_t off = j->from;
    while (buf && want) {
        size_t len;
        if (j->mode == 2) {
            if (now() >= end)
                break;
            len = 1 + rnd(&st) % maxpiece;
            uint64_t sz = j->src->size;
            if (len > sz)
                len = (size_t)sz;
            off = rnd(&st) % (sz - len + 1);
        } else {
            if (off >= j->to)
                break;
            len = 1 + rnd(&st) % maxpiece;
            if (len > j->to - off)
                len = (size_t)(j->to - off);
        }
        int rc;
        if (j->mode == 0) {
            pattern(buf, off, len);
            rc = r3_source_write(j->src, buf, len, off);
        } else {
            rc = r3_source_read(j->src, buf, len, off);
        }
        if (rc < 0) {
            fprintf(stderr, "srccheck: %s of %zu at %" PRIu64 ": %s\n", j->mode ? "read" : "write",
                    len, off, r3_last_error());
            j->rc = rc;
            break;
        }
        if (j->mode != 0) {
            pattern(want, off, len);
            if (memcmp(buf, want, len) != 0) {
                size_t i = 0;
                while (buf[i] == want[i])
                    i++;
                fprintf(stderr, "srccheck: MISMATCH at offset %" PRIu64 " (read of %zu at %" PRIu64
                        "): got %02x, want %02x\n", off + i, len, off, buf[i], want[i]);
                j->rc = -EIO;
                break;
            }
        }
        j->ops++;
        off += len;
    }
    if (!buf || !want)
        j->rc = -ENOMEM;
    free(buf);
    free(want);
    return NULL;
}

static int run(const char *uri, int mode)
{
    struct r3_source *src;
    double t0 = now();
    if (r3_source_open(uri, &src) < 0) {
        fprintf(stderr, "srccheck: open %s: %s\n", uri, r3_last_error());
        return 1;
    }
    unsigned n = nthreads ? nthreads : 1;
    if (!(src->flags & R3_SRC_PARALLEL))
        n = 1;
    struct job *jobs = calloc(n, sizeof *jobs);
    pthread_t *th = calloc(n, sizeof *th);
    if (!jobs || !th)
        return 1;
    /* split at odd boundaries so pieces of two threads meet inside chunks */
    for (unsigned i = 0; i < n; i++) {
        jobs[i] = (struct job){ .src = src, .mode = mode, .id = i,
                                .from = src->size / n * i + (i ? 4097 * i : 0),
                                .to = i + 1 == n ? src->size : src->size / n * (i + 1) + 4097 * (i + 1) };
        pthread_create(&th[i], NULL, worker, &jobs[i]);
    }
    int bad = 0;
    uint64_t ops = 0;
    for (unsigned i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        bad |= jobs[i].rc != 0;
        ops += jobs[i].ops;
    }
    if (!bad && mode == 0 && r3_source_flush(src) < 0) {
        fprintf(stderr, "srccheck: flush: %s\n", r3_last_error());
        bad = 1;
    }
    r3_source_close(src);
    double dt = now() - t0;
    fprintf(stderr, "srccheck: %s %s: %" PRIu64 " calls, %u threads, %.2f s%s\n",
            mode == 0 ? "write" : mode == 1 ? "verify" : "loop", uri, ops, n, dt,
            bad ? ", FAILED" : ", ok");
    free(jobs);
    free(th);
    return bad;
}

static int expect_fail(const char *uri, const char *words, double limit)
{
    struct r3_source *src = NULL;
    double t0 = now();
    int rc = r3_source_open(uri, &src);
    if (rc == 0) {
        char b[4096] = { 0 };
        rc = r3_source_write(src, b, sizeof b, 0);
        r3_source_close(src);
        if (rc == 0) {
            fprintf(stderr, "srccheck: %s opened and wrote, but should fail\n", uri);
            return 1;
        }
    }
    double dt = now() - t0;
    const char *e = r3_last_error();
    printf("%s\n", e);
    if (!*e || strchr(e, '\n')) {
        fprintf(stderr, "srccheck: no single error sentence for %s\n", uri);
        return 1;
    }
    if (words && !strcasestr(e, words)) {
        fprintf(stderr, "srccheck: error for %s lacks '%s'\n", uri, words);
        return 1;
    }
    if (dt > limit) {
        fprintf(stderr, "srccheck: failing took %.1f s (limit %.1f s)\n", dt, limit);
        return 1;
    }
    return 0;
}

static int dump(const char *uri, uint64_t off, uint64_t len)
{
    struct r3_source *src;
    if (r3_source_open(uri, &src) < 0) {
        fprintf(stderr, "srccheck: open %s: %s\n", uri, r3_last_error());
        return 1;
    }
    static unsigned char b[1 << 20];
    int rc = 0;
    while (len > 0 && rc == 0) {
        size_t k = len < sizeof b ? (size_t)len : sizeof b;
        rc = r3_source_read(src, b, k, off);
        if (rc == 0)
            fwrite(b, 1, k, stdout);
        off += k;
        len -= k;
    }
    if (rc < 0)
        fprintf(stderr, "srccheck: read: %s\n", r3_last_error());
    r3_source_close(src);
    return rc < 0;
}

/* The same bytes seen through a uffd region, and written back through it. */
static int region(const char *uri)
{
    if (!r3_strategy_find("uffd")) {
        fprintf(stderr, "srccheck: the uffd strategy is not built into this libr3\n");
        return 77;
    }
    struct r3_source *src;
    struct r3_region *reg;
    struct r3_region_opts o;
    if (r3_source_open(uri, &src) < 0) {
        fprintf(stderr, "srccheck: open %s: %s\n", uri, r3_last_error());
        return 1;
    }
    r3_region_opts_init(&o);
    o.strategy = "uffd";
    o.pull_workers = 4;
    int rc = r3_region_open(&o, src, &reg);
    if (rc == -ENOSYS || rc == -EPERM) {
        fprintf(stderr, "srccheck: userfaultfd unavailable: %s\n", r3_last_error());
        return 77;
    }
    if (rc < 0) {
        fprintf(stderr, "srccheck: region on %s: %s\n", uri, r3_last_error());
        return 1;
    }
    unsigned char *base = reg->base, *want = malloc(1 << 20);
    uint64_t size = reg->len, st = seed * 31;
    int bad = !want;
    for (uint64_t off = 0; off < size && !bad; off += 1 << 20) {   /* faults fill chunks */
        size_t n = size - off < (1u << 20) ? (size_t)(size - off) : (1u << 20);
        pattern(want, off, n);
        if (memcmp(base + off, want, n) != 0) {
            fprintf(stderr, "srccheck: region MISMATCH in [%" PRIu64 ", +%zu)\n", off, n);
            bad = 1;
        }
    }
    seed = newseed;
    for (uint64_t off = 0; off < size && !bad;) {                   /* write through memory */
        size_t n = 1 + rnd(&st) % maxpiece;
        if (n > size - off)
            n = (size_t)(size - off);
        pattern(base + off, off, n);
        off += n;
    }
    if (!bad && r3_region_sync(reg) < 0) {
        fprintf(stderr, "srccheck: region sync: %s\n", r3_last_error());
        bad = 1;
    }
    if (r3_region_close(reg) < 0 && !bad) {
        fprintf(stderr, "srccheck: region close: %s\n", r3_last_error());
        bad = 1;
    }
    free(want);
    fprintf(stderr, "srccheck: region %s: %s\n", uri, bad ? "FAILED" : "ok");
    return bad;
}

int main(int argc, char **argv)
{
    int opt;
    double limit = 10;
    while ((opt = getopt(argc, argv, "t:s:S:p:n:w:")) != -1) {
        switch (opt) {
        case 't': nthreads = (unsigned)atoi(optarg); break;
        case 's': seed = strtoull(optarg, NULL, 0); break;
        case 'S': newseed = strtoull(optarg, NULL, 0); break;
        case 'p': maxpiece = strtoull(optarg, NULL, 0); break;
        case 'n': seconds = atof(optarg); break;
        case 'w': limit = atof(optarg) / 1000; break;
        default: return 2;
        }
    }
    if (maxpiece < 1)
        maxpiece = 1;
    if (optind + 2 > argc) {
        fprintf(stderr, "usage: srccheck [-t N] [-s SEED] [-p MAXPIECE] [-n SEC] [-w MS] "
                        "write|verify|loop URI | gen OFF LEN | fail URI WORDS\n");
        return 2;
    }
    const char *cmd = argv[optind], *uri = argv[optind + 1];
    if (strcmp(cmd, "write") == 0)
        return run(uri, 0);
    if (strcmp(cmd, "verify") == 0)
        return run(uri, 1);
    if (strcmp(cmd, "loop") == 0)
        return run(uri, 2);
    if (strcmp(cmd, "fail") == 0)
        return expect_fail(uri, optind + 2 < argc ? argv[optind + 2] : NULL, limit);
    if (strcmp(cmd, "region") == 0)
        return region(uri);
    if (strcmp(cmd, "read") == 0 && optind + 4 <= argc)
        return dump(uri, strtoull(argv[optind + 2], NULL, 0), strtoull(argv[optind + 3], NULL, 0));
    if (strcmp(cmd, "gen") == 0 && optind + 3 <= argc) {
        uint64_t off = strtoull(argv[optind + 1], NULL, 0), len = strtoull(argv[optind + 2], NULL, 0);
        unsigned char b[65536];
        while (len > 0) {
            size_t k = len < sizeof b ? (size_t)len : sizeof b;
            pattern(b, off, k);
            fwrite(b, 1, k, stdout);
            off += k;
            len -= k;
        }
        return 0;
    }
    fprintf(stderr, "srccheck: unknown command %s\n", cmd);
    return 2;
}
