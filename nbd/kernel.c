/* SPDX-License-Identifier: BSD-3-Clause */
/* Kernel NBD devices over generic netlink, without libnl: one request, one
 * acknowledgement. Only compiled code here can be exercised on a machine
 * with the nbd module (this build machine has none: the tests skip). */
#include <errno.h>
#include <fcntl.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "internal.h"
#include "nbd/kernel.h"

/* From linux/nbd-netlink.h (not in every distribution's headers). */
enum { R3_NBD_CMD_CONNECT = 1, R3_NBD_CMD_DISCONNECT = 2 };
enum { R3_NBD_ATTR_INDEX = 1, R3_NBD_ATTR_SIZE_BYTES = 2, R3_NBD_ATTR_BLOCK_SIZE_BYTES = 3,
       R3_NBD_ATTR_TIMEOUT = 4, R3_NBD_ATTR_SERVER_FLAGS = 5, R3_NBD_ATTR_CLIENT_FLAGS = 6,
       R3_NBD_ATTR_SOCKETS = 7 };
enum { R3_NBD_SOCK_ITEM = 1, R3_NBD_SOCK_FD = 1 };
#define R3_NBD_CFLAG_DISCONNECT_ON_CLOSE 2

struct msg {
    struct nlmsghdr n;
    struct genlmsghdr g;
    char buf[1024];
};

static struct nlattr *put(struct msg *m, uint16_t type, const void *data, size_t len)
{
    struct nlattr *a = (struct nlattr *)((char *)m + NLMSG_ALIGN(m->n.nlmsg_len));
    a->nla_type = type;
    a->nla_len = (uint16_t)(NLA_HDRLEN + len);
    if (len)
        memcpy((char *)a + NLA_HDRLEN, data, len);
    m->n.nlmsg_len = NLMSG_ALIGN(m->n.nlmsg_len) + NLA_ALIGN(a->nla_len);
    return a;
}

static void nest_end(struct msg *m, struct nlattr *a)
{
    a->nla_len = (uint16_t)((char *)m + m->n.nlmsg_len - (char *)a);
}

/* Send m, read the answer into reply (may be NULL); 0 or -errno. */
static int talk(int fd, struct msg *m, struct msg *reply)
{
    struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
    m->n.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    if (sendto(fd, m, m->n.nlmsg_len, 0, (struct sockaddr *)&sa, sizeof sa) < 0)
        return -errno;
    char rb[4096];
    for (;;) {
        ssize_t n = recv(fd, rb, sizeof rb, 0);
        if (n < 0)
            return -errno;
        for (struct nlmsghdr *h = (struct nlmsghdr *)rb; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                return e->error;          /* 0 = the ACK */
            }
            if (reply && h->nlmsg_len <= sizeof *reply)
                memcpy(reply, h, h->nlmsg_len);
        }
    }
}

static int nl_open(void)
{
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
    if (fd < 0)
        return -errno;
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static const struct nlattr *find_attr(const struct msg *m, uint16_t type)
{
    const char *p = (const char *)m + NLMSG_HDRLEN + GENL_HDRLEN;
    const char *end = (const char *)m + m->n.nlmsg_len;
    while (p + NLA_HDRLEN <= end) {
        const struct nlattr *a = (const struct nlattr *)p;
        if (a->nla_len < NLA_HDRLEN || p + a->nla_len > end)
            break;
        if ((a->nla_type & NLA_TYPE_MASK) == type)
            return a;
        p += NLA_ALIGN(a->nla_len);
    }
    return NULL;
}

static int family_id(int fd)
{
    struct msg m = { 0 }, r = { 0 };
    m.n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
    m.n.nlmsg_type = GENL_ID_CTRL;
    m.g.cmd = CTRL_CMD_GETFAMILY;
    m.g.version = 1;
    put(&m, CTRL_ATTR_FAMILY_NAME, "nbd", 4);
    int rc = talk(fd, &m, &r);
    if (rc < 0)
        return rc;
    const struct nlattr *a = find_attr(&r, CTRL_ATTR_FAMILY_ID);
    if (!a)
        return -ENOENT;
    uint16_t id;
    memcpy(&id, (const char *)a + NLA_HDRLEN, 2);
    return id;
}

bool r3_nbd_kernel_available(void)
{
    if (access("/dev/nbd0", F_OK) != 0)
        return false;
    int fd = nl_open();
    if (fd < 0)
        return false;
    int id = family_id(fd);
    close(fd);
    return id > 0;
}

static bool device_ready(int index, bool want_size)
{
    char p[64], b[32] = "";
    snprintf(p, sizeof p, "/sys/block/nbd%d/size", index);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, b, sizeof b - 1);
    close(fd);
    b[n > 0 ? n : 0] = 0;
    bool sized = strtoull(b, NULL, 10) > 0;
    if (!want_size)
        return !sized;
    snprintf(p, sizeof p, "/dev/nbd%d", index);
    return sized && access(p, R_OK | W_OK) == 0;
}

int r3_nbd_kernel_connect(int sockfd, uint64_t size, uint16_t flags, unsigned timeout_ms, int *index)
{
    int fd = nl_open();
    if (fd < 0)
        return r3_error(fd, "nbd: netlink: %s", strerror(-fd));
    int fam = family_id(fd);
    if (fam < 0) {
        close(fd);
        return r3_error(-ENODEV, "nbd: the kernel has no nbd module loaded (genl family 'nbd' is missing)");
    }
    struct msg m = { 0 }, r = { 0 };
    m.n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
    m.n.nlmsg_type = (uint16_t)fam;
    m.g.cmd = R3_NBD_CMD_CONNECT;
    m.g.version = 1;
    uint64_t v = size;
    put(&m, R3_NBD_ATTR_SIZE_BYTES, &v, 8);
    v = 4096;
    put(&m, R3_NBD_ATTR_BLOCK_SIZE_BYTES, &v, 8);
    v = 30;                                   /* seconds per request before the kernel gives up */
    put(&m, R3_NBD_ATTR_TIMEOUT, &v, 8);
    v = flags;
    put(&m, R3_NBD_ATTR_SERVER_FLAGS, &v, 8);
    v = R3_NBD_CFLAG_DISCONNECT_ON_CLOSE;     /* a crashed owner leaves no busy device */
    put(&m, R3_NBD_ATTR_CLIENT_FLAGS, &v, 8);
    struct nlattr *socks = put(&m, R3_NBD_ATTR_SOCKETS | NLA_F_NESTED, NULL, 0);
    struct nlattr *item = put(&m, R3_NBD_SOCK_ITEM | NLA_F_NESTED, NULL, 0);
    uint32_t sfd = (uint32_t)sockfd;
    put(&m, R3_NBD_SOCK_FD, &sfd, 4);
    nest_end(&m, item);
    nest_end(&m, socks);
    int rc = talk(fd, &m, &r);
    close(fd);
    if (rc < 0)
        return r3_error(rc, "nbd: the kernel refused the connection: %s", strerror(-rc));
    const struct nlattr *a = find_attr(&r, R3_NBD_ATTR_INDEX);
    if (!a)
        return r3_error(-EPROTO, "nbd: the kernel did not say which device it used");
    uint32_t idx;
    memcpy(&idx, (const char *)a + NLA_HDRLEN, 4);
    *index = (int)idx;
    uint64_t deadline = r3_now_ns() + (uint64_t)timeout_ms * 1000000u;
    while (!device_ready((int)idx, true)) {
        if (r3_now_ns() > deadline) {
            r3_nbd_kernel_disconnect((int)idx, timeout_ms);
            return r3_error(-ETIMEDOUT, "nbd: /dev/nbd%u did not become ready in %u ms", idx, timeout_ms);
        }
        usleep(1000);
    }
    return 0;
}

int r3_nbd_kernel_disconnect(int index, unsigned timeout_ms)
{
    int fd = nl_open();
    if (fd < 0)
        return r3_error(fd, "nbd: netlink: %s", strerror(-fd));
    int fam = family_id(fd);
    if (fam < 0) {
        close(fd);
        return r3_error(-ENODEV, "nbd: the nbd module is gone");
    }
    struct msg m = { 0 };
    m.n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
    m.n.nlmsg_type = (uint16_t)fam;
    m.g.cmd = R3_NBD_CMD_DISCONNECT;
    m.g.version = 1;
    uint32_t idx = (uint32_t)index;
    put(&m, R3_NBD_ATTR_INDEX, &idx, 4);
    int rc = talk(fd, &m, NULL);
    close(fd);
    if (rc < 0)
        return r3_error(rc, "nbd: cannot disconnect /dev/nbd%d: %s", index, strerror(-rc));
    /* Wait until the device reports size 0 again, so the next connect in a
     * loop never finds it busy. */
    uint64_t deadline = r3_now_ns() + (uint64_t)timeout_ms * 1000000u;
    while (!device_ready(index, false)) {
        if (r3_now_ns() > deadline)
            return r3_error(-EBUSY, "nbd: /dev/nbd%d is still busy after %u ms", index, timeout_ms);
        usleep(1000);
    }
    return 0;
}
