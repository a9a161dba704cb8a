/* r3cat: copy between a source URI and a file, through the real library
 * (r3_source_open). A test helper, not installed.
 *   r3cat put URI FILE [-o OFF] [-j THREADS] [-p MIN-MAX] [-s SEED] [-n]   file → source, then flush
 *   r3cat get URI FILE [-o OFF] [-l LEN] [-j THREADS] [-p MIN-MAX]         source → file
 *   r3cat size URI                                                         print the size
 * -p: random piece sizes between MIN and MAX bytes (unaligned); -n: no flush;
 * -d USEC: sleep between pieces (to make a transfer span a server restart).
 * Exit 0 on success; otherwise prints r3_last_error() and exits 1. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <r3/r3.h>

struct job {
    struct r3_source *src;
    int fd;
    bool put;
    uint64_t off, len, pmin, pmax, seed, delay_us;
    unsigned nthreads;
    pthread_mutex_t mu;
    uint64_t next;           /* next byte (relative) to hand out */
    int rc;
    char err[512];
};

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *worker(void *arg)
{
    struct job *j = arg;
    char *buf = malloc(j->pmax);
    if (!buf)
        return NULL;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        if (j->rc < 0 || j->next >= j->len) {
            pthread_mutex_unlock(&j->mu);
            break;
        }
        uint64_t n = j->pmin + (j->pmax > j->pmin ? rnd(&j->seed) % (j->pmax - j->pmin + 1) : 0);
        if (n > j->len - j->next)
            n = j->len - j->next;
        uint64_t rel = j->next;
        j->next += n;
        pthread_mutex_unlock(&j->mu);
        if (j->delay_us)
            usleep((useconds_t)j->delay_us);
        int rc;
        if (j->put) {
            rc = pread(j->fd, buf, n, (off_t)rel) == (ssize_t)n ? 0 : -EIO;
            if (rc == 0)
                rc = r3_source_write(j->src, buf, n, j->off + rel);
        } else {
            rc = r3_source_read(j->src, buf, n, j->off + rel);
            if (rc == 0)
                rc = pwrite(j->fd, buf, n, (off_t)rel) == (ssize_t)n ? 0 : -EIO;
        }
        if (rc < 0) {
            pthread_mutex_lock(&j->mu);
            if (j->rc == 0) {
                j->rc = rc;
                snprintf(j->err, sizeof j->err, "%s", r3_last_error()[0] ? r3_last_error() : strerror(-rc));
            }
            pthread_mutex_unlock(&j->mu);
            break;
        }
    }
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: r3cat put|get|size URI [FILE] [-o OFF] [-l LEN] [-j N] [-p MIN-MAX] [-s SEED] [-n]\n");
        return 2;
    }
    const char *cmd = argv[1], *uri = argv[2], *file = argc > 3 && argv[3][0] != '-' ? argv[3] : NULL;
    struct job j = { .pmin = 1 << 20, .pmax = 1 << 20, .seed = 88172645463325252ull, .nthreads = 1,
                     .len = UINT64_MAX };
    bool noflush = false;
    int opt;
    optind = file ? 4 : 3;
    while ((opt = getopt(argc, argv, "o:l:j:p:s:nd:")) != -1) {
        switch (opt) {
        case 'o': r3_parse_size(optarg, &j.off); break;
        case 'l': r3_parse_size(optarg, &j.len); break;
        case 'j': j.nthreads = (unsigned)atoi(optarg); break;
        case 'p': {
            char *dash = strchr(optarg, '-');
            if (!dash || sscanf(optarg, "%" SCNu64, &j.pmin) != 1 || r3_parse_size(dash + 1, &j.pmax) < 0 ||
                j.pmin < 1 || j.pmax < j.pmin) {
                fprintf(stderr, "r3cat: bad -p '%s'\n", optarg);
                return 2;
            }
            break;
        }
        case 's': j.seed = strtoull(optarg, NULL, 10) | 1; break;
        case 'n': noflush = true; break;
        case 'd': j.delay_us = strtoull(optarg, NULL, 10); break;
        default: return 2;
        }
    }
    if (r3_source_open(uri, &j.src) < 0) {
        fprintf(stderr, "r3cat: %s\n", r3_last_error());
        return 1;
    }
    if (strcmp(cmd, "size") == 0) {
        printf("%" PRIu64 "\n", j.src->size);
        r3_source_close(j.src);
        return 0;
    }
    j.put = strcmp(cmd, "put") == 0;
    if ((!j.put && strcmp(cmd, "get") != 0) || !file) {
        fprintf(stderr, "r3cat: expected put/get URI FILE\n");
        r3_source_close(j.src);
        return 2;
    }
    j.fd = open(file, j.put ? O_RDONLY : (O_WRONLY | O_CREAT | O_TRUNC), 0644);
    if (j.fd < 0) {
        fprintf(stderr, "r3cat: %s: %s\n", file, strerror(errno));
        r3_source_close(j.src);
        return 1;
    }
    if (j.len == UINT64_MAX) {
        struct stat st;
        fstat(j.fd, &st);
        j.len = j.put ? (uint64_t)st.st_size : j.src->size - j.off;
    }
    pthread_mutex_init(&j.mu, NULL);
    pthread_t t[64];
    unsigned n = j.nthreads < 1 ? 1 : j.nthreads > 64 ? 64 : j.nthreads;
    for (unsigned i = 0; i < n; i++)
        pthread_create(&t[i], NULL, worker, &j);
    for (unsigned i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    if (j.rc == 0 && j.put && !noflush && r3_source_flush(j.src) < 0) {
        j.rc = -EIO;
        snprintf(j.err, sizeof j.err, "%s", r3_last_error());
    }
    close(j.fd);
    r3_source_close(j.src);
    if (j.rc < 0) {
        fprintf(stderr, "r3cat: %s\n", j.err);
        return 1;
    }
    return 0;
}
