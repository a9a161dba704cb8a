# SPDX-License-Identifier: BSD-3-Clause
# Shared by the source tests (sourced after lib.sh).
# region_step SEED NEWSEED URI: the data written through the source is seen
# through a uffd region; NEWSEED written through the region's memory is read
# back through the source. If r3check cannot open the region (exit 77), that
# is a skip (77, with the reason) only when the probe agrees the kernel lacks
# userfaultfd; on a kernel that has it, the refusal is a failure.
region_step() {
    local rc=0 out why
    out=$(t_timeout 120 "$SC" -s "$1" -S "$2" region "$3") || rc=$?
    [ -n "$out" ] && echo "$out" >&2
    if [ "$rc" = 77 ]; then
        rc=0
        why=$("$R3CHECK" requires uffd) || rc=$?
        [ "$rc" = 77 ] && t_skip "region step: $why"
        t_fail "region step refused ($out) although the probe finds userfaultfd"
    fi
    [ "$rc" = 0 ] || t_fail "through a uffd region"
    t_timeout 60 "$SC" -s "$2" verify "$3" || t_fail "data written through the region"
}
