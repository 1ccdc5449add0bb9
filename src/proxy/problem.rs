//! `application/problem+json` (RFC 9457) answers payguard makes itself, with a stable `code`.

use serde::Serialize;

/// A problem answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `urn:payguard:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, fixed human summary.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// Stable machine code (product.md §5).
    pub code: &'static str,
    /// Details for this occurrence; never a secret or an expected signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Name of the rule that fired, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The request id, for support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Problem {
    /// A problem with `status`, `code` and `title`.
    pub fn new(status: u16, code: &'static str, title: &'static str) -> Self {
        Self {
            kind: format!("urn:payguard:problem:{}", code.to_ascii_lowercase().replace('_', "-")),
            title,
            status,
            code,
            detail: None,
            rule: None,
            request_id: None,
        }
    }

    /// Adds a detail text.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Names the rule that fired.
    pub fn rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// 404 for requests no route takes when the default action is `not_found`.
    pub fn not_found() -> Self {
        Self::new(404, "NOT_FOUND", "No route matches this request")
    }

    /// 502 when the backend cannot be reached.
    pub fn upstream_unavailable() -> Self {
        Self::new(502, "UPSTREAM_UNAVAILABLE", "The backend could not be reached")
    }

    /// 504 when the backend did not answer in time.
    pub fn upstream_timeout() -> Self {
        Self::new(504, "UPSTREAM_TIMEOUT", "The backend did not answer in time")
    }
}

/// Content type of problem answers.
pub const PROBLEM_JSON: &str = "application/problem+json";
