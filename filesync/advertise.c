/* SPDX-License-Identifier: BSD-3-Clause */
/* The advertiser: maps each file MAP_SHARED, keeps the hash of what it last
 * sent per block (so a round sends no signature), and each round sends the
 * blocks whose content changed, found by PAGEMAP_SCAN when it owns the
 * mapping and the kernel allows, else by hashing. A receiver's hashes (sent
 * once when it learns about a file) get it exactly the blocks that differ. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <r3/thread.h>
#include "internal.h"
#include "filesync/filesync.h"

#define ADV_QUEUE_LIMIT (32u << 20)

struct afile {
    const char *path;           /* NULL for a caller's mapping */
    char *name;
    uint64_t fid;
    int fd;
    unsigned char *map;
    uint64_t size, maplen;
    bool owned_map;             /* the caller's mapping: never unmapped here */
    struct fs_hash *last;
    uint8_t *changed;
    uint64_t nblocks;
    struct fs_track *track;
};

struct inmsg {
    struct inmsg *next;
    uint64_t type, fid, first, last, rid, round;
    uint32_t n;
    unsigned char hashes[];
};

struct adv {
    const struct fs_adv_opts *o;
    uint32_t block;
    struct afile *files;
    size_t nfiles;
    struct fs_conn *c;
    struct fs_reader rd;        /* the connection's reader thread */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct inmsg *in, *in_tail;
    bool io_done;
    uint64_t round;
    struct cu { struct cu *next; uint64_t rid, fid, blocks, bytes; } *cus;   /* catch-ups in flight */
};

static uint64_t nblocks_of(uint64_t size, uint32_t block)
{
    return (size + block - 1) / block;
}

static int file_resize_state(struct adv *a, struct afile *f, uint64_t size)
{
    uint64_t nb = nblocks_of(size, a->block), oldnb = f->nblocks;
    if (nb != oldnb || !f->last) {
        struct fs_hash *l = realloc(f->last, (nb ? nb : 1) * sizeof *l);
        uint8_t *ch = realloc(f->changed, nb ? nb : 1);
        if (l)
            f->last = l;
        if (ch)
            f->changed = ch;
        if (!l || !ch)
            return r3_error(-ENOMEM, "out of memory");
        for (uint64_t b = oldnb; b < nb; b++)
            f->last[b] = (struct fs_hash){ 0, 0 };   /* new blocks: always sent */
        memset(f->changed, 0, nb ? nb : 1);
    }
    /* a partial tail block changes length with the size: resend it */
    if (size != f->size) {
        if (oldnb && oldnb <= nb && f->size % a->block)
            f->last[oldnb - 1] = (struct fs_hash){ 0, 0 };
        if (nb && size % a->block)
            f->last[nb - 1] = (struct fs_hash){ 0, 0 };
    }
    f->nblocks = nb;
    f->size = size;
    return 0;
}

/* Map the file's current size (read-only, shared: sees the writer's pages). */
static int file_map(struct adv *a, struct afile *f, uint64_t size)
{
    if (f->map && f->maplen)
        munmap(f->map, f->maplen);
    f->map = NULL;
    f->maplen = 0;
    if (size) {
        void *p = mmap(NULL, size, PROT_READ, MAP_SHARED, f->fd, 0);
        if (p == MAP_FAILED)
            return r3_error(-errno, "%s: mmap: %s", f->path, strerror(errno));
        madvise(p, size, MADV_SEQUENTIAL);
        f->map = p;
        f->maplen = size;
    }
    return 0;
}

static int files_open(struct adv *a)
{
    const struct fs_adv_opts *o = a->o;
    a->nfiles = o->nfiles + o->nmaps;
    a->files = calloc(a->nfiles ? a->nfiles : 1, sizeof *a->files);
    if (!a->files)
        return r3_error(-ENOMEM, "out of memory");
    for (size_t i = 0; i < a->nfiles; i++) {
        struct afile *f = &a->files[i];
        f->fd = -1;
        if (getrandom(&f->fid, sizeof f->fid, 0) != sizeof f->fid || f->fid == 0)
            f->fid = r3_now_ns() ^ (i * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)getpid() << 32);
        const char *nm;
        if (i < o->nfiles) {
            f->path = o->files[i];
            nm = f->path;
            if (nm[0] == '/' || fs_name_check(nm, (uint32_t)strlen(nm)) < 0) {
                const char *sl = strrchr(nm, '/');
                nm = sl ? sl + 1 : nm;
            }
        } else
            nm = o->maps[i - o->nfiles].name;
        if (!nm || fs_name_check(nm, (uint32_t)strlen(nm)) < 0)
            return nm ? r3_error_prefix(-EINVAL, "cannot advertise '%s': ", nm)
                      : r3_error(-EINVAL, "cannot advertise a mapping without a name");
        if (!(f->name = strdup(nm)))
            return r3_error(-ENOMEM, "out of memory");
        uint64_t size;
        if (f->path) {
            f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
            struct stat st;
            if (f->fd < 0 || fstat(f->fd, &st) < 0)
                return r3_error(-errno, "%s: %s", f->path, strerror(errno));
            if (!S_ISREG(st.st_mode))
                return r3_error(-EINVAL, "%s: not a regular file", f->path);
            size = (uint64_t)st.st_size;
            int rc = file_map(a, f, size);
            if (rc < 0)
                return rc;
        } else {
            const struct fs_adv_map *m = &o->maps[i - o->nfiles];
            f->map = m->base;
            f->maplen = size = m->len;
            f->owned_map = true;
            if (o->track && fs_track_open(m->base, m->len, &f->track) < 0) {
                fs_say(&o->report, FS_SAY_DIAG, "%s: PAGEMAP_SCAN tracking unavailable (%s); hashing",
                       f->name, r3_last_error());
                f->track = NULL;
            }
        }
        int rc = file_resize_state(a, f, size);
        if (rc < 0)
            return rc;
        fs_hash_blocks(f->map, size, a->block, f->last, o->threads);
    }
    return 0;
}

static void files_close(struct adv *a)
{
    for (size_t i = 0; i < a->nfiles; i++) {
        struct afile *f = &a->files[i];
        if (!f->owned_map && f->map)
            munmap(f->map, f->maplen);
        if (f->fd >= 0)
            close(f->fd);
        fs_track_close(f->track);
        free(f->name);
        free(f->last);
        free(f->changed);
    }
    free(a->files);
}

/* ---- connection */

static int on_msg(void *arg, struct fs_conn *c, const msgpack_object *m, const unsigned char *raw,
                  size_t rawlen)
{
    struct adv *a = arg;
    uint64_t type;
    if (!fs_msg_uint(m, 0, &type))
        return r3_error(-EPROTO, "message without a type");
    struct inmsg *im = NULL;
    if (type == FS_HAVE) {
        const void *h;
        uint32_t n;
        uint64_t fid, first, last, rid;
        if (!fs_msg_uint(m, 1, &fid) || !fs_msg_uint(m, 2, &first) || !fs_msg_bin(m, 3, &h, &n) ||
            !fs_msg_uint(m, 4, &last) || !fs_msg_uint(m, 5, &rid) || n % FS_HASH_LEN)
            return r3_error(-EPROTO, "bad HAVE message from the hub");
        im = malloc(sizeof *im + n);
        if (!im)
            return r3_error(-ENOMEM, "out of memory");
        *im = (struct inmsg){ .type = type, .fid = fid, .first = first, .last = last, .rid = rid, .n = n };
        memcpy(im->hashes, h, n);
    } else if (type == FS_ACK) {
        uint64_t round, rid;
        if (!fs_msg_uint(m, 1, &round) || !fs_msg_uint(m, 2, &rid))
            return r3_error(-EPROTO, "bad ACK message from the hub");
        im = malloc(sizeof *im);
        if (!im)
            return r3_error(-ENOMEM, "out of memory");
        *im = (struct inmsg){ .type = type, .round = round, .rid = rid };
    } else if (type == FS_ERR) {
        const char *s;
        uint32_t n;
        if (fs_msg_str(m, 1, &s, &n))
            return r3_error(-EPROTO, "the hub refused: %.*s", (int)(n > 300 ? 300 : n), s);
        return r3_error(-EPROTO, "the hub refused");
    } else
        return 0;                 /* HELLO reply and anything newer: ignored */
    pthread_mutex_lock(&a->mu);
    if (a->in_tail)
        a->in_tail->next = im;
    else
        a->in = im;
    a->in_tail = im;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return 0;
}

static int send_small(struct adv *a, msgpack_sbuffer *b)
{
    int rc = fs_conn_send_buf(a->c, b, ADV_QUEUE_LIMIT, -1);
    msgpack_sbuffer_clear(b);
    return rc;
}

static int announce(struct adv *a, struct afile *f)
{
    msgpack_sbuffer b;
    msgpack_packer pk;
    fs_msg_begin(&b, &pk, 5, FS_FILE);
    msgpack_pack_uint64(&pk, f->fid);
    msgpack_pack_str(&pk, strlen(f->name));
    msgpack_pack_str_body(&pk, f->name, strlen(f->name));
    msgpack_pack_uint64(&pk, f->size);
    msgpack_pack_uint32(&pk, a->block);
    int rc = send_small(a, &b);
    msgpack_sbuffer_destroy(&b);
    return rc;
}

static void disconnect(struct adv *a)
{
    if (!a->c)
        return;
    fs_conn_kill(a->c, "closing");
    pthread_join(a->rd.t, NULL);
    fs_conn_free(a->c);
    a->c = NULL;
    pthread_mutex_lock(&a->mu);
    while (a->in) {
        struct inmsg *m = a->in;
        a->in = m->next;
        free(m);
    }
    a->in_tail = NULL;
    pthread_mutex_unlock(&a->mu);
    while (a->cus) {
        struct cu *cu = a->cus;
        a->cus = cu->next;
        free(cu);
    }
    if (a->o->stats)
        atomic_store(&a->o->stats->connected, 0);
}

/* Connected (after the hello): run the connection, announce the files. */
static int start_conn(struct adv *a)
{
    a->io_done = false;
    a->rd = (struct fs_reader){ .c = a->c, .fn = on_msg, .arg = a, .mu = &a->mu, .cv = &a->cv,
                                .done = &a->io_done };
    int rc = fs_reader_start(&a->rd);
    if (rc < 0) {
        fs_conn_free(a->c);
        a->c = NULL;
        return rc;
    }
    /* (re)announce every file: receivers answer with their hashes, which
     * repairs whatever a lost connection cost them */
    for (size_t i = 0; rc == 0 && i < a->nfiles; i++)
        rc = announce(a, &a->files[i]);
    if (rc < 0) {
        disconnect(a);
        return r3_error(rc, "%s: connection lost during hello", a->o->hub);
    }
    if (a->o->stats)
        atomic_store(&a->o->stats->connected, 1);
    return 0;
}

/* One block frame: [BLK, fid, idx, bin] or [TBLK, rid, fid, idx, bin]; the
 * block is copied once into the frame and hashed there (so the hash is of
 * exactly the bytes sent). */
static struct fs_frame *block_frame(uint64_t rid, uint64_t fid, uint64_t idx, const void *p,
                                    size_t n, struct fs_hash *h)
{
    msgpack_sbuffer hb;
    msgpack_sbuffer_init(&hb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &hb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, rid ? 5 : 4);
    msgpack_pack_uint8(&pk, rid ? FS_TBLK : FS_BLK);
    if (rid)
        msgpack_pack_uint64(&pk, rid);
    msgpack_pack_uint64(&pk, fid);
    msgpack_pack_uint64(&pk, idx);
    msgpack_pack_bin(&pk, n);
    size_t body = hb.size + n;
    struct fs_frame *f = fs_frame_alloc(body, NULL);
    if (f) {
        f->data[0] = (unsigned char)(body >> 24);
        f->data[1] = (unsigned char)(body >> 16);
        f->data[2] = (unsigned char)(body >> 8);
        f->data[3] = (unsigned char)body;
        memcpy(f->data + 4, hb.data, hb.size);
        memcpy(f->data + 4 + hb.size, p, n);
        if (h)
            *h = fs_hash_block(f->data + 4 + hb.size, n);
    }
    msgpack_sbuffer_destroy(&hb);
    return f;
}

static size_t block_len(const struct afile *f, uint32_t block, uint64_t b)
{
    uint64_t off = b * block;
    return (size_t)(f->size - off < block ? f->size - off : block);
}

static int catchup(struct adv *a, struct inmsg *m)
{
    struct afile *f = NULL;
    for (size_t i = 0; i < a->nfiles; i++)
        if (a->files[i].fid == m->fid)
            f = &a->files[i];
    if (!f)
        return 0;
    uint64_t cnt = m->n / FS_HASH_LEN;
    uint64_t end = m->last ? f->nblocks : (m->first + cnt < f->nblocks ? m->first + cnt : f->nblocks);
    struct cu *cu = NULL, **pp;
    for (pp = &a->cus; *pp; pp = &(*pp)->next)
        if ((*pp)->rid == m->rid && (*pp)->fid == m->fid) {
            cu = *pp;
            break;
        }
    if (!cu) {
        if (!(cu = calloc(1, sizeof *cu)))
            return r3_error(-ENOMEM, "out of memory");
        cu->rid = m->rid;
        cu->fid = m->fid;
        cu->next = a->cus;
        a->cus = cu;
        pp = &a->cus;
    }
    struct fs_progress pr;
    fs_progress_start(&pr, m->last && m->first == 0 ? &a->o->report : NULL, "catch-up",
                      (end > m->first ? end - m->first : 0) * a->block);
    for (uint64_t b = m->first; b < end; b++) {
        uint64_t k = b - m->first;
        if (k < cnt) {
            struct fs_hash h;
            memcpy(&h, m->hashes + k * FS_HASH_LEN, sizeof h);
            if (fs_hash_eq(h, f->last[b]))
                continue;
        }
        size_t n = block_len(f, a->block, b);
        struct fs_frame *fr = block_frame(m->rid, f->fid, b, f->map + b * a->block, n, NULL);
        if (!fr)
            return r3_error(-ENOMEM, "out of memory");
        int rc = fs_conn_send(a->c, fr, ADV_QUEUE_LIMIT, -1);
        cu->blocks++;
        cu->bytes += fr->len;
        fs_frame_put(fr);
        if (rc < 0)
            return rc;
        fs_progress_add(&pr, n);
    }
    fs_progress_end(&pr);
    if (!m->last)
        return 0;
    msgpack_sbuffer b;
    msgpack_packer pk;
    fs_msg_begin(&b, &pk, 4, FS_TDONE);
    msgpack_pack_uint64(&pk, m->rid);
    msgpack_pack_uint64(&pk, f->fid);
    msgpack_pack_uint64(&pk, cu->blocks);
    int rc = send_small(a, &b);
    uint64_t sent_blocks = cu->blocks, sent_bytes = cu->bytes;
    *pp = cu->next;
    free(cu);
    msgpack_sbuffer_destroy(&b);
    if (a->o->stats)
        atomic_fetch_add(&a->o->stats->catchup_bytes, sent_bytes);
    fs_say(&a->o->report, FS_SAY_OUT, "catchup receiver=%llu file=%s blocks=%llu wire=%llu",
           (unsigned long long)m->rid, f->name, (unsigned long long)sent_blocks,
           (unsigned long long)sent_bytes);
    return rc;
}

static int do_round(struct adv *a)
{
    uint64_t t0 = r3_now_ns();
    uint64_t round = ++a->round, blocks = 0, wire = 0, payload = 0;
    bool tracked = true;
    int rc = 0;
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    for (size_t i = 0; rc == 0 && i < a->nfiles; i++) {
        struct afile *f = &a->files[i];
        if (f->path) {
            struct stat st;
            if (fstat(f->fd, &st) < 0) {
                rc = r3_error(-errno, "%s: %s", f->path, strerror(errno));
                break;
            }
            uint64_t size = (uint64_t)st.st_size;
            if (size != f->size) {
                if ((rc = file_map(a, f, size)) < 0 || (rc = file_resize_state(a, f, size)) < 0)
                    break;
                msgpack_pack_array(&pk, 3);
                msgpack_pack_uint8(&pk, FS_SIZE);
                msgpack_pack_uint64(&pk, f->fid);
                msgpack_pack_uint64(&pk, size);
                wire += b.size + 4;
                if ((rc = send_small(a, &b)) < 0)
                    break;
            }
        }
        if (!f->size)
            continue;
        /* the writer's pages reach the file before we read them */
        msync(f->map, f->maplen, MS_ASYNC);
        memset(f->changed, 0, f->nblocks);
        if (f->track) {
            long n = fs_track_scan(f->track, a->block, f->changed);
            if (n < 0) {
                fs_say(&a->o->report, FS_SAY_DIAG, "%s: %s; hashing from now on", f->name,
                       r3_last_error());
                fs_track_close(f->track);
                f->track = NULL;
            }
        }
        if (!f->track) {
            tracked = false;
            fs_hash_diff(f->map, f->size, a->block, f->last, f->changed, a->o->threads);
        }
        uint64_t nch = 0;
        for (uint64_t k = 0; k < f->nblocks; k++)
            nch += f->changed[k];
        struct fs_progress pr;
        fs_progress_start(&pr, &a->o->report, "round", nch * a->block);
        for (uint64_t k = 0; rc == 0 && k < f->nblocks; k++) {
            if (!f->changed[k])
                continue;
            size_t n = block_len(f, a->block, k);
            struct fs_hash h;
            struct fs_frame *fr = block_frame(0, f->fid, k, f->map + k * a->block, n, &h);
            if (!fr) {
                rc = r3_error(-ENOMEM, "out of memory");
                break;
            }
            if (!fs_hash_eq(h, f->last[k])) {   /* a page rewritten with the same bytes: skip */
                rc = fs_conn_send(a->c, fr, ADV_QUEUE_LIMIT, -1);
                f->last[k] = h;
                blocks++;
                payload += n;
                wire += fr->len;
            }
            fs_frame_put(fr);
            fs_progress_add(&pr, n);
        }
        fs_progress_end(&pr);
    }
    if (rc == 0) {
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint8(&pk, FS_END);
        msgpack_pack_uint64(&pk, round);
        wire += b.size + 4;
        rc = send_small(a, &b);
    }
    msgpack_sbuffer_destroy(&b);
    if (a->o->stats) {
        atomic_store(&a->o->stats->last_round_bytes, wire);
        atomic_store(&a->o->stats->last_round_blocks, blocks);
        atomic_store(&a->o->stats->rounds, round);
    }
    fs_say(&a->o->report, FS_SAY_OUT, "round %llu: blocks=%llu payload=%llu wire=%llu detect=%s ms=%.1f%s",
           (unsigned long long)round, (unsigned long long)blocks, (unsigned long long)payload,
           (unsigned long long)wire, tracked ? "pagemap" : "hash",
           (double)(r3_now_ns() - t0) / 1e6, rc < 0 ? " (connection lost)" : "");
    return rc;
}

int fs_adv_run(const struct fs_adv_opts *o, atomic_int *stop, atomic_int *kick)
{
    struct adv a = { .o = o, .block = o->block ? o->block : FS_DEFAULT_BLOCK };
    if (!r3_is_pow2(a.block) || a.block < 4096 || a.block > FS_MAX_BLOCK)
        return r3_error(-EINVAL, "block size %u: must be a power of two from 4 KiB to 4 MiB", a.block);
    if (o->nfiles + o->nmaps == 0)
        return r3_error(-EINVAL, "nothing to advertise");
    struct r3_tls_ctx *ctx;
    int rc = fs_client_ctx(&o->tls, &ctx);
    if (rc < 0)
        return rc;
    pthread_mutex_init(&a.mu, NULL);
    pthread_cond_init(&a.cv, NULL);
    rc = files_open(&a);
    uint64_t next_round = r3_now_ns() + (uint64_t)o->interval_ms * 1000000u;
    struct fs_dial dial = { .hub = o->hub, .ctx = ctx, .role = "adv", .give_up_ms = o->give_up_ms,
                            .rep = &o->report, .stop = stop };
    while (rc == 0 && !*stop) {
        if (!a.c) {
            int crc = fs_dial(&dial, &a.c);
            if (crc == -EINTR)
                break;
            if (crc == 0 && (crc = start_conn(&a)) == -EPIPE) {
                fs_say(&o->report, FS_SAY_DIAG, "%s", r3_last_error());
                fs_dial_lost(&dial);
                continue;
            }
            if (crc < 0) {
                rc = crc;               /* refused, gave up, or out of resources */
                break;
            }
            fs_say(&o->report, FS_SAY_DIAG, "connected to %s", o->hub);
        }
        /* wait for a message, a kick, the interval or the connection's end */
        pthread_mutex_lock(&a.mu);
        if (!a.in && !a.io_done) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&a.cv, &a.mu, &ts);
        }
        struct inmsg *m = a.in;
        if (m) {
            a.in = m->next;
            if (!a.in)
                a.in_tail = NULL;
        }
        bool dead = a.io_done;
        pthread_mutex_unlock(&a.mu);
        int crc = 0;
        if (m) {
            if (m->type == FS_HAVE)
                crc = catchup(&a, m);
            else if (m->type == FS_ACK) {
                if (o->stats) {
                    atomic_fetch_add(&o->stats->acks, 1);
                    atomic_store(&o->stats->last_acked_round, m->round);
                }
                fs_say(&o->report, FS_SAY_OUT, "ack round=%llu receiver=%llu",
                       (unsigned long long)m->round, (unsigned long long)m->rid);
            }
            free(m);
        }
        bool due = (kick && *kick) ||
                   (o->interval_ms && r3_now_ns() >= next_round);
        if (crc == 0 && !dead && due) {
            if (kick)
                *kick = 0;
            next_round = r3_now_ns() + (uint64_t)o->interval_ms * 1000000u;
            crc = do_round(&a);
            if (o->rounds && a.round >= o->rounds) {
                fs_conn_drain(a.c, 10000);
                break;
            }
        }
        if (crc < 0 || dead) {
            fs_say(&o->report, FS_SAY_DIAG, "connection to %s lost: %s; reconnecting", o->hub,
                   a.c && a.c->err[0] ? a.c->err : r3_last_error());
            disconnect(&a);
            fs_dial_lost(&dial);
        }
    }
    if (a.c) {
        fs_conn_drain(a.c, 5000);
        disconnect(&a);
    }
    files_close(&a);
    r3_tls_ctx_free(ctx);
    pthread_mutex_destroy(&a.mu);
    pthread_cond_destroy(&a.cv);
    return rc;
}
