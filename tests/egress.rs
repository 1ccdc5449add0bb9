//! Egress calls through the proxy (docs/egress.md) against the channel simulator
//! (tests/support/channel_sim.rs): payguard signs the backend's WeChat Pay v3 call, the
//! simulator checks the signature with `openssl`, and only an answer whose signature verifies
//! is relayed, with `X-PG-Verified: 1`.

mod support;

use support::channel_sim::{
    fixture, AliAnswer, ChannelSim, WxAnswer, ALI_APP_ID, STRIPE_SECRET_KEY, WX_MERCHANT_SERIAL,
};
use support::framework::raw_request;
use support::payguard::{Custom, Payguard};
use support::upstream::Upstream;

const NATIVE_ORDER: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1900000001","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://shop.example/notify/wechatpay","amount":{"total":100,"currency":"CNY"}}"#;
const API_V3_KEY: &str = "0123456789abcdef0123456789ABCDEF";

fn config(up: &Upstream, sim: &ChannelSim) -> String {
    format!(
        "upstream:\n  address: {up}\nmerchants:\n  wx:\n    channel: wechatpay_v3\n    mchid: \"1900000001\"\n    certificate_serial: {WX_MERCHANT_SERIAL}\n    private_key: file:{key}\n    api_v3_key: {API_V3_KEY}\n    platform_certificates: ['file:{platform}']\n    base_url: {base}\n    extra_ca: {ca}\n  st:\n    channel: stripe\n    secret_key: env:PG_TEST_STRIPE_SECRET_KEY\n    base_url: {base}\n    extra_ca: {ca}\n  ali:\n    channel: alipay\n    app_id: \"{ALI_APP_ID}\"\n    private_key: file:{ali_key}\n    alipay_public_key: file:{ali_pub}\n    notify_url: https://shop.example/notify/alipay\n    base_url: {base}\n    extra_ca: {ca}\nroutes:\n  - name: wx-egress\n    match: {{path_prefix: /egress/wechatpay}}\n    policy: egress\n    egress:\n      merchant: wx\n      timeout: 5s\n      allow:\n        - {{method: POST, path_prefix: /v3/pay/transactions}}\n        - {{method: GET, path_prefix: /v3/pay/transactions/out-trade-no}}\n  - name: stripe-egress\n    match: {{path_prefix: /egress/stripe}}\n    policy: egress\n    egress:\n      merchant: st\n      allow:\n        - {{method: POST, path_prefix: /v1/payment_intents}}\n        - {{method: GET, path_prefix: /v1/payment_intents}}\n  - name: ali-egress\n    match: {{path_prefix: /egress/alipay}}\n    policy: egress\n    egress:\n      merchant: ali\n      allow:\n        - {{method: POST, path_prefix: /alipay.trade.precreate}}\n        - {{method: POST, path_prefix: /alipay.trade.query}}\n",
        ali_key = fixture("alipay/egress_app_private_key.pem").display(),
        ali_pub = fixture("alipay/app_public_key.pem").display(),
        up = up.addr,
        key = fixture("wechatpay_v3/egress_merchant_private_key.pem").display(),
        platform = fixture("wechatpay_v3/simulate_platform_certificate.pem").display(),
        base = sim.base_url(),
        ca = sim.ca_ref(),
    )
}

/// Everything the backend received in one answer: status, every header, the body.
#[derive(Debug)]
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn of(resp: reqwest::blocking::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.text().unwrap_or_default();
        Seen { status, headers, body }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn code(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn everything(&self) -> String {
        let headers: String = self.headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        format!("{}\n{headers}\n{}", self.status, self.body)
    }
}

fn call(pg: &Payguard, method: &str, path: &str, body: &str) -> Seen {
    let client = reqwest::blocking::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client.request(method, pg.url(path));
    if !body.is_empty() {
        req = req.header("content-type", "application/json").body(body.to_string());
    }
    Seen::of(req.send().expect("payguard answers"))
}

struct Env {
    up: Upstream,
    sim: ChannelSim,
    pg: Payguard,
}

/// payguard with `config`, the Stripe key in its environment (an `env:` secret).
fn start_payguard(config: &str) -> Payguard {
    let custom = Custom {
        env: vec![("PG_TEST_STRIPE_SECRET_KEY".into(), STRIPE_SECRET_KEY.into())],
        ..Custom::default()
    };
    Payguard::start_with("127.0.0.1", custom, config)
}

fn start() -> Env {
    let up = Upstream::start();
    let sim = ChannelSim::start();
    let pg = start_payguard(&config(&up, &sim));
    Env { up, sim, pg }
}

#[test]
fn a_native_order_is_signed_for_the_channel_and_its_verified_answer_relayed() {
    let env = start();
    let seen = call(
        &env.pg,
        "POST",
        "/egress/wechatpay/v3/pay/transactions/native",
        NATIVE_ORDER,
    );
    assert_eq!(seen.status, 200, "{seen:?}\n{}", env.pg.logs());
    assert_eq!(seen.header("x-pg-verified"), Some("1"));
    assert_eq!(seen.body, r#"{"code_url":"weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}"#);
    assert_eq!(seen.header("content-type"), Some("application/json"));

    let reqs = env.sim.requests();
    assert_eq!(reqs.len(), 1);
    let sent = &reqs[0];
    // The route prefix is gone; method, path and body are the backend's, byte for byte.
    assert_eq!(
        (sent.method.as_str(), sent.target.as_str()),
        ("POST", "/v3/pay/transactions/native")
    );
    assert_eq!(sent.body, NATIVE_ORDER.as_bytes());
    assert_eq!(sent.signature_check, Ok(()), "the independent check of Authorization");
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header("accept"), Some("application/json"));
    // Nothing of an egress call reaches the backend's own upstream.
    assert!(env.up.requests().is_empty());
    assert_eq!(
        env.pg.wait_metric(
            "payguard_egress_requests_total{channel=\"wechatpay_v3\",outcome=\"relayed\",route=\"wx-egress\"}",
            1.0
        ),
        1.0
    );
    assert!(
        env.pg
            .metric("payguard_egress_duration_seconds_count{channel=\"wechatpay_v3\",route=\"wx-egress\"}")
            >= 1.0
    );
}

#[test]
fn a_query_is_signed_as_sent_and_an_empty_get_body_signs_as_empty() {
    let env = start();
    env.sim.set_wx_body(
        200,
        br#"{"trade_state":"NOTPAY","amount":{"total":100,"currency":"CNY"}}"#,
    );
    let seen = call(
        &env.pg,
        "GET",
        "/egress/wechatpay/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid=1900000001",
        "",
    );
    assert_eq!(seen.status, 200, "{seen:?}\n{}", env.pg.logs());
    assert_eq!(seen.header("x-pg-verified"), Some("1"));
    let sent = &env.sim.requests()[0];
    assert_eq!(
        sent.target,
        "/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid=1900000001"
    );
    assert!(sent.body.is_empty());
    assert_eq!(sent.signature_check, Ok(()));
}

#[test]
fn a_channel_error_answer_is_relayed_with_its_status_when_it_verifies() {
    let env = start();
    env.sim
        .set_wx_body(400, br#"{"code":"PARAM_ERROR","message":"out_trade_no is too long"}"#);
    let seen = call(
        &env.pg,
        "POST",
        "/egress/wechatpay/v3/pay/transactions/native",
        NATIVE_ORDER,
    );
    assert_eq!(seen.status, 400, "{seen:?}");
    assert_eq!(seen.header("x-pg-verified"), Some("1"));
    assert_eq!(seen.code(), "PARAM_ERROR");
}

#[test]
fn answers_that_do_not_verify_are_refused_with_502_and_not_relayed() {
    let env = start();
    for (how, reason) in [
        (WxAnswer::TamperedBody, "does not verify"),
        (WxAnswer::WrongSignature, "does not verify"),
        (WxAnswer::UnknownSerial, "not configured"),
        (WxAnswer::Unsigned, "wechatpay-serial is missing"),
    ] {
        env.sim.set_wx_answer(how);
        let seen = call(
            &env.pg,
            "POST",
            "/egress/wechatpay/v3/pay/transactions/native",
            NATIVE_ORDER,
        );
        assert_eq!(seen.status, 502, "{how:?}: {seen:?}");
        assert_eq!(seen.header("content-type"), Some("application/problem+json"), "{how:?}");
        assert_eq!(seen.code(), "EGRESS_ANSWER_UNVERIFIED", "{how:?}");
        assert!(seen.body.contains(reason), "{how:?}: {}", seen.body);
        assert_eq!(seen.header("x-pg-verified"), None, "{how:?}");
        assert!(
            !seen.body.contains("weixin://") && !seen.body.contains("code_url"),
            "{how:?}: {}",
            seen.body
        );
    }
    // The requests were genuine; only the answers were not.
    let reqs = env.sim.requests();
    assert_eq!(reqs.len(), 4);
    assert!(reqs.iter().all(|r| r.signature_check.is_ok()), "{reqs:?}");
    assert_eq!(
        env.pg.wait_metric(
            "payguard_egress_requests_total{channel=\"wechatpay_v3\",outcome=\"answer_unverified\",route=\"wx-egress\"}",
            4.0
        ),
        4.0
    );
}

#[test]
fn calls_off_the_allow_list_are_refused_with_403_and_never_sent() {
    let env = start();
    for (method, path) in [
        ("POST", "/egress/wechatpay/v3/refund/domestic/refunds"),
        ("DELETE", "/egress/wechatpay/v3/pay/transactions/native"),
        ("GET", "/egress/wechatpay/v3/pay/transactions/native"),
        ("POST", "/egress/wechatpay/v3/pay/transactionsX"),
        ("POST", "/egress/wechatpay"),
    ] {
        let seen = call(&env.pg, method, path, NATIVE_ORDER);
        assert_eq!(seen.status, 403, "{method} {path}: {seen:?}");
        assert_eq!(seen.code(), "EGRESS_NOT_ALLOWED", "{method} {path}");
        assert_eq!(seen.header("x-pg-verified"), None);
    }
    assert!(env.sim.requests().is_empty(), "{:?}", env.sim.requests());
    assert!(env.up.requests().is_empty());
}

/// The channel path is cut from the canonical request path (docs/configuration.md, "Route
/// matching and path normalization"), so no spelling of a path reaches the channel as anything
/// but what the allow-list was checked against.
#[test]
fn path_variants_are_refused_or_sent_in_their_canonical_form_only() {
    let env = start();
    let addr = format!("127.0.0.1:{}", env.pg.port);
    let json = [("Content-Type", "application/json")];
    let mut sent_before = 0;
    for target in [
        // Climbing out of an allowed prefix to a call the route does not allow.
        "/egress/wechatpay/v3/pay/transactions/../../refund/domestic/refunds",
        "/egress/wechatpay/v3/pay/transactions/%2e%2e/%2e%2e/refund/domestic/refunds",
        "/egress/wechatpay/v3/pay/transactions%2F..%2F..%2Frefund%2Fdomestic%2Frefunds",
        "/egress/wechatpay/v3/pay/transactions/%252e%252e/%252e%252e/refund/domestic/refunds",
        "/egress/wechatpay/v3/pay/transactions;x=1/../../refund/domestic/refunds",
        "/egress/wechatpay/v3/pay/transactions\\..\\..\\refund",
        // Spellings of an allowed call.
        "/egress/wechatpay/v3/pay/transactions/native",
        "/egress/wechatpay/v3/pay/transactions/./native",
        "/egress/wechatpay//v3/pay/transactions/native",
        "/egress/wechatpay/v3/pay/transactions/%6eative",
        "/egress/wechatpay/v3/pay/transactions/native;jsessionid=1",
        "/egress/wechatpay/v3/pay/transactions%2Fnative",
    ] {
        let seen = raw_request(&addr, "POST", target.as_bytes(), &json, NATIVE_ORDER.as_bytes());
        let sent = env.sim.requests();
        match seen.status {
            200 => {
                // Sent once, under the one canonical channel path the allow-list matched.
                assert_eq!(sent.len(), sent_before + 1, "{target}");
                assert_eq!(sent[sent_before].target, "/v3/pay/transactions/native", "{target}");
                assert_eq!(sent[sent_before].signature_check, Ok(()), "{target}");
                sent_before += 1;
            }
            400 | 403 => {
                assert!(
                    ["NON_CANONICAL_PATH", "EGRESS_NOT_ALLOWED"].contains(&seen.code().as_str()),
                    "{target}: {} {}",
                    seen.status,
                    seen.text()
                );
                assert_eq!(sent.len(), sent_before, "{target} refused yet sent: {sent:?}");
            }
            other => panic!("{target}: unexpected {other} {}", seen.text()),
        }
    }
    // Every sent call was one the allow-list names; the plain spelling was among them.
    assert!(sent_before >= 1);
    assert!(env
        .sim
        .requests()
        .iter()
        .all(|r| r.target == "/v3/pay/transactions/native"));
    assert!(env.up.requests().is_empty());
}

#[test]
fn a_body_over_the_cap_is_refused_with_413_and_never_sent() {
    let env = start();
    let big = format!(r#"{{"description":"{}"}}"#, "x".repeat(70 * 1024));
    let seen = call(&env.pg, "POST", "/egress/wechatpay/v3/pay/transactions/native", &big);
    assert_eq!(seen.status, 413, "{seen:?}");
    assert_eq!(seen.code(), "EGRESS_BODY_TOO_LARGE");
    assert!(env.sim.requests().is_empty());
}

#[test]
fn an_unreachable_channel_is_a_502_problem() {
    let up = Upstream::start();
    let sim = ChannelSim::start();
    // A port nothing listens on, with the simulator's CA.
    let dead = format!("https://127.0.0.1:{}", support::free_port());
    let text = config(&up, &sim).replace(&sim.base_url(), &dead);
    let pg = start_payguard(&text);
    let seen = call(
        &pg,
        "POST",
        "/egress/wechatpay/v3/pay/transactions/native",
        NATIVE_ORDER,
    );
    assert_eq!(seen.status, 502, "{seen:?}");
    assert_eq!(seen.code(), "EGRESS_CHANNEL_UNREACHABLE");
}

#[test]
fn the_backend_never_receives_key_material_and_the_log_names_no_signature() {
    let env = start();
    let mut everything = String::new();
    for how in [
        WxAnswer::Genuine,
        WxAnswer::TamperedBody,
        WxAnswer::WrongSignature,
        WxAnswer::UnknownSerial,
    ] {
        env.sim.set_wx_answer(how);
        everything += &call(
            &env.pg,
            "POST",
            "/egress/wechatpay/v3/pay/transactions/native",
            NATIVE_ORDER,
        )
        .everything();
    }
    env.sim.set_wx_answer(WxAnswer::Genuine);
    everything += &call(
        &env.pg,
        "GET",
        "/egress/wechatpay/v3/pay/transactions/out-trade-no/1?mchid=1900000001",
        "",
    )
    .everything();
    everything += &call(&env.pg, "POST", "/egress/wechatpay/v3/refund/domestic/refunds", "{}").everything();

    let key_pem = std::fs::read_to_string(fixture("wechatpay_v3/egress_merchant_private_key.pem")).unwrap();
    let key_lines: Vec<&str> = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(key_lines.len() > 20);
    let signatures: Vec<String> = env
        .sim
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .filter_map(|a| {
            a.split("signature=\"")
                .nth(1)
                .map(|s| s.trim_end_matches('"').to_string())
        })
        .collect();
    assert_eq!(signatures.len(), 5);
    let logs = env.pg.wait_logs(|l| l.matches("\"message\":\"egress\"").count() >= 6);
    assert_eq!(
        logs.matches("\"message\":\"egress\"").count(),
        6,
        "one log line per call:\n{logs}"
    );
    for (what, text) in [("the backend", &everything), ("the log", &logs)] {
        assert!(!text.contains("PRIVATE KEY"), "{what}");
        assert!(!text.contains(API_V3_KEY), "{what}");
        assert!(!text.contains("WECHATPAY2-SHA256-RSA2048"), "{what}: {text}");
        for line in &key_lines {
            assert!(!text.contains(line), "{what} holds a line of the private key");
        }
        for signature in &signatures {
            assert!(!text.contains(signature.as_str()), "{what} holds a request signature");
        }
    }
}

/// The fenced YAML block after `heading` in docs/egress.md.
fn doc_yaml(heading: &str) -> String {
    let doc = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/egress.md")).unwrap();
    let section = doc
        .split_once(heading)
        .map(|(_, rest)| rest)
        .expect("heading in docs/egress.md");
    let block = section
        .split_once("```yaml\n")
        .map(|(_, rest)| rest)
        .expect("a yaml block");
    block
        .split_once("```")
        .map(|(yaml, _)| yaml.to_string())
        .expect("a closed block")
}

#[test]
fn the_configuration_in_egress_md_passes_the_offline_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egress.yaml");
    std::fs::write(&path, doc_yaml("## Configuration")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payguard"))
        .args(["check", "--offline", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_names_each_bad_egress_key_and_prints_no_inline_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let key_pem = std::fs::read_to_string(fixture("wechatpay_v3/egress_merchant_private_key.pem")).unwrap();
    let inline_key = key_pem.replace('\n', "\\n");
    std::fs::write(
        &path,
        format!(
            "upstream: {{address: 127.0.0.1:3000}}\nmerchants:\n  wx:\n    channel: wechatpay_v3\n    mchid: \"1900000001\"\n    certificate_serial: NOT-HEX\n    private_key: \"{inline_key}\"\n    api_v3_key: {API_V3_KEY}\n    platform_certificates: ['file:{platform}']\n    base_url: http://api.mch.weixin.qq.com\nroutes:\n  - name: a\n    match: {{path_prefix: /egress/a}}\n    policy: egress\n    egress: {{merchant: nobody, allow: [{{method: post, path_prefix: /v3}}]}}\n  - name: b\n    match: {{path: /egress/b}}\n    policy: egress\n    egress: {{merchant: wx, allow: [{{method: POST, path_prefix: /v3}}]}}\n  - name: c\n    match: {{path_prefix: /egress/c}}\n    policy: egress\n",
            platform = fixture("wechatpay_v3/simulate_platform_certificate.pem").display(),
        ),
    )
    .unwrap();
    let (ok, text) = support::payguard_cli(&["check".as_ref(), "-c".as_ref(), path.as_os_str()]);
    assert!(!ok, "{text}");
    for expected in [
        "merchants.wx.certificate_serial: must be the certificate's hex serial",
        "merchants.wx.private_key: must be a `file:` or `env:` reference, never the key itself",
        "merchants.wx.base_url: `http://api.mch.weixin.qq.com` must start with https://",
        "routes[0].egress.merchant: no account `nobody` in `merchants`",
        "routes[0].egress.allow[0].method: `post` is not an upper-case HTTP method",
        "routes[1].match: an egress route matches with `path_prefix`",
        "routes[2].egress: required with `policy: egress`",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(line), "check printed a line of the inline key:\n{text}");
    }
}

#[test]
fn check_names_each_bad_notify_merchant_reference() {
    const BACKEND_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let stripe_key = fixture("stripe/sandbox_secret_key.txt");
    std::fs::write(
        &path,
        format!(
            "upstream: {{address: 127.0.0.1:3000}}\nmerchants:\n  st:\n    channel: stripe\n    secret_key: file:{key}\nroutes:\n  - name: a\n    match: {{path: /notify/a}}\n    policy: notify\n    notify: {{merchant: nobody, webhook_secret: {BACKEND_WHSEC}}}\n  - name: b\n    match: {{path: /notify/b}}\n    policy: notify\n    notify: {{merchant: st, webhook_secret: {BACKEND_WHSEC}}}\n  - name: c\n    match: {{path: /notify/c}}\n    policy: notify\n    notify: {{merchant: st, channel: {{stripe: {{endpoint_secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]}}}}, webhook_secret: {BACKEND_WHSEC}}}\n  - name: d\n    match: {{path: /notify/d}}\n    policy: notify\n    notify: {{webhook_secret: {BACKEND_WHSEC}}}\n",
            key = stripe_key.display(),
        ),
    )
    .unwrap();
    let (ok, text) = support::payguard_cli(&["check".as_ref(), "-c".as_ref(), path.as_os_str()]);
    assert!(!ok, "{text}");
    for expected in [
        "routes[0].notify.merchant: no account `nobody` in `merchants`",
        "routes[1].notify.merchant: `st`: the Stripe account has no `endpoint_secrets` to verify webhooks with",
        "routes[2].notify.channel: set exactly one of `channel` (the keys here) and `merchant` (an account in `merchants`)",
        "routes[3].notify.channel: set exactly one of",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("sk_test_"), "check printed the key:\n{text}");
}

const PRECREATE: &str = r#"{"out_trade_no":"20261203000001","total_amount":"88.88","subject":"Iphone6 16G"}"#;

#[test]
fn an_alipay_precreate_is_signed_and_only_the_verified_response_member_relayed() {
    let env = start();
    let seen = call(&env.pg, "POST", "/egress/alipay/alipay.trade.precreate", PRECREATE);
    assert_eq!(seen.status, 200, "{seen:?}\n{}", env.pg.logs());
    assert_eq!(seen.header("x-pg-verified"), Some("1"));
    assert_eq!(seen.header("content-type"), Some("application/json; charset=utf-8"));
    // The member's exact bytes (the simulator's answer has a space after a comma), not a
    // re-serialisation and not the envelope with `sign`.
    assert_eq!(
        seen.body,
        r#"{"code":"10000", "msg":"Success","out_trade_no":"20261203000001","qr_code":"https://qr.alipay.com/bax08431ecsdyzzkxlah0066"}"#
    );
    let reqs = env.sim.requests();
    assert_eq!(reqs.len(), 1);
    let sent = &reqs[0];
    assert_eq!((sent.method.as_str(), sent.target.as_str()), ("POST", "/gateway.do"));
    assert_eq!(sent.signature_check, Ok(()), "the independent check of sign");
    let form: std::collections::BTreeMap<String, String> = form_urlencoded::parse(&sent.body).into_owned().collect();
    assert_eq!(form["method"], "alipay.trade.precreate");
    assert_eq!(form["biz_content"], PRECREATE);
    assert_eq!(form["notify_url"], "https://shop.example/notify/alipay");
    assert_eq!(form["app_id"], ALI_APP_ID);
    assert!(env.up.requests().is_empty());
    assert_eq!(
        env.pg.wait_metric(
            "payguard_egress_requests_total{channel=\"alipay\",outcome=\"relayed\",route=\"ali-egress\"}",
            1.0
        ),
        1.0
    );
}

#[test]
fn alipay_answers_that_do_not_verify_are_refused_with_502() {
    let env = start();
    for how in [AliAnswer::TamperedBody, AliAnswer::WrongSignature, AliAnswer::Unsigned] {
        env.sim.set_ali_answer(how);
        let seen = call(
            &env.pg,
            "POST",
            "/egress/alipay/alipay.trade.query",
            r#"{"out_trade_no":"1"}"#,
        );
        assert_eq!(seen.status, 502, "{how:?}: {seen:?}");
        assert_eq!(seen.code(), "EGRESS_ANSWER_UNVERIFIED", "{how:?}");
        assert_eq!(seen.header("x-pg-verified"), None);
        assert!(!seen.body.contains("qr.alipay.com"), "{how:?}: {}", seen.body);
    }
    assert_eq!(env.sim.requests().len(), 3);
}

#[test]
fn alipay_calls_off_the_allow_list_or_malformed_are_refused_and_never_sent() {
    let env = start();
    for (path, body, status, code) in [
        (
            "/egress/alipay/alipay.trade.refund",
            PRECREATE,
            403,
            "EGRESS_NOT_ALLOWED",
        ),
        (
            "/egress/alipay/alipay.trade.precreate",
            "out_trade_no=1",
            400,
            "EGRESS_BAD_REQUEST",
        ),
        (
            "/egress/alipay/alipay.trade.precreate",
            r#"{"a":1,"a":2}"#,
            400,
            "EGRESS_BAD_REQUEST",
        ),
        (
            "/egress/alipay/alipay.trade.precreate?sign=forged",
            PRECREATE,
            400,
            "EGRESS_BAD_REQUEST",
        ),
    ] {
        let seen = call(&env.pg, "POST", path, body);
        assert_eq!(
            (seen.status, seen.code().as_str()),
            (status, code),
            "{path} {body}: {seen:?}"
        );
    }
    assert!(env.sim.requests().is_empty(), "{:?}", env.sim.requests());
}

fn stripe_call(pg: &Payguard, body: &str, idempotency_key: Option<&str>) -> Seen {
    let client = reqwest::blocking::Client::new();
    let mut req = client
        .post(pg.url("/egress/stripe/v1/payment_intents"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("stripe-version", "2024-06-20")
        .body(body.to_string());
    if let Some(k) = idempotency_key {
        req = req.header("idempotency-key", k);
    }
    Seen::of(req.send().expect("payguard answers"))
}

#[test]
fn stripe_calls_carry_the_key_and_an_idempotency_key_the_backend_never_holds() {
    let env = start();
    let body = "amount=2000&currency=usd&metadata[order_id]=6735";
    let first = stripe_call(&env.pg, body, None);
    assert_eq!(first.status, 200, "{first:?}\n{}", env.pg.logs());
    assert!(first.body.contains("pi_3PgEgress"), "{}", first.body);
    // Stripe does not sign its answers: TLS is all that authenticates them, so no X-PG-Verified.
    assert_eq!(first.header("x-pg-verified"), None);
    assert_eq!(first.header("request-id"), Some("req_payguardEgress"));
    // A second purchase that is the same call byte for byte is a second call...
    let second = stripe_call(&env.pg, body, None);
    // ...and a retry with the key payguard returned is answered as the first was.
    let returned = first
        .header("idempotency-key")
        .expect("the key payguard chose")
        .to_string();
    let retry = stripe_call(&env.pg, body, Some(&returned));
    let own = stripe_call(&env.pg, body, Some("order-6735-attempt-1"));
    for seen in [&first, &second, &retry, &own] {
        assert!(!seen.everything().contains(STRIPE_SECRET_KEY), "{}", seen.everything());
    }
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    // payguard returns only a key it chose; the backend's own it already knows.
    assert_eq!(retry.header("idempotency-key"), None);
    assert_eq!(own.header("idempotency-key"), None);
    let sent = env.sim.requests();
    assert_eq!(sent.len(), 4);
    for r in &sent {
        assert_eq!(r.signature_check, Ok(()), "Bearer key");
        assert_eq!(r.target, "/v1/payment_intents");
        assert_eq!(r.body, body.as_bytes());
        assert_eq!(r.header("stripe-version"), Some("2024-06-20"));
    }
    // Each POST without a key gets its own; a key the backend sends is kept.
    let key = |i: usize| sent[i].header("idempotency-key").map(str::to_owned);
    assert!(key(0).as_deref().is_some_and(|k| k.starts_with("pg-")), "{:?}", key(0));
    assert!(key(1).as_deref().is_some_and(|k| k.starts_with("pg-")), "{:?}", key(1));
    assert_ne!(key(0), key(1));
    assert_eq!(key(2).as_deref(), Some(returned.as_str()));
    assert_eq!(key(3).as_deref(), Some("order-6735-attempt-1"));
    // Nothing off the allow-list is sent.
    let refused = call(&env.pg, "POST", "/egress/stripe/v1/customers", "{}");
    assert_eq!((refused.status, refused.code().as_str()), (403, "EGRESS_NOT_ALLOWED"));
    assert_eq!(env.sim.requests().len(), 4);
    assert!(env.up.requests().is_empty());
}

#[test]
fn connections_are_reused_and_only_reads_are_retried_after_a_broken_exchange() {
    let env = start();
    let order = "/egress/wechatpay/v3/pay/transactions/native";
    let query = "/egress/wechatpay/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid=1900000001";
    for _ in 0..3 {
        assert_eq!(
            call(&env.pg, "POST", order, NATIVE_ORDER).status,
            200,
            "{}",
            env.pg.logs()
        );
    }
    // Three calls, one TLS connection.
    assert_eq!((env.sim.requests().len(), env.sim.connections()), (3, 1));

    // A read goes out on the kept connection too.
    env.sim.set_wx_body(200, br#"{"trade_state":"NOTPAY"}"#);
    let seen = call(&env.pg, "GET", query, "");
    assert_eq!(seen.status, 200, "{seen:?}\n{}", env.pg.logs());
    assert_eq!((env.sim.requests().len(), env.sim.connections()), (4, 1));

    // A read whose exchange breaks off after it was sent is tried once more, on a new
    // connection...
    let env = start();
    env.sim.set_wx_body(200, br#"{"trade_state":"NOTPAY"}"#);
    env.sim.break_next_connections(1);
    let seen = call(&env.pg, "GET", query, "");
    assert_eq!(seen.status, 200, "{seen:?}\n{}", env.pg.logs());
    assert_eq!((env.sim.connections(), env.sim.requests().len()), (2, 1));
    // ...a broken order creation is not: the channel may have acted on it.
    env.sim.break_next_connections(2);
    let pg = start_payguard(&config(&env.up, &env.sim));
    let seen = call(&pg, "POST", order, NATIVE_ORDER);
    assert_eq!(
        (seen.status, seen.code().as_str()),
        (502, "EGRESS_CHANNEL_UNREACHABLE"),
        "{seen:?}"
    );
    assert_eq!(env.sim.connections(), 3, "one attempt only");
    assert_eq!(env.sim.requests().len(), 1);
}
