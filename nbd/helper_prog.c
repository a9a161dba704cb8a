/* SPDX-License-Identifier: BSD-3-Clause */
/* r3-nbd-helper: the mount helper of an nbd region as a program of its own
 * (see nbd/helper.h). Not a tool for people: the library execs it right
 * after fork, with the control socket on fd 3 and the mount options on the
 * command line (nbd/helper.c, helper_argv), and it runs the helper's life. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"
#include "nbd/helper.h"

static bool num(const char *a, const char *key, unsigned long long *v)
{
    size_t n = strlen(key);
    if (strncmp(a, key, n) || a[n] != '=')
        return false;
    char *end;
    errno = 0;
    *v = strtoull(a + n + 1, &end, 10);
    return !errno && end != a + n + 1 && !*end;
}

static const char *str(const char *a, const char *key)
{
    size_t n = strlen(key);
    return strncmp(a, key, n) || a[n] != '=' ? NULL : a + n + 1;
}

int main(int argc, char **argv)
{
    struct r3_nbd_mount_opts o = { 0 };
    unsigned long long owner = 0, v;
    const char *s;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (num(a, "--owner", &owner))
            continue;
        if ((s = str(a, "--unix")))
            o.client.unix_path = s;
        else if ((s = str(a, "--export")))
            o.client.export_name = s;
        else if (num(a, "--max-inflight", &v))
            o.client.max_inflight = (unsigned)v;
        else if (num(a, "--connect-timeout", &v))
            o.client.connect_timeout_ms = (unsigned)v;
        else if (num(a, "--request-timeout", &v))
            o.client.timeout_ms = (unsigned)v;
        else if (num(a, "--no-structured", &v))
            o.client.no_structured = v != 0;
        else if (num(a, "--mode", &v))
            o.mode = (int)v;
        else if ((s = str(a, "--mountpoint")))
            o.mountpoint = s;
        else if ((s = str(a, "--name")))
            o.name = s;
        else if ((s = str(a, "--fsname")))
            o.fsname = s;
        else if (num(a, "--fuse-threads", &v))
            o.fuse_threads = (unsigned)v;
        else if (num(a, "--device-timeout", &v))
            o.timeout_ms = (unsigned)v;
        else if (num(a, "--size", &v))
            o.size = v;
        else if (num(a, "--readonly", &v))
            o.readonly = v != 0;
        else {
            fprintf(stderr, "r3-nbd-helper: unknown argument '%s' (the r3 library starts this program)\n", a);
            return 2;
        }
    }
    if (!owner || !o.client.unix_path) {
        fprintf(stderr, "r3-nbd-helper: needs --owner and --unix (the r3 library starts this program)\n");
        return 2;
    }
    r3_nbd_helper_run(&o, 3, (pid_t)owner);
}
