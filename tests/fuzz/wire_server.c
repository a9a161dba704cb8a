/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the r3 server's side of a connection (src/wire/server.c on
 * src/net): hello checks, frame bounds, request decoding and dispatch. A
 * real r3_wire_server serves a 64 KiB mem:// export on a unix socket; each
 * input is written to one connection as the client's byte stream (with a
 * valid hello in front when the first byte is odd), then the target reads
 * the server's answer to the end: every frame the server sends must be a
 * well-formed hello or reply. */
#include "fuzz.h"
#include "internal.h"
#include "r3/source.h"
#include "r3/wire.h"
#include "wire/frame.h"

static struct r3_wire_server *srv;
static struct r3_source *src;
static char sock[108];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (r3_source_open("mem:?size=64K", &src) < 0)
        FUZZ_DIE("mem source: %s", r3_last_error());
    snprintf(sock, sizeof sock, "/tmp/r3fuzz-server-%d.sock", (int)getpid());
    unlink(sock);
    fuzz_rm_at_exit(sock);
    char listen[128];
    snprintf(listen, sizeof listen, "unix:%s", sock);
    struct r3_wire_server_opts o = { .src = src, .listen = listen, .max_request = 65536,
                                     .workers = 2, .handshake_ms = 2000, .timeout_ms = 2000,
                                     .max_inflight = 1u << 20 };
    if (r3_wire_server_new(&o, &srv) < 0)
        FUZZ_DIE("r3_wire_server_new: %s", r3_last_error());
    return 0;
}

/* Check every frame of the server's answer, up to the end of the stream. */
static void check_answer(int fd)
{
    static char buf[1 << 17];
    size_t n = 0;
    bool first = true;
    for (;;) {
        ssize_t r = recv(fd, buf + n, sizeof buf - n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            FUZZ_DIE("the server neither answered nor closed within 10 s");
        if (r <= 0)
            break;
        n += (size_t)r;
        size_t off = 0;
        for (;;) {
            uint32_t len;
            if (n - off < R3_WIRE_HDR)
                break;
            if (r3_wire_frame_len(buf + off, 65536 + R3_WIRE_OVERHEAD, &len) < 0)
                FUZZ_DIE("the server sent a frame of bad length %u", len);
            if (n - off - R3_WIRE_HDR < len)
                break;
            msgpack_unpacked up;
            struct r3_wire_msg m;
            /* a read reply's data follows its bin header inside the frame */
            if (r3_wire_decode(buf + off + R3_WIRE_HDR, len, &up, &m) < 0)
                FUZZ_DIE("the server sent a frame that does not decode");
            if (first ? m.type != R3_WIRE_HELLO : m.type != R3_WIRE_REPLY)
                FUZZ_DIE("the server sent a %s where a %s belongs", m.type == R3_WIRE_HELLO ? "hello" : "reply",
                         first ? "hello" : "reply");
            msgpack_unpacked_destroy(&up);
            first = false;
            off += R3_WIRE_HDR + len;
        }
        memmove(buf, buf + off, n - off);
        n -= off;
        if (n == sizeof buf)
            FUZZ_DIE("a server frame larger than the buffer");
    }
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
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        r3_wire_start(&sb, &pk);
        r3_wire_pack_client_hello(&pk, "fuzz", data[0] & 2 ? 42 : 0, data[0] & 4 ? R3_WIRE_FEATURES : 0);
        r3_wire_finish(&sb, 0);
        fuzz_write_all(fd, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    }
    /* the server may close early (a bad frame): then the rest is not sent */
    fuzz_write_all(fd, data + 1, size - 1);
    shutdown(fd, SHUT_WR);
    check_answer(fd);
    close(fd);
    /* Return once the server has let the connection go, so that its frees
     * land in this input (libFuzzer's leak check compares mallocs and frees
     * per input): a connection never released is a finding of its own. */
    for (int i = 0; r3_wire_server_conns(srv) > 0; i++) {
        if (i == 10000)
            FUZZ_DIE("the r3 server still holds the connection 10 s after it closed");
        usleep(1000);
    }
    usleep(200);           /* the last frees follow the count's decrement */
    return 0;
}
