/* TCP endpoints for "host:port" addresses (the TLS part is src/wire/tls.c). */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include "internal.h"
#include "filesync/filesync.h"

int fs_parse_addr(const char *addr, char *host, size_t hn, int *port)
{
    const char *colon;
    size_t hl;
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (!rb || rb[1] != ':')
            return r3_error(-EINVAL, "bad address '%s' (want [v6]:port)", addr);
        hl = (size_t)(rb - addr - 1);
        addr++;
        colon = rb + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return r3_error(-EINVAL, "bad address '%s' (want host:port)", addr);
        hl = (size_t)(colon - addr);
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p <= 0 || p > 65535 || hl == 0 || hl >= hn)
        return r3_error(-EINVAL, "bad address '%s' (want host:port)", addr);
    memcpy(host, addr, hl);
    host[hl] = 0;
    *port = (int)p;
    return 0;
}

static int resolve(const char *addr, bool passive, struct addrinfo **ai)
{
    char host[256], ports[16];
    int port;
    int rc = fs_parse_addr(addr, host, sizeof host, &port);
    if (rc < 0)
        return rc;
    snprintf(ports, sizeof ports, "%d", port);
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0 };
    int g = getaddrinfo(host, ports, &hints, ai);
    return g ? r3_error(-EHOSTUNREACH, "%s: %s", addr, gai_strerror(g)) : 0;
}

int fs_tcp_connect(const char *addr, int timeout_ms)
{
    struct addrinfo *ai;
    int rc = resolve(addr, false, &ai);
    if (rc < 0)
        return rc;
    int fd = -1;
    rc = -ECONNREFUSED;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);   /* bounds connect() */
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        rc = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return r3_error(rc, "%s: connect: %s", addr, strerror(-rc));
    struct timeval zero = { 0, 0 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof zero);
    return fd;
}

int fs_tcp_listen(const char *addr)
{
    struct addrinfo *ai;
    int rc = resolve(addr, true, &ai);
    if (rc < 0)
        return rc;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        rc = -errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return r3_error(rc, "listen %s: %s", addr, strerror(-rc));
    }
    freeaddrinfo(ai);
    return fd;
}
