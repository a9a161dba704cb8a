/* Region dispatch: picks the strategy by name and forwards to it. */
#include <errno.h>
#include <string.h>
#include "internal.h"

void r3_region_opts_init(struct r3_region_opts *o)
{
    memset(o, 0, sizeof *o);
    o->strategy = "uffd";
    o->chunk = R3_DEFAULT_CHUNK;
    o->pull_workers = 0;
    o->push_workers = 1;
    o->fault_threads = 2;
    o->prefetch = R3_PREFETCH_SEQUENTIAL;
}

int r3_region_open(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out)
{
    struct r3_region_opts def;
    *out = NULL;
    if (!o) {
        r3_region_opts_init(&def);
        o = &def;
    }
    const char *name = o->strategy ? o->strategy : "uffd";
    const struct r3_strategy_ops *s = r3_strategy_find(name);
    int rc = 0;
    uint32_t chunk = o->chunk ? o->chunk : R3_DEFAULT_CHUNK;
    if (!s)
        rc = r3_error(-EINVAL, "unknown strategy '%s'", name);
    else if (!r3_is_pow2(chunk) || chunk < 4096)
        rc = r3_error(-EINVAL, "chunk %u is not a power of two of at least 4 KiB", chunk);
    else if (o->size > src->size)
        rc = r3_error(-EINVAL, "the source holds %llu bytes, less than the region size %llu",
                      (unsigned long long)src->size, (unsigned long long)o->size);
    if (rc < 0) {
        r3_source_close(src);
        return rc;
    }
    return s->open(o, src, out);
}

int r3_region_sync(struct r3_region *r)
{
    return r->ops->sync(r);
}

int r3_region_close(struct r3_region *r)
{
    return r ? r->ops->close(r) : 0;
}

int r3_region_stats(struct r3_region *r, struct r3_region_stats *st)
{
    memset(st, 0, sizeof *st);
    return r->ops->stats ? r->ops->stats(r, st) : 0;
}
