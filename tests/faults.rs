//! Fault injection between payguard and Redis (tests/support/fault_proxy.rs): added latency
//! beyond `command_timeout`, a blackhole and connection resets. For each, a rate rule with
//! `on_store_error: deny` fails closed (503 `STORE_UNAVAILABLE`), one with `allow` fails open,
//! notifications get the channel's failure answer, the store error counters move —
//! and everything works again once the fault clears. Then payguard SIGKILLed in the middle of
//! forwarding a notification: after a restart, the channel's redelivery is forwarded exactly
//! once, when the dead process's dedup lease has expired. (Redis restarted with and without AOF:
//! tests/store_data_loss.rs.) Real redis-server, real upstream, real HTTP.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::fault_proxy::{Fault, FaultProxy};
use support::guard::{problem_code, Req};
use support::payguard::Payguard;
use support::redis_server::RedisServer;
use support::upstream::{Behavior, Upstream};

const STRIPE_SECRET: &str = "whsec_test_stripe_endpoint_secret_1234567890";
const BACKEND_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Longer than any fault's effect on one call, so every request visibly returns.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// payguard on Redis at `redis_url` with a rate rule `hard` (`on_store_error: deny`) on
/// /v1/hard, `soft` (`allow`) on /v1/soft, and a Stripe notify route whose backend `timeout`
/// and dedup `lease` are given.
fn config(up: &Upstream, redis_url: &str, timeout: &str, lease: &str) -> String {
    let rule = |name: &str, policy: &str| {
        format!(
            "    - name: {name}\n      match: {{ path_prefixes: [/v1/{name}] }}\n      key: [client_ip]\n      bucket: {{ capacity: 1000, refill: 1000, per: 1s }}\n      on_store_error: {policy}\n"
        )
    };
    format!(
        "upstream:\n  address: {up}\nstore:\n  backend: redis\n  redis:\n    url: {redis_url}\n    command_timeout: 250ms\n    connect_timeout: 250ms\nguard:\n  rate_rules:\n{hard}{soft}routes:\n  - name: api\n    match: {{path_prefix: /v1}}\n    policy: guard\n  - name: stripe\n    match: {{path: /notify/stripe}}\n    policy: notify\n    notify:\n      channel:\n        stripe:\n          endpoint_secrets: ['{STRIPE_SECRET}']\n      backend_path: /internal/payments\n      timeout: {timeout}\n      lease: {lease}\n      webhook_secret: '{BACKEND_WHSEC}'\ndefault_action: not_found\n",
        up = up.addr,
        hard = rule("hard", "deny"),
        soft = rule("soft", "allow"),
    )
}

struct Env {
    redis: RedisServer,
    proxy: FaultProxy,
    up: Upstream,
    pg: Payguard,
    client: reqwest::blocking::Client,
}

impl Env {
    fn start() -> Self {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port())));
        let up = Upstream::start();
        let pg = Payguard::start(&config(&up, &proxy.url(), "1s", "2s"));
        let client = reqwest::blocking::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .unwrap();
        Self {
            redis,
            proxy,
            up,
            pg,
            client,
        }
    }

    fn send(&self, req: &Req) -> (u16, String) {
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
        let mut b = self.client.request(method, self.pg.url(&req.target));
        for (k, v) in &req.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        problem_code(b.body(req.body.clone()).send().expect("the request returned"))
    }

    fn notify(&self, order: &str) -> u16 {
        let n = support::stripe::notification(STRIPE_SECRET, order);
        support::stripe::send(&self.pg, "/notify/stripe", &n).status().as_u16()
    }

    fn store_errors(&self) -> f64 {
        ["guard", "dedup_claim"]
            .iter()
            .map(|op| {
                self.pg
                    .metric(&format!("payguard_store_errors_total{{backend=\"redis\",op=\"{op}\"}}"))
            })
            .sum()
    }
}

fn hard() -> Req {
    Req::new("GET", "/v1/hard", b"")
}

fn soft() -> Req {
    Req::new("GET", "/v1/soft", b"")
}

/// Under `fault`: each policy answers as configured and the errors are counted; afterwards,
/// the same requests pass again.
fn each_policy_holds_under(fault: Fault) {
    let env = Env::start();
    assert_eq!(env.send(&hard()), (200, String::new()), "{}", env.pg.logs());
    assert_eq!(env.send(&soft()), (200, String::new()));
    assert_eq!(env.notify("order-before"), 200);
    let errors_before = env.store_errors();
    let fail_open_before = env.pg.metric(
        "payguard_rule_decisions_total{decision=\"store_error_allow\",kind=\"rate\",mode=\"enforce\",rule=\"soft\"}",
    );
    let forwarded_before = env.up.requests().len();

    env.proxy.set(fault);
    for round in 0..2 {
        assert_eq!(
            env.send(&hard()),
            (503, "STORE_UNAVAILABLE".to_string()),
            "{fault:?} round {round}: on_store_error deny"
        );
        assert_eq!(
            env.send(&soft()),
            (200, String::new()),
            "{fault:?} round {round}: on_store_error allow"
        );
        assert_eq!(
            env.notify(&format!("order-during-{round}")),
            400,
            "{fault:?}: Stripe gets a failure answer and retries"
        );
    }
    assert_eq!(
        env.up.requests().len(),
        forwarded_before + 2,
        "{fault:?}: only the fail-open requests reached the backend"
    );
    assert!(env.store_errors() >= errors_before + 4.0, "{fault:?}: errors counted");
    assert!(
        env.pg.metric(
            "payguard_rule_decisions_total{decision=\"store_error_allow\",kind=\"rate\",mode=\"enforce\",rule=\"soft\"}"
        ) >= fail_open_before + 2.0
    );

    env.proxy.set(Fault::None);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = env.send(&hard());
        if answer == (200, String::new()) {
            break;
        }
        assert_eq!(answer.0, 503, "{fault:?}: while recovering");
        assert!(Instant::now() < deadline, "{fault:?}: no recovery:\n{}", env.pg.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    // A claim the store took after payguard gave up on it (delayed or held bytes) holds its
    // lease until it expires; the channel's retries meet it, then go through.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match env.notify("order-during-0") {
            200 => break,
            status => assert_eq!(status, 400, "{fault:?}: a retry meets the lease"),
        }
        assert!(Instant::now() < deadline, "{fault:?}: the retry never went through");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        env.up
            .requests()
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("order-during-0")),
        "and reaches the backend"
    );
    let errors_after = env.store_errors();
    assert_eq!(env.send(&hard()), (200, String::new()));
    assert_eq!(env.send(&soft()), (200, String::new()));
    assert_eq!(env.store_errors(), errors_after, "{fault:?}: no errors once it cleared");
    assert!(env.redis.command_calls().get("evalsha").copied().unwrap_or(0) > 0);
}

#[test]
fn latency_beyond_the_command_timeout_fails_closed_and_open_as_configured() {
    each_policy_holds_under(Fault::Latency(Duration::from_millis(1500)));
}

#[test]
fn a_blackholed_redis_fails_closed_and_open_as_configured() {
    each_policy_holds_under(Fault::Blackhole);
}

#[test]
fn reset_connections_fail_closed_and_open_as_configured() {
    each_policy_holds_under(Fault::Reset);
}

#[test]
fn payguard_killed_mid_forward_forwards_the_redelivery_exactly_once() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    // The backend takes its time: payguard is killed while it waits.
    up.set_behavior(Behavior {
        delay: Duration::from_secs(3),
        ..Behavior::default()
    });
    let text = config(&up, &redis.url(), "2s", "3s");
    let mut pg = Payguard::start(&text);
    let n = support::stripe::notification(STRIPE_SECRET, "order-killed");
    let url = pg.url("/notify/stripe");
    let first = {
        let n = n.clone();
        std::thread::spawn(move || {
            let mut req = reqwest::blocking::Client::new()
                .post(url)
                .header("content-type", &n.content_type)
                .body(n.body.clone())
                .timeout(CLIENT_TIMEOUT);
            for (k, v) in &n.headers {
                req = req.header(k, v);
            }
            req.send().map(|r| r.status().as_u16())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.requests().is_empty() {
        assert!(Instant::now() < deadline, "never forwarded:\n{}", pg.logs());
        std::thread::sleep(Duration::from_millis(5));
    }
    pg.signal(libc::SIGKILL);
    assert!(pg.wait_exit(Duration::from_secs(5)).is_some());
    assert!(
        first.join().unwrap().is_err(),
        "the channel got no answer: it will redeliver"
    );
    assert!(
        redis.keys().iter().any(|k| k.contains("{d:")),
        "the dead process's dedup lease is still there"
    );

    up.set_behavior(Behavior::default());
    let pg = Payguard::start(&text);
    // Redeliveries meet the lease (failure answer, retried) until it expires, then one is
    // forwarded; every later one is a duplicate.
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while up.requests().len() < 2 {
        assert!(Instant::now() < deadline, "never forwarded again:\n{}", pg.logs());
        answers.push(support::stripe::send(&pg, "/notify/stripe", &n).status().as_u16());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(answers.last(), Some(&200), "{answers:?}");
    assert!(
        answers.iter().rev().skip(1).all(|&s| s == 400),
        "in flight until then: {answers:?}"
    );
    for _ in 0..3 {
        assert_eq!(support::stripe::send(&pg, "/notify/stripe", &n).status(), 200);
    }
    let got = up.requests();
    assert_eq!(got.len(), 2, "once before the kill, exactly once after it");
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert!(
        pg.metric("payguard_notifications_total{channel=\"stripe\",outcome=\"in_flight\",route=\"stripe\"}")
            >= (answers.len() - 1) as f64
    );
}
