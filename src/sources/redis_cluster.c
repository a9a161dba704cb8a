/* SPDX-License-Identifier: BSD-3-Clause */
/* Redis Cluster routing for the redis source (?cluster=1): CRC16 hash slots
 * with {hashtag} keys, the slot map from CLUSTER SLOTS, and MOVED/ASK
 * redirections. hiredis 0.14 has no cluster support, so this is the small
 * part of a cluster client r3 needs: single-key commands only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sources/redis.h"

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial 0, as in the cluster spec. */
static uint16_t crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned r3_redis_keyslot(const char *key, size_t len)
{
    /* Only the part between the first '{' and the next '}' is hashed, if non-empty. */
    const char *open = memchr(key, '{', len);
    if (open) {
        const char *close = memchr(open + 1, '}', len - (size_t)(open + 1 - key));
        if (close && close > open + 1)
            return crc16(open + 1, (size_t)(close - open - 1)) & (REDIS_SLOTS - 1);
    }
    return crc16(key, len) & (REDIS_SLOTS - 1);
}

unsigned r3_redis_route(struct redis_source *r, const char *key, size_t len)
{
    return r->cluster ? r->slot[r3_redis_keyslot(key, len)] : 0;
}

int r3_redis_redirect(struct redis_source *r, const char *err, unsigned *slot, unsigned *node)
{
    int kind;
    if (strncmp(err, "MOVED ", 6) == 0)
        kind = 1;
    else if (strncmp(err, "ASK ", 4) == 0)
        kind = 2;
    else
        return 0;
    char host[256];
    unsigned s;
    int port, n = 0;
    const char *rest = strchr(err, ' ') + 1;
    /* "3999 127.0.0.1:6381"; the host may be an IPv6 address, so split at the last ':' */
    if (sscanf(rest, "%u %255s%n", &s, host, &n) != 2 || s >= REDIS_SLOTS)
        return r3_error(-EIO, "%s: bad redirection '%s'", r->name, err);
    char *colon = strrchr(host, ':');
    if (!colon || (port = atoi(colon + 1)) <= 0 || port > 65535)
        return r3_error(-EIO, "%s: bad redirection '%s'", r->name, err);
    *colon = '\0';
    if (!host[0])                              /* "unknown endpoint": the node we asked */
        snprintf(host, sizeof host, "%s", r->nodes[0]->host);
    pthread_rwlock_wrlock(&r->maplock);
    int idx = r3_redis_node_index(r, host, port);
    pthread_rwlock_unlock(&r->maplock);
    if (idx < 0)
        return idx;
    *slot = s;
    *node = (unsigned)idx;
    return kind;
}

/* The bounds of a CLUSTER SLOTS reply: strings are host names and node ids;
 * at most 16384 ranges of a few nodes each. */
#define SLOTS_BULK   1024u
#define SLOTS_BUDGET (32u << 20)

/* Apply one CLUSTER SLOTS reply; 0 or -errno. from = host we asked. */
int r3_redis_apply_slots(struct redis_source *r, redisReply *rep, const char *from)
{
    if (rep->type != REDIS_REPLY_ARRAY)
        return r3_error(-EIO, "%s: CLUSTER SLOTS: unexpected reply", r->name);
    for (size_t i = 0; i < rep->elements; i++) {
        redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER || e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2 ||
            e->element[2]->element[0]->type != REDIS_REPLY_STRING ||
            e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
            return r3_error(-EIO, "%s: CLUSTER SLOTS: malformed entry %zu", r->name, i);
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        const char *host = e->element[2]->element[0]->str;
        long long port = e->element[2]->element[1]->integer;
        if (lo < 0 || hi < lo || hi >= REDIS_SLOTS || port <= 0 || port > 65535)
            return r3_error(-EIO, "%s: CLUSTER SLOTS: bad range %lld-%lld", r->name, lo, hi);
        if (!host[0] || strcmp(host, "?") == 0)
            host = from;
        int idx = r3_redis_node_index(r, host, (int)port);
        if (idx < 0)
            return idx;
        for (long long s = lo; s <= hi; s++)
            r->slot[s] = (uint16_t)idx;
    }
    return 0;
}

int r3_redis_refresh(struct redis_source *r)
{
    int rc = -EIO;
    pthread_rwlock_rdlock(&r->maplock);
    unsigned n = r->nnodes;
    pthread_rwlock_unlock(&r->maplock);
    for (unsigned i = 0; i < n; i++) {
        pthread_rwlock_rdlock(&r->maplock);
        struct redis_node *node = r->nodes[i];
        pthread_rwlock_unlock(&r->maplock);
        redisContext *c;
        rc = r3_redis_node_get(r, node, &c);
        if (rc == -EACCES)
            return rc;
        if (rc < 0)
            continue;                            /* try the next known node */
        redisReply *rep = NULL;
        bool lying = false;
        rc = redisAppendCommand(c, "CLUSTER SLOTS") == REDIS_OK
                 ? r3_redis_reply(r, node, c, SLOTS_BULK, SLOTS_BUDGET, &rep, &lying)
                 : r3_redis_conn_fail(r, node, c, "CLUSTER SLOTS");
        if (rc < 0) {
            r3_redis_node_put(node, c, true);
            if (lying)
                return rc;                       /* a node that lies is not asked again */
            continue;
        }
        r3_redis_node_put(node, c, false);
        if (rep->type == REDIS_REPLY_ERROR) {
            rc = r3_error(-EINVAL, "redis %s:%d: cluster=1 but the server is not a cluster node: %s",
                          node->host, node->port, rep->str);
            freeReplyObject(rep);
            return rc;
        }
        pthread_rwlock_wrlock(&r->maplock);
        rc = r3_redis_apply_slots(r, rep, node->host);
        if (rc == 0)
            r->map_gen++;
        pthread_rwlock_unlock(&r->maplock);
        freeReplyObject(rep);
        if (rc == 0)
            return 0;
    }
    return rc;
}
