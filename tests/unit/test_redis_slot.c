/* SPDX-License-Identifier: BSD-3-Clause */
/* Redis Cluster key slots: CRC16 (XMODEM) mod 16384 with {hashtag} rules,
 * checked against values from the cluster specification and CLUSTER KEYSLOT. */
#include "sources/redis.h"
#include "testutil.h"

static unsigned slot(const char *k)
{
    return r3_redis_keyslot(k, strlen(k));
}

START_TEST(known_slots)
{
    ck_assert_uint_eq(slot("123456789"), 0x31C3 & 16383);   /* the spec's CRC16 check value */
    ck_assert_uint_eq(slot("somekey"), 11058);
    ck_assert_uint_eq(slot("foo{hash_tag}"), 2515);
    ck_assert_uint_eq(slot("bar{hash_tag}"), 2515);
    ck_assert_uint_eq(slot("foo"), 12182);
}
END_TEST

START_TEST(hashtags)
{
    ck_assert_uint_eq(slot("{user1000}.following"), slot("{user1000}.followers"));
    ck_assert_uint_eq(slot("{user1000}.following"), slot("user1000"));
    ck_assert_uint_eq(slot("foo{}{bar}"), r3_redis_keyslot("foo{}{bar}", 10));   /* empty tag: whole key */
    ck_assert_uint_ne(slot("foo{}{bar}"), slot("bar"));
    ck_assert_uint_eq(slot("foo{{bar}}zap"), slot("{bar"));
    ck_assert_uint_eq(slot("foo{bar}{zap}"), slot("bar"));
    ck_assert_uint_eq(slot("vm{a}:1"), slot("vm{a}:2"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("redis_slot");
    TCase *tc = tcase_create("slot");
    tcase_add_test(tc, known_slots);
    tcase_add_test(tc, hashtags);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
