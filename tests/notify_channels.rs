//! Payment notifications of every registered channel through the real proxy, with the Redis store
//! and a recording backend.
//!
//! One body of test logic per scenario, run for every channel in `ChannelKind::ALL` that the
//! scenario applies to (a channel without signed timestamps has no stale scenario), as a test
//! named `<channel>_<scenario>`. Each channel comes as a [`ChannelCase`] built from its own
//! `test_setup` (config section and public test keys under `tests/fixtures/`) and the protocol
//! facts it registers; notifications are produced by the channel's own `simulate`, and its success
//! and failure answers are the ones its verifier gives. A new channel gets every scenario without
//! touching this file.

mod support;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};
use payguard::channels::registry::{ChannelConfig, ChannelInfo};
use payguard::channels::standard_webhooks::StandardWebhookSigner;
use payguard::channels::{
    registry, Channel, ChannelError, ChannelKind, EventKind, SimulateKeys, SimulateSpec, SimulatedNotification,
};
use support::payguard::Payguard;
use support::redis_server::RedisServer;
use support::upstream::{Behavior, Recorded, Upstream};

/// Signs what payguard forwards to the backend (Standard Webhooks).
const BACKEND_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// payguard's backend timeout in these tests; the timeout scenario's backend is slower.
const NOTIFY_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one delivery holds an event's dedup claim (must exceed `NOTIFY_TIMEOUT`).
const LEASE: Duration = Duration::from_secs(10);

/// Headers of a simulated notification.
type Headers = [(String, String)];

/// One registered channel, set up with its test keys.
struct ChannelCase {
    kind: ChannelKind,
    info: &'static ChannelInfo,
    /// `notify.channel` as a one-line YAML (JSON) mapping.
    channel_yaml: String,
    keys: SimulateKeys,
    app_id: Option<String>,
    mch_id: Option<String>,
    /// The verifier built from the same config: its acks are what the channel must receive.
    channel: Arc<dyn Channel>,
    /// A legacy handler's reply meaning "accepted" / "not accepted" in the channel's own format
    /// (passthrough mode relays it): the channel's own success and failure answers.
    backend_accepts: (u16, Vec<u8>),
    backend_refuses: (u16, Vec<u8>),
}

impl ChannelCase {
    fn of(kind: ChannelKind) -> Self {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let setup = kind
            .info()
            .test_setup(&fixtures)
            .unwrap_or_else(|e| panic!("{kind} test setup: {e}"));
        let section = serde_json::json!({ kind.as_str(): setup.config });
        let config: ChannelConfig = serde_json::from_value(section.clone()).expect("test setup config parses");
        let channel = config
            .build()
            .unwrap_or_else(|e| panic!("{kind} test setup does not build: {e:?}"));
        let accepts = channel.success_ack();
        let refuses = channel.failure_ack("busy");
        Self {
            kind,
            info: kind.info(),
            channel_yaml: format!("{section}\n"),
            keys: setup.keys,
            app_id: setup.app_id,
            mch_id: setup.mch_id,
            backend_accepts: (accepts.status, accepts.body),
            backend_refuses: (refuses.status, refuses.body),
            channel,
        }
    }

    fn backend_accepts(&self) -> (u16, &[u8]) {
        (self.backend_accepts.0, &self.backend_accepts.1)
    }

    fn backend_refuses(&self) -> (u16, &[u8]) {
        (self.backend_refuses.0, &self.backend_refuses.1)
    }

    fn notifies(&self, kind: EventKind) -> bool {
        self.info.event_kinds.contains(&kind)
    }

    /// The channel's exact success acknowledgement.
    fn is_success(&self, status: u16, body: &[u8]) -> bool {
        let ack = self.channel.success_ack();
        status == ack.status && body == ack.body
    }

    /// The channel's "failure, retry later" answer: a status the verifier answers refusals with,
    /// and a body of the shape of its failure answer (whatever the reason inside).
    fn is_failure(&self, status: u16, body: &[u8]) -> bool {
        const REASON: &str = "REASON-PLACEHOLDER";
        if self.is_success(status, body) {
            return false;
        }
        let template = self.channel.failure_ack(REASON);
        let refusals = [
            ChannelError::Malformed(String::new()),
            ChannelError::Signature(String::new()),
            ChannelError::Stale(String::new()),
            ChannelError::UnknownKey(String::new()),
            ChannelError::Decrypt(String::new()),
            ChannelError::Business(String::new()),
            ChannelError::Unsupported(String::new()),
            ChannelError::Amount(String::new()),
        ];
        let status_ok =
            status == template.status || refusals.iter().any(|e| self.channel.rejection_ack(e).status == status);
        let shape_ok = match find(&template.body, REASON.as_bytes()) {
            Some(at) => body.starts_with(&template.body[..at]) && body.ends_with(&template.body[at + REASON.len()..]),
            None => body == template.body,
        };
        status_ok && shape_ok
    }

    /// Replaces the signature header with the one of another genuine notification: well-formed,
    /// but signed for other bytes.
    fn tamper_header(&self, headers: &mut Headers) {
        let name = self.info.signature_header.expect("channel with a signature header");
        let other = notification(self, &new_order(), EventKind::PaymentSucceeded);
        let value = other
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("simulated notification has no {name} header"));
        let slot = header_mut(headers, name);
        assert_ne!(*slot, value, "another notification's signature differs");
        *slot = value;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header_mut<'a>(headers: &'a mut [(String, String)], name: &str) -> &'a mut String {
    headers
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("simulated notification has no {name} header"))
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
        app_id: case.app_id.clone(),
        mch_id: case.mch_id.clone(),
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
        case.is_success(*status, body),
        "{}: expected the success ack, got {status} {:?}\n{}",
        case.kind,
        String::from_utf8_lossy(body),
        rig.pg.logs()
    );
}

#[track_caller]
fn assert_failure(case: &ChannelCase, rig: &Rig, (status, body): &(u16, Vec<u8>)) {
    assert!(
        case.is_failure(*status, body),
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
// Scenarios (each runs for every channel its `SCENARIOS` entry applies to)

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
    // Some channels (WeChat Pay v2) carry no notification id.
    let spec_id = spec(case, &order, EventKind::PaymentSucceeded).notification_id;
    let expected_id = case.info.notification_id.then_some(spec_id.as_str());
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
            case.is_success(reply.0, &reply.1) || case.is_failure(reply.0, &reply.1),
            "{}: neither success nor failure: {} {:?}",
            case.kind,
            reply.0,
            String::from_utf8_lossy(&reply.1)
        );
    }
    assert!(
        replies.iter().any(|r| case.is_success(r.0, &r.1)),
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

/// Changes one byte of the signed body, keeping it well-formed: a digit of the amount (`8880` or
/// `88.80`) where it appears in clear, else (WeChat Pay v3 encrypts it) a letter or digit in the
/// middle of the body.
fn tamper_body(body: &mut [u8]) {
    let pos = body.windows(2).position(|w| w == b"88").unwrap_or_else(|| {
        (body.len() / 2..body.len())
            .find(|&i| body[i].is_ascii_alphanumeric())
            .expect("a letter or digit in the second half of the body")
    });
    body[pos] = if body[pos] == b'9' { b'8' } else { b'9' };
}

fn tampered_body_is_rejected_and_nothing_forwarded(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let mut n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    let genuine = n.body.clone();
    tamper_body(&mut n.body);
    assert_ne!(n.body, genuine);
    assert_failure(case, &rig, &rig.send(&n));
    assert!(rig.forwarded().is_empty());
    rig.assert_outcome(case, "rejected_signature", 1.0);
}

fn tampered_header_is_rejected_and_nothing_forwarded(case: &ChannelCase) {
    let rig = Rig::start(case, Mode::Normalized);
    let mut n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    case.tamper_header(&mut n.headers);
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
    let (status, body) = case.backend_accepts();
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
    let (status, body) = case.backend_refuses();
    rig.answer(status, body, Duration::ZERO);
    let n = notification(case, &new_order(), EventKind::PaymentSucceeded);
    let reply = rig.send(&n);
    assert_eq!(reply, (status, body.to_vec()), "the backend's refusal is relayed");
    assert_failure(case, &rig, &reply);
    assert_eq!(rig.forwarded().len(), 1);

    let (status, body) = case.backend_accepts();
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
    case.tamper_header(&mut tampered.headers);
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
    let (status, body) = case.backend_accepts();
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
    let (status, body) = case.backend_accepts();
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
        if case.is_success(reply.0, &reply.1) {
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
        if case.is_success(reply.0, &reply.1) {
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
// One test per scenario and registered channel

/// A scenario and the channels it applies to.
struct Scenario {
    name: &'static str,
    run: fn(&ChannelCase),
    applies: fn(&ChannelCase) -> bool,
}

fn every(_: &ChannelCase) -> bool {
    true
}

fn with_signature_header(case: &ChannelCase) -> bool {
    case.info.signature_header.is_some()
}

/// Channels without payment.pending (WeChat Pay v2 notifies final results only) have no late one.
fn with_pending(case: &ChannelCase) -> bool {
    case.notifies(EventKind::PaymentPending)
}

macro_rules! scenarios {
    ($($run:ident if $applies:expr),+ $(,)?) => {
        &[$(Scenario { name: stringify!($run), run: $run, applies: $applies }),+]
    };
}

const SCENARIOS: &[Scenario] = scenarios![
    genuine_is_forwarded_once_normalized_signed_and_acked if every,
    duplicate_is_acked_not_forwarded if every,
    concurrent_copies_are_forwarded_once if every,
    backend_500_answers_failure_then_the_retry_is_forwarded_once if every,
    backend_timeout_answers_failure_then_the_retry_is_forwarded_once if every,
    tampered_body_is_rejected_and_nothing_forwarded if every,
    // Channels that sign in the body (Alipay, WeChat Pay v2, UnionPay) have no security header.
    tampered_header_is_rejected_and_nothing_forwarded if with_signature_header,
    stale_timestamp_is_rejected_and_nothing_forwarded if |c| c.info.signed_timestamp,
    // Channels that announce which key signed (WeChat Pay v3: Wechatpay-Serial).
    unknown_serial_is_rejected_and_nothing_forwarded if |c| c.keys.key_id.is_some(),
    passthrough_relays_success_with_verified_headers_only_from_payguard if every,
    passthrough_relays_refusal_and_releases_the_claim if every,
    second_partial_refund_is_forwarded_too if every,
    late_pending_after_succeeded_is_acked_not_forwarded if with_pending,
    redis_down_fails_closed_within_a_second if every,
    redis_hang_fails_closed_within_a_second if every,
    duplicated_security_header_is_rejected_and_nothing_forwarded if with_signature_header,
    // Stripe and Standard Webhooks endpoints are per merchant: their secret is the only identity.
    foreign_merchant_is_rejected_and_nothing_forwarded if |c| c.app_id.is_some() || c.mch_id.is_some(),
    passthrough_backend_timeout_answers_failure_and_releases_the_claim if every,
    chunked_body_is_verified_on_its_bytes if every,
    oversized_body_is_rejected_and_the_connection_stays_usable if every,
    non_post_is_rejected_and_nothing_forwarded if every,
    compressed_body_is_refused_and_nothing_forwarded if every,
    pending_arriving_while_succeeded_is_forwarded_is_not_forwarded if with_pending,
];

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for &kind in ChannelKind::ALL {
        let case = Arc::new(ChannelCase::of(kind));
        for scenario in SCENARIOS.iter().filter(|s| (s.applies)(&case)) {
            let (case, run) = (Arc::clone(&case), scenario.run);
            trials.push(Trial::test(format!("{kind}_{}", scenario.name), move || {
                run(&case);
                Ok(())
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
