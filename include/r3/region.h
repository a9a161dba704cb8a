/* SPDX-License-Identifier: BSD-3-Clause */
/* Regions: the memory a program sees, opened from a source with a strategy
 * (uffd, nbd-direct, nbd-managed, filesync).
 *
 * The contract, the same for every strategy:
 *  - Options: fill them with r3_region_opts_init(), then set what you need.
 *    struct_size says which version of the struct the caller was built
 *    with; r3_region_open refuses a struct that was not initialized. An
 *    option the chosen strategy cannot honour is an error (-EINVAL or
 *    -ENOTSUP) with a sentence naming it, never silently ignored. A
 *    read-only source needs copy_on_write (else -EROFS: writes could
 *    never be written back).
 *  - Hooks (all optional; called by r3_region_sync/_close on the calling
 *    thread, or, with sync_timeout_ms, on a helper thread the caller waits
 *    for):
 *    before_sync runs first in every r3_region_sync (and in the sync that
 *    r3_region_close does); a negative return vetoes that sync, which then
 *    returns it and writes nothing back.
 *    after_sync runs once per successful r3_region_sync, after the source
 *    was flushed, with the chunk indexes written back since the previous
 *    after_sync call (by this sync and by any interval push rounds since
 *    the last one), ascending, each once; n may be 0.
 *    before_close runs once in r3_region_close, after its final sync and
 *    before anything is torn down (the memory is still readable).
 *    on_error tells what no call can return (see below).
 *  - sync_timeout_ms bounds one r3_region_sync as a whole: when it passes,
 *    sync returns -ETIMEDOUT and r3_last_error() says how many chunks (and
 *    bytes) were not written back (strategies with an `unsynced` op: uffd;
 *    others say that some were); they stay dirty for a later sync. The
 *    abandoned sync ends in the background (uffd: its remaining writes
 *    fail at once; a write in flight ends with the source's own timeout);
 *    the next sync and close wait for it.
 *  - The library reads no environment variable: tools turn theirs into
 *    these options. */
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
struct r3_leech;

struct r3_region_hooks {
    int  (*before_sync)(void *arg, struct r3_region *r);
    void (*after_sync)(void *arg, struct r3_region *r, const uint64_t *dirty, size_t n);
    void (*before_close)(void *arg, struct r3_region *r);
    void *arg;
    /* A failure no call can return, said once per region: msg is the
     * sentence (uffd: a fault the source could not fill; the faulting
     * thread gets SIGBUS). Runs on an r3 thread: it must not touch the
     * region's memory. The library itself prints nothing. */
    void (*on_error)(void *arg, struct r3_region *r, int err, const char *msg);
    /* Progress of a long step of the open (filesync's pre-copy: what =
     * "copying"), called about twice a second once the step has taken a
     * second, and once with done == total at its end; the region is not
     * usable yet (r is NULL). The library itself prints nothing. */
    void (*on_progress)(void *arg, struct r3_region *r, const char *what, uint64_t done,
                        uint64_t total);
};

struct r3_region_opts {
    uint32_t struct_size;         /* sizeof (struct r3_region_opts): set by r3_region_opts_init */
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
    struct r3_region_hooks hooks;
    uint64_t sync_timeout_ms;     /* bound on one r3_region_sync (0 = none) */
    bool copy_on_write;           /* writes stay in the region and never reach the source
                                     (a read-only source is then fine); not every strategy can */
    /* uffd tuning and kernel-feature switches (tests, comparisons); other
     * strategies refuse a value other than the default */
    int uffd_readahead;           /* chunks filled ahead of a sequential fault: -1 = default (16), 0 = off */
    bool uffd_no_first_page;      /* never install the faulting page before its chunk */
    bool uffd_no_poison;          /* behave as without UFFDIO_POISON (SIGBUS by signal) */
    bool uffd_no_wp_async;        /* behave as without WP_ASYNC: find writes by hashing */
    bool uffd_no_zero_fill;       /* read zero chunks like data (no extent query, no zero pages) */
    /* filesync / nbd choices (the tools set them from R3_FILESYNC_DETECT, R3_NBD_MOUNT) */
    const char *filesync_detect;  /* NULL = best the kernel has, "hash", "pagemap" */
    const char *nbd_mount;        /* NULL = best available, else a mode the nbd strategies name */
    /* Bytes of the region kept resident at most (0 = no bound; uffd only):
     * chunks not used recently are written back if dirty and dropped, and
     * fault back in from the source when touched again. A budget smaller
     * than the chunks that can be in flight at once is refused (-EINVAL,
     * the sentence says the minimum). */
    uint64_t max_resident;
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
    uint64_t chunks_evicted;      /* taken out under max_resident (written back first) */
    uint64_t chunks_zero;         /* filled with zero pages: the source said zeros, nothing read */
};

/* The region a program sees. Strategies embed it as their first member. */
struct r3_region {
    void *base;
    size_t len;
    uint32_t chunk;
    const struct r3_strategy_ops *ops;
    struct r3_source *src;        /* the source the region was opened on (owned) */
    /* set by src/region.c after open; strategies leave them alone */
    uint64_t sync_timeout_ms;
    struct r3_region_syncer *syncer;   /* a sync still running after its timeout */
    struct r3_leech *leech;       /* set by r3_leech_open: the migration that fills it */
};

/* r3_region_track operations (migration). */
#define R3_TRACK_START 1          /* from now on remember every chunk written */
#define R3_TRACK_TAKE  2          /* find what was written so far; the list since START */
#define R3_TRACK_STOP  3          /* forget (tracking costs a bit per chunk) */

/* What a strategy can do beyond the common options (r3_strategy_ops.caps). */
#define R3_STRATEGY_COPY_ON_WRITE 0x1u   /* honours opts.copy_on_write */

struct r3_strategy_ops {
    const char *name;
    int  (*open) (const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out);
    int  (*sync) (struct r3_region *r);
    int  (*close)(struct r3_region *r);
    int  (*stats)(struct r3_region *r, struct r3_region_stats *st);
    unsigned caps;                /* R3_STRATEGY_* */
    /* optional: chunks (and bytes) written and not yet written back */
    int  (*unsynced)(struct r3_region *r, uint64_t *chunks, uint64_t *bytes);
    /* optional, for migration (src/migrate): the region's current bytes
     * without filling anything (chunks never filled come from the source) */
    int  (*read)(struct r3_region *r, void *buf, size_t len, uint64_t off);
    /* R3_TRACK_*: TAKE returns the chunk indexes written since START (malloc'd) */
    int  (*track)(struct r3_region *r, int op, uint64_t **chunks, size_t *n);
    /* the chunks in first-fault order (malloc'd) */
    int  (*access_order)(struct r3_region *r, uint64_t **chunks, size_t *n);
    /* the cache stage whose local side is the region (borrowed), or NULL */
    struct r3_source *(*cache)(struct r3_region *r);
    /* the chunks (ascending) are remote again: the next access fetches them */
    int  (*invalidate)(struct r3_region *r, const uint64_t *chunks, size_t n);
    /* optional: around a fork() of the process (see r3_region_fork_prepare) */
    void (*fork_prepare)(struct r3_region *r);
    void (*fork_done)(struct r3_region *r);
    unsigned (*children)(struct r3_region *r);
};

void r3_region_opts_init(struct r3_region_opts *o);
/* Takes ownership of src (also on failure). 0 or -errno; r3_last_error(). */
int r3_region_open(const struct r3_region_opts *o, struct r3_source *src, struct r3_region **out);
/* After 0: every byte written before the call is in the source and flushed. */
int r3_region_sync(struct r3_region *r);
/* Syncs, then tears down and closes the source. Returns the sync's result.
 * If a sync timed out and is still running, close waits for it to stop
 * (each source call has its own timeout) before tearing down. */
int r3_region_close(struct r3_region *r);
int r3_region_stats(struct r3_region *r, struct r3_region_stats *st);

/* Migration accessors (src/migrate uses them; -ENOTSUP with a sentence when
 * the strategy cannot). The region's current bytes, chunks it has not
 * filled read from its source (nothing is filled by reading); bounded by len. */
int r3_region_read(struct r3_region *r, void *buf, size_t len, uint64_t off);
/* Track written chunks: R3_TRACK_START, _TAKE (*chunks malloc'd, ascending,
 * the caller frees), _STOP. */
int r3_region_track(struct r3_region *r, int op, uint64_t **chunks, size_t *n);
/* The chunks in the order they were first faulted (malloc'd; may be empty). */
int r3_region_access_order(struct r3_region *r, uint64_t **chunks, size_t *n);
/* The cache stage that fills the region (borrowed), or NULL. */
struct r3_source *r3_region_cache(struct r3_region *r);
/* Make chunks (ascending) remote again: their bytes are dropped and the
 * next access fetches them from the source. Nothing may touch them during
 * the call. -ENOTSUP when the strategy cannot. */
int r3_region_invalidate(struct r3_region *r, const uint64_t *chunks, size_t n);
/* Forked children (uffd): a child sees the region as the parent saw it at
 * the fork, copy-on-write; what the parent had not filled yet is served to
 * the child by the parent's r3 threads, with the bytes of the moment of
 * the fork (a chunk the parent writes back afterwards is first given to
 * the children that still lack it). The child's writes stay in the child.
 * A process that forks while a region is open calls fork_prepare just
 * before fork() and fork_done in the parent just after (pthread_atfork's
 * prepare and parent handlers; r3run's shim does): no fill lands in the
 * parent in between, so r3 knows exactly which pages the child got. The
 * child must not call r3_region_* (its copy of r3's threads is gone); it
 * uses the memory. Strategies that do not serve children do nothing. */
void r3_region_fork_prepare(struct r3_region *r);
void r3_region_fork_done(struct r3_region *r);
/* Forked children the region still serves (0 for strategies that serve
 * none). r3_region_close gives each of them, first, every chunk it still
 * lacks that holds anything but zeros: after close, their missing pages
 * read zeros. */
unsigned r3_region_children(struct r3_region *r);

/* Strategy lookup (src/registry.c); NULL if unknown. */
const struct r3_strategy_ops *r3_strategy_find(const char *name);
/* All registered strategies, NULL-terminated. */
const struct r3_strategy_ops *const *r3_strategy_list(void);

#ifdef __cplusplus
}
#endif
#endif
