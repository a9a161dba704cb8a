/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the NBD server (nbd/server.c): newstyle negotiation (flags,
 * options: GO/INFO/EXPORT_NAME/LIST/STRUCTURED_REPLY/meta contexts/ABORT,
 * STARTTLS without TLS) and transmission (requests of every type, bad
 * magic, lengths past the export or the maximum, writes cut short). A real
 * server exports a 64 KiB mem: source on a unix socket; each input is one
 * connection's bytes from the client, with a valid negotiation in front
 * when byte 0 is odd (and structured replies asked for when bit 1 is set);
 * the target reads the server's answer to the end (10 s at most). Written
 * against the nbd/ of integ (r3_nbd_server_start), before the nbd branch's
 * rewrite on src/net. */
#include "fuzz.h"
#include "internal.h"
#include "r3/source.h"
#include "nbd/server.h"

static struct r3_nbd_server *srv;
static struct r3_source *src;
static char sock[108];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (r3_source_open("mem:?size=64K", &src) < 0)
        FUZZ_DIE("mem source: %s", r3_last_error());
    snprintf(sock, sizeof sock, "/tmp/r3fuzz-nbd-%d.sock", (int)getpid());
    unlink(sock);
    fuzz_rm_at_exit(sock);
    char listen[128];
    snprintf(listen, sizeof listen, "unix:%s", sock);
    static struct r3_nbd_export ex = { .name = "" };
    ex.src = src;
    struct r3_nbd_server_opts o = { .listen = listen, .exports = &ex, .nexports = 1, .workers = 2,
                                    .max_request = 65536 };
    if (r3_nbd_server_start(&o, &srv) < 0)
        FUZZ_DIE("r3_nbd_server_start: %s", r3_last_error());
    return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* An option: "IHAVEOPT", opt, length, data. */
static size_t opt(uint8_t *p, uint32_t o, const void *d, uint32_t n)
{
    memcpy(p, "IHAVEOPT", 8);
    put32(p + 8, o);
    put32(p + 12, n);
    memcpy(p + 16, d, n);
    return 16 + n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        FUZZ_DIE("connect %s: %s", sock, strerror(errno));
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (data[0] & 1) {
        uint8_t pre[64];
        size_t n = 0;
        put32(pre, 3);                        /* FIXED_NEWSTYLE | NO_ZEROES */
        n += 4;
        if (data[0] & 2)
            n += opt(pre + n, 8, "", 0);      /* STRUCTURED_REPLY */
        static const uint8_t go[6] = { 0, 0, 0, 0, 0, 0 };   /* name "", no info requests */
        n += opt(pre + n, 7, go, sizeof go);  /* GO */
        fuzz_write_all(fd, pre, n);
    }
    fuzz_write_all(fd, data + 1, size - 1);
    shutdown(fd, SHUT_WR);
    char buf[65536];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            FUZZ_DIE("the NBD server neither answered nor closed within 10 s");
        if (r <= 0)
            break;
    }
    close(fd);
    /* Return once the server has let the connection go, so that its frees
     * land in this input (libFuzzer's leak check compares mallocs and frees
     * per input): a connection never released is a finding of its own. */
    for (int i = 0; r3_nbd_server_conns(srv) > 0; i++) {
        if (i == 10000)
            FUZZ_DIE("the NBD server still holds the connection 10 s after it closed");
        usleep(1000);
    }
    usleep(200);           /* the last frees follow the count's decrement */
    return 0;
}
