//! Verified notifications per second per core, one benchmark per registered channel, next to the raw
//! primitives they are built on (RSA-2048 PKCS#1 v1.5 SHA-256 verify with aws-lc-rs, as the RSA
//! channels do; HMAC-SHA256 over 1 KiB), all measured in the same run so the ratios mean
//! something on any machine.
//!
//! Each channel is built from its test setup exactly as the proxy builds it (`ChannelConfig` →
//! `build()`), fed one notification produced by that channel's `simulate()` with the test keys of
//! `tests/fixtures/`, and `verify(&req, now)` is timed: parsing, signature check,
//! decryption (WeChat Pay v3), normalization. Criterion reports time per verify; 1 / that is
//! verified notifications per second on one core (`verify` is single-threaded and lock-free
//! except UnionPay's signer cache, which is warm after the first call).
//!
//! Run: `cargo bench --bench channels -- --warm-up-time 1 --measurement-time 3` (docs/benchmarks.md).

// The allocator the payguard binary uses, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ParsedPublicKey, RsaKeyPair, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use jiff::Timestamp;
use payguard::channels::registry::{self, ChannelConfig};
use payguard::channels::{Channel, ChannelKind, EventKind, NotifyRequest, SimulateSpec};
use sha2::Sha256;

/// The signing instant of every simulated notification; verification runs "at" that instant so
/// timestamp windows pass.
const AT: &str = "2024-05-01T04:00:06Z";

fn fixture(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// One channel under test: its verifier and a notification it accepts.
struct Case {
    name: &'static str,
    channel: Arc<dyn Channel>,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Builds the verifier of `kind` from its test setup (the config section a `notify` route's
/// `channel` key holds, with the keys of `tests/fixtures/`) through `ChannelConfig::build()` as
/// the proxy does, and simulates one payment notification with the setup's keys.
fn case(kind: ChannelKind) -> Case {
    let name = kind.as_str();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let setup = kind
        .info()
        .test_setup(&fixtures)
        .unwrap_or_else(|e| panic!("{name} test setup: {e}"));
    let config: ChannelConfig = serde_json::from_value(serde_json::json!({ name: setup.config }))
        .unwrap_or_else(|e| panic!("{name} config does not parse: {e}"));
    let channel = config
        .build()
        .unwrap_or_else(|issues| panic!("{name} config does not build: {issues:?}"));
    let spec = spec(setup.app_id, setup.mch_id);
    let n = registry::simulate(kind, &spec, &setup.keys).unwrap_or_else(|e| panic!("{name} simulate: {e}"));
    let mut headers = HeaderMap::new();
    for (k, v) in &n.headers {
        headers.append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_str(&n.content_type).expect("content type"),
    );
    let c = Case {
        name,
        channel,
        headers,
        body: n.body,
    };
    // A benchmark of a refusal would measure the wrong thing: prove the notification verifies.
    let event = c
        .verify()
        .unwrap_or_else(|e| panic!("{name}: simulated notification refused: {e}"));
    assert_eq!(event.kind, EventKind::PaymentSucceeded, "{name}");
    c
}

impl Case {
    fn verify(&self) -> Result<payguard::channels::VerifiedEvent, payguard::channels::ChannelError> {
        self.channel.verify(
            &NotifyRequest {
                headers: &self.headers,
                body: &self.body,
            },
            now(),
        )
    }
}

fn now() -> Timestamp {
    AT.parse().expect("timestamp")
}

fn spec(app_id: Option<String>, mch_id: Option<String>) -> SimulateSpec {
    SimulateSpec {
        out_trade_no: "ORDER-BENCH-0001".into(),
        amount_minor: 8880,
        currency: "CNY".into(),
        kind: EventKind::PaymentSucceeded,
        out_refund_no: None,
        refund_amount_minor: None,
        channel_txn_id: "4200002000202405010000000042".into(),
        at: now(),
        notification_id: "bench-notification-0001".into(),
        app_id,
        mch_id,
    }
}

/// `verify` of each channel on a valid notification.
fn bench_channels(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    for case in ChannelKind::ALL.iter().map(|&kind| case(kind)) {
        group.bench_function(case.name, |b| {
            b.iter(|| black_box(case.verify()).expect("verifies"));
        });
    }
    group.finish();
}

/// The primitives underneath: what a channel costs beyond its signature check.
fn bench_primitives(c: &mut Criterion) {
    let mut group = c.benchmark_group("primitive");
    group.throughput(Throughput::Elements(1));

    // RSA-2048 PKCS#1 v1.5 with SHA-256 (Alipay RSA2, WeChat Pay v3, UnionPay 5.1.0), over a
    // message the size of a typical notification, with the key prepared once as the channels
    // prepare theirs at config build time.
    let pem = fixture("wechatpay_v3/simulate_platform_private_key.pem");
    let pkcs8 = pem::parse(pem.trim()).expect("PEM test key");
    let private = RsaKeyPair::from_pkcs8(pkcs8.contents()).expect("RSA-2048 PKCS#8 test key");
    let message = vec![b'n'; 1024];
    let mut signature = vec![0; private.public_modulus_len()];
    private
        .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), &message, &mut signature)
        .expect("signs");
    assert_eq!(signature.len(), 256, "RSA-2048");
    let public_spki = pem::parse(fixture("wechatpay_v3/simulate_platform_public_key.pem").trim()).expect("PEM");
    let verifying = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_spki.contents()).expect("SPKI");
    group.bench_function("rsa2048_pkcs1v15_sha256_verify", |b| {
        b.iter(|| {
            verifying
                .verify_sig(black_box(&message), black_box(&signature))
                .expect("verifies")
        });
    });

    // HMAC-SHA256 over 1 KiB (Stripe, Standard Webhooks, WeChat Pay v2 HMAC), key set up each
    // time as the channels do per notification.
    let key = b"whsec_bench_stripe_endpoint_secret";
    group.bench_function("hmac_sha256_1kib", |b| {
        b.iter(|| {
            let mut mac = Hmac::<Sha256>::new_from_slice(black_box(key)).expect("any key length");
            mac.update(black_box(&message));
            black_box(mac.finalize().into_bytes())
        });
    });
    group.finish();
}

criterion_group!(benches, bench_channels, bench_primitives);
criterion_main!(benches);
