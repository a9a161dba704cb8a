/* SPDX-License-Identifier: BSD-3-Clause */
/* The source-level leecher (r3mount --leech): the leecher's engine
 * (leech.h) with no region above its cache: the caller gets the cache
 * whose remote is the seeder and whose local side is opts.local (mem: by
 * default, or a file:// / dir:// source to keep the copy). At FINALIZE
 * the chunks written on A since TRACK that B holds become remote again in
 * the cache, so the next access and the resumed pull fetch them from the
 * paused seeder. */
#include <errno.h>
#include <stdlib.h>
#include "internal.h"
#include "migrate/leech.h"

struct r3_leech_source {
    struct r3_leech *l;
};

void r3_leech_source_close(struct r3_leech_source *s)
{
    if (!s)
        return;
    r3m_leech_free(s->l);             /* stops the pull, closes the cache */
    free(s);
}

int r3_leech_source_open(const char *uri, const struct r3_leech_opts *o, struct r3_leech_source **out,
                         struct r3_source **src)
{
    *out = NULL;
    *src = NULL;
    struct r3_leech_source *s = calloc(1, sizeof *s);
    if (!s)
        return r3_error(-ENOMEM, "leecher: out of memory");
    int rc = r3m_leech_connect(uri, o, &s->l);
    if (rc == 0 && (rc = r3m_leech_own(s->l)) == 0) {
        s->l->cache = s->l->own;
        rc = r3m_leech_start(s->l);
    }
    if (rc < 0) {
        r3_leech_source_close(s);
        return rc;
    }
    *out = s;
    *src = s->l->own;
    return 0;
}

int r3_leech_source_finalize(struct r3_leech_source *s)
{
    return r3m_leech_finalize(s->l);
}

int r3_leech_source_progress(struct r3_leech_source *s, struct r3_leech_progress *p)
{
    r3m_leech_progress(s->l, p);
    return 0;
}

int r3_leech_source_wait(struct r3_leech_source *s)
{
    return r3m_leech_wait(s->l);
}
