/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/r3bench_region: the region engine of r3bench (CSV on stdout).
 * One strategy over one source, measured the way a program sees it: through
 * the region's memory. The baselines "mem" (populated anonymous memory) and
 * "file" (an mmapped local file, evicted from the page cache first) take the
 * same measurements without r3.
 *   latency  first-chunk latency: a fresh region per sample, then one word
 *            read at a chunk far from offset 0 (us)
 *   read     sequential read of the whole region after open (MB/s)
 *   write    sequential write of the whole region + r3_region_sync (MB/s)
 *   open     r3_region_open time, open to first byte, and the bytes pulled
 *            by the time open returned (the study's "preemptive pull")
 * Rows: metric,value,unit,sample. Uses only the public API (<r3/r3.h>).
 * r3bench runs it; by hand: bench/r3bench_region --help */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <r3/r3.h>

#define NAME "r3bench_region"

struct cfg {
    const char *strategy, *uri, *measure, *workdir;
    uint64_t size, chunk, rtt_us, split;
    unsigned pull, push, samples;
    bool split_client;                 /* the chunk stage above the delay (client side) */
    bool no_prefetch;
};

static volatile uint64_t sink;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void row(const char *metric, double v, const char *unit, unsigned sample)
{
    printf("%s,%.3f,%s,%u\n", metric, v, unit, sample);
    fflush(stdout);
}

static int fail(const char *what)
{
    fprintf(stderr, NAME ": %s: %s\n", what, r3_last_error());
    return 1;
}

static void usage_error(const char *what, const char *arg)
{
    fprintf(stderr, NAME ": %s%s%s\nTry '" NAME " --help' for more information.\n", what,
            arg ? ": " : "", arg ? arg : "");
    exit(2);
}

static bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return false;
    unsigned shift = 0;
    switch (*end) {
    case 'K': case 'k': shift = 10; end++; break;
    case 'M': case 'm': shift = 20; end++; break;
    case 'G': case 'g': shift = 30; end++; break;
    case '\0': break;
    default: return false;
    }
    if (*end || (shift && v > (~0ull >> shift)))
        return false;
    *out = v << shift;
    return true;
}

static unsigned parse_uint(const char *flag, const char *s, unsigned max)
{
    uint64_t v;
    if (!parse_size(s, &v) || v > max)
        usage_error(flag, s);
    return (unsigned)v;
}

static void pattern(uint64_t *w, size_t words, uint64_t off)
{
    for (size_t i = 0; i < words; i++)
        w[i] = (off / 8 + i) * 0x9E3779B97F4A7C15ull + 1;
}

/* Open the source (filled with a pattern when asked), behind a delay stage
 * when rtt_us > 0. */
static int open_source(const struct cfg *c, bool fill, struct r3_source **out)
{
    char uri[1024];
    if (c->uri)
        snprintf(uri, sizeof uri, "%s", c->uri);
    else
        snprintf(uri, sizeof uri, "mem:?size=%" PRIu64, c->size);
    struct r3_source *s;
    if (r3_source_open(uri, &s) < 0)
        return -1;
    if (fill) {
        size_t step = 1u << 20;
        uint64_t *buf = malloc(step);
        for (uint64_t off = 0; buf && off < s->size; off += step) {
            size_t n = s->size - off < step ? (size_t)(s->size - off) : step;
            pattern(buf, n / 8, off);
            if (r3_source_write(s, buf, n, off) < 0) {
                free(buf);
                r3_source_close(s);
                return -1;
            }
        }
        free(buf);
        if (r3_source_flush(s) < 0) {
            r3_source_close(s);
            return -1;
        }
    }
    /* --split: requests become whole SPLIT-sized requests, either at the
     * server (below the delay: one round trip per region chunk) or at the
     * client (above it: one round trip per split chunk) */
    struct r3_source *d;
    if (c->split && !c->split_client) {
        if (r3_stage_chunk_open(s, (uint32_t)c->split, &d) < 0)
            return -1;
        s = d;
    }
    if (c->rtt_us) {
        if (r3_stage_delay_open(s, c->rtt_us, &d) < 0)
            return -1;
        s = d;
    }
    if (c->split && c->split_client) {
        if (r3_stage_chunk_open(s, (uint32_t)c->split, &d) < 0)
            return -1;
        s = d;
    }
    *out = s;
    return 0;
}

/* A region, or a baseline mapping with the same shape. */
struct mapping {
    struct r3_region *r;
    void *base;
    size_t len;
    int fd;
    double open_s;
    uint64_t pulled_at_open;
};

static bool fill_always(const struct cfg *c)
{
    return c->uri == NULL || strncmp(c->uri, "mem:", 4) == 0;
}

static int map_open(const struct cfg *c, bool first, struct mapping *m)
{
    memset(m, 0, sizeof *m);
    m->fd = -1;
    if (strcmp(c->strategy, "mem") == 0) {
        m->len = c->size;
        double t0 = now_s();
        m->base = mmap(NULL, m->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m->base == MAP_FAILED)
            return -1;
        m->open_s = now_s() - t0;
        pattern(m->base, m->len / 8, 0);       /* populated: the data is already here */
        return 0;
    }
    if (strcmp(c->strategy, "file") == 0) {
        char path[512];
        snprintf(path, sizeof path, "%s/r3bench-file.XXXXXX", c->workdir);
        int fd = mkstemp(path);
        if (fd < 0)
            return -1;
        unlink(path);
        m->len = c->size;
        uint64_t *buf = malloc(1u << 20);
        for (uint64_t off = 0; buf && off < m->len; off += 1u << 20) {
            pattern(buf, (1u << 20) / 8, off);
            if (pwrite(fd, buf, 1u << 20, (off_t)off) != 1 << 20) {
                free(buf);
                close(fd);
                return -1;
            }
        }
        free(buf);
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);   /* read from the disk, not the cache */
        double t0 = now_s();
        m->base = mmap(NULL, m->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m->base == MAP_FAILED) {
            close(fd);
            return -1;
        }
        m->open_s = now_s() - t0;
        m->fd = fd;
        return 0;
    }
    struct r3_source *src;
    if (open_source(c, first || fill_always(c), &src) < 0)
        return -1;
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = c->strategy;
    o.chunk = (uint32_t)c->chunk;
    /* background pull exists in uffd and nbd-managed only; the others refuse it */
    if (!strcmp(c->strategy, "uffd") || !strcmp(c->strategy, "nbd-managed"))
        o.pull_workers = c->pull;
    o.push_workers = c->push;
    o.workdir = c->workdir;
    if (c->no_prefetch)
        o.prefetch = R3_PREFETCH_NONE;
    double t0 = now_s();
    if (r3_region_open(&o, src, &m->r) < 0)
        return -1;
    m->open_s = now_s() - t0;
    struct r3_region_stats st;
    if (r3_region_stats(m->r, &st) == 0)
        m->pulled_at_open = st.bytes_pulled;
    m->base = m->r->base;
    m->len = m->r->len;
    return 0;
}

static int map_close(struct mapping *m, bool sync)
{
    int rc = 0;
    if (m->r) {
        rc = r3_region_close(m->r);
    } else {
        if (sync && m->fd >= 0)
            rc = msync(m->base, m->len, MS_SYNC);
        munmap(m->base, m->len);
        if (m->fd >= 0)
            close(m->fd);
    }
    return rc;
}

static int map_sync(struct mapping *m)
{
    if (m->r)
        return r3_region_sync(m->r);
    return m->fd >= 0 ? msync(m->base, m->len, MS_SYNC) : 0;
}

static int measure_latency(const struct cfg *c)
{
    for (unsigned i = 0; i < c->samples; i++) {
        struct mapping m;
        if (map_open(c, i == 0, &m) < 0)
            return fail("open");
        uint64_t nchunks = m.len / c->chunk;
        /* a chunk in the second half, never the first: no read-ahead of the open */
        uint64_t idx = nchunks / 2 + ((uint64_t)i * 7919u) % (nchunks - nchunks / 2);
        volatile uint64_t *p = (volatile uint64_t *)((char *)m.base + idx * c->chunk);
        double t0 = now_s();
        uint64_t v = *p;
        double dt = now_s() - t0;
        sink += v;
        uint64_t want;
        pattern(&want, 1, idx * c->chunk);
        if (v != want) {
            fprintf(stderr, NAME ": wrong data at %" PRIu64 "\n", idx * c->chunk);
            map_close(&m, false);
            return 1;
        }
        row("first_chunk_latency", dt * 1e6, "us", i);
        if (map_close(&m, false) < 0)
            return fail("close");
    }
    return 0;
}

static int measure_read(const struct cfg *c)
{
    for (unsigned i = 0; i < c->samples; i++) {
        struct mapping m;
        if (map_open(c, i == 0, &m) < 0)
            return fail("open");
        const uint64_t *w = m.base;
        uint64_t s = 0;
        double t0 = now_s();
        for (size_t k = 0; k < m.len / 8; k++)
            s += w[k];
        double dt = now_s() - t0;
        sink += s;
        uint64_t want;
        pattern(&want, 1, m.len - 8);
        if (w[m.len / 8 - 1] != want) {
            fprintf(stderr, NAME ": wrong data at the end of the region\n");
            map_close(&m, false);
            return 1;
        }
        row("read_throughput", (double)m.len / 1e6 / dt, "MB/s", i);
        if (map_close(&m, false) < 0)
            return fail("close");
    }
    return 0;
}

static int measure_write(const struct cfg *c)
{
    for (unsigned i = 0; i < c->samples; i++) {
        struct mapping m;
        if (map_open(c, i == 0, &m) < 0)
            return fail("open");
        uint64_t *w = m.base;
        double t0 = now_s();
        for (size_t k = 0; k < m.len / 8; k++)
            w[k] = k ^ 0x5555555555555555ull;
        if (map_sync(&m) < 0) {
            map_close(&m, false);
            return fail("sync");
        }
        double dt = now_s() - t0;
        row("write_throughput", (double)m.len / 1e6 / dt, "MB/s", i);
        if (map_close(&m, false) < 0)
            return fail("close");
    }
    return 0;
}

static int measure_open(const struct cfg *c)
{
    for (unsigned i = 0; i < c->samples; i++) {
        struct mapping m;
        double t0 = now_s();
        if (map_open(c, i == 0, &m) < 0)
            return fail("open");
        /* open_s excludes filling the source; so does open_to_first_byte */
        double fill_s = (now_s() - t0) - m.open_s;
        sink += *(volatile uint64_t *)m.base;
        double first = now_s() - t0 - fill_s;
        row("open_time", m.open_s * 1e3, "ms", i);
        row("open_to_first_byte", first * 1e3, "ms", i);
        row("pulled_at_open", (double)m.pulled_at_open, "bytes", i);
        if (map_close(&m, false) < 0)
            return fail("close");
    }
    return 0;
}

static const char usage_text[] =
    "Usage: " NAME " --strategy S [--source URI] [--size SIZE] [--chunk SIZE] [--rtt-us N]\n"
    "       [--pull N] [--push N] [--samples N] [--measure latency,read,write,open]\n"
    "       [--split SIZE --split-at client|server] [--no-prefetch] [--workdir DIR]\n"
    "The region engine of r3bench: CSV rows metric,value,unit,sample on stdout.\n"
    "  -s, --strategy S    uffd, nbd-direct, nbd-managed, filesync, or the baselines mem, file\n"
    "  -u, --source URI    the source (default mem:?size=SIZE, filled with a pattern;\n"
    "                      any source is filled once before the first sample)\n"
    "  -z, --size SIZE     bytes of the default source (default 16M)\n"
    "  -c, --chunk SIZE    region chunk (default 64K)\n"
    "  -r, --rtt-us N      a delay stage of N microseconds over the source (default 0)\n"
    "  -p, --pull N        background pull workers (default 0)\n"
    "  -P, --push N        push workers (default 1)\n"
    "  -n, --samples N     repetitions of each measurement (default 1)\n"
    "  -m, --measure LIST  latency, read, write, open (default all)\n"
    "  -S, --split SIZE    a chunk stage of SIZE over the source (the study's chunking)\n"
    "  -A, --split-at SIDE server (below the delay, default) or client (above it)\n"
    "  -N, --no-prefetch   uffd: no fault read-ahead\n"
    "  -w, --workdir DIR   scratch files (default /tmp)\n"
    "  -h, --help          this text\n"
    "  -V, --version       the version\n";

int main(int argc, char **argv)
{
    struct cfg c = { .strategy = NULL, .measure = "latency,read,write,open", .workdir = "/tmp",
                     .size = 16u << 20, .chunk = 64u << 10, .push = 1, .samples = 1 };
    static const struct option lo[] = {
        { "strategy", 1, 0, 's' }, { "source", 1, 0, 'u' }, { "size", 1, 0, 'z' },
        { "chunk", 1, 0, 'c' }, { "rtt-us", 1, 0, 'r' }, { "pull", 1, 0, 'p' },
        { "push", 1, 0, 'P' }, { "samples", 1, 0, 'n' }, { "measure", 1, 0, 'm' },
        { "split", 1, 0, 'S' }, { "split-at", 1, 0, 'A' }, { "no-prefetch", 0, 0, 'N' }, { "workdir", 1, 0, 'w' }, { "help", 0, 0, 'h' },
        { "version", 0, 0, 'V' }, { 0, 0, 0, 0 },
    };
    int o;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":s:u:z:c:r:p:P:n:m:S:A:Nw:hV", lo, NULL)) != -1) {
        switch (o) {
        case 's': c.strategy = optarg; break;
        case 'u': c.uri = optarg; break;
        case 'z':
            if (!parse_size(optarg, &c.size) || c.size < (1u << 20) || c.size % (1u << 20))
                usage_error("--size: not a multiple of 1M", optarg);
            break;
        case 'c':
            if (!parse_size(optarg, &c.chunk) || c.chunk < 4096 || (c.chunk & (c.chunk - 1)) ||
                c.chunk > (64u << 20))
                usage_error("--chunk: not a power of two from 4K to 64M", optarg);
            break;
        case 'r': c.rtt_us = parse_uint("--rtt-us: not a number up to 10000000", optarg, 10000000); break;
        case 'p': c.pull = parse_uint("--pull: not a number up to 65536", optarg, 65536); break;
        case 'P': c.push = parse_uint("--push: not a number up to 4096", optarg, 4096); break;
        case 'n': c.samples = parse_uint("--samples: not a number from 1 to 100000", optarg, 100000);
            if (!c.samples)
                usage_error("--samples: not a number from 1 to 100000", optarg);
            break;
        case 'm': c.measure = optarg; break;
        case 'S':
            if (!parse_size(optarg, &c.split) || c.split < 512 || (c.split & (c.split - 1)))
                usage_error("--split: not a power of two of at least 512", optarg);
            break;
        case 'A':
            if (strcmp(optarg, "client") && strcmp(optarg, "server"))
                usage_error("--split-at: not client or server", optarg);
            c.split_client = !strcmp(optarg, "client");
            break;
        case 'N': c.no_prefetch = true; break;
        case 'w': c.workdir = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        case 'V': printf(NAME " (r3) %s\n", PACKAGE_VERSION); return 0;
        case ':': usage_error("an option needs a value", argv[optind - 1]); break;
        default: usage_error("unknown option", argv[optind - 1]);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument", argv[optind]);
    if (!c.strategy)
        usage_error("--strategy is missing", NULL);
    if (c.size % c.chunk)
        usage_error("--size is not a multiple of --chunk", NULL);
    if (c.uri && (!strcmp(c.strategy, "mem") || !strcmp(c.strategy, "file")))
        usage_error("--source makes no sense with a baseline", c.strategy);
    printf("metric,value,unit,sample\n");
    fflush(stdout);
    int rc = 0;
    char list[128];
    snprintf(list, sizeof list, "%s", c.measure);
    for (char *save, *t = strtok_r(list, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "latency"))
            rc = measure_latency(&c);
        else if (!strcmp(t, "read"))
            rc = measure_read(&c);
        else if (!strcmp(t, "write"))
            rc = measure_write(&c);
        else if (!strcmp(t, "open"))
            rc = measure_open(&c);
        else
            usage_error("--measure: not latency, read, write or open", t);
    }
    return rc;
}
