"""Every vector of clients/vectors.json (generated from payguard's own code by
tests/client_vectors.rs): the canonical request, the string to sign and the headers match, and
refused inputs raise SigningError with payguard's code and reason."""

import base64
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from payguard_sign import SigningError, canonical_path, canonical_query, sign, sign_url  # noqa: E402

with open(os.path.join(HERE, "..", "..", "vectors.json"), encoding="utf-8") as f:
    VECTORS = json.load(f)["vectors"]


def body_of(v):
    return base64.b64decode(v["body_base64"]) if "body_base64" in v else v["body"].encode("utf-8")


def sign_vector(v):
    return sign(v["key_id"], v["secret"], v["method"], v["path"], query=v["query"], body=body_of(v),
                timestamp=v["timestamp"], nonce=v["nonce"])


class Vectors(unittest.TestCase):
    def test_the_file_has_signed_and_refused_vectors(self):
        self.assertGreater(sum("expected" in v for v in VECTORS), 10)
        self.assertGreater(sum("error" in v for v in VECTORS), 10)

    def test_signed_vectors(self):
        for v in (v for v in VECTORS if "expected" in v):
            with self.subTest(v["name"]):
                want = v["expected"]
                got = sign_vector(v)
                self.assertEqual(got.canonical_path, want["canonical_path"])
                self.assertEqual(got.canonical_query, want["canonical_query"])
                self.assertEqual(got.string_to_sign, want["string_to_sign"])
                self.assertEqual(got.headers, want["headers"])

    def test_refused_vectors(self):
        for v in (v for v in VECTORS if "error" in v):
            with self.subTest(v["name"]):
                with self.assertRaises(SigningError) as ctx:
                    sign_vector(v)
                self.assertEqual((ctx.exception.code, ctx.exception.reason),
                                 (v["error"]["code"], v["error"]["reason"]))

    def test_canonical_forms_are_idempotent(self):
        for v in (v for v in VECTORS if "expected" in v):
            with self.subTest(v["name"]):
                p, q = v["expected"]["canonical_path"], v["expected"]["canonical_query"]
                self.assertEqual(canonical_path(p), p)
                self.assertEqual(canonical_query(q), q)

    def test_sign_url_splits_path_and_query_as_sent(self):
        v = VECTORS[0]
        url = "http://127.0.0.1:8080%s?%s" % (v["path"], v["query"])
        got = sign_url(v["key_id"], v["secret"], v["method"], url, body=body_of(v), timestamp=v["timestamp"],
                       nonce=v["nonce"])
        self.assertEqual(got.headers, v["expected"]["headers"])

    def test_bytes_and_str_inputs_sign_alike(self):
        v = next(v for v in VECTORS if v["name"] == "unicode_body")
        as_text = sign(v["key_id"], v["secret"], v["method"], v["path"], body=v["body"], timestamp=v["timestamp"],
                       nonce=v["nonce"])
        as_bytes = sign(v["key_id"], v["secret"].encode(), v["method"], v["path"].encode(),
                        body=bytearray(v["body"].encode()), timestamp=v["timestamp"], nonce=v["nonce"])
        self.assertEqual(as_text.headers, v["expected"]["headers"])
        self.assertEqual(as_bytes.headers, v["expected"]["headers"])

    def test_defaults_are_now_and_a_fresh_nonce(self):
        a = sign("k", "s", "GET", "/")
        b = sign("k", "s", "GET", "/")
        self.assertNotEqual(a.headers["X-PG-Nonce"], b.headers["X-PG-Nonce"])
        self.assertRegex(a.headers["X-PG-Nonce"], r"^[A-Za-z0-9_-]{32}$")
        self.assertRegex(a.headers["X-PG-Timestamp"], r"^[0-9]{10}$")

    def test_a_path_with_a_query_is_an_argument_error_not_a_silent_percent_3f(self):
        with self.assertRaises(ValueError) as ctx:
            sign("k", "s", "GET", "/v1?a=1")
        self.assertNotIsInstance(ctx.exception, SigningError)

    def test_refusals_name_the_problem_without_the_secret(self):
        with self.assertRaises(SigningError) as ctx:
            sign("k", "top-secret-value", "GET", "/v1/a%2Fb")
        text = str(ctx.exception)
        self.assertIn("encoded slash %2F at byte 5", text)
        self.assertIn("NON_CANONICAL_PATH", text)
        self.assertNotIn("top-secret-value", text)


if __name__ == "__main__":
    unittest.main()
