//! The Grafana dashboard and the alert rules only use metrics payguard really exports: real
//! guard, pass, notification and egress traffic (and a store outage) through the running binary on a
//! real Redis, then every `payguard_*` name in deploy/grafana/payguard.json and
//! deploy/prometheus/payguard.rules.yaml must appear in `/metrics`. No panel stays silently
//! empty because of a renamed metric. The labels they select on and group by must be on those
//! metrics too, and every label value they match must be one payguard emits (seen in this run, or
//! for outcomes this traffic does not produce, such as an upstream timeout, declared in the
//! source). (scripts/lint-deploy parses every query with promtool.)

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::channel_sim::{fixture, ChannelSim, WX_MERCHANT_SERIAL};
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

/// Labels Prometheus adds from the scrape target, not from payguard's exposition.
const TARGET_LABELS: [&str; 4] = ["namespace", "pod", "job", "instance"];

/// Every PromQL expression of the dashboard (panel queries and template variables) and of the
/// rules file.
fn queries() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/payguard.json")).expect("dashboard JSON");
    let mut out: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    out.extend(
        dashboard["templating"]["list"]
            .as_array()
            .expect("templating")
            .iter()
            .filter_map(|v| v["query"]["query"].as_str())
            .filter(|q| q.contains("payguard_"))
            .map(str::to_string),
    );
    let rules: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&repo_file("deploy/prometheus/payguard.rules.yaml")).expect("rules YAML");
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            out.push(rule["expr"].as_str().expect("expr").to_string());
        }
    }
    out
}

/// One label matcher of a selector: `label op "value"`.
#[derive(Debug)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// `{a="x", b=~"y|z"}` → matchers. Values are Prometheus strings (`\"` escapes).
fn matchers(inner: &str) -> Vec<Matcher> {
    let mut out = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let op_at = rest
            .find(['=', '!'])
            .unwrap_or_else(|| panic!("no operator in {{{inner}}}"));
        let label = rest[..op_at].trim().to_string();
        let quote = rest[op_at..].find('"').expect("quoted value") + op_at;
        let op = rest[op_at..quote].trim().to_string();
        let mut value = String::new();
        let mut chars = rest[quote + 1..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '"' => {
                    end = Some(quote + 1 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.unwrap_or_else(|| panic!("unterminated value in {{{inner}}}"));
        out.push(Matcher { label, op, value });
        rest = rest[end..].trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Each `payguard_*{...}` selector of a query: (metric, matchers).
fn selectors(query: &str) -> Vec<(String, Vec<Matcher>)> {
    metric_names(query)
        .into_iter()
        .flat_map(|name| {
            let pattern = format!("{name}{{");
            query
                .match_indices(&pattern)
                .filter(|(i, _)| *i == 0 || !query.as_bytes()[i - 1].is_ascii_alphanumeric())
                .map(|(i, _)| {
                    let open = i + pattern.len();
                    let close = query[open..].find('}').expect("closing brace") + open;
                    (name.clone(), matchers(&query[open..close]))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The labels of every `by (...)` clause of a query.
fn grouping_labels(query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = query;
    while let Some(i) = rest.find("by (") {
        let inner = &rest[i + 4..];
        let close = inner.find(')').expect("closing parenthesis");
        out.extend(
            inner[..close]
                .split(',')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        );
        rest = &inner[close..];
    }
    out
}

/// Each sample of an exposition: metric name → every label set it was exported with.
fn samples(exposition: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, labels) = match line.split_once('{') {
            Some((name, rest)) => {
                let inner = &rest[..rest.rfind('}').expect("closing brace")];
                let labels = matchers(inner).into_iter().map(|m| (m.label, m.value)).collect();
                (name.to_string(), labels)
            }
            None => (line.split(' ').next().unwrap_or(line).to_string(), BTreeMap::new()),
        };
        out.entry(name).or_default().push(labels);
    }
    out
}

/// The literal alternatives a matcher's value stands for: `a|b` → a, b; a regular expression
/// such as `upstream_.*` → none (promtool checks that it parses).
fn literal_values(m: &Matcher) -> Vec<&str> {
    match m.op.as_str() {
        "=" | "!=" => vec![m.value.as_str()],
        _ => m
            .value
            .split('|')
            .filter(|v| v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .collect(),
    }
}

/// Whether `value` is a string literal somewhere in payguard's source (the label values it emits
/// are: outcomes, decisions, kinds, modes and results are named in their enums).
fn declared_in_source(value: &str, sources: &str) -> bool {
    sources.contains(&format!("\"{value}\""))
}

fn rust_sources(dir: &std::path::Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).expect("read source"));
        }
    }
}

/// What the queries ask of the exposition that it does not have: labels missing on a metric,
/// label values payguard never emits.
fn label_problems(queries: &[String], exposition: &str, sources: &str) -> Vec<String> {
    let have = samples(exposition);
    let mut problems = Vec::new();
    for query in queries {
        let labels_of_query: BTreeSet<&String> = metric_names(query)
            .iter()
            .filter_map(|metric| have.get(metric))
            .flatten()
            .flat_map(|s| s.keys())
            .collect();
        for (metric, matchers) in selectors(query) {
            let Some(exported) = have.get(&metric) else {
                continue; // a missing metric is reported by the metric-name check
            };
            for m in matchers.iter().filter(|m| !TARGET_LABELS.contains(&m.label.as_str())) {
                if !exported.iter().any(|s| s.contains_key(&m.label)) {
                    problems.push(format!("{metric} has no label {}: {query}", m.label));
                    continue;
                }
                for value in literal_values(m) {
                    let seen = exported.iter().any(|s| s.get(&m.label).is_some_and(|v| v == value));
                    if !seen && !declared_in_source(value, sources) {
                        problems.push(format!(
                            "{metric}{{{}=\"{value}\"}} is never exported: {query}",
                            m.label
                        ));
                    }
                }
            }
        }
        for label in grouping_labels(query) {
            if !TARGET_LABELS.contains(&label.as_str()) && !labels_of_query.contains(&label) {
                problems.push(format!("grouped by {label}, which none of its metrics has: {query}"));
            }
        }
    }
    problems
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let sim = ChannelSim::start();
    let mut body = format!(
        "upstream:\n  address: {up}\nstore:\n  backend: redis\n  redis:\n    url: {url}\n    command_timeout: 250ms\nguard:\n{sig}  rate_rules:\n    - {{name: per-key, match: {{routes: [orders]}}, key: [access_key], bucket: {{capacity: 100, refill: 100, per: 1s}}}}\n    - {{name: per-ip-shadow, key: [client_ip], bucket: {{capacity: 1, refill: 1, per: 1h}}, mode: shadow}}\n  order_rules:\n    - {{name: per-user, match: {{routes: [orders]}}, user: 'body:/user_id', window: {{sliding: 1h}}, tiers: [{{over: 100, action: reject}}]}}\nroutes:\n  - {{name: orders, match: {{path: /v1/orders}}, policy: guard}}\n  - name: stripe-notify\n    match: {{path: /notify/stripe}}\n    policy: notify\n    notify:\n      channel: {{stripe: {{endpoint_secrets: ['{STRIPE_SECRET}']}}}}\n      backend_path: /internal/payments\n      webhook_secret: '{BACKEND_WHSEC}'\n  - {{name: api, match: {{path_prefix: /api}}, policy: pass}}\n",
        up = up.addr,
        url = redis.url(),
        sig = signature_section()
    );
    // An egress route through the channel simulator.
    body.push_str(&format!(
        "  - name: wx-egress\n    match: {{path_prefix: /egress/wechatpay}}\n    policy: egress\n    egress:\n      merchant: wx\n      allow: [{{method: POST, path_prefix: /v3/pay/transactions}}]\n  - name: wx-notify\n    match: {{path: /notify/wechatpay}}\n    policy: notify\n    notify:\n      merchant: wx\n      backend_path: /internal/payments\n      webhook_secret: '{BACKEND_WHSEC}'\nmerchants:\n  wx:\n    channel: wechatpay_v3\n    mchid: \"1900000001\"\n    certificate_serial: {WX_MERCHANT_SERIAL}\n    private_key: file:{key}\n    api_v3_key: 0123456789abcdef0123456789ABCDEF\n    platform_certificates: ['file:{platform}']\n    download_platform_certificates: true\n    order_query: {{}}\n    base_url: {base}\n    extra_ca: {ca}\n",
        key = fixture("wechatpay_v3/egress_merchant_private_key.pem").display(),
        platform = fixture("wechatpay_v3/simulate_platform_certificate.pem").display(),
        base = sim.base_url(),
        ca = sim.ca_ref(),
    ));
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
    // One egress call, signed, answered and verified.
    let egress = c
        .post(pg.url("/egress/wechatpay/v3/pay/transactions/native"))
        .header("content-type", "application/json")
        .body(r#"{"out_trade_no":"dash-1002","amount":{"total":100,"currency":"CNY"}}"#)
        .send()
        .expect("egress call");
    assert_eq!(egress.status(), 200, "{}", pg.logs());
    // The platform certificates downloaded at start.
    pg.wait_metric(
        "payguard_platform_certificate_downloads_total{merchant=\"wx\",outcome=\"updated\"}",
        1.0,
    );
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
    let mut sources = String::new();
    rust_sources(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut sources,
    );
    let queries = queries();
    assert!(queries.len() >= 30, "only {} queries found", queries.len());
    let problems = label_problems(&queries, &exposition, &sources);
    assert!(
        problems.is_empty(),
        "queries select labels or values payguard does not export:\n{}\n{exposition}",
        problems.join("\n")
    );
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

#[test]
fn label_checks_find_a_missing_label_a_value_never_emitted_and_a_bad_grouping() {
    let exposition = "# TYPE payguard_x_total counter\npayguard_x_total{outcome=\"proxied\",route=\"a,b\"} 1\n";
    let sources = "Proxied = \"proxied\", Refused = \"refused\",";
    let ok = [
        "sum by (namespace, route) (rate(payguard_x_total{namespace=~\"$namespace\", outcome=~\"proxied|refused\"}[5m]))".to_string(),
        "payguard_x_total{outcome=~\"prox.*\"}".to_string(),
    ];
    assert_eq!(label_problems(&ok, exposition, sources), Vec::<String>::new());
    let bad = [
        "payguard_x_total{rule=\"r\"}".to_string(),
        "payguard_x_total{outcome=\"prxied\"}".to_string(),
        "sum by (channel) (payguard_x_total)".to_string(),
    ];
    let problems = label_problems(&bad, exposition, sources);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].starts_with("payguard_x_total has no label rule"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("payguard_x_total{outcome=\"prxied\"} is never exported"),
        "{problems:?}"
    );
    assert!(problems[2].starts_with("grouped by channel"), "{problems:?}");
}
