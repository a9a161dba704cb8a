/* SPDX-License-Identifier: BSD-3-Clause */
/* A byte budget: readers take bytes before allocating a request or reply
 * buffer and give them back when it is freed, so a server's memory in
 * flight is bounded whatever its clients send. Taking waits (never fails)
 * while the budget is in use; a per-holder share keeps one connection from
 * taking all of it. */
#include <errno.h>
#include "internal.h"
#include "net/net.h"

void r3_net_budget_init(struct r3_net_budget *b, size_t limit)
{
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->limit = limit;
    b->used = 0;
}

void r3_net_budget_destroy(struct r3_net_budget *b)
{
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
}

int r3_net_budget_take(struct r3_net_budget *b, size_t bytes, size_t *mine, size_t share,
                       const bool *stop)
{
    if (bytes > b->limit || (mine && bytes > share))
        return r3_error(-EMSGSIZE, "a request of %zu bytes is larger than the in-flight budget (%zu bytes)",
                        bytes, mine && share < b->limit ? share : b->limit);
    pthread_mutex_lock(&b->mu);
    while (!(stop && *stop) &&
           (b->used + bytes > b->limit || (mine && *mine + bytes > share)))
        pthread_cond_wait(&b->cv, &b->mu);
    int rc = 0;
    if (stop && *stop) {
        rc = r3_error(-ESHUTDOWN, "the connection is closing");
    } else {
        b->used += bytes;
        if (mine)
            *mine += bytes;
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void r3_net_budget_give(struct r3_net_budget *b, size_t bytes, size_t *mine)
{
    pthread_mutex_lock(&b->mu);
    b->used -= bytes < b->used ? bytes : b->used;
    if (mine)
        *mine -= bytes < *mine ? bytes : *mine;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void r3_net_budget_wake(struct r3_net_budget *b)
{
    pthread_mutex_lock(&b->mu);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}
