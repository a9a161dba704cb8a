/* SPDX-License-Identifier: BSD-3-Clause */
/* r3serve: serve a source over the r3 protocol (r3://, r3s://) and, with
 * --nbd, over NBD. Argument parsing and printing only: the r3 server (with
 * its listener, limits and TLS) is src/wire on src/net, the NBD server is nbd/. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>
#include <r3/r3.h>
#include <r3/wire.h>
#include "internal.h"
#include "net/net.h"
#include "nbd/server.h"

struct opts {
    const char *listen, *source, *export_name;
    const char *tls_cert, *tls_key, *tls_ca, *tls_psk;
    const char *nbd, *pipeline;
    bool read_only, insecure, list_exports;
    uint64_t max_request, max_inflight, delay_us;
    unsigned workers, nbd_workers, max_connections;
    uint64_t handshake_ms, timeout_ms;
};

static void usage(FILE *f)
{
    fprintf(f,
        "usage: r3serve --listen ADDR --source URI [options]\n"
        "       r3serve --nbd ADDR --source URI [options]\n"
        "Serve a source over the r3 protocol (clients open r3://HOST:PORT/EXPORT, r3s:// with TLS)\n"
        "and/or NBD. ADDR is HOST:PORT, [IPv6]:PORT or unix:PATH; port 0 picks a free one.\n"
        "  -l, --listen ADDR          serve the r3 protocol on ADDR\n"
        "  -s, --source URI           the source to serve (mem:, file://, dir://, redis://, ...)\n"
        "  -e, --export NAME          clients must ask for this export (r3: default any name;\n"
        "                             NBD: default \"\")\n"
        "  -r, --read-only            refuse writes\n"
        "      --tls-cert FILE        TLS with this PEM certificate (chain): then every port\n"
        "                             (--listen and --nbd) requires TLS\n"
        "      --tls-key FILE         ... and this PEM private key\n"
        "      --tls-ca FILE          require client certificates signed by this CA (mTLS)\n"
        "      --tls-psk FILE         NBD: TLS with pre-shared keys (\"identity:hexkey\" lines)\n"
        "      --tls-required         accepted for compatibility: TLS, when configured, is\n"
        "                             always required\n"
        "      --insecure             allow a non-loopback address without TLS\n"
        "      --max-request SIZE     largest read/write accepted (default 32M, at most 1G)\n"
        "      --max-inflight SIZE    bytes of requests and replies in memory, all clients\n"
        "                             together; readers wait for room (default 256M)\n"
        "      --max-connections N    more connections are refused with a message (default 1024)\n"
        "      --handshake-timeout DUR  TLS + hello must be done this long after accept (10s)\n"
        "      --timeout DUR          a request must arrive whole, and a client must take its\n"
        "                             replies, within this (default 30s)\n"
        "  -w, --workers N            threads running r3 requests (default 8)\n"
        "      --nbd ADDR             also (or only) serve the source over NBD on ADDR\n"
        "      --nbd-workers N        NBD: request threads per connection (default 4)\n"
        "      --list-exports         NBD: answer LIST with the export's name (default: refused)\n"
        "      --pipeline SPEC        serve the source through these stages, e.g.\n"
        "                             'delay:ms=10,chunk:size=1M,cache,pull:workers=16'\n"
        "      --delay DUR            add DUR to every source request (RTT injection: 500us, 2ms)\n"
        "      --delay-us US          the same in microseconds\n"
        "  -h, --help                 this text\n"
        "  -V, --version              print the version\n");
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "r3serve: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'r3serve --help' for more information.\n");
    return -1;
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

/* A duration with a unit (us, ms, s, m); a bare number is a usage error. */
static int parse_dur_us(const char *flag, const char *v, uint64_t *us)
{
    if (r3_util_parse_duration_us(v, us) < 0)
        return usage_error("%s: %s", flag, r3_last_error());
    if (*us > 86400000000ull)
        return usage_error("%s '%s' is longer than a day", flag, v);
    return 0;
}

static int parse_uint(const char *flag, const char *v, unsigned long lo, unsigned long hi, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (end == v || *end || errno || v[0] == '-' || n < lo || n > hi)
        return usage_error("bad %s '%s' (%lu to %lu)", flag, v, lo, hi);
    *out = (unsigned)n;
    return 0;
}

/* An address for --listen/--nbd: parsed here so a bad one is a usage error. */
static int check_addr(const char *flag, const char *v, int default_port, bool tls, bool insecure)
{
    struct r3_net_addr a;
    if (v[0] == '/')                     /* NBD also takes a bare socket path */
        return 0;
    if (r3_net_addr_parse(v, default_port, R3_NET_PASSIVE, &a) < 0)
        return usage_error("%s: %s", flag, r3_last_error());
    if (!tls && !insecure && !r3_net_addr_is_loopback(&a))
        return usage_error("refusing %s %s without TLS: anyone who can reach it could read and write "
                           "the source (give --tls-cert/--tls-key, or --insecure)", flag, v);
    return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    enum { O_CERT = 256, O_KEY, O_CA, O_MAXREQ, O_NBD, O_PSK, O_TLSREQ, O_NBDW, O_DELAYUS, O_DELAY,
           O_INFL, O_MAXC, O_HS, O_TMO, O_INSEC, O_LIST, O_PIPE };
    static const struct option lo[] = {
        { "listen", required_argument, NULL, 'l' },
        { "source", required_argument, NULL, 's' },
        { "export", required_argument, NULL, 'e' },
        { "read-only", no_argument, NULL, 'r' },
        { "tls-cert", required_argument, NULL, O_CERT },
        { "tls-key", required_argument, NULL, O_KEY },
        { "tls-ca", required_argument, NULL, O_CA },
        { "tls-psk", required_argument, NULL, O_PSK },
        { "tls-required", no_argument, NULL, O_TLSREQ },
        { "insecure", no_argument, NULL, O_INSEC },
        { "list-exports", no_argument, NULL, O_LIST },
        { "pipeline", required_argument, NULL, O_PIPE },
        { "max-request", required_argument, NULL, O_MAXREQ },
        { "max-inflight", required_argument, NULL, O_INFL },
        { "max-connections", required_argument, NULL, O_MAXC },
        { "handshake-timeout", required_argument, NULL, O_HS },
        { "timeout", required_argument, NULL, O_TMO },
        { "workers", required_argument, NULL, 'w' },
        { "nbd", required_argument, NULL, O_NBD },
        { "nbd-workers", required_argument, NULL, O_NBDW },
        { "delay", required_argument, NULL, O_DELAY },
        { "delay-us", required_argument, NULL, O_DELAYUS },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    uint64_t us;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":l:s:e:rw:hV", lo, NULL)) != -1) {
        switch (c) {
        case 'l': o->listen = optarg; break;
        case 's': o->source = optarg; break;
        case 'e': o->export_name = optarg; break;
        case 'r': o->read_only = true; break;
        case O_CERT: o->tls_cert = optarg; break;
        case O_KEY: o->tls_key = optarg; break;
        case O_CA: o->tls_ca = optarg; break;
        case O_PSK: o->tls_psk = optarg; break;
        case O_TLSREQ: break;                 /* always, when TLS is configured */
        case O_INSEC: o->insecure = true; break;
        case O_LIST: o->list_exports = true; break;
        case O_PIPE: o->pipeline = optarg; break;
        case O_MAXREQ:
            if (r3_parse_size(optarg, &o->max_request) < 0 || o->max_request < 4096 ||
                o->max_request > (1u << 30))
                return usage_error("bad --max-request '%s' (a size between 4K and 1G)", optarg);
            break;
        case O_INFL:
            if (r3_parse_size(optarg, &o->max_inflight) < 0 || o->max_inflight < (1u << 20))
                return usage_error("bad --max-inflight '%s' (a size, at least 1M)", optarg);
            break;
        case O_MAXC:
            if (parse_uint("--max-connections", optarg, 1, 1000000, &o->max_connections) < 0)
                return -1;
            break;
        case O_HS:
            if (parse_dur_us("--handshake-timeout", optarg, &us) < 0)
                return -1;
            if (us < 1000 || us > 3600e6)
                return usage_error("bad --handshake-timeout '%s' (1ms to 1h)", optarg);
            o->handshake_ms = us / 1000;
            break;
        case O_TMO:
            if (parse_dur_us("--timeout", optarg, &us) < 0)
                return -1;
            if (us < 1000 || us > 3600e6)
                return usage_error("bad --timeout '%s' (1ms to 1h)", optarg);
            o->timeout_ms = us / 1000;
            break;
        case 'w':
            if (parse_uint("--workers", optarg, 1, 1024, &o->workers) < 0)
                return -1;
            break;
        case O_NBD: o->nbd = optarg; break;
        case O_NBDW:
            if (parse_uint("--nbd-workers", optarg, 1, 64, &o->nbd_workers) < 0)
                return -1;
            break;
        case O_DELAY:
            if (parse_dur_us("--delay", optarg, &o->delay_us) < 0)
                return -1;
            if (o->delay_us > 10000000)
                return usage_error("bad --delay '%s' (at most 10s)", optarg);
            break;
        case O_DELAYUS: {
            unsigned v;
            if (parse_uint("--delay-us", optarg, 0, 10000000, &v) < 0)
                return -1;
            o->delay_us = v;
            break;
        }
        case 'h': usage(stdout); exit(0);
        case 'V': printf("r3serve (r3) %s\n", PACKAGE_VERSION); exit(0);
        case ':': return usage_error("option '%s' needs an argument", argv[optind - 1]);
        default:
            if (optopt)
                return usage_error("unknown option '-%c'", optopt);
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (!o->source)
        return usage_error("--source is required");
    if (!o->listen && !o->nbd)
        return usage_error("--listen (or --nbd) is required");
    if ((o->tls_cert != NULL) != (o->tls_key != NULL))
        return usage_error("--tls-cert and --tls-key go together");
    if (o->tls_ca && !o->tls_cert)
        return usage_error("--tls-ca needs --tls-cert and --tls-key");
    if (o->tls_psk && o->listen && !o->tls_cert)
        return usage_error("--tls-psk covers only the --nbd port: give --tls-cert/--tls-key for --listen too");
    if (o->tls_psk && !o->nbd)
        return usage_error("--tls-psk is for --nbd");
    if (o->max_inflight && o->max_inflight < (o->max_request ? o->max_request : 32u << 20) + 8192)
        return usage_error("--max-inflight must be larger than --max-request (default 32M)");
    if (o->listen && check_addr("--listen", o->listen, 0, o->tls_cert != NULL, o->insecure) < 0)
        return -1;
    if (o->nbd && check_addr("--nbd", o->nbd, 10809, o->tls_cert || o->tls_psk, o->insecure) < 0)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = { 0 };
    if (parse_args(argc, argv, &o) < 0)
        return 2;
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGINT);
    sigaddset(&ss, SIGTERM);
    sigprocmask(SIG_BLOCK, &ss, NULL);     /* threads started below inherit the mask */
    signal(SIGPIPE, SIG_IGN);
    int sigfd = signalfd(-1, &ss, SFD_CLOEXEC);
    if (sigfd < 0) {
        fprintf(stderr, "r3serve: signalfd: %s\n", strerror(errno));
        return 1;
    }
    struct r3_source *src = NULL;
    struct r3_tls_ctx *tls = NULL;
    struct r3_wire_server *wire = NULL;
    struct r3_nbd_server *nbd = NULL;
    int status = 1;
    if (r3_source_open(o.source, &src) < 0) {
        fprintf(stderr, "r3serve: %s\n", r3_last_error());
        close(sigfd);
        return 1;
    }
    if (o.delay_us) {
        struct r3_source *d;
        if (r3_stage_delay_open(src, o.delay_us, &d) < 0) {
            fprintf(stderr, "r3serve: %s\n", r3_last_error());
            goto out;
        }
        src = d;
    }
    if (o.pipeline) {
        struct r3_pipeline *pl;
        if (r3_pipeline_parse(o.pipeline, src, &pl) < 0) {     /* closes src on failure */
            src = NULL;
            fprintf(stderr, "r3serve: %s\n", r3_last_error());
            goto out;
        }
        src = pl->top;        /* closing the top stage closes the whole pipeline */
        free(pl);
    }
    if (o.tls_cert) {
        struct r3_tls_opts to = { .cert = o.tls_cert, .key = o.tls_key, .ca = o.tls_ca };
        if (r3_tls_server_ctx(&to, &tls) < 0) {
            fprintf(stderr, "r3serve: %s\n", r3_last_error());
            goto out;
        }
    }
    if (o.listen) {
        struct r3_wire_server_opts wo = {
            .src = src, .export_name = o.export_name, .read_only = o.read_only, .listen = o.listen,
            .tls = tls, .insecure = o.insecure, .max_request = (size_t)o.max_request,
            .workers = o.workers, .max_inflight = (size_t)o.max_inflight,
            .max_connections = o.max_connections, .handshake_ms = (unsigned)o.handshake_ms,
            .timeout_ms = (unsigned)o.timeout_ms, .log = log_line,
        };
        if (r3_wire_server_new(&wo, &wire) < 0) {
            fprintf(stderr, "r3serve: %s\n", r3_last_error());
            goto out;
        }
        char ab[300];
        fprintf(stderr, "r3serve: listening on %s\n", r3_wire_server_address(wire, ab, sizeof ab));
    }
    if (o.nbd) {
        struct r3_nbd_export ne = { .name = o.export_name ? o.export_name : "", .src = src,
                                    .readonly = o.read_only };
        struct r3_nbd_server_opts no = {
            .listen = o.nbd, .exports = &ne, .nexports = 1, .workers = o.nbd_workers,
            .max_request = o.max_request ? (uint32_t)o.max_request : 0,
            .max_conns = o.max_connections, .list_exports = o.list_exports,
            .tls_cert = o.tls_cert, .tls_key = o.tls_key, .tls_ca = o.tls_ca,
            .tls_verify_peer = o.tls_ca != NULL, .tls_psk = o.tls_psk,
            /* TLS configured: every port requires it (NBD: STARTTLS before anything else) */
            .tls_required = o.tls_cert != NULL || o.tls_psk != NULL,
            /* the NBD server runs on src/net too (nbd helper: these four lines) */
            .insecure = o.insecure, .max_inflight = (size_t)o.max_inflight,
            .handshake_timeout_ms = (unsigned)o.handshake_ms, .log = log_line,
        };
        if (r3_nbd_server_start(&no, &nbd) < 0) {
            fprintf(stderr, "r3serve: %s\n", r3_last_error());
            goto out;
        }
        if (r3_nbd_server_port(nbd))
            fprintf(stderr, "r3serve: NBD on port %d\n", r3_nbd_server_port(nbd));
        else
            fprintf(stderr, "r3serve: NBD on %s\n", o.nbd);
    }
    fprintf(stderr, "r3serve: serving %s (%llu bytes%s%s)\n", o.source, (unsigned long long)src->size,
            o.read_only ? ", read-only" : "",
            tls ? (r3_tls_ctx_mtls(tls) ? ", TLS with client certificates on every port" : ", TLS on every port")
                : o.tls_psk ? ", NBD with TLS-PSK" : "");
    struct signalfd_siginfo si;
    while (read(sigfd, &si, sizeof si) != sizeof si) {
        if (errno != EINTR) {
            fprintf(stderr, "r3serve: signalfd: %s\n", strerror(errno));
            goto out;
        }
    }
    fprintf(stderr, "r3serve: %s: stopping\n", strsignal((int)si.ssi_signo));
    status = 0;
out:
    r3_nbd_server_stop(nbd);
    r3_wire_server_free(wire);
    if (src && !o.read_only && !(src->flags & R3_SRC_RDONLY) && r3_source_flush(src) < 0) {
        fprintf(stderr, "r3serve: flush at exit failed: %s\n", r3_last_error());
        status = 1;
    }
    r3_source_close(src);
    r3_tls_ctx_free(tls);
    close(sigfd);
    return status;
}
