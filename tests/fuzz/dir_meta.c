/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the dir:// meta file (src/sources/dir.c, r3dir.meta). The
 * input is the file; byte 0 picks the URI (no size, or size/chunk given).
 * When the source opens, reads at its first and last byte and a write must
 * work on what the meta file declared. */
#include "fuzz.h"
#include <fcntl.h>
#include <sys/stat.h>
#include "internal.h"
#include "r3/source.h"

static char dir[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/tmp/r3fuzz-dir-XXXXXX");
    if (!mkdtemp(dir))
        FUZZ_DIE("mkdtemp: %s", strerror(errno));
    fuzz_rm_at_exit(dir);
    return 0;
}

static void rm_chunks(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "find %s -mindepth 1 -delete", dir);
    if (system(cmd) != 0)
        FUZZ_DIE("cannot clean %s", dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    char path[128];
    snprintf(path, sizeof path, "%s/r3dir.meta", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, data + 1, size - 1) != (ssize_t)(size - 1))
        FUZZ_DIE("write %s: %s", path, strerror(errno));
    close(fd);
    char uri[256];
    static const char *const q[] = { "", "?size=1M", "?size=1M&chunk=64K", "?chunk=4K" };
    snprintf(uri, sizeof uri, "dir://%s%s", dir, q[data[0] & 3]);
    struct r3_source *s;
    if (r3_source_open(uri, &s) == 0) {
        char b[16];
        uint64_t sz = s->size;
        if (sz == 0)
            FUZZ_DIE("a dir source of size 0");
        r3_source_read(s, b, 1, 0);
        r3_source_read(s, b, 1, sz - 1);
        if (data[0] & 4)
            r3_source_write(s, "x", 1, sz - 1);
        r3_source_close(s);
        rm_chunks();                   /* keep /tmp small: chunk files may be large and sparse */
    }
    return 0;
}
