/* SPDX-License-Identifier: BSD-3-Clause */
/* r3 error reporting: functions return 0 or -errno; the sentence a user reads
 * is kept per thread and returned by r3_last_error(). */
#ifndef R3_ERROR_H
#define R3_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* The last error sentence set by an r3 call on this thread ("" if none). */
const char *r3_last_error(void);

/* Set this thread's error sentence (printf format) and return err, which is a
 * negative errno, so callers can write `return r3_error(-EINVAL, "...")`. */
int r3_error(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefix the current sentence with a context ("redis 127.0.0.1:7001: " ...). */
int r3_error_prefix(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clear this thread's error sentence. */
void r3_error_clear(void);

#ifdef __cplusplus
}
#endif
#endif
