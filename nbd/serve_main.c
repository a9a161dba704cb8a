/* r3nbdserve: serve one r3 source over NBD (the standalone form of
 * r3serve --nbd; used by the tests and the benchmark).
 *   r3nbdserve [--listen ADDR] [--name N] [--description D] [--readonly]
 *              [--workers N] [--max-request BYTES] [--tls-dir DIR | --tls-cert F --tls-key F [--tls-ca F]]
 *              [--tls-psk FILE] [--tls-required] [--tls-verify-peer] [--port-file F] [--verbose] URI
 * Runs until SIGINT/SIGTERM. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "nbd/server.h"

static void usage(FILE *f)
{
    fputs("usage: r3nbdserve [--listen HOST:PORT|unix:PATH] [--name NAME] [--description TEXT]\n"
          "                  [--readonly] [--workers N] [--max-request SIZE]\n"
          "                  [--tls-dir DIR] [--tls-cert F --tls-key F] [--tls-ca F] [--tls-psk FILE]\n"
          "                  [--tls-required] [--tls-verify-peer] [--port-file FILE] [--verbose] URI\n", f);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "listen", 1, 0, 'l' }, { "name", 1, 0, 'n' }, { "description", 1, 0, 'd' },
        { "readonly", 0, 0, 'r' }, { "workers", 1, 0, 'w' }, { "max-request", 1, 0, 'm' },
        { "tls-dir", 1, 0, 'T' }, { "tls-cert", 1, 0, 'C' }, { "tls-key", 1, 0, 'K' },
        { "tls-ca", 1, 0, 'A' }, { "tls-psk", 1, 0, 'P' }, { "tls-required", 0, 0, 'R' },
        { "tls-verify-peer", 0, 0, 'V' }, { "port-file", 1, 0, 'p' }, { "verbose", 0, 0, 'v' },
        { "help", 0, 0, 'h' }, { 0, 0, 0, 0 } };
    struct r3_nbd_export e = { .name = "" };
    struct r3_nbd_server_opts o = { .listen = "127.0.0.1:10809", .exports = &e, .nexports = 1 };
    const char *port_file = NULL;
    int c;
    uint64_t v;
    while ((c = getopt_long(argc, argv, "l:n:d:rw:m:T:C:K:A:P:RVp:vh", lo, NULL)) != -1) {
        switch (c) {
        case 'l': o.listen = optarg; break;
        case 'n': e.name = optarg; break;
        case 'd': e.description = optarg; break;
        case 'r': e.readonly = true; break;
        case 'w': o.workers = (unsigned)atoi(optarg); break;
        case 'm':
            if (r3_parse_size(optarg, &v) < 0 || v > UINT32_MAX) {
                fprintf(stderr, "r3nbdserve: bad --max-request %s\n", optarg);
                return 2;
            }
            o.max_request = (uint32_t)v;
            break;
        case 'T': o.tls_dir = optarg; break;
        case 'C': o.tls_cert = optarg; break;
        case 'K': o.tls_key = optarg; break;
        case 'A': o.tls_ca = optarg; break;
        case 'P': o.tls_psk = optarg; break;
        case 'R': o.tls_required = true; break;
        case 'V': o.tls_verify_peer = true; break;
        case 'p': port_file = optarg; break;
        case 'v': o.verbose = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct r3_source *src;
    if (r3_source_open(argv[optind], &src) < 0) {
        fprintf(stderr, "r3nbdserve: %s\n", r3_last_error());
        return 1;
    }
    e.src = src;
    struct r3_nbd_server *s;
    if (r3_nbd_server_start(&o, &s) < 0) {
        fprintf(stderr, "r3nbdserve: %s\n", r3_last_error());
        r3_source_close(src);
        return 1;
    }
    if (port_file) {
        FILE *f = fopen(port_file, "w");
        if (f) {
            fprintf(f, "%d\n", r3_nbd_server_port(s));
            fclose(f);
        }
    }
    int sig;
    sigwait(&set, &sig);
    r3_nbd_server_stop(s);
    int rc = r3_source_flush(src);
    r3_source_close(src);
    return rc < 0 ? 1 : 0;
}
