/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/nbd: the region side of the NBD benchmark (bench/nbd.sh runs it).
 *   nbd mmapread PATH LABEL
 *       first sequential read of a file through mmap MAP_SHARED (every byte)
 *   nbd region STRATEGY SIZE DELAY_US CHUNK PULL PUSH
 *       a mem: source of SIZE behind a delay stage, opened as a region:
 *       time from r3_region_open to the first byte, then a sequential read
 *       of all of it; reopened: sequential writes of all of it, then sync.
 * Prints CSV rows: bench,what,strategy,size,delay_us,value,unit */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"

static uint64_t sum_all(const uint64_t *p, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += p[i];
    return s;
}

static int mmapread(const char *path, const char *label)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        perror(path);
        return 1;
    }
    size_t len = (size_t)st.st_size;
    void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    uint64_t t0 = r3_now_ns();
    volatile uint64_t s = sum_all(p, len / 8);
    (void)s;
    double dt = (r3_now_ns() - t0) / 1e9;
    printf("nbd,mmap_first_read,%s,%zu,0,%.1f,MB/s\n", label, len, len / dt / 1e6);
    munmap(p, len);
    close(fd);
    return 0;
}

static int open_region(const char *strategy, uint64_t size, uint64_t delay_us, uint32_t chunk,
                       unsigned pull, unsigned push, struct r3_region **r, double *first_ms)
{
    struct r3_source *mem, *src;
    if (r3_mem_create(size, &mem) < 0)
        return -1;
    if (delay_us) {
        if (r3_stage_delay_open(mem, delay_us, &src) < 0)
            return -1;
    } else {
        src = mem;
    }
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = strategy;
    o.chunk = chunk;
    o.pull_workers = pull;
    o.push_workers = push;
    uint64_t t0 = r3_now_ns();
    if (r3_region_open(&o, src, r) < 0)
        return -1;
    volatile uint8_t b = *(volatile uint8_t *)(*r)->base;
    (void)b;
    *first_ms = (r3_now_ns() - t0) / 1e6;
    return 0;
}

static int region(int argc, char **argv)
{
    const char *strategy = argv[2];
    uint64_t size, delay, chunk, pull, push;
    if (r3_parse_size(argv[3], &size) || r3_parse_size(argv[4], &delay) || r3_parse_size(argv[5], &chunk) ||
        r3_parse_size(argv[6], &pull) || r3_parse_size(argv[7], &push))
        return 2;
    struct r3_region *r;
    double first;
    if (open_region(strategy, size, delay, (uint32_t)chunk, (unsigned)pull, (unsigned)push, &r, &first) < 0) {
        fprintf(stderr, "bench/nbd: %s\n", r3_last_error());
        return 1;
    }
    printf("nbd,open_to_first_byte,%s,%llu,%llu,%.3f,ms\n", strategy, (unsigned long long)size,
           (unsigned long long)delay, first);
    uint64_t t0 = r3_now_ns();
    volatile uint64_t s = sum_all(r->base, r->len / 8);
    (void)s;
    double dt = (r3_now_ns() - t0) / 1e9;
    printf("nbd,seq_read,%s,%llu,%llu,%.1f,MB/s\n", strategy, (unsigned long long)size,
           (unsigned long long)delay, size / dt / 1e6);
    r3_region_close(r);

    if (open_region(strategy, size, delay, (uint32_t)chunk, (unsigned)pull, (unsigned)push, &r, &first) < 0) {
        fprintf(stderr, "bench/nbd: %s\n", r3_last_error());
        return 1;
    }
    t0 = r3_now_ns();
    uint64_t *w = r->base;
    for (size_t i = 0; i < r->len / 8; i++)
        w[i] = i * 0x9E3779B97F4A7C15ull;
    uint64_t t1 = r3_now_ns();
    int rc = r3_region_sync(r);
    uint64_t t2 = r3_now_ns();
    if (rc < 0)
        fprintf(stderr, "bench/nbd: sync: %s\n", r3_last_error());
    printf("nbd,seq_write,%s,%llu,%llu,%.1f,MB/s\n", strategy, (unsigned long long)size,
           (unsigned long long)delay, size / ((t1 - t0) / 1e9) / 1e6);
    printf("nbd,seq_write_and_sync,%s,%llu,%llu,%.1f,MB/s\n", strategy, (unsigned long long)size,
           (unsigned long long)delay, size / ((t2 - t0) / 1e9) / 1e6);
    r3_region_close(r);
    fflush(stdout);
    return rc < 0;
}

static void usage(FILE *f)
{
    fputs("Usage: bench/nbd mmapread PATH LABEL\n"
          "       bench/nbd region STRATEGY SIZE DELAY_US CHUNK PULL PUSH\n"
          "The region side of the NBD benchmark (bench/nbd.sh runs it); CSV rows on stdout.\n"
          "  mmapread   the first sequential read of a file through mmap MAP_SHARED\n"
          "  region     a mem: source of SIZE behind a DELAY_US delay stage opened as a\n"
          "             STRATEGY region: open to first byte, sequential read, writes + sync\n"
          "  -h, --help     show this help and exit\n"
          "  -V, --version  show the version and exit\n", f);
}

int main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc == 2 && (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version"))) {
        printf("bench/nbd (r3) %s\n", PACKAGE_VERSION);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "mmapread"))
        return mmapread(argv[2], argv[3]);
    if (argc == 8 && !strcmp(argv[1], "region"))
        return region(argc, argv);
    fprintf(stderr, "bench/nbd: %s\nTry 'bench/nbd --help' for more information.\n",
            argc < 2 ? "missing a command (mmapread or region)" : "bad command or number of arguments");
    return 2;
}
