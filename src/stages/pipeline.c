/* The pipeline builder: remote -> [delay] -> [stats] -> chunk -> cache(local)
 * -> [pull] -> [push], in one call. Each stage owns the one below it, so
 * closing the top closes everything (a borrowed local source excepted). */
#include <errno.h>
#include <stdlib.h>
#include "internal.h"

int r3_pipeline_open(struct r3_source *remote, const struct r3_pipeline_opts *o,
                     struct r3_pipeline **out)
{
    static const struct r3_pipeline_opts none = { 0 };
    if (!o)
        o = &none;
    *out = NULL;
    uint32_t chunk = o->chunk ? o->chunk : R3_DEFAULT_CHUNK;
    struct r3_pipeline *p = calloc(1, sizeof *p);
    struct r3_source *top = remote, *s, *local = o->local;
    int rc = p ? 0 : r3_error(-ENOMEM, "pipeline: out of memory");

    if (rc == 0 && o->delay_us) {
        if ((rc = r3_stage_delay_open(top, o->delay_us, &s)) == 0)
            top = s;
    }
    if (rc == 0 && o->stats) {
        if ((rc = r3_stage_stats_open(top, &s)) == 0)
            top = p->stats = s;
    }
    if (rc == 0 && (rc = r3_stage_chunk_open(top, chunk, &s)) == 0)
        top = s;
    struct r3_source *chunked = top;
    if (rc == 0 && !local)
        rc = r3_mem_create(remote->size, &local);
    if (rc == 0) {
        struct r3_cache_opts co = {
            .chunk = chunk,
            .mode = o->push_workers ? R3_CACHE_WRITE_LOCAL : R3_CACHE_WRITE_THROUGH,
            .borrow_local = o->local && o->borrow_local,
            .on_fill = o->on_fill,
            .arg = o->hook_arg,
        };
        rc = r3_stage_cache_open(top, local, &co, &s);
        if (rc == 0) {
            top = p->cache = s;
            local = NULL;                  /* owned by the cache now */
        }
    }
    if (rc == 0 && o->pull_workers) {
        struct r3_pull_opts po = { .workers = o->pull_workers, .priority = o->priority,
                                   .arg = o->priority_arg };
        if ((rc = r3_stage_pull_open(top, &po, &s)) == 0)
            top = p->pull = s;
    }
    if (rc == 0 && o->push_workers) {
        struct r3_push_opts pu = {
            .chunk = chunk, .workers = o->push_workers, .interval_ms = o->push_interval_ms,
            .collect = o->collect, .after = o->after_push, .arg = o->hook_arg,
        };
        if ((rc = r3_stage_push_open(top, chunked, &pu, &s)) == 0)
            top = p->push = s;
    }
    if (rc < 0) {
        if (local && local != o->local)
            r3_source_close(local);
        else if (local && !o->borrow_local)
            r3_source_close(local);
        r3_source_close(top);
        free(p);
        return rc;
    }
    p->top = top;
    *out = p;
    return 0;
}

void r3_pipeline_close(struct r3_pipeline *p)
{
    if (!p)
        return;
    r3_source_close(p->top);
    free(p);
}
