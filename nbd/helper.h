/* SPDX-License-Identifier: BSD-3-Clause */
/* A mount served by a helper process. The FUSE daemon of a region's mount
 * must not live in the process that maps the file: when that process execs
 * (a wrapper script execs the real program) or dies, its threads vanish
 * while the kernel still waits on them to flush the file, and the process
 * hangs in D state for good. The helper is forked early, before the owner
 * starts the server threads (a child forked from a threaded process may
 * inherit a lock held by a thread it does not have), mounts when told, and
 * unmounts when the owner closes the control socket or goes away. */
#ifndef R3_NBD_HELPER_H
#define R3_NBD_HELPER_H

#include "nbd/mount.h"

struct r3_nbd_helper;

/* Fork a helper that will run r3_nbd_mount_open(o): o and the strings it
 * points to must be ready now (the child has a copy of this memory). */
int  r3_nbd_helper_spawn(const struct r3_nbd_mount_opts *o, struct r3_nbd_helper **out);
/* Tell the helper the server is listening. 0 when the file is mounted (its
 * path: r3_nbd_helper_path); then r3_nbd_helper_ready: 0 when the mount is
 * connected to the server (the file may be opened and mapped in between:
 * its reads wait for the connection). On failure the helper is gone and h
 * must still be stopped. o->size set: a FUSE mount is made at once. */
int  r3_nbd_helper_mount(struct r3_nbd_helper *h);
int  r3_nbd_helper_ready(struct r3_nbd_helper *h);
const char *r3_nbd_helper_path(const struct r3_nbd_helper *h);
/* Ask the helper to unmount, wait for it, free. 0 or -errno. */
int  r3_nbd_helper_stop(struct r3_nbd_helper *h);

#endif
