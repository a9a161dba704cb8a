/* SPDX-License-Identifier: BSD-3-Clause */
/* The one address parser: HOST:PORT, [V6]:PORT, unix:PATH; resolving,
 * the loopback test a server needs before listening without TLS, and the
 * formatting every log line uses. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include "internal.h"
#include "net/net.h"

static int bad(const char *spec, const char *why)
{
    return r3_error(-EINVAL, "bad address '%s': %s", spec, why);
}

/* Port digits only, 1..65535 (0 when passive). */
static int parse_port(const char *spec, const char *p, unsigned flags, int *port)
{
    if (!*p)
        return bad(spec, "the port is missing (HOST:PORT)");
    unsigned long v = 0;
    for (const char *q = p; *q; q++) {
        if (*q < '0' || *q > '9')
            return r3_error(-EINVAL, "bad address '%s': port '%s' is not a number", spec, p);
        v = v * 10 + (unsigned long)(*q - '0');
        if (v > 65535)
            return r3_error(-EINVAL, "bad address '%s': port %s is out of range (1 to 65535)", spec, p);
    }
    if (v == 0 && !(flags & R3_NET_PASSIVE))
        return bad(spec, "port 0 is only for listening (1 to 65535)");
    *port = (int)v;
    return 0;
}

int r3_net_addr_parse(const char *spec, int default_port, unsigned flags, struct r3_net_addr *a)
{
    memset(a, 0, sizeof *a);
    if (!spec || !*spec)
        return r3_error(-EINVAL, "bad address '': expected HOST:PORT, [IPv6]:PORT or unix:PATH");
    if (strncmp(spec, "unix:", 5) == 0) {
        const char *path = spec + 5;
        if (!*path)
            return bad(spec, "the socket path is empty (unix:PATH)");
        if (strlen(path) >= sizeof a->path)
            return r3_error(-EINVAL, "bad address '%s': the socket path is longer than %zu bytes", spec,
                            sizeof a->path - 1);
        a->kind = R3_NET_UNIX;
        strcpy(a->path, path);
        return 0;
    }
    a->kind = R3_NET_TCP;
    const char *host = spec, *port = NULL;
    size_t hl;
    if (spec[0] == '[') {
        const char *rb = strchr(spec, ']');
        if (!rb)
            return bad(spec, "missing ']' after an IPv6 address");
        host = spec + 1;
        hl = (size_t)(rb - host);
        if (rb[1] == ':')
            port = rb + 2;
        else if (rb[1])
            return bad(spec, "expected ':PORT' after ']'");
        struct in6_addr tmp;
        char h6[INET6_ADDRSTRLEN + 1];
        if (hl == 0 || hl >= sizeof h6)
            return bad(spec, "not an IPv6 address inside []");
        memcpy(h6, host, hl);
        h6[hl] = 0;
        if (inet_pton(AF_INET6, h6, &tmp) != 1)
            return bad(spec, "not an IPv6 address inside []");
    } else {
        const char *colon = strrchr(spec, ':');
        if (colon && strchr(spec, ':') != colon)
            return bad(spec, "an IPv6 address needs brackets ([::1]:PORT)");
        hl = colon ? (size_t)(colon - spec) : strlen(spec);
        if (colon)
            port = colon + 1;
    }
    if (hl == 0)
        return bad(spec, "the host is missing (HOST:PORT; 0.0.0.0 or [::] for every interface)");
    if (hl >= sizeof a->host)
        return bad(spec, "the host name is too long");
    for (size_t i = 0; i < hl; i++)
        if ((unsigned char)host[i] <= ' ' || host[i] == '/' || host[i] == '@')
            return bad(spec, "the host has a character a host name cannot have");
    memcpy(a->host, host, hl);
    a->host[hl] = 0;
    if (port)
        return parse_port(spec, port, flags, &a->port);
    if (default_port > 0) {
        a->port = default_port;
        return 0;
    }
    return bad(spec, "the port is missing (HOST:PORT)");
}

int r3_net_addr_resolve(const struct r3_net_addr *a, bool passive, struct addrinfo **out)
{
    char port[16], ab[300];
    if (a->kind != R3_NET_TCP)
        return r3_error(-EINVAL, "%s: not a TCP address", r3_net_addr_format(a, ab, sizeof ab));
    snprintf(port, sizeof port, "%d", a->port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0) };
    int g = getaddrinfo(a->host, port, &hints, out);
    if (g)
        return r3_error(-EHOSTUNREACH, "%s: cannot resolve host '%s': %s",
                        r3_net_addr_format(a, ab, sizeof ab), a->host,
                        g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
    return 0;
}

static bool sa_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a6))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127;
    }
    return sa->sa_family == AF_UNIX;
}

bool r3_net_addr_is_loopback(const struct r3_net_addr *a)
{
    if (a->kind == R3_NET_UNIX)
        return true;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
    if (getaddrinfo(a->host, NULL, &hints, &ai) != 0)
        return false;
    bool all = ai != NULL;
    for (struct addrinfo *p = ai; p; p = p->ai_next)
        all = all && sa_loopback(p->ai_addr);
    freeaddrinfo(ai);
    return all;
}

const char *r3_net_addr_format(const struct r3_net_addr *a, char *buf, size_t n)
{
    if (a->kind == R3_NET_UNIX)
        snprintf(buf, n, "unix:%s", a->path);
    else
        snprintf(buf, n, strchr(a->host, ':') ? "[%s]:%d" : "%s:%d", a->host, a->port);
    return buf;
}

const char *r3_net_sockaddr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t n)
{
    char hb[INET6_ADDRSTRLEN], pb[16];
    if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *su = (const struct sockaddr_un *)sa;
        if (len > offsetof(struct sockaddr_un, sun_path) && su->sun_path[0])
            snprintf(buf, n, "unix:%.*s", (int)(len - offsetof(struct sockaddr_un, sun_path)), su->sun_path);
        else
            snprintf(buf, n, "unix");
    } else if (getnameinfo(sa, len, hb, sizeof hb, pb, sizeof pb, NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
        snprintf(buf, n, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", hb, pb);
    } else {
        snprintf(buf, n, "?");
    }
    return buf;
}

const char *r3_net_peer_name(int fd, char *buf, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(buf, n, "?");
        return buf;
    }
    if (ss.ss_family == AF_UNIX) {
        snprintf(buf, n, "unix");
        return buf;
    }
    return r3_net_sockaddr_format((struct sockaddr *)&ss, sl, buf, n);
}
