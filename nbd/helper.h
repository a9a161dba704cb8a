/* SPDX-License-Identifier: BSD-3-Clause */
/* A mount served by a helper process. The FUSE daemon of a region's mount
 * must not live in the process that maps the file: when that process execs
 * (a wrapper script execs the real program) or dies, its threads vanish
 * while the kernel still waits on them to flush the file, and the process
 * hangs in D state for good. The helper is a program of its own
 * (r3-nbd-helper, nbd/helper_prog.c) that the owner starts with
 * posix_spawn: a child forked from a threaded process inherits every lock
 * another thread held at the fork (a malloc arena, the sanitizers'
 * allocator, a stdio lock) and may wait on it for ever, while a fresh
 * program holds none; and spawning copies no page tables (a fork of a
 * 256 MiB owner took tens of milliseconds of the region's open). Where that
 * program is not found a forked child runs the helper itself. It mounts when told, and unmounts when the owner closes the
 * control socket or goes away (EOF, the owner's pidfd, or signs of dying). */
#ifndef R3_NBD_HELPER_H
#define R3_NBD_HELPER_H

#include <sys/types.h>
#include "nbd/mount.h"

struct r3_nbd_helper;

/* Start a helper that will run r3_nbd_mount_open(o): o and the strings it
 * points to must be ready now (they go on its command line, or a forked
 * child has a copy of this memory). */
int  r3_nbd_helper_spawn(const struct r3_nbd_mount_opts *o, struct r3_nbd_helper **out);
/* Tell the helper the server is listening. 0 when the file is mounted (its
 * path: r3_nbd_helper_path); then r3_nbd_helper_ready: 0 when the mount is
 * connected to the server (the file may be opened and mapped in between:
 * its reads wait for the connection). On failure the helper is gone and h
 * must still be stopped. o->size set: a FUSE mount is made at once. */
int  r3_nbd_helper_mount(struct r3_nbd_helper *h);
int  r3_nbd_helper_ready(struct r3_nbd_helper *h);
const char *r3_nbd_helper_path(const struct r3_nbd_helper *h);
/* 0 while the helper runs; else it has ended (left for stop to reap) and
 * why is written to why: "was killed by signal 9 (Killed)", "exited with status 1". */
int  r3_nbd_helper_ended(const struct r3_nbd_helper *h, char *why, size_t n);
/* Ask the helper to unmount, wait for it, free. 0 or -errno. */
int  r3_nbd_helper_stop(struct r3_nbd_helper *h);

/* The helper's life on control socket ctl, owner the process to watch (for
 * r3-nbd-helper's main): never returns. */
__attribute__((noreturn)) void r3_nbd_helper_run(const struct r3_nbd_mount_opts *o, int ctl, pid_t owner);
/* Where r3-nbd-helper is (the build tree's, else the installed one), or NULL. */
const char *r3_nbd_helper_program(void);

#endif
