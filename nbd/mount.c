/* SPDX-License-Identifier: BSD-3-Clause */
/* Mount an NBD export as a kernel device or a FUSE file (see mount.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"
#include "nbd/fuse.h"
#include "nbd/kernel.h"
#include "nbd/mount.h"
#include "nbd/proto.h"

struct r3_nbd_mount {
    bool kernel;
    int index;
    char path[64];
    struct r3_nbd_client *client;
    struct r3_nbd_fuse *fuse;
    unsigned timeout_ms;
};

int r3_nbd_mount_mode_parse(const char *s)
{
    if (!s || !strcmp(s, "auto"))
        return R3_NBD_MOUNT_AUTO;
    if (!strcmp(s, "fuse"))
        return R3_NBD_MOUNT_FUSE;
    if (!strcmp(s, "kernel"))
        return R3_NBD_MOUNT_KERNEL;
    return r3_error(-EINVAL, "mount mode '%s' is not auto, fuse or kernel", s);
}

int r3_nbd_mount_open(const struct r3_nbd_mount_opts *o, struct r3_nbd_mount **out)
{
    *out = NULL;
    int mode = o->mode;
    if (mode == R3_NBD_MOUNT_AUTO)
        mode = r3_nbd_kernel_available() ? R3_NBD_MOUNT_KERNEL : R3_NBD_MOUNT_FUSE;
    struct r3_nbd_mount *m = calloc(1, sizeof *m);
    if (!m)
        return r3_error(-ENOMEM, "nbd mount: out of memory");
    m->timeout_ms = o->timeout_ms ? o->timeout_ms : 5000;
    struct r3_nbd_client_opts co = o->client;
    int rc;
    if (mode == R3_NBD_MOUNT_KERNEL) {
        if (!r3_nbd_kernel_available()) {
            free(m);
            return r3_error(-ENODEV, "nbd mount: no kernel NBD support here (no nbd module or /dev/nbd0)");
        }
        /* The kernel speaks simple replies, over a plain socket. */
        co.no_structured = true;
        co.handshake_only = true;
        struct r3_nbd_client *c;
        if ((rc = r3_nbd_client_connect(&co, &c)) < 0) {
            free(m);
            return rc;
        }
        int fd = r3_nbd_client_take_fd(c);
        rc = fd < 0 ? fd : r3_nbd_kernel_connect(fd, r3_nbd_client_size(c), r3_nbd_client_flags(c),
                                                 m->timeout_ms, &m->index);
        if (fd >= 0)
            close(fd);
        r3_nbd_client_close(c);
        if (rc < 0) {
            free(m);
            return rc;
        }
        m->kernel = true;
        snprintf(m->path, sizeof m->path, "/dev/nbd%d", m->index);
        *out = m;
        return 0;
    }
    if ((rc = r3_nbd_client_connect(&co, &m->client)) < 0) {
        free(m);
        return rc;
    }
    struct r3_nbd_fuse_opts fo = {
        .mountpoint = o->mountpoint, .name = o->name, .client = m->client,
        .threads = o->fuse_threads, .fsname = o->fsname,
        .readonly = r3_nbd_client_flags(m->client) & NBD_FLAG_READ_ONLY,
    };
    if ((rc = r3_nbd_fuse_mount(&fo, &m->fuse)) < 0) {
        r3_nbd_client_close(m->client);
        free(m);
        return rc;
    }
    r3_nbd_fuse_grow(m->fuse);
    *out = m;
    return 0;
}

int r3_nbd_mount_prepare(const struct r3_nbd_mount_opts *o, struct r3_nbd_mount **out)
{
    *out = NULL;
    if (o->mode == R3_NBD_MOUNT_KERNEL || (o->mode == R3_NBD_MOUNT_AUTO && r3_nbd_kernel_available()))
        return -EOPNOTSUPP;                 /* the kernel needs the connection first */
    if (!o->size)
        return r3_error(-EINVAL, "nbd mount: prepare needs the export's size");
    struct r3_nbd_mount *m = calloc(1, sizeof *m);
    if (!m)
        return r3_error(-ENOMEM, "nbd mount: out of memory");
    struct r3_nbd_fuse_opts fo = {
        .mountpoint = o->mountpoint, .name = o->name, .client = NULL, .size = o->size,
        .threads = o->fuse_threads, .fsname = o->fsname, .readonly = o->readonly,
    };
    int rc = r3_nbd_fuse_mount(&fo, &m->fuse);
    if (rc < 0) {
        free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int r3_nbd_mount_connect(struct r3_nbd_mount *m, const struct r3_nbd_mount_opts *o)
{
    int rc = r3_nbd_client_connect(&o->client, &m->client);
    if (rc == 0 && r3_nbd_client_size(m->client) != o->size)
        rc = r3_error(-EPROTO, "nbd mount: the export has %llu bytes, the mount was made for %llu",
                      (unsigned long long)r3_nbd_client_size(m->client), (unsigned long long)o->size);
    if (rc < 0 && m->client) {
        r3_nbd_client_close(m->client);
        m->client = NULL;
    }
    r3_nbd_fuse_attach(m->fuse, m->client, rc);
    return rc;
}

void r3_nbd_mount_grow(struct r3_nbd_mount *m, unsigned ms)
{
    if (m->kernel)
        return;
    if (ms)
        r3_nbd_fuse_wait_read(m->fuse, ms);
    r3_nbd_fuse_grow(m->fuse);
}

const char *r3_nbd_mount_path(const struct r3_nbd_mount *m)
{
    return m->kernel ? m->path : r3_nbd_fuse_path(m->fuse);
}

bool r3_nbd_mount_is_kernel(const struct r3_nbd_mount *m)
{
    return m->kernel;
}

void r3_nbd_mount_wait(struct r3_nbd_mount *m)
{
    if (!m->kernel)
        r3_nbd_fuse_wait(m->fuse);
}

int r3_nbd_mount_close(struct r3_nbd_mount *m)
{
    if (!m)
        return 0;
    int rc = 0;
    if (m->kernel) {
        rc = r3_nbd_kernel_disconnect(m->index, m->timeout_ms);
    } else {
        if (!m->client)                     /* prepared, never connected: requests give up */
            r3_nbd_fuse_attach(m->fuse, NULL, -ESHUTDOWN);
        r3_nbd_fuse_unmount(m->fuse);
        if (m->client)
            r3_nbd_client_close(m->client);
    }
    free(m);
    return rc;
}
