/* SPDX-License-Identifier: BSD-3-Clause */
/* r3check: the one checker the integration tests drive, through the real
 * library. Data is the pattern of tests/common/pattern.h, so whatever one
 * command writes another can check, through another path.
 *
 *   r3check [-s SEED] [-t N] [-p [MIN-]MAX] write URI   the pattern over the whole source, in
 *                                                      random pieces from N threads, then flush
 *   r3check [-s SEED] [-t N] [-p [MIN-]MAX] verify URI  read it back (other pieces) and compare
 *   r3check [-s SEED] [-t N] [-n SECONDS] loop URI      random reads + compare until time is up
 *   r3check [-s SEED] gen OFF LEN                       the pattern bytes, on stdout
 *   r3check read URI OFF LEN                            the source's bytes, on stdout
 *   r3check size URI                                    the source's size in bytes
 *   r3check [-w MS] fail URI [WORDS]                    opening URI (and a write) must fail within
 *                                                      MS ms (10000) with one sentence holding WORDS
 *   r3check put URI FILE [-o OFF] [-t N] [-p MIN-MAX] [-s SEED] [-d US] [--no-flush]
 *   r3check get URI FILE [-o OFF] [-l LEN] [-t N] [-p MIN-MAX] [-d US]
 *                                                      copy a file into / out of a source
 *   r3check region URI [-s SEED] [-S NEWSEED] [--strategy S] [--chunk SIZE] [--pull N]
 *                  [--push N] [--interval MS] [--sha256] [--die]
 *                                                      open a region: its memory must hold SEED
 *                                                      (if given); write NEWSEED through memory
 *                                                      (if given), sync; --die: SIGKILL after the
 *                                                      sync; --sha256: print "before HEX" and
 *                                                      "after HEX" of the whole region
 *   r3check probe URI                                   read 4 KiB at 0 into a canary-filled buffer:
 *                                                      1 with the error, 0 if every byte was filled,
 *                                                      3 if it returned 0 with bytes unfilled
 *   r3check probe-write URI                             write 64 MiB at 0 (a server that may not read)
 *   r3check contract STRATEGY URI                       the region contract: refused options, the
 *                                                      chunks after_sync gets, the stats
 *   r3check requires FEATURE...                         exit 77 with the reason if the kernel
 *                                                      lacks one (see tests/common/requires.h)
 * Exit status: 0 ok, 1 a check or the library failed, 2 usage error, 77 skip. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <r3/r3.h>
#include "internal.h"
#include "tests/common/pattern.h"
#include "tests/common/requires.h"

static struct {
    uint64_t seed, newseed, pmin, pmax, off, len, delay_us, chunk;
    bool seed_given, newseed_given, piece_given, len_given, noflush, die, sha256;
    unsigned threads;
    bool threads_given;
    int pull, push, interval_ms;
    const char *strategy, *detect;
    double seconds, limit;
} opt = { .seed = 1, .threads = 4, .seconds = 5, .limit = 10, .pull = -1, .push = -1,
          .interval_ms = -1, .strategy = "uffd" };

static _Noreturn void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("r3check: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'r3check --help' for more information.\n", stderr);
    exit(2);
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t rnd(uint64_t *st)
{
    return mix(++*st);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A piece length in [pmin, pmax], at most left, a multiple of align (>= align). */
static size_t piece(uint64_t *st, uint64_t left, uint32_t align)
{
    uint64_t n = opt.pmin + (opt.pmax > opt.pmin ? rnd(st) % (opt.pmax - opt.pmin + 1) : 0);
    if (align > 1)
        n = n < align ? align : n / align * align;
    return (size_t)(n < left ? n : left);
}

static int open_source(const char *uri, struct r3_source **src)
{
    if (r3_source_open(uri, src) < 0) {
        fprintf(stderr, "r3check: %s\n", r3_last_error());
        return 1;
    }
    return 0;
}

/* ---- write / verify / loop: the pattern through the source's own calls */

enum mode { WRITE, VERIFY, LOOP };

struct job {
    struct r3_source *src;
    uint64_t from, to, ops;
    enum mode mode;
    unsigned id;
    int rc;
};

static int one(struct job *j, unsigned char *buf, size_t len, uint64_t off)
{
    int rc;
    if (j->mode == WRITE) {
        r3t_fill(buf, len, off, opt.seed);
        rc = r3_source_write(j->src, buf, len, off);
    } else {
        rc = r3_source_read(j->src, buf, len, off);
    }
    if (rc < 0) {
        fprintf(stderr, "r3check: %s of %zu at %" PRIu64 ": %s\n", j->mode == WRITE ? "write" : "read",
                len, off, r3_last_error());
        return rc;
    }
    long long bad = j->mode == WRITE ? -1 : r3t_check(buf, len, off, opt.seed);
    if (bad >= 0) {
        fprintf(stderr, "r3check: MISMATCH at offset %" PRIu64 " (read of %zu at %" PRIu64
                "): got %02x, want %02x\n", off + (uint64_t)bad, len, off, buf[bad],
                r3t_byte(off + (uint64_t)bad, opt.seed));
        return -EIO;
    }
    return 0;
}

static void *worker(void *arg)
{
    struct job *j = arg;
    uint32_t al = j->src->align > 1 ? j->src->align : 1;
    unsigned char *buf = malloc(opt.pmax + al);
    uint64_t st = opt.seed * 7919 + j->id * 104729 + (uint64_t)j->mode, off = j->from;
    double end = now() + opt.seconds;
    if (!buf)
        j->rc = -ENOMEM;
    while (buf && j->rc == 0) {
        size_t len;
        if (j->mode == LOOP) {
            if (now() >= end)
                break;
            len = piece(&st, j->src->size, al);
            off = rnd(&st) % (j->src->size - len + 1) / al * al;
        } else {
            if (off >= j->to)
                break;
            len = piece(&st, j->to - off, al);
        }
        j->rc = one(j, buf, len, off);
        j->ops++;
        off += len;
    }
    free(buf);
    return NULL;
}

static int run(const char *uri, enum mode mode)
{
    static const char *const names[] = { "write", "verify", "loop" };
    struct r3_source *src;
    double t0 = now();
    if (open_source(uri, &src))
        return 1;
    unsigned n = src->flags & R3_SRC_PARALLEL ? opt.threads : 1;
    uint64_t al = src->align > 1 ? src->align : 1;
    struct job jobs[64];
    pthread_t th[64];
    bool started_all = true;
    /* split at odd boundaries so the pieces of two threads meet inside chunks */
    for (unsigned i = 0; i < n; i++) {
        uint64_t from = i ? (src->size / n * i + 4097 * i) / al * al : 0;
        uint64_t to = i + 1 == n ? src->size : (src->size / n * (i + 1) + 4097 * (i + 1)) / al * al;
        jobs[i] = (struct job){ .src = src, .mode = mode, .id = i, .from = from,
                                .to = to < src->size ? to : src->size };
        if (pthread_create(&th[i], NULL, worker, &jobs[i]) != 0) {
            fprintf(stderr, "r3check: cannot start a thread\n");
            n = i;
            started_all = false;
        }
    }
    int bad = !started_all;
    uint64_t ops = 0;
    for (unsigned i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        bad |= jobs[i].rc != 0;
        ops += jobs[i].ops;
    }
    if (!bad && mode == WRITE && r3_source_flush(src) < 0) {
        fprintf(stderr, "r3check: flush: %s\n", r3_last_error());
        bad = 1;
    }
    r3_source_close(src);
    fprintf(stderr, "r3check: %s %s: %" PRIu64 " calls, %u threads, %.2f s, %s\n", names[mode], uri,
            ops, n, now() - t0, bad ? "FAILED" : "ok");
    return bad;
}

/* ---- gen / read / size / fail */

static int gen(uint64_t off, uint64_t len)
{
    static unsigned char b[1 << 20];
    while (len > 0) {
        size_t k = len < sizeof b ? (size_t)len : sizeof b;
        r3t_fill(b, k, off, opt.seed);
        if (fwrite(b, 1, k, stdout) != k)
            return 1;
        off += k;
        len -= k;
    }
    return fflush(stdout) != 0;
}

static int dump(const char *uri, uint64_t off, uint64_t len)
{
    static unsigned char b[1 << 20];
    struct r3_source *src;
    if (open_source(uri, &src))
        return 1;
    int rc = 0;
    while (len > 0 && rc == 0) {
        size_t k = len < sizeof b ? (size_t)len : sizeof b;
        rc = r3_source_read(src, b, k, off);
        if (rc == 0 && fwrite(b, 1, k, stdout) != k)
            rc = -EIO;
        off += k;
        len -= k;
    }
    if (rc < 0)
        fprintf(stderr, "r3check: read: %s\n", r3_last_error());
    r3_source_close(src);
    return rc < 0;
}

static int size(const char *uri)
{
    struct r3_source *src;
    if (open_source(uri, &src))
        return 1;
    printf("%" PRIu64 "\n", src->size);
    r3_source_close(src);
    return 0;
}

static int expect_fail(const char *uri, const char *words)
{
    struct r3_source *src = NULL;
    double t0 = now();
    int rc = r3_source_open(uri, &src);
    if (rc == 0) {
        char b[4096] = { 0 };
        rc = r3_source_write(src, b, sizeof b < src->size ? sizeof b : (size_t)src->size, 0);
        r3_source_close(src);
        if (rc == 0) {
            fprintf(stderr, "r3check: %s opened and wrote, but should fail\n", uri);
            return 1;
        }
    }
    double dt = now() - t0;
    const char *e = r3_last_error();
    printf("%s\n", e);
    if (!*e || strchr(e, '\n')) {
        fprintf(stderr, "r3check: no single error sentence for %s\n", uri);
        return 1;
    }
    if (words && !strcasestr(e, words)) {
        fprintf(stderr, "r3check: the error for %s lacks '%s'\n", uri, words);
        return 1;
    }
    if (dt > opt.limit) {
        fprintf(stderr, "r3check: failing took %.1f s (limit %.1f s)\n", dt, opt.limit);
        return 1;
    }
    return 0;
}

/* ---- put / get: a file into or out of a source, in pieces from threads */

struct copy {
    struct r3_source *src;
    int fd;
    bool put;
    uint64_t len, next, rng;     /* next: the next byte (from opt.off) to hand out */
    pthread_mutex_t mu;
    int rc;
    char err[512];
};

static int copy_piece(struct copy *c, char *buf, uint64_t n, uint64_t rel)
{
    if (opt.delay_us)
        usleep((useconds_t)opt.delay_us);
    if (c->put) {
        if (pread(c->fd, buf, n, (off_t)rel) != (ssize_t)n)
            return -EIO;
        return r3_source_write(c->src, buf, n, opt.off + rel);
    }
    int rc = r3_source_read(c->src, buf, n, opt.off + rel);
    if (rc == 0 && pwrite(c->fd, buf, n, (off_t)rel) != (ssize_t)n)
        rc = -EIO;
    return rc;
}

static void *copier(void *arg)
{
    struct copy *c = arg;
    char *buf = malloc(opt.pmax);
    for (bool go = buf != NULL; go;) {
        pthread_mutex_lock(&c->mu);
        go = c->rc == 0 && c->next < c->len;
        uint64_t rel = c->next, n = go ? piece(&c->rng, c->len - c->next, 1) : 0;
        c->next += n;
        pthread_mutex_unlock(&c->mu);
        int rc = go ? copy_piece(c, buf, n, rel) : 0;
        if (rc < 0) {
            pthread_mutex_lock(&c->mu);
            if (c->rc == 0) {
                c->rc = rc;
                snprintf(c->err, sizeof c->err, "%s", r3_last_error()[0] ? r3_last_error() : strerror(-rc));
            }
            pthread_mutex_unlock(&c->mu);
            go = false;
        }
    }
    if (!buf)
        c->rc = -ENOMEM;
    free(buf);
    return NULL;
}

static int copy(const char *uri, const char *file, bool put)
{
    struct copy c = { .put = put, .rng = mix(opt.seed) | 1, .mu = PTHREAD_MUTEX_INITIALIZER };
    if (open_source(uri, &c.src))
        return 1;
    c.fd = open(file, put ? O_RDONLY : (O_WRONLY | O_CREAT | O_TRUNC), 0644);
    if (c.fd < 0) {
        fprintf(stderr, "r3check: %s: %s\n", file, strerror(errno));
        r3_source_close(c.src);
        return 1;
    }
    struct stat st;
    c.len = opt.len_given ? opt.len : put ? (fstat(c.fd, &st) == 0 ? (uint64_t)st.st_size : 0)
                                          : (opt.off < c.src->size ? c.src->size - opt.off : 0);
    pthread_t t[64];
    unsigned n = opt.threads_given ? opt.threads : 1;
    for (unsigned i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, copier, &c) != 0) {
            snprintf(c.err, sizeof c.err, "cannot start a thread");
            c.rc = -EAGAIN;
            n = i;
        }
    for (unsigned i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    if (c.rc == 0 && put && !opt.noflush && r3_source_flush(c.src) < 0) {
        c.rc = -EIO;
        snprintf(c.err, sizeof c.err, "%s", r3_last_error());
    }
    close(c.fd);
    r3_source_close(c.src);
    if (c.rc < 0)
        fprintf(stderr, "r3check: %s\n", c.err);
    return c.rc < 0;
}

/* ---- region: the pattern through a region's memory */

static void print_sha256(const char *what, const void *p, size_t len)
{
    unsigned char md[32];
    unsigned mdl = 0;
    EVP_Digest(p, len, md, &mdl, EVP_sha256(), NULL);
    printf("%s ", what);
    for (unsigned i = 0; i < mdl; i++)
        printf("%02x", md[i]);
    printf("\n");
    fflush(stdout);
}

static int region_verify(const unsigned char *base, uint64_t len)
{
    for (uint64_t off = 0; off < len; off += 1 << 20) {    /* faults fill the chunks */
        size_t n = len - off < (1u << 20) ? (size_t)(len - off) : (1u << 20);
        long long bad = r3t_check(base + off, n, off, opt.seed);
        if (bad >= 0) {
            fprintf(stderr, "r3check: region MISMATCH at offset %" PRIu64 ": got %02x, want %02x\n",
                    off + (uint64_t)bad, base[off + (uint64_t)bad], r3t_byte(off + (uint64_t)bad, opt.seed));
            return 1;
        }
    }
    return 0;
}

static void region_write(unsigned char *base, uint64_t len)
{
    uint64_t st = opt.newseed * 31;
    for (uint64_t off = 0; off < len;) {                     /* memory stores, uneven pieces */
        size_t n = piece(&st, len - off, 1);
        r3t_fill(base + off, n, off, opt.newseed);
        off += n;
    }
}

static int region_open(const char *uri, struct r3_region **r)
{
    struct r3_source *src;
    struct r3_region_opts o;
    if (open_source(uri, &src))
        return 1;
    r3_region_opts_init(&o);
    o.strategy = opt.strategy;
    o.filesync_detect = opt.detect;
    o.chunk = (uint32_t)opt.chunk;
    if (opt.pull >= 0)
        o.pull_workers = (unsigned)opt.pull;
    if (opt.push >= 0)
        o.push_workers = (unsigned)opt.push;
    if (opt.interval_ms >= 0)
        o.push_interval_ms = (unsigned)opt.interval_ms;
    o.workdir = getenv("TMPDIR");         /* where mounts and sockets go */
    int rc = r3_region_open(&o, src, r);
    if (rc == -ENOSYS || rc == -EPERM) {
        printf("SKIP: %s\n", r3_last_error());
        return 77;
    }
    if (rc < 0) {
        fprintf(stderr, "r3check: region on %s: %s\n", uri, r3_last_error());
        return 1;
    }
    return 0;
}

static void region_report(struct r3_region *r, double first_ms, double secs)
{
    struct r3_region_stats st = { 0 };
    r3_region_stats(r, &st);
    fprintf(stderr, "r3check: region %s: first byte %.3f ms, %.1f MB/s, faults=%" PRIu64
            " bytes_pulled=%" PRIu64 " chunks_pushed=%" PRIu64 " fault_wait_p99=%" PRIu64 "ns%s%s\n",
            opt.strategy, first_ms, secs > 0 ? (double)r->len / secs / 1e6 : 0.0, st.faults,
            st.bytes_pulled, st.chunks_pushed, st.fault_wait_p99_ns,
            strcmp(opt.strategy, "filesync") == 0 ? " detect=" : "",
            strcmp(opt.strategy, "filesync") == 0 ? r3_filesync_detect(r) : "");
}

static int region(const char *uri)
{
    struct r3_region *r;
    double t0 = now();
    int rc = region_open(uri, &r);
    if (rc)
        return rc;
    unsigned char *base = r->base;
    volatile unsigned char first = base[0];
    (void)first;
    double t1 = now();
    if (opt.sha256)
        print_sha256("before", base, r->len);
    int bad = opt.seed_given ? region_verify(base, r->len) : 0;
    if (!bad && opt.newseed_given) {
        region_write(base, r->len);
        if (opt.sha256)
            print_sha256("after", base, r->len);
        if (r3_region_sync(r) < 0) {
            fprintf(stderr, "r3check: region sync: %s\n", r3_last_error());
            bad = 1;
        }
    }
    region_report(r, (t1 - t0) * 1e3, now() - t1);
    if (opt.die && !bad) {
        fflush(NULL);
        raise(SIGKILL);                   /* what was synced must survive this */
    }
    if (r3_region_close(r) < 0 && !bad) {
        fprintf(stderr, "r3check: region close: %s\n", r3_last_error());
        bad = 1;
    }
    return bad;
}

static int requires(char **features, int n)
{
    for (int i = 0; i < n; i++) {
        char why[256];
        int m = r3t_missing(features[i], why, sizeof why);
        if (m < 0)
            usage_error("unknown feature '%s'", features[i]);
        if (m > 0) {
            printf("%s\n", why);
            return 77;
        }
    }
    return 0;
}

/* ---- the command line */

static const char help[] =
    "Usage: r3check [OPTION]... COMMAND ARG...\n"
    "The checker of r3's tests: the pattern of tests/common/pattern.h through any source URI.\n"
    "  write URI | verify URI | loop URI   the pattern through the source, from threads\n"
    "  gen OFF LEN | read URI OFF LEN      pattern / source bytes on stdout\n"
    "  size URI | fail URI [WORDS]         the size; opening must fail with WORDS\n"
    "  put URI FILE | get URI FILE         copy a file into / out of the source\n"
    "  region URI                          check -s and write -S through a region's memory\n"
    "  requires FEATURE...                 exit 77 if the kernel lacks one\n"
    "  probe URI | probe-write URI         one read (3: returned 0 with bytes unfilled) / one 64M write\n"
    "  contract STRATEGY URI               the region contract of a strategy\n"
    "Options:\n"
    "  -s, --seed N          pattern seed (1); for put/get, the piece-size seed\n"
    "  -S, --new-seed N      region: write this pattern through memory\n"
    "  -t, -j, --threads N   threads (write/verify/loop 4, put/get 1)\n"
    "  -p, --piece [MIN-]MAX piece sizes (1-300000; put/get 1M-1M)\n"
    "  -n, --seconds S       loop: how long (5)\n"
    "  -w, --within MS       fail: the failure must come within MS (10000)\n"
    "  -o, --offset OFF      put/get: from this source offset\n"
    "  -l, --length LEN      get: this many bytes\n"
    "  -d, --delay-us US     put/get: sleep before each piece\n"
    "      --no-flush        put: do not flush\n"
    "      --strategy S      region: the strategy (uffd)\n"
    "      --chunk SIZE, --pull N, --push N, --interval MS   region options\n"
    "      --sha256          region: print 'before HEX' and 'after HEX'\n"
    "      --detect MODE     region (filesync): pagemap or hash\n"
    "      --die             region: SIGKILL itself after the sync\n"
    "  -h, --help            this text;  -V, --version  the version\n"
    "Exit status: 0 ok, 1 a check failed, 2 usage error, 77 the kernel lacks a feature.\n";

static uint64_t num(const char *flag, const char *s, bool sized)
{
    uint64_t v;
    char *end;
    if (sized && r3_parse_size(s, &v) == 0)
        return v;
    errno = 0;
    v = strtoull(s, &end, 0);
    if (sized || errno || end == s || *end || *s == '-')
        usage_error("%s: bad number '%s'", flag, s);
    return v;
}

static void parse_piece(const char *s)
{
    const char *dash = strchr(s, '-');
    char lo[64];
    if (dash && (size_t)(dash - s) < sizeof lo) {
        memcpy(lo, s, (size_t)(dash - s));
        lo[dash - s] = 0;
        opt.pmin = num("-p", lo, true);
        opt.pmax = num("-p", dash + 1, true);
    } else {
        opt.pmin = 1;
        opt.pmax = num("-p", s, true);
    }
    if (opt.pmin < 1 || opt.pmax < opt.pmin || opt.pmax > (1u << 30))
        usage_error("-p: bad piece sizes '%s' (MIN-MAX, 1 <= MIN <= MAX <= 1G)", s);
    opt.piece_given = true;
}

enum { O_NOFLUSH = 256, O_STRATEGY, O_CHUNK, O_PULL, O_PUSH, O_INTERVAL, O_SHA, O_DIE, O_DETECT };

static void parse(int argc, char **argv)
{
    static const struct option longs[] = {
        { "seed", 1, NULL, 's' }, { "new-seed", 1, NULL, 'S' }, { "threads", 1, NULL, 't' },
        { "piece", 1, NULL, 'p' }, { "seconds", 1, NULL, 'n' }, { "within", 1, NULL, 'w' },
        { "offset", 1, NULL, 'o' }, { "length", 1, NULL, 'l' }, { "delay-us", 1, NULL, 'd' },
        { "no-flush", 0, NULL, O_NOFLUSH }, { "strategy", 1, NULL, O_STRATEGY },
        { "chunk", 1, NULL, O_CHUNK }, { "pull", 1, NULL, O_PULL }, { "push", 1, NULL, O_PUSH },
        { "interval", 1, NULL, O_INTERVAL }, { "sha256", 0, NULL, O_SHA }, { "die", 0, NULL, O_DIE },
        { "detect", 1, NULL, O_DETECT },
        { "help", 0, NULL, 'h' }, { "version", 0, NULL, 'V' }, { NULL, 0, NULL, 0 },
    };
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, ":s:S:t:j:p:n:w:o:l:d:hV", longs, NULL)) != -1;) {
        switch (c) {
        case 's': opt.seed = num("-s", optarg, false); opt.seed_given = true; break;
        case 'S': opt.newseed = num("-S", optarg, false); opt.newseed_given = true; break;
        case 't': case 'j':
            opt.threads = (unsigned)num("-t", optarg, false);
            if (opt.threads < 1 || opt.threads > 64)
                usage_error("-t: threads must be between 1 and 64");
            opt.threads_given = true;
            break;
        case 'p': parse_piece(optarg); break;
        case 'n': opt.seconds = atof(optarg); break;
        case 'w': opt.limit = atof(optarg) / 1000; break;
        case 'o': opt.off = num("-o", optarg, true); break;
        case 'l': opt.len = num("-l", optarg, true); opt.len_given = true; break;
        case 'd': opt.delay_us = num("-d", optarg, false); break;
        case O_NOFLUSH: opt.noflush = true; break;
        case O_STRATEGY: opt.strategy = optarg; break;
        case O_CHUNK: opt.chunk = num("--chunk", optarg, true); break;
        case O_PULL: opt.pull = (int)num("--pull", optarg, false); break;
        case O_PUSH: opt.push = (int)num("--push", optarg, false); break;
        case O_INTERVAL: opt.interval_ms = (int)num("--interval", optarg, false); break;
        case O_SHA: opt.sha256 = true; break;
        case O_DIE: opt.die = true; break;
        case O_DETECT: opt.detect = optarg; break;
        case 'h': fputs(help, stdout); exit(0);
        case 'V': printf("r3check (r3) %s\n", PACKAGE_VERSION); exit(0);
        case ':': usage_error("%s needs a value", argv[optind - 1]);
        default: usage_error("unknown option %s", argv[optind - 1]);
        }
    }
}

/* One read against a (possibly hostile) server: the canary shows bytes the
 * read did not fill although it returned 0. */
static int probe(const char *uri)
{
    struct r3_source *src;
    if (r3_source_open(uri, &src) < 0) {
        fprintf(stderr, "r3check: %s\n", r3_last_error());
        return 1;
    }
    static unsigned char buf[4096];
    memset(buf, 0xa5, sizeof buf);
    int rc = r3_source_read(src, buf, sizeof buf, 0);
    if (rc < 0)
        fprintf(stderr, "r3check: %s\n", r3_last_error());
    size_t unfilled = 0;
    for (size_t i = 0; i < sizeof buf; i++)
        unfilled += buf[i] == 0xa5;
    r3_source_close(src);
    if (rc < 0)
        return 1;
    if (unfilled) {
        fprintf(stderr, "r3check: the read returned 0 with %zu of %zu bytes unfilled\n", unfilled, sizeof buf);
        return 3;
    }
    return 0;
}

/* One big write against a server that may not read. */
static int probe_write(const char *uri)
{
    struct r3_source *src;
    if (r3_source_open(uri, &src) < 0) {
        fprintf(stderr, "r3check: %s\n", r3_last_error());
        return 1;
    }
    size_t len = 64u << 20;
    if (len > src->size)
        len = (size_t)src->size;
    char *buf = calloc(1, len);
    int rc = buf ? r3_source_write(src, buf, len, 0) : -1;
    if (rc < 0)
        fprintf(stderr, "r3check: %s\n", r3_last_error());
    free(buf);
    r3_source_close(src);
    return rc < 0 ? 1 : 0;
}


static int fails = 0;
#define CHECK(c, ...) do { if (!(c)) { fprintf(stderr, "r3check contract: " __VA_ARGS__); \
                                       fputc('\n', stderr); fails++; } } while (0)

struct seen { uint64_t list[64]; size_t n; int calls; };

static void after_sync(void *arg, struct r3_region *r, const uint64_t *dirty, size_t n)
{
    struct seen *s = arg;
    (void)r;
    s->calls++;
    s->n = n;
    for (size_t i = 0; i < n && i < 64; i++)
        s->list[i] = dirty[i];
}

/* Open with one option the strategy cannot honour: must fail, saying so. */
static void refused(const char *strategy, const char *uri, const char *what, void (*set)(struct r3_region_opts *))
{
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = strategy;
    o.workdir = getenv("TMPDIR");
    set(&o);
    struct r3_source *src;
    struct r3_region *r;
    if (r3_source_open(uri, &src) < 0) {
        CHECK(0, "open %s: %s", uri, r3_last_error());
        return;
    }
    int rc = r3_region_open(&o, src, &r);
    CHECK(rc == -EINVAL, "%s: %s was not refused (%d)", strategy, what, rc);
    if (rc == 0)
        r3_region_close(r);
    else
        CHECK(strstr(r3_last_error(), what) != NULL, "%s: the refusal does not name %s: %s", strategy, what,
              r3_last_error());
}

static void set_record(struct r3_region_opts *o) { o->record_access = "/nonexistent/log"; }
static void set_hot(struct r3_region_opts *o) { o->prefetch = R3_PREFETCH_HOT; o->prefetch_file = "/nonexistent"; }
static void set_faults(struct r3_region_opts *o) { o->fault_threads = 8; }
static void set_pull(struct r3_region_opts *o) { o->pull_workers = 2; }

static int contract(const char *strategy, const char *uri)
{
    refused(strategy, uri, "access log (record_access)", set_record);
    refused(strategy, uri, "prefetch=hot", set_hot);
    refused(strategy, uri, "fault_threads", set_faults);
    if (!strcmp(strategy, "nbd-direct"))
        refused(strategy, uri, "pull_workers", set_pull);

    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = strategy;
    o.workdir = getenv("TMPDIR");
    struct seen seen = { .n = 0 };
    o.hooks.after_sync = after_sync;
    o.hooks.arg = &seen;
    struct r3_source *src;
    struct r3_region *r;
    if (r3_source_open(uri, &src) < 0 || r3_region_open(&o, src, &r) < 0) {
        fprintf(stderr, "r3check contract: %s\n", r3_last_error());
        return 1;
    }
    uint64_t nchunks = r->len / r->chunk, want[3] = { 0, 3, nchunks - 1 };
    for (int i = 0; i < 3; i++)
        ((volatile uint8_t *)r->base)[want[i] * r->chunk + 100] = (uint8_t)(0x40 + i);
    CHECK(r3_region_sync(r) == 0, "sync: %s", r3_last_error());
    CHECK(seen.calls == 1 && seen.n == 3, "%s: after_sync got %zu chunks in %d calls (want 3 in 1)",
          strategy, seen.n, seen.calls);
    for (size_t i = 0; i < 3 && i < seen.n; i++)
        CHECK(seen.list[i] == want[i], "%s: after_sync chunk %zu is %" PRIu64 ", want %" PRIu64, strategy, i,
              seen.list[i], want[i]);
    CHECK(r3_region_sync(r) == 0, "second sync: %s", r3_last_error());
    CHECK(seen.calls == 2 && seen.n == 0, "%s: a sync with nothing written reported %zu chunks", strategy, seen.n);
    struct r3_region_stats st = { 0 };
    CHECK(r3_region_stats(r, &st) == 0, "stats: %s", r3_last_error());
    CHECK(st.chunks_pushed >= 3 && st.bytes_pushed >= 3 && st.syncs == 2,
          "%s: stats: %" PRIu64 " chunks, %" PRIu64 " bytes pushed, %" PRIu64 " syncs", strategy,
          st.chunks_pushed, st.bytes_pushed, st.syncs);
    fprintf(stderr, "r3check contract: %s: after_sync [%" PRIu64 " %" PRIu64 " %" PRIu64 "], %" PRIu64
            " chunks / %" PRIu64 " bytes pushed, %" PRIu64 " bytes pulled\n", strategy, seen.list[0],
            seen.list[1], seen.list[2], st.chunks_pushed, st.bytes_pushed, st.bytes_pulled);
    CHECK(r3_region_close(r) == 0, "close: %s", r3_last_error());
    return fails ? 1 : 0;
}


/* The subcommand and its arguments: argv[optind..]. */
static int dispatch(int n, char **a, bool copying)
{
    const char *cmd = a[0];
    static const char *const uri_cmds[] = { "write", "verify", "loop", "size", "region" };
    for (size_t i = 0; i < sizeof uri_cmds / sizeof uri_cmds[0]; i++)
        if (strcmp(cmd, uri_cmds[i]) == 0 && n != 2)
            usage_error("%s takes one URI", cmd);
    if (strcmp(cmd, "write") == 0)
        return run(a[1], WRITE);
    if (strcmp(cmd, "verify") == 0)
        return run(a[1], VERIFY);
    if (strcmp(cmd, "loop") == 0)
        return run(a[1], LOOP);
    if (strcmp(cmd, "size") == 0)
        return size(a[1]);
    if (strcmp(cmd, "region") == 0)
        return region(a[1]);
    if (strcmp(cmd, "gen") == 0 && n == 3)
        return gen(num("gen OFF", a[1], true), num("gen LEN", a[2], true));
    if (strcmp(cmd, "read") == 0 && n == 4)
        return dump(a[1], num("read OFF", a[2], true), num("read LEN", a[3], true));
    if (strcmp(cmd, "fail") == 0 && (n == 2 || n == 3))
        return expect_fail(a[1], n == 3 ? a[2] : NULL);
    if (copying && n == 3)
        return copy(a[1], a[2], strcmp(cmd, "put") == 0);
    if (strcmp(cmd, "requires") == 0 && n >= 2)
        return requires(a + 1, n - 1);
    if (strcmp(cmd, "probe") == 0 && n == 2)
        return probe(a[1]);
    if (strcmp(cmd, "probe-write") == 0 && n == 2)
        return probe_write(a[1]);
    if (strcmp(cmd, "contract") == 0 && n == 3)
        return contract(a[1], a[2]);
    usage_error("bad command or arguments: %s", cmd);
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    if (optind >= argc)
        usage_error("no command");
    bool copying = strcmp(argv[optind], "put") == 0 || strcmp(argv[optind], "get") == 0;
    if (!opt.piece_given) {
        opt.pmin = copying ? 1u << 20 : 1;
        opt.pmax = copying ? 1u << 20 : 300000;
    }
    if (!copying && !opt.threads_given)
        opt.threads = 4;
    return dispatch(argc - optind, argv + optind, copying);
}
