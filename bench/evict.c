/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/evict: a working set larger than the memory it may use (issue 11).
 * Runs a Python script that makes two full passes over a MIB-MiB bytearray
 * and prints a checksum (tests/r3run/twopass.py) under `r3run
 * --max-resident B` for each budget, on a file:// image and, with
 * --r3serve, on r3:// over loopback; each r3run run right after a plain run
 * of the same script (A B A B: the machine's load hits both alike). Prints
 * CSV, one row per source and budget over --runs pairs:
 *     source,budget,runs,seconds,min,max,plain_seconds,plain_min,plain_max,
 *     slowdown,max_rss_mib,evicted,same_output
 * seconds are medians; slowdown = median r3run / median plain of its pairs.
 * max_rss is the process's peak resident set (getrusage of the child, the
 * program itself: r3run execs it). Not a test: run it by hand, e.g.
 *     bench/evict --script ../tests/r3run/twopass.py --mib 4096 \
 *         --budgets 4G,1G,512M --r3serve ./r3serve */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run argv with stdout to out_path and stderr to err_path; seconds, peak
 * RSS (KiB) and exit status. */
static int run(char **argv, const char *out_path, const char *err_path, double *secs, long *rss_kib)
{
    double t0 = now();
    pid_t p = fork();
    if (p < 0)
        return -1;
    if (p == 0) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(126);
        execvp(argv[0], argv);
        _exit(127);
    }
    int st;
    struct rusage ru;
    if (wait4(p, &st, 0, &ru) != p)
        return -1;
    *secs = now() - t0;
    *rss_kib = ru.ru_maxrss;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    char *b = calloc(1, 1 << 16);
    size_t n = fread(b, 1, (1 << 16) - 1, f);
    b[n] = 0;
    fclose(f);
    return b;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double med(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int bad_usage(const char *what, const char *arg)
{
    fprintf(stderr, "evict: %s%s\nTry 'evict --help' for more information.\n", what, arg);
    return 2;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench/evict --script twopass.py [--mib N] [--budgets 4G,1G,512M]\n"
               "                   [--runs N] [--r3run PATH] [--r3serve PATH] [--dir DIR]\n"
               "Times the two-pass script under r3run --max-resident for each budget ('none':\n"
               "no budget), each run right after a plain run (A B A B), on a file:// image in\n"
               "DIR (default /var/tmp) and, with --r3serve, on r3:// over loopback; prints CSV\n"
               "(medians over --runs pairs, default 1).\n"
               "  -h, --help    this text;  -V, --version  the version\n");
}

int main(int argc, char **argv)
{
    const char *script = NULL, *budgets = "4G,1G,512M", *r3serve = NULL, *dir = "/var/tmp";
    char r3run[PATH_MAX + 16] = "";
    unsigned long long mib = 4096;
    int runs = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            printf("evict (r3) %s\n", PACKAGE_VERSION);
            return 0;
        }
        if (strncmp(a, "--", 2) || !strcmp(a, "--"))
            return bad_usage("unexpected argument ", a);
        if (!v)
            return bad_usage("a value is missing after ", a);
        if (!strcmp(a, "--script")) script = v;
        else if (!strcmp(a, "--mib")) mib = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--budgets")) budgets = v;
        else if (!strcmp(a, "--runs")) runs = atoi(v);
        else if (!strcmp(a, "--r3run")) snprintf(r3run, sizeof r3run, "%s", v);
        else if (!strcmp(a, "--r3serve")) r3serve = v;
        else if (!strcmp(a, "--dir")) dir = v;
        else
            return bad_usage("unknown option ", a);
        i++;
    }
    if (!script)
        return bad_usage("--script is missing", "");
    if (!mib)
        return bad_usage("--mib: want a number of MiB above 0", "");
    if (runs < 1 || runs > 100)
        return bad_usage("--runs: want a number from 1 to 100", "");
    if (!*r3run) {
        /* next to this program's directory: the build tree's r3run */
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = 0;
        char *s = strrchr(exe, '/');
        if (s)
            *s = 0;
        s = strrchr(exe, '/');
        if (s && !strcmp(s, "/.libs"))
            *s = 0;
        s = strrchr(exe, '/');
        if (s)
            *s = 0;
        snprintf(r3run, sizeof r3run, "%s/r3run", exe);
    }
    char mibs[32], size[32], img[PATH_MAX], out[PATH_MAX + 32], err[PATH_MAX + 32];
    snprintf(mibs, sizeof mibs, "%llu", mib);
    snprintf(size, sizeof size, "%lluM", 2 * mib);
    snprintf(img, sizeof img, "%s/r3bench-evict-%d.img", dir, (int)getpid());
    snprintf(out, sizeof out, "%s/r3bench-evict-%d.out", dir, (int)getpid());
    snprintf(err, sizeof err, "%s/r3bench-evict-%d.err", dir, (int)getpid());

    double secs;
    long rss;
    char *plain_argv[] = { "python3", (char *)script, mibs, NULL };
    if (run(plain_argv, out, err, &secs, &rss) != 0) {
        fprintf(stderr, "evict: the plain run failed: %s\n", slurp(err));
        return 1;
    }
    char *want = slurp(out);
    long plain_rss = rss;
    printf("source,budget,runs,seconds,min,max,plain_seconds,plain_min,plain_max,slowdown,max_rss_mib,"
           "evicted,same_output\n");
    fflush(stdout);

    pid_t srv = -1;
    char r3uri[128] = "";
    if (r3serve) {
        char srcuri[PATH_MAX + 64], logp[PATH_MAX + 16];
        snprintf(srcuri, sizeof srcuri, "file://%s.srv?size=%lluM", img, 2 * mib);
        snprintf(logp, sizeof logp, "%s.log", img);
        srv = fork();
        if (srv == 0) {
            int e = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (e < 0 || dup2(e, 2) < 0)
                _exit(126);
            execl(r3serve, r3serve, "--listen", "127.0.0.1:0", "--source", srcuri, (char *)NULL);
            _exit(127);
        }
        for (int i = 0; i < 200 && !*r3uri; i++) {
            usleep(50000);
            char *l = slurp(logp), *p = strstr(l, "listening on ");
            if (p) {
                p += strlen("listening on ");
                p[strcspn(p, "\n")] = 0;
                snprintf(r3uri, sizeof r3uri, "r3://%s/bench", p);
            }
            free(l);
        }
        unlink(logp);
        if (!*r3uri)
            fprintf(stderr, "evict: r3serve did not start; r3:// is not measured\n");
    }
    for (int s = 0; s < (*r3uri ? 2 : 1); s++) {
        char uri[PATH_MAX + 64];
        if (s == 0) {
            snprintf(uri, sizeof uri, "file://%s?size=%lluM", img, 2 * mib);
            unlink(img);
        } else {
            snprintf(uri, sizeof uri, "%s", r3uri);
        }
        char *list = strdup(budgets), *save = NULL;
        for (char *b = strtok_r(list, ",", &save); b; b = strtok_r(NULL, ",", &save)) {
            char *argv2[] = { r3run, "--stats", "--source", uri, "--size", size,
                              "--max-resident", b, "--", "python3", (char *)script, mibs, NULL };
            if (!strcmp(b, "none"))       /* r3run without a budget: the uffd baseline */
                memmove(&argv2[6], &argv2[8], 5 * sizeof argv2[0]);
            double t[100], tp[100];
            long maxrss = 0;
            unsigned long long evicted = 0;
            int same = 1;
            for (int r = 0; r < runs; r++) {
                if (run(plain_argv, out, err, &tp[r], &rss) != 0) {
                    fprintf(stderr, "evict: a plain run failed: %s\n", slurp(err));
                    return 1;
                }
                if (rss > plain_rss)
                    plain_rss = rss;
                int rc = run(argv2, out, err, &t[r], &rss);
                char *got = slurp(out), *e = slurp(err), *ev = strstr(e, "chunks evicted ");
                evicted = ev ? strtoull(ev + strlen("chunks evicted "), NULL, 10) : 0;
                if (rss > maxrss)
                    maxrss = rss;
                if (rc != 0 || strcmp(got, want))
                    same = 0;
                if (rc != 0)
                    fprintf(stderr, "evict: r3run exit %d: %s\n", rc, e);
                free(got);
                free(e);
            }
            double m = med(t, runs), mp = med(tp, runs);
            printf("%s,%s,%d,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.0f,%llu,%s\n", s ? "r3" : "file", b, runs,
                   m, t[0], t[runs - 1], mp, tp[0], tp[runs - 1], m / mp, maxrss / 1024.0, evicted,
                   same ? "yes" : "NO");
            fflush(stdout);
        }
        free(list);
    }
    if (srv > 0) {
        kill(srv, SIGTERM);
        waitpid(srv, NULL, 0);
        char srvimg[PATH_MAX + 8];
        snprintf(srvimg, sizeof srvimg, "%s.srv", img);
        unlink(srvimg);
    }
    unlink(img);
    unlink(out);
    unlink(err);
    fprintf(stderr, "evict: plain runs' peak VmRSS %.0f MiB\n", plain_rss / 1024.0);
    free(want);
    return 0;
}
