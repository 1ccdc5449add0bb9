//! Reload on SIGHUP, on file change and on the admin API: validate, then swap atomically; a bad
//! file keeps the last good config and is reported (log + `payguard_config_reloads_total{result="failure"}`).
//!
//! "File change" covers the `file:` secrets the config references as well as the config file:
//! Kubernetes updates a mounted Secret by swapping a symlink, and a rotated key must apply
//! without anyone sending SIGHUP. The watcher compares a digest of the config text and the
//! content of every referenced secret file, so one ConfigMap or Secret update is one reload.

use std::path::PathBuf;
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
pub(crate) enum ReloadOutcome {
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
pub(crate) struct Reloader {
    state: Arc<SharedState>,
    /// Digest of what the last attempt read, and the secret files it referenced.
    last: Mutex<([u8; 32], Vec<PathBuf>)>,
}

/// Digest of the config text and the current content of each secret file (a missing or
/// unreadable file counts as its own state, so its reappearance is a change too).
fn digest(text: &str, secret_files: &[PathBuf]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    for path in secret_files {
        h.update(b"\0file\0");
        h.update(path.as_os_str().as_encoded_bytes());
        match std::fs::read(path) {
            Ok(content) => {
                h.update(b"\0ok\0");
                h.update((content.len() as u64).to_le_bytes());
                h.update(&content);
            }
            Err(_) => h.update(b"\0unreadable\0"),
        }
    }
    h.finalize().into()
}

impl Reloader {
    /// A reloader for `state`; `loaded_text` is the text the running config came from and
    /// `secret_files` the `file:` secrets it referenced.
    pub(crate) fn new(state: Arc<SharedState>, loaded_text: &str, secret_files: Vec<PathBuf>) -> Self {
        Self {
            state,
            last: Mutex::new((digest(loaded_text, &secret_files), secret_files)),
        }
    }

    /// Reads, validates and applies the file. `force` reloads even an unchanged file.
    pub(crate) fn reload(&self, trigger: &'static str, force: bool) -> Result<ReloadOutcome, ConfigIssues> {
        let path = &self.state.config_path;
        let text = std::fs::read_to_string(path).map_err(|e| {
            self.failed(
                trigger,
                ConfigIssues(vec![crate::issue::ConfigIssue::new(
                    "(file)",
                    format!("cannot read {}: {e}", path.display()),
                )]),
            )
        })?;
        let watched = self.last.lock().1.clone();
        let seen = digest(&text, &watched);
        if !force && seen == self.last.lock().0 {
            return Ok(ReloadOutcome::Unchanged);
        }
        let (checked, secret_files) = load::check_text_tracked(&text);
        // The digest taken before the build: a secret rewritten while the build ran then differs
        // from it on the next poll and is reloaded, not missed. Only a new set of files (the
        // text changed) needs a fresh digest.
        let now = if secret_files == watched {
            seen
        } else {
            digest(&text, &secret_files)
        };
        *self.last.lock() = (now, secret_files);
        // A broken file is reported once, not on every poll.
        let (_, new) = checked.map_err(|issues| self.failed(trigger, issues))?;
        let old = self.state.config();
        let mut needs_restart = Vec::new();
        if new.listen != old.listen {
            needs_restart.push("server.listen");
        }
        if new.tls != old.tls {
            needs_restart.push("server.tls");
        }
        if new.threads != old.threads {
            needs_restart.push("server.threads");
        }
        if new.admin_listen != old.admin_listen {
            needs_restart.push("admin.listen");
        }
        if new.probe_listen != old.probe_listen {
            needs_restart.push("admin.probe_listen");
        }
        if new.upstream.pool_size != old.upstream.pool_size {
            needs_restart.push("upstream.pool_size");
        }
        if serde_json::to_value(&new.store).ok() != serde_json::to_value(&old.store).ok() {
            needs_restart.push("store");
        }
        super::log_warnings(&new, trigger);
        self.state.swap_config(new);
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
pub(crate) struct ReloadService {
    /// The reloader.
    pub(crate) reloader: Arc<Reloader>,
    /// The shared state (for the current interval and watch flag).
    pub(crate) state: Arc<SharedState>,
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
