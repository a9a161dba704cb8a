/* Test helper for the two-process uffd test:
 *   uffd_rw write URI SEED [--die]   fill the region with the pattern, sync
 *                                    (--die: then SIGKILL itself, no close)
 *   uffd_rw read URI SEED            check the region holds the pattern
 *   uffd_rw gen FILE SIZE SEED       write the pattern with plain write(2)
 * Exit 0 = ok, 1 = data differ, 2 = error. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <r3/r3.h>
#include "tests/uffd/pattern.h"

static struct r3_region *open_region(const char *uri)
{
    struct r3_source *src;
    struct r3_region *r;
    if (r3_source_open(uri, &src) < 0 || r3_region_open(NULL, src, &r) < 0) {
        fprintf(stderr, "uffd_rw: %s: %s\n", uri, r3_last_error());
        exit(2);
    }
    return r;
}

static void stats(const char *what, struct r3_region *r)
{
    struct r3_region_stats st;
    r3_region_stats(r, &st);
    fprintf(stderr, "uffd_rw %s: faults=%llu chunks_fault=%llu bytes_pulled=%llu chunks_pushed=%llu"
            " fault_wait_p50=%lluns p99=%lluns\n", what, (unsigned long long)st.faults,
            (unsigned long long)st.chunks_fault, (unsigned long long)st.bytes_pulled,
            (unsigned long long)st.chunks_pushed, (unsigned long long)st.fault_wait_p50_ns,
            (unsigned long long)st.fault_wait_p99_ns);
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "write") == 0) {
        struct r3_region *r = open_region(argv[2]);
        up_fill(r->base, r->len, 0, (uint32_t)atoi(argv[3]));
        if (r3_region_sync(r) < 0) {
            fprintf(stderr, "uffd_rw: sync: %s\n", r3_last_error());
            return 2;
        }
        stats("write", r);
        if (argc >= 5 && strcmp(argv[4], "--die") == 0)
            raise(SIGKILL);           /* synced data must survive this */
        return r3_region_close(r) < 0 ? 2 : 0;
    }
    if (argc >= 4 && strcmp(argv[1], "read") == 0) {
        struct r3_region *r = open_region(argv[2]);
        long long bad = up_check(r->base, r->len, 0, (uint32_t)atoi(argv[3]));
        stats("read", r);
        if (bad >= 0)
            fprintf(stderr, "uffd_rw: first difference at byte %lld\n", bad);
        r3_region_close(r);
        return bad >= 0;
    }
    if (argc >= 5 && strcmp(argv[1], "gen") == 0) {
        uint64_t size;
        if (r3_parse_size(argv[3], &size) < 0)
            return 2;
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            return 2;
        size_t bl = 4u << 20;
        char *b = malloc(bl);
        for (uint64_t off = 0; off < size; off += bl) {
            size_t n = size - off < bl ? (size_t)(size - off) : bl;
            up_fill(b, n, off, (uint32_t)atoi(argv[4]));
            if (write(fd, b, n) != (ssize_t)n)
                return 2;
        }
        free(b);
        return close(fd) < 0 ? 2 : 0;
    }
    fprintf(stderr, "usage: uffd_rw write URI SEED [--die] | read URI SEED | gen FILE SIZE SEED\n");
    return 2;
}
