/* SPDX-License-Identifier: BSD-3-Clause */
/* The mount helper process (see helper.h). On the control socket the owner
 * sends one byte ("the server listens"); the helper answers with two
 * messages, each a 4-byte status (0 or -errno) and a text: MOUNTED (the
 * file's path, or the error sentence) and READY (connected to the server).
 * A FUSE mount whose size is known is made at once, while the owner still
 * starts its server (MOUNTED is then sent before the byte comes): the owner
 * opens and maps the file while the helper connects. After READY, EOF means
 * "unmount and go"; EOF before the byte: unmount (if mounted) and go.
 * The owner's death is seen in every phase: its pidfd in each wait, signs
 * of dying (owner_dying) while mounted, and a helper that finds another
 * parent than the owner at its start goes at once. Not PR_SET_PDEATHSIG:
 * it fires when the forking *thread* ends, and a region may outlive the
 * thread that opened it. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <dirent.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>
#include "internal.h"
#include "cover.h"
#include "nbd/helper.h"

#define HELPER_READY_MS 30000
#define OWNER_CHECK_MS 200
#define HELPER_STOP_MS 30000
#define FIRST_READ_WAIT_MS 20   /* see r3_nbd_mount_grow */

/* Is the owner dying? A thread of a dying owner may be stuck in a request
 * to our mount (a fault, or the write-back when its mapping goes at exit)
 * while the NBD server that would answer, threads of the owner too, is
 * gone: the owner never ends and never closes our control socket. The
 * signs: SIGKILL pending on one of its threads (a fatal signal kills the
 * others with it), or every thread left exiting (PF_EXITING) but for a
 * leader that is already a zombie, or no such process. A leader that only
 * ended its own thread while others work is not a sign. */
#define PF_EXITING_FLAG 0x4u
static bool owner_dying(pid_t owner)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/task", (int)owner);
    DIR *d = opendir(p);
    if (!d)
        return true;
    bool killed = false, all_exiting = true;
    struct dirent *e;
    while (!killed && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char sp[128], line[1024];
        snprintf(sp, sizeof sp, "/proc/%d/task/%.16s/status", (int)owner, e->d_name);
        FILE *f = fopen(sp, "r");
        while (f && !killed && fgets(line, sizeof line, f)) {
            unsigned long long mask;
            if ((sscanf(line, "SigPnd: %llx", &mask) == 1 || sscanf(line, "ShdPnd: %llx", &mask) == 1) &&
                (mask & (1ull << (SIGKILL - 1))))
                killed = true;
        }
        if (f)
            fclose(f);
        snprintf(sp, sizeof sp, "/proc/%d/task/%.16s/stat", (int)owner, e->d_name);
        f = fopen(sp, "r");
        char st = 0;
        unsigned flags = 0;
        if (f && fgets(line, sizeof line, f)) {
            char *rp = strrchr(line, ')');
            if (!rp || sscanf(rp + 1, " %c %*d %*d %*d %*d %*d %u", &st, &flags) != 2)
                st = 0;
        }
        if (f)
            fclose(f);
        if (st && st != 'Z' && st != 'X' && !(flags & PF_EXITING_FLAG))
            all_exiting = false;
    }
    closedir(d);
    return killed || all_exiting;
}

/* The guard: a process of its own that outlives the helper and, when the
 * helper is gone however it went (killed too), detaches the mount and
 * removes the scratch directory. Without it a killed helper leaves a FUSE
 * mount whose every access says "Transport endpoint is not connected". */
static void start_guard(const struct r3_nbd_mount_opts *o)
{
    int pp[2];
    if (!o->mountpoint || pipe(pp) < 0)
        return;
    pid_t g = fork();
    if (g != 0) {
        close(pp[0]);                       /* the helper keeps the write end until it dies */
        if (g < 0)
            close(pp[1]);
        return;
    }
    close(pp[1]);
    close_range(0, (unsigned)pp[0] - 1, 0);
    close_range((unsigned)pp[0] + 1, ~0u, 0);
    char c;
    while (read(pp[0], &c, 1) < 0 && errno == EINTR)
        ;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", o->mountpoint);
    if (umount2(dir, MNT_DETACH) < 0 && errno == EPERM) {
        pid_t u = fork();
        if (u == 0) {
            execlp("fusermount3", "fusermount3", "-u", "-z", "-q", dir, (char *)NULL);
            r3_cover_exit(127);
        }
        if (u > 0)
            waitpid(u, NULL, 0);
    }
    if (o->client.unix_path)
        unlink(o->client.unix_path);
    rmdir(dir);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        rmdir(dir);
    }
    r3_cover_exit(0);
}

struct r3_nbd_helper {
    pid_t pid;
    int ctl;
    char path[PATH_MAX];
};

struct ready_msg {
    int32_t status;
    char text[PATH_MAX];
};

static int send_msg(int ctl, int status, const char *text)
{
    struct ready_msg msg = { .status = status };
    snprintf(msg.text, sizeof msg.text, "%s", text);
    return write(ctl, &msg, sizeof msg) == (ssize_t)sizeof msg ? 0 : -EPIPE;
}

/* The owner's pidfd (readable once it has ended), or -1 where the kernel
 * has none (then EOF and owner_dying alone tell). */
static int owner_pidfd(pid_t owner)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, owner, 0);
#else
    (void)owner;
    return -1;
#endif
}

/* Wait for one byte on ctl: 1 got it, 0 EOF or the owner ended. */
static int wait_byte(int ctl, int pfd)
{
    for (;;) {
        struct pollfd p[2] = { { .fd = ctl, .events = POLLIN }, { .fd = pfd, .events = POLLIN } };
        int n = poll(p, pfd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return 0;
        if (p[0].revents) {
            char c;
            ssize_t got = read(ctl, &c, 1);
            if (got < 0 && errno == EINTR)
                continue;
            return got == 1;
        }
        if (p[1].revents)
            return 0;
    }
}

/* The helper's life: detach, mount, report, wait for EOF, unmount. */
void r3_nbd_helper_run(const struct r3_nbd_mount_opts *o, int ctl, pid_t owner)
{
    if (getppid() != owner)          /* the owner ended before we started */
        r3_cover_exit(0);
    /* Leave the owner's session (no terminal signals), its fds and handlers. */
    setsid();
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
    }
    if (ctl != 3) {
        dup2(ctl, 3);
        ctl = 3;
    }
    close_range(4, ~0u, 0);
    r3_thread_mark_internal();
    int pfd = owner_pidfd(owner);
    if (getppid() != owner)
        r3_cover_exit(0);

    char c;
    struct r3_nbd_mount *m = NULL;
    int rc = o->size ? r3_nbd_mount_prepare(o, &m) : -EOPNOTSUPP;
    bool early = rc != -EOPNOTSUPP;
    if (early && rc == 0 && send_msg(ctl, rc, r3_nbd_mount_path(m)) < 0) {
        /* the owner gave up before the mount was ready: unmounted, done */
        r3_nbd_mount_close(m);
        r3_cover_exit(0);
    }
    if (early && rc < 0) {
        send_msg(ctl, rc, r3_last_error());
        if (m)
            r3_nbd_mount_close(m);
        r3_cover_exit(1);
    }
    /* The guard, forked while the owner opens the mounted file (before the
     * mount it took 0.5-0.9 ms of exp. 6's open); it is up before "ready".
     * A helper killed before that leaves its mount to the owner, whose
     * failed open detaches it (nbd/strategy.c). */
    start_guard(o);
    if (!wait_byte(ctl, pfd)) {             /* the owner gave up (or ended) before the server was up */
        if (m)
            r3_nbd_mount_close(m);
        r3_cover_exit(0);
    }
    if (early) {
        rc = r3_nbd_mount_connect(m, o);
    } else {
        rc = r3_nbd_mount_open(o, &m);
        if (send_msg(ctl, rc, rc < 0 ? r3_last_error() : r3_nbd_mount_path(m)) < 0 && rc == 0)
            rc = -EPIPE;
    }
    if (send_msg(ctl, rc, rc < 0 ? r3_last_error() : "") < 0 || rc < 0) {
        if (m)
            r3_nbd_mount_close(m);
        r3_cover_exit(1);
    }
    /* The other FUSE threads once the owner's first read is answered (or
     * 20 ms): starting them took about 1 ms of exp. 6's open to first byte
     * on two cores. */
    r3_nbd_mount_grow(m, FIRST_READ_WAIT_MS);
    /* Until the owner closes or dies; a dying owner may be waiting on the
     * mount itself (see owner_dying): unmounting aborts its requests. */
    for (;;) {
        struct pollfd p[2] = { { .fd = ctl, .events = POLLIN }, { .fd = pfd, .events = POLLIN } };
        int n = poll(p, pfd >= 0 ? 2 : 1, OWNER_CHECK_MS);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0 && p[1].revents)
            break;                          /* the owner has ended */
        if (n > 0 && p[0].revents) {
            ssize_t r = read(ctl, &c, 1);
            if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
                break;
        } else if (n == 0 && owner_dying(owner)) {
            break;
        }
    }
    rc = r3_nbd_mount_close(m);
    /* An owner that exec'd or died leaves its scratch directory: the socket,
     * the mount point and their directory (all made by the strategy). */
    if (o->client.unix_path)
        unlink(o->client.unix_path);
    if (o->mountpoint) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", o->mountpoint);
        rmdir(dir);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
            rmdir(dir);
        }
    }
    r3_cover_exit(rc < 0 ? 1 : 0);
}

const char *r3_nbd_helper_program(void)
{
#ifdef R3_NBD_HELPER_BUILD
    if (access(R3_NBD_HELPER_BUILD, X_OK) == 0)
        return R3_NBD_HELPER_BUILD;
#endif
#ifdef R3_NBD_HELPER_INSTALLED
    if (access(R3_NBD_HELPER_INSTALLED, X_OK) == 0)
        return R3_NBD_HELPER_INSTALLED;
#endif
    return NULL;
}

/* r3-nbd-helper's command line for o (all of it made before the fork: the
 * child only execs), or NULL where o cannot be said there (TCP, TLS: never
 * a region's own mount) or memory is short. */
#define HELPER_ARGS 20
static char **helper_argv(const char *prog, const struct r3_nbd_mount_opts *o, pid_t owner)
{
    const struct r3_nbd_client_opts *c = &o->client;
    if (c->host || c->tls || c->tls_dir || c->tls_psk || c->tls_user || c->handshake_only || !c->unix_path)
        return NULL;
    char **v = calloc(HELPER_ARGS, sizeof *v);
    int k = 0;
    bool ok = v != NULL;
#define ARG(...) (ok = ok && asprintf(&v[k++], __VA_ARGS__) >= 0)
    ARG("%s", prog);
    ARG("--owner=%d", (int)owner);
    ARG("--unix=%s", c->unix_path);
    ARG("--export=%s", c->export_name ? c->export_name : "");
    ARG("--max-inflight=%u", c->max_inflight);
    ARG("--connect-timeout=%u", c->connect_timeout_ms);
    ARG("--request-timeout=%u", c->timeout_ms);
    ARG("--no-structured=%d", c->no_structured ? 1 : 0);
    ARG("--mode=%d", o->mode);
    if (o->mountpoint)
        ARG("--mountpoint=%s", o->mountpoint);
    if (o->name)
        ARG("--name=%s", o->name);
    if (o->fsname)
        ARG("--fsname=%s", o->fsname);
    ARG("--fuse-threads=%u", o->fuse_threads);
    ARG("--device-timeout=%u", o->timeout_ms);
    ARG("--size=%llu", (unsigned long long)o->size);
    ARG("--readonly=%d", o->readonly ? 1 : 0);
#undef ARG
    if (!ok && v) {
        for (int i = 0; i < HELPER_ARGS; i++)
            free(v[i]);
        free(v);
        v = NULL;
    }
    return v;
}

/* Start the helper program with its control socket as fd 3. posix_spawn
 * shares our memory until the exec (no copy of the page tables, which a
 * fork of a large owner takes milliseconds to make) and is safe while
 * other threads run. -1 when it cannot (the caller forks instead). */
static pid_t spawn(char **argv, char **envp, int ctl)
{
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0)
        return -1;
    pid_t pid = -1;
    /* dup2 onto itself clears close-on-exec (glibc >= 2.29) */
    if (posix_spawn_file_actions_adddup2(&fa, ctl, 3) == 0 && posix_spawn(&pid, argv[0], &fa, NULL, argv, envp) != 0)
        pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

int r3_nbd_helper_spawn(const struct r3_nbd_mount_opts *o, struct r3_nbd_helper **out)
{
    struct r3_nbd_helper *h = calloc(1, sizeof *h);
    int sv[2];
    if (!h)
        return r3_error(-ENOMEM, "nbd mount: out of memory");
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        free(h);
        return r3_error(-errno, "nbd mount: socketpair: %s", strerror(errno));
    }
    pid_t owner = getpid();
    const char *prog = r3_nbd_helper_program();
    char **argv = prog ? helper_argv(prog, o, owner) : NULL;
    /* The helper's environment: ours without LD_PRELOAD (r3run's preload
     * would set up a region inside the helper itself). */
    extern char **environ;
    size_t ne = 0;
    while (environ && environ[ne])
        ne++;
    char **envp = argv ? calloc(ne + 1, sizeof *envp) : NULL;
    for (size_t i = 0, k = 0; envp && i < ne; i++)
        if (strncmp(environ[i], "LD_PRELOAD=", 11))
            envp[k++] = environ[i];
    h->pid = argv && envp ? spawn(argv, envp, sv[1]) : -1;
    if (h->pid < 0) {
        h->pid = fork();
        if (h->pid == 0) {
            close(sv[0]);
            r3_nbd_helper_run(o, sv[1], owner);     /* no program: this copy is the helper */
        }
    }
    for (int i = 0; argv && i < HELPER_ARGS; i++)
        free(argv[i]);
    free(argv);
    free(envp);
    close(sv[1]);
    h->ctl = sv[0];
    if (h->pid < 0) {
        int e = errno;
        close(h->ctl);
        free(h);
        return r3_error(-e, "nbd mount: cannot start the mount helper: %s", strerror(e));
    }
    *out = h;
    return 0;
}

/* One message from the helper, bounded in time: 0 and the text, or -errno
 * with the helper's sentence. */
static int recv_msg(struct r3_nbd_helper *h, char *text, size_t n)
{
    struct ready_msg msg;
    size_t got = 0;
    int rc = 0;
    uint64_t deadline = r3_now_ns() + (uint64_t)HELPER_READY_MS * 1000000u;
    while (got < sizeof msg && rc == 0) {
        int64_t left = (int64_t)(deadline - r3_now_ns()) / 1000000;
        struct pollfd p = { .fd = h->ctl, .events = POLLIN };
        int n = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = r3_error(-ETIMEDOUT, "nbd mount: the mount was not ready within %d s",
                          HELPER_READY_MS / 1000);
            break;
        }
        ssize_t r = read(h->ctl, (char *)&msg + got, sizeof msg - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            rc = r3_error(-EIO, "nbd mount: the mount helper died before the mount was ready");
        else
            got += (size_t)r;
    }
    if (rc == 0) {
        msg.text[sizeof msg.text - 1] = '\0';
        if (msg.status != 0)
            rc = r3_error(msg.status < 0 ? msg.status : -EIO, "%s", msg.text);
        else
            snprintf(text, n, "%s", msg.text);
    }
    return rc;
}

int r3_nbd_helper_mount(struct r3_nbd_helper *h)
{
    /* A helper whose early mount failed has said why and gone: read that
     * even when the byte cannot be sent. */
    bool sent = send(h->ctl, "m", 1, MSG_NOSIGNAL) == 1;
    int rc = recv_msg(h, h->path, sizeof h->path);
    if (rc == 0 && !sent)
        rc = r3_error(-EIO, "nbd mount: the mount helper is gone");
    return rc;
}

int r3_nbd_helper_ready(struct r3_nbd_helper *h)
{
    char text[8];
    return recv_msg(h, text, sizeof text);
}

const char *r3_nbd_helper_path(const struct r3_nbd_helper *h)
{
    return h->path;
}

int r3_nbd_helper_ended(const struct r3_nbd_helper *h, char *why, size_t n)
{
    siginfo_t si = { 0 };
    if (!h || waitid(P_PID, (id_t)h->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0)
        return 0;
    if (si.si_code == CLD_EXITED)
        snprintf(why, n, "exited with status %d", si.si_status);
    else
        snprintf(why, n, "was killed by signal %d (%s)", si.si_status, strsignal(si.si_status));
    return 1;
}

int r3_nbd_helper_stop(struct r3_nbd_helper *h)
{
    if (!h)
        return 0;
    close(h->ctl);
    int st = 0, rc = 0;
    /* Bounded: the mapping is gone, so unmounting is quick; a helper stuck
     * past that is killed (its guard then detaches the mount). */
    uint64_t deadline = r3_now_ns() + (uint64_t)HELPER_STOP_MS * 1000000u;
    bool killed = false;
    for (;;) {
        pid_t w = waitpid(h->pid, &st, killed ? 0 : WNOHANG);
        if (w == h->pid)
            break;
        if (w < 0 && errno != EINTR) {
            rc = r3_error(-errno, "nbd mount: waiting for the mount helper: %s", strerror(errno));
            break;
        }
        if (w == 0 && r3_now_ns() > deadline) {
            kill(h->pid, SIGKILL);
            killed = true;
        } else if (w == 0) {
            usleep(2000);
        }
    }
    if (rc == 0 && killed)
        rc = r3_error(-ETIMEDOUT, "nbd mount: the mount helper did not end within %d s of being told;"
                      " it was killed", HELPER_STOP_MS / 1000);
    else if (rc == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        rc = r3_error(-EIO, "nbd mount: the mount helper did not unmount cleanly");
    free(h);
    return rc;
}
