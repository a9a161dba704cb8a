/* SPDX-License-Identifier: BSD-3-Clause */
/* Stages: chunk, cache, pull, push, lock, delay, stats, and the pipeline. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"
#include "testutil.h"

#define MiB (1u << 20)
#define CH (64u * 1024u)

/* A recording source over mem: counts requests, remembers whether any was
 * not a whole aligned chunk of `want`, and can be told to fail. */
struct rec {
    struct r3_source src;
    struct r3_source *mem;
    uint32_t want;
    _Atomic int reads, writes, misaligned, fail;
    _Atomic int per_chunk[1024];
};

static int rec_read(struct r3_source *s, void *b, size_t len, uint64_t off)
{
    struct rec *r = (struct rec *)s;
    atomic_fetch_add(&r->reads, 1);
    if (r->want && (off % r->want || (len % r->want && off + len != s->size)))
        atomic_fetch_add(&r->misaligned, 1);
    if (r->want && off / r->want < 1024)
        atomic_fetch_add(&r->per_chunk[off / r->want], 1);
    if (atomic_load(&r->fail))
        return -EIO;
    return r3_source_read(r->mem, b, len, off);
}

static int rec_write(struct r3_source *s, const void *b, size_t len, uint64_t off)
{
    struct rec *r = (struct rec *)s;
    atomic_fetch_add(&r->writes, 1);
    if (r->want && (off % r->want || (len % r->want && off + len != s->size)))
        atomic_fetch_add(&r->misaligned, 1);
    if (atomic_load(&r->fail))
        return -EIO;
    return r3_source_write(r->mem, b, len, off);
}

static int rec_flush(struct r3_source *s)
{
    return r3_source_flush(((struct rec *)s)->mem);
}

static void rec_close(struct r3_source *s)
{
    r3_source_close(((struct rec *)s)->mem);
    free(s);
}

static const struct r3_source_ops rec_ops = { .scheme = "rec", .read = rec_read, .write = rec_write,
                                               .flush = rec_flush, .close = rec_close };

/* A rec over a mem source of size bytes holding pattern seed (0 = zeros). */
static struct rec *rec_new(uint64_t size, uint32_t want, uint32_t seed)
{
    struct rec *r = calloc(1, sizeof *r);
    ck_assert_int_eq(r3_mem_create(size, &r->mem), 0);
    if (seed) {
        char *b = malloc(MiB);
        for (uint64_t off = 0; off < size; off += MiB) {
            size_t n = size - off < MiB ? size - off : MiB;
            tu_fill(b, n, off, seed);
            ck_assert_int_eq(r3_source_write(r->mem, b, n, off), 0);
        }
        free(b);
    }
    r->want = want;
    r->src.ops = &rec_ops;
    r->src.size = size;
    r->src.align = 1;
    r->src.flags = R3_SRC_PARALLEL;
    return r;
}

static void expect_pattern(struct r3_source *s, uint64_t off, size_t len, uint32_t seed)
{
    char *b = malloc(len);
    ck_assert_int_eq(r3_source_read(s, b, len, off), 0);
    long bad = tu_check(b, len, off, seed);
    ck_assert_msg(bad < 0, "byte %llu differs", (unsigned long long)(off + (uint64_t)bad));
    free(b);
}

START_TEST(test_chunk)
{
    struct rec *r = rec_new(4 * MiB + 4096, CH, 3);   /* last chunk is short */
    struct r3_source *c;
    ck_assert_int_eq(r3_stage_chunk_open(&r->src, CH, &c), 0);
    expect_pattern(c, 1, 10, 3);
    expect_pattern(c, CH - 5, 10, 3);
    expect_pattern(c, 4 * MiB + 100, 3996, 3);
    expect_pattern(c, 0, 4 * MiB + 4096, 3);
    /* Partial writes at odd places: read-modify-write, whole chunks below. */
    char buf[100000];
    tu_fill(buf, sizeof buf, 12345, 5);
    ck_assert_int_eq(r3_source_write(c, buf, sizeof buf, 12345), 0);
    tu_fill(buf, 10, 4 * MiB + 4086, 5);
    ck_assert_int_eq(r3_source_write(c, buf, 10, 4 * MiB + 4086), 0);
    ck_assert_int_eq(atomic_load(&r->misaligned), 0);
    expect_pattern(r->mem, 12345, sizeof buf, 5);
    expect_pattern(r->mem, 0, 12345, 3);
    expect_pattern(r->mem, 12345 + sizeof buf, CH * 2 - 12345 - sizeof buf, 3);
    expect_pattern(r->mem, 4 * MiB + 4086, 10, 5);
    /* Past the end, and bad chunk sizes. */
    ck_assert_int_eq(r3_source_read(c, buf, 2, c->size - 1), -EINVAL);
    ck_assert_int_eq(r3_source_write(c, buf, 2, c->size - 1), -ENOSPC);
    struct r3_source *bad;
    ck_assert_int_eq(r3_stage_chunk_open(&r->src, 3000, &bad), -EINVAL);
    r3_source_close(c);
}
END_TEST

START_TEST(test_cache_read_once)
{
    struct rec *r = rec_new(4 * MiB, CH, 11);
    struct r3_source *local, *c;
    ck_assert_int_eq(r3_mem_create(4 * MiB, &local), 0);
    struct r3_cache_opts o = { .chunk = CH };
    ck_assert_int_eq(r3_stage_cache_open(&r->src, local, &o, &c), 0);
    ck_assert_uint_eq(r3_cache_nchunks(c), 64);
    expect_pattern(c, 100, 3 * CH, 11);            /* touches chunks 0..3 */
    ck_assert_int_eq(atomic_load(&r->reads), 4);
    ck_assert_uint_eq(r3_cache_nlocal(c), 4);
    expect_pattern(c, 0, 4 * CH, 11);
    ck_assert_int_eq(atomic_load(&r->reads), 4);   /* all local now */
    ck_assert(r3_cache_is_local(c, 3));
    ck_assert(!r3_cache_is_local(c, 4));
    /* Local holds the bytes (read it directly). */
    expect_pattern(local, 0, 4 * CH, 11);
    /* Invalidate: fetched again. */
    r3_cache_invalidate(c, 2);
    expect_pattern(c, 2 * CH, 10, 11);
    ck_assert_int_eq(atomic_load(&r->reads), 5);
    ck_assert_int_eq(atomic_load(&r->misaligned), 0);
    r3_source_close(c);
}
END_TEST

START_TEST(test_cache_write_through)
{
    struct rec *r = rec_new(2 * MiB, 0, 0);
    struct r3_source *local, *c;
    ck_assert_int_eq(r3_mem_create(2 * MiB, &local), 0);
    ck_assert_int_eq(r3_stage_cache_open(&r->src, local, NULL, &c), 0);
    char buf[200000];
    tu_fill(buf, sizeof buf, 777, 2);
    ck_assert_int_eq(r3_source_write(c, buf, sizeof buf, 777), 0);
    ck_assert_int_eq(r3_source_flush(c), 0);
    expect_pattern(r->mem, 777, sizeof buf, 2);      /* remote has it */
    expect_pattern(local, 777, sizeof buf, 2);       /* and local */
    /* A whole-chunk write does not fetch. */
    int before = atomic_load(&r->reads);
    tu_fill(buf, CH, 10 * CH, 4);
    ck_assert_int_eq(r3_source_write(c, buf, CH, 10 * CH), 0);
    ck_assert_int_eq(atomic_load(&r->reads), before);
    expect_pattern(c, 10 * CH, CH, 4);
    /* A failing remote: an error, not a crash. */
    atomic_store(&r->fail, 1);
    ck_assert_int_eq(r3_source_read(c, buf, 10, 20 * CH), -EIO);
    ck_assert(!r3_cache_is_local(c, 20));
    atomic_store(&r->fail, 0);
    ck_assert_int_eq(r3_source_read(c, buf, 10, 20 * CH), 0);
    r3_source_close(c);
}
END_TEST

struct racer { struct r3_source *s; uint64_t size; unsigned seed; int bad; };

static void *race_reader(void *arg)
{
    struct racer *rc = arg;
    char *b = malloc(300000);
    for (int i = 0; i < 200; i++) {
        uint64_t off = (uint64_t)rand_r(&rc->seed) % (rc->size - 300000);
        size_t len = 1 + (size_t)rand_r(&rc->seed) % 299999;
        if (r3_source_read(rc->s, b, len, off) != 0 || tu_check(b, len, off, 21) >= 0)
            rc->bad++;
    }
    free(b);
    return NULL;
}

START_TEST(test_pull_races_readers)
{
    uint64_t size = 32 * MiB;
    struct rec *r = rec_new(size, CH, 21);
    struct r3_source *d, *local, *c, *p;
    ck_assert_int_eq(r3_stage_delay_open(&r->src, 200, &d), 0);
    ck_assert_int_eq(r3_mem_create(size, &local), 0);
    struct r3_cache_opts co = { .chunk = CH };
    ck_assert_int_eq(r3_stage_cache_open(d, local, &co, &c), 0);
    struct r3_pull_opts po = { .workers = 8 };
    ck_assert_int_eq(r3_stage_pull_open(c, &po, &p), 0);
    pthread_t t[4];
    struct racer rc[4];
    for (int i = 0; i < 4; i++) {
        rc[i] = (struct racer){ p, size, (unsigned)i + 1, 0 };
        pthread_create(&t[i], NULL, race_reader, &rc[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(rc[i].bad, 0);
    }
    ck_assert_int_eq(r3_pull_wait(p), 0);
    struct r3_pull_progress pr;
    r3_pull_progress(p, &pr);
    ck_assert(pr.done);
    ck_assert_uint_eq(pr.chunks_local, size / CH);
    ck_assert_uint_eq(pr.chunks_total, size / CH);
    /* Each chunk was fetched exactly once, by a worker or by a reader. */
    for (uint64_t i = 0; i < size / CH; i++)
        ck_assert_msg(atomic_load(&r->per_chunk[i]) == 1, "chunk %llu fetched %d times",
                      (unsigned long long)i, atomic_load(&r->per_chunk[i]));
    ck_assert_int_eq(atomic_load(&r->reads), (int)(size / CH));
    expect_pattern(p, 0, size, 21);
    ck_assert_int_eq(atomic_load(&r->reads), (int)(size / CH));
    r3_source_close(p);
}
END_TEST

struct order_log { _Atomic int n; uint64_t idx[64]; };

static void log_fill(void *arg, uint64_t chunk, int why)
{
    struct order_log *l = arg;
    int i = atomic_fetch_add(&l->n, 1);
    if (i < 64)
        l->idx[i] = chunk;
    ck_assert_int_eq(why, R3_FETCH_PULL);
}

static int64_t reverse_odd(void *arg, uint64_t chunk)
{
    return chunk % 2 ? (int64_t)(100 - chunk) : -1;        /* odd chunks, descending */
}

START_TEST(test_pull_priority)
{
    struct rec *r = rec_new(16 * CH, CH, 5);
    struct r3_source *local, *c, *p;
    struct order_log log = { 0 };
    ck_assert_int_eq(r3_mem_create(16 * CH, &local), 0);
    struct r3_cache_opts co = { .chunk = CH, .on_fill = log_fill, .arg = &log };
    ck_assert_int_eq(r3_stage_cache_open(&r->src, local, &co, &c), 0);
    struct r3_pull_opts po = { .workers = 1, .priority = reverse_odd };
    ck_assert_int_eq(r3_stage_pull_open(c, &po, &p), 0);
    ck_assert_int_eq(r3_pull_wait(p), 0);
    ck_assert_int_eq(atomic_load(&log.n), 8);
    for (int i = 0; i < 8; i++)
        ck_assert_uint_eq(log.idx[i], (uint64_t)(15 - 2 * i));
    ck_assert(!r3_cache_is_local(c, 0));
    struct r3_pull_progress pr;
    r3_pull_progress(p, &pr);
    ck_assert_uint_eq(pr.chunks_pulled, 8);
    ck_assert_uint_eq(pr.bytes_pulled, 8 * CH);
    r3_source_close(p);
    /* A pull over something that is not a cache is refused. */
    struct r3_source *m;
    ck_assert_int_eq(r3_mem_create(CH, &m), 0);
    ck_assert_int_eq(r3_stage_pull_open(m, &po, &p), -EINVAL);
    r3_source_close(m);
}
END_TEST

static _Atomic int fill_nice = 100, fills_seen;

static void nice_fill(void *arg, uint64_t chunk, int why)
{
    (void)arg;
    (void)chunk;
    if (why == R3_FETCH_PULL) {
        atomic_store(&fill_nice, getpriority(PRIO_PROCESS, 0));     /* this thread's */
        atomic_fetch_add(&fills_seen, 1);
    }
}

/* Held workers pull nothing until r3_pull_start; they run 10 nice steps
 * below the opener; a held stage closes (and r3_pull_wait returns)
 * without a start. */
START_TEST(test_pull_held)
{
    struct rec *r = rec_new(16 * CH, CH, 5);
    struct r3_source *local, *c, *p;
    ck_assert_int_eq(r3_mem_create(16 * CH, &local), 0);
    struct r3_cache_opts co = { .chunk = CH, .on_fill = nice_fill };
    ck_assert_int_eq(r3_stage_cache_open(&r->src, local, &co, &c), 0);
    struct r3_pull_opts po = { .workers = 4, .held = true };
    ck_assert_int_eq(r3_stage_pull_open(c, &po, &p), 0);
    usleep(100 * 1000);
    struct r3_pull_progress pr;
    ck_assert_int_eq(r3_pull_progress(p, &pr), 0);
    ck_assert_uint_eq(pr.chunks_pulled, 0);
    ck_assert_uint_eq(pr.chunks_local, 0);
    ck_assert(!pr.done);
    ck_assert_int_eq(atomic_load(&fills_seen), 0);
    ck_assert_int_eq(r3_pull_start(p), 0);
    ck_assert_int_eq(r3_pull_start(p), 0);                 /* idempotent */
    ck_assert_int_eq(r3_pull_wait(p), 0);
    ck_assert_int_eq(r3_pull_progress(p, &pr), 0);
    ck_assert_uint_eq(pr.chunks_pulled, 16);
    ck_assert(pr.done);
    ck_assert_int_eq(atomic_load(&fills_seen), 16);
    int mine = getpriority(PRIO_PROCESS, 0);
    ck_assert_int_eq(atomic_load(&fill_nice), mine + 10 > 19 ? 19 : mine + 10);
    r3_source_close(p);

    /* never started: close stops the held workers; wait lets them go */
    for (int how = 0; how < 2; how++) {
        r = rec_new(16 * CH, CH, 5);
        ck_assert_int_eq(r3_mem_create(16 * CH, &local), 0);
        ck_assert_int_eq(r3_stage_cache_open(&r->src, local, &co, &c), 0);
        ck_assert_int_eq(r3_stage_pull_open(c, &po, &p), 0);
        if (how == 1) {
            ck_assert_int_eq(r3_pull_wait(p), 0);
            ck_assert_int_eq(r3_pull_progress(p, &pr), 0);
            ck_assert_uint_eq(pr.chunks_local, 16);
        }
        r3_source_close(p);
    }
    ck_assert_int_eq(r3_pull_start(NULL), -EINVAL);
}
END_TEST

static int collect_calls;
static int mark_chunk_7(void *arg, struct r3_source *push)
{
    collect_calls++;
    r3_push_mark(push, 7);
    return 0;
}

START_TEST(test_push)
{
    struct rec *remote = rec_new(4 * MiB, CH, 0);
    struct r3_source *inner, *p;
    ck_assert_int_eq(r3_mem_create(4 * MiB, &inner), 0);
    struct r3_push_opts o = { .chunk = CH, .workers = 3, .collect = mark_chunk_7 };
    ck_assert_int_eq(r3_stage_push_open(inner, &remote->src, &o, &p), 0);
    char *buf = malloc(MiB);
    tu_fill(buf, 300000, 5000, 8);
    ck_assert_int_eq(r3_source_write(p, buf, 300000, 5000), 0);
    struct r3_push_progress pr;
    r3_push_progress(p, &pr);
    ck_assert_uint_eq(pr.chunks_dirty, 5);                  /* chunks 0..4 */
    ck_assert_int_eq(atomic_load(&remote->writes), 0);      /* nothing pushed yet */
    ck_assert_int_eq(r3_source_flush(p), 0);
    expect_pattern(remote->mem, 5000, 300000, 8);
    r3_push_progress(p, &pr);
    ck_assert_uint_eq(pr.chunks_pushed, 6);                 /* 0..4 + collected 7 */
    ck_assert_uint_eq(pr.chunks_dirty, 0);
    ck_assert_int_eq(collect_calls, 1);
    ck_assert_int_eq(atomic_load(&remote->misaligned), 0);
    /* A failing remote: flush fails, the chunks stay dirty, a later flush succeeds. */
    tu_fill(buf, 10, 2 * MiB, 9);
    ck_assert_int_eq(r3_source_write(p, buf, 10, 2 * MiB), 0);
    atomic_store(&remote->fail, 1);
    ck_assert_int_lt(r3_source_flush(p), 0);
    atomic_store(&remote->fail, 0);
    ck_assert_int_eq(r3_source_flush(p), 0);
    expect_pattern(remote->mem, 2 * MiB, 10, 9);
    r3_source_close(p);
    r3_source_close(&remote->src);
    free(buf);
}
END_TEST

START_TEST(test_push_interval)
{
    struct rec *remote = rec_new(MiB, CH, 0);
    struct r3_source *inner, *p;
    ck_assert_int_eq(r3_mem_create(MiB, &inner), 0);
    struct r3_push_opts o = { .chunk = CH, .workers = 2, .interval_ms = 20 };
    ck_assert_int_eq(r3_stage_push_open(inner, &remote->src, &o, &p), 0);
    char buf[100];
    tu_fill(buf, sizeof buf, 70000, 6);
    ck_assert_int_eq(r3_source_write(p, buf, sizeof buf, 70000), 0);
    struct r3_push_progress pr = { 0 };
    for (int i = 0; i < 500 && pr.chunks_pushed == 0; i++) {
        usleep(10000);
        r3_push_progress(p, &pr);
    }
    ck_assert_uint_eq(pr.chunks_pushed, 1);
    expect_pattern(remote->mem, 70000, sizeof buf, 6);
    r3_source_close(p);
    r3_source_close(&remote->src);
}
END_TEST

struct locker { struct r3_source *s; _Atomic int done; _Atomic pid_t tid; };

static void *lock_reader(void *arg)
{
    struct locker *l = arg;
    char b[16];
    atomic_store(&l->tid, (pid_t)syscall(SYS_gettid));
    ck_assert_int_eq(r3_source_read(l->s, b, sizeof b, 0), 0);
    atomic_store(&l->done, 1);
    return NULL;
}

/* The kernel's word for a thread of this process: 'S' once it sleeps (on the lock). */
static char thread_state(pid_t tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : '?';
}

START_TEST(test_lock)
{
    struct r3_source *m, *l;
    ck_assert_int_eq(r3_mem_create(MiB, &m), 0);
    ck_assert_int_eq(r3_stage_lock_open(m, &l), 0);
    r3_lock_acquire(l);
    struct locker lk = { l, 0, 0 };
    pthread_t t;
    pthread_create(&t, NULL, lock_reader, &lk);
    /* wait for the event (the reader asleep in the kernel, its read not
     * done), not a time: a lock that does not block ends the read instead */
    char st = '?';
    for (int i = 0; i < 20000 && !atomic_load(&lk.done); i++) {
        if (atomic_load(&lk.tid) && (st = thread_state(atomic_load(&lk.tid))) == 'S')
            break;
        usleep(500);
    }
    ck_assert_int_eq(atomic_load(&lk.done), 0);             /* blocked while held */
    ck_assert_msg(st == 'S', "the reader never went to sleep on the held lock (state %c)", st);
    r3_lock_release(l);
    pthread_join(t, NULL);
    ck_assert_int_eq(atomic_load(&lk.done), 1);
    r3_source_close(l);
}
END_TEST

static void *delay_reader(void *arg)
{
    char b[16];
    ck_assert_int_eq(r3_source_read(arg, b, sizeof b, 0), 0);
    return NULL;
}

/* Below the delay stage: each read waits (up to 20 s) until all 8 reads are
 * inside at once. If the stage let only one through at a time, they never
 * would be: concurrency is seen as an event, not guessed from a clock. */
struct gate {
    struct r3_source src;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived, inside, together;
    struct timespec dl;
};

static int gate_read(struct r3_source *s, void *b, size_t len, uint64_t off)
{
    struct gate *g = (struct gate *)s;
    pthread_mutex_lock(&g->mu);
    if (g->arrived == 0) {                     /* one deadline for all: 20 s after the first */
        clock_gettime(CLOCK_REALTIME, &g->dl);
        g->dl.tv_sec += 20;
    }
    struct timespec dl = g->dl;
    g->arrived++;
    if (++g->inside == 8) {                    /* all 8 in here at the same time */
        g->together = 1;
        pthread_cond_broadcast(&g->cv);
    }
    while (!g->together && pthread_cond_timedwait(&g->cv, &g->mu, &dl) == 0)
        ;
    g->inside--;
    pthread_mutex_unlock(&g->mu);
    memset(b, 0, len);
    return 0;
}

static int gate_write(struct r3_source *s, const void *b, size_t len, uint64_t off) { return 0; }
static int gate_flush(struct r3_source *s) { return 0; }
static void gate_close(struct r3_source *s) { }

static const struct r3_source_ops gate_ops = {
    .scheme = "gate", .read = gate_read, .write = gate_write, .flush = gate_flush, .close = gate_close,
};

START_TEST(test_delay_stats)
{
    struct r3_source *d, *st;
    static struct gate g = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
    g.src = (struct r3_source){ .ops = &gate_ops, .size = MiB, .align = 1, .flags = R3_SRC_PARALLEL };
    g.arrived = g.inside = g.together = 0;
    ck_assert_int_eq(r3_stage_delay_open(&g.src, 400000, &d), 0);
    ck_assert_int_eq(r3_stage_stats_open(d, &st), 0);
    uint64_t t0 = r3_now_ns();
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, delay_reader, st);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    uint64_t el = r3_now_ns() - t0;
    /* Each read waits 400 ms (a lower bound no load can break), and all 8
     * were inside the source below at once. */
    ck_assert_uint_ge(el, 400000000u);
    ck_assert_msg(g.together, "8 delayed reads never overlapped (%d arrived): not concurrent", g.arrived);
    char b[4096];
    ck_assert_int_eq(r3_source_write(st, b, sizeof b, 0), 0);
    ck_assert_int_eq(r3_source_read(st, b, 1, MiB), -EINVAL);   /* bounded before the stage */
    struct r3_stats s;
    r3_stats_get(st, &s);
    ck_assert_uint_eq(s.reads, 8);
    ck_assert_uint_eq(s.writes, 1);
    ck_assert_uint_eq(s.bytes_read, 8 * 16);
    ck_assert_uint_eq(s.bytes_written, 4096);
    uint64_t p50 = r3_stats_percentile_ns(&s, 50);
    ck_assert_uint_ge(p50, 400000000u);
    ck_assert_uint_le(p50, 1u << 31);
    ck_assert_int_eq(r3_stage_delay_open(&g.src, 61000000ull, &d), -EINVAL);
    r3_source_close(st);
}
END_TEST

START_TEST(test_pipeline)
{
    uint64_t size = 16 * MiB;
    struct rec *r = rec_new(size, 256 * 1024, 13);
    struct r3_pipeline *p;
    struct r3_pipeline_opts o = {
        .chunk = 256 * 1024, .pull_workers = 4, .push_workers = 2, .stats = true, .delay_us = 100,
    };
    ck_assert_int_eq(r3_pipeline_open(&r->src, &o, &p), 0);
    ck_assert_ptr_nonnull(p->cache);
    ck_assert_ptr_nonnull(p->pull);
    ck_assert_ptr_eq(p->top, p->push);
    expect_pattern(p->top, 12345, 3 * MiB, 13);
    ck_assert_int_eq(r3_pull_wait(p->pull), 0);
    ck_assert_int_eq(atomic_load(&r->reads), (int)(size / (256 * 1024)));
    /* Write pieces, flush: the remote equals what was written. */
    char *buf = malloc(MiB);
    tu_fill(buf, MiB, 5 * MiB + 3, 14);
    ck_assert_int_eq(r3_source_write(p->top, buf, MiB, 5 * MiB + 3), 0);
    ck_assert_int_eq(atomic_load(&r->writes), 0);              /* write-back, not through */
    ck_assert_int_eq(r3_source_flush(p->top), 0);
    expect_pattern(r->mem, 5 * MiB + 3, MiB, 14);
    expect_pattern(r->mem, 0, 5 * MiB + 3, 13);
    ck_assert_int_eq(atomic_load(&r->misaligned), 0);
    struct r3_stats s;
    r3_stats_get(p->stats, &s);
    ck_assert_uint_eq(s.writes, 5);                              /* 5 chunks touched */
    r3_pipeline_close(p);
    free(buf);
}
END_TEST

START_TEST(test_pipeline_dir_reopen)
{
    char *tmp = tu_tmpdir(), uri[600];
    snprintf(uri, sizeof uri, "dir://%s/d?size=8M&chunk=64K", tmp);
    struct r3_source *s;
    struct r3_pipeline *p;
    TU_OPEN(uri, &s);
    struct r3_pipeline_opts o = { .chunk = CH, .push_workers = 2 };
    ck_assert_int_eq(r3_pipeline_open(s, &o, &p), 0);
    char *buf = malloc(MiB);
    tu_fill(buf, MiB, 3 * MiB - 7, 15);
    ck_assert_int_eq(r3_source_write(p->top, buf, MiB, 3 * MiB - 7), 0);
    ck_assert_int_eq(r3_source_flush(p->top), 0);
    r3_pipeline_close(p);
    snprintf(uri, sizeof uri, "dir://%s/d", tmp);
    TU_OPEN(uri, &s);
    expect_pattern(s, 3 * MiB - 7, MiB, 15);
    r3_source_close(s);
    free(buf);
    tu_rmrf(tmp);
    free(tmp);
}
END_TEST

/* A source that is not parallel and catches any two calls inside it at once. */
struct solo {
    struct r3_source src;
    struct r3_source *mem;
    _Atomic int inside, overlaps, calls;
};

static int solo_enter(struct solo *o)
{
    if (atomic_fetch_add(&o->inside, 1) != 0)
        atomic_fetch_add(&o->overlaps, 1);
    atomic_fetch_add(&o->calls, 1);
    usleep(200);                               /* widen the window */
    return 0;
}

static int solo_read(struct r3_source *s, void *b, size_t len, uint64_t off)
{
    struct solo *o = (struct solo *)s;
    solo_enter(o);
    int rc = r3_source_read(o->mem, b, len, off);
    atomic_fetch_sub(&o->inside, 1);
    return rc;
}

static int solo_write(struct r3_source *s, const void *b, size_t len, uint64_t off)
{
    struct solo *o = (struct solo *)s;
    solo_enter(o);
    int rc = r3_source_write(o->mem, b, len, off);
    atomic_fetch_sub(&o->inside, 1);
    return rc;
}

static int solo_flush(struct r3_source *s)
{
    struct solo *o = (struct solo *)s;
    solo_enter(o);
    atomic_fetch_sub(&o->inside, 1);
    return 0;
}

static void solo_close(struct r3_source *s)
{
    r3_source_close(((struct solo *)s)->mem);
    free(s);
}

static const struct r3_source_ops solo_ops = {
    .scheme = "solo", .read = solo_read, .write = solo_write, .flush = solo_flush, .close = solo_close,
};

static struct solo *solo_new(uint64_t size)
{
    struct solo *o = calloc(1, sizeof *o);
    ck_assert_int_eq(r3_mem_create(size, &o->mem), 0);
    o->src.ops = &solo_ops;
    o->src.size = size;
    o->src.align = 1;
    o->src.flags = 0;                          /* not R3_SRC_PARALLEL */
    return o;
}

struct hammer { struct r3_source *s; unsigned seed; };

static void *hammer(void *arg)
{
    struct hammer *h = arg;
    char b[3 * 4096];
    for (int i = 0; i < 60; i++) {
        uint64_t off = (uint64_t)((h->seed * 7919u + (unsigned)i * 104729u) % (4 * MiB - sizeof b));
        if (i % 3 == 0)
            ck_assert_int_eq(r3_source_write(h->s, b, sizeof b, off), 0);
        else if (i % 7 == 0)
            ck_assert_int_eq(r3_source_flush(h->s), 0);
        else
            ck_assert_int_eq(r3_source_read(h->s, b, sizeof b, off), 0);
    }
    return NULL;
}

static void run_hammer(struct r3_source *s)
{
    pthread_t t[8];
    struct hammer h[8];
    for (unsigned i = 0; i < 8; i++) {
        h[i] = (struct hammer){ s, i + 1 };
        pthread_create(&t[i], NULL, hammer, &h[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
}

/* One serialization point: a non-parallel source never sees two calls at
 * once, whether called directly, through chunk, or through cache, and the
 * stages above it are parallel. */
START_TEST(test_serialized)
{
    struct solo *o = solo_new(4 * MiB);
    run_hammer(&o->src);
    ck_assert_int_gt(atomic_load(&o->calls), 400);
    ck_assert_int_eq(atomic_load(&o->overlaps), 0);

    struct r3_source *c, *cache;
    ck_assert_int_eq(r3_stage_chunk_open(&o->src, CH, &c), 0);
    ck_assert(c->flags & R3_SRC_PARALLEL);
    struct solo *lo = solo_new(4 * MiB);       /* a non-parallel local side too */
    struct r3_cache_opts co;
    r3_cache_opts_init(&co);
    co.chunk = CH;
    ck_assert_int_eq(r3_stage_cache_open(c, &lo->src, &co, &cache), 0);
    ck_assert(cache->flags & R3_SRC_PARALLEL);
    atomic_store(&o->calls, 0);
    run_hammer(cache);
    ck_assert_int_gt(atomic_load(&o->calls), 0);
    ck_assert_int_gt(atomic_load(&lo->calls), 0);
    ck_assert_int_eq(atomic_load(&o->overlaps), 0);
    ck_assert_int_eq(atomic_load(&lo->overlaps), 0);
    r3_source_close(cache);
}
END_TEST

/* A stage that fills only read (it inverts every byte): write and flush fall
 * through to next, close is the framework's. */
static int inv_read(struct r3_source *s, void *b, size_t len, uint64_t off)
{
    int rc = r3_source_read(s->next, b, len, off);
    for (size_t i = 0; rc == 0 && i < len; i++)
        ((unsigned char *)b)[i] ^= 0xff;
    return rc;
}

static const struct r3_source_ops inv_ops = { .scheme = "inv", .read = inv_read };

START_TEST(test_fall_through)
{
    struct rec *r = rec_new(MiB, 0, 0);
    struct r3_source *inv = calloc(1, sizeof *inv);
    r3_stage_init(inv, &inv_ops, &r->src);
    ck_assert_uint_eq(inv->size, MiB);
    unsigned char b[100], back[100];
    tu_fill(b, sizeof b, 500, 21);
    ck_assert_int_eq(r3_source_write(inv, b, sizeof b, 500), 0);      /* falls through */
    ck_assert_int_eq(atomic_load(&r->writes), 1);
    expect_pattern(r->mem, 500, sizeof b, 21);                         /* the bytes as given */
    ck_assert_int_eq(r3_source_read(inv, back, sizeof back, 500), 0);  /* the stage's op */
    for (size_t i = 0; i < sizeof b; i++)
        ck_assert_int_eq(back[i], b[i] ^ 0xff);
    ck_assert_int_eq(r3_source_flush(inv), 0);
    ck_assert_ptr_eq(r3_source_find(inv, "rec"), &r->src);
    ck_assert_ptr_eq(r3_source_find(inv, "inv"), inv);
    ck_assert_ptr_null(r3_source_find(inv, "cache"));
    /* A read-only inner stays read-only through the stage. */
    r3_source_close(inv);                      /* closes rec too: ASan checks the frees */
    r = rec_new(MiB, 0, 0);
    r->src.flags |= R3_SRC_RDONLY;
    inv = calloc(1, sizeof *inv);
    r3_stage_init(inv, &inv_ops, &r->src);
    ck_assert_int_eq(r3_source_write(inv, b, 1, 0), -EROFS);
    r3_source_close(inv);
}
END_TEST

/* Control calls given the wrong kind of source: -EINVAL and a sentence. */
START_TEST(test_wrong_kind)
{
    struct r3_source *m, *c, *st;
    ck_assert_int_eq(r3_mem_create(MiB, &m), 0);
    ck_assert_int_eq(r3_lock_acquire(m), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "not a lock stage"));
    ck_assert_int_eq(r3_lock_release(m), -EINVAL);
    ck_assert_int_eq(r3_push_mark(m, 0), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "not a push stage"));
    struct r3_push_progress pp;
    ck_assert_int_eq(r3_push_progress(m, &pp), -EINVAL);
    struct r3_pull_progress pr;
    ck_assert_int_eq(r3_pull_progress(m, &pr), -EINVAL);
    ck_assert_int_eq(r3_pull_stop(m), -EINVAL);
    ck_assert_int_eq(r3_pull_wait(m), -EINVAL);
    ck_assert_int_eq(r3_cache_invalidate(m, 0), -EINVAL);
    ck_assert_int_eq(r3_cache_mark_local(m, 0), -EINVAL);
    ck_assert_int_eq(r3_cache_fetch(m, 0, R3_FETCH_READ), -EINVAL);
    struct r3_stats s;
    ck_assert_int_eq(r3_stats_get(m, &s), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "mem is not a stats stage"));
    ck_assert_int_eq(r3_stage_stats_open(m, &st), 0);
    ck_assert_int_eq(r3_stats_get(st, &s), 0);
    struct r3_source *local;
    ck_assert_int_eq(r3_mem_create(MiB, &local), 0);
    ck_assert_int_eq(r3_stage_cache_open(st, local, NULL, &c), 0);
    ck_assert_int_eq(r3_cache_invalidate(c, 16), -EINVAL);     /* 16 chunks: 0..15 */
    ck_assert_int_eq(r3_cache_invalidate(c, 15), 0);
    ck_assert_int_eq(r3_cache_mark_local(c, 15), 0);
    ck_assert(r3_cache_is_local(c, 15));
    ck_assert_int_eq(r3_lock_acquire(c), -EINVAL);
    r3_source_close(c);
}
END_TEST

/* struct_size: 0 and sizeof are fine, anything else is refused. */
START_TEST(test_opts_size)
{
    struct r3_source *m, *local, *c, *p;
    ck_assert_int_eq(r3_mem_create(MiB, &m), 0);
    ck_assert_int_eq(r3_mem_create(MiB, &local), 0);
    struct r3_cache_opts co;
    r3_cache_opts_init(&co);
    ck_assert_uint_eq(co.struct_size, sizeof co);
    co.struct_size = 8;
    ck_assert_int_eq(r3_stage_cache_open(m, local, &co, &c), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "r3_cache_opts"));
    co.struct_size = 0;
    ck_assert_int_eq(r3_stage_cache_open(m, local, &co, &c), 0);
    struct r3_pull_opts po;
    r3_pull_opts_init(&po);
    po.struct_size = sizeof po + 8;
    ck_assert_int_eq(r3_stage_pull_open(c, &po, &p), -EINVAL);
    struct r3_push_opts pu;
    r3_push_opts_init(&pu);
    pu.struct_size = 4;
    ck_assert_int_eq(r3_stage_push_open(c, c, &pu, &p), -EINVAL);
    r3_source_close(c);
    struct r3_pipeline_opts o;
    r3_pipeline_opts_init(&o);
    ck_assert_uint_eq(o.struct_size, sizeof o);
    o.struct_size = 12;
    struct r3_pipeline *pl;
    ck_assert_int_eq(r3_mem_create(MiB, &m), 0);
    ck_assert_int_eq(r3_pipeline_open(m, &o, &pl), -EINVAL);   /* and m is closed (ASan) */
}
END_TEST

START_TEST(test_pipeline_spec)
{
    uint64_t size = 8 * MiB;
    struct rec *r = rec_new(size, 256 * 1024, 31);
    struct r3_pipeline *p;
    const char *spec = "delay:us=100,stats,chunk:size=256K,cache,pull:workers=3,push:workers=2,"
                       "interval=1s,lock";
    ck_assert_int_eq(r3_pipeline_parse(spec, &r->src, &p), 0);
    ck_assert_ptr_nonnull(p->stats);
    ck_assert_ptr_nonnull(p->cache);
    ck_assert_ptr_nonnull(p->pull);
    ck_assert_ptr_nonnull(p->push);
    ck_assert_ptr_eq(p->top, p->lock);
    ck_assert_ptr_eq(p->top->next, p->push);
    ck_assert_ptr_eq(r3_source_find(p->top, "delay")->next, &r->src);
    ck_assert_uint_eq(r3_cache_chunk(p->cache), 256 * 1024);
    ck_assert_int_eq(r3_pull_wait(p->pull), 0);
    expect_pattern(p->top, 77, 2 * MiB, 31);
    char *buf = malloc(MiB);
    tu_fill(buf, MiB, 3 * MiB + 5, 32);
    ck_assert_int_eq(r3_source_write(p->top, buf, MiB, 3 * MiB + 5), 0);
    ck_assert_int_eq(atomic_load(&r->writes), 0);           /* push above: the cache keeps writes */
    ck_assert_int_eq(r3_lock_acquire(p->lock), 0);
    ck_assert_int_eq(r3_lock_release(p->lock), 0);
    ck_assert_int_eq(r3_source_flush(p->top), 0);
    expect_pattern(r->mem, 3 * MiB + 5, MiB, 32);
    expect_pattern(r->mem, 0, 3 * MiB + 5, 31);
    ck_assert_int_eq(atomic_load(&r->misaligned), 0);
    struct r3_stats s;
    ck_assert_int_eq(r3_stats_get(p->stats, &s), 0);
    ck_assert_uint_eq(s.reads, size / (256 * 1024));
    r3_pipeline_close(p);
    free(buf);

    /* Only some stages: a delay and stats over the remote, no cache. */
    r = rec_new(MiB, 0, 33);
    ck_assert_int_eq(r3_pipeline_parse("delay:time=1ms,stats", &r->src, &p), 0);
    ck_assert_ptr_null(p->cache);
    ck_assert_ptr_eq(p->top, p->stats);
    expect_pattern(p->top, 0, MiB, 33);
    r3_pipeline_close(p);

    /* A cache without push writes through; its chunk comes from chunk:size. */
    r = rec_new(2 * MiB, 128 * 1024, 34);
    ck_assert_int_eq(r3_pipeline_parse("chunk:size=128K,cache", &r->src, &p), 0);
    ck_assert_uint_eq(r3_cache_chunk(p->cache), 128 * 1024);
    tu_fill(buf = malloc(5000), 5000, 4000, 35);
    ck_assert_int_eq(r3_source_write(p->top, buf, 5000, 4000), 0);
    expect_pattern(r->mem, 4000, 5000, 35);
    ck_assert_int_eq(atomic_load(&r->misaligned), 0);
    r3_pipeline_close(p);
    free(buf);
}
END_TEST

START_TEST(test_pipeline_spec_bad)
{
    static const struct { const char *spec, *says; } bad[] = {
        { "", "no stage" },
        { "cache,frob", "unknown stage 'frob'" },
        { "cache,pull,cache", "'cache' appears twice" },
        { "pull,cache", "pull must come right after cache" },
        { "cache,stats,pull", "pull must come right after cache" },
        { "push", "push must come right after cache" },
        { "delay", "delay needs its time" },
        { "delay:us=abc", "delay:us=abc is not a whole number" },
        { "delay:time=10", "needs a unit" },
        { "push:interval=500", "push:interval=500 duration '500' needs a unit" },
        { "cache,push:interval=5parsecs", "unknown unit" },
        { "chunk:size=3K", "chunk:size=3K is not a power of two" },
        { "cache:chunk=1T", "is not a power of two between 4K and 1G" },
        { "cache,pull:workers=0", "pull:workers=0 is not a number of workers" },
        { "cache,pull:threads=4", "stage 'pull' has no parameter 'threads' (it takes: workers=N)" },
        { "stats:x=1", "stage 'stats' has no parameter 'x'" },
        { "workers=4,cache", "'workers=4' comes before any stage" },
        { "cache,,pull", "an empty stage" },
        { "cache,", "an empty stage" },
        { "cache:chunk", "'chunk' in stage 'cache' is not key=value" },
        { "cache:chunk=", "is not key=value" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct r3_source *m;
        struct r3_pipeline *p = (void *)1;
        ck_assert_int_eq(r3_mem_create(MiB, &m), 0);
        ck_assert_msg(r3_pipeline_parse(bad[i].spec, m, &p) == -EINVAL, "'%s' accepted", bad[i].spec);
        ck_assert_ptr_null(p);
        ck_assert_msg(strstr(r3_last_error(), bad[i].says), "'%s': got '%s', want '%s'", bad[i].spec,
                      r3_last_error(), bad[i].says);
        char quoted[200];
        snprintf(quoted, sizeof quoted, "pipeline '%s'", bad[i].spec);
        ck_assert_msg(strstr(r3_last_error(), quoted), "'%s' not named in '%s'", bad[i].spec,
                      r3_last_error());
    }
    /* The spec and the stage fields together, or a local with no cache. */
    struct r3_source *m, *local;
    struct r3_pipeline *p;
    struct r3_pipeline_opts o;
    r3_pipeline_opts_init(&o);
    o.spec = "cache";
    o.pull_workers = 2;
    ck_assert_int_eq(r3_mem_create(MiB, &m), 0);
    ck_assert_int_eq(r3_pipeline_open(m, &o, &p), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "leave chunk"));
    r3_pipeline_opts_init(&o);
    o.spec = "stats";
    ck_assert_int_eq(r3_mem_create(MiB, &m), 0);
    ck_assert_int_eq(r3_mem_create(MiB, &local), 0);
    o.local = local;
    ck_assert_int_eq(r3_pipeline_open(m, &o, &p), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "no cache stage"));
    /* A stage that fails to open (delay over a minute) closes what was built. */
    ck_assert_int_eq(r3_mem_create(MiB, &m), 0);
    ck_assert_int_eq(r3_pipeline_parse("stats,delay:ms=61000", m, &p), -EINVAL);
}
END_TEST

START_TEST(test_durations)
{
    uint64_t v;
    ck_assert_int_eq(r3_util_parse_duration_ms("500ms", &v), 0);
    ck_assert_uint_eq(v, 500);
    ck_assert_int_eq(r3_util_parse_duration_ms("2s", &v), 0);
    ck_assert_uint_eq(v, 2000);
    ck_assert_int_eq(r3_util_parse_duration_ms("1.5s", &v), 0);
    ck_assert_uint_eq(v, 1500);
    ck_assert_int_eq(r3_util_parse_duration_ms("2m", &v), 0);
    ck_assert_uint_eq(v, 120000);
    ck_assert_int_eq(r3_util_parse_duration_ms("10us", &v), 0);
    ck_assert_uint_eq(v, 1);                                    /* rounded up, not 0 */
    ck_assert_int_eq(r3_util_parse_duration_ms("0ms", &v), 0);
    ck_assert_uint_eq(v, 0);
    ck_assert_int_eq(r3_util_parse_duration_us("10000us", &v), 0);
    ck_assert_uint_eq(v, 10000);
    ck_assert_int_eq(r3_util_parse_duration_us("10ms", &v), 0);
    ck_assert_uint_eq(v, 10000);
    ck_assert_int_eq(r3_util_parse_duration_ms("500", &v), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "needs a unit"));
    static const char *const bad[] = { "", "ms", "-1s", "1h", "5 s", "1e300s", "s5", NULL };
    for (int i = 0; bad[i]; i++)
        ck_assert_msg(r3_util_parse_duration_ms(bad[i], &v) == -EINVAL, "'%s' accepted", bad[i]);
    ck_assert_int_eq(r3_parse_size("64K", &v), 0);
    ck_assert_uint_eq(v, 65536);
    ck_assert_int_eq(r3_parse_size("3X", &v), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "unknown suffix"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stages");
    TCase *tc = tcase_create("stages");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_chunk);
    tcase_add_test(tc, test_cache_read_once);
    tcase_add_test(tc, test_cache_write_through);
    tcase_add_test(tc, test_pull_races_readers);
    tcase_add_test(tc, test_pull_priority);
    tcase_add_test(tc, test_pull_held);
    tcase_add_test(tc, test_push);
    tcase_add_test(tc, test_push_interval);
    tcase_add_test(tc, test_lock);
    tcase_add_test(tc, test_delay_stats);
    tcase_add_test(tc, test_pipeline);
    tcase_add_test(tc, test_pipeline_dir_reopen);
    tcase_add_test(tc, test_serialized);
    tcase_add_test(tc, test_fall_through);
    tcase_add_test(tc, test_wrong_kind);
    tcase_add_test(tc, test_opts_size);
    tcase_add_test(tc, test_pipeline_spec);
    tcase_add_test(tc, test_pipeline_spec_bad);
    tcase_add_test(tc, test_durations);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
