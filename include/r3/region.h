/* Regions: the memory a program sees, opened from a source with a strategy
 * (uffd, nbd-direct, nbd-managed, filesync). */
#ifndef R3_REGION_H
#define R3_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <r3/source.h>

#ifdef __cplusplus
extern "C" {
#endif

enum r3_prefetch { R3_PREFETCH_SEQUENTIAL = 0, R3_PREFETCH_NONE = 1, R3_PREFETCH_HOT = 2 };

struct r3_region;

struct r3_region_hooks {
    int  (*before_sync)(void *arg, struct r3_region *r);
    void (*after_sync)(void *arg, struct r3_region *r, const uint64_t *dirty, size_t n);
    void (*before_close)(void *arg, struct r3_region *r);
    void *arg;
};

struct r3_region_opts {
    const char *strategy;         /* "uffd" (default), "nbd-direct", "nbd-managed", "filesync" */
    uint64_t size;                /* 0 = the source's size */
    uint32_t chunk;               /* 0 = 64 KiB */
    unsigned pull_workers;        /* background prefetch workers (0 = none) */
    unsigned push_workers;        /* write-back workers (0 = 1) */
    unsigned push_interval_ms;    /* 0 = write back only on sync */
    unsigned fault_threads;       /* uffd handler threads (0 = 2) */
    int prefetch;                 /* enum r3_prefetch */
    const char *prefetch_file;    /* access log to replay first (R3_PREFETCH_HOT) */
    const char *record_access;    /* write first-fault order of chunks here at close */
    const char *workdir;          /* scratch files (filesync, mounts); NULL = /tmp */
    const char *filesync_detect;  /* NULL = best the kernel has, "hash", "pagemap" */
    struct r3_region_hooks hooks;
};

struct r3_region_stats {
    uint64_t faults;              /* page faults served */
    uint64_t chunks_fault;        /* chunks filled because of a fault */
    uint64_t chunks_prefetch;     /* chunks filled by background pull */
    uint64_t bytes_pulled;        /* bytes read from the source */
    uint64_t chunks_pushed;       /* chunks written back */
    uint64_t bytes_pushed;
    uint64_t syncs;
    uint64_t fault_wait_p50_ns;   /* time a faulting thread was blocked */
    uint64_t fault_wait_p99_ns;
};

/* The region a program sees. Strategies embed it as their first member. */
struct r3_region {
    void *base;
    size_t len;
    uint32_t chunk;
    const struct r3_strategy_ops *ops;
    struct r3_source *src;        /* the source the region was opened on (owned) */
};

struct r3_strategy_ops {
    const char *name;
    int  (*open) (const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out);
    int  (*sync) (struct r3_region *r);
    int  (*close)(struct r3_region *r);
    int  (*stats)(struct r3_region *r, struct r3_region_stats *st);
};

void r3_region_opts_init(struct r3_region_opts *o);
/* Takes ownership of src (also on failure). 0 or -errno; r3_last_error(). */
int r3_region_open(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out);
/* After 0: every byte written before the call is in the source and flushed. */
int r3_region_sync(struct r3_region *r);
/* Syncs, then tears down and closes the source. Returns the sync's result. */
int r3_region_close(struct r3_region *r);
int r3_region_stats(struct r3_region *r, struct r3_region_stats *st);

/* Strategy lookup (src/registry.c); NULL if unknown. */
const struct r3_strategy_ops *r3_strategy_find(const char *name);
/* All registered strategies, NULL-terminated. */
const struct r3_strategy_ops *const *r3_strategy_list(void);

#ifdef __cplusplus
}
#endif
#endif
