/* SPDX-License-Identifier: BSD-3-Clause */
/* r3 wire protocol frames (internal; the protocol is described in include/r3/wire.h).
 *
 * A frame is a 4-byte big-endian length L, then exactly L bytes holding one
 * msgpack array. L is checked against the receiver's maximum before anything
 * is allocated. Packing writes into a msgpack_sbuffer whose first 4 bytes are
 * the length; bulk data (a write request's or a read reply's bytes) is not
 * copied into the buffer: only its bin header is, and the caller sends the
 * data as a second iovec (r3_wire_finish says how long the frame is). */
#ifndef R3_WIRE_FRAME_H
#define R3_WIRE_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>

#define R3_WIRE_MAGIC     "r3"
#define R3_WIRE_VERSION   1
#define R3_WIRE_HDR       4u
#define R3_WIRE_OVERHEAD  4096u            /* frame bytes allowed beyond the data */
#define R3_WIRE_HELLO_MAX 4096u            /* a hello frame is never larger */
#define R3_WIRE_DEFAULT_MAX_REQUEST (32u << 20)

/* Features, negotiated in the hello ("features": a uint of these bits; the
 * server answers with the bits both sides know). The version stays 1: an
 * older peer ignores the key and gets neither feature, so it keeps working. */
#define R3_WIRE_F_ZERO    1u   /* a read reply may be `true`: the range reads as zeros (no data) */
#define R3_WIRE_F_EXTENT  2u   /* the "extent" method: [OFF, LEN] -> [KIND, RUN] (R3_EXTENT_*) */
#define R3_WIRE_FEATURES  (R3_WIRE_F_ZERO | R3_WIRE_F_EXTENT)

enum r3_wire_type { R3_WIRE_REQUEST = 0, R3_WIRE_REPLY = 1, R3_WIRE_HELLO = 2 };

/* A decoded frame. Pointers point into the frame buffer (no copies). */
struct r3_wire_msg {
    enum r3_wire_type type;
    uint64_t id;
    /* request */
    const char *method;            /* not NUL-terminated */
    uint32_t method_len;
    uint64_t off, len;             /* read: off, len; write: off and data length */
    const char *data;              /* write request data / read reply data */
    /* reply */
    int err;                       /* 0 or -errno */
    const char *errmsg;            /* not NUL-terminated */
    uint32_t errmsg_len;
    uint64_t val;                  /* result of size; run of an extent reply */
    bool has_val, has_data;
    bool zero;                     /* read reply `true`: the range reads as zeros */
    bool has_extent;               /* extent reply [KIND, RUN]: kind in ext_kind, RUN in val */
    uint64_t ext_kind;
    /* hello (either direction): ["r3", version, {features}] */
    uint64_t version;
    const char *export_name;
    uint32_t export_len;
    uint64_t size, align, flags, max_request;
    uint64_t client;               /* client hello: the id shared by one client's connections */
    bool has_client;
    uint64_t features;             /* R3_WIRE_F_* (0 from a peer that sends none) */
};

/* Frame length from its 4-byte header; -EMSGSIZE if 0 or above max. */
int r3_wire_frame_len(const void *hdr, size_t max, uint32_t *len);

/* Decode one frame payload (without the 4-byte header). The payload must be
 * exactly one well-typed array; -EPROTO otherwise. up keeps the msgpack zone
 * alive while msg is used (msgpack_unpacked_destroy afterwards). */
int r3_wire_decode(const char *buf, size_t len, msgpack_unpacked *up, struct r3_wire_msg *msg);

/* Zero-copy fast path for replies carrying data: parse the prefix
 * [1, id, nil, bin-header] of a reply from its first n bytes. 0: *id, *hdr
 * (bytes before the data) and *dlen set; 1: not such a reply (decode the
 * whole frame); -EAGAIN: n too short; -EPROTO: garbage. */
int r3_wire_peek_data_reply(const void *p, size_t n, uint64_t *id, size_t *hdr, uint32_t *dlen);

/* Packing. r3_wire_start resets sb and reserves the length; r3_wire_finish
 * writes the length (payload + extra data bytes sent after sb). */
void r3_wire_start(msgpack_sbuffer *sb, msgpack_packer *pk);
void r3_wire_finish(msgpack_sbuffer *sb, size_t extra);
/* Client hello: ["r3", 1, {"export": name, "client": id, "features": F}] (id 0:
 * no "client"; the server logs one line per client id instead of one per
 * connection; features 0: no "features"). */
void r3_wire_pack_client_hello(msgpack_packer *pk, const char *export_name, uint64_t client,
                               unsigned features);
/* Server hello: ["r3", 1, {"size":, "align":, "flags":, "max_request":, "features":}]
 * ("features" only when nonzero) or, when err < 0, ["r3", 1, {"error": [errno, msg]}]. */
void r3_wire_pack_server_hello(msgpack_packer *pk, int err, const char *msg, uint64_t size,
                               uint32_t align, unsigned flags, uint64_t max_request, unsigned features);
/* Request [0, id, method, args]: args [] (size, flush), [off, len] (read),
 * [off, bin(len)] (write: data follows, not packed); other methods get
 * [off, len] when either is nonzero, else [] (decoded into off/len). */
void r3_wire_pack_request(msgpack_packer *pk, uint64_t id, const char *method, uint64_t off,
                          uint64_t len, bool write_data);
/* Reply [1, id, nil | [errno, msg], result]: result nil, a uint (has_val), or
 * bin(dlen) whose data follows (has_data). */
void r3_wire_pack_reply(msgpack_packer *pk, uint64_t id, int err, const char *msg,
                        bool has_val, uint64_t val, bool has_data, uint32_t dlen);
/* Read reply [1, id, nil, true]: the range reads as zeros (R3_WIRE_F_ZERO). */
void r3_wire_pack_reply_zero(msgpack_packer *pk, uint64_t id);
/* Extent reply [1, id, nil, [kind, run]] (R3_WIRE_F_EXTENT). */
void r3_wire_pack_reply_extent(msgpack_packer *pk, uint64_t id, int kind, uint64_t run);

/* True if buf holds exactly one msgpack object whose every container count
 * fits in the bytes that follow (msgpack-c allocates from the declared
 * count): call it before msgpack_unpack_next on bytes from a peer. */
bool r3_wire_scan_ok(const void *buf, size_t len);

#endif
