/* SPDX-License-Identifier: BSD-3-Clause */
/* URI parser and size suffixes. */
#include <errno.h>
#include "internal.h"
#include "testutil.h"

START_TEST(test_sizes)
{
    uint64_t v;
    ck_assert_int_eq(r3_parse_size("4096", &v), 0);
    ck_assert_uint_eq(v, 4096);
    ck_assert_int_eq(r3_parse_size("64K", &v), 0);
    ck_assert_uint_eq(v, 65536);
    ck_assert_int_eq(r3_parse_size("1G", &v), 0);
    ck_assert_uint_eq(v, 1ull << 30);
    ck_assert_int_eq(r3_parse_size("2TiB", &v), 0);
    ck_assert_uint_eq(v, 2ull << 40);
    ck_assert_int_eq(r3_parse_size("1m", &v), 0);
    ck_assert_uint_eq(v, 1ull << 20);
    ck_assert_int_eq(r3_parse_size("", &v), -EINVAL);
    ck_assert_int_eq(r3_parse_size("-1", &v), -EINVAL);
    ck_assert_int_eq(r3_parse_size("12X", &v), -EINVAL);
    ck_assert_int_eq(r3_parse_size("99999999999T", &v), -EINVAL);
    ck_assert_int_eq(r3_parse_size("1KK", &v), -EINVAL);
}
END_TEST

START_TEST(test_full)
{
    struct r3_uri u;
    ck_assert_int_eq(r3_uri_parse("redis://me:s%40cret@127.0.0.1:6379/pre/fix?size=1G&chunk=64K", &u), 0);
    ck_assert_str_eq(u.scheme, "redis");
    ck_assert_str_eq(u.user, "me");
    ck_assert_str_eq(u.password, "s@cret");
    ck_assert_str_eq(u.host, "127.0.0.1");
    ck_assert_int_eq(u.port, 6379);
    ck_assert_str_eq(u.path, "/pre/fix");
    ck_assert_str_eq(r3_uri_param(&u, "size"), "1G");
    ck_assert_ptr_null(r3_uri_param(&u, "nope"));
    uint64_t size;
    uint32_t chunk;
    ck_assert_int_eq(r3_uri_size_chunk(&u, true, &size, &chunk), 0);
    ck_assert_uint_eq(size, 1ull << 30);
    ck_assert_uint_eq(chunk, 65536);
    r3_uri_free(&u);

    ck_assert_int_eq(r3_uri_parse("nbd+unix:///exp?socket=/tmp/s.sock", &u), 0);
    ck_assert_str_eq(u.scheme, "nbd+unix");
    ck_assert_str_eq(u.host, "");
    ck_assert_str_eq(u.path, "/exp");
    ck_assert_str_eq(r3_uri_param(&u, "socket"), "/tmp/s.sock");
    r3_uri_free(&u);

    ck_assert_int_eq(r3_uri_parse("r3://[::1]:9000/x", &u), 0);
    ck_assert_str_eq(u.host, "::1");
    ck_assert_int_eq(u.port, 9000);
    r3_uri_free(&u);

    ck_assert_int_eq(r3_uri_parse("MEM:?size=1M", &u), 0);
    ck_assert_str_eq(u.scheme, "mem");
    ck_assert_ptr_null(u.host);
    ck_assert_str_eq(u.path, "");
    r3_uri_free(&u);
}
END_TEST

START_TEST(test_bad)
{
    struct r3_uri u;
    static const char *const bad[] = {
        "", "nocolon", "1abc:x", "redis://h:99999/", "redis://h:/", "redis://h:12a/",
        "r3://[::1/", "mem:?size", "mem:?=3", "file:///a%zz", "mem:?a=1&a=2", "x://h/#frag",
        "file:///a%00b", NULL,
    };
    for (int i = 0; bad[i]; i++) {
        r3_error_clear();
        ck_assert_msg(r3_uri_parse(bad[i], &u) == -EINVAL, "accepted %s", bad[i]);
        ck_assert_msg(r3_last_error()[0] != '\0', "no sentence for %s", bad[i]);
    }
    ck_assert_int_eq(r3_uri_parse("mem:?size=1000", &u), 0);
    uint64_t s;
    uint32_t c;
    ck_assert_int_eq(r3_uri_size_chunk(&u, true, &s, &c), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "multiple"));
    r3_uri_free(&u);
    ck_assert_int_eq(r3_uri_parse("mem:?size=1M&chunk=3000", &u), 0);
    ck_assert_int_eq(r3_uri_size_chunk(&u, true, &s, &c), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "chunk"));
    r3_uri_free(&u);
    ck_assert_int_eq(r3_uri_parse("mem:", &u), 0);
    ck_assert_int_eq(r3_uri_size_chunk(&u, true, &s, &c), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "size"));
    r3_uri_free(&u);
}
END_TEST

START_TEST(test_open_errors)
{
    struct r3_source *s;
    ck_assert_int_eq(r3_source_open("bogus://x/y", &s), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "unknown scheme 'bogus'"));
    ck_assert_int_eq(r3_source_open("mem:?size=1M&colour=red", &s), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "colour"));
    ck_assert_int_eq(r3_source_open("mem://host?size=1M", &s), -EINVAL);
    ck_assert_int_eq(r3_source_open("mem:?size=abc", &s), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "abc"));
}
END_TEST

START_TEST(test_errors_and_helpers)
{
    r3_error_clear();
    ck_assert_str_eq(r3_last_error(), "");
    ck_assert_int_eq(r3_error(-EIO, "disk %d failed", 3), -EIO);
    ck_assert_str_eq(r3_last_error(), "disk 3 failed");
    ck_assert_int_eq(r3_error_prefix(-EIO, "redis %s: ", "127.0.0.1:1"), -EIO);
    ck_assert_str_eq(r3_last_error(), "redis 127.0.0.1:1: disk 3 failed");
    r3_error_clear();
    ck_assert_int_eq(r3_error_prefix(-ENOENT, "x: "), -ENOENT);
    ck_assert_str_eq(r3_last_error(), "x: No such file or directory");
    char b[32];
    ck_assert_str_eq(r3_fmt_size(65536, b, sizeof b), "64 KiB");
    ck_assert_str_eq(r3_fmt_size(3ull << 30, b, sizeof b), "3 GiB");
    ck_assert_str_eq(r3_fmt_size(1000, b, sizeof b), "1000 B");
    ck_assert(r3_is_pow2(4096) && !r3_is_pow2(0) && !r3_is_pow2(12));
    uint64_t v;
    struct r3_uri u;
    ck_assert_int_eq(r3_uri_parse("x:?n=12&bad=1x", &u), 0);
    ck_assert_int_eq(r3_uri_param_uint(&u, "n", 5, &v), 0);
    ck_assert_uint_eq(v, 12);
    ck_assert_int_eq(r3_uri_param_uint(&u, "missing", 5, &v), 0);
    ck_assert_uint_eq(v, 5);
    ck_assert_int_eq(r3_uri_param_uint(&u, "bad", 5, &v), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "bad"));
    r3_uri_free(&u);
    /* timeout=/connect_timeout=: a duration with a unit; a bare number is refused. */
    ck_assert_int_eq(r3_uri_parse("x:?a=5s&b=0.5s&c=250ms&d=2m&e=5000&f=61m&g=0ms&h=1h", &u), 0);
    static const struct { const char *k; int rc; uint64_t ms; } tm[] = {
        { "a", 0, 5000 }, { "b", 0, 500 }, { "c", 0, 250 }, { "d", 0, 120000 },
        { "e", -EINVAL, 0 }, { "f", -EINVAL, 0 }, { "g", -EINVAL, 0 }, { "h", -EINVAL, 0 },
        { "none", 0, 30000 },
    };
    for (size_t i = 0; i < sizeof tm / sizeof tm[0]; i++) {
        v = 0;
        ck_assert_msg(r3_uri_param_duration_ms(&u, tm[i].k, R3_TIMEOUT_MS, &v) == tm[i].rc, "%s", tm[i].k);
        if (tm[i].rc == 0)
            ck_assert_uint_eq(v, tm[i].ms);
        else
            ck_assert_ptr_nonnull(strstr(r3_last_error(), tm[i].k));
    }
    r3_uri_free(&u);
    /* Region dispatch refuses unknown strategies and bad sizes and closes the source. */
    struct r3_source *s;
    struct r3_region *r;
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = "no-such";
    ck_assert_int_eq(r3_source_open("mem:?size=1M", &s), 0);
    ck_assert_int_eq(r3_region_open(&o, s, &r), -EINVAL);
    ck_assert_ptr_nonnull(strstr(r3_last_error(), "no-such"));
    r3_region_opts_init(&o);
    o.size = 2u << 20;
    ck_assert_int_eq(r3_source_open("mem:?size=1M", &s), 0);
    ck_assert_int_eq(r3_region_open(&o, s, &r), -EINVAL);
    r3_region_opts_init(&o);
    o.chunk = 1000;
    ck_assert_int_eq(r3_source_open("mem:?size=1M", &s), 0);
    ck_assert_int_eq(r3_region_open(&o, s, &r), -EINVAL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("uri");
    TCase *tc = tcase_create("uri");
    tcase_add_test(tc, test_sizes);
    tcase_add_test(tc, test_full);
    tcase_add_test(tc, test_bad);
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_errors_and_helpers);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
