/* SPDX-License-Identifier: BSD-3-Clause */
/* r3:// client calls beyond the source ops (internal; used by src/migrate).
 * The protocol's migration methods take two numbers and answer a uint or
 * bin (see include/r3/wire.h). */
#ifndef R3_WIRE_CALL_H
#define R3_WIRE_CALL_H

#include <stdint.h>
#include <r3/source.h>

/* Call method with args [a, b] on an r3:// source. With buf, the reply must
 * be a bin of exactly b bytes (1 <= b <= the server's max_request) that
 * lands in buf; else a uint result goes to *val (0 for nil). Retried like a
 * read after a lost connection, within the source's timeout. 0 or -errno
 * (the server's own sentence for its errors). -EINVAL for another source. */
int r3_wire_call(struct r3_source *s, const char *method, uint64_t a, uint64_t b, void *buf, uint64_t *val);
/* The server's largest request (from its hello); 0 for another source. */
uint64_t r3_wire_max_request(struct r3_source *s);

#endif
