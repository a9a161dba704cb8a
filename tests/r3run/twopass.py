# SPDX-License-Identifier: BSD-3-Clause
# Two full passes over a MIB-MiB bytearray, then a checksum (sha256):
# usage: twopass.py MIB
import sys, hashlib
n = int(sys.argv[1]) << 20
b = bytearray(n)
step = 1 << 20
for off in range(0, n, step):            # pass 1: write
    b[off:off + step] = bytes([(off >> 20) & 255]) * step
for off in range(0, n, step):            # pass 2: read + modify
    v = b[off]
    b[off:off + 16] = bytes([v ^ 0x5a]) * 16
print(hashlib.sha256(b).hexdigest())
