/* SPDX-License-Identifier: BSD-3-Clause */
/* r3's own threads carry a thread-local mark so that the preload shim never
 * hands them memory from the region they serve (a fault handler faulting on
 * its own region would wait for itself forever). */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <r3/thread.h>
#include <r3/error.h>

static _Thread_local bool r3_internal;

void r3_thread_mark_internal(void)
{
    r3_internal = true;
}

bool r3_thread_is_internal(void)
{
    return r3_internal;
}

struct start { void *(*fn)(void *); void *arg; };

static void *trampoline(void *p)
{
    struct start s = *(struct start *)p;
    free(p);
    r3_internal = true;
    return s.fn(s.arg);
}

int r3_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
    /* The mark is set in this thread while allocating, so the start block
     * also comes from glibc. */
    bool was = r3_internal;
    r3_internal = true;
    struct start *s = malloc(sizeof *s);
    r3_internal = was;
    if (!s)
        return r3_error(-ENOMEM, "out of memory starting a thread");
    s->fn = fn;
    s->arg = arg;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, trampoline, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        free(s);
        return r3_error(-rc, "cannot start a thread: error %d", rc);
    }
    return 0;
}
