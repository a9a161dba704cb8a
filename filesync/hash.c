/* SPDX-License-Identifier: BSD-3-Clause */
/* Block hashing: XXH3-128 over fixed blocks, split across a few threads. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <r3/thread.h>
#include "internal.h"
#include "filesync/filesync.h"

struct fs_hash fs_hash_block(const void *p, size_t len)
{
    XXH128_hash_t h = XXH3_128bits(p, len);
    return (struct fs_hash){ h.low64, h.high64 };
}

struct job {
    const unsigned char *base;
    int fd;
    uint64_t len;
    uint32_t block;
    uint64_t b0, b1;              /* blocks [b0, b1) */
    struct fs_hash *out;
    const struct fs_hash *last;
    uint8_t *changed;
    uint64_t nchanged;
    int rc;
};

static void *job_run(void *p)
{
    struct job *j = p;
    unsigned char *buf = NULL;
    if (j->fd >= 0 && !(buf = malloc(j->block))) {
        j->rc = -ENOMEM;
        return NULL;
    }
    for (uint64_t b = j->b0; b < j->b1; b++) {
        uint64_t off = b * j->block;
        size_t n = (size_t)(j->len - off < j->block ? j->len - off : j->block);
        const void *src = j->fd >= 0 ? NULL : j->base + off;   /* fd mode: base is NULL */
        if (j->fd >= 0) {
            int rc = r3_pread_all(j->fd, buf, n, off);
            if (rc < 0) {
                j->rc = rc;
                break;
            }
            src = buf;
        }
        struct fs_hash h = fs_hash_block(src, n);
        if (j->out)
            j->out[b] = h;
        if (j->changed && !fs_hash_eq(h, j->last[b])) {
            j->changed[b] = 1;
            j->nchanged++;
        }
    }
    free(buf);
    return NULL;
}

/* Run the jobs on threads threads; the calling thread takes the first. */
static int run_jobs(const unsigned char *base, int fd, uint64_t len, uint32_t block,
                    struct fs_hash *out, const struct fs_hash *last, uint8_t *changed,
                    unsigned threads, uint64_t *nchanged)
{
    uint64_t nb = (len + block - 1) / block;
    if (threads == 0)
        threads = 2;
    if (threads > 64)
        threads = 64;
    if (nb < (uint64_t)threads * 4)
        threads = 1;
    struct job j[64];
    pthread_t t[64];
    bool started[64] = { false };
    for (unsigned i = 0; i < threads; i++) {
        j[i] = (struct job){ base, fd, len, block, nb * i / threads, nb * (i + 1) / threads,
                             out, last, changed, 0, 0 };
        if (i > 0)
            started[i] = r3_thread_create(&t[i], job_run, &j[i]) == 0;
    }
    job_run(&j[0]);
    int rc = j[0].rc;
    uint64_t n = j[0].nchanged;
    for (unsigned i = 1; i < threads; i++) {
        if (started[i])
            pthread_join(t[i], NULL);
        else
            job_run(&j[i]);
        if (j[i].rc < 0)
            rc = j[i].rc;
        n += j[i].nchanged;
    }
    if (nchanged)
        *nchanged = n;
    return rc;
}

void fs_hash_blocks(const void *base, uint64_t len, uint32_t block, struct fs_hash *out,
                    unsigned threads)
{
    run_jobs(base, -1, len, block, out, NULL, NULL, threads, NULL);
}

uint64_t fs_hash_diff(const void *base, uint64_t len, uint32_t block, const struct fs_hash *last,
                      uint8_t *changed, unsigned threads)
{
    uint64_t n = 0;
    run_jobs(base, -1, len, block, NULL, last, changed, threads, &n);
    return n;
}

int fs_hash_fd(int fd, uint64_t len, uint32_t block, struct fs_hash *out, unsigned threads)
{
    return run_jobs(NULL, fd, len, block, out, NULL, NULL, threads, NULL);
}
