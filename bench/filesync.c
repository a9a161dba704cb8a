/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/filesync: change detection and delta sync of a 1 GiB mapping with a
 * share (1% by default; --share 0.1,1,10 sweeps) of its 4 KiB pages written
 * at random (one run, CSV on stdout; sync rows carry the share).
 *   1. detection: hashing every block (XXH3-128, 2 threads) vs PAGEMAP_SCAN
 *   2. the same change set synchronised by r3sync (4 KiB blocks: this process
 *      advertises its own mapping, tracked with PAGEMAP_SCAN, through a real
 *      hub to a real receiver holding the old copy) and by
 *      `rsync --inplace --no-whole-file` (default blocks, and -B 4096) to a
 *      local rsync daemon on loopback: wall time and bytes on the wire.
 * rsync runs with --ignore-times: its quick check (size and mtime, to the
 * second) would skip a file written within the same second as its copy.
 * usage: bench/filesync [--size 1G] [--share PCT,...] [--r3sync PATH] [--dir DIR] [--keep] (--help)
 * Needs openssl and rsync in PATH. Uses about 3x size of disk in DIR. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <r3/thread.h>
#include "internal.h"
#include "filesync/filesync.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static void fill(void *p, size_t n)
{
    uint64_t *q = p;
    for (size_t i = 0; i < n / 8; i++)
        q[i] = rnd();
}

static double ms_since(uint64_t t0)
{
    return (double)(r3_now_ns() - t0) / 1e6;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &l) < 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static pid_t spawn(char *const argv[], int out_fd)
{
    pid_t p = fork();
    if (p == 0) {
        if (out_fd >= 0)
            dup2(out_fd, 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    return p;
}

/* Pick n distinct random pages of the mapping. */
static uint64_t *pick_pages(uint64_t npages, uint64_t n)
{
    uint8_t *used = calloc(npages, 1);
    uint64_t *list = malloc(n * sizeof *list);
    for (uint64_t i = 0; i < n;) {
        uint64_t pg = rnd() % npages;
        if (used[pg])
            continue;
        used[pg] = 1;
        list[i++] = pg;
    }
    free(used);
    return list;
}

/* Wait until the line stream on fd contains pat (or timeout_s). */
static int wait_line(FILE *f, const char *pat, int timeout_s)
{
    char line[1024];
    uint64_t end = r3_now_ns() + (uint64_t)timeout_s * 1000000000u;
    while (r3_now_ns() < end && fgets(line, sizeof line, f))
        if (strstr(line, pat))
            return 0;
    return -1;
}

/* The advertiser's lines, when BENCH_VERBOSE is set. */
static void say(void *arg, int kind, const char *text)
{
    (void)arg;
    fprintf(kind == FS_SAY_OUT ? stdout : stderr, "%s\n", text);
}

struct advthread {
    struct fs_adv_opts o;
    atomic_int stop, kick;        /* read by the advertiser thread (fs_adv_run) */
    int rc;
};

static void *adv_main(void *p)
{
    struct advthread *a = p;
    a->rc = fs_adv_run(&a->o, &a->stop, &a->kick);
    return NULL;
}

/* rsync to the daemon; wall time and bytes from --stats. */
static int run_rsync(const char *src, int port, const char *extra, double *secs, uint64_t *sent,
                     uint64_t *recvd)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "rsync --ignore-times --inplace --no-whole-file --stats %s '%s' rsync://127.0.0.1:%d/bench/data.bin",
             extra, src, port);
    uint64_t t0 = r3_now_ns();
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    char line[512];
    *sent = *recvd = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        char num[64];
        if (sscanf(line, "Total bytes sent: %63s", num) == 1 || sscanf(line, "Total bytes received: %63s", num) == 1) {
            char clean[64];
            size_t k = 0;
            for (char *c = num; *c && k < sizeof clean - 1; c++)
                if (*c >= '0' && *c <= '9')
                    clean[k++] = *c;
            clean[k] = 0;
            v = strtoull(clean, NULL, 10);
            if (strncmp(line, "Total bytes sent", 16) == 0)
                *sent = v;
            else
                *recvd = v;
        }
    }
    int rc = pclose(f);
    *secs = ms_since(t0) / 1e3;
    return rc == 0 ? 0 : -1;
}

static const char usage[] =
"usage: bench/filesync [--size SIZE] [--share PCT,...] [--r3sync PATH] [--dir DIR] [--keep]\n"
"Change detection (hashing vs PAGEMAP_SCAN, 1% of 4 KiB pages written at random)\n"
"and delta sync (r3sync vs rsync) of a mapping, one round per share of its 4 KiB\n"
"pages written at random; CSV on stdout (column share: percent of pages).\n"
"  --size SIZE     the mapping (default 1G)\n"
"  --share LIST    percents of pages written before each sync round (default 1)\n"
"  --r3sync PATH   the r3sync binary (default ./r3sync)\n"
"  --dir DIR       where to put about 3 x SIZE of files (default /tmp)\n"
"  --keep          keep them afterwards\n"
"  -h, --help      this help;  -V, --version  the version\n"
"Needs openssl and rsync in PATH. BENCH_VERBOSE=1 shows the advertiser's lines.\n";

static void usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "bench/filesync: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'bench/filesync --help' for more information.\n");
    exit(2);
}

int main(int argc, char **argv)
{
    uint64_t size = 1ull << 30;
    const char *r3sync = "./r3sync", *base = "/tmp", *shares = "1";
    bool keep = false;
    static const struct option lo[] = { { "size", 1, 0, 's' }, { "r3sync", 1, 0, 'r' }, { "share", 1, 0, 'p' },
                                        { "dir", 1, 0, 'd' }, { "keep", 0, 0, 'k' },
                                        { "help", 0, 0, 'h' }, { "version", 0, 0, 'V' },
                                        { 0, 0, 0, 0 } };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hV", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            if (r3_parse_size(optarg, &size) < 0 || size < (1u << 20))
                usage_error("--size '%s': want a size of at least 1M (K, M, G suffixes)", optarg);
            break;
        case 'r': r3sync = optarg; break;
        case 'p': {
            char *e;
            for (const char *q = optarg; *q; q = *e ? e + 1 : e) {
                double v = strtod(q, &e);
                if (e == q || !(v > 0) || v > 100 || (*e && *e != ','))
                    usage_error("--share '%s': want percents above 0 and up to 100, comma-separated", optarg);
            }
            shares = optarg;
            break;
        }
        case 'd': base = optarg; break;
        case 'k': keep = true; break;
        case 'h': fputs(usage, stdout); return 0;
        case 'V': printf("bench/filesync (r3) %s\n", PACKAGE_VERSION); return 0;
        case ':': usage_error("option '%s' needs a value", argv[optind - 1]); break;
        default: usage_error("unknown option '%s'", argv[optind - 1]); break;
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
    signal(SIGPIPE, SIG_IGN);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/r3bench-filesync.XXXXXX", base);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/src/data.bin", dir);
    sh("mkdir -p %s/src %s/recv %s/rsync", dir, dir, dir);
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
        perror(path);
        return 1;
    }
    unsigned char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    fill(map, size);
    msync(map, size, MS_SYNC);
    uint64_t npages = size / 4096, nchange = npages / 100;
    printf("part,what,share,value,unit,note\n");
    printf("setup,size,,%llu,bytes,\nsetup,pages_written,1,%llu,pages,1%% of 4 KiB pages at random\n",
           (unsigned long long)size, (unsigned long long)nchange);

    /* ---- 1. detection */
    uint64_t nb4 = size / 4096, nb64 = size / 65536;
    struct fs_hash *h4 = malloc(nb4 * sizeof *h4), *h64 = malloc(nb64 * sizeof *h64);
    uint8_t *ch = calloc(nb4, 1);
    struct fs_track *t = NULL;
    int trc = fs_track_open(map, size, &t);
    fs_hash_blocks(map, size, 4096, h4, 2);
    fs_hash_blocks(map, size, 65536, h64, 2);
    uint64_t *pages = pick_pages(npages, nchange);
    for (uint64_t i = 0; i < nchange; i++)
        fill(map + pages[i] * 4096, 4096);
    uint64_t t0 = r3_now_ns();
    uint64_t n4 = fs_hash_diff(map, size, 4096, h4, ch, 2);
    double hash4 = ms_since(t0);
    memset(ch, 0, nb4);
    t0 = r3_now_ns();
    uint64_t n64 = fs_hash_diff(map, size, 65536, h64, ch, 2);
    double hash64 = ms_since(t0);
    printf("detect,hash_4k_2threads,1,%.1f,ms,%llu changed blocks found (target <= 150 ms)\n", hash4,
           (unsigned long long)n4);
    printf("detect,hash_64k_2threads,1,%.1f,ms,%llu changed blocks found\n", hash64,
           (unsigned long long)n64);
    if (trc == 0) {
        memset(ch, 0, nb4);
        t0 = r3_now_ns();
        long np = fs_track_scan(t, 4096, ch);
        double scan = ms_since(t0);
        printf("detect,pagemap_scan,1,%.2f,ms,%ld written pages found (target <= 5 ms)\n", scan, np);
        printf("detect,hash_over_scan,1,%.0f,x,\n", scan > 0 ? hash4 / scan : 0);
        /* a second round of the same size: the steady state */
        uint64_t *p2 = pick_pages(npages, nchange);
        for (uint64_t i = 0; i < nchange; i++)
            fill(map + p2[i] * 4096, 4096);
        memset(ch, 0, nb4);
        t0 = r3_now_ns();
        np = fs_track_scan(t, 4096, ch);
        scan = ms_since(t0);
        printf("detect,pagemap_scan_second_round,1,%.2f,ms,%ld written pages found\n", scan, np);
        free(p2);
        fs_track_close(t);
    } else
        printf("detect,pagemap_scan,1,,ms,unavailable: %s\n", r3_last_error());
    free(h4);
    free(h64);
    free(pages);
    free(ch);

    /* ---- 2. sync: copies of the current content at both receivers */
    if (sh("cp %s %s/recv/data.bin && cp %s %s/rsync/data.bin", path, dir, path, dir) != 0 ||
        sh("cd %s && for n in ca hub adv; do openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out $n.key 2>/dev/null; done &&"
           " openssl req -x509 -new -key ca.key -subj /CN=bench-ca -days 1 -out ca.pem 2>/dev/null &&"
           " openssl req -new -key hub.key -subj /CN=hub -out hub.csr 2>/dev/null && echo subjectAltName=IP:127.0.0.1 > hub.ext &&"
           " openssl x509 -req -in hub.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile hub.ext -out hub.pem 2>/dev/null &&"
           " openssl req -new -key adv.key -subj /CN=bench -out adv.csr 2>/dev/null &&"
           " openssl x509 -req -in adv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out adv.pem 2>/dev/null", dir) != 0) {
        fprintf(stderr, "setup (cp/openssl) failed\n");
        return 1;
    }
    int hport = free_port(), rport = free_port();
    char listen[64], f_ca[600], f_hc[600], f_hk[600], f_ac[600], f_ak[600], rdir[600], conf[600];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", hport);
    snprintf(f_ca, sizeof f_ca, "%s/ca.pem", dir);
    snprintf(f_hc, sizeof f_hc, "%s/hub.pem", dir);
    snprintf(f_hk, sizeof f_hk, "%s/hub.key", dir);
    snprintf(f_ac, sizeof f_ac, "%s/adv.pem", dir);
    snprintf(f_ak, sizeof f_ak, "%s/adv.key", dir);
    snprintf(rdir, sizeof rdir, "%s/recv", dir);
    char *hub_argv[] = { (char *)r3sync, "hub", "--listen", listen, "--tls-cert", f_hc, "--tls-key", f_hk,
                         "--tls-ca", f_ca, NULL };
    pid_t hub = spawn(hub_argv, -1);
    usleep(300000);
    int pfd[2];
    if (pipe(pfd) < 0)
        return 1;
    char *recv_argv[] = { (char *)r3sync, "receive", rdir, "--hub", listen, "--cert", f_ac, "--key", f_ak,
                          "--ca", f_ca, NULL };
    pid_t rcv = spawn(recv_argv, pfd[1]);
    close(pfd[1]);
    FILE *rout = fdopen(pfd[0], "r");
    /* rsync daemon */
    snprintf(conf, sizeof conf, "%s/rsyncd.conf", dir);
    FILE *cf = fopen(conf, "w");
    fprintf(cf, "use chroot = no\nuid = root\ngid = root\npid file = %s/rsyncd.pid\n[bench]\n  path = %s/rsync\n  read only = false\n",
            dir, dir);
    fclose(cf);
    char portarg[32];
    snprintf(portarg, sizeof portarg, "--port=%d", rport);
    char cfgarg[700];
    snprintf(cfgarg, sizeof cfgarg, "--config=%s", conf);
    char *rs_argv[] = { "rsync", "--daemon", "--no-detach", "--address=127.0.0.1", portarg, cfgarg, NULL };
    pid_t rsd = spawn(rs_argv, -1);

    struct fs_adv_stats st = { 0 };
    struct fs_adv_map m = { map, size, "data.bin" };
    struct advthread a = { .o = { .hub = listen, .tls = { .cert = f_ac, .key = f_ak, .ca = f_ca },
                                  .maps = &m, .nmaps = 1, .track = true, .block = 4096, .threads = 2,
                                  .report = { .line = getenv("BENCH_VERBOSE") ? say : NULL },
                                  .stats = &st } };
    pthread_t at;
    r3_thread_create(&at, adv_main, &a);
    if (wait_line(rout, "synced data.bin", 120) < 0) {
        fprintf(stderr, "the receiver did not sync\n");
        a.stop = 1;
        goto out;
    }
    uint64_t catchup = atomic_load(&st.catchup_bytes);
    printf("sync,r3sync_catchup_identical_copy,,%llu,bytes,receiver sent its hashes; blocks that differed\n",
           (unsigned long long)catchup);

    /* one round per share: write it, r3sync it, rsync it twice (the rsync
     * copy is put back to the old bytes between the two) */
    char rpath[600];
    snprintf(rpath, sizeof rpath, "%s/rsync/data.bin", dir);
    int round = 0;
    for (const char *q = shares; *q; round++) {
        char *e;
        double share = strtod(q, &e);
        q = *e ? e + 1 : e;
        uint64_t nch = (uint64_t)((double)npages * share / 100.0 + 0.5);
        pages = pick_pages(npages, nch);
        unsigned char *old = malloc(nch * 4096 + 1);
        for (uint64_t i = 0; i < nch; i++) {
            memcpy(old + i * 4096, map + pages[i] * 4096, 4096);
            fill(map + pages[i] * 4096, 4096);
        }
        uint64_t changed = nch * 4096;
        t0 = r3_now_ns();
        a.kick = 1;
        while (atomic_load(&st.acks) < (uint64_t)round + 1 && ms_since(t0) < 120000)
            usleep(200);
        double r3s = ms_since(t0) / 1e3;
        uint64_t r3b = atomic_load(&st.last_round_bytes);
        int rcmp = sh("cmp -s %s %s/recv/data.bin", path, dir);
        printf("sync,r3sync_4k,%g,%.3f,s,wall: detect (pagemap) + msync + send + receiver write + fsync + ack%s\n",
               share, r3s, rcmp ? " -- RECEIVER DIFFERS" : "");
        printf("sync,r3sync_4k_bytes,%g,%llu,bytes,framed msgpack over TLS (TLS adds ~0.2%%)\n", share,
               (unsigned long long)r3b);
        printf("sync,changed_bytes,%g,%llu,bytes,\n", share, (unsigned long long)changed);

        double rs1 = 0, rs2 = 0;
        uint64_t s1 = 0, r1 = 0, s2 = 0, r2 = 0;
        msync(map, size, MS_SYNC);
        int e1 = run_rsync(path, rport, "", &rs1, &s1, &r1);
        int cmp1 = sh("cmp -s %s %s/rsync/data.bin", path, dir);
        printf("sync,rsync_default,%g,%.3f,s,%s%s\n", share, rs1, e1 ? "rsync failed " : "",
               cmp1 ? "DIFFERS" : "");
        printf("sync,rsync_default_bytes,%g,%llu,bytes,sent %llu + received %llu\n", share,
               (unsigned long long)(s1 + r1), (unsigned long long)s1, (unsigned long long)r1);
        /* back to the old content at the rsync side, then -B 4096 */
        int dfd = open(rpath, O_WRONLY);
        for (uint64_t i = 0; dfd >= 0 && i < nch; i++)
            r3_pwrite_all(dfd, old + i * 4096, 4096, pages[i] * 4096);
        if (dfd >= 0)
            close(dfd);
        int e2 = run_rsync(path, rport, "-B 4096", &rs2, &s2, &r2);
        int cmp2 = sh("cmp -s %s %s/rsync/data.bin", path, dir);
        printf("sync,rsync_B4096,%g,%.3f,s,%s%s\n", share, rs2, e2 ? "rsync failed " : "",
               cmp2 ? "DIFFERS" : "");
        printf("sync,rsync_B4096_bytes,%g,%llu,bytes,sent %llu + received %llu\n", share,
               (unsigned long long)(s2 + r2), (unsigned long long)s2, (unsigned long long)r2);
        double fast = rs1 < rs2 ? rs1 : rs2;
        printf("ratio,r3sync_time_over_faster_rsync,%g,%.3f,x,target <= 0.25\n", share,
               fast > 0 ? r3s / fast : 0);
        if (changed) {
            printf("ratio,r3sync_bytes_over_changed,%g,%.3f,x,target <= 1.1\n", share,
                   (double)r3b / (double)changed);
            printf("ratio,rsync_B4096_bytes_over_changed,%g,%.3f,x,\n", share,
                   (double)(s2 + r2) / (double)changed);
        }
        fflush(stdout);
        free(old);
        free(pages);
    }
    a.stop = 1;
out:
    pthread_join(at, NULL);
    kill(rcv, SIGTERM);
    kill(hub, SIGTERM);
    kill(rsd, SIGTERM);
    waitpid(rcv, NULL, 0);
    waitpid(hub, NULL, 0);
    waitpid(rsd, NULL, 0);
    fclose(rout);
    munmap(map, size);
    close(fd);
    if (!keep)
        sh("rm -rf %s", dir);
    return 0;
}
