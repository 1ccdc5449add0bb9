//! Alipay asynchronous notification (`notify_url`).
//!
//! The body is `application/x-www-form-urlencoded` in the charset named by its own `charset`
//! field. Verification runs over the percent-decoded **raw bytes**, so UTF-8 and GBK
//! notifications verify without transcoding; values are transcoded to UTF-8 only afterwards.
//! RSA2 (SHA256withRSA) and legacy RSA (SHA1withRSA) are supported; the configured key declares
//! which one it accepts and a notification can never choose another one.

use std::path::Path;
use std::collections::BTreeMap;

use base64::Engine as _;
use jiff::Timestamp;
use md5::Digest as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use super::amount::{format_minor, parse_decimal_minor};
use super::beijing_time::{beijing_format, beijing_rfc3339};
use super::form::{parse_form_raw, sorted_content, RawForm};
use super::keys::{certificate_ders, parse_rsa_public_key, RsaKeyError, RsaScheme, RsaSigningKey, RsaVerifyingKey};
use super::{
    fixture_ref, read_fixture, ChannelSetup, SimulateInput, TestSetup,     printable, Ack, Channel, ChannelError, ChannelKind, EventKind, MerchantRef, NotifyRequest, RefundInfo,
    SimulateKeys, SimulateSpec, SimulatedNotification, VerifiedEvent,
};
use crate::secret::SecretRef;
use crate::issue::ConfigIssue;

/// Which RSA signature scheme the configured Alipay key is used with (`sign_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AlipaySignType {
    /// `RSA2`: SHA256withRSA, key of at least 2048 bits. The only scheme for new apps.
    #[default]
    #[serde(alias = "RSA2")]
    Rsa2,
    /// `RSA`: legacy SHA1withRSA, key of at least 1024 bits.
    #[serde(alias = "RSA")]
    Rsa,
}

impl AlipaySignType {
    /// The value of the `sign_type` form field.
    pub(crate) fn wire_name(self) -> &'static str {
        match self {
            Self::Rsa2 => "RSA2",
            Self::Rsa => "RSA",
        }
    }

    /// The PKCS#1 v1.5 scheme, which also fixes the smallest key: 2048 bits for RSA2, 1024 for
    /// legacy RSA.
    fn scheme(self) -> RsaScheme {
        match self {
            Self::Rsa2 => RsaScheme::Sha256,
            Self::Rsa => RsaScheme::Sha1Legacy,
        }
    }
}

/// Alipay notification channel configuration (one Alipay app).
///
/// Exactly one key source: `alipay_public_key` (public-key mode) or `alipay_cert`
/// (public-key-certificate mode).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlipayConfig {
    /// The app id notifications must be addressed to (`app_id`, checked after the signature).
    pub(crate) app_id: String,
    /// ISV mode: the merchant app that authorised this app; notifications must carry it as
    /// `auth_app_id`. Unset: `auth_app_id` is not checked.
    #[serde(default)]
    pub(crate) auth_app_id: Option<String>,
    /// Expected `seller_id` (Alipay merchant PID). A notification carrying another seller is
    /// refused; one without `seller_id` (closed trades) is accepted on `app_id` alone.
    #[serde(default)]
    pub(crate) seller_id: Option<String>,
    /// Signature scheme this app uses: `rsa2` (default) or legacy `rsa`. A notification naming
    /// another `sign_type` is refused, never downgraded.
    #[serde(default)]
    pub(crate) sign_type: AlipaySignType,
    /// Public-key mode: the "Alipay public key" (base64 DER SubjectPublicKeyInfo, with or without
    /// PEM armour).
    #[serde(default)]
    pub(crate) alipay_public_key: Option<SecretRef>,
    /// Certificate mode: `alipayCertPublicKey_RSA2.crt` (PEM). Only its first certificate is used.
    #[serde(default)]
    pub(crate) alipay_cert: Option<SecretRef>,
    /// Certificate mode, during rotation: further Alipay public certificates. A notification that
    /// carries `alipay_cert_sn` is verified with the certificate of that SN only.
    #[serde(default)]
    pub(crate) additional_alipay_certs: Vec<SecretRef>,
}

/// One verification key, prepared for the configured `sign_type`, with its certificate SN
/// (certificate mode only).
#[derive(Debug, Clone)]
struct AlipayKey {
    cert_sn: Option<String>,
    key: RsaVerifyingKey,
}

/// A configured Alipay notification verifier.
#[derive(Debug, Clone)]
pub struct AlipayChannel {
    app_id: String,
    auth_app_id: Option<String>,
    seller_id: Option<String>,
    sign_type: AlipaySignType,
    keys: Vec<AlipayKey>,
}

impl AlipayConfig {
    /// Resolves the secrets and parses the keys. Issues name the config key, never a value.
    pub fn build(&self) -> Result<AlipayChannel, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut keys = Vec::new();
        if self.app_id.trim().is_empty() {
            issues.push(ConfigIssue::new("app_id", "must not be empty"));
        }
        let cert_mode = self.alipay_cert.is_some() || !self.additional_alipay_certs.is_empty();
        match (&self.alipay_public_key, cert_mode) {
            (None, false) => issues.push(ConfigIssue::new(
                "alipay_public_key",
                "set alipay_public_key or alipay_cert",
            )),
            (Some(_), true) => issues.push(ConfigIssue::new(
                "alipay_public_key",
                "alipay_public_key and alipay_cert are exclusive (public-key mode or certificate mode)",
            )),
            _ => {}
        }
        if self.alipay_cert.is_none() && !self.additional_alipay_certs.is_empty() {
            issues.push(ConfigIssue::new(
                "alipay_cert",
                "additional_alipay_certs needs alipay_cert",
            ));
        }
        let scheme = self.sign_type.scheme();
        // A key too small for the scheme is a sign_type problem: RSA2 needs 2048 bits.
        let key_issue = |path: String, e: RsaKeyError| match e {
            RsaKeyError::TooSmall { bits, .. } => ConfigIssue::new(
                "sign_type",
                format!(
                    "{} needs an RSA key of at least {} bits, {path} has {bits}",
                    self.sign_type.wire_name(),
                    scheme.min_bits()
                ),
            ),
            RsaKeyError::Format(message) => ConfigIssue::new(path, message),
        };
        if let Some(r) = &self.alipay_public_key {
            match r.resolve() {
                Ok(s) => match parse_rsa_public_key(s.expose(), scheme) {
                    Ok(key) => keys.push(AlipayKey { cert_sn: None, key }),
                    Err(e) => issues.push(key_issue("alipay_public_key".to_string(), e)),
                },
                Err(e) => issues.push(ConfigIssue::new("alipay_public_key", e)),
            }
        }
        let certs = self.alipay_cert.iter().map(|r| ("alipay_cert".to_string(), r)).chain(
            self.additional_alipay_certs
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("additional_alipay_certs[{i}]"), r)),
        );
        for (path, r) in certs {
            match r.resolve().and_then(|s| parse_first_certificate(s.expose())) {
                Ok((cert_sn, spki)) => match RsaVerifyingKey::from_der(&spki, scheme) {
                    Ok(key) => keys.push(AlipayKey {
                        cert_sn: Some(cert_sn),
                        key,
                    }),
                    Err(e) => issues.push(key_issue(path, e)),
                },
                Err(e) => issues.push(ConfigIssue::new(path, e)),
            }
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(AlipayChannel {
            app_id: self.app_id.clone(),
            auth_app_id: self.auth_app_id.clone(),
            seller_id: self.seller_id.clone(),
            sign_type: self.sign_type,
            keys,
        })
    }
}

/// Certificate mode: the first certificate of the bundle (leaf first, then the intermediate),
/// as (certificate SN, SubjectPublicKeyInfo DER). Validity is deliberately not enforced
/// for pinned certs.
fn parse_first_certificate(bytes: &[u8]) -> Result<(String, Vec<u8>), String> {
    let ders = certificate_ders(bytes)?;
    let der = ders.first().ok_or_else(|| "no certificate found".to_string())?;
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| "certificate does not parse".to_string())?;
    Ok((alipay_cert_sn(&cert), cert.public_key().raw.to_vec()))
}

/// Alipay certificate SN (`app_cert_sn`, `alipay_cert_sn`): `lower_hex(MD5(issuerDN + serial))`
/// with the issuer rendered like Java `X500Principal.getName()` (RFC 2253) and the serial in
/// decimal.
pub(crate) fn alipay_cert_sn(cert: &X509Certificate<'_>) -> String {
    let text = format!("{}{}", rfc2253_name(cert.issuer()), cert.tbs_certificate.serial);
    hex::encode(md5::Md5::digest(text.as_bytes()))
}

/// `alipay_root_cert_sn` of a root bundle: the SNs of its RSA-signed certificates (SHA-1 or
/// SHA-256 with RSA; SM2/ECDSA ones skipped) joined with `_`. Only the tests need it: a
/// notification names no root certificate, so `verify` never computes one.
#[cfg(test)]
pub(crate) fn alipay_root_cert_sn(bundle: &[u8]) -> Result<String, String> {
    const SHA1_RSA: &str = "1.2.840.113549.1.1.5";
    const SHA256_RSA: &str = "1.2.840.113549.1.1.11";
    let mut sns = Vec::new();
    for der in certificate_ders(bundle)? {
        let (_, cert) = X509Certificate::from_der(&der).map_err(|_| "certificate does not parse".to_string())?;
        let alg = cert.signature_algorithm.algorithm.to_id_string();
        if alg == SHA1_RSA || alg == SHA256_RSA {
            sns.push(alipay_cert_sn(&cert));
        }
    }
    Ok(sns.join("_"))
}

/// A distinguished name as Java's RFC 2253 `getName()` renders it: RDNs in reverse order,
/// known keywords, `\`-escaped specials, unknown attribute types as `OID=#hex`.
fn rfc2253_name(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let keyword = match oid.as_str() {
                        "2.5.4.3" => Some("CN"),
                        "2.5.4.6" => Some("C"),
                        "2.5.4.7" => Some("L"),
                        "2.5.4.8" => Some("ST"),
                        "2.5.4.10" => Some("O"),
                        "2.5.4.11" => Some("OU"),
                        "2.5.4.9" => Some("STREET"),
                        "0.9.2342.19200300.100.1.25" => Some("DC"),
                        "0.9.2342.19200300.100.1.1" => Some("UID"),
                        _ => None,
                    };
                    match (keyword, atv.as_str()) {
                        (Some(k), Ok(v)) => format!("{k}={}", rfc2253_escape(v)),
                        _ => {
                            let value = atv.attr_value();
                            let mut der = vec![value.tag().0 as u8];
                            let len = value.data.len();
                            if len < 0x80 {
                                der.push(len as u8);
                            } else {
                                let be = len.to_be_bytes();
                                let skip = be.iter().take_while(|b| **b == 0).count();
                                der.push(0x80 | (be.len() - skip) as u8);
                                der.extend_from_slice(be.get(skip..).unwrap_or_default());
                            }
                            der.extend_from_slice(value.data);
                            format!("{}=#{}", keyword.map(str::to_string).unwrap_or(oid), hex::encode(der))
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn rfc2253_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl AlipayChannel {
    /// The signed-content variants to try, in order: V1 (without
    /// `sign_type`) before V2; `alipay_cert_sn` excluded before included; empty values dropped
    /// before the legacy retry that keeps them.
    fn content_candidates(fields: &RawForm) -> Vec<Vec<u8>> {
        let has_sn = fields.contains_key("alipay_cert_sn");
        let has_empty = fields.values().any(Vec::is_empty);
        let mut excludes: Vec<&[&str]> = Vec::new();
        if has_sn {
            excludes.push(&["sign", "sign_type", "alipay_cert_sn"]);
        }
        excludes.push(&["sign", "sign_type"]);
        if has_sn {
            excludes.push(&["sign", "alipay_cert_sn"]);
        }
        excludes.push(&["sign"]);
        let mut out = Vec::new();
        for exclude in excludes {
            out.push(sorted_content(fields, exclude, false));
            if has_empty {
                out.push(sorted_content(fields, exclude, true));
            }
        }
        out
    }

    fn check_signature(&self, fields: &RawForm) -> Result<(), ChannelError> {
        let sign_type =
            field_ascii(fields, "sign_type")?.ok_or_else(|| ChannelError::Malformed("sign_type is missing".into()))?;
        if sign_type != self.sign_type.wire_name() {
            // The configured key fixes the scheme; no downgrade, no MD5.
            return Err(ChannelError::Unsupported(format!(
                "sign_type {sign_type} is not accepted (configured {})",
                self.sign_type.wire_name()
            )));
        }
        let sign = fields
            .get("sign")
            .ok_or_else(|| ChannelError::Malformed("sign is missing".into()))?;
        if sign.contains(&b' ') {
            // A space in base64 means something upstream decoded `+` twice.
            return Err(ChannelError::Signature(
                "sign contains a space (a '+' was decoded twice upstream)".into(),
            ));
        }
        let signature = base64::engine::general_purpose::STANDARD
            .decode(sign)
            .map_err(|_| ChannelError::Signature("sign is not base64".into()))?;

        let keys: Vec<&AlipayKey> = match fields.get("alipay_cert_sn") {
            Some(sn) if self.keys.iter().any(|k| k.cert_sn.is_some()) => {
                let sn = std::str::from_utf8(sn).unwrap_or_default();
                let selected: Vec<&AlipayKey> = self.keys.iter().filter(|k| k.cert_sn.as_deref() == Some(sn)).collect();
                if selected.is_empty() {
                    return Err(ChannelError::UnknownKey(format!(
                        "alipay_cert_sn {} is not configured",
                        printable(sn)
                    )));
                }
                selected
            }
            _ => self.keys.iter().collect(),
        };
        for content in Self::content_candidates(fields) {
            // Every key was prepared for the configured sign_type's scheme at build time.
            if keys.iter().any(|k| k.key.verifies(&content, &signature)) {
                return Ok(());
            }
        }
        Err(ChannelError::Signature(format!(
            "{} signature does not verify",
            self.sign_type.wire_name()
        )))
    }

    /// Everything after the signature verified: transcoding, the business checks, the event.
    pub(crate) fn event_from_signed(&self, fields: &RawForm) -> Result<VerifiedEvent, ChannelError> {
        let fields = transcode(fields)?;
        self.check_business(&fields)?;
        normalize(fields)
    }

    /// The event an `alipay.trade.query` answer describes (`response` is the verified
    /// `alipay_trade_query_response` member, code `10000`). The answer names neither the app
    /// nor the seller, so the configured ones are put in (events are deduplicated by app, so
    /// this is the dedup key of the order's notification). Refund fields are left out: the
    /// trade's state is what a query recovers, refunds are events of their own.
    pub(crate) fn event_from_query(&self, response: &serde_json::Map<String, serde_json::Value>) -> Result<VerifiedEvent, ChannelError> {
        let mut fields: BTreeMap<String, String> = response
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "code" | "msg" | "refund_fee" | "gmt_refund" | "out_biz_no"))
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect();
        if let Some(paid) = fields.get("send_pay_date").cloned() {
            fields.insert("gmt_payment".into(), paid);
        }
        fields.insert("app_id".into(), self.app_id.clone());
        if let Some(seller) = &self.seller_id {
            fields.insert("seller_id".into(), seller.clone());
        }
        if let Some(auth) = &self.auth_app_id {
            fields.insert("auth_app_id".into(), auth.clone());
        }
        normalize(fields)
    }

    /// The event of notification-style `fields` payguard built from verified data (a bill's
    /// refund row: `out_trade_no`, `trade_no`, `trade_status`, `out_biz_no`, `refund_fee`,
    /// `gmt_refund`), addressed to this app, with the dedup key of that notification.
    pub(crate) fn event_from_fields(&self, mut fields: BTreeMap<String, String>) -> Result<VerifiedEvent, ChannelError> {
        fields.insert("app_id".into(), self.app_id.clone());
        if let Some(seller) = &self.seller_id {
            fields.insert("seller_id".into(), seller.clone());
        }
        if let Some(auth) = &self.auth_app_id {
            fields.insert("auth_app_id".into(), auth.clone());
        }
        normalize(fields)
    }

    fn check_business(&self, fields: &BTreeMap<String, String>) -> Result<(), ChannelError> {
        let app_id = fields.get("app_id").map(String::as_str);
        if app_id != Some(self.app_id.as_str()) {
            return Err(ChannelError::Business(format!(
                "app_id {} is not the configured app",
                printable(app_id.unwrap_or("(missing)"))
            )));
        }
        if let Some(expected) = &self.auth_app_id {
            let got = fields.get("auth_app_id").map(String::as_str);
            if got != Some(expected.as_str()) {
                return Err(ChannelError::Business(format!(
                    "auth_app_id {} is not the configured merchant app",
                    printable(got.unwrap_or("(missing)"))
                )));
            }
        }
        if let (Some(expected), Some(got)) = (&self.seller_id, fields.get("seller_id")) {
            if got != expected {
                return Err(ChannelError::Business(format!(
                    "seller_id {} is not the configured seller",
                    printable(got)
                )));
            }
        }
        Ok(())
    }
}

/// A field that must be ASCII (ids, enums, amounts) before transcoding.
fn field_ascii<'f>(fields: &'f RawForm, name: &str) -> Result<Option<&'f str>, ChannelError> {
    match fields.get(name) {
        None => Ok(None),
        Some(v) if v.is_ascii() => Ok(std::str::from_utf8(v).ok()),
        Some(_) => Err(ChannelError::Malformed(format!("{name} is not ASCII"))),
    }
}

/// Transcodes every value from the notification's (signed) `charset` into UTF-8.
fn transcode(fields: &RawForm) -> Result<BTreeMap<String, String>, ChannelError> {
    let label = field_ascii(fields, "charset")?.unwrap_or("utf-8");
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes())
        .ok_or_else(|| ChannelError::Malformed(format!("unknown charset {}", printable(label))))?;
    fields
        .iter()
        .map(|(k, v)| {
            encoding
                .decode_without_bom_handling_and_without_replacement(v)
                .map(|s| (k.clone(), s.into_owned()))
                .ok_or_else(|| ChannelError::Malformed(format!("{k} is not valid {}", encoding.name())))
        })
        .collect()
}

/// Maps `trade_status` to the normalized kind: a later `TRADE_SUCCESS` carrying refund
/// fields is a partial refund, a `TRADE_CLOSED` carrying them a full refund.
fn event_kind(fields: &BTreeMap<String, String>) -> EventKind {
    let has = |k: &str| fields.get(k).is_some_and(|v| !v.is_empty());
    let refund_fields = has("refund_fee") || has("gmt_refund");
    match fields.get("trade_status").map(String::as_str) {
        Some("WAIT_BUYER_PAY") => EventKind::PaymentPending,
        Some("TRADE_SUCCESS") if refund_fields || has("out_biz_no") => EventKind::RefundSucceeded,
        Some("TRADE_SUCCESS" | "TRADE_FINISHED") => EventKind::PaymentSucceeded,
        Some("TRADE_CLOSED") if refund_fields => EventKind::RefundSucceeded,
        Some("TRADE_CLOSED") => EventKind::PaymentClosed,
        _ => EventKind::Other,
    }
}

fn yuan_to_fen(fields: &BTreeMap<String, String>, name: &str) -> Result<Option<i64>, ChannelError> {
    match fields.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse_decimal_minor(v, 2)
            .map(Some)
            .map_err(|e| ChannelError::Malformed(format!("{name}: {e}"))),
    }
}

/// Builds the normalized event from verified, transcoded fields.
fn normalize(fields: BTreeMap<String, String>) -> Result<VerifiedEvent, ChannelError> {
    let kind = event_kind(&fields);
    let get = |k: &str| fields.get(k).filter(|v| !v.is_empty()).cloned();
    let out_trade_no = get("out_trade_no").unwrap_or_default();
    if out_trade_no.is_empty() && kind != EventKind::Other {
        return Err(ChannelError::Malformed("out_trade_no is missing".into()));
    }
    let refund = if kind.is_refund() {
        Some(RefundInfo {
            out_refund_no: get("out_biz_no"),
            refund_id: None,
            // Cumulative refunded amount, not this refund's delta.
            amount_minor: yuan_to_fen(&fields, "refund_fee")?,
        })
    } else {
        None
    };
    let time_field = match kind {
        k if k.is_refund() => "gmt_refund",
        EventKind::PaymentClosed => "gmt_close",
        EventKind::PaymentSucceeded => "gmt_payment",
        _ => "notify_time",
    };
    let occurred_at = [time_field, "notify_time"]
        .iter()
        .find_map(|k| fields.get(*k).and_then(|v| beijing_rfc3339(v)));
    let raw = serde_json::Value::Object(
        fields
            .iter()
            .filter(|(k, _)| k.as_str() != "sign")
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    );
    Ok(VerifiedEvent {
        channel: ChannelKind::Alipay,
        kind,
        out_trade_no,
        channel_txn_id: get("trade_no"),
        amount_minor: yuan_to_fen(&fields, "total_amount")?,
        // Domestic Alipay settles in CNY; cross-border currency fields are out of scope.
        currency: Some("CNY".to_string()),
        refund,
        occurred_at,
        notification_id: get("notify_id"),
        raw_status: get("trade_status"),
        merchant: MerchantRef {
            app_id: get("app_id"),
            mch_id: get("seller_id"),
        },
        raw,
    })
}

/// Alipay's test setup is the app key pair of `tests/fixtures/alipay/` playing both sides.
const TEST_APP_ID: &str = "2021000000000001";
const TEST_SELLER_ID: &str = "2088000000000001";

impl ChannelSetup for AlipayConfig {
    const KIND: ChannelKind = ChannelKind::Alipay;
    type Channel = AlipayChannel;
    const SIMULATE_NEEDS: &'static [(SimulateInput, &'static str)] =
        &[(SimulateInput::PrivateKey, ""), (SimulateInput::AppId, "")];
    const EVENT_KINDS: &'static [EventKind] = &[
        EventKind::PaymentSucceeded,
        EventKind::PaymentPending,
        EventKind::PaymentClosed,
        EventKind::RefundSucceeded,
    ];

    fn build(&self) -> Result<AlipayChannel, Vec<ConfigIssue>> {
        AlipayConfig::build(self)
    }

    fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
        simulate(spec, keys)
    }

    /// Alipay stops retrying only on exactly `success`.
    fn backend_acknowledged(status: u16, body: &[u8]) -> bool {
        status == 200 && body == b"success"
    }

    fn test_setup(fixtures: &Path) -> Result<TestSetup, String> {
        Ok(TestSetup {
            config: serde_json::json!({
                "app_id": TEST_APP_ID,
                "seller_id": TEST_SELLER_ID,
                "alipay_public_key": fixture_ref(fixtures, "alipay/app_public_key.pem"),
            }),
            keys: SimulateKeys {
                private_key_pem: Some(read_fixture(fixtures, "alipay/app_private_key.pem")?),
                ..SimulateKeys::default()
            },
            app_id: Some(TEST_APP_ID.into()),
            mch_id: Some(TEST_SELLER_ID.into()),
        })
    }
}

impl Channel for AlipayChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Alipay
    }

    fn verify_signed(&self, req: &NotifyRequest<'_>, _now: Timestamp) -> Result<VerifiedEvent, ChannelError> {
        let fields = parse_form_raw(req.body)?;
        self.check_signature(&fields)?;
        self.event_from_signed(&fields)
    }

    /// HTTP 200 with exactly `success`.
    fn success_ack(&self) -> Ack {
        Ack {
            status: 200,
            content_type: Some("text/plain"),
            body: b"success".to_vec(),
        }
    }

    /// HTTP 200 with `fail`: anything but `success` makes Alipay retry.
    fn failure_ack(&self, _reason: &str) -> Ack {
        Ack {
            status: 200,
            content_type: Some("text/plain"),
            body: b"fail".to_vec(),
        }
    }
}

/// Signs `fields` (UTF-8) like Alipay does with RSA2 and returns the form body with `sign` and
/// `sign_type`. (Only RSA2: legacy SHA1withRSA is verified, never produced.)
fn sign_form(fields: &[(&str, String)], key: &RsaSigningKey) -> Result<Vec<u8>, String> {
    let raw: RawForm = fields
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone().into_bytes()))
        .collect();
    let content = sorted_content(&raw, &["sign", "sign_type"], false);
    let sign = base64::engine::general_purpose::STANDARD.encode(key.sign_sha256(&content)?);
    let mut body = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        body.append_pair(k, v);
    }
    body.append_pair("sign", &sign)
        .append_pair("sign_type", AlipaySignType::Rsa2.wire_name());
    Ok(body.finish().into_bytes())
}

/// Produces a valid RSA2-signed `trade_status_sync` notification for `spec`, signed with
/// `keys.private_key_pem` (which plays the Alipay key). Needs `spec.app_id`; `spec.mch_id` becomes
/// `seller_id`. Supports payment succeeded/pending/closed and refund succeeded.
pub(crate) fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
    let pem_text = keys
        .private_key_pem
        .as_deref()
        .ok_or("alipay simulation needs private_key_pem")?;
    let key = RsaSigningKey::from_pem(pem_text)?;
    let app_id = spec.app_id.clone().ok_or("alipay simulation needs app_id")?;
    let time = beijing_format(spec.at, "%Y-%m-%d %H:%M:%S");
    let mut fields: Vec<(&str, String)> = vec![
        ("charset", "utf-8".into()),
        ("notify_type", "trade_status_sync".into()),
        ("notify_id", spec.notification_id.clone()),
        ("notify_time", time.clone()),
        ("app_id", app_id.clone()),
        ("auth_app_id", app_id),
        ("version", "1.0".into()),
        ("out_trade_no", spec.out_trade_no.clone()),
        ("trade_no", spec.channel_txn_id.clone()),
        ("total_amount", format_minor(spec.amount_minor, 2)),
    ];
    if let Some(seller) = &spec.mch_id {
        fields.push(("seller_id", seller.clone()));
    }
    match spec.kind {
        EventKind::PaymentSucceeded => {
            fields.push(("trade_status", "TRADE_SUCCESS".into()));
            fields.push(("gmt_payment", time));
        }
        EventKind::PaymentPending => fields.push(("trade_status", "WAIT_BUYER_PAY".into())),
        EventKind::PaymentClosed => {
            fields.push(("trade_status", "TRADE_CLOSED".into()));
            fields.push(("gmt_close", time));
        }
        EventKind::RefundSucceeded => {
            let refund = spec
                .refund_amount_minor
                .ok_or("refund simulation needs refund_amount_minor")?;
            let out_refund_no = spec
                .out_refund_no
                .clone()
                .ok_or("refund simulation needs out_refund_no")?;
            fields.push(("trade_status", "TRADE_SUCCESS".into()));
            fields.push(("refund_fee", format_minor(refund, 2)));
            fields.push(("out_biz_no", out_refund_no));
            fields.push(("gmt_refund", time));
        }
        other => return Err(format!("alipay simulation does not produce {}", other.as_str())),
    }
    let body = sign_form(&fields, &key)?;
    Ok(SimulatedNotification {
        headers: Vec::new(),
        content_type: "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use proptest::prelude::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/alipay");

    const DA1: &str = "gmt_create=2024-05-01+12%3A00%3A00&charset=utf-8&gmt_payment=2024-05-01+12%3A00%3A05&notify_time=2024-05-01+12%3A00%3A06&subject=Widget+A%2BB+%E6%B5%8B%E8%AF%95+%26+more&buyer_id=2088102000000001&invoice_amount=88.80&version=1.0&notify_id=2024050100222120006000000000000001&fund_bill_list=%5B%7B%22amount%22%3A%2288.80%22%2C%22fundChannel%22%3A%22ALIPAYACCOUNT%22%7D%5D&notify_type=trade_status_sync&out_trade_no=ORDER-20240501-0001&total_amount=88.80&trade_status=TRADE_SUCCESS&trade_no=2024050122001400000000000001&auth_app_id=2021000000000001&receipt_amount=88.80&point_amount=0.00&app_id=2021000000000001&buyer_pay_amount=88.80&seller_id=2088000000000001&passback_params=k%253Dv&sign=WeUe9vbmcGFoBUE4hhwfw52c4shSlD9imKMzawAfZ8s29eZ%2FezHtxIRoN4dz0HNtbN0Eu9dXXT4H9wL4ct1%2BwAeLSGmCfdB256mmf8QtHbmdSOkccNCkSpvXR%2B%2F4Ag%2FSBvc944g21d0UNdEgWVXLvNj6%2FKpzshysfMIwUkdmKudPXBMea5Ii6qbtV1zfyOXYTMbHNsz9ysPxSG4C%2FAxp27hh7gR3sYC%2FkmpUfsb%2Bqdlk7YZK6Kbf%2FYP1Rukh%2BUCCMMYKahpzf5srNnzw75fOXogO2NCfYH5hRaG1eaTJOmROgjeB51IL6iTW6Gpud%2FRyjpdKQaDLB%2B9riNVqDq9eGg%3D%3D&sign_type=RSA2";
    const DA1_CONTENT: &str = "app_id=2021000000000001&auth_app_id=2021000000000001&buyer_id=2088102000000001&buyer_pay_amount=88.80&charset=utf-8&fund_bill_list=[{\"amount\":\"88.80\",\"fundChannel\":\"ALIPAYACCOUNT\"}]&gmt_create=2024-05-01 12:00:00&gmt_payment=2024-05-01 12:00:05&invoice_amount=88.80&notify_id=2024050100222120006000000000000001&notify_time=2024-05-01 12:00:06&notify_type=trade_status_sync&out_trade_no=ORDER-20240501-0001&passback_params=k%3Dv&point_amount=0.00&receipt_amount=88.80&seller_id=2088000000000001&subject=Widget A+B 测试 & more&total_amount=88.80&trade_no=2024050122001400000000000001&trade_status=TRADE_SUCCESS&version=1.0";
    const DA2: &str = "charset=GBK&notify_type=trade_status_sync&notify_id=2024050100222120006000000000000002&notify_time=2024-05-01+12%3A10%3A00&app_id=2021000000000001&version=1.0&out_trade_no=ORDER-20240501-0002&trade_no=2024050122001400000000000002&trade_status=TRADE_FINISHED&total_amount=0.01&subject=%B2%E2%CA%D4%C9%CC%C6%B7&body=%D6%D0%CE%C4%C3%E8%CA%F6+A%2BB&seller_id=2088000000000001&sign=Czd1ziD7KhQeMaad86NjhjWFihN8xggYgczj%2Bl%2Ff5CzjAUYAfPzaF2iY3V%2Bqb6yTgAJSfYlX%2BIh160Zh3ICM%2BfRF%2BYEssAZtPf%2Fm4cEy0s4KI60AJYcuWGTItOqXCa6n1462hbzOzJvmT98hA4NJVsCkcRlR05EaU4TaonXrr1oNYpwVnCZuwoQjm%2BRbzHoCvZjoQukhYb%2Fg11J8SU20O99DrR92hzijijT1dIYbJhNiy0UBUiivY2lC%2FYTecseElRZa%2F3cXdKwPdK1kJgel%2BcQO3aoEPz3ixOyzUCx4bzqH17tW7A2aVLJ6VQ7V7HeNQNb2cFTah3cWtGim9Zodew%3D%3D&sign_type=RSA2";
    const DA3: &str = "charset=utf-8&notify_type=trade_status_sync&notify_id=2024050100222120006000000000000003&notify_time=2024-05-01+12%3A20%3A00&app_id=2021000000000001&version=1.0&out_trade_no=ORDER-20240501-0003&trade_no=2024050122001400000000000003&trade_status=TRADE_CLOSED&total_amount=12.00&gmt_close=2024-05-01+12%3A19%3A59&sign=EgCJ8SPt1Q9hvgu7AE3ZC98iN8m89Y4EUAExGafVdYuTpi921TbM%2BFcFQqIIhWrKnRcReNFghvdG7Xs0NpH1zh526hgE8W0qer0ryhXYeY3Z3UH9pnzogIxef0xdkgXu%2F06gCDUr0tJf5sjjcBHxEmuS60mvrLqOs8he%2FCEdcvUcq8nCsBHWXyupZvNiJFCnw1lJcGIbgymeznwiXyLSJtFAl5rqJdKGsIDcKhzymsZ4Z59w4OVq1sF0xCSBbk3WZE%2B%2FhQLgYmraw6w9Pye7%2BBcwmX6wSI2gCBP5IoemoEesGhMoFr3x6%2FkQZnU%2BLMGuoqS%2Bdgpl3Deo2M7w2EvT6Q%3D%3D&sign_type=RSA";
    const DA4: &str = "charset=utf-8&notify_type=trade_status_sync&notify_id=2024050100222120006000000000000004&notify_time=2024-05-02+09%3A00%3A01&app_id=2021000000000001&version=1.0&out_trade_no=ORDER-20240501-0001&trade_no=2024050122001400000000000001&trade_status=TRADE_SUCCESS&total_amount=88.80&refund_fee=10.00&out_biz_no=REFUND-20240502-0001&gmt_refund=2024-05-02+09%3A00%3A00.123&gmt_payment=2024-05-01+12%3A00%3A05&seller_id=2088000000000001&sign=Yg%2FZUOZvelnSrqFZcJGsX2VSwtMiUfLmirkpHQgpuNQUhvDegt5R5lMpISv%2Fan5ij3K%2BHB8Aiv02Lq%2FgnBnG3emkr5%2B94HJauBLMTyzK08eb82TzZfUd1Am3bCAaogFUAqqLhrRrMedZhPARlpebTooSEnCJhsIu8bWXCbCCUjUWpq8NOFoHTNt%2FY3THQ1FMC86Z6WWY8cB3m8uWJSeAxQPtGKNEiOTmfn2GsgFe7DY6t45EZUASCXoN0PWbiB9G%2FvwLezORLKezhok1qmluacVpLRXyidz7zJ8LerODoG0jyQGABVrezXtqqtGNfIPjmbWrIs%2FpadoDoPn4gsE9Kg%3D%3D&sign_type=RSA2";

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).expect("fixture")
    }

    fn now() -> Timestamp {
        "2024-05-01T04:00:06Z".parse().expect("timestamp")
    }

    fn config(sign_type: AlipaySignType) -> AlipayConfig {
        AlipayConfig {
            app_id: "2021000000000001".into(),
            auth_app_id: None,
            seller_id: Some("2088000000000001".into()),
            sign_type,
            alipay_public_key: Some(SecretRef::new(fixture("app_public_key.pem"))),
            alipay_cert: None,
            additional_alipay_certs: Vec::new(),
        }
    }

    fn channel(sign_type: AlipaySignType) -> AlipayChannel {
        config(sign_type).build().expect("config builds")
    }

    fn verify(ch: &AlipayChannel, body: &[u8]) -> Result<VerifiedEvent, ChannelError> {
        let headers = HeaderMap::new();
        ch.verify(
            &NotifyRequest {
                headers: &headers,
                body,
            },
            now(),
        )
    }

    fn private_key() -> RsaSigningKey {
        RsaSigningKey::from_pem(&fixture("app_private_key.pem")).expect("key")
    }

    /// `sign` of `content` under RSA2 with the DA vectors' key.
    fn rsa2_sign(content: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(private_key().sign_sha256(content).unwrap())
    }

    #[test]
    fn alipay_da1_builds_the_exact_spec_content() {
        let fields = parse_form_raw(DA1.as_bytes()).unwrap();
        assert_eq!(
            sorted_content(&fields, &["sign", "sign_type"], false),
            DA1_CONTENT.as_bytes()
        );
    }

    #[test]
    fn a_trade_query_answer_is_the_event_its_notification_would_be() {
        let ch = channel(AlipaySignType::Rsa2);
        let member = |status: &str| -> serde_json::Map<String, serde_json::Value> {
            serde_json::from_str(&format!(
                r#"{{"code":"10000","msg":"Success","trade_no":"2024050122001400000000000001","out_trade_no":"ORDER-20240501-0001","buyer_logon_id":"159****5620","trade_status":"{status}","total_amount":"88.80","send_pay_date":"2024-05-01 12:00:05","refund_fee":"1.00"}}"#
            ))
            .unwrap()
        };
        let paid = ch.event_from_query(&member("TRADE_SUCCESS")).unwrap();
        assert_eq!(paid.kind, EventKind::PaymentSucceeded, "refund fields of the answer are not read");
        assert_eq!(paid.amount_minor, Some(8880));
        assert_eq!(paid.occurred_at.as_deref(), Some("2024-05-01T12:00:05+08:00"));
        let notified = verify(&ch, DA1.as_bytes()).unwrap();
        assert_eq!(
            crate::notify::EventKeys::of(&paid, b"query").dedup_key,
            crate::notify::EventKeys::of(&notified, b"notification").dedup_key,
            "the query's event has the notification's dedup key"
        );
        assert_eq!(ch.event_from_query(&member("WAIT_BUYER_PAY")).unwrap().kind, EventKind::PaymentPending);
        assert_eq!(ch.event_from_query(&member("TRADE_CLOSED")).unwrap().kind, EventKind::PaymentClosed);
    }

    #[test]
    fn alipay_da1_rsa2_utf8_verifies_and_normalizes() {
        let ev = verify(&channel(AlipaySignType::Rsa2), DA1.as_bytes()).unwrap();
        assert_eq!(ev.kind, EventKind::PaymentSucceeded);
        assert_eq!(ev.out_trade_no, "ORDER-20240501-0001");
        assert_eq!(ev.amount_minor, Some(8880));
        assert_eq!(ev.currency.as_deref(), Some("CNY"));
        assert_eq!(ev.channel_txn_id.as_deref(), Some("2024050122001400000000000001"));
        assert_eq!(
            ev.notification_id.as_deref(),
            Some("2024050100222120006000000000000001")
        );
        assert_eq!(ev.occurred_at.as_deref(), Some("2024-05-01T12:00:05+08:00"));
        assert_eq!(ev.raw["passback_params"], "k%3Dv");
        assert_eq!(ev.raw["subject"], "Widget A+B 测试 & more");
        assert_eq!(ev.merchant.app_id.as_deref(), Some("2021000000000001"));
        assert_eq!(ev.merchant.mch_id.as_deref(), Some("2088000000000001"));
        assert!(ev.refund.is_none());
        assert!(ev.raw.get("sign").is_none());
    }

    #[test]
    fn alipay_gbk_notify_verifies_on_raw_bytes() {
        let ev = verify(&channel(AlipaySignType::Rsa2), DA2.as_bytes()).unwrap();
        assert_eq!(ev.kind, EventKind::PaymentSucceeded);
        assert_eq!(ev.raw_status.as_deref(), Some("TRADE_FINISHED"));
        assert_eq!(ev.raw["subject"], "测试商品");
        assert_eq!(ev.raw["body"], "中文描述 A+B");
        assert_eq!(ev.amount_minor, Some(1));
    }

    #[test]
    fn alipay_da3_legacy_rsa_sha1_closed_trade_verifies_when_configured() {
        let ev = verify(&channel(AlipaySignType::Rsa), DA3.as_bytes()).unwrap();
        assert_eq!(ev.kind, EventKind::PaymentClosed);
        assert_eq!(ev.amount_minor, Some(1200));
        assert_eq!(ev.occurred_at.as_deref(), Some("2024-05-01T12:19:59+08:00"));
    }

    #[test]
    fn alipay_legacy_rsa_notify_is_refused_when_rsa2_configured() {
        let err = verify(&channel(AlipaySignType::Rsa2), DA3.as_bytes()).unwrap_err();
        assert!(matches!(err, ChannelError::Unsupported(_)), "{err:?}");
    }

    fn legacy_1024_config(public_key_file: &str) -> AlipayConfig {
        let mut cfg = config(AlipaySignType::Rsa);
        cfg.alipay_public_key = Some(SecretRef::new(fixture(public_key_file)));
        cfg
    }

    #[test]
    fn alipay_da5_legacy_rsa_with_a_1024_bit_key_verifies_in_every_key_form() {
        let body = fixture("da5_legacy_rsa1024_body.txt");
        for file in [
            "legacy_rsa1024_public_key.pem",
            "legacy_rsa1024_public_key_pkcs1.pem",
            "legacy_rsa1024_public_key.txt",
        ] {
            let ch = legacy_1024_config(file)
                .build()
                .unwrap_or_else(|e| panic!("{file}: {e:?}"));
            let ev = verify(&ch, body.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(ev.kind, EventKind::PaymentClosed);
            assert_eq!(ev.out_trade_no, "ORDER-20240501-0005");
            assert_eq!(ev.amount_minor, Some(660));
        }
    }

    #[test]
    fn alipay_da5_tampered_or_upgraded_is_refused() {
        let ch = legacy_1024_config("legacy_rsa1024_public_key.pem").build().unwrap();
        let body = fixture("da5_legacy_rsa1024_body.txt");
        let tampered = body.replace("total_amount=6.60", "total_amount=0.01");
        assert!(matches!(
            verify(&ch, tampered.as_bytes()),
            Err(ChannelError::Signature(_))
        ));
        // The configured scheme decides: an RSA2 label on a legacy-configured app is refused.
        let relabelled = body.replace("sign_type=RSA", "sign_type=RSA2");
        assert!(matches!(
            verify(&ch, relabelled.as_bytes()),
            Err(ChannelError::Unsupported(_))
        ));
    }

    #[test]
    fn alipay_rsa2_refuses_a_1024_bit_key_at_sign_type() {
        let mut cfg = legacy_1024_config("legacy_rsa1024_public_key.pem");
        cfg.sign_type = AlipaySignType::Rsa2;
        let issues = cfg.build().unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "sign_type");
        assert_eq!(
            issues[0].message,
            "RSA2 needs an RSA key of at least 2048 bits, alipay_public_key has 1024"
        );
    }

    #[test]
    fn alipay_rsa2_public_key_as_pkcs1_pem_or_bare_console_base64_verifies_da1() {
        let spki = fixture("app_public_key.pem");
        let console: String = spki.lines().filter(|l| !l.starts_with("-----")).collect();
        for key in [fixture("app_public_key_pkcs1.pem"), console] {
            let mut cfg = config(AlipaySignType::Rsa2);
            cfg.alipay_public_key = Some(SecretRef::new(key));
            assert!(verify(&cfg.build().unwrap(), DA1.as_bytes()).is_ok());
        }
    }

    #[test]
    fn alipay_rsa2_signing_reproduces_the_da1_signature() {
        // PKCS#1 v1.5 is deterministic: the simulator's signer must produce DA1's own `sign`.
        let fields = parse_form_raw(DA1.as_bytes()).unwrap();
        let sign = String::from_utf8(fields.get("sign").unwrap().clone()).unwrap();
        assert_eq!(rsa2_sign(DA1_CONTENT.as_bytes()), sign);
    }

    #[test]
    fn alipay_da4_partial_refund_normalizes_to_refund_succeeded() {
        let ev = verify(&channel(AlipaySignType::Rsa2), DA4.as_bytes()).unwrap();
        assert_eq!(ev.kind, EventKind::RefundSucceeded);
        assert_eq!(ev.out_trade_no, "ORDER-20240501-0001");
        let refund = ev.refund.unwrap();
        assert_eq!(refund.out_refund_no.as_deref(), Some("REFUND-20240502-0001"));
        assert_eq!(refund.amount_minor, Some(1000));
        assert_eq!(ev.occurred_at.as_deref(), Some("2024-05-02T09:00:00.123+08:00"));
        // DA1 stays the payment record: same order, different kind.
        let da1 = verify(&channel(AlipaySignType::Rsa2), DA1.as_bytes()).unwrap();
        assert_eq!(da1.out_trade_no, ev.out_trade_no);
        assert_ne!(da1.kind, ev.kind);
    }

    #[test]
    fn alipay_tampered_total_amount_is_refused() {
        let body = DA1.replace("total_amount=88.80", "total_amount=0.01");
        let err = verify(&channel(AlipaySignType::Rsa2), body.as_bytes()).unwrap_err();
        assert!(matches!(err, ChannelError::Signature(_)), "{err:?}");
    }

    #[test]
    fn alipay_html_escaped_fund_bill_list_is_not_repaired() {
        let body = DA1.replace("%22", "%26quot%3B");
        let err = verify(&channel(AlipaySignType::Rsa2), body.as_bytes()).unwrap_err();
        assert!(matches!(err, ChannelError::Signature(_)), "{err:?}");
    }

    #[test]
    fn alipay_double_decoded_passback_params_does_not_verify() {
        let body = DA1.replace("passback_params=k%253Dv", "passback_params=k%3Dv");
        let err = verify(&channel(AlipaySignType::Rsa2), body.as_bytes()).unwrap_err();
        assert!(matches!(err, ChannelError::Signature(_)), "{err:?}");
    }

    #[test]
    fn alipay_v2_content_with_sign_type_fails_and_v1_is_tried_first() {
        let ch = channel(AlipaySignType::Rsa2);
        let fields = parse_form_raw(DA1.as_bytes()).unwrap();
        let signature = base64::engine::general_purpose::STANDARD
            .decode(fields.get("sign").unwrap())
            .unwrap();
        let v2 = sorted_content(&fields, &["sign"], false);
        assert!(!ch.keys[0].key.verifies(&v2, &signature));
        assert_eq!(AlipayChannel::content_candidates(&fields)[0], DA1_CONTENT.as_bytes());
        assert!(verify(&ch, DA1.as_bytes()).is_ok());
    }

    #[test]
    fn alipay_v2_rule_fallback_verifies_gateway_notifications() {
        // A gateway notification signed over the set that includes sign_type.
        let fields: RawForm = [
            ("app_id", "2021000000000001"),
            ("notify_id", "n1"),
            ("sign_type", "RSA2"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.as_bytes().to_vec()))
        .collect();
        let content = sorted_content(&fields, &["sign"], false);
        let sign = rsa2_sign(&content);
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("app_id", "2021000000000001")
            .append_pair("notify_id", "n1")
            .append_pair("sign_type", "RSA2")
            .append_pair("sign", &sign)
            .finish();
        let ev = verify(&channel(AlipaySignType::Rsa2), body.as_bytes()).unwrap();
        assert_eq!(ev.kind, EventKind::Other);
    }

    #[test]
    fn alipay_downgrade_to_rsa_while_rsa2_configured_is_refused() {
        let body = DA1.replace("sign_type=RSA2", "sign_type=RSA");
        let err = verify(&channel(AlipaySignType::Rsa2), body.as_bytes()).unwrap_err();
        assert!(matches!(err, ChannelError::Unsupported(_)), "{err:?}");
        let md5 = DA1.replace("sign_type=RSA2", "sign_type=MD5");
        assert!(matches!(
            verify(&channel(AlipaySignType::Rsa2), md5.as_bytes()),
            Err(ChannelError::Unsupported(_))
        ));
    }

    #[test]
    fn alipay_other_app_id_is_refused_at_business_check() {
        let mut cfg = config(AlipaySignType::Rsa2);
        cfg.app_id = "2021009999999999".into();
        let err = verify(&cfg.build().unwrap(), DA1.as_bytes()).unwrap_err();
        assert!(matches!(err, ChannelError::Business(_)), "{err:?}");
    }

    #[test]
    fn alipay_other_seller_and_auth_app_are_refused() {
        let mut cfg = config(AlipaySignType::Rsa2);
        cfg.seller_id = Some("2088999999999999".into());
        assert!(matches!(
            verify(&cfg.build().unwrap(), DA1.as_bytes()),
            Err(ChannelError::Business(_))
        ));
        let mut cfg = config(AlipaySignType::Rsa2);
        cfg.auth_app_id = Some("2021000000000002".into());
        assert!(matches!(
            verify(&cfg.build().unwrap(), DA1.as_bytes()),
            Err(ChannelError::Business(_))
        ));
        cfg.auth_app_id = Some("2021000000000001".into());
        assert!(verify(&cfg.build().unwrap(), DA1.as_bytes()).is_ok());
    }

    #[test]
    fn alipay_duplicate_parameter_is_malformed() {
        let body = format!("{DA1}&total_amount=0.01");
        let err = verify(&channel(AlipaySignType::Rsa2), body.as_bytes()).unwrap_err();
        assert!(matches!(err, ChannelError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn alipay_sign_with_plus_turned_into_space_is_refused() {
        let body = DA1.replace("%2B", "+");
        let err = verify(&channel(AlipaySignType::Rsa2), body.as_bytes()).unwrap_err();
        assert!(
            matches!(err, ChannelError::Signature(ref m) if m.contains("space")),
            "{err:?}"
        );
    }

    #[test]
    fn alipay_wrong_key_does_not_verify() {
        let mut cfg = config(AlipaySignType::Rsa2);
        cfg.alipay_public_key = None;
        cfg.alipay_cert = Some(SecretRef::new(fixture("alipayPublicCert.crt")));
        let err = verify(&cfg.build().unwrap(), DA1.as_bytes()).unwrap_err();
        assert!(matches!(err, ChannelError::Signature(_)), "{err:?}");
    }

    #[test]
    fn alipay_empty_values_are_dropped_then_retried_included() {
        let ch = channel(AlipaySignType::Rsa2);
        // Signed without the empty value (current SDKs): verifies on the first attempt.
        let with_empty = DA3.replace("charset=utf-8&", "charset=utf-8&body=&");
        let mut rsa_cfg = config(AlipaySignType::Rsa);
        rsa_cfg.seller_id = None;
        assert!(verify(&rsa_cfg.build().unwrap(), with_empty.as_bytes()).is_ok());
        // Signed with `body=` included (older SDKs): verifies on the retry.
        let fields: Vec<(&str, String)> = vec![
            ("app_id", "2021000000000001".into()),
            ("body", String::new()),
            ("out_trade_no", "O1".into()),
        ];
        let raw: RawForm = fields
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone().into_bytes()))
            .collect();
        let content = sorted_content(&raw, &["sign", "sign_type"], true);
        assert_eq!(content, b"app_id=2021000000000001&body=&out_trade_no=O1");
        let sign = rsa2_sign(&content);
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("app_id", "2021000000000001")
            .append_pair("body", "")
            .append_pair("out_trade_no", "O1")
            .append_pair("sign", &sign)
            .append_pair("sign_type", "RSA2")
            .finish();
        assert!(verify(&ch, body.as_bytes()).is_ok());
    }

    #[test]
    fn alipay_cert_sn_matches_the_published_vectors() {
        let sn = |name: &str| {
            let ders = certificate_ders(fixture(name).as_bytes()).unwrap();
            let (_, cert) = X509Certificate::from_der(&ders[0]).unwrap();
            alipay_cert_sn(&cert)
        };
        assert_eq!(sn("alipayAppPublicCert.crt"), "e90dd23a37c5c7b616e003970817ff82");
        assert_eq!(sn("alipayPublicCert.crt"), "6f1e366a31d9575cd546914add04f4af");
        assert_eq!(
            alipay_root_cert_sn(fixture("alipayRootCert.crt").as_bytes()).unwrap(),
            "687b59193f3f462dd5336e5abf83c5d8_02941eef3187dddf3d3b83462e1dfcf6"
        );
    }

    fn cert_mode_channel() -> AlipayChannel {
        let mut cfg = config(AlipaySignType::Rsa2);
        cfg.alipay_public_key = None;
        cfg.alipay_cert = Some(SecretRef::new(fixture("simulate_alipay_cert.crt")));
        cfg.additional_alipay_certs = vec![SecretRef::new(fixture("alipayPublicCert.crt"))];
        cfg.build().unwrap()
    }

    #[test]
    fn alipay_cert_mode_verifies_with_the_first_certificate_key() {
        let ch = cert_mode_channel();
        assert_eq!(ch.keys.len(), 2);
        assert_eq!(ch.keys[1].cert_sn.as_deref(), Some("6f1e366a31d9575cd546914add04f4af"));
        assert!(verify(&ch, DA1.as_bytes()).is_ok());
    }

    #[test]
    fn alipay_cert_sn_selects_the_key_and_unknown_sn_is_unknown_key() {
        let ch = cert_mode_channel();
        let own_sn = ch.keys[0].cert_sn.clone().unwrap();
        let fields = |sn: &str| -> Vec<(&'static str, String)> {
            vec![
                ("app_id", "2021000000000001".into()),
                ("out_trade_no", "ORDER-SN-1".into()),
                ("trade_status", "TRADE_SUCCESS".into()),
                ("total_amount", "1.00".into()),
                ("alipay_cert_sn", sn.to_string()),
            ]
        };
        // Signed with alipay_cert_sn excluded (smartwalle) and included (Java SDK): both verify.
        let excluded = {
            let f = fields(&own_sn);
            let raw: RawForm = f
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone().into_bytes()))
                .collect();
            let content = sorted_content(&raw, &["sign", "sign_type", "alipay_cert_sn"], false);
            let sign = rsa2_sign(&content);
            let mut s = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &f {
                s.append_pair(k, v);
            }
            s.append_pair("sign", &sign).append_pair("sign_type", "RSA2").finish()
        };
        assert!(verify(&ch, excluded.as_bytes()).is_ok());
        let included = sign_form(&fields(&own_sn), &private_key()).unwrap();
        assert!(verify(&ch, &included).is_ok());
        // The SN of the other configured cert selects a key that did not sign: signature failure.
        let other = sign_form(&fields("6f1e366a31d9575cd546914add04f4af"), &private_key()).unwrap();
        assert!(matches!(verify(&ch, &other), Err(ChannelError::Signature(_))));
        let unknown = sign_form(&fields("00000000000000000000000000000000"), &private_key()).unwrap();
        assert!(matches!(verify(&ch, &unknown), Err(ChannelError::UnknownKey(_))));
    }

    #[test]
    fn alipay_config_issues_name_the_field_never_the_secret() {
        let mut cfg = config(AlipaySignType::Rsa2);
        cfg.alipay_public_key = Some(SecretRef::new("not-a-key-SECRETVALUE"));
        let issues = cfg.build().unwrap_err();
        assert_eq!(issues[0].path, "alipay_public_key");
        assert!(!issues[0].message.contains("SECRETVALUE"));
        let mut cfg = config(AlipaySignType::Rsa2);
        cfg.alipay_cert = Some(SecretRef::new(fixture("alipayPublicCert.crt")));
        assert!(cfg.build().is_err(), "key mode and cert mode are exclusive");
        cfg.alipay_public_key = None;
        cfg.alipay_cert = None;
        assert!(cfg.build().is_err(), "a key source is required");
    }

    #[test]
    fn alipay_config_rejects_unknown_fields() {
        let err = serde_json::from_value::<AlipayConfig>(serde_json::json!({"app_id": "1", "bogus": 1}));
        assert!(err.is_err());
        let ok: AlipayConfig =
            serde_json::from_value(serde_json::json!({"app_id": "1", "sign_type": "RSA", "alipay_public_key": "k"}))
                .unwrap();
        assert_eq!(ok.sign_type, AlipaySignType::Rsa);
    }

    #[test]
    fn alipay_acks_are_exact() {
        let ch = channel(AlipaySignType::Rsa2);
        assert_eq!(ch.success_ack().body, b"success");
        assert_eq!(ch.success_ack().status, 200);
        assert_eq!(ch.failure_ack("x").body, b"fail");
    }

    fn sim_spec(kind: EventKind) -> SimulateSpec {
        SimulateSpec {
            out_trade_no: "ORDER-SIM-1".into(),
            amount_minor: 8880,
            currency: "CNY".into(),
            kind,
            out_refund_no: Some("REFUND-SIM-1".into()),
            refund_amount_minor: Some(1000),
            channel_txn_id: "2024050122001400000000000099".into(),
            at: now(),
            notification_id: "sim-notify-1".into(),
            app_id: Some("2021000000000001".into()),
            mch_id: Some("2088000000000001".into()),
        }
    }

    #[test]
    fn alipay_simulate_output_verifies_with_matching_config() {
        let keys = SimulateKeys {
            private_key_pem: Some(fixture("app_private_key.pem")),
            ..Default::default()
        };
        let ch = channel(AlipaySignType::Rsa2);
        for kind in [
            EventKind::PaymentSucceeded,
            EventKind::PaymentPending,
            EventKind::PaymentClosed,
            EventKind::RefundSucceeded,
        ] {
            let n = simulate(&sim_spec(kind), &keys).unwrap();
            let ev = verify(&ch, &n.body).unwrap();
            assert_eq!(ev.kind, kind);
            assert_eq!(ev.out_trade_no, "ORDER-SIM-1");
            assert_eq!(ev.amount_minor, Some(8880));
            assert_eq!(ev.notification_id.as_deref(), Some("sim-notify-1"));
            if kind.is_refund() {
                assert_eq!(ev.refund.unwrap().amount_minor, Some(1000));
            }
        }
        assert!(simulate(&sim_spec(EventKind::PaymentSucceeded), &SimulateKeys::default()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn alipay_arbitrary_bodies_never_panic_or_verify(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert!(verify(&channel(AlipaySignType::Rsa2), &body).is_err());
        }

        #[test]
        fn alipay_arbitrary_form_fields_never_verify(
            pairs in proptest::collection::vec(("[a-z_]{1,12}", "[ -~]{0,24}"), 0..12),
            sign in "[A-Za-z0-9+/]{0,344}={0,2}",
        ) {
            let mut s = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &pairs { s.append_pair(k, v); }
            s.append_pair("sign", &sign).append_pair("sign_type", "RSA2");
            prop_assert!(verify(&channel(AlipaySignType::Rsa2), s.finish().as_bytes()).is_err());
        }
    }
}
