//! One contract for every store backend: the embedded store (manual clock), a real standalone
//! Redis and a real 3-master Redis Cluster run the same cases. Redis-only properties (TTL on
//! every key, one EVALSHA per guarded request, NOSCRIPT fallback, behaviour during an outage)
//! follow.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use payguard::clock::ManualClock;
use payguard::config::secret::SecretRef;
use payguard::store::{
    open, redis_store, BucketSpec, CounterSpec, CounterWindow, DedupClaim, EmbeddedStore, EmbeddedStoreConfig,
    GuardBatch, RedisStoreConfig, Store, StoreBackend, StoreConfig, StoreError,
};
use support::redis_server::{RedisCluster, RedisServer};

/// Generous for the contract cases: 200 concurrent calls on a debug build must not time out.
/// The outage tests use the 50 ms default.
const TEST_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A store under test and how to move its time.
struct Fixture {
    store: Arc<dyn Store>,
    /// The embedded store's clock; Redis uses real time (`TIME`), so tests sleep instead.
    manual: Option<Arc<ManualClock>>,
    _server: Option<RedisServer>,
}

impl Fixture {
    fn embedded() -> Self {
        let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
        let store = EmbeddedStore::new(&EmbeddedStoreConfig::default(), clock.clone());
        Self {
            store: Arc::new(store),
            manual: Some(clock),
            _server: None,
        }
    }

    async fn standalone() -> Self {
        let server = RedisServer::start();
        let store = connect(redis_cfg(Some(server.url()), vec![], "pg:")).await;
        Self {
            store,
            manual: None,
            _server: Some(server),
        }
    }

    /// A store on the shared cluster with a key prefix of its own, so tests do not interfere.
    async fn cluster() -> Self {
        let store = connect(redis_cfg(None, shared_cluster().urls(), &unique_prefix())).await;
        Self {
            store,
            manual: None,
            _server: None,
        }
    }

    /// Lets `ms` of store time pass.
    async fn advance(&self, ms: u64) {
        match &self.manual {
            Some(clock) => clock.advance_millis(ms as i64),
            None => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    }
}

fn redis_cfg(url: Option<String>, cluster_nodes: Vec<String>, prefix: &str) -> RedisStoreConfig {
    RedisStoreConfig {
        url,
        cluster_nodes,
        key_prefix: prefix.to_string(),
        command_timeout: TEST_COMMAND_TIMEOUT,
        ..RedisStoreConfig::default()
    }
}

async fn connect(cfg: RedisStoreConfig) -> Arc<dyn Store> {
    Arc::new(redis_store::connect(&cfg).await.expect("connect to test redis"))
}

fn unique_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("t{}:", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One cluster for the whole test binary (creating one takes about a second); its processes die
/// with the test process.
fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(RedisCluster::start)
}

fn bucket(key: &str, capacity: u64, refill_tokens: u64, refill_period_ms: u64, enforce: bool) -> BucketSpec {
    BucketSpec {
        key: key.to_string(),
        capacity,
        refill_tokens,
        refill_period: Duration::from_millis(refill_period_ms),
        cost: 1,
        enforce,
    }
}

/// A bucket that effectively never refills during a test.
fn slow_bucket(key: &str, capacity: u64, enforce: bool) -> BucketSpec {
    bucket(key, capacity, 1, 3_600_000, enforce)
}

fn sliding(key: &str, window_ms: u64, incr: u64) -> CounterSpec {
    CounterSpec {
        key: key.to_string(),
        window: CounterWindow::Sliding(Duration::from_millis(window_ms)),
        incr,
    }
}

fn fixed(key: &str, window_id: &str, ttl_ms: u64, incr: u64) -> CounterSpec {
    CounterSpec {
        key: key.to_string(),
        window: CounterWindow::Fixed {
            window_id: window_id.to_string(),
            ttl: Duration::from_millis(ttl_ms),
        },
        incr,
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// The contract, one `async fn` per property, each against a fresh store (or namespace).
mod cases {
    use super::*;

    pub async fn bucket_takes_until_empty_refuses_then_refills(f: &Fixture) {
        let b = bucket("b", 3, 1, 300, true);
        for expected in [2, 1, 0] {
            let d = f.store.take_buckets(std::slice::from_ref(&b)).await.unwrap()[0];
            assert!(d.allowed);
            assert_eq!(d.remaining, expected);
            assert_eq!(d.retry_after, Duration::ZERO);
        }
        let d = f.store.take_buckets(std::slice::from_ref(&b)).await.unwrap()[0];
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(
            d.retry_after > Duration::from_millis(200) && d.retry_after <= Duration::from_millis(300),
            "{d:?}"
        );
        assert!(
            d.reset_after > Duration::from_millis(800) && d.reset_after <= Duration::from_millis(900),
            "{d:?}"
        );
        f.advance(350).await;
        let d = f.store.take_buckets(std::slice::from_ref(&b)).await.unwrap()[0];
        assert!(d.allowed, "one token refilled after a period: {d:?}");
        assert_eq!(d.remaining, 0);
    }

    pub async fn bucket_capacity_edit_keeps_state(f: &Fixture) {
        let take = |cap| async move { f.store.take_buckets(&[slow_bucket("edit", cap, true)]).await.unwrap()[0] };
        for _ in 0..4 {
            take(10).await;
        }
        assert_eq!(take(10).await.remaining, 5);
        // A larger capacity does not refill the bucket: editing a limit keeps its state.
        assert_eq!(take(20).await.remaining, 4);
        // A smaller capacity clamps what is left.
        assert_eq!(take(3).await.remaining, 2);
    }

    pub async fn shadow_bucket_never_blocks_and_is_debited_on_its_own(f: &Fixture) {
        let a = slow_bucket("a", 5, true);
        let s = slow_bucket("s", 1, false);
        let d = f.store.take_buckets(&[a.clone(), s.clone()]).await.unwrap();
        assert!(d[0].allowed && d[1].allowed);
        assert_eq!((d[0].remaining, d[1].remaining), (4, 0));
        let d = f.store.take_buckets(&[a.clone(), s.clone()]).await.unwrap();
        assert!(d[0].allowed, "an empty shadow bucket does not stop the enforced one");
        assert!(!d[1].allowed);
        assert_eq!((d[0].remaining, d[1].remaining), (3, 0));

        // An enforced refusal takes nothing from the other enforced buckets, but shadow buckets
        // are still decided and debited.
        let one = slow_bucket("one", 1, true);
        let s2 = slow_bucket("s2", 5, false);
        f.store.take_buckets(std::slice::from_ref(&one)).await.unwrap();
        let d = f
            .store
            .take_buckets(&[a.clone(), one.clone(), s2.clone()])
            .await
            .unwrap();
        assert!(d[0].allowed, "a held its cost");
        assert_eq!(d[0].remaining, 3, "but was not debited");
        assert!(!d[1].allowed);
        assert!(d[2].allowed);
        assert_eq!(d[2].remaining, 4);
        let d = f.store.take_buckets(std::slice::from_ref(&a)).await.unwrap();
        assert_eq!(d[0].remaining, 2);
    }

    pub async fn concurrent_takes_allow_exactly_capacity(f: &Fixture) {
        let spec = slow_bucket("hot", 50, true);
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let store = Arc::clone(&f.store);
                let spec = spec.clone();
                tokio::spawn(async move { store.take_buckets(&[spec]).await.unwrap()[0].allowed })
            })
            .collect();
        let mut allowed = 0;
        for t in tasks {
            allowed += usize::from(t.await.unwrap());
        }
        assert_eq!(allowed, 50);
    }

    pub async fn nonce_is_claimed_once(f: &Fixture) {
        assert!(f.store.claim_nonce("n1", MINUTE).await.unwrap());
        assert!(!f.store.claim_nonce("n1", MINUTE).await.unwrap());
        assert!(f.store.claim_nonce("n2", MINUTE).await.unwrap());
    }

    pub async fn nonce_can_be_claimed_again_after_its_ttl(f: &Fixture) {
        assert!(f.store.claim_nonce("n", Duration::from_millis(200)).await.unwrap());
        f.advance(300).await;
        assert!(f.store.claim_nonce("n", Duration::from_millis(200)).await.unwrap());
    }

    pub async fn sliding_counter_counts_events_within_the_window(f: &Fixture) {
        assert_eq!(f.store.count(&sliding("c", 600, 1)).await.unwrap(), 1);
        assert_eq!(f.store.count(&sliding("c", 600, 2)).await.unwrap(), 3);
        assert_eq!(
            f.store.count(&sliding("c", 600, 0)).await.unwrap(),
            3,
            "incr 0 only reads"
        );
        f.advance(400).await;
        assert_eq!(f.store.count(&sliding("c", 600, 1)).await.unwrap(), 4);
        f.advance(400).await;
        assert_eq!(
            f.store.count(&sliding("c", 600, 0)).await.unwrap(),
            1,
            "the first three rolled out"
        );
        f.advance(400).await;
        assert_eq!(f.store.count(&sliding("c", 600, 0)).await.unwrap(), 0);
        assert_eq!(f.store.count(&sliding("absent", 600, 0)).await.unwrap(), 0);
    }

    pub async fn fixed_counter_counts_per_window_and_expires(f: &Fixture) {
        assert_eq!(f.store.count(&fixed("o", "w1", 300, 1)).await.unwrap(), 1);
        assert_eq!(f.store.count(&fixed("o", "w1", 300, 1)).await.unwrap(), 2);
        assert_eq!(
            f.store.count(&fixed("o", "w2", 300, 1)).await.unwrap(),
            1,
            "another window"
        );
        assert_eq!(f.store.count(&fixed("o", "w1", 300, 0)).await.unwrap(), 2);
        f.advance(400).await;
        assert_eq!(f.store.count(&fixed("o", "w1", 300, 0)).await.unwrap(), 0);
    }

    pub async fn dedup_claim_in_flight_complete_done(f: &Fixture) {
        let DedupClaim::Claimed { token } = f.store.dedup_claim("k", MINUTE).await.unwrap() else {
            panic!("fresh key must be claimed")
        };
        assert_eq!(f.store.dedup_claim("k", MINUTE).await.unwrap(), DedupClaim::InFlight);
        assert!(!f.store.dedup_complete("k", "not-the-token", MINUTE).await.unwrap());
        assert!(f.store.dedup_complete("k", &token, MINUTE).await.unwrap());
        assert_eq!(f.store.dedup_claim("k", MINUTE).await.unwrap(), DedupClaim::Done);
        assert!(
            !f.store.dedup_release("k", &token).await.unwrap(),
            "a done key cannot be released"
        );
        assert_eq!(f.store.dedup_claim("k", MINUTE).await.unwrap(), DedupClaim::Done);
    }

    pub async fn dedup_release_lets_the_next_delivery_claim(f: &Fixture) {
        let DedupClaim::Claimed { token: first } = f.store.dedup_claim("k", MINUTE).await.unwrap() else {
            panic!("fresh key must be claimed")
        };
        assert!(f.store.dedup_release("k", &first).await.unwrap());
        let DedupClaim::Claimed { token: second } = f.store.dedup_claim("k", MINUTE).await.unwrap() else {
            panic!("released key must be claimable")
        };
        assert_ne!(first, second);
        assert!(
            !f.store.dedup_release("k", &first).await.unwrap(),
            "a stale token releases nothing"
        );
        assert_eq!(f.store.dedup_claim("k", MINUTE).await.unwrap(), DedupClaim::InFlight);
    }

    pub async fn dedup_lease_expires_and_stale_token_cannot_complete(f: &Fixture) {
        let lease = Duration::from_millis(200);
        let DedupClaim::Claimed { token: stale } = f.store.dedup_claim("k", lease).await.unwrap() else {
            panic!("fresh key must be claimed")
        };
        f.advance(300).await;
        let DedupClaim::Claimed { token: live } = f.store.dedup_claim("k", MINUTE).await.unwrap() else {
            panic!("expired lease must be claimable")
        };
        assert!(!f.store.dedup_complete("k", &stale, MINUTE).await.unwrap());
        assert_eq!(
            f.store.dedup_claim("k", MINUTE).await.unwrap(),
            DedupClaim::InFlight,
            "key left as it was"
        );
        assert!(f.store.dedup_complete("k", &live, MINUTE).await.unwrap());
        assert_eq!(f.store.dedup_claim("k", MINUTE).await.unwrap(), DedupClaim::Done);
    }

    /// A pending event is late once the order's succeeded event is claimed or done; on Cluster
    /// the two keys sit in different slots, and a claim that turns out superseded is undone.
    pub async fn dedup_claim_unless_superseded(f: &Fixture) {
        let fresh = f
            .store
            .dedup_claim_unless("pending-1", MINUTE, "succeeded-1")
            .await
            .unwrap();
        let DedupClaim::Claimed { token } = fresh else {
            panic!("nothing supersedes it yet: {fresh:?}")
        };
        assert!(f.store.dedup_release("pending-1", &token).await.unwrap());

        let DedupClaim::Claimed { token: paid } = f.store.dedup_claim("succeeded-1", MINUTE).await.unwrap() else {
            panic!("fresh key must be claimed")
        };
        assert_eq!(
            f.store
                .dedup_claim_unless("pending-1", MINUTE, "succeeded-1")
                .await
                .unwrap(),
            DedupClaim::Superseded,
            "while the succeeded event is being forwarded"
        );
        assert!(f.store.dedup_complete("succeeded-1", &paid, MINUTE).await.unwrap());
        assert_eq!(
            f.store
                .dedup_claim_unless("pending-1", MINUTE, "succeeded-1")
                .await
                .unwrap(),
            DedupClaim::Superseded,
            "after it was delivered"
        );
        // Nothing was left claimed by the superseded attempts.
        let DedupClaim::Claimed { .. } = f.store.dedup_claim("pending-1", MINUTE).await.unwrap() else {
            panic!("a superseded claim must not hold the key")
        };
    }

    pub async fn concurrent_dedup_claims_yield_one_claimed(f: &Fixture) {
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let store = Arc::clone(&f.store);
                tokio::spawn(async move { store.dedup_claim("race", MINUTE).await.unwrap() })
            })
            .collect();
        let mut claimed = 0;
        for t in tasks {
            match t.await.unwrap() {
                DedupClaim::Claimed { .. } => claimed += 1,
                DedupClaim::InFlight => {}
                other => panic!("nobody completed or superseded the key: {other:?}"),
            }
        }
        assert_eq!(claimed, 1);
    }

    pub async fn set_add_contains_remove_members(f: &Fixture) {
        f.store.set_add("deny", "10.0.0.1", MINUTE).await.unwrap();
        f.store.set_add("deny", "10.0.0.2", MINUTE).await.unwrap();
        assert!(f.store.set_contains("deny", "10.0.0.1").await.unwrap());
        assert!(!f.store.set_contains("deny", "10.0.0.3").await.unwrap());
        let members = f.store.set_members("deny").await.unwrap();
        let names: Vec<&str> = members.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(names, ["10.0.0.1", "10.0.0.2"]);
        assert!(
            members
                .iter()
                .all(|(_, ttl)| *ttl > Duration::from_secs(50) && *ttl <= MINUTE),
            "{members:?}"
        );
        assert!(f.store.set_remove("deny", "10.0.0.1").await.unwrap());
        assert!(!f.store.set_remove("deny", "10.0.0.1").await.unwrap());
        assert!(!f.store.set_contains("deny", "10.0.0.1").await.unwrap());
        assert!(f.store.set_members("absent").await.unwrap().is_empty());
    }

    pub async fn set_members_expire_each_by_their_own_ttl(f: &Fixture) {
        // Wide margins: on Redis `advance` is real time, and a loaded machine delays each step.
        let short = Duration::from_millis(1_000);
        f.store.set_add("s", "short", short).await.unwrap();
        f.store.set_add("s", "long", MINUTE).await.unwrap();
        f.store.set_add("s", "renewed", short).await.unwrap();
        f.advance(600).await;
        f.store.set_add("s", "renewed", short).await.unwrap();
        f.advance(600).await;
        assert!(!f.store.set_contains("s", "short").await.unwrap());
        assert!(
            f.store.set_contains("s", "renewed").await.unwrap(),
            "re-adding extends the TTL"
        );
        let names: Vec<String> = f
            .store
            .set_members("s")
            .await
            .unwrap()
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(names, ["long", "renewed"]);
        assert!(
            !f.store.set_remove("s", "short").await.unwrap(),
            "an expired member is not present"
        );
    }

    fn guarded(nonce: &str) -> GuardBatch {
        GuardBatch {
            deny: Some(("deny".to_string(), "10.0.0.9".to_string())),
            nonce: Some((nonce.to_string(), MINUTE)),
            nonce_timestamp: 1_700_000_000,
            buckets: vec![slow_bucket("g:ip", 1, true), slow_bucket("g:shadow", 10, false)],
            counters: vec![
                sliding("g:orders", 60_000, 1),
                fixed("g:daily", "2026-11-23", 60_000, 1),
            ],
        }
    }

    pub async fn guard_evaluates_everything_when_nothing_stops_it(f: &Fixture) {
        f.store.set_add("deny", "10.0.0.8", MINUTE).await.unwrap();
        let out = f.store.guard(&guarded("n1")).await.unwrap();
        assert!(!out.denied && !out.nonce_replayed);
        assert_eq!(out.buckets.len(), 2);
        assert!(out.buckets.iter().all(|d| d.allowed));
        assert_eq!((out.buckets[0].remaining, out.buckets[1].remaining), (0, 9));
        assert_eq!(out.counters, [1, 1]);
        assert!(
            !f.store.claim_nonce("n1", MINUTE).await.unwrap(),
            "guard claimed the nonce"
        );
    }

    pub async fn guard_denied_member_stops_everything(f: &Fixture) {
        f.store.set_add("deny", "10.0.0.9", MINUTE).await.unwrap();
        let out = f.store.guard(&guarded("n1")).await.unwrap();
        assert!(out.denied);
        assert!(!out.nonce_replayed && out.buckets.is_empty() && out.counters.is_empty());
        assert!(f.store.claim_nonce("n1", MINUTE).await.unwrap(), "nonce untouched");
        assert_eq!(
            f.store.take_buckets(&[slow_bucket("g:ip", 1, true)]).await.unwrap()[0].remaining,
            0
        );
        assert_eq!(
            f.store.count(&sliding("g:orders", 60_000, 0)).await.unwrap(),
            0,
            "counter untouched"
        );
    }

    pub async fn guard_replayed_nonce_stops_buckets_and_counters(f: &Fixture) {
        assert!(f.store.claim_nonce("seen", MINUTE).await.unwrap());
        let out = f.store.guard(&guarded("seen")).await.unwrap();
        assert!(out.nonce_replayed && !out.denied);
        assert!(out.buckets.is_empty() && out.counters.is_empty());
        let d = f.store.take_buckets(&[slow_bucket("g:ip", 1, true)]).await.unwrap()[0];
        assert!(d.allowed, "bucket untouched");
        assert_eq!(
            f.store.count(&fixed("g:daily", "2026-11-23", 60_000, 0)).await.unwrap(),
            0
        );
    }

    pub async fn guard_enforced_refusal_only_reads_counters(f: &Fixture) {
        assert_eq!(f.store.guard(&guarded("n1")).await.unwrap().counters, [1, 1]);
        let out = f.store.guard(&guarded("n2")).await.unwrap();
        assert!(!out.buckets[0].allowed, "the enforced bucket of 1 is empty");
        assert!(out.buckets[1].allowed, "the shadow bucket is still decided");
        assert_eq!(out.buckets[1].remaining, 8, "and debited");
        assert_eq!(out.counters, [1, 1], "counters read, not incremented");

        // A refusing *shadow* bucket does not stop the counters.
        let mut batch = guarded("n3");
        batch.buckets = vec![slow_bucket("g:shadow-only", 0, false)];
        let out = f.store.guard(&batch).await.unwrap();
        assert!(!out.buckets[0].allowed);
        assert_eq!(out.counters, [2, 2]);
    }
}

/// Instantiates every case for one backend.
macro_rules! contract_for {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;
            contract_for!(@cases $fixture;
                bucket_takes_until_empty_refuses_then_refills,
                bucket_capacity_edit_keeps_state,
                shadow_bucket_never_blocks_and_is_debited_on_its_own,
                concurrent_takes_allow_exactly_capacity,
                nonce_is_claimed_once,
                nonce_can_be_claimed_again_after_its_ttl,
                sliding_counter_counts_events_within_the_window,
                fixed_counter_counts_per_window_and_expires,
                dedup_claim_in_flight_complete_done,
                dedup_release_lets_the_next_delivery_claim,
                dedup_lease_expires_and_stale_token_cannot_complete,
                dedup_claim_unless_superseded,
                concurrent_dedup_claims_yield_one_claimed,
                set_add_contains_remove_members,
                set_members_expire_each_by_their_own_ttl,
                guard_evaluates_everything_when_nothing_stops_it,
                guard_denied_member_stops_everything,
                guard_replayed_nonce_stops_buckets_and_counters,
                guard_enforced_refusal_only_reads_counters,
            );
        }
    };
    (@cases $fixture:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let f = $fixture;
                cases::$case(&f).await;
            }
        )*
    };
}

contract_for!(embedded, Fixture::embedded());
contract_for!(redis_standalone, Fixture::standalone().await);
contract_for!(redis_cluster, Fixture::cluster().await);

/// Runs every contract case against `store_for(i)`, each case in a namespace of its own.
async fn run_all_cases(store_for: impl Fn() -> Arc<dyn Store>) {
    macro_rules! run {
        ($($case:ident),* $(,)?) => {
            $( cases::$case(&Fixture { store: store_for(), manual: None, _server: None }).await; )*
        };
    }
    // Cases whose keys never expire during the case, so their keys are still there to inspect.
    run!(
        bucket_capacity_edit_keeps_state,
        shadow_bucket_never_blocks_and_is_debited_on_its_own,
        nonce_is_claimed_once,
        sliding_counter_counts_events_within_the_window,
        fixed_counter_counts_per_window_and_expires,
        dedup_claim_in_flight_complete_done,
        dedup_release_lets_the_next_delivery_claim,
        dedup_claim_unless_superseded,
        set_add_contains_remove_members,
        set_members_expire_each_by_their_own_ttl,
        guard_evaluates_everything_when_nothing_stops_it,
        guard_enforced_refusal_only_reads_counters,
    );
}

fn assert_every_key_has_a_ttl(servers: &[&RedisServer]) {
    let mut seen = 0;
    for server in servers {
        for key in server.keys() {
            let pttl = server.pttl(&key);
            assert!(pttl > 0 || pttl == -2, "key {key} has no TTL (PTTL {pttl})");
            seen += 1;
        }
    }
    assert!(seen > 20, "the cases left only {seen} keys to inspect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_standalone_every_key_has_a_ttl() {
    let server = RedisServer::start();
    let mut stores = Vec::new();
    for _ in 0..12 {
        stores.push(connect(redis_cfg(Some(server.url()), vec![], &unique_prefix())).await);
    }
    let next = AtomicUsize::new(0);
    run_all_cases(|| Arc::clone(&stores[next.fetch_add(1, Ordering::Relaxed)])).await;
    assert_every_key_has_a_ttl(&[&server]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_every_key_has_a_ttl() {
    // A cluster of its own, so only this test's keys are inspected.
    let cluster = RedisCluster::start();
    let mut stores = Vec::new();
    for _ in 0..12 {
        stores.push(connect(redis_cfg(None, cluster.urls(), &unique_prefix())).await);
    }
    let namespaces = AtomicUsize::new(0);
    run_all_cases(|| Arc::clone(&stores[namespaces.fetch_add(1, Ordering::Relaxed)])).await;
    let nodes: Vec<&RedisServer> = cluster.nodes().iter().collect();
    assert_every_key_has_a_ttl(&nodes);
}

/// With a hash tag in the key prefix every key sits in one slot, so the Cluster store runs each
/// guard batch as one `guard.lua` call instead of slot by slot; the contract still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_hash_tagged_prefix_keeps_the_guard_contract() {
    let fixture = || async {
        let prefix = format!("{{{}}}", unique_prefix());
        Fixture {
            store: connect(redis_cfg(None, shared_cluster().urls(), &prefix)).await,
            manual: None,
            _server: None,
        }
    };
    cases::guard_evaluates_everything_when_nothing_stops_it(&fixture().await).await;
    cases::guard_denied_member_stops_everything(&fixture().await).await;
    cases::guard_replayed_nonce_stops_buckets_and_counters(&fixture().await).await;
    cases::guard_enforced_refusal_only_reads_counters(&fixture().await).await;
    cases::shadow_bucket_never_blocks_and_is_debited_on_its_own(&fixture().await).await;
}

fn busy_batch(i: usize) -> GuardBatch {
    GuardBatch {
        deny: Some(("deny".to_string(), format!("10.0.0.{i}"))),
        nonce: Some((format!("nonce-{i}"), MINUTE)),
        nonce_timestamp: 1_700_000_000,
        buckets: vec![
            slow_bucket(&format!("ip:{i}"), 10, true),
            slow_bucket("global", 1_000, false),
        ],
        counters: vec![
            sliding(&format!("user:{i}"), 60_000, 1),
            fixed("merchant", "2026-11-23", 60_000, 1),
        ],
    }
}

#[tokio::test]
async fn redis_standalone_guard_is_one_evalsha() {
    let server = RedisServer::start();
    let store = connect(redis_cfg(Some(server.url()), vec![], "pg:")).await;
    store.guard(&busy_batch(0)).await.unwrap(); // loads the script
    let before = server.command_calls();
    for i in 1..=10 {
        let out = store.guard(&busy_batch(i)).await.unwrap();
        assert_eq!(out.buckets.len(), 2);
    }
    let after = server.command_calls();
    let delta = |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    assert_eq!(delta("evalsha"), 10);
    assert_eq!(delta("time"), 10, "one script execution per guarded request");
    assert_eq!(delta("eval") + delta("script|load"), 0);
    // commandstats also counts the commands a script calls; any other command would be an
    // extra round trip.
    let called_by_scripts = [
        "time",
        "hmget",
        "hset",
        "pexpire",
        "pexpireat",
        "zscore",
        "set",
        "get",
        "incrby",
        "zcard",
        "zadd",
        "zrange",
        "zrangebyscore",
        "zremrangebyscore",
        "del",
    ];
    let extra: Vec<&String> = after
        .keys()
        .filter(|n| {
            delta(n) > 0 && !["evalsha", "info"].contains(&n.as_str()) && !called_by_scripts.contains(&n.as_str())
        })
        .collect();
    assert!(extra.is_empty(), "round trips besides EVALSHA: {extra:?}");
}

#[tokio::test]
async fn redis_standalone_evalsha_after_script_flush_reloads() {
    let server = RedisServer::start();
    let store = connect(redis_cfg(Some(server.url()), vec![], "pg:")).await;
    assert!(store.claim_nonce("before", MINUTE).await.unwrap());
    store.guard(&busy_batch(1)).await.unwrap();
    server.cli(&["SCRIPT", "FLUSH"]);
    let loads_before = server.command_calls().get("script|load").copied().unwrap_or(0);
    assert!(store.claim_nonce("after", MINUTE).await.unwrap());
    assert!(!store.claim_nonce("before", MINUTE).await.unwrap());
    assert!(store.guard(&busy_batch(2)).await.unwrap().buckets[0].allowed);
    let loads_after = server.command_calls().get("script|load").copied().unwrap_or(0);
    assert_eq!(loads_after - loads_before, 2, "each flushed script reloaded once");
}

#[tokio::test]
async fn redis_cluster_evalsha_after_script_flush_reloads() {
    let store = Fixture::cluster().await.store;
    store.guard(&busy_batch(1)).await.unwrap();
    for node in shared_cluster().nodes() {
        node.cli(&["SCRIPT", "FLUSH"]);
    }
    let out = store.guard(&busy_batch(2)).await.unwrap();
    assert!(out.buckets[0].allowed && out.counters == [1, 2]);
}

/// Calls every operation once; returns each one's name, result and duration.
async fn each_operation(store: &dyn Store) -> Vec<(&'static str, Result<(), StoreError>, Duration)> {
    let mut out = Vec::new();
    macro_rules! op {
        ($name:literal, $call:expr) => {{
            let start = Instant::now();
            let result = $call.await.map(drop);
            out.push(($name, result, start.elapsed()));
        }};
    }
    op!("ping", store.ping());
    op!("take_buckets", store.take_buckets(&[slow_bucket("b", 5, true)]));
    op!("claim_nonce", store.claim_nonce("n", MINUTE));
    op!("count", store.count(&sliding("c", 1_000, 1)));
    op!("guard", store.guard(&busy_batch(1)));
    op!("dedup_claim", store.dedup_claim("d", MINUTE));
    op!("dedup_claim_unless", store.dedup_claim_unless("d", MINUTE, "e"));
    op!("dedup_complete", store.dedup_complete("d", "t", MINUTE));
    op!("dedup_release", store.dedup_release("d", "t"));
    op!("set_add", store.set_add("s", "m", MINUTE));
    op!("set_remove", store.set_remove("s", "m"));
    op!("set_contains", store.set_contains("s", "m"));
    op!("set_members", store.set_members("s"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_within_command_timeout_and_recovers_after_restart() {
    let mut server = RedisServer::start();
    let cfg = RedisStoreConfig {
        url: Some(server.url()),
        ..RedisStoreConfig::default()
    };
    assert_eq!(cfg.command_timeout, Duration::from_millis(50));
    let store = redis_store::connect(&cfg).await.unwrap();
    assert!(store.ping().await.is_ok());

    server.stop();
    // Several rounds: the first calls see the dropped connection, later ones the background
    // reconnection still failing.
    for _ in 0..3 {
        for (op, result, took) in each_operation(&store).await {
            assert!(
                matches!(result, Err(StoreError::Timeout(_) | StoreError::Unavailable(_))),
                "{op} with Redis down: {result:?}"
            );
            assert!(took < Duration::from_secs(1), "{op} took {took:?} with Redis down");
        }
    }

    server.restart();
    let start = Instant::now();
    while store.ping().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "no recovery after restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (op, result, _) in each_operation(&store).await {
        assert!(result.is_ok(), "{op} after recovery: {result:?}");
    }
}

#[tokio::test]
async fn redis_connect_gives_up_within_connect_timeout_when_redis_is_down() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.stop();
    let cfg = RedisStoreConfig {
        url: Some(url),
        connect_timeout: Duration::from_millis(300),
        ..RedisStoreConfig::default()
    };
    let start = Instant::now();
    assert!(redis_store::connect(&cfg).await.is_err());
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
}

#[tokio::test]
async fn redis_password_comes_from_a_secret_reference() {
    let server = RedisServer::start_with_args(&["--requirepass", "s3cret-pw"]);
    std::env::set_var("PG_TEST_REDIS_PASSWORD", "s3cret-pw");
    let with = RedisStoreConfig {
        url: Some(server.url()),
        password: Some(SecretRef::new("env:PG_TEST_REDIS_PASSWORD")),
        ..RedisStoreConfig::default()
    };
    let store = redis_store::connect(&with).await.unwrap();
    assert!(store.claim_nonce("n", MINUTE).await.unwrap());
    let without = RedisStoreConfig {
        url: Some(server.url()),
        ..RedisStoreConfig::default()
    };
    let err = redis_store::connect(&without).await.unwrap_err();
    assert!(!err.to_string().contains("s3cret-pw"));
}

#[tokio::test]
async fn open_selects_the_configured_backend() {
    let clock = payguard::clock::system();
    let embedded = open(&StoreConfig::default(), clock.clone()).await.unwrap();
    assert_eq!(embedded.backend(), "embedded");

    let server = RedisServer::start();
    let yaml = format!(
        "backend: redis\nredis:\n  url: {}\n  key_prefix: \"x:\"\n  command_timeout: 200ms\n",
        server.url()
    );
    let cfg: StoreConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(cfg.backend, StoreBackend::Redis);
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let redis = open(&cfg, clock.clone()).await.unwrap();
    assert_eq!(redis.backend(), "redis");
    // With Redis up, open returns connected: the first call works.
    redis.set_add("deny", "10.0.0.1", MINUTE).await.unwrap();
    let keys: HashSet<String> = server.keys().into_iter().collect();
    assert_eq!(keys, HashSet::from(["x:{s:deny}".to_string()]));

    let missing: StoreConfig = serde_yaml_ng::from_str("backend: redis").unwrap();
    assert_eq!(missing.validate()[0].0, "redis");
    assert!(open(&missing, clock).await.is_err());
}

/// Waits (up to 10 s) until `store` answers `PING`.
async fn wait_for_ping(store: &dyn Store) {
    let start = Instant::now();
    while store.ping().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "store never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn open_does_not_wait_for_redis_and_connects_when_it_comes_up() {
    let port = support::free_port();
    let yaml = format!("backend: redis\nredis:\n  url: redis://127.0.0.1:{port}\n  connect_timeout: 200ms\n");
    let cfg: StoreConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    let start = Instant::now();
    let store = open(&cfg, payguard::clock::system()).await.expect("open without Redis");
    // It waits for Redis at most connect_timeout (200 ms), then starts anyway.
    assert!(
        start.elapsed() < Duration::from_millis(600),
        "open waited {:?}",
        start.elapsed()
    );
    // Meanwhile every call fails at once, so rules apply their on_store_error policy.
    for (op, result, took) in each_operation(store.as_ref()).await {
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "{op}: {result:?}");
        assert!(took < Duration::from_millis(100), "{op} took {took:?}");
    }
    let server = RedisServer::start_on_port(port, &[]);
    wait_for_ping(store.as_ref()).await;
    assert!(store.claim_nonce("late", MINUTE).await.unwrap());
    assert_eq!(server.keys(), ["pg:{n:late}"]);
}
