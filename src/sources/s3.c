/* SPDX-License-Identifier: BSD-3-Clause */
/* s3: one object per chunk, "<prefix>/<chunk index>", over libcurl.
 *   s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&size=&chunk=&conns=N
 *        &timeout=DUR&connect_timeout=DUR       (defaults as r3://: 30s and 5s)
 * timeout= bounds each request whole; a response body longer than the chunk
 * (or an error body longer than 64K) is refused before it is buffered.
 * Path-style URLs (endpoint/bucket/key), SigV4 by libcurl (CURLOPT_AWS_SIGV4)
 * with the x-amz-content-sha256 header set to the body's real SHA-256, so
 * servers that check payloads (MinIO, AWS; s3rver checks only the format)
 * accept it. Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
 * (+ AWS_SESSION_TOKEN for temporary ones). A missing object (404) reads as
 * zeros. "<prefix>/r3.meta" records "r3 SIZE CHUNK" so a URI without size
 * can reopen.
 * Parallelism: a pool of `conns` lanes, each a curl multi handle with up to
 * LANE_PAR easy handles; a call takes one lane and runs its chunks in
 * parallel on it. A lane's multi handle keeps its connections alive between
 * calls (libcurl's connection cache lives in the multi handle; sharing one
 * cache between threads is a known libcurl bug, so each lane has its own).
 * 5xx, 429 and connection errors are retried with backoff; all requests are
 * idempotent (GET/PUT/HEAD of whole objects).
 * Partial-chunk writes are read-modify-write of the object under a per-chunk
 * stripe lock: atomic against other writers in this process, not against
 * other processes writing the same chunk (S3 has no partial PUT). The
 * cache/chunk stages only write whole chunks.
 * flush: S3 makes a PUT durable before it answers 200, so flush has nothing
 * left to do; it checks that the bucket is still reachable. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include "internal.h"

#define LANE_PAR  8                     /* requests in flight per call */
#define STRIPES   64                    /* partial-write locks */
#define RETRIES   6                     /* ~3 s of backoff in all */
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

enum { M_GET, M_PUT, M_HEAD, M_OHEAD };   /* HEAD: of the bucket; OHEAD: of an object */

struct lane {
    CURLM *multi;
    CURL *easy[LANE_PAR];
};

struct s3_source {
    struct r3_source src;
    char *endpoint, *bucket, *prefix;   /* prefix: "" or "a/b" (no slashes at the ends) */
    char *userpwd;                      /* "key:secret" */
    char *token;                        /* "x-amz-security-token: ..." or NULL */
    char sigv4[160];
    uint32_t chunk;
    unsigned conns;
    long timeout_ms, connect_ms;
    char name[300];                     /* "s3 ENDPOINT/BUCKET/PREFIX" */

    pthread_mutex_t lock;               /* guards the lane pool */
    pthread_cond_t cv;
    struct lane **idle;
    unsigned nidle, nopen;
    pthread_mutex_t stripe[STRIPES];
};

struct xfer {
    struct s3_source *s;
    CURL *h;
    int method;
    bool meta;                          /* the "<prefix>/r3.meta" object */
    uint64_t idx;
    char *buf;                          /* GET: destination (cap bytes); PUT: body (len bytes) */
    size_t cap, len;
    uint32_t in;                        /* ranged GET: first byte inside the object */
    bool ranged, overflow;
    bool exists;                        /* OHEAD: the object is there */
    size_t skip;                        /* a 200 to a ranged GET: bytes to skip */
    long code;
    CURLcode cc;
    bool done;
    char url[1024];
    char err[512];                      /* start of an error body */
    size_t errlen;
    char curlerr[CURL_ERROR_SIZE];
    struct curl_slist *hdrs;
};

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static void lane_free(struct lane *l)
{
    if (!l)
        return;
    for (int i = 0; i < LANE_PAR; i++)
        if (l->easy[i])
            curl_easy_cleanup(l->easy[i]);
    if (l->multi)
        curl_multi_cleanup(l->multi);
    free(l);
}

static struct lane *lane_new(void)
{
    struct lane *l = calloc(1, sizeof *l);
    if (!l || !(l->multi = curl_multi_init())) {
        free(l);
        return NULL;
    }
    curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, (long)LANE_PAR);
    for (int i = 0; i < LANE_PAR; i++) {
        if (!(l->easy[i] = curl_easy_init())) {
            lane_free(l);
            return NULL;
        }
    }
    return l;
}

static int lane_get(struct s3_source *s, struct lane **out)
{
    pthread_mutex_lock(&s->lock);
    while (s->nidle == 0 && s->nopen >= s->conns)
        pthread_cond_wait(&s->cv, &s->lock);
    if (s->nidle > 0) {
        *out = s->idle[--s->nidle];
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    s->nopen++;
    pthread_mutex_unlock(&s->lock);
    if ((*out = lane_new()))
        return 0;
    pthread_mutex_lock(&s->lock);
    s->nopen--;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->lock);
    return r3_error(-ENOMEM, "%s: cannot create a curl handle", s->name);
}

static void lane_put(struct s3_source *s, struct lane *l)
{
    pthread_mutex_lock(&s->lock);
    s->idle[s->nidle++] = l;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->lock);
}

static size_t on_data(char *p, size_t sz, size_t nm, void *arg)
{
    struct xfer *x = arg;
    size_t n = sz * nm;
    if (x->code == 0) {
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->code);
        if (x->code == 200 && x->ranged)
            x->skip = x->in;                 /* the server ignored Range */
    }
    if (x->code >= 300) {                    /* keep the start of the error for the sentence */
        size_t k = sizeof x->err - 1 - x->errlen;
        k = k < n ? k : n;
        memcpy(x->err + x->errlen, p, k);
        x->errlen += k;
        x->err[x->errlen] = '\0';
        return n;
    }
    if (x->method != M_GET)
        return n;
    size_t from = 0;
    if (x->skip) {
        from = x->skip < n ? x->skip : n;
        x->skip -= from;
    }
    if (n - from > x->cap - x->len) {        /* longer than a chunk: refuse, do not grow */
        x->overflow = true;
        return 0;
    }
    memcpy(x->buf + x->len, p + from, n - from);
    x->len += n - from;
    return n;
}

static void sha256_hex(const void *buf, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned mdlen = 0;
    EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void xfer_url(struct xfer *x)
{
    struct s3_source *s = x->s;
    const char *sep = s->prefix[0] ? "/" : "";
    if (x->method == M_HEAD)
        snprintf(x->url, sizeof x->url, "%s/%s", s->endpoint, s->bucket);
    else if (x->meta && x->method != M_OHEAD)
        snprintf(x->url, sizeof x->url, "%s/%s/%s%sr3.meta", s->endpoint, s->bucket, s->prefix, sep);
    else
        snprintf(x->url, sizeof x->url, "%s/%s/%s%s%" PRIu64, s->endpoint, s->bucket, s->prefix,
                 sep, x->idx);
}

static int xfer_setup(struct xfer *x, CURL *h)
{
    struct s3_source *s = x->s;
    char hdr[128], sha[65];
    x->h = h;
    x->code = 0;
    x->len = x->method == M_PUT ? x->len : 0;
    x->skip = 0;
    x->errlen = 0;
    x->err[0] = x->curlerr[0] = '\0';
    x->overflow = false;
    xfer_url(x);
    curl_easy_reset(h);                      /* keeps the connection, drops old options */
    if (x->method == M_PUT)
        sha256_hex(x->buf, x->len, sha);
    snprintf(hdr, sizeof hdr, "x-amz-content-sha256: %s", x->method == M_PUT ? sha : EMPTY_SHA);
    struct curl_slist *l = curl_slist_append(NULL, hdr);
    if (l && x->method == M_PUT) {
        l = curl_slist_append(l, "Content-Type: application/octet-stream");
        l = l ? curl_slist_append(l, "Expect:") : NULL;
    }
    if (l && s->token)                       /* temporary credentials (STS) */
        l = curl_slist_append(l, s->token);
    if (l && x->ranged) {
        snprintf(hdr, sizeof hdr, "Range: bytes=%u-%llu", x->in,
                 (unsigned long long)x->in + x->cap - 1);
        l = curl_slist_append(l, hdr);
    }
    if (!l)
        return r3_error(-ENOMEM, "%s: out of memory", s->name);
    x->hdrs = l;
    curl_easy_setopt(h, CURLOPT_URL, x->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, l);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(h, CURLOPT_USERPWD, s->userpwd);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, s->connect_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, s->timeout_ms);     /* the whole request */
    /* A GET brings no body longer than a chunk (an object) or an error page:
     * a longer Content-Length fails before anything is buffered. */
    if (x->method == M_GET)
        curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE,
                         (curl_off_t)(s->chunk > 65536 ? s->chunk : 65536));
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);      /* a stalled transfer, not a slow one */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (s->timeout_ms + 999) / 1000);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->curlerr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_PRIVATE, x);
    if (x->method == M_PUT) {
        /* POSTFIELDS under a PUT verb: libcurl signs and sends exactly these bytes */
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, x->buf);
    } else if (x->method == M_HEAD || x->method == M_OHEAD) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    }
    return 0;
}

/* Pull "<Code>X</Code>" and "<Message>Y</Message>" out of an S3 error body. */
static const char *s3_why(struct xfer *x, char *out, size_t n)
{
    char code[64] = "", msg[256] = "";
    const char *c = strstr(x->err, "<Code>"), *m = strstr(x->err, "<Message>");
    if (c)
        sscanf(c + 6, "%63[^<]", code);
    if (m)
        sscanf(m + 9, "%255[^<]", msg);
    snprintf(out, n, "HTTP %ld%s%s%s%s", x->code, code[0] ? " " : "", code, msg[0] ? ": " : "", msg);
    return out;
}

static int retry_error(struct xfer *x, int tries)
{
    struct s3_source *s = x->s;
    char why[400];
    if (x->cc == CURLE_OK)
        return r3_error(-EIO, "%s: %s: %s after %d tries", s->name, x->url,
                        s3_why(x, why, sizeof why), tries);
    if (x->cc == CURLE_OPERATION_TIMEDOUT && strstr(x->curlerr, "onnect"))
        return r3_error(-ETIMEDOUT, "%s: %s: cannot connect within %ld ms (connect_timeout=)",
                        s->name, x->url, s->connect_ms);
    if (x->cc == CURLE_OPERATION_TIMEDOUT)
        return r3_error(-ETIMEDOUT, "%s: %s: no answer within %ld ms (timeout=)", s->name, x->url,
                        s->timeout_ms);
    int e = x->cc == CURLE_COULDNT_CONNECT ? -ECONNREFUSED
          : x->cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
          : x->cc == CURLE_COULDNT_RESOLVE_HOST ? -EHOSTUNREACH : -EIO;
    return r3_error(e, "%s: %s: %s (%d tries)", s->name, x->url,
                    x->curlerr[0] ? x->curlerr : curl_easy_strerror(x->cc), tries);
}

/* 0 = done, 1 = retry, <0 = final error. */
static int xfer_result(struct xfer *x)
{
    struct s3_source *s = x->s;
    char why[400];
    if (x->cc == CURLE_OK && x->code == 0)
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->code);
    if (x->overflow || x->cc == CURLE_FILESIZE_EXCEEDED)
        return r3_error(-EIO, "%s: %s: the server sent (or announced) more than the %u-byte "
                        "chunk", s->name, x->url, s->chunk);
    if (x->cc == CURLE_OPERATION_TIMEDOUT)       /* already waited timeout= */
        return retry_error(x, 1);
    if (x->cc != CURLE_OK)
        return 1;
    if (x->code >= 500 || x->code == 429 || x->code == 408)
        return 1;
    if (x->method == M_GET && (x->code == 200 || x->code == 206 || x->code == 404)) {
        if (x->code == 404)
            x->len = 0;
        memset(x->buf + x->len, 0, x->cap - x->len);   /* missing or short object: zeros */
        return 0;
    }
    if ((x->method == M_PUT || x->method == M_HEAD) && x->code >= 200 && x->code < 300)
        return 0;
    if (x->method == M_OHEAD && ((x->code >= 200 && x->code < 300) || x->code == 404)) {
        x->exists = x->code != 404;
        return 0;
    }
    if (x->method == M_HEAD && x->code == 404)
        return r3_error(-ENOENT, "%s: bucket '%s' does not exist at %s", s->name, s->bucket,
                        s->endpoint);
    if (x->code == 403 || x->code == 401)
        return r3_error(-EACCES, "%s: access denied to %s (check AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY): %s", s->name, x->url, s3_why(x, why, sizeof why));
    if (x->code == 404)
        return r3_error(-ENOENT, "%s: %s: %s", s->name, x->url, s3_why(x, why, sizeof why));
    return r3_error(-EIO, "%s: %s: %s", s->name, x->url, s3_why(x, why, sizeof why));
}

/* Run xs[0..n) to completion on one lane, LANE_PAR at a time, retrying. */
static int run_xfers(struct s3_source *s, struct xfer *xs, size_t n)
{
    struct lane *l;
    int rc = lane_get(s, &l);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        xs[i].done = false;
    for (int attempt = 0; attempt < RETRIES && rc == 0; attempt++) {
        size_t next = 0, active = 0, left = 0;
        for (size_t i = 0; i < n; i++)
            left += !xs[i].done;
        if (left == 0)
            break;
        if (attempt > 0)
            sleep_ms(50u << attempt);
        struct xfer *slot[LANE_PAR] = { 0 };
        bool failed = false;
        while (rc == 0 && (active > 0 || next < n)) {
            for (int k = 0; k < LANE_PAR && rc == 0; k++) {   /* keep every easy handle busy */
                if (slot[k])
                    continue;
                while (next < n && xs[next].done)
                    next++;
                if (next >= n)
                    break;
                struct xfer *x = &xs[next++];
                rc = xfer_setup(x, l->easy[k]);
                if (rc == 0) {
                    curl_multi_add_handle(l->multi, l->easy[k]);
                    slot[k] = x;
                    active++;
                }
            }
            int running = 0;
            CURLMcode mc = curl_multi_perform(l->multi, &running);
            if (mc == CURLM_OK && running)
                mc = curl_multi_poll(l->multi, NULL, 0, 1000, NULL);
            if (mc != CURLM_OK && rc == 0)
                rc = r3_error(-EIO, "%s: curl: %s", s->name, curl_multi_strerror(mc));
            CURLMsg *m;
            int q;
            while ((m = curl_multi_info_read(l->multi, &q))) {
                if (m->msg != CURLMSG_DONE)
                    continue;
                struct xfer *x = NULL;
                curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
                x->cc = m->data.result;
                curl_multi_remove_handle(l->multi, m->easy_handle);
                for (int k = 0; k < LANE_PAR; k++)
                    if (slot[k] == x)
                        slot[k] = NULL;
                active--;
                curl_slist_free_all(x->hdrs);
                x->hdrs = NULL;
                int r = xfer_result(x);
                if (r == 0)
                    x->done = true;
                else if (r == 1)
                    failed = true;
                else if (rc == 0)
                    rc = r;
            }
        }
        for (int k = 0; k < LANE_PAR; k++) {     /* after an error: abandon what is in flight */
            if (slot[k]) {
                curl_multi_remove_handle(l->multi, l->easy[k]);
                curl_slist_free_all(slot[k]->hdrs);
                slot[k]->hdrs = NULL;
                slot[k] = NULL;
            }
        }
        if (!failed)
            break;
    }
    lane_put(s, l);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (!xs[i].done)
            return retry_error(&xs[i], RETRIES);
    return 0;
}

/* Read-modify-write of part of one chunk, under its stripe lock. */
static int s3_patch(struct s3_source *s, const char *p, size_t n, uint64_t idx, uint32_t in)
{
    char *tmp = malloc(s->chunk);
    if (!tmp)
        return r3_error(-ENOMEM, "%s: out of memory", s->name);
    pthread_mutex_t *m = &s->stripe[idx % STRIPES];
    pthread_mutex_lock(m);
    struct xfer x = { .s = s, .method = M_GET, .idx = idx, .buf = tmp, .cap = s->chunk };
    int rc = run_xfers(s, &x, 1);
    if (rc == 0) {
        memcpy(tmp + in, p, n);
        x = (struct xfer){ .s = s, .method = M_PUT, .idx = idx, .buf = tmp, .len = s->chunk };
        rc = run_xfers(s, &x, 1);
    }
    pthread_mutex_unlock(m);
    free(tmp);
    return rc;
}

#define BATCH 64

static int s3_io(struct r3_source *src, void *buf, size_t len, uint64_t off, bool wr)
{
    struct s3_source *s = (struct s3_source *)src;
    struct xfer *xs = calloc(BATCH, sizeof *xs);
    if (!xs)
        return r3_error(-ENOMEM, "%s: out of memory", s->name);
    char *p = buf;
    int rc = 0;
    while (len > 0 && rc == 0) {
        size_t n = 0;
        while (len > 0 && n < BATCH && rc == 0) {
            uint64_t idx = off / s->chunk;
            uint32_t in = (uint32_t)(off % s->chunk);
            size_t k = s->chunk - in < len ? s->chunk - in : len;
            if (wr && k < s->chunk) {
                rc = s3_patch(s, p, k, idx, in);
            } else {
                memset(&xs[n], 0, sizeof xs[n]);
                xs[n].s = s;
                xs[n].method = wr ? M_PUT : M_GET;
                xs[n].idx = idx;
                xs[n].buf = p;
                xs[n].in = in;
                xs[n].ranged = k < s->chunk;
                if (wr)
                    xs[n].len = k;
                else
                    xs[n].cap = k;
                n++;
            }
            p += k;
            off += k;
            len -= k;
        }
        if (rc == 0 && n > 0)
            rc = run_xfers(s, xs, n);
    }
    free(xs);
    return rc;
}

static int s3_read(struct r3_source *src, void *buf, size_t len, uint64_t off)
{
    return s3_io(src, buf, len, off, false);
}

static int s3_write(struct r3_source *src, const void *buf, size_t len, uint64_t off)
{
    return s3_io(src, (void *)buf, len, off, true);
}

static int s3_flush(struct r3_source *src)
{
    struct s3_source *s = (struct s3_source *)src;
    struct xfer x = { .s = s, .method = M_HEAD };
    return run_xfers(s, &x, 1);
}

static void s3_close(struct r3_source *src)
{
    struct s3_source *s = (struct s3_source *)src;
    for (unsigned i = 0; i < s->nidle; i++)
        lane_free(s->idle[i]);
    free(s->idle);
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&s->stripe[i]);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cv);
    free(s->endpoint);
    free(s->bucket);
    free(s->prefix);
    if (s->userpwd)
        memset(s->userpwd, 0, strlen(s->userpwd));
    free(s->userpwd);
    free(s->token);
    free(s);
    curl_global_cleanup();
}

/* A missing object reads as zeros: a HEAD of each chunk's object, LANE_PAR
 * of them in parallel on one lane (one round trip; chunk keys are decimal,
 * so a LIST of a key range would not be one prefix). An object that is
 * there says DATA, even if it holds zeros. */
static int s3_extent(struct r3_source *src, uint64_t off, uint64_t len, uint64_t *run)
{
    struct s3_source *s = (struct s3_source *)src;
    struct xfer xs[LANE_PAR];
    uint64_t first = off / s->chunk, last = (off + len - 1) / s->chunk;
    size_t n = last - first + 1 < LANE_PAR ? (size_t)(last - first + 1) : LANE_PAR;
    for (size_t i = 0; i < n; i++)
        xs[i] = (struct xfer){ .s = s, .method = M_OHEAD, .idx = first + i };
    int rc = run_xfers(s, xs, n);
    if (rc < 0)
        return rc;
    size_t k = 1;
    while (k < n && xs[k].exists == xs[0].exists)
        k++;
    uint64_t e = (first + k) * s->chunk;
    *run = (e < off + len ? e : off + len) - off;
    return xs[0].exists ? R3_EXTENT_DATA : R3_EXTENT_ZERO;
}

static const struct r3_source_ops s3_ops = {
    .scheme = "s3", .read = s3_read, .write = s3_write, .flush = s3_flush, .close = s3_close,
    .extent = s3_extent,
};

/* Keys stay plain so URLs need no escaping: letters, digits, '.', '_', '-', '/'. */
static bool plain(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-' || *s == '/'))
            return false;
    return true;
}

/* Check or record "<prefix>/r3.meta" ("r3 SIZE CHUNK"). */
static int meta_sync(struct s3_source *s, bool have_size, bool have_chunk)
{
    char meta[64];
    struct xfer x = { .s = s, .method = M_GET, .meta = true, .buf = meta, .cap = sizeof meta - 1 };
    int rc = run_xfers(s, &x, 1);
    if (rc < 0)
        return rc;
    meta[x.len] = '\0';
    unsigned long long ms, mc;
    if (meta[0]) {
        if (sscanf(meta, "r3 %llu %llu", &ms, &mc) != 2 || !r3_is_pow2(mc) || mc < 4096 ||
            mc > (1u << 30) || ms == 0 || ms % mc)
            return r3_error(-EINVAL, "%s: r3.meta is not r3 metadata", s->name);
        if (have_size && ms != s->src.size)
            return r3_error(-EINVAL, "%s: holds %llu bytes, not size=%llu", s->name, ms,
                            (unsigned long long)s->src.size);
        if (have_chunk && mc != s->chunk)
            return r3_error(-EINVAL, "%s: uses chunk %llu, not chunk=%u", s->name, mc, s->chunk);
        s->src.size = ms;
        s->chunk = (uint32_t)mc;
        return 0;
    }
    if (!have_size)
        return r3_error(-EINVAL, "%s: the URI needs a size (add ?size=1G); no r3 data under this "
                        "prefix yet", s->name);
    int n = snprintf(meta, sizeof meta, "r3 %llu %u", (unsigned long long)s->src.size, s->chunk);
    x = (struct xfer){ .s = s, .method = M_PUT, .meta = true, .buf = meta, .len = (size_t)n };
    return run_xfers(s, &x, 1);
}

int r3_s3_open(const struct r3_uri *u, struct r3_source **out)
{
    static const char *const allowed[] = { "size", "chunk", "endpoint", "region", "conns",
                                           "timeout", "connect_timeout", NULL };
    uint64_t size, conns, tmo, ctmo;
    uint32_t chunk;
    int rc = r3_uri_check_params(u, allowed);
    if (rc == 0)
        rc = r3_uri_size_chunk(u, false, &size, &chunk);
    if (rc == 0)
        rc = r3_uri_param_uint(u, "conns", 16, &conns);
    if (rc == 0)
        rc = r3_uri_param_duration_ms(u, "timeout", R3_TIMEOUT_MS, &tmo);
    if (rc == 0)
        rc = r3_uri_param_duration_ms(u, "connect_timeout", R3_CONNECT_TIMEOUT_MS, &ctmo);
    if (rc < 0)
        return rc;
    if (conns < 1 || conns > 1024)
        return r3_error(-EINVAL, "s3: conns=%llu is not between 1 and 1024", (unsigned long long)conns);
    if (!u->host || !u->host[0])
        return r3_error(-EINVAL, "s3: the URI needs a bucket (s3://bucket/prefix?size=1G)");
    const char *region = r3_uri_param(u, "region") ? r3_uri_param(u, "region") : "us-east-1";
    const char *key = getenv("AWS_ACCESS_KEY_ID"), *secret = getenv("AWS_SECRET_ACCESS_KEY");
    if (!key || !*key || !secret || !*secret)
        return r3_error(-EACCES, "s3: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
    const char *prefix = u->path;
    while (*prefix == '/')
        prefix++;
    if (!plain(u->host) || strchr(u->host, '/') || !plain(prefix) || !plain(region) ||
        strlen(prefix) > 512 || strlen(u->host) > 63)
        return r3_error(-EINVAL, "s3: bucket, prefix and region may hold only letters, digits, "
                        "'.', '_', '-' (and '/' in the prefix)");
    const char *ep = r3_uri_param(u, "endpoint");
    if (ep && strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8))
        return r3_error(-EINVAL, "s3: endpoint '%s' is not an http:// or https:// URL", ep);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return r3_error(-EIO, "s3: libcurl initialisation failed");

    struct s3_source *s = calloc(1, sizeof *s);
    if (!s) {
        curl_global_cleanup();
        return r3_error(-ENOMEM, "s3: out of memory");
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cv, NULL);
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&s->stripe[i], NULL);
    s->conns = (unsigned)conns;
    s->chunk = chunk;
    s->timeout_ms = (long)tmo;
    s->connect_ms = (long)ctmo;
    s->src.ops = &s3_ops;
    s->src.size = size;
    s->src.align = 1;
    s->src.flags = R3_SRC_PARALLEL;
    char dflt[128];
    snprintf(dflt, sizeof dflt, "https://s3.%s.amazonaws.com", region);
    s->endpoint = strdup(ep ? ep : dflt);
    s->bucket = strdup(u->host);
    s->prefix = strdup(prefix);
    s->idle = calloc(conns, sizeof *s->idle);
    size_t kl = strlen(key) + strlen(secret) + 2;
    s->userpwd = malloc(kl);
    if (!s->endpoint || !s->bucket || !s->prefix || !s->idle || !s->userpwd) {
        s3_close(&s->src);
        return r3_error(-ENOMEM, "s3: out of memory");
    }
    snprintf(s->userpwd, kl, "%s:%s", key, secret);
    const char *tok = getenv("AWS_SESSION_TOKEN");
    if (tok && *tok && strlen(tok) < 4096 && !strpbrk(tok, "\r\n")) {
        size_t tl = strlen(tok) + 32;
        if ((s->token = malloc(tl)))
            snprintf(s->token, tl, "x-amz-security-token: %s", tok);
    }
    size_t el = strlen(s->endpoint);
    while (el > 0 && s->endpoint[el - 1] == '/')
        s->endpoint[--el] = '\0';
    size_t pl = strlen(s->prefix);
    while (pl > 0 && s->prefix[pl - 1] == '/')
        s->prefix[--pl] = '\0';
    snprintf(s->sigv4, sizeof s->sigv4, "aws:amz:%s:s3", region);
    snprintf(s->name, sizeof s->name, "s3 %s/%s%s%s", s->endpoint, s->bucket,
             s->prefix[0] ? "/" : "", s->prefix);

    struct xfer x = { .s = s, .method = M_HEAD };        /* the bucket must exist */
    rc = run_xfers(s, &x, 1);
    if (rc == 0)
        rc = meta_sync(s, r3_uri_param(u, "size") != NULL, r3_uri_param(u, "chunk") != NULL);
    if (rc < 0) {
        s3_close(&s->src);
        return rc;
    }
    *out = &s->src;
    return 0;
}
