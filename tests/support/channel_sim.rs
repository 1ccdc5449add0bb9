//! A payment-channel API simulator for egress tests: an HTTPS server (a test CA's certificate
//! for 127.0.0.1) that checks payguard's request signatures with an implementation independent
//! of payguard's (the `openssl` command) and signs its answers with the test platform key (the
//! `openssl` command again), or deliberately wrongly.
//!
//! WeChat Pay API v3: every request's `Authorization` must be
//! `WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",timestamp="…",serial_no="…",signature="…"`
//! over `METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n`, verified with the merchant's public key;
//! a request that fails the check gets WeChat Pay's 401 `SIGN_ERROR` (signed genuinely).
//! `GET /v3/certificates` answers with a certificate list encrypted by Python's `cryptography`
//! (`wechatpay_v3/generate_certificates.py`): the current one, a rotation, or a forgery.
//!
//! Stripe (`/v1/…`): `Authorization` must be `Bearer` with the test secret key; a repeated
//! `Idempotency-Key` is answered with `Idempotent-Replayed: true`; the answer is a
//! fixed PaymentIntent (Stripe does not sign API answers).
//!
//! Alipay OpenAPI (`POST /gateway.do`, a form): the `sign` over the sorted parameters must verify
//! with the app's public key (`alipay/egress_app_public_key.pem`); the answer is
//! `{"<method>_response":…,"sign":…}` signed over the member's exact bytes with the test Alipay
//! key (`alipay/app_private_key.pem`), or Alipay's `isv.invalid-signature` error when the check
//! fails.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::tls::TestPki;

/// The WeChat Pay merchant the simulator expects.
pub const WX_MCHID: &str = "1900000001";
/// The merchant certificate serial the simulator expects in `serial_no`.
pub const WX_MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD2C2F4C1B";
/// The serial of the test platform certificate (`simulate_platform_certificate.pem`).
pub const WX_PLATFORM_SERIAL: &str = "7A3C0FFEE1234567890ABCDEF0123456789ABCDE";

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// How the simulator signs its WeChat Pay answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WxAnswer {
    /// Signed with the platform key over the body sent.
    Genuine,
    /// Signed over the body, then one byte of the body changed.
    TamperedBody,
    /// Signed by another key (the merchant's own) under the platform serial.
    WrongSignature,
    /// Genuinely signed, announced under a serial payguard does not know.
    UnknownSerial,
    /// No `Wechatpay-*` headers at all.
    Unsigned,
    /// Signed with the rotated platform key (`rotated_platform_private_key.pem`) under its serial.
    Rotated,
}

/// The serial of the rotated platform certificate (`rotated_platform_certificate.pem`).
pub const WX_ROTATED_SERIAL: &str = "5EC0AD0000000000000000000000000000000B0B";

/// Which `GET /v3/certificates` answer the simulator serves (`generate_certificates.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WxCertificates {
    /// The current platform certificate, signed with its key.
    Current,
    /// The current and the rotated certificate, signed with the rotated key.
    Rotated,
    /// The rotated certificate encrypted with another APIv3 key, signed with the rotated key.
    Forged,
}

/// The Stripe secret key the simulator expects (`Authorization: Bearer …`).
pub const STRIPE_SECRET_KEY: &str = "sk_test_payguardEgressSimulator0000000000";

/// The Alipay app the simulator expects.
pub const ALI_APP_ID: &str = "2021000000000001";

/// How the simulator signs its Alipay answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliAnswer {
    /// Signed with the test Alipay key over the response member's bytes.
    Genuine,
    /// Signed, then one byte of the member changed.
    TamperedBody,
    /// Signed by another key (the app's own).
    WrongSignature,
    /// No `sign` member.
    Unsigned,
}

/// One request as the simulator saw it.
#[derive(Debug, Clone)]
pub struct SimRequest {
    pub method: String,
    /// Path and query as received.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The independent check of the request's signature (`Err` says why it failed).
    pub signature_check: Result<(), String>,
}

impl SimRequest {
    /// The single value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

struct Shared {
    requests: Mutex<Vec<SimRequest>>,
    wx_answer: Mutex<WxAnswer>,
    /// Status and body of the next answers.
    wx_body: Mutex<(u16, Vec<u8>)>,
    ali_answer: Mutex<AliAnswer>,
    wx_certificates: Mutex<WxCertificates>,
    /// TLS connections accepted so far.
    connections: std::sync::atomic::AtomicUsize,
    /// Connections still to be broken off after their request head arrives.
    break_next: std::sync::atomic::AtomicUsize,
    /// The response member of the next Alipay answers (its exact text).
    ali_response: Mutex<String>,
    /// Orders created through the simulator, by `out_trade_no`, which the query APIs answer.
    orders: Mutex<std::collections::BTreeMap<String, SimOrder>>,
    /// Differences injected into the bills.
    bill_edits: Mutex<Vec<BillEdit>>,
}

/// A difference injected into the daily bills, against the orders the simulator saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillEdit {
    /// The order's payment row is left out.
    Drop(String),
    /// A paid row for an order the simulator never saw created (minor units), paid at the
    /// day's noon: in the WeChat Pay bill when the number starts with `wx`, else in Alipay's.
    Add { out_trade_no: String, amount_minor: i64 },
    /// The order's payment row shows another amount (minor units).
    Amount { out_trade_no: String, amount_minor: i64 },
    /// WeChat Pay's bill file differs from the one whose hash the signed answer names.
    TamperedFile,
    /// WeChat Pay's `download_url` points to another host.
    ForeignDownloadUrl,
}

/// A refund of a simulated order.
#[derive(Debug, Clone)]
pub struct SimRefund {
    pub out_refund_no: String,
    /// Minor units.
    pub amount_minor: i64,
    /// Unix seconds.
    pub at: i64,
}

/// An order the simulator saw created.
#[derive(Debug, Clone)]
pub struct SimOrder {
    /// WeChat Pay `appid` of the create call.
    pub appid: Option<String>,
    /// WeChat Pay `amount.total` (fen) or Alipay `total_amount` (yuan text).
    pub amount: String,
    /// The channel's state: WeChat Pay `trade_state` or Alipay `trade_status`.
    pub state: String,
    /// When it was paid (Unix seconds), for its bill row and query answers.
    pub paid_at: Option<i64>,
    /// Its refunds (no notification is sent for them).
    pub refunds: Vec<SimRefund>,
}

impl SimOrder {
    /// A WeChat Pay order (`appid` set at creation); otherwise Alipay.
    fn is_wechat(&self) -> bool {
        self.appid.is_some()
    }

    /// The amount in minor units (WeChat Pay's is already; Alipay's is yuan text).
    pub fn amount_minor(&self) -> i64 {
        if self.is_wechat() {
            self.amount.parse().unwrap_or(0)
        } else {
            yuan_minor(&self.amount)
        }
    }

    fn pay(&mut self, state: &str) {
        if matches!(state, "SUCCESS" | "TRADE_SUCCESS" | "TRADE_FINISHED") && self.paid_at.is_none() {
            self.paid_at = Some(now());
        }
        self.state = state.to_string();
    }
}

/// `"19.99"` as 1999.
fn yuan_minor(text: &str) -> i64 {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let frac = format!("{frac:0<2}");
    int.parse::<i64>().unwrap_or(0) * 100 + frac[..2].parse::<i64>().unwrap_or(0)
}

/// 1999 as `"19.99"`.
fn minor_yuan(minor: i64) -> String {
    format!(
        "{}{}.{:02}",
        if minor < 0 { "-" } else { "" },
        minor.abs() / 100,
        minor.abs() % 100
    )
}

/// Unix seconds as Beijing wall-clock text in `format`.
fn beijing(at: i64, format: &str) -> String {
    jiff::Timestamp::from_second(at)
        .expect("time")
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
        .strftime(format)
        .to_string()
}

impl Shared {
    fn take_break(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.break_next
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn record(&self, request: SimRequest) {
        self.requests.lock().unwrap().push(request);
    }
}

/// The running simulator; stops on drop.
pub struct ChannelSim {
    pub addr: SocketAddr,
    /// The CA that signed the simulator's certificate.
    ca: PathBuf,
    /// A PKI made for this simulator, removed on drop.
    _pki: Option<TestPki>,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn pem_der(path: &Path, tag: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(path).expect("read PEM");
    pem::parse_many(text)
        .expect("PEM")
        .into_iter()
        .find(|p| p.tag() == tag)
        .unwrap_or_else(|| panic!("{} has no {tag}", path.display()))
        .into_contents()
}

impl ChannelSim {
    /// Starts on a free loopback port with a new test CA.
    pub fn start() -> Self {
        let pki = TestPki::generate();
        let (cert, key, ca) = (pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem"));
        Self::serve("127.0.0.1:0", &cert, &key, ca, Some(pki))
    }

    /// Starts on `listen` with the sandbox's committed certificate (tests/fixtures/sandbox/),
    /// which `config/sandbox.yaml` trusts.
    pub fn start_sandbox(listen: &str) -> Self {
        Self::serve(
            listen,
            &fixture("sandbox/server.pem"),
            &fixture("sandbox/server.key"),
            fixture("sandbox/ca.pem"),
            None,
        )
    }

    fn serve(listen: &str, cert: &Path, key: &Path, ca: PathBuf, pki: Option<TestPki>) -> Self {
        let listen = listen.to_string();
        let cert = rustls::pki_types::CertificateDer::from(pem_der(cert, "CERTIFICATE"));
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pem_der(key, "PRIVATE KEY").into());
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            wx_answer: Mutex::new(WxAnswer::Genuine),
            wx_body: Mutex::new((200, br#"{"code_url":"weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}"#.to_vec())),
            ali_answer: Mutex::new(AliAnswer::Genuine),
            wx_certificates: Mutex::new(WxCertificates::Current),
            connections: Default::default(),
            break_next: Default::default(),
            orders: Mutex::new(Default::default()),
            bill_edits: Mutex::new(Vec::new()),
            ali_response: Mutex::new(
                r#"{"code":"10000", "msg":"Success","out_trade_no":"20261203000001","qr_code":"https://qr.alipay.com/bax08431ecsdyzzkxlah0066"}"#.into(),
            ),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .unwrap_or_else(|e| panic!("the simulator cannot listen on {listen}: {e}"));
                addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            let (sh, acceptor) = (sh.clone(), acceptor.clone());
                            tokio::spawn(async move {
                                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                                sh.connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                if sh.take_break() {
                                    // The request arrives, then the connection ends without an answer.
                                    use tokio::io::AsyncReadExt as _;
                                    let mut head = [0u8; 256];
                                    let _ = tls.read(&mut head).await;
                                    return;
                                }
                                let svc = service_fn(move |req| handle(sh.clone(), req));
                                let _ = http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
                            });
                        }
                    }
                }
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(5)).expect("simulator started");
        Self {
            addr,
            ca,
            _pki: pki,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `file:` reference to the simulator's CA certificate.
    pub fn ca_ref(&self) -> String {
        format!("file:{}", self.ca.display())
    }

    /// How the next WeChat Pay answers are signed.
    pub fn set_wx_answer(&self, how: WxAnswer) {
        *self.shared.wx_answer.lock().unwrap() = how;
    }

    /// Which certificate list `GET /v3/certificates` answers with.
    pub fn set_wx_certificates(&self, which: WxCertificates) {
        *self.shared.wx_certificates.lock().unwrap() = which;
    }

    /// Status and body of the next WeChat Pay answers.
    pub fn set_wx_body(&self, status: u16, body: &[u8]) {
        *self.shared.wx_body.lock().unwrap() = (status, body.to_vec());
    }

    /// How the next Alipay answers are signed.
    pub fn set_ali_answer(&self, how: AliAnswer) {
        *self.shared.ali_answer.lock().unwrap() = how;
    }

    /// The response member (exact JSON text) of the next Alipay answers.
    pub fn set_ali_response(&self, member: &str) {
        *self.shared.ali_response.lock().unwrap() = member.to_string();
    }

    /// Sets the channel's state of a created order (`SUCCESS`, `TRADE_SUCCESS`, `CLOSED`, ...).
    pub fn set_order_state(&self, out_trade_no: &str, state: &str) {
        let mut orders = self.shared.orders.lock().unwrap();
        let order = orders
            .get_mut(out_trade_no)
            .unwrap_or_else(|| panic!("the simulator saw no order {out_trade_no} created"));
        order.pay(state);
    }

    /// Refunds `amount_minor` of a paid order at the channel, without a notification; the
    /// refund number is `<out_trade_no>-R<n>`, returned.
    pub fn refund(&self, out_trade_no: &str, amount_minor: i64) -> String {
        let mut orders = self.shared.orders.lock().unwrap();
        let order = orders
            .get_mut(out_trade_no)
            .unwrap_or_else(|| panic!("the simulator saw no order {out_trade_no} created"));
        refund_order(out_trade_no, order, Some(amount_minor))
    }

    /// The Beijing day `out_trade_no` was paid (`YYYY-MM-DD`): the day of its bill.
    pub fn paid_day(&self, out_trade_no: &str) -> String {
        let paid = self.shared.orders.lock().unwrap()[out_trade_no]
            .paid_at
            .unwrap_or_else(|| panic!("{out_trade_no} is not paid"));
        beijing(paid, "%Y-%m-%d")
    }

    /// Injects a difference into the bills.
    pub fn edit_bill(&self, edit: BillEdit) {
        self.shared.bill_edits.lock().unwrap().push(edit);
    }

    /// The orders created so far.
    pub fn orders(&self) -> std::collections::BTreeMap<String, SimOrder> {
        self.shared.orders.lock().unwrap().clone()
    }

    /// How many queries of `out_trade_no` arrived (WeChat Pay or Alipay).
    pub fn queries_of(&self, out_trade_no: &str) -> usize {
        let wx = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}?");
        let ali = format!("\"out_trade_no\":\"{out_trade_no}\"");
        self.requests()
            .iter()
            .filter(|r| {
                r.target.starts_with(&wx)
                    || (r.target == "/gateway.do"
                        && form_urlencoded::parse(&r.body).any(|(k, v)| k == "method" && v == "alipay.trade.query")
                        && form_urlencoded::parse(&r.body).any(|(k, v)| k == "biz_content" && v.contains(&ali)))
            })
            .count()
    }

    /// TLS connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The next `n` connections read their request and close without answering.
    pub fn break_next_connections(&self, n: usize) {
        self.shared.break_next.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<SimRequest> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for ChannelSim {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `openssl dgst -sha256 -sign key` of `message`: PKCS#1 v1.5 SHA-256.
pub fn openssl_sign(key: &Path, message: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("m"), message).expect("write message");
    let out = Command::new("openssl")
        .current_dir(dir.path())
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .args(["-out", "s", "m"])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.path().join("s")).expect("read signature")
}

/// `openssl dgst -sha256 -verify public_key -signature`.
pub fn openssl_verifies(public_key: &Path, message: &[u8], signature: &[u8]) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("m"), message).expect("write message");
    std::fs::write(dir.path().join("s"), signature).expect("write signature");
    Command::new("openssl")
        .current_dir(dir.path())
        .args(["dgst", "-sha256", "-verify"])
        .arg(public_key)
        .args(["-signature", "s", "m"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// The independent check of a WeChat Pay v3 `Authorization` header.
fn check_wx_authorization(method: &str, target: &str, authorization: Option<&str>, body: &[u8]) -> Result<(), String> {
    let value = authorization.ok_or("no Authorization header")?;
    let params = value
        .strip_prefix("WECHATPAY2-SHA256-RSA2048 ")
        .ok_or("not WECHATPAY2-SHA256-RSA2048")?;
    let mut fields = std::collections::HashMap::new();
    for part in params.split(',') {
        let (k, v) = part.split_once('=').ok_or("a parameter without =")?;
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or("an unquoted parameter")?;
        fields.insert(k.to_string(), v.to_string());
    }
    let field = |k: &str| fields.get(k).cloned().ok_or(format!("no {k}"));
    if field("mchid")? != WX_MCHID {
        return Err("wrong mchid".into());
    }
    if field("serial_no")? != WX_MERCHANT_SERIAL {
        return Err("wrong serial_no".into());
    }
    let timestamp = field("timestamp")?;
    let ts: i64 = timestamp.parse().map_err(|_| "timestamp is not a number")?;
    if (now() - ts).abs() > 300 {
        return Err("timestamp outside five minutes".into());
    }
    let nonce = field("nonce_str")?;
    if nonce.len() < 16 {
        return Err("short nonce".into());
    }
    let signature = unb64(&field("signature")?).ok_or("signature is not base64")?;
    let mut message = format!("{method}\n{target}\n{timestamp}\n{nonce}\n").into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    if openssl_verifies(
        &fixture("wechatpay_v3/egress_merchant_public_key.pem"),
        &message,
        &signature,
    ) {
        Ok(())
    } else {
        Err("signature does not verify".into())
    }
}

type AnswerBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn handle(sh: Arc<Shared>, req: Request<hyper::body::Incoming>) -> Result<Response<AnswerBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let method = parts.method.to_string();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    if parts.uri.path().starts_with("/v1/") {
        let check = match parts.headers.get("authorization").and_then(|v| v.to_str().ok()) {
            Some(v) if v == format!("Bearer {STRIPE_SECRET_KEY}") => Ok(()),
            _ => Err("not the Stripe secret key".to_string()),
        };
        let (status, answer) = match &check {
            Ok(()) => (
                200,
                r#"{"id":"pi_3PgEgress","object":"payment_intent","amount":2000,"currency":"usd","status":"requires_payment_method"}"#,
            ),
            Err(_) => (
                401,
                r#"{"error":{"message":"Invalid API Key provided: sk_test_****0000","type":"invalid_request_error"}}"#,
            ),
        };
        // Like Stripe, a repeated idempotency key is answered as the first call was, marked.
        let key = parts.headers.get("idempotency-key").and_then(|v| v.to_str().ok());
        let replayed = key.is_some_and(|key| {
            sh.requests
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.target.starts_with("/v1/") && r.header("idempotency-key") == Some(key))
        });
        sh.record(SimRequest {
            method,
            target,
            headers,
            body,
            signature_check: check,
        });
        let mut answer_head = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("request-id", "req_payguardEgress");
        if replayed {
            answer_head = answer_head.header("idempotent-replayed", "true");
        }
        return Ok(answer_head
            .body(Full::new(Bytes::from_static(answer.as_bytes())).boxed())
            .expect("response"));
    }
    if let Some(no) = parts.uri.path().strip_prefix("/sim/pay/") {
        // The sandbox's "the shopper paid": no notification is sent (a lost callback).
        let mut orders = sh.orders.lock().unwrap();
        let (status, text) = match orders.get_mut(no) {
            Some(order) => {
                let paid = if matches!(order.state.as_str(), "WAIT_BUYER_PAY" | "NOT_EXIST") {
                    "TRADE_SUCCESS"
                } else {
                    "SUCCESS"
                };
                order.pay(paid);
                (200, format!("paid ({}), no notification sent", order.state))
            }
            None => (404, "no such order".to_string()),
        };
        return Ok(Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(text)).boxed())
            .expect("response"));
    }
    if let Some(no) = parts.uri.path().strip_prefix("/sim/refund/") {
        // The sandbox's "the merchant refunded": no notification is sent.
        let amount = parts
            .uri
            .query()
            .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "amount"))
            .and_then(|(_, v)| v.parse::<i64>().ok());
        let mut orders = sh.orders.lock().unwrap();
        let (status, text) = match orders.get_mut(no) {
            Some(order) if order.paid_at.is_some() => {
                let refund_no = refund_order(no, order, amount);
                (200, format!("refunded {refund_no}, no notification sent"))
            }
            Some(_) => (409, "the order is not paid".to_string()),
            None => (404, "no such order".to_string()),
        };
        return Ok(Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(text)).boxed())
            .expect("response"));
    }
    if parts.uri.path() == "/sim/alipay/bill" {
        // Alipay's bill download link: not signed, the zip as it is.
        let date = parts
            .uri
            .query()
            .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "date"))
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let zip = alipay_bill_zip(&sh, &date);
        sh.record(SimRequest {
            method,
            target,
            headers,
            body,
            signature_check: Ok(()),
        });
        return Ok(Response::builder()
            .status(200)
            .header("content-type", "application/zip")
            .body(Full::new(Bytes::from(zip)).boxed())
            .expect("response"));
    }
    if parts.uri.path() == "/gateway.do" {
        return Ok(alipay_gateway(&sh, method, target, headers, body).await);
    }
    let authorization = parts.headers.get("authorization").and_then(|v| v.to_str().ok());
    let check = {
        let (method, target, authorization, body) = (
            method.clone(),
            target.clone(),
            authorization.map(str::to_owned),
            body.clone(),
        );
        tokio::task::spawn_blocking(move || check_wx_authorization(&method, &target, authorization.as_deref(), &body))
            .await
            .unwrap_or_else(|e| Err(format!("check panicked: {e}")))
    };
    if parts.uri.path() == "/v3/billdownload/file" {
        // WeChat Pay does not sign the bill file: the signed tradebill answer names its hash.
        let date = parts
            .uri
            .query()
            .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token"))
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let (status, file) = match &check {
            Ok(()) => {
                let mut file = wechat_bill_csv(&sh, &date);
                if sh.bill_edits.lock().unwrap().contains(&BillEdit::TamperedFile) {
                    file = file.replace("`0.00000,`", "`0.00001,`");
                    file.push(' ');
                }
                (200, file.into_bytes())
            }
            Err(_) => (401, br#"{"code":"SIGN_ERROR","message":"signature error"}"#.to_vec()),
        };
        sh.record(SimRequest {
            method,
            target,
            headers,
            body,
            signature_check: check,
        });
        return Ok(Response::builder()
            .status(status)
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(file)).boxed())
            .expect("response"));
    }
    let host = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let certificates = (parts.method == hyper::Method::GET && target == "/v3/certificates")
        .then(|| *sh.wx_certificates.lock().unwrap());
    let (status, answer) = match (&check, certificates) {
        (Ok(()), Some(which)) => {
            let file = match which {
                WxCertificates::Current => "certificates_answer_current.json",
                WxCertificates::Rotated => "certificates_answer_rotated.json",
                WxCertificates::Forged => "certificates_answer_forged.json",
            };
            (
                200,
                std::fs::read(fixture(&format!("wechatpay_v3/{file}"))).expect("certificate fixture"),
            )
        }
        (Ok(()), None) => wx_order_answer(&sh, &parts.method, &target, &body, &host)
            .unwrap_or_else(|| sh.wx_body.lock().unwrap().clone()),
        (Err(_), _) => (401, br#"{"code":"SIGN_ERROR","message":"signature error"}"#.to_vec()),
    };
    // A request that fails the check is answered genuinely: WeChat Pay signs its errors too.
    let how = match (&check, certificates) {
        (Err(_), _) | (Ok(()), Some(WxCertificates::Current)) => WxAnswer::Genuine,
        (Ok(()), Some(_)) => WxAnswer::Rotated,
        (Ok(()), None) => *sh.wx_answer.lock().unwrap(),
    };
    sh.record(SimRequest {
        method,
        target,
        headers,
        body,
        signature_check: check,
    });
    let answer_clone = answer.clone();
    let signed = tokio::task::spawn_blocking(move || sign_wx_answer(how, answer_clone))
        .await
        .expect("sign answer");
    let mut resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("request-id", "08F78BB5AF0610D302A1A2ED0528F8A5");
    for (k, v) in signed.headers {
        resp = resp.header(k, v);
    }
    Ok(resp
        .body(Full::new(Bytes::from(signed.body)).boxed())
        .expect("response"))
}

/// The order APIs: a create call (`POST /v3/pay/transactions/<kind>`) records the order and gets
/// the usual answer (`None`); a query (`GET …/out-trade-no/<no>`) is answered from the orders.
fn wx_order_answer(
    sh: &Shared,
    method: &hyper::Method,
    target: &str,
    body: &[u8],
    host: &str,
) -> Option<(u16, Vec<u8>)> {
    if let Some(query) = target.strip_prefix("/v3/bill/tradebill?") {
        let date = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "bill_date")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if !bill_exists(&date) {
            return Some((
                400,
                br#"{"code":"NO_STATEMENT_EXIST","message":"the bill does not exist"}"#.to_vec(),
            ));
        }
        let file = wechat_bill_csv(sh, &date);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, file.as_bytes());
        let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let answer = serde_json::json!({
            "hash_type": "SHA1",
            "hash_value": hash,
            "download_url": if sh.bill_edits.lock().unwrap().contains(&BillEdit::ForeignDownloadUrl) {
                format!("https://bills.example.net/v3/billdownload/file?token={date}")
            } else {
                format!("https://{host}/v3/billdownload/file?token={date}")
            },
        });
        return Some((200, answer.to_string().into_bytes()));
    }
    if let Some(rest) = target.strip_prefix("/v3/pay/transactions/out-trade-no/") {
        let no = rest.split('?').next().unwrap_or("");
        let orders = sh.orders.lock().unwrap();
        // An order the simulator did not see created gets the configured answer.
        return orders.get(no).map(|order| {
            let total: i64 = order.amount.parse().unwrap_or(0);
            let mut answer = serde_json::json!({
                "mchid": WX_MCHID,
                "out_trade_no": no,
                "trade_type": "NATIVE",
                "trade_state": order.state,
                "trade_state_desc": order.state,
                "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
            });
            if let Some(appid) = &order.appid {
                answer["appid"] = appid.clone().into();
            }
            if let Some(paid) = order.paid_at {
                answer["transaction_id"] = wx_transaction_id(no).into();
                answer["success_time"] = beijing(paid, "%Y-%m-%dT%H:%M:%S+08:00").into();
            }
            (200, answer.to_string().into_bytes())
        });
    }
    if method == hyper::Method::POST && target.starts_with("/v3/pay/transactions/") {
        if let Ok(call) = serde_json::from_slice::<serde_json::Value>(body) {
            if let Some(no) = call.get("out_trade_no").and_then(|v| v.as_str()) {
                sh.orders.lock().unwrap().insert(
                    no.to_string(),
                    SimOrder {
                        appid: call.get("appid").and_then(|v| v.as_str()).map(str::to_owned),
                        amount: call.pointer("/amount/total").map(|v| v.to_string()).unwrap_or_default(),
                        state: "NOTPAY".into(),
                        paid_at: None,
                        refunds: Vec::new(),
                    },
                );
            }
        }
    }
    None
}

/// WeChat Pay's transaction id of a simulated order.
fn wx_transaction_id(out_trade_no: &str) -> String {
    format!("42000{out_trade_no}")
}

/// Alipay's trade number of a simulated order.
fn ali_trade_no(out_trade_no: &str) -> String {
    format!("2026120322{out_trade_no}")
}

/// Refunds `amount` (default: what is left) of `order`; the refund number.
fn refund_order(out_trade_no: &str, order: &mut SimOrder, amount: Option<i64>) -> String {
    let refunded: i64 = order.refunds.iter().map(|r| r.amount_minor).sum();
    let out_refund_no = format!("{out_trade_no}-R{}", order.refunds.len() + 1);
    order.refunds.push(SimRefund {
        out_refund_no: out_refund_no.clone(),
        amount_minor: amount.unwrap_or(order.amount_minor() - refunded),
        at: now(),
    });
    if order.is_wechat() {
        order.state = "REFUND".into();
    }
    out_refund_no
}

/// Whether the channel has the bill of `date`: any day up to today (Beijing time). Real
/// channels have a day's bill the next morning; the simulator serves today's too.
fn bill_exists(date: &str) -> bool {
    date.len() == 10 && date <= beijing(now(), "%Y-%m-%d").as_str()
}

/// One row of a simulated bill.
struct SimBillRow {
    out_trade_no: String,
    refund_no: Option<String>,
    amount_minor: i64,
    at: i64,
}

/// The rows of `date`'s bill of one channel: the payments and refunds of the orders the
/// simulator saw, on that Beijing day, with the injected differences.
fn bill_rows(sh: &Shared, date: &str, wechat: bool) -> Vec<SimBillRow> {
    let edits = sh.bill_edits.lock().unwrap().clone();
    let on_day = |at: i64| beijing(at, "%Y-%m-%d") == date;
    let mut rows = Vec::new();
    for (no, order) in sh.orders.lock().unwrap().iter() {
        if order.is_wechat() != wechat {
            continue;
        }
        if let Some(paid) = order.paid_at.filter(|at| on_day(*at)) {
            if !edits.contains(&BillEdit::Drop(no.clone())) {
                let amount_minor = edits
                    .iter()
                    .find_map(|e| match e {
                        BillEdit::Amount {
                            out_trade_no,
                            amount_minor,
                        } if out_trade_no == no => Some(*amount_minor),
                        _ => None,
                    })
                    .unwrap_or_else(|| order.amount_minor());
                rows.push(SimBillRow {
                    out_trade_no: no.clone(),
                    refund_no: None,
                    amount_minor,
                    at: paid,
                });
            }
        }
        for refund in order.refunds.iter().filter(|r| on_day(r.at)) {
            rows.push(SimBillRow {
                out_trade_no: no.clone(),
                refund_no: Some(refund.out_refund_no.clone()),
                amount_minor: refund.amount_minor,
                at: refund.at,
            });
        }
    }
    for edit in &edits {
        if let BillEdit::Add {
            out_trade_no,
            amount_minor,
        } = edit
        {
            let noon = format!("{date}T12:00:00+08:00")
                .parse::<jiff::Timestamp>()
                .expect("date")
                .as_second();
            // Extra rows go to the bill of the channel their number names (`wx…` or not).
            if out_trade_no.starts_with("wx") == wechat {
                rows.push(SimBillRow {
                    out_trade_no: out_trade_no.clone(),
                    refund_no: None,
                    amount_minor: *amount_minor,
                    at: noon,
                });
            }
        }
    }
    rows.sort_by_key(|r| r.at);
    rows
}

/// WeChat Pay's trade bill of `date` (`bill_type` `ALL`), as the file download serves it.
fn wechat_bill_csv(sh: &Shared, date: &str) -> String {
    let rows = bill_rows(sh, date, true);
    let mut out = String::from("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r\n");
    let (mut paid, mut refunded) = (0, 0);
    for r in &rows {
        let time = beijing(r.at, "%Y-%m-%d %H:%M:%S");
        let txn = wx_transaction_id(&r.out_trade_no);
        let no = &r.out_trade_no;
        let amount = minor_yuan(r.amount_minor);
        let line = match &r.refund_no {
            None => {
                paid += r.amount_minor;
                format!("`{time},`wxd678efh567hg6787,`{WX_MCHID},`0,`,`{txn},`{no},`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`SUCCESS,`OTHERS,`CNY,`{amount},`0.00,`0,`0,`0.00,`0.00,`,`,`sandbox order,`,`0.00000,`0.60%,`{amount},`0.00,`")
            }
            Some(refund_no) => {
                refunded += r.amount_minor;
                format!("`{time},`wxd678efh567hg6787,`{WX_MCHID},`0,`,`{txn},`{no},`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50300{refund_no},`{refund_no},`{amount},`0.00,`ORIGINAL,`SUCCESS,`sandbox order,`,`0.00000,`0.60%,`0.00,`{amount},`")
            }
        };
        out += &line;
        out += "\r\n";
    }
    out += "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n";
    out += &format!(
        "`{},`{},`{},`0.00,`0.00000,`{},`{}\r\n",
        rows.len(),
        minor_yuan(paid),
        minor_yuan(refunded),
        minor_yuan(paid),
        minor_yuan(refunded)
    );
    out
}

/// Alipay's trade bill of `date`: a zip of the detail and summary files, GBK CSV.
fn alipay_bill_zip(sh: &Shared, date: &str) -> Vec<u8> {
    use std::io::Write as _;
    let rows = bill_rows(sh, date, false);
    let compact = date.replace('-', "");
    let mut detail = format!("#支付宝业务明细查询\r\n#账号：[20880000000000000156]\r\n#起始日期：[{date} 00:00:00]   终止日期：[{date} 23:59:59]\r\n#-----------------------------------------业务明细列表----------------------------------------\r\n支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注\r\n");
    let (mut payments, mut refunds) = ((0, 0), (0, 0));
    for r in &rows {
        let time = beijing(r.at, "%Y-%m-%d %H:%M:%S");
        let trade_no = ali_trade_no(&r.out_trade_no);
        let (kind, amount, refund_no) = match &r.refund_no {
            None => {
                payments = (payments.0 + 1, payments.1 + r.amount_minor);
                ("交易", minor_yuan(r.amount_minor), String::new())
            }
            Some(no) => {
                refunds = (refunds.0 + 1, refunds.1 + r.amount_minor);
                ("退款", minor_yuan(-r.amount_minor), no.clone())
            }
        };
        detail += &format!(
            "{trade_no}\t,{}\t,{kind}\t,沙箱订单\t,{time}\t,{time}\t,\t,\t,\t,\t,159****5620\t,{amount}\t,{amount}\t,0.00\t,0.00\t,0.00\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,{refund_no}\t,0.00\t,0.00\t,\r\n",
            r.out_trade_no
        );
    }
    detail += &format!(
        "#-----------------------------------------业务明细列表结束------------------------------------\r\n#交易合计：{}笔，商家实收共{}元，商家优惠共0.00元\r\n#退款合计：{}笔，商家实收退款共-{}元，商家优惠退款共0.00元\r\n#导出时间：[{}]\r\n",
        payments.0,
        minor_yuan(payments.1),
        refunds.0,
        minor_yuan(refunds.1),
        beijing(now(), "%Y-%m-%d %H:%M:%S")
    );
    let summary = format!(
        "#支付宝业务汇总查询\r\n门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）\r\n合计,,{},{},{}\r\n",
        payments.0,
        refunds.0,
        minor_yuan(payments.1)
    );
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default();
    for (name, text) in [
        (format!("20880000000000000156_{compact}_业务明细.csv"), detail),
        (format!("20880000000000000156_{compact}_业务明细(汇总).csv"), summary),
    ] {
        zip.start_file(name, options).expect("zip entry");
        zip.write_all(&encoding_rs::GBK.encode(&text).0).expect("zip write");
    }
    zip.finish().expect("zip");
    out.into_inner()
}

/// Alipay's order APIs: a create call records the order (`None`: the usual answer); a query is
/// answered from the orders.
fn ali_order_answer(sh: &Shared, api_method: &str, form: &[u8], host: &str) -> Option<String> {
    let biz = form_urlencoded::parse(form)
        .find(|(k, _)| k == "biz_content")
        .and_then(|(_, v)| serde_json::from_str::<serde_json::Value>(&v).ok())?;
    if api_method == "alipay.data.dataservice.bill.downloadurl.query" {
        let date = biz.get("bill_date").and_then(|v| v.as_str()).unwrap_or("");
        return Some(if bill_exists(date) {
            serde_json::json!({
                "code": "10000",
                "msg": "Success",
                "bill_download_url": format!("https://{host}/sim/alipay/bill?date={date}"),
            })
            .to_string()
        } else {
            r#"{"code":"40004","msg":"Business Failed","sub_code":"isp.bill_not_exist","sub_msg":"bill does not exist"}"#.to_string()
        });
    }
    let no = biz.get("out_trade_no").and_then(|v| v.as_str())?.to_string();
    match api_method {
        "alipay.trade.query" => {
            let orders = sh.orders.lock().unwrap();
            // A trade the simulator did not see created gets the configured answer.
            orders.get(&no).map(|order| {
                if order.state == "NOT_EXIST" {
                    r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"trade does not exist"}"#.to_string()
                } else {
                    let mut answer = serde_json::json!({
                        "code": "10000",
                        "msg": "Success",
                        "trade_no": ali_trade_no(&no),
                        "out_trade_no": no,
                        "buyer_logon_id": "159****5620",
                        "trade_status": order.state,
                        "total_amount": order.amount,
                    });
                    if let Some(paid) = order.paid_at {
                        answer["send_pay_date"] = beijing(paid, "%Y-%m-%d %H:%M:%S").into();
                    }
                    answer.to_string()
                }
            })
        }
        "alipay.trade.precreate" | "alipay.trade.create" => {
            sh.orders.lock().unwrap().insert(
                no,
                SimOrder {
                    appid: None,
                    amount: biz
                        .get("total_amount")
                        .and_then(|v| v.as_str())
                        .unwrap_or("0")
                        .to_string(),
                    // Like Alipay, a precreated trade does not exist until its QR code is scanned.
                    state: if api_method == "alipay.trade.precreate" {
                        "NOT_EXIST"
                    } else {
                        "WAIT_BUYER_PAY"
                    }
                    .into(),
                    paid_at: None,
                    refunds: Vec::new(),
                },
            );
            None
        }
        _ => None,
    }
}

struct SignedAnswer {
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn sign_wx_answer(how: WxAnswer, body: Vec<u8>) -> SignedAnswer {
    if how == WxAnswer::Unsigned {
        return SignedAnswer {
            headers: Vec::new(),
            body,
        };
    }
    let timestamp = now().to_string();
    let nonce = "c5ac7061fccab6bf3e254dcf98995b8c".to_string();
    let mut message = format!("{timestamp}\n{nonce}\n").into_bytes();
    message.extend_from_slice(&body);
    message.push(b'\n');
    let key = match how {
        WxAnswer::WrongSignature => fixture("wechatpay_v3/egress_merchant_private_key.pem"),
        WxAnswer::Rotated => fixture("wechatpay_v3/rotated_platform_private_key.pem"),
        _ => fixture("wechatpay_v3/simulate_platform_private_key.pem"),
    };
    let signature = b64(&openssl_sign(&key, &message));
    let serial = match how {
        WxAnswer::UnknownSerial => "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        WxAnswer::Rotated => WX_ROTATED_SERIAL,
        _ => WX_PLATFORM_SERIAL,
    };
    let mut body = body;
    if how == WxAnswer::TamperedBody {
        // One byte changed after signing (a digit of an amount, a letter of a URL).
        if let Some(b) = body.iter_mut().rev().find(|b| b.is_ascii_alphanumeric()) {
            *b = if *b == b'z' { b'y' } else { b'z' };
        }
    }
    SignedAnswer {
        headers: vec![
            ("wechatpay-serial", serial.to_string()),
            ("wechatpay-signature", signature),
            ("wechatpay-timestamp", timestamp),
            ("wechatpay-nonce", nonce),
        ],
        body,
    }
}

/// The independent check of an Alipay OpenAPI form: the public parameters, then `sign` (RSA2)
/// over the sorted non-empty parameters other than `sign`. Returns the API method.
fn check_ali_form(body: &[u8]) -> (Result<(), String>, String) {
    let mut params = std::collections::BTreeMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if params.insert(k.into_owned(), v.into_owned()).is_some() {
            return (Err("a repeated parameter".into()), String::new());
        }
    }
    let method = params.get("method").cloned().unwrap_or_default();
    let check = (|| {
        let get = |k: &str| params.get(k).map(String::as_str).ok_or(format!("no {k}"));
        if get("app_id")? != ALI_APP_ID {
            return Err("wrong app_id".to_string());
        }
        for (k, want) in [
            ("sign_type", "RSA2"),
            ("charset", "utf-8"),
            ("format", "JSON"),
            ("version", "1.0"),
        ] {
            if get(k)? != want {
                return Err(format!("{k} is not {want}"));
            }
        }
        let ts = get("timestamp")?;
        let bytes = ts.as_bytes();
        if bytes.len() != 19 || bytes[4] != b'-' || bytes[10] != b' ' || bytes[13] != b':' {
            return Err("timestamp is not yyyy-MM-dd HH:mm:ss".into());
        }
        let signature = unb64(get("sign")?).ok_or("sign is not base64")?;
        let content: Vec<String> = params
            .iter()
            .filter(|(k, v)| k.as_str() != "sign" && !v.is_empty())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if openssl_verifies(
            &fixture("alipay/egress_app_public_key.pem"),
            content.join("&").as_bytes(),
            &signature,
        ) {
            Ok(())
        } else {
            Err("sign does not verify".into())
        }
    })();
    (check, method)
}

async fn alipay_gateway(
    sh: &Arc<Shared>,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Response<AnswerBody> {
    let form = body.clone();
    let (check, api_method) = tokio::task::spawn_blocking(move || check_ali_form(&form))
        .await
        .expect("check");
    let host = headers
        .iter()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let (member_name, member, how) = match &check {
        Ok(()) => (
            format!("{}_response", api_method.replace('.', "_")),
            ali_order_answer(sh, &api_method, &body, &host).unwrap_or_else(|| sh.ali_response.lock().unwrap().clone()),
            *sh.ali_answer.lock().unwrap(),
        ),
        Err(_) => (
            "error_response".to_string(),
            r#"{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-signature","sub_msg":"invalid signature"}"#.to_string(),
            AliAnswer::Genuine,
        ),
    };
    sh.record(SimRequest {
        method,
        target,
        headers,
        body,
        signature_check: check,
    });
    let answer = tokio::task::spawn_blocking(move || {
        let key = match how {
            AliAnswer::WrongSignature => fixture("alipay/egress_app_private_key.pem"),
            _ => fixture("alipay/app_private_key.pem"),
        };
        let sign = b64(&openssl_sign(&key, member.as_bytes()));
        let member = match how {
            AliAnswer::TamperedBody => member.replacen("10000", "10001", 1),
            _ => member,
        };
        match how {
            AliAnswer::Unsigned => format!(r#"{{"{member_name}":{member}}}"#),
            _ => format!(r#"{{"{member_name}":{member},"sign":"{sign}"}}"#),
        }
    })
    .await
    .expect("sign answer");
    Response::builder()
        .status(200)
        .header("content-type", "text/html;charset=utf-8")
        .body(Full::new(Bytes::from(answer)).boxed())
        .expect("response")
}
