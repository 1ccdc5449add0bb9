//! `payguard simulate` and `payguard verify-notify` as an operator runs them: the real binary,
//! the repository's public test keys, configs in a temp dir.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::payguard::Payguard;
use support::upstream::Upstream;

const BACKEND_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STRIPE_SECRET: &str = "whsec_test_stripe_endpoint_secret_1234567890";
const STANDARD_WHSEC: &str = "whsec_c2FuZGJveC1zdGFuZGFyZC13ZWJob29rcy1rZXk=";
const WECHAT_V3_KEY: &str = "sandboxApiV3Key0123456789abcdefg";
const WECHAT_V2_KEY: &str = "sandboxApiV2Key0123456789abcdefg";

const CHANNELS: [&str; 6] = [
    "alipay",
    "wechatpay_v3",
    "wechatpay_v2",
    "stripe",
    "unionpay",
    "standard_webhooks",
];

fn fixture(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
        .display()
        .to_string()
}

/// The YAML of one notify route per channel (route name = channel name) in the `routes:` list.
fn notify_routes(upstream: &str) -> String {
    let channels = [
        (
            "alipay",
            format!(
                "alipay: {{app_id: '2021000000000001', alipay_public_key: 'file:{}'}}",
                fixture("alipay/app_public_key.pem")
            ),
        ),
        (
            "wechatpay_v3",
            format!(
                "wechatpay_v3: {{mchid: '1900000001', api_v3_key: {WECHAT_V3_KEY}, platform_certificates: ['file:{}']}}",
                fixture("wechatpay_v3/simulate_platform_certificate.pem")
            ),
        ),
        (
            "wechatpay_v2",
            format!("wechatpay_v2: {{app_id: wx2421b1c4370ec43b, mch_id: '10000100', api_key: {WECHAT_V2_KEY}}}"),
        ),
        ("stripe", format!("stripe: {{endpoint_secrets: ['{STRIPE_SECRET}']}}")),
        (
            "unionpay",
            format!(
                "unionpay: {{mer_id: '777290058110048', root_cert: 'file:{}', middle_cert: 'file:{}'}}",
                fixture("unionpay/root.pem"),
                fixture("unionpay/middle.pem")
            ),
        ),
        (
            "standard_webhooks",
            format!("standard_webhooks: {{secrets: ['{STANDARD_WHSEC}']}}"),
        ),
    ];
    let mut out = format!("upstream:\n  address: {upstream}\nroutes:\n");
    for (name, channel) in channels {
        out.push_str(&format!(
            "  - name: {name}\n    match: {{path: /notify/{name}}}\n    policy: notify\n    notify:\n      channel:\n        {channel}\n      backend_path: /payments/events\n      timeout: 2s\n      webhook_secret: '{BACKEND_WHSEC}'\n"
        ));
    }
    out
}

/// The key flags `simulate CHANNEL` needs with the test keys.
fn key_flags(channel: &str) -> Vec<String> {
    let flags: Vec<String> = match channel {
        "alipay" => vec![
            "--private-key".into(),
            fixture("alipay/app_private_key.pem"),
            "--app-id".into(),
            "2021000000000001".into(),
        ],
        "wechatpay_v3" => vec![
            "--private-key".into(),
            fixture("wechatpay_v3/simulate_platform_private_key.pem"),
            "--certificate".into(),
            fixture("wechatpay_v3/simulate_platform_certificate.pem"),
            "--api-v3-key".into(),
            WECHAT_V3_KEY.into(),
            "--mch-id".into(),
            "1900000001".into(),
        ],
        "wechatpay_v2" => vec![
            "--secret".into(),
            WECHAT_V2_KEY.into(),
            "--app-id".into(),
            "wx2421b1c4370ec43b".into(),
            "--mch-id".into(),
            "10000100".into(),
        ],
        "stripe" => vec!["--secret".into(), STRIPE_SECRET.into()],
        "unionpay" => vec![
            "--private-key".into(),
            fixture("unionpay/leaf.key.pem"),
            "--certificate".into(),
            fixture("unionpay/leaf.pem"),
            "--mch-id".into(),
            "777290058110048".into(),
        ],
        "standard_webhooks" => vec!["--secret".into(), STANDARD_WHSEC.into()],
        other => panic!("no test keys for {other}"),
    };
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
        args.extend(key_flags(channel));
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
    for channel in CHANNELS {
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
    for channel in ["alipay", "wechatpay_v3", "wechatpay_v2", "unionpay"] {
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
        assert_eq!(event["refund"]["out_refund_no"], "refund-7002-1", "{channel}");
        assert_eq!(event["refund"]["amount_minor"], 1000, "{channel}");
    }
}

#[test]
fn print_output_is_a_request_file_verify_notify_reads() {
    let ws = Workspace::new();
    let mut args: Vec<String> = vec!["simulate".into(), "wechatpay_v3".into(), "--print".into()];
    args.extend(key_flags("wechatpay_v3"));
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
    for channel in CHANNELS {
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
    for channel in ["wechatpay_v3", "stripe", "standard_webhooks"] {
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
    let mut args: Vec<String> = vec![
        "simulate".into(),
        channel.into(),
        "--to".into(),
        pg.url(&format!("/notify/{channel}")),
        "--duplicate".into(),
        "2".into(),
    ];
    args.extend(key_flags(channel));
    let out = payguard(&args);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), pg.logs());
    let lines = text(&out.stdout).lines().map(str::to_string).collect();
    (lines, up, pg)
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
