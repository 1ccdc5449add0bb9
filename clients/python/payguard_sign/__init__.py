"""PG-HMAC-SHA256 request signing for payguard clients (docs/client-signing.md).

Standard library only. The canonical path and query are computed exactly as payguard computes
them (src/canonical/path.rs, src/canonical/query.rs); inputs payguard would refuse raise
:class:`SigningError` carrying the problem ``code`` and ``reason`` payguard would answer with,
instead of producing a signature the server can never accept.

    >>> from payguard_sign import sign
    >>> signed = sign("shop-app", secret, "POST", "/v1/orders", query="a=1", body=b'{"qty":1}')
    >>> signed.headers["X-PG-Signature"]
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as _secrets
import time
import urllib.parse
from typing import NamedTuple, Optional, Union

__all__ = [
    "ALGORITHM",
    "Signed",
    "SigningError",
    "canonical_path",
    "canonical_query",
    "new_nonce",
    "sign",
    "sign_url",
    "string_to_sign",
]

ALGORITHM = "PG-HMAC-SHA256"

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar: unreserved, sub-delims, ':' and '@' may appear raw in a path (';' is refused
# before this set is consulted).
_ALLOWED_RAW_IN_PATH = _UNRESERVED | frozenset(b"!$&'()*+,;=:@")
_NONCE_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_HEX = "0123456789ABCDEF"

BytesLike = Union[bytes, bytearray, memoryview]


class SigningError(ValueError):
    """An input payguard would refuse. ``code`` is the problem code payguard answers with
    (``NON_CANONICAL_PATH``, ``NON_CANONICAL_QUERY``, ``NON_CANONICAL_METHOD``,
    ``MISSING_CREDENTIALS``, ``TIMESTAMP_OUT_OF_WINDOW``); ``reason`` the finer reason
    (``path_encoded_slash``, ...), as in clients/vectors.json."""

    def __init__(self, code: str, reason: str, message: str):
        super().__init__(message)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return "%s (%s, %s)" % (self.args[0], self.code, self.reason)


class Signed(NamedTuple):
    """The signature headers of one request and the canonical request they cover."""

    headers: dict
    canonical_path: str
    canonical_query: str
    string_to_sign: str


def _path_error(reason: str, message: str) -> SigningError:
    return SigningError("NON_CANONICAL_PATH", reason, message)


def _hex_val(b: Optional[int]) -> Optional[int]:
    if b is None:
        return None
    if 0x30 <= b <= 0x39:
        return b - 0x30
    if 0x61 <= b <= 0x66:
        return b - 0x61 + 10
    if 0x41 <= b <= 0x46:
        return b - 0x41 + 10
    return None


def _at(raw: bytes, i: int) -> Optional[int]:
    return raw[i] if i < len(raw) else None


def _escape_at(raw: bytes, i: int) -> Optional[int]:
    """The byte `%XY` at raw[i] (a '%') encodes, or None."""
    hi, lo = _hex_val(_at(raw, i + 1)), _hex_val(_at(raw, i + 2))
    if hi is None or lo is None:
        return None
    return hi * 16 + lo


def _hex_pair_follows(raw: bytes, at: int) -> bool:
    """Whether the canonical path continues with two hex digits at raw[at:]: sent raw or as
    escapes of them (`%32%65` is `2e` once canonical), so `%25%32%65` is refused like `%252e`."""

    def canonical_byte(j: int):
        b = _at(raw, j)
        if b == 0x25:
            d = _escape_at(raw, j)
            return (d, 3) if d is not None and d in _UNRESERVED else None
        return None if b is None else (b, 1)

    first = canonical_byte(at)
    if first is None:
        return False
    second = canonical_byte(at + first[1])
    return second is not None and _hex_val(first[0]) is not None and _hex_val(second[0]) is not None


def _push_escape(out: bytearray, b: int) -> None:
    out += ("%" + _HEX[b >> 4] + _HEX[b & 15]).encode("ascii")


def _close_segment(out: bytearray, segment: int) -> bool:
    """Closes the segment that starts at out[segment]; returns whether it was empty or a dot
    segment (which leave a trailing slash when last)."""
    seg = bytes(out[segment:])
    if seg in (b"", b"."):
        del out[segment:]
        return True
    if seg == b"..":
        # Drop this segment and the one before it; at the root there is nothing to drop.
        del out[max(segment - 1, 0):]
        del out[out.rfind(b"/") + 1:]
        if not out:
            out += b"/"
        return True
    out += b"/"
    return False


def canonical_path(path: Union[str, BytesLike]) -> str:
    """The canonical path payguard routes, checks, signs and forwards (docs/configuration.md,
    "Route matching and path normalization"): escapes of unreserved characters decoded, other
    escapes in upper-case hex, characters not allowed raw percent-encoded, repeated slashes
    merged, ``.`` and ``..`` resolved. ``path`` is the path as sent, without the query.

    Raises :class:`SigningError` (``NON_CANONICAL_PATH``) for the forms payguard refuses with
    400 under its default ``server.path`` policy: control characters, ``\\``, ``;``, encoded
    slashes, double encoding, invalid escapes, bytes that are not UTF-8."""
    if isinstance(path, str):
        try:
            raw = path.encode("utf-8")
        except UnicodeEncodeError:
            raise _path_error("path_invalid_utf8", "the path does not decode to UTF-8") from None
    else:
        raw = bytes(path)
    if raw[:1] != b"/":
        raise _path_error("path_not_origin_form", "the request target must be a path starting with `/`")
    out = bytearray(b"/")
    segment = 1
    # The decoded bytes from the first non-ASCII one on, to check the path means UTF-8 text.
    decoded = bytearray()
    i = 1
    while i < len(raw):
        c = raw[i]
        if c == 0x2F:  # '/'
            _close_segment(out, segment)
            segment = len(out)
            i += 1
            continue
        if c < 0x20 or c == 0x7F:
            raise _path_error("path_control_character", "control character 0x%02X at byte %d of the path" % (c, i))
        if c == 0x5C:  # '\'
            raise _path_error(
                "path_backslash",
                "`\\` at byte %d of the path (some servers read it as `/`); encode it or remove it" % i,
            )
        if c == 0x3B:  # ';'
            raise _path_error(
                "path_parameter",
                "`;` path parameter at byte %d of the path (Servlet containers route without it, "
                "other servers with it)" % i,
            )
        if c == 0x25:  # '%'
            d = _escape_at(raw, i)
            if d is None:
                raise _path_error("path_invalid_escape", "invalid percent-escape at byte %d of the path" % i)
            if d < 0x20 or d == 0x7F:
                raise _path_error("path_control_character", "control character 0x%02X at byte %d of the path" % (d, i))
            if d in (0x2F, 0x5C):
                raise _path_error(
                    "path_encoded_slash",
                    "encoded slash %s at byte %d of the path (servers disagree on whether it "
                    "separates segments)" % (raw[i:i + 3].decode("ascii"), i),
                )
            if d == 0x25 and _hex_pair_follows(raw, i + 3):
                raise _path_error(
                    "path_double_encoding",
                    "double percent-encoding at byte %d of the path (`%%25` followed by two hex digits)" % i,
                )
            if d in _UNRESERVED:
                out.append(d)
            else:
                _push_escape(out, d)
            if d >= 0x80 or decoded:
                decoded.append(d)
            i += 3
            continue
        if c >= 0x80:
            decoded.append(c)
            _push_escape(out, c)
        else:
            if c in _ALLOWED_RAW_IN_PATH:
                out.append(c)
            else:
                _push_escape(out, c)
            if decoded:
                decoded.append(c)
        i += 1
    # An empty or dot last segment leaves a trailing slash; after a name, closing appended a '/'
    # that is not part of the path.
    if not _close_segment(out, segment) and len(out) > 1:
        del out[-1]
    if decoded:
        try:
            bytes(decoded).decode("utf-8")
        except UnicodeDecodeError:
            raise _path_error("path_invalid_utf8", "the path does not decode to UTF-8") from None
    return out.decode("ascii")


def _query_decode(raw: bytes, base_offset: int) -> bytes:
    out = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x25:  # '%'
            d = _escape_at(raw, i)
            if d is None:
                raise SigningError(
                    "NON_CANONICAL_QUERY",
                    "query_invalid_escape",
                    "invalid percent-escape at byte %d of the query" % (base_offset + i),
                )
            out.append(d)
            i += 3
        else:
            out.append(0x20 if b == 0x2B else b)  # '+' is a space, as for every query decoder
            i += 1
    return bytes(out)


def _query_encode(decoded: bytes) -> str:
    out = bytearray()
    for b in decoded:
        if b in _UNRESERVED:
            out.append(b)
        else:
            _push_escape(out, b)
    return out.decode("ascii")


def canonical_query(query: Union[str, BytesLike, None]) -> str:
    """The canonical query of a raw query (the text after ``?``, without it; ``None`` or empty
    for none): split on ``&`` (empty parts dropped), each part on its first ``=``, decoded with
    ``+`` as a space, re-encoded with only unreserved characters raw, sorted by name then value
    (bytes), joined as ``name=value`` with ``&``.

    Raises :class:`SigningError` (``NON_CANONICAL_QUERY``) for a ``%`` without two hex digits."""
    if query is None:
        return ""
    raw = query.encode("utf-8") if isinstance(query, str) else bytes(query)
    pairs = []
    offset = 0
    for part in raw.split(b"&"):
        part_offset = offset
        offset += len(part) + 1
        if not part:
            continue
        name, sep, value = part.partition(b"=")
        value_offset = part_offset + len(name) + 1 if sep else part_offset + len(part)
        pairs.append((_query_encode(_query_decode(name, part_offset)),
                      _query_encode(_query_decode(value, value_offset))))
    pairs.sort()  # ASCII after encoding, so str order is byte order; by name, then value
    return "&".join(n + "=" + v for n, v in pairs)


def _check_method(method: str) -> str:
    tchar = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~")
    if not method or any(ch not in tchar or ch.islower() for ch in method):
        raise SigningError(
            "NON_CANONICAL_METHOD",
            "method_not_upper_case",
            "the method must be an upper-case token such as POST (methods are case-sensitive)",
        )
    return method


def _check_nonce(nonce: str) -> str:
    if not (16 <= len(nonce) <= 64) or any(ord(ch) > 0x7F or ord(ch) not in _NONCE_CHARS for ch in nonce):
        raise SigningError(
            "MISSING_CREDENTIALS",
            "malformed_nonce",
            "the nonce must be 16 to 64 characters of A-Z a-z 0-9 _ -",
        )
    return nonce


def _timestamp_text(timestamp: int) -> str:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise TypeError("timestamp must be an int (unix seconds)")
    text = str(timestamp)
    if timestamp < 0 or len(text) > 18:
        raise SigningError(
            "TIMESTAMP_OUT_OF_WINDOW",
            "malformed_timestamp",
            "the timestamp must be unix seconds in decimal digits",
        )
    return text


def _bytes(value: Union[str, BytesLike, None], what: str) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError("%s must be bytes or str" % what)


def new_nonce() -> str:
    """A fresh nonce: 32 characters of ``[A-Za-z0-9_-]`` (24 random bytes)."""
    return _secrets.token_urlsafe(24)


def string_to_sign(method: str, path: str, query: Union[str, BytesLike, None], timestamp: int,
                   nonce: str, body: Union[str, BytesLike, None] = b"") -> str:
    """The seven-line string to sign of a request (docs/client-signing.md), from the path and
    raw query as sent; both are canonicalized here."""
    return _canonical_request(method, path, query, timestamp, nonce, _bytes(body, "body"))[2]


def _canonical_request(method, path, query, timestamp, nonce, body):
    method = _check_method(method)
    cpath = canonical_path(path)
    cquery = canonical_query(query)
    nonce = _check_nonce(nonce)
    ts = _timestamp_text(timestamp)
    sts = "\n".join([ALGORITHM, method, cpath, cquery, ts, nonce, hashlib.sha256(body).hexdigest()])
    return cpath, cquery, sts, ts


def sign(key_id: str, secret: Union[str, BytesLike], method: str, path: str,
         query: Union[str, BytesLike, None] = None, body: Union[str, BytesLike, None] = b"",
         timestamp: Optional[int] = None, nonce: Optional[str] = None) -> Signed:
    """Signs one request. ``path`` and ``query`` are what the request line will carry (the query
    without ``?``); ``body`` the exact bytes that will be sent (a ``str`` is sent as UTF-8).
    ``timestamp`` defaults to now, ``nonce`` to a fresh random one.

    Returns :class:`Signed`; ``signed.headers`` holds ``X-PG-Key``, ``X-PG-Timestamp``,
    ``X-PG-Nonce`` and ``X-PG-Signature``."""
    key = _bytes(secret, "secret")
    if not key:
        raise ValueError("the secret must not be empty")
    if not key_id:
        raise ValueError("the key id must not be empty")
    if isinstance(path, str) and ("?" in path or "#" in path):
        raise ValueError("the path must not contain '?' or '#': pass the query as query=, or use sign_url")
    if timestamp is None:
        timestamp = int(time.time())
    if nonce is None:
        nonce = new_nonce()
    cpath, cquery, sts, ts = _canonical_request(method, path, query, timestamp, nonce, _bytes(body, "body"))
    mac = hmac.new(key, sts.encode("ascii"), hashlib.sha256).digest()
    headers = {
        "X-PG-Key": key_id,
        "X-PG-Timestamp": ts,
        "X-PG-Nonce": nonce,
        "X-PG-Signature": base64.b64encode(mac).decode("ascii"),
    }
    return Signed(headers, cpath, cquery, sts)


def sign_url(key_id: str, secret: Union[str, BytesLike], method: str, url: str,
             body: Union[str, BytesLike, None] = b"", timestamp: Optional[int] = None,
             nonce: Optional[str] = None) -> Signed:
    """:func:`sign` for a full URL (``http://host/v1/orders?a=1``) or a path with a query
    (``/v1/orders?a=1``), split as urllib sends it."""
    parts = urllib.parse.urlsplit(url)
    return sign(key_id, secret, method, parts.path or "/", parts.query, body=body, timestamp=timestamp,
                nonce=nonce)
