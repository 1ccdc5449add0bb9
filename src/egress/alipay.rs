//! Alipay OpenAPI egress (`gateway.do`): the backend posts the `biz_content` of one API method to
//! `<route prefix>/<method>`; payguard adds the public parameters (`app_id`, `method`, `format`,
//! `charset`, `sign_type=RSA2`, `timestamp` in Beijing time, `version`, the configured
//! `notify_url`), signs the sorted parameters with the app private key and posts the form to the
//! gateway. The answer's `sign` must verify with the Alipay public key over the exact bytes of its
//! `<method>_response` (or `error_response`) member; then that member is relayed, byte for byte.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use schemars::JsonSchema;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::client::{channel_client, ChannelClient, ChannelRequest, Limits};
use super::{signing_key, CallRecord, EgressError, EgressRequest, QueryAnswer, Relayed};
use crate::channels::alipay::{AlipayChannel, AlipayConfig, AlipaySignType};
use crate::channels::keys::{parse_rsa_public_key, RsaScheme, RsaSigningKey, RsaVerifyingKey};
use crate::clock::Clock;
use crate::issue::ConfigIssue;
use crate::secret::SecretRef;

const DEFAULT_BASE_URL: &str = "https://openapi.alipay.com";
/// The gateway's path under `base_url`, in production and in the sandbox.
const GATEWAY_PATH: &str = "/gateway.do";

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}

/// An Alipay app (`app_id`) in public-key mode: payguard signs with the app private key and
/// verifies answers with the Alipay public key.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlipayMerchantConfig {
    /// The app id of the merchant's Alipay app.
    pub(crate) app_id: String,
    /// The app private key (RSA 2048+, PKCS#8 or PKCS#1 PEM) that signs the calls
    /// (`sign_type=RSA2`); `file:` or `env:` only.
    pub(crate) private_key: SecretRef,
    /// The app's "Alipay public key" (base64 DER SubjectPublicKeyInfo, with or without PEM
    /// armour), which signs Alipay's answers.
    pub(crate) alipay_public_key: SecretRef,
    /// `notify_url` sent with every call: where Alipay sends the notifications of the orders
    /// created (payguard's own Alipay notify route). Unset: none is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) notify_url: Option<String>,
    /// Expected `seller_id` (Alipay merchant PID) of the notifications a notify route with
    /// `merchant:` accepts for this app; unset: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) seller_id: Option<String>,
    /// The gateway's base URL, `https://host[:port]`; calls go to `<base_url>/gateway.do`. The
    /// sandbox is `https://openapi-sandbox.dl.alipaydev.com`.
    #[serde(default = "default_base_url")]
    pub(crate) base_url: String,
    /// PEM CA certificates trusted besides the system roots (a sandbox's or a test's CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) extra_ca: Option<SecretRef>,
    /// Track the orders created through egress and query Alipay for those whose final
    /// notification was not delivered (docs/channels.md, "Lost callbacks").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) order_query: Option<crate::orders::OrderQueryConfig>,
}

impl AlipayMerchantConfig {
    /// Resolves the keys and builds the signer, the answer key and the client.
    pub(crate) fn build(&self) -> Result<AlipayMerchant, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        if self.app_id.trim().is_empty() || !self.app_id.bytes().all(|b| b.is_ascii_digit()) {
            issues.push(ConfigIssue::new("app_id", "must be the app's numeric id"));
        }
        let key = signing_key(&self.private_key)
            .map_err(|e| issues.push(ConfigIssue::new("private_key", e)))
            .ok();
        let alipay_key = match self.alipay_public_key.resolve() {
            Ok(s) => parse_rsa_public_key(s.expose(), RsaScheme::Sha256)
                .map_err(|e| issues.push(ConfigIssue::new("alipay_public_key", e.to_string())))
                .ok(),
            Err(e) => {
                issues.push(ConfigIssue::new("alipay_public_key", e));
                None
            }
        };
        if let Some(url) = &self.notify_url {
            let parsed = url.parse::<http::Uri>().ok();
            let absolute = parsed
                .as_ref()
                .is_some_and(|u| matches!(u.scheme_str(), Some("https" | "http")) && u.authority().is_some());
            if !absolute {
                issues.push(ConfigIssue::new(
                    "notify_url",
                    "must be an absolute http:// or https:// URL",
                ));
            }
        }
        let client = channel_client(&self.base_url, self.extra_ca.as_ref(), &mut issues);
        if let Some(q) = &self.order_query {
            issues.extend(q.validate().into_iter().map(|i| i.under("order_query")));
        }
        // Notifications for this app are signed with the same Alipay public key (RSA2).
        let notify = AlipayConfig {
            app_id: self.app_id.clone(),
            auth_app_id: None,
            seller_id: self.seller_id.clone(),
            sign_type: AlipaySignType::Rsa2,
            alipay_public_key: Some(self.alipay_public_key.clone()),
            alipay_cert: None,
            additional_alipay_certs: Vec::new(),
        }
        .build()
        .map_err(|e| {
            // The same `app_id` and `alipay_public_key` problems are reported above.
            if issues.is_empty() {
                issues.extend(e);
            }
        })
        .ok();
        match (key, alipay_key, client, notify) {
            (Some(key), Some(alipay_key), Some(client), Some(notify)) if issues.is_empty() => Ok(AlipayMerchant {
                notify: Arc::new(notify),
                tracking: self
                    .order_query
                    .clone()
                    .map(|q| Arc::new(crate::orders::Tracking::new("alipay", &self.app_id, q))),
                app_id: self.app_id.clone(),
                notify_url: self.notify_url.clone(),
                key: Arc::new(key),
                alipay_key,
                client,
                extra_ca_pem: self
                    .extra_ca
                    .as_ref()
                    .and_then(|source| source.resolve().ok())
                    .map(|ca| ca.expose().to_vec()),
            }),
            _ => Err(issues),
        }
    }
}

/// A built Alipay app.
pub(crate) struct AlipayMerchant {
    /// The notification verifier of this app.
    notify: Arc<AlipayChannel>,
    /// `order_query`.
    pub(crate) tracking: Option<Arc<crate::orders::Tracking>>,
    app_id: String,
    notify_url: Option<String>,
    key: Arc<RsaSigningKey>,
    alipay_key: RsaVerifyingKey,
    client: ChannelClient,
    /// `extra_ca`, for the bill download host.
    extra_ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for AlipayMerchant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlipayMerchant")
            .field("app_id", &self.app_id)
            .field("notify_url", &self.notify_url)
            .field("alipay_key", &self.alipay_key)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Whether `name` reads like an OpenAPI method (`alipay.trade.precreate`): lower-case words of
/// letters, digits and `_`, joined by dots.
fn is_api_method(name: &str) -> bool {
    name.len() <= 128
        && name.split('.').count() >= 2
        && name.split('.').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// The text Alipay signs: the parameters sorted by name, empty values left out, as `k=v`
/// joined by `&`, values as they are (not URL-encoded).
fn content_to_sign(params: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    for (k, v) in params.iter().filter(|(_, v)| !v.is_empty()) {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// The top-level members of a JSON object, each value as its exact text; `None` when `body` is
/// not one JSON object or repeats a member (two decoders could read different answers).
fn raw_members(body: &str) -> Option<Vec<(String, &RawValue)>> {
    struct Members<'a>(std::marker::PhantomData<&'a ()>);
    impl<'de> Visitor<'de> for Members<'de> {
        type Value = Vec<(String, &'de RawValue)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(String, &'de RawValue)> = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                if out.iter().any(|(seen, _)| *seen == k) {
                    return Err(serde::de::Error::custom("a repeated member"));
                }
                out.push((k, v));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(body);
    let members = de.deserialize_map(Members(std::marker::PhantomData)).ok()?;
    de.end().ok()?;
    Some(members)
}

/// The answer's response member, verified: the exact bytes of `<method>_response` (dots as
/// `_`) or `error_response`, when the answer's `sign` verifies over them with `key`.
fn verified_response<'b>(
    body: &'b [u8],
    api_method: &str,
    key: &RsaVerifyingKey,
) -> Result<std::borrow::Cow<'b, str>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the answer is not UTF-8 text".to_string())?;
    let members = raw_members(text).ok_or("the answer is not one JSON object with distinct members")?;
    let member = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let name = format!("{}_response", api_method.replace('.', "_"));
    let response = member(&name)
        .or_else(|| member("error_response"))
        .ok_or_else(|| format!("the answer has neither `{name}` nor `error_response`"))?;
    let Some(sign) = member("sign") else {
        // Alipay leaves unsigned only what it cannot sign for the app (an unknown app_id); say
        // which error it was, as that is what the operator needs.
        // The answer is unauthenticated: only short code-shaped values reach the detail.
        let code = serde_json::from_str::<serde_json::Value>(response.get())
            .ok()
            .map(|v| {
                let field = |k: &str| {
                    v.get(k)
                        .and_then(|c| c.as_str())
                        .filter(|c| is_error_code(c))
                        .unwrap_or("-")
                        .to_string()
                };
                format!(" (code {}, sub_code {})", field("code"), field("sub_code"))
            })
            .unwrap_or_default();
        return Err(format!("the answer carries no sign{code}"));
    };
    let sign: String = serde_json::from_str(sign.get()).map_err(|_| "`sign` is not a string".to_string())?;
    let signature = BASE64
        .decode(sign.trim())
        .map_err(|_| "`sign` is not base64".to_string())?;
    let signed = response.get();
    if key.verifies(signed.as_bytes(), &signature) {
        return Ok(signed.into());
    }
    // Alipay signs some answers before escaping `/` as `\/` in them; its SDKs verify those with
    // the escape undone. What is relayed is what verified: the text with the escape undone.
    if signed.contains("\\/") {
        let unescaped = signed.replace("\\/", "/");
        if key.verifies(unescaped.as_bytes(), &signature) {
            return Ok(unescaped.into());
        }
    }
    Err("`sign` does not verify with the Alipay public key".into())
}

/// An Alipay error code as it may appear in a problem detail: `40002`,
/// `isv.invalid-app-id`, `ACQ.TRADE_NOT_EXIST`; at most 64 characters.
fn is_error_code(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl AlipayMerchant {
    /// The notification verifier of this app (a notify route with `merchant:`).
    pub(crate) fn notify_channel(&self) -> Arc<dyn crate::channels::Channel> {
        self.notify.clone()
    }

    /// The signed parameters of one call (`sign` included).
    fn signed_params<'a>(
        &'a self,
        api_method: &'a str,
        timestamp: String,
        app_auth_token: Option<String>,
        biz_content: Option<String>,
    ) -> Result<BTreeMap<&'a str, String>, EgressError> {
        let mut params: BTreeMap<&str, String> = BTreeMap::new();
        params.insert("app_id", self.app_id.clone());
        params.insert("method", api_method.to_string());
        params.insert("format", "JSON".into());
        params.insert("charset", "utf-8".into());
        params.insert("sign_type", "RSA2".into());
        params.insert("timestamp", timestamp);
        params.insert("version", "1.0".into());
        if let Some(url) = &self.notify_url {
            params.insert("notify_url", url.clone());
        }
        if let Some(token) = app_auth_token {
            params.insert("app_auth_token", token);
        }
        if let Some(biz) = biz_content {
            params.insert("biz_content", biz);
        }
        let signature = self
            .key
            .sign_sha256(content_to_sign(&params).as_bytes())
            .map_err(EgressError::Signing)?;
        params.insert("sign", BASE64.encode(signature));
        Ok(params)
    }

    /// Signs and sends the call of `channel_path` (`/<method>`), and verifies the answer.
    pub(crate) async fn call(
        &self,
        req: &EgressRequest<'_>,
        channel_path: &str,
        limits: Limits,
        clock: &dyn Clock,
        record: &mut CallRecord,
    ) -> Result<Relayed, EgressError> {
        let api_method = channel_path.trim_start_matches('/');
        if !is_api_method(api_method) {
            return Err(EgressError::BadRequest(format!(
                "`{api_method:.100}` is not an Alipay API method such as alipay.trade.precreate"
            )));
        }
        if req.method != http::Method::POST {
            return Err(EgressError::BadRequest("Alipay API calls are POST".into()));
        }
        let mut app_auth_token = None;
        for (k, v) in form_urlencoded::parse(req.query.unwrap_or("").as_bytes()) {
            if k != "app_auth_token" || app_auth_token.is_some() {
                return Err(EgressError::BadRequest(
                    "the query may carry `app_auth_token` once and nothing else; the call's parameters go into the body (biz_content)"
                        .into(),
                ));
            }
            app_auth_token = Some(v.into_owned());
        }
        let biz_content = if req.body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let text = std::str::from_utf8(&req.body)
                .map_err(|_| EgressError::BadRequest("the body (biz_content) is not UTF-8".into()))?;
            match crate::canonical::json::parse_strict(text.as_bytes()) {
                Ok(Some(serde_json::Value::Object(_))) => Some(text.to_string()),
                Err(e) => return Err(EgressError::BadRequest(e.to_string())),
                _ => {
                    return Err(EgressError::BadRequest(
                        "the body must be the biz_content JSON object".into(),
                    ))
                }
            }
        };
        let (status, response) = self
            .send(api_method, app_auth_token, biz_content.clone(), limits, clock, record)
            .await?;
        if self.tracking.is_some() {
            record.created_order = biz_content
                .as_deref()
                .and_then(|biz| crate::orders::alipay_created(api_method, biz, &response));
        }
        Ok(Relayed {
            status,
            headers: Vec::new(),
            content_type: Some("application/json; charset=utf-8".into()),
            body: response.into_bytes(),
        })
    }

    /// Signs and posts one OpenAPI call; the channel's status and the verified response member.
    async fn send(
        &self,
        api_method: &str,
        app_auth_token: Option<String>,
        biz_content: Option<String>,
        limits: Limits,
        clock: &dyn Clock,
        record: &mut CallRecord,
    ) -> Result<(u16, String), EgressError> {
        let timestamp = crate::channels::beijing_time::beijing_format(clock.now(), "%Y-%m-%d %H:%M:%S");
        let params = self.signed_params(api_method, timestamp, app_auth_token, biz_content)?;
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let request = ChannelRequest {
            method: http::Method::POST,
            path_and_query: GATEWAY_PATH.to_string(),
            headers: vec![
                (
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-www-form-urlencoded;charset=utf-8"),
                ),
                (http::header::ACCEPT, http::HeaderValue::from_static("application/json")),
                (
                    http::header::USER_AGENT,
                    http::HeaderValue::from_static(concat!("payguard/", env!("CARGO_PKG_VERSION"))),
                ),
            ],
            body: form.into_bytes().into(),
        };
        let started = std::time::Instant::now();
        let answer = self.client.send(request, limits).await;
        record.channel_latency = Some(started.elapsed());
        let answer = answer?;
        record.channel_status = Some(answer.status);
        let response =
            verified_response(&answer.body, api_method, &self.alipay_key).map_err(EgressError::Unverified)?;
        Ok((answer.status, response.into_owned()))
    }

    /// `alipay.trade.query` of `out_trade_no`, the answer verified: the trade as an event, or
    /// [`QueryAnswer::NotFound`] while Alipay has no such trade (a QR code not yet scanned).
    pub(crate) async fn query_order(
        &self,
        out_trade_no: &str,
        limits: Limits,
        clock: &dyn Clock,
        record: &mut CallRecord,
    ) -> Result<QueryAnswer, String> {
        let biz = serde_json::json!({ "out_trade_no": out_trade_no }).to_string();
        let (_, response) = self
            .send(QUERY_METHOD, None, Some(biz), limits, clock, record)
            .await
            .map_err(|e| e.to_string())?;
        let member = match crate::canonical::json::parse_strict(response.as_bytes()) {
            Ok(Some(serde_json::Value::Object(member))) => member,
            Ok(_) => return Err("the query answer is not a JSON object".into()),
            Err(e) => return Err(format!("the query answer: {e}")),
        };
        let field = |k: &str| member.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
        match (field("code"), field("sub_code")) {
            ("10000", _) => {
                let event = self.notify.event_from_query(&member).map_err(|e| e.to_string())?;
                if event.out_trade_no != out_trade_no {
                    return Err("the query answer names another order".into());
                }
                Ok(QueryAnswer::Event(Box::new(event)))
            }
            ("40004", "ACQ.TRADE_NOT_EXIST") => Ok(QueryAnswer::NotFound),
            (code, sub_code) => Err(format!(
                "Alipay answered code {} sub_code {}",
                if is_error_code(code) { code } else { "-" },
                if is_error_code(sub_code) { sub_code } else { "-" }
            )),
        }
    }
}

impl AlipayMerchant {
    /// The trade bill of `date`: `alipay.data.dataservice.bill.downloadurl.query` (`bill_type`
    /// `trade`, the answer verified), then the zip from its `bill_download_url`, always fetched
    /// over HTTPS and only from an Alipay host (`alipay.com` or below) or the account's own
    /// `base_url` host. The zip is not signed: TLS to Alipay authenticates it.
    pub(crate) async fn trade_bill(&self, date: &str, limits: Limits, clock: &dyn Clock) -> Result<Vec<u8>, String> {
        let biz = serde_json::json!({ "bill_type": "trade", "bill_date": date }).to_string();
        let (_, response) = self
            .send(BILL_METHOD, None, Some(biz), limits, clock, &mut CallRecord::default())
            .await
            .map_err(|e| e.to_string())?;
        let member = match crate::canonical::json::parse_strict(response.as_bytes()) {
            Ok(Some(serde_json::Value::Object(member))) => member,
            Ok(_) => return Err("the bill answer is not a JSON object".into()),
            Err(e) => return Err(format!("the bill answer: {e}")),
        };
        let field = |k: &str| member.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
        match (field("code"), field("sub_code")) {
            ("10000", _) => {}
            ("40004", "isp.bill_not_exist") => {
                return Err(format!(
                    "Alipay has no trade bill for {date} yet (isp.bill_not_exist); a day's bill is ready from 09:00 the next day"
                ))
            }
            (code, sub_code) => {
                return Err(format!(
                    "Alipay answered code {} sub_code {}",
                    if is_error_code(code) { code } else { "-" },
                    if is_error_code(sub_code) { sub_code } else { "-" }
                ))
            }
        }
        let text = field("bill_download_url");
        let url: http::Uri = text
            .parse()
            .map_err(|_| "the bill answer has no bill_download_url".to_string())?;
        let host = url.host().unwrap_or("").to_ascii_lowercase();
        let not_alipay =
            || "the bill_download_url is not an Alipay URL; payguard downloads bills only from Alipay".to_string();
        // Alipay's own download host is named with `http://`; payguard fetches it over https
        // all the same. Any other host must be exactly the configured base URL's origin.
        let (client, target) = if host == "alipay.com" || host.ends_with(".alipay.com") {
            let userinfo = url.authority().is_some_and(|a| a.as_str().contains('@'));
            if !matches!(url.scheme_str(), Some("https" | "http")) || url.port().is_some() || userinfo {
                return Err(not_alipay());
            }
            let target = url
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            (self.client.for_host(&host, self.extra_ca_pem.as_deref())?, target)
        } else {
            let target = self.client.same_origin_target(text).ok_or_else(not_alipay)?;
            (self.client.clone(), target)
        };
        let request = ChannelRequest {
            method: http::Method::GET,
            path_and_query: target,
            headers: vec![(
                http::header::USER_AGENT,
                http::HeaderValue::from_static(concat!("payguard/", env!("CARGO_PKG_VERSION"))),
            )],
            body: Default::default(),
        };
        let file_limits = Limits {
            max_answer_bytes: crate::reconcile::bill::MAX_BILL_BYTES,
            ..limits
        };
        let file = client.send(request, file_limits).await.map_err(|e| e.to_string())?;
        if file.status != 200 {
            return Err(format!("the bill download answered {}", file.status));
        }
        Ok(file.body.to_vec())
    }
}

impl AlipayMerchant {
    /// The event of notification-style fields built from verified data (a bill's refund row).
    pub(crate) fn event_from_fields(
        &self,
        fields: BTreeMap<String, String>,
    ) -> Result<crate::channels::VerifiedEvent, String> {
        self.notify.event_from_fields(fields).map_err(|e| e.to_string())
    }
}

/// The bill download method.
const BILL_METHOD: &str = "alipay.data.dataservice.bill.downloadurl.query";

/// The order query method.
const QUERY_METHOD: &str = "alipay.trade.query";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/alipay");

    fn config(base_url: &str) -> AlipayMerchantConfig {
        AlipayMerchantConfig {
            app_id: "2021000000000001".into(),
            private_key: SecretRef::new(format!("file:{FIXTURES}/egress_app_private_key.pem")),
            alipay_public_key: SecretRef::new(format!("file:{FIXTURES}/app_public_key.pem")),
            notify_url: Some("https://shop.example/notify/alipay".into()),
            seller_id: None,
            base_url: base_url.into(),
            extra_ca: None,
            order_query: None,
        }
    }

    /// `egress_vectors.json`, made by `generate_egress.py` with Python's `cryptography`.
    #[derive(Deserialize)]
    struct Vectors {
        requests: Vec<RequestVector>,
        answers: Vec<AnswerVector>,
    }

    #[derive(Deserialize)]
    struct RequestVector {
        method: String,
        timestamp: String,
        app_auth_token: Option<String>,
        biz_content: Option<String>,
        content: String,
        sign: String,
    }

    #[derive(Deserialize)]
    struct AnswerVector {
        method: String,
        body: String,
        /// The relayed member, or `None` when the answer must be refused.
        response: Option<String>,
    }

    fn vectors() -> Vectors {
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/egress_vectors.json")).unwrap()).unwrap()
    }

    #[test]
    fn request_signatures_match_the_independent_python_signer() {
        let m = config(DEFAULT_BASE_URL).build().unwrap();
        let v = vectors();
        assert!(v.requests.len() >= 2);
        for r in v.requests {
            let params = m
                .signed_params(
                    &r.method,
                    r.timestamp.clone(),
                    r.app_auth_token.clone(),
                    r.biz_content.clone(),
                )
                .unwrap();
            let mut unsigned = params.clone();
            unsigned.remove("sign");
            assert_eq!(content_to_sign(&unsigned), r.content, "{}", r.method);
            assert_eq!(params["sign"], r.sign, "{}", r.method);
        }
    }

    #[test]
    fn answers_verify_on_their_exact_bytes_only() {
        let m = config(DEFAULT_BASE_URL).build().unwrap();
        let v = vectors();
        assert!(v.answers.iter().any(|a| a.response.is_none()));
        for a in v.answers {
            let got = verified_response(a.body.as_bytes(), &a.method, &m.alipay_key);
            assert_eq!(got.ok().as_deref(), a.response.as_deref(), "{}", a.body);
        }
    }

    #[test]
    fn an_unsigned_error_answer_names_its_code() {
        let m = config(DEFAULT_BASE_URL).build().unwrap();
        let body = br#"{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id","sub_msg":"invalid app id"}}"#;
        let e = verified_response(body, "alipay.trade.precreate", &m.alipay_key).unwrap_err();
        assert_eq!(
            e,
            "the answer carries no sign (code 40002, sub_code isv.invalid-app-id)"
        );
        // Anything else an unsigned answer says stays out of the detail.
        let long = "9".repeat(65);
        let body = format!(r#"{{"error_response":{{"code":"<script>","sub_code":"{long}"}}}}"#);
        let e = verified_response(body.as_bytes(), "alipay.trade.precreate", &m.alipay_key).unwrap_err();
        assert_eq!(e, "the answer carries no sign (code -, sub_code -)");
    }

    #[test]
    fn repeated_members_and_non_objects_are_refused() {
        let m = config(DEFAULT_BASE_URL).build().unwrap();
        for body in [
            &br#"{"alipay_trade_query_response":{"code":"10000"},"alipay_trade_query_response":{"code":"10000"},"sign":"AA=="}"#[..],
            b"[1,2]",
            b"{\"sign\":\"AA==\"} trailing",
            b"",
        ] {
            assert!(verified_response(body, "alipay.trade.query", &m.alipay_key).is_err());
        }
    }

    #[test]
    fn api_method_names_are_checked() {
        for ok in [
            "alipay.trade.precreate",
            "alipay.fund.trans.uni.transfer",
            "zhima.credit.score_get",
        ] {
            assert!(is_api_method(ok), "{ok}");
        }
        for bad in [
            "",
            "alipay",
            "Alipay.trade.query",
            "alipay..query",
            "alipay.trade/query",
            "alipay.trade.query ",
        ] {
            assert!(!is_api_method(bad), "{bad}");
        }
    }

    #[test]
    fn config_problems_are_reported_with_their_keys_and_no_key_material() {
        let pem = std::fs::read_to_string(format!("{FIXTURES}/egress_app_private_key.pem")).unwrap();
        let mut c = config("http://openapi.alipay.com");
        c.app_id = "my-app".into();
        c.private_key = SecretRef::new(pem);
        c.alipay_public_key = SecretRef::new("not a key");
        c.notify_url = Some("/notify/alipay".into());
        let issues = c.build().unwrap_err();
        let mut paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            ["alipay_public_key", "app_id", "base_url", "notify_url", "private_key"]
        );
        assert!(issues.iter().all(|i| !i.message.contains("MII")), "{issues:?}");
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let text = format!("{:?}", config(DEFAULT_BASE_URL).build().unwrap());
        assert!(text.contains("2021000000000001"), "{text}");
        assert!(!text.contains("MII"), "{text}");
    }
}
