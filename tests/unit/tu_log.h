/* SPDX-License-Identifier: BSD-3-Clause */
/* Lines a component reports (a server's log, a hub's or a peer's report),
 * collected from any thread and waited on with a deadline, never a sleep.
 * One log per test program. */
#ifndef R3_TU_LOG_H
#define R3_TU_LOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t tu_log_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tu_log_cv = PTHREAD_COND_INITIALIZER;
static char tu_log_buf[1 << 16];

static inline void tu_log_add(const char *line)
{
    pthread_mutex_lock(&tu_log_mu);
    size_t n = strlen(tu_log_buf);
    snprintf(tu_log_buf + n, sizeof tu_log_buf - n, "%s\n", line);
    pthread_cond_broadcast(&tu_log_cv);
    pthread_mutex_unlock(&tu_log_mu);
}

static inline void tu_log_clear(void)
{
    pthread_mutex_lock(&tu_log_mu);
    tu_log_buf[0] = 0;
    pthread_mutex_unlock(&tu_log_mu);
}

/* Wait (20 s at most, a hang guard) until s stands in the log n times;
 * the count found. */
static inline int tu_log_wait_n(const char *s, int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 20;
    pthread_mutex_lock(&tu_log_mu);
    int k;
    for (;;) {
        k = 0;
        for (const char *p = tu_log_buf; (p = strstr(p, s)); p += strlen(s))
            k++;
        if (k >= n || pthread_cond_timedwait(&tu_log_cv, &tu_log_mu, &ts) != 0)
            break;
    }
    pthread_mutex_unlock(&tu_log_mu);
    return k;
}

static inline bool tu_log_wait(const char *s)
{
    return tu_log_wait_n(s, 1) >= 1;
}

#define TU_LOG_WAIT(s) ck_assert_msg(tu_log_wait(s), "no line with '%s' in:\n%s", (s), tu_log_buf)

#endif
