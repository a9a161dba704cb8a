/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/sources: every chunk source side by side. For each source and chunk
 * size: fill SIZE bytes, then read them sequentially through cache+pull
 * (16 pull workers plus one sequential reader), the same read straight from
 * the source by 16 threads (no cache: the shape redis-benchmark measures),
 * then the median latency of 100 first-chunk reads, through the cache (a
 * miss each) and straight from the source, next to the study's numbers.
 * Redis rows also run `redis-benchmark -t get` at the same value size and
 * concurrency, r3 rows (not r3s) `iperf3` (one stream on loopback, 5 s), in the same
 * run and interleaved with the cache+pull read (one row per round, --rounds
 * N), and print our/peer throughput.
 * The bench starts its own servers on 127.0.0.1 (redis-server, a 3-master
 * Redis Cluster, s3rver, r3serve plain and TLS) and stops them. One CSV run;
 * not a test.
 *   bench/sources [--size 1G] [--chunks 64K,1M] [--workers 16] [--samples 100] [--rounds 1]
 *                 [--only mem,file,dir,r3,r3s,redis,cluster,s3] [--r3serve PATH]
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include "internal.h"

extern char **environ;

#define MAXPROC 8

struct bench {
    uint64_t size;
    unsigned workers, samples, rounds;
    char tmp[256];
    char r3serve[512];
    pid_t pids[MAXPROC];
    int npids;
    int port[3];
};

/* ---- servers */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static int spawn(struct bench *b, int port, char *const argv[])
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "sources: cannot start %s: %s\n", argv[0], strerror(rc));
        return -rc;
    }
    b->pids[b->npids++] = pid;
    for (int i = 0; port > 0 && i < 400; i++) {
        if (port_open(port))
            return 0;
        usleep(50000);
    }
    if (port <= 0)                 /* a server that must not see a probe */
        return 0;
    fprintf(stderr, "sources: %s did not listen on %d\n", argv[0], port);
    return -ETIMEDOUT;
}

static void stop_all(struct bench *b)
{
    for (int i = 0; i < b->npids; i++)
        kill(b->pids[i], SIGTERM);
    for (int i = 0; i < b->npids; i++) {
        /* a server stuck in its shutdown must not hang the bench: 5 s, then KILL */
        int t = 0;
        while (waitpid(b->pids[i], NULL, WNOHANG) == 0) {
            if (++t == 100) {
                fprintf(stderr, "sources: %d did not stop on SIGTERM in 5 s; killing it\n", b->pids[i]);
                kill(b->pids[i], SIGKILL);
                waitpid(b->pids[i], NULL, 0);
                break;
            }
            usleep(50000);
        }
    }
    b->npids = 0;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return rc == 0 ? 0 : -EIO;
}

static int start_redis(struct bench *b, int idx, bool cluster)
{
    char port[16], dir[300], conf[320], bus[16];
    int p = free_port();
    b->port[idx] = p;
    snprintf(port, sizeof port, "%d", p);
    snprintf(bus, sizeof bus, "%d", free_port());
    snprintf(dir, sizeof dir, "%s/redis%d", b->tmp, p);
    snprintf(conf, sizeof conf, "%s/nodes.conf", dir);
    mkdir(dir, 0700);
    char *plain[] = { "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", dir, NULL };
    char *cl[] = { "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", dir, "--cluster-enabled", "yes",
                   "--cluster-port", bus, "--cluster-config-file", conf, NULL };
    return spawn(b, p, cluster ? cl : plain);
}

static int start_cluster(struct bench *b)
{
    for (int i = 0; i < 3; i++)
        if (start_redis(b, i, true) < 0)
            return -EIO;
    if (sh("redis-cli --cluster create 127.0.0.1:%d 127.0.0.1:%d 127.0.0.1:%d --cluster-replicas 0 "
           "--cluster-yes >/dev/null 2>&1", b->port[0], b->port[1], b->port[2]) < 0)
        return -EIO;
    for (int t = 0; t < 200; t++) {
        int ok = 0;
        for (int i = 0; i < 3; i++)
            ok += sh("redis-cli -p %d CLUSTER INFO | grep -q cluster_state:ok", b->port[i]) == 0;
        if (ok == 3)
            return 0;
        usleep(100000);
    }
    return -ETIMEDOUT;
}

static int start_s3(struct bench *b)
{
    char port[16], dir[300];
    int p = free_port();
    b->port[0] = p;
    snprintf(port, sizeof port, "%d", p);
    snprintf(dir, sizeof dir, "%s/s3", b->tmp);
    mkdir(dir, 0700);
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 0);
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 0);
    char *argv[] = { "s3rver", "-d", dir, "-a", "127.0.0.1", "-p", port, "-s",
                     "--configure-bucket", "bench", NULL };
    return spawn(b, p, argv);
}

static int start_r3serve(struct bench *b, bool tls)
{
    char listen[64], src[64], cert[300], key[300];
    int p = free_port();
    b->port[0] = p;
    snprintf(listen, sizeof listen, "127.0.0.1:%d", p);
    snprintf(src, sizeof src, "mem:?size=%" PRIu64, b->size);
    snprintf(cert, sizeof cert, "%s/cert.pem", b->tmp);
    snprintf(key, sizeof key, "%s/key.pem", b->tmp);
    if (tls && access(cert, R_OK) != 0 &&
        sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 1 -subj /CN=127.0.0.1 "
           "-addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1", key, cert) < 0)
        return -EIO;
    char *plain[] = { b->r3serve, "--listen", listen, "--source", src, "--workers", "16", NULL };
    char *t[] = { b->r3serve, "--listen", listen, "--source", src, "--workers", "16",
                  "--tls-cert", cert, "--tls-key", key, NULL };
    return spawn(b, p, tls ? t : plain);
}

/* ---- measurements */

/* Each 8-byte word holds its own offset: any read can be checked cheaply. */
static void stamp(uint64_t *w, size_t len, uint64_t off)
{
    for (size_t i = 0; i < len / 8; i++)
        w[i] = (off / 8 + i) * 0x9E3779B97F4A7C15ull + 1;
}

struct fill {
    struct r3_source *src;
    uint64_t next, size;
    size_t step;
    pthread_mutex_t mu;
    int rc;
};

static void *fill_worker(void *arg)
{
    struct fill *f = arg;
    uint64_t *buf = malloc(f->step);
    for (;;) {
        pthread_mutex_lock(&f->mu);
        uint64_t off = f->next;
        f->next += f->step;
        pthread_mutex_unlock(&f->mu);
        if (off >= f->size || !buf || f->rc)
            break;
        stamp(buf, f->step, off);
        int rc = r3_source_write(f->src, buf, f->step, off);
        if (rc < 0) {
            fprintf(stderr, "sources: fill: %s\n", r3_last_error());
            f->rc = rc;
        }
    }
    free(buf);
    return NULL;
}

static int fill(struct r3_source *src, uint32_t chunk, double *mbps)
{
    struct fill f = { .src = src, .size = src->size, .step = chunk > (4u << 20) ? chunk : (4u << 20) };
    pthread_mutex_init(&f.mu, NULL);
    pthread_t th[8];
    unsigned n = (src->flags & R3_SRC_PARALLEL) ? 8 : 1;
    uint64_t t0 = r3_now_ns();
    for (unsigned i = 0; i < n; i++)
        pthread_create(&th[i], NULL, fill_worker, &f);
    for (unsigned i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    if (f.rc == 0 && r3_source_flush(src) < 0) {
        fprintf(stderr, "sources: flush: %s\n", r3_last_error());
        f.rc = -EIO;
    }
    *mbps = (double)src->size / 1e6 / ((double)(r3_now_ns() - t0) / 1e9);
    pthread_mutex_destroy(&f.mu);
    return f.rc;
}

/* Sequential read of the whole source through cache + pull. */
static int seq_read(struct bench *b, struct r3_source *remote, uint32_t chunk, double *secs)
{
    struct r3_pipeline *p;
    struct r3_pipeline_opts o = { .struct_size = sizeof o, .chunk = chunk, .pull_workers = b->workers };
    uint64_t *buf = malloc(chunk), *want = malloc(chunk);
    uint64_t t0 = r3_now_ns();
    int rc = r3_pipeline_open(remote, &o, &p);
    if (rc < 0) {
        fprintf(stderr, "sources: pipeline: %s\n", r3_last_error());
        free(buf);
        free(want);
        return rc;
    }
    for (uint64_t off = 0; off < p->top->size && rc == 0; off += chunk) {
        rc = r3_source_read(p->top, buf, chunk, off);
        if (rc < 0) {
            fprintf(stderr, "sources: read at %" PRIu64 ": %s\n", off, r3_last_error());
            break;
        }
        stamp(want, 64, off);
        if (memcmp(buf, want, 64) != 0) {
            fprintf(stderr, "sources: wrong data at %" PRIu64 "\n", off);
            rc = -EIO;
        }
    }
    if (rc == 0)
        rc = r3_pull_wait(p->pull);
    *secs = (double)(r3_now_ns() - t0) / 1e9;
    r3_pipeline_close(p);
    free(buf);
    free(want);
    return rc;
}

/* Sequential read straight from the source: workers threads take the next
 * chunk in ascending order, as pull workers do, with no cache: the shape
 * redis-benchmark measures. */
struct direct {
    struct r3_source *src;
    uint32_t chunk;
    uint64_t next;
    pthread_mutex_t mu;
    int rc;
};

static void *direct_worker(void *arg)
{
    struct direct *d = arg;
    uint64_t *buf = malloc(d->chunk), want[8];
    while (buf) {
        pthread_mutex_lock(&d->mu);
        uint64_t off = d->next;
        d->next += d->chunk;
        pthread_mutex_unlock(&d->mu);
        if (off >= d->src->size || d->rc)
            break;
        int rc = r3_source_read(d->src, buf, d->chunk, off);
        stamp(want, sizeof want, off);
        if (rc == 0 && memcmp(buf, want, sizeof want) != 0)
            rc = -EIO;
        if (rc < 0)
            d->rc = rc;
    }
    free(buf);
    return NULL;
}

static int direct_read(struct bench *b, struct r3_source *src, uint32_t chunk, double *secs)
{
    struct direct d = { .src = src, .chunk = chunk };
    pthread_mutex_init(&d.mu, NULL);
    unsigned n = (src->flags & R3_SRC_PARALLEL) ? b->workers : 1;
    pthread_t *th = calloc(n, sizeof *th);
    uint64_t t0 = r3_now_ns();
    for (unsigned i = 0; i < n; i++)
        pthread_create(&th[i], NULL, direct_worker, &d);
    for (unsigned i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    *secs = (double)(r3_now_ns() - t0) / 1e9;
    free(th);
    pthread_mutex_destroy(&d.mu);
    if (d.rc)
        fprintf(stderr, "sources: direct read: %s\n", d.rc == -EIO ? "wrong data" : r3_last_error());
    return d.rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of n first-chunk reads: each a miss through a cache without pull
 * workers (via_cache), or a plain read of the source. */
static int latency(struct bench *b, struct r3_source *remote, uint32_t chunk, bool via_cache,
                   double *median_us)
{
    struct r3_pipeline *p = NULL;
    struct r3_source *s = remote;
    if (via_cache) {
        struct r3_pipeline_opts o = { .struct_size = sizeof o, .chunk = chunk };
        if (r3_pipeline_open(remote, &o, &p) < 0)
            return -EIO;
        s = p->top;
    }
    uint64_t nchunks = s->size / chunk;
    double *t = calloc(b->samples, sizeof *t);
    char *buf = malloc(chunk);
    int rc = 0;
    for (unsigned i = 0; i < b->samples && rc == 0; i++) {
        uint64_t idx = ((uint64_t)i * 7919u) % nchunks;
        uint64_t t0 = r3_now_ns();
        rc = r3_source_read(s, buf, chunk, idx * chunk);
        t[i] = (double)(r3_now_ns() - t0) / 1e3;
    }
    qsort(t, b->samples, sizeof *t, cmp_double);
    *median_us = t[b->samples / 2];
    if (p)
        r3_pipeline_close(p);
    free(t);
    free(buf);
    return rc;
}

/* iperf3 seconds per measurement (--peer-seconds; 0: no iperf3 peer) */
static unsigned peer_seconds = 5;

/* iperf3, one stream over loopback for peer_seconds: the receiver's MB/s, or 0. */
static double iperf_peer(struct bench *b)
{
    if (!peer_seconds)
        return 0;
    char port[16];
    int p = free_port();
    snprintf(port, sizeof port, "%d", p);
    char *argv[] = { "iperf3", "-s", "-1", "-p", port, NULL };
    if (spawn(b, 0, argv) < 0)          /* -1: a probe would be its one client */
        return 0;
    usleep(300000);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "iperf3 -c 127.0.0.1 -p %d -t %u -J 2>/dev/null", p, peer_seconds);
    FILE *f = popen(cmd, "r");
    double bps = 0;
    if (f) {
        static char out[1 << 20];
        size_t n = fread(out, 1, sizeof out - 1, f);
        out[n] = '\0';
        pclose(f);
        char *r = strstr(out, "\"sum_received\"");
        if (r && (r = strstr(r, "\"bits_per_second\":")))
            bps = atof(r + strlen("\"bits_per_second\":"));
    }
    b->npids--;                               /* -1: the server is gone after one client */
    waitpid(b->pids[b->npids], NULL, 0);
    return bps / 8 / 1e6;
}

/* redis-benchmark GET throughput (MB/s) at value size chunk with workers
 * clients: the key is SET once, then the best of runs GET runs. */
static double redis_peer(struct bench *b, int port, uint32_t chunk, int runs)
{
    uint64_t n = b->size / chunk;
    if (n < 1000)
        n = 1000;
    if (sh("redis-benchmark -h 127.0.0.1 -p %d -t set -d %u -c 1 -n 10 -q >/dev/null 2>&1",
           port, chunk) < 0)
        return 0;
    double best = 0;
    for (int run = 0; run < runs; run++) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "redis-benchmark -h 127.0.0.1 -p %d -t get -d %u -c %u -n %" PRIu64
                 " --csv 2>/dev/null", port, chunk, b->workers, n);
        FILE *f = popen(cmd, "r");
        if (!f)
            return 0;
        char line[512];
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "\"GET\",\"", 7) == 0 && atof(line + 7) * chunk / 1e6 > best)
                best = atof(line + 7) * chunk / 1e6;
        pclose(f);
    }
    return best;
}

static const char *study_us(const char *name)
{
    if (strcmp(name, "mem") == 0)
        return "66";
    if (strcmp(name, "redis") == 0)
        return "196";
    if (strcmp(name, "s3") == 0)
        return "744";
    return "";
}

static void print_row(struct bench *b, const char *name, uint32_t chunk, double fill_mbps, double secs,
                      double dsecs, double lat_cache, double lat_direct, double peer, int peer_port,
                      bool iperf)
{
    double mbps = (double)b->size / 1e6 / secs, dmbps = (double)b->size / 1e6 / dsecs;
    printf("%s,%u,%" PRIu64 ",%u,%.0f,%.3f,%.0f,%.0f,%.0f,%.0f,%s,", name, chunk, b->size, b->workers,
           fill_mbps, secs, mbps, dmbps, lat_cache, lat_direct, study_us(name));
    if (peer > 0 && peer_port)
        printf("redis-benchmark -t get -c %u,%.0f,%.2f,%.2f\n", b->workers, peer, mbps / peer,
               dmbps / peer);
    else if (peer > 0 && iperf)
        printf("iperf3 one stream,%.0f,%.2f,%.2f\n", peer, mbps / peer, dmbps / peer);
    else
        printf(",,,\n");
    fflush(stdout);
}

/* One row: fill URI, reopen, sequential read via cache+pull, latencies. */
static void row(struct bench *b, const char *name, const char *uri, uint32_t chunk, int peer_port)
{
    struct r3_source *src;
    double fill_mbps = 0, secs = 0, dsecs = 0, lat_cache = 0, lat_direct = 0, peer = 0;
    if (r3_source_open(uri, &src) < 0) {
        fprintf(stderr, "sources: %s: %s\n", uri, r3_last_error());
        return;
    }
    int rc = fill(src, chunk, &fill_mbps);
    bool mem = strcmp(name, "mem") == 0;
    if (rc == 0 && !mem) {                      /* read over fresh connections */
        r3_source_close(src);
        rc = r3_source_open(uri, &src);
    }
    if (rc == 0)
        rc = latency(b, src, chunk, false, &lat_direct);
    if (rc == 0)
        rc = direct_read(b, src, chunk, &dsecs);
    /* Rounds, interleaved with the peer: read through cache+pull, then the
     * peer; one row each. */
    bool iperf = strcmp(name, "r3") == 0;      /* r3s: its peer is openssl speed */
    for (unsigned round = 0; rc == 0 && round < b->rounds; round++) {
        if (round > 0 && (rc = r3_source_open(uri, &src)) < 0)
            break;
        if ((rc = seq_read(b, src, chunk, &secs)) < 0)   /* the pipeline closes src */
            break;
        if (round + 1 == b->rounds)
            break;                             /* the last round's row comes below */
        peer = peer_port ? redis_peer(b, peer_port, chunk, 1) : iperf ? iperf_peer(b) : 0;
        print_row(b, name, chunk, fill_mbps, secs, dsecs, lat_cache, lat_direct, peer, peer_port, iperf);
    }
    if (rc == 0 && (rc = r3_source_open(uri, &src)) == 0) {
        if (mem)
            rc = fill(src, chunk, &fill_mbps);
        if (rc == 0)
            rc = latency(b, src, chunk, true, &lat_cache);   /* closes src */
        else
            r3_source_close(src);
    }
    if (rc < 0) {
        fprintf(stderr, "sources: %s chunk %u failed: %s\n", name, chunk, r3_last_error());
        return;
    }
    peer = peer_port ? redis_peer(b, peer_port, chunk, b->rounds > 1 ? 1 : 3)
                     : iperf ? iperf_peer(b) : 0;
    print_row(b, name, chunk, fill_mbps, secs, dsecs, lat_cache, lat_direct, peer, peer_port, iperf);
}

static bool wanted(const char *only, const char *name)
{
    if (!only)
        return true;
    size_t n = strlen(name);
    for (const char *p = only; (p = strstr(p, name)); p += n)
        if ((p == only || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

static const char usage_text[] =
    "Usage: sources [--size 1G] [--chunks 64K,1M] [--workers 16] [--samples 100] [--rounds 1]\n"
    "               [--peer-seconds 5]\n"
    "               [--only mem,file,dir,r3,r3s,redis,cluster,s3] [--r3serve PATH]\n"
    "Every source side by side (CSV on stdout); starts its own servers on loopback.\n"
    "  -s, --size SIZE       bytes per source, at least 1M (default 1G)\n"
    "  -c, --chunks LIST     chunk sizes, powers of two 4K..64M dividing the size (default 64K,1M)\n"
    "  -w, --workers N       parallel requests, 1..256 (default 16)\n"
    "  -n, --samples N       first-chunk latency samples (default 100)\n"
    "  -R, --rounds N        cache+pull reads, each followed by the peer, one row each (default 1)\n"
    "  -P, --peer-seconds N  iperf3's run beside the r3 rows, 0..60 s (default 5; 0: no iperf3)\n"
    "  -o, --only LIST       only these sources\n"
    "  -r, --r3serve PATH    the r3serve to start (default: the build's)\n"
    "  -h, --help            this text\n"
    "  -V, --version         the version\n";

/* A usage error: one line saying what, one pointing at --help; exit 2. */
static int bad_usage(const char *what, const char *arg)
{
    fprintf(stderr, "sources: %s%s%s%s\nTry 'sources --help' for more information.\n", what,
            arg ? " '" : "", arg ? arg : "", arg ? "'" : "");
    return 2;
}

int main(int argc, char **argv)
{
    struct bench b = { .size = 1ull << 30, .workers = 16, .samples = 100, .rounds = 1 };
    char chunks[128] = "64K,1M";
    const char *only = NULL;
    /* r3serve sits in the build's top directory, one up from bench/ (or bench/.libs/) */
    char self[400];
    snprintf(self, sizeof self, "%s", strchr(argv[0], '/') ? argv[0] : "./sources");
    *strrchr(self, '/') = '\0';
    size_t sl = strlen(self);
    if (sl >= 6 && strcmp(self + sl - 6, "/.libs") == 0)
        self[sl - 6] = '\0';
    snprintf(b.r3serve, sizeof b.r3serve, "%s/../r3serve", self);
    static const struct option lo[] = {
        { "size", 1, 0, 's' }, { "chunks", 1, 0, 'c' }, { "workers", 1, 0, 'w' },
        { "samples", 1, 0, 'n' }, { "rounds", 1, 0, 'R' }, { "peer-seconds", 1, 0, 'P' }, { "only", 1, 0, 'o' }, { "r3serve", 1, 0, 'r' },
        { "help", 0, 0, 'h' }, { "version", 0, 0, 'V' }, { 0, 0, 0, 0 },
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":s:c:w:n:R:P:o:r:hV", lo, NULL)) != -1) {
        char *end;
        switch (c) {
        case 's':
            if (r3_parse_size(optarg, &b.size) < 0 || b.size < (1u << 20))
                return bad_usage("--size: not a size of at least 1M:", optarg);
            break;
        case 'c': snprintf(chunks, sizeof chunks, "%s", optarg); break;
        case 'w':
            b.workers = (unsigned)strtoul(optarg, &end, 10);
            if (*end || !b.workers || b.workers > 256)
                return bad_usage("--workers: not a number between 1 and 256:", optarg);
            break;
        case 'n':
            b.samples = (unsigned)strtoul(optarg, &end, 10);
            if (*end || !b.samples || b.samples > 1000000)
                return bad_usage("--samples: not a number between 1 and 1000000:", optarg);
            break;
        case 'R':
            b.rounds = (unsigned)strtoul(optarg, &end, 10);
            if (*end || !b.rounds || b.rounds > 100)
                return bad_usage("--rounds: not a number between 1 and 100:", optarg);
            break;
        case 'P':
            peer_seconds = (unsigned)strtoul(optarg, &end, 10);
            if (*end || !*optarg || peer_seconds > 60)
                return bad_usage("--peer-seconds: not a number between 0 and 60:", optarg);
            break;
        case 'o': only = optarg; break;
        case 'r': snprintf(b.r3serve, sizeof b.r3serve, "%s", optarg); break;
        case 'h': fputs(usage_text, stdout); return 0;
        case 'V': printf("sources (r3) %s\n", PACKAGE_VERSION); return 0;
        case ':': return bad_usage("an option needs a value:", argv[optind - 1]);
        default: return bad_usage("unknown option", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bad_usage("unexpected argument", argv[optind]);
    uint32_t cs[8];
    int nc = 0;
    for (char *tok = strtok(chunks, ","); tok && nc < 8; tok = strtok(NULL, ",")) {
        uint64_t v;
        if (r3_parse_size(tok, &v) < 0 || !r3_is_pow2(v) || v < 4096 || v > (64u << 20) || b.size % v)
            return bad_usage("--chunks: not a power of two between 4K and 64M that divides --size:", tok);
        cs[nc++] = (uint32_t)v;
    }
    snprintf(b.tmp, sizeof b.tmp, "%s/r3-bench-sources.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(b.tmp)) {
        perror("mkdtemp");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    printf("source,chunk_bytes,bytes,workers,fill_mb_s,seq_read_s,seq_read_mb_s,direct_read_mb_s,"
           "first_chunk_median_us,direct_chunk_median_us,study_first_chunk_us,peer,peer_mb_s,"
           "ratio_pipeline,ratio_direct\n");
    fflush(stdout);
    char uri[1024];
    uint64_t S = b.size;
    for (int i = 0; i < nc; i++) {
        uint32_t C = cs[i];
        if (wanted(only, "mem")) {
            snprintf(uri, sizeof uri, "mem:?size=%" PRIu64, S);
            row(&b, "mem", uri, C, 0);
        }
        if (wanted(only, "file")) {
            snprintf(uri, sizeof uri, "file://%s/file.img?size=%" PRIu64, b.tmp, S);
            row(&b, "file", uri, C, 0);
            sh("rm -f %s/file.img", b.tmp);
        }
        if (wanted(only, "dir")) {
            snprintf(uri, sizeof uri, "dir://%s/dir%u?size=%" PRIu64 "&chunk=%u", b.tmp, C, S, C);
            row(&b, "dir", uri, C, 0);
            sh("rm -rf %s/dir%u", b.tmp, C);
        }
        if (wanted(only, "r3") && start_r3serve(&b, false) == 0) {
            snprintf(uri, sizeof uri, "r3://127.0.0.1:%d/bench?conns=4", b.port[0]);
            row(&b, "r3", uri, C, 0);
        }
        stop_all(&b);
        if (wanted(only, "r3s") && start_r3serve(&b, true) == 0) {
            snprintf(uri, sizeof uri, "r3s://127.0.0.1:%d/bench?conns=4&ca=%s/cert.pem", b.port[0], b.tmp);
            row(&b, "r3s", uri, C, 0);
        }
        stop_all(&b);
        if (wanted(only, "redis") && start_redis(&b, 0, false) == 0) {
            snprintf(uri, sizeof uri, "redis://127.0.0.1:%d/b?size=%" PRIu64 "&chunk=%u&conns=%u",
                     b.port[0], S, C, b.workers);
            row(&b, "redis", uri, C, b.port[0]);
        }
        stop_all(&b);
        if (wanted(only, "cluster") && start_cluster(&b) == 0) {
            snprintf(uri, sizeof uri, "redis://127.0.0.1:%d/b?size=%" PRIu64 "&chunk=%u&conns=%u&cluster=1",
                     b.port[0], S, C, b.workers);
            row(&b, "redis-cluster", uri, C, 0);
        }
        stop_all(&b);
        if (wanted(only, "s3") && start_s3(&b) == 0) {
            snprintf(uri, sizeof uri, "s3://bench/b%u?endpoint=http://127.0.0.1:%d&size=%" PRIu64
                     "&chunk=%u&conns=%u", C, b.port[0], S, C, b.workers);
            row(&b, "s3", uri, C, 0);
        }
        stop_all(&b);
        sh("rm -rf %s/redis* %s/s3", b.tmp, b.tmp);
    }
    sh("rm -rf %s", b.tmp);
    return 0;
}
