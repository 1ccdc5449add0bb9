//! Signed Stripe test notifications, sent through a running payguard.

use std::time::Duration;

use payguard::channels::{registry, ChannelKind, EventKind, SimulateKeys, SimulateSpec, SimulatedNotification};

use super::payguard::Payguard;

/// A `payment.succeeded` event for `order`, signed with the endpoint secret `secret`.
pub fn notification(secret: &str, order: &str) -> SimulatedNotification {
    let spec = SimulateSpec {
        out_trade_no: order.into(),
        amount_minor: 8880,
        currency: "usd".into(),
        kind: EventKind::PaymentSucceeded,
        out_refund_no: None,
        refund_amount_minor: None,
        channel_txn_id: "pi_3TestIntent".into(),
        at: jiff::Timestamp::now(),
        notification_id: "evt_1TestEvent".into(),
        app_id: None,
        mch_id: None,
    };
    let keys = SimulateKeys {
        secret: Some(secret.as_bytes().to_vec()),
        ..Default::default()
    };
    registry::simulate(ChannelKind::Stripe, &spec, &keys).expect("simulate")
}

/// POSTs `n` to `path` on payguard's proxy listener.
pub fn send(pg: &Payguard, path: &str, n: &SimulatedNotification) -> reqwest::blocking::Response {
    let mut req = reqwest::blocking::Client::new()
        .post(pg.url(path))
        .header("content-type", &n.content_type)
        .body(n.body.clone())
        .timeout(Duration::from_secs(10));
    for (k, v) in &n.headers {
        req = req.header(k, v);
    }
    req.send().expect("send")
}
