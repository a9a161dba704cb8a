/* The chunk-source contract: a random-access byte store. Every backend (mem,
 * file, dir, redis, s3, r3, nbd) and every stage implements these ops. */
#ifndef R3_SOURCE_H
#define R3_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define R3_SRC_RDONLY   0x1u   /* writes fail with -EROFS */
#define R3_SRC_PARALLEL 0x2u   /* read/write/flush may be called concurrently */

struct r3_source;

struct r3_source_ops {
    const char *scheme;                       /* "mem", "redis", "cache", ... */
    /* read/write move all len bytes and return 0, or return -errno; never a
     * short count. Callers go through r3_source_read/write, which bound
     * off/len against size first. */
    int  (*read) (struct r3_source *, void *buf, size_t len, uint64_t off);
    int  (*write)(struct r3_source *, const void *buf, size_t len, uint64_t off);
    int  (*flush)(struct r3_source *);        /* durable at the source on 0 */
    void (*close)(struct r3_source *);        /* frees the source (and owned inner) */
};

struct r3_source {
    const struct r3_source_ops *ops;
    uint64_t size;       /* bytes */
    uint32_t align;      /* required alignment of off/len; 1 = any */
    unsigned flags;      /* R3_SRC_* */
};

/* Open a source from a URI (see README: mem:, file://, dir://, redis://, s3://,
 * r3://, r3s://, nbd://, nbd+unix://). 0 or -errno; r3_last_error() says why. */
int r3_source_open(const char *uri, struct r3_source **out);

/* Bounded calls: a read past the end is -EINVAL, a write past the end is
 * -ENOSPC, a write to a read-only source -EROFS; nothing is moved then. */
int  r3_source_read(struct r3_source *src, void *buf, size_t len, uint64_t off);
int  r3_source_write(struct r3_source *src, const void *buf, size_t len, uint64_t off);
int  r3_source_flush(struct r3_source *src);
void r3_source_close(struct r3_source *src);

/* Parse a size with an optional K/M/G/T suffix (powers of 1024). 0 or -EINVAL. */
int r3_parse_size(const char *s, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif
