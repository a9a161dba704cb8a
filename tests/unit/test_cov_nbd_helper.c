/* SPDX-License-Identifier: BSD-3-Clause */
/* nbd/helper.c (and the r3-nbd-helper program) through nbd/helper.h: the
 * helper's mount failing early (its sentence comes back to the owner), a
 * server that is not there when the helper connects, an owner that gives
 * up before the server is up, the whole life on a Unix socket (exec'd
 * program) and on TCP (no program for that: the forked copy is the
 * helper), and the program refusing a command line it does not know. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <signal.h>
#include "testutil.h"
#include "internal.h"
#include "nbd/server.h"
#include "nbd/helper.h"

#define SIZE (1u << 20)

static char *dir;
static char sock_path[256], mnt[256];
static struct r3_source *msrc;
static struct r3_nbd_server *srv;

static void setup(void)
{
    dir = tu_tmpdir();
    ck_assert_ptr_nonnull(dir);
    snprintf(sock_path, sizeof sock_path, "%s/s", dir);
    snprintf(mnt, sizeof mnt, "%s/mnt", dir);
    ck_assert_int_eq(mkdir(mnt, 0700), 0);
    TU_OPEN("mem:?size=1M", &msrc);
    char *m = malloc(SIZE);
    tu_fill(m, SIZE, 0, 6);
    ck_assert_int_eq(r3_source_write(msrc, m, SIZE, 0), 0);
    free(m);
}

static void teardown(void)
{
    r3_nbd_server_stop(srv);
    srv = NULL;
    r3_source_close(msrc);
    tu_rmrf(dir);
    free(dir);
}

static void serve(const char *listen)
{
    static struct r3_nbd_export e;
    e = (struct r3_nbd_export){ .name = "", .src = msrc };
    struct r3_nbd_server_opts o = { .listen = listen, .exports = &e, .nexports = 1 };
    ck_assert_msg(r3_nbd_server_start(&o, &srv) == 0, "%s", r3_last_error());
}

static struct r3_nbd_mount_opts mopts(void)
{
    return (struct r3_nbd_mount_opts){
        .client = { .unix_path = sock_path, .connect_timeout_ms = 5000, .timeout_ms = 10000 },
        .mode = R3_NBD_MOUNT_FUSE, .mountpoint = mnt, .name = "h", .fsname = "r3:covhelper", .size = SIZE,
    };
}

#define ERR_IS(s) ck_assert_msg(strcmp(r3_last_error(), (s)) == 0, "error '%s', not '%s'", r3_last_error(), (s))

static void read_back(const char *path)
{
    int fd = open(path, O_RDONLY);
    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    char b[4096];
    ck_assert_int_eq(pread(fd, b, sizeof b, 65536), (ssize_t)sizeof b);
    ck_assert_int_eq(tu_check(b, sizeof b, 65536, 6), -1);
    close(fd);
}

START_TEST(whole_life)
{
    serve(sock_path);
    struct r3_nbd_mount_opts o = mopts();
    struct r3_nbd_helper *h;
    ck_assert_msg(r3_nbd_helper_spawn(&o, &h) == 0, "%s", r3_last_error());
    ck_assert_msg(r3_nbd_helper_mount(h) == 0, "%s", r3_last_error());
    char want[300];
    snprintf(want, sizeof want, "%s/h", mnt);
    ck_assert_str_eq(r3_nbd_helper_path(h), want);
    ck_assert_msg(r3_nbd_helper_ready(h) == 0, "%s", r3_last_error());
    read_back(want);
    ck_assert_int_eq(r3_nbd_helper_stop(h), 0);
    /* the helper cleans what a region's strategy made: socket, mount point */
    struct stat st;
    ck_assert_int_eq(stat(mnt, &st), -1);
    ck_assert_int_eq(stat(sock_path, &st), -1);
    ck_assert_int_eq(r3_nbd_helper_stop(NULL), 0);
}
END_TEST

#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)   /* see the suite below */
/* TCP is never a region's own mount: no command line for it, the forked
 * copy of this process runs the helper. */
START_TEST(tcp_forked)
{
    serve("127.0.0.1:0");
    struct r3_nbd_mount_opts o = mopts();
    o.client.unix_path = NULL;
    o.client.host = "127.0.0.1";
    o.client.port = r3_nbd_server_port(srv);
    o.size = 0;                            /* no early mount: mounted once connected */
    struct r3_nbd_helper *h;
    ck_assert_msg(r3_nbd_helper_spawn(&o, &h) == 0, "%s", r3_last_error());
    ck_assert_msg(r3_nbd_helper_mount(h) == 0, "%s", r3_last_error());
    char want[300];
    snprintf(want, sizeof want, "%s/h", mnt);
    ck_assert_str_eq(r3_nbd_helper_path(h), want);
    ck_assert_msg(r3_nbd_helper_ready(h) == 0, "%s", r3_last_error());
    read_back(want);
    ck_assert_int_eq(r3_nbd_helper_stop(h), 0);
}
END_TEST
#endif

START_TEST(early_mount_fails)
{
    struct r3_nbd_mount_opts o = mopts();
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none", dir);
    o.mountpoint = missing;
    struct r3_nbd_helper *h;
    ck_assert_msg(r3_nbd_helper_spawn(&o, &h) == 0, "%s", r3_last_error());
    ck_assert_int_eq(r3_nbd_helper_mount(h), -ENOENT);
    char want[400];
    snprintf(want, sizeof want, "fuse: mountpoint %s: No such file or directory", missing);
    ERR_IS(want);
    ck_assert_int_eq(r3_nbd_helper_stop(h), -EIO);
    ERR_IS("nbd mount: the mount helper did not unmount cleanly");
}
END_TEST

START_TEST(no_server)
{
    /* early mount, then no server to connect to: ready says why */
    struct r3_nbd_mount_opts o = mopts();
    struct r3_nbd_helper *h;
    ck_assert_msg(r3_nbd_helper_spawn(&o, &h) == 0, "%s", r3_last_error());
    ck_assert_msg(r3_nbd_helper_mount(h) == 0, "%s", r3_last_error());
    ck_assert_int_lt(r3_nbd_helper_ready(h), 0);
    ck_assert_msg(strstr(r3_last_error(), sock_path), "%s", r3_last_error());
    ck_assert_int_eq(r3_nbd_helper_stop(h), -EIO);
    /* no early mount: the mount itself fails */
    o.size = 0;
    ck_assert_msg(r3_nbd_helper_spawn(&o, &h) == 0, "%s", r3_last_error());
    ck_assert_int_lt(r3_nbd_helper_mount(h), 0);
    ck_assert_msg(strstr(r3_last_error(), sock_path), "%s", r3_last_error());
    ck_assert_int_eq(r3_nbd_helper_stop(h), -EIO);
}
END_TEST

/* The owner stops before telling the helper the server is up: the
 * helper unmounts its early mount and ends cleanly. */
START_TEST(owner_gives_up)
{
    struct r3_nbd_mount_opts o = mopts();
    struct r3_nbd_helper *h;
    ck_assert_msg(r3_nbd_helper_spawn(&o, &h) == 0, "%s", r3_last_error());
    /* whether or not it could say "mounted" before we closed: it unmounts
     * and ends with 0 */
    int rc = r3_nbd_helper_stop(h);
    ck_assert_msg(rc == 0, "%d %s", rc, r3_last_error());
    FILE *f = fopen("/proc/self/mounts", "r");
    char line[1024];
    while (fgets(line, sizeof line, f))
        ck_assert_msg(!strstr(line, "r3:covhelper"), "still mounted: %s", line);
    fclose(f);
}
END_TEST

static int run_prog(const char *arg, char *err, size_t n)
{
    const char *prog = r3_nbd_helper_program();
    ck_assert_ptr_nonnull(prog);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 2);
        execl(prog, prog, arg, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    size_t got = 0;
    ssize_t r;
    while (got < n - 1 && (r = read(p[0], err + got, n - 1 - got)) > 0)
        got += (size_t)r;
    err[got] = 0;
    close(p[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(program_refuses)
{
    char err[512];
    ck_assert_int_eq(run_prog("--bogus=1", err, sizeof err), 2);
    ck_assert_str_eq(err, "r3-nbd-helper: unknown argument '--bogus=1' (the r3 library starts this program)\n");
    ck_assert_int_eq(run_prog("--size=12", err, sizeof err), 2);
    ck_assert_str_eq(err, "r3-nbd-helper: needs --owner and --unix (the r3 library starts this program)\n");
    ck_assert_int_eq(run_prog("--size=x", err, sizeof err), 2);
    ck_assert(strstr(err, "unknown argument '--size=x'"));
}
END_TEST

static bool mounted(void)
{
    FILE *f = fopen("/proc/self/mounts", "r");
    ck_assert_ptr_nonnull(f);
    char line[1024];
    bool found = false;
    while (fgets(line, sizeof line, f))
        found |= strstr(line, "r3:covhelper") != NULL;
    fclose(f);
    return found;
}

/* Hang guard 20 s: the mount must go by itself. */
static void wait_unmounted(void)
{
    for (int i = 0; i < 4000 && mounted(); i++)
        usleep(5000);
    ck_assert(!mounted());
}

/* The owner is killed (SIGKILL: no close, no atexit) while the helper
 * serves its mount: the helper notices, unmounts and cleans up. */
START_TEST(owner_killed)
{
    /* The owner is forked before the server's threads start: a forked copy
     * of a threaded process may find the allocator locked by a thread it
     * does not have (ASan's allocator has no fork handlers). */
    int p[2], go[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(pipe(go), 0);
    pid_t owner = fork();
    if (owner == 0) {
        close(go[1]);
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(1);
        struct r3_nbd_mount_opts o = mopts();
        struct r3_nbd_helper *h;
        char ok = r3_nbd_helper_spawn(&o, &h) == 0 && r3_nbd_helper_mount(h) == 0 &&
                  r3_nbd_helper_ready(h) == 0 ? 'y' : 'n';
        ssize_t w = write(p[1], &ok, 1);
        (void)w;
        for (;;)
            pause();
    }
    close(p[1]);
    close(go[0]);
    serve(sock_path);
    ck_assert_int_eq(write(go[1], "g", 1), 1);
    close(go[1]);
    char ok = 0;
    ck_assert_int_eq(read(p[0], &ok, 1), 1);
    close(p[0]);
    ck_assert_int_eq(ok, 'y');
    ck_assert(mounted());
    char want[300];
    snprintf(want, sizeof want, "%s/h", mnt);
    read_back(want);
    usleep(450000);                        /* a few of the helper's owner checks pass */
    kill(owner, SIGKILL);
    ck_assert_int_eq(waitpid(owner, NULL, 0), owner);
    wait_unmounted();
}
END_TEST

/* The pid of our child running prog (comm), or 0. */
static pid_t child_named(const char *comm)
{
    DIR *d = opendir("/proc");
    ck_assert_ptr_nonnull(d);
    pid_t found = 0;
    for (struct dirent *e; !found && (e = readdir(d));) {
        char p[300], line[512];
        snprintf(p, sizeof p, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(p, "r");
        if (!f)
            continue;
        if (fgets(line, sizeof line, f)) {
            char *l = strchr(line, '('), *r = strrchr(line, ')');
            int ppid = 0;
            if (l && r && sscanf(r + 1, " %*c %d", &ppid) == 1 && ppid == getpid() &&
                (size_t)(r - l - 1) == strlen(comm) && strncmp(l + 1, comm, strlen(comm)) == 0)
                found = atoi(e->d_name);
        }
        fclose(f);
    }
    closedir(d);
    return found;
}

/* The helper itself is killed: its guard detaches the mount (no mount
 * left saying "Transport endpoint is not connected"), and stop says the
 * helper did not end cleanly. */
START_TEST(helper_killed)
{
    serve(sock_path);
    struct r3_nbd_mount_opts o = mopts();
    struct r3_nbd_helper *h;
    ck_assert_msg(r3_nbd_helper_spawn(&o, &h) == 0, "%s", r3_last_error());
    ck_assert_msg(r3_nbd_helper_mount(h) == 0, "%s", r3_last_error());
    ck_assert_msg(r3_nbd_helper_ready(h) == 0, "%s", r3_last_error());
    ck_assert(mounted());
    pid_t hp = child_named("r3-nbd-helper");
    ck_assert_int_gt(hp, 0);
    ck_assert_int_eq(kill(hp, SIGKILL), 0);
    wait_unmounted();
    ck_assert_int_eq(r3_nbd_helper_stop(h), -EIO);
    ck_assert_str_eq(r3_last_error(), "nbd mount: the mount helper did not unmount cleanly");
}
END_TEST

/* The helper dies before it could say anything (no early mount: it waits
 * for the server first): the owner hears that, not a hang. */
/* A helper without an early mount (no size known), once it runs: it
 * waits for the owner to say the server is up. Its pid. */
static pid_t spawn_waiting(struct r3_nbd_helper **h)
{
    struct r3_nbd_mount_opts o = mopts();
    o.size = 0;
    ck_assert_msg(r3_nbd_helper_spawn(&o, h) == 0, "%s", r3_last_error());
    pid_t hp = 0;
    for (int i = 0; i < 4000 && !(hp = child_named("r3-nbd-helper")); i++)   /* once exec'd */
        usleep(5000);
    ck_assert_int_gt(hp, 0);
    return hp;
}

START_TEST(helper_dies_before_ready)
{
    struct r3_nbd_helper *h;
    pid_t hp = spawn_waiting(&h);
    ck_assert_int_eq(kill(hp, SIGKILL), 0);
    ck_assert_int_eq(r3_nbd_helper_mount(h), -EIO);
    ck_assert_str_eq(r3_last_error(), "nbd mount: the mount helper died before the mount was ready");
    ck_assert_int_eq(r3_nbd_helper_stop(h), -EIO);
}
END_TEST

/* The owner stops while such a helper waits for the server: the helper
 * hears it and ends with 0. */
START_TEST(owner_gives_up_before_server)
{
    struct r3_nbd_helper *h;
    spawn_waiting(&h);
    int rc = r3_nbd_helper_stop(h);
    ck_assert_msg(rc == 0, "%d %s", rc, r3_last_error());
}
END_TEST

int main(void)
{
    char why[256];
    if (r3t_missing("fuse", why, sizeof why) != 0) {
        printf("SKIP: %s\n", why);
        return 77;
    }
    Suite *s = suite_create("cov_nbd_helper");
    TCase *t = tcase_create("helper");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, whole_life);
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
    /* The forked helper is a copy of this threaded process (the server's
     * threads) that allocates and starts threads of its own: ThreadSanitizer
     * cannot follow it ("dup thread with used id"), and under ASan the copy
     * may find the allocator locked by a thread it does not have (a hang:
     * GCC 12's ASan allocator has no fork handlers; glibc's malloc has).
     * It is tested in the plain build. */
    tcase_add_test(t, tcp_forked);
#endif
    tcase_add_test(t, early_mount_fails);
    tcase_add_test(t, no_server);
    tcase_add_test(t, owner_gives_up);
    tcase_add_test(t, owner_gives_up_before_server);
    tcase_add_test(t, program_refuses);
    tcase_add_test(t, owner_killed);
    tcase_add_test(t, helper_killed);
    tcase_add_test(t, helper_dies_before_ready);
    suite_add_tcase(s, t);
    return tu_run(s);
}
