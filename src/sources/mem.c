/* SPDX-License-Identifier: BSD-3-Clause */
/* mem: an anonymous, lazily populated mapping. mem:?size=1G */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "internal.h"

struct mem_source {
    struct r3_source src;
    char *base;
};

static int mem_read(struct r3_source *s, void *buf, size_t len, uint64_t off)
{
    memcpy(buf, ((struct mem_source *)s)->base + off, len);
    return 0;
}

static int mem_write(struct r3_source *s, const void *buf, size_t len, uint64_t off)
{
    memcpy(((struct mem_source *)s)->base + off, buf, len);
    return 0;
}

static int mem_flush(struct r3_source *s)
{
    return 0;
}

static void mem_close(struct r3_source *s)
{
    struct mem_source *m = (struct mem_source *)s;
    munmap(m->base, s->size);
    free(m);
}

static const struct r3_source_ops mem_ops = {
    .scheme = "mem", .read = mem_read, .write = mem_write, .flush = mem_flush, .close = mem_close,
};

int r3_mem_create(uint64_t size, struct r3_source **out)
{
    if (size == 0 || size > (UINT64_C(1) << 46))
        return r3_error(-EINVAL, "mem: size %llu is out of range", (unsigned long long)size);
    struct mem_source *m = calloc(1, sizeof *m);
    if (!m)
        return r3_error(-ENOMEM, "mem: out of memory");
    m->base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m->base == MAP_FAILED) {
        int e = errno;
        free(m);
        return r3_error(-e, "mem: cannot map %llu bytes: %s", (unsigned long long)size, strerror(e));
    }
    m->src.ops = &mem_ops;
    m->src.size = size;
    m->src.align = 1;
    m->src.flags = R3_SRC_PARALLEL;
    *out = &m->src;
    return 0;
}

void *r3_source_direct(struct r3_source *s, uint64_t off, size_t len)
{
    if (!s || s->ops != &mem_ops || off > s->size || len > s->size - off)
        return NULL;
    return ((struct mem_source *)s)->base + off;
}

int r3_mem_open(const struct r3_uri *u, struct r3_source **out)
{
    static const char *const allowed[] = { "size", "chunk", NULL };
    uint64_t size;
    uint32_t chunk;
    int rc = r3_uri_check_params(u, allowed);
    if (rc == 0)
        rc = r3_uri_size_chunk(u, true, &size, &chunk);
    if (rc == 0 && (u->host || (u->path && u->path[0])))
        rc = r3_error(-EINVAL, "mem: takes no host or path (write mem:?size=1G)");
    return rc < 0 ? rc : r3_mem_create(size, out);
}
