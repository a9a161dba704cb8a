/* SPDX-License-Identifier: BSD-3-Clause */
/* A process where no new thread can start: the default stack of new
 * threads is made larger than the address space, so pthread_create fails
 * (EAGAIN) as it does when a machine runs out of memory or threads. No
 * mock: the code under test meets the real failure. */
#ifndef R3_TU_THREADS_H
#define R3_TU_THREADS_H

#include <check.h>
#include <pthread.h>

/* From now on new threads fail to start; *old keeps the default to restore. */
static inline void tu_threads_refuse(pthread_attr_t *old)
{
    pthread_attr_t a;
    ck_assert_int_eq(pthread_getattr_default_np(old), 0);
    ck_assert_int_eq(pthread_attr_init(&a), 0);
    ck_assert_int_eq(pthread_attr_setstacksize(&a, (size_t)1 << 46), 0);
    ck_assert_int_eq(pthread_setattr_default_np(&a), 0);
    pthread_attr_destroy(&a);
}

/* Threads start again. */
static inline void tu_threads_restore(pthread_attr_t *old)
{
    ck_assert_int_eq(pthread_setattr_default_np(old), 0);
    pthread_attr_destroy(old);
}

#endif
