//! `clients/vectors.json`, the test vectors every client signing library checks itself against
//! (docs/client-signing.md, clients/README.md), is generated here from the server's own code:
//! method check, canonical path, canonical query, string to sign and signature come from the
//! functions payguard verifies with, and every signed vector is then verified by a
//! `SignatureVerifier`, as a request would be. Refused inputs carry the problem `code` and
//! reason payguard answers them with.
//!
//! The test fails when the file differs from what the server computes. After changing the
//! scheme or the cases below, regenerate it with
//! `PAYGUARD_WRITE_VECTORS=1 cargo test --test client_vectors` and commit the result.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use http::HeaderMap;
use payguard::canonical::path::{canonicalize, PathPolicy};
use payguard::canonical::query::CanonicalQuery;
use payguard::canonical::{check_method, Refusal};
use payguard::config::secret::SecretRef;
use payguard::guard::signature::{
    sign_request, string_to_sign, AccessKeyConfig, SignatureConfig, SignatureHeaderNames, SignatureVerifier,
    DEFAULT_MAX_BODY_BYTES,
};
use serde::Serialize;

const KEY: &str = "shop-app";
const SECRET: &str = "pg-test-secret-0001";
const TS: i64 = 1_700_000_000;
const NONCE: &str = "n0nce-0123456789abcdef";

/// The inputs of one vector; the expected values are computed.
struct Case {
    name: &'static str,
    note: &'static str,
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    body: Vec<u8>,
    key_id: &'static str,
    secret: &'static str,
    timestamp: i64,
    nonce: &'static str,
}

impl Case {
    fn new(name: &'static str, note: &'static str, method: &'static str, path: &'static str) -> Self {
        Self {
            name,
            note,
            method,
            path,
            query: None,
            body: Vec::new(),
            key_id: KEY,
            secret: SECRET,
            timestamp: TS,
            nonce: NONCE,
        }
    }
    fn query(mut self, q: &'static str) -> Self {
        self.query = Some(q);
        self
    }
    fn body(mut self, b: impl AsRef<[u8]>) -> Self {
        self.body = b.as_ref().to_vec();
        self
    }
    fn timestamp(mut self, t: i64) -> Self {
        self.timestamp = t;
        self
    }
    fn nonce(mut self, n: &'static str) -> Self {
        self.nonce = n;
        self
    }
    fn key(mut self, id: &'static str, secret: &'static str) -> Self {
        self.key_id = id;
        self.secret = secret;
        self
    }
}

// One case per line reads as a table; rustfmt would spread each over several lines.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let c = Case::new;
    vec![
        // Signed requests.
        c("docs_worked_example", "the worked example of docs/client-signing.md", "POST", "/v1/orders")
            .query("b=%2B&a=1&b=x%20y")
            .body(r#"{"sku":"A-1","qty":2}"#),
        c("get_without_body_or_query", "no body: the hash of the empty string; no query: an empty line", "GET", "/v1/orders"),
        c("empty_query", "`/v1/orders?` has an empty query, signed like no query", "GET", "/v1/orders").query(""),
        c("only_empty_query_parts", "empty parts are dropped", "GET", "/v1/orders").query("&&&"),
        c("empty_body_post", "a POST with an empty body", "POST", "/v1/orders/cancel"),
        c("unicode_body", "the body's UTF-8 bytes are hashed as sent", "POST", "/v1/orders")
            .body("{\"note\":\"你好, café — 🎉\"}"),
        c("binary_body", "bodies are bytes, not text", "PUT", "/v1/files/1").body([0u8, 0xff, 0xfe, b'\n', 0x80, 0x7f]),
        c("body_with_crlf_and_trailing_newline", "line endings are part of the bytes signed", "POST", "/v1/orders")
            .body("{\r\n  \"qty\": 1\r\n}\n"),
        c("repeated_keys_sorted_by_value", "pairs sort by name, then by value", "GET", "/v1/orders")
            .query("b=2&a=3&a=1"),
        c("plus_is_a_space", "`+` decodes to a space (%20); %2b is a plus (%2B)", "GET", "/v1/search")
            .query("q=a+b&r=%2b"),
        c("missing_values_and_empty_names", "`b` is `b=`; `=c` has an empty name", "GET", "/v1/orders")
            .query("a=&b&&=c"),
        c("equals_in_value", "only the first `=` splits", "GET", "/v1/orders").query("a=b=c"),
        c("semicolon_is_data", "`;` is not a separator", "GET", "/v1/orders").query("a=1;b=2"),
        c("lower_case_escapes_upper_cased", "hex is upper case; unreserved escapes are decoded", "GET", "/v1/orders")
            .query("name=%e4%bd%a0&t=%7e%41"),
        c("raw_unicode_in_query", "raw UTF-8 is percent-encoded", "GET", "/v1/orders").query("name=你好"),
        c("sorted_after_encoding", "`%C3%A9` sorts before `~` (`%` < `~`)", "GET", "/v1/orders")
            .query("k=~&k=%C3%A9"),
        c("sorted_by_name_before_value", "`a` sorts before `a-` although `a-=1` < `a=2` as text", "GET", "/v1/orders")
            .query("a-=1&a=2"),
        c("non_utf8_query_bytes", "query bytes need not be UTF-8", "GET", "/v1/orders").query("a=%ff%FE"),
        c("reserved_characters_in_query", "`?`, `/`, `:`, `@` and a raw space are encoded", "GET", "/v1/orders")
            .query("next=/a/b?c:d@e&s=x y"),
        c("encoded_names", "names are decoded and re-encoded too", "GET", "/v1/orders").query("u%69d=7&%5Bx%5D=1"),
        c("path_dot_segments_and_slashes", "repeated slashes merged, `.` and `..` resolved", "GET", "//v1/./x/../orders"),
        c("path_dot_segments_above_root", "`..` never climbs above the root", "GET", "/../../v1/a/b/../../../orders"),
        c("path_unreserved_escapes_decoded", "%6f is `o`; %7E is `~`", "GET", "/v1/%6frders/%7Euser"),
        c("path_escapes_upper_cased", "escapes of other bytes keep their byte, upper-case hex", "GET", "/v1/items/%e4%bd%a0"),
        c("path_raw_unicode", "raw UTF-8 in a path is percent-encoded", "GET", "/v1/items/你好"),
        c("path_characters_encoded", "characters not allowed raw are encoded", "GET", "/v1/a\"b{c}|d^e`f[g] h"),
        c("path_sub_delims_kept", "sub-delims, `:` and `@` stay raw", "GET", "/v1/@scope/a!$&'()*+,=:b"),
        c("path_encoded_escape_char", "%25 is a literal `%`", "GET", "/v1/100%25"),
        c("path_trailing_slash_kept", "`/a/` and `/a` are different resources", "GET", "/v1/orders/"),
        c("path_trailing_dot_segment", "a last `.` or `..` leaves a trailing slash", "GET", "/v1/orders/x/.."),
        c("path_encoded_dot_segments", "%2e%2e is `..`", "GET", "/v1/x/%2e%2e/orders"),
        c("root_path", "the root", "GET", "/"),
        c("method_token", "any upper-case token is a method", "M-SEARCH", "/v1/orders"),
        c("unicode_secret", "the secret's UTF-8 bytes are the HMAC key", "DELETE", "/v1/orders/42")
            .key("partner.eu:1", "s3cret-ü-🔑"),
        c("max_length_nonce", "64 characters is the longest nonce", "GET", "/v1/orders")
            .nonce("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"),
        c("min_length_nonce", "16 characters is the shortest nonce", "GET", "/v1/orders").nonce("0123456789abcdef"),
        c("timestamp_zero", "the timestamp is signed as decimal text; the window is the server's check", "GET", "/v1/orders")
            .timestamp(0),
        // Refused inputs.
        c("refused_lower_case_method", "methods are case-sensitive", "post", "/v1/orders"),
        c("refused_relative_path", "a path starts with `/`", "GET", "v1/orders"),
        c("refused_empty_path", "a path starts with `/`", "GET", ""),
        c("refused_encoded_slash", "servers disagree on %2F", "GET", "/v1/a%2Fb"),
        c("refused_encoded_backslash", "servers disagree on %5C", "GET", "/v1/a%5cb"),
        c("refused_backslash", "some servers read `\\` as `/`", "GET", "/v1\\orders"),
        c("refused_path_parameter", "`;` path parameters", "GET", "/v1/cart;jsessionid=1"),
        c("refused_encoded_nul", "%00", "GET", "/v1/a%00"),
        c("refused_control_character", "a raw tab", "GET", "/v1/a\tb"),
        c("refused_encoded_newline", "%0A", "GET", "/v1/a%0Ab"),
        c("refused_invalid_path_escape", "`%` needs two hex digits", "GET", "/v1/%zz"),
        c("refused_truncated_path_escape", "`%` needs two hex digits", "GET", "/v1/a%4"),
        c("refused_double_encoding", "%25 followed by two hex digits", "GET", "/v1/%252e%252e/admin"),
        c(
            "refused_double_encoding_with_escaped_digits",
            "%25 followed by escapes of two hex digits: %252e once canonical, `.` to a double decoder",
            "GET",
            "/v1/%25%32%65%25%32%65/admin",
        ),
        c("refused_invalid_utf8_path", "escapes must decode to UTF-8", "GET", "/v1/%FF"),
        c("refused_overlong_utf8_path", "an overlong encoding of `/`", "GET", "/v1/%C0%AF"),
        c("refused_surrogate_utf8_path", "an encoded UTF-16 surrogate is not UTF-8", "GET", "/v1/%ED%A0%80"),
        c("refused_invalid_query_escape", "`%` needs two hex digits", "GET", "/v1/orders").query("a=%zz"),
        c("refused_truncated_query_escape", "`%` at the end", "GET", "/v1/orders").query("a=1&b=%"),
        c("refused_short_nonce", "a nonce has 16 to 64 characters", "GET", "/v1/orders").nonce("too-short"),
        c("refused_long_nonce", "a nonce has 16 to 64 characters", "GET", "/v1/orders")
            .nonce("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-x"),
        c("refused_nonce_characters", "a nonce is A-Z a-z 0-9 _ -", "GET", "/v1/orders").nonce("nonce.with.dots.0123"),
        c("refused_negative_timestamp", "timestamps are unix seconds, decimal digits only", "GET", "/v1/orders")
            .timestamp(-1),
    ]
}

#[derive(Serialize)]
struct File {
    about: &'static str,
    algorithm: &'static str,
    vectors: Vec<Vector>,
}

#[derive(Serialize)]
struct Vector {
    name: &'static str,
    note: &'static str,
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    key_id: &'static str,
    secret: &'static str,
    timestamp: i64,
    nonce: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected: Option<Expected>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Refused>,
}

#[derive(Serialize)]
struct Expected {
    canonical_path: String,
    canonical_query: String,
    string_to_sign: String,
    headers: Headers,
}

#[derive(Serialize)]
struct Headers {
    #[serde(rename = "X-PG-Key")]
    key: String,
    #[serde(rename = "X-PG-Timestamp")]
    timestamp: String,
    #[serde(rename = "X-PG-Nonce")]
    nonce: String,
    #[serde(rename = "X-PG-Signature")]
    signature: String,
}

#[derive(Serialize, Debug)]
struct Refused {
    code: &'static str,
    reason: &'static str,
}

fn verifier(key_id: &str, secret: &str) -> SignatureVerifier {
    SignatureConfig {
        keys: vec![AccessKeyConfig {
            id: key_id.into(),
            secrets: vec![SecretRef::new(secret)],
        }],
        window: Duration::from_secs(300),
        headers: SignatureHeaderNames::default(),
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
    }
    .build()
    .expect("vector key config")
}

fn header_map(key: &str, ts: &str, nonce: &str, sig: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-pg-key", key.parse().expect("key header"));
    h.insert("x-pg-timestamp", ts.parse().expect("timestamp header"));
    h.insert("x-pg-nonce", nonce.parse().expect("nonce header"));
    h.insert("x-pg-signature", sig.parse().expect("signature header"));
    h
}

/// Runs a case through payguard's checks in the order a request meets them: method, path and
/// query canonicalization (400), then the signature headers (401), then the signature.
fn compute(case: &Case) -> Result<Expected, Refused> {
    let refused = |r: Refusal| Refused {
        code: r.code(),
        reason: r.reason(),
    };
    check_method(case.method).map_err(|e| refused(e.into()))?;
    let path = canonicalize(case.path.as_bytes(), &PathPolicy::default()).map_err(|e| refused(e.into()))?;
    let query = CanonicalQuery::parse(case.query.unwrap_or("")).map_err(|e| refused(e.into()))?;
    let ts = case.timestamp.to_string();
    let signature = sign_request(
        case.secret.as_bytes(),
        case.method,
        path.as_str(),
        case.query,
        &ts,
        case.nonce,
        &case.body,
    )
    .map_err(|e| refused(e.into()))?;

    // Verify as the proxy would, with the server's clock at the vector's timestamp.
    let v = verifier(case.key_id, case.secret);
    let now = jiff::Timestamp::from_second(case.timestamp.max(0)).expect("timestamp");
    let signed = v
        .verify_headers(&header_map(case.key_id, &ts, case.nonce, &signature), now)
        .map_err(|f| Refused {
            code: f.code(),
            reason: f.reason(),
        })?;
    v.verify_body(&signed, case.method, path.as_str(), query.as_str(), &case.body)
        .unwrap_or_else(|f| panic!("{}: payguard does not accept its own signature: {f}", case.name));

    Ok(Expected {
        canonical_path: path.as_str().to_string(),
        canonical_query: query.as_str().to_string(),
        string_to_sign: string_to_sign(case.method, path.as_str(), query.as_str(), &ts, case.nonce, &case.body),
        headers: Headers {
            key: case.key_id.to_string(),
            timestamp: ts,
            nonce: case.nonce.to_string(),
            signature,
        },
    })
}

fn generate() -> String {
    let vectors = cases()
        .into_iter()
        .map(|case| {
            let result = compute(&case);
            let refused_by_name = case.name.starts_with("refused_");
            assert_eq!(
                result.is_err(),
                refused_by_name,
                "{}: named as {} but payguard {}",
                case.name,
                if refused_by_name { "refused" } else { "signed" },
                if result.is_err() { "refuses it" } else { "signs it" },
            );
            let (body, body_base64) = match String::from_utf8(case.body.clone()) {
                Ok(text) => (Some(text), None),
                Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(&case.body))),
            };
            let (expected, error) = match result {
                Ok(e) => (Some(e), None),
                Err(r) => (None, Some(r)),
            };
            Vector {
                name: case.name,
                note: case.note,
                method: case.method,
                path: case.path,
                query: case.query,
                body,
                body_base64,
                key_id: case.key_id,
                secret: case.secret,
                timestamp: case.timestamp,
                nonce: case.nonce,
                expected,
                error,
            }
        })
        .collect();
    let file = File {
        about: "PG-HMAC-SHA256 test vectors (docs/client-signing.md), generated by tests/client_vectors.rs from payguard's own code; do not edit by hand. `query` is the raw query without `?` (null: none); the body is `body` (UTF-8 text) or `body_base64`. A vector has `expected` (the canonical request, string to sign and headers) or `error` (the problem code and reason payguard refuses the input with).",
        algorithm: "PG-HMAC-SHA256",
        vectors,
    };
    let mut text = serde_json::to_string_pretty(&file).expect("vectors as JSON");
    text.push('\n');
    text
}

#[test]
fn clients_vectors_json_is_what_payguard_computes() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/vectors.json");
    let want = generate();
    if std::env::var_os("PAYGUARD_WRITE_VECTORS").is_some() {
        std::fs::write(&path, &want).expect("write clients/vectors.json");
        return;
    }
    let got = std::fs::read_to_string(&path).unwrap_or_default();
    if got != want {
        let first_diff = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| got.lines().count().min(want.lines().count()));
        panic!(
            "clients/vectors.json is not what payguard computes (first difference at line {}).\n\
             Regenerate it: PAYGUARD_WRITE_VECTORS=1 cargo test --test client_vectors",
            first_diff + 1
        );
    }
}

#[test]
fn the_docs_worked_example_is_the_first_vector() {
    let text = generate();
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let first = &v["vectors"][0];
    assert_eq!(first["name"], "docs_worked_example");
    assert_eq!(
        first["expected"]["headers"]["X-PG-Signature"], "exzPTcsp705i/WUr23/wBfbnPnLu6QQSnprUCdXf56Y=",
        "the signature docs/client-signing.md shows"
    );
}

#[test]
fn every_refusal_kind_a_client_can_meet_has_a_vector() {
    let text = generate();
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let reasons: Vec<&str> = v["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .filter_map(|x| x["error"]["reason"].as_str())
        .collect();
    // Every canonical-request refusal except the header screen, which a signer never meets,
    // plus the signature header syntax the client controls.
    let canonical = payguard::canonical::REFUSAL_REASONS
        .iter()
        .filter(|r| **r != "header_underscore");
    for reason in canonical.chain(&["malformed_nonce", "malformed_timestamp"]) {
        assert!(reasons.contains(reason), "no vector refused with {reason}");
    }
}
