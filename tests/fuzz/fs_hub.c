/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the r3sync hub (filesync/hub.c on src/net's server): the
 * client's hello, frame bounds, every message an advertiser or a receiver
 * may send, and the hub's state across connections (files per sync id,
 * relays to receivers, HAVE and ACK routed to advertisers, GONE when an
 * advertiser leaves). hub.c is compiled into this target (#include, so its
 * server callbacks are reachable without TLS; nothing in it is changed);
 * the server runs plain on a unix socket and the client certificate's CN
 * (the sync id) is the first byte a connection sends: 0 -> "a", else "b".
 *
 * Input: 3 bytes, one per connection (bit 0: a receiver, else an
 * advertiser; bit 1: send a valid hello first; bit 2: sync id "b"), then
 * records [sel, len16, bytes]: bytes go to connection sel % 3 (bit 6 of
 * sel: then shut its write side). After each record the target waits
 * until the hub has read it. Every connection's answer is read to the end:
 * every frame the hub sends must be a well-formed filesync frame. */
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include "fs_peer.h"

#define fs_hub_run fuzz_unused_fs_hub_run
#include "../../filesync/hub.c"
#undef fs_hub_run

#define NCONN 3

static struct hub H;
static char sock[108];

/* The plain server's stand-in for the TLS layer: the CN from one byte. */
static int fuzz_handshake(struct r3_net_conn *c)
{
    uint8_t b;
    int rc = r3_io_read_all(&c->io, &b, 1);
    if (rc < 0)
        return rc;
    snprintf(c->cn, sizeof c->cn, "%s", b ? "b" : "a");
    return on_handshake(c);
}

static void no_log(void *arg, const char *line)
{
    (void)arg;
    (void)line;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static struct fs_report rep = { .line = fs_fake_line };
    H = (struct hub){ .qlimit = 1u << 20, .verbose = true, .rep = &rep };
    pthread_mutex_init(&H.mu, NULL);
    r3_net_budget_init(&H.budget, 16u << 20);
    snprintf(sock, sizeof sock, "/tmp/r3fuzz-hub-%d.sock", (int)getpid());
    unlink(sock);
    fuzz_rm_at_exit(sock);
    char listen[128];
    snprintf(listen, sizeof listen, "unix:%s", sock);
    struct r3_net_server_opts so = {
        .name = "r3sync hub", .handshake_ms = 2000, .send_timeout_ms = 2000, .read_timeout_ms = 2000,
        .h = { .handshake = fuzz_handshake, .on_readable = on_readable, .on_close = on_close, .arg = &H },
        .log = no_log, .log_arg = &H,
    };
    if (r3_net_addr_parse(listen, 0, R3_NET_PASSIVE, &so.listen) < 0 ||
        r3_net_server_start(&so, &H.srv) < 0)
        FUZZ_DIE("hub: %s", r3_last_error());
    return 0;
}

struct reader {
    int fd;
    pthread_t t;
};

/* Read the hub's frames on one connection until it closes. */
static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    uint8_t *buf = malloc(FS_MAX_FRAME);
    if (!buf)
        FUZZ_DIE("out of memory");
    for (;;) {
        uint8_t hdr[4];
        uint32_t len;
        if (!fuzz_read_all(rd->fd, hdr, 4))
            break;
        if (r3_wire_frame_len(hdr, FS_MAX_FRAME - 4, &len) < 0)
            FUZZ_DIE("the hub sent a frame of bad length");
        if (!fuzz_read_all(rd->fd, buf, len)) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                FUZZ_DIE("the hub stopped in the middle of a frame for 10 s");
            break;                         /* dropped mid-frame (too slow, closed) */
        }
        fs_fake_check(buf, len);
    }
    free(buf);
    return NULL;
}

/* Wait (up to 1 s) until the hub has read everything sent on fd. */
static void wait_read(int fd)
{
    for (int i = 0; i < 1000; i++) {
        int q = 0;
        if (ioctl(fd, SIOCOUTQ, &q) < 0 || q == 0)
            break;
        usleep(1000);
    }
}

static void hello(int fd, int role)
{
    const char *r = role ? "recv" : "adv";
    msgpack_sbuffer b;
    msgpack_packer pk;
    fs_msg_begin(&b, &pk, 4, FS_HELLO);
    msgpack_pack_str(&pk, 6);
    msgpack_pack_str_body(&pk, "r3sync", 6);
    msgpack_pack_uint8(&pk, FS_PROTO_VERSION);
    msgpack_pack_str(&pk, strlen(r));
    msgpack_pack_str_body(&pk, r, strlen(r));
    uint8_t hdr[4] = { (uint8_t)(b.size >> 24), (uint8_t)(b.size >> 16), (uint8_t)(b.size >> 8),
                       (uint8_t)b.size };
    fuzz_write_all(fd, hdr, 4);
    fuzz_write_all(fd, b.data, b.size);
    msgpack_sbuffer_destroy(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < NCONN || size > 512 * 1024)
        return 0;
    struct reader rd[NCONN];
    pthread_mutex_lock(&H.mu);
    H.next_id = 0;                        /* connection ids 1, 2, 3 as the seeds name them */
    pthread_mutex_unlock(&H.mu);
    for (int i = 0; i < NCONN; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
            FUZZ_DIE("connect %s: %s", sock, strerror(errno));
        struct timeval tv = { 10, 0 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        uint8_t cn = data[i] & 4 ? 1 : 0;
        fuzz_write_all(fd, &cn, 1);
        if (data[i] & 2) {
            hello(fd, data[i] & 1);
            wait_read(fd);
        }
        rd[i].fd = fd;
        if (pthread_create(&rd[i].t, NULL, reader_main, &rd[i]) != 0)
            FUZZ_DIE("pthread_create failed");
    }
    size_t off = NCONN;
    while (off + 3 <= size) {
        uint8_t sel = data[off];
        size_t n = (size_t)data[off + 1] << 8 | data[off + 2];
        off += 3;
        if (n > size - off)
            n = size - off;
        int fd = rd[sel % NCONN].fd;
        /* the hub may close a connection early (a refused message) */
        fuzz_write_all(fd, data + off, n);
        off += n;
        if (sel & 0x40)
            shutdown(fd, SHUT_WR);
        wait_read(fd);
    }
    for (int i = 0; i < NCONN; i++)
        shutdown(rd[i].fd, SHUT_WR);
    for (int i = 0; i < NCONN; i++) {
        pthread_join(rd[i].t, NULL);
        close(rd[i].fd);
    }
    /* Return once the hub has let every connection go, so that its frees
     * land in this input (libFuzzer's leak check counts per input). */
    for (int i = 0; r3_net_server_conns(H.srv) > 0; i++) {
        if (i == 10000)
            FUZZ_DIE("the hub still holds a connection 10 s after it closed");
        usleep(1000);
    }
    usleep(200);
    pthread_mutex_lock(&H.mu);
    if (H.conns || H.files)
        FUZZ_DIE("the hub keeps a connection or a file of a closed advertiser");
    pthread_mutex_unlock(&H.mu);
    return 0;
}
