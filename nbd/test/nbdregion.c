/* nbdregion: drive a region for the tests and the benchmark.
 *   nbdregion write|verify STRATEGY URI SEED [--chunk N] [--pull N] [--push N]
 * write fills the whole region with the nbdcheck pattern through memory
 * stores, syncs and closes; verify reads it through memory loads. Prints
 * open-to-first-byte time and throughput on stderr. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static uint64_t word(uint64_t seed, uint64_t i)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ (i + 1) * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    return x;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: nbdregion write|verify STRATEGY URI SEED [--chunk N] [--pull N] [--push N]\n");
        return 2;
    }
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = argv[2];
    o.workdir = getenv("TMPDIR");      /* where the mount and socket go */
    uint64_t seed = strtoull(argv[4], NULL, 0);
    for (int i = 5; i + 1 < argc; i += 2) {
        uint64_t v;
        r3_parse_size(argv[i + 1], &v);
        if (!strcmp(argv[i], "--chunk")) o.chunk = (uint32_t)v;
        else if (!strcmp(argv[i], "--pull")) o.pull_workers = (unsigned)v;
        else if (!strcmp(argv[i], "--push")) o.push_workers = (unsigned)v;
    }
    struct r3_source *src;
    if (r3_source_open(argv[3], &src) < 0) {
        fprintf(stderr, "nbdregion: %s\n", r3_last_error());
        return 1;
    }
    struct r3_region *r;
    uint64_t t0 = r3_now_ns();
    if (r3_region_open(&o, src, &r) < 0) {
        fprintf(stderr, "nbdregion: %s\n", r3_last_error());
        return 1;
    }
    volatile uint8_t first = *(volatile uint8_t *)r->base;
    (void)first;
    uint64_t t1 = r3_now_ns();
    uint64_t *w = r->base;
    size_t nw = r->len / 8;
    int rc = 0;
    if (argv[1][0] == 'w') {
        for (size_t i = 0; i < nw; i++)
            w[i] = word(seed, i);
        if (r3_region_sync(r) < 0) {
            fprintf(stderr, "nbdregion: sync: %s\n", r3_last_error());
            rc = 1;
        }
    } else {
        for (size_t i = 0; i < nw; i++)
            if (w[i] != word(seed, i)) {
                fprintf(stderr, "nbdregion: data differs at offset %zu\n", i * 8);
                rc = 1;
                break;
            }
    }
    uint64_t t2 = r3_now_ns();
    size_t len = r->len;
    if (r3_region_close(r) < 0) {
        fprintf(stderr, "nbdregion: close: %s\n", r3_last_error());
        rc = 1;
    }
    fprintf(stderr, "nbdregion: %s %s: first byte %.3f ms, %s %.1f MB/s\n", argv[2], argv[1],
            (t1 - t0) / 1e6, argv[1], len ? (double)nw * 8 / ((t2 - t1) / 1e9) / 1e6 : 0.0);
    return rc;
}
