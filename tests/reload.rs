//! Reload while traffic flows: no request fails, the new route applies afterwards; a broken file
//! keeps the old config and counts a failed reload.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::payguard::Payguard;
use support::upstream::Upstream;

fn routes(upstream: &str, paths: &[&str], watch: bool) -> String {
    let mut s = format!(
        "upstream:\n  address: {upstream}\nreload:\n  watch: {watch}\n  interval: 100ms\ndefault_action: not_found\nroutes:\n"
    );
    for (i, p) in paths.iter().enumerate() {
        s.push_str(&format!("  - name: r{i}\n    match: {{path: {p}}}\n    policy: pass\n"));
    }
    s
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a client loop against `/a` until stopped; returns (ok, failed) counts.
fn client_loop(pg_url: String) -> (Arc<AtomicBool>, std::thread::JoinHandle<(u64, u64)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let ok = AtomicU64::new(0);
        let failed = AtomicU64::new(0);
        while !s.load(Ordering::SeqCst) {
            match client.post(&pg_url).body("payload").send() {
                Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                _ => failed.fetch_add(1, Ordering::SeqCst),
            };
        }
        (ok.into_inner(), failed.into_inner())
    });
    (stop, handle)
}

#[test]
fn file_change_reload_applies_new_route_without_failing_requests() {
    let up = Upstream::start();
    let upstream = up.addr.to_string();
    let pg = Payguard::start(&routes(&upstream, &["/a"], true));
    let c = reqwest::blocking::Client::new();
    assert_eq!(c.get(pg.url("/b")).send().unwrap().status(), 404);

    let (stop, handle) = client_loop(pg.url("/a"));
    std::thread::sleep(Duration::from_millis(300));
    pg.write_config(&routes(&upstream, &["/a", "/b"], true));
    wait_until("route /b", || {
        c.get(pg.url("/b")).send().map(|r| r.status() == 200).unwrap_or(false)
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = handle.join().unwrap();
    assert!(ok > 10, "the client loop ran ({ok} requests)");
    assert_eq!(failed, 0, "no request failed during reload");
    assert!(pg.wait_metric("payguard_config_reloads_total{result=\"success\"}", 1.0) >= 1.0);

    // A broken file keeps the running config and counts a failure.
    let before = pg.metric("payguard_config_reloads_total{result=\"failure\"}");
    pg.write_config("upstream:\n  address: [not, valid\n");
    wait_until("failed reload metric", || {
        pg.metric("payguard_config_reloads_total{result=\"failure\"}") > before
    });
    assert_eq!(
        c.get(pg.url("/b")).send().unwrap().status(),
        200,
        "last good config still serves /b"
    );
    assert_eq!(c.get(pg.url("/a")).send().unwrap().status(), 200);
    assert!(pg.logged("keeping the last good configuration"), "{}", pg.logs());
}

#[test]
fn sighup_reloads_even_without_file_watching() {
    let up = Upstream::start();
    let upstream = up.addr.to_string();
    let pg = Payguard::start(&routes(&upstream, &["/a"], false));
    let c = reqwest::blocking::Client::new();
    let (stop, handle) = client_loop(pg.url("/a"));
    pg.write_config(&routes(&upstream, &["/a", "/c"], false));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        c.get(pg.url("/c")).send().unwrap().status(),
        404,
        "no reload without a signal when watch is off"
    );
    pg.sighup();
    wait_until("route /c", || {
        c.get(pg.url("/c")).send().map(|r| r.status() == 200).unwrap_or(false)
    });
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = handle.join().unwrap();
    assert!(ok > 0);
    assert_eq!(failed, 0);

    // A semantically invalid file (duplicate route names) is refused too.
    let before = pg.metric("payguard_config_reloads_total{result=\"failure\"}");
    let mut bad = routes(&upstream, &["/a"], false);
    bad.push_str("  - name: r0\n    match: {path: /d}\n    policy: pass\n");
    pg.write_config(&bad);
    pg.sighup();
    wait_until("failed reload metric", || {
        pg.metric("payguard_config_reloads_total{result=\"failure\"}") > before
    });
    assert_eq!(c.get(pg.url("/c")).send().unwrap().status(), 200);
}

#[test]
fn admin_reload_reports_errors_with_key_paths() {
    let up = Upstream::start();
    let upstream = up.addr.to_string();
    let pg = Payguard::start(&routes(&upstream, &["/a"], false));
    pg.write_config(&format!("upstream:\n  address: {upstream}\n  bogus: 1\n"));
    let c = reqwest::blocking::Client::new();
    let r = c
        .post(pg.admin_url("/admin/reload"))
        .bearer_auth("test-admin-token")
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["errors"][0], "upstream.bogus: unknown key");
}

#[test]
fn a_refused_reload_logs_the_exact_key_and_no_inline_secret() {
    let up = Upstream::start();
    let upstream = up.addr.to_string();
    let pg = Payguard::start(&routes(&upstream, &["/a"], true));
    let before = pg.metric("payguard_config_reloads_total{result=\"failure\"}");
    let mut broken = routes(&upstream, &["/a"], true);
    broken.push_str(
        "guard:\n  signature:\n    keys:\n      - {id: app, secrets: [inline-secret-in-a-broken-reload], bogus: 1}\n",
    );
    pg.write_config(&broken);
    wait_until("failed reload metric", || {
        pg.metric("payguard_config_reloads_total{result=\"failure\"}") > before
    });
    let logs = pg.wait_logs(|l| l.contains("guard.signature.keys[0].bogus: unknown key"));
    assert!(logs.contains("guard.signature.keys[0].bogus: unknown key"), "{logs}");
    assert!(
        !logs.contains("inline-secret-in-a-broken-reload"),
        "secret in the log:\n{logs}"
    );
}
