/* SPDX-License-Identifier: BSD-3-Clause */
/* The uffd tests' names for the one test pattern (tests/common/pattern.h):
 * the word at byte offset off (a multiple of 8). */
#ifndef R3_UFFD_TEST_PATTERN_H
#define R3_UFFD_TEST_PATTERN_H
#include "tests/common/pattern.h"

#define up_word(off, seed) r3t_word((off), (seed))
#define up_fill r3t_fill
#define up_check r3t_check
#endif
