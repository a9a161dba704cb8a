/* Internal interfaces of the uffd strategy (uffd/). */
#ifndef R3_UFFD_INTERNAL_H
#define R3_UFFD_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <r3/uffd.h>
#include "uffd/compat.h"

/* Open a userfaultfd (syscall first, then /dev/userfaultfd), O_CLOEXEC |
 * O_NONBLOCK, handling kernel-mode faults too, and enable the features of
 * `want` the kernel has (*got gets them). Returns the fd or -errno. */
int r3_uffd_open_fd(uint64_t want, uint64_t *got, uint64_t *ioctls);

/* R3_UFFD_NO_WP_ASYNC=1 in the environment: behave as on a kernel without
 * WP_ASYNC (tests the hashing fallback on new kernels). */
bool r3_uffd_wp_async_disabled(void);

#endif
