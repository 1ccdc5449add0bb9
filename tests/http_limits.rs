//! HTTP/1.1 hygiene and slow clients: a body that stalls or trickles is answered 408 on every
//! route (a notification's is logged like any other notification), pipelined requests are answered
//! in order, repeated identical Content-Length fields reach the backend once.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::payguard::{Custom, Payguard};
use support::upstream::Upstream;

const STRIPE_SECRET: &str = "whsec_limits_test_stripe_secret";

fn start(up: &Upstream) -> Payguard {
    let body = format!(
        "upstream:\n  address: {}\nguard:\n  signature:\n    keys:\n      - id: {}\n        secrets: [\"{}\"]\n\
         routes:\n\
         \x20 - {{name: orders, match: {{path: /v1/orders}}, policy: guard}}\n\
         \x20 - name: stripe\n    match: {{path: /notify/stripe}}\n    policy: notify\n    notify:\n      channel: {{stripe: {{endpoint_secrets: ['{STRIPE_SECRET}']}}}}\n      backend_path: /internal/payments\n      webhook_secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n\
         \x20 - {{name: api, match: {{path_prefix: /api}}, policy: pass}}\n\
         default_action: not_found\n",
        up.addr,
        support::guard::KEY_ID,
        support::guard::SECRET
    );
    let custom = Custom {
        server_extra: "  body: {idle_timeout: 500ms, min_rate: 2000}\n".to_string(),
        ..Default::default()
    };
    Payguard::start_with("127.0.0.1", custom, &body)
}

fn connect(pg: &Payguard) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", pg.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until the peer closes or `want` complete responses arrived; returns the text.
fn read_answers(s: &mut TcpStream, want: usize) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).to_string();
        let complete = text.matches("HTTP/1.1 ").count() >= want && complete_bodies(&text, want);
        if complete {
            return text;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the last of `want` responses in `text` has its whole Content-Length body.
fn complete_bodies(text: &str, want: usize) -> bool {
    let Some(last) = text.split("HTTP/1.1 ").nth(want) else {
        return false;
    };
    let Some((head, body)) = last.split_once("\r\n\r\n") else {
        return false;
    };
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= len
}

/// Sends a head promising `len` body bytes, then `sent` bytes of it, then waits.
fn stall(pg: &Payguard, head_lines: &str, path: &str, len: usize, sent: &[u8]) -> String {
    let mut s = connect(pg);
    let head = format!("POST {path} HTTP/1.1\r\nHost: shop.example\r\n{head_lines}Content-Length: {len}\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(sent).unwrap();
    read_answers(&mut s, 1)
}

#[test]
fn a_stalled_body_is_answered_408_on_every_route() {
    let up = Upstream::start();
    let pg = start(&up);
    let signed = support::guard::Req::new("POST", "/v1/orders", &[b'x'; 1000]).signed();
    let headers: String = signed.headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    for (route, path, head) in [
        ("orders", "/v1/orders", headers.as_str()),
        ("stripe", "/notify/stripe", "stripe-signature: t=1,v1=00\r\n"),
        ("api", "/api/upload", ""),
    ] {
        let answer = stall(&pg, head, path, 1000, b"0123456789");
        assert!(answer.starts_with("HTTP/1.1 408"), "{route}: {answer}");
        assert!(answer.contains("REQUEST_TIMEOUT"), "{route}: {answer}");
        // A notify route's requests are all outcome `notification`; its own metric is below.
        if route != "stripe" {
            let metric = format!("payguard_requests_total{{outcome=\"client_timeout\",route=\"{route}\"}}");
            assert_eq!(pg.wait_metric(&metric, 1.0), 1.0, "{route}");
        }
    }
    assert!(
        up.requests()
            .iter()
            .all(|r| r.target != "/v1/orders" && r.target != "/internal/payments"),
        "nothing stalled reached a guarded or notify backend"
    );
    // The stalled notification is in the notification log and its metric.
    let notified = "payguard_notifications_total{channel=\"stripe\",outcome=\"client_timeout\",route=\"stripe\"}";
    assert_eq!(pg.wait_metric(notified, 1.0), 1.0);
    let notify_line = |logs: &str| {
        logs.lines()
            .any(|l| l.contains("\"payguard::notify\"") && l.contains("\"outcome\":\"client_timeout\""))
    };
    let logs = pg.wait_logs(notify_line);
    assert!(notify_line(&logs), "{logs}");
}

#[test]
fn a_trickled_body_is_answered_408_once_below_the_minimum_rate() {
    let up = Upstream::start();
    let pg = start(&up);
    let mut s = connect(&pg);
    s.write_all(b"POST /api/upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 100000\r\n\r\n")
        .unwrap();
    // 100 bytes every 100 ms: never idle for 500 ms, but 1 000 bytes/s against a minimum of 2 000.
    let mut answer = String::new();
    for _ in 0..40 {
        if s.write_all(&[b'y'; 100]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.read(&mut buf) {
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        s.set_nonblocking(false).unwrap();
        if !answer.is_empty() {
            break;
        }
    }
    if answer.is_empty() {
        answer = read_answers(&mut s, 1);
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start();
    let pg = start(&up);
    let mut s = connect(&pg);
    s.write_all(
        b"GET /api/first HTTP/1.1\r\nHost: shop.example\r\n\r\nGET /api/second HTTP/1.1\r\nHost: shop.example\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: shop.example\r\n\r\n",
    )
    .unwrap();
    let text = read_answers(&mut s, 3);
    let statuses: Vec<&str> = text
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|r| r.get(..3).unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["200", "200", "404"], "{text}");
    let targets: Vec<String> = up.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets, ["/api/first", "/api/second"]);
}

#[test]
fn identical_repeated_content_lengths_reach_the_backend_once() {
    let up = Upstream::start();
    let pg = start(&up);
    let mut s = connect(&pg);
    s.write_all(
        b"POST /api/items HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .unwrap();
    let text = read_answers(&mut s, 1);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let got = up.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header_values("content-length"), vec!["5"]);
    assert_eq!(got[0].body, b"hello");
}

/// payguard with small connection limits: 2 connections, 2 KiB / 5 fields per head, 1 s to send
/// a head, 1 s of keep-alive idleness.
fn start_limited(up: &Upstream, max_connections: usize) -> Payguard {
    let body = format!(
        "upstream:\n  address: {}\nroutes:\n  - {{name: api, match: {{path_prefix: /api}}, policy: pass}}\n",
        up.addr
    );
    let custom = Custom {
        server_extra: format!(
            "  max_connections: {max_connections}\n  head: {{max_bytes: 2048, max_fields: 5, timeout: 1s}}\n  keepalive_timeout: 1s\n"
        ),
        ..Default::default()
    };
    Payguard::start_with("127.0.0.1", custom, &body)
}

fn refusals(pg: &Payguard, reason: &str) -> f64 {
    pg.metric(&format!("payguard_connection_refusals_total{{reason=\"{reason}\"}}"))
}

#[test]
fn a_head_over_the_size_or_field_limit_is_answered_431_and_never_forwarded() {
    let up = Upstream::start();
    let pg = start_limited(&up, 100);
    // Under both limits, with a body far larger than the head limit: forwarded.
    let mut s = connect(&pg);
    let big_body = "b".repeat(100_000);
    let fill = "f".repeat(1800);
    write!(
        s,
        "POST /api/ok HTTP/1.1\r\nHost: t\r\nX-Fill: {fill}\r\nContent-Length: {}\r\n\r\n{big_body}",
        big_body.len()
    )
    .unwrap();
    assert!(read_answers(&mut s, 1).starts_with("HTTP/1.1 200"));

    // One byte-heavy field: 431 before the head even ends.
    let mut s = connect(&pg);
    let fill = "f".repeat(3000);
    let _ = write!(s, "GET /api/big HTTP/1.1\r\nHost: t\r\nX-Fill: {fill}");
    let answer = read_answers(&mut s, 1);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");

    // Six fields, one over the limit.
    let mut s = connect(&pg);
    let fields: String = (0..6).map(|i| format!("X-{i}: v\r\n")).collect();
    write!(s, "GET /api/many HTTP/1.1\r\n{fields}\r\n").unwrap();
    let answer = read_answers(&mut s, 1);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");

    // The limit applies to every request of a kept-alive connection, not only the first.
    let mut s = connect(&pg);
    write!(s, "GET /api/first HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(read_answers(&mut s, 1).starts_with("HTTP/1.1 200"));
    write!(s, "GET /api/second HTTP/1.1\r\n{fields}\r\n").unwrap();
    let answer = read_answers(&mut s, 1);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");

    let targets: Vec<String> = up.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets, ["/api/ok", "/api/first"]);
    assert_eq!(refusals(&pg, "head_too_large"), 1.0);
    assert_eq!(refusals(&pg, "too_many_header_fields"), 2.0);
}

#[test]
fn a_head_not_complete_in_time_is_answered_408_and_an_idle_connection_is_closed() {
    let up = Upstream::start();
    let pg = start_limited(&up, 100);
    // Half a head, then nothing.
    let mut s = connect(&pg);
    write!(s, "GET /api/slow HTTP/1.1\r\nHost: t\r\n").unwrap();
    let started = std::time::Instant::now();
    let answer = read_answers(&mut s, 1);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // A connection that never sends a byte gets the same.
    let mut s = connect(&pg);
    let answer = read_answers(&mut s, 1);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");

    // A head trickled in a byte at a time, each within any per-read timeout, is still cut.
    let mut s = connect(&pg);
    let mut cut = false;
    for b in b"GET /api/trickle HTTP/1.1\r\nHost: t\r\nX-Slow: "
        .iter()
        .cycle()
        .take(200)
    {
        if s.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = read_answers(&mut s, 1);
    assert!(cut || answer.starts_with("HTTP/1.1 408 "), "{answer:?}");

    // Between requests a kept-alive connection may idle up to keepalive_timeout, then it is
    // closed without an answer.
    let mut s = connect(&pg);
    write!(s, "GET /api/a HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(read_answers(&mut s, 1).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(400));
    write!(s, "GET /api/b HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(
        read_answers(&mut s, 1).starts_with("HTTP/1.1 200"),
        "idle for less than 1 s: kept"
    );
    let idle_from = std::time::Instant::now();
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer: {:?}", String::from_utf8_lossy(&rest));
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(5),
        "{idle:?}"
    );

    let targets: Vec<String> = up.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets, ["/api/a", "/api/b"]);
    assert!(refusals(&pg, "head_timeout") >= 2.0);
}

#[test]
fn connections_over_max_connections_are_answered_503_until_one_closes() {
    let up = Upstream::start();
    let pg = start_limited(&up, 2);
    let open = |s: &mut TcpStream, path: &str| {
        write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        read_answers(s, 1)
    };
    // The harness's own readiness probe connected once; wait until payguard saw it close.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pg.metric("payguard_connections_open") > 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the readiness probe's connection never closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut a = connect(&pg);
    let mut b = connect(&pg);
    assert!(open(&mut a, "/api/a").starts_with("HTTP/1.1 200"));
    assert!(open(&mut b, "/api/b").starts_with("HTTP/1.1 200"));
    assert_eq!(pg.metric("payguard_connections_open"), 2.0);

    let mut c = connect(&pg);
    let answer = read_answers(&mut c, 1);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer:?}");
    assert_eq!(refusals(&pg, "max_connections"), 1.0);

    drop(a);
    let mut d = connect(&pg);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = open(&mut d, "/api/d");
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no slot after a close: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
        d = connect(&pg);
    }
    let targets: Vec<String> = up.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets, ["/api/a", "/api/b", "/api/d"]);
}
