/* SPDX-License-Identifier: BSD-3-Clause */
/* kvmigrate: a small key-value server whose table lives in an r3 region,
 * moved to another host while clients keep using it (libr3 API only).
 *
 *   kvmigrate --listen 127.0.0.1:7000 --seed 127.0.0.1:7100        (host A)
 *   kvmigrate --listen 127.0.0.1:7001 --leech r3://127.0.0.1:7100/  (host B)
 *
 * A serves its table and seeds the region. B leeches it (the pull runs
 * while A keeps serving), finalizes - A's before_finalize hook stops taking
 * requests, answering "MOVED" - then listens and serves the same table;
 * A exits once B holds every chunk (RELEASE).
 *
 * Protocol, one line each way:  SET key value -> OK | ERR why | MOVED
 *                                GET key       -> VALUE value | NONE | MOVED
 * Keys up to 47 bytes, values up to 63, no spaces. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <r3/r3.h>

#define KEYMAX 48
#define VALMAX 64
#define MAGIC 0x6b766d6967723301ull

struct slot { uint32_t used, pad[3]; char key[KEYMAX]; char val[VALMAX]; };   /* 128 bytes */
struct table { uint64_t magic, nslots, count, pad[13]; struct slot s[]; };

static struct table *T;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static bool frozen;                 /* A after before_finalize: answer MOVED */
static const char *prog = "kvmigrate";

static uint64_t hash(const char *k)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *k; k++)
        h = (h ^ (uint8_t)*k) * 0x100000001b3ull;
    return h;
}

static struct slot *find(const char *key, bool create)
{
    for (uint64_t i = hash(key) % T->nslots, n = 0; n < T->nslots; n++, i = (i + 1) % T->nslots) {
        struct slot *s = &T->s[i];
        if (!s->used) {
            if (!create)
                return NULL;
            s->used = 1;
            snprintf(s->key, sizeof s->key, "%s", key);
            T->count++;
            return s;
        }
        if (strcmp(s->key, key) == 0)
            return s;
    }
    return NULL;
}

static void answer(char *line, char *out, size_t n)
{
    char cmd[8], key[256], val[256];
    int k = sscanf(line, "%7s %255s %255s", cmd, key, val);
    pthread_mutex_lock(&mu);
    if (frozen) {
        snprintf(out, n, "MOVED\n");
    } else if (k >= 2 && strlen(key) >= KEYMAX) {
        snprintf(out, n, "ERR key too long\n");
    } else if (k == 3 && strcmp(cmd, "SET") == 0) {
        struct slot *s = strlen(val) < VALMAX ? find(key, true) : NULL;
        if (s)
            snprintf(s->val, sizeof s->val, "%s", val);
        snprintf(out, n, s ? "OK\n" : "ERR value too long or table full\n");
    } else if (k == 2 && strcmp(cmd, "GET") == 0) {
        struct slot *s = find(key, false);
        if (s)
            snprintf(out, n, "VALUE %s\n", s->val);
        else
            snprintf(out, n, "NONE\n");
    } else {
        snprintf(out, n, "ERR expected SET key value or GET key\n");
    }
    pthread_mutex_unlock(&mu);
}

static void *client_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[1024], out[256];
    size_t have = 0;
    for (;;) {
        ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
        if (r <= 0)
            break;
        have += (size_t)r;
        buf[have] = 0;
        char *nl;
        while ((nl = memchr(buf, '\n', have))) {
            *nl = 0;
            answer(buf, out, sizeof out);
            size_t len = strlen(out);
            if (write(fd, out, len) != (ssize_t)len)
                goto done;
            size_t used = (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, have - used);
            have -= used;
        }
        if (have == sizeof buf - 1)
            break;                  /* a line too long: drop the client */
    }
done:
    close(fd);
    return NULL;
}

static int listen_on(const char *addr)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof host)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        freeaddrinfo(ai);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    freeaddrinfo(ai);
    return fd;
}

static void *accept_main(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t;
        if (pthread_create(&t, NULL, client_main, (void *)(intptr_t)fd) != 0)
            close(fd);
        else
            pthread_detach(t);
    }
    return NULL;
}

/* A's hook: stop taking requests; those in progress finish first (they hold mu). */
static int before_finalize(void *arg, struct r3_region *r)
{
    (void)arg;
    (void)r;
    pthread_mutex_lock(&mu);
    frozen = true;
    pthread_mutex_unlock(&mu);
    return 0;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "%s: %s\nTry '%s --help' for more information.\n", prog, msg, prog);
    return 2;
}

static void help(void)
{
    printf("Usage: kvmigrate --listen HOST:PORT [--seed HOST:PORT] [--source URI]\n"
           "       kvmigrate --listen HOST:PORT --leech r3://HOST:PORT/\n"
           "A key-value server whose table lives in an r3 region, movable to another host.\n\n"
           "  -l, --listen ADDR   serve clients here (SET key value / GET key, one per line)\n"
           "  -s, --seed ADDR     let a new instance take the table over from here (r3 protocol)\n"
           "      --source URI    the region's source on a first instance (default mem:?size=64M)\n"
           "  -L, --leech URI     take the table over from a seeding instance, then serve\n"
           "  -h, --help          this text\n"
           "  -V, --version       the version\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "listen", required_argument, NULL, 'l' }, { "seed", required_argument, NULL, 's' },
        { "source", required_argument, NULL, 'S' }, { "leech", required_argument, NULL, 'L' },
        { "help", no_argument, NULL, 'h' }, { "version", no_argument, NULL, 'V' }, { NULL, 0, NULL, 0 },
    };
    const char *listen_addr = NULL, *seed = NULL, *source = "mem:?size=64M", *leech = NULL;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "l:s:L:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'l': listen_addr = optarg; break;
        case 's': seed = optarg; break;
        case 'S': source = optarg; break;
        case 'L': leech = optarg; break;
        case 'h': help(); return 0;
        case 'V': printf("kvmigrate (r3) %s\n", R3_VERSION); return 0;
        default: {
            char m[128];
            snprintf(m, sizeof m, "unknown or incomplete option '%s'", argv[optind - 1]);
            return usage_error(m);
        }
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument");
    if (!listen_addr)
        return usage_error("--listen is required");
    if (seed && leech)
        return usage_error("--seed and --leech exclude each other (seed after a move: not yet)");

    struct r3_region *r = NULL;
    if (leech) {
        uint64_t t0 = now_us();
        if (r3_leech_open(leech, NULL, &r) < 0) {
            fprintf(stderr, "%s: %s\n", prog, r3_last_error());
            return 1;
        }
        struct r3_leech_progress p;
        do {
            usleep(2000);
            r3_leech_progress(r, &p);
        } while (!p.error && p.chunks_local < p.chunks_total);
        uint64_t t1 = now_us();
        if (r3_leech_finalize(r) < 0) {
            fprintf(stderr, "%s: %s\n", prog, r3_last_error());
            return 1;
        }
        r3_leech_progress(r, &p);
        T = r->base;
        if (T->magic != MAGIC) {
            fprintf(stderr, "%s: the leeched region holds no table\n", prog);
            return 1;
        }
        fprintf(stderr, "%s: pulled %" PRIu64 " chunks in %.1f ms; finalized (%" PRIu64 " dirty) in %.2f ms\n",
                prog, p.chunks_total, (double)(t1 - t0) / 1000, p.chunks_dirty, (double)p.finalize_ns / 1e6);
    } else {
        struct r3_source *src;
        struct r3_region_opts o;
        r3_region_opts_init(&o);
        if (r3_source_open(source, &src) < 0 || r3_region_open(&o, src, &r) < 0) {
            fprintf(stderr, "%s: %s\n", prog, r3_last_error());
            return 1;
        }
        T = r->base;
        if (T->magic != MAGIC) {
            T->nslots = (r->len - sizeof *T) / sizeof(struct slot);
            T->magic = MAGIC;
        }
    }
    int lfd = listen_on(listen_addr);
    if (lfd < 0) {
        fprintf(stderr, "%s: cannot listen on %s: %s\n", prog, listen_addr, strerror(errno));
        return 1;
    }
    /* the count is read before any client thread can change it */
    fprintf(stderr, "%s: serving %" PRIu64 " keys on %s\n", prog, T->count, listen_addr);
    pthread_t acc;
    if (pthread_create(&acc, NULL, accept_main, (void *)(intptr_t)lfd) != 0) {
        fprintf(stderr, "%s: cannot start the accept thread\n", prog);
        return 1;
    }
    pthread_detach(acc);             /* it runs until the process ends */
    if (leech) {
        /* the rest arrives in the background; then the old instance may go */
        int rc = r3_leech_wait(r);
        fprintf(stderr, "%s: %s\n", prog, rc == 0 ? "every chunk is local; the old instance is released"
                                                 : r3_last_error());
        if (rc < 0)
            return 1;
        pause();
    } else if (seed) {
        struct r3_seed_opts so;
        r3_seed_opts_init(&so);
        so.listen = seed;
        so.before_finalize = before_finalize;
        struct r3_seeder *s;
        if (r3_seed_open(r, &so, &s) < 0) {
            fprintf(stderr, "%s: %s\n", prog, r3_last_error());
            return 1;
        }
        r3_seed_wait(s, 0);
        fprintf(stderr, "%s: the table moved (RELEASE); exiting\n", prog);
        r3_seed_close(s);
        shutdown(lfd, SHUT_RDWR);
        _exit(0);                     /* client threads may still be parked in read() */
    } else {
        pause();
    }
    return 0;
}
