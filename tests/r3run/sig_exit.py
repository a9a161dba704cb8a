# SPDX-License-Identifier: BSD-3-Clause
# Under r3run: fill 8 MiB of the region with 0x5a, then end by a signal.
# MODE: term|int|hup|quit (default handler; int first sets SIG_DFL back and
# prints whether Python sees SIG_DFL), own (a handler of its own: exit 7).
import os, sys, signal, time
mode = sys.argv[1]
b = bytearray(8 << 20)
b[:] = b'\x5a' * len(b)
if mode == 'own':
    def h(s, f):
        print('own handler', flush=True); os._exit(7)
    signal.signal(signal.SIGTERM, h)
if mode == 'int':
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    print(signal.getsignal(signal.SIGINT) == signal.SIG_DFL, flush=True)
sig = {'term': signal.SIGTERM, 'own': signal.SIGTERM, 'int': signal.SIGINT, 'hup': signal.SIGHUP, 'quit': signal.SIGQUIT}[mode]
os.kill(os.getpid(), sig)
time.sleep(5)
print('not killed')
