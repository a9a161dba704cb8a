# SPDX-License-Identifier: BSD-3-Clause
# Shared by the source tests (sourced after lib.sh).
# region_step SEED NEWSEED URI: the data written through the source is seen
# through a uffd region; NEWSEED written through the region's memory is read
# back through the source. Logged and left out while libr3 has no uffd
# strategy (r3check exits 77), or when the kernel refuses userfaultfd.
region_step() {
    local rc=0
    t_timeout 120 "$SC" -s "$1" -S "$2" region "$3" || rc=$?
    if [ "$rc" = 77 ]; then
        t_log "region step not run: no uffd strategy in this libr3 (or no userfaultfd)"
        return 0
    fi
    [ "$rc" = 0 ] || t_fail "through a uffd region"
    t_timeout 60 "$SC" -s "$2" verify "$3" || t_fail "data written through the region"
}
