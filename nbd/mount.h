/* SPDX-License-Identifier: BSD-3-Clause */
/* A mount of an NBD export: the kernel's /dev/nbdX where the nbd module is
 * loaded, else r3's single-file FUSE bridge. The path it gives can be opened
 * and mmapped MAP_SHARED. */
#ifndef R3_NBD_MOUNT_H
#define R3_NBD_MOUNT_H

#include "nbd/client.h"

enum r3_nbd_mount_mode { R3_NBD_MOUNT_AUTO = 0, R3_NBD_MOUNT_FUSE = 1, R3_NBD_MOUNT_KERNEL = 2 };

struct r3_nbd_mount_opts {
    struct r3_nbd_client_opts client;  /* where the server is */
    int mode;                     /* enum r3_nbd_mount_mode (AUTO: kernel if available, else FUSE) */
    const char *mountpoint;       /* FUSE: an existing directory */
    const char *name;             /* FUSE: the file in it (NULL = "disk") */
    const char *fsname;           /* FUSE: shown in /proc/mounts */
    unsigned fuse_threads;        /* 0 = R3_NBD_FUSE_THREADS (4) */
    unsigned timeout_ms;          /* kernel: wait for the device (0 = 5000) */
    /* FUSE, for r3_nbd_mount_prepare: the export's size and whether it is
     * read-only, known before the server is up (the region's own server). */
    uint64_t size;
    bool readonly;
};

struct r3_nbd_mount;

int  r3_nbd_mount_open(const struct r3_nbd_mount_opts *o, struct r3_nbd_mount **out);
/* In two steps, so the mount is set up while the server starts: prepare
 * mounts the FUSE file (o->size, o->readonly) with no client yet (reads wait
 * for one); connect then connects to the server and gives the mount its
 * client, or its error. prepare returns -EOPNOTSUPP where the mode is the
 * kernel's (use r3_nbd_mount_open). Close with r3_nbd_mount_close. */
int  r3_nbd_mount_prepare(const struct r3_nbd_mount_opts *o, struct r3_nbd_mount **out);
int  r3_nbd_mount_connect(struct r3_nbd_mount *m, const struct r3_nbd_mount_opts *o);
/* A prepared FUSE mount serves with one thread until this starts the
 * others (fuse_threads). Before starting them, it waits (at most ms) for
 * the first read to be answered: the owner's first access then does not
 * share the CPU with thread starts. */
void r3_nbd_mount_grow(struct r3_nbd_mount *m, unsigned ms);
const char *r3_nbd_mount_path(const struct r3_nbd_mount *m);
bool r3_nbd_mount_is_kernel(const struct r3_nbd_mount *m);
/* FUSE: blocks until unmounted from outside; kernel: returns at once. */
void r3_nbd_mount_wait(struct r3_nbd_mount *m);
/* Unmount / disconnect and free. 0 or -errno (a device that stayed busy). */
int  r3_nbd_mount_close(struct r3_nbd_mount *m);
/* Parse "auto" | "fuse" | "kernel"; -EINVAL otherwise. */
int  r3_nbd_mount_mode_parse(const char *s);

#endif
