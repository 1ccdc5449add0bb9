//! Redis Sentinel: the master of a monitored Redis found through its sentinels, and followed
//! across failovers.
//!
//! A failover moves the master to another address, and the old master, once back, is a replica
//! that answers writes with `READONLY`. payguard therefore checks `ROLE` on its connection every
//! [`FOLLOW_INTERVAL`] (and at once after a failed call); when the server is no longer the
//! master, or cannot be reached, it asks the sentinels for the current master and switches its
//! connection there. Calls in between fail like any store error, and each rule applies its
//! `on_store_error` policy.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, Role};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::StoreError;
use crate::secret::SecretRef;

/// How often the connection's `ROLE` is checked.
pub(crate) const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);

/// `store.redis.sentinel`: the sentinels that monitor the Redis payguard uses.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSentinelConfig {
    /// Sentinel addresses, `host:port` each (sentinels listen on 26379 by default).
    pub(crate) nodes: Vec<String>,
    /// The name the sentinels monitor the master under (`sentinel monitor <name> ...`).
    pub(crate) master_name: String,
    /// Password of the Redis master and replicas (`requirepass`), as `env:NAME` or
    /// `file:/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) password: Option<SecretRef>,
    /// Password of the sentinels themselves (`requirepass` in sentinel.conf), if they have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sentinel_password: Option<SecretRef>,
}

impl RedisSentinelConfig {
    /// Problems as (key path relative to this section, message); empty when usable.
    pub(crate) fn validate(&self) -> Vec<(String, String)> {
        let mut issues = Vec::new();
        if self.nodes.is_empty() {
            issues.push((
                "nodes".to_string(),
                "list at least one sentinel, `host:port`".to_string(),
            ));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if let Err(e) = sentinel_addr(node) {
                issues.push((format!("nodes[{i}]"), e));
            }
        }
        if self.master_name.trim().is_empty() {
            issues.push((
                "master_name".to_string(),
                "the name the sentinels monitor the master under".to_string(),
            ));
        }
        for (key, secret) in [
            ("password", &self.password),
            ("sentinel_password", &self.sentinel_password),
        ] {
            if let Some(Err(e)) = secret.as_ref().map(SecretRef::resolve) {
                issues.push((key.to_string(), e));
            }
        }
        issues
    }
}

/// `host:port` of a sentinel (IPv6 hosts in brackets).
fn sentinel_addr(node: &str) -> Result<ConnectionAddr, String> {
    let (host, port) = node
        .rsplit_once(':')
        .ok_or_else(|| format!("`{node}` is not `host:port`"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{node}`: the port is not a number from 1 to 65535"))?;
    if host.is_empty() || port == 0 {
        return Err(format!("`{node}` is not `host:port`"));
    }
    Ok(ConnectionAddr::Tcp(host.to_string(), port))
}

/// What finding the master needs, resolved once (secrets read at start).
#[derive(Clone)]
pub(crate) struct SentinelSettings {
    nodes: Vec<ConnectionAddr>,
    master_name: String,
    password: Option<String>,
    sentinel_password: Option<String>,
}

fn expose(secret: &Option<SecretRef>) -> Result<Option<String>, StoreError> {
    match secret {
        Some(s) => {
            let value = s.resolve().map_err(StoreError::Unavailable)?;
            Ok(Some(value.expose_str().map_err(StoreError::Unavailable)?.to_string()))
        }
        None => Ok(None),
    }
}

impl SentinelSettings {
    pub(crate) fn resolve(cfg: &RedisSentinelConfig) -> Result<Self, StoreError> {
        let nodes = cfg
            .nodes
            .iter()
            .map(|n| sentinel_addr(n).map_err(StoreError::Unavailable))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            nodes,
            master_name: cfg.master_name.clone(),
            password: expose(&cfg.password)?,
            sentinel_password: expose(&cfg.sentinel_password)?,
        })
    }

    /// A client that asks the sentinels (it keeps its connections to them between lookups).
    pub(crate) fn sentinel_client(&self) -> Result<SentinelClient, StoreError> {
        let mut builder = SentinelClientBuilder::new(self.nodes.clone(), &self.master_name, SentinelServerType::Master)
            .map_err(super::redis_store::store_error)?;
        if let Some(password) = &self.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(password) = &self.sentinel_password {
            builder = builder.set_client_to_sentinel_password(password);
        }
        builder.build().map_err(super::redis_store::store_error)
    }
}

/// The current master as the sentinels name it (they check that it considers itself master),
/// and its address.
pub(crate) async fn find_master(sentinel: &mut SentinelClient) -> Result<(redis::Client, String), StoreError> {
    let client = sentinel
        .async_get_client()
        .await
        .map_err(super::redis_store::store_error)?;
    let addr = client.get_connection_info().addr().to_string();
    Ok((client, addr))
}

/// Whether the server behind `conn` is a master: `Ok(false)` for a replica (a demoted master).
pub(crate) async fn is_master(conn: &redis::aio::ConnectionManager, timeout: Duration) -> Result<bool, StoreError> {
    let role = tokio::time::timeout(timeout, redis::cmd("ROLE").query_async::<Role>(&mut conn.clone()))
        .await
        .map_err(|_| StoreError::Timeout(timeout))?
        .map_err(super::redis_store::store_error)?;
    Ok(matches!(role, Role::Primary { .. }))
}

/// What the follower needs from the store: where the connection lives, how to open one to a
/// given master, and a wake-up for failed calls.
pub(crate) struct Follower<F> {
    pub(crate) settings: SentinelSettings,
    pub(crate) slot: Arc<ArcSwapOption<super::redis_store::Connection>>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) master_addr: String,
    pub(crate) command_timeout: Duration,
    /// Opens (and pings) a connection to a master.
    pub(crate) open: F,
}

impl<F, Fut> Follower<F>
where
    F: Fn(redis::Client) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<redis::aio::ConnectionManager, StoreError>> + Send,
{
    /// Runs for the life of the process: every [`FOLLOW_INTERVAL`], or at once when woken,
    /// checks that the connection still reaches the master, and moves it to the master the
    /// sentinels name when not.
    pub(crate) async fn run(mut self) {
        let mut sentinel = match self.settings.sentinel_client() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot follow the Redis master through the sentinels");
                return;
            }
        };
        let mut failures: u64 = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
                _ = self.wake.notified() => {}
            }
            let conn = self.slot.load_full();
            // A slow answer is not a failover: allow at least one interval for it.
            let timeout = self.command_timeout.max(FOLLOW_INTERVAL);
            let role = match conn.as_deref() {
                Some(super::redis_store::Connection::Standalone(c)) => is_master(c, timeout).await,
                _ => Ok(false),
            };
            if matches!(role, Ok(true)) {
                failures = 0;
                continue;
            }
            // A demoted master must be left; an unreachable one only if the sentinels name
            // another (the connection reconnects to the same address by itself).
            match self.switch(&mut sentinel, role.is_err()).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    // The first failure, then one line every minute or so.
                    if failures == 1 || failures % 240 == 0 {
                        tracing::warn!(error = %e, master = %self.settings.master_name, "cannot reach the Redis master the sentinels name yet; retrying");
                    }
                }
            }
        }
    }

    async fn switch(&mut self, sentinel: &mut SentinelClient, unreachable: bool) -> Result<(), StoreError> {
        let (client, addr) = find_master(sentinel).await?;
        if unreachable && addr == self.master_addr {
            return Ok(());
        }
        let conn = (self.open)(client).await?;
        if !self.master_addr.is_empty() && addr != self.master_addr {
            tracing::warn!(from = %self.master_addr, to = %addr, master = %self.settings.master_name, "Redis master moved; following it");
        }
        self.master_addr = addr;
        self.slot
            .store(Some(Arc::new(super::redis_store::Connection::Standalone(conn))));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_section_reports_each_problem_with_its_key() {
        let cfg: RedisSentinelConfig =
            serde_yaml_ng::from_str("nodes: ['127.0.0.1:26379', 'nope', 'h:0', '[::1]:26380']\nmaster_name: ' '\n")
                .unwrap();
        let paths: Vec<String> = cfg.validate().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["nodes[1]", "nodes[2]", "master_name"]);
        let ok: RedisSentinelConfig = serde_yaml_ng::from_str("nodes: ['s1:26379']\nmaster_name: pg\n").unwrap();
        assert!(ok.validate().is_empty());
        assert!(serde_yaml_ng::from_str::<RedisSentinelConfig>("nodes: []\nmaster: pg\n").is_err());
        let empty: RedisSentinelConfig = serde_yaml_ng::from_str("nodes: []\nmaster_name: pg\n").unwrap();
        assert_eq!(empty.validate()[0].0, "nodes");
    }
}
