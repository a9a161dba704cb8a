/* A mount served by a helper process. The FUSE daemon of a region's mount
 * must not live in the process that maps the file: when that process execs
 * (a wrapper script execs the real program) or dies, its threads vanish
 * while the kernel still waits on them to flush the file, and the process
 * hangs in D state for good. The helper is forked at open, mounts, and
 * unmounts when the owner closes the control socket or goes away. */
#ifndef R3_NBD_HELPER_H
#define R3_NBD_HELPER_H

#include "nbd/mount.h"

struct r3_nbd_helper;

/* Fork a helper that runs r3_nbd_mount_open(o). 0 when the file is ready. */
int  r3_nbd_helper_start(const struct r3_nbd_mount_opts *o, struct r3_nbd_helper **out);
const char *r3_nbd_helper_path(const struct r3_nbd_helper *h);
/* Ask the helper to unmount, wait for it, free. 0 or -errno. */
int  r3_nbd_helper_stop(struct r3_nbd_helper *h);

#endif
