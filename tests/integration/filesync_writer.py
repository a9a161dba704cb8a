#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Writer process for the filesync tests: maps FILE MAP_SHARED and writes
NPAGES random 4 KiB pages at random offsets (seeded); prints the number of
distinct BLOCK-sized blocks it touched."""
import mmap, os, random, sys

path, seed, npages, block = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fd = os.open(path, os.O_RDWR)
size = os.fstat(fd).st_size
m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
rnd = random.Random(seed)
touched = set()
for _ in range(npages):
    page = rnd.randrange(size // 4096)
    m[page * 4096:(page + 1) * 4096] = rnd.randbytes(4096)
    touched.add(page * 4096 // block)
m.flush()
m.close()
os.close(fd)
print(len(touched))
