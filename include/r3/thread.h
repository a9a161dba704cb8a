/* SPDX-License-Identifier: BSD-3-Clause */
/* Threads that r3 itself runs (fault handlers, pull/push workers, servers).
 * Inside a program run by r3run, such threads must never allocate from or
 * touch the region they serve: the preload shim asks r3_thread_is_internal()
 * and sends their allocations to glibc. Every r3 thread is started with
 * r3_thread_create (or calls r3_thread_mark_internal first thing). */
#ifndef R3_THREAD_H
#define R3_THREAD_H

#include <pthread.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* pthread_create, with the new thread marked internal before fn runs.
 * Signals are blocked in the new thread. 0 or -errno. */
int  r3_thread_create(pthread_t *t, void *(*fn)(void *), void *arg);
void r3_thread_mark_internal(void);
bool r3_thread_is_internal(void);

#ifdef __cplusplus
}
#endif
#endif
