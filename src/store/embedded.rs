//! The embedded store: payguard's shared state inside the process, for a single replica.
//!
//! Same semantics as the Redis store (the contract tests run against both), with time from the
//! injected clock so tests can move it. Every record expires by its TTL, and every kind of record
//! has a budget of its own, because running out of room must never trade security for space:
//!
//! | record | when its budget is full |
//! |---|---|
//! | nonces | refused ([`StoreError::Full`]): signed requests fail closed (503) until nonces expire — evicting one would let its request be replayed |
//! | dedup records | refused: notifications get the channel's failure answer and are retried later — evicting one would let an event be forwarded twice |
//! | order counters | refused: order rules apply their `on_store_error` |
//! | deny-list members | refused: the admin API reports it |
//! | ledger entries | refused: a delivered event is not added to the ledger (logged), nothing else is affected |
//! | history entries | refused: a delivery is not added to its order's history (logged), nothing else is affected |
//! | token buckets | the bucket closest to refilling is dropped; it starts full again when next used, which is what it was about to be |
//!
//! One mutex guards everything: a guard batch reads and writes several records atomically, as
//! one Lua script does on Redis, and every operation takes microseconds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    lease_token, millis, BucketDecision, BucketSpec, CounterSpec, CounterWindow, DedupClaim, GuardBatch, GuardOutcome,
    Store, StoreError,
};
use crate::clock::SharedClock;

/// Settings of the embedded store: how many records of each kind it keeps at most.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedStoreConfig {
    /// Nonces held at once; each is kept for twice the signature window. Size it above the
    /// signed requests of that period (300 s window: 600 s × requests/s). When full, signed
    /// requests are refused with 503 until nonces expire.
    #[serde(default = "default_max_nonces")]
    pub(crate) max_nonces: u64,
    /// Notification dedup records (in-flight leases and delivered events, kept for the route's
    /// `keep`, 7 days by default). When full, notifications get the channel's failure answer.
    #[serde(default = "default_max_dedup_records")]
    pub(crate) max_dedup_records: u64,
    /// Token buckets (one per rule and identity). When full, the bucket closest to refilling is
    /// dropped: it starts full when next used.
    #[serde(default = "default_max_buckets")]
    pub(crate) max_buckets: u64,
    /// Order counters (one per rule, user and window). When full, new counters are refused and
    /// order rules apply their `on_store_error`.
    #[serde(default = "default_max_counters")]
    pub(crate) max_counters: u64,
    /// Members of the store's sets: dynamic deny-list entries, downloaded platform certificates,
    /// orders tracked for `order_query` (two per order). When full, adding one fails.
    #[serde(default = "default_max_deny_entries")]
    pub(crate) max_deny_entries: u64,
    /// Entries of the delivered-event ledger (one per event forwarded by a notify route with
    /// `merchant:`, kept 40 days). A budget of their own, so a busy ledger never takes the room
    /// of a deny-list entry; when full, new events are not added to the ledger.
    #[serde(default = "default_max_ledger_entries")]
    pub(crate) max_ledger_entries: u64,
    /// Entries of the orders' delivery histories (`GET /admin/orders/<out_trade_no>`; a few per
    /// order, kept 7 days). When full, new deliveries are not added to a history.
    #[serde(default = "default_max_history_entries")]
    pub(crate) max_history_entries: u64,
}

fn default_max_nonces() -> u64 {
    1_000_000
}
fn default_max_dedup_records() -> u64 {
    1_000_000
}
fn default_max_buckets() -> u64 {
    200_000
}
fn default_max_counters() -> u64 {
    200_000
}
fn default_max_deny_entries() -> u64 {
    100_000
}
fn default_max_ledger_entries() -> u64 {
    100_000
}
fn default_max_history_entries() -> u64 {
    200_000
}

impl Default for EmbeddedStoreConfig {
    fn default() -> Self {
        Self {
            max_nonces: default_max_nonces(),
            max_dedup_records: default_max_dedup_records(),
            max_buckets: default_max_buckets(),
            max_counters: default_max_counters(),
            max_deny_entries: default_max_deny_entries(),
            max_ledger_entries: default_max_ledger_entries(),
            max_history_entries: default_max_history_entries(),
        }
    }
}

impl EmbeddedStoreConfig {
    /// (key, value) of every budget, for validation and `payguard check`.
    pub(crate) fn budgets(&self) -> [(&'static str, u64); 7] {
        [
            ("max_nonces", self.max_nonces),
            ("max_dedup_records", self.max_dedup_records),
            ("max_buckets", self.max_buckets),
            ("max_counters", self.max_counters),
            ("max_deny_entries", self.max_deny_entries),
            ("max_ledger_entries", self.max_ledger_entries),
            ("max_history_entries", self.max_history_entries),
        ]
    }
}

/// The kinds of record a full budget refuses (metric label values of `payguard_store_full_total`).
pub(crate) const BUDGETED_KINDS: [&str; 6] = [
    "nonces",
    "dedup records",
    "counters",
    "deny-list members",
    "ledger entries",
    "history entries",
];

/// Sets whose name starts with this are the delivered-event ledger's ([`Tables::ledger`]).
pub(crate) const LEDGER_SET_PREFIX: &str = "ledger:";

/// Tolerance for float comparisons of token counts (refill accrues fractions); same as lua/lib.lua.
const EPS: f64 = 1e-6;

/// Expired records removed per operation, so memory follows the TTLs without a background task.
const EXPIRE_PER_OP: usize = 8;

/// One kind of record: values by key, each with a deadline (unix ms by the store's clock), and a
/// min-heap of deadlines to find expired records without scanning.
///
/// The heap is lazy: a record whose deadline moved later keeps its old heap entry, which is
/// re-queued at the new deadline when it comes up; one whose deadline moved earlier is queued
/// again and its old entry skipped. `queued` says which entry is current.
struct Table<V> {
    kind: &'static str,
    cap: usize,
    map: HashMap<Arc<str>, Record<V>>,
    expiry: BinaryHeap<Reverse<(i64, Arc<str>)>>,
}

struct Record<V> {
    value: V,
    deadline: i64,
    queued: i64,
}

/// What to do with a new key when a table is full.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WhenFull {
    /// Refuse it (security records).
    Refuse,
    /// Drop the record with the earliest deadline.
    DropEarliest,
}

impl<V> Table<V> {
    fn new(kind: &'static str, cap: u64) -> Self {
        Self {
            kind,
            cap: usize::try_from(cap).unwrap_or(usize::MAX).max(1),
            map: HashMap::new(),
            expiry: BinaryHeap::new(),
        }
    }

    /// The live record at `k`; an expired one is dropped.
    fn live(&mut self, k: &str, now: i64) -> Option<&mut Record<V>> {
        if self.map.get(k).is_some_and(|r| r.deadline <= now) {
            self.map.remove(k);
            return None;
        }
        self.map.get_mut(k)
    }

    /// Pops expired heap entries (at most `max`), dropping their records or re-queueing records
    /// whose deadline moved later.
    fn expire(&mut self, now: i64, max: usize) {
        for _ in 0..max {
            let Some(Reverse((at, _))) = self.expiry.peek() else {
                return;
            };
            if *at > now {
                return;
            }
            let Some(Reverse((at, key))) = self.expiry.pop() else {
                return;
            };
            let Some(record) = self.map.get_mut(&key) else {
                continue;
            };
            if record.queued != at {
                continue; // a stale entry; the record is queued elsewhere
            }
            if record.deadline <= now {
                self.map.remove(&key);
            } else {
                record.queued = record.deadline;
                self.expiry.push(Reverse((record.deadline, key)));
            }
        }
    }

    /// Stores `value` at `k` until `deadline`, replacing what was there. A new key in a full
    /// table first makes room from expired records, then follows `when_full`.
    fn put(&mut self, k: &str, value: V, deadline: i64, now: i64, when_full: WhenFull) -> Result<(), StoreError> {
        if let Some(record) = self.map.get_mut(k) {
            record.value = value;
            self.move_deadline(k, deadline);
            return Ok(());
        }
        if self.map.len() >= self.cap {
            self.expire(now, usize::MAX);
        }
        if self.map.len() >= self.cap {
            match when_full {
                WhenFull::Refuse => return Err(StoreError::Full(self.kind)),
                WhenFull::DropEarliest => self.drop_earliest(),
            }
        }
        let key: Arc<str> = Arc::from(k);
        self.expiry.push(Reverse((deadline, Arc::clone(&key))));
        self.map.insert(
            key,
            Record {
                value,
                deadline,
                queued: deadline,
            },
        );
        self.compact();
        Ok(())
    }

    /// Changes the deadline of the record at `k` (which exists).
    fn move_deadline(&mut self, k: &str, deadline: i64) {
        let Some((key, record)) = self.map.get_key_value(k) else {
            return;
        };
        let (key, earlier) = (Arc::clone(key), deadline < record.queued);
        if let Some(record) = self.map.get_mut(k) {
            record.deadline = deadline;
            if earlier {
                record.queued = deadline;
                self.expiry.push(Reverse((deadline, key)));
                self.compact();
            }
        }
    }

    fn remove(&mut self, k: &str) -> Option<V> {
        self.map.remove(k).map(|r| r.value)
    }

    fn drop_earliest(&mut self) {
        while let Some(Reverse((at, key))) = self.expiry.pop() {
            if self.map.get(&key).is_some_and(|r| r.queued == at) {
                self.map.remove(&key);
                return;
            }
        }
    }

    /// Rebuilds the heap when stale entries outnumber records (deadlines moved earlier often).
    fn compact(&mut self) {
        if self.expiry.len() > 2 * self.map.len() + 1024 {
            self.expiry = self
                .map
                .iter_mut()
                .map(|(k, r)| {
                    r.queued = r.deadline;
                    Reverse((r.deadline, Arc::clone(k)))
                })
                .collect();
        }
    }
}

/// A dedup record.
enum Dedup {
    /// Claimed by the holder of this token.
    Lease(String),
    /// Completed.
    Done,
}

/// An order counter.
enum Counter {
    /// Calendar window: the caller names the window in the key.
    Fixed(u64),
    /// Sliding window: (time ms, amount) oldest first, and their sum.
    Sliding { events: VecDeque<(i64, u64)>, sum: u64 },
}

struct Tables {
    nonces: Table<()>,
    dedup: Table<Dedup>,
    buckets: Table<(f64, i64)>,
    counters: Table<Counter>,
    /// Set members, keyed `set \u{1f} member`.
    members: Table<()>,
    /// Members of the ledger's sets ([`LEDGER_SET_PREFIX`]), keyed the same way.
    ledger: Table<()>,
    /// Members of the delivery histories ([`crate::history::HISTORY_SET_PREFIX`]).
    history: Table<()>,
}

/// In-process [`Store`] for a single payguard instance.
pub struct EmbeddedStore {
    clock: SharedClock,
    tables: Mutex<Tables>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.tables.lock();
        f.debug_struct("EmbeddedStore")
            .field("nonces", &t.nonces.map.len())
            .field("dedup", &t.dedup.map.len())
            .field("buckets", &t.buckets.map.len())
            .field("counters", &t.counters.map.len())
            .field("members", &t.members.map.len())
            .field("ledger", &t.ledger.map.len())
            .field("history", &t.history.map.len())
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

fn counter_key(spec: &CounterSpec) -> String {
    match &spec.window {
        CounterWindow::Sliding(_) => spec.key.clone(),
        CounterWindow::Fixed { window_id, .. } => format!("{}\u{1f}{window_id}", spec.key),
    }
}

fn member_key(set: &str, member: &str) -> String {
    format!("{set}\u{1f}{member}")
}

/// Refill amount per period; rule validation rejects 0, and it must never divide by zero here.
fn refill_per_period(b: &BucketSpec) -> f64 {
    b.refill_tokens.max(1) as f64
}

/// Tokens in bucket `b` at `now` given its stored (tokens, at) state: continuous refill, clamped
/// to the *current* capacity so that editing a rule's numbers keeps (but bounds) its state.
/// A missing bucket is full. Same arithmetic as lua/lib.lua.
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

impl Tables {
    fn expire(&mut self, now: i64) {
        self.nonces.expire(now, EXPIRE_PER_OP);
        self.dedup.expire(now, EXPIRE_PER_OP);
        self.buckets.expire(now, EXPIRE_PER_OP);
        self.counters.expire(now, EXPIRE_PER_OP);
        self.members.expire(now, EXPIRE_PER_OP);
        self.ledger.expire(now, EXPIRE_PER_OP);
        self.history.expire(now, EXPIRE_PER_OP);
    }

    /// The table holding the members of `set`.
    fn set_table(&mut self, set: &str) -> &mut Table<()> {
        if set.starts_with(LEDGER_SET_PREFIX) {
            &mut self.ledger
        } else if set.starts_with(crate::history::HISTORY_SET_PREFIX) {
            &mut self.history
        } else {
            &mut self.members
        }
    }

    /// Decides buckets (see [`BucketSpec::enforce`]); `take_enforced` false decides enforced
    /// buckets without debiting. Returns the decisions and whether every enforced bucket held
    /// its cost.
    fn take(&mut self, specs: &[BucketSpec], now: i64) -> (Vec<BucketDecision>, bool) {
        let tokens: Vec<f64> = specs
            .iter()
            .map(|b| {
                let state = self.buckets.live(&b.key, now).map(|r| r.value);
                tokens_at(b, state, now)
            })
            .collect();
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
                // Buckets never refuse: a full table drops the bucket closest to refilling.
                let _ = self.buckets.put(
                    &b.key,
                    (t, now),
                    now.saturating_add(full_in),
                    now,
                    WhenFull::DropEarliest,
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

    fn claim_nonce(&mut self, k: &str, ttl: Duration, now: i64) -> Result<bool, StoreError> {
        if self.nonces.live(k, now).is_some() {
            return Ok(false);
        }
        self.nonces
            .put(k, (), now.saturating_add(ms_i64(ttl)), now, WhenFull::Refuse)?;
        Ok(true)
    }

    /// Whether counting `spec` needs a new record (so a full table must be checked first).
    fn counter_is_new(&mut self, spec: &CounterSpec, now: i64) -> bool {
        self.counters.live(&counter_key(spec), now).is_none()
    }

    fn count(&mut self, spec: &CounterSpec, incr: u64, now: i64) -> Result<u64, StoreError> {
        let k = counter_key(spec);
        match &spec.window {
            CounterWindow::Fixed { ttl, .. } => {
                let current = match self.counters.live(&k, now).map(|r| &r.value) {
                    Some(Counter::Fixed(v)) => *v,
                    _ => 0,
                };
                if incr == 0 {
                    return Ok(current);
                }
                let value = current.saturating_add(incr);
                self.counters.put(
                    &k,
                    Counter::Fixed(value),
                    now.saturating_add(ms_i64(*ttl)),
                    now,
                    WhenFull::Refuse,
                )?;
                Ok(value)
            }
            CounterWindow::Sliding(window) => {
                let window = ms_i64(*window);
                let cutoff = now.saturating_sub(window);
                if self.counters.live(&k, now).is_none() {
                    if incr == 0 {
                        return Ok(0);
                    }
                    let fresh = Counter::Sliding {
                        events: VecDeque::new(),
                        sum: 0,
                    };
                    self.counters
                        .put(&k, fresh, now.saturating_add(window), now, WhenFull::Refuse)?;
                }
                let Some(record) = self.counters.live(&k, now) else {
                    return Ok(0);
                };
                if !matches!(record.value, Counter::Sliding { .. }) {
                    record.value = Counter::Sliding {
                        events: VecDeque::new(),
                        sum: 0,
                    };
                }
                let Counter::Sliding { events, sum } = &mut record.value else {
                    return Ok(0);
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
                let (value, last) = (*sum, events.back().map(|(at, _)| *at));
                match last {
                    // The record lives as long as its newest event counts.
                    Some(last) => self.counters.move_deadline(&k, last.saturating_add(window)),
                    None => {
                        self.counters.remove(&k);
                    }
                }
                Ok(value)
            }
        }
    }

    fn set_contains(&mut self, set: &str, member: &str, now: i64) -> bool {
        self.set_table(set).live(&member_key(set, member), now).is_some()
    }

    fn claim_dedup(&mut self, k: &str, lease: Duration, now: i64) -> Result<DedupClaim, StoreError> {
        if let Some(record) = self.dedup.live(k, now) {
            return Ok(match record.value {
                Dedup::Done => DedupClaim::Done,
                Dedup::Lease(_) => DedupClaim::InFlight,
            });
        }
        let token = lease_token();
        self.dedup.put(
            k,
            Dedup::Lease(token.clone()),
            now.saturating_add(ms_i64(lease)),
            now,
            WhenFull::Refuse,
        )?;
        Ok(DedupClaim::Claimed { token })
    }

    fn holds_lease(&mut self, k: &str, token: &str, now: i64) -> bool {
        // Tokens are random and never secret-derived; a plain comparison leaks nothing.
        self.dedup
            .live(k, now)
            .is_some_and(|r| matches!(&r.value, Dedup::Lease(held) if held == token))
    }
}

impl EmbeddedStore {
    /// An empty store with the budgets of `cfg`, telling time by `clock`.
    pub fn new(cfg: &EmbeddedStoreConfig, clock: SharedClock) -> Self {
        Self {
            clock,
            tables: Mutex::new(Tables {
                nonces: Table::new("nonces", cfg.max_nonces),
                dedup: Table::new("dedup records", cfg.max_dedup_records),
                buckets: Table::new("buckets", cfg.max_buckets),
                counters: Table::new("counters", cfg.max_counters),
                members: Table::new("deny-list members", cfg.max_deny_entries),
                ledger: Table::new("ledger entries", cfg.max_ledger_entries),
                history: Table::new("history entries", cfg.max_history_entries),
            }),
        }
    }

    /// Records held per kind, and each kind's budget (expired records not yet dropped count).
    pub(crate) fn usage(&self) -> Vec<(&'static str, u64, u64)> {
        let t = self.tables.lock();
        let row = |table: &dyn Usage| table.usage();
        vec![
            row(&t.nonces),
            row(&t.dedup),
            row(&t.buckets),
            row(&t.counters),
            row(&t.members),
            row(&t.ledger),
            row(&t.history),
        ]
    }

    /// Runs `f` on the tables under the lock, after dropping a few expired records.
    fn with<T>(&self, f: impl FnOnce(&mut Tables, i64) -> T) -> T {
        let now = self.clock.unix_millis();
        let mut t = self.tables.lock();
        t.expire(now);
        f(&mut t, now)
    }
}

trait Usage {
    fn usage(&self) -> (&'static str, u64, u64);
}

impl<V> Usage for Table<V> {
    fn usage(&self) -> (&'static str, u64, u64) {
        (self.kind, self.map.len() as u64, self.cap as u64)
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
        Ok(self.with(|t, now| t.take(buckets, now).0))
    }

    async fn claim_nonce(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.with(|t, now| t.claim_nonce(key, ttl, now))
    }

    async fn count(&self, spec: &CounterSpec) -> Result<u64, StoreError> {
        self.with(|t, now| t.count(spec, spec.incr, now))
    }

    async fn guard(&self, batch: &GuardBatch) -> Result<GuardOutcome, StoreError> {
        self.with(|t, now| {
            if let Some((set, member)) = &batch.deny {
                if t.set_contains(set, member, now) {
                    return Ok(GuardOutcome {
                        denied: true,
                        ..GuardOutcome::default()
                    });
                }
            }
            // All or nothing: a counter that could not be stored must fail the batch before
            // the nonce is claimed or a token taken.
            let new_counters = batch.counters.iter().filter(|c| t.counter_is_new(c, now)).count();
            if new_counters > 0 && t.counters.map.len() + new_counters > t.counters.cap {
                t.counters.expire(now, usize::MAX);
                if t.counters.map.len() + new_counters > t.counters.cap {
                    return Err(StoreError::Full(t.counters.kind));
                }
            }
            if let Some((nonce, ttl)) = &batch.nonce {
                if !t.claim_nonce(nonce, *ttl, now)? {
                    return Ok(GuardOutcome {
                        nonce_replayed: true,
                        ..GuardOutcome::default()
                    });
                }
            }
            let (buckets, enforced_ok) = t.take(&batch.buckets, now);
            let counters = batch
                .counters
                .iter()
                .map(|c| t.count(c, if enforced_ok { c.incr } else { 0 }, now))
                .collect::<Result<Vec<u64>, StoreError>>()?;
            Ok(GuardOutcome {
                denied: false,
                nonce_replayed: false,
                nonce_before_store_loss: false,
                buckets,
                counters,
            })
        })
    }

    async fn dedup_claim(&self, k: &str, lease: Duration) -> Result<DedupClaim, StoreError> {
        self.with(|t, now| t.claim_dedup(k, lease, now))
    }

    async fn dedup_claim_unless(
        &self,
        k: &str,
        lease: Duration,
        superseded_by: &str,
    ) -> Result<DedupClaim, StoreError> {
        self.with(|t, now| {
            if t.dedup.live(superseded_by, now).is_some() {
                return Ok(DedupClaim::Superseded);
            }
            t.claim_dedup(k, lease, now)
        })
    }

    async fn dedup_complete(&self, k: &str, token: &str, keep: Duration) -> Result<bool, StoreError> {
        self.with(|t, now| {
            if !t.holds_lease(k, token, now) {
                return Ok(false);
            }
            t.dedup
                .put(k, Dedup::Done, now.saturating_add(ms_i64(keep)), now, WhenFull::Refuse)?;
            Ok(true)
        })
    }

    async fn dedup_release(&self, k: &str, token: &str) -> Result<bool, StoreError> {
        self.with(|t, now| {
            if !t.holds_lease(k, token, now) {
                return Ok(false);
            }
            t.dedup.remove(k);
            Ok(true)
        })
    }

    async fn set_add(&self, set: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        self.with(|t, now| {
            t.set_table(set).put(
                &member_key(set, member),
                (),
                now.saturating_add(ms_i64(ttl)),
                now,
                WhenFull::Refuse,
            )
        })
    }

    async fn set_remove(&self, set: &str, member: &str) -> Result<bool, StoreError> {
        self.with(|t, now| {
            let k = member_key(set, member);
            let table = t.set_table(set);
            let live = table.live(&k, now).is_some();
            table.remove(&k);
            Ok(live)
        })
    }

    async fn set_contains(&self, set: &str, member: &str) -> Result<bool, StoreError> {
        Ok(self.with(|t, now| t.set_contains(set, member, now)))
    }

    fn usage(&self) -> Vec<(&'static str, u64, u64)> {
        EmbeddedStore::usage(self)
    }

    async fn set_members(&self, set: &str) -> Result<Vec<(String, Duration)>, StoreError> {
        let prefix = member_key(set, "");
        Ok(self.with(|t, now| {
            let mut out: Vec<(String, Duration)> = t
                .set_table(set)
                .map
                .iter()
                .filter(|(_, r)| r.deadline > now)
                .filter_map(|(k, r)| {
                    k.strip_prefix(prefix.as_str())
                        .map(|m| (m.to_string(), ms_duration(r.deadline - now)))
                })
                .collect();
            out.sort();
            out
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn store(cfg: EmbeddedStoreConfig) -> (EmbeddedStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
        (EmbeddedStore::new(&cfg, clock.clone()), clock)
    }

    fn small(n: u64) -> EmbeddedStoreConfig {
        EmbeddedStoreConfig {
            max_nonces: n,
            max_dedup_records: n,
            max_buckets: n,
            max_counters: n,
            max_deny_entries: n,
            max_ledger_entries: n,
            max_history_entries: n,
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_full_ledger_never_takes_the_room_of_a_deny_list_entry() {
        let (store, _clock) = store(small(2));
        store.set_add("ledger:wx:2026-12-03", "e1", MINUTE).await.unwrap();
        store.set_add("ledger:wx:2026-12-04", "e2", MINUTE).await.unwrap();
        assert_eq!(
            store.set_add("ledger:wx:2026-12-04", "e3", MINUTE).await,
            Err(StoreError::Full("ledger entries"))
        );
        // The deny list has its own budget, untouched by the ledger.
        store.set_add("deny", "203.0.113.7", MINUTE).await.unwrap();
        store.set_add("deny", "203.0.113.8", MINUTE).await.unwrap();
        assert!(store.set_contains("deny", "203.0.113.8").await.unwrap());
        assert_eq!(store.set_members("ledger:wx:2026-12-04").await.unwrap().len(), 1);
        assert!(store.set_remove("ledger:wx:2026-12-03", "e1").await.unwrap());
        store.set_add("ledger:wx:2026-12-04", "e3", MINUTE).await.unwrap();
    }

    #[tokio::test]
    async fn a_full_nonce_budget_refuses_new_nonces_and_never_forgets_a_live_one() {
        let (store, clock) = store(small(100));
        for i in 0..100 {
            assert!(store.claim_nonce(&format!("n{i}"), MINUTE).await.unwrap());
        }
        assert_eq!(
            store.claim_nonce("n100", MINUTE).await,
            Err(StoreError::Full("nonces")),
            "fail closed"
        );
        for i in 0..100 {
            assert!(
                !store.claim_nonce(&format!("n{i}"), MINUTE).await.unwrap(),
                "n{i} is still a replay"
            );
        }
        // Once they expire there is room again.
        clock.advance_millis(60_000);
        assert!(store.claim_nonce("n100", MINUTE).await.unwrap());
        assert!(store.claim_nonce("n0", MINUTE).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_dedup_budget_refuses_new_claims_and_keeps_delivered_events() {
        let (store, _clock) = store(small(10));
        for i in 0..10 {
            let DedupClaim::Claimed { token } = store.dedup_claim(&format!("e{i}"), MINUTE).await.unwrap() else {
                panic!("fresh key");
            };
            assert!(store.dedup_complete(&format!("e{i}"), &token, MINUTE).await.unwrap());
        }
        assert_eq!(
            store.dedup_claim("e10", MINUTE).await,
            Err(StoreError::Full("dedup records"))
        );
        assert_eq!(
            store.dedup_claim("e3", MINUTE).await.unwrap(),
            DedupClaim::Done,
            "still a duplicate"
        );
    }

    #[tokio::test]
    async fn a_full_bucket_budget_drops_the_bucket_closest_to_refilling() {
        let (store, _clock) = store(small(2));
        let bucket = |key: &str, per_ms: u64| BucketSpec {
            key: key.into(),
            capacity: 10,
            refill_tokens: 1,
            refill_period: Duration::from_millis(per_ms),
            cost: 5,
            enforce: true,
        };
        // `fast` refills 5 tokens in 5 ms, `slow` in 50 s.
        store.take_buckets(&[bucket("fast", 1)]).await.unwrap();
        store.take_buckets(&[bucket("slow", 10_000)]).await.unwrap();
        store.take_buckets(&[bucket("third", 10_000)]).await.unwrap();
        let slow = store.take_buckets(&[bucket("slow", 10_000)]).await.unwrap();
        assert_eq!(slow[0].remaining, 0, "slow kept its state (5 - 5)");
        let usage = store.usage();
        assert_eq!(usage[2], ("buckets", 2, 2));
    }

    #[tokio::test]
    async fn a_full_counter_budget_fails_the_whole_guard_batch_before_anything_changes() {
        let (store, _clock) = store(small(1));
        let counter = |key: &str| CounterSpec {
            key: key.into(),
            window: CounterWindow::Sliding(MINUTE),
            incr: 1,
        };
        store.count(&counter("u1")).await.unwrap();
        let batch = GuardBatch {
            deny: None,
            nonce: Some(("n1".into(), MINUTE)),
            nonce_timestamp: 1_700_000_000,
            buckets: Vec::new(),
            counters: vec![counter("u2")],
        };
        assert_eq!(store.guard(&batch).await, Err(StoreError::Full("counters")));
        assert!(
            store.claim_nonce("n1", MINUTE).await.unwrap(),
            "the nonce was not claimed"
        );
    }

    #[tokio::test]
    async fn expired_records_read_as_absent_and_are_dropped() {
        let (store, clock) = store(small(100));
        store.set_add("deny", "1.2.3.4", Duration::from_secs(5)).await.unwrap();
        for i in 0..50 {
            store
                .claim_nonce(&format!("n{i}"), Duration::from_secs(5))
                .await
                .unwrap();
        }
        clock.advance_millis(5_000);
        assert!(!store.set_contains("deny", "1.2.3.4").await.unwrap());
        assert!(store.set_members("deny").await.unwrap().is_empty());
        assert!(!store.set_remove("deny", "1.2.3.4").await.unwrap());
        // Every operation drops a few expired records: memory follows the TTLs.
        for _ in 0..10 {
            store.ping().await.unwrap();
            store.set_contains("deny", "x").await.unwrap();
        }
        assert_eq!(store.usage()[0].1, 0, "{:?}", store.usage());
    }

    #[tokio::test]
    async fn a_deadline_moved_earlier_or_later_expires_at_the_new_time() {
        let (store, clock) = store(small(100));
        let bucket = BucketSpec {
            key: "b".into(),
            capacity: 100,
            refill_tokens: 1,
            refill_period: Duration::from_millis(100),
            cost: 50,
            enforce: true,
        };
        // Takes 50 (full again in 5 s), then 50 more (10 s): the deadline moves later.
        store.take_buckets(std::slice::from_ref(&bucket)).await.unwrap();
        store.take_buckets(std::slice::from_ref(&bucket)).await.unwrap();
        clock.advance_millis(6_000);
        store.set_contains("deny", "x").await.unwrap();
        assert_eq!(store.usage()[2].1, 1, "not expired at its first deadline");
        clock.advance_millis(4_000);
        store.set_contains("deny", "x").await.unwrap();
        assert_eq!(store.usage()[2].1, 0, "expired at the later one");
    }

    #[test]
    fn config_has_a_budget_per_kind_and_rejects_unknown_keys() {
        let cfg: EmbeddedStoreConfig = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(cfg, EmbeddedStoreConfig::default());
        assert_eq!(cfg.max_nonces, 1_000_000);
        assert!(serde_yaml_ng::from_str::<EmbeddedStoreConfig>("max_entries: 5").is_err());
    }
}
