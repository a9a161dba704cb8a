/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the access log a region replays as its prefetch order
 * (uffd/access.c, r3u_access_load). The input is the file; input byte 0
 * picks the region's chunk count (1..256). A loaded log must give every
 * chunk a distinct rank: logged chunks 0..k-1 in log order, the others
 * k + their index (so below twice the chunk count). */
#include "fuzz.h"
#include <sys/mman.h>
#include "internal.h"
#include "uffd/uffd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    int fd = memfd_create("r3fuzz-access", MFD_CLOEXEC);
    if (fd < 0 || (size > 1 && write(fd, data + 1, size - 1) != (ssize_t)(size - 1)))
        FUZZ_DIE("memfd: %s", strerror(errno));
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    struct r3u_region *r = calloc(1, sizeof *r);
    if (!r)
        FUZZ_DIE("out of memory");
    r->nchunks = (uint64_t)data[0] + 1;
    r->r.chunk = 65536;
    if (r3u_access_load(r, path) == 0) {
        uint8_t seen[512] = { 0 };
        for (uint64_t i = 0; i < r->nchunks; i++) {
            int64_t p = r3u_priority(r, i);
            if (p < 0 || (uint64_t)p >= 2 * r->nchunks || seen[p]++)
                FUZZ_DIE("chunk %llu has rank %lld", (unsigned long long)i, (long long)p);
        }
        if (r3u_priority(r, r->nchunks) != -1)
            FUZZ_DIE("a rank past the region");
    }
    free(r->prio);
    free(r);
    close(fd);
    return 0;
}
