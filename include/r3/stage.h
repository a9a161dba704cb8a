/* SPDX-License-Identifier: BSD-3-Clause */
/* Stages: sources that wrap a source, like nbdkit filters. Each stage takes
 * ownership of the source it wraps (closing the stage closes it), except
 * where a comment says "borrowed".
 *
 * The framework (include/r3/source.h): a stage sets its `next` to the source
 * it wraps (r3_stage_init) and fills only the ops it changes; the others fall
 * through to next. Every stage here is R3_SRC_PARALLEL; a source below it
 * that is not parallel is serialized by r3_source_* (the one lock; see the
 * threading rules in source.h).
 *
 * Control calls (r3_cache_*, r3_pull_*, r3_push_*, r3_lock_*, r3_stats_get)
 * given a source of another kind, or a chunk index out of range, return
 * -EINVAL with a sentence; they never silently do nothing. Getters that
 * return a count (r3_cache_nchunks, ...) return 0 then.
 *
 * Options structs that callers fill start with struct_size: set it with the
 * struct's _init function (or to sizeof the struct). 0 means "the layout of
 * this header" (so zero-initialised callers built against it keep working);
 * any other size is -EINVAL at open. */
#ifndef R3_STAGE_H
#define R3_STAGE_H

#include <stdbool.h>
#include <stdint.h>
#include <r3/source.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- chunk: any request becomes whole, aligned chunk requests of inner
 * (partial writes are read-modify-write). chunk is a power of two >= 512. */
int r3_stage_chunk_open(struct r3_source *inner, uint32_t chunk, struct r3_source **out);

/* ---- cache: a local source + a bitmap of which chunks are local. A miss
 * reads the whole chunk from the remote and writes it to the local source
 * (one fetch per chunk even when many threads miss it at once). */
enum r3_cache_mode {
    R3_CACHE_WRITE_THROUGH = 0,  /* writes go to local and remote */
    R3_CACHE_WRITE_LOCAL   = 1,  /* writes go to local only (a push stage sits above) */
};
enum r3_fetch_why { R3_FETCH_READ = 0, R3_FETCH_FAULT = 1, R3_FETCH_PULL = 2 };
struct r3_cache_opts {
    uint32_t struct_size;        /* sizeof(struct r3_cache_opts) or 0; see the top */
    uint32_t chunk;              /* power of two; 0 = 64 KiB */
    int mode;                    /* enum r3_cache_mode */
    bool borrow_local;           /* do not close `local` with the cache */
    /* Called after a chunk became local (from the fetching thread). */
    void (*on_fill)(void *arg, uint64_t chunk, int why);
    void *arg;
};
void r3_cache_opts_init(struct r3_cache_opts *o);   /* zeros + struct_size */
int  r3_stage_cache_open(struct r3_source *remote, struct r3_source *local,
                         const struct r3_cache_opts *opts, struct r3_source **out);
/* Make chunk idx local; waits for a fetch already in flight. 0 or -errno. */
int  r3_cache_fetch(struct r3_source *cache, uint64_t idx, int why);
bool r3_cache_is_local(struct r3_source *cache, uint64_t idx);
/* Mark chunk idx as not local, so the next access fetches it again. */
int  r3_cache_invalidate(struct r3_source *cache, uint64_t idx);
/* Mark chunk idx local without fetching (its local bytes are authoritative). */
int  r3_cache_mark_local(struct r3_source *cache, uint64_t idx);
uint64_t r3_cache_nchunks(struct r3_source *cache);
uint32_t r3_cache_chunk(struct r3_source *cache);
uint64_t r3_cache_nlocal(struct r3_source *cache);
struct r3_source *r3_cache_remote(struct r3_source *cache);   /* borrowed */
struct r3_source *r3_cache_local(struct r3_source *cache);    /* borrowed */

/* ---- pull: background workers fetch every chunk of a cache in priority
 * order (lowest first; a negative priority means "do not pull"). The
 * default priority is the chunk index (ascending offset). Reads and writes
 * pass through to the cache. */
struct r3_pull_opts {
    uint32_t struct_size;                              /* sizeof or 0; see the top */
    unsigned workers;                                  /* 0 = no background pull */
    int64_t (*priority)(void *arg, uint64_t chunk);    /* NULL = ascending */
    void *arg;
    bool held;                    /* workers wait for r3_pull_start (or wait/stop) */
};
struct r3_pull_progress {
    uint64_t chunks_total, chunks_local, chunks_pulled, bytes_pulled;
    bool done;                    /* every pullable chunk is local */
    int error;                    /* first fetch error, 0 if none */
};
void r3_pull_opts_init(struct r3_pull_opts *o);
int  r3_stage_pull_open(struct r3_source *cache, const struct r3_pull_opts *opts,
                        struct r3_source **out);
int  r3_pull_progress(struct r3_source *pull, struct r3_pull_progress *p);
int  r3_pull_wait(struct r3_source *pull);         /* until done; 0 or first error */
int  r3_pull_stop(struct r3_source *pull);         /* stop workers (idempotent) */
int  r3_pull_start(struct r3_source *pull);        /* let held workers go (idempotent) */

/* ---- push: a dirty bitmap; writes go to inner and mark chunks dirty;
 * workers copy dirty chunks (read from inner) to `remote` (borrowed) every
 * interval and on flush. flush = push all dirty chunks, then flush remote. */
struct r3_push_opts {
    uint32_t struct_size;         /* sizeof or 0; see the top */
    uint32_t chunk;               /* 0 = 64 KiB */
    unsigned workers;             /* 0 = 1 */
    unsigned interval_ms;         /* 0 = only on flush */
    /* Before each round: mark chunks dirtied outside write() (uffd: PAGEMAP_SCAN). */
    int  (*collect)(void *arg, struct r3_source *push);
    /* After each round: the chunks that were written to the remote. */
    void (*after)(void *arg, const uint64_t *chunks, size_t n);
    void *arg;
};
struct r3_push_progress { uint64_t chunks_dirty, chunks_pushed, bytes_pushed, rounds; int error; };
void r3_push_opts_init(struct r3_push_opts *o);
int  r3_stage_push_open(struct r3_source *inner, struct r3_source *remote,
                        const struct r3_push_opts *opts, struct r3_source **out);
int  r3_push_mark(struct r3_source *push, uint64_t idx);
int  r3_push_progress(struct r3_source *push, struct r3_push_progress *p);

/* ---- lock: blocks I/O while held (migration finalize). acquire waits for
 * requests in flight to finish. */
int  r3_stage_lock_open(struct r3_source *inner, struct r3_source **out);
int  r3_lock_acquire(struct r3_source *lock);
int  r3_lock_release(struct r3_source *lock);

/* ---- delay: adds a fixed latency to every request, concurrently (each
 * caller sleeps on its own), the study's way of injecting RTT. */
int r3_stage_delay_open(struct r3_source *inner, uint64_t delay_us, struct r3_source **out);

/* ---- stats: counts ops and bytes and keeps a latency histogram. */
#define R3_STATS_BUCKETS 48       /* bucket i holds latencies in [2^i, 2^(i+1)) ns */
struct r3_stats {
    uint64_t reads, writes, flushes, errors;
    uint64_t bytes_read, bytes_written;
    uint64_t hist[R3_STATS_BUCKETS];
};
int r3_stage_stats_open(struct r3_source *inner, struct r3_source **out);
int  r3_stats_get(struct r3_source *stats, struct r3_stats *out);
uint64_t r3_stats_percentile_ns(const struct r3_stats *s, double pct);

/* ---- pipeline: remote -> [delay] -> [stats] -> chunk -> cache(local) -> pull -> push,
 * one call. `top` is what a user reads and writes. The pipeline owns remote
 * (also when opening fails).
 *
 * Or written as a string (opts->spec, or r3_pipeline_parse):
 *
 *   spec   := item ("," item)*            stages from the remote up: each
 *                                         wraps everything written before it
 *   item   := NAME (":" KEY=VALUE)*       a stage and its parameters
 *           | KEY=VALUE                   one more parameter of the stage before
 *                                         ("push:workers=4,interval=1s")
 *   delay:us=N | delay:ms=N | delay:time=DUR   latency added to every request
 *   stats                                 counts ops, bytes, latency histogram
 *   lock                                  blocks I/O while held (r3_lock_acquire)
 *   chunk[:size=SIZE]                     whole aligned chunks below it (64K)
 *   cache[:chunk=SIZE]                    local copy (a mem: source, or
 *                                         opts->local); chunk defaults to the
 *                                         chunk stage's size, else 64K
 *   pull[:workers=N]                      background fetch (4 workers); right
 *                                         after cache
 *   push[:workers=N][:interval=DUR]       write-back (1 worker; DUR 0 = only
 *                                         on flush); after cache or cache,pull;
 *                                         the cache then keeps writes local
 *   SIZE: a number with an optional K/M/G/T suffix; DUR: a number with a unit
 *   us, ms, s or m ("500ms", "1s"); a bare number is refused.
 *   Example: delay:us=10000,stats,chunk:size=1M,cache,pull:workers=64,push:interval=1s
 * Each stage appears at most once. A bad spec is -EINVAL with a sentence
 * naming the bad part. The hooks of opts (on_fill, priority, collect,
 * after_push) go to their stage when the spec has it. */
struct r3_pipeline_opts {
    uint32_t struct_size;         /* sizeof or 0; see the top */
    uint32_t chunk;               /* 0 = 64 KiB */
    unsigned pull_workers;        /* 0 = no background pull */
    unsigned push_workers;        /* 0 = write-through cache, no push stage */
    unsigned push_interval_ms;
    int64_t (*priority)(void *arg, uint64_t chunk);
    void *priority_arg;
    struct r3_source *local;      /* NULL = a mem: source of the remote's size (owned) */
    bool borrow_local;
    uint64_t delay_us;            /* > 0 inserts a delay stage over remote */
    bool stats;                   /* insert a stats stage over remote */
    void (*on_fill)(void *arg, uint64_t chunk, int why);
    int  (*collect)(void *arg, struct r3_source *push);
    void (*after_push)(void *arg, const uint64_t *chunks, size_t n);
    void *hook_arg;
    bool pull_held;               /* the pull stage's workers wait for r3_pull_start */
    /* The stages as a string (grammar above). When set, chunk, pull_workers,
     * push_workers, push_interval_ms, delay_us and stats must be 0: the spec
     * says it all (else -EINVAL); local needs a cache stage in it. */
    const char *spec;
};
struct r3_pipeline {
    struct r3_source *top;        /* the last stage built (push if any, else pull, else cache) */
    struct r3_source *cache, *pull, *push, *stats;   /* borrowed views; NULL if absent */
    struct r3_source *lock;       /* borrowed; NULL if absent */
};
void r3_pipeline_opts_init(struct r3_pipeline_opts *o);
int  r3_pipeline_open(struct r3_source *remote, const struct r3_pipeline_opts *opts,
                      struct r3_pipeline **out);
/* r3_pipeline_open with only opts->spec = spec. */
int  r3_pipeline_parse(const char *spec, struct r3_source *remote, struct r3_pipeline **out);
void r3_pipeline_close(struct r3_pipeline *p);   /* stops workers; does not flush */

#ifdef __cplusplus
}
#endif
#endif
