//! Store data loss (docs/operations.md, "Store data loss"): a Redis that forgets its data — a
//! restart without persistence, a FLUSHALL — is noticed in the same script call as the nonce or
//! dedup claim, or by the health check between requests; a signed request dated before the loss
//! is refused with 401 `TIMESTAMP_BEFORE_STORE_LOSS`, newer requests pass, a re-delivered
//! notification reaches the backend marked with `X-PG-Store-Data-Loss`. A Redis with AOF that
//! restarts lost nothing and nothing is reported. Real redis-server processes throughout.

mod support;

use std::time::{Duration, Instant};

use payguard::guard::signature::new_nonce;
use payguard::store::redis_store::{connect, RedisStoreConfig};
use payguard::store::{DataLossSource, DedupClaim, GuardBatch, Store};
use support::guard::{signature_section, GuardEnv, Req, StoreKind, SECRET};
use support::payguard::Payguard;
use support::redis_server::{RedisCluster, RedisServer};
use support::upstream::Upstream;

const MINUTE: Duration = Duration::from_secs(60);
const LOSS_METRIC: &str = "payguard_store_data_loss_total";

fn guard_section() -> String {
    format!("guard:\n{}", signature_section())
}

/// `payguard_store_data_loss_total` summed over its `detected_by` labels.
fn losses_counted(pg: &Payguard) -> f64 {
    ["guard", "notification", "health_check"]
        .iter()
        .map(|by| pg.metric(&format!("{LOSS_METRIC}{{detected_by=\"{by}\"}}")))
        .sum()
}

fn readyz(pg: &Payguard) -> serde_json::Value {
    reqwest::blocking::get(pg.admin_url("/readyz"))
        .and_then(|r| r.json())
        .expect("readyz")
}

/// The `store_data_loss.at` second `/readyz` shows (panics when it shows none).
fn loss_second(pg: &Payguard) -> i64 {
    let body = readyz(pg);
    let at = body["store_data_loss"]["at"]
        .as_str()
        .unwrap_or_else(|| panic!("no store_data_loss in {body}"));
    at.parse::<jiff::Timestamp>().expect("RFC 3339").as_second()
}

/// Waits until the health check has reached the store (a cluster connection may take longer
/// than the start waits for).
fn wait_store_reachable(pg: &Payguard) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(pg)["store_reachable"] != true {
        assert!(Instant::now() < deadline, "store never reachable:\n{}", pg.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `req` until the store answers again (a restarted Redis is reconnected in the
/// background; meanwhile the nonce check fails closed with 503).
fn send_until_store_answers(env: &GuardEnv, req: &Req) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = env.status_and_code(req);
        if answer.0 != 503 || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A replay of a request sent before the loss is refused, a request dated after the loss passes
/// once and is then a replay; exactly one loss is counted and `/readyz` shows it, still ready.
fn assert_refuses_requests_from_before_the_loss(env: &GuardEnv, before: &Req) {
    assert_eq!(
        send_until_store_answers(env, before),
        (401, "TIMESTAMP_BEFORE_STORE_LOSS".to_string()),
        "{}",
        env.pg.logs()
    );
    let at = loss_second(&env.pg);
    let ready = readyz(&env.pg);
    assert_eq!(
        ready["ready"], true,
        "a detected loss does not make payguard unready: {ready}"
    );
    assert!(ready["store_data_loss"]["detected_by"].is_string());

    let fresh = Req::new("POST", "/v1/orders", b"{}").signed_with(SECRET, at + 2, &new_nonce());
    assert_eq!(
        env.status_and_code(&fresh),
        (200, String::new()),
        "a request dated after the loss"
    );
    assert_eq!(env.status_and_code(&fresh), (409, "NONCE_REPLAYED".to_string()));
    assert_eq!(
        env.up.requests().len(),
        2,
        "the pre-loss request once, the fresh one once"
    );
    assert_eq!(losses_counted(&env.pg), 1.0);
}

#[test]
fn redis_restarted_without_persistence_refuses_a_replay_of_an_earlier_request() {
    let mut env = GuardEnv::start(StoreKind::OwnRedis, &guard_section());
    let before = Req::new("POST", "/v1/orders", b"{}").signed();
    assert_eq!(env.status_and_code(&before), (200, String::new()));
    assert_eq!(losses_counted(&env.pg), 0.0, "{}", env.pg.logs());

    env.redis.as_mut().expect("own redis").restart();
    assert_refuses_requests_from_before_the_loss(&env, &before);
    assert!(
        env.pg.logged("store_data_loss"),
        "the loss is logged:\n{}",
        env.pg.logs()
    );
}

#[test]
fn flushall_between_two_requests_is_detected_by_the_guard_call() {
    let env = GuardEnv::start(StoreKind::OwnRedis, &guard_section());
    let before = Req::new("POST", "/v1/orders", b"{}").signed();
    assert_eq!(env.status_and_code(&before), (200, String::new()));
    env.redis.as_ref().expect("own redis").cli(&["FLUSHALL"]);
    assert_refuses_requests_from_before_the_loss(&env, &before);
}

#[test]
fn the_health_check_detects_a_loss_without_traffic() {
    let env = GuardEnv::start(StoreKind::OwnRedis, &guard_section());
    let redis = env.redis.as_ref().expect("own redis");
    // The first health check, at startup, creates the marker.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis.keys().iter().any(|k| k.ends_with("{gen}")) {
        assert!(Instant::now() < deadline, "no marker created:\n{}", env.pg.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    redis.cli(&["FLUSHALL"]);
    let by_health = format!("{LOSS_METRIC}{{detected_by=\"health_check\"}}");
    assert_eq!(env.pg.wait_metric(&by_health, 1.0), 1.0, "{}", env.pg.logs());
    assert_eq!(readyz(&env.pg)["store_data_loss"]["detected_by"], "health_check");
    assert!(env.up.requests().is_empty());
}

#[test]
fn redis_with_aof_restarted_lost_nothing_and_reports_nothing() {
    let redis = RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut env = GuardEnv::on_redis(redis, &guard_section());
    let before = Req::new("POST", "/v1/orders", b"{}").signed();
    assert_eq!(env.status_and_code(&before), (200, String::new()));

    env.redis.as_mut().expect("own redis").restart();
    assert_eq!(
        send_until_store_answers(&env, &before),
        (409, "NONCE_REPLAYED".to_string()),
        "the nonce survived the restart"
    );
    // Two health checks after the restart read the marker too.
    let checks = "payguard_store_operation_duration_seconds_count{backend=\"redis\",op=\"check_data_loss\"}";
    let seen = env.pg.metric(checks);
    assert!(env.pg.wait_metric(checks, seen + 2.0) >= seen + 2.0);
    assert_eq!(losses_counted(&env.pg), 0.0, "{}", env.pg.logs());
    assert!(readyz(&env.pg).get("store_data_loss").is_none());
    let fresh = Req::new("POST", "/v1/orders", b"{}").signed();
    assert_eq!(env.status_and_code(&fresh), (200, String::new()));
}

#[test]
fn a_cluster_whose_masters_lost_their_data_refuses_a_replay_and_counts_one_loss() {
    let cluster = RedisCluster::start();
    let env = GuardEnv::on_cluster(&cluster.urls(), &guard_section());
    wait_store_reachable(&env.pg);
    let before = Req::new("POST", "/v1/orders", b"{}").signed();
    assert_eq!(env.status_and_code(&before), (200, String::new()), "{}", env.pg.logs());
    for node in cluster.nodes() {
        node.cli(&["FLUSHALL"]);
    }
    assert_refuses_requests_from_before_the_loss(&env, &before);
}

const STRIPE_SECRET: &str = "whsec_test_stripe_endpoint_secret_1234567890";
const BACKEND_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn a_notification_redelivered_after_a_loss_is_forwarded_again_marked_as_such() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let pg = Payguard::start(&format!(
        "upstream:\n  address: {}\nstore:\n  backend: redis\n  redis:\n    url: {}\n    command_timeout: 250ms\nroutes:\n  - name: stripe\n    match: {{path: /notify/stripe}}\n    policy: notify\n    notify:\n      channel:\n        stripe:\n          endpoint_secrets: ['{STRIPE_SECRET}']\n      backend_path: /internal/payments\n      timeout: 1s\n      webhook_secret: '{BACKEND_WHSEC}'\n",
        up.addr,
        redis.url()
    ));
    let n = support::stripe::notification(STRIPE_SECRET, "order-7007");
    let send = || support::stripe::send(&pg, "/notify/stripe", &n).status();
    assert_eq!(send(), 200, "{}", pg.logs());
    assert_eq!(send(), 200, "a duplicate is acked");
    assert_eq!(up.requests().len(), 1, "and not forwarded");
    assert_eq!(up.requests()[0].header("x-pg-store-data-loss"), None);

    redis.cli(&["FLUSHALL"]);
    assert_eq!(send(), 200);
    let got = up.requests();
    assert_eq!(
        got.len(),
        2,
        "the dedup record was lost: the event reaches the backend again"
    );
    assert_eq!(
        got[0].header("webhook-id"),
        got[1].header("webhook-id"),
        "with the same event id, for the backend's own idempotency"
    );
    let marked = got[1].header("x-pg-store-data-loss").expect("marked");
    assert!(marked.parse::<jiff::Timestamp>().is_ok(), "{marked}");
    assert_eq!(losses_counted(&pg), 1.0);
    assert!(pg.logged("store_data_loss"), "{}", pg.logs());
    assert_eq!(send(), 200);
    assert_eq!(
        up.requests().len(),
        2,
        "claimed again after the loss: a duplicate from then on"
    );
}

/// Which path detected a loss, on a store without the health check running beside it.
async fn each_path_reports_its_detection(store: &dyn Store, flush: &dyn Fn()) {
    let batch = |nonce: &str, timestamp: i64| GuardBatch {
        nonce: Some((nonce.to_string(), MINUTE)),
        nonce_timestamp: timestamp,
        ..GuardBatch::default()
    };
    let now = jiff::Timestamp::now().as_second();
    let out = store.guard(&batch("first", now)).await.unwrap();
    assert!(!out.nonce_replayed && !out.nonce_before_store_loss);
    assert!(store.dedup_claim("evt", MINUTE).await.is_ok());
    store.check_data_loss().await.unwrap();
    assert!(store.take_data_loss_reports().is_empty(), "nothing lost yet");
    assert!(store.data_loss().is_none());

    flush();
    let out = store.guard(&batch("first", now)).await.unwrap();
    assert!(
        out.nonce_before_store_loss,
        "dated before the loss: refused, not claimed"
    );
    let reports = store.take_data_loss_reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].detected_by, DataLossSource::Guard);
    assert_eq!(store.data_loss(), Some(reports[0]));
    let later = reports[0].at.as_second() + 2;
    let out = store.guard(&batch("second", later)).await.unwrap();
    assert!(!out.nonce_replayed && !out.nonce_before_store_loss, "{out:?}");

    flush();
    assert!(matches!(
        store.dedup_claim("evt", MINUTE).await.unwrap(),
        DedupClaim::Claimed { .. }
    ));
    let reports = store.take_data_loss_reports();
    assert_eq!(
        reports.iter().map(|r| r.detected_by).collect::<Vec<_>>(),
        [DataLossSource::Notification]
    );

    flush();
    store.check_data_loss().await.unwrap();
    let reports = store.take_data_loss_reports();
    assert_eq!(
        reports.iter().map(|r| r.detected_by).collect::<Vec<_>>(),
        [DataLossSource::HealthCheck]
    );
}

fn standalone_cfg(url: String) -> RedisStoreConfig {
    RedisStoreConfig {
        url: Some(url),
        command_timeout: Duration::from_secs(2),
        ..RedisStoreConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_standalone_reports_which_path_detected_each_loss() {
    let server = RedisServer::start();
    let store = connect(&standalone_cfg(server.url())).await.expect("connect");
    each_path_reports_its_detection(&store, &|| {
        server.cli(&["FLUSHALL"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_never_reports_a_loss() {
    let store = payguard::store::EmbeddedStore::new(&Default::default(), payguard::clock::system());
    let out = store
        .guard(&GuardBatch {
            nonce: Some(("n".to_string(), MINUTE)),
            nonce_timestamp: 0,
            ..GuardBatch::default()
        })
        .await
        .unwrap();
    assert!(!out.nonce_before_store_loss);
    store.check_data_loss().await.unwrap();
    assert!(store.data_loss().is_none() && store.take_data_loss_reports().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_counts_one_lost_master_once() {
    let cluster = RedisCluster::start();
    let cfg = RedisStoreConfig {
        cluster_nodes: cluster.urls(),
        command_timeout: Duration::from_secs(2),
        ..RedisStoreConfig::default()
    };
    let store = connect(&cfg).await.expect("connect");
    let now = jiff::Timestamp::now().as_second();
    // Nonces spread over many slots of every master.
    for i in 0..64 {
        let batch = GuardBatch {
            nonce: Some((format!("n{i}"), MINUTE)),
            nonce_timestamp: now,
            ..GuardBatch::default()
        };
        assert!(!store.guard(&batch).await.unwrap().nonce_replayed);
    }
    cluster.nodes()[0].cli(&["FLUSHALL"]);
    let mut refused = 0;
    for i in 0..64 {
        let batch = GuardBatch {
            nonce: Some((format!("n{i}"), MINUTE)),
            nonce_timestamp: now,
            ..GuardBatch::default()
        };
        let out = store.guard(&batch).await.unwrap();
        assert!(out.nonce_replayed || out.nonce_before_store_loss, "{i}: {out:?}");
        refused += usize::from(out.nonce_before_store_loss);
    }
    assert!(refused > 0, "some nonces lived on the flushed master");
    assert!(refused < 64, "the other masters kept theirs");
    store.check_data_loss().await.unwrap();
    let reports = store.take_data_loss_reports();
    assert_eq!(reports.len(), 1, "one master, one loss: {reports:?}");
    assert_eq!(reports[0].detected_by, DataLossSource::Guard);
}
