/* SPDX-License-Identifier: BSD-3-Clause */
/* The receiver: gets every file advertised under its certificate's id,
 * writes blocks in place under DIR (never outside it: names are checked and
 * every open resolves beneath DIR), fsyncs at the end of each round and
 * acknowledges it. When it learns about a file it sends its own block hashes
 * once, so only the blocks that differ travel. A round is acknowledged only
 * once every file announced on this connection has finished that catch-up:
 * a receiver that joined mid-round (or came back after a restart) holds the
 * round's later blocks but not yet the rest of the file, and an ACK then
 * would tell the writer that the receiver holds what it does not. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <r3/thread.h>
#include "internal.h"
#include "filesync/filesync.h"

struct rfile {
    struct rfile *next;
    uint64_t fid, size;
    uint32_t block;
    char *name;
    int fd;
    bool dirty, failed;
    bool announced;            /* FILE seen on this connection (and no GONE since) */
    bool caught_up;            /* ... and its catch-up (TDONE) is done */
    uint64_t round_blocks, round_bytes, cu_bytes;
    struct fs_progress pr;
};

struct recv {
    const struct fs_recv_opts *o;
    int dirfd;
    struct rfile *files;
    struct fs_conn *c;
    pthread_mutex_t mu;
    bool io_done;
};

static int open_beneath(int dirfd, const char *path, int flags, mode_t mode)
{
    struct open_how how = { .flags = (uint64_t)flags | O_CLOEXEC | O_NOFOLLOW, .mode = mode,
                            .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS };
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}

/* Create the leading directories of name under dirfd, then the file. */
static int open_file(struct recv *r, const char *name)
{
    char *p = strdup(name);
    if (!p)
        return -ENOMEM;
    for (char *s = strchr(p, '/'); s; s = strchr(s + 1, '/')) {
        *s = 0;
        int dfd = open_beneath(r->dirfd, p, O_DIRECTORY | O_RDONLY, 0);
        if (dfd == -ENOENT) {
            if (mkdirat(r->dirfd, p, 0755) < 0 && errno != EEXIST) {
                int e = -errno;
                free(p);
                return e;
            }
            dfd = open_beneath(r->dirfd, p, O_DIRECTORY | O_RDONLY, 0);
        }
        if (dfd < 0) {
            free(p);
            return dfd;
        }
        close(dfd);
        *s = '/';
    }
    free(p);
    return open_beneath(r->dirfd, name, O_RDWR | O_CREAT, 0644);
}

#define say(r, ...) fs_say(&(r)->o->report, FS_SAY_OUT, __VA_ARGS__)

static void fail_file(struct recv *r, struct rfile *f, int err, const char *what)
{
    if (!f->failed)
        fs_say(&r->o->report, FS_SAY_DIAG, "%s: %s: %s (the file is incomplete)", f->name, what,
               strerror(-err));
    say(r, "error %s: %s: %s", f->name, what, strerror(-err));
    f->failed = true;
}

static struct rfile *find(struct recv *r, uint64_t fid)
{
    for (struct rfile *f = r->files; f; f = f->next)
        if (f->fid == fid)
            return f;
    return NULL;
}

static int send_have(struct recv *r, struct rfile *f)
{
    uint64_t nb = (f->size + f->block - 1) / f->block;
    struct fs_hash *h = malloc((nb ? nb : 1) * sizeof *h);
    if (!h)
        return r3_error(-ENOMEM, "out of memory");
    int rc = fs_hash_fd(f->fd, f->size, f->block, h, r->o->threads);
    if (rc < 0) {
        free(h);
        fail_file(r, f, rc, "read");
        return 0;
    }
    uint64_t first = 0;
    do {
        uint64_t n = nb - first < FS_HAVE_PER_MSG ? nb - first : FS_HAVE_PER_MSG;
        msgpack_sbuffer b;
        msgpack_packer pk;
        fs_msg_begin(&b, &pk, 5, FS_HAVE);
        msgpack_pack_uint64(&pk, f->fid);
        msgpack_pack_uint64(&pk, first);
        msgpack_pack_bin(&pk, (size_t)n * FS_HASH_LEN);
        msgpack_pack_bin_body(&pk, h + first, (size_t)n * FS_HASH_LEN);
        msgpack_pack_uint8(&pk, first + n >= nb);
        rc = fs_conn_send_buf(r->c, &b, 0, 0);
        msgpack_sbuffer_destroy(&b);
        first += n;
    } while (rc == 0 && first < nb);
    free(h);
    return rc;
}

static int resize(struct rfile *f, uint64_t size)
{
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return -errno;
    if ((uint64_t)st.st_size != size && ftruncate(f->fd, (off_t)size) < 0)
        return -errno;
    /* reserve the space now so a full disk is an error here, not halfway */
    if (size > (uint64_t)st.st_size) {
        int e = posix_fallocate(f->fd, 0, (off_t)size);
        if (e == ENOSPC) {
            if (ftruncate(f->fd, st.st_size) < 0) { /* best effort */ }
            return -ENOSPC;
        }
    }
    f->size = size;
    return 0;
}

static int on_file(struct recv *r, const msgpack_object *m)
{
    uint64_t fid, size, block;
    const char *name;
    uint32_t nn;
    if (!fs_msg_uint(m, 1, &fid) || !fs_msg_str(m, 2, &name, &nn) || !fs_msg_uint(m, 3, &size) ||
        !fs_msg_uint(m, 4, &block) || block < 4096 || block > FS_MAX_BLOCK || !r3_is_pow2(block) ||
        size > (1ull << 50))
        return r3_error(-EPROTO, "bad FILE message");
    if (fs_name_check(name, nn) < 0) {
        /* refuse this file, keep the others */
        fs_say(&r->o->report, FS_SAY_DIAG, "%s", r3_last_error());
        say(r, "refused %.*s", (int)(nn > 200 ? 200 : nn), name);
        return 0;
    }
    struct rfile *f = find(r, fid);
    if (!f)     /* the same name under a new id (advertiser restarted) */
        for (struct rfile *x = r->files; x; x = x->next)
            if (strlen(x->name) == nn && !memcmp(x->name, name, nn))
                f = x;
    if (!f) {
        f = calloc(1, sizeof *f);
        if (!f || !(f->name = strndup(name, nn))) {
            free(f);
            return r3_error(-ENOMEM, "out of memory");
        }
        f->fd = -1;
        f->next = r->files;
        r->files = f;
    }
    f->fid = fid;
    f->block = (uint32_t)block;
    f->failed = false;
    f->cu_bytes = 0;
    f->announced = true;
    f->caught_up = false;      /* until the TDONE that answers our HAVE */
    if (f->fd < 0) {
        f->fd = open_file(r, f->name);
        if (f->fd < 0) {
            int e = f->fd;
            f->fd = -1;
            fail_file(r, f, e, "open");
            return 0;
        }
    }
    int rc = resize(f, size);
    if (rc < 0) {
        fail_file(r, f, rc, "resize");
        return 0;
    }
    say(r, "file %s size=%llu", f->name, (unsigned long long)size);
    fs_progress_start(&f->pr, &r->o->report, f->name, size);
    return send_have(r, f);
}

static int on_block(struct recv *r, const msgpack_object *m, bool targeted)
{
    uint64_t fid, idx, rid = 0;
    const void *data;
    uint32_t n;
    uint32_t i = targeted ? 2 : 1;
    if ((targeted && !fs_msg_uint(m, 1, &rid)) || !fs_msg_uint(m, i, &fid) ||
        !fs_msg_uint(m, i + 1, &idx) || !fs_msg_bin(m, i + 2, &data, &n))
        return r3_error(-EPROTO, "bad block message");
    struct rfile *f = find(r, fid);
    if (!f || f->failed || f->fd < 0)
        return 0;
    uint64_t off = idx * f->block;
    if (idx >= (f->size + f->block - 1) / f->block ||
        n != (f->size - off < f->block ? f->size - off : f->block))
        return r3_error(-EPROTO, "block %llu of %u bytes does not fit %s", (unsigned long long)idx,
                        n, f->name);
    int rc = r3_pwrite_all(f->fd, data, n, off);
    if (rc < 0) {
        fail_file(r, f, rc, "write");
        return 0;
    }
    f->dirty = true;
    if (targeted) {
        f->cu_bytes += n;
        fs_progress_add(&f->pr, n);
    } else {
        f->round_blocks++;
        f->round_bytes += n;
    }
    return 0;
}

static int sync_file(struct recv *r, struct rfile *f)
{
    if (!f->dirty || f->failed)
        return 0;
    if (fsync(f->fd) < 0) {
        fail_file(r, f, -errno, "fsync");
        return -1;
    }
    f->dirty = false;
    return 0;
}

static int on_msg(void *arg, struct fs_conn *c, const msgpack_object *m, const unsigned char *raw,
                  size_t rawlen)
{
    struct recv *r = arg;
    uint64_t type, fid, size, round, adv;
    if (!fs_msg_uint(m, 0, &type))
        return r3_error(-EPROTO, "message without a type");
    switch (type) {
    case FS_HELLO:
        return 0;
    case FS_FILE:
        return on_file(r, m);
    case FS_SIZE: {
        if (!fs_msg_uint(m, 1, &fid) || !fs_msg_uint(m, 2, &size) || size > (1ull << 50))
            return r3_error(-EPROTO, "bad SIZE message");
        struct rfile *f = find(r, fid);
        if (f && !f->failed && f->fd >= 0) {
            int rc = resize(f, size);
            if (rc < 0)
                fail_file(r, f, rc, "resize");
            else
                say(r, "resized %s size=%llu", f->name, (unsigned long long)size);
        }
        return 0;
    }
    case FS_BLK:
    case FS_TBLK:
        return on_block(r, m, type == FS_TBLK);
    case FS_TDONE: {
        if (!fs_msg_uint(m, 2, &fid))
            return r3_error(-EPROTO, "bad TDONE message");
        struct rfile *f = find(r, fid);
        if (!f)
            return 0;
        fs_progress_end(&f->pr);
        f->caught_up = true;
        if (sync_file(r, f) == 0 && !f->failed)
            say(r, "synced %s bytes=%llu", f->name, (unsigned long long)f->cu_bytes);
        return 0;
    }
    case FS_END: {
        if (!fs_msg_uint(m, 1, &round) || !fs_msg_uint(m, 2, &adv))
            return r3_error(-EPROTO, "bad END message");
        uint64_t blocks = 0, bytes = 0;
        bool ok = true, behind = false;
        for (struct rfile *f = r->files; f; f = f->next) {
            sync_file(r, f);
            ok = ok && !f->failed;
            behind = behind || (f->announced && !f->caught_up);
            blocks += f->round_blocks;
            bytes += f->round_bytes;
            f->round_blocks = f->round_bytes = 0;
        }
        if (!ok || behind) {
            say(r, "round %llu incomplete%s", (unsigned long long)round,
                ok ? " (catching up)" : "");
            return 0;
        }
        say(r, "round %llu done blocks=%llu bytes=%llu", (unsigned long long)round,
            (unsigned long long)blocks, (unsigned long long)bytes);
        msgpack_sbuffer b;
        msgpack_packer pk;
        fs_msg_begin(&b, &pk, 3, FS_ACK);
        msgpack_pack_uint64(&pk, round);
        msgpack_pack_uint64(&pk, adv);
        int rc = fs_conn_send_buf(c, &b, 0, 0);
        msgpack_sbuffer_destroy(&b);
        return rc;
    }
    case FS_GONE: {
        struct rfile *f = fs_msg_uint(m, 1, &fid) ? find(r, fid) : NULL;
        if (f) {
            f->announced = false;      /* its advertiser's rounds are over */
            say(r, "gone %s", f->name);
        }
        return 0;
    }
    case FS_ERR: {
        const char *s;
        uint32_t n;
        if (fs_msg_str(m, 1, &s, &n))
            return r3_error(-EPROTO, "the hub refused: %.*s", (int)(n > 300 ? 300 : n), s);
        return r3_error(-EPROTO, "the hub refused");
    }
    default:
        return 0;
    }
}



int fs_recv_run(const struct fs_recv_opts *o, atomic_int *stop)
{
    struct recv r = { .o = o };
    struct r3_tls_ctx *ctx;
    int rc = fs_client_ctx(&o->tls, &ctx);
    if (rc < 0)
        return rc;
    if (mkdir(o->dir, 0755) < 0 && errno != EEXIST) {
        r3_tls_ctx_free(ctx);
        return r3_error(-errno, "%s: %s", o->dir, strerror(errno));
    }
    r.dirfd = open(o->dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (r.dirfd < 0) {
        rc = r3_error(-errno, "%s: %s", o->dir, strerror(errno));
        r3_tls_ctx_free(ctx);
        return rc;
    }
    pthread_mutex_init(&r.mu, NULL);
    struct fs_dial dial = { .hub = o->hub, .ctx = ctx, .role = "recv", .give_up_ms = o->give_up_ms,
                            .rep = &o->report, .stop = stop };
    while (!*stop) {
        rc = fs_dial(&dial, &r.c);
        if (rc < 0)
            break;                  /* stopped, refused or gave up */
        fs_say(&o->report, FS_SAY_DIAG, "connected to %s", o->hub);
        /* the hub's id for this connection: the advertiser's "ack ...
         * receiver=ID" lines name it */
        say(&r, "connected receiver=%llu", (unsigned long long)r.c->id);
        r.io_done = false;
        struct fs_reader rd = { .c = r.c, .fn = on_msg, .arg = &r, .mu = &r.mu, .done = &r.io_done };
        rc = fs_reader_start(&rd);
        if (rc < 0) {
            fs_conn_free(r.c);
            break;
        }
        for (;;) {
            pthread_mutex_lock(&r.mu);
            bool done = r.io_done;
            pthread_mutex_unlock(&r.mu);
            if (done || *stop)
                break;
            usleep(50000);
        }
        fs_conn_kill(r.c, "closing");
        pthread_join(rd.t, NULL);
        if (!*stop)
            fs_say(&o->report, FS_SAY_DIAG, "connection to %s lost: %s; reconnecting", o->hub,
                   r.c->err);
        fs_conn_free(r.c);
        r.c = NULL;
        /* blocks may have been lost with the connection: the next one
         * announces the files again and catches them up */
        for (struct rfile *f = r.files; f; f = f->next)
            f->announced = f->caught_up = false;
        fs_dial_lost(&dial);
        rc = 0;
    }
    if (*stop)
        rc = 0;             /* a failed dial while stopping is no error */
    while (r.files) {
        struct rfile *f = r.files;
        r.files = f->next;
        if (f->fd >= 0) {
            sync_file(&r, f);
            close(f->fd);
        }
        free(f->name);
        free(f);
    }
    r3_tls_ctx_free(ctx);
    close(r.dirfd);
    pthread_mutex_destroy(&r.mu);
    return rc;
}
