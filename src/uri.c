/* SPDX-License-Identifier: BSD-3-Clause */
/* The one URI parser: scheme:[//[user[:password]@]host[:port]][/path][?k=v&...].
 * Sizes take K/M/G/T suffixes. Every error names the bad part. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Copy [s, s+n) percent-decoded into a new string; NULL on bad escape/NUL. */
static char *decode(const char *s, size_t n)
{
    char *o = malloc(n + 1), *p = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int h, l;
            if (i + 2 >= n || (h = hexval((unsigned char)s[i + 1])) < 0 ||
                (l = hexval((unsigned char)s[i + 2])) < 0 || (h == 0 && l == 0)) {
                free(o);
                return NULL;
            }
            *p++ = (char)(h * 16 + l);
            i += 2;
        } else {
            *p++ = s[i];
        }
    }
    *p = '\0';
    return o;
}

void r3_uri_free(struct r3_uri *u)
{
    free(u->scheme);
    free(u->user);
    free(u->password);
    free(u->host);
    free(u->path);
    for (size_t i = 0; i < u->nparams; i++) {
        free(u->params[i].key);
        free(u->params[i].val);
    }
    free(u->params);
    memset(u, 0, sizeof *u);
}

static int parse_authority(const char *a, size_t n, struct r3_uri *u, const char *uri)
{
    const char *at = memrchr(a, '@', n);
    if (at) {
        const char *colon = memchr(a, ':', (size_t)(at - a));
        if (colon) {
            u->user = decode(a, (size_t)(colon - a));
            u->password = decode(colon + 1, (size_t)(at - colon - 1));
        } else {
            u->user = decode(a, (size_t)(at - a));
        }
        if (!u->user || (colon && !u->password))
            return r3_error(-EINVAL, "URI '%s': bad user information", uri);
        n -= (size_t)(at + 1 - a);
        a = at + 1;
    }
    const char *hend = a + n, *port = NULL;
    if (n > 0 && a[0] == '[') {
        const char *rb = memchr(a, ']', n);
        if (!rb)
            return r3_error(-EINVAL, "URI '%s': IPv6 host without ']'", uri);
        u->host = decode(a + 1, (size_t)(rb - a - 1));
        if (rb + 1 < hend) {
            if (rb[1] != ':')
                return r3_error(-EINVAL, "URI '%s': junk after IPv6 host", uri);
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(a, ':', n);
        u->host = decode(a, colon ? (size_t)(colon - a) : n);
        if (colon)
            port = colon + 1;
    }
    if (!u->host)
        return r3_error(-EINVAL, "URI '%s': bad host", uri);
    if (port) {
        if (port == hend)
            return r3_error(-EINVAL, "URI '%s': empty port", uri);
        long v = 0;
        for (const char *p = port; p < hend; p++) {
            if (!isdigit((unsigned char)*p) || (v = v * 10 + (*p - '0')) > 65535)
                return r3_error(-EINVAL, "URI '%s': bad port '%.*s'", uri,
                                (int)(hend - port), port);
        }
        if (v == 0)
            return r3_error(-EINVAL, "URI '%s': bad port 0", uri);
        u->port = (int)v;
    }
    return 0;
}

static int parse_query(const char *q, struct r3_uri *u, const char *uri)
{
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        if (n > 0) {
            const char *eq = memchr(q, '=', n);
            if (!eq || eq == q)
                return r3_error(-EINVAL, "URI '%s': query part '%.*s' is not key=value",
                                uri, (int)n, q);
            struct r3_uri_param *np = realloc(u->params, (u->nparams + 1) * sizeof *np);
            if (!np)
                return r3_error(-ENOMEM, "out of memory");
            u->params = np;
            char *k = decode(q, (size_t)(eq - q));
            char *v = decode(eq + 1, (size_t)(q + n - eq - 1));
            if (!k || !v) {
                free(k);
                free(v);
                return r3_error(-EINVAL, "URI '%s': bad %%-escape in '%.*s'", uri, (int)n, q);
            }
            for (size_t i = 0; i < u->nparams; i++) {
                if (strcmp(u->params[i].key, k) == 0) {
                    r3_error(-EINVAL, "URI '%s': parameter '%s' given twice", uri, k);
                    free(k);
                    free(v);
                    return -EINVAL;
                }
            }
            u->params[u->nparams].key = k;
            u->params[u->nparams].val = v;
            u->nparams++;
        }
        q += n + (amp ? 1 : 0);
    }
    return 0;
}

int r3_uri_parse(const char *s, struct r3_uri *u)
{
    memset(u, 0, sizeof *u);
    if (!s || !*s)
        return r3_error(-EINVAL, "empty URI");
    const char *colon = strchr(s, ':');
    size_t sl = colon ? (size_t)(colon - s) : 0;
    for (size_t i = 0; i < sl; i++) {
        char c = s[i];
        if (!(isalnum((unsigned char)c) || c == '+' || c == '-' || c == '.') ||
            (i == 0 && !isalpha((unsigned char)c)))
            sl = 0;
    }
    if (sl == 0)
        return r3_error(-EINVAL, "URI '%s': no scheme (expected e.g. mem:?size=1G or file:///path)", s);
    u->scheme = strndup(s, sl);
    if (!u->scheme)
        return r3_error(-ENOMEM, "out of memory");
    for (char *p = u->scheme; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    const char *p = colon + 1;
    const char *q = strchr(p, '?');
    const char *frag = strchr(p, '#');
    if (frag && (!q || frag < q)) {
        r3_uri_free(u);
        return r3_error(-EINVAL, "URI '%s': fragments ('#') are not supported", s);
    }
    const char *end = q ? q : p + strlen(p);
    int rc = 0;
    if (end - p >= 2 && p[0] == '/' && p[1] == '/') {
        p += 2;
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *aend = slash ? slash : end;
        if (aend > p)
            rc = parse_authority(p, (size_t)(aend - p), u, s);
        else if (!(u->host = strdup("")))
            rc = r3_error(-ENOMEM, "out of memory");
        p = aend;
    }
    if (rc == 0) {
        u->path = decode(p, (size_t)(end - p));
        if (!u->path)
            rc = r3_error(-EINVAL, "URI '%s': bad %%-escape in path", s);
    }
    if (rc == 0 && q)
        rc = parse_query(q + 1, u, s);
    if (rc < 0)
        r3_uri_free(u);
    return rc;
}

const char *r3_uri_param(const struct r3_uri *u, const char *key)
{
    for (size_t i = 0; i < u->nparams; i++)
        if (strcmp(u->params[i].key, key) == 0)
            return u->params[i].val;
    return NULL;
}

int r3_uri_param_size(const struct r3_uri *u, const char *key, uint64_t dflt, uint64_t *out)
{
    const char *v = r3_uri_param(u, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (r3_parse_size(v, out) < 0)
        return r3_error(-EINVAL, "%s: bad %s '%s' (expected a number with an optional K/M/G/T suffix)",
                        u->scheme, key, v);
    return 0;
}

int r3_uri_param_duration_ms(const struct r3_uri *u, const char *key, uint64_t dflt_ms,
                             uint64_t *out_ms)
{
    const char *v = r3_uri_param(u, key);
    uint64_t ms;
    if (!v) {
        *out_ms = dflt_ms;
        return 0;
    }
    if (r3_util_parse_duration_ms(v, &ms) < 0) {
        char why[200];
        snprintf(why, sizeof why, "%s", r3_last_error());
        return r3_error(-EINVAL, "%s: %s=%s: %s", u->scheme, key, v, why);
    }
    if (ms == 0 || ms > 3600000)
        return r3_error(-EINVAL, "%s: %s=%s is not between 1ms and an hour", u->scheme, key, v);
    *out_ms = ms;
    return 0;
}

int r3_uri_param_uint(const struct r3_uri *u, const char *key, uint64_t dflt, uint64_t *out)
{
    const char *v = r3_uri_param(u, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!isdigit((unsigned char)*v) || *end || errno)
        return r3_error(-EINVAL, "%s: bad %s '%s' (expected a whole number)", u->scheme, key, v);
    *out = x;
    return 0;
}

int r3_uri_check_params(const struct r3_uri *u, const char *const *allowed)
{
    for (size_t i = 0; i < u->nparams; i++) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, u->params[i].key) == 0;
        if (!ok)
            return r3_error(-EINVAL, "%s: unknown URI parameter '%s'", u->scheme, u->params[i].key);
    }
    return 0;
}

int r3_uri_size_chunk(const struct r3_uri *u, bool size_required, uint64_t *size, uint32_t *chunk)
{
    uint64_t c, s;
    int rc = r3_uri_param_size(u, "chunk", R3_DEFAULT_CHUNK, &c);
    if (rc < 0)
        return rc;
    if (!r3_is_pow2(c) || c < 4096 || c > (1u << 30))
        return r3_error(-EINVAL, "%s: chunk %llu is not a power of two between 4K and 1G",
                        u->scheme, (unsigned long long)c);
    if (size_required && !r3_uri_param(u, "size"))
        return r3_error(-EINVAL, "%s: the URI needs a size (add ?size=1G)", u->scheme);
    rc = r3_uri_param_size(u, "size", 0, &s);
    if (rc < 0)
        return rc;
    if (r3_uri_param(u, "size") && s == 0)
        return r3_error(-EINVAL, "%s: size must be greater than 0", u->scheme);
    if (s % c)
        return r3_error(-EINVAL, "%s: size %llu is not a multiple of the chunk size %llu",
                        u->scheme, (unsigned long long)s, (unsigned long long)c);
    *size = s;
    *chunk = (uint32_t)c;
    return 0;
}
