/* SPDX-License-Identifier: BSD-3-Clause */
/* Certificates for TLS tests, made with the openssl command in a test's
 * directory: a self-signed CA, and keys with certificates it signs. */
#ifndef R3_TU_CERTS_H
#define R3_TU_CERTS_H

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Run a shell command; the test fails if it does. */
static void tu_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static void tu_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    ck_assert_msg(system(cmd) == 0, "failed: %s", cmd);
}

#define TU_KEYGEN "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out"

/* dir/NAME.key and the self-signed dir/NAME.pem, subject /CN=cn. */
static inline void tu_ca(const char *dir, const char *name, const char *cn)
{
    tu_sh("cd '%s' && " TU_KEYGEN " %s.key 2>/dev/null && openssl req -x509 -new -key %s.key "
          "-subj '/CN=%s' -days 2 -out %s.pem 2>/dev/null", dir, name, name, cn, name);
}

/* dir/NAME.key and dir/NAME.pem with subject subj, signed by the CA dir/CA.pem;
 * dns, when not NULL, becomes its subjectAltName. */
static inline void tu_cert(const char *dir, const char *name, const char *subj, const char *ca,
                           const char *dns)
{
    char ext[256] = "";
    if (dns)
        snprintf(ext, sizeof ext, "-extfile %s.ext", name);
    tu_sh("cd '%s' && " TU_KEYGEN " %s.key 2>/dev/null && openssl req -new -key %s.key -subj '%s' "
          "-out %s.csr 2>/dev/null && printf 'subjectAltName=DNS:%s\\n' > %s.ext && openssl x509 -req "
          "-in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial -days 2 %s -out %s.pem 2>/dev/null",
          dir, name, name, subj, name, dns ? dns : "", name, name, ca, ca, ext, name);
}

#endif
