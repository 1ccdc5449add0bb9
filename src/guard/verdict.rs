//! What the guard decided: forward (with extra headers) or answer with a problem (RFC 9457),
//! plus one record per rule for metrics and logs.

use std::sync::Arc;

use super::signature::SignatureFailure;
use super::Mode;

use http::{HeaderName, HeaderValue};

pub use crate::problem::Problem;

impl From<&SignatureFailure> for Problem {
    fn from(f: &SignatureFailure) -> Self {
        Problem::new(f.status(), f.code(), f.to_string()).with_rule("signature")
    }
}

/// Which family a decision record belongs to (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleKind {
    /// Static or dynamic IP rules.
    Ip,
    /// The per-process pre-limiter.
    LocalPrelimit,
    /// Signature and nonce checks.
    Signature,
    /// A rate rule.
    Rate,
    /// An order rule.
    Order,
}

impl RuleKind {
    /// Metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::LocalPrelimit => "local_prelimit",
            Self::Signature => "signature",
            Self::Rate => "rate",
            Self::Order => "order",
        }
    }
}

/// What one rule decided (a metric label; in shadow mode, what it would have done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Within limits.
    Allow,
    /// Over the limit / denied.
    Reject,
    /// An order tier asks for a challenge.
    Challenge,
    /// An order tier tags the request.
    Tag,
    /// The identity the rule keys on was absent and `on_missing_key: reject`.
    MissingKey,
    /// The identity was absent and `on_missing_key: skip`.
    Skipped,
    /// The identity was sent in a form decoders read differently.
    Ambiguous,
    /// The store failed and the rule's policy let the request through.
    StoreErrorAllow,
    /// The store failed and the rule's policy refused the request.
    StoreErrorDeny,
}

impl Decision {
    /// Metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Reject => "reject",
            Self::Challenge => "challenge",
            Self::Tag => "tag",
            Self::MissingKey => "missing_key",
            Self::Skipped => "skipped",
            Self::Ambiguous => "ambiguous",
            Self::StoreErrorAllow => "store_error_allow",
            Self::StoreErrorDeny => "store_error_deny",
        }
    }
}

/// One rule's decision, for `payguard_rule_decisions_total{kind,rule,decision,mode}` and logs.
/// Every field comes from config names or fixed enums (bounded cardinality).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleDecision {
    /// Rule family.
    pub(crate) kind: RuleKind,
    /// Rule name from config, or a fixed name (`nonce`, `dynamic_deny`, `ip_deny`, ...).
    pub(crate) rule: Arc<str>,
    /// What it decided.
    pub(crate) decision: Decision,
    /// Enforce or shadow.
    pub(crate) mode: Mode,
}

impl RuleDecision {
    /// A decision record.
    pub(crate) fn new(kind: RuleKind, rule: impl Into<Arc<str>>, decision: Decision, mode: Mode) -> Self {
        Self {
            kind,
            rule: rule.into(),
            decision,
            mode,
        }
    }
}

/// What to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Forward upstream.
    Allow {
        /// Headers to add to the upstream request (`X-PG-Risk`).
        extra_request_headers: Vec<(HeaderName, HeaderValue)>,
        /// Headers to add to the response to the client (`RateLimit-Policy`, `RateLimit`).
        response_headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// Answer the client with this problem; do not forward.
    Reject(Problem),
}

/// The guard's verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Forward or reject.
    pub(crate) action: Action,
    /// Every rule decision made on the way (shadow ones included).
    pub(crate) decisions: Vec<RuleDecision>,
}

impl Verdict {
    /// Forward without extra headers.
    pub(crate) fn allow(decisions: Vec<RuleDecision>) -> Self {
        Self {
            action: Action::Allow {
                extra_request_headers: Vec::new(),
                response_headers: Vec::new(),
            },
            decisions,
        }
    }

    /// Reject with `problem`.
    pub(crate) fn reject(problem: Problem, decisions: Vec<RuleDecision>) -> Self {
        Self {
            action: Action::Reject(problem),
            decisions,
        }
    }

    /// The problem, when rejected.
    #[cfg(test)]
    pub(crate) fn problem(&self) -> Option<&Problem> {
        match &self.action {
            Action::Reject(p) => Some(p),
            Action::Allow { .. } => None,
        }
    }

    /// Whether the request is forwarded.
    #[cfg(test)]
    pub(crate) fn is_allow(&self) -> bool {
        matches!(self.action, Action::Allow { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_json_names_code_status_and_rule() {
        let p = Problem::new(429, "RATE_LIMITED", "slow down").with_rule("orders-per-ip");
        let v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["title"], "Too Many Requests");
        assert_eq!(v["status"], 429);
        assert_eq!(v["code"], "RATE_LIMITED");
        assert_eq!(v["rule"], "orders-per-ip");
        assert_eq!(v["detail"], "slow down");
    }

    #[test]
    fn signature_failure_maps_to_its_status_and_code() {
        let p = Problem::from(&SignatureFailure::BodyTooLarge { limit: 10 });
        assert_eq!(
            (p.status, p.code, p.title),
            (413, "BODY_TOO_LARGE", "Payload Too Large")
        );
        let p = Problem::from(&SignatureFailure::UnknownKey);
        assert_eq!((p.status, p.code, p.title), (401, "UNKNOWN_KEY", "Unauthorized"));
    }
}
