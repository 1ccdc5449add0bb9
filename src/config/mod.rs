//! Configuration: the YAML file format ([`FileConfig`]), its JSON Schema (generated from the same
//! types), validation that reports every error with its key path, and the internal [`Config`] the
//! proxy uses (the file format never reaches the hot path).

pub mod load;
pub mod reload;

use std::net::SocketAddr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::proxy::routes::{DefaultAction, RouteConfig};
use crate::telemetry::LogFormat;

pub use crate::issue::{ConfigIssue, ConfigIssues};
pub use crate::secret;
pub use load::{check_text, load_file, schema_json};

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "payguard configuration")]
pub struct FileConfig {
    /// Proxy listener and worker threads.
    #[serde(default)]
    pub(crate) server: ServerSection,
    /// Admin listener (health, readiness, metrics, mutating admin API).
    #[serde(default)]
    pub(crate) admin: AdminSection,
    /// The backend every proxied request goes to.
    pub(crate) upstream: UpstreamSection,
    /// Shared state: embedded (single instance, default) or Redis.
    #[serde(default)]
    pub(crate) store: crate::store::StoreConfig,
    /// Log format and level.
    #[serde(default)]
    pub(crate) log: LogSection,
    /// Reload on file change (SIGHUP always reloads).
    #[serde(default)]
    pub(crate) reload: ReloadSection,
    /// Client API guard: signature, IP, rate and order rules, used by `guard` routes.
    #[serde(default)]
    pub(crate) guard: Option<crate::guard::GuardConfig>,
    /// Merchant accounts at payment channels, by name: the keys `egress` routes sign with
    /// (docs/egress.md).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(crate) merchants: std::collections::BTreeMap<String, crate::egress::MerchantConfig>,
    /// Routes, tried in order; the first match selects the policy.
    #[serde(default)]
    pub(crate) routes: Vec<RouteConfig>,
    /// What happens to a request no route matches.
    #[serde(default)]
    pub(crate) default_action: DefaultAction,
}

/// Proxy listener settings. Changing them needs a restart.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerSection {
    /// Address of the proxy listener, `host:port`.
    #[serde(default = "default_listen")]
    pub(crate) listen: String,
    /// Worker threads of the proxy (Pingora's own default is one; payguard's is 2).
    #[serde(default = "default_threads")]
    pub(crate) threads: usize,
    /// On SIGTERM payguard stops accepting at once; requests in flight get this long to finish.
    #[serde(default = "default_grace", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) grace_period: Duration,
    /// After the grace period: the longest the worker runtimes may take to stop (requests still
    /// running are cut).
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) shutdown_timeout: Duration,
    /// Relaxations of the path refusals (all `reject` by default).
    #[serde(default)]
    pub(crate) path: crate::canonical::path::PathPolicy,
    /// Request headers whose name contains `_`: `drop` (default), `reject` or `keep`.
    #[serde(default)]
    pub(crate) header_underscores: crate::canonical::headers::UnderscorePolicy,
    /// How slowly a client may send a request body.
    #[serde(default)]
    pub(crate) body: BodyLimits,
    /// Most client connections held at once; one more is answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub(crate) max_connections: usize,
    /// How large a request head may be and how long a client may take to send it.
    #[serde(default)]
    pub(crate) head: HeadLimits,
    /// How long an idle kept-alive client connection stays open between two requests.
    #[serde(default = "default_keepalive_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) keepalive_timeout: Duration,
    /// Serve the proxy listener over TLS (HTTP/1.1) with this certificate and key. Unset: plain
    /// HTTP (the usual sidecar setup, or TLS ends at a mesh or load balancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls: Option<crate::listener_tls::ListenerTlsConfig>,
}

/// `server.head`: the request line and header fields of one request. A head past a limit ends
/// the connection with 431 (size, fields) or 408 (time) before payguard buffers more of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeadLimits {
    /// Most bytes of request line and header fields (1024 to 1048575).
    #[serde(default = "default_head_max_bytes")]
    pub(crate) max_bytes: usize,
    /// Most header fields (1 to 256).
    #[serde(default = "default_head_max_fields")]
    pub(crate) max_fields: usize,
    /// Longest time to send a whole head: from the connection's start for its first request,
    /// from the first byte for later ones.
    #[serde(default = "default_head_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) timeout: Duration,
}

fn default_max_connections() -> usize {
    4096
}
fn default_keepalive_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_head_max_bytes() -> usize {
    64 * 1024
}
fn default_head_max_fields() -> usize {
    100
}
fn default_head_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_bytes: default_head_max_bytes(),
            max_fields: default_head_max_fields(),
            timeout: default_head_timeout(),
        }
    }
}

/// The proxy listener's connection limits, from `server` (see [`crate::listener`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// `server.max_connections`.
    pub(crate) max_connections: usize,
    /// `server.head.max_bytes`.
    pub(crate) head_max_bytes: usize,
    /// `server.head.max_fields`.
    pub(crate) head_max_fields: usize,
    /// `server.head.timeout`.
    pub(crate) head_timeout: Duration,
    /// `server.keepalive_timeout`.
    pub(crate) keepalive_timeout: Duration,
}

impl ConnectionLimits {
    pub(crate) fn from_server(s: &ServerSection) -> Self {
        Self {
            max_connections: s.max_connections,
            head_max_bytes: s.head.max_bytes,
            head_max_fields: s.head.max_fields,
            head_timeout: s.head.timeout,
            keepalive_timeout: s.keepalive_timeout,
        }
    }
}

/// `server.body`: a client that stalls or trickles its request body is answered 408 instead of
/// holding a connection (and, on guard and notify routes, a buffer) for as long as it likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BodyLimits {
    /// Longest wait for the next piece of a request body.
    #[serde(default = "default_body_idle_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) idle_timeout: Duration,
    /// Slowest average rate, in bytes per second, a body may arrive at once `idle_timeout` has
    /// passed since it started (0 turns the check off).
    #[serde(default = "default_body_min_rate")]
    pub(crate) min_rate: u64,
}

fn default_body_idle_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_min_rate() -> u64 {
    1024
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            idle_timeout: default_body_idle_timeout(),
            min_rate: default_body_min_rate(),
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_threads() -> usize {
    2
}
fn default_grace() -> Duration {
    Duration::from_secs(5)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            threads: default_threads(),
            grace_period: default_grace(),
            shutdown_timeout: default_shutdown_timeout(),
            path: Default::default(),
            header_underscores: Default::default(),
            body: Default::default(),
            max_connections: default_max_connections(),
            head: Default::default(),
            keepalive_timeout: default_keepalive_timeout(),
            tls: None,
        }
    }
}

/// Admin listener settings. Changing them needs a restart.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminSection {
    /// Address of the admin listener, `host:port`. Keep it off the public network.
    #[serde(default = "default_admin_listen")]
    pub(crate) listen: String,
    /// Bearer token for mutating admin endpoints (`env:NAME` or `file:/path`). Without it those
    /// endpoints answer 403.
    #[serde(default)]
    pub(crate) token: Option<secret::SecretRef>,
    /// A second listener, `host:port`, serving only `/healthz`, `/readyz` and `/metrics`: bind
    /// it to the pod network for kubelet probes and Prometheus while `listen` (and `/admin/*`)
    /// stays on loopback. Unset: no such listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) probe_listen: Option<String>,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9464".into()
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token: None,
            probe_listen: None,
        }
    }
}

/// The backend (upstream) behind payguard.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamSection {
    /// Backend address, `host:port` (plain HTTP/1.1, usually the app container on loopback).
    pub(crate) address: String,
    /// Time to establish a TCP connection.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) connect_timeout: Duration,
    /// Longest wait for each read from the backend (response header or body chunk).
    #[serde(default = "default_io_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) read_timeout: Duration,
    /// Longest wait for each write to the backend.
    #[serde(default = "default_io_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) write_timeout: Duration,
    /// How long an idle keep-alive connection stays in the pool.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) idle_timeout: Duration,
    /// Maximum idle keep-alive connections kept (restart to change).
    #[serde(default = "default_pool_size")]
    pub(crate) pool_size: usize,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_io_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_pool_size() -> usize {
    128
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogSection {
    /// `json` (default, one object per line) or `text` (human-readable).
    #[serde(default)]
    pub(crate) format: LogFormat,
    /// Level filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive).
    /// `RUST_LOG` overrides it.
    #[serde(default = "default_level")]
    pub(crate) level: String,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: default_level(),
        }
    }
}

/// Automatic reload.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReloadSection {
    /// Reload when the file's content or a `file:` secret it references changes (checked every
    /// `interval`; works with Kubernetes ConfigMap and Secret symlink swaps). SIGHUP reloads
    /// regardless.
    #[serde(default = "default_true")]
    pub(crate) watch: bool,
    /// How often the file is checked.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) interval: Duration,
}

fn default_true() -> bool {
    true
}
fn default_reload_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for ReloadSection {
    fn default() -> Self {
        Self {
            watch: true,
            interval: default_reload_interval(),
        }
    }
}

/// Which routes keep serving while the store is unreachable, decided from the config
/// (`load::without_store`); `/readyz` reports it (`crate::health`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WithoutStore {
    /// Routes (and `(default)` for a `pass` default action) that serve without the store.
    pub(crate) serving: Vec<String>,
    /// Routes that answer 503 / the channel's failure without it (fail closed).
    pub(crate) failing_closed: Vec<String>,
}

/// Logs each of `config`'s warnings (at start and on every reload), so an operator sees a weakly
/// protected route where they look for configuration problems.
pub(crate) fn log_warnings(config: &Config, trigger: &'static str) {
    for w in &config.warnings {
        tracing::warn!(trigger, key = %w.path, "{}", w.message);
    }
}

/// The validated, internal configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Proxy listener address.
    pub(crate) listen: SocketAddr,
    /// TLS of the proxy listener, if configured (used at start; changing it needs a restart).
    pub(crate) tls: Option<crate::listener_tls::ListenerTls>,
    /// Request body pace limits.
    pub(crate) body: BodyLimits,
    /// Connection and request head limits of the proxy listener.
    pub(crate) connections: ConnectionLimits,
    /// Proxy worker threads.
    pub(crate) threads: usize,
    /// Grace period on SIGTERM.
    pub(crate) grace_period: Duration,
    /// Shutdown timeout after the grace period.
    pub(crate) shutdown_timeout: Duration,
    /// Admin listener address.
    pub(crate) admin_listen: SocketAddr,
    /// Probe listener address (`/healthz`, `/readyz`, `/metrics` only), if configured.
    pub(crate) probe_listen: Option<SocketAddr>,
    /// Admin bearer token, if configured.
    pub(crate) admin_token: Option<secret::Secret>,
    /// Which routes keep serving while the store is unreachable (readiness).
    pub(crate) without_store: WithoutStore,
    /// Upstream.
    pub(crate) upstream: Upstream,
    /// Store selection (used at start; changing it needs a restart).
    pub(crate) store: crate::store::StoreConfig,
    /// Logging.
    pub(crate) log: LogSection,
    /// Reload settings.
    pub(crate) reload: ReloadSection,
    /// How request heads are canonicalized before routing.
    pub(crate) request: crate::canonical::RequestPolicy,
    /// Compiled routes.
    pub(crate) routes: crate::proxy::routes::RouteTable,
    /// Things that are valid but probably not what the operator meant (`payguard check` prints
    /// them; a reload logs them).
    pub(crate) warnings: Vec<ConfigIssue>,
    /// The built guard, when a `guard` section is configured.
    pub(crate) guard: Option<std::sync::Arc<crate::guard::Guard>>,
    /// Merchant accounts that keep their WeChat Pay platform certificates current.
    pub(crate) certificate_accounts: Vec<crate::egress::certificates::CertificateAccount>,
    /// Merchant accounts whose orders are tracked and queried (`order_query`).
    pub(crate) query_accounts: Vec<crate::orders::QueryAccount>,
    /// Merchant accounts whose daily bills can be reconciled (`POST /admin/reconcile`).
    pub(crate) reconcile_accounts: Vec<crate::orders::AccountLink>,
}

/// Internal upstream settings.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    /// Backend address as configured (`host:port`).
    pub(crate) address: String,
    /// The address resolved at load time.
    pub(crate) socket: SocketAddr,
    /// Connect timeout.
    pub(crate) connect_timeout: Duration,
    /// Read timeout.
    pub(crate) read_timeout: Duration,
    /// Write timeout.
    pub(crate) write_timeout: Duration,
    /// Idle keep-alive timeout.
    pub(crate) idle_timeout: Duration,
    /// Idle pool size.
    pub(crate) pool_size: usize,
}
