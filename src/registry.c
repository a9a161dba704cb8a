/* SPDX-License-Identifier: BSD-3-Clause */
/* The one table of source schemes and strategies (no constructors). Parts
 * that add a scheme or a strategy add one line here. */
#include <string.h>
#include "internal.h"

static const struct r3_scheme schemes[] = {
    { "mem", r3_mem_open },
    { "file", r3_file_open },
    { "dir", r3_dir_open },
    { "redis", r3_redis_open },
    { "s3", r3_s3_open },
    { "nbd", r3_nbd_open },
    { "nbds", r3_nbd_open },
    { "nbd+unix", r3_nbd_open },
    { "nbds+unix", r3_nbd_open },
    { "r3", r3_wire_open },
    { "r3s", r3_wire_open },
    { "r3+unix", r3_wire_open },
    { "r3s+unix", r3_wire_open },
    /* schemes: add new entries above this line */
};

static const struct r3_strategy_ops *const strategies[] = {
    &r3_uffd_strategy,
    &r3_strategy_nbd_direct,
    &r3_strategy_nbd_managed,
    &r3_strategy_filesync,
    /* strategies: add new entries above this line */
    NULL,
};

const struct r3_scheme *r3_scheme_find(const char *scheme)
{
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strcmp(schemes[i].scheme, scheme) == 0)
            return &schemes[i];
    return NULL;
}

const struct r3_strategy_ops *r3_strategy_find(const char *name)
{
    for (size_t i = 0; strategies[i]; i++)
        if (strcmp(strategies[i]->name, name) == 0)
            return strategies[i];
    return NULL;
}

const struct r3_strategy_ops *const *r3_strategy_list(void)
{
    return strategies;
}
