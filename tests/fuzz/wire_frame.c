/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: r3 wire frames as both sides decode them (src/wire/frame.c):
 * the 4-byte length header, the whole-frame decoder (hello, request, reply)
 * and the client's zero-copy peek at data replies. The two decoders must
 * agree: when the peek accepts a data reply, the full decode sees the same
 * id and length. */
#include "fuzz.h"
#include "internal.h"
#include "wire/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t len;
    if (size >= R3_WIRE_HDR)
        r3_wire_frame_len(data, R3_WIRE_HELLO_MAX, &len);
    /* the payload in a buffer of its own size, so ASan sees any overread */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        FUZZ_DIE("out of memory");
    memcpy(buf, data, size);
    msgpack_unpacked up;
    struct r3_wire_msg m;
    int rc = r3_wire_decode(buf, size, &up, &m);
    if (rc == 0) {
        if (m.type == R3_WIRE_REQUEST && m.method_len > size)
            FUZZ_DIE("method longer than the frame");
        if (m.has_data && (m.data < buf || m.data + m.len > buf + size))
            FUZZ_DIE("data outside the frame");
        if (m.errmsg_len > size || m.export_len > size)
            FUZZ_DIE("string longer than the frame");
        if (m.err && (m.err >= 0 || m.err <= -4096))
            FUZZ_DIE("errno %d out of range", m.err);
    }
    uint64_t id;
    size_t hdr;
    uint32_t dlen;
    /* the client peeks at the first HEAD (32) bytes, or fewer */
    size_t hn = size < 32 ? size : 32;
    int p = r3_wire_peek_data_reply(buf, hn, &id, &hdr, &dlen);
    if (p == 0) {
        if (hdr > hn)
            FUZZ_DIE("peek header past the bytes seen");
        if (rc == 0 && hdr + dlen == size &&
            (m.type != R3_WIRE_REPLY || !m.has_data || m.id != id || m.len != dlen || m.err))
            FUZZ_DIE("peek and decode disagree");
    }
    msgpack_unpacked_destroy(&up);
    free(buf);
    return 0;
}
