/* SPDX-License-Identifier: BSD-3-Clause */
/* Shared helpers of the fuzz targets (tests/fuzz/TARGET.c): a fake peer that
 * serves the current input to the code under test over a real socket, and
 * small utilities. Each target is built twice: with libFuzzer (make fuzz,
 * --enable-fuzz) and with tests/fuzz/replay.c as a check program that
 * replays the seed corpus and every input fuzzing found (tests/fuzz/regress/). */
#ifndef R3_FUZZ_H
#define R3_FUZZ_H

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_DIE(...) do { fprintf(stderr, "fuzz: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

/* The sources' retry backoffs (redis run_pieces, s3 run_xfers) sleep with
 * nanosleep: a target that includes FUZZ_NO_SLEEP makes them instant, so
 * an input that makes the client retry costs microseconds, not seconds. */
#define FUZZ_NO_SLEEP \
    int nanosleep(const struct timespec *req, struct timespec *rem) \
    { (void)req; (void)rem; sched_yield(); return 0; }

/* ---- files to remove at exit (sockets, scratch directories) */

static char fuzz_rm_paths[8][128];

static inline void fuzz_rm_all(void)
{
    for (int i = 0; i < 8; i++) {
        if (!fuzz_rm_paths[i][0])
            continue;
        if (unlink(fuzz_rm_paths[i]) < 0 && errno == EISDIR) {
            char cmd[300];
            snprintf(cmd, sizeof cmd, "rm -rf '%.200s'", fuzz_rm_paths[i]);
            if (system(cmd) != 0)
                fprintf(stderr, "fuzz: cannot remove %s\n", fuzz_rm_paths[i]);
        }
    }
}

/* Remove path (a file, a socket or a directory tree) when the process exits. */
static inline void fuzz_rm_at_exit(const char *path)
{
    static bool registered;
    for (int i = 0; i < 8; i++) {
        if (!fuzz_rm_paths[i][0]) {
            snprintf(fuzz_rm_paths[i], sizeof fuzz_rm_paths[i], "%s", path);
            break;
        }
    }
    if (!registered && atexit(fuzz_rm_all) == 0)
        registered = true;
}

/* ---- the fake peer */

/* What a connection of the fake peer does with the current input: it gets
 * the input (a private copy: the connection may outlive the input) and
 * whether it is the input's first connection. */
typedef void (*fuzz_conn_fn)(int fd, const uint8_t *data, size_t size, bool first);

struct fuzz_peer {
    int lfd;
    int port;                  /* TCP: the port; unix: 0 */
    char path[108];            /* unix: the socket path */
    fuzz_conn_fn fn;
    pthread_mutex_t mu;
    uint8_t *data;             /* the current input */
    size_t size;
    unsigned gen, served;      /* input generation; the last generation served */
    unsigned live;             /* connection threads not yet ended (under mu) */
};

struct fuzz_conn_arg {
    struct fuzz_peer *p;
    int fd;
    uint8_t *data;
    size_t size;
    bool first;
};

static inline void *fuzz_conn_main(void *arg)
{
    struct fuzz_conn_arg *a = arg;
    struct fuzz_peer *p = a->p;
    a->p->fn(a->fd, a->data, a->size, a->first);
    close(a->fd);
    free(a->data);
    free(a);
    pthread_mutex_lock(&p->mu);
    p->live--;
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static inline void *fuzz_accept_main(void *arg)
{
    struct fuzz_peer *p = arg;
    for (;;) {
        int fd = accept(p->lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL;
        }
        struct timeval tv = { 5, 0 };         /* never a hang: a stuck client is dropped */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        struct fuzz_conn_arg *a = calloc(1, sizeof *a);
        if (!a)
            FUZZ_DIE("out of memory");
        a->p = p;
        a->fd = fd;
        pthread_mutex_lock(&p->mu);
        a->first = p->served != p->gen;
        p->served = p->gen;
        a->size = p->size;
        a->data = malloc(p->size ? p->size : 1);
        if (!a->data)
            FUZZ_DIE("out of memory");
        memcpy(a->data, p->data ? p->data : (uint8_t *)"", p->size);
        p->live++;
        pthread_mutex_unlock(&p->mu);
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &at, fuzz_conn_main, a) != 0)
            FUZZ_DIE("pthread_create failed");
        pthread_attr_destroy(&at);
    }
}

/* Start a fake peer listening on 127.0.0.1 (unix_sock false) or on a unix
 * socket in /tmp; it lives until the process ends. */
static inline struct fuzz_peer *fuzz_peer_start(bool unix_sock, fuzz_conn_fn fn)
{
    struct fuzz_peer *p = calloc(1, sizeof *p);
    if (!p)
        FUZZ_DIE("out of memory");
    p->fn = fn;
    pthread_mutex_init(&p->mu, NULL);
    if (unix_sock) {
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        snprintf(p->path, sizeof p->path, "/tmp/r3fuzz-%d-%p.sock", (int)getpid(), (void *)p);
        snprintf(a.sun_path, sizeof a.sun_path, "%s", p->path);
        unlink(p->path);
        p->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&a, sizeof a) < 0)
            FUZZ_DIE("cannot bind %s: %s", p->path, strerror(errno));
        fuzz_rm_at_exit(p->path);
    } else {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof a;
        p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&a, sizeof a) < 0 ||
            getsockname(p->lfd, (struct sockaddr *)&a, &al) < 0)
            FUZZ_DIE("cannot bind 127.0.0.1: %s", strerror(errno));
        p->port = ntohs(a.sin_port);
    }
    if (listen(p->lfd, 64) < 0)
        FUZZ_DIE("listen: %s", strerror(errno));
    pthread_t t;
    if (pthread_create(&t, NULL, fuzz_accept_main, p) != 0)
        FUZZ_DIE("pthread_create failed");
    pthread_detach(t);
    return p;
}

/* Make data the input the next connections get (the first one gets first=true). */
static inline void fuzz_peer_set(struct fuzz_peer *p, const uint8_t *data, size_t size)
{
    pthread_mutex_lock(&p->mu);
    free(p->data);
    p->data = malloc(size ? size : 1);
    if (!p->data)
        FUZZ_DIE("out of memory");
    memcpy(p->data, data, size);
    p->size = size;
    p->gen++;
    pthread_mutex_unlock(&p->mu);
}

/* Wait until every connection thread has ended (its frees done), so that
 * they land in the current input (libFuzzer's leak check counts per
 * input). Call it once the client under test has closed its sockets. */
static inline void fuzz_peer_idle(struct fuzz_peer *p)
{
    for (int i = 0;; i++) {
        pthread_mutex_lock(&p->mu);
        unsigned n = p->live;
        pthread_mutex_unlock(&p->mu);
        if (n == 0)
            return;
        if (i == 10000)
            FUZZ_DIE("a fake peer's connection is still open 10 s after its client closed");
        usleep(1000);
    }
}

/* ---- socket helpers for the peers */

static inline bool fuzz_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static inline bool fuzz_read_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

/* Read and drop until the peer closes (or the receive timeout). */
static inline void fuzz_drain(int fd)
{
    char buf[4096];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
    }
}

/* A NUL-terminated copy of the input. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        FUZZ_DIE("out of memory");
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

#endif
