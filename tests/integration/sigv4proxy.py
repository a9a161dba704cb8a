#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""A reverse proxy that checks AWS Signature V4 like AWS S3 does, then
forwards to an S3 server. s3rver accepts any V4 signature and never checks
x-amz-content-sha256 against the body; this proxy does both, so the tests
prove r3's requests would be accepted by a real S3.

usage: sigv4proxy.py LISTEN_PORT UPSTREAM_PORT ACCESS_KEY SECRET REGION
Prints the port once listening. Every verdict is appended to stderr."""
import hashlib
import hmac
import http.client
import http.server
import socketserver
import sys
import urllib.parse

PORT, UP, AKID, SECRET, REGION = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


def hm(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def expected_signature(method, path, query, headers, signed, amzdate, scope_date):
    canon_q = '&'.join(sorted(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)))
    canon_h = ''.join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed)
    creq = '\n'.join([method, path, canon_q, canon_h, ';'.join(signed),
                      headers.get('x-amz-content-sha256', '')])
    scope = f"{scope_date}/{REGION}/s3/aws4_request"
    sts = '\n'.join(['AWS4-HMAC-SHA256', amzdate, scope, hashlib.sha256(creq.encode()).hexdigest()])
    k = hm(('AWS4' + SECRET).encode(), scope_date)
    k = hm(hm(hm(k, REGION), 's3'), 'aws4_request')
    return hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *a):
        pass

    def deny(self, code, why):
        body = f"<Error><Code>{code}</Code><Message>{why}</Message></Error>".encode()
        sys.stderr.write(f"sigv4proxy: {self.command} {self.path}: {code}: {why}\n")
        self.send_response(403)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def handle_any(self):
        n = int(self.headers.get('Content-Length', '0'))
        body = self.rfile.read(n) if n else b''
        h = {k.lower(): v for k, v in self.headers.items()}
        auth = h.get('authorization', '')
        try:
            algo, rest = auth.split(' ', 1)
            parts = dict(p.strip().split('=', 1) for p in rest.split(','))
            akid, date, region, service, term = parts['Credential'].split('/')
            signed = parts['SignedHeaders'].split(';')
        except Exception:
            return self.deny('AccessDenied', 'missing or malformed SigV4 Authorization')
        if algo != 'AWS4-HMAC-SHA256' or akid != AKID or region != REGION or service != 's3':
            return self.deny('InvalidAccessKeyId', f'bad credential scope {parts["Credential"]}')
        for need in ('host', 'x-amz-date', 'x-amz-content-sha256'):
            if need not in signed:
                return self.deny('AccessDenied', f'{need} is not signed')
        if 'x-amz-security-token' in h and 'x-amz-security-token' not in signed:
            return self.deny('AccessDenied', 'x-amz-security-token is not signed')
        payload = h.get('x-amz-content-sha256')
        if payload != 'UNSIGNED-PAYLOAD' and payload != hashlib.sha256(body).hexdigest():
            return self.deny('XAmzContentSHA256Mismatch', 'x-amz-content-sha256 is not the body hash')
        u = urllib.parse.urlsplit(self.path)
        want = expected_signature(self.command, u.path, u.query, h, signed, h['x-amz-date'], date)
        if not hmac.compare_digest(want, parts.get('Signature', '')):
            return self.deny('SignatureDoesNotMatch', 'signature mismatch')
        c = http.client.HTTPConnection('127.0.0.1', UP, timeout=30)
        fwd = {k: v for k, v in self.headers.items() if k.lower() not in ('host', 'connection')}
        c.request(self.command, self.path, body=body if n else None, headers=fwd)
        r = c.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ('transfer-encoding', 'connection', 'content-length'):
                self.send_header(k, v)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)
        c.close()

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass                       # clients closing pooled connections are not news


srv = Server(('127.0.0.1', PORT), Handler)
print(srv.server_address[1], flush=True)
srv.serve_forever()
