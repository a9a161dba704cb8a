/* The mount helper process (see helper.h). On the control socket the owner
 * sends one byte ("mount now"); the helper answers with one message: a
 * 4-byte status (0 or -errno) and the file's path or the error sentence.
 * After that, EOF means "unmount and go". EOF before the byte: just go. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "internal.h"
#include "nbd/helper.h"

#define HELPER_READY_MS 30000

struct r3_nbd_helper {
    pid_t pid;
    int ctl;
    char path[PATH_MAX];
};

struct ready_msg {
    int32_t status;
    char text[PATH_MAX];
};

/* The helper's life: detach, mount, report, wait for EOF, unmount. */
static __attribute__((noreturn)) void helper_main(const struct r3_nbd_mount_opts *o, int ctl)
{
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

    char c;
    ssize_t got;
    while ((got = read(ctl, &c, 1)) < 0 && errno == EINTR)
        ;
    if (got != 1)
        _exit(0);                           /* the owner gave up before the mount */
    struct ready_msg msg = { 0 };
    struct r3_nbd_mount *m = NULL;
    int rc = r3_nbd_mount_open(o, &m);
    msg.status = rc;
    snprintf(msg.text, sizeof msg.text, "%s", rc < 0 ? r3_last_error() : r3_nbd_mount_path(m));
    if (write(ctl, &msg, sizeof msg) != (ssize_t)sizeof msg || rc < 0) {
        if (m)
            r3_nbd_mount_close(m);
        _exit(1);
    }
    while (read(ctl, &c, 1) > 0 || errno == EINTR)
        ;                                   /* until the owner closes or dies */
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
    _exit(rc < 0 ? 1 : 0);
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
    h->pid = fork();
    if (h->pid == 0) {
        close(sv[0]);
        helper_main(o, sv[1]);
    }
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

int r3_nbd_helper_mount(struct r3_nbd_helper *h)
{
    if (send(h->ctl, "m", 1, MSG_NOSIGNAL) != 1)
        return r3_error(-EIO, "nbd mount: the mount helper is gone");
    /* Wait for its one message, bounded in time. */
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
            snprintf(h->path, sizeof h->path, "%s", msg.text);
    }
    return rc;
}

const char *r3_nbd_helper_path(const struct r3_nbd_helper *h)
{
    return h->path;
}

int r3_nbd_helper_stop(struct r3_nbd_helper *h)
{
    if (!h)
        return 0;
    close(h->ctl);
    int st = 0, rc = 0;
    while (waitpid(h->pid, &st, 0) < 0) {
        if (errno != EINTR) {
            rc = r3_error(-errno, "nbd mount: waiting for the mount helper: %s", strerror(errno));
            break;
        }
    }
    if (rc == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        rc = r3_error(-EIO, "nbd mount: the mount helper did not unmount cleanly");
    free(h);
    return rc;
}
