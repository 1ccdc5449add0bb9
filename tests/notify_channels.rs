//! Payment notifications of every channel through the real proxy, with the Redis store and a
//! recording backend.
//!
//! One body of test logic per scenario, run once per channel through a [`ChannelCase`]: the
//! channel's config, its test keys, how to tamper with its security header and how its success
//! and failure answers look. Notifications are produced by each channel's own `simulate`, with
//! the public test keys under `tests/fixtures/`.

mod support;

use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use payguard::channels::standard_webhooks::StandardWebhookSigner;
use payguard::channels::{registry, ChannelKind, EventKind, SimulateKeys, SimulateSpec, SimulatedNotification};
use support::payguard::Payguard;
use support::redis_server::RedisServer;
use support::upstream::{Behavior, Recorded, Upstream};

/// Signs what payguard forwards to the backend (Standard Webhooks).
const BACKEND_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// payguard's backend timeout in these tests; the timeout scenario's backend is slower.
const NOTIFY_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one delivery holds an event's dedup claim (must exceed `NOTIFY_TIMEOUT`).
const LEASE: Duration = Duration::from_secs(10);

const ALIPAY_APP_ID: &str = "2021000000000001";
const ALIPAY_SELLER_ID: &str = "2088000000000001";
const WECHAT_V3_MCHID: &str = "1900000001";
const WECHAT_V3_APPID: &str = "wx0000000000000001";
const WECHAT_V3_API_KEY: &str = "0123456789abcdef0123456789ABCDEF";
const WECHAT_V3_SERIAL: &str = "7A3C0FFEE1234567890ABCDEF0123456789ABCDE";
const WECHAT_V2_APPID: &str = "wx0000000000000002";
const WECHAT_V2_MCH_ID: &str = "1900000002";
const WECHAT_V2_API_KEY: &str = "abcdefghijklmnopqrstuvwxyz012345";
const STRIPE_SECRET: &str = "whsec_test_stripe_endpoint_secret_1234567890";
const UNIONPAY_MER_ID: &str = "777290058110048";
const STANDARD_WEBHOOKS_SECRET: &str = "whsec_cGF5Z3VhcmQtdGVzdC1zdGFuZGFyZC13ZWJob29rcyE=";

const WECHAT_V2_SUCCESS: &[u8] =
    b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";
const WECHAT_V2_FAIL: &[u8] =
    b"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[busy]]></return_msg></xml>";

fn fixture(path: &str) -> String {
    format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn read_fixture(path: &str) -> String {
    std::fs::read_to_string(fixture(path)).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// Headers of a simulated notification.
type Headers = [(String, String)];

/// What differs between channels; everything else is shared scenario logic.
struct ChannelCase {
    kind: ChannelKind,
    /// YAML of `notify.channel`, indented for its place in the route.
    channel_yaml: String,
    keys: SimulateKeys,
    app_id: Option<&'static str>,
    mch_id: Option<&'static str>,
    /// Changes one security header so the signature no longer verifies (channels that have one).
    tamper_header: Option<fn(&mut Headers)>,
    /// The channel's exact success acknowledgement.
    is_success: fn(u16, &[u8]) -> bool,
    /// The channel's "failure, retry later" answer.
    is_failure: fn(u16, &[u8]) -> bool,
    /// A legacy handler's reply meaning "accepted" / "not accepted" in the channel's own format
    /// (passthrough mode relays it).
    backend_accepts: (u16, &'static [u8]),
    backend_refuses: (u16, &'static [u8]),
}

fn header_mut<'a>(headers: &'a mut [(String, String)], name: &str) -> &'a mut String {
    headers
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("simulated notification has no {name} header"))
}

/// Flips one character of a base64/hex/text value (keeps its length and alphabet).
fn flip(value: &mut String, at: usize) {
    let mut bytes = value.clone().into_bytes();
    let i = at.min(bytes.len() - 1);
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    *value = String::from_utf8(bytes).unwrap();
}

fn alipay() -> ChannelCase {
    ChannelCase {
        kind: ChannelKind::Alipay,
        channel_yaml: format!(
            "alipay:\n          app_id: '{ALIPAY_APP_ID}'\n          seller_id: '{ALIPAY_SELLER_ID}'\n          alipay_public_key: 'file:{}'\n",
            fixture("alipay/app_public_key.pem")
        ),
        keys: SimulateKeys {
            private_key_pem: Some(read_fixture("alipay/app_private_key.pem")),
            ..Default::default()
        },
        app_id: Some(ALIPAY_APP_ID),
        mch_id: Some(ALIPAY_SELLER_ID),
        // Alipay signs form fields only; it sends no security headers.
        tamper_header: None,
        is_success: |s, b| s == 200 && b == b"success",
        is_failure: |s, b| s == 200 && b == b"fail",
        backend_accepts: (200, b"success"),
        backend_refuses: (200, b"fail"),
    }
}

fn wechatpay_v3() -> ChannelCase {
    ChannelCase {
        kind: ChannelKind::WechatpayV3,
        channel_yaml: format!(
            "wechatpay_v3:\n          mchid: '{WECHAT_V3_MCHID}'\n          appid: '{WECHAT_V3_APPID}'\n          api_v3_key: '{WECHAT_V3_API_KEY}'\n          platform_certificates: ['file:{}']\n",
            fixture("wechatpay_v3/simulate_platform_certificate.pem")
        ),
        keys: SimulateKeys {
            private_key_pem: Some(read_fixture("wechatpay_v3/simulate_platform_private_key.pem")),
            key_id: Some(WECHAT_V3_SERIAL.into()),
            api_v3_key: Some(WECHAT_V3_API_KEY.as_bytes().to_vec()),
            ..Default::default()
        },
        app_id: Some(WECHAT_V3_APPID),
        mch_id: Some(WECHAT_V3_MCHID),
        // The nonce is part of the signed message.
        tamper_header: Some(|h| flip(header_mut(h, "Wechatpay-Nonce"), 3)),
        is_success: |s, _| s == 200 || s == 204,
        is_failure: |s, b| {
            (400..600).contains(&s)
                && serde_json::from_slice::<serde_json::Value>(b).is_ok_and(|v| v["code"] == "FAIL")
        },
        backend_accepts: (204, b""),
        backend_refuses: (500, br#"{"code":"FAIL","message":"busy"}"#),
    }
}

fn wechatpay_v2() -> ChannelCase {
    ChannelCase {
        kind: ChannelKind::WechatpayV2,
        channel_yaml: format!(
            "wechatpay_v2:\n          app_id: '{WECHAT_V2_APPID}'\n          mch_id: '{WECHAT_V2_MCH_ID}'\n          api_key: '{WECHAT_V2_API_KEY}'\n"
        ),
        keys: SimulateKeys {
            secret: Some(WECHAT_V2_API_KEY.as_bytes().to_vec()),
            ..Default::default()
        },
        app_id: Some(WECHAT_V2_APPID),
        mch_id: Some(WECHAT_V2_MCH_ID),
        // The XML body carries `sign`; there are no security headers.
        tamper_header: None,
        is_success: |s, b| s == 200 && b == WECHAT_V2_SUCCESS,
        is_failure: |s, b| {
            s == 200
                && b.starts_with(b"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[")
                && b.ends_with(b"]]></return_msg></xml>")
        },
        backend_accepts: (200, WECHAT_V2_SUCCESS),
        backend_refuses: (200, WECHAT_V2_FAIL),
    }
}

fn stripe() -> ChannelCase {
    ChannelCase {
        kind: ChannelKind::Stripe,
        channel_yaml: format!("stripe:\n          endpoint_secrets: ['{STRIPE_SECRET}']\n"),
        keys: SimulateKeys {
            secret: Some(STRIPE_SECRET.as_bytes().to_vec()),
            ..Default::default()
        },
        app_id: None,
        mch_id: None,
        // Last hex digit of `v1=...`.
        tamper_header: Some(|h| {
            let v = header_mut(h, "Stripe-Signature");
            let last = v.len() - 1;
            let c = if v.ends_with('0') { "1" } else { "0" };
            v.replace_range(last.., c);
        }),
        is_success: |s, _| (200..300).contains(&s),
        is_failure: |s, _| !(200..300).contains(&s),
        backend_accepts: (200, b"{\"received\":true}"),
        backend_refuses: (500, b"busy"),
    }
}

fn unionpay() -> ChannelCase {
    ChannelCase {
        kind: ChannelKind::Unionpay,
        channel_yaml: format!(
            "unionpay:\n          mer_id: '{UNIONPAY_MER_ID}'\n          root_cert: 'file:{}'\n          middle_cert: 'file:{}'\n",
            fixture("unionpay/root.pem"),
            fixture("unionpay/middle.pem")
        ),
        keys: SimulateKeys {
            private_key_pem: Some(read_fixture("unionpay/leaf.key.pem")),
            certificate_pem: Some(read_fixture("unionpay/leaf.pem")),
            ..Default::default()
        },
        app_id: None,
        mch_id: Some(UNIONPAY_MER_ID),
        // The signature and its certificate are form fields; no security headers.
        tamper_header: None,
        is_success: |s, _| s == 200,
        is_failure: |s, _| s != 200,
        backend_accepts: (200, b"ok"),
        backend_refuses: (500, b"fail"),
    }
}

fn standard_webhooks() -> ChannelCase {
    ChannelCase {
        kind: ChannelKind::StandardWebhooks,
        channel_yaml: format!("standard_webhooks:\n          secrets: ['{STANDARD_WEBHOOKS_SECRET}']\n"),
        keys: SimulateKeys {
            secret: Some(STANDARD_WEBHOOKS_SECRET.as_bytes().to_vec()),
            ..Default::default()
        },
        app_id: None,
        mch_id: None,
        // `webhook-id` is part of the signed content.
        tamper_header: Some(|h| header_mut(h, "webhook-id").push('x')),
        is_success: |s, _| (200..300).contains(&s),
        is_failure: |s, _| !(200..300).contains(&s) && s != 410,
        backend_accepts: (204, b""),
        backend_refuses: (503, b"busy"),
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

/// One Redis for the test binary (with nextest: for the test process); tests share it under
/// distinct key prefixes. Its process dies with the test process.
fn shared_redis() -> &'static RedisServer {
    static REDIS: OnceLock<RedisServer> = OnceLock::new();
    REDIS.get_or_init(RedisServer::start)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normalized,
    Passthrough,
}

/// A payguard with one notify route at `/notify/<channel>` in front of a recording backend.
struct Rig {
    up: Upstream,
    pg: Payguard,
    path: String,
}

impl Rig {
    fn start(case: &ChannelCase, mode: Mode) -> Self {
        Self::start_with_redis(case, mode, &shared_redis().url(), LEASE)
    }

    fn start_with_redis(case: &ChannelCase, mode: Mode, redis_url: &str, lease: Duration) -> Self {
        let up = Upstream::start();
        let path = format!("/notify/{}", case.kind.as_str());
        let forward = match mode {
            Mode::Normalized => "normalized",
            Mode::Passthrough => "passthrough",
        };
        let prefix = format!("pg:{}:", uuid_like());
        let config = format!(
            "upstream:\n  address: {up}\nstore:\n  backend: redis\n  redis:\n    url: {redis_url}\n    key_prefix: '{prefix}'\n    command_timeout: 300ms\n    connect_timeout: 300ms\nroutes:\n  - name: notify\n    match: {{path: {path}}}\n    policy: notify\n    notify:\n      channel:\n        {channel}      forward: {forward}\n      backend_path: /internal/payments\n      timeout: {timeout}ms\n      lease: {lease}ms\n      webhook_secret: '{BACKEND_WHSEC}'\n",
            up = up.addr,
            channel = case.channel_yaml,
            timeout = NOTIFY_TIMEOUT.as_millis(),
            lease = lease.as_millis(),
        );
        let pg = Payguard::start(&config);
        Self { up, pg, path }
    }

    fn send(&self, n: &SimulatedNotification) -> (u16, Vec<u8>) {
        self.send_with(n, &[])
    }

    fn send_with(&self, n: &SimulatedNotification, extra: &[(&str, &str)]) -> (u16, Vec<u8>) {
        send_to(&self.pg.url(&self.path), n, extra)
    }

    /// How many notifications ended with `outcome` (the metric).
    fn outcomes(&self, case: &ChannelCase, outcome: &str) -> f64 {
        self.pg.metric(&format!(
            "payguard_notifications_total{{channel=\"{}\",outcome=\"{outcome}\",route=\"notify\"}}",
            case.kind
        ))
    }

    #[track_caller]
    fn assert_outcome(&self, case: &ChannelCase, outcome: &str, count: f64) {
        assert_eq!(
            self.outcomes(case, outcome),
            count,
            "{} {outcome}\n{}",
            case.kind,
            self.pg.logs()
        );
    }

    fn forwarded(&self) -> Vec<Recorded> {
        self.up.requests()
    }

    fn answer(&self, status: u16, body: &[u8], delay: Duration) {
        self.up.set_behavior(Behavior {
            status,
            headers: Vec::new(),
            body: body.to_vec(),
            delay,
        });
    }
}

/// A POST of `n` (content type and channel headers) to `url`, body not set yet.
fn post(client: &reqwest::blocking::Client, url: &str, n: &SimulatedNotification) -> reqwest::blocking::RequestBuilder {
    n.headers.iter().fold(
        client.post(url).header("content-type", &n.content_type),
        |req, (k, v)| req.header(k, v),
    )
}

fn reply_of(resp: reqwest::blocking::Response) -> (u16, Vec<u8>) {
    let status = resp.status().as_u16();
    (status, resp.bytes().expect("response body").to_vec())
}

fn send_to(url: &str, n: &SimulatedNotification, extra: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let mut req = post(http_client(), url, n).body(n.body.clone());
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    reply_of(req.send().expect("send notification"))
}

fn http_client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("http client")
    })
}

/// Unique enough for key prefixes and order numbers within one Redis.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A payment (or refund) of 88.80 CNY for `order`, signed now.
fn spec(case: &ChannelCase, order: &str, kind: EventKind) -> SimulateSpec {
    SimulateSpec {
        out_trade_no: order.into(),
        amount_minor: 8880,
        currency: "CNY".into(),
        kind,
        out_refund_no: kind.is_refund().then(|| format!("{order}-R1")),
        refund_amount_minor: kind.is_refund().then_some(1000),
        channel_txn_id: format!("4200000000{}", order.len()),
        at: jiff::Timestamp::now(),
        notification_id: format!("ntf-{order}-{}", kind.as_str().replace('.', "_")),
        app_id: case.app_id.map(str::to_string),
        mch_id: case.mch_id.map(str::to_string),
    }
}

fn simulate(case: &ChannelCase, spec: &SimulateSpec) -> SimulatedNotification {
    registry::simulate(case.kind, spec, &case.keys).unwrap_or_else(|e| panic!("simulate {}: {e}", case.kind))
}

fn notification(case: &ChannelCase, order: &str, kind: EventKind) -> SimulatedNotification {
    simulate(case, &spec(case, order, kind))
}

fn new_order() -> String {
    format!("ORD{}", uuid_like().replace('-', ""))
}

#[track_caller]
fn assert_success(case: &ChannelCase, rig: &Rig, (status, body): &(u16, Vec<u8>)) {
    assert!(
        (case.is_success)(*status, body),
        "{}: expected the success ack, got {status} {:?}\n{}",
        case.kind,
        String::from_utf8_lossy(body),
        rig.pg.logs()
    );
}

#[track_caller]
fn assert_failure(case: &ChannelCase, rig: &Rig, (status, body): &(u16, Vec<u8>)) {
    assert!(
        (case.is_failure)(*status, body),
        "{}: expected the failure answer, got {status} {:?}\n{}",
        case.kind,
        String::from_utf8_lossy(body),
        rig.pg.logs()
    );
}

/// `webhook-signature` as the Standard Webhooks spec defines it, computed here independently of
/// payguard: `v1,` + base64(HMAC-SHA256(base64-decoded secret, "id.timestamp.body")).
fn standard_webhooks_v1(whsec: &str, id: &str, ts: i64, body: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(whsec.trim_start_matches("whsec_")).expect("whsec_ base64");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("hmac key");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    format!("v1,{}", b64.encode(mac.finalize().into_bytes()))
}

/// The forwarded request is the normalized event, signed for the backend.
fn checked_event(fwd: &Recorded) -> serde_json::Value {
    assert_eq!(fwd.method, "POST");
    assert_eq!(fwd.target, "/internal/payments");
    assert_eq!(fwd.header("content-type"), Some("application/json"));
    let event: serde_json::Value = serde_json::from_slice(&fwd.body).expect("forwarded body is JSON");
    let id = event["id"].as_str().expect("event id");
    assert!(id.starts_with("evt_"), "{id}");
    assert_eq!(fwd.header("webhook-id"), Some(id));
    assert_eq!(fwd.header("x-pg-event-id"), Some(id));
    // Any Standard Webhooks library checks this: v1,base64(HMAC(id.timestamp.body)).
    let ts: i64 = fwd
        .header("webhook-timestamp")
        .expect("webhook-timestamp")
        .parse()
        .unwrap();
    assert!((jiff::Timestamp::now().as_second() - ts).abs() < 60);
    let expected = standard_webhooks_v1(BACKEND_WHSEC, id, ts, &fwd.body);
    assert_eq!(fwd.header("webhook-signature"), Some(expected.as_str()));
    let signer = StandardWebhookSigner::from_whsec(BACKEND_WHSEC).unwrap();
    assert_eq!(expected, signer.sign(id, ts, &fwd.body));
    event
}

// ---------------------------------------------------------------------------------------------
// Scenarios (each runs for every channel listed in its `per_channel!` below)

fn genuine_is_forwarded_once_normalized_signed_and_acked(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let order = new_order();
    let reply = rig.send(&notification(case, &order, EventKind::PaymentSucceeded));
    assert_success(case, &rig, &reply);
    let fwd = rig.forwarded();
    assert_eq!(fwd.len(), 1, "forwarded exactly once");
    let event = checked_event(&fwd[0]);
    assert_eq!(event["channel"], case.kind.as_str());
    assert_eq!(event["kind"], "payment.succeeded");
    assert_eq!(event["out_trade_no"], order.as_str());
    assert!(
        event["amount_minor"].is_i64(),
        "integer minor units: {}",
        event["amount_minor"]
    );
    assert_eq!(event["amount_minor"], 8880);
    assert_eq!(event["currency"], "CNY");
    assert!(event["refund"].is_null(), "{}", event["refund"]);
    // WeChat Pay v2 notifications carry no notification id.
    let spec_id = spec(case, &order, EventKind::PaymentSucceeded).notification_id;
    let expected_id = (case.kind != ChannelKind::WechatpayV2).then_some(spec_id.as_str());
    assert_eq!(event["notification_id"].as_str(), expected_id);
    for field in ["received_at", "occurred_at"] {
        let text = event[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}: {}", event[field]));
        assert!(text.parse::<jiff::Timestamp>().is_ok(), "{field} is RFC 3339: {text}");
    }

    // A refund of the same order is another event: forwarded, with its refund object.
    let reply = rig.send(&notification(case, &order, EventKind::RefundSucceeded));
    assert_success(case, &rig, &reply);
    let fwd = rig.forwarded();
    assert_eq!(fwd.len(), 2, "the refund is forwarded too");
    let refund = checked_event(&fwd[1]);
    assert_eq!(refund["channel"], case.kind.as_str());
    assert_eq!(refund["kind"], "refund.succeeded");
    assert!(refund["refund"].is_object(), "{}", refund["refund"]);
    assert_eq!(refund["refund"]["amount_minor"], 1000);
    assert_ne!(refund["id"], event["id"]);
}

fn duplicate_is_acked_not_forwarded(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let spec = spec(case, &new_order(), EventKind::PaymentSucceeded);
    assert_success(case, &rig, &rig.send(&simulate(case, &spec)));
    // Channels re-send the very same bytes, or (WeChat v3) re-sign with a new nonce.
    assert_success(case, &rig, &rig.send(&simulate(case, &spec)));
    assert_success(case, &rig, &rig.send(&simulate(case, &spec)));
    assert_eq!(rig.forwarded().len(), 1, "duplicates are acked, never forwarded");
    rig.assert_outcome(case, "forwarded", 1.0);
    rig.assert_outcome(case, "duplicate", 2.0);
}

fn concurrent_copies_are_forwarded_once(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    // A slow backend keeps the first claim held while the other copies arrive.
    rig.answer(200, b"ok", Duration::from_millis(150));
    let n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    let url = rig.pg.url(&rig.path);
    let replies: Vec<(u16, Vec<u8>)> = thread::scope(|s| {
        let handles: Vec<_> = (0..50).map(|_| s.spawn(|| send_to(&url, &n, &[]))).collect();
        handles.into_iter().map(|h| h.join().expect("sender thread")).collect()
    });
    assert_eq!(rig.forwarded().len(), 1, "exactly one forward for 50 copies");
    for reply in &replies {
        assert!(
            (case.is_success)(reply.0, &reply.1) || (case.is_failure)(reply.0, &reply.1),
            "{}: neither success nor failure: {} {:?}",
            case.kind,
            reply.0,
            String::from_utf8_lossy(&reply.1)
        );
    }
    assert!(
        replies.iter().any(|r| (case.is_success)(r.0, &r.1)),
        "the forwarded copy is acked"
    );
    rig.assert_outcome(case, "forwarded", 1.0);
    let accounted: f64 = ["forwarded", "duplicate", "in_flight", "store_error"]
        .iter()
        .map(|o| rig.outcomes(case, o))
        .sum();
    assert_eq!(
        accounted, 50.0,
        "every copy was forwarded, a duplicate, in flight or a store error"
    );
    // Whoever was told to retry now gets the success ack, still without a second forward.
    assert_success(case, &rig, &rig.send(&n));
    assert_eq!(rig.forwarded().len(), 1);
}

fn backend_500_answers_failure_then_the_retry_is_forwarded_once(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    rig.answer(500, b"boom", Duration::ZERO);
    let n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    assert_failure(case, &rig, &rig.send(&n));
    assert_eq!(rig.forwarded().len(), 1);
    rig.assert_outcome(case, "backend_error", 1.0);

    rig.answer(200, b"ok", Duration::ZERO);
    assert_success(case, &rig, &rig.send(&n));
    let fwd = rig.forwarded();
    assert_eq!(fwd.len(), 2, "the released claim lets the retry through");
    let (first, retry) = (checked_event(&fwd[0]), checked_event(&fwd[1]));
    assert_eq!(first["id"], retry["id"], "the event id is the same across retries");
    assert_success(case, &rig, &rig.send(&n));
    assert_eq!(rig.forwarded().len(), 2, "then it is done");
}

fn backend_timeout_answers_failure_then_the_retry_is_forwarded_once(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    rig.answer(200, b"ok", NOTIFY_TIMEOUT * 3);
    let n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    let started = Instant::now();
    assert_failure(case, &rig, &rig.send(&n));
    assert!(started.elapsed() < NOTIFY_TIMEOUT * 3, "answered at the notify timeout");
    assert_eq!(rig.forwarded().len(), 1);
    rig.assert_outcome(case, "backend_error", 1.0);

    rig.answer(200, b"ok", Duration::ZERO);
    assert_success(case, &rig, &rig.send(&n));
    assert_eq!(rig.forwarded().len(), 2, "the released claim lets the retry through");
    assert_success(case, &rig, &rig.send(&n));
    assert_eq!(rig.forwarded().len(), 2, "then it is done");
}

/// Changes one byte of the amount in the body (`8880` or `88.80`), keeping it well-formed.
fn tamper_amount(body: &mut [u8]) {
    let pos = body
        .windows(2)
        .position(|w| w == b"88")
        .expect("the amount appears in the body");
    body[pos] = b'9';
}

fn tampered_body_is_rejected_and_nothing_forwarded(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let mut n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    if case.kind == ChannelKind::WechatpayV3 {
        // The amount is inside the encrypted resource; change the signed envelope instead.
        let text = String::from_utf8(n.body.clone()).unwrap();
        n.body = text.replacen("支付通知", "退款通知", 1).into_bytes();
        assert_ne!(n.body, text.into_bytes());
    } else {
        tamper_amount(&mut n.body);
    }
    assert_failure(case, &rig, &rig.send(&n));
    assert!(rig.forwarded().is_empty());
    rig.assert_outcome(case, "rejected_signature", 1.0);
}

fn tampered_header_is_rejected_and_nothing_forwarded(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let mut n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    let tamper = case.tamper_header.expect("channel with security headers");
    tamper(&mut n.headers);
    assert_failure(case, &rig, &rig.send(&n));
    assert!(rig.forwarded().is_empty());
    rig.assert_outcome(case, "rejected_signature", 1.0);
}

fn stale_timestamp_is_rejected_and_nothing_forwarded(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let mut spec = spec(case, &new_order(), EventKind::PaymentSucceeded);
    spec.at = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(30);
    assert_failure(case, &rig, &rig.send(&simulate(case, &spec)));
    // Too far in the future is as stale as too old.
    spec.at = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(30);
    assert_failure(case, &rig, &rig.send(&simulate(case, &spec)));
    assert!(rig.forwarded().is_empty());
    rig.assert_outcome(case, "rejected_stale", 2.0);
}

fn unknown_serial_is_rejected_and_nothing_forwarded(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let mut keys = case.keys.clone();
    keys.key_id = Some("5157F09EFDC096DE15EBE81A47057A7232F1B8E1".into());
    let n = registry::simulate(case.kind, &spec(case, &new_order(), EventKind::PaymentSucceeded), &keys).unwrap();
    assert_failure(case, &rig, &rig.send(&n));
    assert!(rig.forwarded().is_empty());
    rig.assert_outcome(case, "rejected_unknown_key", 1.0);
}

fn passthrough_relays_success_with_verified_headers_only_from_payguard(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Passthrough);
    let (status, body) = case.backend_accepts;
    rig.up.set_behavior(Behavior {
        status,
        headers: vec![
            ("x-legacy-handler".into(), "v1".into()),
            ("x-request-id".into(), "rid-1".into()),
        ],
        body: body.to_vec(),
        delay: Duration::ZERO,
    });
    let n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    let resp = post(http_client(), &rig.pg.url(&rig.path), &n)
        .header("x-request-id", "rid-1")
        .header("X-PG-Verified", "spoofed")
        .header("X-PG-Event-Id", "evt_spoofed")
        .body(n.body.clone())
        .send()
        .expect("send");
    let relayed = |name: &str| -> Vec<String> {
        let values = resp.headers().get_all(name).iter();
        values.map(|v| v.to_str().unwrap().to_string()).collect()
    };
    assert_eq!(relayed("x-legacy-handler"), ["v1"], "the backend's headers are relayed");
    assert_eq!(
        relayed("x-request-id"),
        ["rid-1"],
        "one request id, not one from each side"
    );
    let reply = reply_of(resp);
    assert_eq!(reply, (status, body.to_vec()), "the backend's reply is relayed");
    assert_success(case, &rig, &reply);

    let fwd = rig.forwarded();
    assert_eq!(fwd.len(), 1);
    assert_eq!(fwd[0].body, n.body, "the original body, byte for byte");
    assert_eq!(fwd[0].target, "/internal/payments");
    assert_eq!(
        fwd[0].header_values("x-pg-verified"),
        ["1"],
        "a client's X-PG-Verified never passes"
    );
    let ids = fwd[0].header_values("x-pg-event-id");
    assert_eq!(ids.len(), 1);
    assert!(ids[0].starts_with("evt_") && ids[0] != "evt_spoofed", "{ids:?}");
    for (name, value) in &n.headers {
        assert_eq!(
            fwd[0].header(&name.to_ascii_lowercase()),
            Some(value.as_str()),
            "channel header {name} passes unchanged"
        );
    }

    // A retry is a proven duplicate: acked by payguard itself, not forwarded.
    assert_success(case, &rig, &rig.send(&n));
    assert_eq!(rig.forwarded().len(), 1);
}

fn passthrough_relays_refusal_and_releases_the_claim(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Passthrough);
    let (status, body) = case.backend_refuses;
    rig.answer(status, body, Duration::ZERO);
    let n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    let reply = rig.send(&n);
    assert_eq!(reply, (status, body.to_vec()), "the backend's refusal is relayed");
    assert_failure(case, &rig, &reply);
    assert_eq!(rig.forwarded().len(), 1);

    let (status, body) = case.backend_accepts;
    rig.answer(status, body, Duration::ZERO);
    let reply = rig.send(&n);
    assert_eq!(reply, (status, body.to_vec()));
    assert_eq!(rig.forwarded().len(), 2, "the released claim lets the retry through");
    assert_success(case, &rig, &rig.send(&n));
    assert_eq!(rig.forwarded().len(), 2);
}

fn second_partial_refund_is_forwarded_too(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let order = new_order();
    let first = spec(case, &order, EventKind::RefundSucceeded);
    let mut second = first.clone();
    second.out_refund_no = Some(format!("{order}-R2"));
    // Alipay and Stripe report the cumulative refunded amount.
    second.refund_amount_minor = Some(3000);
    second.notification_id = format!("{}-2", first.notification_id);
    assert_success(case, &rig, &rig.send(&simulate(case, &first)));
    assert_success(case, &rig, &rig.send(&simulate(case, &second)));
    let fwd = rig.forwarded();
    assert_eq!(fwd.len(), 2, "two refunds of one order are two events");
    assert_eq!(checked_event(&fwd[0])["refund"]["amount_minor"], 1000);
    assert_eq!(checked_event(&fwd[1])["refund"]["amount_minor"], 3000);
    // Retries of either are still duplicates.
    assert_success(case, &rig, &rig.send(&simulate(case, &first)));
    assert_success(case, &rig, &rig.send(&simulate(case, &second)));
    assert_eq!(rig.forwarded().len(), 2);
}

fn late_pending_after_succeeded_is_acked_not_forwarded(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let order = new_order();
    assert_success(
        case,
        &rig,
        &rig.send(&notification(case, &order, EventKind::PaymentSucceeded)),
    );
    assert_eq!(rig.forwarded().len(), 1);
    assert_success(
        case,
        &rig,
        &rig.send(&notification(case, &order, EventKind::PaymentPending)),
    );
    assert_eq!(rig.forwarded().len(), 1, "a late pending never reaches the backend");
    rig.assert_outcome(case, "late_pending", 1.0);

    // A pending of another order still goes through.
    assert_success(
        case,
        &rig,
        &rig.send(&notification(case, &new_order(), EventKind::PaymentPending)),
    );
    let fwd = rig.forwarded();
    assert_eq!(fwd.len(), 2);
    assert_eq!(checked_event(&fwd[1])["kind"], "payment.pending");
}

fn duplicated_security_header_is_rejected_and_nothing_forwarded(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    let mut tampered = n.clone();
    case.tamper_header.expect("channel with security headers")(&mut tampered.headers);
    // The genuine value plus a second one: ambiguous, refused.
    let (name, value) = n
        .headers
        .iter()
        .zip(&tampered.headers)
        .find(|(a, b)| a != b)
        .map(|(_, b)| b.clone())
        .expect("tampering changed a header");
    assert_failure(case, &rig, &rig.send_with(&n, &[(&name, &value)]));
    assert!(rig.forwarded().is_empty());
    rig.assert_outcome(case, "rejected_malformed", 1.0);
}

fn foreign_merchant_is_rejected_and_nothing_forwarded(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let mut spec = spec(case, &new_order(), EventKind::PaymentSucceeded);
    // Validly signed with the channel's key, but addressed to another merchant (business checks).
    spec.mch_id = spec.mch_id.map(|m| format!("{}9", &m[..m.len() - 1]));
    spec.app_id = spec.app_id.map(|a| format!("{a}x"));
    assert_failure(case, &rig, &rig.send(&simulate(case, &spec)));
    assert!(rig.forwarded().is_empty());
    rig.assert_outcome(case, "rejected_business", 1.0);
}

fn passthrough_backend_timeout_answers_failure_and_releases_the_claim(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Passthrough);
    let (status, body) = case.backend_accepts;
    rig.answer(status, body, NOTIFY_TIMEOUT * 3);
    let n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    assert_failure(case, &rig, &rig.send(&n));
    assert_eq!(rig.forwarded().len(), 1);

    rig.answer(status, body, Duration::ZERO);
    assert_eq!(rig.send(&n), (status, body.to_vec()));
    assert_eq!(rig.forwarded().len(), 2, "the released claim lets the retry through");
}

fn chunked_body_is_verified_on_its_bytes(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    let resp = post(http_client(), &rig.pg.url(&rig.path), &n)
        // A reader of unknown length is sent with Transfer-Encoding: chunked.
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(n.body.clone())))
        .send()
        .expect("send");
    let reply = reply_of(resp);
    assert_success(case, &rig, &reply);
    assert_eq!(rig.forwarded().len(), 1);
}

fn oversized_body_is_rejected_and_the_connection_stays_usable(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let mut big = notification(case, &new_order(), EventKind::PaymentSucceeded);
    big.body.resize(200 * 1024, b' ');
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let send = |n: &SimulatedNotification| {
        reply_of(
            post(&client, &rig.pg.url(&rig.path), n)
                .body(n.body.clone())
                .send()
                .expect("send"),
        )
    };
    assert_failure(case, &rig, &send(&big));
    assert!(rig.forwarded().is_empty());
    rig.assert_outcome(case, "body_too_large", 1.0);
    // Whatever happened to the unread rest of that body, the next notification is understood.
    assert_success(
        case,
        &rig,
        &send(&notification(case, &new_order(), EventKind::PaymentSucceeded)),
    );
    assert_eq!(rig.forwarded().len(), 1);
}

fn compressed_body_is_refused_and_nothing_forwarded(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Passthrough);
    let (status, body) = case.backend_accepts;
    rig.answer(status, body, Duration::ZERO);
    // The signed bytes under a Content-Encoding label: a backend would try to decode them, and
    // payguard verified something other than the decoded body.
    let n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    assert_failure(case, &rig, &rig.send_with(&n, &[("Content-Encoding", "gzip")]));
    assert!(rig.forwarded().is_empty());
    rig.assert_outcome(case, "rejected_malformed", 1.0);
    // `identity` is no encoding at all.
    assert_eq!(
        rig.send_with(&n, &[("Content-Encoding", "identity")]),
        (status, body.to_vec())
    );
    assert_eq!(rig.forwarded().len(), 1);
}

fn non_post_is_rejected_and_nothing_forwarded(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let reply = reply_of(http_client().get(rig.pg.url(&rig.path)).send().expect("send"));
    assert_failure(case, &rig, &reply);
    assert!(rig.forwarded().is_empty());
    rig.assert_outcome(case, "rejected_method", 1.0);
}

fn pending_arriving_while_succeeded_is_forwarded_is_not_forwarded(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    // The backend is still working on the succeeded event when the pending one arrives.
    rig.answer(200, b"ok", Duration::from_millis(300));
    let order = new_order();
    let succeeded = notification(case, &order, EventKind::PaymentSucceeded);
    let pending = notification(case, &order, EventKind::PaymentPending);
    let url = rig.pg.url(&rig.path);
    let (first, late) = thread::scope(|s| {
        let first = s.spawn(|| send_to(&url, &succeeded, &[]));
        thread::sleep(Duration::from_millis(100));
        let late = send_to(&url, &pending, &[]);
        (first.join().expect("sender"), late)
    });
    assert_success(case, &rig, &first);
    assert_success(case, &rig, &late);
    let fwd = rig.forwarded();
    assert_eq!(fwd.len(), 1, "only the succeeded event reaches the backend");
    assert_eq!(checked_event(&fwd[0])["kind"], "payment.succeeded");
    rig.assert_outcome(case, "late_pending", 1.0);
}

fn redis_down_fails_closed_within_a_second(case: &ChannelCase) {
    let mut redis = RedisServer::start();
    let rig = Rig::start_with_redis(case, Mode::Normalized, &redis.url(), LEASE);
    assert_success(
        case,
        &rig,
        &rig.send(&notification(case, &new_order(), EventKind::PaymentSucceeded)),
    );
    assert_eq!(rig.forwarded().len(), 1);

    redis.stop();
    let n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    let started = Instant::now();
    let reply = rig.send(&n);
    let took = started.elapsed();
    assert_failure(case, &rig, &reply);
    assert!(took < Duration::from_millis(1500), "fail closed took {took:?}");
    assert_eq!(rig.forwarded().len(), 1, "nothing is forwarded without the dedup claim");
    rig.assert_outcome(case, "store_error", 1.0);

    // Back up (empty): the channel's retry is forwarded.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = rig.send(&n);
        if (case.is_success)(reply.0, &reply.1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after Redis restarted\n{}",
            rig.pg.logs()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(rig.forwarded().len(), 2);
}

fn redis_hang_fails_closed_within_a_second(case: &ChannelCase) {
    let redis = RedisServer::start();
    let lease = Duration::from_millis(800);
    let rig = Rig::start_with_redis(case, Mode::Normalized, &redis.url(), lease);
    assert_success(
        case,
        &rig,
        &rig.send(&notification(case, &new_order(), EventKind::PaymentSucceeded)),
    );

    // Connections stay open but nothing answers: only the store's command timeout helps.
    redis.pause();
    let n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    let started = Instant::now();
    let reply = rig.send(&n);
    let took = started.elapsed();
    redis.resume();
    assert_failure(case, &rig, &reply);
    assert!(took < Duration::from_millis(1500), "fail closed took {took:?}");
    assert_eq!(rig.forwarded().len(), 1, "nothing is forwarded without the dedup claim");
    rig.assert_outcome(case, "store_error", 1.0);

    // Redis answers again, with its data. The claim payguard gave up waiting for may still have
    // been written when Redis thawed; it then holds the event until its lease expires (the
    // channel is told to retry meanwhile), and the next retry is forwarded once.
    let deadline = Instant::now() + lease * 4;
    loop {
        let reply = rig.send(&n);
        if (case.is_success)(reply.0, &reply.1) {
            break;
        }
        assert_failure(case, &rig, &reply);
        assert!(
            Instant::now() < deadline,
            "no recovery after Redis thawed\n{}",
            rig.pg.logs()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(rig.forwarded().len(), 2);
    assert_success(case, &rig, &rig.send(&n));
    assert_eq!(rig.forwarded().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// One test per scenario and channel

macro_rules! per_channel {
    ($scenario:ident: $($test:ident => $case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                $scenario(&$case());
            }
        )+
    };
}

per_channel!(genuine_is_forwarded_once_normalized_signed_and_acked:
    alipay_genuine_is_forwarded_once_normalized_signed_and_acked => alipay,
    wechatpay_v3_genuine_is_forwarded_once_normalized_signed_and_acked => wechatpay_v3,
    wechatpay_v2_genuine_is_forwarded_once_normalized_signed_and_acked => wechatpay_v2,
    stripe_genuine_is_forwarded_once_normalized_signed_and_acked => stripe,
    unionpay_genuine_is_forwarded_once_normalized_signed_and_acked => unionpay,
    standard_webhooks_genuine_is_forwarded_once_normalized_signed_and_acked => standard_webhooks,
);

per_channel!(duplicate_is_acked_not_forwarded:
    alipay_duplicate_is_acked_not_forwarded => alipay,
    wechatpay_v3_duplicate_is_acked_not_forwarded => wechatpay_v3,
    wechatpay_v2_duplicate_is_acked_not_forwarded => wechatpay_v2,
    stripe_duplicate_is_acked_not_forwarded => stripe,
    unionpay_duplicate_is_acked_not_forwarded => unionpay,
    standard_webhooks_duplicate_is_acked_not_forwarded => standard_webhooks,
);

per_channel!(concurrent_copies_are_forwarded_once:
    alipay_concurrent_copies_are_forwarded_once => alipay,
    wechatpay_v3_concurrent_copies_are_forwarded_once => wechatpay_v3,
    wechatpay_v2_concurrent_copies_are_forwarded_once => wechatpay_v2,
    stripe_concurrent_copies_are_forwarded_once => stripe,
    unionpay_concurrent_copies_are_forwarded_once => unionpay,
    standard_webhooks_concurrent_copies_are_forwarded_once => standard_webhooks,
);

per_channel!(backend_500_answers_failure_then_the_retry_is_forwarded_once:
    alipay_backend_500_answers_failure_then_the_retry_is_forwarded_once => alipay,
    wechatpay_v3_backend_500_answers_failure_then_the_retry_is_forwarded_once => wechatpay_v3,
    wechatpay_v2_backend_500_answers_failure_then_the_retry_is_forwarded_once => wechatpay_v2,
    stripe_backend_500_answers_failure_then_the_retry_is_forwarded_once => stripe,
    unionpay_backend_500_answers_failure_then_the_retry_is_forwarded_once => unionpay,
    standard_webhooks_backend_500_answers_failure_then_the_retry_is_forwarded_once => standard_webhooks,
);

per_channel!(backend_timeout_answers_failure_then_the_retry_is_forwarded_once:
    alipay_backend_timeout_answers_failure_then_the_retry_is_forwarded_once => alipay,
    wechatpay_v3_backend_timeout_answers_failure_then_the_retry_is_forwarded_once => wechatpay_v3,
    wechatpay_v2_backend_timeout_answers_failure_then_the_retry_is_forwarded_once => wechatpay_v2,
    stripe_backend_timeout_answers_failure_then_the_retry_is_forwarded_once => stripe,
    unionpay_backend_timeout_answers_failure_then_the_retry_is_forwarded_once => unionpay,
    standard_webhooks_backend_timeout_answers_failure_then_the_retry_is_forwarded_once => standard_webhooks,
);

per_channel!(tampered_body_is_rejected_and_nothing_forwarded:
    alipay_tampered_body_is_rejected_and_nothing_forwarded => alipay,
    wechatpay_v3_tampered_body_is_rejected_and_nothing_forwarded => wechatpay_v3,
    wechatpay_v2_tampered_body_is_rejected_and_nothing_forwarded => wechatpay_v2,
    stripe_tampered_body_is_rejected_and_nothing_forwarded => stripe,
    unionpay_tampered_body_is_rejected_and_nothing_forwarded => unionpay,
    standard_webhooks_tampered_body_is_rejected_and_nothing_forwarded => standard_webhooks,
);

// Alipay, WeChat Pay v2 and UnionPay carry their signatures in the body: no security headers.
per_channel!(tampered_header_is_rejected_and_nothing_forwarded:
    wechatpay_v3_tampered_header_is_rejected_and_nothing_forwarded => wechatpay_v3,
    stripe_tampered_header_is_rejected_and_nothing_forwarded => stripe,
    standard_webhooks_tampered_header_is_rejected_and_nothing_forwarded => standard_webhooks,
);

// Only these channels sign a timestamp that is checked for freshness.
per_channel!(stale_timestamp_is_rejected_and_nothing_forwarded:
    wechatpay_v3_stale_timestamp_is_rejected_and_nothing_forwarded => wechatpay_v3,
    stripe_stale_timestamp_is_rejected_and_nothing_forwarded => stripe,
    standard_webhooks_stale_timestamp_is_rejected_and_nothing_forwarded => standard_webhooks,
);

per_channel!(unknown_serial_is_rejected_and_nothing_forwarded:
    wechatpay_v3_unknown_serial_is_rejected_and_nothing_forwarded => wechatpay_v3,
);

per_channel!(passthrough_relays_success_with_verified_headers_only_from_payguard:
    alipay_passthrough_relays_success_with_verified_headers_only_from_payguard => alipay,
    wechatpay_v3_passthrough_relays_success_with_verified_headers_only_from_payguard => wechatpay_v3,
    wechatpay_v2_passthrough_relays_success_with_verified_headers_only_from_payguard => wechatpay_v2,
    stripe_passthrough_relays_success_with_verified_headers_only_from_payguard => stripe,
    unionpay_passthrough_relays_success_with_verified_headers_only_from_payguard => unionpay,
    standard_webhooks_passthrough_relays_success_with_verified_headers_only_from_payguard => standard_webhooks,
);

per_channel!(passthrough_relays_refusal_and_releases_the_claim:
    alipay_passthrough_relays_refusal_and_releases_the_claim => alipay,
    wechatpay_v3_passthrough_relays_refusal_and_releases_the_claim => wechatpay_v3,
    wechatpay_v2_passthrough_relays_refusal_and_releases_the_claim => wechatpay_v2,
    stripe_passthrough_relays_refusal_and_releases_the_claim => stripe,
    unionpay_passthrough_relays_refusal_and_releases_the_claim => unionpay,
    standard_webhooks_passthrough_relays_refusal_and_releases_the_claim => standard_webhooks,
);

per_channel!(second_partial_refund_is_forwarded_too:
    alipay_second_partial_refund_is_forwarded_too => alipay,
    wechatpay_v3_second_partial_refund_is_forwarded_too => wechatpay_v3,
    wechatpay_v2_second_partial_refund_is_forwarded_too => wechatpay_v2,
    stripe_second_partial_refund_is_forwarded_too => stripe,
    unionpay_second_partial_refund_is_forwarded_too => unionpay,
    standard_webhooks_second_partial_refund_is_forwarded_too => standard_webhooks,
);

// WeChat Pay v2 only notifies final results (SUCCESS/FAIL): it has no pending.
per_channel!(late_pending_after_succeeded_is_acked_not_forwarded:
    alipay_late_pending_after_succeeded_is_acked_not_forwarded => alipay,
    wechatpay_v3_late_pending_after_succeeded_is_acked_not_forwarded => wechatpay_v3,
    stripe_late_pending_after_succeeded_is_acked_not_forwarded => stripe,
    unionpay_late_pending_after_succeeded_is_acked_not_forwarded => unionpay,
    standard_webhooks_late_pending_after_succeeded_is_acked_not_forwarded => standard_webhooks,
);

per_channel!(redis_down_fails_closed_within_a_second:
    alipay_redis_down_fails_closed_within_a_second => alipay,
    wechatpay_v3_redis_down_fails_closed_within_a_second => wechatpay_v3,
    wechatpay_v2_redis_down_fails_closed_within_a_second => wechatpay_v2,
    stripe_redis_down_fails_closed_within_a_second => stripe,
    unionpay_redis_down_fails_closed_within_a_second => unionpay,
    standard_webhooks_redis_down_fails_closed_within_a_second => standard_webhooks,
);

per_channel!(redis_hang_fails_closed_within_a_second:
    alipay_redis_hang_fails_closed_within_a_second => alipay,
    wechatpay_v3_redis_hang_fails_closed_within_a_second => wechatpay_v3,
    wechatpay_v2_redis_hang_fails_closed_within_a_second => wechatpay_v2,
    stripe_redis_hang_fails_closed_within_a_second => stripe,
    unionpay_redis_hang_fails_closed_within_a_second => unionpay,
    standard_webhooks_redis_hang_fails_closed_within_a_second => standard_webhooks,
);

per_channel!(duplicated_security_header_is_rejected_and_nothing_forwarded:
    wechatpay_v3_duplicated_security_header_is_rejected_and_nothing_forwarded => wechatpay_v3,
    stripe_duplicated_security_header_is_rejected_and_nothing_forwarded => stripe,
    standard_webhooks_duplicated_security_header_is_rejected_and_nothing_forwarded => standard_webhooks,
);

// Stripe and Standard Webhooks endpoints are per merchant: their secret is the only identity.
per_channel!(foreign_merchant_is_rejected_and_nothing_forwarded:
    alipay_foreign_merchant_is_rejected_and_nothing_forwarded => alipay,
    wechatpay_v3_foreign_merchant_is_rejected_and_nothing_forwarded => wechatpay_v3,
    wechatpay_v2_foreign_merchant_is_rejected_and_nothing_forwarded => wechatpay_v2,
    unionpay_foreign_merchant_is_rejected_and_nothing_forwarded => unionpay,
);

per_channel!(passthrough_backend_timeout_answers_failure_and_releases_the_claim:
    alipay_passthrough_backend_timeout_answers_failure_and_releases_the_claim => alipay,
    wechatpay_v3_passthrough_backend_timeout_answers_failure_and_releases_the_claim => wechatpay_v3,
    wechatpay_v2_passthrough_backend_timeout_answers_failure_and_releases_the_claim => wechatpay_v2,
    stripe_passthrough_backend_timeout_answers_failure_and_releases_the_claim => stripe,
    unionpay_passthrough_backend_timeout_answers_failure_and_releases_the_claim => unionpay,
    standard_webhooks_passthrough_backend_timeout_answers_failure_and_releases_the_claim => standard_webhooks,
);

per_channel!(chunked_body_is_verified_on_its_bytes:
    alipay_chunked_body_is_verified_on_its_bytes => alipay,
    wechatpay_v3_chunked_body_is_verified_on_its_bytes => wechatpay_v3,
    wechatpay_v2_chunked_body_is_verified_on_its_bytes => wechatpay_v2,
    stripe_chunked_body_is_verified_on_its_bytes => stripe,
    unionpay_chunked_body_is_verified_on_its_bytes => unionpay,
    standard_webhooks_chunked_body_is_verified_on_its_bytes => standard_webhooks,
);

per_channel!(oversized_body_is_rejected_and_the_connection_stays_usable:
    alipay_oversized_body_is_rejected_and_the_connection_stays_usable => alipay,
    wechatpay_v3_oversized_body_is_rejected_and_the_connection_stays_usable => wechatpay_v3,
    wechatpay_v2_oversized_body_is_rejected_and_the_connection_stays_usable => wechatpay_v2,
    stripe_oversized_body_is_rejected_and_the_connection_stays_usable => stripe,
    unionpay_oversized_body_is_rejected_and_the_connection_stays_usable => unionpay,
    standard_webhooks_oversized_body_is_rejected_and_the_connection_stays_usable => standard_webhooks,
);

per_channel!(non_post_is_rejected_and_nothing_forwarded:
    alipay_non_post_is_rejected_and_nothing_forwarded => alipay,
    wechatpay_v3_non_post_is_rejected_and_nothing_forwarded => wechatpay_v3,
    wechatpay_v2_non_post_is_rejected_and_nothing_forwarded => wechatpay_v2,
    stripe_non_post_is_rejected_and_nothing_forwarded => stripe,
    unionpay_non_post_is_rejected_and_nothing_forwarded => unionpay,
    standard_webhooks_non_post_is_rejected_and_nothing_forwarded => standard_webhooks,
);

per_channel!(compressed_body_is_refused_and_nothing_forwarded:
    alipay_compressed_body_is_refused_and_nothing_forwarded => alipay,
    wechatpay_v3_compressed_body_is_refused_and_nothing_forwarded => wechatpay_v3,
    wechatpay_v2_compressed_body_is_refused_and_nothing_forwarded => wechatpay_v2,
    stripe_compressed_body_is_refused_and_nothing_forwarded => stripe,
    unionpay_compressed_body_is_refused_and_nothing_forwarded => unionpay,
    standard_webhooks_compressed_body_is_refused_and_nothing_forwarded => standard_webhooks,
);

per_channel!(pending_arriving_while_succeeded_is_forwarded_is_not_forwarded:
    alipay_pending_arriving_while_succeeded_is_forwarded_is_not_forwarded => alipay,
    wechatpay_v3_pending_arriving_while_succeeded_is_forwarded_is_not_forwarded => wechatpay_v3,
    stripe_pending_arriving_while_succeeded_is_forwarded_is_not_forwarded => stripe,
    unionpay_pending_arriving_while_succeeded_is_forwarded_is_not_forwarded => unionpay,
    standard_webhooks_pending_arriving_while_succeeded_is_forwarded_is_not_forwarded => standard_webhooks,
);
