/* SPDX-License-Identifier: BSD-3-Clause */
/* r3 wire protocol: frame encode/decode and bounds, and an in-process
 * server + r3:// client over loopback. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include "testutil.h"
#include "internal.h"
#include "r3/wire.h"
#include "wire/frame.h"

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

    PACK(sb, r3_wire_pack_client_hello(pk, "disk0", 42));
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert_int_eq(m.type, R3_WIRE_HELLO);
    ck_assert_uint_eq(m.version, 1);
    ck_assert_int_eq(m.export_len, 5);
    ck_assert(m.has_client);
    ck_assert_uint_eq(m.client, 42);
    msgpack_unpacked_destroy(&up);

    PACK(sb, r3_wire_pack_server_hello(pk, 0, NULL, 1 << 30, 1, 2, 1 << 20));
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert_uint_eq(m.size, 1 << 30);
    ck_assert_uint_eq(m.flags, 2);
    ck_assert_uint_eq(m.max_request, 1 << 20);
    ck_assert_int_eq(m.err, 0);
    msgpack_unpacked_destroy(&up);

    PACK(sb, r3_wire_pack_server_hello(pk, -ENOENT, "no export", 0, 0, 0, 0));
    ck_assert_int_eq(r3_wire_decode(sb.data + 4, sb.size - 4, &up, &m), 0);
    ck_assert_int_eq(m.err, -ENOENT);
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

int main(void)
{
    Suite *s = suite_create("wire");
    TCase *tc = tcase_create("frames");
    tcase_add_test(tc, frame_len_bounds);
    tcase_add_test(tc, roundtrip);
    tcase_add_test(tc, peek_data_reply);
    tcase_add_test(tc, garbage_truncated_wrong_types);
    suite_add_tcase(s, tc);
    TCase *tn = tcase_create("loopback");
    tcase_set_timeout(tn, 30);
    tcase_add_test(tn, client_server);
    tcase_add_test(tn, read_only_export);
    tcase_add_test(tn, connection_refused);
    suite_add_tcase(s, tn);
    return tu_run(s);
}
