//! Reload on SIGHUP, on file change and on the admin API: validate, then swap atomically; a bad
//! file keeps the last good config and is reported (log + `payguard_config_reloads_total{result="failure"}`).

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sha2::{Digest, Sha256};

use super::{load, ConfigIssues};
use crate::state::SharedState;

/// Result of one reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new config is live.
    Applied {
        /// Settings that changed but only take effect after a restart.
        needs_restart: Vec<&'static str>,
    },
    /// The file is byte-identical to the running config; nothing done.
    Unchanged,
}

/// Reloads the config file into the shared state.
#[derive(Debug)]
pub struct Reloader {
    state: Arc<SharedState>,
    last_digest: Mutex<[u8; 32]>,
}

impl Reloader {
    /// A reloader for `state`; `loaded_text` is the text the running config came from.
    pub fn new(state: Arc<SharedState>, loaded_text: &str) -> Self {
        Self {
            state,
            last_digest: Mutex::new(Sha256::digest(loaded_text.as_bytes()).into()),
        }
    }

    /// Reads, validates and applies the file. `force` reloads even an unchanged file.
    pub fn reload(&self, trigger: &'static str, force: bool) -> Result<ReloadOutcome, ConfigIssues> {
        let path = &self.state.config_path;
        let text = std::fs::read_to_string(path).map_err(|e| {
            self.failed(
                trigger,
                ConfigIssues(vec![load::ConfigIssue::new(
                    "(file)",
                    format!("cannot read {}: {e}", path.display()),
                )]),
            )
        })?;
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if !force && digest == *self.last_digest.lock() {
            return Ok(ReloadOutcome::Unchanged);
        }
        let (_, new) = load::check_text(&text).map_err(|issues| {
            *self.last_digest.lock() = digest; // report a broken file once, not every poll
            self.failed(trigger, issues)
        })?;
        let old = self.state.config();
        let mut needs_restart = Vec::new();
        if new.listen != old.listen {
            needs_restart.push("server.listen");
        }
        if new.threads != old.threads {
            needs_restart.push("server.threads");
        }
        if new.admin_listen != old.admin_listen {
            needs_restart.push("admin.listen");
        }
        if new.upstream.pool_size != old.upstream.pool_size {
            needs_restart.push("upstream.pool_size");
        }
        if serde_json::to_value(&new.store).ok() != serde_json::to_value(&old.store).ok() {
            needs_restart.push("store");
        }
        super::log_warnings(&new, trigger);
        self.state.swap_config(new);
        *self.last_digest.lock() = digest;
        let m = &self.state.metrics;
        m.reloads.with_label_values(&["success"]).inc();
        m.config_loaded_at.set(self.state.clock.unix_seconds());
        if needs_restart.is_empty() {
            tracing::info!(trigger, "configuration reloaded");
        } else {
            tracing::warn!(trigger, needs_restart = ?needs_restart, "configuration reloaded; some changes need a restart");
        }
        Ok(ReloadOutcome::Applied { needs_restart })
    }

    fn failed(&self, trigger: &'static str, issues: ConfigIssues) -> ConfigIssues {
        self.state.metrics.reloads.with_label_values(&["failure"]).inc();
        tracing::error!(trigger, errors = %issues, "configuration reload failed; keeping the last good configuration");
        issues
    }
}

/// Background task: SIGHUP and (when `reload.watch`) file polling.
#[derive(Debug)]
pub struct ReloadService {
    /// The reloader.
    pub reloader: Arc<Reloader>,
    /// The shared state (for the current interval and watch flag).
    pub state: Arc<SharedState>,
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload by file change or admin API only");
                None
            }
        };
        loop {
            let cfg = self.state.config();
            let interval = cfg.reload.interval;
            let watch = cfg.reload.watch;
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let r = self.reloader.clone();
                    let _ = tokio::task::spawn_blocking(move || r.reload("sighup", true)).await;
                }
                _ = tokio::time::sleep(interval) => {
                    if watch {
                        let r = self.reloader.clone();
                        let _ = tokio::task::spawn_blocking(move || r.reload("file_change", false)).await;
                    }
                }
            }
        }
    }
}
