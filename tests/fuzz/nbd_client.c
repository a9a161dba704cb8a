/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the NBD client (nbd/client.c through the nbd+unix:// source):
 * the server's greeting, option replies (GO/INFO, STRUCTURED_REPLY, errors)
 * and transmission replies (simple and structured chunks, errors, unknown
 * cookies, cut anywhere). The input from byte 1 is what the server says, in
 * two parts separated by "@@@@": the handshake, sent at once; the replies,
 * sent when the client's first request has arrived (so cookies can match).
 * A fake server on a unix socket reads the client's options and requests
 * and closes after 50 ms of silence (the client has no timeout of its own).
 * Byte 0 picks the request: read, write, flush, trim (bits 0-1), after an
 * extent query (BLOCK_STATUS) when bit 2 is set. Written against the
 * nbd/ of integ (before the nbd branch's rewrite on src/net): it uses only
 * the nbd+unix:// URI, which the rewrite keeps. */
#include "fuzz.h"
#include "internal.h"
#include "r3/source.h"

#define SEP "@@@@"

static struct fuzz_peer *peer;
static char uri[300];

/* Read exactly n bytes, each read waiting at most 50 ms. */
static bool get(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (poll(&pf, 1, 50) <= 0)
            return false;
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

static bool skip(int fd, uint32_t n)
{
    char b[4096];
    while (n > 0) {
        uint32_t k = n < sizeof b ? n : (uint32_t)sizeof b;
        if (!get(fd, b, k))
            return false;
        n -= k;
    }
    return true;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Skip the client's flags and options; true once a request's header (and
 * write data) has been read. */
static bool until_request(int fd)
{
    uint8_t b[28];
    if (!get(fd, b, 4))                    /* client flags */
        return false;
    for (;;) {
        if (!get(fd, b, 8))
            return false;
        if (memcmp(b, "IHAVEOPT", 8) == 0) {
            if (!get(fd, b, 8) || be32(b + 4) > (1u << 20) || !skip(fd, be32(b + 4)))
                return false;
            continue;
        }
        if (be32(b) != 0x25609513u || !get(fd, b + 8, 20))
            return false;
        uint16_t type = (uint16_t)(b[6] << 8 | b[7]);
        return type != 1 || (be32(b + 24) <= (1u << 20) && skip(fd, be32(b + 24)));
    }
}

static void serve(int fd, const uint8_t *data, size_t size, bool first)
{
    if (!first || size < 1)
        return;
    const uint8_t *p = data + 1, *e = data + size;
    const uint8_t *sep = memmem(p, (size_t)(e - p), SEP, 4);
    if (!fuzz_write_all(fd, p, (size_t)((sep ? sep : e) - p)))
        return;
    if (sep && until_request(fd))
        fuzz_write_all(fd, sep + 4, (size_t)(e - sep - 4));
    char b[4096];
    while (get(fd, b, 1) && recv(fd, b, sizeof b, MSG_DONTWAIT) >= 0) {}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    peer = fuzz_peer_start(true, serve);
    snprintf(uri, sizeof uri, "nbd+unix:///?socket=%s", peer->path);
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
    if (data[0] & 4)                      /* BLOCK_STATUS (base:allocation) first */
        r3_source_extent(s, 0, 65536, &run);
    switch (data[0] & 3) {
    case 0: r3_source_read(s, buf, 512, 0); break;
    case 1: r3_source_write(s, buf, 512, 512); break;
    case 2: r3_source_flush(s); break;
    default: r3_source_read(s, buf, sizeof buf, 0); break;
    }
    r3_source_close(s);
    return 0;
}
