/* SPDX-License-Identifier: BSD-3-Clause */
/* Access logs: the order in which chunks were first faulted, written at
 * close (record_access) and replayed as the pull priority (hot prefetch).
 *
 * Format (text):
 *     r3-access-log 1
 *     chunk 65536
 *     <chunk index>          one per line, first-fault order
 * Lines starting with '#' and empty lines are ignored. Reading is bounded:
 * at most one line per chunk of the region, each index below the region's
 * chunk count, the chunk size must match; anything else is an error that
 * names the file and the line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"
#include "uffd/uffd.h"

void r3u_access_note(struct r3u_region *r, uint64_t idx)
{
    if (atomic_load_explicit(&r->seen[idx], memory_order_relaxed) ||
        atomic_exchange(&r->seen[idx], 1))
        return;
    uint64_t at = atomic_fetch_add(&r->norder, 1);
    if (at < r->nchunks)
        atomic_store_explicit(&r->order[at], idx, memory_order_relaxed);
}

int r3u_access_write(struct r3u_region *r)
{
    if (!r->record_path)
        return 0;
    char *tmp;
    if (asprintf(&tmp, "%s.tmp", r->record_path) < 0)
        return r3_error(-ENOMEM, "uffd: out of memory");
    FILE *f = fopen(tmp, "w");
    if (!f) {
        int e = errno;
        free(tmp);
        return r3_error(-e, "uffd: cannot write the access log %s: %s", r->record_path, strerror(e));
    }
    uint64_t n = atomic_load(&r->norder);
    if (n > r->nchunks)
        n = r->nchunks;
    fprintf(f, "r3-access-log 1\nchunk %u\n", r->r.chunk);
    for (uint64_t i = 0; i < n; i++)
        fprintf(f, "%llu\n", (unsigned long long)atomic_load_explicit(&r->order[i], memory_order_relaxed));
    int bad = ferror(f);
    int e = errno;
    if (fclose(f) != 0 || bad) {
        unlink(tmp);
        free(tmp);
        return r3_error(-(e ? e : EIO), "uffd: cannot write the access log %s", r->record_path);
    }
    if (rename(tmp, r->record_path) < 0) {
        e = errno;
        unlink(tmp);
        free(tmp);
        return r3_error(-e, "uffd: cannot rename the access log to %s: %s", r->record_path, strerror(e));
    }
    free(tmp);
    return 0;
}

/* Parse one decimal number that fills the whole line. */
static bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

int r3u_access_load(struct r3u_region *r, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return r3_error(-errno, "uffd: cannot open the prefetch log %s: %s", path, strerror(errno));
    r->prio = malloc(r->nchunks * sizeof *r->prio);
    if (!r->prio) {
        fclose(f);
        return r3_error(-ENOMEM, "uffd: out of memory");
    }
    for (uint64_t i = 0; i < r->nchunks; i++)
        r->prio[i] = -1;
    char line[64];
    uint64_t lineno = 0, rank = 0, v;
    int rc = 0;
    bool header = false, chunk_seen = false;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n')
            line[--n] = 0;
        else if (!feof(f)) {
            rc = r3_error(-EINVAL, "prefetch log %s line %llu: line too long", path,
                          (unsigned long long)lineno);
            break;
        }
        if (n && line[n - 1] == '\r')
            line[--n] = 0;
        if (!header) {
            if (strcmp(line, "r3-access-log 1") != 0)
                rc = r3_error(-EINVAL, "prefetch log %s line 1: not an r3 access log (expected"
                              " \"r3-access-log 1\")", path);
            header = true;
            continue;
        }
        if (n == 0 || line[0] == '#')
            continue;
        if (!chunk_seen) {
            if (strncmp(line, "chunk ", 6) != 0 || !parse_u64(line + 6, &v))
                rc = r3_error(-EINVAL, "prefetch log %s line %llu: expected \"chunk <bytes>\"", path,
                              (unsigned long long)lineno);
            else if (v != r->r.chunk)
                rc = r3_error(-EINVAL, "prefetch log %s: recorded with chunk %llu, the region uses %u",
                              path, (unsigned long long)v, r->r.chunk);
            chunk_seen = true;
            continue;
        }
        if (!parse_u64(line, &v))
            rc = r3_error(-EINVAL, "prefetch log %s line %llu: not a chunk index: \"%s\"", path,
                          (unsigned long long)lineno, line);
        else if (v >= r->nchunks)
            rc = r3_error(-EINVAL, "prefetch log %s line %llu: chunk %llu is past the region's %llu"
                          " chunks", path, (unsigned long long)lineno, (unsigned long long)v,
                          (unsigned long long)r->nchunks);
        else if (rank >= r->nchunks)
            rc = r3_error(-EINVAL, "prefetch log %s: more lines than the region has chunks", path);
        else if (r->prio[v] < 0)
            r->prio[v] = (int64_t)rank++;
    }
    if (rc == 0 && ferror(f))
        rc = r3_error(-EIO, "prefetch log %s: read error", path);
    if (rc == 0 && !chunk_seen)
        rc = r3_error(-EINVAL, "prefetch log %s: empty or truncated (no \"chunk\" line)", path);
    fclose(f);
    if (rc < 0) {
        free(r->prio);
        r->prio = NULL;
        return rc;
    }
    /* Logged chunks first, in log order; then the rest, ascending. */
    for (uint64_t i = 0; i < r->nchunks; i++)
        if (r->prio[i] < 0)
            r->prio[i] = (int64_t)(rank + i);
    return 0;
}

int64_t r3u_priority(void *arg, uint64_t chunk)
{
    struct r3u_region *r = arg;
    if (chunk >= r->nchunks)
        return -1;            /* past the region (the source is larger) */
    return r->prio ? r->prio[chunk] : (int64_t)chunk;
}
