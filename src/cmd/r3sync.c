/* SPDX-License-Identifier: BSD-3-Clause */
/* r3sync: filesync hub / advertise / receive (docs/r3sync.pod). Argument
 * parsing and printing only: the roles live in filesync/ and hand their
 * lines and progress to the callbacks below. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"
#include "filesync/filesync.h"

/* With --rounds, a hub that cannot be reached is given up after this long
 * unless --give-up-after says otherwise (a one-shot job must end). */
#define ROUNDS_GIVE_UP_MS 30000u

static atomic_int stop_flag, kick_flag;     /* lock-free: set from signal handlers */

static void on_stop(int sig) { (void)sig; stop_flag = 1; }
static void on_kick(int sig) { (void)sig; kick_flag = 1; }

static const char usage_main[] =
"usage: r3sync hub --listen HOST:PORT --tls-cert PEM --tls-key PEM --tls-ca PEM [--verbose]\n"
"       r3sync advertise FILE... --hub HOST:PORT --cert PEM --key PEM --ca PEM [OPTION]...\n"
"       r3sync receive DIR --hub HOST:PORT --cert PEM --key PEM --ca PEM [OPTION]...\n"
"       r3sync SUBCOMMAND --help | r3sync --version\n"
"Keeps files in sync through a hub, sending only the blocks that changed.\n"
"mTLS only: the client certificate's common name is the sync id; an advertiser's\n"
"files go to every receiver of the same id. 'r3sync SUBCOMMAND --help' lists the\n"
"options of each subcommand. See r3sync(1).\n";

static const char usage_hub[] =
"usage: r3sync hub --listen HOST:PORT --tls-cert PEM --tls-key PEM --tls-ca PEM\n"
"                  [--max-connections N] [--max-inflight SIZE] [--verbose]\n"
"Relays advertisers' blocks to the receivers of the same id (the CN of their\n"
"client certificates). Clients must present a certificate signed by --tls-ca.\n"
"  --listen HOST:PORT   address to listen on ([v6]:port for IPv6)\n"
"  --tls-cert PEM       the hub's certificate\n"
"  --tls-key PEM        its private key\n"
"  --tls-ca PEM         CA that signs client certificates (required: mTLS only)\n"
"  --max-connections N  connections at once; more are refused (default 1024)\n"
"  --max-inflight SIZE  memory for blocks being relayed (default 256M); an\n"
"                       advertiser waits while it is used up\n"
"  --verbose            also log joins and advertised files (closes and\n"
"                       refusals are always logged)\n"
"  -h, --help           this help;  -V, --version  the version\n"
"SIGINT/SIGTERM stop cleanly.\n";

static const char usage_adv[] =
"usage: r3sync advertise FILE... --hub HOST:PORT --cert PEM --key PEM --ca PEM\n"
"                        [--interval DUR] [--block SIZE] [--threads N] [--rounds N]\n"
"                        [--give-up-after DUR] [--quiet] [--no-progress]\n"
"Sends the FILEs through the hub; each round sends the blocks that changed.\n"
"  --hub HOST:PORT        the hub\n"
"  --cert PEM, --key PEM  client certificate (its CN is the sync id) and key\n"
"  --ca PEM               CA that signs the hub's certificate\n"
"  --interval DUR         a round every DUR (default 1s; 0 = only on SIGUSR1);\n"
"                         durations take a unit: us, ms, s, m\n"
"  --block SIZE           block size, a power of two from 4K to 4M (default 64K)\n"
"  --threads N            hashing threads (default 2)\n"
"  --rounds N             exit after N rounds\n"
"  --give-up-after DUR    exit when the hub could not be reached for DUR\n"
"                         (default: never; 30s with --rounds)\n"
"  --quiet                no per-round lines on stdout\n"
"  --no-progress          no progress on stderr (default: shown on a terminal)\n"
"  -h, --help             this help;  -V, --version  the version\n"
"A certificate the hub refuses ends the program (exit 1). SIGUSR1 starts a round\n"
"now; SIGINT/SIGTERM stop cleanly.\n";

static const char usage_recv[] =
"usage: r3sync receive DIR --hub HOST:PORT --cert PEM --key PEM --ca PEM\n"
"                      [--threads N] [--give-up-after DUR] [--no-progress]\n"
"Writes every file advertised under the certificate's id into DIR.\n"
"  --hub HOST:PORT        the hub\n"
"  --cert PEM, --key PEM  client certificate (its CN is the sync id) and key\n"
"  --ca PEM               CA that signs the hub's certificate\n"
"  --threads N            hashing threads (default 2)\n"
"  --give-up-after DUR    exit when the hub could not be reached for DUR\n"
"                         (default: never); durations take a unit: us, ms, s, m\n"
"  --no-progress          no progress on stderr (default: shown on a terminal)\n"
"  -h, --help             this help;  -V, --version  the version\n"
"A certificate the hub refuses ends the program (exit 1). SIGINT/SIGTERM stop\n"
"cleanly.\n";

static const char *prog = "r3sync";    /* "r3sync SUBCOMMAND" once known */

/* A usage error: two lines on stderr, exit 2. */
static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help' for more information.\n", prog);
    exit(2);
}

/* A duration with a unit (us, ms, s, m) in ms; "0" alone is allowed. */
static unsigned parse_duration(const char *flag, const char *v)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)v[0]))
        usage_error("%s '%s': not a duration (e.g. 500ms, 2s)", flag, v);
    unsigned long long n = strtoull(v, &end, 10);
    if (errno)
        usage_error("%s '%s': too large", flag, v);
    if (!*end) {
        if (n == 0)
            return 0;
        usage_error("%s '%s' needs a unit (us, ms, s or m)", flag, v);
    }
    unsigned long long ms;
    if (!strcmp(end, "us"))
        ms = (n + 999) / 1000;
    else if (!strcmp(end, "ms"))
        ms = n;
    else if (!strcmp(end, "s"))
        ms = n > UINT32_MAX / 1000 ? UINT64_MAX : n * 1000;
    else if (!strcmp(end, "m"))
        ms = n > UINT32_MAX / 60000 ? UINT64_MAX : n * 60000;
    else
        usage_error("%s '%s': unknown unit '%s' (us, ms, s or m)", flag, v, end);
    if (ms > UINT32_MAX)
        usage_error("%s '%s': too large", flag, v);
    return (unsigned)ms;
}

static unsigned parse_count(const char *flag, const char *v, unsigned min, unsigned max)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (!isdigit((unsigned char)v[0]) || *end || errno || n < min || n > max)
        usage_error("%s '%s': want a whole number from %u to %u", flag, v, min, max);
    return (unsigned)n;
}

/* The network layer's address syntax; its sentence names the bad part. */
static void check_addr(const char *flag, const char *v)
{
    struct r3_net_addr a;
    if (r3_net_addr_parse(v, 0, 0, &a) < 0)
        usage_error("%s: %s", flag, r3_last_error());
}

/* ---- what the roles report */
static bool quiet;

static void on_line(void *arg, int kind, const char *text)
{
    (void)arg;
    if (kind == FS_SAY_OUT) {
        if (!quiet) {
            fputs(text, stdout);
            fputc('\n', stdout);
            fflush(stdout);
        }
    } else
        fprintf(stderr, "%s: %s\n", prog, text);
}

static void on_progress(void *arg, const char *what, uint64_t done, uint64_t total, double secs,
                        bool final)
{
    (void)arg;
    double rate = secs > 0 ? (double)done / secs : 0;
    double eta = rate > 0 && total > done ? (double)(total - done) / rate : 0;
    fprintf(stderr, "\r%s: %.1f/%.1f MiB  %.1f MiB/s  ETA %.0f s   %s", what,
            (double)done / 1048576.0, (double)total / 1048576.0, rate / 1048576.0, eta,
            final ? "\n" : "");
    fflush(stderr);
}

enum { O_LISTEN = 256, O_TCERT, O_TKEY, O_TCA, O_HUB, O_CERT, O_KEY, O_CA, O_INTERVAL, O_BLOCK,
       O_THREADS, O_ROUNDS, O_QUIET, O_VERBOSE, O_NOPROGRESS, O_GIVEUP, O_MAXCONN, O_INFLIGHT };

static const struct option hub_opts[] = {
    { "listen", required_argument, 0, O_LISTEN }, { "tls-cert", required_argument, 0, O_TCERT },
    { "tls-key", required_argument, 0, O_TKEY }, { "tls-ca", required_argument, 0, O_TCA },
    { "verbose", no_argument, 0, O_VERBOSE }, { "help", no_argument, 0, 'h' },
    { "max-connections", required_argument, 0, O_MAXCONN },
    { "max-inflight", required_argument, 0, O_INFLIGHT },
    { "version", no_argument, 0, 'V' }, { 0, 0, 0, 0 },
};
static const struct option adv_opts[] = {
    { "hub", required_argument, 0, O_HUB }, { "cert", required_argument, 0, O_CERT },
    { "key", required_argument, 0, O_KEY }, { "ca", required_argument, 0, O_CA },
    { "interval", required_argument, 0, O_INTERVAL }, { "block", required_argument, 0, O_BLOCK },
    { "threads", required_argument, 0, O_THREADS }, { "rounds", required_argument, 0, O_ROUNDS },
    { "give-up-after", required_argument, 0, O_GIVEUP }, { "quiet", no_argument, 0, O_QUIET },
    { "no-progress", no_argument, 0, O_NOPROGRESS }, { "help", no_argument, 0, 'h' },
    { "version", no_argument, 0, 'V' }, { 0, 0, 0, 0 },
};
static const struct option recv_opts[] = {
    { "hub", required_argument, 0, O_HUB }, { "cert", required_argument, 0, O_CERT },
    { "key", required_argument, 0, O_KEY }, { "ca", required_argument, 0, O_CA },
    { "threads", required_argument, 0, O_THREADS }, { "give-up-after", required_argument, 0, O_GIVEUP },
    { "no-progress", no_argument, 0, O_NOPROGRESS }, { "help", no_argument, 0, 'h' },
    { "version", no_argument, 0, 'V' }, { 0, 0, 0, 0 },
};

struct args {
    const char *listen, *hub;
    struct r3_tls_opts stls, ctls;
    unsigned interval_ms, threads, rounds, give_up_ms;
    bool give_up_set, verbose, progress;
    uint64_t block, max_inflight;
    unsigned max_connections;
};

static void parse(int argc, char **argv, const struct option *opts, const char *help,
                  struct args *a)
{
    opterr = 0;
    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, ":hV", opts, NULL)) != -1) {
        switch (c) {
        case O_LISTEN: a->listen = optarg; break;
        case O_TCERT: a->stls.cert = optarg; break;
        case O_TKEY: a->stls.key = optarg; break;
        case O_TCA: a->stls.ca = optarg; break;
        case O_HUB: a->hub = optarg; break;
        case O_CERT: a->ctls.cert = optarg; break;
        case O_KEY: a->ctls.key = optarg; break;
        case O_CA: a->ctls.ca = optarg; break;
        case O_INTERVAL: a->interval_ms = parse_duration("--interval", optarg); break;
        case O_GIVEUP:
            a->give_up_ms = parse_duration("--give-up-after", optarg);
            a->give_up_set = true;
            break;
        case O_THREADS: a->threads = parse_count("--threads", optarg, 1, 256); break;
        case O_ROUNDS: a->rounds = parse_count("--rounds", optarg, 1, UINT32_MAX); break;
        case O_BLOCK:
            if (r3_parse_size(optarg, &a->block) < 0 || !r3_is_pow2(a->block) ||
                a->block < 4096 || a->block > FS_MAX_BLOCK)
                usage_error("--block '%s': want a power of two from 4K to 4M", optarg);
            break;
        case O_MAXCONN: a->max_connections = parse_count("--max-connections", optarg, 1, 1000000); break;
        case O_INFLIGHT:
            if (r3_parse_size(optarg, &a->max_inflight) < 0 || a->max_inflight < FS_MAX_FRAME ||
                a->max_inflight > ((uint64_t)1 << 40))
                usage_error("--max-inflight '%s': want a size from 5M to 1T", optarg);
            break;
        case O_QUIET: quiet = true; break;
        case O_VERBOSE: a->verbose = true; break;
        case O_NOPROGRESS: a->progress = false; break;
        case 'h': fputs(help, stdout); exit(0);
        case 'V': printf("%s (r3) %s\n", prog, PACKAGE_VERSION); exit(0);
        case ':': usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            if (optopt)
                usage_error("unknown option '-%c'", optopt);
            usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
}

static void need_tls(const struct r3_tls_opts *t, const char *c, const char *k, const char *ca)
{
    if (!t->cert || !t->key || !t->ca)
        usage_error("needs %s, %s and %s (mTLS only)", c, k, ca);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage_error("a subcommand is needed: hub, advertise or receive");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        fputs(usage_main, stdout);
        return 0;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("r3sync (r3) %s\n", PACKAGE_VERSION);
        return 0;
    }
    static char progbuf[64];
    struct args a = { .interval_ms = 1000, .threads = 2, .block = FS_DEFAULT_BLOCK,
                      .progress = isatty(2) };
    if (!strcmp(cmd, "hub") || !strcmp(cmd, "advertise") || !strcmp(cmd, "receive")) {
        snprintf(progbuf, sizeof progbuf, "r3sync %s", cmd);
        prog = progbuf;
    } else if (cmd[0] == '-')
        usage_error("a subcommand comes first: hub, advertise or receive (not '%s')", cmd);
    else
        usage_error("unknown subcommand '%s' (hub, advertise or receive)", cmd);
    if (!strcmp(cmd, "hub")) {
        parse(argc, argv, hub_opts, usage_hub, &a);
        if (optind != argc)
            usage_error("unexpected argument '%s'", argv[optind]);
        if (!a.listen)
            usage_error("needs --listen HOST:PORT");
        check_addr("--listen", a.listen);
        need_tls(&a.stls, "--tls-cert", "--tls-key", "--tls-ca");
    } else if (!strcmp(cmd, "advertise")) {
        parse(argc, argv, adv_opts, usage_adv, &a);
        if (optind >= argc)
            usage_error("needs at least one FILE to advertise");
    } else {
        parse(argc, argv, recv_opts, usage_recv, &a);
        if (optind >= argc)
            usage_error("needs the DIR to receive into");
        if (optind != argc - 1)
            usage_error("unexpected argument '%s' (one DIR only)", argv[optind + 1]);
    }
    if (strcmp(cmd, "hub")) {
        if (!a.hub)
            usage_error("needs --hub HOST:PORT");
        check_addr("--hub", a.hub);
        need_tls(&a.ctls, "--cert", "--key", "--ca");
    }

    struct sigaction sa = { .sa_handler = on_stop };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_kick;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct fs_report rep = { .line = on_line, .progress = a.progress ? on_progress : NULL };

    int rc;
    if (!strcmp(cmd, "hub")) {
        struct fs_hub_opts o = { .listen = a.listen, .tls = a.stls, .verbose = a.verbose,
                                 .max_connections = a.max_connections,
                                 .max_inflight = (size_t)a.max_inflight, .report = rep };
        rc = fs_hub_run(&o, &stop_flag);
    } else if (!strcmp(cmd, "advertise")) {
        struct fs_adv_opts o = { .hub = a.hub, .tls = a.ctls, .files = (const char *const *)argv + optind,
                                 .nfiles = (size_t)(argc - optind), .block = (uint32_t)a.block,
                                 .interval_ms = a.interval_ms, .threads = a.threads,
                                 .rounds = a.rounds, .report = rep,
                                 .give_up_ms = a.give_up_set ? a.give_up_ms
                                             : a.rounds ? ROUNDS_GIVE_UP_MS : 0 };
        rc = fs_adv_run(&o, &stop_flag, &kick_flag);
    } else {
        struct fs_recv_opts o = { .hub = a.hub, .tls = a.ctls, .dir = argv[optind],
                                  .threads = a.threads, .give_up_ms = a.give_up_ms, .report = rep };
        rc = fs_recv_run(&o, &stop_flag);
    }
    if (rc < 0 && rc != -EINTR) {
        fprintf(stderr, "%s: %s\n", prog, r3_last_error());
        return 1;
    }
    return 0;
}
