/* SPDX-License-Identifier: BSD-3-Clause */
/* Moved to src/net/net.h (the one network layer). This forwarding header
 * stays only until filesync includes net/net.h itself; then delete it. */
#include "net/net.h"
