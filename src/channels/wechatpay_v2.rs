//! WeChat Pay v2 (legacy XML) notifications.
//!
//! Payment result notifies are signed with MD5 or HMAC-SHA256 over the sorted fields plus the
//! API key. Refund result notifies carry no signature; their `req_info` is AES-256-ECB
//! encrypted with `lower_hex(MD5(API key))`. The XML parser refuses DTDs and any entity
//! other than the five predefined ones: these endpoints were the target of WeChat's XXE advisory.

use std::path::Path;
use std::collections::BTreeMap;

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes256;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use quick_xml::events::Event;
use quick_xml::Reader;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::amount::parse_decimal_minor;
use super::beijing_time::{beijing_format, beijing_rfc3339};
use super::{
    ChannelSetup, SimulateInput, TestSetup,     printable, Ack, Channel, ChannelError, ChannelKind, EventKind, MerchantRef, NotifyRequest, RefundInfo,
    SimulateKeys, SimulateSpec, SimulatedNotification, VerifiedEvent,
};
use crate::secret::{Secret, SecretRef};
use crate::issue::ConfigIssue;

/// The signature type the merchant's unified-order requests use (`sign_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WechatV2SignType {
    /// `MD5` (the default when the field is absent).
    #[default]
    #[serde(alias = "MD5")]
    Md5,
    /// `HMAC-SHA256`.
    #[serde(alias = "HMAC-SHA256")]
    HmacSha256,
}

impl WechatV2SignType {
    /// The value of the `sign_type` XML field.
    pub(crate) fn wire_name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::HmacSha256 => "HMAC-SHA256",
        }
    }
}

/// WeChat Pay v2 notification channel configuration (one merchant, one app).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WechatpayV2Config {
    /// Expected `appid`.
    pub(crate) app_id: String,
    /// Expected `mch_id`.
    pub(crate) mch_id: String,
    /// The API v2 key (32 characters, set in the merchant platform): signs payment notifies and
    /// derives the refund `req_info` key.
    pub(crate) api_key: SecretRef,
    /// Signature type used by this merchant: `md5` (default) or `hmac_sha256`. A notification
    /// naming another `sign_type` is refused.
    #[serde(default)]
    pub(crate) sign_type: WechatV2SignType,
}

/// A configured WeChat Pay v2 notification verifier.
#[derive(Debug, Clone)]
pub struct WechatpayV2Channel {
    app_id: String,
    mch_id: String,
    api_key: Secret,
    sign_type: WechatV2SignType,
}

impl WechatpayV2Config {
    /// Resolves the API key. Issues name the config key, never a value.
    pub fn build(&self) -> Result<WechatpayV2Channel, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        if self.app_id.trim().is_empty() {
            issues.push(ConfigIssue::new("app_id", "must not be empty"));
        }
        if self.mch_id.trim().is_empty() {
            issues.push(ConfigIssue::new("mch_id", "must not be empty"));
        }
        let api_key = match self.api_key.resolve() {
            Ok(k) if k.expose().is_empty() => {
                issues.push(ConfigIssue::new("api_key", "must not be empty"));
                None
            }
            Ok(k) => Some(k),
            Err(e) => {
                issues.push(ConfigIssue::new("api_key", e));
                None
            }
        };
        match api_key {
            Some(api_key) if issues.is_empty() => Ok(WechatpayV2Channel {
                app_id: self.app_id.clone(),
                mch_id: self.mch_id.clone(),
                api_key,
                sign_type: self.sign_type,
            }),
            _ => Err(issues),
        }
    }
}

/// Parses a flat WeChat XML document `<root_name><k>v</k>...</root_name>` into its fields.
///
/// Refused as malformed: a DOCTYPE (and so any DTD or entity declaration), entity references
/// other than the five predefined ones, processing instructions, nested elements, duplicate
/// tags, another root name, text outside the fields, and anything after the root.
/// CDATA and escaped text are both accepted; values are not trimmed.
pub(crate) fn parse_flat_xml(body: &[u8], root_name: &str) -> Result<BTreeMap<String, String>, ChannelError> {
    let malformed = |m: &str| ChannelError::Malformed(m.to_string());
    let text = std::str::from_utf8(body).map_err(|_| malformed("XML is not UTF-8"))?;
    let mut reader = Reader::from_str(text);
    let mut fields = BTreeMap::new();
    let mut root_seen = false;
    let mut root_closed = false;
    let mut current: Option<(String, String)> = None;
    loop {
        let event = reader.read_event().map_err(|_| malformed("XML does not parse"))?;
        match event {
            Event::DocType(_) => return Err(malformed("XML DOCTYPE/DTD is refused")),
            Event::PI(_) => return Err(malformed("XML processing instruction is refused")),
            Event::Decl(_) if !root_seen => {}
            Event::Decl(_) => return Err(malformed("misplaced XML declaration")),
            Event::Comment(_) => {}
            Event::Start(e) if !root_seen => {
                if e.name().as_ref() != root_name.as_bytes() {
                    return Err(malformed("unexpected XML root element"));
                }
                root_seen = true;
            }
            Event::Start(e) if !root_closed && current.is_none() => {
                current = Some((field_name(e.name().as_ref())?, String::new()));
            }
            Event::Empty(e) if root_seen && !root_closed && current.is_none() => {
                insert_field(&mut fields, field_name(e.name().as_ref())?, String::new())?;
            }
            Event::Start(_) | Event::Empty(_) => return Err(malformed("nested or trailing XML element")),
            Event::Text(t) => {
                let value = t.unescape().map_err(|_| malformed("XML entity reference is refused"))?;
                match current.as_mut() {
                    Some((_, v)) => v.push_str(&value),
                    None if value.trim().is_empty() => {}
                    None => return Err(malformed("text outside XML fields")),
                }
            }
            Event::CData(c) => match current.as_mut() {
                Some((_, v)) => {
                    v.push_str(std::str::from_utf8(&c.into_inner()).map_err(|_| malformed("CDATA is not UTF-8"))?)
                }
                None => return Err(malformed("CDATA outside XML fields")),
            },
            Event::End(e) => match current.take() {
                Some((name, value)) if e.name().as_ref() == name.as_bytes() => {
                    insert_field(&mut fields, name, value)?;
                }
                Some(_) => return Err(malformed("mismatched XML end tag")),
                None if root_seen && !root_closed => root_closed = true,
                None => return Err(malformed("unexpected XML end tag")),
            },
            Event::Eof => break,
        }
    }
    if !root_closed {
        return Err(malformed("XML root is not closed"));
    }
    Ok(fields)
}

/// A field's tag name: an XML name of ASCII letters, digits, `_`, `-`, `.` and `:` that does not
/// start with a digit, `-` or `.` (every WeChat Pay field name is one). quick-xml hands over
/// whatever stands between `<` and the first space or `>`, so `<=//>` would otherwise be a field
/// named `=/`, a document no XML parser reads the same way.
fn field_name(raw: &[u8]) -> Result<String, ChannelError> {
    let name_char = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':');
    match raw.first() {
        Some(first) if (first.is_ascii_alphabetic() || matches!(first, b'_' | b':')) && raw.iter().all(name_char) => {
            Ok(String::from_utf8_lossy(raw).into_owned())
        }
        _ => Err(ChannelError::Malformed(format!(
            "XML tag {} is not a plain name",
            printable(&String::from_utf8_lossy(raw))
        ))),
    }
}

fn insert_field(fields: &mut BTreeMap<String, String>, name: String, value: String) -> Result<(), ChannelError> {
    if fields.contains_key(&name) {
        return Err(ChannelError::Malformed(format!(
            "XML tag {} appears more than once",
            printable(&name)
        )));
    }
    fields.insert(name, value);
    Ok(())
}

/// `stringSignTemp`: sorted non-empty fields except `sign`, then `&key=API_KEY`.
fn string_sign_temp(fields: &BTreeMap<String, String>, api_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields.iter().filter(|(k, v)| k.as_str() != "sign" && !v.is_empty()) {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(b'&');
    }
    out.extend_from_slice(b"key=");
    out.extend_from_slice(api_key);
    out
}

/// The upper-hex signature of `fields`.
fn compute_sign(fields: &BTreeMap<String, String>, api_key: &[u8], sign_type: WechatV2SignType) -> String {
    let content = string_sign_temp(fields, api_key);
    match sign_type {
        WechatV2SignType::Md5 => hex::encode_upper(md5::Md5::digest(&content)),
        WechatV2SignType::HmacSha256 => {
            // HMAC accepts keys of any length, so this cannot fail.
            let mac = <Hmac<Sha256> as Mac>::new_from_slice(api_key).map(|m| m.chain_update(&content).finalize());
            mac.map(|m| hex::encode_upper(m.into_bytes())).unwrap_or_default()
        }
    }
}

/// AES-256-ECB key of the refund `req_info`: the ASCII of `lower_hex(MD5(API key))`.
fn refund_key(api_key: &[u8]) -> Aes256 {
    let hex_key = hex::encode(md5::Md5::digest(api_key));
    Aes256::new(GenericArray::from_slice(hex_key.as_bytes()))
}

/// Decrypts `req_info`: base64 → AES-256-ECB → strict PKCS#7 unpadding.
fn decrypt_req_info(req_info: &str, api_key: &[u8]) -> Result<Vec<u8>, ChannelError> {
    let fail = |m: &str| ChannelError::Decrypt(m.to_string());
    let mut data = base64::engine::general_purpose::STANDARD
        .decode(req_info.trim())
        .map_err(|_| fail("req_info is not base64"))?;
    if data.is_empty() || data.len() % 16 != 0 {
        return Err(fail("req_info is not a whole number of AES blocks"));
    }
    let cipher = refund_key(api_key);
    for block in data.chunks_exact_mut(16) {
        cipher.decrypt_block(GenericArray::from_mut_slice(block));
    }
    let pad = usize::from(*data.last().unwrap_or(&0));
    let body_len = data.len().checked_sub(pad).filter(|_| (1..=16).contains(&pad));
    let valid = body_len.is_some_and(|n| data.get(n..).is_some_and(|p| p.iter().all(|b| usize::from(*b) == pad)));
    match body_len {
        Some(n) if valid => {
            data.truncate(n);
            Ok(data)
        }
        _ => Err(fail("req_info padding is invalid (wrong API key?)")),
    }
}

pub(crate) fn encrypt_req_info(plain: &[u8], api_key: &[u8]) -> String {
    let pad = 16 - plain.len() % 16;
    let mut data = plain.to_vec();
    data.extend(std::iter::repeat_n(pad as u8, pad));
    let cipher = refund_key(api_key);
    for block in data.chunks_exact_mut(16) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn fen(fields: &BTreeMap<String, String>, name: &str) -> Result<Option<i64>, ChannelError> {
    match fields.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse_decimal_minor(v, 0)
            .map(Some)
            .map_err(|e| ChannelError::Malformed(format!("{name}: {e}"))),
    }
}

fn non_empty(fields: &BTreeMap<String, String>, name: &str) -> Option<String> {
    fields.get(name).filter(|v| !v.is_empty()).cloned()
}

fn to_json(fields: &BTreeMap<String, String>) -> serde_json::Map<String, serde_json::Value> {
    fields
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect()
}

impl WechatpayV2Channel {
    fn check_merchant(&self, fields: &BTreeMap<String, String>) -> Result<(), ChannelError> {
        let appid = fields.get("appid").map(String::as_str);
        if appid != Some(self.app_id.as_str()) {
            return Err(ChannelError::Business(format!(
                "appid {} is not the configured app",
                printable(appid.unwrap_or("(missing)"))
            )));
        }
        let mch_id = fields.get("mch_id").map(String::as_str);
        if mch_id != Some(self.mch_id.as_str()) {
            return Err(ChannelError::Business(format!(
                "mch_id {} is not the configured merchant",
                printable(mch_id.unwrap_or("(missing)"))
            )));
        }
        Ok(())
    }

    fn check_signature(&self, fields: &BTreeMap<String, String>, sign: &str) -> Result<(), ChannelError> {
        let named = match fields.get("sign_type").map(String::as_str) {
            None | Some("") | Some("MD5") => WechatV2SignType::Md5,
            Some("HMAC-SHA256") => WechatV2SignType::HmacSha256,
            Some(other) => return Err(ChannelError::Unsupported(format!("sign_type {}", printable(other)))),
        };
        if named != self.sign_type {
            return Err(ChannelError::Unsupported(format!(
                "sign_type {} is not accepted (configured {})",
                named.wire_name(),
                self.sign_type.wire_name()
            )));
        }
        let expected = compute_sign(fields, self.api_key.expose(), self.sign_type);
        // Case-sensitive upper hex, compared in constant time.
        if bool::from(expected.as_bytes().ct_eq(sign.as_bytes())) {
            Ok(())
        } else {
            Err(ChannelError::Signature(format!(
                "{} sign does not match",
                self.sign_type.wire_name()
            )))
        }
    }

    /// Payment result notify: signature, merchant, then `result_code`.
    fn verify_payment(&self, fields: BTreeMap<String, String>, sign: &str) -> Result<VerifiedEvent, ChannelError> {
        self.check_signature(&fields, sign)?;
        self.payment_event(fields)
    }

    /// Everything after a payment notify's signature verified: the merchant check and the event.
    pub(crate) fn payment_event(&self, fields: BTreeMap<String, String>) -> Result<VerifiedEvent, ChannelError> {
        self.check_merchant(&fields)?;
        let out_trade_no = non_empty(&fields, "out_trade_no")
            .ok_or_else(|| ChannelError::Malformed("out_trade_no is missing".into()))?;
        let result_code = non_empty(&fields, "result_code");
        let kind = if result_code.as_deref() == Some("SUCCESS") {
            EventKind::PaymentSucceeded
        } else {
            EventKind::PaymentFailed
        };
        let mut raw = to_json(&fields);
        raw.remove("sign");
        Ok(VerifiedEvent {
            channel: ChannelKind::WechatpayV2,
            kind,
            out_trade_no,
            channel_txn_id: non_empty(&fields, "transaction_id"),
            amount_minor: fen(&fields, "total_fee")?,
            currency: Some(
                non_empty(&fields, "fee_type")
                    .unwrap_or_else(|| "CNY".into())
                    .to_ascii_uppercase(),
            ),
            refund: None,
            occurred_at: fields.get("time_end").and_then(|t| beijing_rfc3339(t)),
            notification_id: None,
            raw_status: result_code,
            merchant: MerchantRef {
                app_id: non_empty(&fields, "appid"),
                mch_id: non_empty(&fields, "mch_id"),
            },
            raw: serde_json::Value::Object(raw),
        })
    }

    /// Refund result notify: merchant check (ECB has no integrity), decrypt, well-formed XML.
    fn verify_refund(&self, fields: BTreeMap<String, String>, req_info: &str) -> Result<VerifiedEvent, ChannelError> {
        self.check_merchant(&fields)?;
        let plain = decrypt_req_info(req_info, self.api_key.expose())?;
        let inner = parse_flat_xml(&plain, "root")
            .map_err(|_| ChannelError::Decrypt("decrypted req_info is not well-formed XML".into()))?;
        let out_trade_no = non_empty(&inner, "out_trade_no")
            .ok_or_else(|| ChannelError::Malformed("out_trade_no is missing".into()))?;
        let status = non_empty(&inner, "refund_status");
        let kind = match status.as_deref() {
            Some("SUCCESS") => EventKind::RefundSucceeded,
            Some("REFUNDCLOSE") => EventKind::RefundClosed,
            Some("CHANGE") => EventKind::RefundAbnormal,
            _ => EventKind::Other,
        };
        let mut raw = to_json(&fields);
        raw.insert("req_info".into(), serde_json::Value::Object(to_json(&inner)));
        Ok(VerifiedEvent {
            channel: ChannelKind::WechatpayV2,
            kind,
            out_trade_no,
            channel_txn_id: non_empty(&inner, "transaction_id"),
            amount_minor: fen(&inner, "total_fee")?,
            currency: Some("CNY".into()),
            refund: Some(RefundInfo {
                out_refund_no: non_empty(&inner, "out_refund_no"),
                refund_id: non_empty(&inner, "refund_id"),
                amount_minor: fen(&inner, "refund_fee")?,
            }),
            occurred_at: inner.get("success_time").and_then(|t| beijing_rfc3339(t)),
            notification_id: None,
            raw_status: status,
            merchant: MerchantRef {
                app_id: non_empty(&fields, "appid"),
                mch_id: non_empty(&fields, "mch_id"),
            },
            raw: serde_json::Value::Object(raw),
        })
    }
}

const TEST_APP_ID: &str = "wx0000000000000002";
const TEST_MCH_ID: &str = "1900000002";
const TEST_API_KEY: &str = "abcdefghijklmnopqrstuvwxyz012345";

impl ChannelSetup for WechatpayV2Config {
    const KIND: ChannelKind = ChannelKind::WechatpayV2;
    type Channel = WechatpayV2Channel;
    const SIMULATE_NEEDS: &'static [(SimulateInput, &'static str)] = &[
        (SimulateInput::Secret, "the API key"),
        (SimulateInput::AppId, ""),
        (SimulateInput::MchId, ""),
    ];
    // v2 notifies final results only: no pending.
    const EVENT_KINDS: &'static [EventKind] = &[
        EventKind::PaymentSucceeded,
        EventKind::PaymentFailed,
        EventKind::RefundSucceeded,
        EventKind::RefundClosed,
        EventKind::RefundAbnormal,
    ];
    const NOTIFICATION_ID: bool = false;

    fn build(&self) -> Result<WechatpayV2Channel, Vec<ConfigIssue>> {
        WechatpayV2Config::build(self)
    }

    fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
        simulate(spec, keys)
    }

    /// WeChat Pay v2 needs `return_code` SUCCESS in the XML answer.
    fn backend_acknowledged(status: u16, body: &[u8]) -> bool {
        status == 200 && {
            let text = String::from_utf8_lossy(body);
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            compact.contains("<return_code><![CDATA[SUCCESS]]></return_code>")
                || compact.contains("<return_code>SUCCESS</return_code>")
        }
    }

    fn test_setup(_fixtures: &Path) -> Result<TestSetup, String> {
        Ok(TestSetup {
            config: serde_json::json!({"app_id": TEST_APP_ID, "mch_id": TEST_MCH_ID, "api_key": TEST_API_KEY}),
            keys: SimulateKeys {
                secret: Some(TEST_API_KEY.as_bytes().to_vec()),
                ..SimulateKeys::default()
            },
            app_id: Some(TEST_APP_ID.into()),
            mch_id: Some(TEST_MCH_ID.into()),
        })
    }
}

impl Channel for WechatpayV2Channel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::WechatpayV2
    }

    fn verify_signed(&self, req: &NotifyRequest<'_>, _now: Timestamp) -> Result<VerifiedEvent, ChannelError> {
        let fields = parse_flat_xml(req.body, "xml")?;
        if fields.get("return_code").map(String::as_str) != Some("SUCCESS") {
            // return_code FAIL carries neither a signature nor business data.
            return Err(ChannelError::Malformed("return_code is not SUCCESS".into()));
        }
        if let Some(sign) = fields.get("sign").cloned() {
            return self.verify_payment(fields, &sign);
        }
        match fields.get("req_info").cloned() {
            Some(req_info) => self.verify_refund(fields, &req_info),
            None => Err(ChannelError::Malformed("neither sign nor req_info present".into())),
        }
    }

    /// HTTP 200 with the exact SUCCESS XML WeChat Pay expects.
    fn success_ack(&self) -> Ack {
        Ack {
            status: 200,
            content_type: Some("text/xml"),
            body: b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
                .to_vec(),
        }
    }

    /// HTTP 200 with `return_code` FAIL and the reason (kept inside its CDATA section).
    fn failure_ack(&self, reason: &str) -> Ack {
        let reason: String = printable(reason)
            .replace("]]>", "]] >")
            .chars()
            .filter(|c| !matches!(c, '<' | '>'))
            .collect();
        Ack {
            status: 200,
            content_type: Some("text/xml"),
            body: format!(
                "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[{reason}]]></return_msg></xml>"
            )
            .into_bytes(),
        }
    }
}

fn to_xml(root: &str, fields: &[(&str, String)]) -> String {
    let mut xml = format!("<{root}>");
    for (k, v) in fields {
        xml.push_str(&format!("<{k}><![CDATA[{v}]]></{k}>"));
    }
    xml.push_str(&format!("</{root}>"));
    xml
}

/// [`simulate`] with an explicit signature type (payment notifies only).
pub(crate) fn simulate_signed(
    spec: &SimulateSpec,
    keys: &SimulateKeys,
    sign_type: WechatV2SignType,
) -> Result<SimulatedNotification, String> {
    let api_key = keys
        .secret
        .as_deref()
        .ok_or("wechatpay_v2 simulation needs secret (the API key)")?;
    let app_id = spec.app_id.clone().ok_or("wechatpay_v2 simulation needs app_id")?;
    let mch_id = spec.mch_id.clone().ok_or("wechatpay_v2 simulation needs mch_id")?;
    // Deterministic nonce so repeated simulations of one spec are byte-identical.
    let nonce = hex::encode(md5::Md5::digest(spec.notification_id.as_bytes()));
    let time = beijing_format(spec.at, "%Y%m%d%H%M%S");
    let body = match spec.kind {
        EventKind::PaymentSucceeded | EventKind::PaymentFailed => {
            let succeeded = spec.kind == EventKind::PaymentSucceeded;
            let mut fields: Vec<(&str, String)> = vec![
                ("return_code", "SUCCESS".into()),
                ("appid", app_id),
                ("mch_id", mch_id),
                ("nonce_str", nonce),
                ("result_code", if succeeded { "SUCCESS" } else { "FAIL" }.into()),
                ("openid", "oSimulatedOpenId000000000000".into()),
                ("trade_type", "JSAPI".into()),
                ("bank_type", "CFT".into()),
                ("total_fee", spec.amount_minor.to_string()),
                ("fee_type", spec.currency.to_ascii_uppercase()),
                ("cash_fee", spec.amount_minor.to_string()),
                ("transaction_id", spec.channel_txn_id.clone()),
                ("out_trade_no", spec.out_trade_no.clone()),
                ("time_end", time),
            ];
            if !succeeded {
                fields.push(("err_code", "SYSTEMERROR".into()));
            }
            if sign_type == WechatV2SignType::HmacSha256 {
                fields.push(("sign_type", sign_type.wire_name().into()));
            }
            let map: BTreeMap<String, String> = fields.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect();
            fields.push(("sign", compute_sign(&map, api_key, sign_type)));
            to_xml("xml", &fields)
        }
        EventKind::RefundSucceeded | EventKind::RefundClosed | EventKind::RefundAbnormal => {
            let status = match spec.kind {
                EventKind::RefundSucceeded => "SUCCESS",
                EventKind::RefundClosed => "REFUNDCLOSE",
                _ => "CHANGE",
            };
            let refund = spec
                .refund_amount_minor
                .ok_or("refund simulation needs refund_amount_minor")?;
            let out_refund_no = spec
                .out_refund_no
                .clone()
                .ok_or("refund simulation needs out_refund_no")?;
            let success_time = beijing_format(spec.at, "%Y-%m-%d %H:%M:%S");
            let inner = to_xml(
                "root",
                &[
                    ("out_refund_no", out_refund_no),
                    ("out_trade_no", spec.out_trade_no.clone()),
                    ("refund_fee", refund.to_string()),
                    ("refund_id", format!("5030{}", spec.notification_id)),
                    ("refund_status", status.into()),
                    ("success_time", success_time),
                    ("total_fee", spec.amount_minor.to_string()),
                    ("transaction_id", spec.channel_txn_id.clone()),
                ],
            );
            to_xml(
                "xml",
                &[
                    ("return_code", "SUCCESS".into()),
                    ("appid", app_id),
                    ("mch_id", mch_id),
                    ("nonce_str", nonce),
                    ("req_info", encrypt_req_info(inner.as_bytes(), api_key)),
                ],
            )
        }
        other => return Err(format!("wechatpay_v2 simulation does not produce {}", other.as_str())),
    };
    Ok(SimulatedNotification {
        headers: Vec::new(),
        content_type: "text/xml".into(),
        body: body.into_bytes(),
    })
}

/// Produces a valid WeChat Pay v2 notification for `spec`: an MD5-signed payment notify, or a
/// refund notify with encrypted `req_info`. Needs `keys.secret` (API key), `spec.app_id`, `spec.mch_id`.
pub(crate) fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
    simulate_signed(spec, keys, WechatV2SignType::Md5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use proptest::prelude::*;

    const KEY: &str = "192006250b4c09247ec02edce69f6a2d";
    const DV2_MD5: &str = "<xml><appid><![CDATA[wx2421b1c4370ec43b]]></appid><attach><![CDATA[支付测试]]></attach><bank_type><![CDATA[CFT]]></bank_type><fee_type><![CDATA[CNY]]></fee_type><is_subscribe><![CDATA[Y]]></is_subscribe><mch_id>10000100</mch_id><nonce_str><![CDATA[5d2b6c2a8db53831f7eda20af46e531c]]></nonce_str><openid><![CDATA[oUpF8uMEb4qRXf22hE3X68TekukE]]></openid><out_trade_no>1409811653</out_trade_no><result_code><![CDATA[SUCCESS]]></result_code><return_code><![CDATA[SUCCESS]]></return_code><time_end>20140903131540</time_end><total_fee>1</total_fee><coupon_fee>10</coupon_fee><coupon_count>1</coupon_count><coupon_type><![CDATA[CASH]]></coupon_type><coupon_id>10000</coupon_id><cash_fee>1</cash_fee><trade_type><![CDATA[JSAPI]]></trade_type><transaction_id>1004400740201409030005092168</transaction_id><device_info><![CDATA[]]></device_info><sign><![CDATA[6B5D8E5F4D171C78F7D7C25C563E3FC0]]></sign></xml>";
    const DV2_HMAC: &str = "<xml><appid><![CDATA[wx2421b1c4370ec43b]]></appid><attach><![CDATA[支付测试]]></attach><bank_type><![CDATA[CFT]]></bank_type><fee_type><![CDATA[CNY]]></fee_type><is_subscribe><![CDATA[Y]]></is_subscribe><mch_id>10000100</mch_id><nonce_str><![CDATA[5d2b6c2a8db53831f7eda20af46e531c]]></nonce_str><openid><![CDATA[oUpF8uMEb4qRXf22hE3X68TekukE]]></openid><out_trade_no>1409811653</out_trade_no><result_code><![CDATA[SUCCESS]]></result_code><return_code><![CDATA[SUCCESS]]></return_code><time_end>20140903131540</time_end><total_fee>1</total_fee><coupon_fee>10</coupon_fee><coupon_count>1</coupon_count><coupon_type><![CDATA[CASH]]></coupon_type><coupon_id>10000</coupon_id><cash_fee>1</cash_fee><trade_type><![CDATA[JSAPI]]></trade_type><transaction_id>1004400740201409030005092168</transaction_id><device_info><![CDATA[]]></device_info><sign_type><![CDATA[HMAC-SHA256]]></sign_type><sign><![CDATA[7531B89835055B6630B70854100AC76FC567DDA01F9E92341E92C0A077777BC4]]></sign></xml>";
    const DV2_SIGN_TEMP: &str = "appid=wx2421b1c4370ec43b&attach=支付测试&bank_type=CFT&cash_fee=1&coupon_count=1&coupon_fee=10&coupon_id=10000&coupon_type=CASH&fee_type=CNY&is_subscribe=Y&mch_id=10000100&nonce_str=5d2b6c2a8db53831f7eda20af46e531c&openid=oUpF8uMEb4qRXf22hE3X68TekukE&out_trade_no=1409811653&result_code=SUCCESS&return_code=SUCCESS&time_end=20140903131540&total_fee=1&trade_type=JSAPI&transaction_id=1004400740201409030005092168&key=192006250b4c09247ec02edce69f6a2d";

    const WR_KEY: &str = "OF4Ne3znh8KqL0V4NqmALQa0uXMYKcEk";
    const WR_REQ_INFO: &str = "51A27s9LxbaEv52nBOrqa0FCs3HVIM31Wc3BpNqSCP5MQlS8HL1Vl7mZ21043B7PZy7adtOZGtZv44lGl0U8JXlVFL4Ltxsw6+pACjZBB0Qi1LUDjFlP2IyTxYX4eC57kxnCphDdIyRkU67kOWW/HN/efggTUlaPJkoL5kVe9Y1MZF55IHR4lwGI7WtVLtxATX1tkAVZF+/ri0WlPXo9+GkqeB2/id6Ozw09Tqp8C/TKbmKBpRhTCRU2TzfQoLa6fjbgETFHJ795aEMyUZPQYbbsz6U9Rj9lUzEh8+Oc8KYTXa9zVk+nnFr82+yjffb3d36ylTe0y/VmYf90rf9cbiJQdM00zZ8Qa99SlMTs2wjOO4Mi4Btlg1PebsLF8TkqbSZkRJDGs61UunUB8Km1b/VeBxXuv4D3H7DiVZ9Fj7lq2j07zFDpxxlhhen7kZvMWWO3lrfFpA9c4eFOqfF9SxcU9nBmHfDD1g/dsrMl6+a71xQHJ/gn80fZOefUBv92ggqutsuJ4gd4OqkmO0XUs8e4XQyLpra+LvpmahsU5lBIZuQcMq3FHrqe8hXTfp3+3qym2wGfvPI75jx41VZwmBQy9izB1Id+A5lUeXC5QJy+ryDu/dWkhB+aMjkElaI/Epmcc/IEPaI73W6Hc58hNednOM536rPnn+GDc98PdGszpLTjmaZSu8dtqwPaym66yRqFQowzFoBbooik57iHUFBCeWya7XcXYL9WKhRF3uIZM+Kfv9/Zs2pF+w9/EJpltuzPpT1GP2VTMSHz45zwphFlS2lX8wHyZ+k9n2dptzQqpOCPedt5iQAmAe1oNQMxNdPDH9g68x9UzWD1kfK/dPO+3NPAh0XG+io4x15fIknNf7JLjpAuWicMMzCdwC4hhqeYOzQ+pC9f2xJXi5YViNKIZY69oO8eoHYRitLZrHLgx3oB2zimmqX6BI+DMklKAzAqqgGmbFxcVTvxZB6cMCx+H7TTWXnjAG+6A3SrCcxg0l5+UB93pkAYR7SVJ+VaZoiBqlqnZvb7IM17n9XaaFntlzvbbFCIa7OnOQb5Lvw=";

    fn wr_body() -> String {
        format!(
            "<xml><return_code>SUCCESS</return_code><appid><![CDATA[wx4f4bc4dec97d474b]]></appid><mch_id><![CDATA[12345678]]></mch_id><nonce_str><![CDATA[abc]]></nonce_str><req_info><![CDATA[{WR_REQ_INFO}]]></req_info></xml>"
        )
    }

    fn now() -> Timestamp {
        "2014-09-03T05:15:40Z".parse().unwrap()
    }

    fn config(sign_type: WechatV2SignType) -> WechatpayV2Config {
        WechatpayV2Config {
            app_id: "wx2421b1c4370ec43b".into(),
            mch_id: "10000100".into(),
            api_key: SecretRef::new(KEY),
            sign_type,
        }
    }

    fn channel(sign_type: WechatV2SignType) -> WechatpayV2Channel {
        config(sign_type).build().unwrap()
    }

    fn wr_channel() -> WechatpayV2Channel {
        WechatpayV2Config {
            app_id: "wx4f4bc4dec97d474b".into(),
            mch_id: "12345678".into(),
            api_key: SecretRef::new(WR_KEY),
            sign_type: WechatV2SignType::Md5,
        }
        .build()
        .unwrap()
    }

    fn verify(ch: &WechatpayV2Channel, body: &[u8]) -> Result<VerifiedEvent, ChannelError> {
        let headers = HeaderMap::new();
        ch.verify(
            &NotifyRequest {
                headers: &headers,
                body,
            },
            now(),
        )
    }

    #[test]
    fn wechat_v2_official_doc_example_md5_and_hmac() {
        let fields: BTreeMap<String, String> = [
            ("appid", "wxd930ea5d5a258f4f"),
            ("body", "test"),
            ("device_info", "1000"),
            ("mch_id", "10000100"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
        assert_eq!(
            compute_sign(&fields, KEY.as_bytes(), WechatV2SignType::Md5),
            "9A0A8659F005D6984697E2CA0A9CF3B7"
        );
        assert_eq!(
            compute_sign(&fields, KEY.as_bytes(), WechatV2SignType::HmacSha256),
            "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
        );
    }

    #[test]
    fn wechat_v2_dv2_md5_verifies_and_normalizes() {
        let fields = parse_flat_xml(DV2_MD5.as_bytes(), "xml").unwrap();
        assert_eq!(string_sign_temp(&fields, KEY.as_bytes()), DV2_SIGN_TEMP.as_bytes());
        let ev = verify(&channel(WechatV2SignType::Md5), DV2_MD5.as_bytes()).unwrap();
        assert_eq!(ev.kind, EventKind::PaymentSucceeded);
        assert_eq!(ev.out_trade_no, "1409811653");
        assert_eq!(ev.amount_minor, Some(1));
        assert_eq!(ev.currency.as_deref(), Some("CNY"));
        assert_eq!(ev.channel_txn_id.as_deref(), Some("1004400740201409030005092168"));
        assert_eq!(ev.occurred_at.as_deref(), Some("2014-09-03T13:15:40+08:00"));
        assert_eq!(ev.merchant.mch_id.as_deref(), Some("10000100"));
        assert_eq!(ev.raw["attach"], "支付测试");
    }

    #[test]
    fn wechat_v2_dv2_hmac_sha256_verifies_with_sign_type_signed() {
        let ev = verify(&channel(WechatV2SignType::HmacSha256), DV2_HMAC.as_bytes()).unwrap();
        assert_eq!(ev.kind, EventKind::PaymentSucceeded);
        assert_eq!(ev.amount_minor, Some(1));
    }

    #[test]
    fn wechat_v2_hmac_and_md5_are_not_interchangeable() {
        let err = verify(&channel(WechatV2SignType::Md5), DV2_HMAC.as_bytes()).unwrap_err();
        assert!(matches!(err, ChannelError::Unsupported(_)), "{err:?}");
        let err = verify(&channel(WechatV2SignType::HmacSha256), DV2_MD5.as_bytes()).unwrap_err();
        assert!(matches!(err, ChannelError::Unsupported(_)), "{err:?}");
    }

    #[test]
    fn wechat_v2_tampered_field_is_refused() {
        let body = DV2_MD5.replace("<total_fee>1</total_fee>", "<total_fee>100</total_fee>");
        assert!(matches!(
            verify(&channel(WechatV2SignType::Md5), body.as_bytes()),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn wechat_v2_wrong_key_is_refused() {
        let mut cfg = config(WechatV2SignType::Md5);
        cfg.api_key = SecretRef::new("00000000000000000000000000000000");
        assert!(matches!(
            verify(&cfg.build().unwrap(), DV2_MD5.as_bytes()),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn wechat_v2_lower_case_sign_is_refused() {
        let body = DV2_MD5.replace("6B5D8E5F4D171C78F7D7C25C563E3FC0", "6b5d8e5f4d171c78f7d7c25c563e3fc0");
        assert!(matches!(
            verify(&channel(WechatV2SignType::Md5), body.as_bytes()),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn wechat_v2_empty_device_info_is_excluded_from_signature() {
        // With device_info dropped from the XML the signature still verifies: empty = unsigned.
        let body = DV2_MD5.replace("<device_info><![CDATA[]]></device_info>", "");
        assert!(verify(&channel(WechatV2SignType::Md5), body.as_bytes()).is_ok());
        // A self-closing empty element is also unsigned.
        let body = DV2_MD5.replace("<device_info><![CDATA[]]></device_info>", "<device_info/>");
        assert!(verify(&channel(WechatV2SignType::Md5), body.as_bytes()).is_ok());
        // Non-empty device_info is signed: adding one breaks the signature.
        let body = DV2_MD5.replace(
            "<device_info><![CDATA[]]></device_info>",
            "<device_info>1000</device_info>",
        );
        assert!(matches!(
            verify(&channel(WechatV2SignType::Md5), body.as_bytes()),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn wechat_v2_doctype_and_entities_are_refused_before_signature() {
        let xxe = format!(
            "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>{}",
            DV2_MD5.replace("<attach><![CDATA[支付测试]]></attach>", "<attach>&xxe;</attach>")
        );
        assert!(matches!(
            verify(&channel(WechatV2SignType::Md5), xxe.as_bytes()),
            Err(ChannelError::Malformed(_))
        ));
        let doctype_only = format!("<!DOCTYPE xml>{DV2_MD5}");
        assert!(matches!(
            verify(&channel(WechatV2SignType::Md5), doctype_only.as_bytes()),
            Err(ChannelError::Malformed(_))
        ));
        let undeclared = DV2_MD5.replace("<attach><![CDATA[支付测试]]></attach>", "<attach>&foo;</attach>");
        assert!(matches!(
            verify(&channel(WechatV2SignType::Md5), undeclared.as_bytes()),
            Err(ChannelError::Malformed(_))
        ));
    }

    #[test]
    fn wechat_v2_predefined_entities_are_text() {
        let fields = parse_flat_xml(b"<xml><a>x &amp; y &lt;z&gt;</a><b><![CDATA[&amp;]]></b></xml>", "xml").unwrap();
        assert_eq!(fields["a"], "x & y <z>");
        assert_eq!(fields["b"], "&amp;");
    }

    #[test]
    fn wechat_v2_duplicate_and_nested_tags_are_malformed() {
        let dup = DV2_MD5.replace(
            "<total_fee>1</total_fee>",
            "<total_fee>1</total_fee><total_fee>2</total_fee>",
        );
        assert!(matches!(
            verify(&channel(WechatV2SignType::Md5), dup.as_bytes()),
            Err(ChannelError::Malformed(_))
        ));
        let nested = DV2_MD5.replace("<total_fee>1</total_fee>", "<total_fee><x>1</x></total_fee>");
        assert!(matches!(
            verify(&channel(WechatV2SignType::Md5), nested.as_bytes()),
            Err(ChannelError::Malformed(_))
        ));
        for bad in [
            "",
            "<xml>",
            "<other></other>",
            "<xml/>",
            "<xml></xml><xml></xml>",
            "<xml></xml>trailing",
            "<xml>t</xml>",
        ] {
            assert!(parse_flat_xml(bad.as_bytes(), "xml").is_err(), "{bad}");
        }
    }

    #[test]
    fn wechat_v2_tag_names_must_be_plain_xml_names() {
        // `<=//>` was read as an empty field named `=/`, which written back is another document.
        for bad in [
            "<xml><=//></xml>",
            "<xml><a/b>1</a/b></xml>",
            "<xml><1a>1</1a></xml>",
            "<xml><a\u{1d}>1</a\u{1d}></xml>",
            "<xml><é>1</é></xml>",
        ] {
            assert!(
                matches!(parse_flat_xml(bad.as_bytes(), "xml"), Err(ChannelError::Malformed(_))),
                "{bad:?}"
            );
        }
        let fields = parse_flat_xml(b"<xml><out_trade_no>1</out_trade_no><a-b.c:d/></xml>", "xml").unwrap();
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["a-b.c:d", "out_trade_no"]);
    }

    #[test]
    fn wechat_v2_other_merchant_is_refused_after_signature() {
        let mut cfg = config(WechatV2SignType::Md5);
        cfg.mch_id = "10000999".into();
        assert!(matches!(
            verify(&cfg.build().unwrap(), DV2_MD5.as_bytes()),
            Err(ChannelError::Business(_))
        ));
        let mut cfg = config(WechatV2SignType::Md5);
        cfg.app_id = "wx0000000000000000".into();
        assert!(matches!(
            verify(&cfg.build().unwrap(), DV2_MD5.as_bytes()),
            Err(ChannelError::Business(_))
        ));
    }

    #[test]
    fn wechat_v2_result_code_fail_is_payment_failed_and_return_code_fail_is_refused() {
        let fields: Vec<(&str, String)> = vec![
            ("return_code", "SUCCESS".into()),
            ("appid", "wx2421b1c4370ec43b".into()),
            ("mch_id", "10000100".into()),
            ("result_code", "FAIL".into()),
            ("out_trade_no", "O-FAIL".into()),
        ];
        let map: BTreeMap<String, String> = fields.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect();
        let mut signed = fields.clone();
        signed.push(("sign", compute_sign(&map, KEY.as_bytes(), WechatV2SignType::Md5)));
        let ev = verify(&channel(WechatV2SignType::Md5), to_xml("xml", &signed).as_bytes()).unwrap();
        assert_eq!(ev.kind, EventKind::PaymentFailed);
        let body = b"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[x]]></return_msg></xml>";
        assert!(matches!(
            verify(&channel(WechatV2SignType::Md5), body),
            Err(ChannelError::Malformed(_))
        ));
    }

    #[test]
    fn wechat_v2_refund_req_info_decrypts_wr_vector() {
        let ev = verify(&wr_channel(), wr_body().as_bytes()).unwrap();
        assert_eq!(ev.kind, EventKind::RefundSucceeded);
        assert_eq!(ev.out_trade_no, "2020010418301551404339261814");
        assert_eq!(ev.channel_txn_id.as_deref(), Some("4200000483202001042069747825"));
        let refund = ev.refund.unwrap();
        assert_eq!(refund.out_refund_no.as_deref(), Some("1234"));
        assert_eq!(refund.refund_id.as_deref(), Some("50300103182020010413419046597"));
        assert_eq!(refund.amount_minor, Some(1));
        assert_eq!(ev.occurred_at.as_deref(), Some("2020-01-04T18:34:24+08:00"));
        assert_eq!(ev.raw["req_info"]["refund_recv_accout"], "招商银行信用卡8915");
    }

    #[test]
    fn wechat_v2_refund_with_wrong_key_or_merchant_is_refused() {
        let mut ch = wr_channel();
        ch.api_key = Secret::from_bytes(KEY.as_bytes().to_vec());
        assert!(matches!(
            verify(&ch, wr_body().as_bytes()),
            Err(ChannelError::Decrypt(_))
        ));
        let mut ch = wr_channel();
        ch.mch_id = "99999999".into();
        assert!(matches!(
            verify(&ch, wr_body().as_bytes()),
            Err(ChannelError::Business(_))
        ));
        let truncated = wr_body().replace(WR_REQ_INFO, &WR_REQ_INFO[..40]);
        assert!(matches!(
            verify(&wr_channel(), truncated.as_bytes()),
            Err(ChannelError::Decrypt(_))
        ));
    }

    #[test]
    fn wechat_v2_acks_are_exact() {
        let ch = channel(WechatV2SignType::Md5);
        assert_eq!(
            ch.success_ack().body,
            b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
        );
        assert_eq!(
            ch.failure_ack("bad]]><x>").body,
            b"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[bad]] x]]></return_msg></xml>"
        );
    }

    #[test]
    fn wechat_v2_config_issue_never_shows_the_key() {
        let cfg = WechatpayV2Config {
            app_id: String::new(),
            mch_id: "1".into(),
            api_key: SecretRef::new("env:PG_TEST_WECHAT_V2_KEY_NOT_SET"),
            sign_type: WechatV2SignType::Md5,
        };
        let issues = cfg.build().unwrap_err();
        assert!(issues.iter().any(|i| i.path == "api_key"));
        assert!(issues.iter().any(|i| i.path == "app_id"));
        assert!(!format!("{:?}", channel(WechatV2SignType::Md5)).contains(KEY));
        let parsed: WechatpayV2Config = serde_json::from_value(
            serde_json::json!({"app_id": "a", "mch_id": "m", "api_key": "k", "sign_type": "HMAC-SHA256"}),
        )
        .unwrap();
        assert_eq!(parsed.sign_type, WechatV2SignType::HmacSha256);
        assert!(serde_json::from_value::<WechatpayV2Config>(
            serde_json::json!({"app_id": "a", "mch_id": "m", "api_key": "k", "extra": 1})
        )
        .is_err());
    }

    fn sim_spec(kind: EventKind) -> SimulateSpec {
        SimulateSpec {
            out_trade_no: "ORDER-SIM-2".into(),
            amount_minor: 8880,
            currency: "CNY".into(),
            kind,
            out_refund_no: Some("REFUND-SIM-2".into()),
            refund_amount_minor: Some(1000),
            channel_txn_id: "4200002000202405010000000002".into(),
            at: now(),
            notification_id: "sim-2".into(),
            app_id: Some("wx2421b1c4370ec43b".into()),
            mch_id: Some("10000100".into()),
        }
    }

    #[test]
    fn wechat_v2_simulate_output_verifies_with_matching_config() {
        let keys = SimulateKeys {
            secret: Some(KEY.as_bytes().to_vec()),
            ..Default::default()
        };
        for kind in [
            EventKind::PaymentSucceeded,
            EventKind::PaymentFailed,
            EventKind::RefundSucceeded,
            EventKind::RefundClosed,
            EventKind::RefundAbnormal,
        ] {
            let n = simulate(&sim_spec(kind), &keys).unwrap();
            let ev = verify(&channel(WechatV2SignType::Md5), &n.body).unwrap();
            assert_eq!(ev.kind, kind);
            assert_eq!(ev.out_trade_no, "ORDER-SIM-2");
            assert_eq!(ev.amount_minor, Some(8880));
            if kind.is_refund() {
                assert_eq!(ev.refund.unwrap().amount_minor, Some(1000));
            }
        }
        let n = simulate_signed(
            &sim_spec(EventKind::PaymentSucceeded),
            &keys,
            WechatV2SignType::HmacSha256,
        )
        .unwrap();
        assert!(verify(&channel(WechatV2SignType::HmacSha256), &n.body).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn wechat_v2_arbitrary_bodies_never_panic_or_verify(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert!(verify(&channel(WechatV2SignType::Md5), &body).is_err());
        }

        #[test]
        fn wechat_v2_arbitrary_xml_fields_never_verify(
            fields in proptest::collection::vec(("[a-z_]{1,10}", "[ -~&&[^<>&\\]]]{0,20}"), 0..10),
            sign in "[0-9A-F]{32}",
        ) {
            let mut xml = String::from("<xml><return_code>SUCCESS</return_code>");
            for (k, v) in &fields { xml.push_str(&format!("<{k}><![CDATA[{v}]]></{k}>")); }
            xml.push_str(&format!("<sign>{sign}</sign><req_info>{sign}</req_info></xml>"));
            prop_assert!(verify(&channel(WechatV2SignType::Md5), xml.as_bytes()).is_err());
        }
    }
}
