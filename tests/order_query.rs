//! Lost callbacks recovered by order queries (docs/channels.md, "Lost callbacks") and by daily
//! bill reconciliation (docs/reconcile.md, the simulator's bills): orders
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
    let paid_on = sim.paid_day("LOST-0001");
    let day = ledger(&pg, "wx", &paid_on);
    let entries = day["events"].as_array().expect("events");
    assert_eq!(entries.len(), 1, "{day}");
    assert_eq!(entries[0]["out_trade_no"], "LOST-0001");
    assert_eq!(entries[0]["kind"], "payment.succeeded");
    assert_eq!(entries[0]["amount_minor"], 8880);
    assert_eq!(entries[0]["channel_txn_id"], "42000LOST-0001");
    assert_eq!(entries[0]["source"], "query");
    assert_eq!(entries[0]["event_id"], wx[0]["id"]);
    let ali_day = ledger(&pg, "ali", &sim.paid_day("LOST-0002"));
    assert_eq!(ali_day["events"][0]["amount_minor"], 1999, "{ali_day}");
    assert_eq!(ledger(&pg, "wx", "2026-01-01")["events"], serde_json::json!([]));
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
    let day = ledger(&b, "wx", &sim.paid_day(&orders[0]));
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
    assert!(
        out.contains("reconcile      : ali (alipay daily bill), missing events to route ali-notify\n"),
        "{out}"
    );
    assert!(
        out.contains("reconcile      : wx (wechatpay_v3 daily bill), missing events to route wx-notify\n"),
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

/// `payguard simulate CHANNEL` to `path` on `pg` with `args`; its output.
fn simulate_to(pg: &Payguard, channel: &str, path: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args(["simulate", channel, "--to", &pg.url(path)])
        .args(args)
        .output()
        .expect("run payguard simulate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// An Alipay notification of `no` (`extra`: kind, refund number, ...), signed with the test
/// Alipay key, sent to `pg`.
fn notify_ali(pg: &Payguard, no: &str, amount: &str, extra: &[&str]) {
    let key = fixture("alipay/app_private_key.pem");
    let mut args = vec![
        "--private-key",
        key.to_str().unwrap(),
        "--app-id",
        ALI_APP_ID,
        "--out-trade-no",
        no,
        "--amount",
        amount,
    ];
    args.extend_from_slice(extra);
    let out = simulate_to(pg, "alipay", "/notify/alipay", &args);
    assert!(out.starts_with("#1 200 OK success"), "{out}\n{}", pg.logs());
}

/// `payguard reconcile` against `pg`'s admin listener; exit code and stdout (stderr on failure).
fn reconcile(pg: &Payguard, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args(["reconcile", "--admin", &pg.admin_url("")])
        .args(args)
        .env("PAYGUARD_ADMIN_TOKEN", "test-admin-token")
        .output()
        .expect("run payguard reconcile");
    let code = out.status.code().unwrap_or(-1);
    let text = if code == 2 { out.stderr } else { out.stdout };
    (code, String::from_utf8_lossy(&text).into_owned())
}

fn reconcile_json(pg: &Payguard, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let (code, out) = reconcile(pg, &all);
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{}", pg.logs()));
    (code, report)
}

/// The findings as `problem kind order refund bill-amount delivered-amount`.
fn findings(report: &serde_json::Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            format!(
                "{} {} {} {} {} {}",
                f["problem"].as_str().unwrap(),
                f["kind"].as_str().unwrap(),
                f["out_trade_no"].as_str().unwrap(),
                f["out_refund_no"].as_str().unwrap_or("-"),
                f["bill_amount_minor"],
                f["delivered_amount_minor"]
            )
        })
        .collect()
}

#[test]
fn reconcile_reports_each_difference_with_the_wechat_bill_and_forwards_only_the_missing_once() {
    use support::channel_sim::BillEdit;
    let up = Upstream::start();
    let sim = ChannelSim::start();
    // Queries come too late to matter here: what reaches the ledger is what this test sends.
    let pg = Payguard::start(&config_with(&up, &sim, "", "[1h]"));
    for (no, total) in [("RC-1", 8880), ("RC-2", 100), ("RC-3", 500), ("RC-4", 300)] {
        create_wx_order(&pg, no, total);
        sim.set_order_state(no, "SUCCESS");
    }
    let day = sim.paid_day("RC-1");
    // The notifications of RC-1, RC-3 and RC-4 arrive; RC-2's is lost.
    for (no, amount) in [("RC-1", "88.80"), ("RC-3", "5.00"), ("RC-4", "3.00")] {
        assert_eq!(notify_wx(&pg, no, amount), 204, "{}", pg.logs());
    }
    // The bill differs: RC-3 shows 4.99, RC-4 is not in it, a payment payguard never saw is,
    // and RC-1 was refunded 10.00 at the channel without a notification.
    sim.edit_bill(BillEdit::Amount {
        out_trade_no: "RC-3".into(),
        amount_minor: 499,
    });
    sim.edit_bill(BillEdit::Drop("RC-4".into()));
    sim.edit_bill(BillEdit::Add {
        out_trade_no: "wx-unknown-1".into(),
        amount_minor: 700,
    });
    let refund_no = sim.refund("RC-1", 1000);
    let forwarded_before = up.requests().len();

    let (code, report) = reconcile_json(&pg, &["--account", "wx", "--date", &day]);
    assert_eq!(code, 1, "unreconciled: exit 1\n{report}");
    assert_eq!(report["reconciled"], false);
    assert_eq!(report["matched"], 1, "{report}");
    assert_eq!(
        findings(&report),
        [
            "missing payment RC-2 - 100 null".to_string(),
            "missing payment wx-unknown-1 - 700 null".into(),
            format!("missing refund RC-1 {refund_no} 1000 null"),
            "not_in_bill payment RC-4 - null 300".into(),
            "amount_mismatch payment RC-3 - 499 500".into(),
        ],
        "{report}"
    );
    assert_eq!(report["bill"]["payments"], 4);
    assert_eq!(report["bill"]["payment_total_minor"], 8880 + 100 + 499 + 700);
    assert_eq!(report["bill"]["refund_total_minor"], 1000);
    assert_eq!(report["delivered"]["payments"], 3);
    assert_eq!(up.requests().len(), forwarded_before, "a report alone forwards nothing");

    // The table names each finding and the verdict.
    let (code, table) = reconcile(&pg, &["--account", "wx", "--date", &day]);
    assert_eq!(code, 1);
    assert!(
        table.contains("  missing          payment  RC-2  bill 1.00\n"),
        "{table}"
    );
    assert!(
        table.contains("amount_mismatch  payment  RC-3  bill 4.99  delivered payment.succeeded 5.00"),
        "{table}"
    );
    assert!(table.ends_with("unreconciled: 5 findings\n"), "{table}");

    // --forward-missing: RC-2 is queried and delivered as paid; the refund is delivered from
    // the bill's row; the unknown order is not (no such order at the channel); mismatches are
    // never forwarded.
    let (code, report) = reconcile_json(&pg, &["--account", "wx", "--date", &day, "--forward-missing"]);
    assert_eq!(code, 1, "the mismatches stay unreconciled\n{report}");
    let forwarded: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["out_trade_no"].as_str().unwrap(),
                f["forwarded"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(forwarded[0], "RC-2 delivered", "{report}");
    assert!(
        forwarded[1].starts_with("wx-unknown-1 not forwarded: the order query"),
        "{report}"
    );
    assert_eq!(forwarded[2], "RC-1 delivered");
    assert_eq!(forwarded[3], "RC-4 -");
    assert_eq!(forwarded[4], "RC-3 -");
    let paid = events_for(&up, "RC-2");
    assert_eq!(paid.len(), 1);
    assert_eq!(
        (paid[0]["kind"].as_str(), paid[0]["source"].as_str()),
        (Some("payment.succeeded"), Some("query"))
    );
    assert_eq!(paid[0]["amount_minor"], 100);
    let refund: Vec<_> = events_for(&up, "RC-1")
        .into_iter()
        .filter(|e| e["kind"] == "refund.succeeded")
        .collect();
    assert_eq!(refund.len(), 1);
    assert_eq!(refund[0]["source"], "bill");
    assert_eq!(refund[0]["refund"]["out_refund_no"], refund_no.as_str());
    assert_eq!(refund[0]["refund"]["amount_minor"], 1000);
    assert!(events_for(&up, "wx-unknown-1").is_empty());
    assert_eq!(events_for(&up, "RC-3").len(), 1, "only its notification");
    assert_eq!(up.requests().len(), forwarded_before + 2);

    // Again: what was delivered is in the ledger now; nothing is forwarded twice.
    let (code, report) = reconcile_json(&pg, &["--account", "wx", "--date", &day, "--forward-missing"]);
    assert_eq!(code, 1);
    assert_eq!(report["matched"], 3, "{report}");
    assert_eq!(findings(&report).len(), 3, "{report}");
    assert_eq!(up.requests().len(), forwarded_before + 2, "delivered once");
    assert!(pg.metric("payguard_reconcile_findings_total{merchant=\"wx\",problem=\"missing\"}") >= 3.0);
    assert_eq!(
        pg.metric("payguard_reconcile_runs_total{merchant=\"wx\",result=\"unreconciled\"}"),
        4.0
    );
    assert!(pg.logged("\"reconciliation\""));
}

#[test]
fn reconcile_with_the_alipay_bill_on_redis_settles_the_missing_and_then_exits_0() {
    let up = Upstream::start();
    let sim = ChannelSim::start();
    let redis = RedisServer::start();
    let store = redis_store(&redis, &format!("pg:reconcile-{}:", std::process::id()));
    let pg = Payguard::start(&config_with(&up, &sim, &store, "[1h]"));
    create_ali_order(&pg, "AR-1", "19.99");
    create_ali_order(&pg, "AR-2", "0.10");
    sim.set_order_state("AR-1", "TRADE_SUCCESS");
    sim.set_order_state("AR-2", "TRADE_SUCCESS");
    let day = sim.paid_day("AR-1");
    notify_ali(&pg, "AR-1", "19.99", &[]);
    // Two partial refunds of AR-1: the first notified (Alipay's refund_fee is the total so
    // far), the second not.
    let first = sim.refund("AR-1", 500);
    notify_ali(
        &pg,
        "AR-1",
        "19.99",
        &[
            "--kind",
            "refund.succeeded",
            "--refund-no",
            &first,
            "--refund-amount",
            "5.00",
        ],
    );
    let second = sim.refund("AR-1", 250);

    let (code, report) = reconcile_json(&pg, &["--account", "ali", "--date", &day]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        findings(&report),
        [
            "missing payment AR-2 - 10 null".to_string(),
            format!("missing refund AR-1 {second} 750 null"),
        ],
        "{report}"
    );
    assert_eq!(report["matched"], 2, "AR-1 and its first refund\n{report}");
    assert_eq!(
        report["bill"]["payment_total_minor"],
        1999 + 10,
        "exact fen from yuan text"
    );
    assert_eq!(report["bill"]["refund_total_minor"], 750);

    let (code, report) = reconcile_json(&pg, &["--account", "ali", "--date", &day, "--forward-missing"]);
    assert_eq!(code, 0, "every missing event delivered: reconciled\n{report}");
    assert_eq!(report["reconciled"], true);
    let paid = events_for(&up, "AR-2");
    assert_eq!((paid.len(), paid[0]["amount_minor"].as_i64()), (1, Some(10)));
    let refunds: Vec<_> = events_for(&up, "AR-1")
        .into_iter()
        .filter(|e| e["kind"] == "refund.succeeded")
        .collect();
    assert_eq!(refunds.len(), 2);
    assert_eq!(refunds[1]["source"], "bill");
    assert_eq!(refunds[1]["refund"]["out_refund_no"], second.as_str());
    assert_eq!(
        refunds[1]["refund"]["amount_minor"], 750,
        "cumulative, as Alipay's refund_fee"
    );

    let (code, table) = reconcile(&pg, &["--account", "ali", "--date", &day]);
    assert_eq!(code, 0, "{table}");
    assert!(table.ends_with("matched   : 4\nreconciled\n"), "{table}");
    assert_eq!(events_for(&up, "AR-2").len(), 1, "delivered once");
}

#[test]
fn reconcile_errors_name_their_cause_and_exit_2() {
    let up = Upstream::start();
    let sim = ChannelSim::start();
    let pg = Payguard::start(&config_with(&up, &sim, "", "[1h]"));
    let (code, err) = reconcile(&pg, &["--account", "nobody", "--date", "2026-12-01"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("404") && err.contains("no WeChat Pay or Alipay account `nobody`"),
        "{err}"
    );
    let (code, err) = reconcile(&pg, &["--account", "wx", "--date", "2999-01-01"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no trade bill for 2999-01-01 yet (NO_STATEMENT_EXIST)"),
        "{err}"
    );
    let (code, err) = reconcile(&pg, &["--account", "ali", "--date", "2999-01-01"]);
    assert_eq!(code, 2);
    assert!(err.contains("isp.bill_not_exist"), "{err}");
    let (code, err) = reconcile(&pg, &["--account", "wx", "--date", "2026-02-30"]);
    assert_eq!(code, 2);
    assert!(err.contains("not a day"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args(["reconcile", "--admin", &pg.admin_url(""), "--account", "wx"])
        .env("PAYGUARD_ADMIN_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    // A bill file that does not match the hash in the signed answer is refused, and so is a
    // download link to another host (payguard would sign the request for it).
    sim.edit_bill(support::channel_sim::BillEdit::TamperedFile);
    let (code, err) = reconcile(&pg, &["--account", "wx", "--date", "2026-12-01"]);
    assert_eq!(code, 2);
    assert!(err.contains("502") && err.contains("does not match the hash"), "{err}");
    sim.edit_bill(support::channel_sim::BillEdit::ForeignDownloadUrl);
    let downloads = sim
        .requests()
        .iter()
        .filter(|r| r.target.starts_with("/v3/billdownload/"))
        .count();
    let (code, err) = reconcile(&pg, &["--account", "wx", "--date", "2026-12-01"]);
    assert_eq!(code, 2);
    assert!(err.contains("not on the account's base_url"), "{err}");
    assert_eq!(
        sim.requests()
            .iter()
            .filter(|r| r.target.starts_with("/v3/billdownload/"))
            .count(),
        downloads,
        "nothing downloaded"
    );
    assert!(!pg.logs().contains("test-admin-token"), "no token in the logs");
}
