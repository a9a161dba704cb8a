/* SPDX-License-Identifier: BSD-3-Clause */
/* Internal to the redis source (redis.c) and its cluster routing
 * (redis_cluster.c). */
#ifndef R3_SOURCES_REDIS_H
#define R3_SOURCES_REDIS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/time.h>
#include <hiredis/hiredis.h>
#include "internal.h"

#define REDIS_SLOTS     16384
#define REDIS_MAXNODES  256      /* nodes are only added, never freed before close */

/* One server and its pool of connections (at most conns open). */
struct redis_node {
    char *host;
    int port;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    redisContext **idle;        /* capacity conns */
    unsigned nidle, nopen;
};

/* Per connection (reader->privdata): where the next top-level bulk string
 * goes. hiredis would copy it into a fresh reply object first; the sink lets
 * GET replies land in the caller's buffer with one copy. */
struct redis_sink {
    const redisReplyObjectFunctions *dflt;
    char *dst;                  /* NULL = build a normal reply */
    size_t cap, got;
    bool used, too_long;
    size_t budget;              /* bytes of reply objects the reply may still build */
    bool over;                  /* it tried to build more: refused */
};

struct redis_source {
    struct r3_source src;
    char *prefix;               /* keys are "<prefix>:<chunk index>" */
    uint32_t chunk;
    char *user, *password;      /* AUTH [user] password, NULL = none */
    unsigned db, conns;
    struct timeval timeout;     /* a command's deadline (timeout=) */
    struct timeval connect_timeout;   /* connect_timeout= */
    bool cluster;
    char name[300];             /* "redis host:port/prefix" for error sentences */

    pthread_rwlock_t maplock;   /* guards nodes[]/nnodes/slot[] */
    struct redis_node *nodes[REDIS_MAXNODES];
    unsigned nnodes;
    uint16_t slot[REDIS_SLOTS]; /* cluster: node index serving each slot */
    uint64_t map_gen;           /* bumped by every full refresh */
    redisReplyObjectFunctions dflt, fns;   /* hiredis' reply builders; ours with the sink */
};

/* redis.c */
int  r3_redis_node_get(struct redis_source *r, struct redis_node *n, redisContext **out);
void r3_redis_node_put(struct redis_node *n, redisContext *c, bool broken);
/* The error sentence (and -errno) for a broken or silent connection. */
int  r3_redis_conn_fail(const struct redis_source *r, const struct redis_node *n,
                        const redisContext *c, const char *what);
/* The next reply on c (sending what is queued first), bounded by what the
 * request can need: no bulk string longer than `bulk` bytes, no more than
 * `budget` bytes of reply objects, and timeout= for the whole reply. 0, or
 * -errno with a sentence; *lying is set when the server sent something no
 * Redis server sends for this request (final: do not retry). After an error
 * the connection is out of step: put it back broken. */
int  r3_redis_reply(struct redis_source *r, struct redis_node *n, redisContext *c, size_t bulk,
                    size_t budget, redisReply **out, bool *lying);
#define REDIS_SMALL_REPLY 65536u   /* the budget of a reply that carries no chunk */

/* redis_cluster.c */
unsigned r3_redis_keyslot(const char *key, size_t len);       /* CRC16 with {hashtag} */
/* Index of host:port in nodes[], adding it; -ENOSPC if full. Caller holds maplock for write. */
int  r3_redis_node_index(struct redis_source *r, const char *host, int port);
/* Parse "MOVED 3999 127.0.0.1:6381" / "ASK ..." into slot and node index
 * (adding the node). 1 = MOVED, 2 = ASK, 0 = not a redirection, <0 error. */
int  r3_redis_redirect(struct redis_source *r, const char *err, unsigned *slot, unsigned *node);
/* Apply one CLUSTER SLOTS reply (from = the host asked, for "" / "?" hosts);
 * caller holds maplock for write. 0 or -errno. (An entry point of its own
 * so tests/fuzz/redis_cluster.c can feed it.) */
int  r3_redis_apply_slots(struct redis_source *r, redisReply *rep, const char *from);
/* Reload the slot map with CLUSTER SLOTS from any reachable node. */
int  r3_redis_refresh(struct redis_source *r);
/* The node serving key (cluster) or node 0 (single server). */
unsigned r3_redis_route(struct redis_source *r, const char *key, size_t len);

#endif
