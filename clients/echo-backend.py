#!/usr/bin/env python3
"""The backend of clients/test-live: answers every request 200 with JSON describing what
reached it — method, request target, SHA-256 of the body — so a client's live test can check
that payguard forwarded the canonical request it signed, with its body unchanged.

    python3 clients/echo-backend.py --port 3000
"""
import argparse
import hashlib
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        payload = json.dumps({
            "method": self.command,
            "target": self.path,
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Echo).serve_forever()
