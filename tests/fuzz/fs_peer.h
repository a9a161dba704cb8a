/* SPDX-License-Identifier: BSD-3-Clause */
/* Shared by the filesync client-side fuzz targets (fs_recv, fs_adv): the
 * client's connection (struct fs_conn, filesync/conn.c) over one end of a
 * socketpair, plain (the hub's TLS is src/net's, fuzzed by no target here:
 * these targets are about the messages), and a fake hub on the other end,
 * on a thread, that writes the input as the hub's byte stream, then reads
 * everything the client sends until it closes: every frame the client
 * sends must be a well-formed filesync frame (conn.c's bound and one
 * msgpack array). */
#ifndef R3_FUZZ_FS_PEER_H
#define R3_FUZZ_FS_PEER_H

#include "fuzz.h"
#include "internal.h"
#include "filesync/filesync.h"
#include "wire/frame.h"

struct fs_fake_hub {
    int fd;
    const uint8_t *data;
    size_t size;
    unsigned frames;           /* frames the client sent */
    pthread_t t;
};

/* Check one frame the client sent (body: len bytes after the header). */
static inline void fs_fake_check(const uint8_t *body, uint32_t len)
{
    msgpack_unpacked u;
    size_t used = 0;
    msgpack_unpacked_init(&u);
    if (!r3_wire_scan_ok(body, len) ||
        msgpack_unpack_next(&u, (const char *)body, len, &used) != MSGPACK_UNPACK_SUCCESS ||
        used != len || u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size < 1 ||
        u.data.via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        FUZZ_DIE("the client sent a malformed frame of %u bytes", len);
    msgpack_unpacked_destroy(&u);
}

static inline void *fs_fake_main(void *arg)
{
    struct fs_fake_hub *h = arg;
    /* the client may close early (a bad message): then the rest is not sent */
    fuzz_write_all(h->fd, h->data, h->size);
    shutdown(h->fd, SHUT_WR);
    uint8_t *buf = malloc(FS_MAX_FRAME);
    if (!buf)
        FUZZ_DIE("out of memory");
    for (;;) {
        uint8_t hdr[4];
        uint32_t len;
        if (!fuzz_read_all(h->fd, hdr, 4))
            break;
        if (r3_wire_frame_len(hdr, FS_MAX_FRAME - 4, &len) < 0)
            FUZZ_DIE("the client sent a frame of bad length");
        if (!fuzz_read_all(h->fd, buf, len))
            FUZZ_DIE("the client's frame was cut short");
        fs_fake_check(buf, len);
        h->frames++;
    }
    free(buf);
    return NULL;
}

/* A client connection to a fake hub that sends data (copied by the caller
 * for as long as the hub runs). */
static inline struct fs_conn *fs_fake_start(struct fs_fake_hub *h, const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        FUZZ_DIE("socketpair: %s", strerror(errno));
    struct timeval tv = { 10, 0 };      /* never a hang: a stuck client is a finding */
    setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(sv[1], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct fs_conn *c = calloc(1, sizeof *c);
    if (!c)
        FUZZ_DIE("out of memory");
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (r3_io_init(&c->io, sv[0]) < 0)
        FUZZ_DIE("r3_io_init: %s", r3_last_error());
    *h = (struct fs_fake_hub){ .fd = sv[1], .data = data, .size = size };
    if (pthread_create(&h->t, NULL, fs_fake_main, h) != 0)
        FUZZ_DIE("pthread_create failed");
    return c;
}

/* After the client's connection was shut down (fs_conn_run returned, or
 * fs_conn_kill): the fake hub reads to the end. */
static inline void fs_fake_join(struct fs_fake_hub *h)
{
    pthread_join(h->t, NULL);
    close(h->fd);
}

static void fs_fake_line(void *arg, int kind, const char *text)
{
    (void)arg;
    (void)kind;
    if (!text)
        FUZZ_DIE("a NULL report line");
}

#endif
