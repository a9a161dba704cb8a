/* SPDX-License-Identifier: BSD-3-Clause */
/* The seeder's gate over a source (r3mount --seed; internal): a stage the
 * program writes through that remembers the chunks written while tracking,
 * holds writers from FINALIZE on and fails them with EIO after RELEASE. */
#ifndef R3_MIGRATE_GATE_H
#define R3_MIGRATE_GATE_H

#include <stddef.h>
#include <stdint.h>
#include <r3/source.h>

enum { R3M_GATE_OPEN, R3M_GATE_PAUSED, R3M_GATE_GONE };

/* A stage over inner (borrowed: closing the gate leaves inner open). */
int  r3m_gate_open(struct r3_source *inner, uint32_t chunk, struct r3_source **out);
/* Start (clear; returns once no write that began before is in flight) /
 * stop remembering written chunks. */
void r3m_gate_track(struct r3_source *g, int on);
/* The chunks written since track started (malloc'd, ascending). */
int  r3m_gate_take(struct r3_source *g, uint64_t **list, size_t *n);
/* R3M_GATE_PAUSED: new writes wait and writes in flight are finished on
 * return; R3M_GATE_GONE: waiting and later writes fail with -EIO. */
void r3m_gate_set(struct r3_source *g, int state);

#endif
