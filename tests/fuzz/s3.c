/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: what the s3:// source reads from an S3 server (src/sources/
 * s3.c): status codes (retries on 5xx/429/408, 403, 404), bodies longer
 * than a chunk, short objects, ignored Range headers, error XML pulled into
 * sentences, and the r3.meta object. libcurl parses HTTP; the input (from
 * byte 1) is the server's answers, one per request, separated by "@@@@".
 * A fake HTTP server on 127.0.0.1 reads each request, sends the next answer
 * and closes the connection; when the answers run out it closes at once.
 * Byte 0 picks the operation. Retry backoffs are instant (FUZZ_NO_SLEEP). */
#include "fuzz.h"
#include <stdatomic.h>
#include <strings.h>
#include "internal.h"
#include "r3/source.h"

FUZZ_NO_SLEEP

#define SEP "@@@@"

static struct fuzz_peer *peer;
static atomic_uint next_answer;

/* Read one HTTP request (headers, then Content-Length bytes); false if none. */
static bool read_request(int fd)
{
    static __thread char h[16384];
    size_t n = 0;
    char *end = NULL;
    while (!end) {
        if (n == sizeof h - 1)
            return false;
        ssize_t r = recv(fd, h + n, sizeof h - 1 - n, 0);
        if (r <= 0)
            return false;
        n += (size_t)r;
        h[n] = 0;
        end = strstr(h, "\r\n\r\n");
    }
    size_t body = 0;
    for (char *p = h; p && p < end;) {
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            body = strtoul(p + 15, NULL, 10);
        p = strstr(p, "\r\n");
        if (p)
            p += 2;
    }
    size_t have = n - (size_t)(end + 4 - h);
    if (body > (1u << 20))
        return false;
    if (body > have) {
        char *b = malloc(body - have);
        bool ok = b && fuzz_read_all(fd, b, body - have);
        free(b);
        return ok;
    }
    return true;
}

static void serve(int fd, const uint8_t *data, size_t size, bool first)
{
    (void)first;
    if (size < 1 || !read_request(fd))
        return;
    const char *p = (const char *)data + 1, *e = (const char *)data + size;
    unsigned k = atomic_fetch_add(&next_answer, 1);
    for (unsigned i = 0; i < k && p; i++) {        /* the k-th answer */
        p = memmem(p, (size_t)(e - p), SEP, 4);
        if (p)
            p += 4;
    }
    if (!p)
        return;                                     /* no answers left: close */
    const char *q = memmem(p, (size_t)(e - p), SEP, 4);
    size_t n = (size_t)((q ? q : e) - p);
    /* libcurl 7.88.1 (Debian 12) reads freed memory on some folded header
     * lines (a line starting with a space or tab): not r3's bug (reproduced
     * without r3, see tests/fuzz/known/README), so no answer folds lines. */
    char *a = malloc(n ? n : 1);
    if (!a)
        FUZZ_DIE("out of memory");
    memcpy(a, p, n);
    for (size_t i = 1; i < n; i++)
        if (a[i - 1] == '\n' && (a[i] == ' ' || a[i] == '\t'))
            a[i] = 'X';
    fuzz_write_all(fd, a, n);
    free(a);
    shutdown(fd, SHUT_WR);
    fuzz_drain(fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setenv("AWS_ACCESS_KEY_ID", "fuzz", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "fuzzsecret", 1);
    peer = fuzz_peer_start(false, serve);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    atomic_store(&next_answer, 0);
    fuzz_peer_set(peer, data, size);
    char uri[300];
    snprintf(uri, sizeof uri, "s3://bucket/pre?endpoint=http://127.0.0.1:%d&%s&conns=1&timeout=1s"
             "&connect_timeout=1s", peer->port, data[0] & 4 ? "size=16K&chunk=4K" : "chunk=4K");
    struct r3_source *s;
    if (r3_source_open(uri, &s) < 0)
        return 0;
    static char buf[8192];
    switch (data[0] & 3) {
    case 0: r3_source_read(s, buf, sizeof buf, 0); break;       /* two whole objects */
    case 1: r3_source_read(s, buf, 100, 10); break;             /* a ranged GET */
    case 2: r3_source_write(s, buf, 4096, 4096); break;         /* a whole object: PUT */
    default: r3_source_write(s, "abc", 3, 10); r3_source_flush(s); break;  /* read-modify-write */
    }
    r3_source_close(s);
    return 0;
}
