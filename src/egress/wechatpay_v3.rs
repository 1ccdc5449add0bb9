//! WeChat Pay API v3 egress: the merchant's `Authorization` header
//! (`WECHATPAY2-SHA256-RSA2048`, SHA256withRSA over `METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n`,
//! URL = path and query as sent) and the answer's `Wechatpay-Signature`, checked by the same
//! code as notifications ([`WechatpayV3::verify_signature`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rand::distr::{Alphanumeric, SampleString};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::client::{channel_client, ChannelClient, ChannelRequest, Limits};
use super::{signing_key, CallRecord, EgressError, EgressRequest, QueryAnswer, Relayed};
use crate::channels::keys::RsaSigningKey;
use crate::channels::wechatpay_v3::{Keyring, PlatformCertificate, PlatformKey, WechatpayV3, WechatpayV3Config};
use crate::channels::ChannelError;
use crate::clock::Clock;
use crate::issue::ConfigIssue;
use crate::secret::SecretRef;

/// The production API host.
const DEFAULT_BASE_URL: &str = "https://api.mch.weixin.qq.com";
/// The `Authorization` scheme.
const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

/// `merchants.<name>` with `channel: wechatpay_v3`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WechatpayV3MerchantConfig {
    /// Merchant id (`mchid`).
    pub(crate) mchid: String,
    /// App id the merchant's answers are checked against where they carry one; optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) appid: Option<String>,
    /// Serial number of the merchant API certificate (`serial_no` in `Authorization`).
    pub(crate) certificate_serial: String,
    /// The merchant API private key (`apiclient_key.pem`, PKCS#8 or PKCS#1 PEM, RSA 2048+);
    /// `file:` or `env:` only.
    pub(crate) private_key: SecretRef,
    /// APIv3 key: 32 ASCII characters.
    pub(crate) api_v3_key: SecretRef,
    /// Platform certificates whose keys sign the answers (as on a `wechatpay_v3` notify route).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) platform_certificates: Vec<PlatformCertificate>,
    /// WeChat Pay public-key id (`PUB_KEY_ID_…`) for public-key mode; needs `public_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) public_key_id: Option<String>,
    /// WeChat Pay public key (PEM) for public-key mode; needs `public_key_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) public_key: Option<SecretRef>,
    /// Largest accepted distance between an answer's `Wechatpay-Timestamp` and now.
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) tolerance: Duration,
    /// The API's base URL, `https://host[:port]`.
    #[serde(default = "default_base_url")]
    pub(crate) base_url: String,
    /// PEM CA certificates trusted besides the system roots (a sandbox's or a test's CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) extra_ca: Option<SecretRef>,
    /// Keep the platform certificates current: download `GET /v3/certificates` at start, every
    /// 12 hours, and when a notification or an answer names an unknown serial (at most once a
    /// minute); new serials are added to every verifier of this `mchid` without a reload and
    /// shared with other replicas through the store. `platform_certificates` may then be empty.
    #[serde(default)]
    pub(crate) download_platform_certificates: bool,
    /// Track the orders created through egress and query WeChat Pay for those whose final
    /// notification was not delivered (docs/channels.md, "Lost callbacks").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) order_query: Option<crate::orders::OrderQueryConfig>,
}

impl WechatpayV3MerchantConfig {
    /// Resolves the keys and builds the signer, the answer verifier and the client.
    pub(crate) fn build(&self) -> Result<WechatpayV3Merchant, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        // The answer verifier is the notification channel's, built from the same keys.
        let verifier = WechatpayV3Config {
            mchid: self.mchid.clone(),
            appid: self.appid.clone(),
            api_v3_key: self.api_v3_key.clone(),
            platform_certificates: self.platform_certificates.clone(),
            public_key_id: self.public_key_id.clone(),
            public_key: self.public_key.clone(),
            tolerance: self.tolerance,
            keys_downloaded: self.download_platform_certificates,
        }
        .build()
        .map_err(|e| issues.extend(e))
        .ok();
        let serial = self.certificate_serial.trim();
        if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
            issues.push(ConfigIssue::new(
                "certificate_serial",
                "must be the certificate's hex serial",
            ));
        }
        let key = signing_key(&self.private_key)
            .map_err(|e| issues.push(ConfigIssue::new("private_key", e)))
            .ok();
        let client = channel_client(&self.base_url, self.extra_ca.as_ref(), &mut issues);
        if let Some(q) = &self.order_query {
            issues.extend(q.validate().into_iter().map(|i| i.under("order_query")));
        }
        match (verifier, key, client) {
            (Some(verifier), Some(key), Some(client)) if issues.is_empty() => Ok(WechatpayV3Merchant {
                signer: Signer {
                    mchid: self.mchid.clone(),
                    serial: serial.to_ascii_uppercase(),
                    key: Arc::new(key),
                },
                verifier,
                client,
                downloads_certificates: self.download_platform_certificates,
                tracking: self
                    .order_query
                    .clone()
                    .map(|q| Arc::new(crate::orders::Tracking::new("wechatpay_v3", &self.mchid, q))),
            }),
            _ => Err(issues),
        }
    }
}

/// The merchant's request signer.
#[derive(Clone)]
pub(crate) struct Signer {
    mchid: String,
    serial: String,
    key: Arc<RsaSigningKey>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("mchid", &self.mchid)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// The `Authorization` value for one request: `url` is the path and query exactly as sent,
    /// `body` the exact bytes sent (empty for GET).
    pub(crate) fn authorization(
        &self,
        method: &str,
        url: &str,
        timestamp: i64,
        nonce: &str,
        body: &[u8],
    ) -> Result<String, String> {
        let mut message = format!("{method}\n{url}\n{timestamp}\n{nonce}\n").into_bytes();
        message.extend_from_slice(body);
        message.push(b'\n');
        let signature = BASE64.encode(self.key.sign_sha256(&message)?);
        Ok(format!(
            "{SCHEME} mchid=\"{}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",serial_no=\"{}\",signature=\"{signature}\"",
            self.mchid, self.serial
        ))
    }
}

/// A built WeChat Pay v3 merchant account.
pub(crate) struct WechatpayV3Merchant {
    signer: Signer,
    verifier: WechatpayV3,
    client: ChannelClient,
    /// `download_platform_certificates`.
    downloads_certificates: bool,
    /// `order_query`.
    pub(crate) tracking: Option<Arc<crate::orders::Tracking>>,
}

impl fmt::Debug for WechatpayV3Merchant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatpayV3Merchant")
            .field("signer", &self.signer)
            .field("verifier", &self.verifier)
            .field("client", &self.client)
            .finish()
    }
}

/// What is wrong with an answer, without the notification wording of [`ChannelError`]'s
/// display.
fn answer_problem(e: ChannelError) -> String {
    match e {
        ChannelError::Malformed(m)
        | ChannelError::Signature(m)
        | ChannelError::Stale(m)
        | ChannelError::UnknownKey(m)
        | ChannelError::Decrypt(m)
        | ChannelError::Business(m)
        | ChannelError::Unsupported(m)
        | ChannelError::Amount(m) => m,
    }
}

/// The `code` of a WeChat Pay error answer, when it is code-shaped.
fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("code")?
        .as_str()
        .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .map(str::to_owned)
}

/// A request nonce: 32 alphanumeric characters, as the official SDKs make them.
fn new_nonce() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

impl WechatpayV3Merchant {
    /// The notification verifier of this account (a notify route with `merchant:`): the same
    /// keys, and the same downloaded platform certificates, that verify its API answers.
    pub(crate) fn notify_channel(&self) -> Arc<dyn crate::channels::Channel> {
        Arc::new(self.verifier.clone())
    }

    /// One call to `target` (path and query) with its `Authorization`; a body goes with
    /// `content_type` (default `application/json`).
    fn signed_request(
        &self,
        method: http::Method,
        target: String,
        body: bytes::Bytes,
        content_type: Option<&http::HeaderValue>,
        clock: &dyn Clock,
    ) -> Result<ChannelRequest, String> {
        let nonce = new_nonce();
        let authorization = self
            .signer
            .authorization(method.as_str(), &target, clock.unix_seconds(), &nonce, &body)?;
        let mut headers = vec![
            (
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(&authorization)
                    .map_err(|_| "the Authorization value is not header text".to_string())?,
            ),
            (http::header::ACCEPT, http::HeaderValue::from_static("application/json")),
            (
                http::header::USER_AGENT,
                http::HeaderValue::from_static(concat!("payguard/", env!("CARGO_PKG_VERSION"))),
            ),
        ];
        if !body.is_empty() {
            let content_type = content_type
                .cloned()
                .unwrap_or_else(|| http::HeaderValue::from_static("application/json"));
            headers.push((http::header::CONTENT_TYPE, content_type));
        }
        Ok(ChannelRequest {
            method,
            path_and_query: target,
            headers,
            body,
        })
    }

    /// Signs and sends one call to `target` (path and query), and verifies the answer.
    pub(crate) async fn call(
        &self,
        req: &EgressRequest<'_>,
        target: String,
        limits: Limits,
        clock: &dyn Clock,
        record: &mut CallRecord,
    ) -> Result<Relayed, EgressError> {
        let request = self
            .signed_request(req.method.clone(), target, req.body.clone(), req.content_type, clock)
            .map_err(EgressError::Signing)?;
        let started = std::time::Instant::now();
        let answer = self.client.send(request, limits).await;
        record.channel_latency = Some(started.elapsed());
        let answer = answer?;
        record.channel_status = Some(answer.status);
        self.verifier
            .verify_signature(&answer.headers, &answer.body, clock.now())
            .map_err(|e| EgressError::Unverified(answer_problem(e)))?;
        if self.tracking.is_some() && answer.status == 200 && req.method == http::Method::POST {
            record.created_order = record
                .channel_path
                .as_deref()
                .and_then(|path| crate::orders::wechatpay_created(path, &req.body));
        }
        Ok(Relayed {
            status: answer.status,
            headers: Vec::new(),
            content_type: answer
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: answer.body.to_vec(),
        })
    }
}

/// The platform certificate list.
pub(crate) const CERTIFICATES_PATH: &str = "/v3/certificates";

impl WechatpayV3Merchant {
    /// Whether this account keeps its platform certificates current.
    pub(crate) fn downloads_certificates(&self) -> bool {
        self.downloads_certificates
    }

    /// `GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=…`, the answer verified:
    /// the transaction as an event, or [`QueryAnswer::NotFound`] (`ORDER_NOT_EXIST`).
    pub(crate) async fn query_order(
        &self,
        out_trade_no: &str,
        limits: Limits,
        clock: &dyn Clock,
    ) -> Result<QueryAnswer, String> {
        if !crate::orders::trackable_order_number(out_trade_no) {
            return Err("the order number cannot be queried".into());
        }
        let target = format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={}",
            out_trade_no.replace('|', "%7C").replace('*', "%2A"),
            self.signer.mchid
        );
        let request = self.signed_request(http::Method::GET, target, Default::default(), None, clock)?;
        let answer = self.client.send(request, limits).await.map_err(|e| e.to_string())?;
        self.verifier
            .verify_signature(&answer.headers, &answer.body, clock.now())
            .map_err(|e| format!("the query answer does not verify: {}", answer_problem(e)))?;
        match answer.status {
            200 => {
                let event = self.verifier.event_from_query(&answer.body).map_err(answer_problem)?;
                if event.out_trade_no != out_trade_no {
                    return Err("the query answer names another order".into());
                }
                Ok(QueryAnswer::Event(Box::new(event)))
            }
            404 if error_code(&answer.body).as_deref() == Some("ORDER_NOT_EXIST") => Ok(QueryAnswer::NotFound),
            status => Err(format!(
                "WeChat Pay answered {status} (code {})",
                error_code(&answer.body).unwrap_or_else(|| "-".into())
            )),
        }
    }

    /// The trade bill of `date` (`GET /v3/bill/tradebill?bill_date=…&bill_type=ALL`, the
    /// answer verified), then the file from its `download_url` — which must be on this
    /// account's `base_url`, as it is signed too — checked against the answer's SHA1 hash.
    pub(crate) async fn trade_bill(&self, date: &str, limits: Limits, clock: &dyn Clock) -> Result<Vec<u8>, String> {
        let target = format!("/v3/bill/tradebill?bill_date={date}&bill_type=ALL");
        let request = self.signed_request(http::Method::GET, target, Default::default(), None, clock)?;
        let answer = self.client.send(request, limits).await.map_err(|e| e.to_string())?;
        self.verifier
            .verify_signature(&answer.headers, &answer.body, clock.now())
            .map_err(|e| format!("the bill answer does not verify: {}", answer_problem(e)))?;
        if answer.status != 200 {
            let code = error_code(&answer.body).unwrap_or_else(|| "-".into());
            return Err(if code == "NO_STATEMENT_EXIST" {
                format!("WeChat Pay has no trade bill for {date} yet (NO_STATEMENT_EXIST); a day's bill is ready from 10:00 the next day")
            } else {
                format!("WeChat Pay answered {} (code {code})", answer.status)
            });
        }
        #[derive(serde::Deserialize)]
        struct BillAnswer {
            hash_type: String,
            hash_value: String,
            download_url: String,
        }
        let bill: BillAnswer = serde_json::from_slice(&answer.body).map_err(|e| format!("the bill answer: {e}"))?;
        if !bill.hash_type.eq_ignore_ascii_case("SHA1") {
            return Err(format!("the bill's hash type {:.10} is not SHA1", bill.hash_type));
        }
        let target = self.client.same_origin_target(&bill.download_url).ok_or(
            "the bill's download_url is not on the account's base_url; payguard signs no request to another host",
        )?;
        let request = self.signed_request(http::Method::GET, target, Default::default(), None, clock)?;
        let file_limits = Limits {
            max_answer_bytes: crate::reconcile::bill::MAX_BILL_BYTES,
            ..limits
        };
        let file = self
            .client
            .send(request, file_limits)
            .await
            .map_err(|e| e.to_string())?;
        if file.status != 200 {
            return Err(format!("the bill download answered {}", file.status));
        }
        // The file itself is not signed: its hash is, in the verified answer.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &file.body);
        if !hex::encode(digest.as_ref()).eq_ignore_ascii_case(bill.hash_value.trim()) {
            return Err("the downloaded bill does not match the hash of the verified answer".into());
        }
        Ok(file.body.to_vec())
    }

    /// The refund event a verified bill's refund row describes (see
    /// [`WechatpayV3::event_from_refund_object`]).
    pub(crate) fn event_from_refund_object(
        &self,
        object: serde_json::Value,
    ) -> Result<crate::channels::VerifiedEvent, String> {
        self.verifier.event_from_refund_object(object).map_err(answer_problem)
    }

    /// The merchant id.
    pub(crate) fn mchid(&self) -> &str {
        &self.signer.mchid
    }

    /// The downloaded keys of this `mchid`, shared with its notify routes.
    pub(crate) fn keyring(&self) -> &Arc<Keyring> {
        self.verifier.keyring()
    }

    /// Certificates kept in the store (one-entry lists as [`Self::download_certificates`] returns
    /// them), decrypted and checked again with this account's APIv3 key.
    pub(crate) fn sealed_certificates(&self, sealed: &[u8]) -> Result<Vec<(String, PlatformKey)>, String> {
        self.verifier.decrypt_certificate_list(sealed)
    }

    /// `GET /v3/certificates`, signed like every call; the answer verified with a key already
    /// known or, on first download or after a rotation, with one of the certificates it carries
    /// (authenticated by the APIv3 key's AEAD). Returns every certificate of the list with its
    /// entry still encrypted (what the store keeps); the caller adds them to the keyring.
    pub(crate) async fn download_certificates(
        &self,
        limits: Limits,
        clock: &dyn Clock,
    ) -> Result<Vec<(String, PlatformKey)>, String> {
        let request = self.signed_request(
            http::Method::GET,
            CERTIFICATES_PATH.into(),
            Default::default(),
            None,
            clock,
        )?;
        let answer = self.client.send(request, limits).await.map_err(|e| e.to_string())?;
        if answer.status != 200 {
            return Err(format!("the channel answered {}", answer.status));
        }
        let certificates = self.verifier.decrypt_certificate_list(&answer.body)?;
        let keys: Vec<PlatformKey> = certificates.iter().map(|(_, k)| k.clone()).collect();
        self.verifier
            .verify_signature_with(&answer.headers, &answer.body, clock.now(), &keys)
            .map_err(|e| format!("the certificate list's signature: {}", answer_problem(e)))?;
        Ok(certificates)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wechatpay_v3");

    /// A merchant with the test keys, reaching `base_url`.
    pub(crate) fn merchant(base_url: &str) -> WechatpayV3Merchant {
        config(base_url).build().expect("test merchant builds")
    }

    fn config(base_url: &str) -> WechatpayV3MerchantConfig {
        WechatpayV3MerchantConfig {
            mchid: "1900000001".into(),
            appid: None,
            certificate_serial: "3775B6A45ACD588826D15E583A95F5DD2C2F4C1B".into(),
            private_key: SecretRef::new(format!("file:{FIXTURES}/egress_merchant_private_key.pem")),
            api_v3_key: SecretRef::new("0123456789abcdef0123456789ABCDEF"),
            platform_certificates: vec![PlatformCertificate::Pem(SecretRef::new(format!(
                "file:{FIXTURES}/simulate_platform_certificate.pem"
            )))],
            public_key_id: None,
            public_key: None,
            tolerance: default_tolerance(),
            base_url: base_url.into(),
            extra_ca: None,
            download_platform_certificates: false,
            order_query: None,
        }
    }

    /// `egress_authorization.json`, made by `generate_egress.py` with Python's `cryptography`.
    #[derive(Deserialize)]
    struct Vector {
        mchid: String,
        serial_no: String,
        method: String,
        url: String,
        timestamp: i64,
        nonce: String,
        body: String,
        authorization: String,
    }

    #[test]
    fn authorization_matches_the_independent_python_signer() {
        let text = std::fs::read_to_string(format!("{FIXTURES}/egress_authorization.json")).unwrap();
        let vectors: Vec<Vector> = serde_json::from_str(&text).unwrap();
        assert!(vectors.len() >= 2);
        let m = merchant(DEFAULT_BASE_URL);
        for v in vectors {
            assert_eq!(
                (v.mchid.as_str(), v.serial_no.as_str()),
                ("1900000001", m.signer.serial.as_str())
            );
            let header = m
                .signer
                .authorization(&v.method, &v.url, v.timestamp, &v.nonce, v.body.as_bytes())
                .unwrap();
            assert_eq!(header, v.authorization, "{} {}", v.method, v.url);
        }
    }

    #[test]
    fn an_inline_private_key_is_refused_without_echoing_it() {
        let pem = std::fs::read_to_string(format!("{FIXTURES}/egress_merchant_private_key.pem")).unwrap();
        let mut c = config(DEFAULT_BASE_URL);
        c.private_key = SecretRef::new(pem);
        let issues = c.build().unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "private_key");
        assert!(issues[0].message.contains("`file:` or `env:`"), "{}", issues[0].message);
        assert!(!issues[0].message.contains("MII"), "{}", issues[0].message);
    }

    #[test]
    fn bad_serial_base_url_and_missing_platform_keys_are_reported_with_their_keys() {
        let mut c = config("http://api.mch.weixin.qq.com");
        c.certificate_serial = "not-hex".into();
        c.platform_certificates.clear();
        let issues = c.build().unwrap_err();
        let mut paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["base_url", "certificate_serial", "platform_certificates"]);
        // An account that downloads its platform certificates may start with none.
        let mut c = config(DEFAULT_BASE_URL);
        c.platform_certificates.clear();
        c.download_platform_certificates = true;
        assert!(c.build().unwrap().downloads_certificates());
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let text = format!("{:?}", merchant(DEFAULT_BASE_URL));
        assert!(text.contains("1900000001"), "{text}");
        assert!(!text.contains("MII") && !text.contains("0123456789abcdef"), "{text}");
    }
}
