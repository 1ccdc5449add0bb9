//! State shared by the proxy, the admin listener and the reloader.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

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
    pub(crate) store_health: crate::health::StoreHealth,
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
            store_health: crate::health::StoreHealth::default(),
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
