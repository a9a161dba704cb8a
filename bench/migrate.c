/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/migrate: migration of a uffd region over loopback, in one process
 * (seeder and leecher each with their own region), next to reading the
 * region through r3:// and to stop-and-copy in the same run. Prints CSV:
 *
 *   mode,size,chunk,delay_ms,rewrite_pct,dirty_chunks,downtime_ms,finalize_ms,total_s,
 *   read_s,total_over_read,stopcopy_downtime_ms,downtime_ratio,equal
 *
 *   mode       migrate: track -> background pull -> finalize -> wait
 *              read: N threads read the whole region through r3:// from the
 *              seeder (the same server, the same number of threads)
 *              stopcopy: A paused, the whole region read through r3:// into
 *              B's memory, B usable (its downtime is that whole copy)
 *   downtime   A paused (before_finalize entered) -> B's region usable
 *   finalize   r3_leech_finalize's call -> return
 *   total      r3_leech_open -> r3_leech_wait (RELEASE sent)
 *   equal      B's bytes == A's bytes at the pause
 *
 * A's region is filled first (every chunk written); after TRACK the given
 * percentage of chunks is written again while B pulls, so those chunks are
 * dirty at FINALIZE. Delays are added by the leecher to every request
 * (the study's RTT injection). Not a test: run it by hand.
 *
 * The machine is noisy: with --reps N every figure is measured N times,
 * interleaved (per repetition: read, migrate at the first percentage, the
 * other percentages, stop-and-copy), each migrate row's total_over_read is
 * against the read of its own repetition, and a summary (median, min-max,
 * the ratio of the medians) goes to stderr. Stop-and-copy copies into
 * fresh memory, as a new B would. The read baseline reads chunk-sized
 * pieces; the leecher reads runs of up to 1 MiB before FINALIZE, so with a
 * delay it pays far fewer of them. R3_BENCH_PHASES=1 adds the leecher's
 * phases and the process CPU of each side to stderr. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <r3/r3.h>

struct cfg {
    uint64_t size;
    uint32_t chunk;
    unsigned workers;
    double rewrite[16];
    unsigned nrewrite;
    double delay_ms[8];
    unsigned ndelay;
    unsigned reps;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds of the whole process (every thread: both hosts) */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int die(const char *what)
{
    fprintf(stderr, "bench/migrate: %s: %s\n", what, r3_last_error());
    exit(1);
}

/* ---- A */

struct host_a {
    struct r3_region *r;
    struct r3_seeder *s;
    double t_pause;
    uint8_t *snap;                /* A at the pause, for the equality check */
};

static int before_finalize(void *arg, struct r3_region *r)
{
    struct host_a *a = arg;
    a->t_pause = now_s();         /* the writers are paused from here (the bench writes no more) */
    (void)r;
    return 0;
}

static void host_a_open(struct host_a *a, const struct cfg *c)
{
    memset(a, 0, sizeof *a);
    char uri[64];
    snprintf(uri, sizeof uri, "mem:?size=%" PRIu64, c->size);
    struct r3_source *src;
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.chunk = c->chunk;
    if (r3_source_open(uri, &src) < 0 || r3_region_open(&o, src, &a->r) < 0)
        die("region A");
    /* every chunk written once: A's memory holds the region */
    for (uint64_t off = 0; off < c->size; off += 4096)
        *(uint64_t *)((uint8_t *)a->r->base + off) = off * 0x9E3779B97F4A7C15ull;
    struct r3_seed_opts so;
    r3_seed_opts_init(&so);
    so.listen = "127.0.0.1:0";
    so.before_finalize = before_finalize;
    so.arg = a;
    if (r3_seed_open(a->r, &so, &a->s) < 0)
        die("seed");
}

static void host_a_close(struct host_a *a)
{
    r3_seed_close(a->s);
    r3_region_close(a->r);
}

/* ---- reading through r3:// (N threads, chunk pieces) */

struct reader {
    struct r3_source *src;
    uint8_t *dst;                 /* NULL: a scratch buffer per thread */
    uint64_t size, chunk;
    atomic_uint_fast64_t next;
    atomic_int err;
};

static void *read_main(void *arg)
{
    struct reader *rd = arg;
    uint8_t *scratch = rd->dst ? NULL : malloc(rd->chunk);
    for (;;) {
        uint64_t off = atomic_fetch_add(&rd->next, rd->chunk);
        if (off >= rd->size)
            break;
        if (r3_source_read(rd->src, rd->dst ? rd->dst + off : scratch, rd->chunk, off) < 0) {
            atomic_store(&rd->err, 1);
            break;
        }
    }
    free(scratch);
    return NULL;
}

static double read_all(const char *addr, const struct cfg *c, double delay_ms, uint8_t *dst)
{
    char uri[160];
    snprintf(uri, sizeof uri, "r3://%s/?conns=8", addr);
    struct r3_source *src, *top;
    if (r3_source_open(uri, &src) < 0)
        die("r3:// client");
    top = src;
    if (delay_ms > 0 && r3_stage_delay_open(src, (uint64_t)(delay_ms * 1000), &top) < 0)
        die("delay");
    struct reader rd = { .src = top, .dst = dst, .size = c->size, .chunk = c->chunk };
    pthread_t t[256];
    double t0 = now_s(), c0 = cpu_s();
    for (unsigned i = 0; i < c->workers; i++)
        pthread_create(&t[i], NULL, read_main, &rd);
    for (unsigned i = 0; i < c->workers; i++)
        pthread_join(t[i], NULL);
    double dt = now_s() - t0;
    if (getenv("R3_BENCH_PHASES"))
        fprintf(stderr, "# read%s: %.3f s, cpu %.3f s\n", dst ? " (stop-and-copy)" : "", dt, cpu_s() - c0);
    if (rd.err)
        die("read through r3://");
    r3_source_close(top);
    return dt;
}

/* ---- one migration */

struct result { double downtime_ms, finalize_ms, total_s; uint64_t dirty; bool equal; };

static void migrate(struct host_a *a, const char *addr, const struct cfg *c, double delay_ms, double pct,
                    struct result *res)
{
    char uri[160];
    snprintf(uri, sizeof uri, "r3://%s/?conns=8", addr);
    struct r3_leech_opts lo;
    r3_leech_opts_init(&lo);
    lo.pull_workers = c->workers;
    lo.delay_us = (uint64_t)(delay_ms * 1000);
    struct r3_region *b;
    double t0 = now_s(), c0 = cpu_s();
    if (r3_leech_open(uri, &lo, &b) < 0)
        die("leech");
    double to = now_s();
    /* A writes pct % of its chunks again while B pulls (after TRACK) */
    uint64_t n = c->size / c->chunk, k = (uint64_t)((double)n * pct / 100.0 + 0.5);
    for (uint64_t i = 0; i < k; i++) {
        uint64_t ch = i * n / k;                     /* k distinct chunks, spread out */
        ((uint64_t *)((uint8_t *)a->r->base + ch * c->chunk))[1] += 1 + i;
    }
    struct r3_leech_progress p;
    do {
        usleep(1000);
        r3_leech_progress(b, &p);
        if (p.error)
            die("pull");
    } while (p.chunks_local < p.chunks_total);
    /* (the dirty list is what A wrote after TRACK; the bench writes no more) */
    double tf = now_s();
    if (r3_leech_finalize(b) < 0)
        die("finalize");
    double tu = now_s();
    if (r3_leech_wait(b) < 0)
        die("wait");
    double td = now_s(), c1 = cpu_s();
    r3_leech_progress(b, &p);
    res->downtime_ms = (tu - a->t_pause) * 1e3;
    res->finalize_ms = (tu - tf) * 1e3;
    res->total_s = td - t0;
    res->dirty = p.chunks_dirty;
    if (getenv("R3_BENCH_PHASES"))
        fprintf(stderr, "# phases: open %.3f s, pull %.3f s, finalize %.3f s, wait %.3f s; cpu %.3f s\n", to - t0,
                tf - to, tu - tf, td - tu, c1 - c0);
    res->equal = memcmp(b->base, a->r->base, c->size) == 0;
    r3_region_close(b);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, unsigned n)
{
    double s[64];
    n = n > 64 ? 64 : n;
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_d);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* One summary line on stderr: median, min-max of n repetitions. */
static double summary(const char *what, double delay_ms, double pct, const double *v, unsigned n)
{
    double lo = v[0], hi = v[0], m = median(v, n);
    for (unsigned i = 1; i < n; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
    }
    if (pct < 0)
        fprintf(stderr, "# delay %g ms: %s median %.3f (min %.3f, max %.3f, n=%u)\n", delay_ms, what, m, lo, hi, n);
    else
        fprintf(stderr, "# delay %g ms, %g %%: %s median %.3f (min %.3f, max %.3f, n=%u)\n", delay_ms, pct, what, m,
                lo, hi, n);
    return m;
}

static int parse_list(const char *s, double *out, unsigned max, unsigned *n)
{
    *n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *e;
        double v = strtod(t, &e);
        if (*e || v < 0 || *n == max) {
            free(copy);
            return -1;
        }
        out[(*n)++] = v;
    }
    free(copy);
    return *n ? 0 : -1;
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "bench/migrate: %s\nTry 'bench/migrate --help' for more information.\n", msg);
    return 2;
}

int main(int argc, char **argv)
{
    struct cfg c = { .size = 1ull << 30, .chunk = 64 * 1024, .workers = 16, .reps = 1 };
    const char *rewrite = "1,0,10,50,100", *delays = "0,10";
    static const struct option opts[] = {
        { "size", required_argument, NULL, 's' }, { "chunk", required_argument, NULL, 'c' },
        { "workers", required_argument, NULL, 'w' }, { "rewrite", required_argument, NULL, 'r' },
        { "delay-ms", required_argument, NULL, 'd' }, { "reps", required_argument, NULL, 'n' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int o;
    uint64_t v;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "s:c:w:r:d:n:hV", opts, NULL)) != -1) {
        switch (o) {
        case 's':
            if (r3_parse_size(optarg, &c.size) < 0)
                return usage_error("bad --size");
            break;
        case 'c':
            if (r3_parse_size(optarg, &v) < 0 || v < 4096 || (v & (v - 1)))
                return usage_error("--chunk must be a power of two of at least 4K");
            c.chunk = (uint32_t)v;
            break;
        case 'w': c.workers = (unsigned)atoi(optarg); break;
        case 'r': rewrite = optarg; break;
        case 'd': delays = optarg; break;
        case 'n': c.reps = (unsigned)atoi(optarg); break;
        case 'h':
            printf("Usage: bench/migrate [--size 1G] [--chunk 64K] [--workers 16] [--rewrite 1,0,10,50,100]\n"
                   "                     [--delay-ms 0,10] [--reps 1] [--help] [--version]\n"
                   "Migrates a uffd region over loopback (seeder and leecher in this process) and prints\n"
                   "CSV: downtime (A paused -> B usable), total time, next to reading the region through\n"
                   "r3:// and to stop-and-copy, for each delay and each percentage of chunks written\n"
                   "again after TRACK (the first is the headline: 1%% dirty at FINALIZE). --reps N: N\n"
                   "interleaved repetitions, medians and min-max on stderr.\n");
            return 0;
        case 'V': printf("bench/migrate (r3) %s\n", PACKAGE_VERSION); return 0;
        default: return usage_error("unknown or incomplete option");
        }
    }
    if (c.reps < 1 || c.reps > 64)
        return usage_error("--reps must be 1 to 64");
    if (c.workers < 1 || c.workers > 256)
        return usage_error("--workers must be 1 to 256");
    if (c.size % c.chunk || c.size == 0)
        return usage_error("--size must be a multiple of --chunk");
    if (parse_list(rewrite, c.rewrite, 16, &c.nrewrite) < 0)
        return usage_error("--rewrite takes percentages, comma-separated");
    if (parse_list(delays, c.delay_ms, 8, &c.ndelay) < 0)
        return usage_error("--delay-ms takes milliseconds, comma-separated");
    printf("mode,size,chunk,delay_ms,rewrite_pct,dirty_chunks,downtime_ms,finalize_ms,total_s,read_s,"
           "total_over_read,stopcopy_downtime_ms,downtime_ratio,equal\n");
    /* per delay: reads, stop-and-copy downtimes, and per percentage
     * downtimes, totals and total/read ratios, one per repetition */
    double *rd = calloc(c.reps, sizeof *rd), *sc = calloc(c.reps, sizeof *sc);
    double *dt = calloc((size_t)c.reps * c.nrewrite, sizeof *dt), *tt = calloc((size_t)c.reps * c.nrewrite, sizeof *tt);
    double *ra = calloc((size_t)c.reps * c.nrewrite, sizeof *ra);
    if (!rd || !sc || !dt || !tt || !ra)
        return 1;
    for (unsigned d = 0; d < c.ndelay; d++) {
        for (unsigned rep = 0; rep < c.reps; rep++) {
            struct host_a a;
            char addr[64];
            for (unsigned k = 0; k < c.nrewrite; k++) {
                host_a_open(&a, &c);
                r3_seed_address(a.s, addr, sizeof addr);
                if (k == 0) {
                    /* the peer, right before the headline migration, on the same seeder */
                    rd[rep] = read_all(addr, &c, c.delay_ms[d], NULL);
                    printf("read,%" PRIu64 ",%u,%g,,,,,%.3f,%.3f,,,,\n", c.size, c.chunk, c.delay_ms[d], rd[rep],
                           rd[rep]);
                }
                struct result res;
                migrate(&a, addr, &c, c.delay_ms[d], c.rewrite[k], &res);
                size_t x = (size_t)k * c.reps + rep;
                dt[x] = res.downtime_ms;
                tt[x] = res.total_s;
                ra[x] = res.total_s / rd[rep];
                printf("migrate,%" PRIu64 ",%u,%g,%g,%" PRIu64 ",%.2f,%.2f,%.3f,%.3f,%.2f,,,%s\n", c.size,
                       c.chunk, c.delay_ms[d], c.rewrite[k], res.dirty, res.downtime_ms, res.finalize_ms, res.total_s,
                       rd[rep], ra[x], res.equal ? "yes" : "no");
                fflush(stdout);
                host_a_close(&a);
            }
            /* stop-and-copy: A paused, everything copied into B's (new) memory, B usable */
            host_a_open(&a, &c);
            r3_seed_address(a.s, addr, sizeof addr);
            uint8_t *copy = mmap(NULL, c.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (copy == MAP_FAILED)
                return 1;
            sc[rep] = read_all(addr, &c, c.delay_ms[d], copy) * 1e3;
            printf("stopcopy,%" PRIu64 ",%u,%g,100,%" PRIu64 ",%.2f,,%.3f,%.3f,,%.2f,%.1f,%s\n", c.size, c.chunk,
                   c.delay_ms[d], c.size / c.chunk, sc[rep], sc[rep] / 1e3, rd[rep], sc[rep],
                   sc[rep] / dt[rep], memcmp(copy, a.r->base, c.size) == 0 ? "yes" : "no");
            fflush(stdout);
            munmap(copy, c.size);
            host_a_close(&a);
        }
        summary("read_s", c.delay_ms[d], -1, rd, c.reps);
        summary("stopcopy_downtime_ms", c.delay_ms[d], -1, sc, c.reps);
        for (unsigned k = 0; k < c.nrewrite; k++) {
            size_t x = (size_t)k * c.reps;
            summary("downtime_ms", c.delay_ms[d], c.rewrite[k], dt + x, c.reps);
            double m = summary("total_s", c.delay_ms[d], c.rewrite[k], tt + x, c.reps);
            summary("total_over_read", c.delay_ms[d], c.rewrite[k], ra + x, c.reps);
            double mr = median(rd, c.reps), md = median(dt + x, c.reps);
            fprintf(stderr, "# delay %g ms, %g %%: median total / median read = %.3f; median stop-and-copy /"
                    " median downtime = %.1f\n", c.delay_ms[d], c.rewrite[k], m / mr, median(sc, c.reps) / md);
        }
    }
    free(rd);
    free(sc);
    free(dt);
    free(tt);
    free(ra);
    return 0;
}
