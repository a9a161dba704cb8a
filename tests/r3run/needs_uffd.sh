# SPDX-License-Identifier: BSD-3-Clause
# Sourced by tests that run the uffd strategy: skip (77) with the reason,
# found by the machine probe, when this kernel has no usable userfaultfd.
# Only a kernel feature truly absent is a skip; anything else fails.
r3_needs_uffd() {
    local probe
    probe=$("$top_builddir/r3run" --probe) || t_fail "r3run --probe failed"
    if grep -q '^  uffd  *unavailable' <<<"$probe"; then
        t_skip "the uffd strategy cannot run here: $(grep -m1 'userfaultfd unavailable' <<<"$probe" | sed 's/^ *//')"
    fi
}
