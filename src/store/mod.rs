//! Shared state: one trait for the atomic operations payguard needs, two implementations
//! (embedded in-process, Redis standalone/cluster) that pass the same contract tests.
//!
//! Every operation is atomic on its own. On Redis each one is a single Lua script from `lua/`
//! (time from Redis `TIME`, every key with a TTL, all keys of one call in one hash slot).

use std::time::Duration;

use async_trait::async_trait;

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
}

/// Store selection (placeholder until the backends land).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig { #[serde(default)] pub backend: Option<String>, #[serde(default)] pub embedded: Option<serde_json::Value>, #[serde(default)] pub redis: Option<serde_json::Value> }

impl StoreConfig {
    /// Semantic checks, issues relative to `path`.
    pub fn validate(&self, _path: &str) -> Vec<crate::config::ConfigIssue> {
        Vec::new()
    }
}

impl StoreConfig {
    /// One-line description for `payguard check` (never shows secrets).
    pub fn summary(&self) -> String {
        "embedded".into()
    }
}

/// Opens the configured store (placeholder until the backends land).
pub async fn open(
    _cfg: &StoreConfig,
    _clock: crate::clock::SharedClock,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    open_tmp().await
}
#[derive(Debug)]
struct TmpStore;
#[async_trait]
impl Store for TmpStore {
    fn backend(&self) -> &'static str { "embedded" }
    async fn ping(&self) -> Result<(), StoreError> { Ok(()) }
    async fn take_buckets(&self, _: &[BucketSpec]) -> Result<Vec<BucketDecision>, StoreError> { todo!() }
    async fn claim_nonce(&self, _: &str, _: Duration) -> Result<bool, StoreError> { todo!() }
    async fn count(&self, _: &CounterSpec) -> Result<u64, StoreError> { todo!() }
    async fn guard(&self, _: &GuardBatch) -> Result<GuardOutcome, StoreError> { todo!() }
    async fn dedup_claim(&self, _: &str, _: Duration) -> Result<DedupClaim, StoreError> { todo!() }
    async fn dedup_complete(&self, _: &str, _: &str, _: Duration) -> Result<bool, StoreError> { todo!() }
    async fn dedup_release(&self, _: &str, _: &str) -> Result<bool, StoreError> { todo!() }
    async fn set_add(&self, _: &str, _: &str, _: Duration) -> Result<(), StoreError> { todo!() }
    async fn set_remove(&self, _: &str, _: &str) -> Result<bool, StoreError> { todo!() }
    async fn set_contains(&self, _: &str, _: &str) -> Result<bool, StoreError> { todo!() }
    async fn set_members(&self, _: &str) -> Result<Vec<(String, Duration)>, StoreError> { todo!() }
}
pub async fn open_tmp() -> Result<std::sync::Arc<dyn Store>, StoreError> { Ok(std::sync::Arc::new(TmpStore)) }
