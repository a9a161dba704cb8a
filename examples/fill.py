# SPDX-License-Identifier: BSD-3-Clause
# Fill a bytearray (default 512 MiB; argument: MiB) with a pattern, print its SHA-256.
# The main job of the quick start runs it plainly and under r3run and compares.
import hashlib, sys
n = int(sys.argv[1]) << 20 if len(sys.argv) > 1 else 512 << 20
b = bytearray(n)
pat = bytes((i * 7 + 3) & 0xff for i in range(1 << 16)) * 16
for i in range(0, n, len(pat)):
    b[i:i + len(pat)] = pat
    b[i] = (i >> 20) & 0xff
print(hashlib.sha256(b).hexdigest())
