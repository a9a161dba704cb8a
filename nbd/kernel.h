/* SPDX-License-Identifier: BSD-3-Clause */
/* The kernel's NBD client (/dev/nbdX) driven through generic netlink
 * (family "nbd"): userspace does the handshake, then hands the socket over. */
#ifndef R3_NBD_KERNEL_H
#define R3_NBD_KERNEL_H

#include <stdbool.h>
#include <stdint.h>

/* True when the nbd module is loaded (the genl family resolves) and a
 * /dev/nbd0 node exists. Never loads modules. */
bool r3_nbd_kernel_available(void);
/* Give sockfd (past the handshake, simple replies) to a free device; waits up
 * to timeout_ms for /dev/nbdN to have its size. *index = N. The caller may
 * close sockfd afterwards (the kernel holds its own reference). */
int  r3_nbd_kernel_connect(int sockfd, uint64_t size, uint16_t flags, unsigned timeout_ms, int *index);
/* Disconnect /dev/nbdN and wait until it is free again. */
int  r3_nbd_kernel_disconnect(int index, unsigned timeout_ms);

#endif
