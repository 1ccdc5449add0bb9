//! The fuzz targets' bodies, shared by `fuzz/fuzz_targets/*.rs` (cargo-fuzz on nightly) and
//! `tests/fuzz_smoke.rs` (stable: the committed corpus plus deterministic mutations), so both
//! run the same code.
//!
//! A target panics only on a bug: a panic inside payguard, or a property below that does not
//! hold. Rejecting the input is the expected outcome of almost every run.
//!
//! Every target also has seeds: valid inputs built from the test fixtures (`tests/fixtures/`),
//! the client signing vectors (`clients/vectors.json`) and the example configurations
//! (`config/`). `fuzz/seed` writes them to `fuzz/corpus/<target>/`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use jiff::Timestamp;
use serde_json::{json, Value};

use payguard::canonical::path::{canonicalize, Ambiguity, PathPolicy};
use payguard::canonical::query::CanonicalQuery;
use payguard::canonical::{check_method, headers as canonical_headers, json as canonical_json};
use payguard::channels::alipay::{AlipayChannel, AlipayConfig};
use payguard::channels::amount::{format_minor, parse_decimal_minor, parse_signed_decimal_minor};
use payguard::channels::registry::simulate;
use payguard::channels::standard_webhooks::{StandardWebhookSigner, StandardWebhooks, StandardWebhooksConfig};
use payguard::channels::stripe::{compute_signature, Stripe, StripeConfig};
use payguard::channels::unionpay::{UnionpayChannel, UnionpayConfig};
use payguard::channels::wechatpay_v2::{WechatpayV2Channel, WechatpayV2Config};
use payguard::channels::wechatpay_v3::{decrypt_resource, encrypt_resource, WechatpayV3, WechatpayV3Config};
use payguard::channels::{Channel, ChannelKind, EventKind, NotifyRequest, SimulateKeys, SimulateSpec, VerifiedEvent};
use payguard::fuzzing;
use payguard::guard::signature::{sign_request, SignatureConfig, SignatureVerifier};

/// One fuzz target: its name (the file `fuzz/fuzz_targets/<name>.rs`), its body, its seeds.
pub struct Target {
    /// Name, as `cargo fuzz run <name>` takes it.
    pub name: &'static str,
    /// Runs one input; panics only on a bug.
    pub run: fn(&[u8]),
    /// Valid inputs to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "alipay_verify",
        run: alipay_verify,
        seeds: alipay_requests,
    },
    Target {
        name: "alipay_signed_body",
        run: alipay_signed_body,
        seeds: alipay_bodies,
    },
    Target {
        name: "unionpay_verify",
        run: unionpay_verify,
        seeds: unionpay_requests,
    },
    Target {
        name: "unionpay_signed_body",
        run: unionpay_signed_body,
        seeds: unionpay_bodies,
    },
    Target {
        name: "wechatpay_v3_verify",
        run: wechatpay_v3_verify,
        seeds: wechatpay_v3_requests,
    },
    Target {
        name: "wechatpay_v3_resource",
        run: wechatpay_v3_resource,
        seeds: wechatpay_v3_resources,
    },
    Target {
        name: "wechatpay_v2_verify",
        run: wechatpay_v2_verify,
        seeds: wechatpay_v2_requests,
    },
    Target {
        name: "wechatpay_v2_signed_body",
        run: wechatpay_v2_signed_body,
        seeds: wechatpay_v2_signed_seeds,
    },
    Target {
        name: "stripe_verify",
        run: stripe_verify,
        seeds: stripe_requests,
    },
    Target {
        name: "stripe_signed_body",
        run: stripe_signed_body,
        seeds: stripe_bodies,
    },
    Target {
        name: "standard_webhooks_verify",
        run: standard_webhooks_verify,
        seeds: standard_webhooks_requests,
    },
    Target {
        name: "standard_webhooks_signed_body",
        run: standard_webhooks_signed_body,
        seeds: standard_webhooks_bodies,
    },
    Target {
        name: "form_decode",
        run: form_decode,
        seeds: form_seeds,
    },
    Target {
        name: "xml_flat",
        run: xml_flat,
        seeds: xml_seeds,
    },
    Target {
        name: "amount_decimal",
        run: amount_decimal,
        seeds: amount_seeds,
    },
    Target {
        name: "canonical_request",
        run: canonical_request,
        seeds: canonical_request_seeds,
    },
    Target {
        name: "config_load",
        run: config_load,
        seeds: config_seeds,
    },
];

// ---------------------------------------------------------------------------------------------
// Channels configured with the test keys of tests/fixtures, built once.

/// The instant every channel target verifies at (2024-05-01T04:00:06Z): inside the fixtures'
/// certificate validity and the simulated notifications' timestamp windows.
const NOW: i64 = 1_714_536_006;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).expect("a valid instant")
}

const ALIPAY_APP_ID: &str = "2021000000000001";
const ALIPAY_SELLER_ID: &str = "2088000000000001";
const UNIONPAY_MER_ID: &str = "777290058110048";
const V3_MCHID: &str = "1900000001";
const V3_APPID: &str = "wxd678efh567hg6787";
const V3_API_KEY: &str = "53D67FCB97E68F9998CBD17ED7A8D1E2";
const V3_SERIAL: &str = "7A3C0FFEE1234567890ABCDEF0123456789ABCDE";
const V3_PUB_KEY_ID: &str = "PUB_KEY_ID_0114232020250101000000000001";
/// The `resource.nonce` of the resources this file encrypts.
const V3_RESOURCE_NONCE: &str = "fJ8Cz9qWe3Rt";
const V2_APP_ID: &str = "wx2421b1c4370ec43b";
const V2_MCH_ID: &str = "10000100";
const V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const STRIPE_SECRET: &str = "whsec_test_fuzz_0123456789abcdef";
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const ALIPAY_PUBLIC_KEY: &str = include_str!("../../tests/fixtures/alipay/app_public_key.pem");
const ALIPAY_PRIVATE_KEY: &str = include_str!("../../tests/fixtures/alipay/app_private_key.pem");
const UNIONPAY_ROOT: &str = include_str!("../../tests/fixtures/unionpay/root.pem");
const UNIONPAY_MIDDLE: &str = include_str!("../../tests/fixtures/unionpay/middle.pem");
const UNIONPAY_LEAF: &str = include_str!("../../tests/fixtures/unionpay/leaf.pem");
const UNIONPAY_LEAF_KEY: &str = include_str!("../../tests/fixtures/unionpay/leaf.key.pem");
const UNIONPAY_DU1: &str = include_str!("../../tests/fixtures/unionpay/du1_body.txt");
const V3_CERT: &str = include_str!("../../tests/fixtures/wechatpay_v3/simulate_platform_certificate.pem");
const V3_PUBLIC_KEY: &str = include_str!("../../tests/fixtures/wechatpay_v3/simulate_platform_public_key.pem");
const V3_PRIVATE_KEY: &str = include_str!("../../tests/fixtures/wechatpay_v3/simulate_platform_private_key.pem");
const CLIENT_VECTORS: &str = include_str!("../../clients/vectors.json");
const CONFIGS: &[&str] = &[
    include_str!("../../config/payguard.example.yaml"),
    include_str!("../../config/dev.yaml"),
    include_str!("../../config/sandbox.yaml"),
];

fn config<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("the test channel configuration parses")
}

static ALIPAY: LazyLock<AlipayChannel> = LazyLock::new(|| {
    config::<AlipayConfig>(json!({
        "app_id": ALIPAY_APP_ID,
        "seller_id": ALIPAY_SELLER_ID,
        "sign_type": "RSA2",
        "alipay_public_key": ALIPAY_PUBLIC_KEY,
    }))
    .build()
    .expect("the test Alipay channel builds")
});

static UNIONPAY: LazyLock<UnionpayChannel> = LazyLock::new(|| {
    config::<UnionpayConfig>(json!({
        "mer_id": UNIONPAY_MER_ID,
        "root_cert": UNIONPAY_ROOT,
        "middle_cert": UNIONPAY_MIDDLE,
    }))
    .build()
    .expect("the test UnionPay channel builds")
});

static WECHATPAY_V3: LazyLock<WechatpayV3> = LazyLock::new(|| {
    config::<WechatpayV3Config>(json!({
        "mchid": V3_MCHID,
        "appid": V3_APPID,
        "api_v3_key": V3_API_KEY,
        "platform_certificates": [V3_CERT],
        "public_key_id": V3_PUB_KEY_ID,
        "public_key": V3_PUBLIC_KEY,
    }))
    .build()
    .expect("the test WeChat Pay v3 channel builds")
});

static WECHATPAY_V2: LazyLock<WechatpayV2Channel> = LazyLock::new(|| {
    config::<WechatpayV2Config>(json!({"app_id": V2_APP_ID, "mch_id": V2_MCH_ID, "api_key": V2_KEY}))
        .build()
        .expect("the test WeChat Pay v2 channel builds")
});

static STRIPE: LazyLock<Stripe> = LazyLock::new(|| {
    config::<StripeConfig>(json!({"endpoint_secrets": [STRIPE_SECRET]}))
        .build()
        .expect("the test Stripe channel builds")
});

static STANDARD_WEBHOOKS: LazyLock<StandardWebhooks> = LazyLock::new(|| {
    config::<StandardWebhooksConfig>(json!({"secrets": [SW_SECRET]}))
        .build()
        .expect("the test Standard Webhooks channel builds")
});

static SW_SIGNER: LazyLock<StandardWebhookSigner> =
    LazyLock::new(|| StandardWebhookSigner::from_whsec(SW_SECRET).expect("the test secret is whsec_ base64"));

// ---------------------------------------------------------------------------------------------
// Properties every verified event has.

/// What `verify` promises of an event it returns: the channel's own kind, amounts that a real
/// payment has (the amount checks), an order number on every event but `other`, an upper-case
/// currency, and a JSON form (what is forwarded to the backend).
fn check_event(event: &VerifiedEvent, channel: ChannelKind) {
    assert_eq!(event.channel, channel);
    if let Some(amount) = event.amount_minor {
        assert!(amount >= 0, "verified event with amount {amount}");
    }
    if let Some(refunded) = event.refund.as_ref().and_then(|r| r.amount_minor) {
        assert!(refunded >= 0, "verified event with refund amount {refunded}");
    }
    if event.kind != EventKind::Other {
        assert!(
            !event.out_trade_no.is_empty(),
            "{} without out_trade_no",
            event.kind.as_str()
        );
    }
    if let Some(currency) = &event.currency {
        assert_eq!(&currency.to_ascii_uppercase(), currency);
    }
    serde_json::to_vec(event).expect("a verified event serializes");
}

// ---------------------------------------------------------------------------------------------
// Requests: `name: value` header lines, an empty line, the body. Without an empty line the
// whole input is the body.

fn request(data: &[u8]) -> (HeaderMap, &[u8]) {
    let mut headers = HeaderMap::new();
    let Some(split) = data.windows(2).position(|w| w == b"\n\n") else {
        return (headers, data);
    };
    let (head, body) = (&data[..split], &data[split + 2..]);
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    (headers, body)
}

fn request_bytes(headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    out.extend_from_slice(b"\n");
    out.extend_from_slice(body);
    out
}

fn verify_request(channel: &dyn Channel, data: &[u8]) {
    let (headers, body) = request(data);
    verify_and_check(channel, &headers, body);
}

/// `verify` at [`NOW`]; a verified event must pass [`check_event`].
fn verify_and_check(channel: &dyn Channel, headers: &HeaderMap, body: &[u8]) {
    if let Ok(event) = channel.verify(&NotifyRequest { headers, body }, now()) {
        check_event(&event, channel.kind());
    }
}

/// Simulation keys holding only a shared secret (Stripe, Standard Webhooks, WeChat Pay v2).
fn secret_keys(secret: &str) -> SimulateKeys {
    SimulateKeys {
        secret: Some(secret.as_bytes().to_vec()),
        ..SimulateKeys::default()
    }
}

/// A notification to send: its headers and its body.
type Notification = (Vec<(String, String)>, Vec<u8>);

fn spec(kind: EventKind, app_id: Option<&str>, mch_id: Option<&str>) -> SimulateSpec {
    SimulateSpec {
        out_trade_no: "ORDER-FUZZ-0001".into(),
        amount_minor: 8880,
        currency: "CNY".into(),
        kind,
        out_refund_no: Some("REFUND-FUZZ-0001".into()),
        refund_amount_minor: Some(1000),
        channel_txn_id: "4200002000202405010000000009".into(),
        at: now(),
        notification_id: "EV-FUZZ-0001".into(),
        app_id: app_id.map(str::to_owned),
        mch_id: mch_id.map(str::to_owned),
    }
}

const KINDS: [EventKind; 5] = [
    EventKind::PaymentSucceeded,
    EventKind::PaymentPending,
    EventKind::PaymentClosed,
    EventKind::PaymentFailed,
    EventKind::RefundSucceeded,
];

/// Every notification the channel's simulator produces for [`KINDS`], as (headers, body).
fn simulated(
    channel: ChannelKind,
    keys: &SimulateKeys,
    app_id: Option<&str>,
    mch_id: Option<&str>,
) -> Vec<Notification> {
    KINDS
        .iter()
        .filter_map(|kind| simulate(channel, &spec(*kind, app_id, mch_id), keys).ok())
        .map(|n| (n.headers, n.body))
        .collect()
}

fn as_requests(notifications: Vec<Notification>) -> Vec<Vec<u8>> {
    notifications.iter().map(|(h, b)| request_bytes(h, b)).collect()
}

fn as_bodies(notifications: Vec<Notification>) -> Vec<Vec<u8>> {
    notifications.into_iter().map(|(_, b)| b).collect()
}

// ---------------------------------------------------------------------------------------------
// Alipay

fn alipay_notifications() -> Vec<Notification> {
    let keys = SimulateKeys {
        private_key_pem: Some(ALIPAY_PRIVATE_KEY.into()),
        ..SimulateKeys::default()
    };
    simulated(ChannelKind::Alipay, &keys, Some(ALIPAY_APP_ID), Some(ALIPAY_SELLER_ID))
}

fn alipay_requests() -> Vec<Vec<u8>> {
    as_requests(alipay_notifications())
}

fn alipay_bodies() -> Vec<Vec<u8>> {
    as_bodies(alipay_notifications())
}

/// A random notify through the full `verify`.
pub fn alipay_verify(data: &[u8]) {
    verify_request(&*ALIPAY, data);
}

/// A random notify below the RSA check: form, charset, business checks, normalization.
pub fn alipay_signed_body(data: &[u8]) {
    if let Ok(event) = fuzzing::alipay_signed_body(&ALIPAY, data) {
        check_event(&event, ChannelKind::Alipay);
    }
}

// ---------------------------------------------------------------------------------------------
// UnionPay

fn unionpay_notifications() -> Vec<Notification> {
    let keys = SimulateKeys {
        private_key_pem: Some(UNIONPAY_LEAF_KEY.into()),
        certificate_pem: Some(UNIONPAY_LEAF.into()),
        ..SimulateKeys::default()
    };
    let mut out = simulated(ChannelKind::Unionpay, &keys, None, Some(UNIONPAY_MER_ID));
    out.push((Vec::new(), UNIONPAY_DU1.trim_end().as_bytes().to_vec()));
    out
}

fn unionpay_requests() -> Vec<Vec<u8>> {
    as_requests(unionpay_notifications())
}

fn unionpay_bodies() -> Vec<Vec<u8>> {
    as_bodies(unionpay_notifications())
}

/// A random back notification through the full `verify` (certificate chain, signature, ...).
pub fn unionpay_verify(data: &[u8]) {
    verify_request(&*UNIONPAY, data);
}

/// A random back notification below the signature check.
pub fn unionpay_signed_body(data: &[u8]) {
    if let Ok(event) = fuzzing::unionpay_signed_body(&UNIONPAY, data) {
        check_event(&event, ChannelKind::Unionpay);
    }
}

// ---------------------------------------------------------------------------------------------
// WeChat Pay v3

fn wechatpay_v3_notifications() -> Vec<Notification> {
    let mut out = Vec::new();
    for key_id in [V3_SERIAL, V3_PUB_KEY_ID] {
        let keys = SimulateKeys {
            private_key_pem: Some(V3_PRIVATE_KEY.into()),
            key_id: Some(key_id.into()),
            api_v3_key: Some(V3_API_KEY.as_bytes().to_vec()),
            ..SimulateKeys::default()
        };
        out.extend(simulated(
            ChannelKind::WechatpayV3,
            &keys,
            Some(V3_APPID),
            Some(V3_MCHID),
        ));
    }
    out
}

fn wechatpay_v3_requests() -> Vec<Vec<u8>> {
    as_requests(wechatpay_v3_notifications())
}

/// A random callback (headers and body) through the full `verify`.
pub fn wechatpay_v3_verify(data: &[u8]) {
    verify_request(&*WECHATPAY_V3, data);
}

/// `event_type`s of [`wechatpay_v3_resource`] inputs, chosen by the first byte; a first byte
/// of 7 modulo 8 means the rest is a whole callback body instead.
const V3_EVENT_TYPES: [&str; 7] = [
    "TRANSACTION.SUCCESS",
    "TRANSACTION.NOTPAY",
    "TRANSACTION.CLOSED",
    "TRANSACTION.PAYERROR",
    "REFUND.SUCCESS",
    "REFUND.CLOSED",
    "REFUND.ABNORMAL",
];

fn v3_envelope(event_type: &str, plaintext: &[u8]) -> Vec<u8> {
    let original_type = if event_type.starts_with("REFUND.") {
        "refund"
    } else {
        "transaction"
    };
    let ciphertext = encrypt_resource(
        V3_API_KEY.as_bytes(),
        V3_RESOURCE_NONCE.as_bytes(),
        original_type.as_bytes(),
        plaintext,
    )
    .expect("a 32-byte key and a 12-byte nonce encrypt");
    let envelope = json!({
        "id": "EV-FUZZ-0001",
        "create_time": "2024-05-01T12:00:06+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "fuzz",
        "resource": {
            "original_type": original_type,
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "associated_data": original_type,
            "nonce": V3_RESOURCE_NONCE,
        },
    });
    serde_json::to_vec(&envelope).expect("JSON serializes")
}

fn wechatpay_v3_resources() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (_, body) in wechatpay_v3_notifications() {
        let envelope: Value = serde_json::from_slice(&body).expect("simulated JSON");
        let resource = &envelope["resource"];
        let text = |v: &Value| v.as_str().unwrap_or_default().as_bytes().to_vec();
        let plaintext = decrypt_resource(
            V3_API_KEY.as_bytes(),
            &text(&resource["nonce"]),
            &text(&resource["associated_data"]),
            resource["ciphertext"].as_str().unwrap_or_default(),
        )
        .expect("the simulated resource decrypts");
        let event_type = envelope["event_type"].as_str().unwrap_or_default();
        if let Some(i) = V3_EVENT_TYPES.iter().position(|t| *t == event_type) {
            out.push([&[i as u8][..], &plaintext[..]].concat());
        }
        out.push([&[7u8][..], &body[..]].concat());
    }
    out
}

/// Below the RSA check: a random resource plaintext, encrypted with the channel's APIv3 key so
/// it reaches strict JSON parsing and normalization (or, first byte 7 mod 8, a random envelope).
pub fn wechatpay_v3_resource(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let event_type = V3_EVENT_TYPES.get(usize::from(selector % 8));
    let body = match event_type {
        Some(event_type) => v3_envelope(event_type, rest),
        None => rest.to_vec(),
    };
    if let Ok(event) = fuzzing::wechatpay_v3_signed_body(&WECHATPAY_V3, &body) {
        check_event(&event, ChannelKind::WechatpayV3);
        if event_type.is_some() {
            // What is forwarded is exactly the decrypted object.
            let object = canonical_json::parse_strict(rest).ok().flatten();
            assert_eq!(Some(&event.raw), object.as_ref());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WeChat Pay v2

fn wechatpay_v2_notifications() -> Vec<Notification> {
    simulated(
        ChannelKind::WechatpayV2,
        &secret_keys(V2_KEY),
        Some(V2_APP_ID),
        Some(V2_MCH_ID),
    )
}

fn wechatpay_v2_requests() -> Vec<Vec<u8>> {
    as_requests(wechatpay_v2_notifications())
}

/// A random notify (XML reader, signature, refund decryption) through the full `verify`.
pub fn wechatpay_v2_verify(data: &[u8]) {
    verify_request(&*WECHATPAY_V2, data);
}

fn v2_refund_notify(req_info_plaintext: &[u8]) -> Vec<u8> {
    let req_info = fuzzing::wechatpay_v2_encrypt_req_info(req_info_plaintext, V2_KEY.as_bytes());
    format!(
        "<xml><return_code>SUCCESS</return_code><appid>{V2_APP_ID}</appid><mch_id>{V2_MCH_ID}</mch_id>\
         <nonce_str>fuzz</nonce_str><req_info><![CDATA[{req_info}]]></req_info></xml>"
    )
    .into_bytes()
}

fn wechatpay_v2_signed_seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = wechatpay_v2_notifications()
        .into_iter()
        .filter(|(_, body)| !body.windows(10).any(|w| w == b"<req_info>"))
        .map(|(_, body)| [&[0u8][..], &body[..]].concat())
        .collect();
    for status in ["SUCCESS", "REFUNDCLOSE", "CHANGE"] {
        let inner = format!(
            "<root><out_refund_no>REFUND-FUZZ-0001</out_refund_no><out_trade_no>ORDER-FUZZ-0001</out_trade_no>\
             <refund_fee>1000</refund_fee><refund_id>50300000000001</refund_id><refund_status>{status}</refund_status>\
             <success_time>2024-05-01 12:00:06</success_time><total_fee>8880</total_fee>\
             <transaction_id>4200002000202405010000000009</transaction_id></root>"
        );
        out.push([&[1u8][..], inner.as_bytes()].concat());
    }
    out
}

/// Below the signature: first byte even, a random payment notify as if its `sign` verified;
/// odd, a random refund `req_info` plaintext encrypted with the API key, through `verify`.
pub fn wechatpay_v2_signed_body(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        if let Ok(event) = fuzzing::wechatpay_v2_signed_payment(&WECHATPAY_V2, rest) {
            check_event(&event, ChannelKind::WechatpayV2);
        }
    } else {
        verify_and_check(&*WECHATPAY_V2, &HeaderMap::new(), &v2_refund_notify(rest));
    }
}

// ---------------------------------------------------------------------------------------------
// Stripe and Standard Webhooks: HMAC, so the targets sign random bodies themselves.

fn stripe_notifications() -> Vec<Notification> {
    simulated(ChannelKind::Stripe, &secret_keys(STRIPE_SECRET), None, None)
}

fn stripe_requests() -> Vec<Vec<u8>> {
    as_requests(stripe_notifications())
}

fn stripe_bodies() -> Vec<Vec<u8>> {
    as_bodies(stripe_notifications())
}

/// A random event (with a random `Stripe-Signature`) through the full `verify`.
pub fn stripe_verify(data: &[u8]) {
    verify_request(&*STRIPE, data);
}

/// A random event body, signed with the endpoint secret, through the full `verify`.
pub fn stripe_signed_body(data: &[u8]) {
    let t = NOW.to_string();
    let mac = compute_signature(STRIPE_SECRET.as_bytes(), &t, data);
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("t={t},v1={}", hex::encode(mac))).expect("ASCII header");
    headers.insert("stripe-signature", value);
    verify_and_check(&*STRIPE, &headers, data);
}

fn standard_webhooks_notifications() -> Vec<Notification> {
    simulated(ChannelKind::StandardWebhooks, &secret_keys(SW_SECRET), None, None)
}

fn standard_webhooks_requests() -> Vec<Vec<u8>> {
    as_requests(standard_webhooks_notifications())
}

fn standard_webhooks_bodies() -> Vec<Vec<u8>> {
    as_bodies(standard_webhooks_notifications())
}

/// A random webhook (headers and body) through the full `verify`.
pub fn standard_webhooks_verify(data: &[u8]) {
    verify_request(&*STANDARD_WEBHOOKS, data);
}

/// A random payload, signed with the configured secret, through the full `verify`.
pub fn standard_webhooks_signed_body(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for (name, value) in SW_SIGNER.headers("msg_fuzz0001", NOW, data) {
        headers.insert(name, HeaderValue::from_str(&value).expect("ASCII header"));
    }
    verify_and_check(&*STANDARD_WEBHOOKS, &headers, data);
}

// ---------------------------------------------------------------------------------------------
// The form decoder and the XML reader.

fn form_seeds() -> Vec<Vec<u8>> {
    let mut out = alipay_bodies();
    out.extend(unionpay_bodies());
    out.push(b"a=1&b=%E6%B5%8B+x&c=&d".to_vec());
    out
}

fn percent_encode_all(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(*b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The form decoder; a decoded form encoded again (every byte escaped) decodes to the same
/// fields, and its signed content is built without a panic.
pub fn form_decode(data: &[u8]) {
    let Ok(fields) = fuzzing::form_fields(data) else { return };
    let encoded: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode_all(k.as_bytes()), percent_encode_all(v)))
        .collect();
    let again = fuzzing::form_fields(encoded.join("&").as_bytes()).expect("a re-encoded form decodes");
    assert_eq!(again, fields);
    let content = fuzzing::form_signed_content(&fields, &["sign", "sign_type"], false);
    let content_with_empty = fuzzing::form_signed_content(&fields, &["sign", "sign_type"], true);
    assert!(content.len() <= content_with_empty.len());
}

fn xml_seeds() -> Vec<Vec<u8>> {
    let mut out = as_bodies(wechatpay_v2_notifications());
    out.push(b"<xml><a><![CDATA[x&y]]></a><b>1 &lt; 2</b><c/><!-- note --></xml>".to_vec());
    out
}

fn xml_text(value: &str) -> String {
    value.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The flat XML reader; fields written back as escaped XML read the same.
pub fn xml_flat(data: &[u8]) {
    let Ok(fields) = fuzzing::flat_xml(data, "xml") else {
        return;
    };
    let mut doc = String::from("<xml>");
    for (name, value) in &fields {
        doc.push_str(&format!("<{name}>{}</{name}>", xml_text(value)));
    }
    doc.push_str("</xml>");
    let again: BTreeMap<String, String> = fuzzing::flat_xml(doc.as_bytes(), "xml").expect("written-back XML reads");
    assert_eq!(again, fields);
}

// ---------------------------------------------------------------------------------------------
// Amounts: decimal text to integer minor units.

fn amount_seeds() -> Vec<Vec<u8>> {
    let texts: [(u8, &str); 10] = [
        (2, "88.80"),
        (2, "0.01"),
        (2, "-1.05"),
        (0, "1999"),
        (3, "1.234"),
        (2, "92233720368547758.07"),
        (2, "-92233720368547758.08"),
        (4, "0.0001"),
        (2, "007.50"),
        (2, "1.5e2"),
    ];
    texts.iter().map(|(e, t)| [&[*e][..], t.as_bytes()].concat()).collect()
}

/// The exact value of decimal `text` in minor units of a currency with `exponent` fraction
/// digits, computed another way: the digits, right-padded to `exponent` fraction digits, read
/// as one integer by the standard library. `None` when `text` is not such a decimal (sign
/// other than one leading `-`, missing digits, too many fraction digits) or exceeds `i64`.
fn reference_minor(text: &str, exponent: u32) -> Option<i64> {
    let (negative, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (int_part, frac_part) = match magnitude.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (magnitude, None),
    };
    if !digits(int_part) {
        return None;
    }
    let frac = match frac_part {
        None => "",
        Some(f) if digits(f) && f.len() <= exponent as usize => f,
        Some(_) => return None,
    };
    let scaled = format!("{int_part}{frac:0<width$}", width = exponent as usize);
    let significant = scaled.trim_start_matches('0');
    if significant.len() > 20 {
        return None;
    }
    let value: i128 = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    i64::try_from(if negative { -value } else { value }).ok()
}

/// Decimal amount parsing against [`reference_minor`]; every parsed value formats and parses
/// back to itself. First byte: the exponent (mod 5); the rest: the text.
pub fn amount_decimal(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let exponent = u32::from(selector % 5);
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let reference = reference_minor(text, exponent);
    let signed = parse_signed_decimal_minor(text, exponent);
    assert_eq!(signed.ok(), reference, "signed {text:?} with exponent {exponent}");
    let unsigned = parse_decimal_minor(text, exponent);
    assert_eq!(
        unsigned.ok(),
        reference.filter(|_| !text.starts_with('-')),
        "unsigned {text:?}"
    );
    if let Ok(value) = signed {
        let formatted = format_minor(value, exponent);
        assert_eq!(
            parse_signed_decimal_minor(&formatted, exponent),
            Ok(value),
            "{formatted:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Client requests: canonical path, query, headers, JSON body, the signature's canonical request.

const CLIENT_KEY_ID: &str = "shop-app";
const CLIENT_SECRET: &str = "pg-test-secret-0001";
const CLIENT_NOW: i64 = 1_700_000_000;
const CLIENT_NONCE: &str = "n0nce-0123456789abcdef";

static VERIFIER: LazyLock<SignatureVerifier> = LazyLock::new(|| {
    config::<SignatureConfig>(json!({"keys": [{"id": CLIENT_KEY_ID, "secrets": [CLIENT_SECRET]}]}))
        .build()
        .expect("the test signature config builds")
});

fn canonical_request_seeds() -> Vec<Vec<u8>> {
    let vectors: Value = serde_json::from_str(CLIENT_VECTORS).expect("clients/vectors.json is JSON");
    let mut out = Vec::new();
    for v in vectors["vectors"].as_array().into_iter().flatten() {
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let mut target = text("path");
        if let Some(q) = v["query"].as_str() {
            target = format!("{target}?{q}");
        }
        let headers: Vec<(String, String)> = v["expected"]["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, val)| (k.clone(), val.as_str().unwrap_or_default().to_string()))
            .collect();
        let mut input = format!("{}\n{target}\n", text("method")).into_bytes();
        input.extend(request_bytes(&headers, text("body").as_bytes()));
        out.push(input);
    }
    out.push(b"POST\n/v1//orders/./a/../b%7e?x=%41&x=b+c\nX_PG_Key: shop-app\nX-HTTP-Method-Override: GET\n\n{\"user_id\":\"u1\",\"order\":{\"id\":7}}".to_vec());
    out
}

/// Input: the method line, the request-target line (`path?query`), then a request (headers,
/// empty line, body). Canonicalization is idempotent (a canonical path or query is accepted
/// again unchanged), header screening and strict JSON never panic, and a request signed over
/// its canonical form with the test key verifies.
pub fn canonical_request(data: &[u8]) {
    let mut lines = data.splitn(3, |b| *b == b'\n');
    let method = std::str::from_utf8(lines.next().unwrap_or_default()).unwrap_or_default();
    let target = lines.next().unwrap_or_default();
    let (headers, body) = request(lines.next().unwrap_or_default());
    let (raw_path, raw_query) = match target.iter().position(|b| *b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    };

    let keep = PathPolicy {
        escaped_slashes: Ambiguity::Keep,
        path_params: Ambiguity::Keep,
        double_encoding: Ambiguity::Keep,
    };
    let mut canonical_path = None;
    for policy in [PathPolicy::default(), keep] {
        if let Ok(path) = canonicalize(raw_path, &policy) {
            let again = canonicalize(path.as_str().as_bytes(), &policy).expect("a canonical path is canonical");
            assert_eq!(again.as_str(), path.as_str(), "canonicalization is idempotent");
            assert_eq!(again.routing(), path.routing());
            if policy == PathPolicy::default() {
                canonical_path = Some(path);
            }
        }
    }
    let canonical_query = match raw_query.map(std::str::from_utf8) {
        None => Some(CanonicalQuery::default()),
        Some(Ok(q)) => CanonicalQuery::parse(q).ok(),
        Some(Err(_)) => None,
    };
    if let Some(query) = &canonical_query {
        let again = CanonicalQuery::parse(query.as_str()).expect("a canonical query parses");
        assert_eq!(again.as_str(), query.as_str(), "query canonicalization is idempotent");
    }

    let read: Vec<HeaderName> = VERIFIER.header_names().into_iter().cloned().collect();
    for policy in [
        canonical_headers::UnderscorePolicy::Drop,
        canonical_headers::UnderscorePolicy::Reject,
        canonical_headers::UnderscorePolicy::Keep,
    ] {
        let _ = canonical_headers::screen(&headers, policy, &read);
    }
    if let Ok(Some(value)) = canonical_json::parse_strict(body) {
        for pointer in ["/user_id", "/order/id", "/items/0/sku", ""] {
            let _ = canonical_json::identity_at(&value, pointer);
        }
    }

    let now = Timestamp::from_second(CLIENT_NOW).expect("a valid instant");
    if let Ok(signed) = VERIFIER.verify_headers(&headers, now) {
        if let (Some(path), Some(query)) = (&canonical_path, &canonical_query) {
            let _ = VERIFIER.verify_body(&signed, method, path.as_str(), query.as_str(), body);
        }
    }
    // Signed by a client over the canonical request, it verifies.
    if let (Ok(()), Some(path), Some(query)) = (check_method(method), &canonical_path, &canonical_query) {
        let ts = CLIENT_NOW.to_string();
        let signature = sign_request(
            CLIENT_SECRET.as_bytes(),
            method,
            path.as_str(),
            Some(query.as_str()),
            &ts,
            CLIENT_NONCE,
            body,
        )
        .expect("a canonical query signs");
        let mut signed_headers = HeaderMap::new();
        for (name, value) in [
            ("x-pg-key", CLIENT_KEY_ID),
            ("x-pg-timestamp", ts.as_str()),
            ("x-pg-nonce", CLIENT_NONCE),
            ("x-pg-signature", signature.as_str()),
        ] {
            signed_headers.insert(name, HeaderValue::from_str(value).expect("ASCII header"));
        }
        let signed = VERIFIER
            .verify_headers(&signed_headers, now)
            .expect("signed headers verify");
        VERIFIER
            .verify_body(&signed, method, path.as_str(), query.as_str(), body)
            .expect("a request signed over its canonical form verifies");
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration text.

fn config_seeds() -> Vec<Vec<u8>> {
    CONFIGS.iter().map(|c| c.as_bytes().to_vec()).collect()
}

/// YAML text → schema → typed config → semantic checks, offline (no secret read, no name
/// resolved, so the target does no I/O); it returns issues, never panics.
pub fn config_load(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = payguard::config::load::check_text_offline(text);
}
