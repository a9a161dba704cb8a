/* SPDX-License-Identifier: BSD-3-Clause */
/* region_demo: the libr3 API without the shim. Opens a source, opens a uffd
 * region on it, builds a small table of records in the region's memory,
 * syncs, then runs itself again as a new process that reopens the same
 * source and reads the table back.
 *
 *   region_demo [URI]          write, sync, then re-exec as "read"
 *   region_demo write URI      only the writing half
 *   region_demo read URI       only the reading half (exit 1 if it differs)
 *
 * The default URI is file:///tmp/region_demo.img?size=64M.
 * Build: cc region_demo.c $(pkg-config --cflags --libs libr3) */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <r3/r3.h>

#define MAGIC 0x72336465u         /* "r3de" */
#define NREC 100000

/* Everything lives in the region; links are offsets, not pointers, so the
 * table reads the same wherever the region is mapped next time. */
struct record {
    uint64_t id;
    uint64_t next;                /* offset of the next record, 0 = end */
    double value;
    char name[40];
};

struct table {
    uint32_t magic, count;
    uint64_t first;               /* offset of the first record */
    uint64_t checksum;
};

static uint64_t mix(uint64_t h, uint64_t v)
{
    return (h ^ v) * 0x100000001b3ull;
}

static int open_region(const char *uri, struct r3_region **r)
{
    struct r3_source *src;
    if (r3_source_open(uri, &src) < 0) {
        fprintf(stderr, "region_demo: %s\n", r3_last_error());
        return -1;
    }
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = "uffd";
    o.size = 64u << 20;           /* use the first 64 MiB of the source */
    if (r3_region_open(&o, src, r) < 0) {   /* takes src, also on failure */
        fprintf(stderr, "region_demo: %s\n", r3_last_error());
        return -1;
    }
    return 0;
}

static int do_write(const char *uri)
{
    struct r3_region *r;
    if (open_region(uri, &r) < 0)
        return 1;
    char *base = r->base;
    struct table *t = (struct table *)base;
    uint64_t off = 4096, h = 14695981039346656037ull, prev = 0;
    for (uint32_t i = 0; i < NREC; i++, off += sizeof(struct record)) {
        struct record *rec = (struct record *)(base + off);
        rec->id = i;
        rec->value = i * 0.5;
        rec->next = 0;
        snprintf(rec->name, sizeof rec->name, "record-%u", i);
        if (prev)
            ((struct record *)(base + prev))->next = off;
        else
            t->first = off;
        prev = off;
        h = mix(h, i);
    }
    t->count = NREC;
    t->checksum = h;
    t->magic = MAGIC;
    if (r3_region_sync(r) < 0) {  /* after 0: every byte is in the source */
        fprintf(stderr, "region_demo: sync: %s\n", r3_last_error());
        r3_region_close(r);
        return 1;
    }
    printf("wrote %u records (%zu bytes) to %s\n", NREC, (size_t)(off - 4096), uri);
    return r3_region_close(r) < 0;
}

static int do_read(const char *uri)
{
    struct r3_region *r;
    if (open_region(uri, &r) < 0)
        return 1;
    const char *base = r->base;
    const struct table *t = (const struct table *)base;
    int bad = 0;
    if (t->magic != MAGIC) {
        fprintf(stderr, "region_demo: no table in %s (magic %08x)\n", uri, t->magic);
        bad = 1;
    }
    uint64_t h = 14695981039346656037ull, n = 0;
    char want[40];
    for (uint64_t off = t->first; !bad && off; n++) {
        if (off + sizeof(struct record) > r->len || n > t->count) {
            fprintf(stderr, "region_demo: broken link at record %llu\n", (unsigned long long)n);
            bad = 1;
            break;
        }
        const struct record *rec = (const struct record *)(base + off);
        snprintf(want, sizeof want, "record-%llu", (unsigned long long)n);
        if (rec->id != n || rec->value != n * 0.5 || strcmp(rec->name, want) != 0) {
            fprintf(stderr, "region_demo: record %llu differs\n", (unsigned long long)n);
            bad = 1;
        }
        h = mix(h, rec->id);
        off = rec->next;
    }
    if (!bad && (n != t->count || h != t->checksum)) {
        fprintf(stderr, "region_demo: %llu records, checksum %016llx; expected %u, %016llx\n",
                (unsigned long long)n, (unsigned long long)h, t->count,
                (unsigned long long)t->checksum);
        bad = 1;
    }
    struct r3_region_stats st;
    r3_region_stats(r, &st);
    if (!bad)
        printf("read %llu records back from %s (%llu faults, %llu bytes pulled)\n",
               (unsigned long long)n, uri, (unsigned long long)st.faults,
               (unsigned long long)st.bytes_pulled);
    r3_region_close(r);
    return bad;
}

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "region_demo: %s%s\nTry 'region_demo --help' for more information.\n", what, arg);
    return 2;
}

int main(int argc, char **argv)
{
    const char *dflt = "file:///tmp/region_demo.img?size=64M";
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("Usage: region_demo [URI]        write a table, sync, re-exec to read it back\n"
               "       region_demo write URI    only the writing half\n"
               "       region_demo read URI     only the reading half (exit 1 if it differs)\n"
               "The default URI is %s.\n", dflt);
        return 0;
    }
    if (argc == 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)) {
        printf("region_demo (r3) %s\n", R3_VERSION);
        return 0;
    }
    for (int i = 1; i < argc; i++)
        if (argv[i][0] == '-')
            return usage_error("unknown option ", argv[i]);
    bool mode = argc >= 2 && (strcmp(argv[1], "write") == 0 || strcmp(argv[1], "read") == 0);
    if (mode && argc == 2)
        return usage_error("write and read need a URI", "");
    if (argc > (mode ? 3 : 2))
        return usage_error("too many arguments", "");
    if (mode)
        return argv[1][0] == 'w' ? do_write(argv[2]) : do_read(argv[2]);
    const char *uri = argc == 2 ? argv[1] : dflt;
    if (do_write(uri))
        return 1;
    fflush(stdout);
    /* A new process: nothing of the first region survives but the source. */
    execl("/proc/self/exe", argv[0], "read", uri, (char *)NULL);
    perror("region_demo: exec");
    return 1;
}
