/* SPDX-License-Identifier: BSD-3-Clause */
/* Thread-local error sentences: the "why" behind a -errno. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <r3/error.h>

#define R3_ERRLEN 512
static _Thread_local char r3_errbuf[R3_ERRLEN];

const char *r3_last_error(void)
{
    return r3_errbuf;
}

int r3_error(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r3_errbuf, sizeof r3_errbuf, fmt, ap);
    va_end(ap);
    return err;
}

int r3_error_prefix(int err, const char *fmt, ...)
{
    char pre[R3_ERRLEN], old[R3_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, r3_errbuf, sizeof old);
    if (old[0] == '\0' && err < 0)
        snprintf(old, sizeof old, "%s", strerror(-err));
    snprintf(r3_errbuf, sizeof r3_errbuf, "%s%s", pre, old);
    return err;
}

void r3_error_clear(void)
{
    r3_errbuf[0] = '\0';
}
