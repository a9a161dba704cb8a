/* SPDX-License-Identifier: BSD-3-Clause */
/* filesync/receive.c and advertise.c against a scripted hub (mTLS on a unix
 * socket, certificates made with openssl): the test plays the hub, so it
 * can send what the real hub never relays. Each malformed message ends the
 * connection with its sentence in the "connection ... lost: ...;
 * reconnecting" line; the good script is checked by what the peer says
 * (synced, round done or incomplete, resized, gone, catch-up, ack), what it
 * sends back (HAVE, ACK, the file's blocks) and the bytes on disk. Then the
 * advertiser's refusals before it dials. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include "testutil.h"
#include "tu_certs.h"
#include "tu_log.h"
#include "internal.h"
#include "filesync/filesync.h"

#define ERR_IS(want) ck_assert_msg(strcmp(r3_last_error(), (want)) == 0, "error: '%s', not '%s'", \
                                   r3_last_error(), (want))

static char *tmp;
static char hubaddr[620], p_ca[700], p_a[700], p_ak[700];
static int lfd = -1;
static struct r3_tls_ctx *sctx;

static void on_line(void *arg, int kind, const char *text)
{
    (void)arg;
    (void)kind;
    tu_log_add(text);
}
#define WAIT_LINE(t) ck_assert_msg(tu_log_wait(t), "no line '%s' in:\n%s", (t), tu_log_buf)


static void setup(void)
{
    tmp = tu_tmpdir();
    ck_assert_ptr_nonnull(tmp);
    tu_ca(tmp, "ca", "cov ca");
    tu_cert(tmp, "hub", "/CN=hub", "ca", NULL);
    tu_cert(tmp, "a", "/CN=syncA", "ca", NULL);
    char hc[700], hk[700];
    snprintf(p_ca, sizeof p_ca, "%s/ca.pem", tmp);
    snprintf(p_a, sizeof p_a, "%s/a.pem", tmp);
    snprintf(p_ak, sizeof p_ak, "%s/a.key", tmp);
    snprintf(hc, sizeof hc, "%s/hub.pem", tmp);
    snprintf(hk, sizeof hk, "%s/hub.key", tmp);
    struct r3_tls_opts so = { .cert = hc, .key = hk, .ca = p_ca };
    ck_assert_msg(r3_tls_server_ctx(&so, &sctx) == 0, "%s", r3_last_error());
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/hub.sock", tmp);
    snprintf(hubaddr, sizeof hubaddr, "unix:%s", sa.sun_path);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(lfd, 8), 0);
    tu_log_clear();
}

static void teardown(void)
{
    close(lfd);
    r3_tls_ctx_free(sctx);
    tu_rmrf(tmp);
    free(tmp);
}

/* ---- the scripted hub's side of one connection */
static void hub_accept(struct r3_io *io, const char *role, uint64_t id)
{
    struct pollfd p = { .fd = lfd, .events = POLLIN };
    ck_assert_msg(poll(&p, 1, 20000) == 1, "nobody connected");
    int fd = accept(lfd, NULL, NULL);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(r3_io_init(io, fd), 0);
    ck_assert_msg(r3_tls_accept(sctx, io, 10000) == 0, "%s", r3_last_error());
    io->rtimeout_ms = 10000;
    struct fs_frame *f;
    ck_assert_int_eq(fs_frame_read(io, FS_HELLO_MAX, NULL, NULL, &f), 0);
    msgpack_unpacked u;
    ck_assert_int_eq(fs_frame_unpack(f, &u), 0);
    const char *s;
    uint32_t n;
    ck_assert(fs_msg_str(&u.data, 3, &s, &n) && n == strlen(role) && memcmp(s, role, n) == 0);
    msgpack_unpacked_destroy(&u);
    fs_frame_put(f);
    msgpack_sbuffer b;
    msgpack_packer pk;
    fs_msg_begin(&b, &pk, 5, FS_HELLO);
    msgpack_pack_str(&pk, 6);
    msgpack_pack_str_body(&pk, "r3sync", 6);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "ok", 2);
    msgpack_pack_uint64(&pk, id);
    f = fs_frame_new(&b);
    ck_assert_int_eq(r3_io_write_all(io, f->data, f->len), 0);
    fs_frame_put(f);
    msgpack_sbuffer_destroy(&b);
}

/* [items]: 'u' number, 's' string, 'p' pattern bin (size_t len, uint64_t
 * file offset), 'z' zero bin (size_t len). */
static void sendm(struct r3_io *io, const char *fmt, ...)
{
    msgpack_sbuffer b;
    msgpack_packer pk;
    msgpack_sbuffer_init(&b);
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, (uint32_t)strlen(fmt));
    va_list ap;
    va_start(ap, fmt);
    for (const char *p = fmt; *p; p++) {
        if (*p == 'u') {
            msgpack_pack_uint64(&pk, va_arg(ap, uint64_t));
        } else if (*p == 's') {
            const char *s = va_arg(ap, const char *);
            msgpack_pack_str(&pk, strlen(s));
            msgpack_pack_str_body(&pk, s, strlen(s));
        } else {
            size_t n = va_arg(ap, size_t);
            char *d = calloc(1, n ? n : 1);
            if (*p == 'p')
                tu_fill(d, n, va_arg(ap, uint64_t), 5);
            msgpack_pack_bin(&pk, n);
            msgpack_pack_bin_body(&pk, d, n);
            free(d);
        }
    }
    va_end(ap);
    struct fs_frame *f = fs_frame_new(&b);
    msgpack_sbuffer_destroy(&b);
    ck_assert_int_eq(r3_io_write_all(io, f->data, f->len), 0);
    fs_frame_put(f);
}

/* The next message from the peer: its type and numbers (v[i-1] = item i). */
static uint64_t recvm(struct r3_io *io, uint64_t v[6], uint32_t *binlen)
{
    struct fs_frame *f;
    int rc = fs_frame_read(io, FS_MAX_FRAME, NULL, NULL, &f);
    ck_assert_msg(rc == 0, "%s", r3_last_error());
    msgpack_unpacked u;
    ck_assert_int_eq(fs_frame_unpack(f, &u), 0);
    uint64_t t;
    ck_assert(fs_msg_uint(&u.data, 0, &t));
    for (uint32_t i = 1; i < 7; i++) {
        const void *p;
        uint32_t n;
        v[i - 1] = 0;
        if (!fs_msg_uint(&u.data, i, &v[i - 1]) && binlen && fs_msg_bin(&u.data, i, &p, &n))
            *binlen = n;
    }
    msgpack_unpacked_destroy(&u);
    fs_frame_put(f);
    return t;
}

/* ---- the peers, each on a thread of its own */
static atomic_int pstop;
static int prc;
static struct fs_recv_opts ro;
static struct fs_adv_opts ao;
static void *recv_main(void *arg) { (void)arg; prc = fs_recv_run(&ro, &pstop); return NULL; }
static void *adv_main(void *arg) { (void)arg; prc = fs_adv_run(&ao, &pstop, NULL); return NULL; }

static pthread_t start_recv(void)
{
    static char dir[700];
    snprintf(dir, sizeof dir, "%s/r", tmp);
    ro = (struct fs_recv_opts){ .hub = hubaddr, .tls = { .cert = p_a, .key = p_ak, .ca = p_ca },
                                .dir = dir, .report = { .line = on_line } };
    atomic_store(&pstop, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, recv_main, NULL), 0);
    return t;
}

static void stop_peer(pthread_t t)
{
    atomic_store(&pstop, 1);
    pthread_join(t, NULL);
    ck_assert_msg(prc == 0, "%s", r3_last_error());
    /* a reconnect the peer made before it saw the stop waits in the listen
     * queue: drop it, or the next case would accept it */
    int fl = fcntl(lfd, F_GETFL);
    fcntl(lfd, F_SETFL, fl | O_NONBLOCK);
    for (int fd; (fd = accept(lfd, NULL, NULL)) >= 0;)
        close(fd);
    fcntl(lfd, F_SETFL, fl);
}

/* One receiver, one connection: the script, then the line that ends it. */
#define RECV_CASE(line, ...) do { \
        tu_log_clear(); \
        pthread_t t_ = start_recv(); \
        struct r3_io io_; \
        hub_accept(&io_, "recv", 7); \
        __VA_ARGS__; \
        WAIT_LINE(line); \
        stop_peer(t_); \
        r3_io_close(&io_); \
    } while (0)
#define FILE1(io) sendm(io, "uusuu", (uint64_t)FS_FILE, (uint64_t)1, "f.bin", (uint64_t)100000, \
                        (uint64_t)65536)

START_TEST(recv_bad_messages)
{
    RECV_CASE("lost: bad FILE message; reconnecting", sendm(&io_, "us", (uint64_t)FS_FILE, "x"));
    RECV_CASE("lost: bad FILE message; reconnecting",
              sendm(&io_, "uusuu", (uint64_t)FS_FILE, (uint64_t)1, "f", (uint64_t)10, (uint64_t)1000));
    RECV_CASE("lost: bad SIZE message; reconnecting",
              sendm(&io_, "uusuu", (uint64_t)FS_FILE, (uint64_t)1, "../x", (uint64_t)10, (uint64_t)65536);
              WAIT_LINE("refused ../x");
              WAIT_LINE("file name '../x' refused (empty, '.' or '..' component)");
              sendm(&io_, "uu", (uint64_t)FS_SIZE, (uint64_t)1));
    RECV_CASE("lost: bad block message; reconnecting",
              FILE1(&io_); sendm(&io_, "uuu", (uint64_t)FS_BLK, (uint64_t)1, (uint64_t)0));
    RECV_CASE("lost: block 5 of 10 bytes does not fit f.bin; reconnecting",
              FILE1(&io_); sendm(&io_, "uuuz", (uint64_t)FS_BLK, (uint64_t)1, (uint64_t)5, (size_t)10));
    RECV_CASE("lost: bad block message; reconnecting",
              sendm(&io_, "us", (uint64_t)FS_TBLK, "rid"));
    RECV_CASE("lost: bad TDONE message; reconnecting", sendm(&io_, "uu", (uint64_t)FS_TDONE, (uint64_t)0));
    RECV_CASE("lost: bad END message; reconnecting", sendm(&io_, "uu", (uint64_t)FS_END, (uint64_t)1));
    RECV_CASE("lost: message without a type; reconnecting", sendm(&io_, "s", "END"));
    RECV_CASE("lost: the hub refused: go away; reconnecting",
              sendm(&io_, "us", (uint64_t)FS_ERR, "go away"));
    RECV_CASE("lost: the hub refused; reconnecting", sendm(&io_, "u", (uint64_t)FS_ERR));
}
END_TEST

START_TEST(recv_good_script)
{
    uint64_t v[6];
    uint32_t bl = 0;
    pthread_t t = start_recv();
    struct r3_io io;
    hub_accept(&io, "recv", 7);
    WAIT_LINE("connected receiver=7");
    sendm(&io, "u", (uint64_t)42);                         /* a newer message: ignored */
    sendm(&io, "uu", (uint64_t)FS_GONE, (uint64_t)99);     /* of a file it does not have */
    FILE1(&io);
    WAIT_LINE("file f.bin size=100000");
    ck_assert_uint_eq(recvm(&io, v, &bl), FS_HAVE);        /* its hashes: a new file, none yet */
    ck_assert_uint_eq(v[0], 1);
    sendm(&io, "uuup", (uint64_t)FS_BLK, (uint64_t)1, (uint64_t)0, (size_t)65536, (uint64_t)0);
    sendm(&io, "uuu", (uint64_t)FS_END, (uint64_t)2, (uint64_t)7);
    WAIT_LINE("round 2 incomplete (catching up)");
    sendm(&io, "uuuup", (uint64_t)FS_TBLK, (uint64_t)7, (uint64_t)1, (uint64_t)1, (size_t)34464,
          (uint64_t)65536);
    sendm(&io, "uuuu", (uint64_t)FS_TDONE, (uint64_t)7, (uint64_t)1, (uint64_t)1);
    WAIT_LINE("synced f.bin bytes=34464");
    sendm(&io, "uuup", (uint64_t)FS_BLK, (uint64_t)1, (uint64_t)0, (size_t)65536, (uint64_t)0);
    sendm(&io, "uuu", (uint64_t)FS_END, (uint64_t)3, (uint64_t)7);
    WAIT_LINE("round 3 done blocks=1 bytes=65536");
    ck_assert_uint_eq(recvm(&io, v, NULL), FS_ACK);
    ck_assert(v[0] == 3 && v[1] == 7);
    sendm(&io, "uuu", (uint64_t)FS_SIZE, (uint64_t)1, (uint64_t)100000);
    WAIT_LINE("resized f.bin size=100000");
    sendm(&io, "uuu", (uint64_t)FS_SIZE, (uint64_t)55, (uint64_t)100000);   /* unknown: ignored */
    sendm(&io, "uu", (uint64_t)FS_GONE, (uint64_t)1);
    WAIT_LINE("gone f.bin");
    stop_peer(t);
    r3_io_close(&io);

    /* the bytes on disk are the blocks sent */
    char p[700];
    snprintf(p, sizeof p, "%s/r/f.bin", tmp);
    int fd = open(p, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    char *b = malloc(100001);
    ck_assert_int_eq(read(fd, b, 100001), 100000);
    close(fd);
    ck_assert_int_eq(tu_check(b, 100000, 0, 5), -1);
    free(b);
}
END_TEST

static pthread_t start_adv(const char *const *files, size_t n)
{
    ao = (struct fs_adv_opts){ .hub = hubaddr, .tls = { .cert = p_a, .key = p_ak, .ca = p_ca },
                               .files = files, .nfiles = n, .report = { .line = on_line } };
    atomic_store(&pstop, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, adv_main, NULL), 0);
    return t;
}

START_TEST(adv_scripts)
{
    char src[700];
    snprintf(src, sizeof src, "%s/src.bin", tmp);
    char *data = malloc(100000);
    tu_fill(data, 100000, 0, 9);
    int fd = open(src, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_eq(write(fd, data, 100000), 100000);
    close(fd);
    const char *files[] = { src };
    uint64_t v[6];
    uint32_t bl;

#define ADV_CASE(line, ...) do { \
        tu_log_clear(); \
        pthread_t t_ = start_adv(files, 1); \
        struct r3_io io_; \
        hub_accept(&io_, "adv", 8); \
        ck_assert_uint_eq(recvm(&io_, v, NULL), FS_FILE); \
        __VA_ARGS__; \
        WAIT_LINE(line); \
        stop_peer(t_); \
        r3_io_close(&io_); \
    } while (0)
    ADV_CASE("lost: bad HAVE message from the hub; reconnecting",
             sendm(&io_, "uu", (uint64_t)FS_HAVE, (uint64_t)1));
    ADV_CASE("lost: bad HAVE message from the hub; reconnecting",
             sendm(&io_, "uuuzuu", (uint64_t)FS_HAVE, v[0], (uint64_t)0, (size_t)17, (uint64_t)1,
                   (uint64_t)3));
    ADV_CASE("lost: bad ACK message from the hub; reconnecting",
             sendm(&io_, "uu", (uint64_t)FS_ACK, (uint64_t)1));
    ADV_CASE("lost: the hub refused: no more; reconnecting",
             sendm(&io_, "us", (uint64_t)FS_ERR, "no more"));
    ADV_CASE("lost: the hub refused; reconnecting", sendm(&io_, "u", (uint64_t)FS_ERR));
    ADV_CASE("lost: message without a type; reconnecting", sendm(&io_, "z", (size_t)3));

    /* a receiver with wrong hashes for both blocks: both are sent to it */
    pthread_t t = start_adv(files, 1);
    struct r3_io io;
    hub_accept(&io, "adv", 8);
    ck_assert_uint_eq(recvm(&io, v, NULL), FS_FILE);
    uint64_t fid = v[0];
    ck_assert(v[2] == 100000 && v[3] == 65536);
    sendm(&io, "u", (uint64_t)42);
    sendm(&io, "uuuzuu", (uint64_t)FS_HAVE, fid, (uint64_t)0, (size_t)32, (uint64_t)1, (uint64_t)9);
    bl = 0;
    ck_assert_uint_eq(recvm(&io, v, &bl), FS_TBLK);
    ck_assert(v[0] == 9 && v[1] == fid && v[2] == 0 && bl == 65536);
    ck_assert_uint_eq(recvm(&io, v, &bl), FS_TBLK);
    ck_assert(v[0] == 9 && v[1] == fid && v[2] == 1 && bl == 34464);
    ck_assert_uint_eq(recvm(&io, v, NULL), FS_TDONE);
    ck_assert(v[0] == 9 && v[1] == fid && v[2] == 2);
    WAIT_LINE("catchup receiver=9 file=src.bin blocks=2");
    sendm(&io, "uuu", (uint64_t)FS_ACK, (uint64_t)4, (uint64_t)9);
    WAIT_LINE("ack round=4 receiver=9");
    stop_peer(t);
    r3_io_close(&io);
    free(data);
}
END_TEST

START_TEST(adv_refusals)
{
    char dir[700], missing[700];
    snprintf(dir, sizeof dir, "%s/adir", tmp);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    snprintf(missing, sizeof missing, "%s/missing.bin", tmp);
    atomic_int stop = 0;
    struct fs_adv_opts o = { .hub = hubaddr, .tls = { .cert = p_a, .key = p_ak, .ca = p_ca },
                             .block = 1000 };
    const char *f1[] = { dir }, *f2[] = { missing };
    ck_assert_int_eq(fs_adv_run(&o, &stop, NULL), -EINVAL);
    ERR_IS("block size 1000: must be a power of two from 4 KiB to 4 MiB");
    o.block = 8u << 20;
    ck_assert_int_eq(fs_adv_run(&o, &stop, NULL), -EINVAL);
    ERR_IS("block size 8388608: must be a power of two from 4 KiB to 4 MiB");
    o.block = 0;
    ck_assert_int_eq(fs_adv_run(&o, &stop, NULL), -EINVAL);
    ERR_IS("nothing to advertise");
    o.files = f1;
    o.nfiles = 1;
    ck_assert_int_eq(fs_adv_run(&o, &stop, NULL), -EINVAL);
    char want[900];
    snprintf(want, sizeof want, "%s: not a regular file", dir);
    ERR_IS(want);
    o.files = f2;
    ck_assert_int_eq(fs_adv_run(&o, &stop, NULL), -ENOENT);
    snprintf(want, sizeof want, "%s: %s", missing, strerror(ENOENT));
    ERR_IS(want);
    char buf[4096];
    struct fs_adv_map m = { .base = buf, .len = sizeof buf, .name = NULL };
    o.nfiles = 0;
    o.maps = &m;
    o.nmaps = 1;
    ck_assert_int_eq(fs_adv_run(&o, &stop, NULL), -EINVAL);
    ERR_IS("cannot advertise a mapping without a name");
    m.name = "a/../b";
    ck_assert_int_eq(fs_adv_run(&o, &stop, NULL), -EINVAL);
    ERR_IS("cannot advertise 'a/../b': file name 'a/../b' refused (empty, '.' or '..' component)");
    o.tls.ca = NULL;
    ck_assert_int_eq(fs_adv_run(&o, &stop, NULL), -EINVAL);
    ERR_IS("needs a client certificate, its key and a CA (mTLS only)");

    /* the receiver: a directory it cannot make */
    struct fs_recv_opts r = { .hub = hubaddr, .tls = { .cert = p_a, .key = p_ak, .ca = p_ca } };
    snprintf(want, sizeof want, "%s/no/such", tmp);
    r.dir = want;
    ck_assert_int_eq(fs_recv_run(&r, &stop), -ENOENT);
    char w2[1000];
    snprintf(w2, sizeof w2, "%s: %s", want, strerror(ENOENT));
    ERR_IS(w2);
    r.dir = missing;                   /* now: a file, not a directory */
    int fd = open(missing, O_WRONLY | O_CREAT, 0644);
    close(fd);
    ck_assert_int_eq(fs_recv_run(&r, &stop), -ENOTDIR);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cov_fs_peers");
    TCase *tc = tcase_create("peers");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, recv_bad_messages);
    tcase_add_test(tc, recv_good_script);
    tcase_add_test(tc, adv_scripts);
    tcase_add_test(tc, adv_refusals);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
