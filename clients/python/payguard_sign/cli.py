"""Send one PG-HMAC-SHA256 signed request and print the response (docs/client-signing.md).

    PG_SECRET=... python3 -m payguard_sign --key shop-app --secret-env PG_SECRET \\
        --method POST --data '{"sku":"A-1","qty":2}' 'http://127.0.0.1:8080/v1/orders?b=2&a=1'

Prints the response status on the first line and the response body after it. Exit code is 0 for
any HTTP response (even 4xx/5xx), 2 when the request was not sent: payguard would refuse it
(the reason is printed), or the connection failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

from . import SigningError, sign_url


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="payguard-sign",
                                description="Send a PG-HMAC-SHA256 signed request and print the response.")
    p.add_argument("url", help="full URL, e.g. http://127.0.0.1:8080/v1/orders?x=1")
    p.add_argument("--key", required=True, help="access key id (X-PG-Key)")
    p.add_argument("--secret-env", default="PG_SECRET",
                   help="environment variable holding the secret (default PG_SECRET)")
    p.add_argument("--method", default="GET", help="HTTP method, upper case (default GET)")
    body_group = p.add_mutually_exclusive_group()
    body_group.add_argument("--data", help="request body as text (sent as UTF-8)")
    body_group.add_argument("--data-file", help="read the request body from this file ('-' for stdin)")
    p.add_argument("--content-type", default="application/json", help="Content-Type when there is a body")
    p.add_argument("-H", "--header", action="append", default=[], help="extra header 'Name: value' (repeatable)")
    p.add_argument("--timestamp", type=int, help="override X-PG-Timestamp, unix seconds (testing clock skew)")
    p.add_argument("--nonce", help="override X-PG-Nonce (testing replays)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    args = p.parse_args(argv)

    secret = os.environ.get(args.secret_env)
    if not secret:
        p.error("environment variable %s is not set or empty" % args.secret_env)

    if args.data is not None:
        body = args.data.encode("utf-8")
    elif args.data_file == "-":
        body = sys.stdin.buffer.read()
    elif args.data_file:
        with open(args.data_file, "rb") as f:
            body = f.read()
    else:
        body = b""

    try:
        signed = sign_url(args.key, secret, args.method, args.url, body=body, timestamp=args.timestamp,
                          nonce=args.nonce)
    except SigningError as e:
        print("not sent: payguard would refuse this request: %s" % e, file=sys.stderr)
        return 2
    headers = dict(signed.headers)
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            p.error("header must look like 'Name: value': %r" % h)
        headers[name.strip()] = value.strip()
    if body and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = args.content_type

    data = body if (body or args.method not in ("GET", "HEAD")) else None
    req = urllib.request.Request(args.url, data=data, headers=headers, method=args.method)
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        print("request failed: %s" % e, file=sys.stderr)
        return 2
    print(status)
    sys.stdout.write(payload.decode("utf-8", errors="replace"))
    if payload and not payload.endswith(b"\n"):
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
