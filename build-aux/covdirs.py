#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Print a per-directory line-coverage table from gcovr's --json-summary on stdin."""
import json, os, sys
data = json.load(sys.stdin)
dirs = {}
for f in data.get("files", []):
    d = os.path.dirname(f["filename"]) or "."
    t, c = dirs.get(d, (0, 0))
    dirs[d] = (t + f["line_total"], c + f["line_covered"])
print(f"{'directory':30} {'lines':>8} {'covered':>8} {'%':>6}")
for d in sorted(dirs):
    t, c = dirs[d]
    print(f"{d:30} {t:8} {c:8} {100.0 * c / t if t else 100.0:6.1f}")
tt = sum(t for t, _ in dirs.values()); cc = sum(c for _, c in dirs.values())
print(f"{'total':30} {tt:8} {cc:8} {100.0 * cc / tt if tt else 100.0:6.1f}")
