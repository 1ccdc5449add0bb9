"""Live test against a running payguard (clients/test-live starts one, with clients/echo-backend.py
behind it): a signed request is answered 200 and reaches the backend as the canonical request it
signed, a replayed nonce 409, a timestamp outside the window 401.

    PAYGUARD_URL=http://127.0.0.1:8080 PAYGUARD_KEY_ID=... PAYGUARD_SECRET=... \\
        python3 -m unittest tests/live_test.py
"""

import hashlib
import json
import os
import sys
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from payguard_sign import sign  # noqa: E402

MISSING = [n for n in ("PAYGUARD_URL", "PAYGUARD_KEY_ID", "PAYGUARD_SECRET") if not os.environ.get(n)]
if MISSING:
    raise SystemExit("live_test needs %s (clients/test-live sets them)" % ", ".join(MISSING))
BASE = os.environ["PAYGUARD_URL"].rstrip("/")
KEY_ID = os.environ["PAYGUARD_KEY_ID"]
SECRET = os.environ["PAYGUARD_SECRET"]


def send(method, target, body, headers):
    """(status, parsed JSON body) of one request through payguard."""
    req = urllib.request.Request(BASE + target, data=body if body else None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Live(unittest.TestCase):
    def test_signed_request_reaches_the_backend_as_signed(self):
        path, query = "/v1/orders/%e4%bd%a0", "b=2&a=1&q=x+y"
        body = '{"sku":"A-1","note":"你好 ✓"}'.encode("utf-8")
        signed = sign(KEY_ID, SECRET, "POST", path, query=query, body=body)
        status, got = send("POST", path + "?" + query, body,
                           dict(signed.headers, **{"Content-Type": "application/json"}))
        self.assertEqual(status, 200, got)
        self.assertEqual(got["method"], "POST")
        self.assertEqual(got["target"], "/v1/orders/%E4%BD%A0?a=1&b=2&q=x%20y")
        self.assertEqual(got["target"], signed.canonical_path + "?" + signed.canonical_query)
        self.assertEqual(got["body_sha256"], hashlib.sha256(body).hexdigest())

    def test_a_replayed_nonce_is_refused(self):
        signed = sign(KEY_ID, SECRET, "GET", "/v1/orders", query="page=2")
        status, _ = send("GET", "/v1/orders?page=2", b"", signed.headers)
        self.assertEqual(status, 200)
        status, problem = send("GET", "/v1/orders?page=2", b"", signed.headers)
        self.assertEqual((status, problem["code"]), (409, "NONCE_REPLAYED"))

    def test_a_timestamp_outside_the_window_is_refused(self):
        signed = sign(KEY_ID, SECRET, "GET", "/v1/orders", timestamp=int(time.time()) - 3600)
        status, problem = send("GET", "/v1/orders", b"", signed.headers)
        self.assertEqual((status, problem["code"]), (401, "TIMESTAMP_OUT_OF_WINDOW"))


if __name__ == "__main__":
    unittest.main()
