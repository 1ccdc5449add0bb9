//! `payguard demo --once` walks through real requests and exits cleanly.

mod support;

use std::process::Command;

#[test]
fn demo_once_shows_proxied_and_rejected_requests() {
    let (port, admin, backend) = (support::free_port(), support::free_port(), support::free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("demo.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server: {{listen: 127.0.0.1:{port}, grace_period: 0s, shutdown_timeout: 1s}}\nadmin: {{listen: 127.0.0.1:{admin}}}\nupstream: {{address: 127.0.0.1:{backend}}}\nroutes:\n  - {{name: api, match: {{path_prefix: /api}}, policy: pass}}\ndefault_action: not_found\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args(["demo", "--once", "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("GET   /api/hello?name=demo     → 200 OK"), "{stdout}");
    assert!(
        stdout.contains("backend received: POST /api/orders (41 body bytes"),
        "{stdout}"
    );
    assert!(stdout.contains("/nowhere-routed          → 404"), "{stdout}");
    assert!(stdout.contains("backend received nothing"), "{stdout}");
    assert!(
        stdout.contains("payguard_requests_total{outcome=\"proxied\",route=\"api\"} 2"),
        "{stdout}"
    );
}
