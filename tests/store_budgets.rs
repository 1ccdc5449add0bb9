//! The embedded store never trades security for space: with its nonce or dedup budget full,
//! payguard refuses new signed requests (503) and answers new notifications with the channel's
//! failure — nothing is forwarded, no live record is evicted — and says so in metrics.

mod support;

use std::time::Duration;

use payguard::channels::{registry, ChannelKind, EventKind, SimulateKeys, SimulateSpec};
use support::guard::{problem_code, Req};
use support::payguard::Payguard;
use support::upstream::Upstream;

const STRIPE_SECRET: &str = "whsec_budget_test_stripe_secret";

fn config(up: &Upstream) -> String {
    format!(
        "upstream:\n  address: {}\nstore:\n  backend: embedded\n  embedded: {{max_nonces: 3, max_dedup_records: 2}}\n\
         guard:\n  signature:\n    window: 60s\n    keys:\n      - id: {}\n        secrets: [\"{}\"]\n\
         routes:\n\
         \x20 - {{name: api, match: {{path_prefix: /v1}}, policy: guard}}\n\
         \x20 - name: stripe\n    match: {{path: /notify/stripe}}\n    policy: notify\n    notify:\n      channel: {{stripe: {{endpoint_secrets: ['{STRIPE_SECRET}']}}}}\n      backend_path: /internal/payments\n      webhook_secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n\
         default_action: not_found\n",
        up.addr,
        support::guard::KEY_ID,
        support::guard::SECRET
    )
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn send(pg: &Payguard, req: &Req) -> (u16, String) {
    let mut b = client().request(
        reqwest::Method::from_bytes(req.method.as_bytes()).unwrap(),
        pg.url(&req.target),
    );
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    problem_code(b.body(req.body.clone()).send().unwrap())
}

#[test]
fn a_full_nonce_budget_refuses_signed_requests_and_keeps_every_nonce() {
    let up = Upstream::start();
    let pg = Payguard::start(&config(&up));
    let signed: Vec<Req> = (0..3)
        .map(|i| Req::new("POST", &format!("/v1/orders/{i}"), b"{}").signed())
        .collect();
    for req in &signed {
        assert_eq!(send(&pg, req).0, 200);
    }
    let fourth = Req::new("POST", "/v1/orders/3", b"{}").signed();
    assert_eq!(
        send(&pg, &fourth),
        (503, "STORE_UNAVAILABLE".to_string()),
        "fail closed"
    );
    for req in &signed {
        assert_eq!(
            send(&pg, req),
            (409, "NONCE_REPLAYED".to_string()),
            "no nonce was evicted"
        );
    }
    assert_eq!(up.requests().len(), 3);
    assert!(pg.wait_metric("payguard_store_full_total{kind=\"nonces\"}", 1.0) >= 1.0);
    assert_eq!(pg.metric("payguard_store_records{kind=\"nonces\"}"), 3.0);
    assert_eq!(pg.metric("payguard_store_budget{kind=\"nonces\"}"), 3.0);
}

fn stripe_notification(order: &str) -> payguard::channels::SimulatedNotification {
    registry::simulate(
        ChannelKind::Stripe,
        &SimulateSpec {
            out_trade_no: order.into(),
            amount_minor: 1000,
            currency: "USD".into(),
            kind: EventKind::PaymentSucceeded,
            out_refund_no: None,
            refund_amount_minor: None,
            channel_txn_id: format!("pi_{order}"),
            at: jiff::Timestamp::now(),
            notification_id: format!("evt_{order}"),
            app_id: None,
            mch_id: None,
        },
        &SimulateKeys {
            secret: Some(STRIPE_SECRET.as_bytes().to_vec()),
            ..Default::default()
        },
    )
    .unwrap()
}

fn deliver(pg: &Payguard, n: &payguard::channels::SimulatedNotification) -> u16 {
    let mut b = client()
        .post(pg.url("/notify/stripe"))
        .header("content-type", n.content_type.as_str());
    for (k, v) in &n.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(n.body.clone()).send().unwrap().status().as_u16()
}

#[test]
fn a_full_dedup_budget_answers_the_channels_failure_and_keeps_every_delivered_event() {
    let up = Upstream::start();
    let pg = Payguard::start(&config(&up));
    let (first, second) = (stripe_notification("B-1"), stripe_notification("B-2"));
    assert_eq!(deliver(&pg, &first), 200);
    assert_eq!(deliver(&pg, &second), 200);
    let third = stripe_notification("B-3");
    let status = deliver(&pg, &third);
    assert!(
        !(200..300).contains(&status),
        "Stripe retries any non-2xx later: {status}"
    );
    // The delivered events are still recognised: a retry is acked, not forwarded again.
    assert_eq!(deliver(&pg, &first), 200);
    assert_eq!(
        up.requests().len(),
        2,
        "only the two events that had room were forwarded"
    );
    let outcome = "payguard_notifications_total{channel=\"stripe\",outcome=\"store_error\",route=\"stripe\"}";
    assert_eq!(pg.wait_metric(outcome, 1.0), 1.0);
    assert!(pg.metric("payguard_store_full_total{kind=\"dedup records\"}") >= 1.0);
}
