//! `PG-HMAC-SHA256` client request signatures.
//!
//! Verification is split in two so the proxy can reject cheaply before buffering a body:
//! [`SignatureVerifier::verify_headers`] (presence, key, nonce syntax, timestamp window) and
//! [`SignatureVerifier::verify_body`] (the HMAC over the string to sign). The nonce is claimed in
//! the store only after both passed, so forged requests cannot burn nonces.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ConfigIssue;
use crate::canonical::query::{CanonicalQuery, QueryRefusal};
use crate::secret::{Secret, SecretRef};

/// The algorithm name, first line of the string to sign.
pub(crate) const ALGORITHM: &str = "PG-HMAC-SHA256";

/// Default timestamp window.
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// Default body cap for hashing.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// The canonical query of a raw one (see [`crate::canonical::query`]): what the string to sign
/// carries on its fourth line.
pub fn canonical_query(raw: &str) -> Result<String, QueryRefusal> {
    CanonicalQuery::parse(raw).map(|q| q.as_str().to_string())
}

/// Lower-case hex SHA-256 of the body (of the empty string when there is no body).
pub(crate) fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The string to sign (docs/client-signing.md): seven lines joined by `\n`, no trailing newline.
/// `canonical_query` is the output of [`canonical_query`] (empty without a query).
pub fn string_to_sign(
    method: &str,
    path: &str,
    canonical_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    let method = method.to_ascii_uppercase();
    let body_hash = body_sha256_hex(body);
    let mut s = String::with_capacity(
        ALGORITHM.len() + method.len() + path.len() + canonical_query.len() + timestamp.len() + nonce.len() + 64 + 6,
    );
    for (i, line) in [ALGORITHM, &method, path, canonical_query, timestamp, nonce, &body_hash]
        .iter()
        .enumerate()
    {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(line);
    }
    s
}

type HmacSha256 = Hmac<Sha256>;

/// A secret's HMAC key schedule, computed once when the config is built; each verification
/// clones it instead of hashing the key again.
#[derive(Clone)]
struct PreparedSecret(HmacSha256);

impl std::fmt::Debug for PreparedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreparedSecret(..)")
    }
}

impl PreparedSecret {
    fn new(secret: &Secret) -> Option<Self> {
        HmacSha256::new_from_slice(secret.expose()).ok().map(Self)
    }

    /// HMAC-SHA256 of the string to sign whose lines are given, fed line by line.
    fn mac(&self, lines: &[&[u8]; 7]) -> [u8; 32] {
        let mut m = self.0.clone();
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                m.update(b"\n");
            }
            m.update(line);
        }
        m.finalize().into_bytes().into()
    }
}

fn mac(secret: &[u8], string_to_sign: &str) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for HMAC.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return [0u8; 32],
    };
    m.update(string_to_sign.as_bytes());
    m.finalize().into_bytes().into()
}

/// Base64 (standard alphabet, padded) of HMAC-SHA256(secret, string_to_sign).
pub(crate) fn sign(secret: &[u8], string_to_sign: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac(secret, string_to_sign))
}

/// Signs a whole request (what `payguard sign` and test clients need): canonicalizes the query,
/// builds the string to sign and returns the `X-PG-Signature` value. `path` must already be the
/// canonical path ([`crate::canonical::path::canonicalize`]).
pub fn sign_request(
    secret: &[u8],
    method: &str,
    path: &str,
    query: Option<&str>,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Result<String, QueryRefusal> {
    let cq = canonical_query(query.unwrap_or(""))?;
    Ok(sign(secret, &string_to_sign(method, path, &cq, timestamp, nonce, body)))
}

/// Why a request's signature was not accepted. Messages describe the problem without echoing
/// secrets, the expected signature or the presented key id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureFailure {
    /// A required header is absent.
    #[error("header {header} is required")]
    MissingHeader {
        /// The header's configured name.
        header: String,
    },
    /// A required header appears more than once.
    #[error("header {header} must appear exactly once")]
    DuplicateHeader {
        /// The header's configured name.
        header: String,
    },
    /// A header value is not visible ASCII.
    #[error("header {header} must be visible ASCII")]
    MalformedHeader {
        /// The header's configured name.
        header: String,
    },
    /// The nonce does not have the nonce syntax.
    #[error("header {header} must be 16 to 64 characters of A-Z a-z 0-9 _ -")]
    MalformedNonce {
        /// The nonce header's configured name.
        header: String,
    },
    /// The access key id is not configured.
    #[error("the access key is not known")]
    UnknownKey,
    /// The timestamp is not decimal unix seconds.
    #[error("header {header} must be unix seconds in decimal")]
    MalformedTimestamp {
        /// The timestamp header's configured name.
        header: String,
    },
    /// The timestamp is further from now than the window.
    #[error("timestamp is {skew_seconds} s from the server clock; allowed window is {window_seconds} s")]
    TimestampOutOfWindow {
        /// now − timestamp (negative when the timestamp is in the future).
        skew_seconds: i64,
        /// Configured window.
        window_seconds: u64,
    },
    /// No active secret of the key produces the presented signature.
    #[error("the signature does not match the request{}", .hint.map_or("", MismatchHint::text))]
    SignatureMismatch {
        /// What the signature does match, when it matches a spelling of this request that
        /// payguard does not sign (found only after the check failed).
        hint: Option<MismatchHint>,
    },
    /// The body exceeds the configured cap.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The cap in bytes.
        limit: u64,
    },
}

impl SignatureFailure {
    /// Stable problem `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader { .. }
            | Self::DuplicateHeader { .. }
            | Self::MalformedHeader { .. }
            | Self::MalformedNonce { .. } => "MISSING_CREDENTIALS",
            Self::UnknownKey => "UNKNOWN_KEY",
            Self::MalformedTimestamp { .. } | Self::TimestampOutOfWindow { .. } => "TIMESTAMP_OUT_OF_WINDOW",
            Self::SignatureMismatch { .. } => "SIGNATURE_MISMATCH",
            Self::BodyTooLarge { .. } => "BODY_TOO_LARGE",
        }
    }

    /// HTTP status.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::BodyTooLarge { .. } => 413,
            _ => 401,
        }
    }

    /// Metric label for `payguard_signature_failures_total{reason}` (a fixed enum).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingHeader { .. } => "missing_header",
            Self::DuplicateHeader { .. } => "duplicate_header",
            Self::MalformedHeader { .. } => "malformed_header",
            Self::MalformedNonce { .. } => "malformed_nonce",
            Self::UnknownKey => "unknown_key",
            Self::MalformedTimestamp { .. } => "malformed_timestamp",
            Self::TimestampOutOfWindow { .. } => "timestamp_out_of_window",
            Self::SignatureMismatch { .. } => "signature_mismatch",
            Self::BodyTooLarge { .. } => "body_too_large",
        }
    }
}

/// A spelling of the request the client signed instead of the canonical one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MismatchHint {
    /// The path as sent, not its canonical form.
    RawPath,
    /// The query as sent, not the canonical query.
    RawQuery,
    /// The query with `+` read as a plus; payguard reads it as a space.
    PlusAsPlus,
}

impl MismatchHint {
    fn text(self) -> &'static str {
        match self {
            Self::RawPath => {
                "; it matches the path as sent: sign the canonical path payguard forwards (docs/client-signing.md)"
            }
            Self::RawQuery => "; it matches the query as sent: sign the canonical query (docs/client-signing.md)",
            Self::PlusAsPlus => {
                "; it matches the query with `+` read as a plus: `+` in a query is a space (send %2B for a plus)"
            }
        }
    }
}

/// Names of the four signature headers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureHeaderNames {
    /// Access key id header.
    #[serde(default = "default_key_header")]
    pub(crate) key: String,
    /// Unix-seconds timestamp header.
    #[serde(default = "default_timestamp_header")]
    pub(crate) timestamp: String,
    /// Nonce header.
    #[serde(default = "default_nonce_header")]
    pub(crate) nonce: String,
    /// Base64 signature header.
    #[serde(default = "default_signature_header")]
    pub(crate) signature: String,
}

fn default_key_header() -> String {
    "X-PG-Key".into()
}
fn default_timestamp_header() -> String {
    "X-PG-Timestamp".into()
}
fn default_nonce_header() -> String {
    "X-PG-Nonce".into()
}
fn default_signature_header() -> String {
    "X-PG-Signature".into()
}

impl Default for SignatureHeaderNames {
    fn default() -> Self {
        Self {
            key: default_key_header(),
            timestamp: default_timestamp_header(),
            nonce: default_nonce_header(),
            signature: default_signature_header(),
        }
    }
}

/// One access key and its active secrets (several during a rotation; any of them verifies).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConfig {
    /// Access key id, as sent in `X-PG-Key` (1–128 of `A-Z a-z 0-9 _ . : -`).
    pub id: String,
    /// Active secrets (`env:NAME`, `file:/path` or inline).
    pub secrets: Vec<SecretRef>,
}

/// `signature:` — client request signing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    /// Access keys.
    pub keys: Vec<AccessKeyConfig>,
    /// Allowed |now − timestamp|; nonces are kept for twice this.
    #[serde(default = "default_window", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub window: Duration,
    /// Header names.
    #[serde(default)]
    pub headers: SignatureHeaderNames,
    /// Bodies above this many bytes are rejected with 413 before hashing.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
}

fn default_window() -> Duration {
    DEFAULT_WINDOW
}
fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

impl SignatureConfig {
    /// Resolves secrets and validates; issues carry paths relative to this section.
    pub fn build(&self) -> Result<SignatureVerifier, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut keys: HashMap<String, Vec<PreparedSecret>> = HashMap::new();
        if self.keys.is_empty() {
            issues.push(ConfigIssue::new("keys", "at least one access key is required"));
        }
        for (i, k) in self.keys.iter().enumerate() {
            if !valid_key_id(&k.id) {
                issues.push(ConfigIssue::new(
                    format!("keys[{i}].id"),
                    "must be 1-128 characters of A-Z a-z 0-9 _ . : -",
                ));
            }
            if keys.contains_key(&k.id) {
                issues.push(ConfigIssue::new(
                    format!("keys[{i}].id"),
                    format!("duplicate access key id `{}`", k.id),
                ));
            }
            if k.secrets.is_empty() {
                issues.push(ConfigIssue::new(
                    format!("keys[{i}].secrets"),
                    "at least one secret is required",
                ));
            }
            let mut resolved = Vec::new();
            for (j, s) in k.secrets.iter().enumerate() {
                match s.resolve() {
                    Ok(v) => resolved.extend(PreparedSecret::new(&v)),
                    Err(e) => issues.push(ConfigIssue::new(format!("keys[{i}].secrets[{j}]"), e)),
                }
            }
            keys.insert(k.id.clone(), resolved);
        }
        if self.window.is_zero() {
            issues.push(ConfigIssue::new("window", "must be greater than zero"));
        }
        if self.max_body_bytes == 0 {
            issues.push(ConfigIssue::new("max_body_bytes", "must be greater than zero"));
        }
        let mut names = Vec::new();
        for (field, value) in [
            ("key", &self.headers.key),
            ("timestamp", &self.headers.timestamp),
            ("nonce", &self.headers.nonce),
            ("signature", &self.headers.signature),
        ] {
            match HeaderName::from_bytes(value.as_bytes()) {
                Ok(h) if names.contains(&h) => issues.push(ConfigIssue::new(
                    format!("headers.{field}"),
                    "header names must be distinct",
                )),
                Ok(h) => names.push(h),
                Err(_) => issues.push(ConfigIssue::new(format!("headers.{field}"), "not a valid header name")),
            }
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        let [key_h, ts_h, nonce_h, sig_h]: [HeaderName; 4] = match names.try_into() {
            Ok(a) => a,
            Err(_) => return Err(vec![ConfigIssue::new("headers", "invalid header names")]),
        };
        Ok(SignatureVerifier {
            keys,
            window: self.window,
            key_header: key_h,
            timestamp_header: ts_h,
            nonce_header: nonce_h,
            signature_header: sig_h,
            max_body_bytes: self.max_body_bytes,
        })
    }
}

/// The four signature headers of a request that passed the header checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// Known access key id.
    pub(crate) key_id: String,
    /// Timestamp text exactly as sent (it is signed as text).
    pub(crate) timestamp: String,
    /// Parsed timestamp, unix seconds.
    pub(crate) timestamp_unix: i64,
    /// Nonce (syntax checked).
    pub(crate) nonce: String,
    /// Presented signature (not yet checked).
    pub(crate) signature: String,
}

/// Resolved signature configuration: checks requests.
#[derive(Debug, Clone)]
pub struct SignatureVerifier {
    keys: HashMap<String, Vec<PreparedSecret>>,
    window: Duration,
    key_header: HeaderName,
    timestamp_header: HeaderName,
    nonce_header: HeaderName,
    signature_header: HeaderName,
    max_body_bytes: u64,
}

impl SignatureVerifier {
    /// Body cap in bytes; the proxy buffers at most this much, then answers 413.
    pub(crate) fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    /// The configured header names: key, timestamp, nonce, signature.
    pub fn header_names(&self) -> [&HeaderName; 4] {
        [
            &self.key_header,
            &self.timestamp_header,
            &self.nonce_header,
            &self.signature_header,
        ]
    }

    /// How long a nonce is kept: twice the window, so a request replayed at the far edge of the
    /// window is still caught.
    pub(crate) fn nonce_ttl(&self) -> Duration {
        self.window.saturating_mul(2)
    }

    /// Header-only checks, in the documented order: all four present exactly once → key known →
    /// nonce syntax → timestamp within the window of `now`.
    pub fn verify_headers(&self, headers: &HeaderMap, now: Timestamp) -> Result<SignedHeaders, SignatureFailure> {
        let key = single(headers, &self.key_header)?;
        let ts = single(headers, &self.timestamp_header)?;
        let nonce = single(headers, &self.nonce_header)?;
        let sig = single(headers, &self.signature_header)?;
        if !self.keys.contains_key(key) {
            return Err(SignatureFailure::UnknownKey);
        }
        if !valid_nonce(nonce) {
            return Err(SignatureFailure::MalformedNonce {
                header: self.nonce_header.to_string(),
            });
        }
        let ts_unix = parse_unix_seconds(ts).ok_or_else(|| SignatureFailure::MalformedTimestamp {
            header: self.timestamp_header.to_string(),
        })?;
        let skew = now.as_second().saturating_sub(ts_unix);
        let window = self.window.as_secs();
        if skew.unsigned_abs() > window {
            return Err(SignatureFailure::TimestampOutOfWindow {
                skew_seconds: skew,
                window_seconds: window,
            });
        }
        Ok(SignedHeaders {
            key_id: key.to_string(),
            timestamp: ts.to_string(),
            timestamp_unix: ts_unix,
            nonce: nonce.to_string(),
            signature: sig.to_string(),
        })
    }

    /// The HMAC check over the string to sign of the canonical request (`path` and
    /// `canonical_query` as [`crate::canonical`] computes them). Every active secret of the key
    /// is tried, without stopping at the first match, and compared in constant time. A signature
    /// that is not valid base64 is a mismatch.
    pub fn verify_body(
        &self,
        signed: &SignedHeaders,
        method: &str,
        path: &str,
        canonical_query: &str,
        body: &[u8],
    ) -> Result<(), SignatureFailure> {
        if body.len() as u64 > self.max_body_bytes {
            return Err(SignatureFailure::BodyTooLarge {
                limit: self.max_body_bytes,
            });
        }
        if self.matches(signed, method, path, canonical_query, body)? {
            Ok(())
        } else {
            Err(SignatureFailure::SignatureMismatch { hint: None })
        }
    }

    /// After [`Self::verify_body`] failed: which non-canonical spelling of the request the
    /// signature matches, if any — the path or query as sent, or a query with `+` read as a
    /// plus — so the client learns what to fix. Costs a few HMACs, on failures only.
    pub(crate) fn explain_mismatch(
        &self,
        signed: &SignedHeaders,
        method: &str,
        sent: (&str, Option<&str>),
        canonical: (&str, &str),
        body: &[u8],
    ) -> Option<MismatchHint> {
        let (raw_path, raw_query) = sent;
        let (path, query) = canonical;
        let raw_query = raw_query.unwrap_or("");
        let plus_as_plus = raw_query
            .contains('+')
            .then(|| canonical_query(&raw_query.replace('+', "%2B")).ok())
            .flatten();
        let candidates = [
            (raw_path != path).then_some((raw_path, query, MismatchHint::RawPath)),
            (raw_query != query).then_some((path, raw_query, MismatchHint::RawQuery)),
            plus_as_plus.as_deref().map(|q| (path, q, MismatchHint::PlusAsPlus)),
        ];
        for (p, q, hint) in candidates.into_iter().flatten() {
            if self.matches(signed, method, p, q, body).unwrap_or(false) {
                return Some(hint);
            }
        }
        None
    }

    fn matches(
        &self,
        signed: &SignedHeaders,
        method: &str,
        path: &str,
        canonical_query: &str,
        body: &[u8],
    ) -> Result<bool, SignatureFailure> {
        let secrets = self.keys.get(&signed.key_id).ok_or(SignatureFailure::UnknownKey)?;
        let mut presented = [0u8; 64];
        let Ok(len) =
            base64::engine::general_purpose::STANDARD.decode_slice(signed.signature.as_bytes(), &mut presented)
        else {
            return Ok(false);
        };
        let upper;
        let method = if method.bytes().any(|b| b.is_ascii_lowercase()) {
            upper = method.to_ascii_uppercase();
            upper.as_str()
        } else {
            method
        };
        let mut body_hash = [0u8; 64];
        if hex::encode_to_slice(Sha256::digest(body), &mut body_hash).is_err() {
            return Ok(false);
        }
        let lines: [&[u8]; 7] = [
            ALGORITHM.as_bytes(),
            method.as_bytes(),
            path.as_bytes(),
            canonical_query.as_bytes(),
            signed.timestamp.as_bytes(),
            signed.nonce.as_bytes(),
            &body_hash,
        ];
        let mut ok = subtle::Choice::from(0u8);
        for secret in secrets {
            ok |= secret.mac(&lines)[..].ct_eq(&presented[..len]);
        }
        Ok(bool::from(ok))
    }
}

/// A fresh random nonce for clients (`payguard sign`, the demo): 32 characters of
/// `[A-Za-z0-9_-]` (24 random bytes, base64url without padding).
pub fn new_nonce() -> String {
    use rand::Rng;
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Store key of a nonce: `nonce:<key id>:<nonce>`. Unambiguous because nonces cannot contain `:`;
/// contains no `{`/`}` so the store may add its own hash tag.
pub(crate) fn nonce_key(key_id: &str, nonce: &str) -> String {
    format!("nonce:{key_id}:{nonce}")
}

fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<&'h str, SignatureFailure> {
    let mut values = headers.get_all(name).iter();
    let v = values.next().ok_or_else(|| SignatureFailure::MissingHeader {
        header: name.to_string(),
    })?;
    if values.next().is_some() {
        return Err(SignatureFailure::DuplicateHeader {
            header: name.to_string(),
        });
    }
    let s = v.to_str().map_err(|_| SignatureFailure::MalformedHeader {
        header: name.to_string(),
    })?;
    if s.is_empty() {
        return Err(SignatureFailure::MissingHeader {
            header: name.to_string(),
        });
    }
    Ok(s)
}

/// Nonce syntax: 16–64 characters of `[A-Za-z0-9_-]`.
pub(crate) fn valid_nonce(n: &str) -> bool {
    (16..=64).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_unix_seconds(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "pg-test-secret-0001";
    const NONCE: &str = "n0nce-0123456789abcdef";

    fn verifier() -> SignatureVerifier {
        SignatureConfig {
            keys: vec![
                AccessKeyConfig {
                    id: "shop-app".into(),
                    secrets: vec![SecretRef::new("old-secret"), SecretRef::new(SECRET)],
                },
                AccessKeyConfig {
                    id: "partner".into(),
                    secrets: vec![SecretRef::new("partner-secret")],
                },
            ],
            window: DEFAULT_WINDOW,
            headers: SignatureHeaderNames::default(),
            max_body_bytes: 4096,
        }
        .build()
        .unwrap()
    }

    fn headers(key: &str, ts: &str, nonce: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-pg-key", key.parse().unwrap());
        h.insert("x-pg-timestamp", ts.parse().unwrap());
        h.insert("x-pg-nonce", nonce.parse().unwrap());
        h.insert("x-pg-signature", sig.parse().unwrap());
        h
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn canonical_query_is_the_one_of_the_canonical_module() {
        assert_eq!(canonical_query("b=2&a=3&a=1").unwrap(), "a=1&a=3&b=2");
        assert_eq!(canonical_query("q=a+b&r=%2b").unwrap(), "q=a%20b&r=%2B");
        assert!(canonical_query("a=%zz").is_err());
    }

    #[test]
    fn string_to_sign_has_exact_seven_lines() {
        let s = string_to_sign("post", "/v1/orders", "a=1", "1700000000", NONCE, b"");
        assert_eq!(
            s,
            "PG-HMAC-SHA256\nPOST\n/v1/orders\na=1\n1700000000\nn0nce-0123456789abcdef\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    // Expected signature computed independently with Python 3:
    //   sts = "\n".join(["PG-HMAC-SHA256","POST","/v1/orders","a=1&b=%2B&b=x%20y",
    //                    "1700000000","n0nce-0123456789abcdef",hashlib.sha256(body).hexdigest()])
    //   base64.b64encode(hmac.new(b"pg-test-secret-0001", sts.encode(), hashlib.sha256).digest())
    const VECTOR_BODY: &[u8] = br#"{"sku":"A-1","qty":2}"#;
    const VECTOR_SIG: &str = "exzPTcsp705i/WUr23/wBfbnPnLu6QQSnprUCdXf56Y=";

    #[test]
    fn full_request_vector_matches_independent_python_hmac() {
        let sig = sign_request(
            SECRET.as_bytes(),
            "POST",
            "/v1/orders",
            Some("b=%2B&a=1&b=x%20y"),
            "1700000000",
            NONCE,
            VECTOR_BODY,
        )
        .unwrap();
        assert_eq!(sig, VECTOR_SIG);
        let v = verifier();
        let h = headers("shop-app", "1700000000", NONCE, VECTOR_SIG);
        let signed = v.verify_headers(&h, at(1_700_000_010)).unwrap();
        v.verify_body(&signed, "POST", "/v1/orders", "a=1&b=%2B&b=x%20y", VECTOR_BODY)
            .unwrap();
    }

    fn signed_headers(secret: &str, ts: i64) -> (HeaderMap, String) {
        let sig = sign_request(
            secret.as_bytes(),
            "POST",
            "/v1/orders",
            None,
            &ts.to_string(),
            NONCE,
            b"{}",
        )
        .unwrap();
        (headers("shop-app", &ts.to_string(), NONCE, &sig), sig)
    }

    #[test]
    fn rotated_secret_and_current_secret_both_verify() {
        let v = verifier();
        for secret in ["old-secret", SECRET] {
            let (h, _) = signed_headers(secret, 1_700_000_000);
            let s = v.verify_headers(&h, at(1_700_000_000)).unwrap();
            assert_eq!(v.verify_body(&s, "POST", "/v1/orders", "", b"{}"), Ok(()));
        }
    }

    #[test]
    fn secret_of_another_key_is_a_mismatch() {
        let v = verifier();
        let (h, _) = signed_headers("partner-secret", 1_700_000_000);
        let s = v.verify_headers(&h, at(1_700_000_000)).unwrap();
        let e = v.verify_body(&s, "POST", "/v1/orders", "", b"{}").unwrap_err();
        assert_eq!(
            (e.code(), e.status(), e.reason()),
            ("SIGNATURE_MISMATCH", 401, "signature_mismatch")
        );
    }

    #[test]
    fn tampered_body_path_or_query_is_a_mismatch() {
        let v = verifier();
        let (h, _) = signed_headers(SECRET, 1_700_000_000);
        let s = v.verify_headers(&h, at(1_700_000_000)).unwrap();
        assert!(v.verify_body(&s, "POST", "/v1/orders", "", b"{ }").is_err());
        assert!(v.verify_body(&s, "POST", "/v1/orders/", "", b"{}").is_err());
        assert!(v.verify_body(&s, "POST", "/v1/orders", "x=1", b"{}").is_err());
        assert!(v.verify_body(&s, "PUT", "/v1/orders", "", b"{}").is_err());
    }

    #[test]
    fn bad_base64_signature_is_a_mismatch() {
        let v = verifier();
        let h = headers("shop-app", "1700000000", NONCE, "not*base64");
        let s = v.verify_headers(&h, at(1_700_000_000)).unwrap();
        assert_eq!(
            v.verify_body(&s, "POST", "/", "", b""),
            Err(SignatureFailure::SignatureMismatch { hint: None })
        );
    }

    #[test]
    fn a_mismatch_says_which_spelling_the_client_signed() {
        let v = verifier();
        let sign = |path: &str, query: &str| {
            let sig = sign(
                SECRET.as_bytes(),
                &string_to_sign("POST", path, query, "1700000000", NONCE, b"{}"),
            );
            let h = headers("shop-app", "1700000000", NONCE, &sig);
            v.verify_headers(&h, at(1_700_000_000)).unwrap()
        };
        let explain = |s: &SignedHeaders, raw: (&str, Option<&str>), canonical: (&str, &str)| {
            assert!(v.verify_body(s, "POST", canonical.0, canonical.1, b"{}").is_err());
            v.explain_mismatch(s, "POST", raw, canonical, b"{}")
        };
        // Signed `//v1/orders` as sent; payguard forwards and checks `/v1/orders`.
        let s = sign("//v1/orders", "");
        assert_eq!(
            explain(&s, ("//v1/orders", None), ("/v1/orders", "")),
            Some(MismatchHint::RawPath)
        );
        // Signed the raw query text.
        let s = sign("/v1/orders", "b=2&a=1");
        assert_eq!(
            explain(&s, ("/v1/orders", Some("b=2&a=1")), ("/v1/orders", "a=1&b=2")),
            Some(MismatchHint::RawQuery)
        );
        // Signed `+` as a plus (%2B), the reading of earlier clients.
        let s = sign("/v1/orders", "q=a%2Bb");
        assert_eq!(
            explain(&s, ("/v1/orders", Some("q=a+b")), ("/v1/orders", "q=a%20b")),
            Some(MismatchHint::PlusAsPlus)
        );
        let e = SignatureFailure::SignatureMismatch {
            hint: Some(MismatchHint::PlusAsPlus),
        };
        assert!(e.to_string().contains("`+` in a query is a space"), "{e}");
        // A wrong secret matches no spelling.
        let s = sign("/other", "");
        assert_eq!(
            explain(&s, ("//v1/orders", Some("q=a+b")), ("/v1/orders", "q=a%20b")),
            None
        );
    }

    #[test]
    fn missing_header_is_missing_credentials() {
        let v = verifier();
        for name in ["x-pg-key", "x-pg-timestamp", "x-pg-nonce", "x-pg-signature"] {
            let (mut h, _) = signed_headers(SECRET, 1_700_000_000);
            h.remove(name);
            let e = v.verify_headers(&h, at(1_700_000_000)).unwrap_err();
            assert_eq!(
                (e.code(), e.status(), e.reason()),
                ("MISSING_CREDENTIALS", 401, "missing_header"),
                "{name}"
            );
        }
    }

    #[test]
    fn duplicate_header_is_rejected_with_clear_detail() {
        let v = verifier();
        let (mut h, _) = signed_headers(SECRET, 1_700_000_000);
        h.append("x-pg-nonce", "another-nonce-1234567".parse().unwrap());
        let e = v.verify_headers(&h, at(1_700_000_000)).unwrap_err();
        assert_eq!(e.code(), "MISSING_CREDENTIALS");
        assert_eq!(e.reason(), "duplicate_header");
        assert_eq!(e.to_string(), "header x-pg-nonce must appear exactly once");
    }

    #[test]
    fn unknown_key_is_rejected_without_echoing_it() {
        let v = verifier();
        let h = headers("who-is-this", "1700000000", NONCE, "AAAA");
        let e = v.verify_headers(&h, at(1_700_000_000)).unwrap_err();
        assert_eq!((e.code(), e.status()), ("UNKNOWN_KEY", 401));
        assert!(!e.to_string().contains("who-is-this"));
    }

    #[test]
    fn nonce_syntax_is_checked() {
        let v = verifier();
        for bad in [
            "short",
            "has space 0123456789",
            "x".repeat(65).as_str(),
            "ünicode-0123456789",
        ] {
            let h = headers("shop-app", "1700000000", "placeholder-nonce-1", "AAAA");
            let mut h = h;
            match bad.parse() {
                Ok(val) => {
                    h.insert("x-pg-nonce", val);
                }
                Err(_) => continue,
            }
            let e = v.verify_headers(&h, at(1_700_000_000)).unwrap_err();
            assert!(
                matches!(e.reason(), "malformed_nonce" | "malformed_header"),
                "{bad}: {e}"
            );
            assert_eq!(e.code(), "MISSING_CREDENTIALS");
        }
        assert!(valid_nonce(&"a".repeat(16)) && valid_nonce(&"Z_-9".repeat(16)));
    }

    #[test]
    fn timestamp_window_edges_with_pinned_clock() {
        use crate::clock::{Clock, ManualClock};
        let v = verifier();
        let ts = 1_700_000_000;
        let h = headers("shop-app", &ts.to_string(), NONCE, "AAAA");
        let clock = ManualClock::at_unix(ts + 300);
        assert!(v.verify_headers(&h, clock.now()).is_ok());
        // 300.999 s is still inside: whole seconds are compared.
        clock.advance_millis(999);
        assert!(v.verify_headers(&h, clock.now()).is_ok());
        assert!(v.verify_headers(&h, at(ts - 300)).is_ok());
        clock.advance_millis(1);
        let late = v.verify_headers(&h, clock.now()).unwrap_err();
        assert_eq!(
            late,
            SignatureFailure::TimestampOutOfWindow {
                skew_seconds: 301,
                window_seconds: 300
            }
        );
        assert_eq!((late.code(), late.status()), ("TIMESTAMP_OUT_OF_WINDOW", 401));
        let early = v.verify_headers(&h, at(ts - 301)).unwrap_err();
        assert_eq!(early.reason(), "timestamp_out_of_window");
    }

    #[test]
    fn non_decimal_timestamp_is_out_of_window() {
        let v = verifier();
        for ts in [
            "-1700000000",
            "1700000000.5",
            "+1700000000",
            "0x10",
            "99999999999999999999",
        ] {
            let h = headers("shop-app", ts, NONCE, "AAAA");
            let e = v.verify_headers(&h, at(1_700_000_000)).unwrap_err();
            assert_eq!(
                (e.code(), e.reason()),
                ("TIMESTAMP_OUT_OF_WINDOW", "malformed_timestamp"),
                "{ts}"
            );
        }
    }

    #[test]
    fn body_over_cap_is_413() {
        let v = verifier();
        let (h, _) = signed_headers(SECRET, 1_700_000_000);
        let s = v.verify_headers(&h, at(1_700_000_000)).unwrap();
        let e = v.verify_body(&s, "POST", "/v1/orders", "", &[b'x'; 4097]).unwrap_err();
        assert_eq!((e.code(), e.status()), ("BODY_TOO_LARGE", 413));
    }

    #[test]
    fn failures_never_contain_secrets_or_expected_signature() {
        let v = verifier();
        let (h, good_sig) = signed_headers(SECRET, 1_700_000_000);
        let s = v.verify_headers(&h, at(1_700_000_000)).unwrap();
        let e = v.verify_body(&s, "POST", "/v1/orders", "", b"tampered").unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains(SECRET) && !text.contains(&good_sig));
        assert!(!format!("{v:?}").contains(SECRET));
    }

    #[test]
    fn renamed_headers_are_used() {
        let cfg = SignatureConfig {
            keys: vec![AccessKeyConfig {
                id: "k".into(),
                secrets: vec![SecretRef::new("s")],
            }],
            window: DEFAULT_WINDOW,
            headers: SignatureHeaderNames {
                key: "X-Ca-Key".into(),
                ..Default::default()
            },
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        };
        let v = cfg.build().unwrap();
        let mut h = headers("k", "1700000000", NONCE, "AAAA");
        h.remove("x-pg-key");
        h.insert("x-ca-key", "k".parse().unwrap());
        assert!(v.verify_headers(&h, at(1_700_000_000)).is_ok());
    }

    #[test]
    fn build_reports_every_issue_with_its_path() {
        let cfg = SignatureConfig {
            keys: vec![
                AccessKeyConfig {
                    id: "a b".into(),
                    secrets: vec![],
                },
                AccessKeyConfig {
                    id: "k".into(),
                    secrets: vec![SecretRef::new("env:PG_GUARD_TEST_UNSET_VAR")],
                },
                AccessKeyConfig {
                    id: "k".into(),
                    secrets: vec![SecretRef::new("x")],
                },
            ],
            window: Duration::ZERO,
            headers: SignatureHeaderNames {
                nonce: "X-PG-Key".into(),
                ..Default::default()
            },
            max_body_bytes: 0,
        };
        let paths: Vec<String> = cfg.build().unwrap_err().into_iter().map(|i| i.path).collect();
        for p in [
            "keys[0].id",
            "keys[0].secrets",
            "keys[1].secrets[0]",
            "keys[2].id",
            "window",
            "max_body_bytes",
            "headers.nonce",
        ] {
            assert!(paths.iter().any(|x| x == p), "{p} not in {paths:?}");
        }
    }

    #[test]
    fn yaml_shape_with_defaults() {
        let cfg: SignatureConfig =
            serde_yaml_ng::from_str("keys:\n  - id: shop-app\n    secrets: [\"env:X\"]\n").unwrap();
        assert_eq!(cfg.window, DEFAULT_WINDOW);
        assert_eq!(cfg.headers, SignatureHeaderNames::default());
        assert_eq!(cfg.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        let cfg: SignatureConfig =
            serde_yaml_ng::from_str("keys: []\nwindow: 5m\nheaders: {signature: X-Sig}\nmax_body_bytes: 10").unwrap();
        assert_eq!(cfg.window, Duration::from_secs(300));
        assert_eq!(cfg.headers.signature, "X-Sig");
        assert!(serde_yaml_ng::from_str::<SignatureConfig>("keys: []\nbogus: 1").is_err());
    }

    #[test]
    fn generated_nonces_are_valid_and_distinct() {
        let (a, b) = (new_nonce(), new_nonce());
        assert!(valid_nonce(&a) && valid_nonce(&b) && a != b);
        assert_eq!(verifier().header_names()[3].as_str(), "x-pg-signature");
    }

    #[test]
    fn nonce_key_and_ttl() {
        assert_eq!(nonce_key("shop-app", NONCE), "nonce:shop-app:n0nce-0123456789abcdef");
        assert_eq!(verifier().nonce_ttl(), Duration::from_secs(600));
    }

    proptest::proptest! {
        #[test]
        fn canonical_query_is_idempotent_and_never_panics(raw in "[a-zA-Z0-9%&=+ ~._\\-\\x{e9}\\x{4f60}]{0,40}") {
            if let Ok(c) = canonical_query(&raw) {
                proptest::prop_assert_eq!(canonical_query(&c).unwrap(), c);
            }
        }
    }
}
