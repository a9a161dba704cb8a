#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
# A fake S3 endpoint that answers the bucket check and r3.meta honestly (so an
# s3:// source opens) and then lies about chunk objects, one way per MODE:
#   huge     Content-Length: 99999999999, then streams bytes (256 MiB at most)
#   long     an object one byte longer than the chunk
#   endless  no Content-Length (chunked encoding), streams 256 MiB
#   silent   headers, then nothing
#   ok       an honest object of zeros (the control)
# Usage: sources_hostile_s3.py MODE  -- prints its port, serves until killed.
import http.server
import socketserver
import sys
import time

MODE = sys.argv[1]
CHUNK = 65536
STREAM = 256 << 20


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body, length=None):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.send(200, b"")

    def do_PUT(self):
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        self.send(200, b"")

    def do_GET(self):
        if self.path.endswith("/r3.meta"):
            return self.send(200, b"r3 %d %d" % (1 << 20, CHUNK))
        try:
            if MODE == "ok":
                self.send(200, b"\0" * CHUNK)
            elif MODE == "long":
                self.send(200, b"y" * (CHUNK + 1))
            elif MODE == "huge":
                self.send(200, b"", 99999999999)
                for _ in range(STREAM // 65536):
                    self.wfile.write(b"x" * 65536)
            elif MODE == "endless":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(STREAM // 65536):
                    self.wfile.write(b"10000\r\n" + b"x" * 65536 + b"\r\n")
            elif MODE == "silent":
                self.send_response(200)
                self.send_header("Content-Length", str(CHUNK))
                self.end_headers()
                self.wfile.flush()
                time.sleep(60)
        except OSError:
            pass


class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


srv = S(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
