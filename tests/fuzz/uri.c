/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the URI parser (src/uri.c) and the typed parameter readers
 * every source uses (sizes with suffixes, durations with units, integers,
 * size/chunk), on any string. A parsed URI must be consistent: a scheme,
 * a port in 0..65535, a path. */
#include "fuzz.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = fuzz_cstr(data, size);
    struct r3_uri u;
    if (r3_uri_parse(s, &u) == 0) {
        if (!u.scheme || !u.path || u.port < 0 || u.port > 65535)
            FUZZ_DIE("inconsistent parse");
        uint64_t v;
        uint32_t chunk;
        static const char *const allowed[] = { "size", "chunk", "timeout", "conns", NULL };
        r3_uri_check_params(&u, allowed);
        r3_uri_param_size(&u, "size", 0, &v);
        r3_uri_param_size(&u, "chunk", 65536, &v);
        r3_uri_param_duration_ms(&u, "timeout", 1000, &v);
        r3_uri_param_uint(&u, "conns", 8, &v);
        if (r3_uri_size_chunk(&u, false, &v, &chunk) == 0 && (chunk == 0 || (chunk & (chunk - 1))))
            FUZZ_DIE("size_chunk accepted chunk %u", chunk);
        for (size_t i = 0; i < u.nparams; i++)
            if (!u.params[i].key || !u.params[i].val || r3_uri_param(&u, u.params[i].key) == NULL)
                FUZZ_DIE("parameter %zu is not found by its key", i);
        r3_uri_free(&u);
    }
    free(s);
    return 0;
}
