//! "The customer paid, the order shows unpaid: what happened to the notification?" —
//! `GET /admin/orders/<out_trade_no>` shows every delivery of the order's verified
//! notifications (docs/operations.md), on both stores, through real HTTP: a real payguard, a
//! real backend and, for the Redis case, a real redis-server.

mod support;

use std::time::{Duration, Instant};

use support::payguard::Payguard;
use support::redis_server::RedisServer;
use support::upstream::{Behavior, Upstream};

const STRIPE_SECRET: &str = "whsec_test_stripe_endpoint_secret_1234567890";
const BACKEND_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(upstream: &Upstream, store: &str) -> String {
    format!(
        "upstream:\n  address: {}\n{store}routes:\n  - name: stripe\n    match: {{path: /notify/stripe}}\n    policy: notify\n    notify:\n      channel:\n        stripe:\n          endpoint_secrets: ['{STRIPE_SECRET}']\n      backend_path: /internal/payments\n      timeout: 1s\n      webhook_secret: '{BACKEND_WHSEC}'\n",
        upstream.addr
    )
}

fn history(pg: &Payguard, order: &str) -> (u16, serde_json::Value) {
    let r = reqwest::blocking::Client::new()
        .get(pg.admin_url(&format!("/admin/orders/{order}")))
        .bearer_auth("test-admin-token")
        .send()
        .expect("admin answers");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(serde_json::Value::Null))
}

/// The history of `order` once it has `n` entries (they are written just after the answer).
fn history_of(pg: &Payguard, order: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = history(pg, order);
        assert_eq!(status, 200, "{body}");
        let entries = body["history"].as_array().cloned().unwrap_or_default();
        if entries.len() >= n || Instant::now() > deadline {
            return entries;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn support_question_is_answered(store: &str) {
    let up = Upstream::start();
    let pg = Payguard::start(&config(&up, store));
    let send = |n: &payguard::channels::SimulatedNotification| support::stripe::send(&pg, "/notify/stripe", n).status();
    let n = support::stripe::notification(STRIPE_SECRET, "order-7001");

    // The backend is down for the first two attempts, accepts the third; the channel then
    // sends the event twice more.
    up.set_behavior(Behavior {
        status: 500,
        ..Behavior::default()
    });
    assert_eq!(send(&n), 400);
    assert_eq!(send(&n), 400);
    up.set_behavior(Behavior::default());
    assert_eq!(send(&n), 200, "{}", pg.logs());
    assert_eq!(send(&n), 200);
    assert_eq!(send(&n), 200);
    // A forged notification naming the order is not filed under it.
    let mut forged = support::stripe::notification(STRIPE_SECRET, "order-7001");
    let pos = forged.body.iter().position(|&b| b == b'8').unwrap();
    forged.body[pos] = b'9';
    assert_eq!(send(&forged), 400);

    let entries = history_of(&pg, "order-7001", 3);
    let summary: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["outcome"].as_str().unwrap(),
                e["backend_status"],
                e["answered"]
            )
        })
        .collect();
    assert_eq!(
        summary,
        ["backend_error 500 400", "forwarded 200 200", "duplicate null 200"],
        "{entries:?}"
    );
    let forwarded = &entries[1];
    assert_eq!(forwarded["route"], "stripe");
    assert_eq!(forwarded["channel"], "stripe");
    assert_eq!(forwarded["source"], "notification");
    assert_eq!(forwarded["kind"], "payment.succeeded");
    assert_eq!(forwarded["dedup"], "claimed");
    assert!(forwarded["backend_latency_ms"].is_u64(), "{forwarded}");
    // The request id is the one the forwarded request carried.
    let request = &up.requests()[2];
    assert_eq!(
        forwarded["request_id"].as_str(),
        request.header("x-request-id"),
        "{forwarded}"
    );
    assert_eq!(forwarded["event_id"].as_str(), request.header("webhook-id"));
    assert_eq!(entries[2]["dedup"], "done");
    assert!(entries[0]["reason"].as_str().unwrap().contains("500"), "{entries:?}");
    for e in &entries {
        assert!(e["last_at"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok(), "{e}");
    }

    // An order nothing was heard of has an empty history; broken paths and missing tokens
    // are refused.
    assert_eq!(
        history(&pg, "order-0000"),
        (200, serde_json::json!({"out_trade_no": "order-0000", "history": []}))
    );
    assert_eq!(history(&pg, "order%2").0, 400);
    let unauthorized = reqwest::blocking::Client::new()
        .get(pg.admin_url("/admin/orders/order-7001"))
        .send()
        .unwrap()
        .status();
    assert_eq!(unauthorized, 401);
}

#[test]
fn the_history_of_an_order_on_the_embedded_store() {
    support_question_is_answered("");
}

#[test]
fn the_history_of_an_order_on_redis() {
    let redis = RedisServer::start();
    support_question_is_answered(&format!(
        "store:\n  backend: redis\n  redis:\n    url: {}\n    key_prefix: 'hist:'\n",
        redis.url()
    ));
}
