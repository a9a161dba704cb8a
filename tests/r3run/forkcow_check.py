# SPDX-License-Identifier: BSD-3-Clause
# Checks the output of forkcow (tests/r3run/forkcow.c): every chunk a child
# read holds pattern A (filled before the fork) or the source's original bytes
# (never filled before the fork), and the source holds the parent's pattern B.
# usage: forkcow_check.py OUTPUT ORIGINAL_IMAGE IMAGE MIB
import sys, hashlib
out, orig, img, mib = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
n = mib << 20
o = open(orig, 'rb').read(n)
A = bytes(((i * 7 + 1) & 255) for i in range(256))
B = bytes(((i * 13 + 5) & 255) for i in range(256))
def pat(p, off, ln):
    s = off % 256
    return (p[s:] + p * (ln // 256 + 2))[:ln]
bad = 0; lines = 0; kids = set(); lo = hi = 0
for l in open(out):
    if not l.startswith('kid '): continue
    _, k, _, off, _, sha = l.split(); off = int(off); lines += 1; kids.add(k)
    exp = pat(A, off, 65536) if off < n // 2 else o[off:off + 65536]
    if off < n // 2: lo += 1
    else: hi += 1
    if hashlib.sha256(exp).hexdigest() != sha:
        bad += 1
        if bad < 5: print('wrong bytes: kid', k, 'off', off, file=sys.stderr)
d = open(img, 'rb').read(n)
if d != pat(B, 0, n):
    print('the source does not hold the parent\'s final bytes', file=sys.stderr); bad += 1
print(f'{lines} reads by {len(kids)} processes ({lo} filled-at-fork, {hi} from the source), {bad} wrong')
sys.exit(1 if bad or not lines else 0)
