/* SPDX-License-Identifier: BSD-3-Clause */
/* struct r3_io: the connection type. The socket is always non-blocking and
 * every wait goes through poll(), bounded by the per-wait timeout and the
 * absolute deadline of that direction, so a silent peer is an -ETIMEDOUT
 * with a sentence, never a hang. The TLS half (SSL_read/SSL_write under
 * io->mu) is in tls.c; this file is the loops both share. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>
#include "internal.h"
#include "net/net.h"
#include "net/tls_io.h"

uint64_t r3_net_deadline(int timeout_ms)
{
    return timeout_ms < 0 ? 0 : r3_now_ns() + (uint64_t)timeout_ms * 1000000u;
}

int r3_net_remaining_ms(uint64_t deadline)
{
    if (!deadline)
        return -1;
    uint64_t now = r3_now_ns();
    if (now >= deadline)
        return 0;
    uint64_t ms = (deadline - now + 999999u) / 1000000u;
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

int r3_io_init(struct r3_io *io, int fd)
{
    memset(io, 0, sizeof *io);
    io->fd = fd;
    io->rtimeout_ms = io->wtimeout_ms = -1;
    pthread_mutex_init(&io->mu, NULL);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return r3_error(-errno, "socket: cannot make it non-blocking: %s", strerror(errno));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return 0;
}

void r3_io_set_timeout(struct r3_io *io, int timeout_ms)
{
    io->rdeadline = io->wdeadline = r3_net_deadline(timeout_ms);
}

bool r3_io_is_tls(const struct r3_io *io)
{
    return io->ssl != NULL;
}

/* The earlier of "timeout_ms from now" and deadline (0 = neither). */
static uint64_t wait_end(int timeout_ms, uint64_t deadline)
{
    uint64_t t = timeout_ms < 0 ? 0 : r3_net_deadline(timeout_ms);
    return deadline && (!t || deadline < t) ? deadline : t;
}

/* Wait for events until end (absolute, 0 = no limit): 0, -ETIMEDOUT or
 * -errno. A TLS wait polls in slices and returns 0 after one: the other
 * direction's thread may pull our bytes into OpenSSL's buffer between our
 * unlock and poll, so the caller retries its SSL call. */
int r3_io_wait(struct r3_io *io, short events, uint64_t end)
{
    struct pollfd p = { .fd = io->fd, .events = events };
    for (;;) {
        int ms = r3_net_remaining_ms(end);
        if (ms == 0)
            return -ETIMEDOUT;
        if (io->ssl && (ms < 0 || ms > 100))
            ms = 100;
        int n = poll(&p, 1, ms);
        if (n > 0)
            return 0;
        if (n == 0) {
            if (io->ssl)
                return 0;
            continue;
        }
        if (errno != EINTR)
            return -errno;
    }
}

static int timed_out(struct r3_io *io, const char *what, uint64_t deadline)
{
    (void)io;
    return r3_error(-ETIMEDOUT, "%s: %s", what,
                    deadline && r3_now_ns() >= deadline ? "deadline passed" : "timed out");
}

ssize_t r3_io_read_some(struct r3_io *io, void *buf, size_t len)
{
    if (io->fd < 0)
        return r3_error(-EBADF, "read: the connection is closed");
    uint64_t end = 0;
    bool waited = false;
    for (;;) {
        ssize_t n;
        short want = POLLIN;
        if (io->rdeadline && r3_now_ns() >= io->rdeadline)
            return timed_out(io, "read", io->rdeadline);
        if (io->ssl) {
            n = r3_tls_io_read(io, buf, len, &want);
        } else {
            n = read(io->fd, buf, len);
            if (n < 0)
                n = -errno;
        }
        if (n >= 0) {
            io->nread += (uint64_t)n;
            return n;
        }
        if (n == -EINTR)
            continue;
        if (n != -EAGAIN && n != -EWOULDBLOCK)
            return n == -EPROTO ? n : r3_error((int)n, "read: %s", strerror((int)-n));
        if (!waited) {
            end = wait_end(io->rtimeout_ms, io->rdeadline);
            waited = true;
        }
        int w = r3_io_wait(io, want, end);
        if (w == -ETIMEDOUT)
            return timed_out(io, "read", io->rdeadline);
        if (w < 0)
            return r3_error(w, "read: %s", strerror(-w));
    }
}

int r3_io_read_all(struct r3_io *io, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = r3_io_read_some(io, p, len);
        if (n == 0)
            return r3_error(-EPIPE, "read: the peer closed the connection");
        if (n < 0)
            return (int)n;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int r3_io_skip(struct r3_io *io, uint64_t len)
{
    char tmp[16384];
    while (len > 0) {
        ssize_t n = r3_io_read_some(io, tmp, len < sizeof tmp ? (size_t)len : sizeof tmp);
        if (n == 0)
            return r3_error(-EPIPE, "read: the peer closed the connection");
        if (n < 0)
            return (int)n;
        len -= (uint64_t)n;
    }
    return 0;
}

/* One non-blocking write step: bytes, -EAGAIN (*want set), or -errno. */
static ssize_t write_step(struct r3_io *io, const struct iovec *iov, int cnt, short *want)
{
    *want = POLLOUT;
    while (cnt > 0 && iov->iov_len == 0) {
        iov++;
        cnt--;
    }
    if (cnt == 0)
        return 0;
    ssize_t n;
    if (io->ssl) {
        n = r3_tls_io_write(io, iov->iov_base, iov->iov_len, want);
    } else {
        struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)(cnt > IOV_MAX ? IOV_MAX : cnt) };
        n = sendmsg(io->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0)
            n = -errno;
    }
    if (n == -EWOULDBLOCK)
        n = -EAGAIN;
    return n;
}

ssize_t r3_io_writev_some(struct r3_io *io, const struct iovec *iov, int cnt)
{
    if (io->fd < 0)
        return r3_error(-EBADF, "write: the connection is closed");
    for (;;) {
        short want;
        ssize_t n = write_step(io, iov, cnt, &want);
        if (n == -EINTR)
            continue;
        if (n == -EAGAIN)
            return 0;
        if (n < 0)
            return n == -EPROTO ? n : r3_error((int)n, "write: %s", strerror((int)-n));
        io->nwritten += (uint64_t)n;
        return n;
    }
}

static int writev_loop(struct r3_io *io, struct iovec *iov, int cnt);

int r3_io_writev_all(struct r3_io *io, const struct iovec *iov_in, int cnt)
{
    struct iovec small[16], *iov = small;
    if (io->fd < 0)
        return r3_error(-EBADF, "write: the connection is closed");
    if (cnt < 0)
        return r3_error(-EINVAL, "write: a negative number of pieces");
    if (cnt > 16 && !(iov = malloc((size_t)cnt * sizeof *iov)))
        return r3_error(-ENOMEM, "write: out of memory");
    memcpy(iov, iov_in, (size_t)cnt * sizeof *iov);
    int rc = writev_loop(io, iov, cnt);
    if (iov != small)
        free(iov);
    return rc;
}

/* r3_io_writev_all on a private copy of the pieces (advanced in place). */
static int writev_loop(struct r3_io *io, struct iovec *iov, int cnt)
{
    int i = 0;
    uint64_t end = 0;
    bool waited = false;
    while (i < cnt) {
        if (iov[i].iov_len == 0) {
            i++;
            continue;
        }
        if (io->wdeadline && r3_now_ns() >= io->wdeadline)
            return timed_out(io, "write", io->wdeadline);
        short want;
        ssize_t n = write_step(io, iov + i, cnt - i, &want);
        if (n == -EINTR)
            continue;
        if (n == -EAGAIN) {
            if (!waited) {
                end = wait_end(io->wtimeout_ms, io->wdeadline);
                waited = true;
            }
            int w = r3_io_wait(io, want, end);
            if (w == -ETIMEDOUT)
                return timed_out(io, "write", io->wdeadline);
            if (w < 0)
                return r3_error(w, "write: %s", strerror(-w));
            continue;
        }
        if (n < 0)
            return n == -EPROTO ? (int)n : r3_error((int)n, "write: %s", strerror((int)-n));
        io->nwritten += (uint64_t)n;
        waited = false;            /* progress: the per-wait timeout starts again */
        size_t left = (size_t)n;
        while (i < cnt && left >= iov[i].iov_len) {
            left -= iov[i].iov_len;
            i++;
        }
        if (left) {
            iov[i].iov_base = (char *)iov[i].iov_base + left;
            iov[i].iov_len -= left;
        }
    }
    return 0;
}

int r3_io_write_all(struct r3_io *io, const void *buf, size_t len)
{
    struct iovec v = { (void *)buf, len };
    return r3_io_writev_all(io, &v, 1);
}

bool r3_io_input_ready(struct r3_io *io)
{
    if (io->fd < 0)
        return false;
    if (io->ssl && r3_tls_io_pending(io))
        return true;
    struct pollfd p = { .fd = io->fd, .events = POLLIN };
    return poll(&p, 1, 0) > 0;
}

void r3_io_shutdown(struct r3_io *io)
{
    if (io->fd >= 0)
        shutdown(io->fd, SHUT_RDWR);
}

void r3_io_close(struct r3_io *io)
{
    if (io->fd < 0)
        return;
    r3_tls_io_free(io);
    close(io->fd);
    io->fd = -1;
    pthread_mutex_destroy(&io->mu);
}
