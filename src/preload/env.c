/* SPDX-License-Identifier: BSD-3-Clause */
/* Parsing of the R3_* variables r3run sets for the preload shim (and of the
 * same values on r3run's command line). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "preload/env.h"

int r3_preload_prefetch_parse(const char *v, const char *record, int *prefetch,
                              const char **file)
{
    *file = NULL;
    if (!strcmp(v, "sequential")) {
        *prefetch = R3_PREFETCH_SEQUENTIAL;
    } else if (!strcmp(v, "none")) {
        *prefetch = R3_PREFETCH_NONE;
    } else if (!strcmp(v, "hot")) {
        if (!record)
            return r3_error(-EINVAL, "prefetch 'hot' replays the access log of "
                            "--record-access FILE; give that too, or give the log: --prefetch FILE");
        *prefetch = R3_PREFETCH_HOT;
        *file = record;
    } else if (*v) {
        *prefetch = R3_PREFETCH_HOT;
        *file = v;
    } else {
        return r3_error(-EINVAL, "prefetch is empty: sequential, none, hot or an access log FILE");
    }
    return 0;
}

static int env_size(const char *name, uint64_t dflt, uint64_t *out)
{
    const char *v = getenv(name);
    *out = dflt;
    if (!v || !*v)
        return 0;
    if (r3_parse_size(v, out) < 0)
        return r3_error(-EINVAL, "%s=%s is not a size (like 64K, 512M, 4G)", name, v);
    return 0;
}

static int env_uint(const char *name, uint64_t dflt, uint64_t max, uint64_t *out)
{
    const char *v = getenv(name);
    *out = dflt;
    if (!v || !*v)
        return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || !isdigit((unsigned char)*v) || x > max)
        return r3_error(-EINVAL, "%s=%s is not a number from 0 to %llu", name, v,
                        (unsigned long long)max);
    *out = x;
    return 0;
}

/* A switch: set, non-empty and not "0". */
static bool env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

int r3_preload_env_parse(struct r3_preload_env *e)
{
    memset(e, 0, sizeof *e);
    e->source = getenv("R3_SOURCE");
    if (!e->source || !*e->source)
        return r3_error(-EINVAL, "R3_SOURCE is not set");
    e->pipeline = getenv("R3_PIPELINE");
    if (e->pipeline && !*e->pipeline)
        e->pipeline = NULL;
    e->strategy = getenv("R3_STRATEGY");
    if (!e->strategy || !*e->strategy)
        e->strategy = "uffd";
    int rc = env_size("R3_SIZE", 0, &e->size);
    if (!rc)
        rc = env_size("R3_CHUNK", R3_DEFAULT_CHUNK, &e->chunk);
    if (!rc && (!r3_is_pow2(e->chunk) || e->chunk < 4096 || e->chunk > (1u << 30)))
        rc = r3_error(-EINVAL, "R3_CHUNK=%llu is not a power of two from 4K to 1G",
                      (unsigned long long)e->chunk);
    if (!rc)
        rc = env_size("R3_MIN_ALLOC", 64 * 1024, &e->min_alloc);
    if (!rc && e->min_alloc == 0)
        rc = r3_error(-EINVAL, "R3_MIN_ALLOC must be at least 1");
    if (!rc)
        rc = env_uint("R3_PULL_WORKERS", 0, 1024, &e->pull_workers);
    if (!rc)
        rc = env_uint("R3_PUSH_WORKERS", 1, 1024, &e->push_workers);
    if (!rc)
        rc = env_uint("R3_FAULT_THREADS", 2, 256, &e->fault_threads);
    const char *v = getenv("R3_PUSH_INTERVAL");
    if (!rc && v && *v && r3_util_parse_duration_ms(v, &e->push_interval_ms) < 0)
        rc = r3_error_prefix(-EINVAL, "R3_PUSH_INTERVAL: ");
    v = getenv("R3_SYNC_TIMEOUT");
    e->sync_timeout_ms = R3_PRELOAD_SYNC_TIMEOUT_MS;
    if (!rc && v && *v && r3_util_parse_duration_ms(v, &e->sync_timeout_ms) < 0)
        rc = r3_error_prefix(-EINVAL, "R3_SYNC_TIMEOUT: ");
    e->copy_on_write = env_flag("R3_COPY_ON_WRITE");
    if (!rc)
        rc = env_size("R3_MAX_RESIDENT", 0, &e->max_resident);
    uint64_t ra;
    if (!rc && (rc = env_uint("R3_UFFD_READAHEAD", UINT64_MAX, 1u << 20, &ra)) == 0)
        e->uffd_readahead = ra == UINT64_MAX ? -1 : (int)ra;
    v = getenv("R3_UFFD_FIRST_PAGE");
    e->uffd_no_first_page = v && !strcmp(v, "0");
    e->uffd_no_poison = env_flag("R3_UFFD_NO_POISON");
    e->uffd_no_wp_async = env_flag("R3_UFFD_NO_WP_ASYNC");
    e->filesync_detect = getenv("R3_FILESYNC_DETECT");
    if (e->filesync_detect && !*e->filesync_detect)
        e->filesync_detect = NULL;
    e->nbd_mount = getenv("R3_NBD_MOUNT");
    if (e->nbd_mount && !*e->nbd_mount)
        e->nbd_mount = NULL;
    e->record_access = getenv("R3_RECORD_ACCESS");
    if (e->record_access && !*e->record_access)
        e->record_access = NULL;
    v = getenv("R3_PREFETCH");
    e->prefetch = R3_PREFETCH_SEQUENTIAL;
    if (!rc && v && *v)
        rc = r3_preload_prefetch_parse(v, e->record_access, &e->prefetch, &e->prefetch_file);
    v = getenv("R3_STATS");
    e->stats = v && *v && strcmp(v, "0") != 0;
    return rc;
}

void r3_preload_env_opts(const struct r3_preload_env *e, struct r3_region_opts *o)
{
    o->strategy = e->strategy;
    o->size = e->size;
    o->chunk = (uint32_t)e->chunk;
    o->pull_workers = (unsigned)e->pull_workers;
    o->push_workers = (unsigned)e->push_workers;
    o->push_interval_ms = (unsigned)e->push_interval_ms;
    o->fault_threads = (unsigned)e->fault_threads;
    o->prefetch = e->prefetch;
    o->prefetch_file = e->prefetch_file;
    o->record_access = e->record_access;
    o->sync_timeout_ms = e->sync_timeout_ms;
    o->copy_on_write = e->copy_on_write;
    o->max_resident = e->max_resident;
    o->uffd_readahead = e->uffd_readahead;
    o->uffd_no_first_page = e->uffd_no_first_page;
    o->uffd_no_poison = e->uffd_no_poison;
    o->uffd_no_wp_async = e->uffd_no_wp_async;
    o->filesync_detect = e->filesync_detect;
    o->nbd_mount = e->nbd_mount;
}
