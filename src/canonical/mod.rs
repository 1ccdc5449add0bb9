//! The canonical form of a client request: method, path, query, header names and identity fields
//! as payguard reads them. It is computed once per request, before routing, and the same form is
//! used by route matching, rule matching, the signature's string to sign, the access log and the
//! request sent to the backend — what payguard checked is exactly what the backend serves.
//!
//! Anything two HTTP stacks could read differently is either rewritten into one spelling (percent
//! escapes of unreserved characters, hex case, repeated slashes, dot segments) or refused with a
//! [`Refusal`] (400 problem+json), never guessed. The rules, with a table of inputs, are in
//! docs/configuration.md ("Route matching and path normalization").
//!
//! Pure functions over bytes: no I/O, no proxy types. The proxy calls [`check_method`] and
//! [`path::canonicalize`] on the request head, [`headers::screen`] on its header names, and the
//! guard reads the query through [`query::CanonicalQuery`] and JSON identities through
//! [`json`].

pub mod headers;
pub mod json;
pub mod path;
pub mod query;

use crate::problem::Problem;

/// How request heads are canonicalized: `server.path`, `server.header_underscores`, and the
/// headers payguard reads itself (which a `_` spelling must not shadow for the backend).
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestPolicy {
    /// Path relaxations.
    pub(crate) path: path::PathPolicy,
    /// Header names with `_`.
    pub(crate) header_underscores: headers::UnderscorePolicy,
    /// Headers payguard reads (signature headers, `header:` identities, `X-Forwarded-For`).
    pub(crate) read_headers: Vec<http::HeaderName>,
}

/// Every [`Refusal::reason`] (metric label values), so metrics can show each at 0 from the start.
pub const REFUSAL_REASONS: &[&str] = &[
    "method_not_upper_case",
    "path_not_origin_form",
    "path_control_character",
    "path_backslash",
    "path_invalid_escape",
    "path_encoded_slash",
    "path_double_encoding",
    "path_parameter",
    "path_invalid_utf8",
    "query_invalid_escape",
    "header_underscore",
];

/// Why a request was refused before it reached any route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The method is not an upper-case token.
    #[error("{0}")]
    Method(#[from] MethodRefusal),
    /// The path has a form two parsers could read differently.
    #[error("{0}")]
    Path(#[from] path::PathRefusal),
    /// The query cannot be read unambiguously.
    #[error("{0}")]
    Query(#[from] query::QueryRefusal),
    /// A header name is refused by `server.header_underscores: reject`.
    #[error("{0}")]
    Header(#[from] headers::HeaderRefusal),
}

impl Refusal {
    /// Stable problem code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Method(_) => "NON_CANONICAL_METHOD",
            Self::Path(_) => "NON_CANONICAL_PATH",
            Self::Query(_) => "NON_CANONICAL_QUERY",
            Self::Header(_) => "AMBIGUOUS_HEADER",
        }
    }

    /// Metric label (`payguard_request_canonicalization_total{reason}`), a fixed enum.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Method(_) => "method_not_upper_case",
            Self::Path(p) => p.reason(),
            Self::Query(q) => q.reason(),
            Self::Header(_) => "header_underscore",
        }
    }
}

impl From<&Refusal> for Problem {
    fn from(r: &Refusal) -> Self {
        Problem::new(400, r.code(), r.to_string())
    }
}

/// A method that is not an upper-case token (RFC 9110 §9.1: methods are case-sensitive).
/// Frameworks disagree on `post`: Werkzeug upper-cases it and runs the POST handler, Go's router
/// treats it as an unknown method. payguard refuses it rather than guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the method must be an upper-case token such as POST (methods are case-sensitive)")]
pub struct MethodRefusal;

/// Accepts upper-case tokens only (`GET`, `POST`, `M-SEARCH`).
pub fn check_method(method: &str) -> Result<(), MethodRefusal> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !method.is_empty() && method.bytes().all(|b| tchar(b) && !b.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(MethodRefusal)
    }
}

/// Whether a route or rule listing `allowed` methods takes `method`. An empty list takes every
/// method; a list naming `GET` also takes `HEAD`, because backends route HEAD to their GET
/// handlers (Go, Express, Flask, Spring do).
pub(crate) fn method_listed<S: AsRef<str>>(allowed: &[S], method: &str) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|m| m.as_ref() == method || (method == "HEAD" && m.as_ref() == "GET"))
}

/// RFC 3986 §2.3 unreserved characters.
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The value of one hex digit.
pub(crate) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte encoded by `%XY` at the start of `bytes` (which begins with the `%`).
pub(crate) fn escape_at(bytes: &[u8]) -> Option<u8> {
    let hi = bytes.get(1).and_then(|b| hex_val(*b))?;
    let lo = bytes.get(2).and_then(|b| hex_val(*b))?;
    Some(hi * 16 + lo)
}

/// Appends `%XY` with upper-case hex.
pub(crate) fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0x0f)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_must_be_upper_case_tokens() {
        for ok in ["GET", "POST", "M-SEARCH", "PROPFIND"] {
            assert_eq!(check_method(ok), Ok(()), "{ok}");
        }
        for bad in ["post", "Post", "", "GE T", "GET\u{e9}"] {
            assert_eq!(check_method(bad), Err(MethodRefusal), "{bad:?}");
        }
    }

    #[test]
    fn every_refusal_reason_is_listed() {
        use path::PathRefusal as P;
        let all: Vec<Refusal> = vec![
            MethodRefusal.into(),
            P::NotOriginForm.into(),
            P::ControlCharacter { offset: 0, byte: 0 }.into(),
            P::Backslash { offset: 0 }.into(),
            P::InvalidEscape { offset: 0 }.into(),
            P::EncodedSlash {
                offset: 0,
                escape: String::new(),
            }
            .into(),
            P::DoubleEncoding { offset: 0 }.into(),
            P::PathParameter { offset: 0 }.into(),
            P::DotSegmentParameter { offset: 0 }.into(),
            P::InvalidUtf8.into(),
            query::QueryRefusal::InvalidEscape { offset: 0 }.into(),
            headers::HeaderRefusal(String::new()).into(),
        ];
        for r in &all {
            assert!(REFUSAL_REASONS.contains(&r.reason()), "{}", r.reason());
        }
    }

    #[test]
    fn a_get_listing_takes_head_as_backends_do() {
        assert!(method_listed(&["GET"], "HEAD"));
        assert!(method_listed(&["GET"], "GET"));
        assert!(!method_listed(&["POST"], "HEAD"));
        assert!(!method_listed(&["HEAD"], "GET"));
        assert!(method_listed::<&str>(&[], "DELETE"));
    }
}
