//! Plan → store outcome → verdict, end to end through the pure core.

use std::time::Duration;

use http::HeaderMap;

use super::*;
use crate::store::BucketDecision;

const YAML: &str = r#"
signature:
  keys:
    - id: shop-app
      secrets: ["inline-test-secret"]
ip:
  trusted_proxies: [10.0.0.0/8]
rate_rules:
  - name: per-key
    match: {methods: [POST], path_prefixes: [/v1/orders]}
    key: [access_key]
    bucket: {capacity: 5, refill: 1, per: 1s}
  - name: per-ip-shadow
    key: [client_ip]
    bucket: {capacity: 100, refill: 100, per: 1m}
    mode: shadow
order_rules:
  - name: orders-per-user
    match: {routes: [orders]}
    user: body:/user_id
    window: {calendar: day, time_zone: Asia/Shanghai}
    tiers:
      - {over: 3, action: tag}
      - {over: 5, action: challenge}
      - {over: 10, action: reject}
  - name: paid-orders
    match: {routes: [orders]}
    user: body:/user_id
    window: {sliding: 1h}
    count_on: upstream_2xx
    tiers: [{over: 20, action: reject}]
    on_store_error: deny
"#;

fn guard(yaml: &str) -> Guard {
    serde_yaml_ng::from_str::<GuardConfig>(yaml).unwrap().build().unwrap()
}

fn signed() -> SignedHeaders {
    SignedHeaders {
        key_id: "shop-app".into(),
        timestamp: "1700000000".into(),
        timestamp_unix: 1_700_000_000,
        nonce: "n0nce-0123456789abcdef".into(),
        signature: String::new(),
    }
}

fn now() -> Timestamp {
    "2026-11-23T04:00:00Z".parse().unwrap()
}

fn allowed(remaining: u64) -> BucketDecision {
    BucketDecision {
        allowed: true,
        remaining,
        retry_after: Duration::ZERO,
        reset_after: Duration::from_secs(1),
    }
}

fn view<'a>(method: &'a str, path: &'a str, headers: &'a HeaderMap, body: &'a [u8]) -> RequestView<'a> {
    RequestView {
        method,
        routing_path: path,
        query: None,
        headers,
        client_ip: "198.51.100.7".parse().unwrap(),
        body,
    }
}

fn plan_for(g: &Guard, body: &[u8]) -> Result<GuardPlan, Box<Verdict>> {
    let h = HeaderMap::new();
    let v = view("POST", "/v1/orders", &h, body);
    g.plan(&v, Some(&signed()), Some("orders"), now())
}

#[test]
fn batch_holds_deny_nonce_buckets_and_counters_in_order() {
    let g = guard(YAML);
    let plan = plan_for(&g, br#"{"user_id":"u-42"}"#).unwrap();
    let b = plan.batch();
    assert_eq!(b.deny, Some(("deny:ip".to_string(), "198.51.100.7".to_string())));
    assert_eq!(
        b.nonce,
        Some((
            "nonce:shop-app:n0nce-0123456789abcdef".to_string(),
            Duration::from_secs(600)
        ))
    );
    assert_eq!(b.buckets.len(), 2);
    assert!(b.buckets[0].key.starts_with("rl:per-key:") && b.buckets[0].enforce);
    assert!(b.buckets[1].key.starts_with("rl:per-ip-shadow:") && !b.buckets[1].enforce);
    assert_eq!(b.counters.len(), 2);
    assert_eq!(b.counters[0].incr, 1);
    assert!(
        matches!(&b.counters[0].window, crate::store::CounterWindow::Fixed { window_id, .. } if window_id == "2026-11-23")
    );
    assert_eq!(
        b.counters[1].incr, 0,
        "upstream_2xx counters are read-only before forwarding"
    );
    assert!(plan.needs_store());
    let up = plan.upstream_counters();
    assert_eq!(up.len(), 1);
    assert_eq!((up[0].key.as_str(), up[0].incr), (b.counters[1].key.as_str(), 1));
}

#[test]
fn allow_carries_ratelimit_headers_and_risk_tag() {
    let g = guard(YAML);
    let plan = plan_for(&g, br#"{"user_id":"u-42"}"#).unwrap();
    let v = plan.decide(&GuardOutcome {
        buckets: vec![allowed(4), allowed(99)],
        counters: vec![4, 0],
        ..Default::default()
    });
    let Action::Allow {
        extra_request_headers,
        response_headers,
    } = &v.action
    else {
        panic!("{v:?}")
    };
    assert_eq!(extra_request_headers.len(), 1);
    assert_eq!(extra_request_headers[0].0, "x-pg-risk");
    assert_eq!(extra_request_headers[0].1, "orders-per-user");
    assert!(response_headers
        .iter()
        .any(|(k, v)| k == "ratelimit" && v == "\"per-key\";r=4;t=1"));
    let labels: Vec<_> = v
        .decisions
        .iter()
        .map(|d| (d.rule.as_ref(), d.decision.as_str(), d.mode.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("per-key", "allow", "enforce"),
            ("per-ip-shadow", "allow", "shadow"),
            ("orders-per-user", "tag", "enforce"),
            ("paid-orders", "allow", "enforce")
        ]
    );
}

#[test]
fn dynamic_deny_and_nonce_replay_answers() {
    let g = guard(YAML);
    let plan = plan_for(&g, br#"{"user_id":"u"}"#).unwrap();
    let v = plan.decide(&GuardOutcome {
        denied: true,
        ..Default::default()
    });
    assert_eq!(v.problem().map(|p| (p.status, p.code)), Some((403, "IP_DENIED")));
    let v = plan.decide(&GuardOutcome {
        nonce_replayed: true,
        ..Default::default()
    });
    let p = v.problem().unwrap();
    assert_eq!(
        (p.status, p.code, p.rule.as_deref()),
        (409, "NONCE_REPLAYED", Some("nonce"))
    );
}

#[test]
fn a_request_dated_before_a_store_data_loss_is_401_before_the_rules() {
    let g = guard(YAML);
    let plan = plan_for(&g, br#"{"user_id":"u"}"#).unwrap();
    let v = plan.decide(&GuardOutcome {
        nonce_before_store_loss: true,
        ..Default::default()
    });
    let p = v.problem().unwrap();
    assert_eq!(
        (p.status, p.code, p.rule.as_deref()),
        (401, "TIMESTAMP_BEFORE_STORE_LOSS", Some("nonce"))
    );
    assert!(v
        .decisions
        .iter()
        .all(|d| d.kind != RuleKind::Rate && d.kind != RuleKind::Order));
}

#[test]
fn rate_rejection_wins_and_order_rules_are_not_decided() {
    let g = guard(YAML);
    let plan = plan_for(&g, br#"{"user_id":"u"}"#).unwrap();
    let refused = BucketDecision {
        allowed: false,
        remaining: 0,
        retry_after: Duration::from_millis(300),
        reset_after: Duration::from_secs(5),
    };
    let v = plan.decide(&GuardOutcome {
        buckets: vec![refused, allowed(1)],
        counters: vec![50, 50],
        ..Default::default()
    });
    let p = v.problem().unwrap();
    assert_eq!((p.code, p.rule.as_deref()), ("RATE_LIMITED", Some("per-key")));
    assert!(v.decisions.iter().all(|d| d.kind == RuleKind::Rate));
}

#[test]
fn order_tiers_at_exact_boundaries() {
    let g = guard(YAML);
    let plan = plan_for(&g, br#"{"user_id":"u"}"#).unwrap();
    let decide = |count: u64, paid: u64| {
        plan.decide(&GuardOutcome {
            buckets: vec![allowed(1), allowed(1)],
            counters: vec![count, paid],
            ..Default::default()
        })
    };
    assert!(
        matches!(&decide(3, 0).action, Action::Allow { extra_request_headers, .. } if extra_request_headers.is_empty())
    );
    assert!(decide(5, 0).is_allow());
    let v = decide(6, 0);
    let p = v.problem().unwrap();
    assert_eq!((p.status, p.code), (403, "CHALLENGE_REQUIRED"));
    assert!(p
        .headers
        .iter()
        .any(|(k, v)| k == "x-pg-challenge" && v == "orders-per-user"));
    assert_eq!(decide(10, 0).problem().unwrap().code, "CHALLENGE_REQUIRED");
    assert_eq!(decide(11, 0).problem().unwrap().code, "ORDER_LIMIT");
    // upstream_2xx: 20 accepted before, this would be the 21st → over 20.
    assert!(decide(0, 19).is_allow());
    let v = decide(0, 20);
    assert_eq!(
        v.problem().map(|p| (p.code, p.rule.clone())),
        Some(("ORDER_LIMIT", Some("paid-orders".into())))
    );
}

#[test]
fn store_error_fails_closed_on_nonce_and_applies_rule_policies_otherwise() {
    let g = guard(YAML);
    let plan = plan_for(&g, br#"{"user_id":"u"}"#).unwrap();
    let v = plan.on_store_error();
    let p = v.problem().unwrap();
    assert_eq!(
        (p.status, p.code, p.rule.as_deref()),
        (503, "STORE_UNAVAILABLE", Some("nonce"))
    );

    // Without a signature: rate rules allow by default, the order rule with `deny` refuses.
    let h = HeaderMap::new();
    let req = view("POST", "/v1/orders", &h, br#"{"user_id":"u"}"#);
    let plan = g.plan(&req, None, Some("orders"), now()).unwrap_err();
    assert_eq!(
        plan.problem().unwrap().code,
        IDENTITY_MISSING,
        "per-key needs access_key"
    );
    let g2 = guard(
        "rate_rules:\n  - {name: r, key: [client_ip], bucket: {capacity: 1, refill: 1, per: 1s}}\n\
         order_rules:\n  - {name: o, user: body:/user_id, window: {sliding: 1h}, tiers: [{over: 1, action: reject}], on_store_error: deny, mode: shadow}\n",
    );
    let plan = g2.plan(&req, None, None, now()).unwrap();
    let v = plan.on_store_error();
    assert!(v.is_allow(), "shadow rules never block, even on store errors");
    let labels: Vec<_> = v
        .decisions
        .iter()
        .map(|d| (d.rule.as_ref(), d.decision.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("dynamic_deny", "store_error_allow"),
            ("r", "store_error_allow"),
            ("o", "store_error_deny")
        ]
    );
}

#[test]
fn mismatched_store_answer_is_treated_as_store_error() {
    let g = guard(YAML);
    let plan = plan_for(&g, br#"{"user_id":"u"}"#).unwrap();
    let v = plan.decide(&GuardOutcome {
        buckets: vec![allowed(1)],
        counters: vec![],
        ..Default::default()
    });
    assert_eq!(v.problem().unwrap().code, "STORE_UNAVAILABLE");
}

#[test]
fn missing_identity_rejects_names_rule_and_shadow_only_reports() {
    let g = guard(YAML);
    let v = plan_for(&g, b"{}").unwrap_err();
    let p = v.problem().unwrap();
    assert_eq!(
        (p.status, p.code, p.rule.as_deref()),
        (400, IDENTITY_MISSING, Some("orders-per-user"))
    );
    assert!(p.detail.contains("body:/user_id"));

    let g = guard(
        "order_rules:\n  - {name: o, user: header:x-user, window: {sliding: 1h}, tiers: [{over: 1, action: reject}], mode: shadow}\n  \
         - {name: s, user: header:x-user, window: {sliding: 1h}, tiers: [{over: 1, action: reject}], on_missing_key: skip}\n",
    );
    let plan = plan_for(&g, b"").unwrap();
    assert!(plan.batch().counters.is_empty());
    let v = plan.decide(&GuardOutcome::default());
    assert!(v.is_allow());
    let labels: Vec<_> = v
        .decisions
        .iter()
        .map(|d| (d.rule.as_ref(), d.decision.as_str(), d.mode))
        .collect();
    assert_eq!(
        labels,
        [("o", "missing_key", Mode::Shadow), ("s", "skipped", Mode::Enforce)]
    );
}

#[test]
fn ambiguous_identity_refuses_even_with_a_fallback_and_shadow_only_reports() {
    let g = guard(YAML);
    let v = plan_for(&g, br#"{"user_id":"u-1","user_id":"u-2"}"#).unwrap_err();
    let p = v.problem().unwrap();
    assert_eq!(
        (p.status, p.code, p.rule.as_deref()),
        (400, AMBIGUOUS_IDENTITY, Some("orders-per-user"))
    );
    assert!(p.detail.contains("repeats the key `user_id`"), "{}", p.detail);

    let g = guard(
        "order_rules:\n  - {name: o, user: body:/user_id, window: {sliding: 1h}, tiers: [{over: 1, action: reject}], mode: shadow, on_missing_key: client_ip}\n",
    );
    let plan = plan_for(&g, br#"{"user_id":"a","USER_ID":"b"}"#).unwrap();
    assert!(plan.batch().counters.is_empty());
    let v = plan.decide(&GuardOutcome::default());
    assert!(v.is_allow());
    assert_eq!(v.decisions[0].decision.as_str(), "ambiguous");
}

#[test]
fn rules_that_do_not_match_are_not_planned() {
    let g = guard(YAML);
    let h = HeaderMap::new();
    let v = view("GET", "/v1/products", &h, b"");
    let plan = g.plan(&v, Some(&signed()), Some("catalog"), now()).unwrap();
    assert_eq!(plan.batch().buckets.len(), 1, "only the catch-all shadow rule");
    assert!(plan.batch().counters.is_empty());
}

#[test]
fn static_ip_rules_and_prelimit_answers() {
    let g = guard("ip: {deny: [203.0.113.0/24]}\nlocal_prelimit: {per_second: 1, burst: 1}\n");
    let ip: IpAddr = "203.0.113.5".parse().unwrap();
    let v = g.check_ip(ip).unwrap();
    assert_eq!(
        v.problem().map(|p| (p.status, p.code, p.rule.clone())),
        Some((403, "IP_DENIED", Some("ip_deny".into())))
    );
    assert!(g.check_ip("192.0.2.1".parse().unwrap()).is_none());
    assert!(g.prelimit(ip).is_none());
    assert_eq!(g.prelimit(ip).unwrap().problem().unwrap().code, "RATE_LIMITED");
    assert!(!g.needs_body());
    assert_eq!(g.body_too_large().problem().unwrap().status, 413);
}

#[test]
fn config_errors_carry_full_paths() {
    let cfg: GuardConfig = serde_yaml_ng::from_str(
        "signature: {keys: []}\nrate_rules:\n  - {name: a, key: [access_key], bucket: {capacity: 0, refill: 1, per: 1s}}\n\
         order_rules:\n  - {name: a, user: access_key, window: {sliding: 1h}, tiers: [{over: 1, action: tag}]}\n\
         local_prelimit: {per_second: 0}\n",
    )
    .unwrap();
    let paths: Vec<String> = cfg.build().unwrap_err().into_iter().map(|i| i.path).collect();
    assert_eq!(
        paths,
        [
            "signature.keys",
            "rate_rules[0].bucket.capacity",
            "order_rules[0].name",
            "local_prelimit.per_second",
            "local_prelimit.burst"
        ]
    );
    let cfg: GuardConfig = serde_yaml_ng::from_str(
        "rate_rules:\n  - {name: a, key: [access_key], bucket: {capacity: 1, refill: 1, per: 1s}}\n",
    )
    .unwrap();
    let paths: Vec<String> = cfg.build().unwrap_err().into_iter().map(|i| i.path).collect();
    assert_eq!(paths, ["rate_rules[0].key"]);
    assert!(serde_yaml_ng::from_str::<GuardConfig>("unknown: 1").is_err());
}

#[test]
fn json_schema_is_generated_from_the_same_types() {
    let schema = serde_json::to_value(schemars::schema_for!(GuardConfig)).unwrap();
    let text = schema.to_string();
    for field in [
        "rate_rules",
        "order_rules",
        "trusted_proxies",
        "on_missing_key",
        "count_on",
        "max_body_bytes",
    ] {
        assert!(text.contains(field), "{field}");
    }
}

#[test]
fn guard_and_plan_can_be_shared_across_threads_and_outlive_a_reload() {
    fn assert_send_sync_static<T: Send + Sync + 'static>() {}
    assert_send_sync_static::<Guard>();
    assert_send_sync_static::<GuardPlan>();
    assert_send_sync_static::<Verdict>();
    let g = guard(YAML);
    let plan = plan_for(&g, br#"{"user_id":"u"}"#).unwrap();
    drop(g);
    assert!(plan
        .decide(&GuardOutcome {
            buckets: vec![allowed(1), allowed(1)],
            counters: vec![0, 0],
            ..Default::default()
        })
        .is_allow());
}
