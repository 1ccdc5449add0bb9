#!/usr/bin/env python3
"""A stand-in payment backend for the notification sandbox (docs/channels.md).

Listens on 127.0.0.1:3000 (the upstream of config/sandbox.yaml), checks the Standard Webhooks
signature payguard puts on every forwarded event, prints the event and answers 204 (accepted) or
401 (bad signature, so payguard answers the channel's failure and the channel retries).
Standard library only; a real backend would use a Standard Webhooks library instead.

    python3 scripts/sandbox-backend.py [--port 3000] [--secret whsec_...]
"""
import argparse
import base64
import hashlib
import hmac
import json
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SANDBOX_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # webhook_secret in config/sandbox.yaml


def signature_ok(secret, msg_id, timestamp, body, header, tolerance=300):
    """Standard Webhooks v1: base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))."""
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # The header may carry several space-separated signatures during secret rotation.
    return any(
        hmac.compare_digest(sig.split(",", 1)[1], expected)
        for sig in header.split()
        if sig.startswith("v1,")
    )


def handler(secret):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            ok = signature_ok(
                secret,
                self.headers.get("webhook-id", ""),
                self.headers.get("webhook-timestamp", "0"),
                body,
                self.headers.get("webhook-signature", ""),
            )
            if ok:
                event = json.loads(body)
                print(f"accepted {event['id']}: {event['channel']} {event['kind']} "
                      f"order {event['out_trade_no']} amount_minor {event['amount_minor']} {event['currency']}",
                      flush=True)
                self.send_response(204)
            else:
                print(f"refused {self.path}: webhook-signature does not verify", flush=True)
                self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    return Handler


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--secret", default=SANDBOX_SECRET)
    args = parser.parse_args()
    print(f"sandbox backend on http://127.0.0.1:{args.port}", flush=True)
    HTTPServer(("127.0.0.1", args.port), handler(args.secret)).serve_forever()
