/* SPDX-License-Identifier: BSD-3-Clause */
/* migrate_peer: one end of a migration in its own process, for the tests
 * that kill a peer with SIGKILL (tests/integration/migrate_*.sh).
 *
 *   migrate_peer seed --source URI --addr-file F --hashes F [--listen ADDR]
 *                [--tls-cert F --tls-key F [--tls-ca F]] [--chunk SIZE] [--write-pct P]
 *       A uffd region on URI with a thread writing random chunks the whole
 *       time (in the first P % of the chunks), seeded. before_finalize stops the writer and writes the hash
 *       of every chunk (A's bytes at the pause) to --hashes. Exits 0 after
 *       RELEASE.
 *   migrate_peer leech --uri URI [--hashes F] [--finalize-at PCT]
 *                [--finalize-file F] [--slow-us US] [--workers N]
 *       Leeches; finalizes when PCT % is local and (if given) F exists;
 *       prints "finalized dirty=N downtime_us=T"; waits; checks every chunk
 *       against --hashes. If the wait fails, checks the chunks it holds and
 *       that touching a missing one is SIGBUS (never zeros), prints
 *       "wait failed: ..." and exits 3. --slow-us sleeps that long after every pull.
 * Exit: 0 ok, 1 wrong data, 2 usage, 3 a clear migration error. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <r3/r3.h>
#include "cover.h"

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static int usage(const char *msg)
{
    fprintf(stderr, "migrate_peer: %s\nTry 'migrate_peer --help' for more information.\n", msg);
    return 2;
}

/* ---- seed */

static struct r3_region *A;
static atomic_bool pause_req, paused;
static const char *hashes_path;
static unsigned write_pct = 100;     /* the writer writes only the first write_pct % of the chunks */

static void *writer_main(void *arg)
{
    (void)arg;
    uint64_t s = 88172645463325252ull, n = A->len / A->chunk * write_pct / 100;
    if (n == 0)
        n = 1;
    while (1) {
        if (atomic_load(&pause_req)) {
            atomic_store(&paused, true);
            pause();
        }
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        uint64_t c = s % n, at = (s >> 32) % (A->chunk / 8) * 8;
        memcpy((uint8_t *)A->base + c * A->chunk + at, &s, 8);
        if ((s & 255) == 0)
            usleep(200);
    }
    return NULL;
}

static int write_hashes(const char *path, const uint8_t *base, uint64_t len, uint32_t chunk)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    for (uint64_t off = 0; off < len; off += chunk)
        fprintf(f, "%016" PRIx64 "\n", fnv(base + off, chunk));
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path);
}

static int before_finalize(void *arg, struct r3_region *r)
{
    (void)arg;
    atomic_store(&pause_req, true);
    while (!atomic_load(&paused))
        usleep(100);
    return write_hashes(hashes_path, r->base, r->len, r->chunk) == 0 ? 0 : -EIO;
}

static int seed_main(int argc, char **argv)
{
    enum { O_SRC = 256, O_ADDR, O_HASH, O_LISTEN, O_CERT, O_KEY, O_CA, O_CHUNK, O_WPCT };
    static const struct option opts[] = {
        { "source", required_argument, NULL, O_SRC }, { "addr-file", required_argument, NULL, O_ADDR },
        { "hashes", required_argument, NULL, O_HASH }, { "listen", required_argument, NULL, O_LISTEN },
        { "tls-cert", required_argument, NULL, O_CERT }, { "tls-key", required_argument, NULL, O_KEY },
        { "tls-ca", required_argument, NULL, O_CA }, { "chunk", required_argument, NULL, O_CHUNK },
        { "write-pct", required_argument, NULL, O_WPCT }, { NULL, 0, NULL, 0 },
    };
    const char *source = NULL, *addr_file = NULL;
    struct r3_seed_opts so;
    r3_seed_opts_init(&so);
    so.listen = "127.0.0.1:0";
    uint64_t chunk = 64 * 1024;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_SRC: source = optarg; break;
        case O_ADDR: addr_file = optarg; break;
        case O_HASH: hashes_path = optarg; break;
        case O_LISTEN: so.listen = optarg; break;
        case O_CERT: so.tls_cert = optarg; break;
        case O_KEY: so.tls_key = optarg; break;
        case O_CA: so.tls_ca = optarg; break;
        case O_WPCT: write_pct = (unsigned)atoi(optarg); break;
        case O_CHUNK:
            if (r3_parse_size(optarg, &chunk) < 0)
                return usage("bad --chunk");
            break;
        default: return usage("unknown option");
        }
    }
    if (!source || !addr_file || !hashes_path)
        return usage("seed needs --source, --addr-file and --hashes");
    struct r3_source *src;
    if (r3_source_open(source, &src) < 0) {
        fprintf(stderr, "migrate_peer: %s\n", r3_last_error());
        return 1;
    }
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.chunk = (uint32_t)chunk;
    o.push_interval_ms = 100;
    if (r3_region_open(&o, src, &A) < 0) {
        fprintf(stderr, "migrate_peer: %s\n", r3_last_error());
        return 1;
    }
    pthread_t w;
    pthread_create(&w, NULL, writer_main, NULL);
    so.before_finalize = before_finalize;
    struct r3_seeder *s;
    if (r3_seed_open(A, &so, &s) < 0) {
        fprintf(stderr, "migrate_peer: %s\n", r3_last_error());
        return 1;
    }
    char addr[128], tmp[4096];
    r3_seed_address(s, addr, sizeof addr);
    snprintf(tmp, sizeof tmp, "%s.tmp", addr_file);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%s\n", addr) < 0 || fclose(f) != 0 || rename(tmp, addr_file) != 0) {
        fprintf(stderr, "migrate_peer: cannot write %s\n", addr_file);
        return 1;
    }
    int rc = r3_seed_wait(s, 0);
    printf("released\n");
    fflush(stdout);
    r3_seed_close(s);
    r3_cover_flush();
    _exit(rc == 0 ? 0 : 1);           /* the writer sleeps forever; the region goes with us */
}

/* ---- leech */

static uint64_t slow_us;
static sigjmp_buf jb;

static void on_local(void *arg, uint64_t chunk)
{
    (void)arg;
    (void)chunk;
    if (slow_us)
        usleep((useconds_t)slow_us);
}

static void on_bus(int sig)
{
    (void)sig;
    siglongjmp(jb, 1);
}

/* Chunks to check: all, or those not in miss (sorted). */
static int check(struct r3_region *r, const char *path, const uint64_t *miss, size_t nmiss, uint64_t *checked)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "migrate_peer: cannot read %s\n", path);
        return 1;
    }
    uint64_t n = r->len / r->chunk, h, bad = 0;
    size_t m = 0;
    *checked = 0;
    for (uint64_t c = 0; c < n; c++) {
        if (fscanf(f, "%" SCNx64, &h) != 1) {
            fprintf(stderr, "migrate_peer: %s is short\n", path);
            fclose(f);
            return 1;
        }
        while (m < nmiss && miss[m] < c)
            m++;
        if (m < nmiss && miss[m] == c)
            continue;
        (*checked)++;
        if (fnv((uint8_t *)r->base + c * r->chunk, r->chunk) != h) {
            if (bad++ < 5)
                fprintf(stderr, "migrate_peer: chunk %" PRIu64 " differs from A's at the pause\n", c);
        }
    }
    fclose(f);
    return bad ? 1 : 0;
}

static int leech_main(int argc, char **argv)
{
    enum { O_URI = 256, O_HASH, O_AT, O_FILE, O_SLOW, O_WORKERS };
    static const struct option opts[] = {
        { "uri", required_argument, NULL, O_URI }, { "hashes", required_argument, NULL, O_HASH },
        { "finalize-at", required_argument, NULL, O_AT }, { "finalize-file", required_argument, NULL, O_FILE },
        { "slow-us", required_argument, NULL, O_SLOW }, { "workers", required_argument, NULL, O_WORKERS },
        { NULL, 0, NULL, 0 },
    };
    const char *uri = NULL, *hashes = NULL, *ffile = NULL;
    unsigned at = 100;
    struct r3_leech_opts lo;
    r3_leech_opts_init(&lo);
    lo.on_chunk_local = on_local;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_URI: uri = optarg; break;
        case O_HASH: hashes = optarg; break;
        case O_AT: at = (unsigned)atoi(optarg); break;
        case O_FILE: ffile = optarg; break;
        case O_SLOW: slow_us = strtoull(optarg, NULL, 10); break;
        case O_WORKERS: lo.pull_workers = (unsigned)atoi(optarg); break;
        default: return usage("unknown option");
        }
    }
    if (!uri)
        return usage("leech needs --uri");
    struct r3_region *r;
    if (r3_leech_open(uri, &lo, &r) < 0) {
        printf("open failed: %s\n", r3_last_error());
        return 3;
    }
    printf("leeching %zu bytes\n", r->len);
    fflush(stdout);
    struct r3_leech_progress p;
    for (;;) {
        r3_leech_progress(r, &p);
        if (p.error)
            break;
        if (p.chunks_local * 100 >= p.chunks_total * at)
            break;
        usleep(5000);
    }
    printf("pulled %" PRIu64 "/%" PRIu64 "\n", p.chunks_local, p.chunks_total);
    fflush(stdout);
    while (ffile && access(ffile, F_OK) != 0)
        usleep(5000);
    if (r3_leech_finalize(r) < 0) {
        printf("finalize failed: %s\n", r3_last_error());
        r3_region_close(r);
        return 3;
    }
    r3_leech_progress(r, &p);
    printf("finalized dirty=%" PRIu64 " downtime_us=%" PRIu64 "\n", p.chunks_dirty, p.finalize_ns / 1000);
    fflush(stdout);
    int rc = r3_leech_wait(r);
    uint64_t checked = 0;
    if (rc == 0) {
        int bad = hashes ? check(r, hashes, NULL, 0, &checked) : 0;
        printf("done checked=%" PRIu64 "\n", checked);
        r3_region_close(r);
        return bad;
    }
    printf("wait failed: %s\n", r3_last_error());
    uint64_t *miss = NULL;
    size_t nmiss = 0;
    r3_leech_missing(r, &miss, &nmiss);
    int bad = hashes ? check(r, hashes, miss, nmiss, &checked) : 0;
    printf("missing=%zu checked=%" PRIu64 "\n", nmiss, checked);
    if (nmiss) {
        /* touching a chunk that never came: SIGBUS, never zeros */
        signal(SIGBUS, on_bus);
        volatile uint8_t *p8 = (uint8_t *)r->base + miss[nmiss - 1] * r->chunk;
        if (sigsetjmp(jb, 1) == 0) {
            uint8_t v = *p8;
            printf("read a missing chunk: %u (no SIGBUS)\n", v);
            bad = 1;
        } else {
            printf("missing chunk: SIGBUS\n");
        }
    }
    fflush(stdout);
    r3_cover_flush();
    _exit(bad ? 1 : 3);       /* the region's handlers may still be failing faults */
}

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: migrate_peer seed --source URI --addr-file F --hashes F [--listen ADDR]\n"
               "                    [--tls-cert F --tls-key F [--tls-ca F]] [--chunk SIZE] [--write-pct P]\n"
               "       migrate_peer leech --uri URI [--hashes F] [--finalize-at PCT]\n"
               "                    [--finalize-file F] [--slow-us US] [--workers N]\n");
        return 0;
    }
    if (argc < 2)
        return usage("seed or leech?");
    if (strcmp(argv[1], "seed") == 0)
        return seed_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "leech") == 0)
        return leech_main(argc - 1, argv + 1);
    return usage("seed or leech?");
}
