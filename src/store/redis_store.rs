//! The Redis store: payguard's shared state in Redis standalone or Redis Cluster, shared by every
//! replica.
//!
//! Lessons from other gateways' rate limiters shape this file:
//! - every operation is ONE Lua script from `lua/` (Kong #5311 and APISIX #12592 raced with
//!   read-then-write round trips), loaded by SHA with a `NOSCRIPT` fallback;
//! - time comes from Redis `TIME`, so replicas with skewed clocks agree;
//! - every key gets a TTL (Kong #5763);
//! - every call is bounded by `command_timeout` and fails fast while Redis is down (Envoy #462,
//!   #978): the caller then applies the rule's `on_store_error` policy. The connection is
//!   re-established in the background, never on the request path.
//!
//! Keys are `<key_prefix>{<kind>:<key>}`: the hash tag holds the whole logical key, so the keys
//! of one operation (a sliding counter's event set and its sum) share a Cluster slot while
//! different identities spread over the cluster. A `key_prefix` with its own hash tag
//! (e.g. `{pg}:`) pins everything to one slot.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::StreamExt;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{
    ClientTlsConfig, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisError, Script, ScriptInvocation,
    TlsCertificates,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::generation::{DataLossLog, Markers, HEALTH_SAMPLE, MARKER_TTL};
use super::redis_sentinel::{self, RedisSentinelConfig, SentinelSettings};
use super::{
    lease_token, millis, BucketDecision, BucketSpec, CounterSpec, CounterWindow, DataLoss, DataLossSource, DedupClaim,
    GuardBatch, GuardOutcome, Store, StoreError,
};
use crate::secret::SecretRef;

/// Settings of the Redis store. Set exactly one of `url` (standalone), `cluster_nodes` (Redis
/// Cluster) or `sentinel` (a master found through Redis Sentinel).
#[derive(Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisStoreConfig {
    /// Standalone Redis, `redis://host:port[/db]`. Put the password in `password`, not here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Redis Cluster seed nodes, `redis://host:port` each; the rest is discovered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_nodes: Vec<String>,
    /// A master found through Redis Sentinel, and followed across failovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<RedisSentinelConfig>,
    /// Prefix of every key payguard writes.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Longest a store call may take; after that the rule's `on_store_error` policy applies.
    #[serde(default = "default_command_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub command_timeout: Duration,
    /// Longest the initial connection (and each reconnection attempt) may take.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub connect_timeout: Duration,
    /// Redis password (`AUTH`), as `env:NAME` or `file:/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// TLS settings for `rediss://` URLs: the CA to trust and, for mutual TLS, a client
    /// certificate. Without this section `rediss://` trusts the system's CA certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RedisTlsConfig>,
    /// How long `/readyz` shows a detected loss of Redis's data (`store_data_loss`) and
    /// forwarded notifications carry `X-PG-Store-Data-Loss` (docs/operations.md).
    #[serde(default = "default_data_loss_notice_for", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub data_loss_notice_for: Duration,
}

/// TLS to Redis (managed Redis services require it). Certificates are always verified.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisTlsConfig {
    /// PEM CA certificate(s) the server's certificate must chain to, instead of the system's
    /// trust store (`file:/path` to a mounted Secret or ConfigMap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretRef>,
    /// PEM client certificate (chain) for servers that require one (`tls-auth-clients yes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<SecretRef>,
    /// PEM private key of `client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<SecretRef>,
}

fn default_key_prefix() -> String {
    "pg:".to_string()
}

fn default_command_timeout() -> Duration {
    Duration::from_millis(50)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_data_loss_notice_for() -> Duration {
    Duration::from_secs(600)
}

impl Default for RedisStoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            cluster_nodes: Vec::new(),
            sentinel: None,
            key_prefix: default_key_prefix(),
            command_timeout: default_command_timeout(),
            connect_timeout: default_connect_timeout(),
            password: None,
            tls: None,
            data_loss_notice_for: default_data_loss_notice_for(),
        }
    }
}

/// A URL with any `user:password@` part hidden, for Debug output and errors.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}<redacted>{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl std::fmt::Debug for RedisStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field(
                "cluster_nodes",
                &self.cluster_nodes.iter().map(|n| redact_url(n)).collect::<Vec<_>>(),
            )
            .field("sentinel", &self.sentinel)
            .field("key_prefix", &self.key_prefix)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("password", &self.password)
            .field("tls", &self.tls)
            .field("data_loss_notice_for", &self.data_loss_notice_for)
            .finish()
    }
}

impl RedisStoreConfig {
    /// Problems as (key path relative to this section, message); empty when usable. Resolves
    /// the password reference, so a missing secret is reported at check time.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut issues = Vec::new();
        let mut issue = |path: &str, msg: String| issues.push((path.to_string(), msg));
        let locations = [
            self.url.is_some(),
            !self.cluster_nodes.is_empty(),
            self.sentinel.is_some(),
        ];
        match (&self.url, self.cluster_nodes.is_empty(), &self.sentinel) {
            _ if locations.iter().filter(|&&set| set).count() > 1 => {
                issue("url", "set only one of `url`, `cluster_nodes` and `sentinel`".into())
            }
            (None, true, None) => issue(
                "url",
                "set `url` (standalone), `cluster_nodes` (Redis Cluster) or `sentinel` (Redis Sentinel)".into(),
            ),
            (None, true, Some(sentinel)) => {
                for (path, msg) in sentinel.validate() {
                    issue(&format!("sentinel.{path}"), msg);
                }
                if self.password.is_some() {
                    issue(
                        "password",
                        "with `sentinel`, put the Redis password in `sentinel.password`".into(),
                    );
                }
                if self.tls.is_some() {
                    issue("tls", "TLS to Redis is not supported with `sentinel` yet".into());
                }
            }
            (Some(url), _, _) => {
                if url.as_str().into_connection_info().is_err() {
                    issue("url", format!("not a redis:// URL: {}", redact_url(url)));
                }
            }
            (None, false, _) => {
                for (i, node) in self.cluster_nodes.iter().enumerate() {
                    if node.as_str().into_connection_info().is_err() {
                        issue(
                            &format!("cluster_nodes[{i}]"),
                            format!("not a redis:// URL: {}", redact_url(node)),
                        );
                    }
                }
            }
        }
        if self.command_timeout.is_zero() {
            issue("command_timeout", "must be greater than zero".into());
        }
        if self.connect_timeout.is_zero() {
            issue("connect_timeout", "must be greater than zero".into());
        }
        if let Some(Err(e)) = self.password.as_ref().map(SecretRef::resolve) {
            issue("password", e);
        }
        let urls: Vec<&String> = self.url.iter().chain(&self.cluster_nodes).collect();
        if urls.iter().any(|u| u.contains("#insecure")) {
            issue(
                if self.url.is_some() { "url" } else { "cluster_nodes" },
                "`#insecure` turns certificate verification off, which payguard does not allow; put the server's CA in `tls.ca`".into(),
            );
        }
        if let Some(tls) = &self.tls {
            if urls.iter().any(|u| !u.starts_with("rediss://")) {
                issue("tls", "needs `rediss://` URLs (`redis://` is plain TCP)".into());
            }
            if let Err((path, msg)) = tls.certificates() {
                issue(&format!("tls.{path}"), msg);
            }
        }
        issues
    }

    /// The TLS material for the client: `None` without a `tls` section.
    fn tls_certificates(&self) -> Result<Option<TlsCertificates>, StoreError> {
        match &self.tls {
            None => Ok(None),
            Some(tls) => tls
                .certificates()
                .map(Some)
                .map_err(|(path, msg)| StoreError::Unavailable(format!("invalid store.redis.tls.{path}: {msg}"))),
        }
    }
}

/// Reads a PEM reference and checks it holds at least one block of `label` (a `CERTIFICATE`,
/// or a key whose label ends in `PRIVATE KEY`), so a wrong file is a config error, not a
/// handshake failure at run time.
fn pem_blocks(source: &SecretRef, label: &str) -> Result<Vec<u8>, String> {
    let secret = source.resolve()?;
    let blocks = pem::parse_many(secret.expose()).map_err(|_| format!("{} is not PEM", source.describe()))?;
    if !blocks.iter().any(|b| b.tag().ends_with(label)) {
        return Err(format!("{} holds no {label} block", source.describe()));
    }
    Ok(secret.expose().to_vec())
}

impl RedisTlsConfig {
    /// Resolves and checks the PEM material; errors are (key under `tls`, message).
    fn certificates(&self) -> Result<TlsCertificates, (String, String)> {
        let root_cert = match &self.ca {
            Some(ca) => Some(pem_blocks(ca, "CERTIFICATE").map_err(|e| ("ca".to_string(), e))?),
            None => None,
        };
        let client_tls = match (&self.client_cert, &self.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: pem_blocks(cert, "CERTIFICATE").map_err(|e| ("client_cert".to_string(), e))?,
                client_key: pem_blocks(key, "PRIVATE KEY").map_err(|e| ("client_key".to_string(), e))?,
            }),
            (Some(_), None) => return Err(("client_key".into(), "required with `client_cert`".into())),
            (None, Some(_)) => return Err(("client_cert".into(), "required with `client_key`".into())),
        };
        Ok(TlsCertificates { client_tls, root_cert })
    }
}

/// The operation scripts: `lua/lib.lua` followed by the operation's own file.
struct Scripts {
    take_buckets: Script,
    refund_buckets: Script,
    claim_nonce: Script,
    count: Script,
    guard: Script,
    dedup_claim: Script,
    dedup_complete: Script,
    dedup_release: Script,
    set_add: Script,
    set_remove: Script,
    set_contains: Script,
    set_members: Script,
    uncount: Script,
    generation: Script,
}

macro_rules! lua {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../../lua/lib.lua"),
            "\n",
            include_str!(concat!("../../lua/", $file))
        ))
    };
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    take_buckets: lua!("take_buckets.lua"),
    refund_buckets: lua!("refund_buckets.lua"),
    claim_nonce: lua!("claim_nonce.lua"),
    count: lua!("count.lua"),
    guard: lua!("guard.lua"),
    dedup_claim: lua!("dedup_claim.lua"),
    dedup_complete: lua!("dedup_complete.lua"),
    dedup_release: lua!("dedup_release.lua"),
    set_add: lua!("set_add.lua"),
    set_remove: lua!("set_remove.lua"),
    set_contains: lua!("set_contains.lua"),
    set_members: lua!("set_members.lua"),
    uncount: lua!("uncount.lua"),
    generation: lua!("generation.lua"),
});

/// The keys of a guard batch that share one Cluster slot: whether the deny check and the nonce
/// are among them, and the indexes of its buckets and counters.
#[derive(Debug, Default)]
struct GuardPart {
    deny: bool,
    nonce: bool,
    buckets: Vec<usize>,
    counters: Vec<usize>,
}

/// A multiplexed connection that reconnects in the background.
#[derive(Clone)]
pub(crate) enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

/// [`Store`] on Redis standalone or Redis Cluster. Cheap to clone.
///
/// The connection may not exist yet: payguard starts while Redis is still unreachable (a pod
/// whose Redis comes up later must not crash-loop), and until the background connect succeeds
/// every call fails at once with [`StoreError::Unavailable`], so each rule applies its
/// `on_store_error` policy exactly as during an outage.
#[derive(Clone)]
pub struct RedisStore {
    conn: Arc<ArcSwapOption<Connection>>,
    cluster: bool,
    prefix: String,
    command_timeout: Duration,
    /// Written into the generation markers this payguard creates.
    instance_id: Arc<str>,
    markers: Arc<Markers>,
    losses: Arc<DataLossLog>,
    /// With `sentinel`: wakes the task that follows the master, after a failed call.
    wake: Option<Arc<tokio::sync::Notify>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.cluster { "cluster" } else { "standalone" };
        f.debug_struct("RedisStore")
            .field("mode", &mode)
            .field("connected", &self.conn.load().is_some())
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

/// Maps a client error; the text never includes the URL (which could carry a password).
pub(crate) fn store_error(e: RedisError) -> StoreError {
    if e.is_timeout() {
        return StoreError::Unavailable("timed out".to_string());
    }
    match e.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreError::Protocol(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn protocol(what: &str) -> StoreError {
    StoreError::Protocol(format!("unexpected reply to {what}"))
}

/// What a connection attempt needs, resolved once from the config (secrets read at start).
#[derive(Clone)]
struct ConnectSettings {
    cfg: RedisStoreConfig,
    password: Option<String>,
    tls: Option<TlsCertificates>,
    sentinel: Option<SentinelSettings>,
}

impl ConnectSettings {
    fn resolve(cfg: &RedisStoreConfig) -> Result<Self, StoreError> {
        if let Some((path, msg)) = cfg.validate().into_iter().next() {
            return Err(StoreError::Unavailable(format!("invalid store.redis.{path}: {msg}")));
        }
        let password = match &cfg.password {
            Some(secret) => {
                let secret = secret.resolve().map_err(StoreError::Unavailable)?;
                Some(secret.expose_str().map_err(StoreError::Unavailable)?.to_string())
            }
            None => None,
        };
        Ok(Self {
            cfg: cfg.clone(),
            password,
            tls: cfg.tls_certificates()?,
            sentinel: cfg.sentinel.as_ref().map(SentinelSettings::resolve).transpose()?,
        })
    }

    /// One attempt: connect and `PING` (a connection is not proof of access: `PING` fails on a
    /// wrong or missing password), within `connect_timeout`.
    async fn establish(&self) -> Result<Connection, StoreError> {
        let timeout = self.cfg.connect_timeout;
        let attempt = async {
            let conn = match &self.sentinel {
                Some(sentinel) => {
                    let (client, _) = redis_sentinel::find_master(&mut sentinel.sentinel_client()?).await?;
                    Connection::Standalone(standalone_manager(client, &self.cfg).await?)
                }
                None => open_connection(&self.cfg, self.password.as_deref(), self.tls.clone()).await?,
            };
            ping(&conn).await?;
            Ok(conn)
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| StoreError::Timeout(timeout))?
    }

    /// With `sentinel`: keeps `store`'s connection on the current master from now on.
    fn follow_master(&self, store: &RedisStore) {
        let (Some(settings), Some(wake)) = (&self.sentinel, &store.wake) else {
            return;
        };
        let cfg = self.cfg.clone();
        let follower = redis_sentinel::Follower {
            settings: settings.clone(),
            slot: store.conn.clone(),
            wake: wake.clone(),
            master_addr: String::new(),
            command_timeout: cfg.command_timeout,
            open: move |client: redis::Client| {
                let cfg = cfg.clone();
                async move {
                    let manager = standalone_manager(client, &cfg).await?;
                    ping(&Connection::Standalone(manager.clone())).await?;
                    Ok(manager)
                }
            },
        };
        tokio::spawn(follower.run());
    }
}

impl RedisStore {
    fn unconnected(cfg: &RedisStoreConfig) -> Self {
        let cluster = !cfg.cluster_nodes.is_empty();
        Self {
            conn: Arc::new(ArcSwapOption::empty()),
            cluster,
            prefix: cfg.key_prefix.clone(),
            command_timeout: cfg.command_timeout,
            instance_id: lease_token().into(),
            markers: Arc::new(Markers::new(&cfg.key_prefix, cluster)),
            losses: Arc::new(DataLossLog::new(cfg.data_loss_notice_for, cluster)),
            wake: cfg.sentinel.as_ref().map(|_| Arc::new(tokio::sync::Notify::new())),
        }
    }

    /// Whether the first connection has been made (afterwards the client reconnects by itself).
    pub(crate) fn is_connected(&self) -> bool {
        self.conn.load().is_some()
    }

    /// Waits up to `timeout` for the first connection; whether it is there.
    pub(crate) async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_connected() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// Connects to Redis (standalone or Cluster) as configured and waits for it, within
/// `connect_timeout`.
pub async fn connect(cfg: &RedisStoreConfig) -> Result<RedisStore, StoreError> {
    let settings = ConnectSettings::resolve(cfg)?;
    let store = RedisStore::unconnected(cfg);
    store.conn.store(Some(Arc::new(settings.establish().await?)));
    settings.follow_master(&store);
    Ok(store)
}

/// First retry delay of the background connect, and the most it backs off to.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A store that connects in the background (a task on the current Tokio runtime), retrying
/// with backoff until Redis answers. Fails only on an invalid section or unreadable secret.
pub(crate) fn connect_in_background(cfg: &RedisStoreConfig) -> Result<RedisStore, StoreError> {
    let settings = ConnectSettings::resolve(cfg)?;
    let store = RedisStore::unconnected(cfg);
    let connecting = store.clone();
    tokio::spawn(async move {
        let mut delay = RETRY_FIRST;
        for attempt in 1u64.. {
            match settings.establish().await {
                Ok(conn) => {
                    connecting.conn.store(Some(Arc::new(conn)));
                    settings.follow_master(&connecting);
                    tracing::info!(attempt, "connected to Redis");
                    return;
                }
                // The first failure, then one line a minute or so: enough to see, not a flood.
                Err(e) if attempt == 1 || attempt % 12 == 0 => tracing::warn!(
                    attempt,
                    error = %e,
                    "cannot connect to Redis yet; retrying in the background, rules apply their on_store_error policy meanwhile"
                ),
                Err(_) => {}
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_MAX);
        }
    });
    Ok(store)
}

async fn open_connection(
    cfg: &RedisStoreConfig,
    password: Option<&str>,
    tls: Option<TlsCertificates>,
) -> Result<Connection, StoreError> {
    if let Some(url) = &cfg.url {
        let mut info = url.as_str().into_connection_info().map_err(store_error)?;
        if let Some(password) = password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = match tls {
            Some(certs) => redis::Client::build_with_tls(info, certs),
            None => redis::Client::open(info),
        }
        .map_err(store_error)?;
        return Ok(Connection::Standalone(standalone_manager(client, cfg).await?));
    }
    let mut builder = ClusterClientBuilder::new(cfg.cluster_nodes.iter().map(String::as_str))
        .connection_timeout(cfg.connect_timeout)
        .response_timeout(cfg.command_timeout)
        .retries(2)
        .min_retry_wait(10)
        .max_retry_wait(300);
    if let Some(password) = password {
        builder = builder.password(password);
    }
    if let Some(certs) = tls {
        builder = builder.certs(certs);
    }
    let client = builder.build().map_err(store_error)?;
    Ok(Connection::Cluster(
        client.get_async_connection().await.map_err(store_error)?,
    ))
}

/// A connection manager on one server (standalone, or the master Sentinel names).
async fn standalone_manager(client: redis::Client, cfg: &RedisStoreConfig) -> Result<ConnectionManager, StoreError> {
    // Few, short reconnection attempts: while Redis is down every call fails within
    // `command_timeout` anyway, and a fresh attempt starts on the next call after these.
    let manager_cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout))
        .set_response_timeout(Some(cfg.command_timeout))
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(300));
    ConnectionManager::new_with_config(client, manager_cfg)
        .await
        .map_err(store_error)
}

async fn ping(conn: &Connection) -> Result<(), StoreError> {
    let cmd = redis::cmd("PING");
    let reply: redis::RedisResult<String> = match conn {
        Connection::Standalone(c) => cmd.query_async(&mut c.clone()).await,
        Connection::Cluster(c) => cmd.query_async(&mut c.clone()).await,
    };
    reply.map(drop).map_err(store_error)
}

/// One token bucket's arguments, as `lua/lib.lua` `parse_buckets` reads them.
fn bucket_args(inv: &mut ScriptInvocation<'_>, key: String, b: &BucketSpec) {
    inv.key(key)
        .arg(b.capacity)
        .arg(b.refill_tokens)
        .arg(millis(b.refill_period))
        .arg(b.cost)
        .arg(if b.enforce { 1 } else { 0 });
}

/// Four integers (allowed, remaining, retry_after_ms, reset_after_ms) as a decision.
fn decision(v: &[i64]) -> Option<BucketDecision> {
    let ms = |x: i64| Duration::from_millis(u64::try_from(x).unwrap_or(0));
    match v {
        [allowed, remaining, retry, reset] => Some(BucketDecision {
            allowed: *allowed == 1,
            remaining: u64::try_from(*remaining).unwrap_or(0),
            retry_after: ms(*retry),
            reset_after: ms(*reset),
        }),
        _ => None,
    }
}

fn decisions(flat: &[i64], n: usize) -> Result<Vec<BucketDecision>, StoreError> {
    if flat.len() != n * 4 {
        return Err(protocol("bucket decisions"));
    }
    flat.chunks(4)
        .map(|c| decision(c).ok_or_else(|| protocol("bucket decisions")))
        .collect()
}

fn non_negative(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// `<prefix>{<kind>:<key>}`: the hash tag is the whole logical key (see the module docs).
fn store_key(prefix: &str, kind: &str, key: &str) -> String {
    format!("{prefix}{{{kind}:{key}}}")
}

impl RedisStore {
    fn key(&self, kind: &str, key: &str) -> String {
        store_key(&self.prefix, kind, key)
    }

    /// The counter's keys: sliding windows have an event set and a running sum.
    fn counter_keys(&self, spec: &CounterSpec) -> (String, Option<String>) {
        match &spec.window {
            CounterWindow::Sliding(_) => {
                let events = self.key("cs", &spec.key);
                let sum = format!("{events}:sum");
                (events, Some(sum))
            }
            CounterWindow::Fixed { window_id, .. } => (self.key("cf", &format!("{}@{window_id}", spec.key)), None),
        }
    }

    /// One counter's keys and arguments, as `lua/lib.lua` `parse_counters` reads them.
    fn counter_args(&self, inv: &mut ScriptInvocation<'_>, spec: &CounterSpec, incr: u64) {
        let (key, sum) = self.counter_keys(spec);
        inv.key(key);
        if let Some(sum) = sum {
            inv.key(sum);
        }
        match &spec.window {
            CounterWindow::Sliding(window) => inv.arg("s").arg(millis(*window)),
            CounterWindow::Fixed { ttl, .. } => inv.arg("f").arg(millis(*ttl)),
        };
        inv.arg(incr);
    }

    /// The connection, or [`StoreError::Unavailable`] before the first connect succeeded.
    fn connection(&self) -> Result<Arc<Connection>, StoreError> {
        self.conn
            .load_full()
            .ok_or_else(|| StoreError::Unavailable("not connected to Redis yet".to_string()))
    }

    async fn invoke<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T, StoreError> {
        let conn = self.connection()?;
        let reply = match conn.as_ref() {
            Connection::Standalone(c) => inv.invoke_async(&mut c.clone()).await,
            Connection::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
        };
        reply.map_err(|e| {
            self.call_failed();
            if e.is_timeout() {
                StoreError::Timeout(self.command_timeout)
            } else {
                store_error(e)
            }
        })
    }

    /// With `sentinel`, a failed call (the master gone, or demoted: `READONLY`) has the master
    /// looked up again at once rather than at the next periodic check.
    fn call_failed(&self) {
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }

    /// One plain command (not a script), on the current connection.
    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let conn = self.connection()?;
        let reply = match conn.as_ref() {
            Connection::Standalone(c) => cmd.query_async(&mut c.clone()).await,
            Connection::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        };
        reply.map_err(|e| {
            self.call_failed();
            store_error(e)
        })
    }

    /// Runs `op`, failing with [`StoreError::Timeout`] after `command_timeout`. While Redis is
    /// down this is the most a call costs.
    async fn bounded<T>(&self, op: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        tokio::time::timeout(self.command_timeout, op)
            .await
            .map_err(|_| StoreError::Timeout(self.command_timeout))?
    }

    fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Bucket indexes grouped by Cluster slot, in first-seen order; one group on standalone.
    fn slot_groups(&self, buckets: &[BucketSpec]) -> Vec<Vec<usize>> {
        if !self.is_cluster() {
            return vec![(0..buckets.len()).collect()];
        }
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut by_slot: HashMap<Slot, usize> = HashMap::new();
        for (i, b) in buckets.iter().enumerate() {
            let slot = Slot::for_key(self.key("b", &b.key));
            let g = *by_slot.entry(slot).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            if let Some(group) = groups.get_mut(g) {
                group.push(i);
            }
        }
        groups
    }

    /// `take_buckets.lua` on one slot's buckets. Returns decisions and whether every enforced
    /// bucket held its cost.
    async fn take_group(&self, buckets: &[&BucketSpec], take: bool) -> Result<(Vec<BucketDecision>, bool), StoreError> {
        let mut inv = SCRIPTS.take_buckets.prepare_invoke();
        inv.arg(if take { "take" } else { "check" }).arg(buckets.len());
        for b in buckets {
            bucket_args(&mut inv, self.key("b", &b.key), b);
        }
        let flat: Vec<i64> = self.invoke(&inv).await?;
        let (ok, rest) = flat.split_first().ok_or_else(|| protocol("take_buckets"))?;
        Ok((decisions(rest, buckets.len())?, *ok == 1))
    }

    /// Takes from buckets. On standalone one script call. On Cluster a batch whose buckets sit
    /// in several slots cannot be one script, so it is decided slot by slot: once a slot's
    /// enforced bucket refuses, later slots are only checked, and enforced tokens already taken
    /// in earlier slots are refunded. All-or-nothing then holds for the outcome, though another
    /// request may briefly see the tokens taken.
    async fn take_buckets_unbounded(&self, buckets: &[BucketSpec]) -> Result<(Vec<BucketDecision>, bool), StoreError> {
        if buckets.is_empty() {
            return Ok((Vec::new(), true));
        }
        let mut out: Vec<Option<BucketDecision>> = vec![None; buckets.len()];
        let mut enforced_ok = true;
        let mut taken: Vec<Vec<usize>> = Vec::new();
        for group in self.slot_groups(buckets) {
            let specs: Vec<&BucketSpec> = group.iter().filter_map(|&i| buckets.get(i)).collect();
            let (ds, ok) = self.take_group(&specs, enforced_ok).await?;
            if ok && enforced_ok {
                taken.push(group.clone());
            }
            enforced_ok &= ok;
            for (&i, d) in group.iter().zip(ds) {
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(d);
                }
            }
        }
        if !enforced_ok {
            for group in taken {
                let refund: Vec<usize> = group
                    .into_iter()
                    .filter(|&i| buckets.get(i).is_some_and(|b| b.enforce))
                    .collect();
                self.refund(buckets, &refund, &mut out).await?;
            }
        }
        let out: Option<Vec<BucketDecision>> = out.into_iter().collect();
        Ok((out.ok_or_else(|| protocol("take_buckets"))?, enforced_ok))
    }

    /// Gives back the cost of the enforced buckets at `idx` (one slot) and updates their decisions.
    async fn refund(
        &self,
        buckets: &[BucketSpec],
        idx: &[usize],
        out: &mut [Option<BucketDecision>],
    ) -> Result<(), StoreError> {
        for (i, remaining, reset) in self.refund_into(buckets, idx).await? {
            if let Some(Some(d)) = out.get_mut(i) {
                d.remaining = remaining;
                d.reset_after = reset;
            }
        }
        Ok(())
    }

    async fn claim_nonce_unbounded(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut inv = SCRIPTS.claim_nonce.prepare_invoke();
        inv.key(self.key("n", key)).arg(millis(ttl));
        Ok(self.invoke::<i64>(&inv).await? == 1)
    }

    async fn count_unbounded(&self, spec: &CounterSpec, incr: u64) -> Result<u64, StoreError> {
        let mut inv = SCRIPTS.count.prepare_invoke();
        self.counter_args(&mut inv, spec, incr);
        Ok(non_negative(self.invoke::<i64>(&inv).await?))
    }

    async fn set_contains_unbounded(&self, set: &str, member: &str) -> Result<bool, StoreError> {
        let mut inv = SCRIPTS.set_contains.prepare_invoke();
        inv.key(self.key("s", set)).arg(member);
        Ok(self.invoke::<i64>(&inv).await? == 1)
    }

    /// Every key a guard batch touches, to tell whether they share one slot.
    fn guard_keys(&self, batch: &GuardBatch) -> Vec<String> {
        let mut keys = Vec::new();
        if let Some((set, _)) = &batch.deny {
            keys.push(self.key("s", set));
        }
        if let Some((nonce, _)) = &batch.nonce {
            keys.push(self.key("n", nonce));
        }
        keys.extend(batch.buckets.iter().map(|b| self.key("b", &b.key)));
        keys.extend(batch.counters.iter().map(|c| self.counter_keys(c).0));
        keys
    }

    /// The whole batch as one `guard.lua` call: always on standalone ("one store round trip per
    /// guarded request"), and on Cluster when every key shares a slot.
    async fn guard_in_one_call(&self, batch: &GuardBatch) -> Result<GuardOutcome, StoreError> {
        let all = GuardPart {
            deny: batch.deny.is_some(),
            nonce: batch.nonce.is_some(),
            buckets: (0..batch.buckets.len()).collect(),
            counters: (0..batch.counters.len()).collect(),
        };
        self.guard_part(batch, &all, None).await
    }

    /// `guard.lua` on the part of `batch` that `part` names; `op` names sliding-counter events so
    /// that they can be taken back (Cluster).
    async fn guard_part(
        &self,
        batch: &GuardBatch,
        part: &GuardPart,
        op: Option<&str>,
    ) -> Result<GuardOutcome, StoreError> {
        let mut inv = SCRIPTS.guard.prepare_invoke();
        let slot = self.marker_args(&mut inv, || self.first_key(batch, part));
        match batch.deny.as_ref().filter(|_| part.deny) {
            Some((set, member)) => inv.key(self.key("s", set)).arg(1).arg(member.as_str()),
            None => inv.arg(0).arg(""),
        };
        match batch.nonce.as_ref().filter(|_| part.nonce) {
            Some((nonce, ttl)) => inv
                .key(self.key("n", nonce))
                .arg(1)
                .arg(millis(*ttl))
                .arg(batch.nonce_timestamp),
            None => inv.arg(0).arg(0).arg(0),
        };
        inv.arg(part.buckets.len());
        for b in part.buckets.iter().filter_map(|&i| batch.buckets.get(i)) {
            bucket_args(&mut inv, self.key("b", &b.key), b);
        }
        inv.arg(part.counters.len());
        for c in part.counters.iter().filter_map(|&i| batch.counters.get(i)) {
            self.counter_args(&mut inv, c, c.incr);
        }
        if let Some(op) = op {
            inv.arg(op);
        }
        let flat: Vec<i64> = self.invoke(&inv).await?;
        let bad = || protocol("guard");
        let (&lost, rest) = flat.split_first().ok_or_else(bad)?;
        let (&fence, rest) = rest.split_first().ok_or_else(bad)?;
        self.generation_seen(slot, lost == 1, fence, DataLossSource::Guard);
        let (&denied, rest) = rest.split_first().ok_or_else(bad)?;
        let (&nonce, rest) = rest.split_first().ok_or_else(bad)?;
        let (&nb, rest) = rest.split_first().ok_or_else(bad)?;
        let nb = usize::try_from(nb).map_err(|_| bad())?;
        let (flat_buckets, rest) = rest.split_at_checked(nb * 4).ok_or_else(bad)?;
        let (&nc, counters) = rest.split_first().ok_or_else(bad)?;
        if usize::try_from(nc).ok() != Some(counters.len()) {
            return Err(bad());
        }
        Ok(GuardOutcome {
            denied: denied == 1,
            nonce_replayed: nonce == 1,
            nonce_before_store_loss: nonce == 2,
            buckets: decisions(flat_buckets, nb)?,
            counters: counters.iter().map(|&v| non_negative(v)).collect(),
        })
    }

    /// The first key of `part` (its slot is the part's slot).
    fn first_key(&self, batch: &GuardBatch, part: &GuardPart) -> Option<String> {
        if let Some((set, _)) = batch.deny.as_ref().filter(|_| part.deny) {
            return Some(self.key("s", set));
        }
        if let Some((nonce, _)) = batch.nonce.as_ref().filter(|_| part.nonce) {
            return Some(self.key("n", nonce));
        }
        if let Some(b) = part.buckets.first().and_then(|&i| batch.buckets.get(i)) {
            return Some(self.key("b", &b.key));
        }
        part.counters
            .first()
            .and_then(|&i| batch.counters.get(i))
            .map(|c| self.counter_keys(c).0)
    }

    /// Adds the generation marker of the slot of `key_in_slot` (called only when markers are
    /// per slot) as KEYS[1], with its arguments first in ARGV (lua/lib.lua
    /// `store_generation`). Returns the slot, for [`RedisStore::generation_seen`].
    fn marker_args(&self, inv: &mut ScriptInvocation<'_>, key_in_slot: impl FnOnce() -> Option<String>) -> Slot {
        let (slot, marker) = match self.markers.per_slot().then(key_in_slot).flatten() {
            Some(key) => self.markers.for_key(&key),
            None => self.markers.any(),
        };
        let first_use = !self.markers.is_used(slot);
        inv.key(marker)
            .arg(self.instance_id.as_ref())
            .arg(millis(MARKER_TTL))
            .arg(if first_use { 1 } else { 0 });
        slot
    }

    /// What a script reported about its slot's marker: the marker exists from now on, and when
    /// it was missing (`lost`) the loss is recorded; on Cluster every other used slot is then
    /// checked at once, so one lost master is one detection rather than one per slot.
    fn generation_seen(&self, slot: Slot, lost: bool, fence_ms: i64, source: DataLossSource) {
        self.markers.mark_used(slot);
        if lost && self.losses.record(fence_ms, source) && self.markers.per_slot() {
            self.sweep(source);
        }
    }

    /// Checks every used slot's marker in the background (Cluster, after a detection).
    fn sweep(&self, source: DataLossSource) {
        if !self.losses.start_sweep() {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let markers = store.markers.all_used();
            let checks = futures::stream::iter(markers)
                .map(|(slot, key)| {
                    let store = &store;
                    async move { (slot, store.bounded(store.read_generation(slot, &key)).await) }
                })
                .buffer_unordered(64);
            futures::pin_mut!(checks);
            while let Some((slot, result)) = checks.next().await {
                if let Ok((lost, fence)) = result {
                    store.generation_seen_quietly(slot, lost, fence, source);
                }
            }
            store.losses.end_sweep();
        });
    }

    /// [`RedisStore::generation_seen`] without starting another sweep.
    fn generation_seen_quietly(&self, slot: Slot, lost: bool, fence_ms: i64, source: DataLossSource) {
        self.markers.mark_used(slot);
        if lost {
            self.losses.record(fence_ms, source);
        }
    }

    /// `generation.lua` on one marker: (lost, fence_ms).
    async fn read_generation(&self, slot: Slot, marker: &str) -> Result<(bool, i64), StoreError> {
        let mut inv = SCRIPTS.generation.prepare_invoke();
        let first_use = !self.markers.is_used(slot);
        inv.key(marker)
            .arg(self.instance_id.as_ref())
            .arg(millis(MARKER_TTL))
            .arg(if first_use { 1 } else { 0 });
        let reply: Vec<i64> = self.invoke(&inv).await?;
        match reply.as_slice() {
            [lost, fence] => Ok((*lost == 1, *fence)),
            _ => Err(protocol("generation")),
        }
    }

    /// The batch's keys grouped by Cluster slot, in first-seen order.
    fn guard_parts(&self, batch: &GuardBatch) -> Vec<GuardPart> {
        let mut parts: Vec<(Slot, GuardPart)> = Vec::new();
        let mut part_of = |key: String| -> usize {
            let slot = Slot::for_key(key);
            match parts.iter().position(|(s, _)| *s == slot) {
                Some(i) => i,
                None => {
                    parts.push((slot, GuardPart::default()));
                    parts.len() - 1
                }
            }
        };
        let deny = batch.deny.as_ref().map(|(set, _)| part_of(self.key("s", set)));
        let nonce = batch.nonce.as_ref().map(|(n, _)| part_of(self.key("n", n)));
        let buckets: Vec<usize> = batch.buckets.iter().map(|b| part_of(self.key("b", &b.key))).collect();
        let counters: Vec<usize> = batch.counters.iter().map(|c| part_of(self.counter_keys(c).0)).collect();
        if let Some(i) = deny {
            parts[i].1.deny = true;
        }
        if let Some(i) = nonce {
            parts[i].1.nonce = true;
        }
        for (b, i) in buckets.into_iter().enumerate() {
            parts[i].1.buckets.push(b);
        }
        for (c, i) in counters.into_iter().enumerate() {
            parts[i].1.counters.push(c);
        }
        parts.into_iter().map(|(_, p)| p).collect()
    }

    /// A guard batch spread over several Cluster slots, at one round trip of latency: every
    /// slot's part runs as its own `guard.lua` call, all at once. When the combined answer stops
    /// what a part already did — the client is denied, the nonce replayed, or an enforced bucket
    /// in another slot refused — a second, concurrent round takes it back (nonce claim, bucket
    /// tokens, counter increments), so the outcome is the one a single call would give: a denied
    /// or replayed request leaves no trace, a rate-limited one claims its nonce and counts no
    /// order. Another request may briefly see the state in between, which a Cluster cannot
    /// prevent across slots.
    async fn guard_by_slot(&self, batch: &GuardBatch) -> Result<GuardOutcome, StoreError> {
        let parts = self.guard_parts(batch);
        let op = lease_token();
        let answers = futures::future::try_join_all(parts.iter().map(|p| self.guard_part(batch, p, Some(&op)))).await?;

        let denied = answers.iter().any(|a| a.denied);
        let before_loss = !denied && answers.iter().any(|a| a.nonce_before_store_loss);
        let replayed = !denied && !before_loss && answers.iter().any(|a| a.nonce_replayed);
        // A part that stopped early (its deny or nonce fired) touched nothing else.
        let ran = |a: &GuardOutcome| !a.denied && !a.nonce_replayed && !a.nonce_before_store_loss;
        let enforced_ok = parts.iter().zip(&answers).filter(|(_, a)| ran(a)).all(|(p, a)| {
            p.buckets
                .iter()
                .zip(&a.buckets)
                .all(|(&i, d)| d.allowed || batch.buckets.get(i).is_some_and(|b| !b.enforce))
        });
        let stop_all = denied || replayed || before_loss;

        let mut buckets: Vec<Option<BucketDecision>> = vec![None; batch.buckets.len()];
        let mut counters: Vec<u64> = vec![0; batch.counters.len()];
        let mut undo = Vec::new();
        for (p, a) in parts.iter().zip(&answers) {
            let part_ok = p
                .buckets
                .iter()
                .zip(&a.buckets)
                .all(|(&i, d)| d.allowed || batch.buckets.get(i).is_some_and(|b| !b.enforce));
            for (&i, d) in p.buckets.iter().zip(&a.buckets) {
                buckets[i] = Some(*d);
            }
            for (&i, v) in p.counters.iter().zip(&a.counters) {
                counters[i] = *v;
            }
            if !ran(a) {
                continue;
            }
            // What this part debited and incremented, and must give back.
            let refund: Vec<usize> = p
                .buckets
                .iter()
                .zip(&a.buckets)
                .filter(|(&i, d)| {
                    let enforce = batch.buckets.get(i).is_some_and(|b| b.enforce);
                    d.allowed && ((enforce && part_ok && (stop_all || !enforced_ok)) || (!enforce && stop_all))
                })
                .map(|(&i, _)| i)
                .collect();
            let uncount: Vec<(usize, usize)> = if part_ok && (stop_all || !enforced_ok) {
                p.counters
                    .iter()
                    .enumerate()
                    .filter(|(_, &i)| batch.counters.get(i).is_some_and(|c| c.incr > 0))
                    .map(|(k, &i)| (k + 1, i))
                    .collect()
            } else {
                Vec::new()
            };
            let release_nonce = denied && p.nonce;
            if !refund.is_empty() || !uncount.is_empty() || release_nonce {
                undo.push((refund, uncount, release_nonce));
            }
        }
        let undone = futures::future::try_join_all(undo.iter().map(|(refund, uncount, release_nonce)| async {
            let refunded = self.refund_into(&batch.buckets, refund).await?;
            let uncounted = self.uncount(batch, uncount, &op).await?;
            if *release_nonce {
                if let Some((nonce, _)) = &batch.nonce {
                    self.delete(&self.key("n", nonce)).await?;
                }
            }
            Ok::<_, StoreError>((refunded, uncounted))
        }))
        .await?;
        if stop_all {
            return Ok(GuardOutcome {
                denied,
                nonce_replayed: replayed,
                nonce_before_store_loss: before_loss,
                ..GuardOutcome::default()
            });
        }
        for (refunded, uncounted) in undone {
            for (i, remaining, reset) in refunded {
                if let Some(Some(d)) = buckets.get_mut(i) {
                    d.remaining = remaining;
                    d.reset_after = reset;
                }
            }
            for (i, v) in uncounted {
                counters[i] = v;
            }
        }
        let buckets: Option<Vec<BucketDecision>> = buckets.into_iter().collect();
        Ok(GuardOutcome {
            denied: false,
            nonce_replayed: false,
            nonce_before_store_loss: false,
            buckets: buckets.ok_or_else(|| protocol("guard"))?,
            counters,
        })
    }

    /// `refund_buckets.lua` on the buckets at `idx` (one slot): (index, remaining, reset_after).
    async fn refund_into(
        &self,
        buckets: &[BucketSpec],
        idx: &[usize],
    ) -> Result<Vec<(usize, u64, Duration)>, StoreError> {
        if idx.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = SCRIPTS.refund_buckets.prepare_invoke();
        inv.arg(idx.len());
        for b in idx.iter().filter_map(|&i| buckets.get(i)) {
            bucket_args(&mut inv, self.key("b", &b.key), b);
        }
        let flat: Vec<i64> = self.invoke(&inv).await?;
        if flat.len() != idx.len() * 2 {
            return Err(protocol("refund_buckets"));
        }
        Ok(idx
            .iter()
            .zip(flat.chunks(2))
            .map(|(&i, pair)| {
                let (remaining, reset) = (pair.first().copied().unwrap_or(0), pair.get(1).copied().unwrap_or(0));
                (i, non_negative(remaining), Duration::from_millis(non_negative(reset)))
            })
            .collect())
    }

    /// `uncount.lua` on counters of one slot, given as (position in their guard.lua call,
    /// index in the batch): (index, value afterwards).
    async fn uncount(
        &self,
        batch: &GuardBatch,
        counters: &[(usize, usize)],
        op: &str,
    ) -> Result<Vec<(usize, u64)>, StoreError> {
        if counters.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = SCRIPTS.uncount.prepare_invoke();
        inv.arg(counters.len());
        for &(position, i) in counters {
            let Some(c) = batch.counters.get(i) else {
                return Err(protocol("uncount"));
            };
            let (key, sum) = self.counter_keys(c);
            inv.key(key);
            if let Some(sum) = sum {
                inv.key(sum);
            }
            match &c.window {
                CounterWindow::Sliding(window) => inv.arg("s").arg(millis(*window)),
                CounterWindow::Fixed { ttl, .. } => inv.arg("f").arg(millis(*ttl)),
            };
            inv.arg(c.incr).arg(format!("{op}:{position}:{}", c.incr));
        }
        let values: Vec<i64> = self.invoke(&inv).await?;
        if values.len() != counters.len() {
            return Err(protocol("uncount"));
        }
        Ok(counters
            .iter()
            .zip(values)
            .map(|(&(_, i), v)| (i, non_negative(v)))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.query::<i64>(redis::cmd("DEL").arg(key)).await.map(drop)
    }

    async fn dedup_token_op(
        &self,
        script: &Script,
        key: &str,
        token: &str,
        keep: Option<Duration>,
    ) -> Result<bool, StoreError> {
        self.bounded(self.token_op(script, key, token, keep)).await
    }

    async fn token_op(
        &self,
        script: &Script,
        key: &str,
        token: &str,
        keep: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let mut inv = script.prepare_invoke();
        inv.key(self.key("d", key)).arg(token);
        if let Some(keep) = keep {
            inv.arg(millis(keep));
        }
        Ok(self.invoke::<i64>(&inv).await? == 1)
    }

    /// `dedup_claim.lua`, with the superseding key when it shares the claim's slot.
    async fn claim_unbounded(
        &self,
        key: &str,
        lease: Duration,
        superseded_by: Option<&str>,
    ) -> Result<DedupClaim, StoreError> {
        let token = lease_token();
        let mut inv = SCRIPTS.dedup_claim.prepare_invoke();
        let dedup_key = self.key("d", key);
        let slot = self.marker_args(&mut inv, || Some(dedup_key.clone()));
        inv.key(dedup_key);
        if let Some(other) = superseded_by {
            inv.key(self.key("d", other));
        }
        inv.arg(token.as_str()).arg(millis(lease));
        let reply: String = self.invoke(&inv).await?;
        let answer = match reply.strip_prefix("lost:").and_then(|r| r.split_once(':')) {
            Some((fence, answer)) => {
                let fence = fence.parse().map_err(|_| protocol("dedup_claim"))?;
                self.generation_seen(slot, true, fence, DataLossSource::Notification);
                answer
            }
            None => {
                self.generation_seen(slot, false, 0, DataLossSource::Notification);
                reply.as_str()
            }
        };
        match answer {
            "claimed" => Ok(DedupClaim::Claimed { token }),
            "inflight" => Ok(DedupClaim::InFlight),
            "done" => Ok(DedupClaim::Done),
            "superseded" => Ok(DedupClaim::Superseded),
            _ => Err(protocol("dedup_claim")),
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.connection()?;
        self.bounded(ping(&conn)).await
    }

    /// Reads the markers of the slots this payguard used (all of them on standalone, a rotating
    /// sample of [`HEALTH_SAMPLE`] on Cluster, which covers a lost master's many slots at once)
    /// and renews their TTL.
    async fn check_data_loss(&self) -> Result<(), StoreError> {
        let mut round = self.markers.health_round(HEALTH_SAMPLE);
        if round.is_empty() && !self.markers.per_slot() {
            // The single marker, created here on the first check at startup if need be.
            round.push(self.markers.any());
        }
        let results =
            futures::future::try_join_all(round.iter().map(|(slot, key)| async move {
                Ok::<_, StoreError>((*slot, self.read_generation(*slot, key).await?))
            }))
            .await?;
        for (slot, (lost, fence)) in results {
            self.generation_seen(slot, lost, fence, DataLossSource::HealthCheck);
        }
        Ok(())
    }

    fn data_loss(&self) -> Option<DataLoss> {
        self.losses.current()
    }

    fn take_data_loss_reports(&self) -> Vec<DataLoss> {
        self.losses.take_unreported()
    }

    async fn take_buckets(&self, buckets: &[BucketSpec]) -> Result<Vec<BucketDecision>, StoreError> {
        self.bounded(async { Ok(self.take_buckets_unbounded(buckets).await?.0) })
            .await
    }

    async fn claim_nonce(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.bounded(self.claim_nonce_unbounded(key, ttl)).await
    }

    async fn count(&self, spec: &CounterSpec) -> Result<u64, StoreError> {
        self.bounded(self.count_unbounded(spec, spec.incr)).await
    }

    async fn guard(&self, batch: &GuardBatch) -> Result<GuardOutcome, StoreError> {
        let one_call = !self.is_cluster() || {
            let mut slots = self.guard_keys(batch).into_iter().map(Slot::for_key);
            let first = slots.next();
            slots.all(|s| Some(s) == first)
        };
        if one_call {
            self.bounded(self.guard_in_one_call(batch)).await
        } else {
            self.bounded(self.guard_by_slot(batch)).await
        }
    }

    async fn dedup_claim(&self, key: &str, lease: Duration) -> Result<DedupClaim, StoreError> {
        self.bounded(self.claim_unbounded(key, lease, None)).await
    }

    /// One script call when both keys share a slot (always on standalone); on Cluster the claim
    /// and a read of the superseding key run concurrently, and a claim that turns out to be
    /// superseded is released again — one round trip of latency either way.
    async fn dedup_claim_unless(
        &self,
        key: &str,
        lease: Duration,
        superseded_by: &str,
    ) -> Result<DedupClaim, StoreError> {
        let same_slot =
            !self.is_cluster() || Slot::for_key(self.key("d", key)) == Slot::for_key(self.key("d", superseded_by));
        if same_slot {
            return self
                .bounded(self.claim_unbounded(key, lease, Some(superseded_by)))
                .await;
        }
        self.bounded(async {
            let exists = redis::cmd("EXISTS").arg(self.key("d", superseded_by)).clone();
            let (claim, superseded) = futures::try_join!(self.claim_unbounded(key, lease, None), async {
                self.query::<i64>(&exists).await.map(|n| n == 1)
            })?;
            match (claim, superseded) {
                (DedupClaim::Claimed { token }, true) => {
                    self.token_op(&SCRIPTS.dedup_release, key, &token, None).await?;
                    Ok(DedupClaim::Superseded)
                }
                (_, true) => Ok(DedupClaim::Superseded),
                (claim, false) => Ok(claim),
            }
        })
        .await
    }

    async fn dedup_complete(&self, key: &str, token: &str, keep: Duration) -> Result<bool, StoreError> {
        self.dedup_token_op(&SCRIPTS.dedup_complete, key, token, Some(keep))
            .await
    }

    async fn dedup_release(&self, key: &str, token: &str) -> Result<bool, StoreError> {
        self.dedup_token_op(&SCRIPTS.dedup_release, key, token, None).await
    }

    async fn set_add(&self, set: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut inv = SCRIPTS.set_add.prepare_invoke();
        inv.key(self.key("s", set)).arg(member).arg(millis(ttl));
        self.bounded(async { self.invoke::<i64>(&inv).await.map(drop) }).await
    }

    async fn set_remove(&self, set: &str, member: &str) -> Result<bool, StoreError> {
        let mut inv = SCRIPTS.set_remove.prepare_invoke();
        inv.key(self.key("s", set)).arg(member);
        self.bounded(async { Ok(self.invoke::<i64>(&inv).await? == 1) }).await
    }

    async fn set_contains(&self, set: &str, member: &str) -> Result<bool, StoreError> {
        self.bounded(self.set_contains_unbounded(set, member)).await
    }

    async fn set_members(&self, set: &str) -> Result<Vec<(String, Duration)>, StoreError> {
        let mut inv = SCRIPTS.set_members.prepare_invoke();
        inv.key(self.key("s", set));
        let pairs: Vec<(String, i64)> = self.bounded(self.invoke(&inv)).await?;
        let mut out: Vec<(String, Duration)> = pairs
            .into_iter()
            .map(|(m, ms)| (m, Duration::from_millis(non_negative(ms))))
            .collect();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_match_the_documented_values() {
        let cfg: RedisStoreConfig = serde_yaml_ng::from_str("url: redis://127.0.0.1:6379").unwrap();
        assert_eq!(cfg.key_prefix, "pg:");
        assert_eq!(cfg.command_timeout, Duration::from_millis(50));
        assert_eq!(cfg.connect_timeout, Duration::from_secs(1));
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let cfg: RedisStoreConfig = serde_yaml_ng::from_str("url: redis://h:1\ncommand_timeout: 20ms").unwrap();
        assert_eq!(cfg.command_timeout, Duration::from_millis(20));
        assert!(serde_yaml_ng::from_str::<RedisStoreConfig>("uri: redis://h:1").is_err());
    }

    #[test]
    fn validate_requires_exactly_one_of_url_and_cluster_nodes() {
        let none = RedisStoreConfig::default();
        assert_eq!(none.validate()[0].0, "url");
        let both = RedisStoreConfig {
            url: Some("redis://a:1".into()),
            cluster_nodes: vec!["redis://b:1".into()],
            ..RedisStoreConfig::default()
        };
        assert_eq!(both.validate()[0].0, "url");
        let bad_node = RedisStoreConfig {
            cluster_nodes: vec!["nope://x".into()],
            ..RedisStoreConfig::default()
        };
        assert_eq!(bad_node.validate()[0].0, "cluster_nodes[0]");
    }

    #[test]
    fn debug_and_errors_hide_url_passwords() {
        let cfg = RedisStoreConfig {
            url: Some("redis://:hunter2@h:1".into()),
            password: Some(SecretRef::new("hunter3")),
            ..RedisStoreConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
        assert_eq!(redact_url("redis://u:p@h:1/0"), "redis://<redacted>@h:1/0");
    }

    #[test]
    fn keys_carry_the_whole_logical_key_as_hash_tag() {
        let events = store_key("pg:", "cs", "orders:u1");
        assert_eq!(events, "pg:{cs:orders:u1}");
        assert_eq!(Slot::for_key(&events), Slot::for_key(format!("{events}:sum")));
        // Different identities land in different slots (spread over the cluster).
        assert_ne!(
            Slot::for_key(store_key("pg:", "b", "ip:1")),
            Slot::for_key(store_key("pg:", "b", "ip:2"))
        );
    }
}
