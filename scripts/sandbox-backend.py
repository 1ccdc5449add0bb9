#!/usr/bin/env python3
"""A stand-in payment backend for the sandbox (docs/channels.md, docs/egress.md).

Without a command it listens on 127.0.0.1:3000 (the upstream of config/sandbox.yaml), checks the
Standard Webhooks signature payguard puts on every forwarded event, prints the event and answers
204 (accepted) or 401 (bad signature, so payguard answers the channel's failure and the channel
retries). A real backend would use a Standard Webhooks library instead.

`orders` creates a WeChat Pay v3 native order and an Alipay precreate order through payguard's
egress routes, the way a shop backend does when a customer checks out. This script holds no
channel key: payguard signs both calls and verifies both answers (X-PG-Verified: 1). It exits 0
when both orders were created and verified. Standard library only.

    python3 scripts/sandbox-backend.py [--port 3000] [--secret whsec_...]
    python3 scripts/sandbox-backend.py orders [--payguard http://127.0.0.1:8080]

`pay NO` and `refund NO [--amount FEN]` play the shopper paying and the merchant refunding at the
channel API simulator (`cargo run --example channel_sim`), without any notification: the lost
callbacks that order queries and `payguard reconcile` recover.

    python3 scripts/sandbox-backend.py pay NO [--simulator https://127.0.0.1:9443]
    python3 scripts/sandbox-backend.py refund NO [--amount FEN] [--simulator https://127.0.0.1:9443]
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

SANDBOX_CA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "sandbox", "ca.pem")
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
                # `source` says how payguard recovered an event the channel did not notify.
                via = {"query": " (recovered by an order query)",
                       "bill": " (found in the daily bill)"}.get(event.get("source"), "")
                refund = event.get("refund") or {}
                what = (f"refund {refund.get('out_refund_no')} amount_minor {refund.get('amount_minor')}"
                        if refund else f"amount_minor {event['amount_minor']} {event['currency']}")
                print(f"accepted {event['id']}: {event['channel']} {event['kind']} "
                      f"order {event['out_trade_no']} {what}{via}",
                      flush=True)
                self.send_response(204)
            else:
                print(f"refused {self.path}: webhook-signature does not verify", flush=True)
                self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    return Handler


def egress_call(payguard, path, body):
    """POSTs `body` (JSON text) to payguard; returns (status, X-PG-Verified, answer text)."""
    request = urllib.request.Request(
        payguard + path, data=body.encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return answer.status, answer.headers.get("x-pg-verified"), answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-pg-verified"), e.read().decode()


def create_orders(payguard):
    """A WeChat Pay native order and an Alipay precreate order; True when both are verified."""
    stamp = time.strftime("%Y%m%d%H%M%S")
    wechat_order = json.dumps({
        "appid": "wxd678efh567hg6787",
        "mchid": "1900000001",
        "description": "sandbox order",
        "out_trade_no": f"sandbox-wx-{stamp}",
        "notify_url": "http://127.0.0.1:8080/notify/wechatpay",
        "amount": {"total": 100, "currency": "CNY"},
    }, ensure_ascii=False)
    alipay_order = json.dumps({
        "out_trade_no": f"sandbox-ali-{stamp}",
        "total_amount": "88.88",
        "subject": "sandbox order",
    }, ensure_ascii=False)
    ok = True
    for name, path, body, field in [
        ("WeChat Pay native order", "/egress/wechatpay/v3/pay/transactions/native", wechat_order, "code_url"),
        ("Alipay precreate order", "/egress/alipay/alipay.trade.precreate", alipay_order, "qr_code"),
    ]:
        print(f"{name} out_trade_no {json.loads(body)['out_trade_no']}", flush=True)
        status, verified, text = egress_call(payguard, path, body)
        try:
            answer = json.loads(text)
        except ValueError:
            answer = {}
        created = status == 200 and verified == "1" and field in answer
        ok = ok and created
        what = f"{field} {answer[field]}" if field in answer else text[:200]
        print(f"{name}: {status}{' verified' if verified == '1' else ''}: {what}", flush=True)
    return ok


def pay(simulator, out_trade_no, refund_fen=None):
    """Marks an order paid at the channel API simulator (or refunds `refund_fen` of it), sending
    no notification."""
    context = ssl.create_default_context(cafile=SANDBOX_CA)
    if refund_fen is None:
        url = f"{simulator}/sim/pay/{out_trade_no}"
    else:
        url = f"{simulator}/sim/refund/{out_trade_no}?amount={refund_fen}"
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15, context=context) as answer:
            print(f"{out_trade_no}: {answer.read().decode()}", flush=True)
            return True
    except urllib.error.HTTPError as e:
        print(f"{out_trade_no}: {e.code} {e.read().decode()}", flush=True)
        return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["serve", "orders", "pay", "refund"], default="serve")
    parser.add_argument("order", nargs="?", help="pay, refund: the out_trade_no")
    parser.add_argument("--amount", type=int, help="refund: the amount in fen (default: all of it)")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--secret", default=SANDBOX_SECRET)
    parser.add_argument("--payguard", default="http://127.0.0.1:8080")
    parser.add_argument("--simulator", default="https://127.0.0.1:9443")
    args = parser.parse_args()
    if args.command == "pay":
        sys.exit(0 if args.order and pay(args.simulator.rstrip("/"), args.order) else 1)
    if args.command == "refund":
        amount = "" if args.amount is None else args.amount
        sys.exit(0 if args.order and pay(args.simulator.rstrip("/"), args.order, amount) else 1)
    if args.command == "orders":
        sys.exit(0 if create_orders(args.payguard.rstrip("/")) else 1)
    print(f"sandbox backend on http://127.0.0.1:{args.port}", flush=True)
    HTTPServer(("127.0.0.1", args.port), handler(args.secret)).serve_forever()
