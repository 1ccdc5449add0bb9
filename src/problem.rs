//! `application/problem+json` (RFC 9457) answers payguard makes itself, with a stable `code`.
//! One type for the guard's rejections and the proxy's own errors.

use http::{HeaderName, HeaderValue, StatusCode};

/// Content type of every problem body payguard writes.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// A client-side rejection (`application/problem+json`, see docs/client-signing.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// HTTP status.
    pub(crate) status: u16,
    /// Stable machine-readable code (`RATE_LIMITED`, ...).
    pub(crate) code: &'static str,
    /// Short summary: the status's reason phrase.
    pub(crate) title: &'static str,
    /// Human-readable explanation; never contains secrets or expected signatures.
    pub(crate) detail: String,
    /// The rule that fired (config name or a fixed name such as `nonce`).
    pub(crate) rule: Option<String>,
    /// Extra response headers (`Retry-After`, `RateLimit-Policy`, `X-PG-Challenge`, ...).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem with the status's reason phrase as title.
    pub(crate) fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Self {
        let title = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        Self {
            status,
            code,
            title,
            detail: detail.into(),
            rule: None,
            headers: Vec::new(),
        }
    }

    /// Names the rule that fired.
    pub(crate) fn with_rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    /// Adds a response header (values that are not valid header text are dropped).
    pub(crate) fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// The JSON body: `{"type","title","status","code","detail","rule"}`.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        self.to_json_with_request_id(None)
    }

    /// The JSON body, naming the request id for support when given.
    pub(crate) fn to_json_with_request_id(&self, request_id: Option<&str>) -> Vec<u8> {
        let mut body = serde_json::json!({
            "type": format!("urn:payguard:problem:{}", self.code.to_ascii_lowercase().replace('_', "-")),
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        });
        if let (Some(rule), Some(obj)) = (&self.rule, body.as_object_mut()) {
            obj.insert("rule".into(), serde_json::Value::String(rule.clone()));
        }
        if let (Some(id), Some(obj)) = (request_id, body.as_object_mut()) {
            obj.insert("request_id".into(), serde_json::Value::String(id.to_string()));
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl Problem {
    /// 404 for requests no route takes when the default action is `not_found`.
    pub(crate) fn not_found() -> Self {
        Self::new(404, "NOT_FOUND", "no route matches this request")
    }

    /// 502 when the backend cannot be reached.
    pub(crate) fn upstream_unavailable() -> Self {
        Self::new(502, "UPSTREAM_UNAVAILABLE", "the backend could not be reached")
    }

    /// 408 when the client stalled or trickled its request body (`server.body`).
    pub(crate) fn request_timeout() -> Self {
        Self::new(408, "REQUEST_TIMEOUT", "the request body arrived too slowly")
    }

    /// 504 when the backend did not answer in time.
    pub(crate) fn upstream_timeout() -> Self {
        Self::new(504, "UPSTREAM_TIMEOUT", "the backend did not answer in time")
    }
}
