//! Request header names payguard never forwards as a client sent them.
//!
//! - Headers payguard asserts to the backend (`X-PG-Verified`, `X-PG-Event-Id`, `X-PG-Risk`):
//!   a backend that trusts them must not be reachable with forged ones.
//! - Headers that make a backend run another method or route than the request line says
//!   (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`, `X-Original-URL`,
//!   `X-Rewrite-URL`): the route payguard checked would not be the handler that runs.
//! - Names with `_`: CGI-style servers (WSGI, PHP-FPM, Rack) turn `X_PG_Verified` and
//!   `X-PG-Verified` into the same variable. By default every such header is dropped, as nginx
//!   does (`underscores_in_headers off`); `server.header_underscores` can refuse them instead, or
//!   keep them except where they would fold onto a header payguard asserts or reads.

use http::{HeaderMap, HeaderName};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Headers only payguard may set on requests to the backend.
pub(crate) const ASSERTED: &[&str] = &["x-pg-verified", "x-pg-event-id", "x-pg-risk"];

/// Method and URL override headers.
pub(crate) const OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// `server.header_underscores`: request headers whose name contains `_`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnderscorePolicy {
    /// Remove them before routing (the default).
    #[default]
    Drop,
    /// Answer 400 `AMBIGUOUS_HEADER`.
    Reject,
    /// Forward them, except those that read with `-` for `_` name a header payguard asserts,
    /// overrides or reads itself (signature headers, rule identities, `X-Forwarded-For`).
    Keep,
}

/// Why a header is removed (a metric label and log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// A header payguard asserts (or a spelling of one with `_`).
    Asserted,
    /// A method or URL override header (or a spelling of one with `_`).
    Override,
    /// A name with `_` under `header_underscores: drop`, or one that folds onto a header
    /// payguard reads.
    Underscore,
}

impl Removal {
    /// Metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Asserted => "asserted_header",
            Self::Override => "override_header",
            Self::Underscore => "underscore_header",
        }
    }
}

/// A header refused under `header_underscores: reject`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header `{0}` has `_` in its name, which some servers read as `-`")]
pub struct HeaderRefusal(pub String);

/// The headers to remove from a request before anything reads it, with why; or a refusal.
/// `read` lists the headers payguard itself reads (lower case), which a `_` spelling must not
/// shadow for the backend.
pub fn screen(
    headers: &HeaderMap,
    policy: UnderscorePolicy,
    read: &[HeaderName],
) -> Result<Vec<(HeaderName, Removal)>, HeaderRefusal> {
    let mut removed = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        let has_underscore = n.contains('_');
        let folded = if has_underscore {
            std::borrow::Cow::Owned(n.replace('_', "-"))
        } else {
            std::borrow::Cow::Borrowed(n)
        };
        let why = if ASSERTED.contains(&folded.as_ref()) {
            Some(Removal::Asserted)
        } else if OVERRIDES.contains(&folded.as_ref()) {
            Some(Removal::Override)
        } else if !has_underscore {
            None
        } else {
            match policy {
                UnderscorePolicy::Drop => Some(Removal::Underscore),
                UnderscorePolicy::Reject => return Err(HeaderRefusal(n.chars().take(64).collect())),
                UnderscorePolicy::Keep => read
                    .iter()
                    .any(|r| r.as_str() == folded.as_ref())
                    .then_some(Removal::Underscore),
            }
        };
        if let Some(why) = why {
            removed.push((name.clone(), why));
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(names: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for n in names {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), "1".parse().unwrap());
        }
        h
    }

    fn removed(names: &[&str], policy: UnderscorePolicy, read: &[&str]) -> Vec<(String, &'static str)> {
        let read: Vec<HeaderName> = read
            .iter()
            .map(|r| HeaderName::from_bytes(r.as_bytes()).unwrap())
            .collect();
        let mut out: Vec<_> = screen(&map(names), policy, &read)
            .unwrap()
            .into_iter()
            .map(|(n, why)| (n.to_string(), why.as_str()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn asserted_and_override_headers_go_in_every_spelling() {
        let got = removed(
            &[
                "X-PG-Verified",
                "x_pg_event_id",
                "X_Pg-Risk",
                "X-HTTP-Method-Override",
                "x_original_url",
                "accept",
            ],
            UnderscorePolicy::Keep,
            &[],
        );
        assert_eq!(
            got,
            vec![
                ("x-http-method-override".into(), "override_header"),
                ("x-pg-verified".into(), "asserted_header"),
                ("x_original_url".into(), "override_header"),
                ("x_pg-risk".into(), "asserted_header"),
                ("x_pg_event_id".into(), "asserted_header"),
            ]
        );
    }

    #[test]
    fn underscore_names_are_dropped_by_default() {
        assert_eq!(
            removed(&["x_user_id", "x-user-id", "content-type"], UnderscorePolicy::Drop, &[]),
            vec![("x_user_id".into(), "underscore_header")]
        );
    }

    #[test]
    fn kept_underscore_names_may_not_shadow_what_payguard_reads() {
        assert_eq!(
            removed(
                &["x_user_id", "x_pg_nonce", "x_trace_id"],
                UnderscorePolicy::Keep,
                &["x-user-id", "x-pg-nonce"]
            ),
            vec![
                ("x_pg_nonce".into(), "underscore_header"),
                ("x_user_id".into(), "underscore_header")
            ]
        );
    }

    #[test]
    fn reject_names_the_header() {
        let err = screen(&map(&["x_user_id"]), UnderscorePolicy::Reject, &[]).unwrap_err();
        assert_eq!(err, HeaderRefusal("x_user_id".into()));
        assert!(screen(&map(&["x-user-id"]), UnderscorePolicy::Reject, &[])
            .unwrap()
            .is_empty());
    }
}
