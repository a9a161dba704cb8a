/* SPDX-License-Identifier: BSD-3-Clause */
/* r3 wire frames: bounded length header + one msgpack array (see frame.h). */
#include <errno.h>
#include <string.h>
#include "internal.h"
#include "wire/frame.h"

int r3_wire_frame_len(const void *hdr, size_t max, uint32_t *len)
{
    const uint8_t *h = hdr;
    uint32_t l = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    *len = l;
    return (l == 0 || l > max) ? -EMSGSIZE : 0;
}

static bool is_uint(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
}

static bool is_str(const msgpack_object *o, const char *s)
{
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

static bool key_is(const msgpack_object_kv *kv, const char *k)
{
    return is_str(&kv->key, k);
}

/* [errno, "message"] with 0 < errno < 4096. */
static int decode_error(const msgpack_object *o, struct r3_wire_msg *m)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2)
        return -EPROTO;
    const msgpack_object *c = &o->via.array.ptr[0], *s = &o->via.array.ptr[1];
    if (!is_uint(c) || c->via.u64 == 0 || c->via.u64 >= 4096 || s->type != MSGPACK_OBJECT_STR)
        return -EPROTO;
    m->err = -(int)c->via.u64;
    m->errmsg = s->via.str.ptr;
    m->errmsg_len = s->via.str.size;
    return 0;
}

static int decode_hello(const msgpack_object *a, struct r3_wire_msg *m)
{
    if (a->via.array.size != 3 || !is_uint(&a->via.array.ptr[1]) ||
        a->via.array.ptr[2].type != MSGPACK_OBJECT_MAP)
        return -EPROTO;
    m->type = R3_WIRE_HELLO;
    m->version = a->via.array.ptr[1].via.u64;
    const msgpack_object_map *f = &a->via.array.ptr[2].via.map;
    for (uint32_t i = 0; i < f->size; i++) {
        const msgpack_object_kv *kv = &f->ptr[i];
        const msgpack_object *v = &kv->val;
        if (kv->key.type != MSGPACK_OBJECT_STR)
            return -EPROTO;
        if (key_is(kv, "export")) {
            if (v->type != MSGPACK_OBJECT_STR)
                return -EPROTO;
            m->export_name = v->via.str.ptr;
            m->export_len = v->via.str.size;
        } else if (key_is(kv, "error")) {
            if (decode_error(v, m) < 0)
                return -EPROTO;
        } else if (key_is(kv, "size") || key_is(kv, "align") || key_is(kv, "flags") ||
                   key_is(kv, "max_request") || key_is(kv, "client") || key_is(kv, "features")) {
            if (!is_uint(v))
                return -EPROTO;
            uint64_t *dst = key_is(kv, "size") ? &m->size : key_is(kv, "align") ? &m->align :
                            key_is(kv, "flags") ? &m->flags : key_is(kv, "client") ? &m->client :
                            key_is(kv, "features") ? &m->features : &m->max_request;
            *dst = v->via.u64;
            if (dst == &m->client)
                m->has_client = true;
        }
        /* unknown features are ignored: newer peers may add some */
    }
    return 0;
}

static int decode_request(const msgpack_object *a, struct r3_wire_msg *m)
{
    const msgpack_object *e = a->via.array.ptr;
    if (a->via.array.size != 4 || !is_uint(&e[1]) || e[2].type != MSGPACK_OBJECT_STR ||
        e[3].type != MSGPACK_OBJECT_ARRAY)
        return -EPROTO;
    m->type = R3_WIRE_REQUEST;
    m->id = e[1].via.u64;
    m->method = e[2].via.str.ptr;
    m->method_len = e[2].via.str.size;
    const msgpack_object_array *args = &e[3].via.array;
    bool rd = is_str(&e[2], "read"), wr = is_str(&e[2], "write");
    if (rd || wr) {
        if (args->size != 2 || !is_uint(&args->ptr[0]))
            return -EPROTO;
        m->off = args->ptr[0].via.u64;
        if (rd) {
            if (!is_uint(&args->ptr[1]))
                return -EPROTO;
            m->len = args->ptr[1].via.u64;
        } else {
            if (args->ptr[1].type != MSGPACK_OBJECT_BIN)
                return -EPROTO;
            m->len = args->ptr[1].via.bin.size;
            m->data = args->ptr[1].via.bin.ptr;
            m->has_data = true;
        }
    } else if (args->size == 2 && is_uint(&args->ptr[0]) && is_uint(&args->ptr[1])) {
        /* other methods (migration) take two numbers, or none */
        m->off = args->ptr[0].via.u64;
        m->len = args->ptr[1].via.u64;
    }
    return 0;
}

static int decode_reply(const msgpack_object *a, struct r3_wire_msg *m)
{
    const msgpack_object *e = a->via.array.ptr;
    if (a->via.array.size != 4 || !is_uint(&e[1]))
        return -EPROTO;
    m->type = R3_WIRE_REPLY;
    m->id = e[1].via.u64;
    if (e[2].type != MSGPACK_OBJECT_NIL && decode_error(&e[2], m) < 0)
        return -EPROTO;
    switch (e[3].type) {
    case MSGPACK_OBJECT_NIL: break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: m->val = e[3].via.u64; m->has_val = true; break;
    case MSGPACK_OBJECT_BIN:
        m->data = e[3].via.bin.ptr;
        m->len = e[3].via.bin.size;
        m->has_data = true;
        break;
    case MSGPACK_OBJECT_BOOLEAN:            /* a read of zeros */
        if (!e[3].via.boolean)
            return -EPROTO;
        m->zero = true;
        break;
    case MSGPACK_OBJECT_ARRAY: {            /* an extent: [kind, run] */
        const msgpack_object_array *x = &e[3].via.array;
        if (x->size != 2 || !is_uint(&x->ptr[0]) || !is_uint(&x->ptr[1]) || x->ptr[0].via.u64 > 1)
            return -EPROTO;
        m->has_extent = true;
        m->ext_kind = x->ptr[0].via.u64;
        m->val = x->ptr[1].via.u64;
        break;
    }
    default: return -EPROTO;
    }
    return 0;
}

/* Walk one msgpack object at p[0..n) without allocating: bytes it takes, or
 * -1 if it is cut, too deep, or declares more elements than bytes remain.
 * msgpack-c allocates a container's element array from its declared count
 * before it sees the elements, so counts must be bounded first. */
static long scan(const uint8_t *p, size_t n, int depth)
{
    if (n < 1 || depth > 6)
        return -1;
    uint8_t t = p[0];
    uint64_t cnt = 0, len = 0;
    size_t h = 1;
    bool map = false;
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
        return 1;
    if ((t & 0xf0) == 0x80) { cnt = t & 0x0f; map = true; }
    else if ((t & 0xf0) == 0x90) cnt = t & 0x0f;
    else if ((t & 0xe0) == 0xa0) len = t & 0x1f;
    else {
        static const struct { uint8_t t, w; char kind; } f[] = {
            { 0xc4, 1, 'b' }, { 0xc5, 2, 'b' }, { 0xc6, 4, 'b' }, { 0xd9, 1, 'b' }, { 0xda, 2, 'b' },
            { 0xdb, 4, 'b' }, { 0xcc, 1, 'n' }, { 0xcd, 2, 'n' }, { 0xce, 4, 'n' }, { 0xcf, 8, 'n' },
            { 0xd0, 1, 'n' }, { 0xd1, 2, 'n' }, { 0xd2, 4, 'n' }, { 0xd3, 8, 'n' }, { 0xca, 4, 'n' },
            { 0xcb, 8, 'n' }, { 0xdc, 2, 'a' }, { 0xdd, 4, 'a' }, { 0xde, 2, 'm' }, { 0xdf, 4, 'm' },
        };
        size_t i;
        for (i = 0; i < sizeof f / sizeof f[0] && f[i].t != t; i++) {}
        if (i == sizeof f / sizeof f[0])
            return -1;              /* ext types and the reserved 0xc1 are not used */
        if (n < 1u + f[i].w)
            return -1;
        uint64_t x = 0;
        for (unsigned k = 1; k <= f[i].w; k++)
            x = x << 8 | p[k];
        h = 1u + f[i].w;
        if (f[i].kind == 'n')
            return (long)h;
        if (f[i].kind == 'b')
            len = x;
        else {
            cnt = x;
            map = f[i].kind == 'm';
        }
    }
    if (len)
        return len <= n - h ? (long)(h + len) : -1;
    if (map)
        cnt *= 2;
    if (cnt > n - h)
        return -1;
    size_t off = h;
    for (uint64_t i = 0; i < cnt; i++) {
        long u = scan(p + off, n - off, depth + 1);
        if (u < 0)
            return -1;
        off += (size_t)u;
    }
    return (long)off;
}

bool r3_wire_scan_ok(const void *buf, size_t len)
{
    return scan((const uint8_t *)buf, len, 0) == (long)len;
}

int r3_wire_decode(const char *buf, size_t len, msgpack_unpacked *up, struct r3_wire_msg *m)
{
    memset(m, 0, sizeof *m);
    msgpack_unpacked_init(up);
    size_t off = 0;
    if (scan((const uint8_t *)buf, len, 0) != (long)len)
        return -EPROTO;
    if (msgpack_unpack_next(up, buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len)
        return -EPROTO;
    const msgpack_object *a = &up->data;
    if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size < 1)
        return -EPROTO;
    const msgpack_object *t = &a->via.array.ptr[0];
    if (is_str(t, R3_WIRE_MAGIC))
        return decode_hello(a, m);
    if (!is_uint(t))
        return -EPROTO;
    if (t->via.u64 == R3_WIRE_REQUEST)
        return decode_request(a, m);
    if (t->via.u64 == R3_WIRE_REPLY)
        return decode_reply(a, m);
    return -EPROTO;
}

/* A msgpack unsigned integer at p[0..n): bytes used, 0 if it is not one, -EAGAIN if cut. */
static int peek_uint(const uint8_t *p, size_t n, uint64_t *v)
{
    if (n < 1)
        return -EAGAIN;
    if (p[0] <= 0x7f) {
        *v = p[0];
        return 1;
    }
    int w;
    switch (p[0]) {
    case 0xcc: w = 1; break;
    case 0xcd: w = 2; break;
    case 0xce: w = 4; break;
    case 0xcf: w = 8; break;
    default: return 0;
    }
    if (n < (size_t)w + 1)
        return -EAGAIN;
    uint64_t x = 0;
    for (int i = 1; i <= w; i++)
        x = x << 8 | p[i];
    *v = x;
    return w + 1;
}

int r3_wire_peek_data_reply(const void *pv, size_t n, uint64_t *id, size_t *hdr, uint32_t *dlen)
{
    const uint8_t *p = pv;
    if (n < 2)
        return -EAGAIN;
    if (p[0] != 0x94)
        return (p[0] == 0x93 || p[0] == 0xdc || p[0] == 0xdd || (p[0] & 0xf0) == 0x90) ? 1 : -EPROTO;
    if (p[1] != R3_WIRE_REPLY)
        return 1;
    int u = peek_uint(p + 2, n - 2, id);
    if (u <= 0)
        return u == 0 ? 1 : u;
    size_t i = 2 + (size_t)u;
    if (n < i + 2)
        return -EAGAIN;
    if (p[i] != 0xc0)         /* an error: take the slow path */
        return 1;
    i++;
    uint32_t l;
    switch (p[i]) {
    case 0xc4:
        if (n < i + 2) return -EAGAIN;
        l = p[i + 1];
        i += 2;
        break;
    case 0xc5:
        if (n < i + 3) return -EAGAIN;
        l = (uint32_t)p[i + 1] << 8 | p[i + 2];
        i += 3;
        break;
    case 0xc6:
        if (n < i + 5) return -EAGAIN;
        l = (uint32_t)p[i + 1] << 24 | (uint32_t)p[i + 2] << 16 | (uint32_t)p[i + 3] << 8 | p[i + 4];
        i += 5;
        break;
    default: return 1;
    }
    *hdr = i;
    *dlen = l;
    return 0;
}

void r3_wire_start(msgpack_sbuffer *sb, msgpack_packer *pk)
{
    static const char zero[R3_WIRE_HDR];
    sb->size = 0;
    msgpack_sbuffer_write(sb, zero, R3_WIRE_HDR);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
}

void r3_wire_finish(msgpack_sbuffer *sb, size_t extra)
{
    uint32_t l = (uint32_t)(sb->size - R3_WIRE_HDR + extra);
    uint8_t *h = (uint8_t *)sb->data;
    h[0] = (uint8_t)(l >> 24);
    h[1] = (uint8_t)(l >> 16);
    h[2] = (uint8_t)(l >> 8);
    h[3] = (uint8_t)l;
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void r3_wire_pack_client_hello(msgpack_packer *pk, const char *export_name, uint64_t client,
                               unsigned features)
{
    msgpack_pack_array(pk, 3);
    pack_cstr(pk, R3_WIRE_MAGIC);
    msgpack_pack_uint32(pk, R3_WIRE_VERSION);
    msgpack_pack_map(pk, 1 + (client != 0) + (features != 0));
    pack_cstr(pk, "export");
    pack_cstr(pk, export_name ? export_name : "");
    if (client) {
        pack_cstr(pk, "client");
        msgpack_pack_uint64(pk, client);
    }
    if (features) {
        pack_cstr(pk, "features");
        msgpack_pack_uint32(pk, features);
    }
}

static void pack_error(msgpack_packer *pk, int err, const char *msg)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint32(pk, (uint32_t)(err < 0 ? -err : err));
    pack_cstr(pk, msg ? msg : "");
}

void r3_wire_pack_server_hello(msgpack_packer *pk, int err, const char *msg, uint64_t size,
                               uint32_t align, unsigned flags, uint64_t max_request, unsigned features)
{
    msgpack_pack_array(pk, 3);
    pack_cstr(pk, R3_WIRE_MAGIC);
    msgpack_pack_uint32(pk, R3_WIRE_VERSION);
    if (err < 0) {
        msgpack_pack_map(pk, 1);
        pack_cstr(pk, "error");
        pack_error(pk, err, msg);
        return;
    }
    msgpack_pack_map(pk, features ? 5 : 4);
    pack_cstr(pk, "size");
    msgpack_pack_uint64(pk, size);
    pack_cstr(pk, "align");
    msgpack_pack_uint32(pk, align);
    pack_cstr(pk, "flags");
    msgpack_pack_uint32(pk, flags);
    pack_cstr(pk, "max_request");
    msgpack_pack_uint64(pk, max_request);
    if (features) {
        pack_cstr(pk, "features");
        msgpack_pack_uint32(pk, features);
    }
}

void r3_wire_pack_request(msgpack_packer *pk, uint64_t id, const char *method, uint64_t off,
                          uint64_t len, bool write_data)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint32(pk, R3_WIRE_REQUEST);
    msgpack_pack_uint64(pk, id);
    pack_cstr(pk, method);
    if (strcmp(method, "read") == 0 || strcmp(method, "write") == 0) {
        msgpack_pack_array(pk, 2);
        msgpack_pack_uint64(pk, off);
        if (write_data)
            msgpack_pack_bin(pk, (size_t)len);
        else
            msgpack_pack_uint64(pk, len);
    } else if (off || len) {
        msgpack_pack_array(pk, 2);          /* migration methods: two numbers */
        msgpack_pack_uint64(pk, off);
        msgpack_pack_uint64(pk, len);
    } else {
        msgpack_pack_array(pk, 0);
    }
}

void r3_wire_pack_reply(msgpack_packer *pk, uint64_t id, int err, const char *msg,
                        bool has_val, uint64_t val, bool has_data, uint32_t dlen)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint32(pk, R3_WIRE_REPLY);
    msgpack_pack_uint64(pk, id);
    if (err < 0)
        pack_error(pk, err, msg);
    else
        msgpack_pack_nil(pk);
    if (err < 0 || (!has_val && !has_data))
        msgpack_pack_nil(pk);
    else if (has_data)
        msgpack_pack_bin(pk, dlen);
    else
        msgpack_pack_uint64(pk, val);
}

void r3_wire_pack_reply_zero(msgpack_packer *pk, uint64_t id)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint32(pk, R3_WIRE_REPLY);
    msgpack_pack_uint64(pk, id);
    msgpack_pack_nil(pk);
    msgpack_pack_true(pk);
}

void r3_wire_pack_reply_extent(msgpack_packer *pk, uint64_t id, int kind, uint64_t run)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint32(pk, R3_WIRE_REPLY);
    msgpack_pack_uint64(pk, id);
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint32(pk, (uint32_t)kind);
    msgpack_pack_uint64(pk, run);
}
