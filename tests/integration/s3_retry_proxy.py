#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""A reverse proxy in front of s3rver that fails each chunk request (a path
ending in /<number>) N times before forwarding it, so the s3:// source's
retries are exercised against a real server behind.

usage: s3_retry_proxy.py UPSTREAM_PORT HOW N
  HOW: an HTTP status (500, 503, 429, 408, 400...) answered with an S3 error
       body, or "reset": the connection is closed without an answer.
  N:   failures per distinct request (method + path) before it is forwarded.
Prints its port once listening; every request is appended to stderr as
"METHOD PATH failed|forwarded STATUS"."""
import http.client
import http.server
import re
import socketserver
import sys
import threading

UP, HOW, N = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
CHUNK = re.compile(r"/\d+$")
seen = {}
lock = threading.Lock()


def log(line):
    with lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def handle_any(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n) if n else b""
        path = self.path.split("?", 1)[0]
        key = (self.command, path)
        fail = False
        if CHUNK.search(path):
            with lock:
                seen[key] = seen.get(key, 0) + 1
                fail = seen[key] <= N
        if fail and HOW == "reset":
            log(f"{self.command} {path} failed reset")
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fail:
            code = int(HOW)
            err = f"<Error><Code>Injected{code}</Code><Message>proxy failure</Message></Error>".encode()
            log(f"{self.command} {path} failed {code}")
            self.send_response(code)
            self.send_header("Content-Length", str(len(err)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(err)
            return
        c = http.client.HTTPConnection("127.0.0.1", UP, timeout=30)
        fwd = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        c.request(self.command, self.path, body=body if n else None, headers=fwd)
        r = c.getresponse()
        data = r.read()
        log(f"{self.command} {path} forwarded {r.status}")
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        c.close()

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


srv = Server(("127.0.0.1", 0), Handler)
print(srv.server_address[1], flush=True)
srv.serve_forever()
