/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the migration leecher's parsing of the seeder's answers
 * (src/migrate/leech.c and leech_source.c over src/wire/client.c's calls):
 * the version/chunk answer of migrate, TRACK's count, ORDER slices,
 * FINALIZE's count and list head, DIRTY slices, RELEASE, each possibly an
 * error, nil, a value where a bin belongs, a bin of the wrong length,
 * garbage or a lost connection. A fake seeder on a unix socket answers the
 * client's hello from the input's two header bytes and every data read
 * correctly (a pattern), and answers each migration call with the next
 * entry of the input's script; once the script is used up, calls get an
 * EIO reply. The target runs r3_leech_source_open, _finalize, _wait and
 * _close (two pull threads, a mem: copy).
 *
 * Byte 0: size = ((b & 15) + 1) * 16 KiB, times 1024 if bit 6 is set (then
 * there are more than 4096 chunks of 4 KiB, so FINALIZE's head cannot hold
 * the dirty list: DIRTY slices), features = b >> 4 & 3. Byte 1:
 * max_request = b * 4 KiB (0: 1 MiB; the client refuses less than 4 KiB; at
 * least 64 KiB for the large sizes, whose pull would take seconds).
 * FUZZ_TRACE=1 prints each migration call and its arguments. Then entries [kind, ...]: kind & 7 =
 * 0 uint (8 bytes BE), 1 bin of the asked length (then n: n 8-byte BE
 * words, zero padded), 2 bin of u16 length (bytes follow), 3 error (errno
 * byte), 4 nil, 5 raw bytes (u16 length), 6 close the connection, 7 small
 * uint (1 byte). */
#include "fuzz.h"
#include "internal.h"
#include "r3/migrate.h"
#include "r3/source.h"
#include "wire/frame.h"

static struct fuzz_peer *peer;
static char uri[300];

static pthread_mutex_t smu = PTHREAD_MUTEX_INITIALIZER;
static const uint8_t *script;      /* the current input (a copy owned by the target) */
static size_t ssize, spos;
static unsigned sgen;

/* n bytes of the script (fewer at its end); false if the input changed. */
static bool take(unsigned gen, uint8_t *out, size_t n, size_t *got)
{
    pthread_mutex_lock(&smu);
    bool ok = gen == sgen;
    size_t k = ok ? (ssize - spos < n ? ssize - spos : n) : 0;
    if (k)
        memcpy(out, script + spos, k);
    spos += k;
    pthread_mutex_unlock(&smu);
    if (got)
        *got = k;
    return ok;
}

static uint64_t be(const uint8_t *b, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | b[i];
    return v;
}

static bool send_sb(int fd, msgpack_sbuffer *sb, const void *data, size_t dlen)
{
    r3_wire_finish(sb, dlen);
    bool ok = fuzz_write_all(fd, sb->data, sb->size) && (!dlen || fuzz_write_all(fd, data, dlen));
    msgpack_sbuffer_clear(sb);
    return ok;
}

static bool reply(int fd, msgpack_sbuffer *sb, uint64_t id, int err, bool has_val, uint64_t val,
                  const void *data, size_t dlen, bool has_data)
{
    msgpack_packer pk;
    r3_wire_start(sb, &pk);
    r3_wire_pack_reply(&pk, id, err, err ? "fuzz: the seeder says no" : NULL, has_val, val, has_data,
                       (uint32_t)dlen);
    return send_sb(fd, sb, data, has_data ? dlen : 0);
}

/* Answer one migration call from the script; false: close the connection. */
static bool scripted(int fd, msgpack_sbuffer *sb, unsigned gen, const struct r3_wire_msg *m)
{
    uint8_t k, b[8];
    size_t got;
    if (!take(gen, &k, 1, &got))
        return false;
    if (!got)
        return reply(fd, sb, m->id, -EIO, false, 0, NULL, 0, false);
    switch (k & 7) {
    case 0:
        take(gen, b, 8, &got);
        return reply(fd, sb, m->id, 0, true, be(b, got), NULL, 0, false);
    case 1: {
        uint8_t n;
        take(gen, &n, 1, &got);
        if (!got)
            n = 0;
        size_t len = m->len > (1u << 20) ? (1u << 20) : (size_t)m->len;
        uint8_t *d = calloc(1, len ? len : 1);
        if (!d)
            FUZZ_DIE("out of memory");
        take(gen, d, (size_t)n * 8 < len ? (size_t)n * 8 : len, NULL);
        bool ok = reply(fd, sb, m->id, 0, false, 0, d, len, true);
        free(d);
        return ok;
    }
    case 2: {
        take(gen, b, 2, &got);
        size_t len = got == 2 ? (size_t)be(b, 2) : 0;
        uint8_t *d = calloc(1, len ? len : 1);
        if (!d)
            FUZZ_DIE("out of memory");
        take(gen, d, len, NULL);
        bool ok = reply(fd, sb, m->id, 0, false, 0, d, len, true);
        free(d);
        return ok;
    }
    case 3:
        take(gen, b, 1, &got);
        return reply(fd, sb, m->id, got && b[0] ? -(int)b[0] : -EINVAL, false, 0, NULL, 0, false);
    case 4:
        return reply(fd, sb, m->id, 0, false, 0, NULL, 0, false);
    case 5: {
        take(gen, b, 2, &got);
        size_t len = got == 2 ? (size_t)be(b, 2) : 0;
        uint8_t *d = malloc(len ? len : 1);
        if (!d)
            FUZZ_DIE("out of memory");
        take(gen, d, len, &got);
        bool ok = fuzz_write_all(fd, d, got);
        free(d);
        return ok;
    }
    case 6:
        return false;
    default:
        take(gen, b, 1, &got);
        return reply(fd, sb, m->id, 0, true, got ? b[0] : 0, NULL, 0, false);
    }
}

static bool is(const struct r3_wire_msg *m, const char *name)
{
    return m->method_len == strlen(name) && !memcmp(m->method, name, m->method_len);
}

static void serve(int fd, const uint8_t *data, size_t size, bool first)
{
    (void)first;
    pthread_mutex_lock(&smu);
    unsigned gen = sgen;
    pthread_mutex_unlock(&smu);
    if (size < 2)
        return;
    uint64_t dsize = ((uint64_t)(data[0] & 15) + 1) * 16384 * (data[0] & 0x40 ? 1024 : 1);
    uint64_t maxreq = data[1] ? (uint64_t)data[1] * 4096 : 1u << 20;
    if (dsize > (1u << 20) && maxreq < 65536)
        maxreq = 65536;
    static const uint8_t pattern[1 << 20];
    uint8_t *frame = malloc((1u << 20) + R3_WIRE_OVERHEAD);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    if (!frame)
        FUZZ_DIE("out of memory");
    bool hello = true;
    for (;;) {
        uint8_t h[4];
        uint32_t len;
        if (!fuzz_read_all(fd, h, 4) || r3_wire_frame_len(h, (1u << 20) + R3_WIRE_OVERHEAD, &len) < 0 ||
            !fuzz_read_all(fd, frame, len))
            break;
        msgpack_unpacked up;
        struct r3_wire_msg m;
        if (r3_wire_decode((const char *)frame, len, &up, &m) < 0)
            FUZZ_DIE("the leecher sent a frame that does not decode");
        bool ok = true;
        if (hello) {
            if (m.type != R3_WIRE_HELLO)
                FUZZ_DIE("the leecher's first frame is not a hello");
            r3_wire_start(&sb, &pk);
            r3_wire_pack_server_hello(&pk, 0, NULL, dsize, 1, R3_SRC_RDONLY | R3_SRC_PARALLEL, maxreq,
                                      (unsigned)(data[0] >> 4 & 3) & (unsigned)m.features);
            ok = send_sb(fd, &sb, NULL, 0);
            hello = false;
        } else if (m.type != R3_WIRE_REQUEST) {
            FUZZ_DIE("the leecher sent a frame that is not a request");
        } else if (is(&m, "read")) {
            if (m.len > maxreq || m.off > dsize || m.len > dsize - m.off)
                ok = reply(fd, &sb, m.id, -EINVAL, false, 0, NULL, 0, false);
            else
                ok = reply(fd, &sb, m.id, 0, false, 0, pattern, (size_t)m.len, true);
        } else if (is(&m, "size")) {
            ok = reply(fd, &sb, m.id, 0, true, dsize, NULL, 0, false);
        } else if (is(&m, "migrate") || is(&m, "track") || is(&m, "order") || is(&m, "finalize") ||
                   is(&m, "dirty") || is(&m, "release")) {
            if (getenv("FUZZ_TRACE"))
                fprintf(stderr, "fuzz: %.*s [%llu, %llu]\n", (int)m.method_len, m.method,
                        (unsigned long long)m.off, (unsigned long long)m.len);
            ok = scripted(fd, &sb, gen, &m);
        } else {
            ok = reply(fd, &sb, m.id, -ENOSYS, false, 0, NULL, 0, false);
        }
        msgpack_unpacked_destroy(&up);
        if (!ok)
            break;
    }
    msgpack_sbuffer_destroy(&sb);
    free(frame);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    peer = fuzz_peer_start(true, serve);
    snprintf(uri, sizeof uri, "r3+unix:///fuzz?socket=%s&conns=1&timeout=50ms&connect_timeout=1s",
             peer->path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 65536)
        return 0;
    uint8_t *copy = malloc(size);
    if (!copy)
        FUZZ_DIE("out of memory");
    memcpy(copy, data, size);
    pthread_mutex_lock(&smu);
    script = copy;
    ssize = size;
    spos = 2;
    sgen++;
    pthread_mutex_unlock(&smu);
    fuzz_peer_set(peer, data, size);
    struct r3_leech_opts o;
    r3_leech_opts_init(&o);
    o.pull_workers = 2;
    struct r3_leech_source *l;
    struct r3_source *src;
    if (r3_leech_source_open(uri, &o, &l, &src) == 0) {
        if (r3_leech_source_finalize(l) == 0 && r3_leech_source_wait(l) == 0) {
            /* every chunk is local: the copy must be the seeder's bytes */
            static uint8_t buf[16384];
            for (uint64_t off = 0; off < src->size; off += sizeof buf) {
                if (r3_source_read(src, buf, sizeof buf, off) < 0)
                    FUZZ_DIE("the leecher is done but cannot read offset %llu: %s",
                             (unsigned long long)off, r3_last_error());
                static const uint8_t zero[sizeof buf];
                if (memcmp(buf, zero, sizeof buf))
                    FUZZ_DIE("the leecher is done but bytes at %llu are not the seeder's",
                             (unsigned long long)off);
            }
        }
        r3_leech_source_close(l);
    }
    fuzz_peer_idle(peer);                 /* the fake seeder's frees land in this input */
    pthread_mutex_lock(&smu);
    script = NULL;
    ssize = spos = 0;
    sgen++;
    pthread_mutex_unlock(&smu);
    free(copy);
    return 0;
}
