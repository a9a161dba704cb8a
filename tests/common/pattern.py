#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""The test pattern of tests/common/pattern.h, written again in Python so a
test can check C output against an independent implementation.

Each little-endian 64-bit word is its own byte offset XOR a key made from
the seed (splitmix64's finalizer of seed + 1, top bit set).

  pattern.py gen SEED OFF LEN      the bytes, on stdout
  pattern.py sha256 SEED OFF LEN   their SHA-256, in hex
  import pattern; pattern.pattern(seed, off, length) -> bytes
Sizes take K, M, G suffixes (powers of 1024)."""
import array
import hashlib
import sys

STEP = 64 << 20          # made and hashed in pieces of 64 MiB


M64 = (1 << 64) - 1


def key(seed):
    x = (seed + 1) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return (x ^ (x >> 31)) | 1 << 63


def pattern(seed, off, length):
    first = off & ~7
    words = array.array("Q", range(first, (off + length + 7) & ~7, 8))
    if sys.byteorder != "little":
        words.byteswap()
    n = len(words) * 8
    keys = key(seed).to_bytes(8, "little") * len(words)
    data = (int.from_bytes(words.tobytes(), "little") ^ int.from_bytes(keys, "little")).to_bytes(n, "little")
    return data[off - first:off - first + length]


def pieces(seed, off, length):
    end = off + length
    while off < end:
        n = min(STEP, end - off)
        yield pattern(seed, off, n)
        off += n


def size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1]] if s[-1:] in mult else int(s, 0)


def main(argv):
    if len(argv) != 5 or argv[1] not in ("gen", "sha256"):
        sys.stderr.write("usage: pattern.py gen|sha256 SEED OFF LEN\n")
        return 2
    seed, off, length = int(argv[2], 0), size(argv[3]), size(argv[4])
    if argv[1] == "gen":
        for p in pieces(seed, off, length):
            sys.stdout.buffer.write(p)
    else:
        h = hashlib.sha256()
        for p in pieces(seed, off, length):
            h.update(p)
        print(h.hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
