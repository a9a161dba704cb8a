/* SPDX-License-Identifier: BSD-3-Clause */
/* The temporary-directory fixture of the C tests: a fresh directory under
 * $TMPDIR (or /tmp), removed with everything in it at the end. The shell
 * tests get theirs from tests/integration/lib.sh ($T_DIR). */
#ifndef R3_TESTS_COMMON_TMPDIR_H
#define R3_TESTS_COMMON_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* A new empty directory, r3test.XXXXXX; the caller frees the path. NULL on failure. */
static inline char *r3t_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    char *p;
    if (asprintf(&p, "%s/r3test.XXXXXX", t && *t ? t : "/tmp") < 0)
        return NULL;
    if (!mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

static inline int r3t_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "cannot remove %s\n", path);
    return 0;
}

/* Remove path and everything below it (no symlink is followed). */
static inline void r3t_rmrf(const char *path)
{
    if (path)
        nftw(path, r3t_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
