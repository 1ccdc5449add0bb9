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

/// `python3 scripts/sandbox-backend.py ARGS…`: success and stdout.
fn sandbox_backend(args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(format!("{ROOT}/scripts/sandbox-backend.py"))
        .args(args)
        .output()
        .expect("run python3 scripts/sandbox-backend.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_lost_callback_is_recovered_and_a_missed_refund_reconciled_as_in_the_walkthrough() {
    let up = support::upstream::Upstream::start();
    let sim = ChannelSim::start_sandbox(&format!("127.0.0.1:{}", support::free_port()));
    let pg = Payguard::start(&sandbox_config(up.addr.port(), sim.addr.port()));
    let (ok, out) = sandbox_backend(&["orders", "--payguard", &pg.url("")]);
    assert!(ok, "{out}\n{}", pg.logs());
    let created: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_once(" out_trade_no ").map(|(_, no)| no.trim().to_string()))
        .collect();
    assert_eq!(created.len(), 2, "{out}");
    // The shopper pays both orders; neither channel's notification ever arrives.
    let simulator = sim.base_url();
    for no in &created {
        let (ok, out) = sandbox_backend(&["pay", no, "--simulator", &simulator]);
        assert!(ok && out.contains("no notification sent"), "{out}");
    }
    // Within the first step of the schedule (5 s) payguard queries and delivers both.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let events = loop {
        let events: Vec<serde_json::Value> = up
            .requests()
            .iter()
            .filter(|r| r.target == "/payments/events")
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect();
        if events.len() >= 2 || std::time::Instant::now() > until {
            break events;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(events.len(), 2, "{events:?}\n{}", pg.logs());
    for event in &events {
        assert_eq!(event["kind"], "payment.succeeded");
        assert_eq!(event["source"], "query");
        assert!(created.contains(&event["out_trade_no"].as_str().unwrap_or("").to_string()));
    }
    let amounts: Vec<i64> = events.iter().filter_map(|e| e["amount_minor"].as_i64()).collect();
    assert!(amounts.contains(&100) && amounts.contains(&8888), "{amounts:?}");

    // "A refund nobody was told about, found by reconciliation": the merchant refunds 0.30 of
    // the WeChat Pay order at the channel; no notification comes.
    let wechat = created
        .iter()
        .find(|no| no.starts_with("sandbox-wx-"))
        .expect("a WeChat Pay order");
    let (ok, out) = sandbox_backend(&["refund", wechat, "--amount", "30", "--simulator", &simulator]);
    let refund_no = format!("{wechat}-R1");
    assert!(
        ok && out.contains(&format!("refunded {refund_no}, no notification sent")),
        "{out}"
    );
    let day = sim.paid_day(wechat);
    let reconcile = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
            .current_dir(ROOT)
            .arg("reconcile")
            .arg("-c")
            .arg(pg.config_path())
            .args(["--account", "sandbox-wechat", "--date", &day])
            .args(extra)
            .output()
            .expect("run payguard reconcile");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, report) = reconcile(&[]);
    assert_eq!(code, Some(1), "{report}\n{}", pg.logs());
    assert!(
        report.starts_with(&format!("sandbox-wechat {day} (wechatpay_v3)\n")),
        "{report}"
    );
    assert!(
        report.contains("  bill      : 1 payment 1.00, 1 refund 0.30\n"),
        "{report}"
    );
    assert!(
        report.contains("  delivered : 1 payment 1.00, 0 refunds 0.00\n"),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "  missing          refund   {wechat} refund {refund_no}  bill 0.30\n"
        )),
        "{report}"
    );
    assert!(report.ends_with("unreconciled: 1 finding\n"), "{report}");
    let (code, report) = reconcile(&["--forward-missing"]);
    assert_eq!(code, Some(0), "{report}\n{}", pg.logs());
    assert!(report.contains("bill 0.30  forwarded: delivered\n"), "{report}");
    assert!(
        report.ends_with("reconciled: every missing event is now delivered (1 finding)\n"),
        "{report}"
    );
    let refund: Vec<serde_json::Value> = up
        .requests()
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
        .filter(|e| e["kind"] == "refund.succeeded")
        .collect();
    assert_eq!(refund.len(), 1);
    assert_eq!(refund[0]["source"], "bill");
    assert_eq!(refund[0]["refund"]["amount_minor"], 30);
    let (code, report) = reconcile(&[]);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.ends_with("  matched   : 2\nreconciled\n"), "{report}");

    // "What happened to order X?": its history shows both recovered events.
    let history: serde_json::Value = reqwest::blocking::Client::new()
        .get(pg.admin_url(&format!("/admin/orders/{wechat}")))
        .bearer_auth("test-admin-token")
        .send()
        .expect("admin answers")
        .json()
        .expect("JSON");
    let seen: Vec<String> = history["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|e| format!("{} {} {} {}", e["route"], e["source"], e["kind"], e["outcome"]))
        .collect();
    assert_eq!(
        seen,
        [
            "\"wechatpay_v3\" \"query\" \"payment.succeeded\" \"forwarded\"",
            "\"wechatpay_v3\" \"bill\" \"refund.succeeded\" \"forwarded\"",
        ],
        "{history}"
    );
}

/// `payguard simulate` as in docs/channels.md "Sandbox walkthrough"; returns its output.
fn simulate(channel: &str, to: &str, args: &[&str]) -> String {
    let head = ["simulate", channel, "--to", to];
    let all: Vec<&std::ffi::OsStr> = head.iter().chain(args).map(|a| a.as_ref()).collect();
    let (ok, out) = support::payguard_cli(&all);
    assert!(ok, "{out}");
    out
}

#[test]
fn the_sandbox_notify_routes_verify_with_the_keys_of_the_merchant_accounts() {
    // The sandbox's notify routes for WeChat Pay v3, Alipay and Stripe hold no keys of their
    // own: they name the accounts the egress routes sign with.
    let text = std::fs::read_to_string(format!("{ROOT}/config/sandbox.yaml")).unwrap();
    for account in ["sandbox-wechat", "sandbox-alipay", "sandbox-stripe"] {
        assert!(text.contains(&format!("      merchant: {account}\n")), "{account}");
    }
    let up = support::upstream::Upstream::start();
    let sim = ChannelSim::start_sandbox(&format!("127.0.0.1:{}", support::free_port()));
    let pg = Payguard::start(&sandbox_config(up.addr.port(), sim.addr.port()));
    let out = simulate(
        "alipay",
        &pg.url("/notify/alipay"),
        &[
            "--private-key",
            "tests/fixtures/alipay/app_private_key.pem",
            "--app-id",
            "2021000000000001",
            "--out-trade-no",
            "order-1002",
        ],
    );
    assert!(out.starts_with("#1 200 OK success"), "{out}\n{}", pg.logs());
    let wechat = [
        "--private-key",
        "tests/fixtures/wechatpay_v3/simulate_platform_private_key.pem",
        "--certificate",
        "tests/fixtures/wechatpay_v3/simulate_platform_certificate.pem",
        "--api-v3-key",
        "sandboxApiV3Key0123456789abcdefg",
        "--mch-id",
        "1900000001",
        "--out-trade-no",
        "order-1003",
    ];
    let out = simulate("wechatpay_v3", &pg.url("/notify/wechatpay"), &wechat);
    assert!(out.starts_with("#1 204"), "{out}\n{}", pg.logs());
    let stripe = [
        "--secret",
        "whsec_sandbox_stripe_endpoint_secret",
        "--out-trade-no",
        "order-1001",
    ];
    let out = simulate("stripe", &pg.url("/notify/stripe"), &stripe);
    assert!(out.starts_with("#1 200"), "{out}\n{}", pg.logs());
    let orders: Vec<String> = up
        .requests()
        .iter()
        .map(|r| {
            let event: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            format!(
                "{} {}",
                event["channel"].as_str().unwrap(),
                event["out_trade_no"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        orders,
        ["alipay order-1002", "wechatpay_v3 order-1003", "stripe order-1001"]
    );

    // A notification signed with another key is refused on a merchant route as on any other.
    let out = simulate(
        "alipay",
        &pg.url("/notify/alipay"),
        &[
            "--private-key",
            "tests/fixtures/alipay/egress_app_private_key.pem",
            "--app-id",
            "2021000000000001",
        ],
    );
    // Alipay is answered `fail` (it retries), with status 200 as it expects.
    assert!(out.starts_with("#1 200 OK fail"), "{out}");
    let out = simulate(
        "stripe",
        &pg.url("/notify/stripe"),
        &["--secret", "whsec_another_endpoint_secret"],
    );
    assert!(!out.starts_with("#1 200"), "{out}");
    assert_eq!(up.requests().len(), 3, "nothing unverified was forwarded");
}
