#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The quick start's main job: a real, unmodified program (python3 filling a
# 512 MiB bytearray) runs once plainly and once under r3run with its large
# allocations in a uffd region on the default source, a sparse file image
# in $TMPDIR (kept here with --keep-image, to show its size). Both print the SHA-256 of the array; they must agree, and
# r3run --stats shows the faults served and the chunks written back.
#   R3RUN=path/to/r3run examples/main-job.sh [MiB]
set -euo pipefail
R3RUN=${R3RUN:-r3run}
here=$(cd "$(dirname "$0")" && pwd)
mib=${1:-512}
work=$(mktemp -d "${TMPDIR:-/tmp}/r3-main-job.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
t0=$(date +%s.%N)
plain=$(python3 "$here/fill.py" "$mib")
t1=$(date +%s.%N)
r3=$(TMPDIR=$work "$R3RUN" --keep-image --stats -- python3 "$here/fill.py" "$mib")
t2=$(date +%s.%N)
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
echo "plain python3: $plain  ($(secs "$t0" "$t1") s)"
echo "under r3run:   $r3  ($(secs "$t1" "$t2") s)"
img=$(ls "$work"/r3run-*.img)
echo "image $img: $(du -h --apparent-size "$img" | cut -f1) apparent, $(du -h "$img" | cut -f1) written"
if [ "$plain" = "$r3" ]; then
    echo "main job: OK, identical output"
else
    echo "main job: FAILED, the outputs differ" >&2
    exit 1
fi
