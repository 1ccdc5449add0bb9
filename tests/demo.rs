//! `payguard demo --once` walks through real requests with config/dev.yaml (on free ports) and
//! exits cleanly.

mod support;

use std::process::Command;

#[test]
fn demo_once_walks_through_guarded_calls_and_notifications() {
    let (port, admin, backend) = (support::free_port(), support::free_port(), support::free_port());
    let dev = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/dev.yaml")).unwrap();
    let text = dev
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9464", &format!("127.0.0.1:{admin}"))
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{backend}"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("demo.yaml");
    std::fs::write(&cfg, text).unwrap();
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
    for expected in [
        "pass route: GET /api/hello?name=demo → 200 OK",
        "signed order: POST /api/orders → 200 OK",
        "backend received: POST /api/orders (60 body bytes)",
        "same request replayed: POST /api/orders → 409 Conflict",
        "body changed after signing: POST /api/orders → 401 Unauthorized",
        "unsigned order: POST /api/orders → 401 Unauthorized",
        "unrouted path: GET /nowhere-routed → 404 Not Found",
        "payment_intent.succeeded: POST /notify/stripe → 200 OK",
        "kind=\"payment.succeeded\" out_trade_no=\"demo-1001\" amount_minor=8880",
        "the same notification again: POST /notify/stripe → 200 OK",
        "tampered notification: POST /notify/stripe → 400 Bad Request",
    ] {
        assert!(stdout.contains(expected), "missing `{expected}` in:\n{stdout}");
    }
    // Rejected steps never reach the backend.
    assert_eq!(stdout.matches("backend received nothing").count(), 6, "{stdout}");
}
