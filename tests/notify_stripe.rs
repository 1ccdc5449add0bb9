//! Stripe notifications through the proxy (embedded store): verify, forward once, ack, dedup,
//! backend failure releases the claim.

mod support;

use support::payguard::Payguard;
use support::upstream::{Behavior, Upstream};

const STRIPE_SECRET: &str = "whsec_test_stripe_endpoint_secret_1234567890";
const BACKEND_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(upstream: &str) -> String {
    format!(
        "upstream:\n  address: {upstream}\nroutes:\n  - name: stripe\n    match: {{path: /notify/stripe}}\n    policy: notify\n    notify:\n      channel:\n        stripe:\n          endpoint_secrets: ['{STRIPE_SECRET}']\n      backend_path: /internal/payments\n      timeout: 1s\n      webhook_secret: '{BACKEND_WHSEC}'\n"
    )
}

fn notification(order: &str) -> payguard::channels::SimulatedNotification {
    support::stripe::notification(STRIPE_SECRET, order)
}

fn send(pg: &Payguard, n: &payguard::channels::SimulatedNotification) -> reqwest::blocking::Response {
    support::stripe::send(pg, "/notify/stripe", n)
}

#[test]
fn genuine_stripe_event_is_forwarded_once_signed_and_acked() {
    let up = Upstream::start();
    let pg = Payguard::start(&config(&up.addr.to_string()));
    let n = notification("order-1001");

    let r = send(&pg, &n);
    assert_eq!(r.status(), 200, "{}", pg.logs());
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    let fwd = &reqs[0];
    assert_eq!(fwd.method, "POST");
    assert_eq!(fwd.target, "/internal/payments");
    let event: serde_json::Value = serde_json::from_slice(&fwd.body).unwrap();
    assert_eq!(event["channel"], "stripe");
    assert_eq!(event["kind"], "payment.succeeded");
    assert_eq!(event["out_trade_no"], "order-1001");
    assert_eq!(event["amount_minor"], 8880);
    assert_eq!(event["currency"], "USD");
    assert!(event["refund"].is_null());
    let id = event["id"].as_str().unwrap();
    assert!(id.starts_with("evt_"));
    assert_eq!(fwd.header("webhook-id"), Some(id));
    // The notification starts a trace (Stripe sends none), passed to the backend and logged.
    let traceparent = fwd.header("traceparent").expect("a traceparent");
    let trace_id = payguard::trace::trace_id(traceparent.as_bytes()).expect("a valid traceparent");
    assert!(pg.logged(&format!("\"trace_id\":\"{trace_id}\"")), "{}", pg.logs());

    // The backend can check the forwarded request with any Standard Webhooks verifier.
    let ts: i64 = fwd.header("webhook-timestamp").unwrap().parse().unwrap();
    let signer = payguard::channels::standard_webhooks::StandardWebhookSigner::from_whsec(BACKEND_WHSEC).unwrap();
    assert_eq!(fwd.header("webhook-signature").unwrap(), signer.sign(id, ts, &fwd.body));

    // A retry of the same event is acked without reaching the backend.
    let r = send(&pg, &n);
    assert_eq!(r.status(), 200);
    assert_eq!(up.requests().len(), 1);
    assert!(
        pg.metric("payguard_notifications_total{channel=\"stripe\",outcome=\"duplicate\",route=\"stripe\"}") >= 1.0
    );
}

#[test]
fn backend_failure_answers_failure_then_the_retry_is_forwarded() {
    let up = Upstream::start();
    up.set_behavior(Behavior {
        status: 500,
        ..Behavior::default()
    });
    let pg = Payguard::start(&config(&up.addr.to_string()));
    let n = notification("order-2002");
    let r = send(&pg, &n);
    assert_eq!(r.status(), 400, "Stripe retries on non-2xx");
    assert_eq!(up.requests().len(), 1);

    up.set_behavior(Behavior::default());
    let r = send(&pg, &n);
    assert_eq!(r.status(), 200);
    assert_eq!(up.requests().len(), 2, "the released claim lets the retry through");
    let r = send(&pg, &n);
    assert_eq!(r.status(), 200);
    assert_eq!(up.requests().len(), 2);
}

#[test]
fn tampered_body_is_rejected_and_nothing_is_forwarded() {
    let up = Upstream::start();
    let pg = Payguard::start(&config(&up.addr.to_string()));
    let mut n = notification("order-3003");
    let pos = n.body.iter().position(|&b| b == b'8').unwrap();
    n.body[pos] = b'9';
    let r = send(&pg, &n);
    assert_eq!(r.status(), 400);
    assert!(up.requests().is_empty());
    assert!(
        pg.metric("payguard_notifications_total{channel=\"stripe\",outcome=\"rejected_signature\",route=\"stripe\"}")
            >= 1.0
    );
}
