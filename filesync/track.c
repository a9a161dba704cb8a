/* SPDX-License-Identifier: BSD-3-Clause */
/* Change tracking of a filesync mapping without hashing: the kernel layer's
 * write tracker (src/kernel/wptrack.c: WP_ASYNC + PAGEMAP_SCAN) over the
 * whole mapping; this file turns its runs of written pages into blocks. */
#include <errno.h>
#include <stdlib.h>
#include "internal.h"
#include "kernel/kernel.h"
#include "filesync/filesync.h"

struct fs_track {
    struct r3_wp_track *t;
    uintptr_t base;
};

struct marking {
    uintptr_t base;
    uint32_t block;
    uint8_t *dirty;
    long marked;
};

static void mark(void *arg, uint64_t s, uint64_t e)
{
    struct marking *m = arg;
    uint64_t b0 = (s - m->base) / m->block, b1 = (e - m->base + m->block - 1) / m->block;
    for (uint64_t b = b0; b < b1; b++)
        if (!m->dirty[b]) {
            m->dirty[b] = 1;
            m->marked++;
        }
}

int fs_track_open(void *base, size_t len, struct fs_track **out)
{
    *out = NULL;
    struct fs_track *t = calloc(1, sizeof *t);
    if (!t)
        return r3_error(-ENOMEM, "out of memory");
    t->base = (uintptr_t)base;
    int rc = r3_wp_track_open(base, len, &t->t);
    if (rc < 0) {
        free(t);
        return rc;
    }
    *out = t;
    return 0;
}

long fs_track_scan(struct fs_track *t, uint32_t block, uint8_t *dirty)
{
    struct marking m = { .base = t->base, .block = block, .dirty = dirty };
    int rc = r3_wp_track_scan(t->t, mark, &m);
    return rc < 0 ? rc : m.marked;
}

void fs_track_close(struct fs_track *t)
{
    if (!t)
        return;
    r3_wp_track_close(t->t);
    free(t);
}
