//! Lost callbacks recovered by order queries (docs/channels.md, "Lost callbacks"): orders
//! created through egress at the channel simulator are tracked in the store; one whose
//! notification never comes is queried on the account's schedule, and the verified answer is
//! delivered through the account's notify route with the notification's dedup key, so a query
//! and a notification of the same order reach the backend once between them. Real payguard
//! processes, a real Redis for the two-replica case, notifications made by `payguard simulate`.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::channel_sim::{fixture, ChannelSim, ALI_APP_ID, WX_MERCHANT_SERIAL, WX_PLATFORM_SERIAL};
use support::payguard::Payguard;
use support::redis_server::RedisServer;
use support::upstream::{Behavior, Upstream};

const API_V3_KEY: &str = "0123456789abcdef0123456789ABCDEF";
const MCHID: &str = "1900000001";
const BACKEND_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A WeChat Pay and an Alipay account that query their orders 1 s and 2 s after creating them
/// (then every second while the backend refuses), their egress routes and their notify routes.
fn config(up: &Upstream, sim: &ChannelSim, store: &str) -> String {
    config_with(up, sim, store, "[1s, 2s]")
}

/// [`config`] with another query `schedule`.
fn config_with(up: &Upstream, sim: &ChannelSim, store: &str, schedule: &str) -> String {
    format!(
        "upstream:\n  address: {up}\n{store}merchants:\n  wx:\n    channel: wechatpay_v3\n    mchid: \"{MCHID}\"\n    certificate_serial: {WX_MERCHANT_SERIAL}\n    private_key: file:{key}\n    api_v3_key: {API_V3_KEY}\n    platform_certificates: ['file:{platform}']\n    base_url: {base}\n    extra_ca: {ca}\n    order_query:\n      schedule: {schedule}\n      retry_every: 1s\n  ali:\n    channel: alipay\n    app_id: \"{ALI_APP_ID}\"\n    private_key: file:{ali_key}\n    alipay_public_key: file:{ali_pub}\n    base_url: {base}\n    extra_ca: {ca}\n    order_query:\n      schedule: {schedule}\n      retry_every: 1s\nroutes:\n  - name: wx-egress\n    match: {{path_prefix: /egress/wechatpay}}\n    policy: egress\n    egress:\n      merchant: wx\n      allow:\n        - {{method: POST, path_prefix: /v3/pay/transactions}}\n  - name: ali-egress\n    match: {{path_prefix: /egress/alipay}}\n    policy: egress\n    egress:\n      merchant: ali\n      allow:\n        - {{method: POST, path_prefix: /alipay.trade.precreate}}\n  - name: wx-notify\n    match: {{path: /notify/wechatpay}}\n    policy: notify\n    notify:\n      merchant: wx\n      backend_path: /internal/payments\n      timeout: 2s\n      webhook_secret: '{BACKEND_WHSEC}'\n  - name: ali-notify\n    match: {{path: /notify/alipay}}\n    policy: notify\n    notify:\n      merchant: ali\n      backend_path: /internal/payments\n      timeout: 2s\n      webhook_secret: '{BACKEND_WHSEC}'\n",
        up = up.addr,
        key = fixture("wechatpay_v3/egress_merchant_private_key.pem").display(),
        platform = fixture("wechatpay_v3/simulate_platform_certificate.pem").display(),
        ali_key = fixture("alipay/egress_app_private_key.pem").display(),
        ali_pub = fixture("alipay/app_public_key.pem").display(),
        base = sim.base_url(),
        ca = sim.ca_ref(),
    )
}

fn redis_store(redis: &RedisServer, prefix: &str) -> String {
    format!(
        "store:\n  backend: redis\n  redis:\n    url: {}\n    key_prefix: '{prefix}'\n    command_timeout: 300ms\n    connect_timeout: 300ms\n",
        redis.url()
    )
}

/// Creates a WeChat Pay native order of `total` fen through payguard's egress route.
fn create_wx_order(pg: &Payguard, no: &str, total: i64) {
    let body = format!(
        r#"{{"appid":"wxd678efh567hg6787","mchid":"{MCHID}","description":"Widget","out_trade_no":"{no}","notify_url":"https://shop.example/notify/wechatpay","amount":{{"total":{total},"currency":"CNY"}}}}"#
    );
    let answer = reqwest::blocking::Client::new()
        .post(pg.url("/egress/wechatpay/v3/pay/transactions/native"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .expect("payguard answers");
    assert_eq!(answer.status(), 200, "{}", pg.logs());
}

/// Creates an Alipay precreate order of `amount` yuan (decimal text).
fn create_ali_order(pg: &Payguard, no: &str, amount: &str) {
    let body = format!(r#"{{"out_trade_no":"{no}","total_amount":"{amount}","subject":"Widget"}}"#);
    let answer = reqwest::blocking::Client::new()
        .post(pg.url("/egress/alipay/alipay.trade.precreate"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .expect("payguard answers");
    assert_eq!(answer.status(), 200, "{}", pg.logs());
}

/// `GET /admin/ledger/<merchant>/<day>` on `pg`.
fn ledger(pg: &Payguard, merchant: &str, day: &str) -> serde_json::Value {
    reqwest::blocking::Client::new()
        .get(pg.admin_url(&format!("/admin/ledger/{merchant}/{day}")))
        .bearer_auth("test-admin-token")
        .send()
        .expect("admin answers")
        .json()
        .expect("JSON")
}

/// The normalized events the backend received for `no`.
fn events_for(up: &Upstream, no: &str) -> Vec<serde_json::Value> {
    up.requests()
        .iter()
        .filter(|r| r.target == "/internal/payments")
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
        .filter(|e| e["out_trade_no"] == no)
        .collect()
}

fn wait_events(up: &Upstream, no: &str, n: usize, within: Duration, pg: &Payguard) -> Vec<serde_json::Value> {
    let until = Instant::now() + within;
    loop {
        let events = events_for(up, no);
        if events.len() >= n || Instant::now() > until {
            assert!(
                events.len() >= n,
                "{n} events for {no} expected, got {events:?}\n{}",
                pg.logs()
            );
            return events;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A WeChat Pay notification of `no` made by `payguard simulate` with the platform key, sent
/// to `pg`; the status payguard answered.
fn notify_wx(pg: &Payguard, no: &str, amount: &str) -> u16 {
    let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args(["simulate", "wechatpay_v3", "--to", &pg.url("/notify/wechatpay")])
        .arg("--private-key")
        .arg(fixture("wechatpay_v3/simulate_platform_private_key.pem"))
        .args([
            "--key-id",
            WX_PLATFORM_SERIAL,
            "--api-v3-key",
            API_V3_KEY,
            "--mch-id",
            MCHID,
        ])
        .args(["--out-trade-no", no, "--amount", amount])
        .output()
        .expect("run payguard simulate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {stdout:?}"))
}

#[test]
fn a_paid_order_whose_notification_never_comes_is_delivered_by_the_query() {
    let up = Upstream::start();
    let sim = ChannelSim::start();
    // The first query after 1 s finds the orders unpaid, the second (4 s) paid.
    let pg = Payguard::start(&config_with(&up, &sim, "", "[1s, 4s]"));
    create_wx_order(&pg, "LOST-0001", 8880);
    create_ali_order(&pg, "LOST-0002", "19.99");
    assert_eq!(
        pg.wait_metric("payguard_orders_tracked_total{merchant=\"wx\",result=\"tracked\"}", 1.0),
        1.0
    );
    assert_eq!(
        pg.wait_metric(
            "payguard_orders_tracked_total{merchant=\"ali\",result=\"tracked\"}",
            1.0
        ),
        1.0
    );
    // The operator sees both orders waiting.
    let waiting: serde_json::Value = reqwest::blocking::Client::new()
        .get(pg.admin_url("/admin/orders/awaiting"))
        .bearer_auth("test-admin-token")
        .send()
        .expect("admin answers")
        .json()
        .expect("JSON");
    assert_eq!(waiting["merchants"]["wx"][0]["out_trade_no"], "LOST-0001", "{waiting}");
    assert_eq!(waiting["merchants"]["wx"][0]["amount_minor"], 8880, "{waiting}");
    assert_eq!(waiting["merchants"]["ali"][0]["amount_minor"], 1999, "{waiting}");
    // Not paid yet: the first query finds it pending (Alipay: no trade before the QR code is
    // scanned) and nothing is delivered.
    assert!(pg.wait_metric("payguard_order_queries_total{merchant=\"wx\",result=\"pending\"}", 1.0) >= 1.0);
    assert!(
        pg.wait_metric(
            "payguard_order_queries_total{merchant=\"ali\",result=\"not_found\"}",
            1.0
        ) >= 1.0
    );
    assert!(events_for(&up, "LOST-0001").is_empty());
    assert_eq!(pg.metric("payguard_orders_awaiting{merchant=\"wx\"}"), 1.0);

    // The shopper pays; the channel's notification is lost. The next query finds it paid.
    sim.set_order_state("LOST-0001", "SUCCESS");
    sim.set_order_state("LOST-0002", "TRADE_SUCCESS");
    let wx = wait_events(&up, "LOST-0001", 1, Duration::from_secs(10), &pg);
    let ali = wait_events(&up, "LOST-0002", 1, Duration::from_secs(10), &pg);
    assert_eq!(wx[0]["kind"], "payment.succeeded");
    assert_eq!(wx[0]["source"], "query");
    assert_eq!(wx[0]["amount_minor"], 8880);
    assert_eq!(wx[0]["channel_txn_id"], "42000LOST-0001");
    assert_eq!(ali[0]["kind"], "payment.succeeded");
    assert_eq!(ali[0]["source"], "query");
    assert_eq!(ali[0]["amount_minor"], 1999, "19.99 yuan is exactly 1999 fen");
    assert_eq!(ali[0]["merchant"]["app_id"], ALI_APP_ID);
    // The delivered event is signed for the backend like a notification's.
    let sent = up.requests();
    let delivery = sent.iter().find(|r| r.target == "/internal/payments").unwrap();
    assert!(delivery
        .header("webhook-signature")
        .is_some_and(|v| v.starts_with("v1,")));
    // Delivered: the order leaves tracking and is not queried again.
    assert!(
        pg.wait_metric(
            "payguard_order_queries_total{merchant=\"wx\",result=\"delivered\"}",
            1.0
        ) >= 1.0
    );
    let queries = sim.queries_of("LOST-0001");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        sim.queries_of("LOST-0001"),
        queries,
        "a delivered order is not queried again"
    );
    assert_eq!(events_for(&up, "LOST-0001").len(), 1);
    assert!(pg.logged("\"order query\""), "one log line per query");

    // The channel's late retry of the notification is a duplicate: acknowledged, not forwarded.
    assert_eq!(notify_wx(&pg, "LOST-0001", "88.80"), 204, "{}", pg.logs());
    assert_eq!(
        events_for(&up, "LOST-0001").len(),
        1,
        "query and notification reach the backend once"
    );

    // The ledger of the day the channel says the order was paid (Beijing time) holds each
    // delivered event once, with where it came from.
    let day = ledger(&pg, "wx", "2026-12-03");
    let entries = day["events"].as_array().expect("events");
    assert_eq!(entries.len(), 1, "{day}");
    assert_eq!(entries[0]["out_trade_no"], "LOST-0001");
    assert_eq!(entries[0]["kind"], "payment.succeeded");
    assert_eq!(entries[0]["amount_minor"], 8880);
    assert_eq!(entries[0]["channel_txn_id"], "42000LOST-0001");
    assert_eq!(entries[0]["source"], "query");
    assert_eq!(entries[0]["event_id"], wx[0]["id"]);
    let ali_day = ledger(&pg, "ali", "2026-12-03");
    assert_eq!(ali_day["events"][0]["amount_minor"], 1999, "{ali_day}");
    assert_eq!(ledger(&pg, "wx", "2026-12-02")["events"], serde_json::json!([]));
    let admin = |path: &str, token: bool| {
        let mut req = reqwest::blocking::Client::new().get(pg.admin_url(path));
        if token {
            req = req.bearer_auth("test-admin-token");
        }
        req.send().expect("admin answers").status()
    };
    assert_eq!(admin("/admin/ledger/nobody/2026-12-03", true), 404);
    assert_eq!(admin("/admin/ledger/wx/2026-13-03", true), 400);
    assert_eq!(admin("/admin/ledger/wx/2026-12-03", false), 401);
}

#[test]
fn an_order_whose_notification_was_delivered_is_not_queried() {
    let up = Upstream::start();
    let sim = ChannelSim::start();
    let pg = Payguard::start(&config_with(&up, &sim, "", "[4s, 5s]"));
    create_wx_order(&pg, "FAST-0001", 100);
    sim.set_order_state("FAST-0001", "SUCCESS");
    // The notification arrives before the first query (4 s).
    assert_eq!(notify_wx(&pg, "FAST-0001", "1.00"), 204, "{}", pg.logs());
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(sim.queries_of("FAST-0001"), 0, "{}", pg.logs());
    let events = events_for(&up, "FAST-0001");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["source"], "notification");
}

#[test]
fn a_backend_down_past_the_channels_retries_gets_the_event_when_it_is_back() {
    let up = Upstream::start();
    let sim = ChannelSim::start();
    let pg = Payguard::start(&config(&up, &sim, ""));
    up.set_behavior(Behavior {
        status: 503,
        ..Behavior::default()
    });
    create_wx_order(&pg, "DOWN-0001", 500);
    sim.set_order_state("DOWN-0001", "SUCCESS");
    // The channel gave up long ago; the queries find the order paid and the backend refusing.
    assert!(
        pg.wait_metric(
            "payguard_order_queries_total{merchant=\"wx\",result=\"undelivered\"}",
            2.0
        ) >= 2.0
    );
    let refused = events_for(&up, "DOWN-0001").len();
    assert!(refused >= 2, "each retry was offered to the backend");
    up.set_behavior(Behavior::default());
    assert!(
        pg.wait_metric(
            "payguard_order_queries_total{merchant=\"wx\",result=\"delivered\"}",
            1.0
        ) >= 1.0
    );
    let queries = sim.queries_of("DOWN-0001");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sim.queries_of("DOWN-0001"), queries, "delivered: no more queries");
    let offered = events_for(&up, "DOWN-0001");
    assert_eq!(offered.len(), refused + 1, "accepted once, then never again");
    assert!(
        offered.iter().all(|e| e["id"] == offered[0]["id"]),
        "one event id across retries"
    );
}

#[test]
fn two_replicas_query_each_order_once_per_step_and_deliver_it_once() {
    let up = Upstream::start();
    let sim = ChannelSim::start();
    let redis = RedisServer::start();
    let prefix = format!("pg:orders-{}:", std::process::id());
    let store = redis_store(&redis, &prefix);
    let a = Payguard::start(&config(&up, &sim, &store));
    let b = Payguard::start(&config(&up, &sim, &store));
    let orders: Vec<String> = (0..6).map(|i| format!("TWO-{i:04}")).collect();
    for (i, no) in orders.iter().enumerate() {
        create_wx_order(if i % 2 == 0 { &a } else { &b }, no, 100 + i as i64);
        // Paid at once, its notification lost: the first query of each order delivers it.
        sim.set_order_state(no, "SUCCESS");
    }
    let delivered = |pg: &Payguard| pg.metric("payguard_order_queries_total{merchant=\"wx\",result=\"delivered\"}");
    let until = Instant::now() + Duration::from_secs(15);
    while delivered(&a) + delivered(&b) < 6.0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    // The second step (2 s) passes too: nothing is queried or delivered again.
    std::thread::sleep(Duration::from_secs(3));
    for no in &orders {
        assert_eq!(
            sim.queries_of(no),
            1,
            "{no}: queried by one replica\n{}\n{}",
            a.logs(),
            b.logs()
        );
        assert_eq!(events_for(&up, no).len(), 1, "{no}: delivered once");
    }
    assert_eq!(delivered(&a) + delivered(&b), 6.0);
    // The ledger is shared through Redis: either replica shows all six.
    let day = ledger(&b, "wx", "2026-12-03");
    let mut listed: Vec<&str> = day["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["out_trade_no"].as_str())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, orders.iter().map(String::as_str).collect::<Vec<_>>(), "{day}");
    assert_eq!(
        a.metric("payguard_orders_awaiting{merchant=\"wx\"}") + b.metric("payguard_orders_awaiting{merchant=\"wx\"}"),
        0.0
    );
}

#[test]
fn check_shows_each_queried_account_and_where_its_events_go() {
    let up = Upstream::start();
    let sim = ChannelSim::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payguard.yaml");
    std::fs::write(&path, config(&up, &sim, "")).unwrap();
    let (ok, out) = support::payguard_cli(&["check".as_ref(), "-c".as_ref(), path.as_os_str()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("order query    : wx at 1s, 2s after creation, recovered events to route wx-notify"),
        "{out}"
    );
    assert!(
        out.contains("order query    : ali at 1s, 2s after creation, recovered events to route ali-notify"),
        "{out}"
    );
}

#[test]
fn check_names_a_tracked_account_without_a_notify_route_for_its_events() {
    let up = Upstream::start();
    let sim = ChannelSim::start();
    let text = config(&up, &sim, "").replace(
        "      merchant: wx\n      backend_path",
        "      merchant: ali\n      backend_path",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payguard.yaml");
    std::fs::write(&path, &text).unwrap();
    let (ok, out) = support::payguard_cli(&["check".as_ref(), "-c".as_ref(), path.as_os_str()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("merchants.wx.order_query") && out.contains("`merchant: wx`"),
        "{out}"
    );
    assert!(
        out.contains("merchants.ali.order_query") && out.contains("more than one"),
        "{out}"
    );
}
