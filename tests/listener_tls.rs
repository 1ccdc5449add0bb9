//! TLS on the proxy listener (`server.tls`): the running payguard binary serves HTTPS with
//! certificates made at test time, in front of the recording upstream.

mod support;

use std::process::Command;
use std::time::Duration;

use support::guard::{problem_code, signature_section, Req};
use support::payguard::{Custom, Payguard};
use support::tls::TestPki;
use support::upstream::Upstream;

/// The `server.tls` lines for `certificate` and `private_key` files of `pki`.
fn tls_lines(pki: &TestPki, certificate: &str, private_key: &str) -> String {
    format!(
        "  tls:\n    certificate: {}\n    private_key: {}\n",
        pki.file_ref(certificate),
        pki.file_ref(private_key)
    )
}

/// `upstream`, a guard route `/v1/orders`, everything else passed; no file watching, so a
/// reload happens only when the test asks for one.
fn body(up: &Upstream) -> String {
    format!(
        "upstream:\n  address: {}\nreload:\n  watch: false\nguard:\n{}routes:\n  - {{name: orders, match: {{path: /v1/orders}}, policy: guard}}\ndefault_action: pass\n",
        up.addr,
        signature_section()
    )
}

fn start_tls(pki: &TestPki, up: &Upstream) -> Payguard {
    let custom = Custom {
        server_extra: tls_lines(pki, "server.pem", "server.key"),
        ..Custom::default()
    };
    Payguard::start_with("127.0.0.1", custom, &body(up))
}

/// A client that trusts only the test CA.
fn https_client(pki: &TestPki) -> reqwest::blocking::Client {
    let ca = std::fs::read(pki.path("ca.pem")).expect("read CA");
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
        .https_only(true)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn https_url(pg: &Payguard, path: &str) -> String {
    format!("https://localhost:{}{path}", pg.port)
}

fn check(config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args(["check", "-c", config.to_str().unwrap()])
        .output()
        .expect("run payguard check")
}

#[test]
fn a_pass_route_answers_over_tls_with_http_1_1_and_the_upstream_sees_the_request() {
    let pki = TestPki::generate();
    let up = Upstream::start();
    let pg = start_tls(&pki, &up);
    let resp = https_client(&pki)
        .get(https_url(&pg, "/shop/cart?id=7"))
        .send()
        .unwrap_or_else(|e| panic!("HTTPS request: {e:?}\n{}", pg.logs()));
    assert_eq!(resp.status(), 200, "{}", pg.logs());
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].target, "/shop/cart?id=7");
    // By IP address too: the certificate names 127.0.0.1.
    let by_ip = https_client(&pki)
        .get(format!("https://127.0.0.1:{}/shop/ip", pg.port))
        .send()
        .expect("HTTPS by IP");
    assert_eq!(by_ip.status(), 200);
    assert_eq!(up.requests().len(), 2);
}

#[test]
fn a_signed_request_on_a_guard_route_works_over_tls() {
    let pki = TestPki::generate();
    let up = Upstream::start();
    let pg = start_tls(&pki, &up);
    let client = https_client(&pki);
    let send = |r: &Req| {
        let mut b = client.post(https_url(&pg, &r.target)).body(r.body.clone());
        for (k, v) in &r.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        problem_code(b.send().expect("send over TLS"))
    };
    let req = Req::new("POST", "/v1/orders", b"{\"user_id\":\"u1\"}").signed();
    assert_eq!(send(&req), (200, String::new()), "{}", pg.logs());
    assert_eq!(send(&req), (409, "NONCE_REPLAYED".to_string()));
    let unsigned = Req::new("POST", "/v1/orders", b"{}");
    assert_eq!(send(&unsigned).0, 401);
    let seen = up.requests();
    assert_eq!(
        seen.len(),
        1,
        "only the first signed request reaches the upstream: {seen:?}"
    );
    assert_eq!(seen[0].body, b"{\"user_id\":\"u1\"}");
}

#[test]
fn plain_http_to_the_tls_port_and_an_untrusting_client_get_no_answer_from_the_upstream() {
    let pki = TestPki::generate();
    let up = Upstream::start();
    let pg = start_tls(&pki, &up);
    let plain = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let result = plain.get(pg.url("/shop/cart")).send();
    assert!(result.is_err(), "plain HTTP got an answer: {result:?}");
    // A client without the test CA refuses the certificate.
    let untrusting = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let result = untrusting.get(https_url(&pg, "/shop/cart")).send();
    assert!(result.is_err(), "an unknown CA was accepted: {result:?}");
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    // The listener still serves a proper client afterwards.
    let ok = https_client(&pki).get(https_url(&pg, "/shop/cart")).send().unwrap();
    assert_eq!(ok.status(), 200);
}

#[test]
fn changing_server_tls_on_reload_is_reported_as_needing_a_restart() {
    let pki = TestPki::generate();
    let up = Upstream::start();
    let pg = start_tls(&pki, &up);
    // Without `server.tls`: the running listener cannot change that without a restart.
    std::fs::write(
        &pg.config_path,
        Payguard::config_text(pg.port, pg.admin_port, &body(&up)),
    )
    .unwrap();
    let r: serde_json::Value = reqwest::blocking::Client::new()
        .post(pg.admin_url("/admin/reload"))
        .bearer_auth("test-admin-token")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["reloaded"], true, "{r}");
    assert!(
        r["needs_restart"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "server.tls")),
        "{r}"
    );
    // Until the restart the listener keeps its TLS.
    let ok = https_client(&pki).get(https_url(&pg, "/shop/after")).send().unwrap();
    assert_eq!(ok.status(), 200);
}

#[test]
fn check_accepts_a_matching_pair_and_shows_tls() {
    let pki = TestPki::generate();
    let up = Upstream::start();
    let path = pki.path("ok.yaml");
    let text = format!(
        "server:\n  listen: 127.0.0.1:8443\n{}{}",
        tls_lines(&pki, "server.pem", "server.key"),
        body(&up)
    );
    std::fs::write(&path, text).unwrap();
    let out = check(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("proxy listener : 127.0.0.1:8443 (2 threads, TLS)"),
        "{stdout}"
    );
}

#[test]
fn check_refuses_a_key_that_does_not_match_the_certificate_naming_the_key_path() {
    let pki = TestPki::generate();
    let up = Upstream::start();
    let path = pki.path("mismatch.yaml");
    // The client certificate's key: a valid P-256 key, but not the server certificate's.
    let text = format!("server:\n{}{}", tls_lines(&pki, "server.pem", "client.key"), body(&up));
    std::fs::write(&path, text).unwrap();
    let out = check(&path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let key_path = pki.path("client.key").display().to_string();
    assert!(stderr.contains("server.tls.private_key:"), "{stderr}");
    assert!(stderr.contains(&key_path), "{stderr}");
    assert!(stderr.contains("does not belong to the certificate"), "{stderr}");
    let key_pem = std::fs::read_to_string(pki.path("client.key")).unwrap();
    let key_body = key_pem.lines().nth(1).expect("a base64 line");
    let printed = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
    assert!(!printed.contains(key_body), "key material printed: {printed}");
    assert!(!printed.contains("PRIVATE KEY-----"), "{printed}");
}

#[test]
fn check_refuses_a_certificate_file_that_holds_only_a_key() {
    let pki = TestPki::generate();
    let up = Upstream::start();
    let path = pki.path("swapped.yaml");
    let text = format!("server:\n{}{}", tls_lines(&pki, "server.key", "server.key"), body(&up));
    std::fs::write(&path, text).unwrap();
    let out = check(&path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.tls.certificate:"), "{stderr}");
    assert!(stderr.contains("no CERTIFICATE block"), "{stderr}");
    assert!(!stderr.contains("PRIVATE KEY-----"), "{stderr}");
}

#[test]
fn payguard_run_refuses_to_start_with_a_mismatched_pair() {
    let pki = TestPki::generate();
    let up = Upstream::start();
    let path = pki.path("run.yaml");
    let text = format!("server:\n{}{}", tls_lines(&pki, "client.pem", "server.key"), body(&up));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args(["run", "-c", path.to_str().unwrap()])
        .output()
        .expect("run payguard");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.tls.private_key"), "{stderr}");
}

#[test]
fn the_schema_describes_server_tls_with_write_only_references() {
    let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
        .arg("schema")
        .output()
        .expect("run payguard schema");
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("schema JSON");
    let tls = &schema["definitions"]["ListenerTlsConfig"];
    assert_eq!(
        tls["required"],
        serde_json::json!(["certificate", "private_key"]),
        "{tls}"
    );
    assert_eq!(tls["additionalProperties"], false);
    for key in ["certificate", "private_key"] {
        assert_eq!(tls["properties"][key]["writeOnly"], true, "{tls}");
    }
    let server_tls = serde_json::to_string(&schema["definitions"]["ServerSection"]["properties"]["tls"]).unwrap();
    assert!(server_tls.contains("#/definitions/ListenerTlsConfig"), "{server_tls}");
}

#[test]
fn a_renewed_certificate_is_reported_as_needing_a_restart_and_the_old_one_keeps_serving() {
    let pki = TestPki::generate();
    let up = Upstream::start();
    let pg = start_tls(&pki, &up);
    // A renewal writes a new pair into the same files (as cert-manager updates its Secret).
    let renewed = TestPki::generate();
    for name in ["server.pem", "server.key"] {
        std::fs::copy(renewed.path(name), pki.path(name)).unwrap();
    }
    let r: serde_json::Value = reqwest::blocking::Client::new()
        .post(pg.admin_url("/admin/reload"))
        .bearer_auth("test-admin-token")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["reloaded"], true, "{r}");
    assert_eq!(r["needs_restart"], serde_json::json!(["server.tls"]), "{r}");
    // Until the restart the listener serves the certificate it started with.
    let ok = https_client(&pki).get(https_url(&pg, "/shop/old")).send().unwrap();
    assert_eq!(ok.status(), 200);
    assert!(https_client(&renewed).get(https_url(&pg, "/shop/new")).send().is_err());
}

/// What `openssl s_client` prints for a handshake offering `alpn`.
fn handshake_offering(pg: &Payguard, alpn: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", pg.port), "-alpn", alpn])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn alpn_selects_http_1_1_and_refuses_a_client_that_offers_only_h2() {
    let pki = TestPki::generate();
    let up = Upstream::start();
    let pg = start_tls(&pki, &up);
    let both = handshake_offering(&pg, "h2,http/1.1");
    assert!(both.contains("ALPN protocol: http/1.1"), "{both}");
    let h2_only = handshake_offering(&pg, "h2");
    assert!(h2_only.contains("no application protocol"), "{h2_only}");
}
