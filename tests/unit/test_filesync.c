/* SPDX-License-Identifier: BSD-3-Clause */
/* filesync pieces: name checks, the hasher, PAGEMAP_SCAN tracking of a file
 * mapping, and the filesync strategy (pre-copy, push on sync and interval). */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "internal.h"
#include "filesync/filesync.h"
#include "r3/probe.h"
#include "testutil.h"

static char *tmp;

static void setup(void)
{
    tmp = tu_tmpdir();
    ck_assert_ptr_nonnull(tmp);
}

static void teardown(void)
{
    tu_rmrf(tmp);
    free(tmp);
}

START_TEST(test_names)
{
    static const char *const ok[] = { "a", "a/b.c", "x..y", ".hidden", "d/e/f..", "..x/y" };
    static const char *const bad[] = { "", "/a", "..", "a/..", "a//b", "./a", "a/", "a/./b", "../x" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        ck_assert_msg(fs_name_check(ok[i], (uint32_t)strlen(ok[i])) == 0, "refused %s", ok[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(fs_name_check(bad[i], (uint32_t)strlen(bad[i])) == -EINVAL, "took '%s'", bad[i]);
    ck_assert_int_eq(fs_name_check("a\0b", 3), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "NUL"));
}
END_TEST

START_TEST(test_hash)
{
    size_t len = 3 * 1024 * 1024 + 123;
    uint32_t block = 65536;
    uint64_t nb = (len + block - 1) / block;
    unsigned char *buf = malloc(len);
    tu_fill(buf, len, 0, 3);
    struct fs_hash *h1 = calloc(nb, sizeof *h1), *h4 = calloc(nb, sizeof *h4), *hf = calloc(nb, sizeof *hf);
    fs_hash_blocks(buf, len, block, h1, 1);
    fs_hash_blocks(buf, len, block, h4, 4);
    ck_assert_mem_eq(h1, h4, nb * sizeof *h1);
    ck_assert(fs_hash_eq(h1[nb - 1], fs_hash_block(buf + (nb - 1) * block, len % block)));
    /* the same through a file */
    char path[512];
    snprintf(path, sizeof path, "%s/h.bin", tmp);
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    ck_assert_int_eq(r3_pwrite_all(fd, buf, len, 0), 0);
    ck_assert_int_eq(fs_hash_fd(fd, len, block, hf, 2), 0);
    ck_assert_mem_eq(h1, hf, nb * sizeof *h1);
    close(fd);
    /* one byte changed in block 17 and one in the short last block */
    buf[17 * block + 5] ^= 1;
    buf[len - 1] ^= 1;
    uint8_t *ch = calloc(nb, 1);
    ck_assert_uint_eq(fs_hash_diff(buf, len, block, h1, ch, 2), 2);
    ck_assert(ch[17] && ch[nb - 1]);
    free(buf);
    free(h1);
    free(h4);
    free(hf);
    free(ch);
}
END_TEST

START_TEST(test_track)
{
    char path[512];
    snprintf(path, sizeof path, "%s/t.bin", tmp);
    size_t len = 1 << 20;
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    ck_assert_int_eq(ftruncate(fd, (off_t)len), 0);
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    /* Where the kernel has uffd-wp, WP_ASYNC and PAGEMAP_SCAN (features read
     * from UFFDIO_API and one PAGEMAP_SCAN ioctl, not from the tracker under
     * test), tracking here must work: a refusal is a failure, not a skip.
     * Where the kernel truly lacks them, the open must refuse with a
     * sentence, and the scans are said skipped. */
    struct r3_probe pr;
    ck_assert_int_eq(r3_probe(&pr, tmp), 0);
    struct fs_track *t;
    int rc = fs_track_open(p, len, &t);
    if (!r3_probe_uffd_tracks_writes(&pr)) {
        ck_assert_msg(rc < 0, "tracking opened on a kernel without uffd-wp/WP_ASYNC/PAGEMAP_SCAN");
        ck_assert_str_ne(r3_last_error(), "");
        printf("SKIP test_track scans: the kernel lacks %s\n",
               !pr.wp ? "uffd write-protect" : !pr.wp_async ? "UFFD_FEATURE_WP_ASYNC" : "PAGEMAP_SCAN");
        munmap(p, len);
        close(fd);
        return;
    }
    ck_assert_msg(rc == 0, "the kernel has WP_ASYNC and PAGEMAP_SCAN, fs_track_open refused: %s",
                  r3_last_error());
    uint8_t dirty[256] = { 0 };
    ck_assert_int_eq(fs_track_scan(t, 4096, dirty), 0);     /* clean after open */
    p[3 * 4096 + 7] = 1;
    p[100 * 4096] = 2;
    p[255 * 4096 + 4095] = 3;
    ck_assert_int_eq(fs_track_scan(t, 4096, dirty), 3);
    ck_assert(dirty[3] && dirty[100] && dirty[255] && !dirty[4]);
    memset(dirty, 0, sizeof dirty);
    ck_assert_int_eq(fs_track_scan(t, 4096, dirty), 0);     /* re-protected */
    (void)p[5 * 4096];                                      /* reads are not writes */
    p[5 * 4096 + 1] = 9;
    ck_assert_int_eq(fs_track_scan(t, 65536, dirty), 1);   /* block granularity */
    ck_assert(dirty[0]);
    fs_track_close(t);
    munmap(p, len);
    close(fd);
}
END_TEST

/* Pre-copy, writes through the region, sync; the source file is read back
 * with pread (another path) and compared. */
static void strategy_roundtrip(const char *detect, unsigned interval_ms)
{
    char uri[600], path[512];
    snprintf(path, sizeof path, "%s/src.bin", tmp);
    snprintf(uri, sizeof uri, "file://%s?size=8M", path);
    size_t len = 8u << 20;
    struct r3_source *src;
    TU_OPEN(uri, &src);
    unsigned char *buf = malloc(len);
    tu_fill(buf, len, 0, 1);
    ck_assert_int_eq(r3_source_write(src, buf, len, 0), 0);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = "filesync";
    o.workdir = tmp;
    o.push_interval_ms = interval_ms;
    o.filesync_detect = detect;
    struct r3_region *r;
    ck_assert_msg(r3_region_open(&o, src, &r) == 0, "%s", r3_last_error());
    ck_assert_str_eq(r3_filesync_detect(r), detect ? "hash" : "pagemap");
    ck_assert_int_eq(tu_check(r->base, len, 0, 1), -1);           /* pre-copied */
    /* writes in 3 blocks (one spanning two), each one store into the region
     * so an interval round cannot fall between a block's bytes (it would
     * push that block twice) */
    unsigned char *b = r->base, w[10];
    tu_fill(w, 10, 100, 2);
    memcpy(b + 100, w, 10);
    tu_fill(w, 6, 5 * 65536 - 3, 2);
    memcpy(b + 5 * 65536 - 3, w, 3);
    memcpy(b + 5 * 65536, w + 3, 3);
    memcpy(buf, b, len);
    int fd = open(path, O_RDONLY);
    unsigned char *back = malloc(len);
    if (interval_ms) {
        /* the pusher writes back without a sync */
        for (int i = 0; i < 100; i++) {
            usleep(20000);
            ck_assert_int_eq(r3_pread_all(fd, back, len, 0), 0);
            if (memcmp(back, buf, len) == 0)
                break;
        }
    } else {
        ck_assert_int_eq(r3_pread_all(fd, back, 65536, 0), 0);
        ck_assert_int_eq(tu_check(back, 65536, 0, 1), -1);         /* not yet pushed */
        ck_assert_int_eq(r3_region_sync(r), 0);
    }
    ck_assert_int_eq(r3_pread_all(fd, back, len, 0), 0);
    ck_assert(memcmp(back, buf, len) == 0);
    struct r3_region_stats st;
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_eq(st.chunks_pushed, 3);
    ck_assert_uint_eq(st.bytes_pushed, 3 * 65536);
    /* nothing changed: a sync pushes nothing */
    ck_assert_int_eq(r3_region_sync(r), 0);
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_eq(st.chunks_pushed, 3);
    /* the last byte, then close (which syncs) */
    b[len - 1] ^= 0xff;
    buf[len - 1] ^= 0xff;
    ck_assert_int_eq(r3_region_close(r), 0);
    ck_assert_int_eq(r3_pread_all(fd, back, len, 0), 0);
    ck_assert(memcmp(back, buf, len) == 0);
    close(fd);
    /* the local file is gone */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q r3-filesync", tmp);
    ck_assert_int_ne(system(cmd), 0);
    free(buf);
    free(back);
}

START_TEST(test_strategy_pagemap) { strategy_roundtrip(NULL, 0); }
END_TEST
START_TEST(test_strategy_hash) { strategy_roundtrip("hash", 0); }
END_TEST
START_TEST(test_strategy_interval) { strategy_roundtrip(NULL, 30); }
END_TEST

/* A source whose writes fail while `fail` is set: a failed sync loses
 * nothing, the next one pushes it. */
struct flaky {
    struct r3_source src;
    unsigned char *data;
    bool fail;
};
static int flaky_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    memcpy(buf, ((struct flaky *)s)->data + off, len);
    return 0;
}
static int flaky_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    struct flaky *f = (struct flaky *)s;
    if (f->fail)
        return r3_error(-EIO, "flaky: write refused");
    memcpy(f->data + off, buf, len);
    return 0;
}
static int flaky_flush(struct r3_source *s) { (void)s; return 0; }
static void flaky_close(struct r3_source *s) { (void)s; }
static const struct r3_source_ops flaky_ops = {
    .scheme = "flaky", .read = flaky_read, .write = flaky_write, .flush = flaky_flush,
    .close = flaky_close,
};

START_TEST(test_strategy_retry)
{
    static struct flaky fl;
    size_t len = 1 << 20;
    fl = (struct flaky){ .src = { .ops = &flaky_ops, .size = len, .align = 1 }, .data = calloc(1, len) };
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = "filesync";
    o.workdir = tmp;
    struct r3_region *r;
    ck_assert_msg(r3_region_open(&o, &fl.src, &r) == 0, "%s", r3_last_error());
    unsigned char *b = r->base;
    b[70000] = 7;
    b[len - 1] = 9;
    fl.fail = true;
    ck_assert_int_eq(r3_region_sync(r), -EIO);
    ck_assert_int_eq(fl.data[70000], 0);
    fl.fail = false;
    ck_assert_int_eq(r3_region_sync(r), 0);       /* nothing was written since: still pushed */
    ck_assert_int_eq(fl.data[70000], 7);
    ck_assert_int_eq(fl.data[len - 1], 9);
    ck_assert_int_eq(r3_region_close(r), 0);
    free(fl.data);
}
END_TEST

START_TEST(test_strategy_errors)
{
    struct r3_source *src;
    TU_OPEN("mem:?size=1M", &src);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = "filesync";
    o.workdir = "/nonexistent-r3-dir";
    struct r3_region *r;
    ck_assert_int_eq(r3_region_open(&o, src, &r), -ENOENT);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "/nonexistent-r3-dir"));
}
END_TEST

/* The region contract: options the strategy cannot honour are refused with a
 * sentence; after_sync gets exactly the chunks each write-back wrote, and the
 * stats count them. */
struct seen { uint64_t chunks[16]; size_t n, calls; };
static void on_after(void *arg, struct r3_region *r, const uint64_t *dirty, size_t n)
{
    (void)r;
    struct seen *s = arg;
    s->calls++;
    for (size_t i = 0; i < n && s->n < 16; i++)
        s->chunks[s->n++] = dirty[i];
}

static int open_with(void (*set)(struct r3_region_opts *), struct r3_region **r)
{
    struct r3_source *src;
    TU_OPEN("mem:?size=1M", &src);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = "filesync";
    o.workdir = tmp;
    set(&o);
    return r3_region_open(&o, src, r);
}
static void set_hot(struct r3_region_opts *o) { o->prefetch = R3_PREFETCH_HOT; o->prefetch_file = "x"; }
static void set_record(struct r3_region_opts *o) { o->record_access = "/tmp/x"; }
static void set_pull(struct r3_region_opts *o) { o->pull_workers = 4; }
static void set_faults(struct r3_region_opts *o) { o->fault_threads = 8; }
static void set_detect(struct r3_region_opts *o) { o->filesync_detect = "psychic"; }

START_TEST(test_strategy_contract)
{
    void (*bad[])(struct r3_region_opts *) = { set_hot, set_record, set_pull, set_faults, set_detect };
    static const char *const words[] = { "prefetch", "access log", "pull", "fault", "psychic" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct r3_region *r = (struct r3_region *)1;
        ck_assert_int_eq(open_with(bad[i], &r), -EINVAL);
        ck_assert_ptr_null(r);
        ck_assert_msg(strstr(r3_last_error(), "filesync") && strstr(r3_last_error(), words[i]),
                      "case %zu: %s", i, r3_last_error());
    }
    /* after_sync: once per sync, the chunks written back since the last
     * call, ascending, each once (also those of interval rounds); n may be 0 */
    struct seen seen = { 0 };
    struct r3_source *src;
    TU_OPEN("mem:?size=1M", &src);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = "filesync";
    o.workdir = tmp;
    o.push_workers = 3;
    o.hooks.after_sync = on_after;
    o.hooks.arg = &seen;
    struct r3_region *r;
    ck_assert_msg(r3_region_open(&o, src, &r) == 0, "%s", r3_last_error());
    unsigned char *b = r->base;
    b[7 * 65536 + 1] = 1;
    b[65536] = 2;
    ck_assert_int_eq(r3_region_sync(r), 0);
    ck_assert_uint_eq(seen.calls, 1);
    ck_assert_uint_eq(seen.n, 2);
    ck_assert_uint_eq(seen.chunks[0], 1);
    ck_assert_uint_eq(seen.chunks[1], 7);
    struct r3_region_stats st;
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_eq(st.chunks_pushed, 2);
    ck_assert_uint_eq(st.bytes_pushed, 2 * 65536);
    ck_assert_uint_eq(st.syncs, 1);
    ck_assert_uint_eq(st.bytes_pulled, 1 << 20);
    ck_assert_int_eq(r3_region_sync(r), 0);          /* nothing written: n = 0 */
    ck_assert_uint_eq(seen.calls, 2);
    ck_assert_uint_eq(seen.n, 2);
    b[3 * 65536] = 3;
    ck_assert_int_eq(r3_region_close(r), 0);         /* close syncs: chunk 3 */
    ck_assert_uint_eq(seen.calls, 3);
    ck_assert_uint_eq(seen.n, 3);
    ck_assert_uint_eq(seen.chunks[2], 3);
}
END_TEST

/* Interval rounds write back on their own; the next sync's after_sync
 * reports their chunks too, once each, ascending. A vetoing before_sync
 * stops a sync (nothing reported). */
static int veto;
static int on_before(void *arg, struct r3_region *r)
{
    (void)arg;
    (void)r;
    return veto ? r3_error(-EBUSY, "vetoed") : 0;
}

START_TEST(test_strategy_after_interval)
{
    struct seen seen = { 0 };
    struct r3_source *src;
    TU_OPEN("mem:?size=1M", &src);
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = "filesync";
    o.workdir = tmp;
    o.push_interval_ms = 20;
    o.hooks.after_sync = on_after;
    o.hooks.before_sync = on_before;
    o.hooks.arg = &seen;
    struct r3_region *r;
    ck_assert_msg(r3_region_open(&o, src, &r) == 0, "%s", r3_last_error());
    unsigned char *b = r->base;
    b[9 * 65536] = 1;
    struct r3_region_stats st;
    for (int i = 0; i < 200; i++) {              /* an interval round pushes it */
        ck_assert_int_eq(r3_region_stats(r, &st), 0);
        if (st.chunks_pushed == 1)
            break;
        usleep(10000);
    }
    ck_assert_uint_eq(st.chunks_pushed, 1);
    ck_assert_uint_eq(seen.calls, 0);                /* after_sync belongs to syncs */
    b[2 * 65536] = 2;
    veto = 1;
    ck_assert_int_eq(r3_region_sync(r), -EBUSY);
    ck_assert_uint_eq(seen.calls, 0);
    veto = 0;
    ck_assert_int_eq(r3_region_sync(r), 0);
    ck_assert_uint_eq(seen.calls, 1);
    ck_assert_uint_eq(seen.n, 2);
    ck_assert_uint_eq(seen.chunks[0], 2);
    ck_assert_uint_eq(seen.chunks[1], 9);
    ck_assert_int_eq(r3_region_close(r), 0);
}
END_TEST

/* A peer's frame that declares a 84-million-element array in 6 bytes must be
 * refused before msgpack-c allocates for it (found by fuzzing). */
START_TEST(test_frame_huge_count)
{
    static const unsigned char body[] = { 0x91, 0xdd, 0x05, 0xf5, 0xe1, 0x00 };
    struct fs_frame *f = calloc(1, sizeof *f + 4 + sizeof body);
    ck_assert_ptr_nonnull(f);
    f->len = 4 + sizeof body;
    f->data[3] = sizeof body;
    memcpy(f->data + 4, body, sizeof body);
    msgpack_unpacked u;
    ck_assert_int_eq(fs_frame_unpack(f, &u), -EPROTO);
    msgpack_unpacked_destroy(&u);
    free(f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("filesync");
    TCase *tc = tcase_create("filesync");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_hash);
    tcase_add_test(tc, test_track);
    tcase_add_test(tc, test_strategy_pagemap);
    tcase_add_test(tc, test_strategy_hash);
    tcase_add_test(tc, test_strategy_interval);
    tcase_add_test(tc, test_strategy_retry);
    tcase_add_test(tc, test_strategy_errors);
    tcase_add_test(tc, test_strategy_contract);
    tcase_add_test(tc, test_strategy_after_interval);
    tcase_add_test(tc, test_frame_huge_count);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
