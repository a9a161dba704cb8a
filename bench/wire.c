/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/wire: sequential read throughput and one-chunk latency of any source
 * URI (made for r3:// and r3s:// against a running r3serve). Prints CSV:
 *   uri,chunk,workers,bytes,seconds,MBps,chunk_latency_median_us
 * usage: wire [-c CHUNK] [-w WORKERS] [-t TOTAL] URI...
 * WORKERS threads take the next chunk in ascending order, as the pull stage's
 * workers do. -P instead measures the real thing: cache+pull (r3_pipeline,
 * WORKERS pull workers, CHUNK chunks) making the whole source local; mode
 * says which. Before measuring, the bytes to be read are written with a
 * nonzero pattern (unless --no-fill or the source is read-only): servers
 * that answer holes with a zero flag would otherwise move no data, and the
 * figure would not be a transfer rate. Not a test: run it by hand, one run per row. */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <r3/r3.h>

struct run {
    struct r3_source *src;
    uint64_t chunk, total;
    atomic_uint_fast64_t next;
    atomic_int err;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
    struct run *r = arg;
    char *buf = malloc(r->chunk);
    for (;;) {
        uint64_t off = atomic_fetch_add(&r->next, r->chunk);
        if (off >= r->total || !buf)
            break;
        if (r3_source_read(r->src, buf, r->chunk, off) < 0) {
            fprintf(stderr, "wire: %s\n", r3_last_error());
            atomic_store(&r->err, 1);
            break;
        }
    }
    free(buf);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const char usage_text[] =
    "Usage: bench/wire [-P] [-c CHUNK] [-w WORKERS] [-t TOTAL] URI...\n"
    "Sequential read throughput and one-chunk latency of each source URI (CSV on stdout).\n"
    "  -c, --chunk SIZE     chunk size (1M)\n"
    "  -w, --workers N      reader threads, or pull workers with -P (16, at most 256)\n"
    "  -t, --total SIZE     bytes to read (1G, at most the source's size)\n"
    "  -P, --pipeline       measure cache+pull making the whole source local\n"
    "      --no-fill        do not write a pattern over the bytes first (zeros may move as flags)\n"
    "  -h, --help           this text;  -V, --version  the version\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "bench/wire: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'bench/wire --help' for more information.\n");
    return 2;
}

int main(int argc, char **argv)
{
    uint64_t chunk = 1 << 20, total = 1ull << 30, workers = 16;
    int o;
    bool pipeline = false, fill = true;
    static const struct option lo[] = {
        { "chunk", required_argument, NULL, 'c' }, { "workers", required_argument, NULL, 'w' },
        { "total", required_argument, NULL, 't' }, { "pipeline", no_argument, NULL, 'P' },
        { "no-fill", no_argument, NULL, 'N' },
        { "help", no_argument, NULL, 'h' }, { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":c:w:t:PhV", lo, NULL)) != -1) {
        char *end;
        switch (o) {
        case 'P': pipeline = true; break;
        case 'N': fill = false; break;
        case 'c':
            if (r3_parse_size(optarg, &chunk) < 0 || chunk == 0 || chunk > (1u << 30))
                return usage_error("bad chunk size '%s'", optarg);
            break;
        case 'w':
            workers = strtoull(optarg, &end, 10);
            if (*end || !*optarg || workers < 1 || workers > 256)
                return usage_error("bad worker count '%s' (1 to 256)", optarg);
            break;
        case 't':
            if (r3_parse_size(optarg, &total) < 0 || total == 0)
                return usage_error("bad total '%s'", optarg);
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        case 'V': printf("bench/wire (r3) %s\n", PACKAGE_VERSION); return 0;
        case ':': return usage_error("%s needs a value", argv[optind - 1]);
        default: return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("%s", "no URI given");
    printf("uri,mode,chunk,workers,bytes,seconds,MBps,chunk_latency_median_us\n");
    int status = 0;
    for (int i = optind; i < argc; i++) {
        struct run r = { .chunk = chunk };
        if (r3_source_open(argv[i], &r.src) < 0) {
            fprintf(stderr, "wire: %s\n", r3_last_error());
            status = 1;
            continue;
        }
        r.total = total < r.src->size ? total : r.src->size;
        r.total -= r.total % chunk;
        if (fill && !(r.src->flags & R3_SRC_RDONLY)) {
            uint64_t upto = pipeline ? r.src->size : r.total;
            char *pat = malloc(chunk);
            for (uint64_t k = 0; pat && k < chunk; k++)
                pat[k] = (char)(k * 131 + 7) | 1;
            for (uint64_t off = 0; pat && off < upto; off += chunk) {
                uint64_t n = upto - off < chunk ? upto - off : chunk;
                if (r3_source_write(r.src, pat, n, off) < 0) {
                    fprintf(stderr, "wire: fill: %s\n", r3_last_error());
                    atomic_store(&r.err, 1);
                    break;
                }
            }
            free(pat);
            r3_source_flush(r.src);
        }
        /* latency: 100 single-chunk reads, one at a time */
        double lat[100];
        char *buf = malloc(chunk);
        uint64_t nchunks = r.src->size / chunk;
        for (int k = 0; k < 100 && buf && nchunks; k++) {
            double t0 = now_s();
            if (r3_source_read(r.src, buf, chunk, ((uint64_t)k * 7919 % nchunks) * chunk) < 0)
                atomic_store(&r.err, 1);
            lat[k] = (now_s() - t0) * 1e6;
        }
        free(buf);
        qsort(lat, 100, sizeof lat[0], cmp_d);
        pthread_t t[256];
        double t0 = now_s();
        if (pipeline) {
            struct r3_pipeline *p = NULL;
            struct r3_pipeline_opts po = { .chunk = (uint32_t)chunk, .pull_workers = (unsigned)workers };
            r.total = r.src->size;
            if (r3_pipeline_open(r.src, &po, &p) < 0 || r3_pull_wait(p->pull) < 0) {
                fprintf(stderr, "wire: %s\n", r3_last_error());
                atomic_store(&r.err, 1);
            }
            if (p) {
                r.src = NULL;              /* the pipeline owns it */
                r3_pipeline_close(p);
            }
        } else {
            for (uint64_t k = 0; k < workers; k++)
                pthread_create(&t[k], NULL, worker, &r);
            for (uint64_t k = 0; k < workers; k++)
                pthread_join(t[k], NULL);
        }
        double secs = now_s() - t0;
        if (atomic_load(&r.err))
            status = 1;
        printf("%s,%s,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%.3f,%.0f,%.0f\n", argv[i],
               pipeline ? "cache+pull" : "direct", chunk, workers, r.total,
               secs, (double)r.total / secs / 1e6, (lat[49] + lat[50]) / 2);
        fflush(stdout);
        r3_source_close(r.src);
    }
    return status;
}
