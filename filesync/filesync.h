/* SPDX-License-Identifier: BSD-3-Clause */
/* filesync: mmap + block-hash delta synchronisation through an mTLS hub.
 * Internal to libr3 and r3sync (not installed). Parts:
 *   hash.c      XXH3-128 per fixed block, several threads
 *   track.c     change tracking of a mapping: uffd WP_ASYNC + PAGEMAP_SCAN
 *   conn.c      a client's framed msgpack messages over a TLS r3_io (src/net)
 *   dial.c      reaching the hub: retries with backoff + jitter, final refusals, giving up
 *   hub.c, advertise.c, receive.c   the three r3sync roles
 *   report.c    lines and progress handed to the caller (the library never prints)
 *   strategy.c  the "filesync" region strategy */
#ifndef R3_FILESYNC_H
#define R3_FILESYNC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>
#include "net/net.h"

#define FS_DEFAULT_BLOCK   (64u * 1024u)
#define FS_MAX_BLOCK       (4u << 20)           /* largest block size accepted */
#define FS_MAX_FRAME       (FS_MAX_BLOCK + 4096u) /* bounded before any allocation */
#define FS_MAX_NAME        4096u
#define FS_HELLO_MAX       4096u                /* a hello (or the refusal in its place) */
#define FS_HAVE_PER_MSG    65536u               /* hashes per HAVE message */
#define FS_HASH_LEN        16u

/* ---- hashing (hash.c) */
struct fs_hash { uint64_t lo, hi; };
static inline bool fs_hash_eq(struct fs_hash a, struct fs_hash b) { return a.lo == b.lo && a.hi == b.hi; }
struct fs_hash fs_hash_block(const void *p, size_t len);
/* Hash nblocks blocks of base (len bytes in all; the last block may be short)
 * into out[] with threads threads (0 = 2). */
void fs_hash_blocks(const void *base, uint64_t len, uint32_t block, struct fs_hash *out,
                    unsigned threads);
/* Same, but compare with last[] and set changed[b] (one byte per block);
 * returns the number of changed blocks. last[] is not updated. */
uint64_t fs_hash_diff(const void *base, uint64_t len, uint32_t block, const struct fs_hash *last,
                      uint8_t *changed, unsigned threads);
/* Hash an fd's content (pread, for receivers whose file may not be mappable). */
int fs_hash_fd(int fd, uint64_t len, uint32_t block, struct fs_hash *out, unsigned threads);

/* ---- change tracking of a mapping with uffd WP_ASYNC + PAGEMAP_SCAN (track.c) */
struct fs_track;
/* 0 and *out, or -errno (-ENOSYS/-EPERM/-EINVAL when the kernel cannot track
 * this mapping: the caller falls back to hashing). Starts with every page
 * write-protected (clean). */
int  fs_track_open(void *base, size_t len, struct fs_track **out);
/* Find the pages written since the last scan and write-protect them again.
 * Sets dirty[b] = 1 for every block (of block bytes) holding a written page;
 * returns the number of newly marked blocks or -errno. */
long fs_track_scan(struct fs_track *t, uint32_t block, uint8_t *dirty);
void fs_track_close(struct fs_track *t);

/* ---- frames and connections (conn.c) */
/* A frame: 4-byte big-endian length + one msgpack array. Shared by reference
 * between the queues of many connections (the hub relays one copy). */
struct fs_frame {
    atomic_uint refs;
    uint32_t len;              /* bytes in data, header included */
    struct r3_net_budget *budget;   /* given len bytes back when freed (NULL: none) */
    unsigned char data[];
};
struct fs_frame *fs_frame_new(const msgpack_sbuffer *body);   /* refs = 1; NULL on ENOMEM */
struct fs_frame *fs_frame_raw(const void *body, size_t len);
/* A frame of body bytes (header and body not filled in) whose len bytes
 * were taken from budget (NULL: none); refs = 1. NULL on ENOMEM. */
struct fs_frame *fs_frame_alloc(size_t body, struct r3_net_budget *budget);
void fs_frame_put(struct fs_frame *f);
/* The one frame reader of filesync (hub and clients): the length (frame.h's
 * r3_wire_frame_len) is checked against max before anything is allocated
 * (-EMSGSIZE with a sentence), then taken from budget (NULL: none; waits
 * while it is used up, -ESHUTDOWN once *stop), then the frame is read. */
int  fs_frame_read(struct r3_io *io, uint32_t max, struct r3_net_budget *budget, const bool *stop,
                   struct fs_frame **out);
/* Its payload as one msgpack array (-EPROTO otherwise); destroy u after,
 * also on failure. */
int  fs_frame_unpack(const struct fs_frame *f, msgpack_unpacked *u);

struct fs_qent;
struct fs_conn {
    struct r3_io io;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fs_qent *qh, *qt;
    size_t qbytes;
    bool dead, stop, writing;
    uint64_t id;               /* hub: connection id */
    atomic_uint_fast64_t bytes_out, bytes_in;   /* framed bytes */
    char err[256];             /* why the connection died */
};
/* Dial addr (src/net's address syntax) and do the TLS handshake (client
 * certificate from ctx), within timeout_ms. */
int  fs_conn_connect(struct r3_tls_ctx *ctx, const char *addr, int timeout_ms, struct fs_conn **out);
void fs_conn_free(struct fs_conn *c);
/* Queue a frame (takes a reference). Blocks while more than limit bytes are
 * queued, up to timeout_ms (<0 = until the connection dies). 0, -EPIPE (dead),
 * -ETIMEDOUT. */
int  fs_conn_send(struct fs_conn *c, struct fs_frame *f, size_t limit, int timeout_ms);
int  fs_conn_send_buf(struct fs_conn *c, const msgpack_sbuffer *b, size_t limit, int timeout_ms);
/* Ask the I/O loop to end (and wake it). Safe from any thread. */
void fs_conn_kill(struct fs_conn *c, const char *why);
/* Wait until everything queued has been written (or the connection died). */
int  fs_conn_drain(struct fs_conn *c, int timeout_ms);
typedef int (*fs_msg_fn)(void *arg, struct fs_conn *c, const msgpack_object *msg,
                         const unsigned char *raw, size_t rawlen);
/* The client's hello, before fs_conn_run: sends [HELLO, "r3sync", version,
 * role] and waits up to timeout_ms for the hub's answer. 0; -EACCES when the
 * hub refused (a TLS alert about our certificate, or an ERR message): final,
 * retrying cannot help; other -errno: the connection failed (retry). */
int  fs_conn_hello(struct fs_conn *c, const char *role, int timeout_ms);
/* True (and the sentence rewritten) if the last error is a fatal TLS alert
 * from the peer: it refused us, and retrying cannot help. */
bool fs_refused_alert(void);
/* Runs the connection: a writer thread drains the queue while this thread
 * reads frames (bounded by FS_MAX_FRAME before allocation) and calls fn for
 * each. Returns when the peer goes away, fn returns < 0, or fs_conn_kill;
 * the connection is dead then. */
void fs_conn_run(struct fs_conn *c, fs_msg_fn fn, void *arg);

/* fs_conn_run on a thread of its own (a client's reader): when it returns,
 * *done is set under *mu and *cv (if any) broadcast. Join r->t. */
struct fs_reader {
    struct fs_conn *c;
    fs_msg_fn fn;
    void *arg;
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    bool *done;
    pthread_t t;
};
int  fs_reader_start(struct fs_reader *r);

/* Start a message [type, ...] of n elements into a new b (destroy it after). */
void fs_msg_begin(msgpack_sbuffer *b, msgpack_packer *pk, uint32_t n, unsigned type);
/* msgpack helpers: pull typed fields out of an array message. */
bool fs_msg_uint(const msgpack_object *m, uint32_t i, uint64_t *v);
bool fs_msg_str(const msgpack_object *m, uint32_t i, const char **s, uint32_t *n);
bool fs_msg_bin(const msgpack_object *m, uint32_t i, const void **p, uint32_t *n);

/* Message types: [type, ...] */
enum {
    FS_HELLO = 1,   /* [1, "r3sync", version, role("adv"|"recv")] ; hub replies [1, "r3sync", version, "ok", id] */
    FS_FILE  = 2,   /* adv->hub->recv: [2, fid, name, size, block] (announce; receivers answer HAVE) */
    FS_SIZE  = 3,   /* [3, fid, size] */
    FS_BLK   = 4,   /* [4, fid, index, bin] broadcast block */
    FS_END   = 5,   /* adv->hub: [5, round]; hub->recv: [5, round, advconn] */
    FS_HAVE  = 6,   /* recv->hub: [6, fid, first, bin hashes, last]; hub->adv: [..., rid] */
    FS_TBLK  = 7,   /* [7, rid, fid, index, bin] block for one receiver (catch-up) */
    FS_TDONE = 8,   /* [8, rid, fid, blocks_sent] catch-up of fid done for rid */
    FS_ACK   = 9,   /* recv->hub: [9, round, advconn]; hub->adv: [9, round, rid] */
    FS_GONE  = 10,  /* hub->recv: [10, fid] the advertiser left (file kept) */
    FS_ERR   = 11,  /* [11, text] the peer refuses something (then closes) */
};
#define FS_PROTO_VERSION 1

/* Validate a relative file name (no "..", no absolute path, no NUL, no
 * empty or "." components). 0 or -EINVAL with r3_error set. */
int fs_name_check(const char *name, uint32_t n);

/* ---- reporting (report.c): the library never prints; lines and progress
 * go to the caller's callbacks (any may be NULL: not reported). */
enum { FS_SAY_OUT = 0,         /* a result line ("round 3 done ...": r3sync's stdout) */
       FS_SAY_DIAG = 1 };      /* a diagnostic ("connected to ...": r3sync's stderr) */
struct fs_report {
    void (*line)(void *arg, int kind, const char *text);
    /* a long operation: done of total bytes after secs; final once at the end */
    void (*progress)(void *arg, const char *what, uint64_t done, uint64_t total, double secs,
                     bool final);
    void *arg;
};
void fs_say(const struct fs_report *r, int kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- reaching the hub (dial.c) */
/* A client's TLS context: mTLS only, so cert, key and ca are all required. */
int  fs_client_ctx(const struct r3_tls_opts *tls, struct r3_tls_ctx **out);
struct fs_dial {
    const char *hub;           /* "host:port" */
    struct r3_tls_ctx *ctx;
    const char *role;          /* "adv" or "recv" */
    unsigned give_up_ms;       /* 0 = retry until *stop */
    const struct fs_report *rep;
    atomic_int *stop;
    /* state */
    struct r3_net_backoff b;   /* src/net's backoff; its start is this disconnected period's */
    bool started, warned, pause;
    uint64_t up_since;         /* when the current connection came up (ns), 0 = none */
    unsigned attempts, total_attempts;
    char why[512];             /* the last failure */
};
/* Connect and say hello, retrying until it works (0 and *out), *stop
 * (-EINTR), a final refusal (-EACCES) or give_up_ms without a connection
 * since the start or the last fs_dial_lost (-ETIMEDOUT), each with a
 * sentence. fs_dial_lost: the connection ended; if it lasted less than 10 s
 * the backoff (and the give-up clock) go on, else they start afresh. */
int  fs_dial(struct fs_dial *d, struct fs_conn **out);
void fs_dial_lost(struct fs_dial *d);

/* ---- roles (hub.c, advertise.c, receive.c); each runs until *stop */
struct fs_hub_opts {
    const char *listen;
    struct r3_tls_opts tls;
    size_t queue_limit;        /* per receiver; 0 = 64 MiB */
    size_t max_inflight;       /* advertisers' frames alive in the hub; 0 = 256 MiB */
    unsigned max_connections;  /* 0 = 1024 (src/net's default) */
    bool verbose;
    struct fs_report report;
};
int fs_hub_run(const struct fs_hub_opts *o, atomic_int *stop);

/* A mapping the caller owns and writes (in-process advertiser): the
 * advertiser may track it with PAGEMAP_SCAN instead of hashing. */
struct fs_adv_map {
    void *base;
    uint64_t len;
    const char *name;
};
struct fs_adv_stats {          /* updated by the advertiser, read by anyone */
    atomic_uint_fast64_t rounds, acks, last_acked_round, last_round_bytes, last_round_blocks;
    atomic_uint_fast64_t catchup_bytes, connected;
};
struct fs_adv_opts {
    const char *hub;
    struct r3_tls_opts tls;
    const char *const *files;  /* paths; the advertised name is the path if relative, else its basename */
    size_t nfiles;
    const struct fs_adv_map *maps;
    size_t nmaps;
    bool track;                /* use PAGEMAP_SCAN on maps where the kernel allows */
    uint32_t block;            /* 0 = 64 KiB */
    unsigned interval_ms;      /* 0 = rounds only when *kick is set (SIGUSR1 in r3sync) */
    unsigned threads;          /* hash threads; 0 = 2 */
    unsigned rounds;           /* > 0: stop after this many rounds */
    unsigned give_up_ms;       /* not connected for this long: give up (0 = never) */
    struct fs_report report;
    struct fs_adv_stats *stats;
};
int fs_adv_run(const struct fs_adv_opts *o, atomic_int *stop, atomic_int *kick);

struct fs_recv_opts {
    const char *hub;
    struct r3_tls_opts tls;
    const char *dir;
    unsigned threads;
    unsigned give_up_ms;       /* not connected for this long: give up (0 = never) */
    struct fs_report report;
};
int fs_recv_run(const struct fs_recv_opts *o, atomic_int *stop);

/* ---- progress of a long operation through fs_report (report.c) */
struct fs_progress {
    bool on;
    const struct fs_report *rep;
    const char *what;
    uint64_t total, done, t0, last;
};
void fs_progress_start(struct fs_progress *p, const struct fs_report *rep, const char *what,
                       uint64_t total);
void fs_progress_add(struct fs_progress *p, uint64_t n);
void fs_progress_end(struct fs_progress *p);

#endif
