//! Guarded answers stream: after payguard checked a signed request (headers and body) and sent
//! it to the backend itself, the backend's answer flows back chunk by chunk with back-pressure,
//! so its size costs no memory and its duration no timeout; only a backend that stops sending
//! for longer than `upstream.read_timeout` is cut off.

mod support;

use std::io::Read;
use std::time::{Duration, Instant};

use payguard::guard::signature::{new_nonce, sign_request};
use support::payguard::Payguard;
use support::upstream::{StreamAnswer, Upstream};

const KEY_ID: &str = "shop-app";
const SECRET: &str = "streaming-secret-0001";
const MIB: usize = 1024 * 1024;

fn start(upstream_extra: &str) -> (Payguard, Upstream) {
    let up = Upstream::start();
    let pg = Payguard::start(&format!(
        "upstream:\n  address: {}\n{upstream_extra}guard:\n  signature:\n    keys:\n      - id: {KEY_ID}\n        secrets: [\"{SECRET}\"]\n\
         routes:\n  - {{name: files, match: {{path_prefix: /v1}}, policy: guard}}\ndefault_action: not_found\n",
        up.addr
    ));
    (pg, up)
}

/// A signed GET through the guard route (the body check applies: a signature is configured).
fn signed_get(pg: &Payguard, path: &str) -> reqwest::blocking::Response {
    let (ts, nonce) = (jiff::Timestamp::now().as_second().to_string(), new_nonce());
    let sig = sign_request(SECRET.as_bytes(), "GET", path, None, &ts, &nonce, b"").unwrap();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
        .get(pg.url(path))
        .header("x-pg-key", KEY_ID)
        .header("x-pg-timestamp", ts)
        .header("x-pg-nonce", nonce)
        .header("x-pg-signature", sig)
        .send()
        .expect("send")
}

/// Reads `resp` to its end in small pieces, keeping nothing; returns the byte count.
fn drain(mut resp: reqwest::blocking::Response) -> std::io::Result<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match resp.read(&mut buf)? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

#[test]
fn a_200_mib_answer_streams_through_in_bounded_memory() {
    let (pg, up) = start("");
    // Warm up: allocator arenas and connection pools exist before the baseline is taken.
    up.set_stream(Some(StreamAnswer {
        chunk_size: 64 * 1024,
        chunks: Some(16),
        gap: Duration::ZERO,
        content_length: true,
    }));
    assert_eq!(drain(signed_get(&pg, "/v1/warmup")).unwrap(), MIB);
    up.set_stream(Some(StreamAnswer {
        chunk_size: 64 * 1024,
        chunks: Some(200 * 16),
        gap: Duration::ZERO,
        content_length: true,
    }));
    let baseline = pg.rss_bytes();
    let resp = signed_get(&pg, "/v1/big");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], (200 * MIB).to_string());
    assert_eq!(resp.headers()["x-upstream"], "streaming");
    assert!(resp.headers().contains_key("x-request-id"));
    // Sample payguard's memory while the answer flows.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak = {
        let stop = stop.clone();
        let pid = pg.pid();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmRSS:"))
                            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    })
                    .unwrap_or(0)
                    * 1024;
                peak = peak.max(rss);
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    assert_eq!(drain(resp).unwrap(), 200 * MIB);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = peak.join().unwrap().max(pg.rss_bytes());
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 16 * MIB as u64,
        "payguard grew by {} KiB while streaming 200 MiB",
        growth / 1024
    );
}

#[test]
fn an_endless_answer_flows_until_the_client_leaves() {
    let (pg, up) = start("");
    up.set_stream(Some(StreamAnswer {
        chunk_size: 16 * 1024,
        chunks: None,
        gap: Duration::ZERO,
        content_length: false,
    }));
    let mut resp = signed_get(&pg, "/v1/feed");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0;
    while read < 20 * MIB {
        let n = resp.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended after {read} bytes");
        read += n;
    }
    drop(resp);
    // The client left: payguard stops reading, the backend's stream is dropped, and what the
    // backend produced stays bounded by the buffers in between.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.streams_cancelled() == 0 {
        assert!(
            Instant::now() < deadline,
            "the backend kept streaming after the client left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let produced = up.streamed_bytes();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(up.streamed_bytes(), produced, "nothing more is produced");
    assert!(
        produced < (read + 16 * MIB) as u64,
        "{produced} bytes produced for {read} read"
    );
    // The proxy is fine afterwards.
    up.set_stream(None);
    assert_eq!(signed_get(&pg, "/v1/next").status(), 200);
}

#[test]
fn a_slow_answer_within_the_idle_timeout_completes() {
    // 20 chunks 100 ms apart: 2 s in all, far beyond the 300 ms per-read timeout, but never idle
    // that long.
    let (pg, up) = start("  read_timeout: 300ms\n");
    up.set_stream(Some(StreamAnswer {
        chunk_size: 1000,
        chunks: Some(20),
        gap: Duration::from_millis(100),
        content_length: true,
    }));
    let started = Instant::now();
    let resp = signed_get(&pg, "/v1/slow");
    assert_eq!(resp.status(), 200);
    assert_eq!(drain(resp).unwrap(), 20_000);
    assert!(started.elapsed() >= Duration::from_millis(1900));
}

#[test]
fn a_backend_that_stops_sending_is_cut_off_after_the_idle_timeout() {
    let (pg, up) = start("  read_timeout: 300ms\n");
    up.set_stream(Some(StreamAnswer {
        chunk_size: 1000,
        chunks: Some(3),
        gap: Duration::from_secs(5),
        content_length: true,
    }));
    let resp = signed_get(&pg, "/v1/stalls");
    assert_eq!(resp.status(), 200, "the header arrived in time");
    let err = drain(resp).expect_err("the body is cut short");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::Other
        ),
        "{err:?}"
    );
    let outcome = "payguard_requests_total{outcome=\"upstream_timeout\",route=\"files\"}";
    assert_eq!(pg.wait_metric(outcome, 1.0), 1.0, "{}", pg.logs());

    // A backend that does not answer at all within the timeout is a 504 problem.
    up.set_stream(None);
    up.set_behavior(support::upstream::Behavior {
        delay: Duration::from_secs(2),
        ..Default::default()
    });
    let resp = signed_get(&pg, "/v1/silent");
    assert_eq!(resp.status(), 504);
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["code"], "UPSTREAM_TIMEOUT");
}

#[test]
fn a_backend_that_is_down_is_a_502_problem() {
    let (pg, up) = start("  connect_timeout: 200ms\n");
    drop(up);
    let resp = signed_get(&pg, "/v1/anything");
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["code"], "UPSTREAM_UNAVAILABLE");
    let outcome = "payguard_requests_total{outcome=\"upstream_error\",route=\"files\"}";
    assert_eq!(pg.wait_metric(outcome, 1.0), 1.0);
}

/// Writes a signed POST with a chunked body (and optionally `Expect: 100-continue`) on a raw
/// socket; returns the status line of the final answer.
fn raw_signed_post(pg: &Payguard, path: &str, body: &[u8], chunked: bool, expect: bool) -> String {
    use std::io::Write;
    let (ts, nonce) = (jiff::Timestamp::now().as_second().to_string(), new_nonce());
    let sig = sign_request(SECRET.as_bytes(), "POST", path, None, &ts, &nonce, body).unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", pg.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\nx-pg-key: {KEY_ID}\r\nx-pg-timestamp: {ts}\r\nx-pg-nonce: {nonce}\r\nx-pg-signature: {sig}\r\n{framing}\r\n{}\r\n",
        if expect { "Expect: 100-continue\r\n" } else { "" }
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    if expect {
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap();
        answer.extend_from_slice(&buf[..n]);
        assert!(
            answer.starts_with(b"HTTP/1.1 100"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    if chunked {
        for piece in body.chunks(7000) {
            s.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).unwrap();
            s.write_all(piece).unwrap();
            s.write_all(b"\r\n").unwrap();
        }
        s.write_all(b"0\r\n\r\n").unwrap();
    } else {
        s.write_all(body).unwrap();
    }
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest).into_owned();
    let status = text
        .lines()
        .find(|l| l.starts_with("HTTP/1.1 ") && !l.starts_with("HTTP/1.1 100"));
    status.unwrap_or_default().to_string()
}

#[test]
fn verified_bodies_reach_the_backend_exact_and_framed_by_their_length() {
    let (pg, up) = start("");
    // Either side of Pingora's 64 KiB retry buffer: below it Pingora sends the verified bytes,
    // above it payguard's own client does; the backend cannot tell.
    for (len, chunked, expect) in [
        (0, false, false),
        (1_000, false, false),
        (1_000, true, false),
        (20_000, true, true),
        (65_535, false, true),
        (65_536, true, false),
        (65_537, false, false),
        (200_000, true, true),
    ] {
        let body: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        up.clear();
        let status = raw_signed_post(&pg, "/v1/upload", &body, chunked, expect);
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "{len} bytes, chunked {chunked}: {status}"
        );
        let got = up.requests();
        assert_eq!(got.len(), 1, "{len} bytes");
        assert!(got[0].body == body, "{len} bytes, chunked {chunked}: body differs");
        assert_eq!(
            got[0].header("content-length"),
            Some(len.to_string().as_str()),
            "{len} bytes"
        );
        assert_eq!(got[0].header("transfer-encoding"), None, "{len} bytes");
        assert_eq!(got[0].header("expect"), None, "{len} bytes");
    }
}
