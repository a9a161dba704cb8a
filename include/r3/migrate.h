/* SPDX-License-Identifier: BSD-3-Clause */
/* Migration: hand a live region to another host (the study's Seed / Leech /
 * Finalize), on the r3 protocol and the one network layer.
 *
 * Host A (seeder) keeps using its region while host B (leecher) pulls it in
 * the background; A pauses only for the last step:
 *
 *   A: r3_seed_open(region, &so, &seeder)      serve the region on so.listen
 *   B: r3_leech_open("r3://A:PORT/", &lo, &r)  connect, TRACK, pull (hot first)
 *   B: r3_leech_finalize(r)                    A's before_finalize pauses A's
 *                                              writers; A answers the chunks
 *                                              written since TRACK; B re-pulls
 *                                              those it held; r is usable
 *   B: r3_leech_wait(r)                        every chunk local, then RELEASE
 *   A: r3_seed_wait(seeder, ms); r3_seed_close(seeder)
 *
 * Downtime = A paused -> B's region usable. Chunks B had not pulled at
 * finalize come on demand (post-copy) and from the background pull.
 *
 * Failures: a seeder that dies before FINALIZE makes r3_leech_finalize fail
 * within the URI's timeout= with a sentence (A is untouched); a leecher that
 * dies costs A nothing (tracking stops when its connections are gone); a
 * seeder that dies after FINALIZE makes r3_leech_wait fail naming the
 * chunks still missing, and a fault on one of them is SIGBUS, never zeros.
 *
 * Strategies: the seeder needs a region that can be read without filling
 * and tracked (every strategy: uffd and filesync find writes with
 * PAGEMAP_SCAN, filesync without it compares blocks with the hash of what
 * it served, nbd-managed with its push stage, nbd-direct with its
 * pass-through; the nbd ones msync the mapping first). Only uffd has an
 * access order to send; the others are pulled in ascending order.
 * r3_seed_source_open serves any source, so r3mount --seed any mount.
 * The leecher's region is any strategy: uffd in memory reads the seeder
 * itself (copy-on-write); otherwise the region is opened over a cache of
 * the seeder whose local side is opts.local (nbd-managed serves it,
 * filesync copies it once the pull is done, uffd fills from it and writes
 * back to it on sync). */
#ifndef R3_MIGRATE_H
#define R3_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <r3/region.h>
#include <r3/source.h>

#ifdef __cplusplus
extern "C" {
#endif

#define R3_MIGRATE_VERSION 2     /* of the migration methods; checked on connect */

struct r3_seeder;

struct r3_seed_opts {
    uint32_t struct_size;        /* set by r3_seed_opts_init */
    const char *listen;          /* HOST:PORT (port 0: any free one) or unix:PATH */
    const char *tls_cert, *tls_key;  /* TLS (both or neither), as r3serve --tls-cert/--tls-key */
    const char *tls_ca;          /* require client certificates signed by this CA (mTLS) */
    bool insecure;               /* allow a non-loopback listen without TLS */
    unsigned timeout_ms;         /* a silent leecher connection is dropped after this (0 = 30 s) */
    bool sync;                   /* FINALIZE also syncs the region (A's source up to date at the
                                    pause; its write-back is then part of the downtime) */
    /* Pause the program's writers (return 0) before the dirty list is taken;
     * a negative return refuses the FINALIZE (the leecher gets the error).
     * Runs on a server thread. Required. */
    int  (*before_finalize)(void *arg, struct r3_region *r);
    /* Optional: after TRACK started (writes from now on are tracked), after
     * the dirty list was taken (n chunks), and at RELEASE. */
    void (*after_track)(void *arg, struct r3_region *r);
    void (*after_finalize)(void *arg, struct r3_region *r, const uint64_t *dirty, size_t n);
    void (*on_release)(void *arg, struct r3_region *r);
    void *arg;
    /* One line per leecher connection when it goes (as r3serve logs); NULL: silent. */
    void (*log)(void *arg, const char *line);
};

void r3_seed_opts_init(struct r3_seed_opts *o);
/* Serve region r (borrowed: close it after r3_seed_close) read-only on
 * o->listen. 0 or -errno; r3_last_error() says why. */
int  r3_seed_open(struct r3_region *r, const struct r3_seed_opts *o, struct r3_seeder **out);
/* The address listened on ("127.0.0.1:40123", "unix:/run/x.sock"). */
const char *r3_seed_address(struct r3_seeder *s, char *buf, size_t n);
/* Wait until a leecher sent RELEASE (0), or timeout_ms passed (-ETIMEDOUT;
 * 0 = forever). */
int  r3_seed_wait(struct r3_seeder *s, uint64_t timeout_ms);
/* Whether FINALIZE was answered (A must not write any more). */
bool r3_seed_finalized(struct r3_seeder *s);
/* A is going away (unmount, SIGTERM) while FINALIZE was answered but no
 * RELEASE came (the leecher died, or is still pulling): the writes held
 * since the pause fail with EIO from now on, never reaching A's source,
 * which keeps the bytes of the pause (what B was given). Before FINALIZE,
 * or for a region seeder (its writers are the program's, paused by
 * before_finalize), it does nothing. */
void r3_seed_halt_writes(struct r3_seeder *s);
/* Stop serving and stop tracking. The region stays open. */
void r3_seed_close(struct r3_seeder *s);

enum r3_leech_phase {
    R3_LEECH_PULLING = 0,        /* background pull before FINALIZE */
    R3_LEECH_FINALIZING = 1,     /* asked for FINALIZE, re-pulling what changed */
    R3_LEECH_POSTCOPY = 2,       /* usable; the rest is pulled in the background */
    R3_LEECH_DONE = 3,           /* every chunk local, RELEASE sent */
    R3_LEECH_FAILED = 4,         /* see r3_leech_progress's error */
};

struct r3_leech_opts {
    uint32_t struct_size;        /* set by r3_leech_opts_init */
    const char *strategy;        /* NULL ("uffd"), "nbd-managed", "filesync", ... */
    const char *local;           /* the local copy: NULL or "mem:" (uffd: the region's memory;
                                    others: a mem: cache), or a writable source URI at least as
                                    large, e.g. file:///path or dir:///path (?size= is added) */
    unsigned pull_workers;       /* background pull threads (0 = 8) */
    unsigned fault_threads;      /* uffd handler threads (0 = 2) */
    /* Pull order: lowest first; NULL = the seeder's access order, then ascending. */
    int64_t (*priority)(void *arg, uint64_t chunk);
    /* Optional: a chunk became local (from a pull thread). */
    void (*on_chunk_local)(void *arg, uint64_t chunk);
    void *arg;
    /* Latency added to every request to the seeder, in microseconds: the
     * study's RTT injection, for benchmarks (0 = none). */
    uint64_t delay_us;
    /* Told what the library cannot return (a fault it could not fill). */
    void (*on_error)(void *arg, struct r3_region *r, int err, const char *msg);
};

struct r3_leech_progress {
    uint64_t chunks_total, chunks_local;   /* local: pulled and current */
    uint64_t bytes_local;
    uint64_t chunks_dirty;                 /* in the seeder's FINALIZE answer */
    int phase;                             /* enum r3_leech_phase */
    uint64_t finalize_ns;                  /* r3_leech_finalize's call -> usable */
    int error;                             /* first error (0 if none) */
    char message[256];                     /* its sentence */
};

void r3_leech_opts_init(struct r3_leech_opts *o);
/* Connect to the seeder at uri (r3://, r3s:// with ?ca=&cert=&key=, or
 * r3+unix://; its timeout= bounds every call), check the version, TRACK,
 * open the region and start pulling. The region must not be used before
 * r3_leech_finalize returned 0. Close it with r3_region_close. */
int  r3_leech_open(const char *uri, const struct r3_leech_opts *o, struct r3_region **out);
/* FINALIZE: the seeder pauses and answers the chunks written since TRACK;
 * those already local are pulled again before this returns. 0: the region
 * is usable (missing chunks come on demand). */
int  r3_leech_finalize(struct r3_region *r);
/* Wait until every chunk is local, then RELEASE the seeder. 0, or -errno
 * with a sentence naming the chunks still missing. */
int  r3_leech_wait(struct r3_region *r);
int  r3_leech_progress(struct r3_region *r, struct r3_leech_progress *p);
/* The chunks not local (and current) now (malloc'd, ascending). */
int  r3_leech_missing(struct r3_region *r, uint64_t **chunks, size_t *n);

/* ---- Source level (r3mount --seed / --leech): a source rather than a region.
 *
 * Seed src (borrowed; close it after r3_seed_close) in chunks of `chunk`
 * bytes (0 = 64K; src's size must be a multiple). *served is a stage over
 * src that the program must write through (the seeder's: r3_seed_close
 * closes it, so stop its users first): its writes are tracked from TRACK,
 * wait from FINALIZE on (the seeder pauses them itself; before_finalize is
 * optional and gets r == NULL, as the other hooks) and fail with EIO after
 * RELEASE. Reads are served from src. */
int  r3_seed_source_open(struct r3_source *src, uint32_t chunk, const struct r3_seed_opts *o,
                         struct r3_source **served, struct r3_seeder **out);

struct r3_leech_source;
/* Leech the seeder at uri into a source: *src is a cache whose remote is
 * the seeder and whose local side is o->local (NULL or "mem:", or any
 * writable source URI at least as large, e.g. file:///path or
 * dir:///path, which get ?size= of the seeder when they have none). Pulling starts at once; *src
 * must not be used before r3_leech_source_finalize returned 0. Only
 * o->local, pull_workers, delay_us, on_chunk_local and arg are used. */
int  r3_leech_source_open(const char *uri, const struct r3_leech_opts *o, struct r3_leech_source **out,
                          struct r3_source **src);
/* FINALIZE: the seeder pauses its writers and answers the chunks written
 * since TRACK; those already local become remote again. 0: usable. */
int  r3_leech_source_finalize(struct r3_leech_source *l);
/* Every chunk local, then RELEASE. 0 or -errno with a sentence. */
int  r3_leech_source_wait(struct r3_leech_source *l);
int  r3_leech_source_progress(struct r3_leech_source *l, struct r3_leech_progress *p);
/* Stop pulling and close *src. */
void r3_leech_source_close(struct r3_leech_source *l);

#ifdef __cplusplus
}
#endif
#endif
