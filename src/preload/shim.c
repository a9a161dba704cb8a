/* SPDX-License-Identifier: BSD-3-Clause */
/* libr3preload.so: the LD_PRELOAD shim r3run puts in front of a program.
 * Allocations of at least R3_MIN_ALLOC bytes come from a region opened from
 * R3_SOURCE with R3_STRATEGY; smaller ones, r3's own threads and anything
 * allocated while the shim opens the region go to glibc through its exported
 * __libc_* entry points (so no dlsym bootstrapping is needed). free, realloc
 * and malloc_usable_size route by address.
 *
 * Only the process r3run started serves the region (R3_PID): a child that
 * execs inherits LD_PRELOAD but passes everything to glibc, and a forked
 * child stops placing new blocks in the region, so no two processes ever
 * open one source. The region is opened lazily, at the first allocation
 * that goes there: a chain of wrapper scripts that exec each other (same
 * pid) opens nothing until the real program allocates. At exit, and when
 * the program is ended by SIGTERM, SIGINT, SIGHUP or SIGQUIT while that
 * signal's handler is the default one, the region is synced (and stats
 * printed); the signal then ends the process as it would have.
 *
 * This file is the one place in r3 with global mutable state: a malloc
 * replacement has nowhere else to keep it. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "internal.h"
#include "cover.h"
#include "preload/palloc.h"
#include "preload/env.h"

#define EXPORT __attribute__((visibility("default")))

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void  __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

static struct {
    atomic_int active;            /* new blocks may go to the region */
    atomic_int armed;             /* this process may open the region (lazily) */
    uintptr_t lo;                 /* region range: set before active, kept after */
    size_t len;
    size_t min_alloc;
    pid_t pid;                    /* the process that opened the region */
    struct r3_palloc pa;
    struct r3_region *region;
    struct r3_preload_env env;
    atomic_ulong fallbacks;       /* region full: glibc served a large block */
    size_t (*libc_usable)(void *);
    int errfd;                    /* our own stderr: programs close theirs at exit */
    bool scratch;                 /* the source is r3run's default image, already unlinked */
    /* exits by signal: which of the terminating signals carry our handler,
     * and the thread that syncs for it (a handler must not: it may have
     * interrupted a thread inside malloc or holding a lock the sync needs) */
    atomic_int ours[NSIG];
    int sig_req[2], sig_done[2];
} S;

static int lazy_open(void);

/* Set while this thread is inside the shim's own setup or teardown. */
static __thread int busy __attribute__((tls_model("initial-exec")));

static inline bool in_region(const void *p)
{
    return (uintptr_t)p - S.lo < S.len;
}

static inline bool want_region(size_t size)
{
    if (size < S.min_alloc || busy || r3_thread_is_internal())
        return false;
    if (atomic_load_explicit(&S.active, memory_order_acquire))
        return true;
    return atomic_load_explicit(&S.armed, memory_order_acquire) && lazy_open() == 0;
}

static void *region_alloc(size_t size, size_t align)
{
    void *p = r3_palloc_alloc(&S.pa, size, align);
    if (!p)
        atomic_fetch_add_explicit(&S.fallbacks, 1, memory_order_relaxed);
    return p;
}

static void bad_pointer(const char *fn, const void *p)
{
    char msg[128];
    int n = snprintf(msg, sizeof msg, "r3 preload: %s(): invalid pointer %p in the region\n",
                     fn, p);
    if (write(2, msg, (size_t)n) < 0) { /* nothing left to tell */ }
    abort();
}

EXPORT void *malloc(size_t size)
{
    if (want_region(size)) {
        void *p = region_alloc(size, 0);
        if (p)
            return p;
    }
    return __libc_malloc(size);
}

EXPORT void free(void *p)
{
    if (!p)
        return;
    if (in_region(p)) {
        if (!r3_palloc_usable(&S.pa, p))
            bad_pointer("free", p);
        r3_palloc_free(&S.pa, p);
        return;
    }
    __libc_free(p);
}

EXPORT void *calloc(size_t n, size_t m)
{
    size_t size;
    if (__builtin_mul_overflow(n, m, &size)) {
        errno = ENOMEM;
        return NULL;
    }
    if (want_region(size)) {
        /* Region pages hold whatever the source or an earlier block left.
         * On r3run's own sparse image, pages never handed out still read as
         * its zeros: only the part handed out before is cleared, so a fresh
         * block's chunks are not written (nor written back). */
        size_t used;
        void *p = r3_palloc_alloc_fresh(&S.pa, size, 0, &used);
        if (p)
            return memset(p, 0, S.scratch && used < size ? used : size);
        atomic_fetch_add_explicit(&S.fallbacks, 1, memory_order_relaxed);
    }
    return __libc_calloc(n, m);
}

static size_t usable(void *p)
{
    if (in_region(p))
        return r3_palloc_usable(&S.pa, p);
    return S.libc_usable ? S.libc_usable(p) : 0;
}

EXPORT void *realloc(void *p, size_t size)
{
    if (!p)
        return malloc(size);
    if (!in_region(p)) {
        if (want_region(size)) {
            void *q = region_alloc(size, 0);
            if (q) {
                size_t old = usable(p);
                memcpy(q, p, old < size ? old : size);
                __libc_free(p);
                return q;
            }
        }
        return __libc_realloc(p, size);
    }
    size_t old = r3_palloc_usable(&S.pa, p);
    if (!old)
        bad_pointer("realloc", p);
    if (size == 0) {              /* glibc frees and returns NULL */
        r3_palloc_free(&S.pa, p);
        return NULL;
    }
    if (want_region(size) && r3_palloc_resize(&S.pa, p, size))
        return p;
    void *q = want_region(size) ? region_alloc(size, 0) : NULL;
    if (!q)
        q = __libc_malloc(size);
    if (!q)
        return NULL;              /* p stays valid, as realloc promises */
    memcpy(q, p, old < size ? old : size);
    r3_palloc_free(&S.pa, p);
    return q;
}

EXPORT void *reallocarray(void *p, size_t n, size_t m)
{
    size_t size;
    if (__builtin_mul_overflow(n, m, &size)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, size);
}

static void *aligned(size_t align, size_t size)
{
    if (want_region(size)) {
        void *p = region_alloc(size, align);
        if (p)
            return p;
    }
    return __libc_memalign(align, size);
}

EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
    if (align < sizeof(void *) || (align & (align - 1)))
        return EINVAL;
    void *p = aligned(align, size);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

EXPORT void *aligned_alloc(size_t align, size_t size)
{
    if (!align || (align & (align - 1))) {
        errno = EINVAL;
        return NULL;
    }
    return aligned(align, size);
}

EXPORT void *memalign(size_t align, size_t size)
{
    if (align & (align - 1)) {    /* glibc rounds up to a power of two */
        size_t a = 1;
        while (a < align && a)
            a <<= 1;
        if (!a) {
            errno = EINVAL;
            return NULL;
        }
        align = a;
    }
    return aligned(align, size);
}

EXPORT void *valloc(size_t size)
{
    if (want_region(size)) {
        void *p = region_alloc(size, 0);
        if (p)
            return p;
    }
    return __libc_valloc(size);
}

EXPORT void *pvalloc(size_t size)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t r = size ? (size + pg - 1) & ~(pg - 1) : pg;
    if (r < size) {
        errno = ENOMEM;
        return NULL;
    }
    if (want_region(r)) {
        void *p = region_alloc(r, 0);
        if (p)
            return p;
    }
    return __libc_pvalloc(size);
}

EXPORT size_t malloc_usable_size(void *p)
{
    return p ? usable(p) : 0;
}

/* mremap of region memory is refused with EINVAL (r3run(1) says so): the
 * pages would leave the range r3 fills, tracks and writes back. Elsewhere
 * it is the kernel's. */
EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
    void *new_addr = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_addr = va_arg(ap, void *);
        va_end(ap);
    }
    uintptr_t o = (uintptr_t)old, n = (uintptr_t)new_addr;
    if (S.len && ((o < S.lo + S.len && o + old_len > S.lo) ||
                  ((flags & MREMAP_FIXED) && n < S.lo + S.len && n + new_len > S.lo))) {
        errno = EINVAL;
        return MAP_FAILED;
    }
    long r = syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
    return (void *)r;
}

/* ---- threads started by r3's threads (a FUSE or NBD server's workers, a
 * library's helper threads) or while the shim opens the region are r3's
 * too: they serve the region, so they must never allocate from it. */
struct start { void *(*fn)(void *); void *arg; };

static void *internal_start(void *p)
{
    struct start s = *(struct start *)p;
    __libc_free(p);
    r3_thread_mark_internal();
    /* The terminating signals are the program's threads' to take: an r3
     * thread running the sync-on-signal handler could wait for itself. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    return s.fn(s.arg);
}

EXPORT int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    if (!real) {
        busy++;
        real = (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))
            dlsym(RTLD_NEXT, "pthread_create");
        busy--;
        if (!real)
            return EAGAIN;
    }
    if (!busy && !r3_thread_is_internal())
        return real(t, attr, fn, arg);
    struct start *s = __libc_malloc(sizeof *s);
    if (!s)
        return EAGAIN;
    s->fn = fn;
    s->arg = arg;
    int rc = real(t, attr, internal_start, s);
    if (rc)
        __libc_free(s);
    return rc;
}

/* ---- fork: the allocator's lock is held across it (so forks are one at a
 * time), and the region is told (uffd: no fill lands in the parent while
 * the child's copy of the page tables is made, so r3 knows exactly what the
 * child got). The child keeps the region's memory as it was at the fork
 * (copy-on-write; what it had not filled is served by the parent's r3
 * threads), places no new blocks there and never syncs. */
static void at_prepare(void)
{
    if (S.len) {
        r3_palloc_lock(&S.pa);
        if (atomic_load(&S.active))
            r3_region_fork_prepare(S.region);
    }
}

static void at_parent(void)
{
    if (S.len) {
        if (atomic_load(&S.active))
            r3_region_fork_done(S.region);
        r3_palloc_unlock(&S.pa);
    }
}

static void at_child(void)
{
    atomic_store(&S.armed, 0);
    if (!S.len)
        return;
    r3_palloc_unlock(&S.pa);
    atomic_store(&S.active, 0);
    /* A strategy whose mapping is not inherited (MADV_DONTFORK) leaves the
     * range empty in the child, and glibc's next mmap could land in it,
     * which free() would then route to the region. Reserve it (touching a
     * region block there faults, as without the shim); an inherited
     * mapping stays (NOREPLACE fails). */
    mmap((void *)S.lo, S.len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
         MAP_FIXED_NOREPLACE, -1, 0);
}

/* A message on the stderr the program started with (even if it closed fd 2). */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    char b[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof b - 1)
        n = (int)sizeof b - 1;
    if (n > 0 && write(S.errfd >= 0 ? S.errfd : 2, b, (size_t)n) < 0) { /* nowhere to tell */ }
}

static double mib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0);
}

static void print_stats(const struct r3_region_stats *st)
{
    char b1[32], b2[32];
    say("r3run: %s region of %s on %s, chunk %s, min-alloc %zu\n",
            S.env.strategy, r3_fmt_size(S.len, b1, sizeof b1), S.env.source,
            r3_fmt_size(S.region->chunk, b2, sizeof b2), S.min_alloc);
    say("r3run: faults %llu, chunks filled by fault %llu, by prefetch %llu, "
            "pulled %.1f MiB\n", (unsigned long long)st->faults,
            (unsigned long long)st->chunks_fault, (unsigned long long)st->chunks_prefetch,
            mib(st->bytes_pulled));
    if (st->chunks_zero)
        say("r3run: chunks of zeros mapped without a read %llu\n",
            (unsigned long long)st->chunks_zero);
    if (S.env.max_resident)
        say("r3run: max-resident %.1f MiB: chunks evicted %llu\n", mib(S.env.max_resident),
            (unsigned long long)st->chunks_evicted);
    say("r3run: chunks pushed %llu (%.1f MiB), syncs %llu, "
            "fault wait p50 %.1f us, p99 %.1f us\n", (unsigned long long)st->chunks_pushed,
            mib(st->bytes_pushed), (unsigned long long)st->syncs,
            (double)st->fault_wait_p50_ns / 1e3, (double)st->fault_wait_p99_ns / 1e3);
    /* trylock: a signal may have stopped a thread holding it */
    bool locked = pthread_mutex_trylock(&S.pa.lock) == 0;
    unsigned long long na = S.pa.nalloc, in_use = S.pa.in_use, peak = S.pa.peak;
    if (locked)
        r3_palloc_unlock(&S.pa);
    say("r3run: blocks placed in the region %llu (peak %.1f MiB, %.1f MiB at exit), "
            "large blocks left to glibc because the region was full %lu\n", na, mib(peak),
            mib(in_use), atomic_load(&S.fallbacks));
}

/* Sync (and report) once, from exit() or _exit(), in the owning process. */
static int shim_final(void)
{
    static atomic_int done;
    if (!atomic_load(&S.active) || getpid() != S.pid || atomic_exchange(&done, 1))
        return 0;
    busy = 1;
    bool close_it = S.env.record_access || strcmp(S.env.strategy, "uffd") != 0;
    /* The default image is unlinked and this process is its last user:
     * after exit nobody can read it, so its final write-back would move
     * bytes nobody reads (--keep-image keeps it, and the write-back).
     * Forked children still running need the sync (below). */
    bool skip = S.scratch && !close_it && r3_region_children(S.region) == 0;
    int rc = skip ? 0 : r3_region_sync(S.region);
    if (rc < 0)
        say("r3run: the final sync of the region failed: %s\n", r3_last_error());
    if (skip && S.env.stats)
        say("r3run: no final write-back: the default image is removed at exit\n");
    if (S.env.stats) {
        struct r3_region_stats st;
        if (r3_region_stats(S.region, &st) == 0)
            print_stats(&st);
    }
    /* uffd: the kernel reclaims everything, and a late destructor or thread
     * may still read its blocks after us, so close only when the access log
     * (written at close) is wanted. Strategies that serve their mapping
     * from threads of this process (a FUSE/NBD mount) must be torn down
     * here: exit would otherwise wait for their dead server forever. */
    /* Forked children still running: closing hands them what they still
     * lack (after this process, their missing pages would read zeros). */
    if (rc == 0 && !close_it && r3_region_children(S.region) > 0)
        close_it = true;
    if (rc == 0 && close_it) {
        void *base = S.region->base;
        size_t len = S.region->len;
        atomic_store(&S.active, 0);
        rc = r3_region_close(S.region);
        if (rc < 0)
            say("r3run: closing the region failed: %s\n", r3_last_error());
        /* Keep the range mapped so a late access reads zeros, not SIGSEGV. */
        mmap(base, len, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    }
    busy = 0;
    return rc;
}

static void shim_exit(void)
{
    if (shim_final() < 0) {
        fflush(NULL);
        r3_cover_flush();
        syscall(SYS_exit_group, R3_PRELOAD_EXIT);
    }
}

/* Programs that leave with _exit (dash, many servers) skip atexit: sync here
 * too. A forked child's _exit is not ours (pid check in shim_final). */
EXPORT __attribute__((noreturn)) void _exit(int status)
{
    if (shim_final() < 0)
        status = R3_PRELOAD_EXIT;
    r3_cover_flush();
    for (;;)
        syscall(SYS_exit_group, status);
}

EXPORT __attribute__((noreturn)) void _Exit(int status)
{
    _exit(status);
}

static void fail(const char *what)
{
    say("r3run: %s: %s\n", what, r3_last_error());
    fflush(stderr);
    _exit(R3_PRELOAD_EXIT);
}

/* The library prints nothing: what it cannot return, the shim says. */
static void on_region_error(void *arg, struct r3_region *r, int err, const char *msg)
{
    (void)arg, (void)r, (void)err;
    say("r3run: %s\n", msg);
}

/* A long step of the open (filesync's pre-copy): said on stderr, since the
 * program seems to hang otherwise. */
static void on_region_progress(void *arg, struct r3_region *r, const char *what, uint64_t done,
                               uint64_t total)
{
    (void)arg, (void)r;
    char d[32], t[32];
    r3_fmt_bytes(done, d, sizeof d);
    r3_fmt_bytes(total, t, sizeof t);
    say("r3run: %s the source: %s of %s (%d%%)\n", what, d, t,
        total ? (int)(done * 100 / total) : 100);
}

/* r3run's default image (R3_UNLINK_SOURCE): removed as soon as it is open,
 * so nothing is left behind however the program ends. The program may exec
 * itself (same pid, the shim runs again): an inherited descriptor keeps
 * the file reachable for that as /proc/self/fd/N. */
/* The image's descriptor inherited from an earlier program of this chain
 * (bash exports the environment it started with, not the one the shim
 * changed): "PATH (deleted)" among /proc/self/fd. -1 if none. */
static int inherited_image_fd(const char *path)
{
    char want[4200], link[4200], name[64];
    snprintf(want, sizeof want, "%s (deleted)", path);
    for (int fd = 100; fd < 1024; fd++) {
        snprintf(name, sizeof name, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(name, link, sizeof link - 1);
        if (n <= 0)
            continue;
        link[n] = 0;
        if (strcmp(link, want) == 0)
            return fd;
    }
    return -1;
}

/* The source is the default image, unlinked: only our descriptor (the
 * URI's /proc/self/fd/N) reaches it. */
static bool is_scratch(const char *uri)
{
    const char *v = getenv("R3_SCRATCH"), *pre = "file:///proc/self/fd/";
    if (!v || strcmp(v, "1") != 0 || !uri || strncmp(uri, pre, strlen(pre)) != 0)
        return false;
    char name[64], link[4200];
    int fd = atoi(uri + strlen(pre));
    snprintf(name, sizeof name, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(name, link, sizeof link - 1);
    if (n <= 0)
        return false;
    link[n] = 0;
    return n > 10 && strcmp(link + n - 10, " (deleted)") == 0;
}

static void unlink_default_image(void)
{
    const char *path = getenv("R3_UNLINK_SOURCE");
    if (!path || !*path)
        return;
    int fd = open(path, O_RDWR);
    if (fd >= 0 && fd < 100) {
        int hi = fcntl(fd, F_DUPFD, 100);     /* out of the way of the program's fds */
        close(fd);
        fd = hi;
    }
    if (fd < 0 && errno == ENOENT)
        fd = inherited_image_fd(path);
    if (fd >= 0) {
        char *uri;
        const char *q = strchr(S.env.source, '?');
        if (asprintf(&uri, "file:///proc/self/fd/%d%s", fd, q ? q : "") >= 0)
            setenv("R3_SOURCE", uri, 1);      /* the environment keeps it */
    }
    if (fd >= 0)
        setenv("R3_SCRATCH", "1", 1); /* for the programs this one execs */
    unlink(path);
    unsetenv("R3_UNLINK_SOURCE");
}

/* ---- exits by signal. SIGTERM, SIGINT, SIGHUP and SIGQUIT, while the
 * program leaves them at SIG_DFL, carry r3's handler: it wakes the sync
 * thread, waits for the region to be synced, puts SIG_DFL back and raises
 * the signal again, so the process still dies of it (status, core rules).
 * The program sees SIG_DFL when it asks; when it installs a handler of its
 * own, that one replaces r3's (its exit then syncs as any exit does); when
 * it sets SIG_DFL again, r3's comes back. SIGKILL cannot be caught: what
 * was written since the last push round (--push-interval) is lost. */
static const int term_sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT };

static bool is_term_sig(int sig)
{
    for (size_t i = 0; i < sizeof term_sigs / sizeof term_sigs[0]; i++)
        if (term_sigs[i] == sig)
            return true;
    return false;
}

static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);

static int call_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (!real_sigaction) {
        busy++;
        real_sigaction = (int (*)(int, const struct sigaction *, struct sigaction *))
            dlsym(RTLD_NEXT, "sigaction");
        busy--;
        if (!real_sigaction) {
            errno = ENOSYS;
            return -1;
        }
    }
    return real_sigaction(sig, act, old);
}

static void on_term_signal(int sig)
{
    int saved = errno;
    if (getpid() == S.pid && atomic_load(&S.active) && S.sig_req[1] >= 0) {
        char c = 1;
        if (write(S.sig_req[1], &c, 1) == 1) {
            while (read(S.sig_done[0], &c, 1) < 0 && errno == EINTR) {
                /* wait for the sync */
            }
        }
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    atomic_store(&S.ours[sig], 0);
    call_sigaction(sig, &dfl, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    raise(sig);                   /* pending: delivered when unblocked */
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    errno = saved;
}

static int shim_final(void);

static void *signal_syncer(void *arg)
{
    (void)arg;
    char c;
    for (;;) {
        ssize_t n = read(S.sig_req[0], &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        shim_final();
        if (write(S.sig_done[1], &c, 1) < 0) { /* the handler dies anyway */ }
    }
}

static void install_term_handler(int sig)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term_signal;
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    atomic_store(&S.ours[sig], 1);
    if (call_sigaction(sig, &sa, NULL) < 0)
        atomic_store(&S.ours[sig], 0);
}

/* At open: the sync thread, and r3's handler on each terminating signal
 * the program leaves at SIG_DFL. */
static void arm_signals(void)
{
    S.sig_req[0] = S.sig_req[1] = S.sig_done[0] = S.sig_done[1] = -1;
    if (pipe2(S.sig_req, O_CLOEXEC) < 0)
        return;
    if (pipe2(S.sig_done, O_CLOEXEC) < 0) {
        close(S.sig_req[0]);
        close(S.sig_req[1]);
        S.sig_req[0] = S.sig_req[1] = -1;
        return;
    }
    pthread_t t;
    if (r3_thread_create(&t, signal_syncer, NULL) < 0) {
        r3_error_clear();
        return;                   /* no handler: signals end the program unsynced, as before */
    }
    pthread_detach(t);
    for (size_t i = 0; i < sizeof term_sigs / sizeof term_sigs[0]; i++) {
        struct sigaction cur;
        if (call_sigaction(term_sigs[i], NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) &&
            cur.sa_handler == SIG_DFL)
            install_term_handler(term_sigs[i]);
    }
}

EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (sig <= 0 || sig >= NSIG || !is_term_sig(sig) || getpid() != S.pid)
        return call_sigaction(sig, act, old);
    if (atomic_load(&S.ours[sig])) {
        /* r3's handler is in place: the program sees SIG_DFL. */
        if (old) {
            memset(old, 0, sizeof *old);
            old->sa_handler = SIG_DFL;
        }
        if (!act || (!(act->sa_flags & SA_SIGINFO) && act->sa_handler == SIG_DFL))
            return 0;
        atomic_store(&S.ours[sig], 0);
        return call_sigaction(sig, act, NULL);
    }
    int rc = call_sigaction(sig, act, old);
    if (rc == 0 && act && !(act->sa_flags & SA_SIGINFO) && act->sa_handler == SIG_DFL &&
        atomic_load(&S.active) && S.sig_req[1] >= 0)
        install_term_handler(sig);
    return rc;
}

/* glibc's signal() calls its internal sigaction, out of reach: the same,
 * with BSD semantics as glibc gives it. */
EXPORT sighandler_t signal(int sig, sighandler_t h)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, sig);
    sa.sa_flags = SA_RESTART;
    if (sigaction(sig, &sa, &old) < 0)
        return SIG_ERR;
    return old.sa_handler;
}

/* R3_TRACE_OPEN=FILE: one line per region opened ("open PID COMM"), for
 * tests of the lazy open. */
static void trace_open(void)
{
    const char *path = getenv("R3_TRACE_OPEN");
    if (!path || !*path)
        return;
    char comm[64] = "?";
    int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, comm, sizeof comm - 1);
        comm[n > 0 ? n : 0] = 0;
        comm[strcspn(comm, "\n")] = 0;
        close(fd);
    }
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        char line[128];
        int n = snprintf(line, sizeof line, "open %d %s\n", (int)getpid(), comm);
        if (write(fd, line, (size_t)n) < 0) { /* a trace only */ }
        close(fd);
    }
}

/* The first allocation that goes to the region opens it. Any failure ends
 * the program (exit 125) with the reason: never a silent run on glibc. */
static int lazy_open(void)
{
    static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&m);
    if (atomic_load(&S.active) || !atomic_load(&S.armed) || getpid() != S.pid) {
        pthread_mutex_unlock(&m);
        return atomic_load(&S.active) ? 0 : -1;
    }
    busy++;
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    r3_preload_env_opts(&S.env, &o);
    o.hooks.on_error = on_region_error;
    o.hooks.on_progress = on_region_progress;
    struct r3_source *src;
    if (r3_source_open(S.env.source, &src) < 0)
        fail("cannot open the source");
    if (S.env.pipeline) {
        struct r3_pipeline *pl;
        if (r3_pipeline_parse(S.env.pipeline, src, &pl) < 0)    /* closes src on failure */
            fail("cannot build the pipeline");
        src = pl->top;                /* closing the top stage closes them all */
        free(pl);
    }
    if (r3_region_open(&o, src, &S.region) < 0)
        fail("cannot open the region");
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (r3_palloc_init(&S.pa, S.region->base, S.region->len, page) < 0) {
        r3_error(-EINVAL, "the region at %p (%zu bytes) is not page aligned",
                 S.region->base, S.region->len);
        fail("cannot use the region");
    }
    S.lo = (uintptr_t)S.region->base;
    S.len = S.region->len;
    trace_open();
    atomic_store_explicit(&S.active, 1, memory_order_release);
    arm_signals();
    busy--;
    pthread_mutex_unlock(&m);
    return 0;
}

__attribute__((constructor)) static void shim_init(void)
{
    S.errfd = -1;
    S.sig_req[1] = -1;
    if (!getenv("R3_SOURCE"))
        return;                   /* not under r3run: glibc for everything */
    const char *owner = getenv("R3_PID");
    if (owner && strtol(owner, NULL, 10) != getpid())
        return;                   /* a child of the program: glibc only */
    busy = 1;
    S.errfd = fcntl(2, F_DUPFD_CLOEXEC, 64);
    /* glibc's own, not the next one in line: a program linked with
     * another allocator (redis with jemalloc) has that one's first, and it
     * knows nothing of glibc's blocks. */
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    S.libc_usable = (size_t (*)(void *))dlsym(libc ? libc : RTLD_NEXT, "malloc_usable_size");
    if (r3_preload_env_parse(&S.env) < 0)
        fail("bad environment");
    /* The default image goes now, whether or not the region is ever
     * opened: nothing is left behind. */
    unlink_default_image();
    S.env.source = getenv("R3_SOURCE");
    S.scratch = is_scratch(S.env.source);
    S.min_alloc = S.env.min_alloc;
    S.pid = getpid();
    char pid[24];
    snprintf(pid, sizeof pid, "%d", (int)S.pid);
    setenv("R3_PID", pid, 1);
    pthread_atfork(at_prepare, at_parent, at_child);
    atexit(shim_exit);
    atomic_store_explicit(&S.armed, 1, memory_order_release);
    busy = 0;
}
