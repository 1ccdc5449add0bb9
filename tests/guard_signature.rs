//! Client signatures through the proxy (docs/client-signing.md): a verified
//! request reaches the backend byte-identical; every failure has its status and stable code and
//! nothing reaches the backend; nonces are claimed once and only after the signature verified;
//! the nonce check fails closed; the Python client and `payguard sign --curl` interoperate.

mod support;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use payguard::guard::signature::new_nonce;
use support::guard::{now, signature_section, GuardEnv, Req, StoreKind, KEY_ID, OLD_SECRET, SECRET};

fn signed_env(store: StoreKind) -> GuardEnv {
    GuardEnv::start(store, &format!("guard:\n{}", signature_section()))
}

/// A body of `len` bytes covering every byte value.
fn patterned_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Asserts the request was rejected with `status`/`code` and nothing reached the backend.
fn assert_rejected(env: &GuardEnv, req: &Req, status: u16, code: &str, what: &str) {
    let before = env.up.requests().len();
    assert_eq!(env.status_and_code(req), (status, code.to_string()), "{what}");
    assert_eq!(env.up.requests().len(), before, "{what}: reached the upstream");
}

fn signed_request_reaches_upstream_byte_identical_with_content_length(store: StoreKind) {
    let env = signed_env(store);
    let body = br#"{"sku":"A-1","qty":2}"#;
    let req = Req::new("POST", "/v1/orders?b=%2B&a=1&b=x%20y", body)
        .header("content-type", "application/json")
        .header("x-custom", "kept as is")
        .header("host", "shop.example")
        .signed();
    let resp = env.send(&req);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "recording");
    assert_eq!(resp.text().unwrap(), "upstream ok");

    let got = env.up.requests();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    // The canonical query the signature covers, not the order it was sent in.
    assert_eq!(r.target, "/v1/orders?a=1&b=%2B&b=x%20y");
    assert_eq!(r.body, body);
    assert_eq!(r.header("content-length"), Some(body.len().to_string().as_str()));
    assert_eq!(r.header("x-custom"), Some("kept as is"));
    assert_eq!(
        r.header_values("host"),
        vec!["shop.example"],
        "the client's Host, as on a pass route"
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    for name in ["X-PG-Key", "X-PG-Timestamp", "X-PG-Nonce", "X-PG-Signature"] {
        assert_eq!(
            r.header_values(&name.to_ascii_lowercase()),
            vec![req.get(name).unwrap()],
            "{name} forwarded once, unchanged"
        );
    }

    // A GET without a body signs the empty string's hash.
    let get = Req::new("GET", "/v1/items/%E4%BD%A0?q=a+b", b"").signed();
    assert_eq!(env.send(&get).status(), 200);
    let r = env.up.requests().pop().unwrap();
    assert_eq!(
        (r.method.as_str(), r.target.as_str()),
        ("GET", "/v1/items/%E4%BD%A0?q=a%20b"),
        "`+` is a space in the signed and in the forwarded query"
    );
    assert!(r.body.is_empty());
}

fn large_and_chunked_bodies_arrive_byte_identical_with_content_length(store: StoreKind) {
    let env = signed_env(store);
    // 200 KiB: above Pingora's 64 KiB retry buffer, below the 256 KiB cap.
    let big = patterned_body(200 * 1024);
    let req = Req::new("PUT", "/v1/blobs/7", &big).signed();
    assert_eq!(env.send(&req).status(), 200);

    // Chunked: a reader of unknown length makes reqwest send Transfer-Encoding: chunked.
    let chunked = patterned_body(150_000);
    let req = Req::new("POST", "/v1/blobs", &chunked).signed();
    let mut b = env.client.post(env.pg.url("/v1/blobs"));
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let reader = std::io::Cursor::new(chunked.clone()).take(chunked.len() as u64);
    let resp = b.body(reqwest::blocking::Body::new(reader)).send().unwrap();
    assert_eq!(resp.status(), 200);

    let got = env.up.requests();
    assert_eq!(got.len(), 2);
    assert!(got[0].body == big, "200 KiB body differs");
    assert_eq!(got[0].header("content-length"), Some("204800"));
    assert!(got[1].body == chunked, "chunked body differs");
    assert_eq!(got[1].header("content-length"), Some("150000"));
    assert_eq!(
        got[1].header("transfer-encoding"),
        None,
        "re-framed with a Content-Length"
    );
}

fn replayed_nonce_is_409_and_not_forwarded(store: StoreKind) {
    let env = signed_env(store);
    let req = Req::new("POST", "/v1/orders", b"{}").signed();
    assert_eq!(env.send(&req).status(), 200);
    assert_rejected(&env, &req, 409, "NONCE_REPLAYED", "same request again");
    // A different request reusing the nonce is a replay too.
    let other = Req::new("GET", "/v1/items", b"").signed_with(SECRET, now(), req.get("X-PG-Nonce").unwrap());
    assert_rejected(&env, &other, 409, "NONCE_REPLAYED", "nonce reused on another request");
    assert_eq!(env.up.requests().len(), 1);
}

fn forged_request_does_not_burn_the_nonce(store: StoreKind) {
    let env = signed_env(store);
    let nonce = new_nonce();
    let genuine = Req::new("POST", "/v1/orders", br#"{"amount":"10.00"}"#).signed_with(SECRET, now(), &nonce);
    // The attacker saw the nonce but not the secret.
    let forged = Req::new("POST", "/v1/orders", br#"{"amount":"99999.00"}"#).signed_with("guessed", now(), &nonce);
    assert_rejected(&env, &forged, 401, "SIGNATURE_MISMATCH", "forged");
    assert_rejected(&env, &forged, 401, "SIGNATURE_MISMATCH", "forged again");
    assert_eq!(
        env.send(&genuine).status(),
        200,
        "genuine request with the same nonce passes"
    );
    assert_eq!(env.up.requests()[0].body, br#"{"amount":"10.00"}"#);
}

fn second_secret_of_a_rotated_key_is_accepted(store: StoreKind) {
    let env = signed_env(store);
    let old = Req::new("POST", "/v1/orders", b"{}").signed_with(OLD_SECRET, now(), &new_nonce());
    let new = Req::new("POST", "/v1/orders", b"{}").signed_with(SECRET, now(), &new_nonce());
    assert_eq!(env.send(&old).status(), 200);
    assert_eq!(env.send(&new).status(), 200);
    assert_eq!(env.up.requests().len(), 2);
}

on_both_stores!(
    signed_request_reaches_upstream_byte_identical_with_content_length,
    large_and_chunked_bodies_arrive_byte_identical_with_content_length,
    replayed_nonce_is_409_and_not_forwarded,
    forged_request_does_not_burn_the_nonce,
    second_secret_of_a_rotated_key_is_accepted,
);

#[test]
fn missing_or_duplicate_signature_header_is_missing_credentials() {
    let env = signed_env(StoreKind::Embedded);
    let good = Req::new("POST", "/v1/orders", b"{}").signed();
    for name in ["X-PG-Key", "X-PG-Timestamp", "X-PG-Nonce", "X-PG-Signature"] {
        let req = good.clone().without(name);
        assert_rejected(&env, &req, 401, "MISSING_CREDENTIALS", &format!("without {name}"));
        let value = good.get(name).unwrap().to_string();
        let dup = good.clone().header(name, &value);
        assert_rejected(&env, &dup, 401, "MISSING_CREDENTIALS", &format!("{name} twice"));
    }
    let unsigned = Req::new("GET", "/v1/items", b"");
    assert_rejected(&env, &unsigned, 401, "MISSING_CREDENTIALS", "unsigned");
    let bad_nonce = Req::new("GET", "/v1/items", b"").signed_with(SECRET, now(), "short");
    assert_rejected(&env, &bad_nonce, 401, "MISSING_CREDENTIALS", "nonce syntax");
    for (reason, n) in [
        ("missing_header", 5.0),
        ("duplicate_header", 4.0),
        ("malformed_nonce", 1.0),
    ] {
        let name = format!("payguard_signature_failures_total{{reason=\"{reason}\"}}");
        assert_eq!(env.metric(&name), n, "{name}");
    }
}

#[test]
fn unknown_access_key_is_rejected() {
    let env = signed_env(StoreKind::Embedded);
    let req = Req::new("GET", "/v1/items", b"").signed().set("X-PG-Key", "other-app");
    assert_rejected(&env, &req, 401, "UNKNOWN_KEY", "unknown key");
}

#[test]
fn timestamp_just_outside_the_window_is_rejected_and_just_inside_passes() {
    let env = signed_env(StoreKind::Embedded);
    let w = support::guard::WINDOW_SECS;
    for offset in [-(w + 5), w + 5] {
        let req = Req::new("GET", "/v1/items", b"").signed_with(SECRET, now() + offset, &new_nonce());
        assert_rejected(
            &env,
            &req,
            401,
            "TIMESTAMP_OUT_OF_WINDOW",
            &format!("offset {offset} s"),
        );
    }
    for offset in [-(w - 5), w - 5] {
        let req = Req::new("GET", "/v1/items", b"").signed_with(SECRET, now() + offset, &new_nonce());
        assert_eq!(env.send(&req).status(), 200, "offset {offset} s");
    }
    let garbage = Req::new("GET", "/v1/items", b"")
        .signed()
        .set("X-PG-Timestamp", "+1700000000");
    assert_rejected(&env, &garbage, 401, "TIMESTAMP_OUT_OF_WINDOW", "signed timestamp");
}

#[test]
fn tampering_with_any_signed_part_or_a_wrong_secret_is_signature_mismatch() {
    let env = signed_env(StoreKind::Embedded);
    let good = || Req::new("POST", "/v1/orders?a=1&b=2", br#"{"amount":"10.00"}"#).signed();
    let cases: Vec<(&str, Req)> = vec![
        ("method", {
            let mut r = good();
            r.method = "PUT".into();
            r
        }),
        ("path", {
            let mut r = good();
            r.target = "/v1/orders/2?a=1&b=2".into();
            r
        }),
        ("query value", {
            let mut r = good();
            r.target = "/v1/orders?a=1&b=3".into();
            r
        }),
        ("added query part", {
            let mut r = good();
            r.target = "/v1/orders?a=1&b=2&c=".into();
            r
        }),
        ("body", {
            let mut r = good();
            r.body = br#"{"amount":"99.00"}"#.to_vec();
            r
        }),
        ("body dropped", {
            let mut r = good();
            r.body.clear();
            r
        }),
        ("timestamp", {
            let r = good();
            let ts = r.get("X-PG-Timestamp").unwrap().parse::<i64>().unwrap() + 1;
            r.set("X-PG-Timestamp", &ts.to_string())
        }),
        (
            "wrong secret",
            Req::new("POST", "/v1/orders?a=1&b=2", br#"{"amount":"10.00"}"#).signed_with(
                "not-the-secret",
                now(),
                &new_nonce(),
            ),
        ),
    ];
    for (what, req) in &cases {
        assert_rejected(&env, req, 401, "SIGNATURE_MISMATCH", what);
    }
    // A query no decoder reads one way is refused before the signature is checked.
    let mut undecodable = good();
    undecodable.target = "/v1/orders?a=%zz".into();
    assert_rejected(&env, &undecodable, 400, "NON_CANONICAL_QUERY", "undecodable query");
    // Another spelling of the same canonical request is the same request: it verifies, and the
    // backend receives the canonical form the signature covers.
    let mut respelled = good();
    respelled.target = "//v1/./%6Frders?b=2&a=%31".into();
    assert_eq!(env.send(&respelled).status(), 200);
    assert_eq!(env.up.requests().last().unwrap().target, "/v1/orders?a=1&b=2");
    // The problem body never carries the expected signature or the secret.
    let resp = env.send(&cases[0].1);
    let text = resp.text().unwrap();
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains("SIGNATURE_MISMATCH"));
    let expected = good().set("X-PG-Nonce", cases[0].1.get("X-PG-Nonce").unwrap());
    assert!(!text.contains(expected.get("X-PG-Signature").unwrap()), "{text}");
}

#[test]
fn body_over_the_cap_is_413_body_too_large() {
    let env = signed_env(StoreKind::Embedded);
    let body = patterned_body(support::guard::MAX_BODY + 1);
    let req = Req::new("POST", "/v1/blobs", &body).signed();
    assert_rejected(&env, &req, 413, "BODY_TOO_LARGE", "cap + 1 bytes");
    let at_cap = Req::new("POST", "/v1/blobs", &body[..support::guard::MAX_BODY]).signed();
    assert_eq!(env.send(&at_cap).status(), 200, "exactly the cap passes");
}

#[test]
fn nonce_check_fails_closed_with_503_when_redis_is_down() {
    let mut env = signed_env(StoreKind::OwnRedis);
    assert_eq!(env.send(&Req::new("GET", "/v1/items", b"").signed()).status(), 200);
    env.redis.as_mut().unwrap().stop();
    for _ in 0..3 {
        let started = Instant::now();
        let req = Req::new("POST", "/v1/orders", b"{}").signed();
        assert_rejected(&env, &req, 503, "STORE_UNAVAILABLE", "redis down");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(env.up.requests().len(), 1);
}

#[test]
fn python_client_signs_requests_payguard_accepts() {
    let env = signed_env(StoreKind::Embedded);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/sign_request.py");
    let run = |secret: &str, extra: &[&str]| {
        let out = Command::new("python3")
            .arg(script)
            .args(["--key", KEY_ID, "--secret-env", "PG_TEST_SECRET", "--method", "POST"])
            .args(["--data", r#"{"sku":"A-1","qty":2}"#])
            .args(extra)
            .arg(env.pg.url("/v1/orders/%E4%BD%A0?b=%2b&a=1&b=x%20y&flag"))
            .env("PG_TEST_SECRET", secret)
            .output()
            .expect("run python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ok = run(SECRET, &[]);
    assert!(ok.starts_with("200"), "{ok}");
    let got = env.up.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, "/v1/orders/%E4%BD%A0?a=1&b=%2B&b=x%20y&flag=");
    assert_eq!(got[0].body, br#"{"sku":"A-1","qty":2}"#);

    let wrong = run("not-the-secret", &[]);
    assert!(wrong.starts_with("401"), "{wrong}");
    assert!(wrong.contains("SIGNATURE_MISMATCH"), "{wrong}");
    let nonce = "py-replay-0123456789";
    assert!(run(SECRET, &["--nonce", nonce]).starts_with("200"));
    let replay = run(SECRET, &["--nonce", nonce]);
    assert!(replay.starts_with("409"), "{replay}");
    assert_eq!(env.up.requests().len(), 2);
}

#[test]
fn payguard_sign_curl_command_is_accepted() {
    let env = signed_env(StoreKind::Embedded);
    let base = format!("http://127.0.0.1:{}", env.pg.port);
    let sign = |secret: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
            .args(["sign", "-X", "POST", "--path", "/v1/orders?b=2&a=1", "--key", KEY_ID])
            .args(["--data", r#"{"note":"it's \"quoted\""}"#])
            .args(["--secret", "env:PG_TEST_SECRET", "--curl", &base])
            .env("PG_TEST_SECRET", secret)
            .output()
            .expect("run payguard sign");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(line.starts_with("curl "), "{line}");
        assert!(!line.contains(secret), "the secret never appears: {line}");
        line
    };
    let send = |line: &str| -> (u16, String) {
        let curl_exists = Command::new("curl").arg("--version").output().is_ok();
        assert!(curl_exists, "curl is needed for this test");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{line} -o /dev/stderr -w '%{{http_code}}'"))
            .output()
            .expect("run curl");
        let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        (status, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (status, body) = send(&sign(SECRET));
    assert_eq!(status, 200, "{body}");
    let got = env.up.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, "/v1/orders?a=1&b=2");
    assert_eq!(got[0].body, br#"{"note":"it's \"quoted\""}"#);

    let (status, body) = send(&sign("not-the-secret"));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("SIGNATURE_MISMATCH"), "{body}");
    assert_eq!(env.up.requests().len(), 1);
}

#[test]
fn signed_upload_with_expect_100_continue_is_verified_and_forwarded() {
    let env = signed_env(StoreKind::Embedded);
    let body = patterned_body(100_000);
    let file = env.pg.dir.path().join("upload.bin");
    std::fs::write(&file, &body).unwrap();
    let data = format!("@{}", file.display());
    let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args([
            "sign",
            "-X",
            "PUT",
            "--path",
            "/v1/blobs/9",
            "--key",
            KEY_ID,
            "--data",
            &data,
        ])
        .args([
            "--secret",
            SECRET,
            "--curl",
            &format!("http://127.0.0.1:{}", env.pg.port),
        ])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let started = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{line} -H 'Expect: 100-continue' -o /dev/stderr -w '%{{http_code}}'"
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200", "{stderr}");
    // curl gives up waiting for `100 Continue` after one second and sends the body anyway.
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "curl waited {:?}",
        started.elapsed()
    );
    let got = env.up.requests();
    assert_eq!(got.len(), 1);
    assert!(got[0].body == body, "body differs");

    // A request refused on its headers is answered at once; the body is never invited.
    let started = Instant::now();
    let bad_key = line.replace(&format!("X-PG-Key: {KEY_ID}"), "X-PG-Key: other-app");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{bad_key} -H 'Expect: 100-continue' -o /dev/null -w '%{{http_code}}'"
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "401");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(env.up.requests().len(), 1);
}

#[test]
fn body_of_a_request_refused_on_its_headers_is_never_read_as_a_request() {
    use std::io::Write;
    let env = signed_env(StoreKind::Embedded);
    let smuggled = "GET /v1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut s = std::net::TcpStream::connect(("127.0.0.1", env.pg.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // Unsigned: refused on its headers, before the body is read.
    let first = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    s.write_all(first.as_bytes()).unwrap();
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Whatever payguard does with the connection now (drain or close), the body is no request.
    let _ = s.write_all(b"GET /v1/second HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let mut rest = String::new();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        rest.push_str(&String::from_utf8_lossy(&buf[..n]));
        if rest.matches("HTTP/1.1 ").count() >= 2 {
            break;
        }
    }
    assert!(
        env.up.requests().iter().all(|r| r.target != "/v1/smuggled"),
        "the body reached the upstream as a request"
    );
    assert!(
        rest.matches("HTTP/1.1 ").count() <= 1,
        "one answer at most for one request: {rest}"
    );
}

#[test]
fn head_and_no_content_answers_keep_their_framing_on_verified_requests() {
    let env = signed_env(StoreKind::Embedded);
    let head = env.send(&Req::new("HEAD", "/v1/items/1", b"").signed());
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap().to_string()),
        Some("11".to_string()),
        "HEAD reports the length a GET would have (upstream body is `upstream ok`)"
    );
    env.up.set_behavior(support::upstream::Behavior {
        status: 204,
        body: Vec::new(),
        ..Default::default()
    });
    let resp = env.send(&Req::new("DELETE", "/v1/items/1", b"").signed());
    assert_eq!(resp.status(), 204);
    assert!(
        resp.headers().get("content-length").is_none(),
        "no Content-Length on 204 (RFC 9110 §8.6)"
    );
    // The connection stays usable after both.
    env.up.set_behavior(support::upstream::Behavior::default());
    assert_eq!(
        env.send(&Req::new("GET", "/v1/items/1", b"").signed()).text().unwrap(),
        "upstream ok"
    );
}
