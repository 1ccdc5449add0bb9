//! WeChat Pay platform certificates kept current (docs/egress.md, "Platform certificates"):
//! payguard downloads `GET /v3/certificates` from the channel simulator with its own egress
//! signer, decrypts the list with the APIv3 key, and adds new serials to the running verifiers
//! of that merchant; a notification signed with a rotated key then verifies without a reload.
//! The list itself is encrypted by Python's `cryptography`
//! (tests/fixtures/wechatpay_v3/generate_certificates.py), the notifications are made by
//! `payguard simulate` with the rotated test key, and replicas share certificates through a
//! real Redis.

mod support;

use std::process::Command;

use support::channel_sim::{fixture, ChannelSim, WxCertificates, WX_MERCHANT_SERIAL, WX_ROTATED_SERIAL};
use support::payguard::Payguard;
use support::redis_server::RedisServer;
use support::upstream::Upstream;

const API_V3_KEY: &str = "0123456789abcdef0123456789ABCDEF";
const MCHID: &str = "1900000001";
const BACKEND_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A merchant account that downloads its certificates from `base_url`, a notify route of the
/// same `mchid` that knows only the current platform certificate, and a notify route that
/// verifies with the account's keys (`merchant: wx`).
fn config(up: &Upstream, redis: &RedisServer, prefix: &str, base_url: &str, ca: &str) -> String {
    let current = fixture("wechatpay_v3/simulate_platform_certificate.pem");
    format!(
        "upstream:\n  address: {up}\nstore:\n  backend: redis\n  redis:\n    url: {redis}\n    key_prefix: '{prefix}'\n    command_timeout: 300ms\n    connect_timeout: 300ms\nmerchants:\n  wx:\n    channel: wechatpay_v3\n    mchid: \"{MCHID}\"\n    certificate_serial: {WX_MERCHANT_SERIAL}\n    private_key: file:{key}\n    api_v3_key: {API_V3_KEY}\n    platform_certificates: ['file:{current}']\n    download_platform_certificates: true\n    base_url: {base_url}\n    extra_ca: {ca}\nroutes:\n  - name: wx-notify\n    match: {{path: /notify/wechatpay}}\n    policy: notify\n    notify:\n      channel:\n        wechatpay_v3:\n          mchid: \"{MCHID}\"\n          api_v3_key: {API_V3_KEY}\n          platform_certificates: ['file:{current}']\n      backend_path: /internal/payments\n      timeout: 2s\n      webhook_secret: '{BACKEND_WHSEC}'\n  - name: wx-account\n    match: {{path: /notify/wechatpay-account}}\n    policy: notify\n    notify:\n      merchant: wx\n      backend_path: /internal/payments\n      timeout: 2s\n      webhook_secret: '{BACKEND_WHSEC}'\n",
        up = up.addr,
        redis = redis.url(),
        key = fixture("wechatpay_v3/egress_merchant_private_key.pem").display(),
        current = current.display(),
    )
}

/// `payguard simulate wechatpay_v3` signed with the rotated platform key, sent to `pg`'s
/// `/notify/wechatpay`; returns the status payguard answered.
fn notify_signed_with_rotated_key(pg: &Payguard, order: &str) -> u16 {
    notify_route_signed_with_rotated_key(pg, "/notify/wechatpay", order)
}

/// As [`notify_signed_with_rotated_key`], to `path`.
fn notify_route_signed_with_rotated_key(pg: &Payguard, path: &str, order: &str) -> u16 {
    let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args(["simulate", "wechatpay_v3", "--to", &pg.url(path)])
        .args([
            "--private-key",
            &fixture("wechatpay_v3/rotated_platform_private_key.pem")
                .display()
                .to_string(),
        ])
        .args([
            "--key-id",
            WX_ROTATED_SERIAL,
            "--api-v3-key",
            API_V3_KEY,
            "--mch-id",
            MCHID,
        ])
        .args(["--out-trade-no", order, "--amount", "1.00"])
        .output()
        .expect("run payguard simulate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "#1 <status> ..."
    stdout
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {stdout:?}"))
}

fn downloads(outcome: &str) -> String {
    format!("payguard_platform_certificate_downloads_total{{merchant=\"wx\",outcome=\"{outcome}\"}}")
}

fn prefix() -> String {
    format!("pg:certs-{}-{}:", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn a_channel_rotation_is_downloaded_on_the_first_unknown_serial_and_shared_with_other_replicas() {
    let up = Upstream::start();
    let sim = ChannelSim::start();
    let redis = RedisServer::start();
    let prefix = prefix();
    let pg = Payguard::start(&config(&up, &redis, &prefix, &sim.base_url(), &sim.ca_ref()));
    // The download at start: the current certificate, verified and kept.
    assert!(pg.wait_metric(&downloads("updated"), 1.0) >= 1.0, "{}", pg.logs());
    assert_eq!(
        pg.wait_metric("payguard_platform_certificates{merchant=\"wx\"}", 1.0),
        1.0
    );
    let sent = sim.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].method.as_str(), sent[0].target.as_str()),
        ("GET", "/v3/certificates")
    );
    assert_eq!(
        sent[0].signature_check,
        Ok(()),
        "the download is signed like every call"
    );

    // The channel rotates: a notification signed with the new key names a serial nobody knows.
    sim.set_wx_certificates(WxCertificates::Rotated);
    assert_eq!(notify_signed_with_rotated_key(&pg, "rot-0001"), 401);
    assert!(up.requests().is_empty(), "an unverified notification is not forwarded");
    // That serial triggers a download at once; the list is signed with the new key itself.
    assert!(pg.wait_metric(&downloads("updated"), 2.0) >= 2.0, "{}", pg.logs());
    assert_eq!(
        pg.wait_metric("payguard_platform_certificates{merchant=\"wx\"}", 2.0),
        2.0
    );
    // WeChat Pay's retry of the notification now verifies, without a reload.
    assert_eq!(notify_signed_with_rotated_key(&pg, "rot-0001"), 204, "{}", pg.logs());
    assert_eq!(up.requests().len(), 1);
    // So does the route that verifies with the account's keys.
    assert_eq!(
        notify_route_signed_with_rotated_key(&pg, "/notify/wechatpay-account", "rot-0003"),
        204,
        "{}",
        pg.logs()
    );
    assert_eq!(up.requests().len(), 2);
    assert!(
        pg.logged(WX_ROTATED_SERIAL),
        "the log names the new serial: {}",
        pg.logs()
    );

    // A second replica that cannot reach the channel learns the serial from the store.
    let up2 = Upstream::start();
    let replica = Payguard::start(&config(&up2, &redis, &prefix, "https://127.0.0.1:9", &sim.ca_ref()));
    assert_eq!(
        replica.wait_metric("payguard_platform_certificates{merchant=\"wx\"}", 2.0),
        2.0,
        "{}",
        replica.logs()
    );
    assert!(replica.wait_metric(&downloads("failed"), 1.0) >= 1.0);
    assert_eq!(
        notify_signed_with_rotated_key(&replica, "rot-0002"),
        204,
        "{}",
        replica.logs()
    );
    assert_eq!(up2.requests().len(), 1);
}

#[test]
fn a_certificate_list_that_does_not_decrypt_with_the_api_v3_key_adds_nothing() {
    let up = Upstream::start();
    let sim = ChannelSim::start();
    sim.set_wx_certificates(WxCertificates::Forged);
    let redis = RedisServer::start();
    let pg = Payguard::start(&config(&up, &redis, &prefix(), &sim.base_url(), &sim.ca_ref()));
    assert!(pg.wait_metric(&downloads("failed"), 1.0) >= 1.0, "{}", pg.logs());
    assert!(pg.logged("AES-GCM authentication failed"), "{}", pg.logs());
    assert_eq!(pg.metric("payguard_platform_certificates{merchant=\"wx\"}"), 0.0);
    // The rotated serial stays unknown: its notification is refused, nothing is forwarded.
    assert_eq!(notify_signed_with_rotated_key(&pg, "rot-0003"), 401);
    assert!(up.requests().is_empty());
    // The APIv3 key appears nowhere in the log.
    assert!(!pg.logs().contains(API_V3_KEY));
}
