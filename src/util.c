/* SPDX-License-Identifier: BSD-3-Clause */
/* Small helpers: whole-buffer file I/O, sizes and durations (parsed the same
 * way by every URI, stage spec and tool). */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "internal.h"

int r3_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) {            /* past EOF of a sparse/short file: zeros */
            for (size_t i = 0; i < len; i++)
                p[i] = 0;
            return 0;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

int r3_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* In .bss: costs no memory until read, then maps the kernel's zero page. */
static char zeros[R3_ZEROS_LEN];

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23          /* Linux 5.14 */
#endif

void r3_mem_populate(void *p, size_t len)
{
    uintptr_t page = 4096, a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + len) & ~(page - 1);
    if (p && b > a)
        (void)madvise((void *)a, b - a, MADV_POPULATE_WRITE);
}

const void *r3_zeros(void)
{
    return zeros;
}

const char *r3_fmt_size(uint64_t v, char *buf, size_t n)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int u = 0;
    while (u < 4 && v >= 1024 && v % 1024 == 0) {
        v /= 1024;
        u++;
    }
    snprintf(buf, n, "%llu %s", (unsigned long long)v, unit[u]);
    return buf;
}

int r3_parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s || !isdigit((unsigned char)*s))
        return r3_error(-EINVAL, "'%s' is not a size (a number with an optional K/M/G/T suffix)",
                        s ? s : "");
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return r3_error(-EINVAL, "size '%s' is too large", s);
    unsigned shift = 0;
    switch (toupper((unsigned char)*end)) {
    case '\0': break;
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    case 'T': shift = 40; end++; break;
    default: return r3_error(-EINVAL, "size '%s': unknown suffix '%s' (K, M, G or T)", s, end);
    }
    if (shift && (*end == 'i' || *end == 'I'))
        end++;
    if (shift && (*end == 'b' || *end == 'B'))
        end++;
    if (*end != '\0')
        return r3_error(-EINVAL, "size '%s': unknown suffix '%s' (K, M, G or T)", s, end);
    if (shift && v > (UINT64_MAX >> shift))
        return r3_error(-EINVAL, "size '%s' is too large", s);
    *out = (uint64_t)v << shift;
    return 0;
}

/* The microseconds in one unit; 0 if unit is not one. */
static uint64_t unit_us(const char *unit)
{
    static const struct { const char *name; uint64_t us; } units[] = {
        { "us", 1 }, { "ms", 1000 }, { "s", 1000000 }, { "m", 60000000 }, { "min", 60000000 },
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(unit, units[i].name) == 0)
            return units[i].us;
    return 0;
}

int r3_util_parse_duration_us(const char *s, uint64_t *us)
{
    if (!s || !(isdigit((unsigned char)*s) || (*s == '.' && isdigit((unsigned char)s[1]))))
        return r3_error(-EINVAL, "'%s' is not a duration (a number with a unit: us, ms, s or m)",
                        s ? s : "");
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || !isfinite(v))
        return r3_error(-EINVAL, "duration '%s' is too large", s);
    if (*end == '\0')
        return r3_error(-EINVAL, "duration '%s' needs a unit: us, ms, s or m ('%ss' or '%sms')", s, s, s);
    uint64_t mul = unit_us(end);
    if (!mul)
        return r3_error(-EINVAL, "duration '%s': unknown unit '%s' (us, ms, s or m)", s, end);
    double t = v * (double)mul;
    if (t > 1e15)                                 /* ~31 years: surely a typo */
        return r3_error(-EINVAL, "duration '%s' is too large", s);
    uint64_t r = (uint64_t)t;
    *us = (double)r < t ? r + 1 : r;              /* round up: 0.5us is not 0 */
    return 0;
}

int r3_util_parse_duration_ms(const char *s, uint64_t *ms)
{
    uint64_t us;
    int rc = r3_util_parse_duration_us(s, &us);
    if (rc == 0)
        *ms = (us + 999) / 1000;
    return rc;
}

int r3_opts_check(uint32_t got, size_t want, const char *what)
{
    if (got == 0 || got == want)
        return 0;
    return r3_error(-EINVAL, "struct %s has struct_size %u, but this libr3 knows only %zu "
                    "(rebuild against its headers, or use %s_init)", what, got, want, what);
}

const char *r3_fmt_bytes(uint64_t v, char *buf, size_t n)
{
    if (v < 1024)
        snprintf(buf, n, "%" PRIu64 " B", v);
    else if (v < (1u << 20))
        snprintf(buf, n, "%.1f KiB", (double)v / 1024);
    else if (v < (1u << 30))
        snprintf(buf, n, "%.1f MiB", (double)v / (1 << 20));
    else
        snprintf(buf, n, "%.2f GiB", (double)v / (1 << 30));
    return buf;
}
