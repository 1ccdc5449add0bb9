//! Cost of the client signature check: path and query canonicalization, and full verification
//! (header checks + canonical query + HMAC over a 1 KiB body) as the proxy runs it per request.
//!
//! Run: `cargo bench --bench signature`.

// The allocator the payguard binary uses, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use jiff::Timestamp;
use payguard::canonical::path::{canonicalize, PathPolicy};
use payguard::canonical::query::CanonicalQuery;
use payguard::config::secret::SecretRef;
use payguard::guard::signature::{
    canonical_query, sign_request, AccessKeyConfig, SignatureConfig, SignatureHeaderNames,
};

const QUERY: &str = "page=2&sort=created_at&filter=%E4%BD%A0%E5%A5%BD&tag=a+b&tag=c&empty=&flag";

fn canonicalization(c: &mut Criterion) {
    c.bench_function("canonical_query/7_params", |b| {
        b.iter(|| canonical_query(black_box(QUERY)))
    });
    let policy = PathPolicy::default();
    c.bench_function("canonical_path/already_canonical", |b| {
        b.iter(|| canonicalize(black_box(b"/v1/shops/s-17/orders/o-20240501-0001"), &policy))
    });
    c.bench_function("canonical_path/rewritten", |b| {
        b.iter(|| canonicalize(black_box(b"//v1/shops/./s-17/x/../orders/%6f-20240501-%30001"), &policy))
    });
}

fn full_verify(c: &mut Criterion) {
    let verifier = SignatureConfig {
        keys: vec![AccessKeyConfig {
            id: "shop-app".into(),
            secrets: vec![SecretRef::new("bench-secret-value")],
        }],
        window: std::time::Duration::from_secs(300),
        headers: SignatureHeaderNames::default(),
        max_body_bytes: 1024 * 1024,
    }
    .build()
    .expect("bench config is valid");
    let body = vec![b'x'; 1024];
    let ts = "1700000000";
    let nonce = "bench-nonce-0123456789";
    let sig = sign_request(
        b"bench-secret-value",
        "POST",
        "/v1/orders",
        Some(QUERY),
        ts,
        nonce,
        &body,
    )
    .expect("query is valid");
    let mut headers = HeaderMap::new();
    headers.insert("x-pg-key", "shop-app".parse().expect("valid"));
    headers.insert("x-pg-timestamp", ts.parse().expect("valid"));
    headers.insert("x-pg-nonce", nonce.parse().expect("valid"));
    headers.insert("x-pg-signature", sig.parse().expect("valid"));
    let now = Timestamp::from_second(1_700_000_010).expect("valid");
    c.bench_function("verify/1KiB_body", |b| {
        b.iter(|| {
            let signed = verifier
                .verify_headers(black_box(&headers), now)
                .expect("headers verify");
            let query = CanonicalQuery::parse(black_box(QUERY)).expect("query is valid");
            verifier
                .verify_body(&signed, "POST", "/v1/orders", query.as_str(), black_box(&body))
                .expect("signature verifies")
        })
    });
}

criterion_group!(benches, canonicalization, full_verify);
criterion_main!(benches);
