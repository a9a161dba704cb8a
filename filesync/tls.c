/* TLS for filesync: contexts with mutual authentication and a TCP connect
 * with a handshake timeout. The client certificate's CN is the sync id. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include "internal.h"
#include "filesync/filesync.h"

static int ssl_fail(int err, const char *what, const char *arg)
{
    char e[256];
    unsigned long code = ERR_get_error();
    ERR_error_string_n(code, e, sizeof e);
    ERR_clear_error();
    return r3_error(err, "%s%s%s: %s", what, arg ? " " : "", arg ? arg : "",
                    code ? e : "failed");
}

int fs_tls_ctx(const struct fs_tls_opts *o, bool server, SSL_CTX **out)
{
    *out = NULL;
    if (!o->cert || !o->key || !o->ca)
        return r3_error(-EINVAL, "TLS needs a certificate, a key and a CA (mTLS only)");
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx)
        return ssl_fail(-ENOMEM, "TLS context", NULL);
    int rc = 0;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1)
        rc = ssl_fail(-EINVAL, "cannot load certificate", o->cert);
    else if (SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1)
        rc = ssl_fail(-EINVAL, "cannot load key", o->key);
    else if (SSL_CTX_check_private_key(ctx) != 1)
        rc = ssl_fail(-EINVAL, "key does not match certificate", o->cert);
    else if (SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1)
        rc = ssl_fail(-EINVAL, "cannot load CA", o->ca);
    if (rc < 0) {
        SSL_CTX_free(ctx);
        return rc;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    *out = ctx;
    return 0;
}

int fs_tls_peer_cn(SSL *ssl, char *cn, size_t n)
{
    X509 *peer = SSL_get1_peer_certificate(ssl);
    if (!peer)
        return r3_error(-EACCES, "no client certificate");
    if (SSL_get_verify_result(ssl) != X509_V_OK) {
        X509_free(peer);
        return r3_error(-EACCES, "client certificate not verified");
    }
    int len = X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, (int)n);
    X509_free(peer);
    if (len <= 0 || (size_t)len >= n || strlen(cn) != (size_t)len)
        return r3_error(-EACCES, "client certificate has no usable common name");
    return 0;
}

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

static void set_timeouts(int fd, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int fs_tls_connect(SSL_CTX *ctx, const char *addr, int timeout_ms, int *fd_out, SSL **ssl_out)
{
    char host[256], ports[16];
    int port;
    int rc = fs_parse_addr(addr, host, sizeof host, &port);
    if (rc < 0)
        return rc;
    snprintf(ports, sizeof ports, "%d", port);
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
    int g = getaddrinfo(host, ports, &hints, &ai);
    if (g)
        return r3_error(-EHOSTUNREACH, "%s: %s", addr, gai_strerror(g));
    int fd = -1;
    rc = -ECONNREFUSED;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        set_timeouts(fd, timeout_ms);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            rc = 0;
            break;
        }
        rc = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return r3_error(rc, "%s: connect: %s", addr, strerror(-rc));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    SSL *ssl = SSL_new(ctx);
    if (!ssl) {
        close(fd);
        return ssl_fail(-ENOMEM, "TLS", NULL);
    }
    /* Check the hub's certificate names the address we dialled. */
    X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
    if (X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1) {
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        SSL_set1_host(ssl, host);
        SSL_set_tlsext_host_name(ssl, host);
    }
    ERR_clear_error();
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        long v = SSL_get_verify_result(ssl);
        rc = v != X509_V_OK
            ? r3_error(-EACCES, "%s: hub certificate: %s", addr, X509_verify_cert_error_string(v))
            : ssl_fail(-ECONNRESET, "TLS handshake with", addr);
        SSL_free(ssl);
        close(fd);
        return rc;
    }
    set_timeouts(fd, 0);
    *fd_out = fd;
    *ssl_out = ssl;
    return 0;
}
