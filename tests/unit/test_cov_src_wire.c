/* SPDX-License-Identifier: BSD-3-Clause */
/* src/wire/frame.c against hostile bytes: every refusal of the decoder
 * (hello, request, reply, the error pair), the allocation-free scan that
 * bounds msgpack counts (each type width, cut headers, counts larger than
 * the bytes left, nesting), and the fast-path peek of a read reply (each
 * cut point asks for more, each other shape takes the slow path). The
 * frames are written byte by byte here, not by the library's packers, so a
 * packer and a decoder that agree on a mistake cannot hide it. */
#include <errno.h>
#include "testutil.h"
#include "internal.h"
#include "wire/frame.h"

#define B(...) ((const uint8_t[]){ __VA_ARGS__ }), sizeof((const uint8_t[]){ __VA_ARGS__ })

static int dec(const uint8_t *p, size_t n, struct r3_wire_msg *m)
{
    msgpack_unpacked up;
    int rc = r3_wire_decode((const char *)p, n, &up, m);
    msgpack_unpacked_destroy(&up);
    return rc;
}

static int dec1(const uint8_t *p, size_t n)
{
    struct r3_wire_msg m;
    return dec(p, n, &m);
}

/* "r3" and its version: the start of every hello below */
#define HELLO 0x93, 0xa2, 'r', '3', 0x01

START_TEST(decode_refusals)
{
    /* not one whole msgpack array with a known type */
    ck_assert_int_eq(dec1(B(0x92, 0x01)), -EPROTO);                 /* cut: 2 declared, 1 there */
    ck_assert_int_eq(dec1(B(0x91, 0x01, 0x01)), -EPROTO);           /* a trailing byte */
    ck_assert_int_eq(dec1(B(0x01)), -EPROTO);                       /* not an array */
    ck_assert_int_eq(dec1(B(0x90)), -EPROTO);                       /* empty array */
    ck_assert_int_eq(dec1(B(0x91, 0xa1, 'x')), -EPROTO);            /* type neither "r3" nor a number */
    ck_assert_int_eq(dec1(B(0x91, 0xa2, 'r', '4')), -EPROTO);       /* a near magic */
    ck_assert_int_eq(dec1(B(0x91, 0x05)), -EPROTO);                 /* unknown type 5 */

    /* hello: ["r3", version, {map}] */
    ck_assert_int_eq(dec1(B(0x92, 0xa2, 'r', '3', 0x01)), -EPROTO);                  /* 2 elements */
    ck_assert_int_eq(dec1(B(0x93, 0xa2, 'r', '3', 0xa1, 'x', 0x80)), -EPROTO);       /* version a string */
    ck_assert_int_eq(dec1(B(HELLO, 0x90)), -EPROTO);                                 /* features not a map */
    ck_assert_int_eq(dec1(B(HELLO, 0x81, 0x01, 0x01)), -EPROTO);                     /* key a number */
    ck_assert_int_eq(dec1(B(HELLO, 0x81, 0xa6, 'e', 'x', 'p', 'o', 'r', 't', 0x01)), -EPROTO);
    ck_assert_int_eq(dec1(B(HELLO, 0x81, 0xa4, 's', 'i', 'z', 'e', 0xa1, 'x')), -EPROTO);
    ck_assert_int_eq(dec1(B(HELLO, 0x81, 0xa5, 'a', 'l', 'i', 'g', 'n', 0xc0)), -EPROTO);
    ck_assert_int_eq(dec1(B(HELLO, 0x81, 0xa6, 'c', 'l', 'i', 'e', 'n', 't', 0xc3)), -EPROTO);
    /* the error pair [errno, "text"], 0 < errno < 4096 */
#define ERRKEY 0x81, 0xa5, 'e', 'r', 'r', 'o', 'r'
    ck_assert_int_eq(dec1(B(HELLO, ERRKEY, 0x05)), -EPROTO);                         /* not an array */
    ck_assert_int_eq(dec1(B(HELLO, ERRKEY, 0x91, 0x05)), -EPROTO);                   /* one element */
    ck_assert_int_eq(dec1(B(HELLO, ERRKEY, 0x92, 0x00, 0xa1, 'x')), -EPROTO);        /* errno 0 */
    ck_assert_int_eq(dec1(B(HELLO, ERRKEY, 0x92, 0xcd, 0x10, 0x00, 0xa1, 'x')), -EPROTO); /* 4096 */
    ck_assert_int_eq(dec1(B(HELLO, ERRKEY, 0x92, 0xa1, 'x', 0xa1, 'x')), -EPROTO);   /* errno a string */
    ck_assert_int_eq(dec1(B(HELLO, ERRKEY, 0x92, 0x05, 0x05)), -EPROTO);             /* text a number */

    /* request: [0, id, method, [args]] */
    ck_assert_int_eq(dec1(B(0x93, 0x00, 0x01, 0xa4, 's', 'i', 'z', 'e')), -EPROTO);  /* 3 elements */
    ck_assert_int_eq(dec1(B(0x94, 0x00, 0xa1, 'x', 0xa4, 's', 'i', 'z', 'e', 0x90)), -EPROTO);
    ck_assert_int_eq(dec1(B(0x94, 0x00, 0x01, 0x07, 0x90)), -EPROTO);                /* method a number */
    ck_assert_int_eq(dec1(B(0x94, 0x00, 0x01, 0xa4, 's', 'i', 'z', 'e', 0x80)), -EPROTO); /* args a map */
#define READ 0x94, 0x00, 0x01, 0xa4, 'r', 'e', 'a', 'd'
#define WRITE 0x94, 0x00, 0x01, 0xa5, 'w', 'r', 'i', 't', 'e'
    ck_assert_int_eq(dec1(B(READ, 0x91, 0x00)), -EPROTO);                            /* one argument */
    ck_assert_int_eq(dec1(B(READ, 0x92, 0xa1, 'x', 0x01)), -EPROTO);                 /* offset a string */
    ck_assert_int_eq(dec1(B(READ, 0x92, 0x00, 0xc0)), -EPROTO);                      /* length nil */
    ck_assert_int_eq(dec1(B(WRITE, 0x92, 0x00, 0x05)), -EPROTO);                     /* data not bin */
    ck_assert_int_eq(dec1(B(WRITE, 0x93, 0x00, 0xc4, 0x00, 0x00)), -EPROTO);         /* 3 arguments */

    /* reply: [1, id, error|nil, value] */
    ck_assert_int_eq(dec1(B(0x93, 0x01, 0x01, 0xc0)), -EPROTO);                      /* 3 elements */
    ck_assert_int_eq(dec1(B(0x94, 0x01, 0xc3, 0xc0, 0xc0)), -EPROTO);                /* id a bool */
    ck_assert_int_eq(dec1(B(0x94, 0x01, 0x01, 0x05, 0xc0)), -EPROTO);                /* error a number */
    ck_assert_int_eq(dec1(B(0x94, 0x01, 0x01, 0xc0, 0xc2)), -EPROTO);                /* false */
    ck_assert_int_eq(dec1(B(0x94, 0x01, 0x01, 0xc0, 0xa1, 'x')), -EPROTO);           /* a string */
    ck_assert_int_eq(dec1(B(0x94, 0x01, 0x01, 0xc0, 0x80)), -EPROTO);                /* a map */
    ck_assert_int_eq(dec1(B(0x94, 0x01, 0x01, 0xc0, 0x91, 0x00)), -EPROTO);          /* extent of 1 */
    ck_assert_int_eq(dec1(B(0x94, 0x01, 0x01, 0xc0, 0x92, 0xc0, 0x01)), -EPROTO);    /* kind nil */
    ck_assert_int_eq(dec1(B(0x94, 0x01, 0x01, 0xc0, 0x92, 0x00, 0xc0)), -EPROTO);    /* run nil */
    ck_assert_int_eq(dec1(B(0x94, 0x01, 0x01, 0xc0, 0x92, 0x02, 0x01)), -EPROTO);    /* kind 2 */
}
END_TEST

START_TEST(decode_accepts)
{
    struct r3_wire_msg m;
    /* a hello with every known key, an unknown one, the error pair */
    ck_assert_int_eq(dec(B(HELLO, 0x89,
                           0xa6, 'e', 'x', 'p', 'o', 'r', 't', 0xa2, 'e', 'x',
                           0xa4, 's', 'i', 'z', 'e', 0xcd, 0x12, 0x34,
                           0xa5, 'a', 'l', 'i', 'g', 'n', 0x08,
                           0xa5, 'f', 'l', 'a', 'g', 's', 0x03,
                           0xab, 'm', 'a', 'x', '_', 'r', 'e', 'q', 'u', 'e', 's', 't', 0xce, 0, 1, 0, 0,
                           0xa6, 'c', 'l', 'i', 'e', 'n', 't', 0x2a,
                           0xa8, 'f', 'e', 'a', 't', 'u', 'r', 'e', 's', 0x03,
                           0xa3, 'n', 'e', 'w', 0xc0,
                           0xa5, 'e', 'r', 'r', 'o', 'r', 0x92, 0x05, 0xa2, 'n', 'o'), &m), 0);
    ck_assert_int_eq(m.type, R3_WIRE_HELLO);
    ck_assert_uint_eq(m.version, 1);
    ck_assert_uint_eq(m.export_len, 2);
    ck_assert(memcmp(m.export_name, "ex", 2) == 0);
    ck_assert_uint_eq(m.size, 0x1234);
    ck_assert_uint_eq(m.align, 8);
    ck_assert_uint_eq(m.flags, 3);
    ck_assert_uint_eq(m.max_request, 65536);
    ck_assert(m.has_client);
    ck_assert_uint_eq(m.client, 42);
    ck_assert_uint_eq(m.features, 3);
    ck_assert_int_eq(m.err, -5);
    ck_assert(m.errmsg_len == 2 && memcmp(m.errmsg, "no", 2) == 0);

    /* a hello without client: has_client stays false */
    ck_assert_int_eq(dec(B(HELLO, 0x80), &m), 0);
    ck_assert(!m.has_client);

    /* write: the data is the bin */
    ck_assert_int_eq(dec(B(WRITE, 0x92, 0xcc, 0xc8, 0xc4, 0x03, 'a', 'b', 'c'), &m), 0);
    ck_assert_int_eq(m.type, R3_WIRE_REQUEST);
    ck_assert_uint_eq(m.off, 200);
    ck_assert_uint_eq(m.len, 3);
    ck_assert(m.has_data && memcmp(m.data, "abc", 3) == 0);
    /* a migration method with two numbers, and one with other arguments (ignored) */
    ck_assert_int_eq(dec(B(0x94, 0x00, 0x07, 0xa4, 't', 'a', 'k', 'e', 0x92, 0x04, 0x09), &m), 0);
    ck_assert(m.method_len == 4 && m.off == 4 && m.len == 9 && m.id == 7);
    ck_assert_int_eq(dec(B(0x94, 0x00, 0x07, 0xa4, 't', 'a', 'k', 'e', 0x92, 0x04, 0xc0), &m), 0);
    ck_assert(m.off == 0 && m.len == 0);
    ck_assert_int_eq(dec(B(0x94, 0x00, 0x07, 0xa4, 't', 'a', 'k', 'e', 0x91, 0x04), &m), 0);
    ck_assert(m.off == 0 && m.len == 0);

    /* replies: a value, data, zeros, an extent, an error */
    ck_assert_int_eq(dec(B(0x94, 0x01, 0x09, 0xc0, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0), &m), 0);
    ck_assert(m.type == R3_WIRE_REPLY && m.id == 9 && m.has_val && m.val == (1ull << 32));
    ck_assert_int_eq(dec(B(0x94, 0x01, 0x09, 0xc0, 0xc4, 0x02, 'h', 'i'), &m), 0);
    ck_assert(m.has_data && m.len == 2 && memcmp(m.data, "hi", 2) == 0 && !m.has_val);
    ck_assert_int_eq(dec(B(0x94, 0x01, 0x09, 0xc0, 0xc3), &m), 0);
    ck_assert(m.zero && !m.has_data);
    ck_assert_int_eq(dec(B(0x94, 0x01, 0x09, 0xc0, 0x92, 0x01, 0xcd, 0x10, 0x00), &m), 0);
    ck_assert(m.has_extent && m.ext_kind == 1 && m.val == 4096);
    ck_assert_int_eq(dec(B(0x94, 0x01, 0x09, 0x92, 0x1c, 0xa3, 'n', 'o', 'p', 0xc0), &m), 0);
    ck_assert(m.err == -28 && m.errmsg_len == 3 && !m.has_val && !m.has_data);
}
END_TEST

START_TEST(scan_bounds)
{
    /* every fixed-width type: whole, then cut by one byte */
    static const struct { uint8_t b[12]; size_t n; } ok[] = {
        { { 0xc4, 0x01, 'x' }, 3 },             { { 0xc5, 0x00, 0x01, 'x' }, 4 },
        { { 0xc6, 0, 0, 0, 1, 'x' }, 6 },       { { 0xd9, 0x01, 'x' }, 3 },
        { { 0xda, 0x00, 0x01, 'x' }, 4 },       { { 0xdb, 0, 0, 0, 1, 'x' }, 6 },
        { { 0xcc, 1 }, 2 },                     { { 0xcd, 1, 2 }, 3 },
        { { 0xce, 1, 2, 3, 4 }, 5 },            { { 0xcf, 1, 2, 3, 4, 5, 6, 7, 8 }, 9 },
        { { 0xd0, 1 }, 2 },                     { { 0xd1, 1, 2 }, 3 },
        { { 0xd2, 1, 2, 3, 4 }, 5 },            { { 0xd3, 1, 2, 3, 4, 5, 6, 7, 8 }, 9 },
        { { 0xca, 1, 2, 3, 4 }, 5 },            { { 0xcb, 1, 2, 3, 4, 5, 6, 7, 8 }, 9 },
        { { 0xdc, 0x00, 0x01, 0x05 }, 4 },      { { 0xdd, 0, 0, 0, 1, 0x05 }, 6 },
        { { 0xde, 0x00, 0x01, 0x05, 0xc0 }, 5 }, { { 0xdf, 0, 0, 0, 1, 0x05, 0xc2 }, 7 },
        { { 0x81, 0xa1, 'k', 0xe0 }, 4 },       { { 0xc0 }, 1 }, { { 0xc3 }, 1 }, { { 0xff }, 1 },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ck_assert_msg(r3_wire_scan_ok(ok[i].b, ok[i].n), "case %zu (0x%02x) refused", i, ok[i].b[0]);
        ck_assert_msg(!r3_wire_scan_ok(ok[i].b, ok[i].n - 1), "case %zu cut accepted", i);
        ck_assert_msg(!r3_wire_scan_ok(ok[i].b, ok[i].n + 1), "case %zu with a byte more accepted", i);
    }
    ck_assert(!r3_wire_scan_ok(B(0xc1)));                         /* reserved */
    ck_assert(!r3_wire_scan_ok(B(0xd4, 0x01, 0x00)));             /* fixext: not used */
    ck_assert(!r3_wire_scan_ok(B(0xc7, 0x01, 0x01, 0x00)));       /* ext8 */
    /* counts larger than the bytes left, before any element is read */
    ck_assert(!r3_wire_scan_ok(B(0xdd, 0xff, 0xff, 0xff, 0xff, 0x00)));
    ck_assert(!r3_wire_scan_ok(B(0xdf, 0x00, 0x00, 0x00, 0x01, 0x00)));   /* a map of 1: 2 objects */
    ck_assert(!r3_wire_scan_ok(B(0xc6, 0x7f, 0xff, 0xff, 0xff, 'x')));
    ck_assert(!r3_wire_scan_ok(B(0xa5, 'x')));
    /* nesting: six arrays around a number are fine, seven are refused */
    ck_assert(r3_wire_scan_ok(B(0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x01)));
    ck_assert(!r3_wire_scan_ok(B(0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x01)));
    /* an element that fails inside a container */
    ck_assert(!r3_wire_scan_ok(B(0x92, 0x01, 0xc1)));
    ck_assert(!r3_wire_scan_ok(NULL, 0));
}
END_TEST

START_TEST(peek_reply)
{
    uint64_t id = 0;
    size_t hdr = 0;
    uint32_t dl = 0;
#define PEEK(...) r3_wire_peek_data_reply(B(__VA_ARGS__), &id, &hdr, &dl)
    ck_assert_int_eq(PEEK(0x94), -EAGAIN);                          /* too short to say */
    ck_assert_int_eq(PEEK(0x93, 0x01), 1);                          /* other array shapes: slow path */
    ck_assert_int_eq(PEEK(0xdc, 0x00), 1);
    ck_assert_int_eq(PEEK(0xdd, 0x00), 1);
    ck_assert_int_eq(PEEK(0x91, 0x01), 1);
    ck_assert_int_eq(PEEK(0x01, 0x01), -EPROTO);                    /* not an array at all */
    ck_assert_int_eq(PEEK(0x81, 0x01), -EPROTO);
    ck_assert_int_eq(PEEK(0x94, 0x00), 1);                          /* a request */
    ck_assert_int_eq(PEEK(0x94, 0x01), -EAGAIN);                    /* the id not there yet */
    ck_assert_int_eq(PEEK(0x94, 0x01, 0xa1), 1);                    /* id a string */
    ck_assert_int_eq(PEEK(0x94, 0x01, 0xcd, 0x01), -EAGAIN);        /* id cut */
    ck_assert_int_eq(PEEK(0x94, 0x01, 0x05, 0xc0), -EAGAIN);        /* value not there yet */
    ck_assert_int_eq(PEEK(0x94, 0x01, 0x05, 0x92, 0x05), 1);        /* an error */
    ck_assert_int_eq(PEEK(0x94, 0x01, 0x05, 0xc0, 0x07), 1);        /* a number */
    ck_assert_int_eq(PEEK(0x94, 0x01, 0x05, 0xc0, 0xc4), -EAGAIN);  /* bin8 length cut */
    ck_assert_int_eq(PEEK(0x94, 0x01, 0x05, 0xc0, 0xc5, 0x01), -EAGAIN);
    ck_assert_int_eq(PEEK(0x94, 0x01, 0x05, 0xc0, 0xc6, 0, 0, 1), -EAGAIN);

    ck_assert_int_eq(PEEK(0x94, 0x01, 0x05, 0xc0, 0xc4, 0x10), 0);
    ck_assert(id == 5 && hdr == 6 && dl == 16);
    ck_assert_int_eq(PEEK(0x94, 0x01, 0xcc, 0xfe, 0xc0, 0xc5, 0x01, 0x02), 0);
    ck_assert(id == 254 && hdr == 8 && dl == 258);
    ck_assert_int_eq(PEEK(0x94, 0x01, 0xce, 0, 1, 0, 0, 0xc0, 0xc6, 0x00, 0x10, 0x00, 0x00), 0);
    ck_assert(id == 65536 && hdr == 13 && dl == (1u << 20));
    ck_assert_int_eq(PEEK(0x94, 0x01, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0xc0, 0xc4, 0x00), 0);
    ck_assert(id == (1ull << 32) && hdr == 14 && dl == 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cov_src_wire");
    TCase *tc = tcase_create("frame");
    tcase_add_test(tc, decode_refusals);
    tcase_add_test(tc, decode_accepts);
    tcase_add_test(tc, scan_bounds);
    tcase_add_test(tc, peek_reply);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
