/* SPDX-License-Identifier: BSD-3-Clause */
/* Internal interfaces of libr3 shared by its parts (not installed). */
#ifndef R3_INTERNAL_H
#define R3_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <r3/r3.h>

#define R3_DEFAULT_CHUNK (64u * 1024u)

/* ---- URIs (src/uri.c) */
struct r3_uri_param { char *key, *val; };
struct r3_uri {
    char *scheme;        /* lower case, without ':' */
    char *user, *password;
    char *host;          /* without brackets for IPv6; NULL if no authority */
    int port;            /* 0 if absent */
    char *path;          /* percent-decoded, "" if absent */
    struct r3_uri_param *params;
    size_t nparams;
};
int  r3_uri_parse(const char *s, struct r3_uri *u);
void r3_uri_free(struct r3_uri *u);
const char *r3_uri_param(const struct r3_uri *u, const char *key);   /* NULL if absent */
/* Size parameter with K/M/G/T suffix; dflt if absent. -EINVAL names the key. */
int r3_uri_param_size(const struct r3_uri *u, const char *key, uint64_t dflt, uint64_t *out);
/* Unsigned integer parameter; dflt if absent. */
int r3_uri_param_uint(const struct r3_uri *u, const char *key, uint64_t dflt, uint64_t *out);
/* -EINVAL naming the first parameter not in allowed (NULL-terminated). */
int r3_uri_check_params(const struct r3_uri *u, const char *const *allowed);
/* size= and chunk= validated together (chunk power of two >= 4 KiB, size a
 * multiple of chunk); size_required makes a missing size an error. */
int r3_uri_size_chunk(const struct r3_uri *u, bool size_required, uint64_t *size, uint32_t *chunk);

/* ---- registry (src/registry.c) */
struct r3_scheme {
    const char *scheme;
    int (*open)(const struct r3_uri *u, struct r3_source **out);
};
const struct r3_scheme *r3_scheme_find(const char *scheme);

/* ---- sources */
int r3_mem_open(const struct r3_uri *u, struct r3_source **out);
int r3_file_open(const struct r3_uri *u, struct r3_source **out);
int r3_dir_open(const struct r3_uri *u, struct r3_source **out);
int r3_redis_open(const struct r3_uri *u, struct r3_source **out);
int r3_s3_open(const struct r3_uri *u, struct r3_source **out);
/* nbd://, nbds://, nbd+unix://, nbds+unix:// (nbd/source.c) */
extern const struct r3_strategy_ops r3_strategy_nbd_direct, r3_strategy_nbd_managed;   /* nbd/strategy.c */
int r3_nbd_open(const struct r3_uri *u, struct r3_source **out);
/* r3://, r3s://, r3+unix://, r3s+unix:// (src/wire/client.c) */
int r3_wire_open(const struct r3_uri *u, struct r3_source **out);
/* The bytes of a source that lives in this process's memory (mem:), for
 * copy-free serving (the NBD server sends from them directly); NULL for
 * any other source. Valid until the source is closed; concurrent writes show. */
void *r3_source_direct(struct r3_source *s, uint64_t off, size_t len);
/* Its pages made present before a write through that pointer: one madvise
 * instead of a page fault per 4 KiB (15 times cheaper in this VM). */
void r3_source_direct_populate(struct r3_source *s, uint64_t off, size_t len);
/* A mem source of size bytes, without a URI (used by the pipeline builder). */
int r3_mem_create(uint64_t size, struct r3_source **out);

/* ---- strategies */
extern const struct r3_strategy_ops r3_uffd_strategy;

/* ---- stages: like r3_cache_fetch, but 1 when this call did the fetch. */
int r3_cache_fetch_counted(struct r3_source *cache, uint64_t idx, int why);
/* Is idx being fetched right now (a fetch of it would wait)? A hint. */
bool r3_cache_is_fetching(struct r3_source *cache, uint64_t idx);
/* Present and all zeros (the remote said so; nothing was copied). A zero
 * chunk is also local for r3_cache_is_local; r3_cache_fetch_counted returns
 * 2 when it recorded one. */
bool r3_cache_is_zero(struct r3_source *cache, uint64_t idx);
/* The current bytes of part of one chunk without filling it: the local
 * side's (under the chunk's lock) when present (*local true), else the
 * remote's. */
int r3_cache_peek(struct r3_source *cache, void *buf, size_t len, uint64_t off, bool *local);
/* ---- an access order (src/order.c): chunks in the order they were first
 * used, noted by any thread without a lock; a hint for a leecher. */
struct r3_order {
    _Atomic uint64_t *slot;       /* chunk + 1; 0: taken, not written yet */
    _Atomic uint64_t n;
    uint64_t cap;
};
int  r3_order_init(struct r3_order *o, uint64_t cap);
void r3_order_note(struct r3_order *o, uint64_t chunk);
/* The order so far (malloc'd, possibly empty). 0 or -ENOMEM. */
int  r3_order_list(struct r3_order *o, uint64_t **list, size_t *n);
void r3_order_free(struct r3_order *o);

/* Record from now on the order in which chunks are first read or written
 * through the cache (pulls do not count): a region's access order for a
 * migration seeder. 0 or -errno. */
int r3_cache_record_order(struct r3_source *cache);
/* That order so far (malloc'd, possibly empty; without recording, empty). */
int r3_cache_access_order(struct r3_source *cache, uint64_t **list, size_t *n);
/* Make chunk idx local with the bytes in buf (a whole chunk) unless it is
 * present or being filled: 1 filled, 0 not needed, -errno. */
int r3_cache_fill(struct r3_source *cache, uint64_t idx, const void *buf);
/* Push stage write-behind: a write that reaches a chunk's end queues the
 * chunk for `workers` background pushes; flush waits for them. 0 or -errno. */
int r3_push_write_behind(struct r3_source *push, unsigned workers);
/* Push stage migration tracking (R3_TRACK_*, the nbd-managed seeder): from
 * START on, every chunk written or marked is remembered across rounds; TAKE
 * lists them (ascending, malloc'd; the caller frees), STOP forgets. */
int r3_push_track(struct r3_source *push, int op, uint64_t **list, size_t *n);
/* The struct_size check of an options struct: 0 (this layout) or want is
 * fine; anything else is -EINVAL naming the struct. */
int r3_opts_check(uint32_t got, size_t want, const char *what);

/* ---- small helpers (src/util.c) */
static inline uint64_t r3_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static inline bool r3_is_pow2(uint64_t x) { return x && !(x & (x - 1)); }
/* Read/write all of len at off, retrying EINTR and short counts. 0 or -errno. */
int r3_pread_all(int fd, void *buf, size_t len, uint64_t off);
int r3_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
/* The whole pages inside [p, p+len) made present with one madvise: a
 * fresh buffer's first fill otherwise takes a page fault per 4 KiB (2.9 ms
 * per MiB in this VM, 0.2 ms this way). Best effort. */
void r3_mem_populate(void *p, size_t len);
/* Human size "64 KiB", "1 GiB" into buf. */
const char *r3_fmt_size(uint64_t v, char *buf, size_t n);
/* A shared read-only buffer of R3_ZEROS_LEN zero bytes: the cache writes a
 * chunk the remote says is zero from it (a local side that knows this
 * pointer, like a uffd view, can install it with no copy: UFFDIO_ZEROPAGE). */
#define R3_ZEROS_LEN (1u << 20)
const void *r3_zeros(void);
/* Rounded byte count for logs: "512 B", "1.5 KiB", "3.2 MiB", "1.25 GiB". */
const char *r3_fmt_bytes(uint64_t v, char *buf, size_t n);
/* A duration with a unit: us, ms, s or m ("500ms", "2s", "1.5s"). A bare
 * number is -EINVAL ("needs a unit"), as is a negative, empty or
 * overflowing one; r3_last_error() says which. _ms rounds a
 * sub-millisecond duration up (a nonzero duration never becomes 0).
 * (src/preload/env.c has an older r3_parse_duration_ms that accepts a bare
 * number as ms; these replace it when it goes.) */
int r3_util_parse_duration_us(const char *s, uint64_t *us);
int r3_util_parse_duration_ms(const char *s, uint64_t *ms);
/* A URI's timeout-like parameter (timeout=, connect_timeout=), parsed the same
 * in every network URI: a duration with a unit ("500ms", "5s"); a bare
 * number is -EINVAL ("needs a unit"), as are 0 and more than an hour.
 * dflt_ms if absent. */
int r3_uri_param_duration_ms(const struct r3_uri *u, const char *key, uint64_t dflt_ms,
                             uint64_t *out_ms);
#define R3_CONNECT_TIMEOUT_MS 5000u      /* connect_timeout= default of every network URI */
#define R3_TIMEOUT_MS         30000u     /* timeout= default of every network URI */

/* ---- migration (src/migrate/leech.c): r3_region_close of a leeched
 * region stops its pull workers and frees the migration first. */
void r3_leech_detach_(struct r3_region *r);

/* ---- strategies */
extern const struct r3_strategy_ops r3_strategy_filesync;   /* filesync/strategy.c */
/* "pagemap" or "hash": how a filesync region finds changed blocks. */
const char *r3_filesync_detect(const struct r3_region *r);

/* The descriptor of a file:// source (for SEEK_DATA/SEEK_HOLE), or -1 for
 * any other source. The source keeps it. */
int r3_file_source_fd(const struct r3_source *s);

#endif
