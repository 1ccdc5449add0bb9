//! `pass` routes: requests and bodies reach the upstream byte-identical, responses come back
//! unchanged, X-Request-Id is generated or kept, upstream failures become problem+json 502/504.

mod support;

use std::io::Read;
use std::time::Duration;

use support::payguard::Payguard;
use support::upstream::{Behavior, Upstream};

fn pass_config(upstream: &str, extra_upstream: &str) -> String {
    format!(
        "upstream:\n  address: {upstream}\n{extra_upstream}routes:\n  - name: api\n    match: {{path_prefix: /api}}\n    policy: pass\ndefault_action: not_found\n"
    )
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A body of `len` bytes covering every byte value.
fn patterned_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn get_reaches_upstream_with_query_headers_and_a_generated_request_id() {
    let up = Upstream::start();
    let pg = Payguard::start(&pass_config(&up.addr.to_string(), ""));
    let resp = client()
        .get(pg.url("/api/items?b=2&a=1&a=%E4%B8%AD"))
        .header("x-custom", "kept")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "recording", "upstream headers come back");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(resp.text().unwrap(), "upstream ok");

    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].target, "/api/items?b=2&a=1&a=%E4%B8%AD");
    assert_eq!(reqs[0].header("x-custom"), Some("kept"));
    assert_eq!(reqs[0].header("x-request-id"), Some(rid.as_str()));
    assert_eq!(rid.len(), 36, "generated ids are UUIDs");
}

#[test]
fn client_request_id_is_kept_and_passed_upstream() {
    let up = Upstream::start();
    let pg = Payguard::start(&pass_config(&up.addr.to_string(), ""));
    let resp = client()
        .get(pg.url("/api/x"))
        .header("x-request-id", "abc-123")
        .send()
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    assert_eq!(up.requests()[0].header_values("x-request-id"), vec!["abc-123"]);
}

#[test]
fn fixed_length_chunked_and_large_bodies_arrive_byte_identical() {
    let up = Upstream::start();
    let pg = Payguard::start(&pass_config(&up.addr.to_string(), ""));
    let c = client();

    // Fixed length.
    let small = patterned_body(1000);
    let r = c.post(pg.url("/api/fixed")).body(small.clone()).send().unwrap();
    assert_eq!(r.status(), 200);

    // Chunked (unknown length reader → Transfer-Encoding: chunked).
    let chunked = patterned_body(300_000);
    let reader = std::io::Cursor::new(chunked.clone()).take(chunked.len() as u64);
    let r = c
        .post(pg.url("/api/chunked"))
        .body(reqwest::blocking::Body::new(reader))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // 5 MiB fixed length (well above Pingora's 64 KiB retry buffer).
    let big = patterned_body(5 * 1024 * 1024);
    let r = c.put(pg.url("/api/big")).body(big.clone()).send().unwrap();
    assert_eq!(r.status(), 200);

    let reqs = up.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].header("content-length"), Some("1000"));
    assert!(reqs[0].body == small, "fixed-length body differs");
    assert_eq!(reqs[1].header("transfer-encoding"), Some("chunked"));
    assert!(reqs[1].body == chunked, "chunked body differs");
    assert_eq!(reqs[2].method, "PUT");
    assert_eq!(reqs[2].body.len(), big.len());
    assert!(reqs[2].body == big, "5 MiB body differs");
    for r in &reqs {
        assert!(r.header("x-request-id").is_some());
    }
}

#[test]
fn upstream_status_headers_and_body_are_relayed_unchanged() {
    let up = Upstream::start();
    up.set_behavior(Behavior {
        status: 418,
        headers: vec![("x-a".into(), "1".into()), ("set-cookie".into(), "s=1".into())],
        body: patterned_body(70_000),
        delay: Duration::ZERO,
    });
    let pg = Payguard::start(&pass_config(&up.addr.to_string(), ""));
    let r = client().get(pg.url("/api/teapot")).send().unwrap();
    assert_eq!(r.status(), 418);
    assert_eq!(r.headers()["x-a"], "1");
    assert_eq!(r.headers()["set-cookie"], "s=1");
    assert!(r.bytes().unwrap().to_vec() == patterned_body(70_000));
}

#[test]
fn unmatched_request_gets_404_problem_without_touching_upstream() {
    let up = Upstream::start();
    let pg = Payguard::start(&pass_config(&up.addr.to_string(), ""));
    let r = client().get(pg.url("/other")).send().unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["code"], "NOT_FOUND");
    assert_eq!(body["status"], 404);
    assert!(up.requests().is_empty());
}

#[test]
fn default_pass_proxies_unmatched_requests() {
    let up = Upstream::start();
    let pg = Payguard::start(&format!("upstream:\n  address: {}\n", up.addr));
    let r = client().get(pg.url("/anything")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.requests()[0].target, "/anything");
}

#[test]
fn upstream_down_gives_502_problem() {
    let closed = support::free_port();
    let pg = Payguard::start(&pass_config(&format!("127.0.0.1:{closed}"), ""));
    let r = client().post(pg.url("/api/x")).body("hello").send().unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["code"], "UPSTREAM_UNAVAILABLE");
    assert!(pg.wait_metric("payguard_requests_total{outcome=\"upstream_error\",route=\"api\"}", 1.0) >= 1.0);
}

#[test]
fn upstream_timeout_gives_504_problem() {
    let up = Upstream::start();
    up.set_behavior(Behavior {
        delay: Duration::from_millis(1500),
        ..Behavior::default()
    });
    let pg = Payguard::start(&pass_config(&up.addr.to_string(), "  read_timeout: 300ms\n"));
    let started = std::time::Instant::now();
    let r = client().get(pg.url("/api/slow")).send().unwrap();
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "answered before the backend did"
    );
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["code"], "UPSTREAM_TIMEOUT");
}

#[test]
fn admin_endpoints_answer() {
    let up = Upstream::start();
    let pg = Payguard::start(&pass_config(&up.addr.to_string(), ""));
    let c = client();
    assert_eq!(c.get(pg.admin_url("/healthz")).send().unwrap().status(), 200);
    let ready = c.get(pg.admin_url("/readyz")).send().unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().unwrap();
    assert_eq!(ready["store"], "embedded");
    c.get(pg.url("/api/x")).send().unwrap();
    assert_eq!(
        pg.wait_metric("payguard_requests_total{outcome=\"proxied\",route=\"api\"}", 1.0),
        1.0
    );
    let metrics = c.get(pg.admin_url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("payguard_config_reloads_total"), "{metrics}");
    // Mutating endpoints need the bearer token.
    assert_eq!(c.post(pg.admin_url("/admin/reload")).send().unwrap().status(), 401);
    let r = c
        .post(pg.admin_url("/admin/reload"))
        .bearer_auth("wrong")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(pg.admin_url("/admin/reload"))
        .bearer_auth("test-admin-token")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn access_log_has_one_json_line_per_request() {
    let up = Upstream::start();
    let pg = Payguard::start(&pass_config(&up.addr.to_string(), ""));
    client()
        .get(pg.url("/api/logged"))
        .header("x-request-id", "log-me-1")
        .send()
        .unwrap();
    let logs = pg.wait_logs(|l| l.contains("log-me-1"));
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["request_id"] == "log-me-1")
        .unwrap_or_else(|| panic!("no access log line:\n{logs}"));
    assert_eq!(line["route"], "api");
    assert_eq!(line["status"], 200);
    assert_eq!(line["path"], "/api/logged");
    assert!(line["latency_ms"].as_f64().is_some());
}

#[test]
fn client_cannot_forge_payguard_verdict_headers_on_a_pass_route() {
    let up = Upstream::start();
    let pg = Payguard::start(&pass_config(&up.addr.to_string(), ""));
    let r = client()
        .post(pg.url("/api/legacy-notify"))
        .header("x-pg-verified", "1")
        .header("X-PG-Event-Id", "evt_forged")
        .header("x-pg-risk", "none")
        .header("x-other", "kept")
        .body("trade_status=TRADE_SUCCESS")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = &up.requests()[0];
    assert_eq!(seen.header("x-pg-verified"), None);
    assert_eq!(seen.header("x-pg-event-id"), None);
    assert_eq!(seen.header("x-pg-risk"), None);
    assert_eq!(seen.header("x-other"), Some("kept"));
    assert!(seen.body == b"trade_status=TRADE_SUCCESS");
}

#[test]
fn the_access_log_has_client_user_agent_and_bytes_and_in_flight_returns_to_zero() {
    let up = Upstream::start();
    let pg = Payguard::start(&pass_config(&up.addr.to_string(), ""));
    let resp = client()
        .get(pg.url("/api/items"))
        .header("user-agent", "shop-app/1.2 \"quoted\"")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().unwrap();
    let line = std::iter::repeat_with(|| {
        std::thread::sleep(Duration::from_millis(20));
        pg.logs()
    })
    .take(100)
    .find_map(|logs| {
        logs.lines()
            .find(|l| l.contains("\"payguard::access\""))
            .map(str::to_string)
    })
    .expect("an access log line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["client_ip"], "127.0.0.1", "{line}");
    assert_eq!(v["user_agent"], "shop-app/1.2 \"quoted\"", "{line}");
    assert_eq!(v["bytes_sent"], body.len(), "{line}");
    assert_eq!(v["outcome"], "proxied", "{line}");
    assert_eq!(pg.metric("payguard_requests_in_flight"), 0.0);
    assert_eq!(
        pg.metric(&format!(
            "payguard_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    // The standard process metrics are exported too.
    assert!(pg.metric("process_resident_memory_bytes") > 1_000_000.0);
    assert!(pg.metric("process_open_fds") > 0.0);
    assert!(pg.metric("process_start_time_seconds") > 1_000_000_000.0);
}

/// A client's valid W3C trace reaches the backend unchanged and is logged; a request without one
/// (or with a broken one) gets a new trace, and a `tracestate` of a replaced trace is dropped.
#[test]
fn traceparent_is_kept_when_valid_and_created_otherwise() {
    let up = Upstream::start();
    let pg = Payguard::start(&pass_config(&up.addr.to_string(), ""));
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let send = |tp: Option<&str>, id: &str| {
        let mut r = client()
            .get(pg.url("/api/traced"))
            .header("x-request-id", id)
            .header("tracestate", "vendor=1");
        if let Some(tp) = tp {
            r = r.header("traceparent", tp);
        }
        assert_eq!(r.send().unwrap().status(), 200);
    };
    send(Some(valid), "trace-kept");
    send(None, "trace-new");
    send(
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
        "trace-broken",
    );
    let got = up.requests();
    assert_eq!(got[0].header("traceparent"), Some(valid));
    assert_eq!(got[0].header("tracestate"), Some("vendor=1"));
    let mut ids = vec!["4bf92f3577b34da6a3ce929d0e0e4736".to_string()];
    for r in &got[1..] {
        let tp = r.header("traceparent").expect("a new traceparent");
        let id = payguard::trace::trace_id(tp.as_bytes()).expect("valid");
        assert_ne!(id, ids[0]);
        assert_eq!(r.header("tracestate"), None, "the replaced trace's state is dropped");
        ids.push(id.to_string());
    }
    let logs = pg.wait_logs(|l| l.contains("trace-broken"));
    for (request_id, trace_id) in ["trace-kept", "trace-new", "trace-broken"].iter().zip(&ids) {
        let line = logs
            .lines()
            .find(|l| l.contains(&format!("\"request_id\":\"{request_id}\"")))
            .unwrap_or_else(|| panic!("no access line for {request_id}:\n{logs}"));
        assert!(line.contains(&format!("\"trace_id\":\"{trace_id}\"")), "{line}");
    }
}
