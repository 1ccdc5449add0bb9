//! No way around the guard: every spelling of a protected path is either refused (400) or
//! handled by the protected route, and what reaches the backend is the canonical request payguard
//! checked (docs/configuration.md, "Route matching and path normalization").
//!
//! The backend here routes the way lenient frameworks do (tests/support/framework.rs): after
//! every variant, no request it would hand to a protected handler may be unsigned or unverified.
//! Requests are written byte for byte on a raw socket; an HTTP client library would normalize
//! the very paths under test before sending them.

mod support;

use std::time::Duration;

use payguard::channels::{registry, ChannelKind, EventKind, SimulateKeys, SimulateSpec};
use payguard::guard::signature::{new_nonce, sign_request};
use support::framework::{framework_handler, framework_view, protected_hits, raw_request, Handler, RawResponse};
use support::payguard::Payguard;
use support::redis_server::RedisServer;
use support::upstream::{Recorded, Upstream};

const KEY_ID: &str = "shop-app";
const SECRET: &str = "route-protection-secret-0001";
const ALIPAY_APP_ID: &str = "2021000000000001";

/// The protected handlers of the shop backend behind the test layout.
const HANDLERS: &[Handler] = &[
    Handler::exact("orders", "POST", "/api/orders"),
    Handler::below("admin", "/api/admin"),
    Handler::exact("alipay", "*", "/notify/alipay"),
];

fn fixture(path: &str) -> String {
    format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// The layout of the issue that found the hole: a guard route on `POST /api/orders`, a guard
/// prefix route, an Alipay notify route in passthrough mode, a `pass` prefix route on `/api` and
/// `default_action: pass`.
fn layout(up: &Upstream, store: &str) -> String {
    format!(
        "upstream:\n  address: {}\n{store}guard:\n  signature:\n    window: 300s\n    keys:\n      - id: {KEY_ID}\n        secrets: [\"{SECRET}\"]\n\
         routes:\n\
         \x20 - name: orders\n    match: {{methods: [POST], path: /api/orders}}\n    policy: guard\n\
         \x20 - name: admin\n    match: {{path_prefix: /api/admin}}\n    policy: guard\n\
         \x20 - name: alipay\n    match: {{path: /notify/alipay}}\n    policy: notify\n    notify:\n      forward: passthrough\n      channel:\n        alipay:\n          app_id: '{ALIPAY_APP_ID}'\n          alipay_public_key: 'file:{}'\n\
         \x20 - name: api\n    match: {{path_prefix: /api}}\n    policy: pass\n\
         default_action: pass\n",
        up.addr,
        fixture("alipay/app_public_key.pem"),
    )
}

struct Rig {
    pg: Payguard,
    up: Upstream,
    _redis: Option<RedisServer>,
}

impl Rig {
    fn start(redis: bool) -> Self {
        Self::start_with(redis, "")
    }

    fn start_with(redis: bool, server: &str) -> Self {
        let up = Upstream::start();
        let redis = redis.then(RedisServer::start);
        let store = redis.as_ref().map_or(String::new(), |r| {
            format!(
                "store:\n  backend: redis\n  redis:\n    url: {}\n    command_timeout: 250ms\n",
                r.url()
            )
        });
        let custom = support::payguard::Custom {
            server_extra: server.to_string(),
            ..Default::default()
        };
        let pg = Payguard::start_with("127.0.0.1", custom, &layout(&up, &store));
        Self { pg, up, _redis: redis }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.pg.port)
    }

    fn send(&self, method: &str, target: &[u8], headers: &[(&str, &str)], body: &[u8]) -> RawResponse {
        raw_request(&self.addr(), method, target, headers, body)
    }
}

/// Every spelling of `/{a}/{b}` the issue lists and more: slashes, dot segments, percent-encoding
/// of each position, encoded slashes and backslashes, `;`, control characters, case, trailing
/// `/` and `/.`, double encoding, overlong UTF-8, IIS `%u`, absolute-form, and mixes of them.
fn variants(a: &str, b: &str) -> Vec<String> {
    let enc = |s: &str, upper: bool| {
        let first = s.as_bytes()[0];
        let hex = if upper {
            format!("%{first:02X}")
        } else {
            format!("%{first:02x}")
        };
        format!("{hex}{}", &s[1..])
    };
    let (ax, bx, bx_upper) = (enc(a, false), enc(b, false), enc(b, true));
    let (au, bu) = (a.to_ascii_uppercase(), b.to_ascii_uppercase());
    let mixed = |s: &str| {
        s.chars()
            .enumerate()
            .map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c })
            .collect::<String>()
    };
    let (am, bm) = (mixed(a), mixed(b));
    let b_tail = &b[1..];
    let b_head = b.as_bytes()[0];
    [
        format!("/{a}/{b}/"),
        format!("//{a}/{b}"),
        format!("/{a}//{b}"),
        format!("/{a}/{b}//"),
        format!("///{a}///{b}"),
        format!("/{a}/./{b}"),
        format!("/./{a}/{b}"),
        format!("/{a}/{b}/."),
        format!("/{a}/{b}/./"),
        format!("/{a}/x/../{b}"),
        format!("/{a}/{b}/x/.."),
        format!("/../{a}/{b}"),
        format!("/{a}/../{a}/{b}"),
        format!("/{a}/{bx}"),
        format!("/{a}/{bx_upper}"),
        format!("/{ax}/{b}"),
        format!("/{ax}/{bx}/"),
        format!("/{a}/{b}%2f"),
        format!("/{a}%2f{b}"),
        format!("/{a}%2F{b}"),
        format!("/%2f{a}/{b}"),
        format!("/{a}%5c{b}"),
        format!("/{a}%5C{b}"),
        format!("/{a}\\{b}"),
        format!("/{a}/{b}\\"),
        format!("/{a}/{b};x=1"),
        format!("/{a};x=1/{b}"),
        format!("/{a}/{b};"),
        format!("/{a}/{b};jsessionid=0123"),
        format!("/{a}/{b}%00"),
        format!("/{a}%00/{b}"),
        format!("/{a}/{b}%0a"),
        format!("/{a}/{b}%09"),
        format!("/{au}/{bu}"),
        format!("/{am}/{bm}/"),
        format!("/{a}/{b}/%2e"),
        format!("/{a}/%2e/{b}"),
        format!("/{a}/x/%2e%2e/{b}"),
        format!("/{a}/x/%2E%2E/{b}"),
        format!("/{a}/%2e%2e/{a}/{b}"),
        format!("/{a}/%252e/{b}"),
        format!("/{a}/%25{b_head:02x}{b_tail}"),
        format!("/{a}/{b}%252f"),
        format!("/{a}/x/..;/{b}"),
        format!("/{a}/x/%2e%2e;/{b}"),
        format!("/{a}/{b}%"),
        format!("/{a}/{b}%zz"),
        format!("/{a}/{b}%4"),
        format!("/{a}/%c0%af{b}"),
        format!("/{a}%c0%af{b}"),
        format!("/{a}/%u00{b_head:02x}{b_tail}"),
        format!("http://shop.example/{a}/{b}"),
        format!("http://shop.example//{a}/./{b}/"),
        format!("/{a}/{b}?x=1"),
        format!("//{a}//./{b}/../{b}/"),
        format!("/{a}/{b}#fragment"),
        format!("/{a}/{b}%3Bx=1"),
        format!("/{a}/{b}%3bjsessionid=1"),
    ]
    .into_iter()
    .collect()
}

/// A genuine Alipay notification of a paid order, signed with the test key the route trusts.
fn genuine_alipay(order: &str, amount_minor: i64) -> payguard::channels::SimulatedNotification {
    let spec = SimulateSpec {
        out_trade_no: order.into(),
        amount_minor,
        currency: "CNY".into(),
        kind: EventKind::PaymentSucceeded,
        out_refund_no: None,
        refund_amount_minor: None,
        channel_txn_id: format!("2024050122{order}"),
        at: jiff::Timestamp::now(),
        notification_id: format!("ntf-{order}"),
        app_id: Some(ALIPAY_APP_ID.into()),
        mch_id: None,
    };
    let keys = SimulateKeys {
        private_key_pem: Some(std::fs::read_to_string(fixture("alipay/app_private_key.pem")).unwrap()),
        ..Default::default()
    };
    registry::simulate(ChannelKind::Alipay, &spec, &keys).expect("simulate alipay")
}

/// A forged Alipay notification: the form of a paid order with a signature nobody made.
fn forged_alipay() -> Vec<u8> {
    format!(
        "app_id={ALIPAY_APP_ID}&out_trade_no=FORGED-1&trade_no=2024050122001&trade_status=TRADE_SUCCESS&total_amount=88.80&notify_time=2024-05-01+12%3A00%3A05&notify_id=forged&sign_type=RSA2&sign=Zm9yZ2Vk"
    )
    .into_bytes()
}

/// What a variant got: refused before routing, answered by the protected route, or — allowed
/// only when the framework would not run a protected handler for it — passed to the backend.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Refused,
    Protected,
    Passed,
}

fn fate(resp: &RawResponse, protected: impl Fn(&RawResponse) -> bool) -> Fate {
    if resp.status == 400 && resp.code().starts_with("NON_CANONICAL_") {
        Fate::Refused
    } else if protected(resp) {
        Fate::Protected
    } else {
        Fate::Passed
    }
}

/// Whether a request the backend received for a protected handler was verified by payguard: a
/// guard handler's request carries a valid signature over exactly what the backend received; a
/// notify handler's carries payguard's single `X-PG-Verified: 1`.
fn verified(handler: &str, r: &Recorded) -> bool {
    if handler == "alipay" {
        return r.header_values("x-pg-verified") == vec!["1"] && r.headers.iter().all(|(k, _)| !k.contains('_'));
    }
    let (Some(ts), Some(nonce), Some(sig)) = (
        r.header("x-pg-timestamp"),
        r.header("x-pg-nonce"),
        r.header("x-pg-signature"),
    ) else {
        return false;
    };
    let (path, query) = match r.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (r.target.as_str(), None),
    };
    sign_request(SECRET.as_bytes(), &r.method, path, query, ts, nonce, &r.body).is_ok_and(|s| s == sig)
}

fn assert_no_unverified_hits(rig: &Rig) {
    for (handler, r) in protected_hits(&rig.up, HANDLERS) {
        assert!(
            verified(handler, &r),
            "the backend's `{handler}` handler got an unverified request: {} {} {:?}",
            r.method,
            r.target,
            r.headers
        );
    }
}

fn every_variant_is_refused_or_protected(redis: bool) {
    let rig = Rig::start(redis);
    let mut passed = Vec::new();
    let mut counts = (0, 0);
    let guard_answer = |r: &RawResponse| r.status == 401 && r.code() == "MISSING_CREDENTIALS";
    let alipay_failure = |r: &RawResponse| r.status == 200 && r.body == b"fail";
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<u8>, &'a dyn Fn(&RawResponse) -> bool);
    let cases: [Case; 3] = [
        ("POST", "api", "orders", br#"{"user_id":"u1"}"#.to_vec(), &guard_answer),
        ("GET", "api", "admin", Vec::new(), &guard_answer),
        ("POST", "notify", "alipay", forged_alipay(), &alipay_failure),
    ];
    for (method, a, b, body, protected) in cases {
        let headers: &[(&str, &str)] = if b == "alipay" {
            &[("content-type", "application/x-www-form-urlencoded")]
        } else {
            &[("content-type", "application/json")]
        };
        let all = variants(a, b);
        assert!(all.len() >= 40, "{} variants", all.len());
        for v in &all {
            let resp = rig.send(method, v.as_bytes(), headers, &body);
            match fate(&resp, protected) {
                Fate::Refused => counts.0 += 1,
                Fate::Protected => counts.1 += 1,
                Fate::Passed => passed.push((v.clone(), resp.status)),
            }
        }
        // The method in another case never reaches a handler unguarded.
        for lower in [
            method.to_ascii_lowercase(),
            format!("{}{}", &method[..1], method[1..].to_ascii_lowercase()),
        ] {
            let resp = rig.send(&lower, format!("/{a}/{b}").as_bytes(), headers, &body);
            assert_eq!(
                (resp.status, resp.code().as_str()),
                (400, "NON_CANONICAL_METHOD"),
                "{lower} /{a}/{b}"
            );
        }
    }
    assert_no_unverified_hits(&rig);
    // What passed is only what no framework routes to a protected handler: an encoded `;` is
    // data, not a path parameter.
    let expected: Vec<String> = ["api/orders", "api/admin", "notify/alipay"]
        .into_iter()
        .flat_map(|p| [format!("/{p}%3Bx=1"), format!("/{p}%3bjsessionid=1")])
        .collect();
    let passed_targets: Vec<String> = passed.iter().map(|(v, _)| v.clone()).collect();
    assert_eq!(passed_targets, expected, "{passed:?}");
    assert!(
        counts.0 > 20 && counts.1 > 40,
        "refused {} / protected {}",
        counts.0,
        counts.1
    );
    for r in rig.up.requests() {
        assert_eq!(framework_handler(&r, HANDLERS), None, "{} {}", r.method, r.target);
    }

    // Positive controls: the checks above can see a hit. A signed order reaches the orders
    // handler, a genuine Alipay notification the alipay handler, both verified.
    let body = br#"{"user_id":"u1"}"#;
    let (ts, nonce) = (jiff::Timestamp::now().as_second().to_string(), new_nonce());
    let sig = sign_request(SECRET.as_bytes(), "POST", "/api/orders/", None, &ts, &nonce, body).unwrap();
    let signed = [
        ("content-type", "application/json"),
        ("x-pg-key", KEY_ID),
        ("x-pg-timestamp", ts.as_str()),
        ("x-pg-nonce", nonce.as_str()),
        ("x-pg-signature", sig.as_str()),
    ];
    let resp = rig.send("POST", b"//api/./orders/", &signed, body);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let genuine = genuine_alipay("ROUTE-1", 8880);
    rig.up.set_behavior(support::upstream::Behavior {
        body: b"success".to_vec(),
        ..Default::default()
    });
    let resp = rig.send(
        "POST",
        b"/notify/alipay/",
        &[("content-type", genuine.content_type.as_str()), ("X_PG_Verified", "0")],
        &genuine.body,
    );
    assert_eq!((resp.status, resp.text().as_str()), (200, "success"));
    let hits = protected_hits(&rig.up, HANDLERS);
    let names: Vec<&str> = hits.iter().map(|(h, _)| *h).collect();
    assert_eq!(names, ["orders", "alipay"]);
    assert_eq!(hits[0].1.target, "/api/orders/", "forwarded with the canonical path");
    assert_eq!(hits[1].1.target, "/notify/alipay/");
    assert_no_unverified_hits(&rig);
}

mod embedded {
    #[test]
    fn every_variant_is_refused_or_protected() {
        super::every_variant_is_refused_or_protected(false)
    }
}

mod redis {
    #[test]
    fn every_variant_is_refused_or_protected() {
        super::every_variant_is_refused_or_protected(true)
    }
}

#[test]
fn the_test_backend_is_as_lenient_as_promised() {
    let rec = |m: &str, t: &str, hs: &[(&str, &str)]| Recorded {
        method: m.into(),
        target: t.into(),
        headers: hs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        body: Vec::new(),
    };
    for (m, t, hs) in [
        ("POST", "/api/orders/", vec![]),
        ("post", "//API/./x/../orders;x=1", vec![]),
        ("POST", "/api%2forders", vec![]),
        ("POST", "/api/%256frders", vec![]),
        ("POST", "/api\\orders", vec![]),
        ("GET", "/api/orders", vec![("X_HTTP_Method_Override", "POST")]),
        ("POST", "/public", vec![("x-original-url", "/api/orders")]),
        ("POST", "http://shop.example/api/orders", vec![]),
    ] {
        assert_eq!(
            framework_handler(&rec(m, t, &hs), HANDLERS),
            Some("orders"),
            "{m} {t} {hs:?} → {:?}",
            framework_view(&rec(m, t, &hs))
        );
    }
    assert_eq!(framework_handler(&rec("GET", "/api/orders", &[]), HANDLERS), None);
    assert_eq!(
        framework_handler(&rec("POST", "/api/orders%3Bx=1", &[]), HANDLERS),
        None
    );
}

#[test]
fn override_and_payguard_headers_never_reach_the_backend_in_any_spelling() {
    let rig = Rig::start(false);
    let forged: &[(&str, &str)] = &[
        ("X-HTTP-Method-Override", "POST"),
        ("X_HTTP_Method_Override", "POST"),
        ("X-HTTP-Method", "POST"),
        ("X-Method-Override", "POST"),
        ("X-Original-URL", "/api/orders"),
        ("X_Original_URL", "/api/orders"),
        ("X-Rewrite-URL", "/api/orders"),
        ("X-PG-Verified", "1"),
        ("X_PG_Verified", "1"),
        ("x-pg_event-id", "evt_forged"),
        ("X_PG_Risk", "none"),
        ("X_User_Id", "u-victim"),
    ];
    // A pass route: the framework would run POST /api/orders for most of these.
    for (k, v) in forged {
        let resp = rig.send("GET", b"/api/orders", &[(k, v)], b"");
        assert_eq!(resp.status, 200, "{k}");
    }
    let resp = rig.send("GET", b"/api/items", forged, b"");
    assert_eq!(resp.status, 200);
    // A signed guard request carrying all of them.
    let (ts, nonce) = (jiff::Timestamp::now().as_second().to_string(), new_nonce());
    let sig = sign_request(SECRET.as_bytes(), "GET", "/api/admin/users", None, &ts, &nonce, b"").unwrap();
    let mut headers = forged.to_vec();
    headers.extend([
        ("x-pg-key", KEY_ID),
        ("x-pg-timestamp", ts.as_str()),
        ("x-pg-nonce", nonce.as_str()),
        ("x-pg-signature", sig.as_str()),
    ]);
    assert_eq!(rig.send("GET", b"/api/admin/users", &headers, b"").status, 200);

    let got = rig.up.requests();
    assert_eq!(got.len(), forged.len() + 2);
    for r in &got {
        for (name, _) in &r.headers {
            let folded = name.replace('_', "-");
            assert!(
                !name.contains('_')
                    && !folded.starts_with("x-pg-verified")
                    && !folded.starts_with("x-pg-event-id")
                    && !folded.starts_with("x-pg-risk")
                    && ![
                        "x-http-method-override",
                        "x-http-method",
                        "x-method-override",
                        "x-original-url",
                        "x-rewrite-url"
                    ]
                    .contains(&folded.as_str()),
                "{name} reached the backend on {} {}",
                r.method,
                r.target
            );
        }
    }
    assert_no_unverified_hits(&rig);
    assert!(
        rig.pg.wait_metric(
            "payguard_request_canonicalization_total{action=\"header_removed\",reason=\"override_header\"}",
            14.0
        ) >= 14.0
    );
}

#[test]
fn passthrough_notification_carries_only_payguards_verified_header() {
    let rig = Rig::start(false);
    rig.up.set_behavior(support::upstream::Behavior {
        body: b"success".to_vec(),
        ..Default::default()
    });
    let genuine = genuine_alipay("ROUTE-2", 100);
    let resp = rig.send(
        "POST",
        b"/notify/%61lipay",
        &[
            ("content-type", genuine.content_type.as_str()),
            ("X_PG_Verified", "1"),
            ("x-pg-verified", "1"),
            ("X-PG_Event-Id", "evt_forged"),
            ("X-HTTP-Method-Override", "DELETE"),
        ],
        &genuine.body,
    );
    assert_eq!((resp.status, resp.text().as_str()), (200, "success"));
    let got = rig.up.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, "/notify/alipay");
    assert_eq!(got[0].header_values("x-pg-verified"), vec!["1"]);
    assert_eq!(got[0].header_values("x-pg-event-id").len(), 1);
    assert!(got[0].header("x-pg-event-id").unwrap().starts_with("evt_"));
    assert_ne!(got[0].header("x-pg-event-id"), Some("evt_forged"));
    assert!(got[0]
        .headers
        .iter()
        .all(|(k, _)| !k.contains('_') && k != "x-http-method-override"));
}

/// A guard whose rules read the query, a header and the JSON body, and which signs requests.
fn identity_layout(up: &Upstream) -> String {
    format!(
        "upstream:\n  address: {}\nguard:\n  signature:\n    keys:\n      - id: {KEY_ID}\n        secrets: [\"{SECRET}\"]\n\
         \x20 rate_rules:\n\
         \x20   - {{name: by-query, match: {{routes: [by-query]}}, key: [query:uid], bucket: {{capacity: 100, refill: 100, per: 1s}}}}\n\
         \x20   - {{name: by-header, match: {{routes: [by-header]}}, key: [header:x-user-id], bucket: {{capacity: 100, refill: 100, per: 1s}}}}\n\
         \x20 order_rules:\n\
         \x20   - {{name: by-body, match: {{routes: [by-body]}}, user: body:/user_id, window: {{sliding: 1h}}, tiers: [{{over: 100, action: reject}}]}}\n\
         routes:\n\
         \x20 - {{name: by-query, match: {{path: /q}}, policy: guard}}\n\
         \x20 - {{name: by-header, match: {{path: /h}}, policy: guard}}\n\
         \x20 - {{name: by-body, match: {{path: /b}}, policy: guard}}\n\
         \x20 - {{name: signed, match: {{path: /s}}, policy: guard}}\n\
         default_action: not_found\n",
        up.addr
    )
}

fn signed_headers(method: &str, path: &str, query: Option<&str>, body: &[u8]) -> Vec<(String, String)> {
    let (ts, nonce) = (jiff::Timestamp::now().as_second().to_string(), new_nonce());
    let sig = sign_request(SECRET.as_bytes(), method, path, query, &ts, &nonce, body).unwrap();
    vec![
        ("content-type".into(), "application/json".into()),
        ("x-pg-key".into(), KEY_ID.into()),
        ("x-pg-timestamp".into(), ts),
        ("x-pg-nonce".into(), nonce),
        ("x-pg-signature".into(), sig),
    ]
}

fn send_signed(
    rig: &Rig,
    method: &str,
    target: &str,
    signed_query: Option<&str>,
    extra: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let path = target.split('?').next().unwrap();
    let owned = signed_headers(method, path, signed_query, body);
    let mut headers: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    headers.extend_from_slice(extra);
    rig.send(method, target.as_bytes(), &headers, body)
}

#[test]
fn queries_mean_one_thing_to_the_signature_and_to_the_backend() {
    let up = Upstream::start();
    let rig = Rig {
        pg: Payguard::start(&identity_layout(&up)),
        up,
        _redis: None,
    };
    let forwarded = |rig: &Rig| rig.up.requests().pop().expect("forwarded").target;

    // `+` is a space to every query decoder: signed and forwarded as %20; a signature over a
    // space is not accepted for an encoded plus.
    let r = send_signed(&rig, "GET", "/s?to=a+b", Some("to=a+b"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(forwarded(&rig), "/s?to=a%20b");
    let r = send_signed(&rig, "GET", "/s?to=a%2Bb", Some("to=a+b"), &[], b"");
    assert_eq!((r.status, r.code().as_str()), (401, "SIGNATURE_MISMATCH"));
    // A client that signed `+` as a plus is told what to change.
    let r = send_signed(&rig, "GET", "/s?to=a+b", Some("to=a%2Bb"), &[], b"");
    assert_eq!((r.status, r.code().as_str()), (401, "SIGNATURE_MISMATCH"));
    assert!(r.detail().contains("`+` in a query is a space"), "{}", r.detail());

    // Reordered repeated parameters are the same signed request, and the backend receives them
    // in the one canonical order either way.
    for sent in ["/s?a=2&a=1", "/s?a=1&a=2"] {
        let r = send_signed(&rig, "GET", sent, Some("a=1&a=2"), &[], b"");
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(forwarded(&rig), "/s?a=1&a=2", "{sent}");
    }
    // `flag`, `flag=` and `flag=&&&` mean one thing once forwarded.
    for sent in ["/s?flag", "/s?flag=", "/s?flag=&&&"] {
        let r = send_signed(&rig, "GET", sent, Some("flag"), &[], b"");
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(forwarded(&rig), "/s?flag=", "{sent}");
    }
    // `;` is data, never a separator some decoders would split on.
    let r = send_signed(&rig, "GET", "/s?a=1;b=2", Some("a=1;b=2"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(forwarded(&rig), "/s?a=1%3Bb%3D2");
    // A query no decoder reads one way.
    let before = rig.up.requests().len();
    let r = send_signed(&rig, "GET", "/s?a=%zz", None, &[], b"");
    assert_eq!((r.status, r.code().as_str()), (400, "NON_CANONICAL_QUERY"));
    assert!(r.detail().contains("byte 2 of the query"), "{}", r.detail());
    // A client that signed the path as sent learns to sign the canonical one.
    let owned = signed_headers("GET", "//s", None, b"");
    let headers: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = rig.send("GET", b"//s", &headers, b"");
    assert_eq!((r.status, r.code().as_str()), (401, "SIGNATURE_MISMATCH"));
    assert!(r.detail().contains("matches the path as sent"), "{}", r.detail());
    assert_eq!(rig.up.requests().len(), before, "refusals reach nothing");
}

#[test]
fn identities_two_decoders_could_read_differently_are_refused() {
    let up = Upstream::start();
    let rig = Rig {
        pg: Payguard::start(&identity_layout(&up)),
        up,
        _redis: None,
    };
    let ok = |r: &RawResponse| assert_eq!(r.status, 200, "{}", r.text());
    let ambiguous = |r: &RawResponse, what: &str| {
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "AMBIGUOUS_IDENTITY"),
            "{what}: {}",
            r.text()
        );
    };
    ok(&send_signed(&rig, "GET", "/q?uid=u1", Some("uid=u1"), &[], b""));
    ambiguous(
        &send_signed(&rig, "GET", "/q?uid=u1&uid=u2", Some("uid=u1&uid=u2"), &[], b""),
        "query twice",
    );
    ambiguous(
        &send_signed(&rig, "GET", "/q?UID=u2&uid=u1", Some("UID=u2&uid=u1"), &[], b""),
        "query case variant",
    );
    ambiguous(
        &send_signed(&rig, "GET", "/q?uid=%FF", Some("uid=%FF"), &[], b""),
        "query not UTF-8",
    );

    ok(&send_signed(&rig, "GET", "/h", None, &[("x-user-id", "u1")], b""));
    ambiguous(
        &send_signed(
            &rig,
            "GET",
            "/h",
            None,
            &[("x-user-id", "u1"), ("x-user-id", "u2")],
            b"",
        ),
        "header twice",
    );
    // `X_User_Id` is dropped before the guard reads anything: the backend never sees a second
    // spelling of the identity header.
    ok(&send_signed(
        &rig,
        "GET",
        "/h",
        None,
        &[("x-user-id", "u1"), ("X_User_Id", "u2")],
        b"",
    ));
    assert_eq!(rig.up.requests().pop().unwrap().header_values("x-user-id"), vec!["u1"]);

    ok(&send_signed(
        &rig,
        "POST",
        "/b",
        None,
        &[],
        br#"{"user_id":"u1","qty":1}"#,
    ));
    for (body, what) in [
        (&br#"{"user_id":"u1","user_id":"u2"}"#[..], "duplicate key"),
        (br#"{"user_id":"u1","USER_ID":"u2"}"#, "case-variant key"),
        (
            br#"{"user_id":"u1","items":[{"sku":"a","sku":"b"}]}"#,
            "duplicate key elsewhere",
        ),
        (br#"{"user_id":1e2}"#, "exponent"),
        (br#"{"user_id":100.0}"#, "fraction"),
    ] {
        ambiguous(&send_signed(&rig, "POST", "/b", None, &[], body), what);
    }
    assert_eq!(
        rig.up.requests().len(),
        4,
        "only the unambiguous requests were forwarded"
    );
}

#[test]
fn relaxed_listener_forwards_kept_forms_and_routes_them_by_the_wider_reading() {
    let rig = Rig::start_with(
        false,
        "  path: {escaped_slashes: keep, path_params: keep, double_encoding: keep}\n  header_underscores: keep\n",
    );
    let guard_answer = |r: &RawResponse| (r.status, r.code());
    // Kept encoded slashes and parameters still cannot reach the protected handler unguarded.
    for v in [
        "/api%2Forders",
        "/api/orders;jsessionid=1",
        "/api;x/orders",
        "/x%2F..%2Fapi/orders",
    ] {
        let r = rig.send("POST", v.as_bytes(), &[], b"{}");
        assert_eq!(guard_answer(&r), (401, "MISSING_CREDENTIALS".to_string()), "{v}");
    }
    // A dot segment with a parameter means `..` to a Servlet container: still refused.
    let r = rig.send("POST", b"/api/x/..;/orders", &[], b"{}");
    assert_eq!((r.status, r.code().as_str()), (400, "NON_CANONICAL_PATH"));
    // Elsewhere they are forwarded as kept.
    for (sent, forwarded) in [
        ("/files/a%2fb", "/files/a%2Fb"),
        ("/cart;jsessionid=ABC/items", "/cart;jsessionid=ABC/items"),
        ("/search/100%2525", "/search/100%2525"),
    ] {
        assert_eq!(
            rig.send(
                "GET",
                sent.as_bytes(),
                &[("X_Trace_Id", "t1"), ("X_PG_Nonce", "n")],
                b""
            )
            .status,
            200
        );
        let r = rig.up.requests().pop().unwrap();
        assert_eq!(r.target, forwarded);
        assert_eq!(r.header("x_trace_id"), Some("t1"), "kept underscore header");
        assert_eq!(
            r.header("x_pg_nonce"),
            None,
            "an underscore spelling of a header payguard reads is removed"
        );
    }
    assert_no_unverified_hits(&rig);
}

#[test]
fn underscore_headers_can_be_refused() {
    let rig = Rig::start_with(false, "  header_underscores: reject\n");
    let r = rig.send("GET", b"/anything", &[("X_Trace_Id", "t1")], b"");
    assert_eq!((r.status, r.code().as_str()), (400, "AMBIGUOUS_HEADER"));
    assert!(r.detail().contains("x_trace_id"), "{}", r.detail());
    // Asserted headers are removed rather than refused, as on every listener.
    assert_eq!(
        rig.send("GET", b"/anything", &[("X_PG_Verified", "1")], b"").status,
        200
    );
    assert_eq!(rig.up.requests().len(), 1);
}

/// The shipped example config, with only its listeners and upstream moved to test ports: its
/// guard and notify routes need no change to be safe.
#[test]
fn shipped_example_layout_protects_every_variant() {
    let up = Upstream::start();
    let text = std::fs::read_to_string(format!("{}/config/payguard.example.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut doc: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text).unwrap();
    for key in ["server", "admin", "upstream", "store", "log", "reload"] {
        doc.remove(key);
    }
    let rest = serde_yaml_ng::to_string(&doc).unwrap();
    let body = format!(
        "upstream:\n  address: {}\nlog: {{format: json, level: warn}}\n{rest}",
        up.addr
    );
    let secrets = [
        ("PAYGUARD_ADMIN_TOKEN", "admin-token"),
        ("PG_SHOP_APP_SECRET", SECRET),
        ("STRIPE_WEBHOOK_SECRET", "whsec_test_example_stripe_secret"),
        ("PAYGUARD_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ];
    let custom = support::payguard::Custom {
        env: secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let pg = Payguard::start_with("127.0.0.1", custom, &body);
    let rig = Rig { pg, up, _redis: None };
    let handlers = [
        Handler::exact("orders", "POST", "/api/orders"),
        Handler::exact("stripe", "*", "/notify/stripe"),
    ];
    let stripe_body = br#"{"id":"evt_forged","type":"payment_intent.succeeded","data":{"object":{"metadata":{"out_trade_no":"F-1"},"amount":100,"currency":"usd"}}}"#;
    let forged_sig = format!("t={},v1=00", jiff::Timestamp::now().as_second());
    let mut answers = Vec::new();
    for v in variants("api", "orders") {
        let r = rig.send(
            "POST",
            v.as_bytes(),
            &[("content-type", "application/json")],
            br#"{"user_id":"u1"}"#,
        );
        answers.push((false, v, r.status, r.code()));
    }
    for v in variants("notify", "stripe") {
        let r = rig.send(
            "POST",
            v.as_bytes(),
            &[
                ("content-type", "application/json"),
                ("stripe-signature", forged_sig.as_str()),
            ],
            stripe_body,
        );
        answers.push((true, v, r.status, r.code()));
    }
    for (stripe, v, status, code) in &answers {
        let refused = *status == 400 && code.starts_with("NON_CANONICAL_");
        let guarded = !stripe && *status == 401 && code == "MISSING_CREDENTIALS";
        // Stripe's answer to a notification that fails verification: 400, not problem+json.
        let stripe_refused = *stripe && *status == 400 && code.is_empty();
        let passed_data = v.contains("%3B") || v.contains("%3b");
        assert!(
            refused || guarded || stripe_refused || passed_data,
            "{v}: {status} {code}"
        );
    }
    for r in rig.up.requests() {
        assert_eq!(
            framework_handler(&r, &handlers),
            None,
            "{} {} reached a protected handler",
            r.method,
            r.target
        );
        assert!(
            !r.target.starts_with("/internal/payment-events"),
            "a forged event was forwarded"
        );
    }
    // Give the access log a moment, then check nothing panicked.
    std::thread::sleep(Duration::from_millis(50));
    assert!(!rig.pg.logs().contains("panicked"), "{}", rig.pg.logs());
}

#[test]
fn the_access_log_names_the_canonical_path_and_the_path_as_sent() {
    let rig = Rig::start(false);
    assert_eq!(rig.send("GET", b"//api/./items/?secret=1", &[], b"").status, 200);
    assert_eq!(rig.send("GET", b"/api/items%2f..", &[], b"").status, 400);
    let logs = std::iter::repeat_with(|| {
        std::thread::sleep(Duration::from_millis(20));
        rig.pg.logs()
    })
    .take(100)
    .find(|l| l.matches("\"payguard::access\"").count() >= 2)
    .expect("two access log lines");
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("\"payguard::access\"")).collect();
    assert!(lines[0].contains(r#""path":"/api/items/""#), "{}", lines[0]);
    assert!(lines[0].contains(r#""sent_path":"//api/./items/""#), "{}", lines[0]);
    assert!(!lines[0].contains("secret=1"), "queries are never logged: {}", lines[0]);
    assert!(lines[1].contains(r#""sent_path":"/api/items%2f..""#), "{}", lines[1]);
    assert!(lines[1].contains(r#""code":"NON_CANONICAL_PATH""#), "{}", lines[1]);
    assert_eq!(rig.up.requests()[0].target, "/api/items/?secret=1");
}
