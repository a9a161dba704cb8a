/* Terminal progress for long operations (bytes, rate, ETA), only when the
 * caller asked for it (r3sync does when stderr is a terminal). */
#include <stdio.h>
#include "internal.h"
#include "filesync/filesync.h"

static void show(struct fs_progress *p, bool final)
{
    double secs = (double)(r3_now_ns() - p->t0) / 1e9;
    double rate = secs > 0 ? (double)p->done / secs : 0;
    double eta = rate > 0 && p->total > p->done ? (double)(p->total - p->done) / rate : 0;
    fprintf(stderr, "\r%s: %.1f/%.1f MiB  %.1f MiB/s  ETA %.0f s   %s", p->what,
            (double)p->done / 1048576.0, (double)p->total / 1048576.0, rate / 1048576.0, eta,
            final ? "\n" : "");
    fflush(stderr);
}

void fs_progress_start(struct fs_progress *p, bool on, const char *what, uint64_t total)
{
    *p = (struct fs_progress){ .on = on && total >= (16u << 20), .what = what, .total = total,
                               .t0 = r3_now_ns() };
    p->last = p->t0;
}

void fs_progress_add(struct fs_progress *p, uint64_t n)
{
    p->done += n;
    if (!p->on)
        return;
    uint64_t now = r3_now_ns();
    if (now - p->last >= 200000000u) {
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
