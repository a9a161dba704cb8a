#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Per-directory line and branch coverage from gcovr's --json-summary on stdin.
  covdirs.py [--top]   --top: by top-level folder (src/, uffd/, nbd/, filesync/)
                       instead of by directory."""
import json, os, sys
top = "--top" in sys.argv[1:]
data = json.load(sys.stdin)
dirs = {}
for f in data.get("files", []):
    d = os.path.dirname(f["filename"]) or "."
    if top:
        d = d.split("/")[0]
    lt, lc, bt, bc = dirs.get(d, (0, 0, 0, 0))
    dirs[d] = (lt + f["line_total"], lc + f["line_covered"],
               bt + f.get("branch_total", 0), bc + f.get("branch_covered", 0))


def pct(c, t):
    return 100.0 * c / t if t else 100.0


print(f"{'directory':30} {'lines':>7} {'covered':>8} {'%':>6} {'branches':>9} {'covered':>8} {'%':>6}")
for d in sorted(dirs):
    lt, lc, bt, bc = dirs[d]
    print(f"{d:30} {lt:7} {lc:8} {pct(lc, lt):6.1f} {bt:9} {bc:8} {pct(bc, bt):6.1f}")
s = [sum(v[i] for v in dirs.values()) for i in range(4)]
print(f"{'total':30} {s[0]:7} {s[1]:8} {pct(s[1], s[0]):6.1f} {s[2]:9} {s[3]:8} {pct(s[3], s[2]):6.1f}")
