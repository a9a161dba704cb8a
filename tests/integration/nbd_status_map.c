/* SPDX-License-Identifier: BSD-3-Clause */
/* nbd_status_map URI [STEP]: the source's extents through r3_source_extent(),
 * one line per run ("OFF LEN data" or "OFF LEN zero"), adjacent runs of one
 * kind merged: what tests/integration/nbd_status.sh compares with nbdinfo
 * --map and with the SEEK_HOLE view of a file. Each query asks for at most
 * STEP bytes (default: the rest of the source), so that a run longer than
 * one query is also seen joined up. Exit 0, or 1 with the error. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <r3/r3.h>

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: nbd_status_map URI [STEP]\n");
        return 2;
    }
    struct r3_source *s;
    if (r3_source_open(argv[1], &s) < 0) {
        fprintf(stderr, "nbd_status_map: %s\n", r3_last_error());
        return 1;
    }
    uint64_t step = argc == 3 ? strtoull(argv[2], NULL, 0) : 0, off = 0, start = 0;
    int kind = -1, rc = 0;
    while (off < s->size) {
        uint64_t len = s->size - off, run = 0;
        if (step && len > step)
            len = step;
        rc = r3_source_extent(s, off, len, &run);
        if (rc < 0) {
            fprintf(stderr, "nbd_status_map: at %" PRIu64 ": %s\n", off, r3_last_error());
            break;
        }
        if (run == 0 || run > len) {
            fprintf(stderr, "nbd_status_map: at %" PRIu64 ": a run of %" PRIu64 " bytes\n", off, run);
            rc = -1;
            break;
        }
        if (rc != kind) {
            if (kind >= 0)
                printf("%" PRIu64 " %" PRIu64 " %s\n", start, off - start, kind == R3_EXTENT_ZERO ? "zero" : "data");
            kind = rc;
            start = off;
        }
        off += run;
    }
    if (rc >= 0 && kind >= 0)
        printf("%" PRIu64 " %" PRIu64 " %s\n", start, off - start, kind == R3_EXTENT_ZERO ? "zero" : "data");
    r3_source_close(s);
    return rc < 0 ? 1 : 0;
}
