#!/usr/bin/env python3
"""Sign a request with PG-HMAC-SHA256 (docs/client-signing.md) and send it.

Standard library only. Example:

    PG_SECRET=s3cret python3 sign_request.py --key shop-app --secret-env PG_SECRET \
        --method POST --data '{"sku":"A-1","qty":2}' \
        'http://127.0.0.1:8080/v1/orders?b=2&a=1'

Prints the response status on the first line and the response body after it. Exit code is 0 for
any HTTP response (even 4xx/5xx) and 2 when the request could not be sent.
"""

import argparse
import base64
import hashlib
import hmac
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ALGORITHM = "PG-HMAC-SHA256"
UNRESERVED = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
SUB_DELIMS_AND_COLON_AT = set(b"!$&'()*+,=:@")  # ';' is refused by payguard
HEX = "0123456789ABCDEF"
HEXDIGITS = b"0123456789abcdefABCDEF"


def _escape(b):
    return "%" + HEX[b >> 4] + HEX[b & 15]


def canonical_path(path):
    """The path payguard routes, checks and forwards (docs/configuration.md, "Route matching and
    path normalization"): unreserved escapes decoded, other hex upper-cased, repeated slashes merged,
    '.' and '..' resolved. Raises ValueError for the forms payguard refuses with 400."""
    raw = path.encode("utf-8")
    if not raw.startswith(b"/"):
        raise ValueError("the path must start with '/'")
    segments, seg, i = [], "", 1
    decoded = bytearray()
    while i <= len(raw):
        b = raw[i] if i < len(raw) else None
        if b is None or b == 0x2F:  # end or '/'
            if seg in ("", "."):
                pass
            elif seg == "..":
                if segments:
                    segments.pop()
            else:
                segments.append(seg)
            last, seg = seg, ""
            i += 1
            continue
        if b < 0x20 or b == 0x7F or b == 0x5C or b == 0x3B:
            raise ValueError("payguard refuses control characters, '\\' and ';' in paths")
        if b == 0x25:  # '%'
            pair = raw[i + 1:i + 3]
            if len(pair) != 2 or any(c not in HEXDIGITS for c in pair):
                raise ValueError("invalid percent-escape in the path")
            d = int(pair, 16)
            if d < 0x20 or d == 0x7F or d in (0x2F, 0x5C):
                raise ValueError("payguard refuses encoded control characters and slashes in paths")
            if d == 0x25 and all(c in HEXDIGITS for c in raw[i + 3:i + 5]) and len(raw[i + 3:i + 5]) == 2:
                raise ValueError("payguard refuses double percent-encoding in paths")
            seg += chr(d) if d in UNRESERVED else _escape(d)
            decoded.append(d)
            i += 3
            continue
        seg += chr(b) if (b in UNRESERVED or b in SUB_DELIMS_AND_COLON_AT) else _escape(b)
        decoded.append(b)
        i += 1
    decoded.decode("utf-8")  # raises UnicodeDecodeError, a ValueError, like payguard's refusal
    out = "/" + "/".join(segments)
    if segments and last in ("", ".", ".."):
        out += "/"
    return out


def _reencode(text):
    """Percent-decode strictly ('+' is a space, as for every query decoder), then encode every
    non-unreserved byte as %XX."""
    raw = text.encode("utf-8")
    decoded = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x25:  # '%'
            pair = raw[i + 1:i + 3]
            if len(pair) != 2 or any(c not in HEXDIGITS for c in pair):
                raise ValueError("invalid percent-encoding in query part %r" % text)
            decoded.append(int(pair, 16))
            i += 3
        else:
            decoded.append(0x20 if b == 0x2B else b)
            i += 1
    return "".join(chr(b) if b in UNRESERVED else _escape(b) for b in decoded)


def canonical_query(raw):
    """Canonical query: split on '&', drop empty parts, split on the first '=', re-encode, sort."""
    pairs = []
    for part in (raw or "").split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_reencode(name), _reencode(value)))
    pairs.sort()  # ASCII-only strings after encoding: str order == byte order
    return "&".join(n + "=" + v for n, v in pairs)


def string_to_sign(method, path, query, timestamp, nonce, body):
    return "\n".join([
        ALGORITHM,
        method.upper(),
        canonical_path(path),
        canonical_query(query),
        timestamp,
        nonce,
        hashlib.sha256(body).hexdigest(),
    ])


def sign(secret, method, path, query, timestamp, nonce, body):
    sts = string_to_sign(method, path, query, timestamp, nonce, body)
    mac = hmac.new(secret, sts.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")


def signature_headers(key_id, secret, method, path, query, body, timestamp=None, nonce=None):
    timestamp = timestamp or str(int(time.time()))
    nonce = nonce or secrets.token_urlsafe(24)  # 32 chars of [A-Za-z0-9_-]
    return {
        "X-PG-Key": key_id,
        "X-PG-Timestamp": timestamp,
        "X-PG-Nonce": nonce,
        "X-PG-Signature": sign(secret, method, path, query, timestamp, nonce, body),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description="Send a PG-HMAC-SHA256 signed request and print the response.")
    p.add_argument("url", help="full URL, e.g. http://127.0.0.1:8080/v1/orders?x=1")
    p.add_argument("--key", required=True, help="access key id (X-PG-Key)")
    p.add_argument("--secret-env", default="PG_SECRET", help="environment variable holding the secret (default PG_SECRET)")
    p.add_argument("--method", default="GET", help="HTTP method (default GET)")
    body_group = p.add_mutually_exclusive_group()
    body_group.add_argument("--data", help="request body as text")
    body_group.add_argument("--data-file", help="read the request body from this file ('-' for stdin)")
    p.add_argument("--content-type", default="application/json", help="Content-Type when there is a body")
    p.add_argument("-H", "--header", action="append", default=[], help="extra header 'Name: value' (repeatable)")
    p.add_argument("--timestamp", help="override X-PG-Timestamp (testing)")
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

    parts = urllib.parse.urlsplit(args.url)
    path = parts.path or "/"
    method = args.method.upper()
    headers = signature_headers(args.key, secret.encode("utf-8"), method, path, parts.query, body,
                                timestamp=args.timestamp, nonce=args.nonce)
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            p.error("header must look like 'Name: value': %r" % h)
        headers[name.strip()] = value.strip()
    if body and "Content-Type" not in headers:
        headers["Content-Type"] = args.content_type

    req = urllib.request.Request(args.url, data=body if (body or method not in ("GET", "HEAD")) else None,
                                 headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        print("request failed: %s" % e, file=sys.stderr)
        return 2
    print(status)
    sys.stdout.write(payload.decode("utf-8", errors="replace"))
    if payload and not payload.endswith(b"\n"):
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
