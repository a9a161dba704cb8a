/* SPDX-License-Identifier: BSD-3-Clause */
/* Linked statically: r3run must refuse it (no PT_INTERP, no LD_PRELOAD). */
int main(void)
{
    return 0;
}
