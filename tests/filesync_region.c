/* A small program on the region API for the filesync strategy test: opens
 * SOURCE-URI with the filesync strategy, fills the region with the pattern
 * byte[i] = i % 251 (after checking the pre-copied content if asked), prints
 * the SHA-256 of the region and closes it (which pushes the changes back).
 * usage: filesync_region URI [--interval MS] [--chunk N] [--detect pagemap|hash] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <r3/r3.h>
#include "internal.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: filesync_region URI [--interval MS] [--chunk N] [--detect pagemap|hash]\n");
        return 2;
    }
    struct r3_region_opts o;
    r3_region_opts_init(&o);
    o.strategy = "filesync";
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--interval"))
            o.push_interval_ms = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--chunk"))
            o.chunk = (uint32_t)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--detect"))
            o.filesync_detect = argv[i + 1];
    }
    struct r3_source *src;
    if (r3_source_open(argv[1], &src) < 0) {
        fprintf(stderr, "filesync_region: %s\n", r3_last_error());
        return 1;
    }
    struct r3_region *r;
    if (r3_region_open(&o, src, &r) < 0) {
        fprintf(stderr, "filesync_region: %s\n", r3_last_error());
        return 1;
    }
    unsigned char *b = r->base;
    /* the pre-copy brought the source's bytes: report their hash first */
    unsigned char md[32];
    unsigned int mdl;
    EVP_Digest(b, r->len, md, &mdl, EVP_sha256(), NULL);
    printf("before ");
    for (unsigned i = 0; i < mdl; i++)
        printf("%02x", md[i]);
    printf("\n");
    for (size_t i = 0; i < r->len; i++)
        b[i] = (unsigned char)(i % 251);
    EVP_Digest(b, r->len, md, &mdl, EVP_sha256(), NULL);
    for (unsigned i = 0; i < mdl; i++)
        printf("%02x", md[i]);
    printf("\n");
    struct r3_region_stats st;
    r3_region_stats(r, &st);
    fprintf(stderr, "filesync_region: detect=%s pulled=%llu\n", r3_filesync_detect(r),
            (unsigned long long)st.bytes_pulled);
    if (r3_region_close(r) < 0) {
        fprintf(stderr, "filesync_region: close: %s\n", r3_last_error());
        return 1;
    }
    return 0;
}
