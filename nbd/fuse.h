/* SPDX-License-Identifier: BSD-3-Clause */
/* A single-file FUSE filesystem (libfuse3, low-level API) whose file is an
 * NBD export: page-cache reads, writes and fsync become NBD requests through
 * an r3 NBD client, so the file can be mmapped MAP_SHARED and msynced. The
 * session runs in r3 threads. */
#ifndef R3_NBD_FUSE_H
#define R3_NBD_FUSE_H

#include <stdbool.h>
#include "nbd/client.h"

/* FUSE request threads by default. 8 and 16 were tried for throughput at
 * 10 ms; an intermittent SIGBUS on the mapping under heavy load (seen with
 * 4 as well, much rarer, cause not found) got more frequent: 4 stays. */
#define R3_NBD_FUSE_THREADS 4
#define R3_NBD_FUSE_THREAD_NAME "r3-fuse"   /* their name (top -H, /proc/PID/task/TID/comm) */

struct r3_nbd_fuse_opts {
    const char *mountpoint;       /* an existing directory */
    const char *name;             /* the file inside it; NULL = "disk" */
    struct r3_nbd_client *client; /* borrowed: outlives the mount; NULL: attached later */
    uint64_t size;                /* the export's size when client is NULL */
    unsigned threads;             /* FUSE request threads; 0 = R3_NBD_FUSE_THREADS */
    const char *fsname;           /* shown in /proc/mounts; NULL = "r3nbd" */
    bool readonly;
};

struct r3_nbd_fuse;

int  r3_nbd_fuse_mount(const struct r3_nbd_fuse_opts *o, struct r3_nbd_fuse **out);
/* Mounted without a client (to have the mount ready while the server
 * starts): give it now, or the error (reads and writes fail with it). Reads,
 * writes and fsync wait for this; lookups, opens and getattr do not. */
void r3_nbd_fuse_attach(struct r3_nbd_fuse *f, struct r3_nbd_client *c, int err);
/* r3_nbd_fuse_mount starts one request thread; this starts the others
 * (opts.threads in all). Call it from the thread that mounted, before
 * r3_nbd_fuse_unmount; where a thread cannot start, fewer serve. */
void r3_nbd_fuse_grow(struct r3_nbd_fuse *f);
/* Until a read has been answered, the mount ends, or ms have passed. */
void r3_nbd_fuse_wait_read(struct r3_nbd_fuse *f, unsigned ms);

/* MOUNTPOINT/NAME */
const char *r3_nbd_fuse_path(const struct r3_nbd_fuse *f);
/* Blocks until the filesystem is unmounted from outside (umount, fusermount3 -u)
 * or r3_nbd_fuse_unmount is called from another thread. */
void r3_nbd_fuse_wait(struct r3_nbd_fuse *f);
/* Unmounts (if still mounted), stops the threads and frees. */
void r3_nbd_fuse_unmount(struct r3_nbd_fuse *f);

#endif
