/* SPDX-License-Identifier: BSD-3-Clause */
/* Replays a fuzz target's inputs without libFuzzer: every file of
 * $top_srcdir/tests/fuzz/corpus/<target>/ (the seeds) and
 * $top_srcdir/tests/fuzz/regress/<target>/ (each crash, leak or hang that
 * fuzzing found, kept as a regression test), or the files given as
 * arguments. A crash fails the test (under --enable-asan, any sanitizer
 * report does). Built once per target with -DFUZZ_TARGET="name". */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "fuzz.h"

__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open %s\n", FUZZ_TARGET, path);
        return -1;
    }
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *nb = realloc(buf, cap);
            if (!nb)
                FUZZ_DIE("out of memory");
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        if (r == 0)
            break;
        n += r;
    }
    fclose(f);
    /* a copy of exactly n bytes, so ASan sees reads past the input */
    uint8_t *in = malloc(n ? n : 1);
    if (!in)
        FUZZ_DIE("out of memory");
    memcpy(in, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(in, n);
    free(in);
    return 0;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of dir, in name order; how many, or -1. */
static int run_dir(const char *dir, int *nfail)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;                      /* no regressions yet for this target */
    char **names = NULL;
    size_t nn = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        names = realloc(names, (nn + 1) * sizeof *names);
        if (!names || !(names[nn] = malloc(strlen(dir) + strlen(e->d_name) + 2)))
            FUZZ_DIE("out of memory");
        sprintf(names[nn++], "%s/%s", dir, e->d_name);
    }
    closedir(d);
    qsort(names, nn, sizeof *names, cmp);
    int n = 0;
    for (size_t i = 0; i < nn; i++) {
        struct stat st;
        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(names[i]) < 0)
                (*nfail)++;
            n++;
        }
        free(names[i]);
    }
    free(names);
    return n;
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    int nfail = 0, n = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++, n++)
            if (run_file(argv[i]) < 0)
                nfail++;
    } else {
        const char *top = getenv("top_srcdir");
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", top ? top : ".", FUZZ_TARGET);
        int seeds = run_dir(dir, &nfail);
        snprintf(dir, sizeof dir, "%s/tests/fuzz/regress/%s", top ? top : ".", FUZZ_TARGET);
        int regress = run_dir(dir, &nfail);
        if (seeds == 0) {
            fprintf(stderr, "%s: no seed corpus in %s/tests/fuzz/corpus/%s\n", FUZZ_TARGET,
                    top ? top : ".", FUZZ_TARGET);
            return 1;
        }
        printf("%s: %d seeds and %d regression inputs replayed\n", FUZZ_TARGET, seeds, regress);
        n = seeds + regress;
    }
    return nfail ? 1 : 0;
}
