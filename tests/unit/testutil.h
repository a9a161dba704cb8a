/* SPDX-License-Identifier: BSD-3-Clause */
/* What the Check unit tests share: tests/common/ (the pattern, the temp-dir
 * fixture, kernel requirements) and running a suite. The tu_ names are the
 * common functions under the names the unit tests already use. */
#ifndef R3_TESTUTIL_H
#define R3_TESTUTIL_H

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <r3/r3.h>
#include "tests/common/pattern.h"
#include "tests/common/requires.h"
#include "tests/common/tmpdir.h"

#define tu_byte  r3t_byte
#define tu_fill  r3t_fill
#define tu_check(buf, len, off, seed) ((long)r3t_check((buf), (len), (off), (seed)))
#define tu_tmpdir r3t_tmpdir
#define tu_rmrf  r3t_rmrf

/* Run one suite; the exit status is what automake's harness reads. */
static inline int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* Fake peers on a socket: all n bytes or false (peer gone); send all n
 * bytes, or stop quietly when the peer is gone (its reply says the rest). */
static inline bool tu_recv_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n) {
        ssize_t r = recv(fd, c, n, 0);
        if (r <= 0)
            return false;
        c += r;
        n -= (size_t)r;
    }
    return true;
}

static inline void tu_send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t r = send(fd, c, n, MSG_NOSIGNAL);
        if (r <= 0)
            return;
        c += r;
        n -= (size_t)r;
    }
}

#define TU_OPEN(uri, srcp) \
    ck_assert_msg(r3_source_open((uri), (srcp)) == 0, "open %s: %s", (uri), r3_last_error())

#endif
