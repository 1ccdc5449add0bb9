//! State shared by the proxy, the admin listener and the reloader.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::backend::HttpBackend;
use crate::store::Store;

/// Everything long-lived: the current config (swapped atomically on reload), metrics, store.
#[derive(Debug)]
pub(crate) struct SharedState {
    config: ArcSwap<Config>,
    /// Metrics registry and handles.
    pub(crate) metrics: Metrics,
    /// Shared-state store.
    pub(crate) store: Arc<dyn Store>,
    /// Time source.
    pub(crate) clock: SharedClock,
    /// The config file, for reloads.
    pub(crate) config_path: PathBuf,
    /// Pooled client for paths where payguard consults the backend itself.
    pub(crate) backend: HttpBackend,
    /// The latest store health check (readiness, `payguard_store_up`).
    pub(crate) store_health: StoreHealth,
}

impl SharedState {
    /// New shared state.
    pub(crate) fn new(
        config: Config,
        config_path: PathBuf,
        store: Arc<dyn Store>,
        clock: SharedClock,
        metrics: Metrics,
    ) -> Self {
        let up = &config.upstream;
        let backend = HttpBackend::new(up.connect_timeout, up.idle_timeout, up.pool_size);
        Self {
            config: ArcSwap::from_pointee(config),
            metrics,
            store,
            clock,
            config_path,
            backend,
            store_health: StoreHealth::default(),
        }
    }

    /// The current config snapshot; a request keeps the one it started with.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Replaces the config atomically.
    pub(crate) fn swap_config(&self, config: Config) {
        self.config.store(Arc::new(config));
    }
}

/// The outcome of the latest store check (made by `crate::health::StoreHealthService`, read by
/// `/readyz` and `payguard_store_up`).
#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    /// `None` before the first check; then the error of the last one, or none when it answered.
    last: Mutex<Option<Result<(), String>>>,
}

impl StoreHealth {
    /// Records a check.
    pub(crate) fn record(&self, result: Result<(), String>) {
        *self.last.lock() = Some(result);
    }

    /// Whether the last check succeeded (false before the first one), and its error.
    pub(crate) fn reachable(&self) -> (bool, Option<String>) {
        match &*self.last.lock() {
            Some(Ok(())) => (true, None),
            Some(Err(e)) => (false, Some(e.clone())),
            None => (false, Some("not checked yet".to_string())),
        }
    }
}
