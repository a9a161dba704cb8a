/* SPDX-License-Identifier: BSD-3-Clause */
/* The refusals of the stages and of the source framework, each with its
 * sentence: a stage's functions called on a source of another kind (or
 * NULL), chunk indexes past the end, stage opens with a bad chunk size, a
 * local or remote that is too small or read-only, an alignment the chunk
 * stage cannot meet, a delay over a minute, options of a newer libr3, the
 * pipeline's spec-versus-options and local-without-cache refusals; and the
 * framework's range, alignment, read-only and missing-operation answers
 * and its extent clamping, against a scripted source. The cache's access
 * order and peek are read back after known reads. */
#include <errno.h>
#include "testutil.h"
#include "internal.h"
#include <r3/stage.h>
#include <r3/region.h>

#define ERR_IS(want) ck_assert_msg(strcmp(r3_last_error(), (want)) == 0, "error: '%s', not '%s'", \
                                   r3_last_error(), (want))

/* A scripted source: its flags, alignment and extent answer are the
 * test's; read/write are on a small buffer. */
struct fake {
    struct r3_source src;
    bool fail_reads;
    unsigned char data[32768];
    int extent_rc;
    uint64_t extent_run;
    unsigned closed;
};
static int fake_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    if (((struct fake *)s)->fail_reads)
        return r3_error(-EIO, "fake: read of %zu bytes at %llu failed", len, (unsigned long long)off);
    memcpy(buf, ((struct fake *)s)->data + off, len);
    return 0;
}
static int fake_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    memcpy(((struct fake *)s)->data + off, buf, len);
    return 0;
}
static int fake_extent(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    (void)off;
    (void)len;
    struct fake *f = (struct fake *)s;
    *run = f->extent_run;
    return f->extent_rc;
}
static void fake_close(struct r3_source *s) { ((struct fake *)s)->closed++; }
static const struct r3_source_ops fake_ops = {
    .scheme = "fake", .read = fake_read, .write = fake_write, .extent = fake_extent, .close = fake_close,
};
static const struct r3_source_ops bare_ops = { .scheme = "bare", .close = fake_close };

static struct fake *fake_new(const struct r3_source_ops *ops, uint64_t size, unsigned align, unsigned flags)
{
    struct fake *f = calloc(1, sizeof *f);
    ck_assert_ptr_nonnull(f);
    f->src = (struct r3_source){ .ops = ops, .size = size, .align = align, .flags = flags };
    return f;
}

static void fake_free(struct fake *f)
{
    r3_source_close(&f->src);
    ck_assert_uint_eq(f->closed, 1);
    free(f);
}

START_TEST(wrong_kind)
{
    struct r3_source *m;
    TU_OPEN("mem:?size=1M", &m);
    uint64_t *l = NULL;
    size_t n;
    bool local;
    char b[4];
    ck_assert_int_eq(r3_cache_fetch(m, 0, R3_FETCH_READ), -EINVAL);
    ERR_IS("cache: mem is not a cache stage");
    ck_assert_int_eq(r3_cache_fetch(NULL, 0, R3_FETCH_READ), -EINVAL);
    ERR_IS("cache: NULL is not a cache stage");
    ck_assert_int_eq(r3_cache_record_order(m), -EINVAL);
    ERR_IS("cache: mem is not a cache stage");
    ck_assert_int_eq(r3_cache_access_order(m, &l, &n), -EINVAL);
    ck_assert_ptr_null(l);
    ck_assert_int_eq(r3_cache_peek(m, b, 1, 0, &local), -EINVAL);
    ERR_IS("cache: mem is not a cache stage");
    ck_assert_uint_eq(r3_cache_nchunks(m), 0);
    ck_assert_int_eq(r3_lock_acquire(m), -EINVAL);
    ERR_IS("lock: mem is not a lock stage");
    ck_assert_int_eq(r3_lock_release(NULL), -EINVAL);
    ERR_IS("lock: NULL is not a lock stage");
    ck_assert_int_eq(r3_push_mark(m, 0), -EINVAL);
    ERR_IS("push: mem is not a push stage");
    ck_assert_int_eq(r3_push_track(NULL, R3_TRACK_START, NULL, NULL), -EINVAL);
    ERR_IS("push: NULL is not a push stage");
    struct r3_pull_progress pp;
    ck_assert_int_eq(r3_pull_progress(m, &pp), -EINVAL);
    ERR_IS("pull: mem is not a pull stage");
    struct r3_source *out = NULL;
    ck_assert_int_eq(r3_stage_pull_open(m, NULL, &out), -EINVAL);
    ck_assert_ptr_null(out);
    ERR_IS("pull: the inner source must be a cache stage");
    r3_source_close(m);
}
END_TEST

START_TEST(open_refusals)
{
    struct r3_source *m, *out = NULL;
    TU_OPEN("mem:?size=1M", &m);
    struct fake *small = fake_new(&fake_ops, 4096, 1, 0);
    struct fake *ro = fake_new(&fake_ops, 2u << 20, 1, R3_SRC_RDONLY);
    struct fake *al = fake_new(&fake_ops, 1u << 20, 4096, 0);
    struct fake *odd = fake_new(&fake_ops, 1u << 20, 3, 0);

    struct r3_cache_opts co;
    r3_cache_opts_init(&co);
    co.chunk = 1000;
    ck_assert_int_eq(r3_stage_cache_open(m, &small->src, &co, &out), -EINVAL);
    ERR_IS("cache: chunk 1000 is not a power of two of at least 512");
    co.chunk = 256;
    ck_assert_int_eq(r3_stage_cache_open(m, &small->src, &co, &out), -EINVAL);
    ERR_IS("cache: chunk 256 is not a power of two of at least 512");
    ck_assert_int_eq(r3_stage_cache_open(m, &small->src, NULL, &out), -EINVAL);
    ERR_IS("cache: the local source (4096 bytes) is smaller than the remote (1048576)");
    ck_assert_int_eq(r3_stage_cache_open(m, &ro->src, NULL, &out), -EINVAL);
    ERR_IS("cache: the local source is read-only");
    co.struct_size = 3;
    ck_assert_int_eq(r3_stage_cache_open(m, &ro->src, &co, &out), -EINVAL);
    ck_assert_msg(strncmp(r3_last_error(), "struct r3_cache_opts has struct_size 3, but this libr3 "
                          "knows only ", 55) == 0, "%s", r3_last_error());

    ck_assert_int_eq(r3_stage_chunk_open(m, 1000, &out), -EINVAL);
    ERR_IS("chunk: size 1000 is not a power of two of at least 512");
    ck_assert_int_eq(r3_stage_chunk_open(&al->src, 512, &out), -EINVAL);
    ERR_IS("chunk: 512 does not fit the inner alignment 4096");
    ck_assert_int_eq(r3_stage_chunk_open(&odd->src, 4096, &out), -EINVAL);
    ERR_IS("chunk: 4096 does not fit the inner alignment 3");

    ck_assert_int_eq(r3_stage_delay_open(m, 60000001, &out), -EINVAL);
    ERR_IS("delay: 60000001 us is more than a minute");

    struct r3_push_opts po;
    r3_push_opts_init(&po);
    po.chunk = 100;
    ck_assert_int_eq(r3_stage_push_open(m, &ro->src, &po, &out), -EINVAL);
    ERR_IS("push: chunk 100 is not a power of two of at least 512");
    ck_assert_int_eq(r3_stage_push_open(m, &small->src, NULL, &out), -EINVAL);
    ERR_IS("push: the remote is smaller than the inner source");
    ck_assert_int_eq(r3_stage_push_open(m, &ro->src, NULL, &out), -EROFS);
    ERR_IS("push: the remote is read-only");
    po.struct_size = 1;
    ck_assert_int_eq(r3_stage_push_open(m, &ro->src, &po, &out), -EINVAL);
    struct r3_pull_opts plo;
    r3_pull_opts_init(&plo);
    plo.struct_size = 2;
    ck_assert_int_eq(r3_stage_pull_open(m, &plo, &out), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "struct r3_pull_opts has struct_size 2"), "%s", r3_last_error());
    ck_assert_ptr_null(out);

    /* none of them took what they were given */
    ck_assert_uint_eq(small->closed + ro->closed + al->closed + odd->closed, 0);
    fake_free(small);
    fake_free(ro);
    fake_free(al);
    fake_free(odd);
    r3_source_close(m);
}
END_TEST

START_TEST(cache_order_and_peek)
{
    struct r3_source *remote, *local, *c;
    TU_OPEN("mem:?size=1M", &remote);
    TU_OPEN("mem:?size=1M", &local);
    char *pat = malloc(1 << 20);
    tu_fill(pat, 1 << 20, 0, 7);
    ck_assert_int_eq(r3_source_write(remote, pat, 1 << 20, 0), 0);
    struct r3_cache_opts co;
    r3_cache_opts_init(&co);
    co.chunk = 65536;
    ck_assert_int_eq(r3_stage_cache_open(remote, local, &co, &c), 0);
    ck_assert_uint_eq(r3_cache_nchunks(c), 16);

    ck_assert_int_eq(r3_cache_fetch(c, 16, R3_FETCH_READ), -EINVAL);
    ERR_IS("cache: chunk 16 out of range (16 chunks)");
    ck_assert_int_eq(r3_cache_invalidate(c, 99), -EINVAL);
    ERR_IS("cache: chunk 99 out of range (16 chunks)");

    /* no order recorded: an empty list */
    uint64_t *l = NULL;
    size_t n = 9;
    ck_assert_int_eq(r3_cache_access_order(c, &l, &n), 0);
    ck_assert_uint_eq(n, 0);
    free(l);
    ck_assert_int_eq(r3_cache_record_order(c), 0);
    ck_assert_int_eq(r3_cache_record_order(c), 0);      /* twice: the same recorder */

    /* peek: not local yet, then local after a read; never across a chunk */
    char b[16], want[16];
    bool local_now = true;
    ck_assert_int_eq(r3_cache_peek(c, b, 16, 3 * 65536 + 8, &local_now), 0);
    ck_assert(!local_now);
    ck_assert_int_eq(r3_source_read(c, b, 16, 3 * 65536 + 8), 0);
    ck_assert_int_eq(tu_check(b, 16, 3 * 65536 + 8, 7), -1);
    memset(b, 0, sizeof b);
    ck_assert_int_eq(r3_cache_peek(c, b, 16, 3 * 65536 + 8, &local_now), 0);
    ck_assert(local_now);
    memcpy(want, pat + 3 * 65536 + 8, 16);
    ck_assert(memcmp(b, want, 16) == 0);
    ck_assert_int_eq(r3_cache_peek(c, b, 10, 65530, &local_now), -EINVAL);
    ERR_IS("cache: peek of 10 bytes at 65530 is not within one chunk");
    ck_assert_int_eq(r3_cache_peek(c, b, 1, 1 << 20, &local_now), -EINVAL);
    ERR_IS("cache: peek of 1 bytes at 1048576 is not within one chunk");

    /* the order of first reads: 3, then 1, then 9 (3 again does not count) */
    ck_assert_int_eq(r3_source_read(c, b, 4, 65536 + 100), 0);
    ck_assert_int_eq(r3_source_read(c, b, 4, 3 * 65536), 0);
    ck_assert_int_eq(r3_source_read(c, b, 4, 9 * 65536 + 1), 0);
    ck_assert_int_eq(r3_cache_access_order(c, &l, &n), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert(l[0] == 3 && l[1] == 1 && l[2] == 9);
    free(l);
    free(pat);
    r3_source_close(c);
}
END_TEST

/* pull: only the chunks with a priority >= 0, highest... lowest first; a
 * remote that fails makes the wait say so */
static int64_t even_only(void *arg, uint64_t chunk)
{
    (void)arg;
    return chunk % 2 ? -1 : (int64_t)(100 - chunk);
}

static void pull_over(bool fail, int want_rc, uint64_t want_pulled)
{
    struct fake *remote = fake_new(&fake_ops, 32768, 1, 0);
    remote->fail_reads = fail;
    for (int i = 0; i < 32768; i++)
        remote->data[i] = (unsigned char)(i / 4096 + 1);
    struct r3_source *local, *c, *p;
    TU_OPEN("mem:?size=32K&chunk=4K", &local);
    struct r3_cache_opts co;
    r3_cache_opts_init(&co);
    co.chunk = 4096;
    ck_assert_int_eq(r3_stage_cache_open(&remote->src, local, &co, &c), 0);
    struct r3_pull_opts po;
    r3_pull_opts_init(&po);
    po.workers = 2;
    po.priority = even_only;
    ck_assert_msg(r3_stage_pull_open(c, &po, &p) == 0, "%s", r3_last_error());
    ck_assert_int_eq(r3_pull_wait(p), want_rc);
    if (want_rc < 0)
        ERR_IS("pull: a background fetch failed");
    struct r3_pull_progress pp;
    ck_assert_int_eq(r3_pull_progress(p, &pp), 0);
    ck_assert_uint_eq(pp.chunks_pulled, want_pulled);
    for (uint64_t i = 0; i < 8; i++)           /* odd chunks were never asked for */
        ck_assert_msg(r3_cache_is_local(c, i) == (!fail && i % 2 == 0), "chunk %llu", (unsigned long long)i);
    if (!fail) {
        unsigned char b[4];
        ck_assert_int_eq(r3_source_read(local, b, 4, 4 * 4096), 0);   /* pulled into the local side */
        ck_assert_uint_eq(b[0], 5);
    }
    ck_assert_int_eq(r3_pull_stop(p), 0);
    ck_assert_int_eq(r3_pull_stop(p), 0);
    r3_source_close(p);                      /* and the cache, the remote, the local */
    ck_assert_uint_eq(remote->closed, 1);
    free(remote);
}

START_TEST(pull_priority_and_failure)
{
    pull_over(false, 0, 4);
    pull_over(true, -EIO, 0);
}
END_TEST

START_TEST(push_track)
{
    struct r3_source *inner, *remote, *p;
    TU_OPEN("mem:?size=1M", &inner);
    TU_OPEN("mem:?size=1M", &remote);
    struct r3_push_opts po;
    r3_push_opts_init(&po);
    po.chunk = 65536;
    ck_assert_int_eq(r3_stage_push_open(inner, remote, &po, &p), 0);
    ck_assert_int_eq(r3_push_mark(p, 16), -EINVAL);
    ERR_IS("push: chunk 16 out of range (16 chunks)");
    uint64_t *l = NULL;
    size_t n = 0;
    ck_assert_int_eq(r3_push_track(p, R3_TRACK_TAKE, &l, &n), -EINVAL);
    ERR_IS("push: writes are not being tracked");
    ck_assert_int_eq(r3_push_track(p, R3_TRACK_START, NULL, NULL), 0);
    ck_assert_int_eq(r3_push_track(p, R3_TRACK_TAKE, NULL, &n), -EINVAL);
    ERR_IS("push: bad track operation 2");
    ck_assert_int_eq(r3_push_track(p, 77, &l, &n), -EINVAL);
    ERR_IS("push: bad track operation 77");
    ck_assert_int_eq(r3_push_mark(p, 5), 0);
    ck_assert_int_eq(r3_push_mark(p, 2), 0);
    ck_assert_int_eq(r3_push_track(p, R3_TRACK_TAKE, &l, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert(l[0] == 2 && l[1] == 5);
    free(l);
    ck_assert_int_eq(r3_push_track(p, R3_TRACK_STOP, NULL, NULL), 0);
    ck_assert_int_eq(r3_push_track(p, R3_TRACK_TAKE, &l, &n), -EINVAL);
    ERR_IS("push: writes are not being tracked");
    r3_source_close(p);
    r3_source_close(remote);             /* the stage wraps inner; the remote stays ours */
}
END_TEST

START_TEST(pipeline_refusals)
{
    struct r3_source *remote, *local;
    struct r3_pipeline *pl = (void *)1;
    struct r3_pipeline_opts o;
    TU_OPEN("mem:?size=1M", &remote);
    r3_pipeline_opts_init(&o);
    o.spec = "cache,stats";
    o.chunk = 65536;
    ck_assert_int_eq(r3_pipeline_open(remote, &o, &pl), -EINVAL);   /* takes remote, even now */
    ERR_IS("pipeline 'cache,stats': the spec says which stages; leave chunk, pull_workers, "
           "push_workers, push_interval_ms, delay_us and stats 0");
    ck_assert_ptr_null(pl);

    TU_OPEN("mem:?size=1M", &remote);
    TU_OPEN("mem:?size=1M", &local);
    r3_pipeline_opts_init(&o);
    o.spec = "stats,delay:us=5";
    o.local = local;
    ck_assert_int_eq(r3_pipeline_open(remote, &o, &pl), -EINVAL);   /* takes both */
    ERR_IS("pipeline 'stats,delay:us=5': a local source was given, but no cache stage to hold it");

    /* a borrowed local stays the caller's */
    TU_OPEN("mem:?size=1M", &remote);
    TU_OPEN("mem:?size=1M", &local);
    o.local = local;
    o.borrow_local = true;
    ck_assert_int_eq(r3_pipeline_open(remote, &o, &pl), -EINVAL);
    ck_assert_int_eq(r3_source_write(local, "x", 1, 0), 0);          /* still open */
    r3_source_close(local);

    TU_OPEN("mem:?size=1M", &remote);
    r3_pipeline_opts_init(&o);
    o.struct_size = 5;
    ck_assert_int_eq(r3_pipeline_open(remote, &o, &pl), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "struct r3_pipeline_opts has struct_size 5"), "%s",
                  r3_last_error());
}
END_TEST

START_TEST(framework_answers)
{
    char b[1024];
    uint64_t run = 0;
    struct fake *f = fake_new(&fake_ops, 8192, 512, 0);
    ck_assert_int_eq(r3_source_read(&f->src, b, 100, 0), -EINVAL);
    ERR_IS("fake: request of 100 bytes at 0 is not aligned to 512");
    ck_assert_int_eq(r3_source_write(&f->src, b, 512, 100), -EINVAL);
    ERR_IS("fake: request of 512 bytes at 100 is not aligned to 512");
    ck_assert_int_eq(r3_source_read(&f->src, b, 1024, 8192 - 512), -EINVAL);
    ERR_IS("fake: request of 1024 bytes at offset 7680 is past the end (8192 bytes)");
    ck_assert_int_eq(r3_source_write(&f->src, b, 512, 8704), -ENOSPC);
    ERR_IS("fake: request of 512 bytes at offset 8704 is past the end (8192 bytes)");
    ck_assert_int_eq(r3_source_read(&f->src, b, 0, 8192), 0);        /* nothing, at the end */

    /* extents: the source's answer, a length 0 or too long clamped, a bad kind */
    f->extent_rc = R3_EXTENT_ZERO;
    f->extent_run = 1 << 20;
    ck_assert_int_eq(r3_source_extent(&f->src, 0, 4096, &run), R3_EXTENT_ZERO);
    ck_assert_uint_eq(run, 4096);
    f->extent_run = 0;
    f->extent_rc = R3_EXTENT_DATA;
    ck_assert_int_eq(r3_source_extent(&f->src, 512, 1024, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 1024);
    f->extent_run = 512;
    ck_assert_int_eq(r3_source_extent(&f->src, 0, 4096, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 512);
    f->extent_rc = 5;
    ck_assert_int_eq(r3_source_extent(&f->src, 0, 4096, &run), -EIO);
    ERR_IS("fake: extent query returned 5");
    f->extent_rc = -EHOSTDOWN;
    ck_assert_int_eq(r3_source_extent(&f->src, 0, 4096, &run), -EHOSTDOWN);
    ck_assert_int_eq(r3_source_extent(&f->src, 0, 0, &run), -EINVAL);
    ERR_IS("fake: extent query of 0 bytes");
    ck_assert_int_eq(r3_source_extent(&f->src, 4096, 8192, &run), -EINVAL);
    ERR_IS("fake: request of 8192 bytes at offset 4096 is past the end (8192 bytes)");
    fake_free(f);

    /* read-only: writes refused before the range is looked at */
    f = fake_new(&fake_ops, 8192, 1, R3_SRC_RDONLY);
    ck_assert_int_eq(r3_source_write(&f->src, "x", 1, 1 << 30), -EROFS);
    ERR_IS("fake: the source is read-only");
    fake_free(f);

    /* no operations and no inner source: reads and writes are refused, a
     * flush does nothing, every extent is data */
    f = fake_new(&bare_ops, 8192, 1, 0);
    ck_assert_int_eq(r3_source_read(&f->src, b, 1, 0), -ENOTSUP);
    ERR_IS("bare: cannot read");
    ck_assert_int_eq(r3_source_write(&f->src, b, 1, 0), -ENOTSUP);
    ERR_IS("bare: cannot write");
    ck_assert_int_eq(r3_source_flush(&f->src), 0);
    ck_assert_int_eq(r3_source_extent(&f->src, 100, 200, &run), R3_EXTENT_DATA);
    ck_assert_uint_eq(run, 200);
    fake_free(f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cov_src_stages");
    TCase *tc = tcase_create("stages");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, wrong_kind);
    tcase_add_test(tc, open_refusals);
    tcase_add_test(tc, cache_order_and_peek);
    tcase_add_test(tc, push_track);
    tcase_add_test(tc, pull_priority_and_failure);
    tcase_add_test(tc, pipeline_refusals);
    tcase_add_test(tc, framework_answers);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
