/* SPDX-License-Identifier: BSD-3-Clause */
/* libr3preload.so: what r3run puts in LD_PRELOAD, kept small. Every process
 * of the program's tree loads it (a wrapper script's helpers, a pyenv shim's
 * dozens of processes), and only the one r3run started (R3_PID) serves a
 * region. That one loads the shim proper, libr3shim.so next to this file
 * (shim.c with libr3 and every source's libraries: curl, OpenSSL, hiredis,
 * FUSE...), and forwards the functions it replaces to it; every other
 * process runs on glibc and loads nothing more (loading those libraries
 * cost each process of a pyenv chain milliseconds).
 *
 * Until the shim is loaded (and in processes that never load it) the
 * malloc family goes to glibc's __libc_* entry points; a block allocated
 * then and freed later reaches the shim's free, which passes any pointer
 * outside the region to glibc. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "preload/env.h"
#include "cover.h"

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

#define EXPORT __attribute__((visibility("default")))

typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static struct {
    void *(*malloc)(size_t);
    void (*free)(void *);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void *(*reallocarray)(void *, size_t, size_t);
    int (*posix_memalign)(void **, size_t, size_t);
    void *(*aligned_alloc)(size_t, size_t);
    void *(*memalign)(size_t, size_t);
    void *(*valloc)(size_t);
    void *(*pvalloc)(size_t);
    size_t (*malloc_usable_size)(void *);
    void (*exit_)(int);
    pthread_create_fn pthread_create;
    sigaction_fn sigaction;
    sighandler_t (*signal)(int, sighandler_t);
    void *(*mremap)(void *, size_t, size_t, int, ...);
} T;
static atomic_int loaded;          /* T is complete: forward to the shim */

static inline bool shim(void)
{
    return atomic_load_explicit(&loaded, memory_order_acquire);
}

/* The next definition (glibc's), looked up once. */
static void *next(const char *name, void *_Atomic *cache)
{
    void *f = atomic_load_explicit(cache, memory_order_acquire);
    if (!f) {
        f = dlsym(RTLD_NEXT, name);
        atomic_store_explicit(cache, f, memory_order_release);
    }
    return f;
}

EXPORT void *malloc(size_t size)
{
    return shim() ? T.malloc(size) : __libc_malloc(size);
}

EXPORT void free(void *p)
{
    if (shim())
        T.free(p);
    else
        __libc_free(p);
}

EXPORT void *calloc(size_t n, size_t m)
{
    return shim() ? T.calloc(n, m) : __libc_calloc(n, m);
}

EXPORT void *realloc(void *p, size_t size)
{
    return shim() ? T.realloc(p, size) : __libc_realloc(p, size);
}

EXPORT void *reallocarray(void *p, size_t n, size_t m)
{
    if (shim())
        return T.reallocarray(p, n, m);
    size_t size;
    if (__builtin_mul_overflow(n, m, &size)) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(p, size);
}

EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
    if (shim())
        return T.posix_memalign(out, align, size);
    if (align < sizeof(void *) || (align & (align - 1)))
        return EINVAL;
    void *p = __libc_memalign(align, size);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

EXPORT void *aligned_alloc(size_t align, size_t size)
{
    if (shim())
        return T.aligned_alloc(align, size);
    if (!align || (align & (align - 1))) {
        errno = EINVAL;
        return NULL;
    }
    return __libc_memalign(align, size);
}

EXPORT void *memalign(size_t align, size_t size)
{
    return shim() ? T.memalign(align, size) : __libc_memalign(align, size);
}

EXPORT void *valloc(size_t size)
{
    return shim() ? T.valloc(size) : __libc_valloc(size);
}

EXPORT void *pvalloc(size_t size)
{
    return shim() ? T.pvalloc(size) : __libc_pvalloc(size);
}

EXPORT size_t malloc_usable_size(void *p)
{
    static void *_Atomic real;
    if (shim())
        return T.malloc_usable_size(p);
    size_t (*f)(void *) = (size_t (*)(void *))next("malloc_usable_size", &real);
    return f && p ? f(p) : 0;
}

EXPORT __attribute__((noreturn)) void _exit(int status)
{
    if (shim())
        T.exit_(status);
    r3_cover_flush();
    for (;;)
        syscall(SYS_exit_group, status);
}

EXPORT __attribute__((noreturn)) void _Exit(int status)
{
    _exit(status);
}

EXPORT int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    static void *_Atomic real;
    if (shim())
        return T.pthread_create(t, attr, fn, arg);
    pthread_create_fn f = (pthread_create_fn)next("pthread_create", &real);
    return f ? f(t, attr, fn, arg) : EAGAIN;
}

EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    static void *_Atomic real;
    if (shim())
        return T.sigaction(sig, act, old);
    sigaction_fn f = (sigaction_fn)next("sigaction", &real);
    if (!f) {
        errno = ENOSYS;
        return -1;
    }
    return f(sig, act, old);
}

EXPORT sighandler_t signal(int sig, sighandler_t h)
{
    static void *_Atomic real;
    if (shim())
        return T.signal(sig, h);
    sighandler_t (*f)(int, sighandler_t) = (sighandler_t (*)(int, sighandler_t))next("signal", &real);
    if (!f) {
        errno = ENOSYS;
        return SIG_ERR;
    }
    return f(sig, h);
}

EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
    void *new_addr = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_addr = va_arg(ap, void *);
        va_end(ap);
    }
    if (shim())
        return T.mremap(old, old_len, new_len, flags, new_addr);
    return (void *)syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
}

static __attribute__((noreturn)) void fail(const char *what, const char *why)
{
    char msg[4400];
    int n = snprintf(msg, sizeof msg, "r3run: cannot load r3's shim: %s: %s\n", what,
                     why ? why : "unknown error");
    if (write(2, msg, (size_t)(n < (int)sizeof msg ? n : (int)sizeof msg - 1)) < 0) {
        /* nothing left to tell */
    }
    for (;;)
        syscall(SYS_exit_group, R3_PRELOAD_EXIT);
}

static void *sym(void *h, const char *name)
{
    void *f = dlsym(h, name);
    if (!f)
        fail(name, dlerror());
    return f;
}

__attribute__((constructor)) static void stub_init(void)
{
    if (!getenv("R3_SOURCE"))
        return;                   /* not under r3run */
    const char *owner = getenv("R3_PID");
    if (owner && strtol(owner, NULL, 10) != getpid())
        return;                   /* a child of the program: glibc only */
    /* libr3shim.so sits next to this file (build tree and installed) */
    Dl_info di;
    char path[4096];
    if (!dladdr((void *)stub_init, &di) || !di.dli_fname)
        fail("dladdr", "cannot tell where libr3preload.so is");
    const char *slash = strrchr(di.dli_fname, '/');
    size_t dl = slash ? (size_t)(slash - di.dli_fname) + 1 : 0;
    if (dl + sizeof "libr3shim.so" > sizeof path)
        fail(di.dli_fname, "path too long");
    memcpy(path, di.dli_fname, dl);
    memcpy(path + dl, "libr3shim.so", sizeof "libr3shim.so");
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        fail(path, dlerror());
    *(void **)&T.malloc = sym(h, "malloc");
    *(void **)&T.free = sym(h, "free");
    *(void **)&T.calloc = sym(h, "calloc");
    *(void **)&T.realloc = sym(h, "realloc");
    *(void **)&T.reallocarray = sym(h, "reallocarray");
    *(void **)&T.posix_memalign = sym(h, "posix_memalign");
    *(void **)&T.aligned_alloc = sym(h, "aligned_alloc");
    *(void **)&T.memalign = sym(h, "memalign");
    *(void **)&T.valloc = sym(h, "valloc");
    *(void **)&T.pvalloc = sym(h, "pvalloc");
    *(void **)&T.malloc_usable_size = sym(h, "malloc_usable_size");
    *(void **)&T.exit_ = sym(h, "_exit");
    *(void **)&T.pthread_create = sym(h, "pthread_create");
    *(void **)&T.sigaction = sym(h, "sigaction");
    *(void **)&T.signal = sym(h, "signal");
    *(void **)&T.mremap = sym(h, "mremap");
    atomic_store_explicit(&loaded, 1, memory_order_release);
}
