/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: what the redis:// source reads from a server (src/sources/
 * redis.c): its bounded reply reader (r3_redis_reply: announced bulk
 * lengths, the reply budget, the sink that lands GET replies in the
 * caller's buffer), the meta key, AUTH/SELECT answers, and the replies to
 * GET/SET/SETRANGE. A fake server on 127.0.0.1 sends the input (from byte
 * 1) on the first connection as everything the server says, whatever the
 * client asks; other connections get no answer (timeout=20ms ends them).
 * Byte 0 picks the URI (plain, password, db) and the operations. Retry
 * backoffs are instant here (FUZZ_NO_SLEEP). */
#include "fuzz.h"
#include "internal.h"
#include "r3/source.h"

FUZZ_NO_SLEEP

static struct fuzz_peer *peer;

static void serve(int fd, const uint8_t *data, size_t size, bool first)
{
    if (first && size > 1)
        fuzz_write_all(fd, data + 1, size - 1);
    fuzz_drain(fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    peer = fuzz_peer_start(false, serve);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    fuzz_peer_set(peer, data, size);
    static const char *const auth[] = { "", ":secret@", "user:secret@", "" };
    static const char *const extra[] = { "", "", "", "&db=3" };
    char uri[300];
    snprintf(uri, sizeof uri, "redis://%s127.0.0.1:%d/fz?size=16K&chunk=4K&conns=1&timeout=20ms"
             "&connect_timeout=1s%s", auth[data[0] & 3], peer->port, extra[data[0] & 3]);
    struct r3_source *s;
    if (r3_source_open(uri, &s) < 0)
        return 0;
    static char buf[8192];
    switch ((data[0] >> 2) & 3) {
    case 0: r3_source_read(s, buf, sizeof buf, 0); break;          /* two whole chunks: GET */
    case 1: r3_source_read(s, buf, 100, 4000); break;              /* across chunks: GETRANGE */
    case 2: r3_source_write(s, buf, 4096, 4096); break;            /* a whole chunk: SET */
    default: r3_source_write(s, "abc", 3, 10); r3_source_flush(s); break;   /* SETRANGE */
    }
    r3_source_close(s);
    return 0;
}
