//! The embedded store: payguard's shared state inside the process, for a single replica.
//!
//! Same semantics as the Redis store (the contract tests run against both), with time from the
//! injected clock so tests can move it. Memory is bounded: at most `max_entries` keys, evicted
//! least-recently-used first, and every entry expires by its TTL (governor's keyed store grows
//! without bound when keyed by IP — prior-art.md, rate limiting).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;
use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    lease_token, millis, BucketDecision, BucketSpec, CounterSpec, CounterWindow, DedupClaim, GuardBatch, GuardOutcome,
    Store, StoreError,
};
use crate::clock::SharedClock;

/// Settings of the embedded store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedStoreConfig {
    /// Most keys kept (buckets, nonces, counters, dedup keys, sets). When full, the least
    /// recently used key is dropped: a bucket then starts full again, a nonce could be replayed,
    /// so size it above the traffic of the longest nonce TTL.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
}

fn default_max_entries() -> u64 {
    1_000_000
}

impl Default for EmbeddedStoreConfig {
    fn default() -> Self {
        Self {
            max_entries: default_max_entries(),
        }
    }
}

/// Tolerance for float comparisons of token counts (refill accrues fractions); same as lua/lib.lua.
const EPS: f64 = 1e-6;

/// What one key holds.
#[derive(Debug)]
enum Value {
    /// Token bucket: tokens at `at_ms`.
    Bucket { tokens: f64, at_ms: i64 },
    /// A claimed nonce.
    Nonce,
    /// Dedup key claimed by the holder of this token.
    Lease(String),
    /// Dedup key completed.
    Done,
    /// Fixed-window counter.
    Count(u64),
    /// Sliding-window counter: (time ms, amount) oldest first, and their sum.
    Events { events: VecDeque<(i64, u64)>, sum: u64 },
    /// Set with per-member expiry (unix ms).
    Members(HashMap<String, i64>),
}

/// One key: its value and when it expires (unix ms by the store's clock).
#[derive(Debug)]
struct Entry {
    deadline_ms: AtomicI64,
    value: Mutex<Value>,
}

impl Entry {
    fn new(value: Value, deadline_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            deadline_ms: AtomicI64::new(deadline_ms),
            value: Mutex::new(value),
        })
    }

    fn deadline(&self) -> i64 {
        self.deadline_ms.load(Ordering::Relaxed)
    }
}

/// Tells the cache to drop an entry when its deadline passes, so expired keys free memory
/// without being read again. Correctness never depends on it: every read also checks the
/// deadline against the store's clock.
struct UntilDeadline {
    clock: SharedClock,
}

impl UntilDeadline {
    fn remaining(&self, entry: &Entry) -> Option<Duration> {
        let left = entry.deadline().saturating_sub(self.clock.unix_millis());
        Some(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
    }
}

impl Expiry<String, Arc<Entry>> for UntilDeadline {
    fn expire_after_create(&self, _key: &String, value: &Arc<Entry>, _at: Instant) -> Option<Duration> {
        self.remaining(value)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<Entry>,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.remaining(value)
    }
}

/// In-process [`Store`] for a single payguard instance.
pub struct EmbeddedStore {
    clock: SharedClock,
    entries: Cache<String, Arc<Entry>>,
    /// Held for every operation: `guard` and `take_buckets` read and write several keys and must
    /// be atomic together, exactly like one Lua script on Redis. Operations take microseconds.
    lock: Mutex<()>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

/// Whole milliseconds as a signed offset for deadline arithmetic.
fn ms_i64(d: Duration) -> i64 {
    i64::try_from(millis(d)).unwrap_or(i64::MAX)
}

/// Milliseconds as a `Duration` (negative reads as zero).
fn ms_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Namespaced key: the same caller key used as a bucket and as a counter never collide.
fn key(kind: &str, key: &str) -> String {
    format!("{kind}\u{1f}{key}")
}

fn counter_key(spec: &CounterSpec) -> String {
    match &spec.window {
        CounterWindow::Sliding(_) => key("cs", &spec.key),
        CounterWindow::Fixed { window_id, .. } => key("cf", &format!("{}\u{1f}{window_id}", spec.key)),
    }
}

/// Refill amount per period; rule validation rejects 0, and it must never divide by zero here.
fn refill_per_period(b: &BucketSpec) -> f64 {
    b.refill_tokens.max(1) as f64
}

/// Tokens in bucket `b` at `now` given its stored (tokens, at) state: continuous refill, clamped
/// to the *current* capacity so that editing a rule's numbers keeps (but bounds) its state
/// (product.md §3). A missing bucket is full. Same arithmetic as lua/lib.lua.
fn tokens_at(b: &BucketSpec, state: Option<(f64, i64)>, now: i64) -> f64 {
    let cap = b.capacity as f64;
    match state {
        None => cap,
        Some((tokens, at)) => {
            let elapsed = now.saturating_sub(at).max(0) as f64;
            (tokens + elapsed * refill_per_period(b) / millis(b.refill_period) as f64).min(cap)
        }
    }
}

/// Milliseconds until bucket `b` holding `tokens` reaches `target`.
fn wait_ms(b: &BucketSpec, tokens: f64, target: f64) -> i64 {
    if tokens + EPS >= target {
        return 0;
    }
    ((target - tokens) * millis(b.refill_period) as f64 / refill_per_period(b)).ceil() as i64
}

impl EmbeddedStore {
    /// An empty store bounded by `cfg.max_entries`, telling time by `clock`.
    pub fn new(cfg: &EmbeddedStoreConfig, clock: SharedClock) -> Self {
        let entries = Cache::builder()
            .max_capacity(cfg.max_entries.max(1))
            // Newest keys are admitted and the least recently used dropped: a frequency-based
            // admission policy could refuse to store a fresh nonce and let it be replayed.
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(UntilDeadline {
                clock: Arc::clone(&clock),
            })
            .build();
        Self {
            clock,
            entries,
            lock: Mutex::new(()),
        }
    }

    /// Claims dedup key `k` unless it is leased or done. Caller holds `self.lock`.
    fn claim_locked(&self, k: &str, lease: Duration, now: i64) -> Result<DedupClaim, StoreError> {
        let k = key("d", k);
        if let Some(entry) = self.live(&k, now) {
            return Ok(match *entry.value.lock() {
                Value::Done => DedupClaim::Done,
                _ => DedupClaim::InFlight,
            });
        }
        let token = lease_token();
        self.put(k, Value::Lease(token.clone()), now.saturating_add(ms_i64(lease)));
        Ok(DedupClaim::Claimed { token })
    }

    /// Number of keys held (after pending evictions ran); for metrics and tests.
    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    fn now(&self) -> i64 {
        self.clock.unix_millis()
    }

    /// The live entry at `k`, dropping it when its deadline has passed.
    fn live(&self, k: &str, now: i64) -> Option<Arc<Entry>> {
        let entry = self.entries.get(k)?;
        if entry.deadline() <= now {
            self.entries.invalidate(k);
            return None;
        }
        Some(entry)
    }

    fn put(&self, k: String, value: Value, deadline_ms: i64) {
        self.entries.insert(k, Entry::new(value, deadline_ms));
    }

    /// Re-inserts an entry whose deadline changed so the cache's own expiry follows it.
    fn touch(&self, k: String, entry: Arc<Entry>, deadline_ms: i64) {
        entry.deadline_ms.store(deadline_ms, Ordering::Relaxed);
        self.entries.insert(k, entry);
    }

    /// Decides buckets (see [`BucketSpec::enforce`]); `take_enforced` false decides enforced
    /// buckets without debiting. Returns the decisions and whether every enforced bucket held
    /// its cost. Caller holds `self.lock`.
    fn take_locked(&self, specs: &[BucketSpec], now: i64) -> (Vec<BucketDecision>, bool) {
        let states: Vec<Option<(f64, i64)>> = specs
            .iter()
            .map(|b| {
                self.live(&key("b", &b.key), now).and_then(|e| match *e.value.lock() {
                    Value::Bucket { tokens, at_ms } => Some((tokens, at_ms)),
                    _ => None,
                })
            })
            .collect();
        let tokens: Vec<f64> = specs.iter().zip(&states).map(|(b, s)| tokens_at(b, *s, now)).collect();
        let enforced_ok = specs
            .iter()
            .zip(&tokens)
            .all(|(b, t)| !b.enforce || t + EPS >= b.cost as f64);

        let mut after: HashMap<&str, f64> = HashMap::new();
        let mut out = Vec::with_capacity(specs.len());
        for (b, loaded) in specs.iter().zip(tokens) {
            let mut t = after.get(b.key.as_str()).copied().unwrap_or(loaded);
            let cost = b.cost as f64;
            let allowed = t + EPS >= cost;
            if allowed && (!b.enforce || enforced_ok) {
                t = (t - cost).max(0.0);
                after.insert(&b.key, t);
                let full_in = wait_ms(b, t, b.capacity as f64).max(1);
                self.put(
                    key("b", &b.key),
                    Value::Bucket { tokens: t, at_ms: now },
                    now.saturating_add(full_in),
                );
            }
            out.push(BucketDecision {
                allowed,
                remaining: (t + EPS).floor() as u64,
                retry_after: if allowed {
                    Duration::ZERO
                } else {
                    ms_duration(wait_ms(b, t, cost))
                },
                reset_after: ms_duration(wait_ms(b, t, b.capacity as f64)),
            });
        }
        (out, enforced_ok)
    }

    fn claim_nonce_locked(&self, k: &str, ttl: Duration, now: i64) -> bool {
        let k = key("n", k);
        if self.live(&k, now).is_some() {
            return false;
        }
        self.put(k, Value::Nonce, now.saturating_add(ms_i64(ttl)));
        true
    }

    fn count_locked(&self, spec: &CounterSpec, incr: u64, now: i64) -> u64 {
        let k = counter_key(spec);
        match &spec.window {
            CounterWindow::Fixed { ttl, .. } => {
                let current = self.live(&k, now).map_or(0, |e| match *e.value.lock() {
                    Value::Count(v) => v,
                    _ => 0,
                });
                if incr == 0 {
                    return current;
                }
                let value = current.saturating_add(incr);
                self.put(k, Value::Count(value), now.saturating_add(ms_i64(*ttl)));
                value
            }
            CounterWindow::Sliding(window) => {
                let window = ms_i64(*window);
                let cutoff = now.saturating_sub(window);
                let entry = match self.live(&k, now) {
                    Some(e) => e,
                    None if incr == 0 => return 0,
                    None => Entry::new(
                        Value::Events {
                            events: VecDeque::new(),
                            sum: 0,
                        },
                        now,
                    ),
                };
                let sum = {
                    let mut value = entry.value.lock();
                    if !matches!(*value, Value::Events { .. }) {
                        *value = Value::Events {
                            events: VecDeque::new(),
                            sum: 0,
                        };
                    }
                    let Value::Events { events, sum } = &mut *value else {
                        return 0;
                    };
                    while let Some(&(at, amount)) = events.front() {
                        if at > cutoff {
                            break;
                        }
                        events.pop_front();
                        *sum = sum.saturating_sub(amount);
                    }
                    if incr > 0 {
                        events.push_back((now, incr));
                        *sum = sum.saturating_add(incr);
                    }
                    *sum
                };
                if incr > 0 {
                    self.touch(k, entry, now.saturating_add(window));
                }
                sum
            }
        }
    }

    /// Whether `member` is live in `set`.
    fn set_contains_locked(&self, set: &str, member: &str, now: i64) -> bool {
        self.live(&key("s", set), now).is_some_and(|e| match &*e.value.lock() {
            Value::Members(m) => m.get(member).is_some_and(|&exp| exp > now),
            _ => false,
        })
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn take_buckets(&self, buckets: &[BucketSpec]) -> Result<Vec<BucketDecision>, StoreError> {
        let _held = self.lock.lock();
        Ok(self.take_locked(buckets, self.now()).0)
    }

    async fn claim_nonce(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let _held = self.lock.lock();
        Ok(self.claim_nonce_locked(key, ttl, self.now()))
    }

    async fn count(&self, spec: &CounterSpec) -> Result<u64, StoreError> {
        let _held = self.lock.lock();
        Ok(self.count_locked(spec, spec.incr, self.now()))
    }

    async fn guard(&self, batch: &GuardBatch) -> Result<GuardOutcome, StoreError> {
        let _held = self.lock.lock();
        let now = self.now();
        if let Some((set, member)) = &batch.deny {
            if self.set_contains_locked(set, member, now) {
                return Ok(GuardOutcome {
                    denied: true,
                    ..GuardOutcome::default()
                });
            }
        }
        if let Some((nonce, ttl)) = &batch.nonce {
            if !self.claim_nonce_locked(nonce, *ttl, now) {
                return Ok(GuardOutcome {
                    nonce_replayed: true,
                    ..GuardOutcome::default()
                });
            }
        }
        let (buckets, enforced_ok) = self.take_locked(&batch.buckets, now);
        let counters = batch
            .counters
            .iter()
            .map(|c| self.count_locked(c, if enforced_ok { c.incr } else { 0 }, now))
            .collect();
        Ok(GuardOutcome {
            denied: false,
            nonce_replayed: false,
            buckets,
            counters,
        })
    }

    async fn dedup_claim(&self, k: &str, lease: Duration) -> Result<DedupClaim, StoreError> {
        let _held = self.lock.lock();
        self.claim_locked(k, lease, self.now())
    }

    async fn dedup_claim_unless(
        &self,
        k: &str,
        lease: Duration,
        superseded_by: &str,
    ) -> Result<DedupClaim, StoreError> {
        let _held = self.lock.lock();
        let now = self.now();
        if self.live(&key("d", superseded_by), now).is_some() {
            return Ok(DedupClaim::Superseded);
        }
        self.claim_locked(k, lease, now)
    }

    async fn dedup_complete(&self, k: &str, token: &str, keep: Duration) -> Result<bool, StoreError> {
        let _held = self.lock.lock();
        let now = self.now();
        let k = key("d", k);
        if !self.holds_lease(&k, token, now) {
            return Ok(false);
        }
        self.put(k, Value::Done, now.saturating_add(ms_i64(keep)));
        Ok(true)
    }

    async fn dedup_release(&self, k: &str, token: &str) -> Result<bool, StoreError> {
        let _held = self.lock.lock();
        let k = key("d", k);
        if !self.holds_lease(&k, token, self.now()) {
            return Ok(false);
        }
        self.entries.invalidate(&k);
        Ok(true)
    }

    async fn set_add(&self, set: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        let _held = self.lock.lock();
        let now = self.now();
        let k = key("s", set);
        let entry = self
            .live(&k, now)
            .unwrap_or_else(|| Entry::new(Value::Members(HashMap::new()), now));
        let deadline = {
            let mut value = entry.value.lock();
            if !matches!(*value, Value::Members(_)) {
                *value = Value::Members(HashMap::new());
            }
            let Value::Members(members) = &mut *value else {
                return Ok(());
            };
            members.retain(|_, exp| *exp > now);
            members.insert(member.to_string(), now.saturating_add(ms_i64(ttl)));
            members.values().copied().max().unwrap_or(now)
        };
        self.touch(k, entry, deadline);
        Ok(())
    }

    async fn set_remove(&self, set: &str, member: &str) -> Result<bool, StoreError> {
        let _held = self.lock.lock();
        let now = self.now();
        let Some(entry) = self.live(&key("s", set), now) else {
            return Ok(false);
        };
        let mut value = entry.value.lock();
        let Value::Members(members) = &mut *value else {
            return Ok(false);
        };
        Ok(members.remove(member).is_some_and(|exp| exp > now))
    }

    async fn set_contains(&self, set: &str, member: &str) -> Result<bool, StoreError> {
        let _held = self.lock.lock();
        Ok(self.set_contains_locked(set, member, self.now()))
    }

    async fn set_members(&self, set: &str) -> Result<Vec<(String, Duration)>, StoreError> {
        let _held = self.lock.lock();
        let now = self.now();
        let Some(entry) = self.live(&key("s", set), now) else {
            return Ok(Vec::new());
        };
        let mut value = entry.value.lock();
        let Value::Members(members) = &mut *value else {
            return Ok(Vec::new());
        };
        members.retain(|_, exp| *exp > now);
        let mut out: Vec<(String, Duration)> = members
            .iter()
            .map(|(m, exp)| (m.clone(), ms_duration(exp - now)))
            .collect();
        out.sort();
        Ok(out)
    }
}

impl EmbeddedStore {
    fn holds_lease(&self, k: &str, token: &str, now: i64) -> bool {
        self.live(k, now).is_some_and(|e| match &*e.value.lock() {
            // Tokens are random and never secret-derived; a plain comparison leaks nothing.
            Value::Lease(held) => held == token,
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn store(max_entries: u64) -> (EmbeddedStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
        (
            EmbeddedStore::new(&EmbeddedStoreConfig { max_entries }, clock.clone()),
            clock,
        )
    }

    #[tokio::test]
    async fn entry_count_stays_within_max_entries() {
        let (store, _clock) = store(100);
        for i in 0..1_000 {
            store
                .claim_nonce(&format!("n{i}"), Duration::from_secs(60))
                .await
                .unwrap();
        }
        assert!(store.entry_count() <= 100, "{} entries", store.entry_count());
        // The newest key is always admitted, so a just-claimed nonce is never replayable.
        assert!(!store.claim_nonce("n999", Duration::from_secs(60)).await.unwrap());
    }

    #[tokio::test]
    async fn expired_entries_read_as_absent_and_are_dropped() {
        let (store, clock) = store(100);
        store.set_add("deny", "1.2.3.4", Duration::from_secs(5)).await.unwrap();
        clock.advance_millis(5_000);
        assert!(!store.set_contains("deny", "1.2.3.4").await.unwrap());
        assert!(store.set_members("deny").await.unwrap().is_empty());
        assert!(!store.set_remove("deny", "1.2.3.4").await.unwrap());
    }

    #[test]
    fn config_defaults_to_a_million_entries_and_rejects_unknown_keys() {
        let cfg: EmbeddedStoreConfig = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(cfg.max_entries, 1_000_000);
        assert!(serde_yaml_ng::from_str::<EmbeddedStoreConfig>("max_entry: 5").is_err());
    }
}
