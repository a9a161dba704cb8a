/* SPDX-License-Identifier: BSD-3-Clause */
/* kvmigrate-load: a client of kvmigrate that keeps writing and reading and
 * follows the table when it moves (MOVED, or the old server gone: try the
 * next address). At the end it reads back every write the servers
 * acknowledged, from the last server, and says how many were lost and the
 * longest time it waited for an answer (the downtime a client sees).
 *
 *   kvmigrate-load --servers 127.0.0.1:7000,127.0.0.1:7001 --duration 5s
 *
 * Exit: 0 nothing lost, 1 acknowledged writes lost or wrong, 2 usage,
 * 3 no server answered. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
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

static const char *prog = "kvmigrate-load";
static char *servers[8];
static int nservers, cur, fd = -1;
static char rbuf[4096];
static size_t rhave;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
}

static int dial(const char *addr)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
        return -1;
    int s = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (s >= 0 && connect(s, ai->ai_addr, ai->ai_addrlen) < 0) {
        close(s);
        s = -1;
    }
    freeaddrinfo(ai);
    if (s >= 0)
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return s;
}

/* One request, one answer line; -1 if the connection failed. */
static int roundtrip(const char *req, char *ans, size_t n)
{
    if (fd < 0 && (fd = dial(servers[cur])) < 0)
        return -1;
    size_t len = strlen(req);
    if (write(fd, req, len) != (ssize_t)len)
        goto broken;
    for (;;) {
        char *nl = memchr(rbuf, '\n', rhave);
        if (nl) {
            size_t l = (size_t)(nl - rbuf);
            snprintf(ans, n, "%.*s", (int)l, rbuf);
            memmove(rbuf, nl + 1, rhave - l - 1);
            rhave -= l + 1;
            return 0;
        }
        ssize_t r = read(fd, rbuf + rhave, sizeof rbuf - rhave);
        if (r <= 0)
            goto broken;
        rhave += (size_t)r;
    }
broken:
    close(fd);
    fd = -1;
    rhave = 0;
    return -1;
}

/* Send until a server answers something other than MOVED; moves on to the
 * next server on MOVED or a dead connection. */
static int request(const char *req, char *ans, size_t n, uint64_t give_up_us)
{
    uint64_t end = now_us() + give_up_us;
    while (now_us() < end) {
        ans[0] = 0;
        if (roundtrip(req, ans, n) == 0 && strcmp(ans, "MOVED") != 0)
            return 0;
        if (cur + 1 < nservers && (fd < 0 || strcmp(ans, "MOVED") == 0)) {
            if (fd >= 0) {
                close(fd);
                fd = -1;
                rhave = 0;
            }
            cur++;
        }
        usleep(1000);
    }
    return -1;
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "%s: %s\nTry '%s --help' for more information.\n", prog, msg, prog);
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "servers", required_argument, NULL, 's' }, { "duration", required_argument, NULL, 'd' },
        { "help", no_argument, NULL, 'h' }, { "version", no_argument, NULL, 'V' }, { NULL, 0, NULL, 0 },
    };
    char *list = NULL;
    uint64_t dur_ms = 5000;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "s:d:hV", opts, NULL)) != -1) {
        switch (c) {
        case 's': list = optarg; break;
        case 'd': {
            char *e;
            double v = strtod(optarg, &e);
            double mul = strcmp(e, "ms") == 0 ? 1 : strcmp(e, "s") == 0 ? 1000 : strcmp(e, "m") == 0 ? 60000 : -1;
            if (e == optarg || mul < 0 || v <= 0)
                return usage_error("--duration needs a number with a unit (ms, s, m)");
            dur_ms = (uint64_t)(v * mul);
            break;
        }
        case 'h':
            printf("Usage: kvmigrate-load --servers ADDR[,ADDR...] [--duration DUR]\n"
                   "Writes and reads kvmigrate keys, following the table when it moves, then checks\n"
                   "every acknowledged write on the last server.\n\n"
                   "  -s, --servers LIST  the old server first, then where the table moves\n"
                   "  -d, --duration DUR  how long to write (5s)\n"
                   "  -h, --help          this text\n"
                   "  -V, --version       the version\n");
            return 0;
        case 'V': printf("kvmigrate-load (r3) %s\n", R3_VERSION); return 0;
        default: return usage_error("unknown or incomplete option");
        }
    }
    if (!list)
        return usage_error("--servers is required");
    for (char *t = strtok(list, ","); t && nservers < 8; t = strtok(NULL, ","))
        servers[nservers++] = t;
    char req[256], ans[256];
    uint64_t acked = 0, attempts = 0, worst = 0, t_end = now_us() + dur_ms * 1000, bad = 0;
    int first_server = cur;
    for (uint64_t i = 0; now_us() < t_end; i++) {
        snprintf(req, sizeof req, "SET k%" PRIu64 " v%" PRIu64 "x%" PRIu64 "\n", i, i, i * 7);
        uint64_t t0 = now_us();
        attempts++;
        if (request(req, ans, sizeof ans, 10000000) < 0) {
            fprintf(stderr, "%s: no server answered for 10 s (at write %" PRIu64 ")\n", prog, i);
            return 3;
        }
        uint64_t dt = now_us() - t0;
        if (dt > worst)
            worst = dt;
        if (strcmp(ans, "OK") != 0) {
            fprintf(stderr, "%s: SET k%" PRIu64 ": %s\n", prog, i, ans);
            return 1;
        }
        acked = i + 1;
        if (i % 16 == 15) {          /* read an earlier key back */
            uint64_t j = (i * 2654435761u) % (i + 1);
            snprintf(req, sizeof req, "GET k%" PRIu64 "\n", j);
            if (request(req, ans, sizeof ans, 10000000) < 0)
                return 3;
            char want[128];
            snprintf(want, sizeof want, "VALUE v%" PRIu64 "x%" PRIu64, j, j * 7);
            if (strcmp(ans, want) != 0) {
                fprintf(stderr, "%s: GET k%" PRIu64 ": %s (wanted %s)\n", prog, j, ans, want);
                bad++;
            }
        }
    }
    /* every acknowledged write, from where the table is now */
    uint64_t lost = 0;
    for (uint64_t j = 0; j < acked; j++) {
        snprintf(req, sizeof req, "GET k%" PRIu64 "\n", j);
        if (request(req, ans, sizeof ans, 10000000) < 0)
            return 3;
        char want[128];
        snprintf(want, sizeof want, "VALUE v%" PRIu64 "x%" PRIu64, j, j * 7);
        if (strcmp(ans, want) != 0) {
            if (lost++ < 5)
                fprintf(stderr, "%s: acknowledged k%" PRIu64 " reads %s\n", prog, j, ans);
        }
    }
    printf("writes=%" PRIu64 " acked=%" PRIu64 " lost=%" PRIu64 " wrong_reads=%" PRIu64
           " max_wait_ms=%.2f moved=%d server=%s\n", attempts, acked, lost, bad, (double)worst / 1000,
           cur != first_server, servers[cur]);
    return lost || bad ? 1 : 0;
}
