/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/uffd: the uffd strategy next to its peers, in one run (CSV on stdout).
 *   peers: plain memory already populated ("mem"), and a minimal
 *   single-thread userfaultfd handler that fills one 4 KiB page per fault
 *   from the source ("min4k", the study's design).
 * Rows: experiment,impl,chunk,size,value,unit
 *   seq_read         first-touch sequential read of the whole region (MB/s)
 *   first_chunk_us   median latency of a first touch after a pause (µs);
 *                    first_chunk_b2b_us: touches back to back
 *   seq_read_delay   as seq_read, source behind a --delay-ms delay stage, --workers pull workers
 *   dirty_scan_ms    find the written pages after 1% of pages were written (PAGEMAP_SCAN)
 *   hash_ms          XXH3 over the whole region (what a hashing tracker pays per scan)
 *   sync_ms          r3_region_sync after those writes (scan + push + flush)
 *   writeback_*      bytes written back after 1% of the pages were written
 *                    (the written bytes, what uffd moved, the ratio; and
 *                    what whole chunks would be)
 *   rand_faults      4 KiB random first-touch reads: faults per second
 * Not a test: numbers depend on the machine and its load.
 *   bench/uffd [--size 1G] [--delay-ms 10] [--workers 64] [--delay-chunk 1M] [--only NAME] */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#include "internal.h"
#include "uffd/uffd.h"

static const char *only;

static bool want(const char *name)
{
    return !only || strstr(only, name);
}

static void row(const char *exp, const char *impl, uint64_t chunk, uint64_t size, double v,
                const char *unit)
{
    printf("%s,%s,%llu,%llu,%.2f,%s\n", exp, impl, (unsigned long long)chunk,
           (unsigned long long)size, v, unit);
    fflush(stdout);
}

/* A mem: source holding non-zero bytes (no zero-page shortcuts). */
static struct r3_source *mem_source(uint64_t size)
{
    struct r3_source *s;
    if (r3_mem_create(size, &s) < 0) {
        fprintf(stderr, "bench/uffd: %s\n", r3_last_error());
        exit(2);
    }
    size_t bl = 1u << 20;
    uint64_t *b = malloc(bl);
    for (size_t i = 0; i < bl / 8; i++)
        b[i] = i * 0x9E3779B97F4A7C15ull + 1;
    for (uint64_t off = 0; off < size; off += bl)
        r3_source_write(s, b, bl, off);
    free(b);
    return s;
}

/* pull: background pull workers; none: prefetch "none" (no pull, no
 * fault readahead: every chunk is filled by its own fault). */
static struct r3_region *region_p(struct r3_source *src, uint32_t chunk, unsigned pull,
                                  unsigned fault_threads, bool none)
{
    struct r3_region_opts o;
    struct r3_region *r;
    r3_region_opts_init(&o);
    o.chunk = chunk;
    o.pull_workers = pull;
    o.prefetch = none ? R3_PREFETCH_NONE : R3_PREFETCH_SEQUENTIAL;
    if (fault_threads)
        o.fault_threads = fault_threads;
    if (r3_region_open(&o, src, &r) < 0) {
        fprintf(stderr, "bench/uffd: region: %s\n", r3_last_error());
        exit(2);
    }
    return r;
}

static struct r3_region *region(struct r3_source *src, uint32_t chunk, unsigned pull,
                                unsigned fault_threads)
{
    return region_p(src, chunk, pull, fault_threads, false);
}

static uint64_t sink;

/* Read every word of [p, p+len): a real sequential read, not just a touch. */
static double read_all(const void *p, uint64_t len)
{
    const uint64_t *w = p;
    uint64_t s = 0, t0 = r3_now_ns();
    for (uint64_t i = 0; i < len / 8; i++)
        s += w[i];
    sink += s;
    return (double)(r3_now_ns() - t0) / 1e9;
}

/* ---- the minimal handler: one thread, one 4 KiB page per fault. */
struct minh {
    int uffd, stop[2];
    char *base;
    struct r3_source *src;
    pthread_t t;
    uint64_t faults;
};

static void *minh_main(void *arg)
{
    struct minh *m = arg;
    char *page = aligned_alloc(4096, 4096);
    struct pollfd pf[2] = { { .fd = m->uffd, .events = POLLIN }, { .fd = m->stop[0], .events = POLLIN } };
    for (;;) {
        if (poll(pf, 2, -1) < 0)
            continue;
        if (pf[1].revents)
            break;
        struct uffd_msg msg;
        if (read(m->uffd, &msg, sizeof msg) != sizeof msg || msg.event != UFFD_EVENT_PAGEFAULT)
            continue;
        uint64_t addr = msg.arg.pagefault.address & ~4095ull;
        uint64_t off = addr - (uintptr_t)m->base;
        r3_source_read(m->src, page, 4096, off);
        struct uffdio_copy c = { .dst = addr, .src = (uintptr_t)page, .len = 4096 };
        ioctl(m->uffd, UFFDIO_COPY, &c);
        m->faults++;
    }
    free(page);
    return NULL;
}

static struct minh *minh_open(struct r3_source *src, uint64_t size)
{
    struct minh *m = calloc(1, sizeof *m);
    uint64_t got;
    m->src = src;
    m->uffd = r3_kernel_uffd_open(O_CLOEXEC | O_NONBLOCK, 0, 0, &got, NULL);
    m->base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    madvise(m->base, size, MADV_NOHUGEPAGE);
    struct uffdio_register reg = { .range = { .start = (uintptr_t)m->base, .len = size },
                                   .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (m->uffd < 0 || m->base == MAP_FAILED || ioctl(m->uffd, UFFDIO_REGISTER, &reg) < 0 ||
        pipe(m->stop) < 0) {
        fprintf(stderr, "bench/uffd: minimal handler setup failed\n");
        exit(2);
    }
    r3_thread_create(&m->t, minh_main, m);
    return m;
}

static void minh_close(struct minh *m, uint64_t size)
{
    if (write(m->stop[1], "x", 1) != 1)
        perror("write");
    pthread_join(m->t, NULL);
    munmap(m->base, size);
    close(m->uffd);
    close(m->stop[0]);
    close(m->stop[1]);
    r3_source_close(m->src);
    free(m);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Median first-touch latency over n chunks spread over the region. With
 * gap_us > 0 each touch comes after a pause (the handlers are idle: the
 * latency of a first chunk); with 0 back to back (each touch may wait for
 * the rest of the previous chunk to go in). */
static double first_touch_median_us(char *base, uint64_t size, uint64_t stride, unsigned n,
                                    unsigned gap_us)
{
    uint64_t *lat = malloc(n * sizeof *lat);
    unsigned k = 0;
    for (uint64_t off = 0; off < size && k < n; off += stride, k++) {
        if (gap_us)
            usleep(gap_us);
        uint64_t t0 = r3_now_ns();
        sink += *(volatile uint64_t *)(base + off);
        lat[k] = r3_now_ns() - t0;
    }
    qsort(lat, k, sizeof *lat, cmp_u64);
    double med = k ? (double)lat[k / 2] / 1000.0 : 0;
    free(lat);
    return med;
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void bad_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench/uffd: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'bench/uffd --help' for more information.\n", stderr);
    exit(2);
}

static void opt_size(const char *name, const char *v, uint64_t *out)
{
    if (r3_parse_size(v, out) < 0 || *out == 0)
        bad_usage("--%s %s: not a size (like 64M, 1G)", name, v);
}

static unsigned long opt_uint(const char *name, const char *v, unsigned long max)
{
    char *end;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (errno || *end || !*v || *v == '-' || x > max)
        bad_usage("--%s %s: not a number from 0 to %lu", name, v, max);
    return x;
}

int main(int argc, char **argv)
{
    uint64_t size = 1ull << 30, dchunk = 1u << 20;
    unsigned delay_ms = 10, workers = 64;
    static const struct option lo[] = {
        { "size", 1, 0, 's' }, { "delay-ms", 1, 0, 'd' }, { "workers", 1, 0, 'w' },
        { "delay-chunk", 1, 0, 'c' }, { "only", 1, 0, 'o' }, { "help", 0, 0, 'h' },
        { "version", 0, 0, 'V' }, { 0, 0, 0, 0 },
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "hV", lo, NULL)) != -1) {
        switch (c) {
        case 's': opt_size("size", optarg, &size); break;
        case 'd': delay_ms = (unsigned)opt_uint("delay-ms", optarg, 100000); break;
        case 'w': workers = (unsigned)opt_uint("workers", optarg, 4096); break;
        case 'c': opt_size("delay-chunk", optarg, &dchunk); break;
        case 'o': only = optarg; break;
        case 'h':
            printf("Usage: bench/uffd [--size 1G] [--delay-ms 10] [--workers 64] [--delay-chunk 1M]\n"
                   "                  [--only seq_read,first_chunk,delay,dirty,writeback,rand]\n"
                   "The uffd strategy next to plain memory and a minimal 4 KiB userfaultfd\n"
                   "handler; CSV rows experiment,impl,chunk,size,value,unit on stdout.\n");
            return 0;
        case 'V': printf("bench/uffd (r3) %s\n", PACKAGE_VERSION); return 0;
        default:
            if (optopt && optopt < 256 && strchr("sdwco", optopt) == NULL)
                bad_usage("unknown option -%c", optopt);
            else if (optopt)
                bad_usage("%s needs a value", argv[optind - 1]);
            bad_usage("unknown option %s", argv[optind - 1]);
        }
    }
    const uint32_t chunk = 64 * 1024;
    printf("experiment,impl,chunk,size,value,unit\n");

    if (want("seq_read")) {
        /* plain memory, populated */
        char *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        memset(m, 1, size);
        row("seq_read", "mem", 0, size, (double)size / 1e6 / read_all(m, size), "MB/s");
        munmap(m, size);
        struct r3_region *r = region(mem_source(size), chunk, 0, 0);
        row("seq_read", "uffd", chunk, size, (double)size / 1e6 / read_all(r->base, size), "MB/s");
        struct r3_region_stats st;
        r3_region_stats(r, &st);
        row("seq_read_fault_wait_p50", "uffd", chunk, size, (double)st.fault_wait_p50_ns / 1e3, "us");
        r3_region_close(r);
        r = region_p(mem_source(size), chunk, 0, 0, true);
        row("seq_read", "uffd-prefetch_none", chunk, size, (double)size / 1e6 / read_all(r->base, size), "MB/s");
        r3_region_close(r);
        r = region(mem_source(size), chunk, 2, 0);
        row("seq_read", "uffd+pull2", chunk, size, (double)size / 1e6 / read_all(r->base, size), "MB/s");
        r3_region_close(r);
        struct minh *h = minh_open(mem_source(size), size);
        row("seq_read", "min4k", 4096, size, (double)size / 1e6 / read_all(h->base, size), "MB/s");
        minh_close(h, size);
    }
    if (want("first_chunk")) {
        uint64_t stride = 16 * (uint64_t)chunk;   /* never a chunk next to a filled one */
        struct r3_region *r = region(mem_source(size), chunk, 0, 0);
        row("first_chunk_us", "uffd", chunk, size, first_touch_median_us(r->base, size, stride, 500, 200), "us");
        row("first_chunk_b2b_us", "uffd", chunk, size,
            first_touch_median_us((char *)r->base + 8 * (uint64_t)chunk, size - 8 * (uint64_t)chunk, stride, 500, 0), "us");
        /* the handler's share: from reading the message to waking the thread */
        struct r3_region_stats st;
        r3_region_stats(r, &st);
        row("first_chunk_handler_p50_us", "uffd", chunk, size, (double)st.fault_wait_p50_ns / 1e3, "us");
        r3_region_close(r);
        struct minh *h = minh_open(mem_source(size), size);
        row("first_chunk_us", "min4k", 4096, size, first_touch_median_us(h->base, size, stride, 500, 200), "us");
        row("first_chunk_b2b_us", "min4k", 4096, size,
            first_touch_median_us(h->base + 8 * 65536, size - 8 * 65536, stride, 500, 0), "us");
        minh_close(h, size);
    }
    if (want("delay")) {
        uint64_t chunks[2] = { chunk, dchunk };
        for (int i = 0; i < 2; i++) {
            if (i == 1 && dchunk == chunk)
                break;
            struct r3_source *d;
            if (r3_stage_delay_open(mem_source(size), (uint64_t)delay_ms * 1000, &d) < 0)
                return 2;
            uint64_t t0 = r3_now_ns();
            struct r3_region *r = region(d, (uint32_t)chunks[i], workers, 0);
            double s = read_all(r->base, size);
            double total = (double)(r3_now_ns() - t0) / 1e9;
            char impl[64];
            snprintf(impl, sizeof impl, "uffd+pull%u@%ums", workers, delay_ms);
            row("seq_read_delay", impl, chunks[i], size, (double)size / 1e6 / s, "MB/s");
            row("seq_read_delay_incl_open", impl, chunks[i], size, (double)size / 1e6 / total, "MB/s");
            r3_region_close(r);
        }
        /* The study's single-thread 4 KiB handler behind the same delay:
         * one round trip per page, so only a slice of the region is read. */
        struct r3_source *d;
        r3_stage_delay_open(mem_source(size), (uint64_t)delay_ms * 1000, &d);
        struct minh *h = minh_open(d, size);
        uint64_t part = 256 * 4096;
        row("seq_read_delay", "min4k", 4096, part, (double)part / 1e6 / read_all(h->base, part), "MB/s");
        minh_close(h, size);
    }
    if (want("dirty")) {
        struct r3_region *r = region(mem_source(size), chunk, 0, 0);
        read_all(r->base, size);
        struct r3u_region *u = (struct r3u_region *)r;
        r3u_collect(u, NULL);                     /* a clean start */
        uint64_t pages = size / 4096, x = 88172645463325252ull;
        for (uint64_t i = 0; i < pages / 100; i++)
            ((char *)r->base)[(xorshift(&x) % pages) * 4096] = 1;
        uint64_t t0 = r3_now_ns();
        r3u_collect(u, NULL);                     /* NULL push: find only, mark nothing */
        row("dirty_scan_ms", u->track_wp ? "uffd-pagemap_scan" : "uffd-hash", chunk, size,
            (double)(r3_now_ns() - t0) / 1e6, "ms");
        t0 = r3_now_ns();
        sink += XXH3_64bits(r->base, size);
        row("hash_ms", "xxh3", chunk, size, (double)(r3_now_ns() - t0) / 1e6, "ms");
        for (uint64_t i = 0; i < pages / 100; i++)
            ((char *)r->base)[(xorshift(&x) % pages) * 4096] = 2;
        t0 = r3_now_ns();
        r3_region_sync(r);
        row("sync_ms", "uffd", chunk, size, (double)(r3_now_ns() - t0) / 1e6, "ms");
        struct r3_region_stats st;
        r3_region_stats(r, &st);
        row("sync_chunks_pushed", "uffd", chunk, size, (double)st.chunks_pushed, "chunks");
        r3_region_close(r);
    }
    if (want("writeback")) {
        /* Bytes written back after 1% of the pages were written: only the
         * written page runs go (peer: the written bytes; the whole chunks
         * that a chunk-granular write-back would move are shown too). */
        struct r3_region *r = region(mem_source(size), chunk, 0, 0);
        read_all(r->base, size);
        r3_region_sync(r);
        struct r3_region_stats st0, st;
        r3_region_stats(r, &st0);
        uint64_t pages = size / 4096, x = 88172645463325252ull, written = 0, chunks = 0;
        uint8_t *hit = calloc(pages, 1), *chit = calloc(size / chunk, 1);
        for (uint64_t i = 0; i < pages / 100; i++) {
            uint64_t p = xorshift(&x) % pages;
            ((char *)r->base)[p * 4096 + (x & 4095)] = 3;
            written += hit[p]++ == 0;
            chunks += chit[p * 4096 / chunk]++ == 0;
        }
        r3_region_sync(r);
        r3_region_stats(r, &st);
        uint64_t moved = st.bytes_pushed - st0.bytes_pushed;
        row("writeback_written_bytes", "program", chunk, size, (double)(written * 4096), "bytes");
        row("writeback_bytes", "uffd", chunk, size, (double)moved, "bytes");
        row("writeback_ratio", "uffd", chunk, size, (double)moved / (double)(written * 4096), "x");
        row("writeback_bytes", "whole-chunks", chunk, size, (double)(chunks * chunk), "bytes");
        row("writeback_ratio", "whole-chunks", chunk, size,
            (double)(chunks * chunk) / (double)(written * 4096), "x");
        free(hit);
        free(chit);
        r3_region_close(r);
    }
    if (want("rand")) {
        uint64_t pages = size / 4096, n = 50000;
        uint32_t cks[2] = { chunk, 4096 };
        for (int i = 0; i < 2; i++) {
            struct r3_region *r = region(mem_source(size), cks[i], 0, 0);
            uint64_t x = 2463534242ull, t0 = r3_now_ns();
            for (uint64_t k = 0; k < n; k++)
                sink += *(volatile uint64_t *)((char *)r->base + (xorshift(&x) % pages) * 4096);
            double s = (double)(r3_now_ns() - t0) / 1e9;
            struct r3_region_stats st;
            r3_region_stats(r, &st);
            row("rand_faults", "uffd", cks[i], size, (double)st.faults / s, "faults/s");
            row("rand_reads", "uffd", cks[i], size, (double)n / s, "reads/s");
            r3_region_close(r);
        }
        struct minh *h = minh_open(mem_source(size), size);
        uint64_t x = 2463534242ull, t0 = r3_now_ns();
        for (uint64_t k = 0; k < n; k++)
            sink += *(volatile uint64_t *)(h->base + (xorshift(&x) % pages) * 4096);
        double s = (double)(r3_now_ns() - t0) / 1e9;
        row("rand_faults", "min4k", 4096, size, (double)h->faults / s, "faults/s");
        row("rand_reads", "min4k", 4096, size, (double)n / s, "reads/s");
        minh_close(h, size);
    }
    fprintf(stderr, "(%llu)\n", (unsigned long long)(sink & 1));
    return 0;
}
