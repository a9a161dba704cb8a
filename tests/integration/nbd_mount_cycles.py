#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""100 r3mount / r3mount -u cycles; afterwards no mount, no r3mount process
(not even a zombie: this script is their subreaper) and no busy device.
   nbd_mount_cycles.py R3MOUNT DIR CYCLES"""
import ctypes, os, subprocess, sys, time

r3mount, d, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
mnt = os.path.join(d, "mnt")
os.makedirs(mnt, exist_ok=True)

def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return

def r3mount_pids():
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if open("/proc/%s/comm" % p).read().strip() == "r3mount" and \
                        mnt in open("/proc/%s/cmdline" % p).read():
                    out.append(int(p))
            except OSError:
                pass
    return out

def mounted():
    return [l for l in open("/proc/mounts") if (" " + mnt + " ") in l]

def fail(msg):
    # leave nothing mounted behind a failure either
    if mounted():
        subprocess.run([r3mount, "-u", mnt], capture_output=True, timeout=60)
        reap()
    sys.exit(msg)

# A file source: what each cycle wrote through the mount is read back from
# the backing file itself (pread, another path than the mount and its page
# cache), after the fsync and again after the unmount, and at the end every
# cycle's block must still be there.
img = os.path.join(d, "img")
SIZE = 8 << 20

def backing(off, n):
    fd = os.open(img, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)

def block(i):
    off = (i * 4096) % SIZE
    return off, bytes([i % 251 + 1]) * 4096     # never zero: a lost write cannot pass as a hole

t0 = time.time()
for i in range(cycles):
    strategy = "nbd-managed" if i % 2 else "nbd-direct"
    r = subprocess.run([r3mount, "--strategy", strategy, "--pull-workers", "2",
                        "file://%s?size=8M" % img, mnt], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        fail("cycle %d: r3mount failed: %s" % (i, r.stderr))
    path = r.stdout.strip()
    off, data = block(i)
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if backing(off, 4096) != data:
        fail("cycle %d (%s): after fsync the backing file does not hold the block" % (i, strategy))
    if i and backing(block(i - 1)[0], 4096) != block(i - 1)[1]:
        fail("cycle %d (%s): the previous cycle's block is gone from the backing file" % (i, strategy))
    r = subprocess.run([r3mount, "-u", mnt], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        fail("cycle %d: r3mount -u failed: %s" % (i, r.stderr))
    reap()
    if mounted():
        fail("cycle %d: still mounted after -u" % i)
    if backing(off, 4096) != data:
        fail("cycle %d (%s): after the unmount the backing file does not hold the block" % (i, strategy))
for i in range(cycles):
    off, data = block(i)
    if backing(off, 4096) != data:
        fail("cycle %d's block is not in the backing file at the end" % i)
# unmount while another process still holds the file open: must not hang
r = subprocess.run([r3mount, "mem:?size=8M", mnt], capture_output=True, text=True, timeout=30)
if r.returncode != 0:
    fail("held-open case: r3mount failed: %s" % r.stderr)
holder = subprocess.Popen(["sleep", "30"], stdin=open(r.stdout.strip(), "rb"))
t = time.time()
r = subprocess.run([r3mount, "-u", mnt], capture_output=True, text=True, timeout=30)
if r.returncode != 0 or time.time() - t > 10:
    fail("held-open case: r3mount -u failed or took %.1f s: %s" % (time.time() - t, r.stderr))
holder.kill(); holder.wait()
time.sleep(0.2)
reap()
left = r3mount_pids()
if left:
    fail("r3mount processes left: %s" % left)
if mounted():
    fail("a mount was left")
busy = [b for b in os.listdir("/sys/block") if b.startswith("nbd") and
        open("/sys/block/%s/size" % b).read().strip() != "0"] if os.path.isdir("/sys/block") else []
if busy:
    fail("NBD devices left connected: %s" % busy)
print("%d cycles in %.1f s" % (cycles, time.time() - t0))
