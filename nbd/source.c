/* SPDX-License-Identifier: BSD-3-Clause */
/* The nbd source: any NBD server as an r3 source, by the NBD URI spec
 * (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/uri.md):
 *   nbd://host[:port]/[export]            nbds://... (TLS required)
 *   nbd+unix:///[export]?socket=PATH      nbds+unix:///...?socket=PATH
 * Query: tls-certificates=DIR, tls-psk-file=FILE, tls-username=NAME,
 * connect_timeout=SECONDS (5), timeout=SECONDS (30): as in r3://, a number of
 * seconds ("0.5") or a duration with a unit ("500ms", "2s", "1m"). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "nbd/client.h"
#include "nbd/proto.h"

struct r3_nbd_source {
    struct r3_source src;
    struct r3_nbd_client *c;
};

static int ns_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    return r3_nbd_client_pread(((struct r3_nbd_source *)s)->c, buf, len, off);
}

static int ns_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    return r3_nbd_client_pwrite(((struct r3_nbd_source *)s)->c, buf, len, off, false);
}

static int ns_flush(struct r3_source *s)
{
    return r3_nbd_client_flush(((struct r3_nbd_source *)s)->c);
}

static int ns_extent(struct r3_source *s, uint64_t off, uint64_t len, uint64_t *run)
{
    return r3_nbd_client_block_status(((struct r3_nbd_source *)s)->c, off, len, run);
}

static void ns_close(struct r3_source *s)
{
    r3_nbd_client_close(((struct r3_nbd_source *)s)->c);
    free(s);
}

static const struct r3_source_ops r3_nbd_source_ops = {
    .scheme = "nbd", .read = ns_read, .write = ns_write, .flush = ns_flush, .close = ns_close,
    .extent = ns_extent,
};

/* A timeout parameter in ms: seconds as in r3:// ("5", "0.5"), or with a
 * unit (us, ms, s, m). */
static int ms_param(const struct r3_uri *u, const char *key, unsigned dflt_ms, unsigned *out)
{
    const char *v = r3_uri_param(u, key);
    *out = dflt_ms;
    if (!v)
        return 0;
    char *end;
    double d = strtod(v, &end), scale = 1000;
    if (end != v && *end) {
        if (!strcmp(end, "us"))
            scale = 0.001;
        else if (!strcmp(end, "ms"))
            scale = 1;
        else if (!strcmp(end, "s"))
            scale = 1000;
        else if (!strcmp(end, "m"))
            scale = 60000;
        else
            end = (char *)v;
    }
    d *= scale;
    if (end == v || !(d > 0) || d > 86400000)
        return r3_error(-EINVAL, "%s: bad %s '%s' (seconds, e.g. 5 or 0.5, or 500ms)", u->scheme, key, v);
    *out = d < 1 ? 1 : (unsigned)d;
    return 0;
}

int r3_nbd_client_opts_from_uri(const struct r3_uri *u, struct r3_nbd_client_opts *o)
{
    static const char *const allowed[] = { "socket", "tls-certificates", "tls-psk-file",
                                           "tls-username", "tls-verify-peer", "timeout",
                                           "connect_timeout", NULL };
    int rc = r3_uri_check_params(u, allowed);
    if (rc < 0)
        return rc;
    memset(o, 0, sizeof *o);
    const char *sch = u->scheme;
    bool is_unix = strstr(sch, "+unix") != NULL;
    o->tls = strncmp(sch, "nbds", 4) == 0;
    if (is_unix) {
        o->unix_path = r3_uri_param(u, "socket");
        if (!o->unix_path || !o->unix_path[0])
            return r3_error(-EINVAL, "%s: needs ?socket=PATH", sch);
        if (u->host && u->host[0])
            return r3_error(-EINVAL, "%s: takes no host (write %s:///export?socket=PATH)", sch, sch);
    } else {
        if (!u->host || !u->host[0])
            return r3_error(-EINVAL, "%s: needs a host (%s://host[:port]/export)", sch, sch);
        o->host = u->host;
        o->port = u->port ? u->port : NBD_DEFAULT_PORT;
    }
    o->export_name = u->path && u->path[0] == '/' ? u->path + 1 : (u->path ? u->path : "");
    o->tls_dir = r3_uri_param(u, "tls-certificates");
    o->tls_psk = r3_uri_param(u, "tls-psk-file");
    o->tls_user = r3_uri_param(u, "tls-username");
    if ((o->tls_dir || o->tls_psk) && !o->tls)
        return r3_error(-EINVAL, "%s: TLS parameters need the nbds scheme", sch);
    if ((rc = ms_param(u, "connect_timeout", 5000, &o->connect_timeout_ms)) < 0)
        return rc;
    return ms_param(u, "timeout", 30000, &o->timeout_ms);
}

int r3_nbd_open(const struct r3_uri *u, struct r3_source **out)
{
    struct r3_nbd_client_opts o;
    int rc = r3_nbd_client_opts_from_uri(u, &o);
    if (rc < 0)
        return rc;
    struct r3_nbd_source *s = calloc(1, sizeof *s);
    if (!s)
        return r3_error(-ENOMEM, "nbd: out of memory");
    if ((rc = r3_nbd_client_connect(&o, &s->c)) < 0) {
        free(s);
        return rc;
    }
    uint32_t mb = r3_nbd_client_min_block(s->c);
    if (!r3_is_pow2(mb) || mb > 65536) {
        r3_nbd_client_close(s->c);
        free(s);
        return r3_error(-EINVAL, "nbd: the server's minimum block size %u is not usable", mb);
    }
    s->src.ops = &r3_nbd_source_ops;
    s->src.size = r3_nbd_client_size(s->c);
    s->src.align = mb;
    s->src.flags = R3_SRC_PARALLEL |
                   ((r3_nbd_client_flags(s->c) & NBD_FLAG_READ_ONLY) ? R3_SRC_RDONLY : 0);
    *out = &s->src;
    return 0;
}
