//! Admin listener (product.md §7): `/healthz`, `/readyz`, `/metrics`, and mutating endpoints
//! behind a bearer token (`POST /admin/reload`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use subtle::ConstantTimeEq;

use crate::config::reload::{ReloadOutcome, Reloader};
use crate::state::SharedState;

/// How long `/readyz` waits for the store.
const READY_STORE_TIMEOUT: Duration = Duration::from_millis(500);

/// The admin HTTP application.
#[derive(Debug)]
pub struct AdminApp {
    state: Arc<SharedState>,
    reloader: Arc<Reloader>,
}

impl AdminApp {
    /// Admin app over shared state.
    pub fn new(state: Arc<SharedState>, reloader: Arc<Reloader>) -> Self {
        Self { state, reloader }
    }

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

fn text(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            ("GET", "/readyz") => {
                let store = &self.state.store;
                match tokio::time::timeout(READY_STORE_TIMEOUT, store.ping()).await {
                    Ok(Ok(())) => json(
                        StatusCode::OK,
                        serde_json::json!({"ready": true, "store": store.backend()}),
                    ),
                    Ok(Err(e)) => json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({"ready": false, "store": store.backend(), "error": e.to_string()}),
                    ),
                    Err(_) => json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({"ready": false, "store": store.backend(), "error": "store ping timed out"}),
                    ),
                }
            }
            ("GET", "/metrics") => text(StatusCode::OK, "text/plain; version=0.0.4", self.state.metrics.render()),
            ("POST", "/admin/reload") => {
                if let Err(resp) = self.authorized(session) {
                    return resp;
                }
                let reloader = self.reloader.clone();
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
            (_, "/healthz" | "/readyz" | "/metrics" | "/admin/reload") => json(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"error": "method not allowed"}),
            ),
            _ => json(StatusCode::NOT_FOUND, serde_json::json!({"error": "not found"})),
        }
    }
}
