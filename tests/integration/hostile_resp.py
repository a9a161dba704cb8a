#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
# A fake Redis server that answers r3's metadata honestly (so a redis://
# source opens) and then lies about chunks, one way per MODE:
#   silent   never answers a chunk GET
#   huge     "$99999999999" and then streams bytes (256 MiB at most)
#   long     a value one byte longer than the chunk
#   garbage  bytes that are not RESP
#   close    half a value, then closes the connection
#   slow     a chunk's header, then one byte every 0.3 s
#   array    "*2147483647": an array no GET returns
#   line     an error line that never ends (streams 256 MiB)
#   moved    (cluster) MOVED to itself, forever
#   slots    (cluster) CLUSTER SLOTS answered with a huge bulk length
#   ok       answers honestly (zeros): the control
# Usage: hostile_resp.py MODE  -- prints its port on stdout, serves until killed.
import socket
import sys
import threading
import time

MODE = sys.argv[1]
SIZE, CHUNK = 1 << 20, 65536
STREAM = 256 << 20


def read_command(f):
    """One RESP array of bulk strings, as a list of bytes; None at EOF."""
    line = f.readline()
    if not line:
        return None
    if not line.startswith(b"*"):
        return line.split()
    args = []
    for _ in range(int(line[1:])):
        n = int(f.readline()[1:])
        args.append(f.read(n + 2)[:n])
    return args


def bulk(b):
    return b"$%d\r\n%s\r\n" % (len(b), b)


def stream(conn, head, fill=b"x"):
    conn.sendall(head)
    block = fill * 65536
    sent = 0
    while sent < STREAM:
        conn.sendall(block)
        sent += len(block)
    time.sleep(60)


def lie(conn, port):
    if MODE == "silent":
        time.sleep(60)
    elif MODE == "huge":
        stream(conn, b"$99999999999\r\n")
    elif MODE == "long":
        conn.sendall(bulk(b"y" * (CHUNK + 1)))
    elif MODE == "garbage":
        conn.sendall(b"\x00\xffHELLO, this is not RESP\r\n" * 100)
    elif MODE == "close":
        conn.sendall(b"$%d\r\n" % CHUNK + b"z" * 1000)
        conn.shutdown(socket.SHUT_RDWR)
        return False
    elif MODE == "slow":
        conn.sendall(b"$%d\r\n" % CHUNK)
        for _ in range(CHUNK):
            conn.sendall(b"s")
            time.sleep(0.3)
    elif MODE == "array":
        conn.sendall(b"*2147483647\r\n" + b":1\r\n" * 1000)
        time.sleep(60)
    elif MODE == "line":
        stream(conn, b"-ERR ", b"e")
    elif MODE == "moved":
        conn.sendall(b"-MOVED 3999 127.0.0.1:%d\r\n" % port)
    elif MODE == "ok":
        conn.sendall(bulk(b"\0" * CHUNK))
    return True


def serve(conn, port):
    f = conn.makefile("rb")
    try:
        while True:
            cmd = read_command(f)
            if cmd is None:
                return
            name = cmd[0].upper() if cmd else b""
            if name == b"GET" and cmd[1].endswith(b":meta"):
                conn.sendall(bulk(b"r3 %d %d" % (SIZE, CHUNK)))
            elif name == b"CLUSTER":
                if MODE == "slots":
                    stream(conn, b"*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$99999999999\r\n")
                    return
                conn.sendall(b"*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n" + bulk(b"127.0.0.1") +
                             b":%d\r\n" % port)
            elif name in (b"GET", b"GETRANGE"):
                if not lie(conn, port):
                    return
            elif name in (b"SET", b"SETRANGE", b"PING", b"SELECT", b"AUTH"):
                conn.sendall(b"+OK\r\n" if name != b"SETRANGE" else b":%d\r\n" % CHUNK)
            else:
                conn.sendall(b"-ERR unknown command\r\n")
    except (OSError, ValueError, IndexError):
        pass
    finally:
        conn.close()


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    port = s.getsockname()[1]
    print(port, flush=True)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn, port), daemon=True).start()


main()
