/* nbdregion: drive a region for the tests and the benchmark.
 *   nbdregion write|verify STRATEGY URI SEED [--chunk N] [--pull N] [--push N]
 *   nbdregion contract STRATEGY URI
 * write fills the whole region with the nbdcheck pattern through memory
 * stores, syncs and closes; verify reads it through memory loads. Prints
 * open-to-first-byte time and throughput on stderr. contract checks the
 * region contract: options the strategy cannot honour are refused with a
 * sentence; after_sync gets exactly the chunks written since the last one;
 * the stats count what was pushed. */
#include <errno.h>
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

static int fails = 0;
#define CHECK(c, ...) do { if (!(c)) { fprintf(stderr, "nbdregion contract: " __VA_ARGS__); \
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
        fprintf(stderr, "nbdregion contract: %s\n", r3_last_error());
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
    fprintf(stderr, "nbdregion contract: %s: after_sync [%" PRIu64 " %" PRIu64 " %" PRIu64 "], %" PRIu64
            " chunks / %" PRIu64 " bytes pushed, %" PRIu64 " bytes pulled\n", strategy, seen.list[0],
            seen.list[1], seen.list[2], st.chunks_pushed, st.bytes_pushed, st.bytes_pulled);
    CHECK(r3_region_close(r) == 0, "close: %s", r3_last_error());
    return fails ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "contract"))
        return contract(argv[2], argv[3]);
    if (argc < 5) {
        fprintf(stderr, "usage: nbdregion write|verify STRATEGY URI SEED [--chunk N] [--pull N] [--push N]"
                        " | contract STRATEGY URI\n");
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
