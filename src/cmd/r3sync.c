/* r3sync: filesync hub / advertise / receive (see README). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"
#include "filesync/filesync.h"

static volatile int stop_flag, kick_flag;

static void on_stop(int sig) { (void)sig; stop_flag = 1; }
static void on_kick(int sig) { (void)sig; kick_flag = 1; }

static void usage(FILE *f)
{
    fprintf(f,
"usage: r3sync hub --listen HOST:PORT --tls-cert PEM --tls-key PEM --tls-ca PEM [--verbose]\n"
"       r3sync advertise FILE... --hub HOST:PORT --cert PEM --key PEM --ca PEM\n"
"                        [--interval MS] [--block SIZE] [--threads N] [--rounds N]\n"
"                        [--quiet] [--no-progress]\n"
"       r3sync receive DIR --hub HOST:PORT --cert PEM --key PEM --ca PEM\n"
"                        [--threads N] [--no-progress]\n"
"mTLS only: the client certificate's common name is the sync id. advertise runs\n"
"a round every --interval ms (default 1000; 0 = only on SIGUSR1); --block is the\n"
"block size (default 64K, 4K..4M); --rounds N exits after N rounds; --threads\n"
"is the number of hashing threads (default 2). Progress (bytes, rate, ETA) is\n"
"shown when stderr is a terminal. SIGINT/SIGTERM stop cleanly.\n");
}

enum { O_LISTEN = 256, O_TCERT, O_TKEY, O_TCA, O_HUB, O_CERT, O_KEY, O_CA, O_INTERVAL, O_BLOCK,
       O_THREADS, O_ROUNDS, O_QUIET, O_VERBOSE, O_NOPROGRESS, O_HELP };

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    static const struct option opts[] = {
        { "listen", required_argument, 0, O_LISTEN },
        { "tls-cert", required_argument, 0, O_TCERT },
        { "tls-key", required_argument, 0, O_TKEY },
        { "tls-ca", required_argument, 0, O_TCA },
        { "hub", required_argument, 0, O_HUB },
        { "cert", required_argument, 0, O_CERT },
        { "key", required_argument, 0, O_KEY },
        { "ca", required_argument, 0, O_CA },
        { "interval", required_argument, 0, O_INTERVAL },
        { "block", required_argument, 0, O_BLOCK },
        { "threads", required_argument, 0, O_THREADS },
        { "rounds", required_argument, 0, O_ROUNDS },
        { "quiet", no_argument, 0, O_QUIET },
        { "verbose", no_argument, 0, O_VERBOSE },
        { "no-progress", no_argument, 0, O_NOPROGRESS },
        { "help", no_argument, 0, O_HELP },
        { 0, 0, 0, 0 },
    };
    const char *listen = NULL, *hub = NULL;
    struct r3_tls_opts stls = { 0 }, ctls = { 0 };
    unsigned long interval = 1000, threads = 2, rounds = 0;
    uint64_t block = FS_DEFAULT_BLOCK;
    bool quiet = false, verbose = false, progress = isatty(2);
    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case O_LISTEN: listen = optarg; break;
        case O_TCERT: stls.cert = optarg; break;
        case O_TKEY: stls.key = optarg; break;
        case O_TCA: stls.ca = optarg; break;
        case O_HUB: hub = optarg; break;
        case O_CERT: ctls.cert = optarg; break;
        case O_KEY: ctls.key = optarg; break;
        case O_CA: ctls.ca = optarg; break;
        case O_INTERVAL: interval = strtoul(optarg, &end, 10); break;
        case O_THREADS: threads = strtoul(optarg, &end, 10); break;
        case O_ROUNDS: rounds = strtoul(optarg, &end, 10); break;
        case O_BLOCK:
            if (r3_parse_size(optarg, &block) < 0 || block > FS_MAX_BLOCK) {
                fprintf(stderr, "r3sync: bad --block '%s'\n", optarg);
                return 2;
            }
            break;
        case O_QUIET: quiet = true; break;
        case O_VERBOSE: verbose = true; break;
        case O_NOPROGRESS: progress = false; break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (end && *end) {
            fprintf(stderr, "r3sync: bad number '%s'\n", optarg);
            return 2;
        }
    }
    struct sigaction sa = { .sa_handler = on_stop };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_kick;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    int rc;
    if (!strcmp(cmd, "hub")) {
        if (!listen || optind != argc) {
            usage(stderr);
            return 2;
        }
        struct fs_hub_opts o = { .listen = listen, .tls = stls, .verbose = verbose };
        rc = fs_hub_run(&o, &stop_flag);
    } else if (!strcmp(cmd, "advertise")) {
        if (!hub || optind >= argc) {
            usage(stderr);
            return 2;
        }
        struct fs_adv_opts o = { .hub = hub, .tls = ctls, .files = (const char *const *)argv + optind,
                                 .nfiles = (size_t)(argc - optind), .block = (uint32_t)block,
                                 .interval_ms = (unsigned)interval, .threads = (unsigned)threads,
                                 .rounds = (unsigned)rounds, .progress = progress, .quiet = quiet };
        rc = fs_adv_run(&o, &stop_flag, &kick_flag);
    } else if (!strcmp(cmd, "receive")) {
        if (!hub || optind != argc - 1) {
            usage(stderr);
            return 2;
        }
        struct fs_recv_opts o = { .hub = hub, .tls = ctls, .dir = argv[optind],
                                  .threads = (unsigned)threads, .progress = progress };
        rc = fs_recv_run(&o, &stop_flag);
    } else {
        fprintf(stderr, "r3sync: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
    }
    if (rc < 0) {
        fprintf(stderr, "r3sync %s: %s\n", cmd, r3_last_error());
        return 1;
    }
    return 0;
}
