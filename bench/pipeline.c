/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/pipeline: how fast cache+pull makes a remote fully local, at several
 * round-trip times. Prints CSV: one row per RTT, next to the theoretical
 * limit workers x chunk / RTT and this machine's memory copy speed.
 *   bench/pipeline [--size 1G] [--chunk 1M] [--workers 64] [--rtt-ms 0,1,10,40] */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "internal.h"

static double memcpy_mbps(uint64_t size)
{
    char *a = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *b = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED || b == MAP_FAILED)
        return 0;
    memset(a, 1, size);
    memset(b, 2, size);                   /* both populated: a pure copy */
    uint64_t t0 = r3_now_ns();
    memcpy(b, a, size);
    double s = (double)(r3_now_ns() - t0) / 1e9;
    munmap(a, size);
    munmap(b, size);
    return (double)size / 1e6 / s;
}

static int run(uint64_t size, uint32_t chunk, unsigned workers, unsigned rtt_ms, double copy)
{
    struct r3_source *remote;
    int rc = r3_mem_create(size, &remote);
    if (rc < 0)
        return rc;
    char *buf = malloc(chunk);
    memset(buf, 0x5a, chunk);
    for (uint64_t off = 0; off < size; off += chunk)   /* real bytes, not the zero page */
        r3_source_write(remote, buf, chunk, off);
    free(buf);
    struct r3_pipeline *p;
    struct r3_pipeline_opts o;
    r3_pipeline_opts_init(&o);
    o.chunk = chunk;
    o.pull_workers = workers;
    o.delay_us = (uint64_t)rtt_ms * 1000;
    uint64_t t0 = r3_now_ns();
    if ((rc = r3_pipeline_open(remote, &o, &p)) < 0)
        return rc;
    rc = r3_pull_wait(p->pull);
    double s = (double)(r3_now_ns() - t0) / 1e9;
    r3_pipeline_close(p);
    if (rc < 0)
        return rc;
    double limit = rtt_ms ? (double)workers * chunk / 1e6 / (rtt_ms / 1000.0) : 0;
    printf("%u,%u,%u,%llu,%.3f,%.0f,%.0f,%.0f\n", rtt_ms, workers, chunk,
           (unsigned long long)size, s, (double)size / 1e6 / s, limit, copy);
    fflush(stdout);
    return 0;
}

static const char usage_text[] =
    "Usage: pipeline [--size 1G] [--chunk 1M] [--workers 64] [--rtt-ms 0,1,10,40]\n"
    "How fast cache+pull makes a remote fully local at each round-trip time (CSV on stdout).\n"
    "  -s, --size SIZE      bytes of the remote (a multiple of the chunk; default 1G)\n"
    "  -c, --chunk SIZE     chunk, a power of two >= 4K (default 1M)\n"
    "  -w, --workers N      pull workers, 1..16384 (default 64)\n"
    "  -r, --rtt-ms LIST    round-trip times in ms, comma-separated (default 0,1,10,40)\n"
    "  -h, --help           this text\n"
    "  -V, --version        the version\n";

/* A usage error: one line saying what, one pointing at --help; exit 2. */
static int bad_usage(const char *what, const char *arg)
{
    fprintf(stderr, "pipeline: %s%s%s%s\nTry 'pipeline --help' for more information.\n", what,
            arg ? " '" : "", arg ? arg : "", arg ? "'" : "");
    return 2;
}

int main(int argc, char **argv)
{
    uint64_t size = 1ull << 30, chunk = 1u << 20;
    unsigned long workers = 64;
    char rtts[256] = "0,1,10,40";
    static const struct option lo[] = {
        { "size", 1, 0, 's' }, { "chunk", 1, 0, 'c' }, { "workers", 1, 0, 'w' },
        { "rtt-ms", 1, 0, 'r' }, { "help", 0, 0, 'h' }, { "version", 0, 0, 'V' }, { 0, 0, 0, 0 },
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":s:c:w:r:hV", lo, NULL)) != -1) {
        char *end;
        switch (c) {
        case 's':
            if (r3_parse_size(optarg, &size) < 0 || !size)
                return bad_usage("--size: not a size:", optarg);
            break;
        case 'c':
            if (r3_parse_size(optarg, &chunk) < 0 || !r3_is_pow2(chunk) || chunk < 4096)
                return bad_usage("--chunk: not a power of two of at least 4K:", optarg);
            break;
        case 'w':
            workers = strtoul(optarg, &end, 10);
            if (*end || !workers || workers > 16384)
                return bad_usage("--workers: not a number between 1 and 16384:", optarg);
            break;
        case 'r':
            for (const char *q = optarg; *q; q++)
                if (!strchr("0123456789,", *q))
                    return bad_usage("--rtt-ms: not a comma-separated list of milliseconds:", optarg);
            snprintf(rtts, sizeof rtts, "%s", optarg);
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        case 'V': printf("pipeline (r3) %s\n", PACKAGE_VERSION); return 0;
        case ':': return bad_usage("an option needs a value:", argv[optind - 1]);
        default: return bad_usage("unknown option", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bad_usage("unexpected argument", argv[optind]);
    if (size % chunk)
        return bad_usage("--size is not a multiple of --chunk", NULL);
    double copy = memcpy_mbps(size < (256u << 20) ? size : (256u << 20));
    printf("rtt_ms,workers,chunk_bytes,bytes,seconds,mb_per_s,limit_mb_per_s,memcpy_mb_per_s\n");
    for (char *tok = strtok(rtts, ","); tok; tok = strtok(NULL, ",")) {
        int rc = run(size, (uint32_t)chunk, (unsigned)workers, (unsigned)atoi(tok), copy);
        if (rc < 0) {
            fprintf(stderr, "pipeline: %s\n", r3_last_error());
            return 1;
        }
    }
    return 0;
}
