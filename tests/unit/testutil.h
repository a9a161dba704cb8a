/* Shared helpers for the Check unit tests. */
#ifndef R3_TESTUTIL_H
#define R3_TESTUTIL_H

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <r3/r3.h>

/* A deterministic byte pattern: byte at absolute offset off for seed. */
static inline uint8_t tu_byte(uint64_t off, uint32_t seed)
{
    uint64_t x = (off + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 29;
    return (uint8_t)(x ^ (x >> 8));
}

static inline void tu_fill(void *buf, size_t len, uint64_t off, uint32_t seed)
{
    uint8_t *p = buf;
    for (size_t i = 0; i < len; i++)
        p[i] = tu_byte(off + i, seed);
}

/* Index of the first byte that differs from the pattern, or -1. */
static inline long tu_check(const void *buf, size_t len, uint64_t off, uint32_t seed)
{
    const uint8_t *p = buf;
    for (size_t i = 0; i < len; i++)
        if (p[i] != tu_byte(off + i, seed))
            return (long)i;
    return -1;
}

/* A fresh scratch directory under $TMPDIR (or /tmp); caller frees. */
static inline char *tu_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    char *p;
    if (asprintf(&p, "%s/r3test.XXXXXX", t ? t : "/tmp") < 0)
        return NULL;
    return mkdtemp(p) ? p : NULL;
}

static inline void tu_rmrf(const char *path)
{
    char *cmd;
    if (path && asprintf(&cmd, "rm -rf '%s'", path) >= 0) {
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", path);
        free(cmd);
    }
}

/* Run one suite; the exit status is what automake's harness reads. */
static inline int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#define TU_OPEN(uri, srcp) \
    ck_assert_msg(r3_source_open((uri), (srcp)) == 0, "open %s: %s", (uri), r3_last_error())

#endif
