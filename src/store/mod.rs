//! Shared state: one trait for the atomic operations payguard needs, two implementations
//! (embedded in-process, Redis standalone/cluster) that pass the same contract tests.
//!
//! Every operation is atomic on its own. On Redis each one is a single Lua script from `lua/`
//! (time from Redis `TIME`, every key with a TTL, all keys of one call in one hash slot).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;

pub mod embedded;
pub(crate) mod generation;
pub mod metered;
pub(crate) mod redis_sentinel;
pub mod redis_store;

pub use embedded::{EmbeddedStore, EmbeddedStoreConfig};
pub use redis_store::{RedisStore, RedisStoreConfig, RedisTlsConfig};

/// A store failure (timeout, connection refused, script error). Callers apply the rule's
/// `on_store_error` policy; the message never contains secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer within the command timeout.
    #[error("store timed out after {0:?}")]
    Timeout(Duration),
    /// The store could not be reached or answered with an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered something this version does not understand.
    #[error("store protocol error: {0}")]
    Protocol(String),
    /// The embedded store's budget for this kind of record is full (`store.embedded.max_*`):
    /// refused rather than evicting a live security record.
    #[error("the embedded store holds as many {0} as its budget allows")]
    Full(&'static str),
}

/// One token bucket to take from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSpec {
    /// Bucket key (without the store's prefix). Derived from rule name and identity, never from
    /// the config version, so editing a rule's numbers does not reset it.
    pub key: String,
    /// Burst capacity (maximum tokens). A full bucket starts at capacity.
    pub capacity: u64,
    /// Tokens added per `refill_period`, continuously (fractional refill accrues).
    pub refill_tokens: u64,
    /// Period over which `refill_tokens` are added.
    pub refill_period: Duration,
    /// Tokens this request costs (usually 1).
    pub cost: u64,
    /// Enforced buckets are taken all-or-nothing together; a shadow bucket (`false`) is decided
    /// and debited on its own and never prevents the others from being taken.
    pub enforce: bool,
}

/// The decision for one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketDecision {
    /// The bucket held at least `cost` tokens.
    pub allowed: bool,
    /// Whole tokens left after this call.
    pub remaining: u64,
    /// When `cost` tokens will be available (zero when allowed).
    pub retry_after: Duration,
    /// When the bucket will be full again.
    pub reset_after: Duration,
}

/// The window of a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterWindow {
    /// Events within the last `duration`, measured by the store's clock.
    Sliding(Duration),
    /// A calendar window named by the caller (e.g. `2026-11-23` in the rule's time zone); the
    /// counter lives until `ttl` after its last increment.
    Fixed {
        /// Window name, part of the stored key.
        window_id: String,
        /// How long the counter is kept.
        ttl: Duration,
    },
}

/// A counter to increment (or read when `incr` is zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSpec {
    /// Counter key (without prefix).
    pub key: String,
    /// Window.
    pub window: CounterWindow,
    /// Amount to add; 0 only reads.
    pub incr: u64,
}

/// Everything a guarded request asks of the store, decided in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardBatch {
    /// Dynamic deny set and member (client IP) to check first.
    pub deny: Option<(String, String)>,
    /// Nonce key and how long it is kept; claimed after the deny check.
    pub nonce: Option<(String, Duration)>,
    /// The signed timestamp of the request the nonce belongs to (unix seconds). A nonce dated at
    /// or before the second the store lost its data is refused without being claimed: it may
    /// have been seen before the loss ([`GuardOutcome::nonce_before_store_loss`]).
    pub nonce_timestamp: i64,
    /// Buckets of every rate rule that applies.
    pub buckets: Vec<BucketSpec>,
    /// Counters of every order rule that applies.
    pub counters: Vec<CounterSpec>,
}

/// The store's answer to a [`GuardBatch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardOutcome {
    /// The member is in the deny set; nothing else was evaluated or changed.
    pub denied: bool,
    /// The nonce was already claimed; buckets and counters were not evaluated or changed.
    pub nonce_replayed: bool,
    /// The request is dated at or before a detected loss of the store's data, so its nonce may
    /// have been used before the loss; nothing was claimed, buckets and counters untouched.
    pub nonce_before_store_loss: bool,
    /// One decision per bucket, in order (empty when stopped earlier).
    pub buckets: Vec<BucketDecision>,
    /// Counter values after the increments, in order. When an enforced bucket refused the
    /// request the counters are only read, not incremented. Empty when stopped earlier.
    pub counters: Vec<u64>,
}

/// Result of trying to claim a dedup key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupClaim {
    /// This caller holds the lease; it must later `complete` or `release` with `token`.
    Claimed {
        /// Lease token (random), proves ownership.
        token: String,
    },
    /// Another caller holds a live lease.
    InFlight,
    /// The key was completed earlier.
    Done,
    /// Nothing was claimed: the event that supersedes this one is claimed or done
    /// ([`Store::dedup_claim_unless`]).
    Superseded,
}

/// Which path noticed that the store lost its data (`payguard_store_data_loss_total` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataLossSource {
    /// A guarded request's store call.
    Guard,
    /// A notification's dedup claim.
    Notification,
    /// The periodic health check, between requests.
    HealthCheck,
}

impl DataLossSource {
    /// Every source, for metric series that exist from the start.
    pub const ALL: [Self; 3] = [Self::Guard, Self::Notification, Self::HealthCheck];

    /// Metric label and log value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Guard => "guard",
            Self::Notification => "notification",
            Self::HealthCheck => "health_check",
        }
    }
}

/// A detected loss of the store's data (docs/operations.md, "Store data loss").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataLoss {
    /// When it was detected, by the store's clock: requests dated at or before this second
    /// are refused with `TIMESTAMP_BEFORE_STORE_LOSS`.
    pub at: jiff::Timestamp,
    /// Which path noticed it.
    pub detected_by: DataLossSource,
}

/// The atomic operations payguard needs from shared state.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Short name for metrics and logs (`embedded`, `redis`).
    fn backend(&self) -> &'static str;

    /// Checks that the store answers (used by `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Takes from several buckets at once (see [`BucketSpec::enforce`] for the semantics).
    async fn take_buckets(&self, buckets: &[BucketSpec]) -> Result<Vec<BucketDecision>, StoreError>;

    /// Claims `key` for `ttl`. `true` when it was fresh, `false` when already claimed.
    async fn claim_nonce(&self, key: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Adds `spec.incr` to a windowed counter and returns the value in the window afterwards.
    async fn count(&self, spec: &CounterSpec) -> Result<u64, StoreError>;

    /// Evaluates a guarded request in one round trip: deny check → nonce → buckets → counters.
    async fn guard(&self, batch: &GuardBatch) -> Result<GuardOutcome, StoreError>;

    /// Claims a dedup key with a lease of `lease`.
    async fn dedup_claim(&self, key: &str, lease: Duration) -> Result<DedupClaim, StoreError>;

    /// Like [`Store::dedup_claim`], unless the dedup key `superseded_by` (an event that makes
    /// this one late, e.g. the order's `payment.succeeded` for a `payment.pending`) is claimed or
    /// done: then nothing is claimed and the answer is [`DedupClaim::Superseded`]. Costs one
    /// round trip of latency.
    async fn dedup_claim_unless(
        &self,
        key: &str,
        lease: Duration,
        superseded_by: &str,
    ) -> Result<DedupClaim, StoreError>;

    /// Marks a claimed key done for `keep`. `false` when `token` no longer holds the lease
    /// (it expired and someone else claimed it); the key is then left as it is.
    async fn dedup_complete(&self, key: &str, token: &str, keep: Duration) -> Result<bool, StoreError>;

    /// Releases a claim so the next delivery can claim it. `false` when `token` does not hold it.
    async fn dedup_release(&self, key: &str, token: &str) -> Result<bool, StoreError>;

    /// Adds `member` to `set` for `ttl` (re-adding extends it).
    async fn set_add(&self, set: &str, member: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Removes `member`; `true` when it was present.
    async fn set_remove(&self, set: &str, member: &str) -> Result<bool, StoreError>;

    /// Whether `member` is in `set` and not expired.
    async fn set_contains(&self, set: &str, member: &str) -> Result<bool, StoreError>;

    /// Live members with their remaining time to live.
    async fn set_members(&self, set: &str) -> Result<Vec<(String, Duration)>, StoreError>;

    /// Checks, between requests, whether the store lost its data (the periodic health check).
    /// The embedded store cannot lose data without payguard restarting: nothing to check.
    async fn check_data_loss(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The latest detected loss of the store's data, while its notice lasts
    /// (`store.redis.data_loss_notice_for`).
    fn data_loss(&self) -> Option<DataLoss> {
        None
    }

    /// Losses detected since the previous call, each handed out once (for the metric and log).
    fn take_data_loss_reports(&self) -> Vec<DataLoss> {
        Vec::new()
    }

    /// Records held and the budget, per kind of record, where the store has budgets (the
    /// embedded store; Redis is bounded by its own `maxmemory`).
    fn usage(&self) -> Vec<(&'static str, u64, u64)> {
        Vec::new()
    }
}

/// Which store backend holds payguard's shared state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// In-process, bounded; state is per replica and lost on restart.
    #[default]
    Embedded,
    /// Redis standalone or Cluster; state is shared by every replica.
    Redis,
}

/// The `store` section: which backend, and its settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `embedded` (default) or `redis`.
    #[serde(default)]
    pub backend: StoreBackend,
    /// Settings of the embedded store (used when `backend: embedded`).
    #[serde(default)]
    pub(crate) embedded: EmbeddedStoreConfig,
    /// Settings of the Redis store (required when `backend: redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) redis: Option<RedisStoreConfig>,
}

impl StoreConfig {
    /// Problems with this section as (key path relative to it, message); empty when usable.
    /// Resolves the Redis password reference, so a missing secret is reported at check time.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut issues = Vec::new();
        for (key, value) in self.embedded.budgets() {
            if value == 0 {
                issues.push((format!("embedded.{key}"), "must be at least 1".to_string()));
            }
        }
        match (self.backend, &self.redis) {
            (StoreBackend::Redis, None) => {
                issues.push(("redis".to_string(), "required when backend is redis".to_string()));
            }
            (_, Some(redis)) => {
                issues.extend(
                    redis
                        .validate()
                        .into_iter()
                        .map(|(path, msg)| (format!("redis.{path}"), msg)),
                );
            }
            (StoreBackend::Embedded, None) => {}
        }
        issues
    }
}

/// Opens the configured store. `clock` drives the embedded store; Redis uses its own `TIME`.
/// Redis is connected in the background (on the calling Tokio runtime): this waits up to
/// `connect_timeout` for the first connection, so a normal start serves its first request
/// connected, and then returns either way, so payguard starts while Redis is still unreachable.
/// It fails only when the section is invalid.
pub async fn open(cfg: &StoreConfig, clock: SharedClock) -> Result<Arc<dyn Store>, StoreError> {
    match (cfg.backend, &cfg.redis) {
        (StoreBackend::Embedded, _) => Ok(Arc::new(EmbeddedStore::new(&cfg.embedded, clock))),
        (StoreBackend::Redis, Some(redis)) => {
            let store = redis_store::connect_in_background(redis)?;
            store.wait_connected(redis.connect_timeout).await;
            Ok(Arc::new(store))
        }
        (StoreBackend::Redis, None) => Err(StoreError::Unavailable(
            "store.redis is required when backend is redis".to_string(),
        )),
    }
}

/// Whole milliseconds of `d`, at least 1 (stores reject a zero TTL; a zero period would divide
/// by zero) and at most 100 years (Redis rejects expiry times that overflow).
pub(crate) fn millis(d: Duration) -> u64 {
    const MAX_MS: u64 = 100 * 365 * 86_400_000;
    u64::try_from(d.as_millis()).unwrap_or(MAX_MS).clamp(1, MAX_MS)
}

/// A random lease token for a dedup claim (proves ownership on complete/release).
pub(crate) fn lease_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl StoreConfig {
    /// One line for `payguard check`: backend and where it is (never the password).
    pub(crate) fn summary(&self) -> String {
        match (self.backend, &self.redis) {
            (StoreBackend::Redis, Some(r)) if r.sentinel.is_some() => {
                let sentinel = r
                    .sentinel
                    .as_ref()
                    .map_or((0, ""), |s| (s.nodes.len(), s.master_name.as_str()));
                format!(
                    "redis sentinel ({} sentinels, master {:?}, prefix {:?})",
                    sentinel.0, sentinel.1, r.key_prefix
                )
            }
            (StoreBackend::Redis, Some(r)) if !r.cluster_nodes.is_empty() => {
                format!(
                    "redis cluster ({} seed nodes, prefix {:?})",
                    r.cluster_nodes.len(),
                    r.key_prefix
                )
            }
            (StoreBackend::Redis, Some(r)) => {
                let url = r.url.as_deref().unwrap_or("-");
                // A URL may carry a password (`redis://:pw@host`); show only scheme and host part.
                let shown = match url.rsplit_once('@') {
                    Some((scheme_user, host)) => {
                        format!("{}://…@{host}", scheme_user.split("://").next().unwrap_or("redis"))
                    }
                    None => url.to_string(),
                };
                let tls = match &r.tls {
                    Some(t) if t.client_cert.is_some() => ", TLS with client certificate",
                    Some(_) => ", TLS",
                    None => "",
                };
                format!("redis {shown} (prefix {:?}{tls})", r.key_prefix)
            }
            _ => {
                let e = &self.embedded;
                format!(
                    "embedded (budgets: {} nonces, {} dedup records, {} buckets, {} counters, {} deny entries, {} ledger entries, {} history entries)",
                    e.max_nonces,
                    e.max_dedup_records,
                    e.max_buckets,
                    e.max_counters,
                    e.max_deny_entries,
                    e.max_ledger_entries,
                    e.max_history_entries
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_section_defaults_to_embedded_and_documents_its_keys() {
        let cfg: StoreConfig = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(cfg.backend, StoreBackend::Embedded);
        assert!(cfg.validate().is_empty());
        assert!(serde_yaml_ng::from_str::<StoreConfig>("backend: memcached").is_err());
        assert!(serde_yaml_ng::from_str::<StoreConfig>("backnd: redis").is_err());
        let schema = serde_json::to_string(&schemars::schema_for!(StoreConfig)).unwrap();
        for key in [
            "backend",
            "max_nonces",
            "cluster_nodes",
            "key_prefix",
            "command_timeout",
            "password",
            "data_loss_notice_for",
            "sentinel",
            "master_name",
            "sentinel_password",
        ] {
            assert!(schema.contains(key), "schema lacks {key}");
        }
    }

    #[test]
    fn redis_backend_requires_its_section_and_reports_nested_paths() {
        let cfg: StoreConfig = serde_yaml_ng::from_str("backend: redis\nredis:\n  command_timeout: 0s\n").unwrap();
        let paths: Vec<String> = cfg.validate().into_iter().map(|(path, _)| path).collect();
        assert_eq!(paths, ["redis.url", "redis.command_timeout"]);
    }

    #[test]
    fn millis_never_yields_zero_or_overflowing_ttls() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert!(millis(Duration::MAX) < i64::MAX as u64 / 2);
    }
}
