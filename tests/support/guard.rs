//! Shared pieces of the guard integration tests: payguard with `guard` routes in front of a
//! recording upstream, on the embedded store or a real Redis, and a PG-HMAC-SHA256 client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use payguard::canonical::path::{canonicalize, PathPolicy};
use payguard::guard::signature::{new_nonce, sign_request};

use super::payguard::Payguard;
use super::redis_server::RedisServer;
use super::upstream::Upstream;

/// Access key id every test signs with.
pub const KEY_ID: &str = "shop-app";
/// Its current secret.
pub const SECRET: &str = "pg-test-secret-0001";
/// Its second (older) secret, still accepted during a rotation.
pub const OLD_SECRET: &str = "pg-test-secret-old-0002";
/// Signature window of [`signature_section`].
pub const WINDOW_SECS: i64 = 60;
/// Body cap of [`signature_section`].
pub const MAX_BODY: usize = 256 * 1024;
/// Redis command timeout in the tests: long enough for 200 concurrent requests on 2 cores,
/// short enough that an outage is answered well within a second.
pub const REDIS_COMMAND_TIMEOUT: &str = "250ms";

/// Which store backs the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The in-process store.
    Embedded,
    /// A Redis shared by the test binary (each payguard gets its own key prefix).
    Redis,
    /// A Redis of this test's own (to stop it or read its command statistics).
    OwnRedis,
}

/// `guard.signature` with one key holding two secrets (rotation), a 60 s window and a 256 KiB cap,
/// indented for the `guard:` section.
pub fn signature_section() -> String {
    format!(
        "  signature:\n    window: {WINDOW_SECS}s\n    max_body_bytes: {MAX_BODY}\n    keys:\n      - id: {KEY_ID}\n        secrets: [\"{SECRET}\", \"{OLD_SECRET}\"]\n"
    )
}

/// One Redis for the whole test binary (under nextest every test is its own process, so this is
/// one per test that asks for it); its process dies with the test process.
fn shared_redis() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

fn unique_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("t{}-{}:", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A running payguard (guard routes `orders` = `/v1/orders`, `api` = `/v1`, everything else 404)
/// with its upstream and, for [`StoreKind::OwnRedis`], its Redis.
pub struct GuardEnv {
    pub pg: Payguard,
    pub up: Upstream,
    pub redis: Option<RedisServer>,
    pub client: reqwest::blocking::Client,
    store_section: String,
}

impl GuardEnv {
    /// Starts payguard with `guard` (the text of the `guard:` section, starting with `guard:`).
    pub fn start(store: StoreKind, guard: &str) -> Self {
        Self::start_on(store, "127.0.0.1", guard)
    }

    /// Like [`start`](Self::start), with the proxy listening on `host` (`[::1]` for IPv6 clients).
    pub fn start_on(store: StoreKind, host: &str, guard: &str) -> Self {
        let (redis, url) = match store {
            StoreKind::Embedded => (None, None),
            StoreKind::Redis => (None, Some(shared_redis().url())),
            StoreKind::OwnRedis => {
                let r = RedisServer::start();
                let url = r.url();
                (Some(r), Some(url))
            }
        };
        let store_section = match url {
            None => String::new(),
            Some(url) => redis_store_section(&format!("url: {url}")),
        };
        let mut env = Self::with_store_section(host, store_section, guard);
        env.redis = redis;
        env
    }

    /// Starts payguard with `guard` on a Redis of the test's own (e.g. one with persistence),
    /// kept in [`GuardEnv::redis`].
    pub fn on_redis(redis: RedisServer, guard: &str) -> Self {
        let store_section = redis_store_section(&format!("url: {}", redis.url()));
        let mut env = Self::with_store_section("127.0.0.1", store_section, guard);
        env.redis = Some(redis);
        env
    }

    /// Starts payguard with `guard` on a Redis Cluster with these seed nodes.
    pub fn on_cluster(nodes: &[String], guard: &str) -> Self {
        let list = nodes.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
        Self::with_store_section(
            "127.0.0.1",
            redis_store_section(&format!("cluster_nodes: [{list}]")),
            guard,
        )
    }

    /// Starts payguard with `guard` on the master the sentinels at `nodes` name `master_name`.
    pub fn on_sentinel(nodes: &[String], master_name: &str, guard: &str) -> Self {
        let list = nodes.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
        let location = format!("sentinel: {{nodes: [{list}], master_name: {master_name}}}");
        Self::with_store_section("127.0.0.1", redis_store_section(&location), guard)
    }

    fn with_store_section(host: &str, store_section: String, guard: &str) -> Self {
        let up = Upstream::start();
        let pg = Payguard::start_on(host, &config_body(&up, &store_section, guard));
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Self {
            pg,
            up,
            redis: None,
            client,
            store_section,
        }
    }

    /// Replaces the `guard:` section (write + rename, then SIGHUP) and waits until it applied.
    pub fn reload(&self, guard: &str) {
        let metric = "payguard_config_reloads_total{result=\"success\"}";
        let before = self.pg.metric(metric);
        self.pg.write_config(&config_body(&self.up, &self.store_section, guard));
        self.pg.sighup();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pg.metric(metric) <= before {
            assert!(Instant::now() < deadline, "reload not applied:\n{}", self.pg.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `req` to the proxy.
    pub fn send(&self, req: &Req) -> reqwest::blocking::Response {
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).expect("method");
        let mut b = self.client.request(method, self.pg.url(&req.target));
        for (k, v) in &req.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        if !req.body.is_empty() {
            b = b.body(req.body.clone());
        }
        b.send().expect("send to payguard")
    }

    /// Sends `req` and returns (status, problem `code` or "" for non-problem answers).
    pub fn status_and_code(&self, req: &Req) -> (u16, String) {
        problem_code(self.send(req))
    }

    /// Metric sample `name{labels}`.
    pub fn metric(&self, name_and_labels: &str) -> f64 {
        self.pg.metric(name_and_labels)
    }
}

/// (status, problem `code`) of a response ("" when it is not problem+json).
pub fn problem_code(resp: reqwest::blocking::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let is_problem = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/problem+json");
    let code = if is_problem {
        resp.json::<serde_json::Value>()
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_string))
            .unwrap_or_default()
    } else {
        String::new()
    };
    (status, code)
}

/// The `store:` section for Redis at `location` (`url: ...` or `cluster_nodes: [...]`), with a
/// key prefix of its own.
fn redis_store_section(location: &str) -> String {
    format!(
        "store:\n  backend: redis\n  redis:\n    {location}\n    key_prefix: \"{}\"\n    command_timeout: {REDIS_COMMAND_TIMEOUT}\n    connect_timeout: 250ms\n",
        unique_prefix()
    )
}

fn config_body(up: &Upstream, store_section: &str, guard: &str) -> String {
    format!(
        "upstream:\n  address: {}\n{store_section}{guard}\nroutes:\n  - name: orders\n    match: {{path_prefix: /v1/orders}}\n    policy: guard\n  - name: api\n    match: {{path_prefix: /v1}}\n    policy: guard\ndefault_action: not_found\n",
        up.addr
    )
}

/// A request to send through the proxy.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    /// Path and query exactly as on the request line.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    /// An unsigned request.
    pub fn new(method: &str, target: &str, body: &[u8]) -> Self {
        Self {
            method: method.to_string(),
            target: target.to_string(),
            headers: Vec::new(),
            body: body.to_vec(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Signs with [`SECRET`], the current time and a fresh nonce.
    pub fn signed(self) -> Self {
        self.signed_with(SECRET, now(), &new_nonce())
    }

    /// Signs with the given secret, timestamp and nonce (the four `X-PG-*` headers are replaced),
    /// over the canonical path as a client library computes it (the path as sent when payguard
    /// would refuse it, so refusals can be tested with a signature that is otherwise valid).
    pub fn signed_with(mut self, secret: &str, timestamp: i64, nonce: &str) -> Self {
        let (path, query) = match self.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.target.as_str(), None),
        };
        let canonical = canonicalize(path.as_bytes(), &PathPolicy::default());
        let path = canonical.as_ref().map_or(path, |c| c.as_str());
        let ts = timestamp.to_string();
        let sig =
            sign_request(secret.as_bytes(), &self.method, path, query, &ts, nonce, &self.body).unwrap_or_else(|_| {
                sign_request(secret.as_bytes(), &self.method, path, None, &ts, nonce, &self.body).expect("no query")
            });
        self.headers
            .retain(|(k, _)| !k.to_ascii_lowercase().starts_with("x-pg-"));
        for (k, v) in [
            ("X-PG-Key", KEY_ID),
            ("X-PG-Timestamp", ts.as_str()),
            ("X-PG-Nonce", nonce),
            ("X-PG-Signature", sig.as_str()),
        ] {
            self.headers.push((k.to_string(), v.to_string()));
        }
        self
    }

    /// The value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Replaces the value of header `name`.
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.header(name, value)
    }

    /// Removes header `name`.
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }
}

/// Unix seconds now (the real clock, as payguard's).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `#[test]` functions `embedded::NAME` and `redis::NAME` calling `NAME(StoreKind)` for each
/// listed scenario, so both stores share one body.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[test] fn $name() { super::$name($crate::support::guard::StoreKind::Embedded) } )*
        }
        mod redis {
            $( #[test] fn $name() { super::$name($crate::support::guard::StoreKind::Redis) } )*
        }
    };
}
