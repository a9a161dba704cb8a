/* r3serve: serve a source over the r3 protocol (r3://, r3s://).
 * Option parsing fills struct opts; listen_on() makes the listening socket;
 * serve_loop() accepts and hands each connection to a protocol handler
 * (today the r3 wire server; an --nbd handler plugs in at handle_conn). */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <r3/r3.h>
#include <r3/wire.h>
#include "wire/tls.h"
#include "nbd/server.h"

struct opts {
    const char *listen, *source, *export_name;
    const char *tls_cert, *tls_key, *tls_ca;
    bool read_only;
    uint64_t max_request;
    unsigned workers;
    const char *nbd, *tls_psk;    /* --nbd ADDR: also serve NBD there */
    bool tls_required;
    unsigned nbd_workers;
    uint64_t delay_us;            /* --delay-us: a delay stage over the source */
};

struct server {
    struct opts o;
    int lfd;
    char *unix_path;          /* to unlink at exit */
    struct r3_source *src;
    struct r3_tls_ctx *tls;
    struct r3_wire_server *wire;
    struct r3_nbd_server *nbd;
};

static void usage(FILE *f)
{
    fprintf(f,
        "usage: r3serve --listen HOST:PORT|unix:PATH --source URI [options]\n"
        "Serve a source over the r3 protocol (clients open r3://HOST:PORT/EXPORT, r3s:// with TLS).\n"
        "  -l, --listen ADDR        HOST:PORT (IPv4, [IPv6] or a name; port 0 picks a free one)\n"
        "                           or unix:PATH\n"
        "  -s, --source URI         the source to serve (mem:, file://, dir://, redis://, ...)\n"
        "  -e, --export NAME        clients must ask for this export (default: any name is accepted)\n"
        "  -r, --read-only          refuse writes\n"
        "      --tls-cert FILE      serve TLS with this PEM certificate (chain)\n"
        "      --tls-key FILE       ... and this PEM private key\n"
        "      --tls-ca FILE        require client certificates signed by this CA (mTLS)\n"
        "      --max-request SIZE   largest read/write accepted (default 32M, at most 1G)\n"
        "  -w, --workers N          threads running requests (default 8)\n"
        "      --nbd ADDR           also serve the source over NBD (fixed newstyle) on ADDR:\n"
        "                           HOST:PORT or unix:PATH; --listen becomes optional; the\n"
        "                           NBD export is --export NAME (default \"\"); --tls-cert/--tls-key\n"
        "                           (and --tls-ca: client certificates) enable NBD STARTTLS\n"
        "      --tls-psk FILE       NBD: TLS with pre-shared keys (\"identity:hexkey\" lines)\n"
        "      --tls-required       NBD: refuse clients that do not STARTTLS\n"
        "      --nbd-workers N      NBD: request threads per connection (default 4)\n"
        "      --delay-us US        add US microseconds to every source request (RTT injection)\n"
        "  -h, --help               this text\n");
}

static void log_line(void *arg, const char *line)
{
    (void)arg;
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    fprintf(stderr, "r3serve: %s %s\n", ts, line);
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    enum { O_CERT = 256, O_KEY, O_CA, O_MAXREQ, O_NBD, O_PSK, O_TLSREQ, O_NBDW, O_DELAY };
    static const struct option lo[] = {
        { "listen", required_argument, NULL, 'l' },
        { "source", required_argument, NULL, 's' },
        { "export", required_argument, NULL, 'e' },
        { "read-only", no_argument, NULL, 'r' },
        { "tls-cert", required_argument, NULL, O_CERT },
        { "tls-key", required_argument, NULL, O_KEY },
        { "tls-ca", required_argument, NULL, O_CA },
        { "max-request", required_argument, NULL, O_MAXREQ },
        { "workers", required_argument, NULL, 'w' },
        { "nbd", required_argument, NULL, O_NBD },
        { "tls-psk", required_argument, NULL, O_PSK },
        { "tls-required", no_argument, NULL, O_TLSREQ },
        { "nbd-workers", required_argument, NULL, O_NBDW },
        { "delay-us", required_argument, NULL, O_DELAY },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "l:s:e:rw:h", lo, NULL)) != -1) {
        switch (c) {
        case 'l': o->listen = optarg; break;
        case 's': o->source = optarg; break;
        case 'e': o->export_name = optarg; break;
        case 'r': o->read_only = true; break;
        case O_CERT: o->tls_cert = optarg; break;
        case O_KEY: o->tls_key = optarg; break;
        case O_CA: o->tls_ca = optarg; break;
        case O_MAXREQ:
            if (r3_parse_size(optarg, &o->max_request) < 0 || o->max_request < 4096 ||
                o->max_request > (1u << 30)) {
                fprintf(stderr, "r3serve: bad --max-request '%s' (a size between 4K and 1G)\n", optarg);
                return -1;
            }
            break;
        case 'w': {
            unsigned long v = strtoul(optarg, &end, 10);
            if (*end || v == 0 || v > 1024) {
                fprintf(stderr, "r3serve: bad --workers '%s' (1 to 1024)\n", optarg);
                return -1;
            }
            o->workers = (unsigned)v;
            break;
        }
        case O_NBD: o->nbd = optarg; break;
        case O_PSK: o->tls_psk = optarg; break;
        case O_TLSREQ: o->tls_required = true; break;
        case O_DELAY: {
            unsigned long long v = strtoull(optarg, &end, 10);
            if (*end || v > 10000000) {
                fprintf(stderr, "r3serve: bad --delay-us '%s' (0 to 10000000)\n", optarg);
                return -1;
            }
            o->delay_us = v;
            break;
        }
        case O_NBDW: {
            unsigned long v = strtoul(optarg, &end, 10);
            if (*end || v == 0 || v > 64) {
                fprintf(stderr, "r3serve: bad --nbd-workers '%s' (1 to 64)\n", optarg);
                return -1;
            }
            o->nbd_workers = (unsigned)v;
            break;
        }
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "r3serve: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if ((!o->listen && !o->nbd) || !o->source) {
        fprintf(stderr, "r3serve: --source and --listen (or --nbd) are required (see --help)\n");
        return -1;
    }
    if ((o->tls_cert != NULL) != (o->tls_key != NULL)) {
        fprintf(stderr, "r3serve: --tls-cert and --tls-key go together\n");
        return -1;
    }
    if (o->tls_ca && !o->tls_cert) {
        fprintf(stderr, "r3serve: --tls-ca needs --tls-cert and --tls-key\n");
        return -1;
    }
    return 0;
}

/* Listening socket for HOST:PORT or unix:PATH; prints the bound address. */
static int listen_on(struct server *sv)
{
    const char *spec = sv->o.listen;
    int fd;
    if (strncmp(spec, "unix:", 5) == 0) {
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        const char *path = spec + 5;
        if (!*path || strlen(path) >= sizeof a.sun_path) {
            fprintf(stderr, "r3serve: bad unix socket path '%s'\n", path);
            return -1;
        }
        strcpy(a.sun_path, path);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
            unlink(path);            /* a stale socket from an earlier run */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 128) < 0) {
            fprintf(stderr, "r3serve: cannot listen on %s: %s\n", spec, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        sv->unix_path = strdup(path);
        fprintf(stderr, "r3serve: listening on unix:%s\n", path);
        return fd;
    }
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || !colon[1] || (size_t)(colon - spec) >= sizeof host) {
        fprintf(stderr, "r3serve: bad --listen '%s' (expected HOST:PORT or unix:PATH)\n", spec);
        return -1;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
    int g = getaddrinfo(host, colon + 1, &hints, &ai);
    if (g) {
        fprintf(stderr, "r3serve: cannot resolve '%s': %s\n", spec, gai_strerror(g));
        return -1;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
        fprintf(stderr, "r3serve: cannot listen on %s: %s\n", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char hb[INET6_ADDRSTRLEN] = "?", pb[16] = "?";
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        getnameinfo((struct sockaddr *)&ss, sl, hb, sizeof hb, pb, sizeof pb, NI_NUMERICHOST | NI_NUMERICSERV);
    fprintf(stderr, strchr(hb, ':') ? "r3serve: listening on [%s]:%s\n" : "r3serve: listening on %s:%s\n", hb, pb);
    return fd;
}

static void peer_name(int fd, char *buf, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char hb[INET6_ADDRSTRLEN], pb[16];
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family != AF_UNIX &&
        getnameinfo((struct sockaddr *)&ss, sl, hb, sizeof hb, pb, sizeof pb, NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        snprintf(buf, n, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", hb, pb);
    else
        snprintf(buf, n, "unix");
}

/* One accepted connection to the protocol handler (takes fd). */
static void handle_conn(struct server *sv, int fd)
{
    char peer[96];
    peer_name(fd, peer, sizeof peer);
    if (r3_wire_server_add_conn(sv->wire, fd, peer) < 0)
        fprintf(stderr, "r3serve: %s: %s\n", peer, r3_last_error());
}

/* Accept until SIGINT/SIGTERM. */
static int serve_loop(struct server *sv, int sigfd)
{
    struct pollfd p[2] = { { .fd = sv->lfd, .events = POLLIN }, { .fd = sigfd, .events = POLLIN } };
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "r3serve: poll: %s\n", strerror(errno));
            return -1;
        }
        if (p[1].revents) {
            struct signalfd_siginfo si;
            if (read(sigfd, &si, sizeof si) == sizeof si)
                fprintf(stderr, "r3serve: %s: stopping\n", strsignal((int)si.ssi_signo));
            return 0;
        }
        if (p[0].revents) {
            int fd = accept4(sv->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
                    fprintf(stderr, "r3serve: accept: %s\n", strerror(errno));
                if (errno == EMFILE || errno == ENFILE)
                    usleep(100000);
                continue;
            }
            handle_conn(sv, fd);
        }
    }
}

int main(int argc, char **argv)
{
    struct server sv = { .lfd = -1 };
    if (parse_args(argc, argv, &sv.o) < 0)
        return 2;
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGINT);
    sigaddset(&ss, SIGTERM);
    sigprocmask(SIG_BLOCK, &ss, NULL);     /* threads started below inherit the mask */
    signal(SIGPIPE, SIG_IGN);
    int sigfd = signalfd(-1, &ss, SFD_CLOEXEC);

    if (r3_source_open(sv.o.source, &sv.src) < 0) {
        fprintf(stderr, "r3serve: %s\n", r3_last_error());
        return 1;
    }
    int status = 1;
    if (sv.o.delay_us) {
        struct r3_source *d;
        if (r3_stage_delay_open(sv.src, sv.o.delay_us, &d) < 0) {
            fprintf(stderr, "r3serve: %s\n", r3_last_error());
            goto out;
        }
        sv.src = d;
    }
    if (sv.o.tls_cert) {
        struct r3_tls_opts to = { .cert = sv.o.tls_cert, .key = sv.o.tls_key, .ca = sv.o.tls_ca };
        if (r3_tls_server_ctx(&to, &sv.tls) < 0) {
            fprintf(stderr, "r3serve: %s\n", r3_last_error());
            goto out;
        }
    }
    struct r3_wire_server_opts wo = {
        .src = sv.src, .export_name = sv.o.export_name, .read_only = sv.o.read_only, .tls = sv.tls,
        .max_request = (size_t)sv.o.max_request, .workers = sv.o.workers, .log = log_line,
    };
    if (sv.o.listen && r3_wire_server_new(&wo, &sv.wire) < 0) {
        fprintf(stderr, "r3serve: %s\n", r3_last_error());
        goto out;
    }
    if ((sv.o.listen && (sv.lfd = listen_on(&sv)) < 0) || sigfd < 0)
        goto out;
    if (sv.o.nbd) {
        struct r3_nbd_export ne = { .name = sv.o.export_name ? sv.o.export_name : "",
                                    .src = sv.src, .readonly = sv.o.read_only };
        struct r3_nbd_server_opts no = {
            .listen = sv.o.nbd, .exports = &ne, .nexports = 1, .workers = sv.o.nbd_workers,
            .max_request = sv.o.max_request ? (uint32_t)sv.o.max_request : 0,
            .tls_cert = sv.o.tls_cert, .tls_key = sv.o.tls_key, .tls_ca = sv.o.tls_ca,
            .tls_verify_peer = sv.o.tls_ca != NULL, .tls_psk = sv.o.tls_psk,
            .tls_required = sv.o.tls_required,
        };
        if (r3_nbd_server_start(&no, &sv.nbd) < 0) {
            fprintf(stderr, "r3serve: %s\n", r3_last_error());
            goto out;
        }
        if (r3_nbd_server_port(sv.nbd))
            fprintf(stderr, "r3serve: NBD on port %d\n", r3_nbd_server_port(sv.nbd));
        else
            fprintf(stderr, "r3serve: NBD on %s\n", sv.o.nbd);
    }
    char sz[32];
    uint64_t b = sv.src->size;
    snprintf(sz, sizeof sz, "%llu bytes", (unsigned long long)b);
    fprintf(stderr, "r3serve: serving %s (%s%s%s)\n", sv.o.source, sz, sv.o.read_only ? ", read-only" : "",
            sv.tls ? (r3_tls_ctx_mtls(sv.tls) ? ", TLS with client certificates" : ", TLS") : "");
    status = serve_loop(&sv, sigfd) < 0 ? 1 : 0;
out:
    if (sv.lfd >= 0)
        close(sv.lfd);
    r3_nbd_server_stop(sv.nbd);
    r3_wire_server_free(sv.wire);
    if (!sv.o.read_only && !(sv.src->flags & R3_SRC_RDONLY) && r3_source_flush(sv.src) < 0) {
        fprintf(stderr, "r3serve: flush at exit failed: %s\n", r3_last_error());
        status = 1;
    }
    r3_source_close(sv.src);
    r3_tls_ctx_free(sv.tls);
    if (sv.unix_path) {
        unlink(sv.unix_path);
        free(sv.unix_path);
    }
    if (sigfd >= 0)
        close(sigfd);
    return status;
}
