/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the r3sync receiver's side of its connection to the hub
 * (filesync/receive.c on filesync/conn.c): frame bounds, message decoding
 * and the state it keeps (FILE names checked and opened beneath DIR, SIZE,
 * BLK/TBLK bounds and writes, TDONE, END and its ACK, GONE, ERR). The
 * input is the hub's byte stream after the hello (fs_peer.h's fake hub, on
 * a socketpair); receive.c is compiled into this target (#include, so its
 * static message handler is reachable without TLS; nothing in it is
 * changed) and its message loop runs on a scratch DIR in /dev/shm that is
 * emptied after each input. posix_fallocate is bounded to 1 MiB here (an
 * input may announce a file of 2^50 bytes: the receiver reserves it, the
 * disk would not like that). */
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include "fs_peer.h"

int fuzz_fallocate(int fd, off_t off, off_t len);
#define posix_fallocate fuzz_fallocate
#define fs_recv_run fuzz_unused_fs_recv_run
#include "../../filesync/receive.c"
#undef posix_fallocate
#undef fs_recv_run

int fuzz_fallocate(int fd, off_t off, off_t len)
{
    if (off < 0 || len < 0 || off + len > (1 << 20))
        return ENOSPC;
    return posix_fallocate(fd, off, len);
}

static char base[128], dir[160];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (ftw->level > 0 && remove(path) < 0)
        FUZZ_DIE("cannot remove %s: %s", path, strerror(errno));
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct stat st;
    const char *tmp = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    /* a run that crashed (a finding) could not remove its directory: do it now */
    DIR *td = opendir(tmp);
    struct dirent *te;
    while (td && (te = readdir(td))) {
        int pid;
        char path[300];
        if (sscanf(te->d_name, "r3fuzz-recv-%d", &pid) == 1 && pid > 0 && kill(pid, 0) < 0 &&
            errno == ESRCH) {
            snprintf(path, sizeof path, "%s/%s", tmp, te->d_name);
            nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
            rmdir(path);
        }
    }
    if (td)
        closedir(td);
    snprintf(base, sizeof base, "%s/r3fuzz-recv-%d", tmp, (int)getpid());
    snprintf(dir, sizeof dir, "%s/d", base);
    if (mkdir(base, 0700) < 0 && errno != EEXIST)
        FUZZ_DIE("mkdir %s: %s", base, strerror(errno));
    fuzz_rm_at_exit(base);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024)
        return 0;
    struct fs_recv_opts o = { .dir = dir, .threads = 1,
                              .report = { .line = fs_fake_line } };
    struct recv r = { .o = &o };
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        FUZZ_DIE("mkdir %s: %s", dir, strerror(errno));
    r.dirfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (r.dirfd < 0)
        FUZZ_DIE("open %s: %s", dir, strerror(errno));
    pthread_mutex_init(&r.mu, NULL);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        FUZZ_DIE("out of memory");
    memcpy(copy, data, size);
    struct fs_fake_hub hub;
    r.c = fs_fake_start(&hub, copy, size);
    fs_conn_run(r.c, on_msg, &r);         /* until the hub's stream ends or a message is refused */
    fs_fake_join(&hub);
    fs_conn_free(r.c);
    while (r.files) {                     /* as fs_recv_run ends */
        struct rfile *f = r.files;
        r.files = f->next;
        if (f->fd >= 0) {
            sync_file(&r, f);
            close(f->fd);
        }
        free(f->name);
        free(f);
    }
    close(r.dirfd);
    pthread_mutex_destroy(&r.mu);
    free(copy);
    /* whatever the receiver created must be beneath dir */
    if (nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0)
        FUZZ_DIE("nftw %s: %s", dir, strerror(errno));
    DIR *d = opendir(base);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "d"))
            FUZZ_DIE("the receiver created %s/%s, outside its directory", base, e->d_name);
    if (d)
        closedir(d);
    return 0;
}
