/* SPDX-License-Identifier: BSD-3-Clause */
/* src/preload/env.c: the R3_* variables r3run hands to the shim. Every
 * refusal names its variable (no source, a size that is not one, a chunk
 * out of range, a zero R3_MIN_ALLOC, numbers past their bound or not
 * numbers, durations without a unit, a prefetch that is empty or "hot"
 * without a record file); the defaults, every value read back, and the
 * region options made from them. */
#include <errno.h>
#include "testutil.h"
#include "internal.h"
#include "preload/env.h"

#define ERR_IS(want) ck_assert_msg(strcmp(r3_last_error(), (want)) == 0, "error: '%s', not '%s'", \
                                   r3_last_error(), (want))

static const char *const vars[] = {
    "R3_SOURCE", "R3_STRATEGY", "R3_PIPELINE", "R3_SIZE", "R3_CHUNK", "R3_MIN_ALLOC", "R3_PULL_WORKERS",
    "R3_PUSH_WORKERS", "R3_PUSH_INTERVAL", "R3_FAULT_THREADS", "R3_PREFETCH", "R3_RECORD_ACCESS",
    "R3_STATS", "R3_SYNC_TIMEOUT", "R3_COPY_ON_WRITE", "R3_MAX_RESIDENT", "R3_UFFD_READAHEAD",
    "R3_UFFD_FIRST_PAGE", "R3_UFFD_NO_POISON", "R3_UFFD_NO_WP_ASYNC", "R3_FILESYNC_DETECT",
    "R3_NBD_MOUNT", NULL,
};

static void clear(void)
{
    for (int i = 0; vars[i]; i++)
        unsetenv(vars[i]);
}

/* Parse with only R3_SOURCE and name=value set. */
static int with(const char *name, const char *value, struct r3_preload_env *e)
{
    clear();
    setenv("R3_SOURCE", "mem:?size=1M", 1);
    if (name)
        setenv(name, value, 1);
    return r3_preload_env_parse(e);
}

START_TEST(refusals)
{
    struct r3_preload_env e;
    clear();
    ck_assert_int_eq(r3_preload_env_parse(&e), -EINVAL);
    ERR_IS("R3_SOURCE is not set");
    setenv("R3_SOURCE", "", 1);
    ck_assert_int_eq(r3_preload_env_parse(&e), -EINVAL);
    ERR_IS("R3_SOURCE is not set");
    ck_assert_int_eq(with("R3_SIZE", "big", &e), -EINVAL);
    ERR_IS("R3_SIZE=big is not a size (like 64K, 512M, 4G)");
    ck_assert_int_eq(with("R3_CHUNK", "1K", &e), -EINVAL);
    ERR_IS("R3_CHUNK=1024 is not a power of two from 4K to 1G");
    ck_assert_int_eq(with("R3_CHUNK", "96K", &e), -EINVAL);
    ERR_IS("R3_CHUNK=98304 is not a power of two from 4K to 1G");
    ck_assert_int_eq(with("R3_CHUNK", "2G", &e), -EINVAL);
    ERR_IS("R3_CHUNK=2147483648 is not a power of two from 4K to 1G");
    ck_assert_int_eq(with("R3_MIN_ALLOC", "0", &e), -EINVAL);
    ERR_IS("R3_MIN_ALLOC must be at least 1");
    ck_assert_int_eq(with("R3_PULL_WORKERS", "1025", &e), -EINVAL);
    ERR_IS("R3_PULL_WORKERS=1025 is not a number from 0 to 1024");
    ck_assert_int_eq(with("R3_PUSH_WORKERS", "-1", &e), -EINVAL);
    ERR_IS("R3_PUSH_WORKERS=-1 is not a number from 0 to 1024");
    ck_assert_int_eq(with("R3_FAULT_THREADS", "4x", &e), -EINVAL);
    ERR_IS("R3_FAULT_THREADS=4x is not a number from 0 to 256");
    ck_assert_int_eq(with("R3_FAULT_THREADS", "99999999999999999999999", &e), -EINVAL);
    ck_assert_int_eq(with("R3_PUSH_INTERVAL", "5", &e), -EINVAL);
    ERR_IS("R3_PUSH_INTERVAL: duration '5' needs a unit: us, ms, s or m ('5s' or '5ms')");
    ck_assert_int_eq(with("R3_SYNC_TIMEOUT", "soon", &e), -EINVAL);
    ERR_IS("R3_SYNC_TIMEOUT: 'soon' is not a duration (a number with a unit: us, ms, s or m)");
    ck_assert_int_eq(with("R3_MAX_RESIDENT", "lots", &e), -EINVAL);
    ERR_IS("R3_MAX_RESIDENT=lots is not a size (like 64K, 512M, 4G)");
    ck_assert_int_eq(with("R3_UFFD_READAHEAD", "2000000", &e), -EINVAL);
    ERR_IS("R3_UFFD_READAHEAD=2000000 is not a number from 0 to 1048576");
    ck_assert_int_eq(with("R3_PREFETCH", "hot", &e), -EINVAL);
    ERR_IS("prefetch 'hot' replays the access log of --record-access FILE; give that too, or give the "
           "log: --prefetch FILE");

    int pf = -1;
    const char *file = (void *)1;
    ck_assert_int_eq(r3_preload_prefetch_parse("", NULL, &pf, &file), -EINVAL);
    ERR_IS("prefetch is empty: sequential, none, hot or an access log FILE");
    ck_assert_ptr_null(file);
    clear();
}
END_TEST

START_TEST(values)
{
    struct r3_preload_env e;
    ck_assert_int_eq(with(NULL, NULL, &e), 0);          /* the defaults */
    ck_assert_str_eq(e.strategy, "uffd");
    ck_assert_ptr_null(e.pipeline);
    ck_assert_uint_eq(e.size, 0);
    ck_assert_uint_eq(e.chunk, R3_DEFAULT_CHUNK);
    ck_assert_uint_eq(e.min_alloc, 65536);
    ck_assert_uint_eq(e.push_workers, 1);
    ck_assert_uint_eq(e.fault_threads, 2);
    ck_assert_uint_eq(e.sync_timeout_ms, R3_PRELOAD_SYNC_TIMEOUT_MS);
    ck_assert_int_eq(e.uffd_readahead, -1);
    ck_assert_int_eq(e.prefetch, R3_PREFETCH_SEQUENTIAL);
    ck_assert(!e.stats && !e.copy_on_write && !e.uffd_no_first_page && !e.uffd_no_poison);

    static const char *const set[][2] = {
        { "R3_STRATEGY", "filesync" }, { "R3_PIPELINE", "cache,stats" }, { "R3_SIZE", "2M" },
        { "R3_CHUNK", "128K" }, { "R3_MIN_ALLOC", "4K" }, { "R3_PULL_WORKERS", "3" },
        { "R3_PUSH_WORKERS", "0" }, { "R3_PUSH_INTERVAL", "1.5s" }, { "R3_FAULT_THREADS", "4" },
        { "R3_RECORD_ACCESS", "/tmp/order" }, { "R3_PREFETCH", "hot" }, { "R3_STATS", "1" },
        { "R3_SYNC_TIMEOUT", "0s" }, { "R3_COPY_ON_WRITE", "yes" }, { "R3_MAX_RESIDENT", "8M" },
        { "R3_UFFD_READAHEAD", "0" }, { "R3_UFFD_FIRST_PAGE", "0" }, { "R3_UFFD_NO_POISON", "1" },
        { "R3_UFFD_NO_WP_ASYNC", "0" }, { "R3_FILESYNC_DETECT", "hash" }, { "R3_NBD_MOUNT", "fuse" },
    };
    clear();
    setenv("R3_SOURCE", "mem:?size=1M", 1);
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
        setenv(set[i][0], set[i][1], 1);
    ck_assert_msg(r3_preload_env_parse(&e) == 0, "%s", r3_last_error());
    ck_assert_str_eq(e.strategy, "filesync");
    ck_assert_str_eq(e.pipeline, "cache,stats");
    ck_assert_uint_eq(e.size, 2u << 20);
    ck_assert_uint_eq(e.chunk, 128u << 10);
    ck_assert_uint_eq(e.min_alloc, 4096);
    ck_assert_uint_eq(e.pull_workers, 3);
    ck_assert_uint_eq(e.push_workers, 0);
    ck_assert_uint_eq(e.push_interval_ms, 1500);
    ck_assert_uint_eq(e.fault_threads, 4);
    ck_assert_int_eq(e.prefetch, R3_PREFETCH_HOT);
    ck_assert_str_eq(e.prefetch_file, "/tmp/order");
    ck_assert(e.stats && e.copy_on_write && e.uffd_no_first_page && e.uffd_no_poison && !e.uffd_no_wp_async);
    ck_assert_uint_eq(e.sync_timeout_ms, 0);
    ck_assert_uint_eq(e.max_resident, 8u << 20);
    ck_assert_int_eq(e.uffd_readahead, 0);

    struct r3_region_opts o;
    r3_region_opts_init(&o);
    r3_preload_env_opts(&e, &o);
    ck_assert_str_eq(o.strategy, "filesync");
    ck_assert_uint_eq(o.size, 2u << 20);
    ck_assert_uint_eq(o.chunk, 128u << 10);
    ck_assert_uint_eq(o.pull_workers, 3);
    ck_assert_uint_eq(o.push_interval_ms, 1500);
    ck_assert_int_eq(o.prefetch, R3_PREFETCH_HOT);
    ck_assert_str_eq(o.prefetch_file, "/tmp/order");
    ck_assert_str_eq(o.record_access, "/tmp/order");
    ck_assert_str_eq(o.filesync_detect, "hash");
    ck_assert_str_eq(o.nbd_mount, "fuse");
    ck_assert(o.copy_on_write && o.uffd_no_poison);

    /* empty strings count as unset; an access log as the prefetch; none */
    clear();
    setenv("R3_SOURCE", "mem:?size=1M", 1);
    setenv("R3_PIPELINE", "", 1);
    setenv("R3_STRATEGY", "", 1);
    setenv("R3_FILESYNC_DETECT", "", 1);
    setenv("R3_NBD_MOUNT", "", 1);
    setenv("R3_RECORD_ACCESS", "", 1);
    setenv("R3_STATS", "0", 1);
    setenv("R3_PREFETCH", "/tmp/log", 1);
    ck_assert_int_eq(r3_preload_env_parse(&e), 0);
    ck_assert(!e.pipeline && !e.filesync_detect && !e.nbd_mount && !e.record_access && !e.stats);
    ck_assert_str_eq(e.strategy, "uffd");
    ck_assert_int_eq(e.prefetch, R3_PREFETCH_HOT);
    ck_assert_str_eq(e.prefetch_file, "/tmp/log");
    ck_assert_int_eq(with("R3_PREFETCH", "none", &e), 0);
    ck_assert_int_eq(e.prefetch, R3_PREFETCH_NONE);
    ck_assert_ptr_null(e.prefetch_file);
    ck_assert_int_eq(with("R3_PREFETCH", "sequential", &e), 0);
    ck_assert_int_eq(e.prefetch, R3_PREFETCH_SEQUENTIAL);
    clear();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cov_src_env");
    TCase *tc = tcase_create("env");
    tcase_add_test(tc, refusals);
    tcase_add_test(tc, values);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
