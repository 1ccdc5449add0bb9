//! Redis over TLS (`rediss://`): a real `redis-server` with `--tls-port` and certificates made
//! at test time, reached through the store and through the running payguard binary.

mod support;

use std::time::Duration;

use payguard::config::secret::SecretRef;
use payguard::store::{redis_store, RedisStoreConfig, RedisTlsConfig, Store};
use support::guard::{problem_code, signature_section, Req};
use support::payguard::Payguard;
use support::redis_server::RedisServer;
use support::tls::TestPki;
use support::upstream::Upstream;

/// A Redis answering TLS on its own port (and plain TCP on another, used only by the harness's
/// readiness check and `redis-cli`).
struct TlsRedis {
    server: RedisServer,
    tls_port: u16,
}

impl TlsRedis {
    fn start(pki: &TestPki, require_client_cert: bool) -> Self {
        let tls_port = support::free_port();
        let args = pki.redis_args(tls_port, require_client_cert);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self {
            server: RedisServer::start_with_args(&args),
            tls_port,
        }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }
}

fn tls(pki: &TestPki, ca: &str, client: bool) -> RedisTlsConfig {
    RedisTlsConfig {
        ca: Some(SecretRef::new(pki.file_ref(ca))),
        client_cert: client.then(|| SecretRef::new(pki.file_ref("client.pem"))),
        client_key: client.then(|| SecretRef::new(pki.file_ref("client.key"))),
    }
}

fn config(url: String, tls: Option<RedisTlsConfig>) -> RedisStoreConfig {
    RedisStoreConfig {
        url: Some(url),
        tls,
        command_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        ..RedisStoreConfig::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

#[test]
fn rediss_with_the_custom_ca_and_a_client_certificate_stores_state() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, true);
    let cfg = config(redis.url(), Some(tls(&pki, "ca.pem", true)));
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    runtime().block_on(async {
        let store = redis_store::connect(&cfg).await.expect("TLS connection");
        assert!(store.claim_nonce("tls-n1", Duration::from_secs(60)).await.unwrap());
        assert!(!store.claim_nonce("tls-n1", Duration::from_secs(60)).await.unwrap());
    });
    assert_eq!(redis.server.keys(), ["pg:{n:tls-n1}"]);
}

#[test]
fn a_server_certificate_from_another_ca_is_refused() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, false);
    let cfg = config(redis.url(), Some(tls(&pki, "other-ca.pem", false)));
    let err = runtime().block_on(redis_store::connect(&cfg)).unwrap_err();
    assert!(redis.server.keys().is_empty());
    // The system trust store does not know the test CA either.
    let system_roots = config(redis.url(), None);
    assert!(
        runtime().block_on(redis_store::connect(&system_roots)).is_err(),
        "{err}"
    );
}

#[test]
fn a_server_that_requires_client_certificates_refuses_a_client_without_one() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, true);
    let without = config(redis.url(), Some(tls(&pki, "ca.pem", false)));
    assert!(runtime().block_on(redis_store::connect(&without)).is_err());
    // Plain TCP to the TLS port is no way around it.
    let plain = config(format!("redis://127.0.0.1:{}", redis.tls_port), None);
    assert!(runtime().block_on(redis_store::connect(&plain)).is_err());
}

#[test]
fn tls_settings_are_checked_when_the_config_is_checked() {
    let pki = TestPki::generate();
    let paths = |cfg: &RedisStoreConfig| cfg.validate().into_iter().map(|(p, _)| p).collect::<Vec<_>>();

    let plain_url = config("redis://127.0.0.1:1".into(), Some(tls(&pki, "ca.pem", true)));
    assert_eq!(paths(&plain_url), ["tls"]);

    let mut half = tls(&pki, "ca.pem", true);
    half.client_key = None;
    assert_eq!(
        paths(&config("rediss://127.0.0.1:1".into(), Some(half))),
        ["tls.client_key"]
    );

    let key_as_ca = config("rediss://127.0.0.1:1".into(), Some(tls(&pki, "client.key", false)));
    let issues = key_as_ca.validate();
    assert_eq!(issues[0].0, "tls.ca", "{issues:?}");
    assert!(issues[0].1.contains("no CERTIFICATE block"), "{issues:?}");
    assert!(!issues[0].1.contains("PRIVATE KEY-----"), "the key must not be printed");

    let insecure = config("rediss://127.0.0.1:1/#insecure".into(), None);
    assert_eq!(paths(&insecure), ["url"]);
}

#[test]
fn payguard_keeps_its_nonces_in_redis_over_tls() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, true);
    let up = Upstream::start();
    let body = format!(
        "upstream:\n  address: {}\nstore:\n  backend: redis\n  redis:\n    url: {}\n    command_timeout: 1s\n    tls:\n      ca: {}\n      client_cert: {}\n      client_key: {}\nguard:\n{}routes:\n  - {{name: orders, match: {{path: /v1/orders}}, policy: guard}}\n",
        up.addr,
        redis.url(),
        pki.file_ref("ca.pem"),
        pki.file_ref("client.pem"),
        pki.file_ref("client.key"),
        signature_section()
    );
    let pg = Payguard::start(&body);
    let client = reqwest::blocking::Client::new();
    let ready = || {
        client
            .get(pg.admin_url("/readyz"))
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .is_some_and(|v| v["store_reachable"] == true)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "never connected:\n{}", pg.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let req = Req::new("POST", "/v1/orders", b"{\"user_id\":\"u1\"}").signed();
    let send = |r: &Req| {
        let mut b = client.post(pg.url(&r.target)).body(r.body.clone());
        for (k, v) in &r.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        problem_code(b.send().expect("send"))
    };
    assert_eq!(send(&req), (200, String::new()), "{}", pg.logs());
    assert_eq!(send(&req), (409, "NONCE_REPLAYED".to_string()));
    let nonce = req.get("X-PG-Nonce").unwrap();
    assert!(
        redis.server.keys().iter().any(|k| k.contains(nonce)),
        "nonce stored in the TLS Redis: {:?}",
        redis.server.keys()
    );
    assert_eq!(up.requests().len(), 1);
}
