//! The Grafana dashboard and the alert rules only use metrics payguard really exports: real
//! guard, pass and notification traffic (and a store outage) through the running binary on a
//! real Redis, then every `payguard_*` name in deploy/grafana/payguard.json and
//! deploy/prometheus/payguard.rules.yaml must appear in `/metrics`. No panel stays silently
//! empty because of a renamed metric. (scripts/lint-deploy parses every query with promtool.)

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::guard::{problem_code, signature_section, Req};
use support::payguard::Payguard;
use support::redis_server::RedisServer;
use support::upstream::Upstream;

const STRIPE_SECRET: &str = "whsec_test_stripe_endpoint_secret_1234567890";
const BACKEND_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn repo_file(rel: &str) -> String {
    std::fs::read_to_string(format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))).expect(rel)
}

/// Every `payguard_...` metric name in `text` (recording rules are `payguard:...`, not metrics).
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("payguard_") {
        let start = from + i;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if boundary {
            out.insert(text[start..end].to_string());
        }
        from = end;
    }
    out
}

/// Families (`# TYPE` lines) and sample names of a Prometheus text exposition.
fn exported(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|line| match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let body = format!(
        "upstream:\n  address: {up}\nstore:\n  backend: redis\n  redis:\n    url: {url}\n    command_timeout: 250ms\nguard:\n{sig}  rate_rules:\n    - {{name: per-key, match: {{routes: [orders]}}, key: [access_key], bucket: {{capacity: 100, refill: 100, per: 1s}}}}\n    - {{name: per-ip-shadow, key: [client_ip], bucket: {{capacity: 1, refill: 1, per: 1h}}, mode: shadow}}\n  order_rules:\n    - {{name: per-user, match: {{routes: [orders]}}, user: 'body:/user_id', window: {{sliding: 1h}}, tiers: [{{over: 100, action: reject}}]}}\nroutes:\n  - {{name: orders, match: {{path: /v1/orders}}, policy: guard}}\n  - name: stripe-notify\n    match: {{path: /notify/stripe}}\n    policy: notify\n    notify:\n      channel: {{stripe: {{endpoint_secrets: ['{STRIPE_SECRET}']}}}}\n      backend_path: /internal/payments\n      webhook_secret: '{BACKEND_WHSEC}'\n  - {{name: api, match: {{path_prefix: /api}}, policy: pass}}\n",
        up = up.addr,
        url = redis.url(),
        sig = signature_section()
    );
    let pg = Payguard::start(&body);
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let send = |req: &Req| {
        let mut b = c.post(pg.url(&req.target)).body(req.body.clone());
        for (k, v) in &req.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        problem_code(b.send().expect("send"))
    };
    let order = || Req::new("POST", "/v1/orders", b"{\"user_id\":\"u1\"}");
    let wait_store = |up: f64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pg.metric("payguard_store_up") != up {
            assert!(std::time::Instant::now() < deadline, "payguard_store_up never {up}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_store(1.0);

    // Guard traffic: accepted (the shadow rule refuses the second one), a forged signature.
    assert_eq!(send(&order().signed()).0, 200, "{}", pg.logs());
    assert_eq!(send(&order().signed()).0, 200);
    let forged = order().signed_with(
        "not-the-secret",
        support::guard::now(),
        &payguard::guard::signature::new_nonce(),
    );
    assert_eq!(send(&forged), (401, "SIGNATURE_MISMATCH".to_string()));
    // Pass traffic and one verified notification.
    assert_eq!(c.get(pg.url("/api/catalog")).send().unwrap().status(), 200);
    let n = support::stripe::notification(STRIPE_SECRET, "dash-1001");
    let r = support::stripe::send(&pg, "/notify/stripe", &n);
    assert_eq!(r.status(), 200, "{}", pg.logs());
    // A store outage: the nonce check fails closed and the error is counted.
    redis.pause();
    assert_eq!(send(&order().signed()), (503, "STORE_UNAVAILABLE".to_string()));
    redis.resume();
    pg.wait_metric("payguard_requests_total{outcome=\"proxied\",route=\"api\"}", 1.0);

    let exposition = c.get(pg.admin_url("/metrics")).send().unwrap().text().unwrap();
    let have = exported(&exposition);
    for (file, min) in [
        ("deploy/grafana/payguard.json", 10),
        ("deploy/prometheus/payguard.rules.yaml", 8),
    ] {
        let used = metric_names(&repo_file(file));
        assert!(used.len() >= min, "{file} uses only {used:?}");
        let missing: Vec<&String> = used.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics payguard does not export: {missing:?}\n{exposition}"
        );
    }
}

#[test]
fn metric_names_are_found_in_queries_and_not_in_recording_rule_names() {
    let names = metric_names("sum(rate(payguard_requests_total{x=\"y\"}[5m])) / payguard:slo:ratio + xpayguard_no");
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["payguard_requests_total"]);
    let have = exported("# HELP payguard_a_seconds x\n# TYPE payguard_a_seconds histogram\npayguard_a_seconds_bucket{le=\"1\"} 1\npayguard_b 2\n");
    assert_eq!(
        have.into_iter().collect::<Vec<_>>(),
        ["payguard_a_seconds", "payguard_a_seconds_bucket", "payguard_b"]
    );
}
