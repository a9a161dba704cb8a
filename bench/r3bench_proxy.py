#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""r3bench_proxy: a delaying loopback TCP proxy (r3bench --rtt-mode proxy).

  r3bench_proxy.py LISTEN_PORT TARGET_PORT RTT_MS

Every byte is held RTT_MS/2 in each direction (in order, without limiting the
bandwidth beyond the proxy's own), so a request/reply pays one RTT, and so do
the TCP and TLS handshakes and a connection pool's first use. Runs until
killed (r3bench stops it by pid)."""

import asyncio
import sys
import time


async def pump(reader, writer, delay):
    q = asyncio.Queue()

    async def out():
        while True:
            due, data = await q.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

    task = asyncio.ensure_future(out())
    try:
        while True:
            data = await reader.read(1 << 20)
            if not data:
                break
            q.put_nowait((time.monotonic() + delay, data))
    except (OSError, asyncio.IncompleteReadError):
        pass
    q.put_nowait((0, None))
    try:
        await task
    except (OSError, ConnectionError):
        pass


async def handle(creader, cwriter, target, delay):
    try:
        sreader, swriter = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        cwriter.close()
        return
    await asyncio.gather(pump(creader, swriter, delay), pump(sreader, cwriter, delay),
                         return_exceptions=True)
    for w in (cwriter, swriter):
        try:
            w.close()
        except OSError:
            pass


async def main():
    if len(sys.argv) != 4:
        sys.stderr.write("usage: r3bench_proxy.py LISTEN_PORT TARGET_PORT RTT_MS\n")
        sys.exit(2)
    listen, target, rtt = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    server = await asyncio.start_server(lambda r, w: handle(r, w, target, rtt / 2000.0),
                                        "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
