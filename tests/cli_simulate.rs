//! `payguard simulate` and `payguard verify-notify` as an operator runs them: the real binary,
//! the repository's public test keys, configs in a temp dir.
//!
//! The channels, their config sections and their key flags come from the channel registry
//! (`ChannelKind::ALL` and each channel's `test_setup`), so a newly registered channel is
//! simulated, verified offline and sent through a running payguard without touching this file.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use payguard::channels::{ChannelConfig, ChannelKind, EventKind, SimulateKeys};
use support::payguard::Payguard;
use support::upstream::Upstream;

const BACKEND_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The event field a refund simulation's `--refund-no` comes back in: the merchant refund
/// number, except for Adyen, whose refund item is named by its pspReference (the simulation sets
/// it to the refund number), and Stripe, whose `charge.refunded` names only the charge.
fn refund_number_field(channel: &str) -> Option<&'static str> {
    match channel {
        "stripe" => None,
        "adyen" => Some("refund_id"),
        _ => Some("out_refund_no"),
    }
}

/// Every registered channel's name: each is simulated and verified the same way.
fn channels() -> impl Iterator<Item = &'static str> {
    ChannelKind::ALL.iter().map(|kind| kind.as_str())
}

/// Registered channels whose registration says they notify `event`.
fn channels_notifying(event: EventKind) -> impl Iterator<Item = &'static str> {
    ChannelKind::ALL
        .iter()
        .filter(move |kind| kind.info().event_kinds.contains(&event))
        .map(|kind| kind.as_str())
}

fn kind(channel: &str) -> ChannelKind {
    ChannelKind::from_name(channel).unwrap_or_else(|| panic!("{channel} is not registered"))
}

/// The channel's registered test setup (config section and public keys under tests/fixtures/).
fn test_setup(channel: &str) -> payguard::channels::TestSetup {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    kind(channel)
        .info()
        .test_setup(&fixtures)
        .unwrap_or_else(|e| panic!("{channel} test setup: {e}"))
}

/// The YAML of one notify route per registered channel (route name = channel name) in the
/// `routes:` list, each configured from the channel's test setup.
fn notify_routes(upstream: &str) -> String {
    let mut out = format!("upstream:\n  address: {upstream}\nroutes:\n");
    for name in channels() {
        // JSON is YAML flow syntax.
        let channel = serde_json::json!({ name: test_setup(name).config });
        out.push_str(&format!(
            "  - name: {name}\n    match: {{path: /notify/{name}}}\n    policy: notify\n    notify:\n      channel: {channel}\n      backend_path: /payments/events\n      timeout: 2s\n      webhook_secret: '{BACKEND_WHSEC}'\n"
        ));
    }
    out
}

/// The key flags `simulate CHANNEL` needs with the channel's test keys; PEM keys are written to
/// files in `dir` because the flags take paths.
fn key_flags(dir: &Path, channel: &str) -> Vec<String> {
    let setup = test_setup(channel);
    let SimulateKeys {
        private_key_pem,
        certificate_pem,
        key_id,
        secret,
        api_v3_key,
    } = setup.keys;
    let pem_file = |suffix: &str, pem: String| {
        let path = dir.join(format!("{channel}.{suffix}.pem"));
        std::fs::write(&path, pem).expect("write test key");
        path.display().to_string()
    };
    let utf8 =
        |flag: &str, bytes: Vec<u8>| String::from_utf8(bytes).unwrap_or_else(|_| panic!("{channel} {flag} is text"));
    let mut flags = Vec::new();
    let mut push = |flag: &str, value: Option<String>| {
        if let Some(value) = value {
            flags.extend([flag.to_string(), value]);
        }
    };
    push("--private-key", private_key_pem.map(|pem| pem_file("key", pem)));
    push("--certificate", certificate_pem.map(|pem| pem_file("cert", pem)));
    push("--key-id", key_id);
    push("--secret", secret.map(|s| utf8("--secret", s)));
    push("--api-v3-key", api_v3_key.map(|k| utf8("--api-v3-key", k)));
    push("--app-id", setup.app_id);
    push("--mch-id", setup.mch_id);
    flags
}

fn payguard(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args(args)
        .output()
        .expect("run payguard")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A temp dir holding the config with every channel's notify route.
struct Workspace {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("payguard.yaml");
        std::fs::write(&config, notify_routes("127.0.0.1:9")).expect("write config");
        Self { dir, config }
    }

    /// `simulate CHANNEL --headers-out --body-out` with `extra` flags; returns (headers, body) paths.
    fn simulate(&self, channel: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
        let headers = self.dir.path().join(format!("{channel}.headers"));
        let body = self.dir.path().join(format!("{channel}.body"));
        let mut args: Vec<String> = vec!["simulate".into(), channel.into()];
        args.extend(key_flags(self.dir.path(), channel));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([
            "--headers-out".into(),
            headers.display().to_string(),
            "--body-out".into(),
            body.display().to_string(),
        ]);
        let out = payguard(&args);
        assert!(out.status.success(), "simulate {channel}: {}", text(&out.stderr));
        (headers, body)
    }

    fn verify(&self, route: &str, headers: &Path, body: &Path, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec![
            "verify-notify".into(),
            "--config".into(),
            self.config.display().to_string(),
            "--route".into(),
            route.into(),
            "--headers".into(),
            headers.display().to_string(),
            "--body".into(),
            body.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        payguard(&args)
    }
}

#[test]
fn every_channel_simulation_verifies_offline_into_the_normalized_event() {
    let ws = Workspace::new();
    for channel in channels() {
        let (headers, body) = ws.simulate(channel, &["--out-trade-no", "order-7001", "--amount", "88.80"]);
        let out = ws.verify(channel, &headers, &body, &[]);
        assert!(out.status.success(), "{channel}: {}", text(&out.stderr));
        let event: serde_json::Value = serde_json::from_slice(&out.stdout).expect("event JSON");
        assert_eq!(event["channel"], channel);
        assert_eq!(event["kind"], "payment.succeeded", "{channel}");
        assert_eq!(event["out_trade_no"], "order-7001", "{channel}");
        assert_eq!(event["amount_minor"], 8880, "{channel}");
        assert_eq!(event["currency"], "CNY", "{channel}");
        assert!(
            event["id"].as_str().is_some_and(|id| id.starts_with("evt_")),
            "{channel}"
        );
        assert!(text(&out.stderr).starts_with("verified:"), "{channel}");
    }
}

#[test]
fn refund_simulations_verify_with_refund_details() {
    let ws = Workspace::new();
    for channel in channels_notifying(EventKind::RefundSucceeded) {
        let (headers, body) = ws.simulate(
            channel,
            &[
                "--kind",
                "refund.succeeded",
                "--out-trade-no",
                "order-7002",
                "--refund-no",
                "refund-7002-1",
                "--refund-amount",
                "10.00",
            ],
        );
        let out = ws.verify(channel, &headers, &body, &[]);
        assert!(out.status.success(), "{channel}: {}", text(&out.stderr));
        let event: serde_json::Value = serde_json::from_slice(&out.stdout).expect("event JSON");
        assert_eq!(event["kind"], "refund.succeeded", "{channel}");
        if let Some(field) = refund_number_field(channel) {
            assert_eq!(event["refund"][field], "refund-7002-1", "{channel}");
        }
        assert_eq!(event["refund"]["amount_minor"], 1000, "{channel}");
    }
}

#[test]
fn print_output_is_a_request_file_verify_notify_reads() {
    let ws = Workspace::new();
    let mut args: Vec<String> = vec!["simulate".into(), "wechatpay_v3".into(), "--print".into()];
    args.extend(key_flags(ws.dir.path(), "wechatpay_v3"));
    let printed = payguard(&args);
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    let request = ws.dir.path().join("request.txt");
    std::fs::write(&request, &printed.stdout).unwrap();
    let out = payguard(&[
        "verify-notify".into(),
        "-c".into(),
        ws.config.display().to_string(),
        "--route".into(),
        "wechatpay_v3".into(),
        "--request".into(),
        request.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn tampered_simulation_fails_verify_notify_with_a_signature_reason() {
    let ws = Workspace::new();
    for channel in channels() {
        let (headers, body) = ws.simulate(channel, &["--tamper"]);
        let out = ws.verify(channel, &headers, &body, &[]);
        assert_eq!(out.status.code(), Some(1), "{channel}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("rejected (rejected_signature): signature verification failed"),
            "{channel}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{channel}: nothing is printed as an event");
    }
}

#[test]
fn verify_at_a_far_future_time_makes_timestamped_channels_stale() {
    let ws = Workspace::new();
    let far = (jiff::Timestamp::now().as_second() + 86_400).to_string();
    for channel in channels().filter(|&c| kind(c).info().signed_timestamp) {
        let (headers, body) = ws.simulate(channel, &[]);
        let out = ws.verify(channel, &headers, &body, &["--at", &far]);
        assert_eq!(out.status.code(), Some(1), "{channel}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("rejected (rejected_stale): stale notification"),
            "{channel}: {}",
            text(&out.stderr)
        );
        let now = ws.verify(channel, &headers, &body, &[]);
        assert!(now.status.success(), "{channel} verifies now: {}", text(&now.stderr));
    }
}

#[test]
fn verify_notify_names_an_unknown_route() {
    let ws = Workspace::new();
    let (headers, body) = ws.simulate("stripe", &[]);
    let out = ws.verify("no-such-route", &headers, &body, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no route named no-such-route"));
}

#[test]
fn simulate_names_the_missing_key_flags() {
    let out = payguard(&[
        "simulate".into(),
        "unionpay".into(),
        "--print".into(),
        "--mch-id".into(),
        "777290058110048".into(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--private-key") && stderr.contains("--certificate"),
        "{stderr}"
    );
}

/// Sends with `--duplicate 2` to a running payguard; returns the answer lines and the upstream.
fn send_three_times(channel: &str) -> (Vec<String>, Upstream, Payguard) {
    let up = Upstream::start();
    let pg = Payguard::start(&notify_routes(&up.addr.to_string()));
    let lines = send_three_times_to(&pg, channel);
    (lines, up, pg)
}

/// `simulate CHANNEL --to <payguard>/notify/CHANNEL --duplicate 2`; returns the answer lines.
fn send_three_times_to(pg: &Payguard, channel: &str) -> Vec<String> {
    let keys = tempfile::tempdir().expect("tempdir");
    let mut args: Vec<String> = vec![
        "simulate".into(),
        channel.into(),
        "--to".into(),
        pg.url(&format!("/notify/{channel}")),
        "--duplicate".into(),
        "2".into(),
    ];
    args.extend(key_flags(keys.path(), channel));
    let out = payguard(&args);
    assert!(out.status.success(), "{channel}: {}\n{}", text(&out.stderr), pg.logs());
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn every_channel_simulation_through_payguard_reaches_the_backend_once_and_is_acked_three_times() {
    let up = Upstream::start();
    let pg = Payguard::start(&notify_routes(&up.addr.to_string()));
    for (sent, channel) in channels().enumerate() {
        let section = serde_json::json!({ channel: test_setup(channel).config });
        let config: ChannelConfig = serde_json::from_value(section).expect("test setup config parses");
        let ack = config.build().expect("test setup builds").success_ack();
        let lines = send_three_times_to(&pg, channel);
        assert_eq!(lines.len(), 3, "{channel}: {lines:?}");
        for (i, line) in lines.iter().enumerate() {
            let answered = format!("#{} {} ", i + 1, ack.status);
            assert!(line.starts_with(&answered), "{channel}: {lines:?}\n{}", pg.logs());
        }
        let forwarded = up.requests();
        assert_eq!(forwarded.len(), sent + 1, "{channel}: {}", pg.logs());
        assert_eq!(forwarded[sent].target, "/payments/events", "{channel}");
    }
}

#[test]
fn stripe_duplicates_reach_the_backend_once_and_are_all_acked() {
    let (lines, up, pg) = send_three_times("stripe");
    assert_eq!(lines, ["#1 200 OK", "#2 200 OK", "#3 200 OK"], "{}", pg.logs());
    let forwarded = up.requests();
    assert_eq!(forwarded.len(), 1, "{}", pg.logs());
    assert_eq!(forwarded[0].target, "/payments/events");
}

#[test]
fn alipay_duplicates_reach_the_backend_once_and_are_all_answered_success() {
    let (lines, up, pg) = send_three_times("alipay");
    assert_eq!(
        lines,
        ["#1 200 OK success", "#2 200 OK success", "#3 200 OK success"],
        "{}",
        pg.logs()
    );
    assert_eq!(up.requests().len(), 1);
}
