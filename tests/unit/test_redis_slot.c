/* SPDX-License-Identifier: BSD-3-Clause */
/* Redis Cluster key slots: CRC16 (XMODEM) mod 16384 with {hashtag} rules.
 * Every expected value below is what a real redis-server 7.0.15 answered to
 * CLUSTER KEYSLOT (cluster-enabled yes), never r3_redis_keyslot itself, so
 * a change in the CRC or in the hashtag rule fails here. The check value of
 * CRC16/XMODEM over "123456789" is 0x31C3 (12739 after & 16383). */
#include "sources/redis.h"
#include "testutil.h"

static const struct { const char *key; unsigned slot; } want[] = {
    { "123456789", 12739 },            /* 0x31C3, the spec's check value */
    { "somekey", 11058 },
    { "foo", 12182 },
    { "bar", 5061 },
    { "a", 15495 },
    { "", 0 },
    { "abcdefghijklmnopqrstuvwxyz0123456789", 3038 },
    /* hashtags: the first '{' and the next '}', when non-empty */
    { "foo{hash_tag}", 2515 },
    { "bar{hash_tag}", 2515 },
    { "{user1000}.following", 3443 },
    { "{user1000}.followers", 3443 },
    { "user1000", 3443 },
    { "foo{}{bar}", 8363 },            /* empty first tag: the whole key */
    { "foo{{bar}}zap", 4015 },         /* tag is "{bar" */
    { "{bar", 4015 },
    { "foo{bar}{zap}", 5061 },         /* only the first tag counts */
    { "vm{a}:1", 15495 },
    { "vm{a}:2", 15495 },
    { "x{y}z", 12222 },
    { "{}x", 10595 },
    { "{", 4092 },
    { "}", 12090 },
    { "{}", 15257 },
    { "}{", 12793 },
    { "a{b", 13340 },                  /* no closing brace: the whole key */
    { "a}b{c}", 7365 },
    { "{{}}", 4092 },                  /* tag is "{" */
    /* key shapes the redis source writes: <prefix>:<chunk index> */
    { "r3:chunk:0", 1249 },
    { "r3:chunk:1", 5312 },
    { "vm:000000000001", 2005 },
};

START_TEST(server_slots)
{
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        unsigned got = r3_redis_keyslot(want[i].key, strlen(want[i].key));
        ck_assert_msg(got == want[i].slot, "key '%s': slot %u, redis-server says %u",
                      want[i].key, got, want[i].slot);
    }
}
END_TEST

/* The length is honoured: bytes past it are not hashed, embedded NULs are
 * (values again from CLUSTER KEYSLOT sent as binary-safe RESP bulk strings). */
START_TEST(lengths)
{
    ck_assert_uint_eq(r3_redis_keyslot("fooXYZ", 3), 12182);            /* "foo" */
    ck_assert_uint_eq(r3_redis_keyslot("{user1000}", 9), 8723);         /* "{user1000": no tag */
    ck_assert_uint_eq(r3_redis_keyslot("user1000", 7), 8831);           /* "user100" */
    ck_assert_uint_eq(r3_redis_keyslot("a\0b", 3), 8383);
    ck_assert_uint_eq(r3_redis_keyslot("{a\0}x", 5), 14363);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("redis_slot");
    TCase *tc = tcase_create("slot");
    tcase_add_test(tc, server_slots);
    tcase_add_test(tc, lengths);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
