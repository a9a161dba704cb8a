/* SPDX-License-Identifier: BSD-3-Clause */
/* r3_cover_flush(): in a coverage build (configure --enable-coverage defines
 * R3_COVERAGE) write this process's gcov counters now. gcov writes them from
 * exit() only: a forked helper or daemon that leaves by _exit() (or the
 * exit_group system call) would take its counters with it. Call it right
 * before such an exit; outside coverage builds it is nothing. */
#ifndef R3_COVER_H
#define R3_COVER_H
#include <unistd.h>
#ifdef R3_COVERAGE
void __gcov_dump(void);
static inline void r3_cover_flush(void) { __gcov_dump(); }
#else
static inline void r3_cover_flush(void) {}
#endif
/* r3_cover_flush() then _exit(code): the caller's line is counted too (its
 * counter is bumped before the call; a flush on the line before an _exit
 * leaves the _exit line uncounted). */
__attribute__((noreturn)) static inline void r3_cover_exit(int code)
{
    r3_cover_flush();
    _exit(code);
}
#endif
