/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: Redis Cluster replies (src/sources/redis_cluster.c): a
 * MOVED/ASK redirection (the input's first line, as the error string
 * r3_redis_redirect gets) and a CLUSTER SLOTS reply (the rest, in RESP,
 * read by hiredis' reader) applied to the slot map. Nothing connects:
 * nodes are only recorded. Every slot must name a known node afterwards. */
#include "fuzz.h"
#include "sources/redis.h"

/* r3 reads CLUSTER SLOTS with its bounded reader (r3_redis_reply, a 32 MiB
 * budget); plain hiredis would allocate any array size a reply announces,
 * so the harness bounds arrays the same way before they reach apply. */
static redisReplyObjectFunctions fns;
static const redisReplyObjectFunctions *dflt;

#if HIREDIS_MAJOR >= 1
static void *bounded_array(const redisReadTask *t, size_t n)
#else
static void *bounded_array(const redisReadTask *t, int n)
#endif
{
    if (n > 65536)
        return NULL;
    return dflt->createArray(t, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    struct redis_source *r = calloc(1, sizeof *r);
    if (!r)
        FUZZ_DIE("out of memory");
    pthread_rwlock_init(&r->maplock, NULL);
    r->conns = 1;
    r->cluster = true;
    snprintf(r->name, sizeof r->name, "redis fuzz");
    if (r3_redis_node_index(r, "127.0.0.1", 7000) != 0)
        FUZZ_DIE("node 0");
    const uint8_t *nl = memchr(data, '\n', size);
    size_t l1 = nl ? (size_t)(nl - data) : size;
    char *line = fuzz_cstr(data, l1);
    unsigned slot = 0, node = 0;
    int k = r3_redis_redirect(r, line, &slot, &node);
    if (k > 0 && (slot >= REDIS_SLOTS || node >= r->nnodes))
        FUZZ_DIE("redirect to slot %u node %u of %u", slot, node, r->nnodes);
    free(line);
    if (nl) {
        redisReader *rd = redisReaderCreate();
        void *rep = NULL;
        if (!rd)
            FUZZ_DIE("out of memory");
        if (!dflt) {
            static redisReplyObjectFunctions copy;
            copy = *rd->fn;
            dflt = &copy;
            fns = copy;
            fns.createArray = bounded_array;
        }
        rd->fn = &fns;
        redisReaderFeed(rd, (const char *)nl + 1, size - l1 - 1);
        if (redisReaderGetReply(rd, &rep) == REDIS_OK && rep) {
            pthread_rwlock_wrlock(&r->maplock);
            r3_redis_apply_slots(r, rep, "127.0.0.1");
            for (unsigned s = 0; s < REDIS_SLOTS; s++)
                if (r->slot[s] >= r->nnodes)
                    FUZZ_DIE("slot %u names node %u of %u", s, r->slot[s], r->nnodes);
            pthread_rwlock_unlock(&r->maplock);
            freeReplyObject(rep);
        }
        redisReaderFree(rd);
    }
    for (unsigned i = 0; i < r->nnodes; i++) {
        struct redis_node *n = r->nodes[i];
        pthread_mutex_destroy(&n->lock);
        pthread_cond_destroy(&n->cv);
        free(n->idle);
        free(n->host);
        free(n);
    }
    pthread_rwlock_destroy(&r->maplock);
    free(r);
    return 0;
}
