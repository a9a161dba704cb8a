/* nbdcheck: data checks for the NBD integration tests, through any r3 source
 * URI (so through our NBD client when the URI is nbd://).
 *   nbdcheck gen SIZE SEED             the pattern on stdout (for cmp)
 *   nbdcheck write URI SEED [THREADS]  write the pattern over the whole source, flush
 *   nbdcheck verify URI SEED [THREADS] read everything back and compare
 *   nbdcheck probe URI                 read 4 KiB at 0 into a canary-filled buffer:
 *                                      exit 1 with the error, 0 if every byte was
 *                                      filled, 3 if it returned 0 with bytes unfilled
 *   nbdcheck probe-write URI           write 64 MiB at 0: exit 1 with the error, 0 if written
 * The pattern depends only on the byte offset and seed, so any request sizes
 * and orders give the same bytes. Requests have varied sizes and offsets and
 * run from several threads at once (pipelined on one connection). */
#include <inttypes.h>
#include <pthread.h>
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

static void fill(uint64_t seed, unsigned char *p, size_t len, uint64_t off)
{
    for (size_t k = 0; k < len; k++) {
        uint64_t o = off + k;
        p[k] = (unsigned char)(word(seed, o >> 3) >> ((o & 7) * 8));
    }
}

struct job {
    struct r3_source *src;
    uint64_t seed;
    bool write;
    unsigned id, n;
    int rc;
    uint64_t bad;
};

static void *run(void *arg)
{
    struct job *j = arg;
    uint64_t size = j->src->size, r = j->seed + j->id;
    unsigned char *buf = malloc(1 << 20), *exp = malloc(1 << 20);
    /* Stripes of 4 MiB handed out round-robin; inside a stripe, random sizes. */
    for (uint64_t s = (uint64_t)j->id << 22; s < size && j->rc == 0; s += (uint64_t)j->n << 22) {
        uint64_t end = s + (4u << 20) < size ? s + (4u << 20) : size;
        for (uint64_t off = s; off < end;) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            size_t len = (size_t)(r >> 40) % (1 << 20) + 1;
            if (len > end - off)
                len = (size_t)(end - off);
            if (j->src->align > 1)
                len = len < j->src->align ? j->src->align : len / j->src->align * j->src->align;
            if (len > end - off)
                len = (size_t)(end - off);
            fill(j->seed, exp, len, off);
            if (j->write) {
                j->rc = r3_source_write(j->src, exp, len, off);
            } else {
                j->rc = r3_source_read(j->src, buf, len, off);
                if (j->rc == 0 && memcmp(buf, exp, len)) {
                    for (size_t k = 0; k < len; k++)
                        if (buf[k] != exp[k]) {
                            j->bad = off + k;
                            break;
                        }
                    j->rc = -1;
                }
            }
            if (j->rc)
                break;
            off += len;
        }
    }
    free(buf);
    free(exp);
    return NULL;
}

/* One read against a (possibly hostile) server: the canary shows bytes the
 * read did not fill although it returned 0. */
static int probe(const char *uri)
{
    struct r3_source *src;
    if (r3_source_open(uri, &src) < 0) {
        fprintf(stderr, "nbdcheck: %s\n", r3_last_error());
        return 1;
    }
    static unsigned char buf[4096];
    memset(buf, 0xa5, sizeof buf);
    int rc = r3_source_read(src, buf, sizeof buf, 0);
    if (rc < 0)
        fprintf(stderr, "nbdcheck: %s\n", r3_last_error());
    size_t unfilled = 0;
    for (size_t i = 0; i < sizeof buf; i++)
        unfilled += buf[i] == 0xa5;
    r3_source_close(src);
    if (rc < 0)
        return 1;
    if (unfilled) {
        fprintf(stderr, "nbdcheck: the read returned 0 with %zu of %zu bytes unfilled\n", unfilled, sizeof buf);
        return 3;
    }
    return 0;
}

/* One big write against a server that may not read. */
static int probe_write(const char *uri)
{
    struct r3_source *src;
    if (r3_source_open(uri, &src) < 0) {
        fprintf(stderr, "nbdcheck: %s\n", r3_last_error());
        return 1;
    }
    size_t len = 64u << 20;
    if (len > src->size)
        len = (size_t)src->size;
    char *buf = calloc(1, len);
    int rc = buf ? r3_source_write(src, buf, len, 0) : -1;
    if (rc < 0)
        fprintf(stderr, "nbdcheck: %s\n", r3_last_error());
    free(buf);
    r3_source_close(src);
    return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "gen") == 0) {
        uint64_t size, seed = strtoull(argv[3], NULL, 0);
        if (r3_parse_size(argv[2], &size) < 0)
            return 2;
        unsigned char *b = malloc(1 << 20);
        for (uint64_t off = 0; off < size; off += 1 << 20) {
            size_t n = size - off < (1 << 20) ? (size_t)(size - off) : (1 << 20);
            fill(seed, b, n, off);
            if (fwrite(b, 1, n, stdout) != n)
                return 1;
        }
        free(b);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "probe") == 0)
        return probe(argv[2]);
    if (argc == 3 && strcmp(argv[1], "probe-write") == 0)
        return probe_write(argv[2]);
    if (argc < 4 || (strcmp(argv[1], "write") && strcmp(argv[1], "verify"))) {
        fprintf(stderr, "usage: nbdcheck gen SIZE SEED | write URI SEED [THREADS] | verify URI SEED [THREADS]"
                        " | probe URI\n");
        return 2;
    }
    struct r3_source *src;
    if (r3_source_open(argv[2], &src) < 0) {
        fprintf(stderr, "nbdcheck: %s\n", r3_last_error());
        return 1;
    }
    unsigned n = argc > 4 ? (unsigned)atoi(argv[4]) : 4;
    if (n < 1 || n > 64)
        n = 4;
    struct job jobs[64];
    pthread_t t[64];
    for (unsigned i = 0; i < n; i++) {
        jobs[i] = (struct job){ .src = src, .seed = strtoull(argv[3], NULL, 0),
                                .write = argv[1][0] == 'w', .id = i, .n = n };
        pthread_create(&t[i], NULL, run, &jobs[i]);
    }
    int rc = 0;
    for (unsigned i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        if (jobs[i].rc == -1) {
            fprintf(stderr, "nbdcheck: data differs at offset %" PRIu64 "\n", jobs[i].bad);
            rc = 1;
        } else if (jobs[i].rc < 0) {
            fprintf(stderr, "nbdcheck: %s\n", r3_last_error());
            rc = 1;
        }
    }
    if (rc == 0 && argv[1][0] == 'w' && r3_source_flush(src) < 0) {
        fprintf(stderr, "nbdcheck: flush: %s\n", r3_last_error());
        rc = 1;
    }
    r3_source_close(src);
    return rc;
}
