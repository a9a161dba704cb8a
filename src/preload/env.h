/* SPDX-License-Identifier: BSD-3-Clause */
/* The environment r3run hands to libr3preload.so: one variable per option.
 *   R3_SOURCE         source URI (required: without it the shim stays idle)
 *   R3_STRATEGY       strategy name (default uffd)
 *   R3_PIPELINE       stages between the source and the region (r3_pipeline_parse grammar)
 *   R3_SIZE           region size, K/M/G/T suffixes (default: the source's size)
 *   R3_CHUNK          chunk size (default 64K)
 *   R3_MIN_ALLOC      smallest allocation placed in the region (default 64K)
 *   R3_PULL_WORKERS   background prefetch workers (default 0)
 *   R3_PUSH_WORKERS   write-back workers (default 1)
 *   R3_PUSH_INTERVAL  write-back period with a unit: 500ms, 2s (default: only on sync)
 *   R3_FAULT_THREADS  fault handler threads (default 2)
 *   R3_PREFETCH       sequential | none | hot (replays R3_RECORD_ACCESS) | FILE (an access log)
 *   R3_RECORD_ACCESS  write the first-fault order of chunks to this file at exit
 *   R3_STATS          1: print a summary on stderr at exit
 *   R3_SYNC_TIMEOUT   bound on the final sync (and every sync): 60s default, 0s = none;
 *                     past it the shim says how much was not written back and exits 125
 *   R3_COPY_ON_WRITE  1: writes stay in the region, never reach the source
 *   R3_MAX_RESIDENT   bytes of the region kept resident at most (uffd; 0 = no bound)
 *   R3_TRACE_OPEN     append "open PID COMM" to this file when a process opens the region
 * Tuning and kernel-feature switches (tests, comparisons), not set by r3run
 * (it passes them through from its own environment):
 *   R3_UFFD_READAHEAD    chunks filled ahead of a sequential fault (default 16, 0 = off)
 *   R3_UFFD_FIRST_PAGE   0: do not install the faulting page before its chunk
 *   R3_UFFD_NO_POISON    1: behave as without UFFDIO_POISON
 *   R3_UFFD_NO_WP_ASYNC  1: behave as without WP_ASYNC (find writes by hashing)
 *   R3_FILESYNC_DETECT   filesync's change detection: hash (or pagemap)
 *   R3_NBD_MOUNT         the nbd strategies' mount mode
 *   R3_PID            set by the shim: only this process serves the region */
#ifndef R3_PRELOAD_ENV_H
#define R3_PRELOAD_ENV_H

#include <stdbool.h>
#include <stdint.h>
#include <r3/region.h>

/* Exit status when r3 itself cannot set up or save the region (like env(1)). */
#define R3_PRELOAD_EXIT 125
/* Default bound on a sync (R3_SYNC_TIMEOUT, r3run --sync-timeout). */
#define R3_PRELOAD_SYNC_TIMEOUT_MS 60000

struct r3_preload_env {
    const char *source, *strategy;
    const char *pipeline;         /* R3_PIPELINE: stages over the source (NULL = none) */
    uint64_t size, chunk, min_alloc;
    uint64_t pull_workers, push_workers, push_interval_ms, fault_threads;
    int prefetch;                 /* enum r3_prefetch */
    const char *prefetch_file, *record_access;
    bool stats;
    uint64_t sync_timeout_ms;
    bool copy_on_write;
    uint64_t max_resident;
    int uffd_readahead;           /* -1 = default */
    bool uffd_no_first_page, uffd_no_poison, uffd_no_wp_async;
    const char *filesync_detect, *nbd_mount;
};

/* Parse a --prefetch value into prefetch/prefetch_file (hot uses record). */
int r3_preload_prefetch_parse(const char *v, const char *record, int *prefetch,
                              const char **file);
/* Read and validate the R3_* variables. 0 or -errno; r3_last_error() names the variable. */
int r3_preload_env_parse(struct r3_preload_env *e);
/* Region options from a parsed environment. */
void r3_preload_env_opts(const struct r3_preload_env *e, struct r3_region_opts *o);

#endif
