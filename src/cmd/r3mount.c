/* SPDX-License-Identifier: BSD-3-Clause */
/* r3mount: expose a source as a file (FUSE) or a device (/dev/nbdX) that
 * programs open() and mmap(), through an in-process NBD server.
 *   r3mount [options] SOURCE MOUNTPOINT    mount (daemon unless --foreground)
 *   r3mount -u MOUNTPOINT                  unmount: the daemon syncs and exits
 * See usage() for every flag. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "internal.h"
#include "cover.h"
#include "nbd/mount.h"
#include "nbd/server.h"
#include "net/net.h"
#include "r3/migrate.h"

struct opts {
    const char *source, *mountpoint, *strategy, *name, *mode, *nbd_listen, *log;
    const char *seed, *local;     /* --seed ADDR; --leech's --local URI */
    const char *pipeline;         /* --pipeline SPEC: the stages served, instead of r3mount's own */
    const char *tls_cert, *tls_key, *tls_ca;   /* --seed over TLS (mTLS with the CA) */
    uint32_t chunk;
    unsigned finalize_at;         /* --leech: finalize at this % local */
    bool leech;
    unsigned pull_workers, push_workers, push_interval_ms, fuse_threads, workers;
    uint64_t delay_us;
    bool foreground, readonly, quiet, list_exports, insecure;
};

static void usage(FILE *f)
{
    fputs("Usage: r3mount [OPTION]... SOURCE MOUNTPOINT\n"
          "       r3mount --seed ADDR [OPTION]... SOURCE MOUNTPOINT\n"
          "       r3mount --leech [OPTION]... r3://HOST:PORT/ MOUNTPOINT\n"
          "       r3mount -u MOUNTPOINT\n"
          "Expose SOURCE (any r3 source URI) as the file MOUNTPOINT/NAME (FUSE) or as\n"
          "/dev/nbdN (kernel NBD, where the nbd module is loaded), served by an NBD\n"
          "server inside r3mount. Without --foreground, r3mount returns once the file\n"
          "is ready and a daemon keeps it mounted until r3mount -u (or umount).\n"
          "MOUNTPOINT must be a directory that is not already a mount point.\n"
          "\n"
          "  --strategy S          nbd-direct (serve SOURCE as is, default) or nbd-managed\n"
          "                        (serve cache + pull + push + chunk over SOURCE)\n"
          "  --chunk SIZE          chunk size of the managed pipeline (default 64K)\n"
          "  --pull-workers N      background pull workers (managed; default 4, 0 = none)\n"
          "  --push-workers N      write-back workers (managed; default 1)\n"
          "  --push-interval DUR   write back dirty chunks every DUR, e.g. 500ms or 2s\n"
          "                        (managed; default: on fsync only)\n"
          "  --delay DUR           add DUR to every source request, e.g. 10ms (RTT injection)\n"
          "  --pipeline SPEC       serve SOURCE through these stages instead of the ones the\n"
          "                        strategy builds, e.g. 'delay:ms=10,chunk:size=1M,cache,pull:workers=16'\n"
          "  --mount MODE          how to expose it: auto (default: kernel if available),\n"
          "                        fuse or kernel\n"
          "  --name NAME           file name inside MOUNTPOINT (default disk)\n"
          "  --fuse-threads N      FUSE request threads (default 4)\n"
          "  --workers N           NBD server threads per connection (default 4)\n"
          "  --nbd-listen ADDR     also serve the same export over NBD on ADDR\n"
          "                        (HOST:PORT, unix:PATH or /PATH)\n"
          "  --list-exports        answer NBD clients' export listing on --nbd-listen\n"
          "                        (default: refused)\n"
          "  --insecure            allow --nbd-listen on a non-loopback address (it has\n"
          "                        no TLS: anyone who reaches it can read and write)\n"
          "  --read-only           refuse writes\n"
          "  --seed ADDR           migration: let the file be leeched from ADDR\n"
          "                        (HOST:PORT or unix:PATH); writers block from the\n"
          "                        leecher's finalize on and get EIO once it has it all\n"
          "  --tls-cert FILE       --seed over TLS: the seeder's certificate (PEM)\n"
          "  --tls-key FILE        --seed over TLS: its private key (PEM)\n"
          "  --tls-ca FILE         --seed: accept only leechers with a certificate\n"
          "                        signed by this CA (mTLS)\n"
          "  --leech               migration: SOURCE is a seeder (r3://HOST:PORT/); pull\n"
          "                        it, finalize, and only then make the file appear\n"
          "  --local URI           --leech: keep the copy in URI (default mem:; e.g.\n"
          "                        file:///var/tmp/copy.img)\n"
          "  --finalize-at PCT     --leech: finalize when PCT%% of the chunks are local\n"
          "                        (default 100; SIGUSR1 finalizes at once)\n"
          "  -f, --foreground      stay in the foreground until SIGINT/SIGTERM or umount\n"
          "  -u, --unmount         unmount MOUNTPOINT (syncs, stops the daemon)\n"
          "  -q, --quiet           do not print the path\n"
          "      --log FILE        daemon: append later messages and one line per NBD\n"
          "                        connection to FILE (default: none)\n"
          "  -h, --help            show this help and exit\n"
          "  -V, --version         show the version and exit\n"
          "\n"
          "Durations take a unit: us, ms, s or m. Sizes take K, M or G.\n"
          "Exit status: 0 mounted (or unmounted), 1 a runtime failure, 2 a usage error.\n", f);
}

/* A usage error: two lines on stderr, exit status 2. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("r3mount: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'r3mount --help' for more information.\n", stderr);
    return 2;
}

/* "500ms", "2s", "1m", "250us" -> microseconds; a bare number has no unit
 * and is refused. */
static int parse_duration_us(const char *v, uint64_t *us)
{
    char *end;
    errno = 0;
    if (!v[0] || v[0] < '0' || v[0] > '9')
        return -EINVAL;
    unsigned long long n = strtoull(v, &end, 10);
    uint64_t mul;
    if (errno || end == v)
        return -EINVAL;
    if (!strcmp(end, "us"))
        mul = 1;
    else if (!strcmp(end, "ms"))
        mul = 1000;
    else if (!strcmp(end, "s"))
        mul = 1000000;
    else if (!strcmp(end, "m"))
        mul = 60000000;
    else
        return *end ? -EINVAL : -EDOM;        /* -EDOM: no unit */
    if (n > UINT64_MAX / mul / 1000)
        return -ERANGE;
    *us = n * mul;
    return 0;
}

/* Is path (a resolved directory) a mount point already? */
static bool is_mount_point(const char *path)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[8192];
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f)) {
        char m[4096];
        if (sscanf(line, "%*s %*s %*s %*s %4095s", m) == 1) {
            /* mountinfo escapes space, tab, newline and backslash as \ooo */
            char u[4096];
            size_t j = 0;
            for (size_t i = 0; m[i] && j + 1 < sizeof u; i++) {
                if (m[i] == '\\' && m[i + 1] >= '0' && m[i + 1] <= '7' && m[i + 2] && m[i + 3]) {
                    u[j++] = (char)((m[i + 1] - '0') * 64 + (m[i + 2] - '0') * 8 + (m[i + 3] - '0'));
                    i += 3;
                } else {
                    u[j++] = m[i];
                }
            }
            u[j] = 0;
            found = strcmp(u, path) == 0;
        }
    }
    if (f)
        fclose(f);
    if (!found) {
        /* Without /proc: a different device than the parent is a mount. */
        char parent[PATH_MAX + 4];
        struct stat a, b;
        snprintf(parent, sizeof parent, "%s/..", path);
        found = stat(path, &a) == 0 && stat(parent, &b) == 0 && (a.st_dev != b.st_dev || a.st_ino == b.st_ino);
    }
    return found;
}

static void log_line(void *arg, const char *line)
{
    (void)arg;
    fprintf(stderr, "r3mount: %s\n", line);
}

/* ---- unmount */

/* The pid of the r3mount daemon serving mnt, from /proc/mounts (fsname
 * "r3mount:PID") or the pid file of a kernel-device mount; 0 if none. */
static pid_t find_daemon(const char *mnt, bool *mounted)
{
    *mounted = false;
    FILE *f = fopen("/proc/mounts", "r");
    char line[4096];
    pid_t pid = 0;
    while (f && fgets(line, sizeof line, f)) {
        char dev[1024], dir[2048];
        if (sscanf(line, "%1023s %2047s", dev, dir) != 2 || strcmp(dir, mnt) != 0)
            continue;
        *mounted = true;
        if (strncmp(dev, "r3mount:", 8) == 0)
            pid = (pid_t)atoi(dev + 8);
    }
    if (f)
        fclose(f);
    if (!pid) {
        char p[PATH_MAX + 32];
        snprintf(p, sizeof p, "%s/.r3mount.pid", mnt);
        FILE *pf = fopen(p, "r");
        if (pf) {
            int v;
            if (fscanf(pf, "%d", &v) == 1)
                pid = v;
            fclose(pf);
        }
    }
    return pid;
}

static bool alive(pid_t pid)
{
    char p[64], st[512];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return false;
    size_t n = fread(st, 1, sizeof st - 1, f);
    fclose(f);
    st[n] = 0;
    const char *rp = strrchr(st, ')');
    return rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';   /* a zombie has exited */
}

/* Write back what was written to the files of the mount (through write()
 * or a shared mapping: both are dirty pages of the page cache), before the
 * daemon tears the connection down. */
static void sync_files(const char *mnt)
{
    DIR *d = opendir(mnt);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
            continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && fsync(fd) < 0)
            fprintf(stderr, "r3mount: fsync %s/%s: %s\n", mnt, e->d_name, strerror(errno));
        close(fd);
    }
    if (d)
        closedir(d);
}

/* Does a process other than the daemon map a file of the mount? Only a
 * mapping holds writes that are not yet the daemon's (dirty pages); write()
 * reaches the daemon at once, so a process that only has the file open
 * loses nothing (its later I/O fails). Its pid goes to *who, the path to path. */
static bool in_use(const char *mnt, pid_t daemon, pid_t *who, char *path, size_t pathn)
{
    size_t ml = strlen(mnt);
    DIR *pd = opendir("/proc");
    struct dirent *e;
    bool used = false;
    while (!used && pd && (e = readdir(pd))) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0 || pid == daemon || pid == getpid())
            continue;
        char p[PATH_MAX + 64], line[PATH_MAX + 256];
        snprintf(p, sizeof p, "/proc/%d/maps", (int)pid);
        FILE *f = fopen(p, "r");
        while (!used && f && fgets(line, sizeof line, f)) {
            char *sl = strchr(line, '/');
            line[strcspn(line, "\n")] = '\0';
            if (sl && strncmp(sl, mnt, ml) == 0 && sl[ml] == '/') {
                used = true;
                snprintf(path, pathn, "%s", sl);
            }
        }
        if (f)
            fclose(f);
        if (used)
            *who = pid;
    }
    if (pd)
        closedir(pd);
    return used;
}

static int do_unmount(const char *arg)
{
    char mnt[PATH_MAX];
    if (!realpath(arg, mnt)) {
        fprintf(stderr, "r3mount: %s: %s\n", arg, strerror(errno));
        return 1;
    }
    bool mounted;
    pid_t pid = find_daemon(mnt, &mounted);
    if (pid > 0 && alive(pid)) {
        /* A program that still maps the file would lose what it
         * writes from now on (its pages could not be written back once the
         * connection is gone): what it wrote so far is written back, and
         * the mount stays, like umount(8) says busy. */
        /* A seeder finalized without a release holds writes made since the
         * pause: they fail now instead of holding this write-back. */
        kill(pid, SIGUSR2);
        /* In a child, bounded: a daemon whose source hangs must not hang -u. */
        pid_t c = fork();
        if (c == 0) {
            sync_files(mnt);
            r3_cover_exit(0);
        }
        int done = c < 0;
        for (int i = 0; i < 6000 && !done; i++) {
            if (waitpid(c, NULL, WNOHANG) != 0)
                done = 1;
            else
                usleep(10000);
        }
        if (!done) {
            kill(c, SIGKILL);
            fprintf(stderr, "r3mount: writing back the files of %s took more than 60 s;"
                    " stopping the daemon anyway\n", mnt);
        }
        pid_t who = 0;
        char path[PATH_MAX + 256];
        if (in_use(mnt, pid, &who, path, sizeof path)) {
            char comm[64] = "?", cp[64];
            snprintf(cp, sizeof cp, "/proc/%d/comm", (int)who);
            FILE *cf = fopen(cp, "r");
            if (cf) {
                if (fgets(comm, sizeof comm, cf))
                    comm[strcspn(comm, "\n")] = '\0';
                fclose(cf);
            }
            fprintf(stderr, "r3mount: %s is busy: process %d (%s) still maps %s;"
                    " what it wrote so far is synced, the mount stays\n", mnt, (int)who, comm, path);
            return 1;
        }
        kill(pid, SIGTERM);
        for (int i = 0; i < 6000 && alive(pid); i++)  /* it syncs first: up to 60 s */
            usleep(10000);
        if (alive(pid)) {
            fprintf(stderr, "r3mount: the daemon %d did not stop in 60 s\n", (int)pid);
            return 1;
        }
        find_daemon(mnt, &mounted);
    }
    if (mounted && umount2(mnt, 0) < 0 && umount2(mnt, MNT_DETACH) < 0) {
        fprintf(stderr, "r3mount: umount %s: %s\n", mnt, strerror(errno));
        return 1;
    }
    if (!mounted && pid <= 0) {
        fprintf(stderr, "r3mount: nothing of r3mount is mounted on %s\n", mnt);
        return 1;
    }
    return 0;
}

/* ---- mount */

struct state {
    struct r3_source *src, *served;
    struct r3_source *inner;          /* --seed: what the seeder's gate wraps */
    struct r3_seeder *seeder;
    struct r3_leech_source *leech;
    struct r3_pipeline *pipe;
    struct r3_nbd_server *srv, *extra;
    struct r3_nbd_mount *mnt;
    char sockdir[64], sock[96], link[PATH_MAX + 64], pidfile[PATH_MAX + 32];
};

static void stop(struct state *s)
{
    /* Finalized but not released (the leecher died, or still pulls): the
     * writes held since the pause get EIO, or the unmount's flush through
     * the gate would wait for ever. */
    r3_seed_halt_writes(s->seeder);
    int rc = r3_nbd_mount_close(s->mnt);
    if (rc < 0)
        fprintf(stderr, "r3mount: %s\n", r3_last_error());
    if (s->link[0])
        unlink(s->link);
    if (s->pidfile[0])
        unlink(s->pidfile);
    r3_nbd_server_stop(s->extra);
    r3_nbd_server_stop(s->srv);
    if (s->seeder) {
        r3_seed_close(s->seeder);     /* closes its gate, s->served */
        s->served = s->inner;
    }
    if (s->served && r3_source_flush(s->served) < 0)
        fprintf(stderr, "r3mount: final flush: %s\n", r3_last_error());
    if (s->leech)
        r3_leech_source_close(s->leech);
    else if (s->pipe)
        r3_pipeline_close(s->pipe);
    else
        r3_source_close(s->src);
    if (s->sockdir[0])
        rmdir(s->sockdir);
}

/* --leech: pull with a progress line on stderr, finalize at o->finalize_at
 * percent or on SIGUSR1. 0: s->served is the leeched source (usable). */
static int leech(const struct opts *o, struct state *s, uint64_t *t_pause)
{
    struct r3_leech_opts lo;
    r3_leech_opts_init(&lo);
    lo.local = o->local;
    lo.pull_workers = o->pull_workers ? o->pull_workers : 4;
    lo.delay_us = o->delay_us;
    int rc = r3_leech_source_open(o->source, &lo, &s->leech, &s->served);
    if (rc < 0)
        return rc;
    sigset_t usr1;               /* (blocked in run: taken here, not by sigwait) */
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigaddset(&usr1, SIGINT);
    sigaddset(&usr1, SIGTERM);
    sigaddset(&usr1, SIGHUP);
    struct r3_leech_progress p;
    uint64_t t0 = r3_now_ns();
    for (;;) {
        r3_leech_source_progress(s->leech, &p);
        if (p.error) {
            if (!o->quiet)
                fprintf(stderr, "\n");   /* end the progress line */
            return r3_error(p.error, "%s", p.message);
        }
        unsigned pct = p.chunks_total ? (unsigned)(p.chunks_local * 100 / p.chunks_total) : 100;
        if (!o->quiet)
            fprintf(stderr, "\rr3mount: pulling %3u%% (%llu of %llu chunks)", pct,
                    (unsigned long long)p.chunks_local, (unsigned long long)p.chunks_total);
        if (p.chunks_local * 100 >= (uint64_t)o->finalize_at * p.chunks_total)
            break;
        struct timespec ts = { 0, 100 * 1000000L };
        int sig = sigtimedwait(&usr1, NULL, &ts);
        if (sig == SIGUSR1)
            break;
        if (sig > 0) {
            if (!o->quiet)
                fprintf(stderr, "\n");
            return r3_error(-EINTR, "interrupted while pulling: nothing was finalized, the seeder"
                            " goes on untouched");
        }
    }
    if (!o->quiet)
        fprintf(stderr, "\n");
    *t_pause = r3_now_ns();
    if ((rc = r3_leech_source_finalize(s->leech)) < 0)
        return rc;
    r3_leech_source_progress(s->leech, &p);
    fprintf(stderr, "r3mount: finalized after %.3f s of pulling: %llu chunks were written on the seeder"
            " since the start, %llu of %llu chunks local (%.1f MiB)\n", (double)(*t_pause - t0) / 1e9,
            (unsigned long long)p.chunks_dirty, (unsigned long long)p.chunks_local,
            (unsigned long long)p.chunks_total, (double)p.bytes_local / 1048576.0);
    return 0;
}

static void seed_log(void *arg, const char *line)
{
    (void)arg;
    fprintf(stderr, "r3mount: seed: %s\n", line);
}

static void seed_released(void *arg, struct r3_region *r)
{
    (void)arg;
    (void)r;
    fprintf(stderr, "r3mount: the leecher has every chunk: writes here fail with EIO from now on\n");
}

/* --seed: serve s->served to leechers; the mount writes through the gate. */
static int seed(const struct opts *o, struct state *s)
{
    struct r3_seed_opts so;
    r3_seed_opts_init(&so);
    so.listen = o->seed;
    so.insecure = o->insecure;
    so.tls_cert = o->tls_cert;
    so.tls_key = o->tls_key;
    so.tls_ca = o->tls_ca;
    so.log = seed_log;
    so.on_release = seed_released;
    struct r3_source *gate = NULL;
    int rc = r3_seed_source_open(s->served, o->chunk, &so, &gate, &s->seeder);
    if (rc < 0)
        return rc;
    s->inner = s->served;
    s->served = gate;
    char a[300];
    if (!o->quiet)
        fprintf(stderr, "r3mount: seeding on %s\n", r3_seed_address(s->seeder, a, sizeof a));
    return 0;
}

static int start(const struct opts *o, struct state *s, char *err, size_t errn)
{
    uint64_t t_pause = 0;
    int rc = o->leech ? leech(o, s, &t_pause) : r3_source_open(o->source, &s->src);
    if (rc == 0 && !o->leech) {
        s->served = s->src;
        if (o->pipeline) {
            rc = r3_pipeline_parse(o->pipeline, s->src, &s->pipe);   /* owns src, also on failure */
            s->served = rc == 0 ? s->pipe->top : NULL;
            if (rc < 0)
                s->src = NULL;
        } else if (!strcmp(o->strategy, "nbd-managed") || o->delay_us) {
            struct r3_pipeline_opts po = {
                .chunk = o->chunk, .pull_workers = o->pull_workers,
                .push_workers = o->push_workers ? o->push_workers : 1,
                .push_interval_ms = o->push_interval_ms, .delay_us = o->delay_us,
            };
            if (strcmp(o->strategy, "nbd-managed") != 0) {
                /* nbd-direct with a delay: only the delay stage */
                struct r3_source *d;
                if ((rc = r3_stage_delay_open(s->src, o->delay_us, &d)) == 0)
                    s->served = s->src = d;
            } else {
                rc = r3_pipeline_open(s->src, &po, &s->pipe);
                s->served = rc == 0 ? s->pipe->top : NULL;
                if (rc < 0)
                    s->src = NULL;
            }
        }
    }
    if (rc == 0 && o->seed)
        rc = seed(o, s);
    if (rc == 0) {
        snprintf(s->sockdir, sizeof s->sockdir, "/tmp/r3mount.XXXXXX");
        if (!mkdtemp(s->sockdir)) {
            s->sockdir[0] = 0;
            rc = r3_error(-errno, "mkdtemp: %s", strerror(errno));
        }
    }
    struct r3_nbd_export e = { .name = "", .src = s->served, .readonly = o->readonly };
    if (rc == 0) {
        snprintf(s->sock, sizeof s->sock, "%s/nbd.sock", s->sockdir);
        struct r3_nbd_server_opts so = { .listen = s->sock, .exports = &e, .nexports = 1,
                                         .workers = o->workers, .log = log_line };
        rc = r3_nbd_server_start(&so, &s->srv);
    }
    if (rc == 0 && o->nbd_listen) {
        struct r3_nbd_server_opts so = { .listen = o->nbd_listen, .exports = &e, .nexports = 1,
                                         .workers = o->workers, .list_exports = o->list_exports,
                                         .insecure = o->insecure, .log = log_line };
        rc = r3_nbd_server_start(&so, &s->extra);
    }
    char fsname[64];
    snprintf(fsname, sizeof fsname, "r3mount:%d", (int)getpid());
    if (rc == 0) {
        struct r3_nbd_mount_opts mo = {
            .client = { .unix_path = s->sock, .export_name = "", .timeout_ms = R3_NBD_NO_TIMEOUT },
            .mode = r3_nbd_mount_mode_parse(o->mode), .mountpoint = o->mountpoint,
            .name = o->name, .fsname = fsname, .fuse_threads = o->fuse_threads,
        };
        rc = mo.mode < 0 ? mo.mode : r3_nbd_mount_open(&mo, &s->mnt);
    }
    if (rc == 0 && r3_nbd_mount_is_kernel(s->mnt)) {
        /* A device has no mount to find it by: leave a link and a pid file. */
        snprintf(s->link, sizeof s->link, "%s/%s", o->mountpoint, o->name);
        snprintf(s->pidfile, sizeof s->pidfile, "%s/.r3mount.pid", o->mountpoint);
        FILE *pf = fopen(s->pidfile, "w");
        if (pf) {
            fprintf(pf, "%d\n", (int)getpid());
            fclose(pf);
        }
        unlink(s->link);
        if (symlink(r3_nbd_mount_path(s->mnt), s->link) < 0)
            s->link[0] = 0;
    }
    if (rc == 0 && o->leech)
        fprintf(stderr, "r3mount: downtime %.1f ms (finalize asked -> file usable here)\n",
                (double)(r3_now_ns() - t_pause) / 1e6);
    if (rc < 0) {
        snprintf(err, errn, "%s", r3_last_error());
        stop(s);
    }
    return rc;
}

/* --leech: after the file appeared, the rest comes in; then RELEASE. */
static atomic_bool leech_quit;        /* set by main, read by leech_rest (a thread, not a handler) */

static void *leech_rest(void *arg)
{
    struct state *s = arg;
    uint64_t t0 = r3_now_ns();
    struct r3_leech_progress q;
    while (!atomic_load(&leech_quit) && r3_leech_source_progress(s->leech, &q) == 0 && !q.error &&
           q.chunks_local < q.chunks_total)
        usleep(50 * 1000);
    if (atomic_load(&leech_quit))
        return NULL;
    if (r3_leech_source_wait(s->leech) < 0) {
        fprintf(stderr, "r3mount: %s\n", r3_last_error());
    } else {
        struct r3_leech_progress p;
        r3_leech_source_progress(s->leech, &p);
        fprintf(stderr, "r3mount: every chunk is local (%llu chunks, %.1f MiB) %.3f s after the finalize;"
                " the seeder was released\n", (unsigned long long)p.chunks_total,
                (double)p.bytes_local / 1048576.0, (double)(r3_now_ns() - t0) / 1e9);
    }
    return NULL;
}

static atomic_bool unmounted;         /* set by watch_unmount before it wakes main */

static void *watch_unmount(void *arg)
{
    r3_nbd_mount_wait(arg);
    atomic_store(&unmounted, true);
    kill(getpid(), SIGUSR1);      /* unmounted from outside: wake main */
    return NULL;
}

static int run(const struct opts *o, int ready_fd)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct state s = { 0 };
    char err[1024] = "";
    int rc = start(o, &s, err, sizeof err);
    char msg[1100];
    if (rc < 0)
        snprintf(msg, sizeof msg, "E%s", err);
    else
        snprintf(msg, sizeof msg, "O%s", s.link[0] ? s.link : r3_nbd_mount_path(s.mnt));
    if (ready_fd >= 0) {
        ssize_t w = write(ready_fd, msg, strlen(msg));
        (void)w;
        close(ready_fd);
        /* The daemon lets go of the caller's stderr (a caller reading it to
         * the end would wait forever); later messages go to --log. */
        int lf = open(o->log ? o->log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (lf >= 0) {
            dup2(lf, 2);
            close(lf);
        }
    } else if (rc < 0) {
        fprintf(stderr, "r3mount: %s\n", err);
    } else if (!o->quiet) {
        printf("%s\n", msg + 1);
        fflush(stdout);
    }
    if (rc < 0)
        return 1;
    pthread_t t;
    bool watching = !r3_nbd_mount_is_kernel(s.mnt) && r3_thread_create(&t, watch_unmount, s.mnt) == 0;
    pthread_t rest;
    bool resting = s.leech && r3_thread_create(&rest, leech_rest, &s) == 0;
    int sig;
    /* --leech: a SIGUSR1 that asked to finalize but came after the finalize
     * at --finalize-at (forwarded by the parent, or sent late) is not a
     * stop: only the watcher's one after an unmount from outside is. */
    /* SIGUSR2 (from r3mount -u, before it writes back the page cache): A
     * is going away, so a seeder's writes held since FINALIZE fail now
     * (see stop); the daemon goes on until SIGTERM. */
    for (;;) {
        sigwait(&set, &sig);
        if (sig == SIGUSR2)
            r3_seed_halt_writes(s.seeder);
        else if (!(sig == SIGUSR1 && s.leech && !atomic_load(&unmounted)))
            break;
    }
    if (resting) {
        atomic_store(&leech_quit, true);
        pthread_join(rest, NULL);
    }
    stop(&s);                      /* unmount (waking the watcher) and flush */
    if (watching)
        pthread_join(t, NULL);
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_STRAT = 256, O_CHUNK, O_PULL, O_PUSH, O_IVAL, O_DELAY, O_MOUNT, O_NAME, O_FT, O_W, O_NBD, O_RO,
           O_LOG, O_LIST, O_INSEC, O_SEED, O_LEECH, O_LOCAL, O_FAT,
           O_TCERT, O_TKEY, O_TCA, O_PIPE };
    static const struct option lo[] = {
        { "strategy", 1, 0, O_STRAT }, { "chunk", 1, 0, O_CHUNK }, { "pull-workers", 1, 0, O_PULL },
        { "push-workers", 1, 0, O_PUSH }, { "push-interval", 1, 0, O_IVAL },
        { "delay", 1, 0, O_DELAY }, { "pipeline", 1, 0, O_PIPE }, { "mount", 1, 0, O_MOUNT }, { "name", 1, 0, O_NAME },
        { "fuse-threads", 1, 0, O_FT }, { "workers", 1, 0, O_W }, { "nbd-listen", 1, 0, O_NBD },
        { "read-only", 0, 0, O_RO }, { "log", 1, 0, O_LOG }, { "list-exports", 0, 0, O_LIST },
        { "insecure", 0, 0, O_INSEC }, { "seed", 1, 0, O_SEED }, { "leech", 0, 0, O_LEECH },
        { "local", 1, 0, O_LOCAL }, { "finalize-at", 1, 0, O_FAT }, { "tls-cert", 1, 0, O_TCERT },
        { "tls-key", 1, 0, O_TKEY }, { "tls-ca", 1, 0, O_TCA },
        { "foreground", 0, 0, 'f' }, { "unmount", 0, 0, 'u' }, { "quiet", 0, 0, 'q' },
        { "help", 0, 0, 'h' }, { "version", 0, 0, 'V' }, { 0, 0, 0, 0 } };
    struct opts o = { .strategy = "nbd-direct", .name = "disk", .mode = "auto", .pull_workers = 4,
                      .push_workers = 1, .finalize_at = 100 };
    bool unmount = false;
    int c, li = -1;
    uint64_t v;
    opterr = 0;                   /* our own two-line messages */
    while ((c = getopt_long(argc, argv, ":fuqhV", lo, &li)) != -1) {
        const char *why = NULL;   /* what is wrong with the value */
        switch (c) {
        case O_STRAT:
            o.strategy = optarg;
            if (strcmp(optarg, "nbd-direct") && strcmp(optarg, "nbd-managed"))
                why = "is not nbd-direct or nbd-managed";
            break;
        case O_CHUNK:
            if (r3_parse_size(optarg, &v) < 0 || !r3_is_pow2(v) || v < 4096 || v > (64u << 20))
                why = "is not a power of two between 4K and 64M";
            o.chunk = (uint32_t)v;
            break;
        case O_PULL:
        case O_PUSH:
            if (r3_parse_size(optarg, &v) < 0 || v > 256)
                why = "is not a number from 0 to 256";
            *(c == O_PULL ? &o.pull_workers : &o.push_workers) = (unsigned)v;
            break;
        case O_IVAL:
        case O_DELAY: {
            int rc = parse_duration_us(optarg, &v);
            if (rc == -EDOM)
                why = "needs a unit (us, ms, s or m), e.g. 500ms";
            else if (rc < 0 || (c == O_IVAL && (v < 1000 || v > 3600000000u)) || (c == O_DELAY && v > 10000000))
                why = c == O_IVAL ? "is not a duration from 1ms to 1h" : "is not a duration up to 10s";
            else if (c == O_IVAL)
                o.push_interval_ms = (unsigned)(v / 1000);
            else
                o.delay_us = v;
            break;
        }
        case O_MOUNT:
            o.mode = optarg;
            if (r3_nbd_mount_mode_parse(optarg) < 0)
                why = "is not auto, fuse or kernel";
            break;
        case O_NAME:
            o.name = optarg;
            if (!*optarg || strchr(optarg, '/') || !strcmp(optarg, ".") || !strcmp(optarg, ".."))
                why = "is not a file name";
            break;
        case O_FT:
        case O_W:
            if (r3_parse_size(optarg, &v) < 0 || v < 1 || v > 64)
                why = "is not a number from 1 to 64";
            *(c == O_FT ? &o.fuse_threads : &o.workers) = (unsigned)v;
            break;
        case O_NBD: o.nbd_listen = optarg; break;
        case O_LIST: o.list_exports = true; break;
        case O_INSEC: o.insecure = true; break;
        case O_RO: o.readonly = true; break;
        case O_PIPE: o.pipeline = optarg; break;
        case O_SEED: o.seed = optarg; break;
        case O_LEECH: o.leech = true; break;
        case O_LOCAL: o.local = optarg; break;
        case O_TCERT: o.tls_cert = optarg; break;
        case O_TKEY: o.tls_key = optarg; break;
        case O_TCA: o.tls_ca = optarg; break;
        case O_FAT:
            if (r3_parse_size(optarg, &v) < 0 || v > 100)
                why = "is not a percentage from 0 to 100";
            o.finalize_at = (unsigned)v;
            break;
        case O_LOG: o.log = optarg; break;
        case 'f': o.foreground = true; break;
        case 'u': unmount = true; break;
        case 'q': o.quiet = true; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("r3mount (r3) %s\n", PACKAGE_VERSION); return 0;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            if (optopt && optopt < 256)
                return usage_error("unknown option '-%c'", optopt);
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
        if (why)
            return usage_error("--%s '%s' %s", lo[li].name, optarg, why);
        li = -1;
    }
    if (unmount) {
        if (optind != argc - 1)
            return usage_error("%s", optind == argc ? "-u needs a MOUNTPOINT" : "-u takes one MOUNTPOINT only");
        return do_unmount(argv[optind]);
    }
    if (optind > argc - 2)
        return usage_error("%s", optind == argc ? "missing SOURCE and MOUNTPOINT" : "missing MOUNTPOINT");
    if (optind < argc - 2)
        return usage_error("unexpected argument '%s'", argv[optind + 2]);
    if (o.list_exports && !o.nbd_listen)
        return usage_error("--list-exports needs --nbd-listen");
    if (o.insecure && !o.nbd_listen && !o.seed)
        return usage_error("--insecure needs --nbd-listen or --seed");
    if ((o.tls_cert || o.tls_key || o.tls_ca) && !o.seed)
        return usage_error("--tls-cert, --tls-key and --tls-ca need --seed (a leecher gives its "
                           "certificates in the r3s:// URI)");
    if (!o.tls_cert != !o.tls_key)
        return usage_error("--tls-cert and --tls-key go together");
    if (o.tls_ca && !o.tls_cert)
        return usage_error("--tls-ca needs --tls-cert and --tls-key");
    if (o.seed && o.leech)
        return usage_error("--seed and --leech do not go together");
    if ((o.local || o.finalize_at != 100) && !o.leech)
        return usage_error("%s needs --leech", o.local ? "--local" : "--finalize-at");
    if (o.leech && strcmp(o.strategy, "nbd-direct") != 0)
        return usage_error("--leech serves its own cache: --strategy does not apply");
    if (o.pipeline && o.leech)
        return usage_error("--leech serves its own cache: --pipeline does not apply");
    if (o.pipeline && o.delay_us)
        return usage_error("--pipeline replaces the stages --delay would add: put 'delay:us=N' in it");
    if (o.nbd_listen) {
        /* A bad address is a usage error, found before anything starts. */
        struct r3_net_addr a;
        char spec[300];
        snprintf(spec, sizeof spec, "%s%s", o.nbd_listen[0] == '/' ? "unix:" : "", o.nbd_listen);
        if (r3_net_addr_parse(spec, 10809, R3_NET_PASSIVE, &a) < 0)
            return usage_error("--nbd-listen: %s", r3_last_error());
        if (!o.insecure && !r3_net_addr_is_loopback(&a))
            return usage_error("--nbd-listen %s is not a loopback address and r3mount has no TLS: "
                               "anyone who reaches it could read and write the source (add --insecure "
                               "to allow it)", o.nbd_listen);
    }
    o.source = argv[optind];
    o.mountpoint = argv[optind + 1];
    struct stat st;
    static char mp[PATH_MAX];
    if (!realpath(o.mountpoint, mp) || stat(mp, &st) < 0 || !S_ISDIR(st.st_mode))
        return usage_error("MOUNTPOINT '%s' is not a directory", o.mountpoint);
    if (is_mount_point(mp)) {
        fprintf(stderr, "r3mount: %s is already a mount point: unmount it first or choose another "
                "directory\n", mp);
        return 1;
    }
    o.mountpoint = mp;
    if (o.foreground)
        return run(&o, -1);
    /* Daemon: fork before any thread exists; the parent waits for the
     * child's word that the file is ready (or why it is not). */
    int p[2];
    if (pipe(p) < 0) {
        perror("r3mount: pipe");
        return 1;
    }
    /* --leech: a SIGUSR1 to the waiting parent finalizes the daemon's leech
     * now. Taken from a signalfd polled beside the pipe, not by a handler:
     * a handler may run only once the blocking read() returns (it does under
     * TSan), which is after the daemon finalized by itself at 100 %. */
    int sfd = -1;
    if (o.leech) {
        sigset_t u;
        sigemptyset(&u);
        sigaddset(&u, SIGUSR1);
        /* Ctrl-C or SIGTERM while it pulls stops the daemon (it left our
         * session: a terminal's SIGINT reaches only us) */
        sigaddset(&u, SIGINT);
        sigaddset(&u, SIGTERM);
        sigaddset(&u, SIGHUP);
        sigprocmask(SIG_BLOCK, &u, NULL);      /* the daemon blocks them too (run) */
        if ((sfd = signalfd(-1, &u, SFD_CLOEXEC)) < 0) {
            perror("r3mount: signalfd");
            return 1;
        }
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("r3mount: fork");
        return 1;
    }
    if (pid == 0) {
        if (sfd >= 0)
            close(sfd);
        close(p[0]);
        setsid();
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
            if (nul > 2)
                close(nul);
        }
        int rc = chdir("/");
        (void)rc;
        int st = run(&o, p[1]);
        r3_cover_exit(st);
    }
    close(p[1]);
    char msg[1200];
    ssize_t n = 0, r = 1;
    while (r > 0) {
        struct pollfd pf[2] = { { .fd = p[0], .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
        if (poll(pf, sfd >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        struct signalfd_siginfo si;
        if (sfd >= 0 && (pf[1].revents & POLLIN) && read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
            kill(pid, si.ssi_signo == SIGUSR1 ? SIGUSR1 : SIGTERM);
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR))
            if ((r = read(p[0], msg + n, sizeof msg - 1 - (size_t)n)) > 0)
                n += r;
    }
    if (sfd >= 0)
        close(sfd);
    msg[n > 0 ? n : 0] = 0;
    close(p[0]);
    if (n <= 0 || msg[0] != 'O') {
        fprintf(stderr, "r3mount: %s\n", n > 1 ? msg + 1 : "the daemon died while mounting");
        waitpid(pid, NULL, 0);
        return 1;
    }
    if (!o.quiet)
        printf("%s\n", msg + 1);
    return 0;
}
