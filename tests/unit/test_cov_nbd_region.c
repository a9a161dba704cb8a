/* SPDX-License-Identifier: BSD-3-Clause */
/* The nbd strategies (nbd/strategy.c, with the mount helper of
 * nbd/helper.c) through the region API: writes to the mapping reach the
 * source (read back there, not through the region), r3_region_read sees
 * writes still in the page cache, migration tracking START/TAKE/STOP, the
 * sync hooks (a before_sync that fails is the sync's answer; after_sync
 * gets the chunks written), stats, the access order, and the scratch
 * directory left empty at close. */
#include <errno.h>
#include <sched.h>
#include <dirent.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include "testutil.h"
#include "internal.h"
#include <r3/region.h>

#define SIZE (1u << 20)
#define CH 65536u

static char *dir;
static struct { int before, before_close, fail; uint64_t chunks[64]; size_t n; } hk;

static int h_before(void *arg, struct r3_region *r)
{
    (void)arg; (void)r;
    hk.before++;
    return hk.fail ? r3_error(-EIO, "the test's before_sync says no") : 0;
}

static void h_after(void *arg, struct r3_region *r, const uint64_t *d, size_t n)
{
    (void)arg; (void)r;
    for (size_t i = 0; i < n && hk.n < 64; i++)
        hk.chunks[hk.n++] = d[i];
}

static void h_close(void *arg, struct r3_region *r)
{
    (void)arg; (void)r;
    hk.before_close++;
}

static void setup(void)
{
    dir = tu_tmpdir();
    ck_assert_ptr_nonnull(dir);
    memset(&hk, 0, sizeof hk);
}

static char full[300];                   /* a small tmpfs, when a test made one */

static void teardown(void)
{
    if (full[0])
        umount2(full, MNT_DETACH);
    full[0] = 0;
    tu_rmrf(dir);
    free(dir);
}

static int entries(const char *d)
{
    DIR *p = opendir(d);
    ck_assert_ptr_nonnull(p);
    int n = 0;
    for (struct dirent *e; (e = readdir(p));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(p);
    return n;
}

static bool has(const uint64_t *l, size_t n, uint64_t v)
{
    for (size_t i = 0; i < n; i++)
        if (l[i] == v)
            return true;
    return false;
}

static void one(const char *strategy)
{
    struct r3_source *src, *check;
    char uri[300];
    snprintf(uri, sizeof uri, "file://%s/data?size=1M", dir);
    TU_OPEN(uri, &src);
    char *b = malloc(SIZE);
    tu_fill(b, SIZE, 0, 4);
    ck_assert_int_eq(r3_source_write(src, b, SIZE, 0), 0);
    ck_assert_int_eq(r3_source_flush(src), 0);
    char wd[300];
    snprintf(wd, sizeof wd, "%s/work", dir);
    ck_assert_int_eq(mkdir(wd, 0700), 0);

    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = strategy;
    o.workdir = wd;
    o.nbd_mount = "fuse";
    o.hooks = (struct r3_region_hooks){ .before_sync = h_before, .after_sync = h_after,
                                        .before_close = h_close };
    struct r3_region *r;
    ck_assert_msg(r3_region_open(&o, src, &r) == 0, "%s: %s", strategy, r3_last_error());
    ck_assert_uint_eq(r->len, SIZE);
    ck_assert_int_eq(entries(wd), 1);                  /* its scratch directory */
    /* the source's bytes through the mapping */
    ck_assert_int_eq(tu_check(r->base, SIZE, 0, 4), -1);

    uint64_t *l = NULL;
    size_t n = 0;
    ck_assert_int_eq(r3_region_track(r, R3_TRACK_START, &l, &n), 0);
    free(l);
    tu_fill((char *)r->base + 2 * CH, CH, 2 * CH, 8);
    tu_fill((char *)r->base + 5 * CH + 100, 10, 5 * CH + 100, 8);
    /* the region's bytes, the writes still in the page cache included */
    ck_assert_int_eq(r3_region_read(r, b, CH, 2 * CH), 0);
    ck_assert_int_eq(tu_check(b, CH, 2 * CH, 8), -1);
    ck_assert_int_eq(r3_region_read(r, b, 10, 5 * CH + 100), 0);
    ck_assert_int_eq(tu_check(b, 10, 5 * CH + 100, 8), -1);
    l = NULL;
    ck_assert_int_eq(r3_region_track(r, R3_TRACK_TAKE, &l, &n), 0);
    ck_assert_msg(n == 2 && has(l, n, 2) && has(l, n, 5), "%s: %zu chunks tracked", strategy, n);
    free(l);
    ck_assert_int_eq(r3_region_track(r, R3_TRACK_STOP, NULL, NULL), 0);

    /* sync: the hook may refuse, then nothing is reported */
    hk.fail = 1;
    ck_assert_int_eq(r3_region_sync(r), -EIO);
    ck_assert_str_eq(r3_last_error(), "the test's before_sync says no");
    hk.fail = 0;
    ck_assert_msg(r3_region_sync(r) == 0, "%s", r3_last_error());
    ck_assert_int_eq(hk.before, 2);
    ck_assert_msg(has(hk.chunks, hk.n, 2) && has(hk.chunks, hk.n, 5), "%s: after_sync got %zu", strategy, hk.n);
    /* on the source, read through another handle */
    TU_OPEN(uri, &check);
    ck_assert_int_eq(r3_source_read(check, b, CH, 2 * CH), 0);
    ck_assert_int_eq(tu_check(b, CH, 2 * CH, 8), -1);
    ck_assert_int_eq(r3_source_read(check, b, CH, 5 * CH), 0);
    ck_assert_int_eq(tu_check(b, 100, 5 * CH, 4), -1);
    ck_assert_int_eq(tu_check(b + 100, 10, 5 * CH + 100, 8), -1);
    ck_assert_int_eq(tu_check(b + 110, CH - 110, 5 * CH + 110, 4), -1);
    r3_source_close(check);

    struct r3_region_stats st = { 0 };
    ck_assert_int_eq(r3_region_stats(r, &st), 0);
    ck_assert_uint_ge(st.syncs, 1);
    ck_assert_uint_ge(st.bytes_pushed, 2 * 4096);
    ck_assert_uint_ge(st.chunks_pushed, 2);
    l = NULL;
    ck_assert_int_eq(r3_region_access_order(r, &l, &n), 0);
    ck_assert_msg(n >= 2 && has(l, n, 2) && has(l, n, 5), "%s: order of %zu chunks", strategy, n);
    free(l);

    ck_assert_int_eq(r3_region_close(r), 0);
    ck_assert_int_eq(hk.before_close, 1);
    ck_assert_int_eq(entries(wd), 0);                  /* scratch gone, nothing mounted */
    free(b);
}

/* The source's disk fills up under the mapping: the region's sync says
 * so in a sentence (nothing hangs), and once there is room again a sync
 * lands every byte. nbd-managed keeps the bytes that did not fit in its
 * cache; nbd-direct is a file in the page cache, and the kernel drops
 * pages whose write-back failed (as for any file after a failed fsync):
 * there the program writes them again. */
static void disk_full(const char *strategy, bool keeps)
{
    snprintf(full, sizeof full, "%s/full", dir);
    ck_assert_int_eq(mkdir(full, 0700), 0);
    /* in a mount namespace of this test's own: the tmpfs goes with it,
     * whatever way the test ends */
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", full, "tmpfs", 0, "size=1m") != 0) {
        printf("%s: skipped: cannot mount a tmpfs (%s)\n", strategy, strerror(errno));
        full[0] = 0;
        return;
    }
    char uri[400], filler[400], wd[300];
    snprintf(uri, sizeof uri, "file://%s/data?size=1M", full);
    snprintf(filler, sizeof filler, "%s/filler", full);
    snprintf(wd, sizeof wd, "%s/work", dir);
    ck_assert_int_eq(mkdir(wd, 0700), 0);
    struct r3_source *src, *check;
    TU_OPEN(uri, &src);
    /* all but 128 KiB of the tmpfs taken */
    FILE *f = fopen(filler, "w");
    ck_assert_ptr_nonnull(f);
    static char z[SIZE - 2 * CH];
    memset(z, 1, sizeof z);
    ck_assert_uint_eq(fwrite(z, 1, sizeof z, f), sizeof z);
    ck_assert_int_eq(fclose(f), 0);

    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = strategy;
    o.workdir = wd;
    o.nbd_mount = "fuse";
    o.chunk = CH;
    struct r3_region *r;
    ck_assert_msg(r3_region_open(&o, src, &r) == 0, "%s: %s", strategy, r3_last_error());
    tu_fill(r->base, 8 * CH, 0, 11);                   /* 512 KiB: more than fits */
    int rc = r3_region_sync(r);
    ck_assert_msg(rc < 0, "%s: a sync onto a full disk succeeded", strategy);
    const char *why = r3_last_error();
    ck_assert_msg(strstr(why, "No space left on device") || strstr(why, "Input/output error"),
                  "%s: sentence: %s", strategy, why);
    printf("%s: sync on a full disk: %s\n", strategy, why);
    /* room again: a sync now lands every byte */
    ck_assert_int_eq(unlink(filler), 0);
    if (!keeps)
        tu_fill(r->base, 8 * CH, 0, 11);
    ck_assert_msg(r3_region_sync(r) == 0, "%s: %s", strategy, r3_last_error());
    TU_OPEN(uri, &check);
    char *b = malloc(8 * CH);
    ck_assert_int_eq(r3_source_read(check, b, 8 * CH, 0), 0);
    ck_assert_int_eq(tu_check(b, 8 * CH, 0, 11), -1);
    free(b);
    r3_source_close(check);
    ck_assert_int_eq(r3_region_close(r), 0);
}

START_TEST(direct_disk_full) { disk_full("nbd-direct", false); }
END_TEST

START_TEST(managed_disk_full) { disk_full("nbd-managed", true); }
END_TEST

START_TEST(direct) { one("nbd-direct"); }
END_TEST

START_TEST(managed) { one("nbd-managed"); }
END_TEST

int main(void)
{
    char why[256];
    if (r3t_missing("fuse", why, sizeof why) != 0) {
        printf("SKIP: %s\n", why);
        return 77;
    }
    Suite *s = suite_create("cov_nbd_region");
    TCase *t = tcase_create("region");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, direct);
    tcase_add_test(t, direct_disk_full);
    tcase_add_test(t, managed_disk_full);
    tcase_add_test(t, managed);
    suite_add_tcase(s, t);
    return tu_run(s);
}
