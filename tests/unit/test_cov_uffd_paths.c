/* SPDX-License-Identifier: BSD-3-Clause */
/* uffd paths the rest of the suite does not reach, each checked by what the
 * program sees and what the source was asked:
 *  - zero fills (zero.c) against a scripted source: a remote one is asked
 *    once per 64 chunks (what its one answer does not cover is read), a
 *    local one until the word is known (runs cut short, data between zero
 *    runs, a last chunk shorter than the others), one whose extent query
 *    fails (everything read, no error left behind); a chunk made remote
 *    again by invalidate is read, never taken for zeros again;
 *  - dirty tracking by hashes (track.c, view.c) with a source whose size is
 *    not a multiple of the page: pages the program drops write back zeros,
 *    pages it unmaps keep the source's bytes;
 *  - forked children (fork.c): a child's own MADV_DONTNEED reads zeros, a
 *    grandchild is served, a child still running when the region closes
 *    gets its chunks first, a child whose chunk cannot be read gets SIGBUS
 *    and the region's hook is told;
 *  - invalidate of chunks shared with a child (drop.c): the move fails, the
 *    madvise way drops them; the region then reads the source's new bytes
 *    and the child keeps its own (this case found fills that ended after
 *    the drop and undid it);
 *  - max_resident with hash tracking (clean evictions write nothing, a
 *    dropped page goes back as zeros) and with a child;
 *  - migration's write tracking and first-fault order; access logs that
 *    cannot be parsed, opened, written or renamed;
 *  - fills around pages the program unmapped; write-backs the source
 *    refuses (the sync says so, the next one writes); opening under
 *    shrinking fd limits (a sentence, no descriptor left behind) and a too
 *    small address space; 2 MiB chunks.
 * The scripted source counts its reads, writes and extent questions, so
 * "not read" and "asked once" are checked, not assumed. */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "testutil.h"
#include "internal.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define CH (64 * KiB)            /* the default chunk */

/* ---- a scripted source: bytes in memory, reads and extent queries counted */

enum { EXT_TRUTH, EXT_FAIL };

struct ssrc {
    struct r3_source src;
    pthread_mutex_t m;           /* the bytes change under it (a server's own order) */
    uint8_t *buf;
    uint64_t size;
    int ext_mode;
    uint64_t ext_cap;            /* longest run one answer gives (0: no cap) */
    _Atomic uint64_t fail_from;  /* reads at or past this offset fail (UINT64_MAX: none) */
    _Atomic bool fail_writes;
    _Atomic uint64_t nreads, nextents, nwrites;
    _Atomic uint64_t readmap[4]; /* chunks read (first 256) */
};

/* never zero: data runs are runs of non-zero bytes */
static uint8_t pat(uint64_t off, unsigned seed)
{
    return (uint8_t)((((off + seed) * 2654435761u) >> 13) | 1);
}

static void pat_fill(uint8_t *b, size_t n, uint64_t off, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = pat(off + i, seed);
}

static int ss_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct ssrc *x = (struct ssrc *)s;
    if (off + len > atomic_load(&x->fail_from))
        return r3_error(-EIO, "test: no reads past %llu", (unsigned long long)atomic_load(&x->fail_from));
    atomic_fetch_add(&x->nreads, 1);
    uint64_t c = off / CH;
    if (c < 256)
        atomic_fetch_or(&x->readmap[c / 64], UINT64_C(1) << (c % 64));
    pthread_mutex_lock(&x->m);
    memcpy(buf, x->buf + off, len);
    pthread_mutex_unlock(&x->m);
    return 0;
}

static int ss_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct ssrc *x = (struct ssrc *)s;
    if (atomic_load(&x->fail_writes))
        return r3_error(-EIO, "test: the source refuses writes at %llu", (unsigned long long)off);
    pthread_mutex_lock(&x->m);
    memcpy(x->buf + off, buf, len);
    pthread_mutex_unlock(&x->m);
    atomic_fetch_add(&x->nwrites, 1);          /* after: a reader that sees it sees the bytes */
    return 0;
}

static int ss_flush(struct r3_source *s)
{
    (void)s;
    return 0;
}

/* the source outlives the region (the test reads it after the close) */
static void ss_close(struct r3_source *s)
{
    (void)s;
}

static int ss_extent(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    struct ssrc *x = (struct ssrc *)s;
    atomic_fetch_add(&x->nextents, 1);
    if (x->ext_mode == EXT_FAIL)
        return r3_error(-EIO, "test: extent query failed");
    if (x->ext_cap && len > x->ext_cap)
        len = x->ext_cap;
    pthread_mutex_lock(&x->m);
    bool z = x->buf[off] == 0;
    uint64_t n = 1;
    while (n < len && (x->buf[off + n] == 0) == z)
        n++;
    pthread_mutex_unlock(&x->m);
    *run = n;
    return z ? R3_EXTENT_ZERO : R3_EXTENT_DATA;
}

/* "zremote": asked once per 64 chunks; "mem": a local source, asked until known */
static const struct r3_source_ops remote_ops = {
    .scheme = "zremote", .read = ss_read, .write = ss_write, .flush = ss_flush, .close = ss_close,
    .extent = ss_extent,
};
static const struct r3_source_ops local_ops = {
    .scheme = "mem", .read = ss_read, .write = ss_write, .flush = ss_flush, .close = ss_close,
    .extent = ss_extent,
};
/* no extent op: everything is data */
static const struct r3_source_ops plain_ops = {
    .scheme = "plain", .read = ss_read, .write = ss_write, .flush = ss_flush, .close = ss_close,
};

static struct ssrc *ss_new(const struct r3_source_ops *ops, uint64_t size)
{
    struct ssrc *x = calloc(1, sizeof *x);
    ck_assert_ptr_nonnull(x);
    x->buf = calloc(1, size);
    ck_assert_ptr_nonnull(x->buf);
    x->size = size;
    pthread_mutex_init(&x->m, NULL);
    atomic_init(&x->fail_from, UINT64_MAX);
    x->src = (struct r3_source){ .ops = ops, .size = size, .align = 1, .flags = R3_SRC_PARALLEL };
    return x;
}

/* Change the source's bytes (as another writer would, while the region runs). */
static void ss_pat(struct ssrc *x, uint8_t *b, size_t n, uint64_t off, unsigned seed)
{
    pthread_mutex_lock(&x->m);
    pat_fill(b, n, off, seed);
    pthread_mutex_unlock(&x->m);
}

static void ss_free(struct ssrc *x)
{
    pthread_mutex_destroy(&x->m);
    free(x->buf);
    free(x);
}

static bool was_read(struct ssrc *x, uint64_t c)
{
    return atomic_load(&x->readmap[c / 64]) >> (c % 64) & 1;
}

static struct r3_region *open_on(struct ssrc *x, struct r3_region_opts *o)
{
    struct r3_region *r;
    ck_assert_msg(r3_region_open(o, &x->src, &r) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(r->chunk, CH);
    return r;
}

static void opts(struct r3_region_opts *o)
{
    r3_region_opts_init(o);
    o->uffd_readahead = 0;       /* only the chunks touched are filled */
}

static uint64_t zero_chunks(struct r3_region *r)
{
    struct r3_region_stats st;
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    return st.chunks_zero;
}

/* A remote source is asked once per 64 chunks: its first answer (2 MiB of
 * zeros) covers chunks 0..31 of the first word; the zeros of 3..4 MiB it
 * did not tell are read like data. The second word is one zero run. A
 * first touch that writes gets real zero pages and the write goes back. */
START_TEST(zero_remote_once)
{
    struct ssrc *x = ss_new(&remote_ops, 8 * MiB);
    ss_pat(x, x->buf + 2 * MiB, MiB, 2 * MiB, 3);           /* data in [2, 3) MiB */
    struct r3_region_opts o;
    opts(&o);
    struct r3_region *r = open_on(x, &o);
    volatile uint8_t *p = r->base;
    ck_assert_uint_eq(p[100], 0);
    ck_assert_uint_eq(p[31 * CH + 7], 0);
    ck_assert_uint_eq(atomic_load(&x->nreads), 0);          /* zeros, not read */
    ck_assert_uint_eq(zero_chunks(r), 2);
    ck_assert_uint_eq(p[2 * MiB + 5], pat(2 * MiB + 5, 3));
    ck_assert_uint_eq(p[3 * MiB + 9], 0);                   /* zeros not told: read */
    ck_assert(was_read(x, 32) && was_read(x, 48));
    ck_assert_uint_eq(atomic_load(&x->nreads), 2);
    ck_assert_uint_eq(atomic_load(&x->nextents), 1);       /* one question for the word */
    ck_assert_uint_eq(p[5 * MiB], 0);
    p[6 * MiB + 10] = 0x5a;                                 /* a write is the first touch */
    ck_assert_uint_eq(p[6 * MiB + 11], 0);
    ck_assert_uint_eq(atomic_load(&x->nreads), 2);
    ck_assert_uint_eq(atomic_load(&x->nextents), 2);
    ck_assert_uint_eq(zero_chunks(r), 4);
    ck_assert_msg(r3_region_sync(r) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(x->buf[6 * MiB + 10], 0x5a);
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* A source whose extent query fails: everything is read, the region works,
 * and the failure leaves no sentence behind (not knowing is not an error). */
START_TEST(zero_extent_fails)
{
    struct ssrc *x = ss_new(&remote_ops, 4 * MiB);
    x->ext_mode = EXT_FAIL;
    ss_pat(x, x->buf + MiB, CH, MiB, 5);
    struct r3_region_opts o;
    opts(&o);
    struct r3_region *r = open_on(x, &o);
    volatile uint8_t *p = r->base;
    r3_error_clear();
    ck_assert_uint_eq(p[7], 0);
    ck_assert_uint_eq(p[MiB + 7], pat(MiB + 7, 5));
    ck_assert_uint_eq(p[2 * MiB], 0);
    ck_assert_uint_eq(atomic_load(&x->nreads), 3);
    ck_assert_uint_eq(atomic_load(&x->nextents), 1);       /* asked once, then data */
    ck_assert_uint_eq(zero_chunks(r), 0);
    ck_assert_str_eq(r3_last_error(), "");
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* A local source is asked until the word is known, in answers of at most
 * 192 KiB: data in [0, 100K) and in [1M, 1M+4K), zeros elsewhere (the
 * source is 100 bytes longer than the region). Zero chunks are those wholly
 * inside a zero run: 2..15 and 17..63 (61); only chunks 0, 1 and 16 are
 * read. */
START_TEST(zero_local_runs)
{
    uint64_t size = 4 * MiB + 100;
    struct ssrc *x = ss_new(&local_ops, size);
    x->ext_cap = 192 * KiB;
    ss_pat(x, x->buf, 100 * KiB, 0, 9);
    ss_pat(x, x->buf + MiB, 4 * KiB, MiB, 9);
    struct r3_region_opts o;
    opts(&o);
    o.size = 4 * MiB;                                       /* whole chunks */
    struct r3_region *r = open_on(x, &o);
    ck_assert_uint_eq(r->len, o.size);
    const uint8_t *p = r->base;
    for (uint64_t off = 0; off < o.size; off += 4 * KiB)
        ck_assert_msg(memcmp(p + off, x->buf + off, 4 * KiB) == 0, "differs in the page at %llu",
                      (unsigned long long)off);
    ck_assert_uint_eq(zero_chunks(r), 61);
    /* (a memory-speed source: each data chunk's faulting page is read
     * first, then the chunk) */
    ck_assert_uint_eq(atomic_load(&x->nreads), 6);
    ck_assert(was_read(x, 0) && was_read(x, 1) && was_read(x, 16));
    ck_assert_uint_gt(atomic_load(&x->nextents), 5);       /* 192 KiB at a time */
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* Invalidate (a migration's seeder changed the chunk): a chunk known as
 * zeros is then read from the source, whose new bytes the region shows;
 * the source is not asked again about its word. */
START_TEST(zero_invalidated)
{
    struct ssrc *x = ss_new(&remote_ops, 8 * MiB);
    struct r3_region_opts o;
    opts(&o);
    struct r3_region *r = open_on(x, &o);
    volatile uint8_t *p = r->base;
    ck_assert_uint_eq(p[3 * CH + 1], 0);
    ck_assert_uint_eq(p[4 * CH + 1], 0);
    ck_assert_uint_eq(atomic_load(&x->nreads), 0);
    ss_pat(x, x->buf + 3 * CH, CH, 3 * CH, 11);              /* the source changes */
    uint64_t list[] = { 3 };
    ck_assert_msg(r3_region_invalidate(r, list, 1) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(p[3 * CH + 1], pat(3 * CH + 1, 11));
    ck_assert(was_read(x, 3));
    ck_assert_uint_eq(p[4 * CH + 1], 0);                    /* not invalidated: as it was */
    ck_assert_uint_eq(atomic_load(&x->nreads), 1);
    ck_assert_uint_eq(atomic_load(&x->nextents), 1);
    /* refusals: out of the region, not ascending */
    uint64_t bad[] = { 5, 4 };
    ck_assert_int_eq(r3_region_invalidate(r, bad, 2), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "chunk 4 is not in the region (or not ascending)"), "%s",
                  r3_last_error());
    uint64_t far[] = { 128 };
    ck_assert_int_eq(r3_region_invalidate(r, far, 1), -EINVAL);
    ck_assert_int_eq(r3_region_invalidate(r, NULL, 0), 0);
    /* more chunks than the drop area holds at once (4 MiB): all remote
     * again, all read from the source's new bytes */
    ss_pat(x, x->buf, 8 * MiB, 0, 13);
    ck_assert_uint_eq(p[5 * CH + 7], 0);                    /* changed behind r3's back: not seen */
    uint64_t all[100];
    for (uint64_t c = 0; c < 100; c++) {
        (void)p[c * CH];
        all[c] = c;
    }
    ck_assert_msg(r3_region_invalidate(r, all, 100) == 0, "%s", r3_last_error());
    for (uint64_t c = 0; c < 128; c++)
        ck_assert_msg(p[c * CH + 7] == pat(c * CH + 7, 13), "chunk %llu",
                      (unsigned long long)c);
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* Dirty tracking by hashes (a region of 1 MiB over a source of 1 MiB + 3000
 * bytes): written bytes go back and nothing past the region is touched; a
 * page the program drops writes back as zeros; a page it unmaps keeps the
 * source's bytes; a sync with nothing new writes nothing. */
START_TEST(hash_tracking_edges)
{
    uint64_t size = MiB + 3000;
    struct ssrc *x = ss_new(&plain_ops, size);
    ss_pat(x, x->buf, size, 0, 17);
    uint8_t *want = malloc(size);
    memcpy(want, x->buf, size);
    struct r3_region_opts o;
    opts(&o);
    o.size = MiB;
    o.uffd_no_wp_async = true;
    struct r3_region *r = open_on(x, &o);
    uint8_t *p = r->base;
    ck_assert_int_eq(memcmp(p, want, MiB), 0);             /* every chunk filled */
    p[MiB - 1] ^= 0xff;
    want[MiB - 1] ^= 0xff;
    p[5 * CH + 3] ^= 0xff;
    want[5 * CH + 3] ^= 0xff;
    ck_assert_int_eq(madvise(p + 2 * CH + 4096, 4096, MADV_DONTNEED), 0);
    memset(want + 2 * CH + 4096, 0, 4096);
    ck_assert_int_eq(munmap(p + 7 * CH, 4096), 0);         /* its bytes stay the source's */
    ck_assert_msg(r3_region_sync(r) == 0, "%s", r3_last_error());
    ck_assert_msg(memcmp(x->buf, want, size) == 0, "the source differs after sync");
    /* r3_region_read agrees: the dropped page reads zeros, the unmapped one
     * the source's bytes */
    uint8_t *got = malloc(MiB);
    ck_assert_msg(r3_region_read(r, got, MiB, 0) == 0, "%s", r3_last_error());
    ck_assert_int_eq(memcmp(got, want, MiB), 0);
    /* a second sync finds nothing new */
    struct r3_region_stats a, b;
    ck_assert_int_eq(r3_region_stats(r, &a), 0);
    ck_assert_int_eq(r3_region_sync(r), 0);
    ck_assert_int_eq(r3_region_stats(r, &b), 0);
    ck_assert_uint_eq(b.chunks_pushed, a.chunks_pushed);
    ck_assert_int_eq(r3_region_close(r), 0);
    ck_assert_int_eq(memcmp(x->buf, want, size), 0);
    free(got);
    free(want);
    ss_free(x);
}
END_TEST

/* ---- forked children */

static sigjmp_buf jb;
static volatile sig_atomic_t nbus;
static atomic_int nerr, msg_ready;
static char first_msg[512];

static void on_bus(int sig)
{
    (void)sig;
    nbus++;
    siglongjmp(jb, 1);
}

static void on_error(void *arg, struct r3_region *r, int err, const char *text)
{
    (void)arg;
    (void)r;
    (void)err;
    if (atomic_fetch_add(&nerr, 1) == 0) {
        snprintf(first_msg, sizeof first_msg, "%s", text);
        atomic_store(&msg_ready, 1);
    }
}

static int wait_child(pid_t pid)
{
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st), "child status 0x%x", st);
    return WEXITSTATUS(st);
}

/* A child (forked with the region's announcement): drops a page of a chunk
 * filled at the fork and one of a chunk never filled, reads both as zeros,
 * and the rest of the never-filled chunk as the source's; forks a grandchild
 * (no announcement) that reads a chunk nobody filled; the parent meanwhile
 * writes back chunks the child still needs; then the parent closes the
 * region while the child still runs, and the child reads, after that,
 * chunks it had not touched: the source's bytes of the fork. */
START_TEST(fork_children)
{
    struct ssrc *x = ss_new(&plain_ops, 4 * MiB);
    ss_pat(x, x->buf, 4 * MiB, 0, 23);
    struct r3_region_opts o;
    opts(&o);
    o.fault_threads = 1;        /* chunk 1 is FILLED once the next fault is served */
    struct r3_region *r = open_on(x, &o);
    uint8_t *p = r->base;
    ck_assert_uint_eq(p[CH + 1], pat(CH + 1, 23));          /* chunk 1 filled */
    ck_assert_uint_eq(p[8 * CH + 1], pat(8 * CH + 1, 23));
    int go[2], done[2];
    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(done), 0);
    r3_region_fork_prepare(r);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        close(go[1]);
        close(done[0]);
        if (madvise(p + CH + 4096, 4096, MADV_DONTNEED) || madvise(p + 10 * CH + 8192, 4096, MADV_DONTNEED))
            _exit(2);
        if (p[CH + 4096 + 5] != 0 || p[10 * CH + 8192 + 5] != 0)
            _exit(3);                        /* dropped: zeros */
        if (p[10 * CH + 5] != pat(10 * CH + 5, 23) || p[CH + 5] != pat(CH + 5, 23))
            _exit(4);
        pid_t g = fork();
        if (g == 0) {
            _exit(p[20 * CH + 77] == pat(20 * CH + 77, 23) ? 0 : 1);
        }
        int st;
        if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            _exit(5);
        if (write(done[1], "x", 1) != 1)
            _exit(6);
        char c;
        if (read(go[0], &c, 1) != 0)         /* the parent closed the region */
            _exit(7);
        /* written back by the parent after the fork: the fork's bytes */
        if (p[30 * CH + 1] != pat(30 * CH + 1, 23) || p[31 * CH + 2] != pat(31 * CH + 2, 23))
            _exit(8);
        /* never touched by anyone: given at the parent's close */
        if (p[40 * CH + 3] != pat(40 * CH + 3, 23))
            _exit(9);
        _exit(0);
    }
    ck_assert_int_ge(pid, 0);
    r3_region_fork_done(r);
    close(go[0]);
    close(done[1]);
    char c;
    ck_assert_int_eq(read(done[0], &c, 1), 1);
    ck_assert_uint_ge(r3_region_children(r), 1);
    memset(p + 30 * CH, 0x44, 2 * CH);                      /* the child needs both */
    ck_assert_msg(r3_region_sync(r) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(x->buf[31 * CH + 2], 0x44);
    ck_assert_int_eq(r3_region_close(r), 0);
    close(go[1]);
    ck_assert_int_eq(wait_child(pid), 0);
    close(done[0]);
    ss_free(x);
}
END_TEST

/* A child touches a chunk the source cannot give: the child's thread gets
 * SIGBUS (never zeros), the parent's hook is told once with the source's
 * sentence, and the parent's region still works. */
START_TEST(fork_child_read_fails)
{
    struct ssrc *x = ss_new(&plain_ops, 4 * MiB);
    ss_pat(x, x->buf, 4 * MiB, 0, 29);
    struct r3_region_opts o;
    opts(&o);
    o.hooks.on_error = on_error;
    struct r3_region *r = open_on(x, &o);
    uint8_t *p = r->base;
    ck_assert_uint_eq(p[1], pat(1, 29));
    atomic_store(&x->fail_from, 2 * MiB);
    r3_region_fork_prepare(r);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        struct sigaction sa = { .sa_handler = on_bus };
        sigemptyset(&sa.sa_mask);
        sigaction(SIGBUS, &sa, NULL);
        volatile uint8_t *v = p;
        if (v[MiB + 3] != pat(MiB + 3, 29))
            _exit(2);                        /* below the failure: served */
        if (sigsetjmp(jb, 1) == 0)
            (void)v[3 * MiB];
        _exit(nbus == 1 ? 0 : 3);
    }
    ck_assert_int_ge(pid, 0);
    r3_region_fork_done(r);
    ck_assert_int_eq(wait_child(pid), 0);
    ck_assert_int_eq(atomic_load(&nerr), 1);
    ck_assert(atomic_load(&msg_ready));
    ck_assert_msg(strstr(first_msg, "test: no reads past 2097152"), "%s", first_msg);
    atomic_store(&x->fail_from, UINT64_MAX);
    ck_assert_uint_eq(p[3 * MiB], pat(3 * MiB, 29));        /* the parent reads it */
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* Invalidate chunks whose pages a child shares (copy on write): they cannot
 * be moved out; the madvise way drops them. The region then shows the
 * source's new bytes, the child still its own. */
START_TEST(drop_shared_with_child)
{
    struct ssrc *x = ss_new(&plain_ops, 4 * MiB);
    ss_pat(x, x->buf, 4 * MiB, 0, 31);
    struct r3_region_opts o;
    opts(&o);
    struct r3_region *r = open_on(x, &o);
    volatile uint8_t *p = r->base;
    ck_assert_uint_eq(p[2 * CH + 1], pat(2 * CH + 1, 31));
    ck_assert_uint_eq(p[3 * CH + 1], pat(3 * CH + 1, 31));
    ck_assert_uint_eq(p[5 * CH + 1], pat(5 * CH + 1, 31));
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    r3_region_fork_prepare(r);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        close(go[1]);
        char c;
        if (read(go[0], &c, 1) != 0)
            _exit(2);
        _exit(p[2 * CH + 1] == pat(2 * CH + 1, 31) && p[3 * CH + 9] == pat(3 * CH + 9, 31) ? 0 : 3);
    }
    ck_assert_int_ge(pid, 0);
    r3_region_fork_done(r);
    close(go[0]);
    ck_assert_uint_eq(p[6 * CH + 1], pat(6 * CH + 1, 31));  /* filled after the fork: moves */
    ss_pat(x, x->buf + 2 * CH, 2 * CH, 2 * CH, 37);          /* the source changes */
    ss_pat(x, x->buf + 5 * CH, 2 * CH, 5 * CH, 37);
    uint64_t list[] = { 2, 3, 5, 6 };
    ck_assert_msg(r3_region_invalidate(r, list, 4) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(p[2 * CH + 1], pat(2 * CH + 1, 37));
    ck_assert_uint_eq(p[3 * CH + 9], pat(3 * CH + 9, 37));
    ck_assert_uint_eq(p[5 * CH + 1], pat(5 * CH + 1, 37));
    ck_assert_uint_eq(p[6 * CH + 1], pat(6 * CH + 1, 37));
    ck_assert_uint_eq(p[7 * CH + 1], pat(7 * CH + 1, 31));  /* not invalidated */
    close(go[1]);
    ck_assert_int_eq(wait_child(pid), 0);
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* ---- max_resident */

static void evict_opts(struct r3_region_opts *o)
{
    opts(o);
    o->fault_threads = 1;
    o->max_resident = 16 * CH;
}

/* Touch every chunk of [c0, c1) (a read of one byte each), checking it. */
static void read_chunks(struct r3_region *r, uint64_t c0, uint64_t c1, unsigned seed)
{
    volatile uint8_t *p = r->base;
    for (uint64_t c = c0; c < c1; c++)
        ck_assert_msg(p[c * CH + 77] == pat(c * CH + 77, seed), "chunk %llu", (unsigned long long)c);
}

/* Hash tracking under max_resident: chunks only read are evicted clean
 * (nothing written to the source); a written chunk whose page the program
 * dropped goes back with zeros there and its written bytes, and reads back
 * so after being faulted in again. */
START_TEST(evict_hash_clean_and_dropped)
{
    struct ssrc *x = ss_new(&plain_ops, 4 * MiB);
    ss_pat(x, x->buf, 4 * MiB, 0, 41);
    struct r3_region_opts o;
    evict_opts(&o);
    o.uffd_no_wp_async = true;
    struct r3_region *r = open_on(x, &o);
    uint8_t *p = r->base;
    read_chunks(r, 0, 48, 41);
    struct r3_region_stats st;
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_gt(st.chunks_evicted, 0);
    ck_assert_uint_eq(atomic_load(&x->nwrites), 0);        /* all clean */
    /* chunk 50: written, one page dropped, then pushed out by others */
    memset(p + 50 * CH, 0x66, 3 * 4096);
    ck_assert_int_eq(madvise(p + 50 * CH + 4096, 4096, MADV_DONTNEED), 0);
    /* other chunks until the hand has taken chunk 50 out (the only written
     * one: the first write to the source is its) */
    for (int round = 0; round < 100 && atomic_load(&x->nwrites) == 0; round++)
        read_chunks(r, 0, 48, 41);
    ck_assert_uint_gt(atomic_load(&x->nwrites), 0);        /* it went back */
    ck_assert_uint_eq(x->buf[50 * CH + 5], 0x66);
    ck_assert_uint_eq(x->buf[50 * CH + 4096 + 5], 0);
    ck_assert_uint_eq(x->buf[50 * CH + 8192 + 5], 0x66);
    ck_assert_uint_eq(x->buf[50 * CH + 3 * 4096], pat(50 * CH + 3 * 4096, 41));
    ck_assert_uint_eq(p[50 * CH + 5], 0x66);
    ck_assert_uint_eq(p[50 * CH + 4096 + 5], 0);
    ck_assert_uint_eq(p[50 * CH + 3 * 4096], pat(50 * CH + 3 * 4096, 41));
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* Eviction while a forked child shares the region: the parent reads and
 * writes on under the budget (a chunk the child still needs is given to it
 * before its write-back), the child keeps the bytes of the fork. */
START_TEST(evict_shared_with_child)
{
    struct ssrc *x = ss_new(&plain_ops, 8 * MiB);
    ss_pat(x, x->buf, 8 * MiB, 0, 43);
    struct r3_region_opts o;
    evict_opts(&o);
    struct r3_region *r = open_on(x, &o);
    uint8_t *p = r->base;
    read_chunks(r, 0, 8, 43);
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    r3_region_fork_prepare(r);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        close(go[1]);
        char c;
        if (read(go[0], &c, 1) != 0)
            _exit(2);
        for (uint64_t k = 0; k < 8; k++)
            if (p[k * CH + 77] != pat(k * CH + 77, 43))
                _exit(3);
        _exit(p[100 * CH + 5] == pat(100 * CH + 5, 43) ? 0 : 4);
    }
    ck_assert_int_ge(pid, 0);
    r3_region_fork_done(r);
    close(go[0]);
    for (int round = 0; round < 2; round++) {
        read_chunks(r, 8, 128, 43);
        read_chunks(r, 0, 8, 43);
    }
    memset(p + 100 * CH, 0x21, CH);                         /* the child needs the old bytes */
    read_chunks(r, 64, 96, 43);
    struct r3_region_stats st;
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_gt(st.chunks_evicted, 0);
    ck_assert_msg(r3_region_sync(r) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(x->buf[100 * CH + 5], 0x21);
    ck_assert_uint_eq(p[100 * CH + 5], 0x21);
    close(go[1]);
    ck_assert_int_eq(wait_child(pid), 0);
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* ---- migration's write tracking and access order */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

START_TEST(track_and_order)
{
    struct ssrc *x = ss_new(&plain_ops, 4 * MiB);
    ss_pat(x, x->buf, 4 * MiB, 0, 47);
    struct r3_region_opts o;
    opts(&o);
    struct r3_region *r = open_on(x, &o);
    uint8_t *p = r->base;
    uint64_t *l = NULL;
    size_t n = 0;
    ck_assert_int_eq(r3_region_track(r, R3_TRACK_TAKE, &l, &n), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "not being tracked"), "%s", r3_last_error());
    p[9 * CH] = 1;                                          /* before the start: not listed */
    ck_assert_int_eq(r3_region_track(r, R3_TRACK_START, NULL, NULL), 0);
    p[3 * CH + 5] = 2;
    p[40 * CH] = 3;
    (void)*(volatile uint8_t *)(p + 20 * CH);               /* read only */
    ck_assert_msg(r3_region_track(r, R3_TRACK_TAKE, &l, &n) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(l[0], 3);
    ck_assert_uint_eq(l[1], 40);
    free(l);
    ck_assert_int_eq(r3_region_track(r, 99, &l, &n), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "bad track operation 99"), "%s", r3_last_error());
    ck_assert_int_eq(r3_region_track(r, R3_TRACK_STOP, NULL, NULL), 0);
    ck_assert_int_eq(r3_region_track(r, R3_TRACK_TAKE, &l, &n), -EINVAL);
    /* first-fault order: 9 first; 3, 40, 20 (0 was never touched) */
    ck_assert_int_eq(r3_region_access_order(r, &l, &n), 0);
    ck_assert_uint_eq(n, 4);
    ck_assert_uint_eq(l[0], 9);
    qsort(l, n, sizeof *l, cmp_u64);
    ck_assert_uint_eq(l[0], 3);
    ck_assert_uint_eq(l[1], 9);
    ck_assert_uint_eq(l[2], 20);
    ck_assert_uint_eq(l[3], 40);
    free(l);
    ck_assert_int_eq(r3_region_close(r), 0);
    ck_assert_uint_eq(x->buf[3 * CH + 5], 2);
    ss_free(x);
    /* a copy-on-write region tracks nothing */
    x = ss_new(&plain_ops, MiB);
    opts(&o);
    o.copy_on_write = true;
    r = open_on(x, &o);
    ck_assert_int_eq(r3_region_track(r, R3_TRACK_START, NULL, NULL), -ENOTSUP);
    ck_assert_msg(strstr(r3_last_error(), "copy-on-write region does not track"), "%s", r3_last_error());
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* ---- access logs */

static char *tmpd;

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* Open a 4 MiB region with prefetch_file holding text: 0, or the error
 * (whose sentence must hold want). */
static void log_case(const char *text, const char *want)
{
    char *path;
    ck_assert_int_ge(asprintf(&path, "%s/log", tmpd), 0);
    write_text(path, text);
    struct ssrc *x = ss_new(&plain_ops, 4 * MiB);
    struct r3_region_opts o;
    opts(&o);
    o.prefetch = R3_PREFETCH_HOT;
    o.prefetch_file = path;
    struct r3_region *r;
    int rc = r3_region_open(&o, &x->src, &r);
    if (!want) {
        ck_assert_msg(rc == 0, "%s", r3_last_error());
        ck_assert_int_eq(r3_region_close(r), 0);
    } else {
        ck_assert_int_eq(rc, -EINVAL);
        ck_assert_msg(strstr(r3_last_error(), want), "%s: %s", want, r3_last_error());
    }
    ss_free(x);
    free(path);
}

START_TEST(access_logs)
{
    tmpd = tu_tmpdir();
    /* CRLF lines, comments, blank lines, a chunk twice: accepted */
    log_case("r3-access-log 1\r\n# made by hand\r\n\r\nchunk 65536\r\n5\r\n5\r\n0\r\n", NULL);
    char long_line[200];
    memset(long_line, '1', sizeof long_line);
    long_line[sizeof long_line - 1] = 0;
    char *t;
    ck_assert_int_ge(asprintf(&t, "r3-access-log 1\nchunk 65536\n%s\n", long_line), 0);
    log_case(t, "line 3: line too long");
    free(t);
    log_case("r3-access-log 1\nchunks 65536\n", "line 2: expected \"chunk <bytes>\"");
    /* 65 lines for 64 chunks (the last one a repeat): refused */
    char *body = strdup("r3-access-log 1\nchunk 65536\n");
    for (int i = 0; i < 65; i++) {
        char *b2;
        ck_assert_int_ge(asprintf(&b2, "%s%d\n", body, i < 64 ? i : 0), 0);
        free(body);
        body = b2;
    }
    log_case(body, "more lines than the region has chunks");
    free(body);
    char *missing;
    ck_assert_int_ge(asprintf(&missing, "%s/none/log", tmpd), 0);
    struct ssrc *x = ss_new(&plain_ops, MiB);
    struct r3_region_opts o;
    opts(&o);
    o.prefetch = R3_PREFETCH_HOT;
    o.prefetch_file = missing;
    struct r3_region *r;
    ck_assert_int_eq(r3_region_open(&o, &x->src, &r), -ENOENT);
    ck_assert_msg(strstr(r3_last_error(), "cannot open the prefetch log"), "%s", r3_last_error());
    ss_free(x);
    /* record_access where it cannot be written: the close says so */
    x = ss_new(&plain_ops, MiB);
    opts(&o);
    o.record_access = missing;
    r = open_on(x, &o);
    (void)*(volatile uint8_t *)r->base;
    ck_assert_int_eq(r3_region_close(r), -ENOENT);
    ck_assert_msg(strstr(r3_last_error(), "cannot write the access log"), "%s", r3_last_error());
    ss_free(x);
    /* ... or where a directory is in the way of the rename */
    char *dirpath;
    ck_assert_int_ge(asprintf(&dirpath, "%s/adir", tmpd), 0);
    ck_assert_int_eq(mkdir(dirpath, 0700), 0);
    char *inside;
    ck_assert_int_ge(asprintf(&inside, "%s/x", dirpath), 0);
    write_text(inside, "x");                                /* not empty: rename cannot replace it */
    x = ss_new(&plain_ops, MiB);
    opts(&o);
    o.record_access = dirpath;
    r = open_on(x, &o);
    (void)*(volatile uint8_t *)r->base;
    ck_assert_int_lt(r3_region_close(r), 0);
    ck_assert_msg(strstr(r3_last_error(), "cannot rename the access log"), "%s", r3_last_error());
    ss_free(x);
    free(inside);
    free(dirpath);
    free(missing);
    tu_rmrf(tmpd);
    free(tmpd);
}
END_TEST

/* A page the program unmapped inside a chunk never filled: the fill of the
 * chunk (a copy, or zero pages) skips it and installs the rest; the page
 * stays unmapped (the region does not map it again). */
static sigjmp_buf segv_jb;

static void on_segv(int sig)
{
    (void)sig;
    siglongjmp(segv_jb, 1);
}

static bool touch_segv(volatile uint8_t *p)
{
    struct sigaction sa = { .sa_handler = on_segv }, old;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old);
    bool hit = false;
    if (sigsetjmp(segv_jb, 1) == 0)
        (void)*p;
    else
        hit = true;
    sigaction(SIGSEGV, &old, NULL);
    return hit;
}

START_TEST(fill_around_unmapped)
{
    struct ssrc *x = ss_new(&remote_ops, 8 * MiB);
    ss_pat(x, x->buf, 4 * MiB, 0, 53);                       /* [4, 8) MiB: zeros */
    struct r3_region_opts o;
    opts(&o);
    struct r3_region *r = open_on(x, &o);
    uint8_t *p = r->base;
    ck_assert_int_eq(munmap(p + 5 * CH + 3 * 4096, 4096), 0);
    ck_assert_int_eq(munmap(p + 70 * CH + 5 * 4096, 4096), 0);
    ck_assert_uint_eq(p[5 * CH + 7], pat(5 * CH + 7, 53));  /* before the hole */
    ck_assert_uint_eq(p[5 * CH + 4 * 4096 + 7], pat(5 * CH + 4 * 4096 + 7, 53));   /* after */
    ck_assert_uint_eq(p[6 * CH - 1], pat(6 * CH - 1, 53));
    ck_assert(touch_segv(p + 5 * CH + 3 * 4096));
    ck_assert_uint_eq(p[70 * CH + 7], 0);                   /* zero pages around a hole */
    ck_assert_uint_eq(p[70 * CH + 6 * 4096], 0);
    ck_assert(touch_segv(p + 70 * CH + 5 * 4096 + 1));
    ck_assert_uint_eq(zero_chunks(r), 1);
    /* written next to the hole: goes back; the hole's bytes stay the source's */
    p[5 * CH + 4 * 4096] = 0x77;
    ck_assert_msg(r3_region_sync(r) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(x->buf[5 * CH + 4 * 4096], 0x77);
    ck_assert_uint_eq(x->buf[5 * CH + 3 * 4096 + 9], pat(5 * CH + 3 * 4096 + 9, 53));
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* The source refuses writes: the sync fails with its sentence and the
 * chunks stay unsynced; once it takes writes again, the next sync writes
 * them (pages and all) and nothing stays owed. */
START_TEST(write_back_fails_then_works)
{
    struct ssrc *x = ss_new(&plain_ops, 4 * MiB);
    ss_pat(x, x->buf, 4 * MiB, 0, 59);
    struct r3_region_opts o;
    opts(&o);
    struct r3_region *r = open_on(x, &o);
    uint8_t *p = r->base;
    memset(p + 2 * CH + 4096, 0x31, 8192);
    p[9 * CH] = 0x32;
    atomic_store(&x->fail_writes, true);
    ck_assert_int_eq(r3_region_sync(r), -EIO);
    ck_assert_msg(strstr(r3_last_error(), "test: the source refuses writes"), "%s", r3_last_error());
    uint64_t chunks = 0, bytes = 0;
    ck_assert_int_eq(r->ops->unsynced(r, &chunks, &bytes), 0);
    ck_assert_uint_eq(chunks, 2);
    ck_assert_uint_eq(bytes, 2 * CH);
    ck_assert_uint_eq(x->buf[2 * CH + 4096], pat(2 * CH + 4096, 59));
    atomic_store(&x->fail_writes, false);
    ck_assert_msg(r3_region_sync(r) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(x->buf[2 * CH + 4096], 0x31);
    ck_assert_uint_eq(x->buf[2 * CH + 4096 + 8191], 0x31);
    ck_assert_uint_eq(x->buf[2 * CH + 4095], pat(2 * CH + 4095, 59));
    ck_assert_uint_eq(x->buf[9 * CH], 0x32);
    ck_assert_int_eq(r->ops->unsynced(r, &chunks, &bytes), 0);
    ck_assert_uint_eq(chunks, 0);
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* ---- opening under limits */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1;                            /* (the directory's own fd) */
}

/* With fewer and fewer file descriptors allowed, the open fails at each of
 * its steps (userfaultfd, eventfds, epoll sets, the staging area's
 * userfaultfd) with a sentence, and leaves no descriptor open behind; with
 * enough, it works. A budget with copy_on_write is refused. */
START_TEST(open_under_limits)
{
    struct ssrc *x = ss_new(&plain_ops, 4 * MiB);
    ss_pat(x, x->buf, 4 * MiB, 0, 61);
    struct r3_region_opts o;
    struct r3_region *r;
    opts(&o);
    o.copy_on_write = true;
    o.max_resident = 16 * CH;
    ck_assert_int_eq(r3_region_open(&o, &x->src, &r), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "max_resident cannot be used with copy_on_write"), "%s",
                  r3_last_error());
    struct rlimit old;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    int before = count_fds();
    int low = dup(0);
    ck_assert_int_ge(low, 0);
    close(low);
    int failed = 0, worked = 0;
    for (int k = 0; k < 24 && !worked; k++) {
        evict_opts(&o);
        struct rlimit lim = { (rlim_t)(low + k), old.rlim_max };
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
        r3_error_clear();
        int rc = r3_region_open(&o, &x->src, &r);
        if (rc == 0) {
            ck_assert_uint_eq(((volatile uint8_t *)r->base)[CH + 3], pat(CH + 3, 61));
            ck_assert_int_eq(r3_region_close(r), 0);
            worked = 1;
        } else {
            ck_assert_msg(r3_last_error()[0] != 0, "fd limit %d: %d without a sentence", low + k, rc);
            failed++;
        }
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
        ck_assert_msg(count_fds() == before, "fd limit %d: %d descriptors left open", low + k,
                      count_fds() - before);
    }
    ck_assert_int_gt(failed, 3);
    ck_assert(worked);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    /* an address space too small for the mapping (sanitizers reserve
     * terabytes of shadow: not there) */
    struct ssrc *big = ss_new(&plain_ops, 1);
    big->src.size = UINT64_C(64) << 30;
    struct rlimit as_old, as = { (rlim_t)8 << 30, RLIM_INFINITY };
    ck_assert_int_eq(getrlimit(RLIMIT_AS, &as_old), 0);
    as.rlim_max = as_old.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &as), 0);
    opts(&o);
    ck_assert_int_eq(r3_region_open(&o, &big->src, &r), -ENOMEM);
    ck_assert_msg(strstr(r3_last_error(), "uffd: cannot map 64 GiB"), "%s", r3_last_error());
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &as_old), 0);
    ss_free(big);
#endif
    ss_free(x);
}
END_TEST

/* Chunks of 2 MiB (huge-page sized: the mapping keeps THP allowed): data
 * in, writes back. */
START_TEST(huge_chunks)
{
    struct ssrc *x = ss_new(&plain_ops, 8 * MiB);
    ss_pat(x, x->buf, 8 * MiB, 0, 67);
    struct r3_region_opts o;
    opts(&o);
    o.chunk = 2 * MiB;
    struct r3_region *r;
    ck_assert_msg(r3_region_open(&o, &x->src, &r) == 0, "%s", r3_last_error());
    uint8_t *p = r->base;
    ck_assert_uint_eq(p[3 * MiB + 11], pat(3 * MiB + 11, 67));
    p[5 * MiB] = 0x42;
    ck_assert_msg(r3_region_sync(r) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(x->buf[5 * MiB], 0x42);
    ck_assert_uint_eq(x->buf[5 * MiB + 1], pat(5 * MiB + 1, 67));
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* The parent writes back a chunk a living child still needs, and the
 * source cannot give the child's copy first: the sync fails and says why,
 * nothing is written; once the source reads again the sync works and the
 * child still sees the bytes of the fork. */
START_TEST(fork_preserve_fails)
{
    struct ssrc *x = ss_new(&plain_ops, 4 * MiB);
    ss_pat(x, x->buf, 4 * MiB, 0, 71);
    struct r3_region_opts o;
    opts(&o);
    struct r3_region *r = open_on(x, &o);
    uint8_t *p = r->base;
    ck_assert_uint_eq(p[1], pat(1, 71));
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    r3_region_fork_prepare(r);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        close(go[1]);
        char c;
        if (read(go[0], &c, 1) != 0)
            _exit(2);
        _exit(p[40 * CH + 9] == pat(40 * CH + 9, 71) ? 0 : 3);
    }
    ck_assert_int_ge(pid, 0);
    r3_region_fork_done(r);
    close(go[0]);
    p[40 * CH + 9] = 0x55;                                  /* filled (read) before the failure */
    atomic_store(&x->fail_from, 2 * MiB);
    ck_assert_int_eq(r3_region_sync(r), -EIO);
    ck_assert_msg(strstr(r3_last_error(), "keeping a forked child's copy before writing back") &&
                  strstr(r3_last_error(), "test: no reads past"), "%s", r3_last_error());
    ck_assert_uint_eq(x->buf[40 * CH + 9], pat(40 * CH + 9, 71));
    atomic_store(&x->fail_from, UINT64_MAX);
    ck_assert_msg(r3_region_sync(r) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(x->buf[40 * CH + 9], 0x55);
    close(go[1]);
    ck_assert_int_eq(wait_child(pid), 0);
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* Hash tracking needs the source's bytes of a page the program unmapped;
 * when the source cannot give them the sync fails with its sentence and
 * nothing is lost: once it reads again, the next sync writes what was
 * written. */
START_TEST(hash_collect_read_fails)
{
    struct ssrc *x = ss_new(&plain_ops, 4 * MiB);
    ss_pat(x, x->buf, 4 * MiB, 0, 73);
    struct r3_region_opts o;
    opts(&o);
    o.uffd_no_wp_async = true;
    struct r3_region *r = open_on(x, &o);
    uint8_t *p = r->base;
    ck_assert_uint_eq(p[3 * CH + 1], pat(3 * CH + 1, 73));
    ck_assert_int_eq(munmap(p + 3 * CH + 4096, 4096), 0);
    p[5 * CH + 2] = 0x19;
    atomic_store(&x->fail_from, 0);
    ck_assert_int_eq(r3_region_sync(r), -EIO);
    ck_assert_msg(strstr(r3_last_error(), "test: no reads past 0"), "%s", r3_last_error());
    ck_assert_uint_eq(x->buf[5 * CH + 2], pat(5 * CH + 2, 73));
    atomic_store(&x->fail_from, UINT64_MAX);
    ck_assert_msg(r3_region_sync(r) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(x->buf[5 * CH + 2], 0x19);
    ck_assert_uint_eq(x->buf[3 * CH + 4096 + 3], pat(3 * CH + 4096 + 3, 73));
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

/* Pages the program dropped before their chunk was ever filled read as
 * zeros, in a zero chunk (zero pages) as in a data chunk (copied around
 * them); a write there goes back. */
START_TEST(dropped_before_fill)
{
    struct ssrc *x = ss_new(&remote_ops, 8 * MiB);
    ss_pat(x, x->buf + 4 * MiB, 4 * MiB, 4 * MiB, 79);        /* [0, 4) MiB: zeros */
    struct r3_region_opts o;
    opts(&o);
    struct r3_region *r = open_on(x, &o);
    uint8_t *p = r->base;
    ck_assert_int_eq(madvise(p + 7 * CH + 4096, 8192, MADV_DONTNEED), 0);
    ck_assert_int_eq(madvise(p + 90 * CH + 4096, 4096, MADV_DONTNEED), 0);
    ck_assert_uint_eq(p[7 * CH + 4096 + 1], 0);
    ck_assert_uint_eq(p[7 * CH + 1], 0);
    ck_assert_uint_eq(zero_chunks(r), 1);
    ck_assert_uint_eq(p[90 * CH + 4096 + 1], 0);            /* dropped: zeros */
    ck_assert_uint_eq(p[90 * CH + 1], pat(90 * CH + 1, 79));
    ck_assert_uint_eq(p[90 * CH + 8192 + 1], pat(90 * CH + 8192 + 1, 79));
    p[7 * CH + 4096 + 2] = 0x3c;
    ck_assert_msg(r3_region_sync(r) == 0, "%s", r3_last_error());
    ck_assert_uint_eq(x->buf[7 * CH + 4096 + 2], 0x3c);
    ck_assert_uint_eq(x->buf[90 * CH + 4096 + 1], 0);       /* the drop is a write of zeros */
    ck_assert_int_eq(r3_region_close(r), 0);
    ss_free(x);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("cov_uffd_paths");
    TCase *t = tcase_create("uffd");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, zero_remote_once);
    tcase_add_test(t, zero_extent_fails);
    tcase_add_test(t, zero_local_runs);
    tcase_add_test(t, zero_invalidated);
    tcase_add_test(t, hash_tracking_edges);
    tcase_add_test(t, fork_children);
    tcase_add_test(t, fork_child_read_fails);
    tcase_add_test(t, drop_shared_with_child);
    tcase_add_test(t, evict_hash_clean_and_dropped);
    tcase_add_test(t, evict_shared_with_child);
    tcase_add_test(t, track_and_order);
    tcase_add_test(t, access_logs);
    tcase_add_test(t, fill_around_unmapped);
    tcase_add_test(t, write_back_fails_then_works);
    tcase_add_test(t, open_under_limits);
    tcase_add_test(t, huge_chunks);
    tcase_add_test(t, fork_preserve_fails);
    tcase_add_test(t, hash_collect_read_fails);
    tcase_add_test(t, dropped_before_fill);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    r3t_require("uffd");
    return tu_run(suite());
}
