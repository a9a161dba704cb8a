/* SPDX-License-Identifier: BSD-3-Clause */
/* Internal interfaces of the uffd strategy (uffd/). */
#ifndef R3_UFFD_INTERNAL_H
#define R3_UFFD_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include "kernel/kernel.h"

/* ---- the region (uffd/region.c) */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <linux/userfaultfd.h>
#include <r3/r3.h>

#define R3U_BATCH 64             /* fault messages read per read() */
#define R3U_HIST 256             /* fault-wait histogram: 4 buckets per power of two */
#define R3U_INSTALLING 1         /* the faulting page is in, the rest is coming */
#define R3U_FILLED 2             /* every page of the chunk was installed */
#define R3U_EVICTING 3           /* being taken out (evict.c): faults wait */
#define R3U_ZEROING 4            /* filled; a removed page gets its zeros (fault.c) */

struct r3u_region;
struct r3u_kid;

/* One fault-handler thread; its message queue lets a fill that meets a
 * changing layout (EAGAIN) read pending events without losing faults. */
struct r3u_handler {
    struct r3u_region *r;
    pthread_t thread;
    bool started;
    struct uffd_msg q[R3U_BATCH * 2];
    size_t qlen;
    /* the fault being served: its page offset (UINT64_MAX: none), when its
     * message was read, whether its wait is recorded; readahead fills */
    uint64_t fault_off, t0;
    bool waited, ra, seq;
    bool first_done;              /* the faulting page went in before the chunk */
    void *page;                   /* one page, for that */
    int ep;                       /* the epoll set (one, shared by the handlers) */
};

struct r3u_region {
    struct r3_region r;           /* first: r3_region_* see this */
    struct r3_source view;        /* the pipeline's local side: the region itself */
    struct r3_pipeline *p;
    struct r3_region_hooks hooks;
    int uffd, stopfd;
    uint64_t features;
    bool track_wp;                /* dirty pages via WP_ASYNC + PAGEMAP_SCAN */
    bool poison, thread_id;
    size_t pagesz;
    size_t maplen;                /* mapped/registered bytes (len rounded up to chunk) */
    uint64_t remote_size;
    uint64_t nchunks;             /* chunks of the region */
    uint64_t npages;
    unsigned chunk_shift, page_shift;
    const uint8_t *zeros;         /* one chunk of zeros (source for zero fills) */
    _Atomic uint8_t *filled;      /* per chunk: 0 or an R3U_ state above */
    _Atomic uint64_t *zpage;      /* per page: must read as zeros (REMOVE/DONTNEED) */
    _Atomic uint64_t *gone;       /* per page: no longer mapped (UNMAP/REMAP) */
    _Atomic bool any_gone;
    _Atomic uint64_t *ahead;      /* per chunk: claimed by a handler's readahead */
    _Atomic uint64_t *pdirty;     /* per chunk: dirty, not yet told to the push stage */
    /* write-back accounting (remote.c): what was collected and not yet
     * written to the source; what was written since the last after_sync */
    _Atomic uint64_t *unsynced;
    _Atomic uint64_t *written;
    /* migration (r3_region_track): chunks collected as written since
     * tracking started */
    _Atomic uint64_t *tracked;
    _Atomic bool tracking;
    _Atomic uint64_t *dropping;   /* per chunk: being invalidated (r3_region_invalidate) */
    void *drop_map, *drop_area;   /* drop.c: where invalidated pages are moved to die */
    int drop_uffd;                /* its own userfaultfd (0 = not set up) */
    bool drop_nomove;             /* UFFDIO_MOVE unusable here: madvise with REMOVE events */
    struct r3_source remote;      /* the source as the pipeline sees it (remote.c) */
    struct r3_source *inner;      /* the source itself */
    _Atomic uint64_t sync_deadline;   /* ns; remote writes fail at once past it (0 = none) */
    uint64_t sync_timeout_ms;
    bool cow;                     /* copy_on_write: nothing is written back */
    /* access log (record_access) */
    char *record_path;
    _Atomic uint8_t *seen;
    _Atomic uint64_t *order;   /* first-fault order; read while faults append */
    _Atomic uint64_t norder;
    /* hot prefetch: rank of each chunk (NULL = ascending) */
    int64_t *prio;
    /* fallback tracking: XXH3 of each chunk as last filled / pushed */
    uint64_t *hash;
    uint8_t *scratch;             /* one chunk, for collect */
    pthread_mutex_t collect_lock;
    struct r3_pm_scanner scan;    /* written pages (track_wp) */
    /* page-granular write-back: pages written (found by a collect) whose
     * bytes go out with their chunk's next write-back; only those move */
    _Atomic uint64_t *pw;
    _Atomic bool recheck;         /* collects outside push rounds: re-read at write-back */
    /* zeros (zero.c): chunks whose source bytes are all zeros are filled
     * by UFFDIO_ZEROPAGE, never read. Asked once per 64 chunks. */
    bool zero_fill;               /* zero fills are on */
    bool zero_cheap;              /* the extent query is local (file, mem): ask to the end */
    _Atomic uint64_t *zchunk;     /* per chunk: the source says zeros */
    _Atomic uint64_t *zasked;     /* per 64 chunks: asked */
    _Atomic uint64_t *zdead;      /* per chunk: written back or invalidated: ask no more */
    /* handler threads */
    struct r3u_handler *h;
    unsigned nh;
    unsigned readahead;           /* chunks filled ahead of a sequential fault */
    bool first_page;              /* memory-speed source: faulting page before its chunk */
    _Atomic uint64_t last_fault;  /* chunk of the latest fault (sequential detection) */
    _Atomic bool last_write;      /* the latest fault was a write (zero fills, view.c) */
    _Atomic bool stopping;
    _Atomic int ev_busy;          /* handlers between reading messages and handling their events */
    _Atomic int reported;         /* on_error told once */
    /* forked children (fork.c) */
    _Atomic bool forking;         /* between fork_prepare and fork_done */
    _Atomic int inflight;         /* fills and write-backs past the gate */
    _Atomic uint64_t forks_seen;
    uint64_t forks_before;
    bool kids_ep_ok, kids_started;
    _Atomic bool kids_stop;
    int kids_ep, kids_wake;
    pthread_t kids_thread;
    pthread_mutex_t kids_lock;
    struct r3u_kid *kids;
    _Atomic uint64_t nkids, kid_faults;
    uint8_t *kid_buf;
    /* eviction (evict.c) */
    uint64_t max_resident, budget_chunks, evict_high, evict_low, hand;
    uint64_t evict_hard;          /* faults wait at this many resident chunks */
    uint64_t rng;                 /* xorshift: where each eviction round starts */
    _Atomic uint64_t resident;    /* chunks not 0 in filled */
    _Atomic uint64_t *young;      /* per chunk: filled or written since the hand passed */
    _Atomic uint64_t *evicted;    /* per chunk: taken out; its bytes are in the source */
    void *staging, *staging_map;
    int staging_uffd;             /* staging's own userfaultfd (0 = none yet) */
    uint8_t *evict_buf;
    uint8_t *evict_copy;          /* a clean candidate's bytes before its scan */
    _Atomic uint64_t *wbusy;      /* per chunk: being written back (push or evictor) */
    pthread_t evict_thread;
    bool evict_started, evict_init;
    _Atomic bool evict_stop;
    _Atomic int evict_reported;
    _Atomic bool evict_failing;   /* the last round could not write back */
    pthread_mutex_t evict_m;
    pthread_cond_t evict_cv;
    _Atomic uint64_t evictions, evict_waits;
    _Atomic uint64_t evict_clean; /* evictions that wrote nothing (clean chunks) */
    /* stats */
    _Atomic uint64_t faults, chunks_fault, chunks_prefetch, bytes_pulled, syncs;
    _Atomic uint64_t chunks_zero, bytes_back;
    _Atomic uint64_t wait_hist[R3U_HIST];
};

/* uffd/region.c: a REMOVE event over chunks r3 itself is invalidating:
 * they are remote again, not zeros (called by the handler that read it). */
void r3u_dropped(struct r3u_region *r, uint64_t start, uint64_t end);

/* uffd/view.c: the region as a source (write installs, read copies). */
void r3u_view_init(struct r3u_region *r, uint64_t size);
/* EAGAIN from a fill ioctl: wait for the layout change, or -EAGAIN once
 * the region is closing (shared by UFFDIO_COPY and UFFDIO_ZEROPAGE). */
int  r3u_fill_backoff(struct r3u_region *r, uint64_t at, unsigned *again);
/* Install len bytes of buf at region offset off (page aligned) as one or
 * more UFFDIO_COPY; EEXIST pages are woken and skipped. 0 or -errno. */
int  r3u_install(struct r3u_region *r, uint64_t off, const void *buf, size_t len);
/* Fill the page at off with zeros unless present; *installed says if it was. */
int  r3u_install_page(struct r3u_region *r, uint64_t off, const void *page);
int  r3u_install_zero(struct r3u_region *r, uint64_t off, bool *installed);
/* Wake every thread waiting in chunk idx (after it leaves INSTALLING). */
void r3u_wake_chunk(struct r3u_region *r, uint64_t idx);

/* uffd/zero.c: chunks that hold only zeros at the source. */
int  r3u_zero_init(struct r3u_region *r);
void r3u_zero_free(struct r3u_region *r);
/* Does the source hold only zeros in chunk c (and was never written back)? */
bool r3u_zero_chunk(struct r3u_region *r, uint64_t c);
/* Chunks [c0, c1] are (about to be) written or changed at the source. */
void r3u_zero_dead(struct r3u_region *r, uint64_t c0, uint64_t c1);
/* The chunk read into buf at off was zeros without a read (remote.c);
 * view_write takes the note (same thread, same buffer) and fills with
 * zero pages. */
void r3u_zero_note(const void *buf, uint64_t off);
bool r3u_zero_taken(const void *buf, uint64_t off);
/* UFFDIO_ZEROPAGE over [off, off+len) (page aligned), like r3u_install. */
int  r3u_install_zeros(struct r3u_region *r, uint64_t off, size_t len);

/* uffd/fault.c: handler threads and events. */
int  r3u_handlers_start(struct r3u_region *r, unsigned n);
void r3u_handlers_stop(struct r3u_region *r);
/* A fill met a changing layout: read pending events if this thread is a
 * handler (else let the handlers do it), then back off briefly. */
void r3u_layout_wait(struct r3u_region *r, unsigned tries);
/* Is this thread one of r's fault handlers? (fills by handlers are faults) */
bool r3u_in_handler(struct r3u_region *r);
/* Before r3 reads the region's memory itself: every event already read
 * (an UNMAP, a REMOVE its maker has returned from) is handled, so the gone
 * and zero bits are current. */
void r3u_events_settle(struct r3u_region *r);
/* The handler serving a fault on this thread (NULL if none). */
struct r3u_handler *r3u_current(struct r3u_region *r);
/* Record the time the current fault's thread was blocked (once). */
void r3u_fault_woken(struct r3u_handler *h);
uint64_t r3u_wait_percentile(struct r3u_region *r, double pct);

/* uffd/fork.c: forked children. */
int  r3u_kids_start(struct r3u_region *r);
void r3u_kids_stop(struct r3u_region *r);
void r3u_fork_prepare(struct r3_region *rr);
void r3u_fork_done(struct r3_region *rr);
unsigned r3u_children(struct r3_region *rr);
/* A FORK message on the region's own userfaultfd (the child's fd). */
void r3u_fork_event(struct r3u_region *r, int ufd);
/* Before chunks [c0, c1] are written to the source: give each child that
 * still needs them their bytes of the fork. 0 or -errno. */
int  r3u_fork_preserve(struct r3u_region *r, uint64_t c0, uint64_t c1);
/* Read the pending messages of a child (kids thread only). */
void r3u_kid_read(struct r3u_region *r, struct r3u_kid *k);
/* Around every fill of the parent and write to the source: held off while
 * a fork is being made. */
void r3u_gate_enter(struct r3u_region *r);
void r3u_gate_leave(struct r3u_region *r);

/* uffd/evict.c: max_resident. */
uint64_t r3u_evict_min_chunks(unsigned fault_threads, unsigned readahead);
int  r3u_evict_start(struct r3u_region *r, uint64_t max_resident, unsigned nh);
void r3u_evict_stop(struct r3u_region *r);
void r3u_evict_free(struct r3u_region *r);
/* After a fill: wake the evictor if over the high-water mark. */
void r3u_evict_kick(struct r3u_region *r);
/* Before a fill by a fault: wait while the budget is full. */
void r3u_evict_wait_room(struct r3u_region *r);
/* Chunks [c0, c1]'s write-back lock (no-op without max_resident), taken
 * inside the fork gate: the push's page runs and an eviction of the same
 * chunk never cross. */
void r3u_wb_lock(struct r3u_region *r, uint64_t c0, uint64_t c1);
void r3u_wb_unlock(struct r3u_region *r, uint64_t c0, uint64_t c1);

/* Move len bytes of pages from src to dst (UFFDIO_MOVE on fd, dst's
 * userfaultfd; holes allowed; dst empty where it moves). 0 or -errno;
 * *moved gets the bytes done. */
int  r3u_move(struct r3u_region *r, int fd, uintptr_t dst, uintptr_t src, size_t len, size_t *moved);

/* uffd/drop.c: r3_region_invalidate (chunks remote again). */
int  r3u_drop(struct r3u_region *r, const uint64_t *list, size_t n);
void r3u_drop_free(struct r3u_region *r);

/* uffd/remote.c: the source under the pipeline, counting write-back. */
void r3u_remote_init(struct r3u_region *r, struct r3_source *src);
/* Write back len bytes at off (children's pre-images first, accounting);
 * the caller holds the fork gate. 0 or -errno. */
int  r3u_write_back(struct r3u_region *r, const void *buf, size_t len, uint64_t off);
/* Hand chunk c to the push stage (and count it as not yet written back);
 * every page of it goes out. */
void r3u_mark(struct r3u_region *r, struct r3_source *push, uint64_t c);
/* Only pages [pg0, pg1) of chunk c were written: the rest is not sent. */
void r3u_mark_pages(struct r3u_region *r, struct r3_source *push, uint64_t c, uint64_t pg0,
                    uint64_t pg1);
/* Chunks collected and not yet written back, and their bytes. */
uint64_t r3u_unsynced(struct r3u_region *r, uint64_t *bytes);
/* The chunks written back since the last call, ascending (malloc'd; *n). */
uint64_t *r3u_take_written(struct r3u_region *r, size_t *n);

/* uffd/track.c: the push stage's collect callback. */
int  r3u_collect(void *arg, struct r3_source *push);
/* Hash a chunk as installed (fallback tracking). */
void r3u_track_filled(struct r3u_region *r, uint64_t idx, const void *buf, size_t len);

/* uffd/access.c: access log (first-fault order) and hot-first priority. */
void r3u_access_note(struct r3u_region *r, uint64_t idx);
int  r3u_access_write(struct r3u_region *r);
int  r3u_access_load(struct r3u_region *r, const char *path);
int64_t r3u_priority(void *arg, uint64_t chunk);

/* Bitmap helpers over _Atomic uint64_t words. */
static inline bool r3u_bit(_Atomic uint64_t *m, uint64_t i)
{
    return atomic_load_explicit(&m[i >> 6], memory_order_acquire) >> (i & 63) & 1;
}
static inline void r3u_bit_set(_Atomic uint64_t *m, uint64_t i)
{
    atomic_fetch_or_explicit(&m[i >> 6], UINT64_C(1) << (i & 63), memory_order_acq_rel);
}
static inline void r3u_bit_clear(_Atomic uint64_t *m, uint64_t i)
{
    atomic_fetch_and_explicit(&m[i >> 6], ~(UINT64_C(1) << (i & 63)), memory_order_acq_rel);
}
/* Any bit set in [lo, hi)? */
static inline bool r3u_bits_any(_Atomic uint64_t *m, uint64_t lo, uint64_t hi)
{
    for (uint64_t i = lo; i < hi;) {
        if ((i & 63) == 0 && hi - i >= 64) {
            if (atomic_load_explicit(&m[i >> 6], memory_order_acquire))
                return true;
            i += 64;
        } else {
            if (r3u_bit(m, i))
                return true;
            i++;
        }
    }
    return false;
}
#endif
