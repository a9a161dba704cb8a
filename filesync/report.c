/* SPDX-License-Identifier: BSD-3-Clause */
/* Reporting: the library never prints. The roles hand result lines,
 * diagnostics and progress of long operations (bytes, rate) to the caller's
 * callbacks; r3sync prints them. */
#include <stdarg.h>
#include <stdio.h>
#include "internal.h"
#include "filesync/filesync.h"

void fs_say(const struct fs_report *r, int kind, const char *fmt, ...)
{
    if (!r || !r->line)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    r->line(r->arg, kind, buf);
}

static void show(struct fs_progress *p, bool final)
{
    p->rep->progress(p->rep->arg, p->what, p->done, p->total,
                     (double)(r3_now_ns() - p->t0) / 1e9, final);
}

void fs_progress_start(struct fs_progress *p, const struct fs_report *rep, const char *what,
                       uint64_t total)
{
    /* only operations worth watching (16 MiB or more) */
    *p = (struct fs_progress){ .on = rep && rep->progress && total >= (16u << 20), .rep = rep,
                               .what = what, .total = total, .t0 = r3_now_ns() };
    p->last = p->t0;
}

void fs_progress_add(struct fs_progress *p, uint64_t n)
{
    p->done += n;
    if (!p->on)
        return;
    uint64_t now = r3_now_ns();
    if (now - p->last >= 200000000u) {     /* at most five updates a second */
        p->last = now;
        show(p, false);
    }
}

void fs_progress_end(struct fs_progress *p)
{
    if (p->on && p->done)
        show(p, true);
    p->on = false;
}
