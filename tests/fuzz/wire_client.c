/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the r3:// client's side (src/wire/client.c): the server's
 * hello, then replies (the zero-copy data path, the decoded path, errors,
 * unknown ids, a stream cut anywhere). A fake server on a unix socket reads
 * the client's hello and sends the input's first frame (or all of it if it
 * does not start with a frame); it reads the client's one request and sends
 * the rest, then closes. Input byte 0 picks the request: a 16-byte read, a
 * 4 KiB read, a 16-byte write, a flush (0-3), an extent query of 4 KiB (4). Reconnections get nothing (the
 * call's deadline, timeout=, ends them). */
#include "fuzz.h"
#include "internal.h"
#include "r3/source.h"
#include "wire/frame.h"

static struct fuzz_peer *peer;
static char uri[300];

/* Read one frame (header + up to 1 MiB payload) and drop it; false if none. */
static bool skip_frame(int fd)
{
    uint8_t h[4];
    if (!fuzz_read_all(fd, h, 4))
        return false;
    uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (len > (1u << 20))
        return false;
    char *b = malloc(len ? len : 1);
    bool ok = b && fuzz_read_all(fd, b, len);
    free(b);
    return ok;
}

static void serve(int fd, const uint8_t *data, size_t size, bool first)
{
    if (!first || size < 1 || !skip_frame(fd))
        return;
    data++;
    size--;
    size_t n = size;                      /* the first frame: the hello */
    if (size >= 4) {
        uint32_t len = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 | data[3];
        if (len <= size - 4)
            n = 4 + len;
    }
    if (!fuzz_write_all(fd, data, n))
        return;
    if (n < size && skip_frame(fd))
        fuzz_write_all(fd, data + n, size - n);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    peer = fuzz_peer_start(true, serve);
    snprintf(uri, sizeof uri, "r3+unix:///fuzz?socket=%s&conns=1&timeout=20ms&connect_timeout=1s",
             peer->path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    fuzz_peer_set(peer, data, size);
    struct r3_source *s;
    if (r3_source_open(uri, &s) < 0)
        return 0;
    static char buf[4096];
    uint64_t run;
    if ((data[0] & 7) == 4)                 /* 4: an extent query (a feature of the hello) */
        r3_source_extent(s, 0, sizeof buf, &run);
    else switch (data[0] & 3) {
    case 0: r3_source_read(s, buf, 16, 0); break;
    case 1: r3_source_read(s, buf, sizeof buf, 0); break;
    case 2: r3_source_write(s, "0123456789abcdef", 16, 0); break;
    default: r3_source_flush(s); break;
    }
    r3_source_close(s);
    return 0;
}
