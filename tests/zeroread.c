/* SPDX-License-Identifier: BSD-3-Clause */
/* zeroread: read a whole source through chunk + cache (+ pull) and tell what
 * the cache learned of its zeros, for tests/integration/sources_zero.sh.
 *   zeroread URI CHUNK WORKERS > image
 * The source's bytes go to stdout (read through the pipeline's top); on
 * stderr one line: "zero=N data=M remote_bytes=B extent_zero_bytes=Z"
 * (chunks the cache holds as zero and as data, bytes read from the remote
 * through a stats stage, zero bytes the top's extent op reports). Reading
 * must not read the remote again: exit 1 if it does, or on any error. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <r3/r3.h>
#include "internal.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: zeroread URI CHUNK WORKERS\n");
        return 2;
    }
    uint64_t chunk;
    if (r3_parse_size(argv[2], &chunk) < 0)
        return 2;
    struct r3_source *src;
    if (r3_source_open(argv[1], &src) < 0) {
        fprintf(stderr, "zeroread: %s\n", r3_last_error());
        return 1;
    }
    struct r3_pipeline *p;
    struct r3_pipeline_opts o = { .struct_size = sizeof o, .chunk = (uint32_t)chunk,
                                  .pull_workers = (unsigned)atoi(argv[3]), .stats = true };
    if (r3_pipeline_open(src, &o, &p) < 0) {
        fprintf(stderr, "zeroread: %s\n", r3_last_error());
        return 1;
    }
    int rc = p->pull ? r3_pull_wait(p->pull) : 0;
    /* without pull workers, the reads below fetch; with them, all is local */
    struct r3_stats before;
    r3_stats_get(p->stats, &before);
    uint64_t size = p->top->size;
    char *buf = malloc(chunk);
    for (uint64_t off = 0; rc == 0 && off < size; off += chunk) {
        size_t n = size - off < chunk ? (size_t)(size - off) : (size_t)chunk;
        memset(buf, 0x5A, n);                 /* a zero read must really write zeros */
        rc = r3_source_read(p->top, buf, n, off);
        if (rc == 0 && fwrite(buf, 1, n, stdout) != n)
            rc = -EIO;
    }
    uint64_t zero = 0, data = 0, zbytes = 0;
    for (uint64_t i = 0; i < r3_cache_nchunks(p->cache); i++) {
        zero += r3_cache_is_zero(p->cache, i);
        data += r3_cache_is_local(p->cache, i) && !r3_cache_is_zero(p->cache, i);
    }
    for (uint64_t off = 0, run = 0; rc == 0 && off < size; off += run) {
        int e = r3_source_extent(p->top, off, size - off, &run);
        if (e < 0)
            rc = e;
        else if (e == R3_EXTENT_ZERO)
            zbytes += run;
    }
    struct r3_stats after;
    r3_stats_get(p->stats, &after);
    if (rc < 0)
        fprintf(stderr, "zeroread: %s\n", r3_last_error());
    else if (p->pull && after.bytes_read != before.bytes_read) {
        fprintf(stderr, "zeroread: reading after the pull read the remote again\n");
        rc = -EIO;
    }
    fprintf(stderr, "zero=%" PRIu64 " data=%" PRIu64 " remote_bytes=%" PRIu64
            " extent_zero_bytes=%" PRIu64 "\n", zero, data, after.bytes_read, zbytes);
    free(buf);
    r3_pipeline_close(p);
    return rc < 0 ? 1 : 0;
}
