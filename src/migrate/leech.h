/* SPDX-License-Identifier: BSD-3-Clause */
/* The leecher's engine (internal), shared by the region leecher
 * (r3_leech_*, leech.c) and the source leecher (r3_leech_source_*,
 * leech_source.c): the connection to the seeder, the pull queue and its
 * threads, FINALIZE and RELEASE. */
#ifndef R3_MIGRATE_LEECH_H
#define R3_MIGRATE_LEECH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include "r3/migrate.h"

struct r3_leech {
    struct r3_region *r;              /* NULL: a source leecher */
    struct r3_source *remote;         /* the r3:// client */
    struct r3_source *data;           /* remote, or a delay stage over it */
    struct r3_source *own;            /* a cache over data whose local side is opts.local,
                                         or NULL (a uffd region in memory reads data itself) */
    struct r3_source *cache;          /* where the pull threads make chunks local */
    bool owns;                        /* own (else data) is closed with the leecher */
    struct r3_leech_opts o;
    uint64_t session, nchunks;
    uint32_t chunk;
    size_t run;                       /* chunks per pull request before FINALIZE (1: one by one) */
    uint64_t *byprio;                 /* chunks in pull order */
    pthread_mutex_t mu;
    pthread_cond_t work, changed;
    uint64_t *queue;                  /* under mu */
    size_t qlen, qpos, ovw_left;
    unsigned active;
    bool paused, stop;
    pthread_t *workers;
    unsigned nworkers;
    _Atomic uint64_t *stale;          /* local but changed at the seeder, not copied over yet */
    int phase, err;
    char msg[256];
    uint64_t ndirty, finalize_ns;
};

/* Check o (NULL: defaults), connect, HELLO, TRACK, fetch the access order
 * and plan the pull; the caller then sets cache (r3m_leech_own, or a
 * region's) and starts. */
int  r3m_leech_connect(const char *uri, const struct r3_leech_opts *o, struct r3_leech **out);
/* l->own: a cache over l->data with opts.local as its local side. */
int  r3m_leech_own(struct r3_leech *l);
int  r3m_leech_start(struct r3_leech *l);
/* Until the queue is empty and no pull runs (or an error). */
int  r3m_leech_drain(struct r3_leech *l);
int  r3m_leech_finalize(struct r3_leech *l);
int  r3m_leech_wait(struct r3_leech *l);
void r3m_leech_progress(struct r3_leech *l, struct r3_leech_progress *p);
int  r3m_leech_missing(struct r3_leech *l, uint64_t **chunks, size_t *n);
/* Stop the pull threads and free (closes own or data if still owned). */
void r3m_leech_free(struct r3_leech *l);

#endif
