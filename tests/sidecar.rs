//! payguard as a Kubernetes sidecar: what a platform engineer finds when they run it in a pod.
//! Logs on stdout, start before Redis is up, readiness that does not take the shop out of the
//! Service, probes on their own port, and ConfigMap / Secret updates applied by the file
//! watcher (Kubernetes swaps a `..data` symlink; one update must be one reload).

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::guard::{now, problem_code, signature_section, Req};
use support::payguard::{Custom, Payguard};
use support::redis_server::RedisServer;
use support::upstream::{Behavior, Upstream};

const RELOADS_OK: &str = "payguard_config_reloads_total{result=\"success\"}";

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// (status, JSON body) of a GET.
fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = client().get(url).send().expect("GET");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or_default())
}

fn send(pg: &Payguard, req: &Req) -> (u16, String) {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).expect("method");
    let mut b = client().request(method, pg.url(&req.target)).body(req.body.clone());
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    problem_code(b.send().expect("send"))
}

/// A volume laid out the way the kubelet writes ConfigMap and Secret volumes: the files live in
/// a timestamped directory, `..data` points at it, and each visible name is a symlink through
/// `..data`. An update writes a new directory and renames a fresh `..data` symlink over the old
/// one, one atomic step for all files.
struct KubeVolume {
    dir: PathBuf,
    generation: u32,
}

impl KubeVolume {
    fn create(dir: &Path, files: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(dir).expect("volume dir");
        let mut volume = Self {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        volume.update(files);
        for (name, _) in files {
            symlink(Path::new("..data").join(name), dir.join(name)).expect("file symlink");
        }
        volume
    }

    /// What the kubelet does when the ConfigMap or Secret changes.
    fn update(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let gen_dir = format!("..2026_12_01_00_00_{:02}.{}", self.generation, std::process::id());
        std::fs::create_dir(self.dir.join(&gen_dir)).expect("generation dir");
        for (name, content) in files {
            std::fs::write(self.dir.join(&gen_dir).join(name), content).expect("write file");
        }
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        symlink(&gen_dir, self.dir.join("..data_tmp")).expect("..data_tmp");
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).expect("swap ..data");
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove old generation");
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[test]
fn logs_go_to_stdout_without_colour_codes() {
    let up = Upstream::start();
    let pg = Payguard::start(&format!(
        "upstream: {{address: {}}}\nlog: {{format: text}}\nroutes:\n  - {{name: api, match: {{path_prefix: /}}, policy: pass}}\n",
        up.addr
    ));
    assert_eq!(client().get(pg.url("/x")).send().unwrap().status(), 200);
    wait_until("the access log line", || {
        pg.output("stdout.log").contains("payguard::access")
    });
    let stdout = pg.output("stdout.log");
    assert!(stdout.contains("payguard starting"), "{stdout}");
    assert!(!stdout.contains('\u{1b}'), "ANSI escape codes in a log file:\n{stdout}");
    let stderr = pg.output("stderr.log");
    assert!(!stderr.contains("payguard starting"), "logs on stderr:\n{stderr}");
}

/// A guard route with a signature (its nonce check fails closed), a pass route, nothing else.
fn guard_and_pass(up: &Upstream, redis_port: u16, with_pass: bool) -> String {
    let pass = if with_pass {
        "  - {name: api, match: {path_prefix: /api}, policy: pass}\n"
    } else {
        ""
    };
    format!(
        "upstream:\n  address: {}\nstore:\n  backend: redis\n  redis:\n    url: redis://127.0.0.1:{redis_port}\n    command_timeout: 250ms\n    connect_timeout: 250ms\nguard:\n{}routes:\n  - {{name: orders, match: {{path: /v1/orders}}, policy: guard}}\n{pass}default_action: not_found\n",
        up.addr,
        signature_section()
    )
}

#[test]
fn starts_before_redis_is_up_serves_what_it_can_and_connects_when_redis_comes() {
    let up = Upstream::start();
    let port = support::free_port();
    let pg = Payguard::start(&guard_and_pass(&up, port, true));

    wait_until("the first store check", || {
        pg.output("stdout.log").contains("cannot connect to Redis yet")
    });
    let (status, ready) = get_json(&pg.admin_url("/readyz"));
    assert_eq!(status, 200, "pass routes still serve: {ready}");
    assert_eq!(ready["store_reachable"], false);
    assert_eq!(ready["serving"], serde_json::json!(["api"]));
    assert_eq!(ready["failing_closed"], serde_json::json!(["orders"]));
    assert_eq!(pg.metric("payguard_store_up"), 0.0);
    assert_eq!(client().get(pg.url("/api/catalog")).send().unwrap().status(), 200);
    let order = || Req::new("POST", "/v1/orders", b"{\"user_id\":\"u1\"}").signed();
    assert_eq!(send(&pg, &order()), (503, "STORE_UNAVAILABLE".to_string()));

    let redis = RedisServer::start_on_port(port, &[]);
    wait_until("payguard_store_up 1", || pg.metric("payguard_store_up") == 1.0);
    let (status, ready) = get_json(&pg.admin_url("/readyz"));
    assert_eq!((status, &ready["store_reachable"]), (200, &serde_json::json!(true)));
    assert_eq!(send(&pg, &order()), (200, String::new()), "{}", pg.logs());
    assert!(!redis.keys().is_empty(), "the nonce went to Redis");
    assert!(pg.logged("connected to Redis"), "{}", pg.logs());
}

#[test]
fn unready_only_when_the_store_is_down_and_every_route_fails_closed() {
    let up = Upstream::start();
    let port = support::free_port();
    let pg = Payguard::start(&guard_and_pass(&up, port, false));
    wait_until("readiness to settle", || get_json(&pg.admin_url("/readyz")).0 == 503);
    let (_, ready) = get_json(&pg.admin_url("/readyz"));
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["failing_closed"], serde_json::json!(["orders"]));
    assert!(ready["store_error"].is_string(), "{ready}");
    // Liveness is not readiness: the process is fine and must not be restarted.
    assert_eq!(client().get(pg.admin_url("/healthz")).send().unwrap().status(), 200);

    let _redis = RedisServer::start_on_port(port, &[]);
    wait_until("ready once Redis answers", || {
        get_json(&pg.admin_url("/readyz")).0 == 200
    });
}

#[test]
fn the_probe_port_serves_probes_and_metrics_but_not_the_admin_api() {
    let up = Upstream::start();
    let probe = support::free_port();
    let custom = Custom {
        admin_extra: format!("  probe_listen: 127.0.0.1:{probe}\n"),
        ..Custom::default()
    };
    let pg = Payguard::start_custom(
        "127.0.0.1",
        custom,
        &format!("upstream: {{address: {}}}\n", up.addr),
        |dir, text| {
            let path = dir.join("payguard.yaml");
            std::fs::write(&path, text).expect("write config");
            path
        },
    );
    let at = |path: &str| format!("http://127.0.0.1:{probe}{path}");
    wait_until("the probe listener", || client().get(at("/healthz")).send().is_ok());
    let c = client();
    assert_eq!(c.get(at("/healthz")).send().unwrap().status(), 200);
    let (status, ready) = get_json(&at("/readyz"));
    assert_eq!((status, &ready["store"]), (200, &serde_json::json!("embedded")));
    let metrics = c.get(at("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("payguard_store_up 1"), "{metrics}");
    for (method, path) in [
        ("POST", "/admin/reload"),
        ("GET", "/admin/deny"),
        ("POST", "/admin/deny"),
    ] {
        let r = c
            .request(method.parse().unwrap(), at(path))
            .bearer_auth("test-admin-token")
            .send()
            .unwrap();
        assert_eq!(r.status(), 404, "{method} {path} on the probe port");
    }
    let r = c
        .post(pg.admin_url("/admin/reload"))
        .bearer_auth("test-admin-token")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "the admin API stays on the admin listener");
}

fn routes(up: &Upstream, paths: &[&str]) -> String {
    let mut s = format!(
        "upstream: {{address: {}}}\nreload: {{watch: true, interval: 100ms}}\ndefault_action: not_found\nroutes:\n",
        up.addr
    );
    for (i, p) in paths.iter().enumerate() {
        s.push_str(&format!("  - {{name: r{i}, match: {{path: {p}}}, policy: pass}}\n"));
    }
    s
}

#[test]
fn a_configmap_update_is_exactly_one_reload() {
    let up = Upstream::start();
    let body_a = routes(&up, &["/a"]);
    let mut volume = None;
    let pg = Payguard::start_custom("127.0.0.1", Custom::default(), &body_a, |dir, text| {
        let v = KubeVolume::create(&dir.join("config"), &[("payguard.yaml", text)]);
        let path = v.path("payguard.yaml");
        volume = Some(v);
        path
    });
    let mut volume = volume.expect("volume");
    let c = client();
    let status = |path: &str| c.get(pg.url(path)).send().map(|r| r.status().as_u16()).unwrap_or(0);
    assert_eq!(status("/b"), 404);
    let before = pg.metric(RELOADS_OK);

    volume.update(&[("payguard.yaml", &pg.full_text(&routes(&up, &["/a", "/b"])))]);
    wait_until("route /b", || status("/b") == 200);
    std::thread::sleep(Duration::from_secs(1)); // ten more polls
    assert_eq!(pg.metric(RELOADS_OK), before + 1.0, "one update, one reload");

    // The kubelet may re-project unchanged content into a new directory: not a change.
    volume.update(&[("payguard.yaml", &pg.full_text(&routes(&up, &["/a", "/b"])))]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pg.metric(RELOADS_OK), before + 1.0, "same content, no reload");

    volume.update(&[("payguard.yaml", &pg.full_text(&routes(&up, &["/a", "/b", "/c"])))]);
    wait_until("route /c", || status("/c") == 200);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pg.metric(RELOADS_OK), before + 2.0);
    assert_eq!(pg.metric("payguard_config_reloads_total{result=\"failure\"}"), 0.0);
}

#[test]
fn a_rotated_secret_file_is_applied_without_sighup() {
    const OLD: &str = "pg-rotation-secret-old-0001";
    const NEW: &str = "pg-rotation-secret-new-0002";
    let up = Upstream::start();
    let mut secrets = None;
    let pg = Payguard::start_custom("127.0.0.1", Custom::default(), "", |dir, text| {
        let v = KubeVolume::create(&dir.join("secrets"), &[("app-secret", &format!("{OLD}\n"))]);
        let guard = format!(
            "upstream: {{address: {}}}\nreload: {{watch: true, interval: 100ms}}\nguard:\n  signature:\n    keys:\n      - id: {}\n        secrets: [\"file:{}\"]\nroutes:\n  - {{name: orders, match: {{path: /v1/orders}}, policy: guard}}\n",
            up.addr,
            support::guard::KEY_ID,
            v.path("app-secret").display()
        );
        secrets = Some(v);
        let path = dir.join("payguard.yaml");
        std::fs::write(&path, format!("{text}{guard}")).expect("write config");
        path
    });
    let mut secrets = secrets.expect("secret volume");
    let signed = |secret: &str| {
        Req::new("POST", "/v1/orders", b"{}").signed_with(secret, now(), &payguard::guard::signature::new_nonce())
    };
    assert_eq!(send(&pg, &signed(OLD)), (200, String::new()), "{}", pg.logs());
    let before = pg.metric(RELOADS_OK);

    secrets.update(&[("app-secret", &format!("{NEW}\n"))]);
    wait_until("the new secret", || send(&pg, &signed(NEW)).0 == 200);
    assert_eq!(send(&pg, &signed(OLD)), (401, "SIGNATURE_MISMATCH".to_string()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pg.metric(RELOADS_OK), before + 1.0, "one rotation, one reload");
    assert!(
        !pg.logs().contains(NEW) && !pg.logs().contains(OLD),
        "a secret in the logs"
    );
}

#[test]
fn sigterm_closes_the_listener_at_once_and_lets_requests_in_flight_finish_within_the_grace_period() {
    // Why the kit runs a preStop sleep before payguard gets SIGTERM: from then on new
    // connections are refused; requests already in flight are answered if they finish within
    // server.grace_period.
    let up = Upstream::start();
    up.set_behavior(Behavior {
        delay: Duration::from_millis(500),
        ..Behavior::default()
    });
    let custom = Custom {
        grace_period: "2s".to_string(),
        ..Custom::default()
    };
    let body = format!(
        "upstream: {{address: {}}}\nroutes:\n  - {{name: api, match: {{path_prefix: /}}, policy: pass}}\n",
        up.addr
    );
    let mut pg = Payguard::start_custom("127.0.0.1", custom, &body, |dir, text| {
        let path = dir.join("payguard.yaml");
        std::fs::write(&path, text).expect("write config");
        path
    });
    let url = pg.url("/slow");
    let in_flight = std::thread::spawn(move || client().get(url).send().map(|r| r.status().as_u16()));
    wait_until("the request to reach the backend", || !up.requests().is_empty());
    let terminated = Instant::now();
    pg.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    let refused = std::net::TcpStream::connect(("127.0.0.1", pg.port));
    assert!(refused.is_err(), "still accepting after SIGTERM");
    assert_eq!(in_flight.join().unwrap().expect("in-flight answer"), 200);
    assert!(pg.wait_exit(Duration::from_secs(10)).is_some(), "payguard did not exit");
    assert!(
        terminated.elapsed() >= Duration::from_secs(2),
        "exited before the grace period ended"
    );
}
