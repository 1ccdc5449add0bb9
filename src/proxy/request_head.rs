//! The first step of every request: its head is brought into canonical form
//! ([`crate::canonical`]) or refused, before anything routes on it. The request Pingora forwards
//! (and the one payguard builds itself on guard and notify routes) is made from the rewritten
//! head, so the backend serves exactly the path payguard routed and checked.

use http::HeaderName;
use pingora::http::RequestHeader;
use pingora::protocols::http::authority::{raw_target_authority, RawTargetAuthority};

use crate::canonical::headers::{self, Removal};
use crate::canonical::path::{self, CanonicalPath, PathRefusal};
use crate::canonical::{check_method, Refusal, RequestPolicy};

/// Header carrying the request id (taken from the client when valid, generated otherwise). Kept
/// here, below both the proxy and `config`, because the config lists it among the headers the
/// request head reads.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// A request head in canonical form.
#[derive(Debug)]
pub(super) struct CanonicalHead {
    /// The canonical path.
    pub(crate) path: CanonicalPath,
    /// The request target as sent, when it was rewritten (a non-canonical path, or
    /// absolute-form).
    pub(crate) sent: Option<String>,
    /// Headers removed, and why.
    pub(crate) removed: Vec<(HeaderName, Removal)>,
}

/// Checks the method, removes the headers no client may send, canonicalizes the path and, when
/// it changed, rewrites the request target to `canonical path[?raw query]` in origin-form.
pub(super) fn canonicalize(req: &mut RequestHeader, policy: &RequestPolicy) -> Result<CanonicalHead, Refusal> {
    check_method(req.method.as_str())?;
    let removed = headers::screen(&req.headers, policy.header_underscores, &policy.read_headers)?;
    for (name, _) in &removed {
        req.remove_header(name);
    }
    let raw = req.raw_path();
    let (origin_form, target) = if raw.first() == Some(&b'/') {
        (true, raw)
    } else {
        // Absolute-form (`GET http://host/path`): Pingora has already checked that its authority
        // is the `Host` header; the path is read from the target as for origin-form.
        match raw_target_authority(raw) {
            RawTargetAuthority::Absolute { path_and_query, .. } => (false, path_and_query),
            _ => return Err(PathRefusal::NotOriginForm.into()),
        }
    };
    let (raw_path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], Some(&target[q..])),
        None => (target, None),
    };
    let raw_path = if raw_path.is_empty() { &b"/"[..] } else { raw_path };
    let canonical = path::canonicalize(raw_path, &policy.path)?;
    let rewritten = !origin_form || canonical.as_str().as_bytes() != raw_path;
    let mut sent = None;
    if rewritten {
        sent = Some(String::from_utf8_lossy(raw).into_owned());
        let mut new_target = canonical.as_str().as_bytes().to_vec();
        new_target.extend_from_slice(query.unwrap_or_default());
        // Only fails for targets Pingora itself would not have parsed.
        req.set_raw_path(&new_target)
            .map_err(|_| Refusal::Path(PathRefusal::NotOriginForm))?;
    }
    Ok(CanonicalHead {
        path: canonical,
        sent,
        removed,
    })
}

/// Replaces the query of an (already canonical) request target with `query` (the canonical
/// query text; empty drops the `?`).
pub(super) fn set_query(req: &mut RequestHeader, query: &str) -> pingora::Result<()> {
    let mut target = req.uri.path().as_bytes().to_vec();
    if !query.is_empty() {
        target.push(b'?');
        target.extend_from_slice(query.as_bytes());
    }
    req.set_raw_path(&target)
}
