/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the migration seeder's request handling (src/migrate/seed.c
 * and gate.c behind src/wire/server.c): version negotiation (migrate),
 * TRACK, ORDER slices, FINALIZE (count only, or count and the list's head),
 * DIRTY slices, RELEASE, in any order, any session, repeated. One seeder
 * (r3_seed_source_open: a 16-chunk mem:// source behind the gate, 4 KiB
 * chunks) serves on a unix socket; the input is written to one connection
 * as the leecher's byte stream, then the answer is read to the end: every
 * frame must be a well-formed hello or reply. Between inputs the seeder is
 * put back to its first state (idle, gate open, source zeroed): seed.c is
 * compiled into this target (#include, nothing in it changed) for that,
 * since a new seeder per input costs half a second (its server's stop).
 * Byte 0: bit 0 = a valid client hello first, bit 1 = opts.sync. Byte 1:
 * the chunks 0-7 the program writes through the gate once TRACK started
 * (after_track), so FINALIZE has a dirty list. The rest: the stream. */
#include "fuzz.h"
#include "internal.h"
#include "r3/migrate.h"
#include "r3/source.h"
#include "wire/frame.h"
#include "../../src/migrate/seed.c"

static char sock[108], listen_[128];
static struct r3_source *src, *served;
static struct r3_seeder *seeder;

struct prog {
    struct r3_source *served;
    uint8_t writes;
};
static struct prog prog;

static void after_track(void *arg, struct r3_region *r)
{
    struct prog *p = arg;
    (void)r;
    static const char blk[64] = "written by the program while tracking";
    for (int i = 0; i < 8 && p->served; i++)
        if (p->writes >> i & 1)
            r3_source_write(p->served, blk, sizeof blk, (uint64_t)i * 4096 + 100);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(sock, sizeof sock, "/tmp/r3fuzz-seed-%d.sock", (int)getpid());
    snprintf(listen_, sizeof listen_, "unix:%s", sock);
    unlink(sock);
    fuzz_rm_at_exit(sock);
    if (r3_source_open("mem:?size=64K", &src) < 0)
        FUZZ_DIE("mem source: %s", r3_last_error());
    static struct r3_seed_opts o;
    r3_seed_opts_init(&o);
    o.listen = listen_;
    o.timeout_ms = 2000;
    o.after_track = after_track;
    o.arg = &prog;
    if (r3_seed_source_open(src, 4096, &o, &served, &seeder) < 0)
        FUZZ_DIE("r3_seed_source_open: %s", r3_last_error());
    prog.served = served;
    return 0;
}

/* Back to a new seeder's state: nothing tracked, no session, gate open,
 * the source zeroed. */
static void reset(void)
{
    static const uint8_t zero[65536];
    struct r3_seeder *s = seeder;
    pthread_mutex_lock(&s->fmu);
    pthread_mutex_lock(&s->mu);
    if (s->state == S_TRACKING)
        track_stop(s);
    s->state = S_IDLE;
    s->session = 0;
    free(s->order);
    free(s->dirty);
    s->order = s->dirty = NULL;
    s->norder = s->ndirty = 0;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->fmu);
    r3m_gate_set(s->gate, R3M_GATE_OPEN);
    if (r3_source_write(src, zero, sizeof zero, 0) < 0)
        FUZZ_DIE("zeroing the source: %s", r3_last_error());
}

/* Check every frame of the seeder's answer, up to the end of the stream. */
static void check_answer(int fd)
{
    static char buf[1 << 21];       /* a FINALIZE answer may be 1 MiB */
    size_t n = 0;
    bool first = true;
    for (;;) {
        ssize_t r = recv(fd, buf + n, sizeof buf - n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            FUZZ_DIE("the seeder neither answered nor closed within 10 s");
        if (r <= 0)
            break;
        n += (size_t)r;
        size_t off = 0;
        for (;;) {
            uint32_t len;
            if (n - off < R3_WIRE_HDR)
                break;
            if (r3_wire_frame_len(buf + off, (1u << 20) + R3_WIRE_OVERHEAD, &len) < 0)
                FUZZ_DIE("the seeder sent a frame of bad length %u", len);
            if (n - off - R3_WIRE_HDR < len)
                break;
            msgpack_unpacked up;
            struct r3_wire_msg m;
            if (r3_wire_decode(buf + off + R3_WIRE_HDR, len, &up, &m) < 0)
                FUZZ_DIE("the seeder sent a frame that does not decode");
            if (first ? m.type != R3_WIRE_HELLO : m.type != R3_WIRE_REPLY)
                FUZZ_DIE("the seeder sent a %s where a %s belongs",
                         m.type == R3_WIRE_HELLO ? "hello" : "reply", first ? "hello" : "reply");
            msgpack_unpacked_destroy(&up);
            first = false;
            off += R3_WIRE_HDR + len;
        }
        memmove(buf, buf + off, n - off);
        n -= off;
        if (n == sizeof buf)
            FUZZ_DIE("a seeder frame larger than the buffer");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 65536)
        return 0;
    prog.writes = data[1];
    seeder->o.sync = data[0] & 2;
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
        r3_wire_pack_client_hello(&pk, "fuzz", 42, R3_WIRE_FEATURES);
        r3_wire_finish(&sb, 0);
        fuzz_write_all(fd, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    }
    fuzz_write_all(fd, data + 2, size - 2);   /* the seeder may close early (a bad frame) */
    shutdown(fd, SHUT_WR);
    check_answer(fd);
    close(fd);
    /* once the seeder has let the connection go (its frees land in this input) */
    for (int i = 0; r3_wire_server_conns(seeder->ws) > 0; i++) {
        if (i == 10000)
            FUZZ_DIE("the seeder still holds the connection 10 s after it closed");
        usleep(1000);
    }
    usleep(200);
    reset();
    return 0;
}
