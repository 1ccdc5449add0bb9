//! Rate and order rules through the proxy (docs/guard-rules.md): buckets
//! hold under concurrency and refill, shadow rules count without blocking, 429s carry the IETF
//! fields, reloads keep counters, store outages follow each rule's policy, one store round trip
//! per request, and order tiers tag, challenge and reject.

mod support;

use std::time::{Duration, Instant};

use support::guard::{problem_code, signature_section, GuardEnv, Req, StoreKind};
use support::upstream::Behavior;

fn rate_rule(name: &str, prefix: &str, key: &str, capacity: u64, refill: u64, per: &str, extra: &str) -> String {
    format!(
        "    - name: {name}\n      match: {{ path_prefixes: [{prefix}] }}\n      key: [{key}]\n      bucket: {{ capacity: {capacity}, refill: {refill}, per: {per} }}\n{extra}"
    )
}

fn rate_env(store: StoreKind, rules: &[String]) -> GuardEnv {
    GuardEnv::start(store, &format!("guard:\n  rate_rules:\n{}", rules.concat()))
}

fn get(path: &str) -> Req {
    Req::new("GET", path, b"")
}

fn concurrent_burst_allows_exactly_the_bucket_capacity(store: StoreKind) {
    let env = rate_env(store, &[rate_rule("burst", "/v1/burst", "route", 50, 1, "1h", "")]);
    burst_of_200(&env, || get("/v1/burst"));
}

/// The same with signed requests: buffered, verified, nonce and bucket in one store call each.
fn concurrent_signed_burst_allows_exactly_the_bucket_capacity(store: StoreKind) {
    let guard = format!(
        "guard:\n{}  rate_rules:\n{}",
        signature_section(),
        rate_rule("burst", "/v1/burst", "access_key", 50, 1, "1h", "")
    );
    let env = GuardEnv::start(store, &guard);
    burst_of_200(&env, || Req::new("POST", "/v1/burst", b"{}").signed());
}

/// Sends 200 requests at once; exactly 50 pass and reach the upstream, 150 get 429.
fn burst_of_200(env: &GuardEnv, request: impl Fn() -> Req) {
    let reqs: Vec<Req> = (0..200).map(|_| request()).collect();
    let base = env.pg.url("");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let statuses: Vec<u16> = rt.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut set = tokio::task::JoinSet::new();
        for req in reqs {
            let client = client.clone();
            let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
            let mut b = client.request(method, format!("{base}{}", req.target));
            for (k, v) in &req.headers {
                b = b.header(k.as_str(), v.as_str());
            }
            let b = b.body(req.body.clone());
            set.spawn(async move { b.send().await.map(|r| r.status().as_u16()).unwrap_or(0) });
        }
        let mut out = Vec::new();
        while let Some(s) = set.join_next().await {
            out.push(s.unwrap());
        }
        out
    });
    let allowed = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!((allowed, limited), (50, 150), "statuses: {statuses:?}");
    assert_eq!(env.up.requests().len(), 50, "only allowed requests reach the upstream");
    assert_eq!(
        env.metric("payguard_rule_decisions_total{decision=\"reject\",kind=\"rate\",mode=\"enforce\",rule=\"burst\"}"),
        150.0
    );
}

fn bucket_refills_over_time(store: StoreKind) {
    let env = rate_env(store, &[rate_rule("refill", "/v1", "client_ip", 2, 1, "400ms", "")]);
    let statuses = |n: usize| -> Vec<u16> { (0..n).map(|_| env.send(&get("/v1/x")).status().as_u16()).collect() };
    assert_eq!(statuses(3), [200, 200, 429]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(statuses(2), [200, 429], "one token back after one period");
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(statuses(3), [200, 200, 429], "refilled to capacity, never beyond");
}

fn shadow_rule_never_blocks_but_counts_would_be_rejections(store: StoreKind) {
    let env = rate_env(
        store,
        &[rate_rule(
            "shadowed",
            "/v1",
            "client_ip",
            2,
            1,
            "1h",
            "      mode: shadow\n",
        )],
    );
    for _ in 0..5 {
        let resp = env.send(&get("/v1/x"));
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers().get("ratelimit").is_none(),
            "shadow rules publish no fields"
        );
    }
    assert_eq!(env.up.requests().len(), 5);
    let m = |decision: &str| {
        env.metric(&format!(
            "payguard_rule_decisions_total{{decision=\"{decision}\",kind=\"rate\",mode=\"shadow\",rule=\"shadowed\"}}"
        ))
    };
    assert_eq!((m("allow"), m("reject")), (2.0, 3.0));
}

fn rate_limited_answer_carries_retry_after_and_ratelimit_fields(store: StoreKind) {
    let env = rate_env(
        store,
        &[
            rate_rule("per-ip", "/v1", "client_ip", 2, 1, "3s", ""),
            rate_rule("per-route", "/v1", "route", 100, 100, "1s", ""),
        ],
    );
    let first = env.send(&get("/v1/x"));
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.headers()["ratelimit-policy"],
        "\"per-ip\";q=2;w=6, \"per-route\";q=100;w=1"
    );
    let limit = first.headers()["ratelimit"].to_str().unwrap().to_string();
    assert!(limit.starts_with("\"per-ip\";r=1;t="), "{limit}");
    assert!(limit.contains("\"per-route\";r=99;t="), "{limit}");
    assert_eq!(env.send(&get("/v1/x")).status(), 200);

    let refused = env.send(&get("/v1/x"));
    assert_eq!(refused.status(), 429);
    let h = refused.headers().clone();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "retry-after {retry}");
    assert_eq!(h["ratelimit-policy"], "\"per-ip\";q=2;w=6, \"per-route\";q=100;w=1");
    assert!(h["ratelimit"].to_str().unwrap().starts_with("\"per-ip\";r=0;t="));
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    assert_eq!(body["rule"], "per-ip");
    assert_eq!(env.up.requests().len(), 2);
}

fn reload_with_edited_numbers_keeps_the_bucket(store: StoreKind) {
    let rule = |capacity: u64, refill: u64| rate_rule("edited", "/v1", "client_ip", capacity, refill, "1h", "");
    let env = rate_env(store, &[rule(3, 1)]);
    for _ in 0..3 {
        assert_eq!(env.send(&get("/v1/x")).status(), 200);
    }
    assert_eq!(env.send(&get("/v1/x")).status(), 429);
    env.reload(&format!("guard:\n  rate_rules:\n{}", rule(5, 2)));
    let resp = env.send(&get("/v1/x"));
    assert_eq!(resp.status(), 429, "a fresh bucket would have allowed this");
    assert_eq!(
        resp.headers()["ratelimit-policy"],
        "\"edited\";q=5;w=9000",
        "the new numbers apply"
    );
    // Renaming the rule starts a fresh bucket (the documented way to reset).
    let renamed = rate_rule("renamed", "/v1", "client_ip", 5, 2, "1h", "");
    env.reload(&format!("guard:\n  rate_rules:\n{renamed}"));
    assert_eq!(env.send(&get("/v1/x")).status(), 200);
}

/// Tiers: tag from the 3rd order, challenge from the 5th, reject from the 7th; per user.
const ORDER_RULE: &str = "    - name: orders-per-user
      match: { routes: [orders], methods: [POST] }
      user: body:/user_id
      window: { sliding: 1h }
      tiers:
        - { over: 2, action: tag }
        - { over: 4, action: challenge }
        - { over: 6, action: reject }
";

fn order_tiers_tag_then_challenge_then_reject(store: StoreKind) {
    let env = GuardEnv::start(store, &format!("guard:\n  order_rules:\n{ORDER_RULE}"));
    let order = |user: &str| Req::new("POST", "/v1/orders", format!(r#"{{"user_id":"{user}"}}"#).as_bytes());
    let mut seen = Vec::new();
    for i in 1..=8 {
        let before = env.up.requests().len();
        let resp = env.send(&order("u1"));
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("x-pg-challenge")
            .map(|v| v.to_str().unwrap().to_string());
        let (_, code) = problem_code(resp);
        let forwarded = env.up.requests().len() > before;
        let risk = if forwarded {
            env.up
                .requests()
                .last()
                .unwrap()
                .header("x-pg-risk")
                .map(str::to_string)
        } else {
            None
        };
        seen.push((i, status, code, challenge, forwarded, risk));
    }
    let tag = Some("orders-per-user".to_string());
    let expect = |i, status: u16, code: &str, challenge: Option<String>, forwarded, risk: Option<String>| {
        (i, status, code.to_string(), challenge, forwarded, risk)
    };
    assert_eq!(
        seen,
        vec![
            expect(1, 200, "", None, true, None),
            expect(2, 200, "", None, true, None),
            expect(3, 200, "", None, true, tag.clone()),
            expect(4, 200, "", None, true, tag.clone()),
            expect(5, 403, "CHALLENGE_REQUIRED", tag.clone(), false, None),
            expect(6, 403, "CHALLENGE_REQUIRED", tag.clone(), false, None),
            expect(7, 429, "ORDER_LIMIT", None, false, None),
            expect(8, 429, "ORDER_LIMIT", None, false, None),
        ]
    );
    // Another user has a counter of their own; other routes are not order-limited.
    assert_eq!(env.send(&order("u2")).status(), 200);
    assert_eq!(env.up.requests().last().unwrap().header("x-pg-risk"), None);
    assert_eq!(
        env.send(&Req::new("POST", "/v1/carts", b"{\"user_id\":\"u1\"}"))
            .status(),
        200
    );
    // A missing user id is rejected by default, naming the rule.
    let (status, code) = env.status_and_code(&Req::new("POST", "/v1/orders", b"{}"));
    assert_eq!((status, code.as_str()), (400, "IDENTITY_MISSING"));
}

fn upstream_2xx_counting_ignores_failed_orders(store: StoreKind) {
    let rule = "    - name: accepted-orders
      match: { routes: [orders] }
      user: body:/user_id
      window: { calendar: day, time_zone: Asia/Shanghai }
      count_on: upstream_2xx
      tiers: [ { over: 2, action: reject } ]
";
    let env = GuardEnv::start(store, &format!("guard:\n  order_rules:\n{rule}"));
    let order = || Req::new("POST", "/v1/orders", br#"{"user_id":"u1"}"#);
    env.up.set_behavior(Behavior {
        status: 500,
        ..Behavior::default()
    });
    for _ in 0..4 {
        assert_eq!(
            env.send(&order()).status(),
            500,
            "failed orders are relayed and not counted"
        );
    }
    env.up.set_behavior(Behavior::default());
    for i in 0..2 {
        assert_eq!(env.send(&order()).status(), 200, "accepted order {}", i + 1);
        // The count lands just after the answer; give it a moment.
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(env.status_and_code(&order()), (429, "ORDER_LIMIT".to_string()));
    assert_eq!(env.up.requests().len(), 6);
}

on_both_stores!(
    concurrent_burst_allows_exactly_the_bucket_capacity,
    concurrent_signed_burst_allows_exactly_the_bucket_capacity,
    bucket_refills_over_time,
    shadow_rule_never_blocks_but_counts_would_be_rejections,
    rate_limited_answer_carries_retry_after_and_ratelimit_fields,
    reload_with_edited_numbers_keeps_the_bucket,
    order_tiers_tag_then_challenge_then_reject,
    upstream_2xx_counting_ignores_failed_orders,
);

#[test]
fn client_sent_risk_header_is_not_passed_through() {
    // A header-keyed rule: no body check, so the request streams through Pingora.
    let rule = "    - name: risky
      match: { routes: [orders] }
      user: header:x-user
      window: { sliding: 1h }
      tiers: [ { over: 1, action: tag } ]
";
    let env = GuardEnv::start(StoreKind::Embedded, &format!("guard:\n  order_rules:\n{rule}"));
    let order = || {
        Req::new("POST", "/v1/orders", b"{}")
            .header("x-user", "u1")
            .header("host", "shop.example")
            .header("X-PG-Risk", "none")
            .header("x-pg-risk", "trusted-by-client")
    };
    assert_eq!(env.send(&order()).status(), 200);
    assert_eq!(env.send(&order()).status(), 200);
    let got = env.up.requests();
    assert_eq!(
        got[0].header_values("x-pg-risk"),
        Vec::<&str>::new(),
        "client value dropped"
    );
    assert_eq!(
        got[1].header_values("x-pg-risk"),
        vec!["risky"],
        "only payguard's own tag"
    );
    assert_eq!(got[1].header_values("host"), vec!["shop.example"]);
    // Also on a route without order rules.
    assert_eq!(
        env.send(&Req::new("GET", "/v1/x", b"").header("x-pg-risk", "x"))
            .status(),
        200
    );
    assert_eq!(env.up.requests()[2].header("x-pg-risk"), None);
}

#[test]
fn redis_outage_applies_each_rules_on_store_error_quickly() {
    let mut env = rate_env(
        StoreKind::OwnRedis,
        &[
            rate_rule(
                "soft",
                "/v1/soft",
                "client_ip",
                100,
                100,
                "1s",
                "      on_store_error: allow\n",
            ),
            rate_rule(
                "hard",
                "/v1/hard",
                "client_ip",
                100,
                100,
                "1s",
                "      on_store_error: deny\n",
            ),
        ],
    );
    assert_eq!(env.send(&get("/v1/soft")).status(), 200);
    assert_eq!(env.send(&get("/v1/hard")).status(), 200);
    env.redis.as_mut().unwrap().stop();
    for round in 0..3 {
        let started = Instant::now();
        assert_eq!(env.send(&get("/v1/soft")).status(), 200, "round {round}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "allow took {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let resp = env.send(&get("/v1/hard"));
        let elapsed = started.elapsed();
        assert_eq!(resp.status(), 503, "round {round}");
        let body: serde_json::Value = resp.json().unwrap();
        assert_eq!(
            (body["code"].as_str(), body["rule"].as_str()),
            (Some("STORE_UNAVAILABLE"), Some("hard"))
        );
        assert!(elapsed < Duration::from_secs(1), "deny took {elapsed:?}");
    }
    assert_eq!(
        env.up.requests().len(),
        5,
        "only the allow rule's requests were forwarded"
    );
    assert!(
        env.metric(
            "payguard_rule_decisions_total{decision=\"store_error_deny\",kind=\"rate\",mode=\"enforce\",rule=\"hard\"}"
        ) >= 3.0
    );

    // Back in service once Redis is.
    env.redis.as_mut().unwrap().restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.send(&get("/v1/hard")).status() != 200 {
        assert!(Instant::now() < deadline, "no recovery after Redis came back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An order counted after the backend's 2xx while Redis is down: allowed by the rule's policy,
/// and the failed count is one store error, counted once (by the metered store), not twice.
#[test]
fn a_failed_count_after_upstream_2xx_is_one_store_error() {
    let rule = "    - name: paid-orders
      match: { routes: [orders], methods: [POST] }
      user: body:/user_id
      window: { sliding: 1h }
      count_on: upstream_2xx
      on_store_error: allow
      tiers:
        - { over: 100, action: reject }
";
    let mut env = GuardEnv::start(StoreKind::OwnRedis, &format!("guard:\n  order_rules:\n{rule}"));
    let order = || Req::new("POST", "/v1/orders", br#"{"user_id":"u1"}"#);
    assert_eq!(env.send(&order()).status(), 200);
    let count_errors = "payguard_store_errors_total{backend=\"redis\",op=\"count\"}";
    assert_eq!(env.metric(count_errors), 0.0);
    // The first order's count also runs after its answer: let it finish before Redis stops, or
    // it fails too and is a second error.
    let counted = "payguard_store_operation_duration_seconds_count{backend=\"redis\",op=\"count\"}";
    assert_eq!(env.pg.wait_metric(counted, 1.0), 1.0, "the first order was counted");
    env.redis.as_mut().unwrap().stop();
    assert_eq!(env.send(&order()).status(), 200, "on_store_error: allow");
    assert_eq!(env.up.requests().len(), 2);
    // The count runs after the answer was relayed; give it the store's short timeout to fail.
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.metric(count_errors) == 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(env.metric(count_errors), 1.0, "one failed count, one error");
}

#[test]
fn one_store_round_trip_per_guarded_request_on_standalone_redis() {
    let guard = format!(
        "guard:\n{}  rate_rules:\n{}{}  order_rules:\n{ORDER_RULE}",
        signature_section(),
        rate_rule("per-key", "/v1", "access_key", 1000, 1000, "1s", ""),
        rate_rule("per-ip", "/v1", "client_ip", 1000, 1000, "1s", ""),
    );
    let env = GuardEnv::start(StoreKind::OwnRedis, &guard);
    let redis = env.redis.as_ref().unwrap();
    let order = |user: &str| Req::new("POST", "/v1/orders", format!(r#"{{"user_id":"{user}"}}"#).as_bytes()).signed();
    assert_eq!(env.send(&order("warm-up")).status(), 200, "first call loads the script");
    let before = redis.command_calls();
    const N: u64 = 7;
    for i in 0..N {
        let resp = env.send(&order(&format!("user-{i}")));
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["ratelimit-policy"],
            "\"per-key\";q=1000;w=1, \"per-ip\";q=1000;w=1",
            "rate fields on a verified (buffered) forward too"
        );
    }
    let after = redis.command_calls();
    let delta = |cmd: &str| after.get(cmd).copied().unwrap_or(0) - before.get(cmd).copied().unwrap_or(0);
    assert_eq!(delta("evalsha"), N, "one EVALSHA per request: {after:?}");
    // Commands run inside the script show up in commandstats too; none of the commands a client
    // would need for a second round trip may appear.
    for cmd in ["eval", "script|load", "multi", "exec", "ping"] {
        assert_eq!(
            delta(cmd),
            0,
            "{cmd} outside the script: before {before:?}, after {after:?}"
        );
    }
    assert_eq!(env.up.requests().len(), N as usize + 1);
}

#[test]
fn stalled_redis_is_answered_within_the_command_timeout() {
    let env = rate_env(
        StoreKind::OwnRedis,
        &[
            rate_rule(
                "soft",
                "/v1/soft",
                "client_ip",
                100,
                100,
                "1s",
                "      on_store_error: allow\n",
            ),
            rate_rule(
                "hard",
                "/v1/hard",
                "client_ip",
                100,
                100,
                "1s",
                "      on_store_error: deny\n",
            ),
        ],
    );
    assert_eq!(env.send(&get("/v1/hard")).status(), 200);
    // Redis is up but answers nobody for 1.5 s.
    env.redis.as_ref().unwrap().cli(&["CLIENT", "PAUSE", "1500", "ALL"]);
    let started = Instant::now();
    assert_eq!(env.send(&get("/v1/soft")).status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "allow took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert_eq!(env.status_and_code(&get("/v1/hard")), (503, "STORE_UNAVAILABLE".into()));
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "deny took {:?}",
        started.elapsed()
    );
    // Served normally once Redis answers again.
    std::thread::sleep(Duration::from_millis(1600).saturating_sub(started.elapsed()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.send(&get("/v1/hard")).status() != 200 {
        assert!(Instant::now() < deadline, "no recovery after the pause");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The access log names the access key, the decisive rule and the backend's status and latency;
/// `payguard_responses_total` counts answers by status class, so a backend 500 is visible.
#[test]
fn the_access_log_names_key_rule_and_upstream_and_responses_count_status_classes() {
    let guard = format!(
        "guard:\n{}  rate_rules:\n{}",
        signature_section(),
        rate_rule("per-key", "/v1/orders", "access_key", 1, 1, "1h", "")
    );
    let env = GuardEnv::start(StoreKind::Embedded, &guard);
    assert_eq!(env.send(&Req::new("POST", "/v1/orders", b"{}").signed()).status(), 200);
    assert_eq!(env.send(&Req::new("POST", "/v1/orders", b"{}").signed()).status(), 429);
    let access_lines = |logs: &str| -> Vec<serde_json::Value> {
        logs.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "payguard::access")
            .collect()
    };
    let logs = env.pg.wait_logs(|l| access_lines(l).len() >= 2);
    let lines = access_lines(&logs);
    assert_eq!(lines.len(), 2, "{logs}");
    let key = support::guard::KEY_ID;
    assert_eq!(lines[0]["access_key"], key, "{}", lines[0]);
    assert_eq!(lines[0]["upstream_status"], 200, "{}", lines[0]);
    assert!(lines[0]["upstream_latency_ms"].as_f64().is_some(), "{}", lines[0]);
    assert!(
        lines[0].get("rule").is_none(),
        "an allowed request has no decisive rule: {}",
        lines[0]
    );
    assert_eq!(lines[1]["access_key"], key, "{}", lines[1]);
    assert_eq!(lines[1]["rule"], "per-key", "{}", lines[1]);
    assert!(
        lines[1].get("upstream_status").is_none(),
        "never forwarded: {}",
        lines[1]
    );
    assert_eq!(
        env.metric("payguard_responses_total{route=\"orders\",status_class=\"2xx\"}"),
        1.0
    );
    assert_eq!(
        env.metric("payguard_responses_total{route=\"orders\",status_class=\"4xx\"}"),
        1.0
    );
}
