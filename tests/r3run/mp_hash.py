# SPDX-License-Identifier: BSD-3-Clause
# Python multiprocessing (fork start method): 4 workers hash quarters of a
# bytearray the parent filled; the parent overwrites it after starting them.
# Prints the 4 hashes and the hash of the parent's final bytes.
import multiprocessing as mp, hashlib, sys, os
N = int(sys.argv[1]) << 20
def work(args):
    i, q = args
    return hashlib.sha256(memoryview(buf)[i*q:(i+1)*q]).hexdigest()
def main():
    global buf
    buf = bytearray(N)
    for i in range(0, N, 4096):
        buf[i:i+8] = (i * 2654435761 & 0xffffffffffffffff).to_bytes(8, 'little')
    ctx = mp.get_context('fork')
    q = N // 4
    with ctx.Pool(4) as p:
        res = p.map_async(work, [(i, q) for i in range(4)])
        # the parent overwrites after starting them
        for i in range(0, N, 4096):
            buf[i:i+8] = b'\xff' * 8
        out = res.get(120)
    for h in out: print(h)
    print(hashlib.sha256(buf).hexdigest())
main()
