/* SPDX-License-Identifier: BSD-3-Clause */
/* r3 wire protocol: frame encode/decode and bounds, and an in-process
 * server + r3:// client over loopback. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <unistd.h>
#include "testutil.h"
#include "internal.h"
#include "r3/wire.h"
#include "wire/frame.h"
#include "net/net.h"

/* Pack with fn into sb; return the payload (after the 4-byte header). */
#define PACK(sb, expr) do { msgpack_packer pk_; r3_wire_start(&(sb), &pk_); \
    msgpack_packer *pk = &pk_; expr; r3_wire_finish(&(sb), 0); } while (0)

START_TEST(frame_len_bounds)
{
    uint8_t h[4] = { 0, 0, 0, 0 };
    uint32_t l;
    ck_assert_int_eq(r3_wire_frame_len(h, 100, &l), -EMSGSIZE);      /* empty */
    h[3] = 100;
    ck_assert_int_eq(r3_wire_frame_len(h, 100, &l), 0);
    ck_assert_uint_eq(l, 100);
    h[3] = 101;
    ck_assert_int_eq(r3_wire_frame_len(h, 100, &l), -EMSGSIZE);
    uint8_t big[4] = { 0xff, 0xff, 0xff, 0xff };
    ck_assert_int_eq(r3_wire_frame_len(big, 1u << 30, &l), -EMSGSIZE);
}
END_TEST

START_TEST(roundtrip)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_unpacked up;
    struct r3_wire_msg m;

    PACK(sb, r3_wire_pack_request(pk, 77, "read", 1ull << 40, 4096, false));
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert_int_eq(m.type, R3_WIRE_REQUEST);
    ck_assert_uint_eq(m.id, 77);
    ck_assert_uint_eq(m.off, 1ull << 40);
    ck_assert_uint_eq(m.len, 4096);
    ck_assert_int_eq(m.method_len, 4);
    msgpack_unpacked_destroy(&up);

    /* write: header packed, data appended by the caller */
    char data[300];
    tu_fill(data, sizeof data, 0, 1);
    PACK(sb, r3_wire_pack_request(pk, 5, "write", 12345, sizeof data, true));
    msgpack_sbuffer_write(&sb, data, sizeof data);
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert(m.has_data);
    ck_assert_uint_eq(m.len, sizeof data);
    ck_assert_int_eq(memcmp(m.data, data, sizeof data), 0);
    msgpack_unpacked_destroy(&up);

    PACK(sb, r3_wire_pack_reply(pk, 9, -EROFS, "read-only", false, 0, false, 0));
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert_int_eq(m.type, R3_WIRE_REPLY);
    ck_assert_int_eq(m.err, -EROFS);
    ck_assert_int_eq(m.errmsg_len, 9);
    msgpack_unpacked_destroy(&up);

    PACK(sb, r3_wire_pack_reply(pk, 10, 0, NULL, true, 1ull << 33, false, 0));
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert(m.has_val);
    ck_assert_uint_eq(m.val, 1ull << 33);
    msgpack_unpacked_destroy(&up);

    PACK(sb, r3_wire_pack_client_hello(pk, "disk0", 42, 0));
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert_int_eq(m.type, R3_WIRE_HELLO);
    ck_assert_uint_eq(m.version, 1);
    ck_assert_int_eq(m.export_len, 5);
    ck_assert(m.has_client);
    ck_assert_uint_eq(m.client, 42);
    msgpack_unpacked_destroy(&up);

    PACK(sb, r3_wire_pack_server_hello(pk, 0, NULL, 1 << 30, 1, 2, 1 << 20, 0));
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert_uint_eq(m.size, 1 << 30);
    ck_assert_uint_eq(m.flags, 2);
    ck_assert_uint_eq(m.max_request, 1 << 20);
    ck_assert_int_eq(m.err, 0);
    msgpack_unpacked_destroy(&up);

    PACK(sb, r3_wire_pack_server_hello(pk, -ENOENT, "no export", 0, 0, 0, 0, 0));
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert_int_eq(m.err, -ENOENT);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(zero_extent_frames)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_unpacked up;
    struct r3_wire_msg m;
    PACK(sb, r3_wire_pack_client_hello(pk, "d", 0, R3_WIRE_FEATURES));
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert_uint_eq(m.features, R3_WIRE_FEATURES);
    ck_assert(!m.has_client);
    msgpack_unpacked_destroy(&up);
    PACK(sb, r3_wire_pack_server_hello(pk, 0, NULL, 4096, 1, 0, 4096, R3_WIRE_F_ZERO));
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert_uint_eq(m.features, R3_WIRE_F_ZERO);
    ck_assert_uint_eq(m.max_request, 4096);
    msgpack_unpacked_destroy(&up);
    PACK(sb, r3_wire_pack_reply_zero(pk, 77));
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert(m.type == R3_WIRE_REPLY && m.id == 77 && m.zero && !m.has_data && !m.err);
    msgpack_unpacked_destroy(&up);
    uint64_t id;
    size_t hdr;
    uint32_t dlen;
    ck_assert_int_eq(r3_wire_peek_data_reply(sb.data + 4, sb.size - 4, &id, &hdr, &dlen), 1);  /* slow path */
    PACK(sb, r3_wire_pack_reply_extent(pk, 78, R3_EXTENT_ZERO, 1ull << 40));
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert(m.has_extent && m.ext_kind == R3_EXTENT_ZERO && m.val == 1ull << 40 && m.id == 78);
    msgpack_unpacked_destroy(&up);
    /* false, a kind other than 0/1, or a malformed pair are protocol errors */
    static const uint8_t rfalse[] = { 0x94, 0x01, 0x05, 0xc0, 0xc2 };
    static const uint8_t rkind[] = { 0x94, 0x01, 0x05, 0xc0, 0x92, 0x02, 0x10 };
    static const uint8_t rone[] = { 0x94, 0x01, 0x05, 0xc0, 0x91, 0x01 };
    ck_assert_int_eq(r3_wire_decode((const char *)rfalse, sizeof rfalse, &up, &m), -EPROTO);
    msgpack_unpacked_destroy(&up);
    ck_assert_int_eq(r3_wire_decode((const char *)rkind, sizeof rkind, &up, &m), -EPROTO);
    msgpack_unpacked_destroy(&up);
    ck_assert_int_eq(r3_wire_decode((const char *)rone, sizeof rone, &up, &m), -EPROTO);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(peek_data_reply)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    uint64_t id;
    size_t hdr;
    uint32_t dlen;
    static const uint32_t lens[] = { 0, 1, 200, 300, 70000 };
    static const uint64_t ids[] = { 1, 200, 70000, 1ull << 40 };
    for (size_t i = 0; i < 5; i++) {
        for (size_t k = 0; k < 4; k++) {
            PACK(sb, r3_wire_pack_reply(pk, ids[k], 0, NULL, false, 0, true, lens[i]));
            ck_assert_int_eq(r3_wire_peek_data_reply(sb.data + 4, sb.size - 4, &id, &hdr, &dlen), 0);
            ck_assert_uint_eq(id, ids[k]);
            ck_assert_uint_eq(dlen, lens[i]);
            ck_assert_uint_eq(hdr, sb.size - 4);
            for (size_t cut = 0; cut < sb.size - 4; cut++)
                ck_assert_int_eq(r3_wire_peek_data_reply(sb.data + 4, cut, &id, &hdr, &dlen), -EAGAIN);
        }
    }
    PACK(sb, r3_wire_pack_reply(pk, 3, -EIO, "x", false, 0, false, 0));
    ck_assert_int_eq(r3_wire_peek_data_reply(sb.data + 4, sb.size - 4, &id, &hdr, &dlen), 1);
    PACK(sb, r3_wire_pack_reply(pk, 3, 0, NULL, true, 5, false, 0));
    ck_assert_int_eq(r3_wire_peek_data_reply(sb.data + 4, sb.size - 4, &id, &hdr, &dlen), 1);
    static const uint8_t junk[] = { 0xc1, 0x00, 0x00, 0x00 };
    ck_assert_int_eq(r3_wire_peek_data_reply(junk, sizeof junk, &id, &hdr, &dlen), -EPROTO);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

static int decode_bytes(const void *p, size_t n)
{
    msgpack_unpacked up;
    struct r3_wire_msg m;
    int rc = r3_wire_decode(p, n, &up, &m);
    msgpack_unpacked_destroy(&up);
    return rc;
}

START_TEST(garbage_truncated_wrong_types)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char data[64] = { 0 };
    PACK(sb, r3_wire_pack_request(pk, 5, "write", 12345, sizeof data, true));
    msgpack_sbuffer_write(&sb, data, sizeof data);
    /* every strict prefix of a valid frame, and trailing junk, is refused */
    for (size_t cut = 0; cut < sb.size - 4; cut++)
        ck_assert_int_eq(decode_bytes(sb.data + 4, cut), -EPROTO);
    msgpack_sbuffer_write(&sb, "x", 1);
    ck_assert_int_eq(decode_bytes(sb.data + 4, sb.size - 4), -EPROTO);

    /* wrong shapes and types */
    PACK(sb, msgpack_pack_array(pk, 4); msgpack_pack_uint32(pk, 0); msgpack_pack_str_with_body(pk, "x", 1);
             msgpack_pack_str_with_body(pk, "read", 4); msgpack_pack_array(pk, 0));
    ck_assert_int_eq(decode_bytes(sb.data + 4, sb.size - 4), -EPROTO);          /* id not a uint */
    PACK(sb, msgpack_pack_array(pk, 4); msgpack_pack_uint32(pk, 0); msgpack_pack_uint32(pk, 1);
             msgpack_pack_str_with_body(pk, "read", 4); msgpack_pack_array(pk, 2);
             msgpack_pack_uint32(pk, 0); msgpack_pack_str_with_body(pk, "a", 1));
    ck_assert_int_eq(decode_bytes(sb.data + 4, sb.size - 4), -EPROTO);          /* len a string */
    PACK(sb, msgpack_pack_array(pk, 4); msgpack_pack_uint32(pk, 0); msgpack_pack_uint32(pk, 1);
             msgpack_pack_str_with_body(pk, "write", 5); msgpack_pack_array(pk, 2);
             msgpack_pack_uint32(pk, 0); msgpack_pack_uint32(pk, 7));
    ck_assert_int_eq(decode_bytes(sb.data + 4, sb.size - 4), -EPROTO);          /* data not bin */
    PACK(sb, msgpack_pack_array(pk, 4); msgpack_pack_int32(pk, -1); msgpack_pack_uint32(pk, 1);
             msgpack_pack_str_with_body(pk, "size", 4); msgpack_pack_array(pk, 0));
    ck_assert_int_eq(decode_bytes(sb.data + 4, sb.size - 4), -EPROTO);          /* bad type */
    PACK(sb, msgpack_pack_map(pk, 0));
    ck_assert_int_eq(decode_bytes(sb.data + 4, sb.size - 4), -EPROTO);          /* not an array */
    PACK(sb, msgpack_pack_array(pk, 3); msgpack_pack_str_with_body(pk, "r3", 2); msgpack_pack_uint32(pk, 1);
             msgpack_pack_map(pk, 1); msgpack_pack_str_with_body(pk, "size", 4); msgpack_pack_str_with_body(pk, "1", 1));
    ck_assert_int_eq(decode_bytes(sb.data + 4, sb.size - 4), -EPROTO);          /* hello size a string */
    /* an unknown method decodes (the server answers ENOSYS) */
    PACK(sb, r3_wire_pack_request(pk, 5, "frobnicate", 0, 0, false));
    ck_assert_int_eq(decode_bytes(sb.data + 4, sb.size - 4), 0);

    /* containers that announce more elements than bytes: refused before
     * msgpack-c would allocate their element arrays */
    static const uint8_t huge_arr[] = { 0xdd, 0x7f, 0xff, 0xff, 0xff, 0x00 };
    static const uint8_t huge_map[] = { 0xdf, 0x00, 0xff, 0xff, 0xff, 0x00, 0x00 };
    static const uint8_t huge_bin[] = { 0x94, 0x00, 0x01, 0xa4, 'r', 'e', 'a', 'd', 0xc6, 0xff, 0xff, 0xff, 0xff };
    static const uint8_t deep[] = { 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x90 };
    ck_assert_int_eq(decode_bytes(huge_arr, sizeof huge_arr), -EPROTO);
    ck_assert_int_eq(decode_bytes(huge_map, sizeof huge_map), -EPROTO);
    ck_assert_int_eq(decode_bytes(huge_bin, sizeof huge_bin), -EPROTO);
    ck_assert_int_eq(decode_bytes(deep, sizeof deep), -EPROTO);

    /* random garbage and random mutations of a valid frame never crash */
    uint64_t s = 0x1234567;
    uint8_t buf[256];
    PACK(sb, r3_wire_pack_request(pk, 5, "read", 4096, 65536, false));
    for (int i = 0; i < 20000; i++) {
        size_t n;
        if (i & 1) {
            n = sb.size - 4;
            memcpy(buf, sb.data + 4, n);
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            buf[(s >> 33) % n] = (uint8_t)(s >> 13);
        } else {
            n = (size_t)(i % 200) + 1;
            for (size_t k = 0; k < n; k++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                buf[k] = (uint8_t)(s >> 40);
            }
        }
        int rc = decode_bytes(buf, n);
        ck_assert(rc == 0 || rc == -EPROTO);
    }
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* ---- in-process server on a loopback port */

struct srv {
    int port;
    struct r3_wire_server *ws;
};

static void srv_start(struct srv *s, struct r3_source *src, const char *export_name, bool ro, size_t maxreq)
{
    struct r3_wire_server_opts o = { .src = src, .export_name = export_name, .read_only = ro,
                                     .max_request = maxreq, .workers = 4, .listen = "127.0.0.1:0" };
    ck_assert_msg(r3_wire_server_new(&o, &s->ws) == 0, "%s", r3_last_error());
    char ab[64];
    r3_wire_server_address(s->ws, ab, sizeof ab);
    ck_assert_ptr_nonnull(strrchr(ab, ':'));
    s->port = atoi(strrchr(ab, ':') + 1);
    ck_assert_int_gt(s->port, 0);
}

static void srv_stop(struct srv *s)
{
    r3_wire_server_free(s->ws);
}

START_TEST(client_server)
{
    struct r3_source *mem, *c;
    TU_OPEN("mem:?size=8M", &mem);
    struct srv s;
    srv_start(&s, mem, "disk", false, 64 * 1024);
    char uri[200];
    snprintf(uri, sizeof uri, "r3://127.0.0.1:%d/disk?conns=3&chunk=4K", s.port);
    TU_OPEN(uri, &c);
    ck_assert_uint_eq(c->size, 8u << 20);
    /* a 1 MiB write is split into max_request pieces; unaligned is fine */
    size_t n = (1u << 20) + 333;
    char *b = malloc(n), *r = malloc(n);
    tu_fill(b, n, 777, 3);
    ck_assert_int_eq(r3_source_write(c, b, n, 777), 0);
    ck_assert_int_eq(r3_source_flush(c), 0);
    ck_assert_int_eq(r3_source_read(c, r, n, 777), 0);
    ck_assert_int_eq(tu_check(r, n, 777, 3), -1);
    ck_assert_int_eq(r3_source_read(mem, r, n, 777), 0);       /* the served source itself */
    ck_assert_int_eq(tu_check(r, n, 777, 3), -1);
    /* past the end: refused by the client's bounds and by the server's */
    ck_assert_int_eq(r3_source_read(c, r, 2, (8u << 20) - 1), -EINVAL);
    r3_source_close(c);

    snprintf(uri, sizeof uri, "r3://127.0.0.1:%d/other", s.port);
    ck_assert_int_eq(r3_source_open(uri, &c), -ENOENT);
    ck_assert_msg(strstr(r3_last_error(), "no such export 'other'"), "%s", r3_last_error());
    ck_assert_msg(!strstr(r3_last_error(), "disk"), "the real export is named: %s", r3_last_error());
    snprintf(uri, sizeof uri, "r3://127.0.0.1:%d/disk?conns=0", s.port);
    ck_assert_int_eq(r3_source_open(uri, &c), -EINVAL);
    snprintf(uri, sizeof uri, "r3://127.0.0.1/disk");
    ck_assert_int_eq(r3_source_open(uri, &c), -EINVAL);
    ck_assert_msg(strstr(r3_last_error(), "needs a port"), "%s", r3_last_error());
    snprintf(uri, sizeof uri, "r3://127.0.0.1:%d/disk?ca=/x.pem", s.port);
    ck_assert_int_eq(r3_source_open(uri, &c), -EINVAL);
    srv_stop(&s);
    free(b);
    free(r);
    r3_source_close(mem);
}
END_TEST

START_TEST(read_only_export)
{
    struct r3_source *mem, *c;
    TU_OPEN("mem:?size=1M", &mem);
    struct srv s;
    srv_start(&s, mem, NULL, true, 0);
    char uri[200];
    snprintf(uri, sizeof uri, "r3://127.0.0.1:%d/anything", s.port);
    TU_OPEN(uri, &c);
    ck_assert(c->flags & R3_SRC_RDONLY);
    char b[10] = { 0 };
    ck_assert_int_eq(r3_source_write(c, b, 10, 0), -EROFS);
    c->flags &= ~R3_SRC_RDONLY;                  /* bypass the client check: the server refuses too */
    ck_assert_int_eq(r3_source_write(c, b, 10, 0), -EROFS);
    ck_assert_msg(strstr(r3_last_error(), "read-only"), "%s", r3_last_error());
    ck_assert_int_eq(r3_source_read(c, b, 10, 0), 0);
    r3_source_close(c);
    srv_stop(&s);
    r3_source_close(mem);
}
END_TEST

START_TEST(connection_refused)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &sl);
    close(fd);                       /* a port nobody listens on */
    char uri[100];
    struct r3_source *c;
    snprintf(uri, sizeof uri, "r3://127.0.0.1:%d/x", ntohs(a.sin_port));
    ck_assert_int_eq(r3_source_open(uri, &c), -ECONNREFUSED);
    char want[100];
    snprintf(want, sizeof want, "r3 127.0.0.1:%d: connection refused", ntohs(a.sin_port));
    ck_assert_str_eq(r3_last_error(), want);
}
END_TEST

/* ---- zeros on the wire: a sparse file served through a stage that says
 * where its holes are (SEEK_DATA) and counts the reads that reach it */

#define ZCHUNK (64u * 1024)
#define ZSIZE (8u << 20)

struct holes {
    struct r3_source src;      /* first: a stage freed by r3_source_close */
    int fd;
    atomic_uint reads;
};

static int holes_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    struct holes *h = (struct holes *)s;
    atomic_fetch_add(&h->reads, 1);
    return r3_source_read(s->next, buf, len, off);
}

/* The truth from the file itself: ZERO up to the next data, else DATA up to the next hole. */
static int file_extent(int fd, uint64_t off, uint64_t len, uint64_t *run)
{
    off_t d = lseek(fd, (off_t)off, SEEK_DATA);
    if (d < 0 || (uint64_t)d > off) {
        uint64_t end = d < 0 ? off + len : (uint64_t)d;
        *run = end - off < len ? end - off : len;
        return R3_EXTENT_ZERO;
    }
    off_t hh = lseek(fd, (off_t)off, SEEK_HOLE);
    uint64_t end = hh < 0 ? off + len : (uint64_t)hh;
    *run = end - off < len && end > off ? end - off : len;
    return R3_EXTENT_DATA;
}

static int holes_extent(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    return file_extent(((struct holes *)s)->fd, off, len, run);
}

static void holes_close(struct r3_source *s)
{
    struct holes *h = (struct holes *)s;
    close(h->fd);
    r3_source_close(s->next);
    free(h);
}

static const struct r3_source_ops holes_ops = {
    .scheme = "holes", .read = holes_read, .extent = holes_extent, .close = holes_close,
};

/* Send one frame on a raw socket; read one back (payload into *f, its length returned). */
static uint32_t raw_roundtrip(int fd, msgpack_sbuffer *sb, char **f)
{
    ck_assert_int_eq(send(fd, sb->data, sb->size, 0), (ssize_t)sb->size);
    uint8_t h[4];
    ck_assert_int_eq(recv(fd, h, 4, MSG_WAITALL), 4);
    uint32_t len;
    ck_assert_int_eq(r3_wire_frame_len(h, 1u << 24, &len), 0);
    *f = malloc(len);
    ck_assert_int_eq(recv(fd, *f, len, MSG_WAITALL), (ssize_t)len);
    return len;
}

START_TEST(zero_flag_and_extent)
{
    char *dir = tu_tmpdir(), path[4096], uri[4300];
    snprintf(path, sizeof path, "%s/disk", dir);
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, ZSIZE), 0);
    /* data written straight to the file (not through r3): whole chunks and a few bytes */
    static const unsigned chunks[] = { 1, 5, 6, 100 };
    char *b = malloc(ZSIZE), *r = malloc(ZSIZE), *want = malloc(ZSIZE);
    tu_fill(b, ZSIZE, 0, 9);
    for (unsigned i = 0; i < 4; i++)
        ck_assert_int_eq(pwrite(fd, b + chunks[i] * ZCHUNK, ZCHUNK, chunks[i] * ZCHUNK), (ssize_t)ZCHUNK);
    ck_assert_int_eq(pwrite(fd, "x", 1, 48 * ZCHUNK + 7), 1);
    ck_assert_int_eq(fsync(fd), 0);
    ck_assert_int_eq(pread(fd, want, ZSIZE, 0), (ssize_t)ZSIZE);   /* what every read must see */
    unsigned data_chunks = 0;
    for (uint64_t o = 0; o < ZSIZE; o += ZCHUNK) {
        uint64_t run;
        if (file_extent(fd, o, ZCHUNK, &run) == R3_EXTENT_DATA || run < ZCHUNK)
            data_chunks++;
    }
    if (data_chunks == ZSIZE / ZCHUNK)
        fprintf(stderr, "zero_flag_and_extent: %s has no holes (no SEEK_HOLE): data checked only\n", dir);

    struct r3_source *file, *c;
    snprintf(uri, sizeof uri, "file://%s", path);
    TU_OPEN(uri, &file);
    struct holes *h = calloc(1, sizeof *h);
    r3_stage_init(&h->src, &holes_ops, file);
    h->fd = open(path, O_RDONLY);
    struct srv s;
    srv_start(&s, &h->src, NULL, false, 1u << 20);
    snprintf(uri, sizeof uri, "r3://127.0.0.1:%d/z?conns=2&chunk=64K", s.port);
    TU_OPEN(uri, &c);

    /* chunk by chunk: zeros where the holes are, the data elsewhere */
    memset(r, 0xee, ZSIZE);
    for (uint64_t o = 0; o < ZSIZE; o += ZCHUNK)
        ck_assert_int_eq(r3_source_read(c, r + o, ZCHUNK, o), 0);
    ck_assert(memcmp(r, want, ZSIZE) == 0);
    ck_assert_int_eq(r[48 * ZCHUNK + 7], 'x');
    ck_assert_int_eq(tu_check(r + ZCHUNK, ZCHUNK, ZCHUNK, 9), -1);
    /* only the chunks that hold data reached the source: the rest came as a flag */
    ck_assert_uint_eq(atomic_load(&h->reads), data_chunks);

    /* EXTENT over r3:// says what the server's source says */
    for (uint64_t o = 0; o < ZSIZE; o += ZCHUNK) {
        uint64_t run = 0, trun = 0;
        int k = r3_source_extent(c, o, ZCHUNK, &run), t = file_extent(fd, o, ZCHUNK, &trun);
        ck_assert_msg(k == t && run == trun, "extent at %llu: %d/%llu, the file says %d/%llu",
                      (unsigned long long)o, k, (unsigned long long)run, t, (unsigned long long)trun);
    }
    /* a multi-chunk read across holes and data, and a write that fills a hole */
    ck_assert_int_eq(r3_source_read(c, r, 8 * ZCHUNK, 0), 0);
    ck_assert(memcmp(r, want, 8 * ZCHUNK) == 0);
    ck_assert_int_eq(r3_source_write(c, b + 120 * ZCHUNK, ZCHUNK, 120 * ZCHUNK), 0);
    ck_assert_int_eq(r3_source_flush(c), 0);
    memset(r, 0, ZCHUNK);
    ck_assert_int_eq(r3_source_read(c, r, ZCHUNK, 120 * ZCHUNK), 0);
    ck_assert_int_eq(tu_check(r, ZCHUNK, 120 * ZCHUNK, 9), -1);
    r3_source_close(c);

    /* an old client (no "features" in its hello) gets the zeros as data and no EXTENT */
    int sfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ck_assert_int_eq(connect(sfd, (struct sockaddr *)&a, sizeof a), 0);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_unpacked up;
    struct r3_wire_msg m;
    char *f;
    PACK(sb, r3_wire_pack_client_hello(pk, "z", 0, 0));
    uint32_t n = raw_roundtrip(sfd, &sb, &f);
    ck_assert_int_eq(r3_wire_decode(f, n, &up, &m), 0);
    ck_assert(m.type == R3_WIRE_HELLO && m.features == 0 && m.size == ZSIZE);
    msgpack_unpacked_destroy(&up);
    free(f);
    PACK(sb, r3_wire_pack_request(pk, 1, "read", 10 * ZCHUNK, ZCHUNK, false));
    n = raw_roundtrip(sfd, &sb, &f);
    ck_assert_int_eq(r3_wire_decode(f, n, &up, &m), 0);
    ck_assert(m.type == R3_WIRE_REPLY && m.id == 1 && m.has_data && !m.zero && m.len == ZCHUNK);
    ck_assert(memcmp(m.data, want + 10 * ZCHUNK, ZCHUNK) == 0);
    msgpack_unpacked_destroy(&up);
    free(f);
    PACK(sb, r3_wire_pack_request(pk, 2, "extent", 0, ZCHUNK, false));
    n = raw_roundtrip(sfd, &sb, &f);
    ck_assert_int_eq(r3_wire_decode(f, n, &up, &m), 0);
    ck_assert(m.id == 2 && m.err == -ENOSYS);
    msgpack_unpacked_destroy(&up);
    free(f);
    close(sfd);
    msgpack_sbuffer_destroy(&sb);

    srv_stop(&s);
    r3_source_close(&h->src);
    close(fd);
    free(b);
    free(r);
    free(want);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- TLS: large chunks through r3s:// (many TLS records per reply, read
 * straight into the caller's buffer), compared with the served source */

START_TEST(tls_large_chunks)
{
    if (system("command -v openssl >/dev/null 2>&1") != 0) {
        fprintf(stderr, "openssl(1) not found: TLS large chunks not checked\n");
        return;
    }
    char *dir = tu_tmpdir(), cmd[4096], cert[4200], key[4200], uri[4400];
    snprintf(cmd, sizeof cmd, "cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
             "-nodes -keyout key.pem -out cert.pem -days 2 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1", dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    struct r3_tls_opts to = { .cert = cert, .key = key };
    struct r3_tls_ctx *tls;
    ck_assert_msg(r3_tls_server_ctx(&to, &tls) == 0, "%s", r3_last_error());
    struct r3_source *mem, *c;
    TU_OPEN("mem:?size=16M", &mem);
    size_t total = 12u << 20, big = 4u << 20;
    char *b = malloc(total), *r = malloc(total);
    tu_fill(b, total, 0, 21);
    ck_assert_int_eq(r3_source_write(mem, b, total, 0), 0);          /* written beside r3s:// */
    struct r3_wire_server_opts o = { .src = mem, .max_request = 4u << 20, .workers = 4,
                                     .listen = "127.0.0.1:0", .tls = tls };
    struct r3_wire_server *ws;
    ck_assert_msg(r3_wire_server_new(&o, &ws) == 0, "%s", r3_last_error());
    char ab[64];
    r3_wire_server_address(ws, ab, sizeof ab);
    snprintf(uri, sizeof uri, "r3s://127.0.0.1:%d/x?conns=2&ca=%s", atoi(strrchr(ab, ':') + 1), cert);
    TU_OPEN(uri, &c);
    memset(r, 0, total);
    for (size_t off = 0; off < total; off += big)
        ck_assert_int_eq(r3_source_read(c, r + off, big, off), 0);
    ck_assert(memcmp(r, b, total) == 0);
    /* one read larger than max_request: split into 4 MiB requests */
    memset(r, 0, total);
    ck_assert_int_eq(r3_source_read(c, r + 1, total - 1, 1), 0);
    ck_assert(memcmp(r + 1, b + 1, total - 1) == 0);
    /* the untouched end of a mem: source reads as zeros either way */
    ck_assert_int_eq(r3_source_read(c, r, big, 12u << 20), 0);
    memset(b, 0, big);
    ck_assert(memcmp(r, b, big) == 0);
    r3_source_close(c);
    r3_wire_server_free(ws);
    r3_tls_ctx_free(tls);
    r3_source_close(mem);
    free(b);
    free(r);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("wire");
    TCase *tc = tcase_create("frames");
    tcase_add_test(tc, frame_len_bounds);
    tcase_add_test(tc, roundtrip);
    tcase_add_test(tc, peek_data_reply);
    tcase_add_test(tc, zero_extent_frames);
    tcase_add_test(tc, garbage_truncated_wrong_types);
    suite_add_tcase(s, tc);
    TCase *tn = tcase_create("loopback");
    tcase_set_timeout(tn, 30);
    tcase_add_test(tn, client_server);
    tcase_add_test(tn, read_only_export);
    tcase_add_test(tn, connection_refused);
    tcase_add_test(tn, zero_flag_and_extent);
    tcase_add_test(tn, tls_large_chunks);
    suite_add_tcase(s, tn);
    return tu_run(s);
}
