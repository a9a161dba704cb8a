/* SPDX-License-Identifier: BSD-3-Clause */
/* The pipeline builder: a list of stages, from the remote up, built in one
 * call. The list comes from r3_pipeline_opts' fields (remote -> [delay] ->
 * [stats] -> chunk -> cache(local) -> [pull] -> [push]) or from a spec string
 * (grammar in include/r3/stage.h). The list is checked whole before anything
 * is opened, so a bad spec fails with nothing half built. Each stage owns the
 * one below it, so closing the top closes everything (a borrowed local
 * source excepted). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

enum kind { K_DELAY, K_STATS, K_LOCK, K_CHUNK, K_CACHE, K_PULL, K_PUSH, K_N };
static const char *const kind_name[K_N] = { "delay", "stats", "lock", "chunk", "cache", "pull", "push" };
/* The parameters each stage takes, for the sentence about an unknown one. */
static const char *const kind_params[K_N] = {
    "us=N, ms=N or time=DURATION", "none", "none", "size=SIZE", "chunk=SIZE", "workers=N",
    "workers=N, interval=DURATION",
};

#define MAX_WORKERS 1024

struct step {
    int kind;
    uint64_t delay_us;
    bool has_delay;
    uint32_t chunk;               /* chunk:size=, cache:chunk= (0 = inherit) */
    unsigned workers;
    unsigned interval_ms;
};

struct plan {
    struct step s[K_N];           /* each stage at most once */
    int n;
};

static int parse_uint(const char *v, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!isdigit((unsigned char)*v) || *end || errno || x > max)
        return -EINVAL;
    *out = x;
    return 0;
}

/* key=val for stage st. */
static int set_param(const char *spec, struct step *st, const char *key, const char *val)
{
    const char *name = kind_name[st->kind];
    const char *why = NULL;
    uint64_t v = 0;
    if (st->kind == K_DELAY && (!strcmp(key, "us") || !strcmp(key, "ms"))) {
        if (parse_uint(val, 60000000, &v) < 0)
            why = "is not a whole number up to a minute";
        st->delay_us = !strcmp(key, "ms") ? v * 1000 : v;
        st->has_delay = true;
    } else if (st->kind == K_DELAY && !strcmp(key, "time")) {
        if (r3_util_parse_duration_us(val, &v) < 0)
            why = r3_last_error();
        st->delay_us = v;
        st->has_delay = true;
    } else if ((st->kind == K_CHUNK && !strcmp(key, "size")) ||
               (st->kind == K_CACHE && !strcmp(key, "chunk"))) {
        if (r3_parse_size(val, &v) < 0 || !r3_is_pow2(v) || v < 4096 || v > (1u << 30))
            why = "is not a power of two between 4K and 1G";
        st->chunk = (uint32_t)v;
    } else if ((st->kind == K_PULL || st->kind == K_PUSH) && !strcmp(key, "workers")) {
        if (parse_uint(val, MAX_WORKERS, &v) < 0 || v == 0)
            why = "is not a number of workers between 1 and 1024";
        st->workers = (unsigned)v;
    } else if (st->kind == K_PUSH && !strcmp(key, "interval")) {
        if (r3_util_parse_duration_ms(val, &v) < 0)
            why = r3_last_error();
        else if (v > 3600000)
            why = "is more than an hour";
        st->interval_ms = (unsigned)v;
    } else {
        return r3_error(-EINVAL, "pipeline '%s': stage '%s' has no parameter '%s' (it takes: %s)",
                        spec, name, key, kind_params[st->kind]);
    }
    if (!why)
        return 0;
    char copy[256];                 /* why may be r3_last_error()'s buffer */
    snprintf(copy, sizeof copy, "%s", why);
    return r3_error(-EINVAL, "pipeline '%s': %s:%s=%s %s", spec, name, key, val, copy);
}

/* "key=val" (val may be empty, which is an error). */
static int param(const char *spec, struct step *st, char *kv)
{
    char *eq = strchr(kv, '=');
    if (!eq || eq == kv || !eq[1])
        return r3_error(-EINVAL, "pipeline '%s': '%s' in stage '%s' is not key=value", spec, kv,
                        kind_name[st->kind]);
    *eq = '\0';
    return set_param(spec, st, kv, eq + 1);
}

static int add_stage(const char *spec, struct plan *pl, const char *name)
{
    int k = 0;
    while (k < K_N && strcmp(kind_name[k], name) != 0)
        k++;
    if (k == K_N)
        return r3_error(-EINVAL, "pipeline '%s': unknown stage '%s' (stages: delay, stats, lock, "
                        "chunk, cache, pull, push)", spec, name);
    for (int i = 0; i < pl->n; i++)
        if (pl->s[i].kind == k)
            return r3_error(-EINVAL, "pipeline '%s': stage '%s' appears twice", spec, name);
    pl->s[pl->n++] = (struct step){
        .kind = k, .workers = k == K_PULL ? 4 : 1,
    };
    return 0;
}

/* The order rules: pull right after cache; push right after cache or cache,pull;
 * delay has its time. */
static int check_plan(const char *spec, const struct plan *pl)
{
    if (pl->n == 0)
        return r3_error(-EINVAL, "pipeline '%s': no stage", spec);
    for (int i = 0; i < pl->n; i++) {
        const struct step *st = &pl->s[i];
        int prev = i > 0 ? pl->s[i - 1].kind : -1, prev2 = i > 1 ? pl->s[i - 2].kind : -1;
        if (st->kind == K_DELAY && !st->has_delay)
            return r3_error(-EINVAL, "pipeline '%s': delay needs its time (delay:us=N, "
                            "delay:ms=N or delay:time=10ms)", spec);
        if (st->kind == K_PULL && prev != K_CACHE)
            return r3_error(-EINVAL, "pipeline '%s': pull must come right after cache "
                            "(...,cache,pull)", spec);
        if (st->kind == K_PUSH && prev != K_CACHE && !(prev == K_PULL && prev2 == K_CACHE))
            return r3_error(-EINVAL, "pipeline '%s': push must come right after cache or "
                            "cache,pull", spec);
    }
    return 0;
}

static int plan_parse(const char *spec, struct plan *pl)
{
    char *buf = strdup(spec);
    if (!buf)
        return r3_error(-ENOMEM, "pipeline: out of memory");
    int rc = 0;
    char *save = NULL;
    *pl = (struct plan){ 0 };
    for (char *item = strtok_r(buf, ",", &save); item && rc == 0; item = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(item, ':'), *eq = strchr(item, '=');
        if (eq && (!colon || eq < colon)) {        /* "key=value": one more parameter */
            rc = pl->n ? param(spec, &pl->s[pl->n - 1], item)
                       : r3_error(-EINVAL, "pipeline '%s': '%s' comes before any stage", spec, item);
            continue;
        }
        if (colon)
            *colon = '\0';
        rc = add_stage(spec, pl, item);
        for (char *kv = colon ? colon + 1 : NULL; rc == 0 && kv;) {
            char *next = strchr(kv, ':');
            if (next)
                *next++ = '\0';
            rc = param(spec, &pl->s[pl->n - 1], kv);
            kv = next;
        }
    }
    /* strtok_r skips empty items: ",," or a trailing "," is a typo to name */
    if (rc == 0 && (spec[0] == ',' || strstr(spec, ",,") || (spec[0] && spec[strlen(spec) - 1] == ',')))
        rc = r3_error(-EINVAL, "pipeline '%s': an empty stage (two commas, or one at an end)", spec);
    free(buf);
    return rc == 0 ? check_plan(spec, pl) : rc;
}

/* The classic shape, from the opts fields. */
static void plan_from_opts(const struct r3_pipeline_opts *o, struct plan *pl)
{
    uint32_t chunk = o->chunk ? o->chunk : R3_DEFAULT_CHUNK;
    *pl = (struct plan){ 0 };
    if (o->delay_us)
        pl->s[pl->n++] = (struct step){ .kind = K_DELAY, .delay_us = o->delay_us, .has_delay = true };
    if (o->stats)
        pl->s[pl->n++] = (struct step){ .kind = K_STATS };
    pl->s[pl->n++] = (struct step){ .kind = K_CHUNK, .chunk = chunk };
    pl->s[pl->n++] = (struct step){ .kind = K_CACHE, .chunk = chunk };
    if (o->pull_workers)
        pl->s[pl->n++] = (struct step){ .kind = K_PULL, .workers = o->pull_workers };
    if (o->push_workers)
        pl->s[pl->n++] = (struct step){ .kind = K_PUSH, .workers = o->push_workers,
                                        .interval_ms = o->push_interval_ms };
}

/* Open one step over *top; on success *top is the new stage. */
static int open_step(const struct step *st, const struct r3_pipeline_opts *o, bool push_later,
                     struct r3_pipeline *p, struct r3_source **top, struct r3_source **local,
                     struct r3_source **below_cache, uint32_t *chunk)
{
    struct r3_source *s = NULL;
    int rc;
    switch (st->kind) {
    case K_DELAY:
        rc = r3_stage_delay_open(*top, st->delay_us, &s);
        break;
    case K_STATS:
        if ((rc = r3_stage_stats_open(*top, &s)) == 0)
            p->stats = s;
        break;
    case K_LOCK:
        if ((rc = r3_stage_lock_open(*top, &s)) == 0)
            p->lock = s;
        break;
    case K_CHUNK:
        if ((rc = r3_stage_chunk_open(*top, st->chunk ? st->chunk : *chunk, &s)) == 0 && st->chunk)
            *chunk = st->chunk;
        break;
    case K_CACHE: {
        if (st->chunk)
            *chunk = st->chunk;
        if (!*local && (rc = r3_mem_create((*top)->size, local)) < 0)
            break;
        struct r3_cache_opts co = {
            .struct_size = sizeof co, .chunk = *chunk,
            .mode = push_later ? R3_CACHE_WRITE_LOCAL : R3_CACHE_WRITE_THROUGH,
            .borrow_local = o->local && o->borrow_local,
            .on_fill = o->on_fill, .arg = o->hook_arg,
        };
        if ((rc = r3_stage_cache_open(*top, *local, &co, &s)) == 0) {
            *below_cache = *top;
            *local = NULL;                           /* the cache's now */
            p->cache = s;
        }
        break;
    }
    case K_PULL: {
        struct r3_pull_opts po = { .struct_size = sizeof po, .workers = st->workers,
                                   .priority = o->priority, .arg = o->priority_arg,
                                   .held = o->pull_held };
        if ((rc = r3_stage_pull_open(*top, &po, &s)) == 0)
            p->pull = s;
        break;
    }
    default: {
        struct r3_push_opts pu = {
            .struct_size = sizeof pu, .chunk = *chunk, .workers = st->workers,
            .interval_ms = st->interval_ms, .collect = o->collect, .after = o->after_push,
            .arg = o->hook_arg,
        };
        if ((rc = r3_stage_push_open(*top, *below_cache, &pu, &s)) == 0)
            p->push = s;
        break;
    }
    }
    if (rc == 0)
        *top = s;
    return rc;
}

static int build(struct r3_source *remote, const struct plan *pl, const struct r3_pipeline_opts *o,
                 struct r3_pipeline **out)
{
    struct r3_pipeline *p = calloc(1, sizeof *p);
    struct r3_source *top = remote, *local = o->local, *below_cache = NULL;
    uint32_t chunk = R3_DEFAULT_CHUNK;
    int rc = p ? 0 : r3_error(-ENOMEM, "pipeline: out of memory");
    for (int i = 0; i < pl->n && rc == 0; i++) {
        bool push_later = false;
        for (int j = i + 1; j < pl->n; j++)
            push_later |= pl->s[j].kind == K_PUSH;
        rc = open_step(&pl->s[i], o, push_later, p, &top, &local, &below_cache, &chunk);
    }
    if (rc < 0) {
        if (local && !(local == o->local && o->borrow_local))
            r3_source_close(local);
        r3_source_close(top);
        free(p);
        return rc;
    }
    p->top = top;
    *out = p;
    return 0;
}

void r3_pipeline_opts_init(struct r3_pipeline_opts *o)
{
    *o = (struct r3_pipeline_opts){ .struct_size = sizeof *o };
}

int r3_pipeline_open(struct r3_source *remote, const struct r3_pipeline_opts *o,
                     struct r3_pipeline **out)
{
    static const struct r3_pipeline_opts none = { 0 };
    if (!o)
        o = &none;
    *out = NULL;
    struct plan pl;
    int rc = r3_opts_check(o->struct_size, sizeof *o, "r3_pipeline_opts") < 0 ? -EINVAL : 0;
    if (rc == 0 && o->spec) {
        if (o->chunk || o->pull_workers || o->push_workers || o->push_interval_ms || o->delay_us ||
            o->stats)
            rc = r3_error(-EINVAL, "pipeline '%s': the spec says which stages; leave chunk, "
                          "pull_workers, push_workers, push_interval_ms, delay_us and stats 0",
                          o->spec);
        if (rc == 0)
            rc = plan_parse(o->spec, &pl);
        bool cache = false;
        for (int i = 0; rc == 0 && i < pl.n; i++)
            cache |= pl.s[i].kind == K_CACHE;
        if (rc == 0 && o->local && !cache)
            rc = r3_error(-EINVAL, "pipeline '%s': a local source was given, but no cache stage "
                          "to hold it", o->spec);
    } else if (rc == 0) {
        plan_from_opts(o, &pl);
    }
    if (rc < 0) {                      /* the pipeline owns remote and local, even now */
        if (o->local && !o->borrow_local)
            r3_source_close(o->local);
        r3_source_close(remote);
        return rc;
    }
    return build(remote, &pl, o, out);
}

int r3_pipeline_parse(const char *spec, struct r3_source *remote, struct r3_pipeline **out)
{
    struct r3_pipeline_opts o;
    r3_pipeline_opts_init(&o);
    o.spec = spec ? spec : "";
    return r3_pipeline_open(remote, &o, out);
}

void r3_pipeline_close(struct r3_pipeline *p)
{
    if (!p)
        return;
    r3_source_close(p->top);
    free(p);
}
