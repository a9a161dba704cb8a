/* SPDX-License-Identifier: BSD-3-Clause */
/* Between conn.c and tls.c only: the TLS half of struct r3_io. */
#ifndef R3_NET_TLS_IO_H
#define R3_NET_TLS_IO_H

#include "net/net.h"

/* One SSL_read/SSL_write under io->mu: bytes, 0 at end of stream (read),
 * -EAGAIN with *want = POLLIN/POLLOUT, or -errno with a sentence. */
ssize_t r3_tls_io_read(struct r3_io *io, void *buf, size_t len, short *want);
ssize_t r3_tls_io_write(struct r3_io *io, const void *buf, size_t len, short *want);
/* Decrypted or undecrypted input is buffered in the session. */
bool r3_tls_io_pending(struct r3_io *io);
/* Free the session (no close_notify wait). */
void r3_tls_io_free(struct r3_io *io);
/* Wait for events until end (absolute ns, 0 = none) (conn.c): 0, -ETIMEDOUT, -errno.
 * With io->ssl set it may return 0 early: retry the SSL call. */
int  r3_io_wait(struct r3_io *io, short events, uint64_t end);

#endif
