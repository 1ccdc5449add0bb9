//! Admin listener: `/healthz`, `/readyz`, `/metrics`, and mutating endpoints
//! behind a bearer token (`POST /admin/reload`). The optional probe listener serves the same
//! app limited to the three read-only endpoints, so exposing it to kubelet and Prometheus does
//! not expose the admin API.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use subtle::ConstantTimeEq;

use crate::config::reload::{ReloadOutcome, Reloader};
use crate::state::SharedState;

/// The admin HTTP application.
#[derive(Debug)]
pub(crate) struct AdminApp {
    state: Arc<SharedState>,
    /// `None` on the probe listener: `/admin/*` is not served there at all.
    reloader: Option<Arc<Reloader>>,
}

impl AdminApp {
    /// Admin app over shared state.
    pub(crate) fn new(state: Arc<SharedState>, reloader: Arc<Reloader>) -> Self {
        Self {
            state,
            reloader: Some(reloader),
        }
    }

    /// The probe listener's app: `/healthz`, `/readyz` and `/metrics` only.
    pub(crate) fn probes(state: Arc<SharedState>) -> Self {
        Self { state, reloader: None }
    }

    #[allow(clippy::result_large_err)] // the Err is the ready answer, built once per refused call
    fn authorized(&self, session: &ServerSession) -> Result<(), Response<Vec<u8>>> {
        let config = self.state.config();
        let Some(token) = config.admin_token.as_ref() else {
            return Err(json(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "admin token not configured"}),
            ));
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(token.expose())) && !given.is_empty() {
            Ok(())
        } else {
            Err(json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "missing or wrong bearer token"}),
            ))
        }
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    let body = serde_json::to_vec(&body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

/// Body of `POST /admin/reconcile`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileRequest {
    merchant: String,
    date: String,
    #[serde(default)]
    forward_missing: bool,
}

/// Body of `POST /admin/deny`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyRequest {
    ip: String,
    ttl: String,
}

fn store_error(e: crate::store::StoreError) -> Response<Vec<u8>> {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::json!({"error": e.to_string()}),
    )
}

/// Reads an admin request body of at most 4 KiB.
async fn read_small_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > 4096 {
                    return Err(json(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        serde_json::json!({"error": "body too large"}),
                    ));
                }
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "cannot read body"}),
                ))
            }
        }
    }
}

fn text(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

impl AdminApp {
    /// `/healthz`, `/readyz` (see [`crate::health`]) and `/metrics`.
    fn read_only(&self, path: &str) -> Response<Vec<u8>> {
        match path {
            "/healthz" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => match crate::health::readiness(&self.state) {
                (true, body) => json(StatusCode::OK, body),
                (false, body) => json(StatusCode::SERVICE_UNAVAILABLE, body),
            },
            _ => {
                let m = &self.state.metrics;
                for (kind, records, budget) in self.state.store.usage() {
                    m.store_records
                        .with_label_values(&[kind])
                        .set(i64::try_from(records).unwrap_or(i64::MAX));
                    m.store_budget
                        .with_label_values(&[kind])
                        .set(i64::try_from(budget).unwrap_or(i64::MAX));
                }
                text(StatusCode::OK, "text/plain; version=0.0.4", m.render())
            }
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let Some(reloader) = &self.reloader else {
            return match (method.as_str(), path.as_str()) {
                ("GET", "/healthz" | "/readyz" | "/metrics") => self.read_only(&path),
                (_, "/healthz" | "/readyz" | "/metrics") => json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    serde_json::json!({"error": "method not allowed"}),
                ),
                _ => json(StatusCode::NOT_FOUND, serde_json::json!({"error": "not found"})),
            };
        };
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz" | "/readyz" | "/metrics") => self.read_only(&path),
            ("POST", "/admin/reload") => {
                if let Err(resp) = self.authorized(session) {
                    return resp;
                }
                let reloader = reloader.clone();
                match tokio::task::spawn_blocking(move || reloader.reload("admin", true)).await {
                    Ok(Ok(ReloadOutcome::Applied { needs_restart })) => json(
                        StatusCode::OK,
                        serde_json::json!({"reloaded": true, "needs_restart": needs_restart}),
                    ),
                    Ok(Ok(ReloadOutcome::Unchanged)) => json(StatusCode::OK, serde_json::json!({"reloaded": false})),
                    Ok(Err(issues)) => json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        serde_json::json!({"reloaded": false, "errors": issues.0.iter().map(|i| i.to_string()).collect::<Vec<_>>()}),
                    ),
                    Err(_) => json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({"error": "reload task failed"}),
                    ),
                }
            }
            ("GET", "/admin/orders/awaiting") => {
                if let Err(resp) = self.authorized(session) {
                    return resp;
                }
                let config = self.state.config();
                match crate::orders::awaiting(&config.query_accounts, self.state.store.as_ref()).await {
                    Ok(body) => json(StatusCode::OK, body),
                    Err(e) => store_error(e),
                }
            }
            ("GET", p) if p.starts_with("/admin/orders/") => {
                if let Err(resp) = self.authorized(session) {
                    return resp;
                }
                // /admin/orders/<out_trade_no>, percent-encoded as one path segment.
                let Some(order) = decode_segment(&p["/admin/orders/".len()..]).filter(|o| !o.is_empty()) else {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "expected /admin/orders/<out_trade_no> (one percent-encoded path segment)"}),
                    );
                };
                let now = self.state.clock.now();
                match crate::history::of_order(self.state.store.as_ref(), &order, now).await {
                    Ok(history) => json(
                        StatusCode::OK,
                        serde_json::json!({"out_trade_no": order, "history": history}),
                    ),
                    Err(e) => store_error(e),
                }
            }
            ("GET", p) if p.starts_with("/admin/ledger/") => {
                if let Err(resp) = self.authorized(session) {
                    return resp;
                }
                // /admin/ledger/<merchant>/<YYYY-MM-DD>
                let rest = &p["/admin/ledger/".len()..];
                let Some((merchant, day)) = rest.split_once('/').filter(|(_, d)| crate::orders::is_date(d)) else {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "expected /admin/ledger/<merchant>/<YYYY-MM-DD>"}),
                    );
                };
                let config = self.state.config();
                let known = config
                    .routes
                    .routes()
                    .iter()
                    .filter_map(|r| r.notify.as_ref())
                    .any(|n| n.merchant.as_deref() == Some(merchant));
                if !known {
                    return json(
                        StatusCode::NOT_FOUND,
                        serde_json::json!({"error": "no notify route has this `merchant`"}),
                    );
                }
                match crate::orders::Ledger::new(merchant)
                    .day(self.state.store.as_ref(), day)
                    .await
                {
                    Ok(entries) => json(
                        StatusCode::OK,
                        serde_json::json!({"merchant": merchant, "date": day, "events": entries}),
                    ),
                    Err(e) => store_error(e),
                }
            }
            ("POST", "/admin/reconcile") => {
                if let Err(resp) = self.authorized(session) {
                    return resp;
                }
                let body = match read_small_body(session).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                let req: ReconcileRequest = match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(e) => {
                        let msg = format!("expected {{\"merchant\": \"shop-wechat\", \"date\": \"2026-12-03\", \"forward_missing\": false}}: {e}");
                        return json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": msg }));
                    }
                };
                if !crate::orders::is_date(&req.date) {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "`date` must be a day as YYYY-MM-DD (Beijing time)"}),
                    );
                }
                let config = self.state.config();
                let Some(link) = config.reconcile_accounts.iter().find(|a| a.name == req.merchant) else {
                    let msg = format!(
                        "no WeChat Pay or Alipay account `{:.64}` that a notify route names in `merchant:`",
                        req.merchant
                    );
                    return json(StatusCode::NOT_FOUND, serde_json::json!({ "error": msg }));
                };
                let upstream = config.upstream.socket;
                match crate::reconcile::run(&self.state, link, &req.date, req.forward_missing, upstream).await {
                    Ok(report) => json(StatusCode::OK, serde_json::to_value(report).unwrap_or_default()),
                    Err(crate::reconcile::ReconcileError::Bill(e)) => {
                        json(StatusCode::BAD_GATEWAY, serde_json::json!({ "error": e }))
                    }
                    Err(crate::reconcile::ReconcileError::Store(e)) => {
                        json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "error": e }))
                    }
                }
            }
            ("GET", "/admin/deny") => {
                if let Err(resp) = self.authorized(session) {
                    return resp;
                }
                match self.state.store.set_members(crate::guard::ip::dynamic_deny_set()).await {
                    Ok(members) => {
                        let entries: Vec<_> = members
                            .iter()
                            .map(|(ip, ttl)| serde_json::json!({"ip": ip, "ttl_seconds": ttl.as_secs()}))
                            .collect();
                        json(StatusCode::OK, serde_json::json!({ "entries": entries }))
                    }
                    Err(e) => store_error(e),
                }
            }
            ("POST", "/admin/deny") => {
                if let Err(resp) = self.authorized(session) {
                    return resp;
                }
                let body = match read_small_body(session).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                let req: DenyRequest = match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(e) => {
                        let msg = format!("expected {{\"ip\": \"203.0.113.7\", \"ttl\": \"10m\"}}: {e}");
                        return json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": msg }));
                    }
                };
                let Ok(ip) = req.ip.parse::<std::net::IpAddr>() else {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "`ip` is not an IP address"}),
                    );
                };
                let ttl = match humantime::parse_duration(&req.ttl) {
                    Ok(d) if !d.is_zero() && d <= Duration::from_secs(366 * 24 * 3600) => d,
                    _ => {
                        let msg = "`ttl` must be a duration such as 10m, up to 366d";
                        return json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": msg }));
                    }
                };
                let member = crate::guard::ip::dynamic_deny_member(ip);
                match self
                    .state
                    .store
                    .set_add(crate::guard::ip::dynamic_deny_set(), &member, ttl)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(ip = %member, ttl_seconds = ttl.as_secs(), "dynamic deny entry added");
                        json(
                            StatusCode::OK,
                            serde_json::json!({"ip": member, "ttl_seconds": ttl.as_secs()}),
                        )
                    }
                    Err(e) => store_error(e),
                }
            }
            ("DELETE", p) if p.starts_with("/admin/deny/") => {
                if let Err(resp) = self.authorized(session) {
                    return resp;
                }
                let Ok(ip) = p["/admin/deny/".len()..].parse::<std::net::IpAddr>() else {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "not an IP address"}),
                    );
                };
                let member = crate::guard::ip::dynamic_deny_member(ip);
                match self
                    .state
                    .store
                    .set_remove(crate::guard::ip::dynamic_deny_set(), &member)
                    .await
                {
                    Ok(removed) => {
                        tracing::info!(ip = %member, removed, "dynamic deny entry removed");
                        json(StatusCode::OK, serde_json::json!({"ip": member, "removed": removed}))
                    }
                    Err(e) => store_error(e),
                }
            }
            (
                _,
                "/healthz"
                | "/readyz"
                | "/metrics"
                | "/admin/reload"
                | "/admin/deny"
                | "/admin/orders/awaiting"
                | "/admin/reconcile",
            ) => json(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"error": "method not allowed"}),
            ),
            _ => json(StatusCode::NOT_FOUND, serde_json::json!({"error": "not found"})),
        }
    }
}

/// A path segment with its `%XX` escapes decoded; `None` for a broken escape, a `/`, or text
/// that is not UTF-8.
fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' => return None,
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_order_segment_is_decoded_strictly() {
        assert_eq!(super::decode_segment("T-1%2F2").as_deref(), Some("T-1/2"));
        assert_eq!(super::decode_segment("%E8%AE%A2").as_deref(), Some("订"));
        for bad in ["a/b", "%2", "%zz", "%+1", "%FF", "%"] {
            assert_eq!(super::decode_segment(bad), None, "{bad}");
        }
    }
}
