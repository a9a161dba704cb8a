/* SPDX-License-Identifier: BSD-3-Clause */
/* r3: remote, migratable memory. The umbrella header: every public header. */
#ifndef R3_R3_H
#define R3_R3_H
#include <r3/error.h>
#include <r3/source.h>
#include <r3/stage.h>
#include <r3/region.h>
#include <r3/migrate.h>
#include <r3/thread.h>
#include <r3/probe.h>
#include <r3/wire.h>
#define R3_VERSION "0.1.0"      /* = PACKAGE_VERSION (tests/integration/abi_exports.sh) */
#endif
