//! Readiness: what payguard can serve right now, and the store's health behind it.
//!
//! A sidecar's readiness decides whether the whole pod (the shop) gets traffic. Every replica
//! shares one Redis, so failing readiness because Redis is down would take every pod out of the
//! Service at once, including routes that do not need Redis at all. payguard is therefore ready
//! while it can serve *something* under its own store-error policies: `pass` routes, a `pass`
//! default action, or `guard` routes whose checks all fail open. It is unready only when the
//! store is unreachable and every route would fail closed. Store health stays visible on its
//! own: `payguard_store_up` and the `store_reachable` field of `/readyz`.
//!
//! The same check reads the store's generation markers, so a Redis that lost its data is noticed
//! between requests too (docs/operations.md, "Store data loss"); `/readyz` then shows
//! `store_data_loss` for a while without going unready: payguard keeps serving safely (requests
//! dated before the loss are refused), and taking every pod out would not bring the data back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::state::SharedState;

/// How often the store is pinged for `payguard_store_up` and `/readyz`.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long one ping may take.
const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// The `/readyz` answer: (ready, JSON body).
pub(crate) fn readiness(state: &SharedState) -> (bool, serde_json::Value) {
    let config = state.config();
    let (reachable, error) = state.store_health.reachable();
    let without = &config.without_store;
    let ready = reachable || !without.serving.is_empty();
    let mut body = serde_json::json!({
        "ready": ready,
        "store": state.store.backend(),
        "store_reachable": reachable,
    });
    if let Some(error) = error {
        body["store_error"] = error.into();
    }
    if !reachable {
        body["serving"] = without.serving.clone().into();
        body["failing_closed"] = without.failing_closed.clone().into();
    }
    if let Some(loss) = state.store.data_loss() {
        body["store_data_loss"] = serde_json::json!({
            "at": loss.at.to_string(),
            "detected_by": loss.detected_by.as_str(),
        });
    }
    (ready, body)
}

/// Pings the store every [`CHECK_INTERVAL`] and publishes the result (`payguard_store_up`).
#[derive(Debug)]
pub(crate) struct StoreHealthService {
    /// Shared state (store, metrics, health record).
    pub(crate) state: Arc<SharedState>,
}

impl StoreHealthService {
    async fn check(&self) {
        let store = &self.state.store;
        let checked = async {
            store.ping().await?;
            store.check_data_loss().await
        };
        let result = match tokio::time::timeout(PING_TIMEOUT, checked).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("store ping timed out".to_string()),
        };
        self.state.metrics.store_up.set(i64::from(result.is_ok()));
        self.state.store_health.record(result);
    }
}

#[async_trait]
impl BackgroundService for StoreHealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.check().await;
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(CHECK_INTERVAL) => {}
            }
        }
    }
}
