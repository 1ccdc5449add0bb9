//! The sandbox's egress walkthrough (docs/egress.md "Sandbox") as a user runs it:
//! config/sandbox.yaml (on free ports), the channel API simulator with the committed sandbox
//! certificate, and `scripts/sandbox-backend.py orders`, a backend that holds no channel key,
//! creating a WeChat Pay v3 native order and an Alipay precreate order through payguard.

mod support;

use std::process::Command;

use support::channel_sim::ChannelSim;
use support::payguard::Payguard;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// config/sandbox.yaml without its listener sections (the harness writes those), with its
/// relative `file:` paths made absolute and the upstream and the simulator on `up` and `sim`.
fn sandbox_config(up: u16, sim: u16) -> String {
    let text = std::fs::read_to_string(format!("{ROOT}/config/sandbox.yaml")).expect("read config/sandbox.yaml");
    let body = &text[text.find("\nupstream:").expect("an upstream section") + 1..];
    body.replace("file:tests/", &format!("file:{ROOT}/tests/"))
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{up}"))
        .replace("https://127.0.0.1:9443", &format!("https://127.0.0.1:{sim}"))
}

#[test]
fn the_sandbox_backend_creates_a_wechat_and_an_alipay_order_without_holding_a_key() {
    let sim = ChannelSim::start_sandbox(&format!("127.0.0.1:{}", support::free_port()));
    let pg = Payguard::start(&sandbox_config(support::free_port(), sim.addr.port()));
    let out = Command::new("python3")
        .arg(format!("{ROOT}/scripts/sandbox-backend.py"))
        .args(["orders", "--payguard", &pg.url("")])
        .output()
        .expect("run python3 scripts/sandbox-backend.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        pg.logs()
    );
    assert!(
        stdout.contains("WeChat Pay native order: 200 verified: code_url weixin://wxpay/bizpayurl?pr="),
        "{stdout}"
    );
    assert!(
        stdout.contains("Alipay precreate order: 200 verified: qr_code https://qr.alipay.com/"),
        "{stdout}"
    );
    // The simulator checked both signatures with openssl, independently of payguard.
    let sent = sim.requests();
    let targets: Vec<&str> = sent.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/v3/pay/transactions/native", "/gateway.do"]);
    for r in &sent {
        assert_eq!(r.signature_check, Ok(()), "{}", r.target);
    }
    // The backend holds no channel key: none is in its code, none reached it.
    let backend = std::fs::read_to_string(format!("{ROOT}/scripts/sandbox-backend.py")).unwrap();
    for secret in ["PRIVATE KEY", "sandboxApiV3Key", "sk_test_", "MII"] {
        assert!(!backend.contains(secret), "the sandbox backend holds `{secret}`");
        assert!(!stdout.contains(secret), "the backend received `{secret}`: {stdout}");
    }
}
