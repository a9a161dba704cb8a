/* r3_source_open and the bounded call wrappers every caller goes through. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include "internal.h"

int r3_source_open(const char *uri, struct r3_source **out)
{
    struct r3_uri u;
    *out = NULL;
    r3_error_clear();
    int rc = r3_uri_parse(uri, &u);
    if (rc < 0)
        return rc;
    const struct r3_scheme *s = r3_scheme_find(u.scheme);
    if (!s) {
        rc = r3_error(-EINVAL, "URI '%s': unknown scheme '%s'", uri, u.scheme);
    } else {
        rc = s->open(&u, out);
        if (rc < 0 && r3_last_error()[0] == '\0')
            r3_error(rc, "%s: cannot open '%s'", u.scheme, uri);
    }
    r3_uri_free(&u);
    return rc;
}

static int check_range(struct r3_source *src, size_t len, uint64_t off, int past_end)
{
    if (off > src->size || len > src->size - off)
        return r3_error(past_end, "%s: request of %zu bytes at offset %llu is past the end (%llu bytes)",
                        src->ops->scheme, len, (unsigned long long)off,
                        (unsigned long long)src->size);
    if (src->align > 1 && ((off | len) % src->align))
        return r3_error(-EINVAL, "%s: request of %zu bytes at %llu is not aligned to %u",
                        src->ops->scheme, len, (unsigned long long)off, src->align);
    return 0;
}

int r3_source_read(struct r3_source *src, void *buf, size_t len, uint64_t off)
{
    int rc = check_range(src, len, off, -EINVAL);
    if (rc < 0 || len == 0)
        return rc;
    return src->ops->read(src, buf, len, off);
}

int r3_source_write(struct r3_source *src, const void *buf, size_t len, uint64_t off)
{
    if (src->flags & R3_SRC_RDONLY)
        return r3_error(-EROFS, "%s: the source is read-only", src->ops->scheme);
    int rc = check_range(src, len, off, -ENOSPC);
    if (rc < 0 || len == 0)
        return rc;
    return src->ops->write(src, buf, len, off);
}

int r3_source_flush(struct r3_source *src)
{
    return src->ops->flush ? src->ops->flush(src) : 0;
}

void r3_source_close(struct r3_source *src)
{
    if (src)
        src->ops->close(src);
}
