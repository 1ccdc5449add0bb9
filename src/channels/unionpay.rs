//! UnionPay online payment back notification (`backUrl`), version 5.1.0 with `signMethod=01`,
//! See docs/channels.md, "UnionPay".
//!
//! The notification carries its own signing certificate (`signPubKeyCert`). It is trusted only
//! after it chains to the configured UnionPay root (through the configured intermediates), is
//! valid at the injected `now`, and its CN names UnionPay. The signature is
//! SHA256withRSA over the 64 ASCII bytes of `lower_hex(SHA-256(content))`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use jiff::Timestamp;
use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::amount::parse_decimal_minor;
use super::beijing_time::{beijing_format, beijing_rfc3339};
use super::form::{parse_form_raw, sorted_content, RawForm};
use super::keys::{certificate_ders, certificate_rsa_key, RsaKeyError, RsaScheme, RsaSigningKey, RsaVerifyingKey};
use super::{
    fixture_ref, read_fixture, ChannelSetup, SimulateInput, TestSetup,     printable, Ack, Channel, ChannelError, ChannelKind, EventKind, MerchantRef, NotifyRequest, RefundInfo,
    SimulateKeys, SimulateSpec, SimulatedNotification, VerifiedEvent,
};
use crate::secret::SecretRef;
use crate::issue::ConfigIssue;

/// The owner UnionPay's production signing certificates name in their CN (acp SDK
/// `UNIONPAY_CNNAME`).
pub(crate) const UNIONPAY_CN_OWNER: &str = "中国银联股份有限公司";

/// How many verified signing certificates are remembered (they rotate rarely).
const CERT_CACHE_LIMIT: usize = 16;

/// A verified signing certificate's PEM bytes and what it verified to.
type CachedSigner = (Box<[u8]>, Arc<TrustedSigner>);

/// Longest chain walked from the signing certificate to a root.
const MAX_CHAIN_DEPTH: usize = 4;

fn default_cn_owner() -> String {
    UNIONPAY_CN_OWNER.to_string()
}

/// UnionPay back-notification channel configuration (one merchant).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnionpayConfig {
    /// Expected `merId` (merchant code).
    pub(crate) mer_id: String,
    /// UnionPay root certificate(s) (`acp_prod_root.cer`, or the test environment root), PEM or
    /// DER; a PEM bundle may hold several.
    pub(crate) root_cert: SecretRef,
    /// UnionPay intermediate certificate(s) (`acp_prod_middle.cer`), PEM or DER.
    #[serde(default)]
    pub(crate) middle_cert: Option<SecretRef>,
    /// Required owner part of the signing certificate CN (element 2 of the CN split on `@`).
    /// Default `中国银联股份有限公司`; test environments may need `00040000:SIGN`.
    #[serde(default = "default_cn_owner")]
    pub(crate) cn_owner: String,
}

/// The notification signature; UnionPay 5.1.0 keys are 2048-bit RSA.
const SCHEME: RsaScheme = RsaScheme::Sha256;

/// The certificate signature algorithms a configured CA is prepared to verify.
const CERTIFICATE_SCHEMES: [RsaScheme; 4] = [
    RsaScheme::Sha256,
    RsaScheme::Sha384,
    RsaScheme::Sha512,
    RsaScheme::Sha1Legacy,
];

/// A configured CA certificate, kept in owned form, its key prepared once per certificate
/// signature scheme it may have signed with.
#[derive(Debug, Clone)]
struct CaCert {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    tbs: Vec<u8>,
    signature_alg: String,
    signature: Vec<u8>,
    keys: Vec<RsaVerifyingKey>,
    not_before: i64,
    not_after: i64,
}

/// A signing certificate whose chain and CN verified; its validity window is the intersection
/// of every certificate on the path, checked against `now` on each use.
#[derive(Debug)]
struct TrustedSigner {
    key: RsaVerifyingKey,
    not_before: i64,
    not_after: i64,
}

/// A configured UnionPay notification verifier.
#[derive(Debug)]
pub struct UnionpayChannel {
    mer_id: String,
    roots: Vec<CaCert>,
    middles: Vec<CaCert>,
    cn_owner: String,
    /// Verified signing certificates by their exact PEM bytes (at most [`CERT_CACHE_LIMIT`]; only
    /// certificates that chained to a configured root get in). Searched by comparing bytes: cheaper
    /// than hashing a 2 KiB certificate on every notification.
    signers: Mutex<Vec<CachedSigner>>,
}

impl UnionpayConfig {
    /// Resolves and parses the CA certificates. Issues name the config key, never a value.
    pub fn build(&self) -> Result<UnionpayChannel, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        if self.mer_id.trim().is_empty() {
            issues.push(ConfigIssue::new("mer_id", "must not be empty"));
        }
        if self.cn_owner.trim().is_empty() {
            issues.push(ConfigIssue::new("cn_owner", "must not be empty"));
        }
        let mut load = |path: &str, r: &SecretRef| match r.resolve().and_then(|s| parse_ca_bundle(s.expose())) {
            Ok(certs) => certs,
            Err(e) => {
                issues.push(ConfigIssue::new(path, e));
                Vec::new()
            }
        };
        let roots = load("root_cert", &self.root_cert);
        let middles = self
            .middle_cert
            .as_ref()
            .map(|r| load("middle_cert", r))
            .unwrap_or_default();
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(UnionpayChannel {
            mer_id: self.mer_id.clone(),
            roots,
            middles,
            cn_owner: self.cn_owner.clone(),
            signers: Mutex::new(Vec::new()),
        })
    }
}

fn parse_ca_bundle(bytes: &[u8]) -> Result<Vec<CaCert>, String> {
    certificate_ders(bytes)?
        .iter()
        .map(|der| {
            let (_, cert) = X509Certificate::from_der(der).map_err(|_| "certificate does not parse".to_string())?;
            if let Ok(Some(bc)) = cert.basic_constraints() {
                if !bc.value.ca {
                    return Err("certificate is not a CA (basicConstraints ca=false)".to_string());
                }
            }
            // The SHA-2 schemes refuse a CA key below 2048 bits, so such a CA is refused here even
            // if it only ever signed with SHA-1.
            let keys = CERTIFICATE_SCHEMES
                .iter()
                .map(|&scheme| certificate_rsa_key(&cert, scheme))
                .collect::<Result<Vec<_>, RsaKeyError>>()
                .map_err(|e| format!("CA certificate {e}"))?;
            Ok(CaCert {
                subject: cert.subject().as_raw().to_vec(),
                issuer: cert.issuer().as_raw().to_vec(),
                tbs: cert.tbs_certificate.as_ref().to_vec(),
                signature_alg: cert.signature_algorithm.algorithm.to_id_string(),
                signature: cert.signature_value.data.to_vec(),
                keys,
                not_before: cert.validity().not_before.timestamp(),
                not_after: cert.validity().not_after.timestamp(),
            })
        })
        .collect()
}

impl CaCert {
    /// True when this CA made `signature` over `tbs` with the X.509 algorithm `alg_oid` (RSA
    /// PKCS#1 v1.5 with SHA-1/256/384/512; anything else is false).
    fn signed(&self, alg_oid: &str, tbs: &[u8], signature: &[u8]) -> bool {
        RsaScheme::from_x509_signature_oid(alg_oid)
            .and_then(|scheme| self.keys.iter().find(|k| k.scheme() == scheme))
            .is_some_and(|key| key.verifies(tbs, signature))
    }
}

impl UnionpayChannel {
    /// Everything after the signature verified: the merchant check and the event.
    pub(crate) fn event_from_signed(&self, fields: &BTreeMap<&str, &str>) -> Result<VerifiedEvent, ChannelError> {
        let mer_id = fields.get("merId").copied();
        if mer_id != Some(self.mer_id.as_str()) {
            return Err(ChannelError::Business(format!(
                "merId {} is not the configured merchant",
                printable(mer_id.unwrap_or("(missing)"))
            )));
        }
        normalize(fields)
    }

    /// The trusted key of `signPubKeyCert` at `now`: chain to a configured root, CN owner, and
    /// validity of every certificate on the path. Verified chains are cached by
    /// certificate content; validity is still checked against `now` on every call.
    fn signer_key(&self, cert_pem: &[u8], now: i64) -> Result<Arc<TrustedSigner>, ChannelError> {
        let cached = (self.signers.lock().iter())
            .find(|(pem, _)| **pem == *cert_pem)
            .map(|(_, signer)| Arc::clone(signer));
        let signer = match cached {
            Some(signer) => signer,
            None => {
                let signer = Arc::new(self.verify_signer(cert_pem)?);
                let mut cache = self.signers.lock();
                if cache.len() >= CERT_CACHE_LIMIT {
                    cache.clear();
                }
                cache.push((cert_pem.into(), Arc::clone(&signer)));
                signer
            }
        };
        if now < signer.not_before || now > signer.not_after {
            return Err(ChannelError::Signature(
                "signing certificate (or its chain) is expired or not yet valid".into(),
            ));
        }
        Ok(signer)
    }

    fn verify_signer(&self, cert_pem: &[u8]) -> Result<TrustedSigner, ChannelError> {
        let bad = |m: &str| ChannelError::Malformed(m.to_string());
        let block = pem::parse(cert_pem).map_err(|_| bad("signPubKeyCert is not PEM"))?;
        if block.tag() != "CERTIFICATE" {
            return Err(bad("signPubKeyCert is not a CERTIFICATE"));
        }
        let (_, cert) =
            X509Certificate::from_der(block.contents()).map_err(|_| bad("signPubKeyCert does not parse"))?;

        // Owner check (acp SDK CertUtil.verifyCertificate): CN split on '@', element 2.
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default();
        if cn.split('@').nth(2) != Some(self.cn_owner.as_str()) {
            return Err(ChannelError::Signature(format!(
                "signing certificate CN {} does not name the configured owner",
                printable(cn)
            )));
        }

        let mut not_before = cert.validity().not_before.timestamp();
        let mut not_after = cert.validity().not_after.timestamp();
        let mut issuer: Vec<u8> = cert.issuer().as_raw().to_vec();
        let mut tbs: Vec<u8> = cert.tbs_certificate.as_ref().to_vec();
        let mut alg = cert.signature_algorithm.algorithm.to_id_string();
        let mut signature: Vec<u8> = cert.signature_value.data.to_vec();
        for _ in 0..MAX_CHAIN_DEPTH {
            let signed_by = |ca: &&CaCert| ca.subject == issuer && ca.signed(&alg, &tbs, &signature);
            if let Some(root) = self.roots.iter().find(signed_by) {
                let key = certificate_rsa_key(&cert, SCHEME).map_err(|e| match e {
                    RsaKeyError::Format(_) => bad("signPubKeyCert holds no RSA key"),
                    too_small => ChannelError::Signature(format!("signing certificate {too_small}")),
                })?;
                return Ok(TrustedSigner {
                    key,
                    not_before: not_before.max(root.not_before),
                    not_after: not_after.min(root.not_after),
                });
            }
            // A self-issued middle would loop forever; the depth bound stops it as well.
            let Some(middle) = self.middles.iter().find(signed_by).filter(|m| m.subject != m.issuer) else {
                break;
            };
            not_before = not_before.max(middle.not_before);
            not_after = not_after.min(middle.not_after);
            issuer.clone_from(&middle.issuer);
            tbs.clone_from(&middle.tbs);
            alg.clone_from(&middle.signature_alg);
            signature.clone_from(&middle.signature);
        }
        Err(ChannelError::Signature(
            "signing certificate does not chain to the configured UnionPay root".into(),
        ))
    }
}

/// ISO 4217 numeric → alphabetic for the currencies UnionPay online payments settle in.
const CURRENCIES: &[(&str, &str)] = &[
    ("156", "CNY"),
    ("344", "HKD"),
    ("446", "MOP"),
    ("901", "TWD"),
    ("840", "USD"),
    ("978", "EUR"),
    ("826", "GBP"),
    ("392", "JPY"),
    ("410", "KRW"),
    ("702", "SGD"),
    ("036", "AUD"),
    ("124", "CAD"),
    ("458", "MYR"),
    ("764", "THB"),
    ("756", "CHF"),
    ("554", "NZD"),
];

/// The alphabetic code of a UnionPay `currencyCode` (`156` → `CNY`).
pub(crate) fn currency_alpha(numeric: &str) -> Option<&'static str> {
    CURRENCIES.iter().find(|(n, _)| *n == numeric).map(|(_, a)| *a)
}

fn currency_numeric(alpha: &str) -> Option<&'static str> {
    CURRENCIES
        .iter()
        .find(|(_, a)| a.eq_ignore_ascii_case(alpha))
        .map(|(n, _)| *n)
}

/// The fields as text, borrowed from `raw` (sorted by key, as `raw` is).
pub(crate) fn utf8_fields(raw: &RawForm) -> Result<BTreeMap<&str, &str>, ChannelError> {
    raw.iter()
        .map(|(k, v)| {
            std::str::from_utf8(v)
                .map(|s| (k.as_str(), s))
                .map_err(|_| ChannelError::Malformed(format!("{k} is not UTF-8")))
        })
        .collect()
}

/// Maps `txnType`/`respCode` to the normalized kind. `A6` (partial success) is `pending`: the
/// acp demo asks merchants to query before acting on it.
fn event_kind(txn_type: Option<&str>, resp_code: Option<&str>) -> EventKind {
    match (txn_type, resp_code) {
        (Some("01"), Some("00")) => EventKind::PaymentSucceeded,
        (Some("01"), Some("A6")) => EventKind::PaymentPending,
        (Some("01"), _) => EventKind::PaymentFailed,
        // 04 = refund (退货), 31 = same-day void (撤销): both give the money back.
        (Some("04" | "31"), Some("00")) => EventKind::RefundSucceeded,
        (Some("04" | "31"), _) => EventKind::RefundAbnormal,
        _ => EventKind::Other,
    }
}

fn normalize(fields: &BTreeMap<&str, &str>) -> Result<VerifiedEvent, ChannelError> {
    let get = |k: &str| fields.get(k).filter(|v| !v.is_empty()).map(|v| v.to_string());
    let kind = event_kind(get("txnType").as_deref(), get("respCode").as_deref());
    // orderId is the merchant order number; for refunds and voids it is the merchant's refund
    // order number (the original order is referenced only by origQryId).
    let out_trade_no = get("orderId").unwrap_or_default();
    if out_trade_no.is_empty() && kind != EventKind::Other {
        return Err(ChannelError::Malformed("orderId is missing".into()));
    }
    let amount_minor = match get("txnAmt") {
        None => None,
        Some(v) => Some(parse_decimal_minor(&v, 0).map_err(|e| ChannelError::Malformed(format!("txnAmt: {e}")))?),
    };
    let refund = kind.is_refund().then(|| RefundInfo {
        out_refund_no: get("orderId"),
        refund_id: get("queryId"),
        amount_minor,
    });
    let channel_txn_id = if kind.is_refund() {
        get("origQryId").or_else(|| get("queryId"))
    } else {
        get("queryId")
    };
    let raw = serde_json::Value::Object(
        fields
            .iter()
            .filter(|(k, _)| !matches!(**k, "signature" | "signPubKeyCert"))
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect(),
    );
    Ok(VerifiedEvent {
        channel: ChannelKind::Unionpay,
        kind,
        out_trade_no,
        channel_txn_id,
        amount_minor,
        currency: get("currencyCode").and_then(|c| currency_alpha(&c)).map(str::to_string),
        refund,
        occurred_at: get("txnTime").and_then(|t| beijing_rfc3339(&t)),
        notification_id: get("queryId"),
        raw_status: get("respCode"),
        merchant: MerchantRef {
            app_id: None,
            mch_id: get("merId"),
        },
        raw,
    })
}

const TEST_MER_ID: &str = "777290058110048";

impl ChannelSetup for UnionpayConfig {
    const KIND: ChannelKind = ChannelKind::Unionpay;
    type Channel = UnionpayChannel;
    const SIMULATE_NEEDS: &'static [(SimulateInput, &'static str)] = &[
        (SimulateInput::PrivateKey, ""),
        (SimulateInput::Certificate, ""),
        (SimulateInput::MchId, ""),
    ];
    const EVENT_KINDS: &'static [EventKind] = &[
        EventKind::PaymentSucceeded,
        EventKind::PaymentPending,
        EventKind::PaymentFailed,
        EventKind::RefundSucceeded,
    ];

    fn build(&self) -> Result<UnionpayChannel, Vec<ConfigIssue>> {
        UnionpayConfig::build(self)
    }

    fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
        simulate(spec, keys)
    }

    /// `queryId` is 21 digits.
    fn simulated_notification_id(stamp: i64, _uuid: &str) -> String {
        format!("{stamp}{:08}", stamp % 100_000_000)
    }

    /// UnionPay re-sends on any status but 200.
    fn backend_acknowledged(status: u16, _body: &[u8]) -> bool {
        status == 200
    }

    fn test_setup(fixtures: &Path) -> Result<TestSetup, String> {
        Ok(TestSetup {
            config: serde_json::json!({
                "mer_id": TEST_MER_ID,
                "root_cert": fixture_ref(fixtures, "unionpay/root.pem"),
                "middle_cert": fixture_ref(fixtures, "unionpay/middle.pem"),
            }),
            keys: SimulateKeys {
                private_key_pem: Some(read_fixture(fixtures, "unionpay/leaf.key.pem")?),
                certificate_pem: Some(read_fixture(fixtures, "unionpay/leaf.pem")?),
                ..SimulateKeys::default()
            },
            app_id: None,
            mch_id: Some(TEST_MER_ID.into()),
        })
    }
}

impl Channel for UnionpayChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Unionpay
    }

    fn verify_signed(&self, req: &NotifyRequest<'_>, now: Timestamp) -> Result<VerifiedEvent, ChannelError> {
        let raw = parse_form_raw(req.body)?;
        let fields = utf8_fields(&raw)?;
        let get = |k: &str| fields.get(k).copied();
        if get("encoding").is_some_and(|e| !e.eq_ignore_ascii_case("UTF-8")) {
            return Err(ChannelError::Unsupported("encoding other than UTF-8".into()));
        }
        if get("version") != Some("5.1.0") {
            return Err(ChannelError::Unsupported(format!(
                "version {} (only 5.1.0)",
                printable(get("version").unwrap_or("(missing)"))
            )));
        }
        if get("signMethod") != Some("01") {
            // 11 (SHA-256 with secureKey) and 12 (SM3) are out of scope.
            return Err(ChannelError::Unsupported(format!(
                "signMethod {} (only 01)",
                printable(get("signMethod").unwrap_or("(missing)"))
            )));
        }
        let signature = get("signature").ok_or_else(|| ChannelError::Malformed("signature is missing".into()))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .map_err(|_| ChannelError::Signature("signature is not base64".into()))?;
        let cert = get("signPubKeyCert").ok_or_else(|| ChannelError::Malformed("signPubKeyCert is missing".into()))?;
        let signer = self.signer_key(cert.as_bytes(), now.as_second())?;

        let content = sorted_content(&raw, &["signature"], false);
        let digest_hex = hex::encode(Sha256::digest(&content));
        // The hex digest is hashed again by SHA256withRSA.
        if !signer.key.verifies(digest_hex.as_bytes(), &signature) {
            return Err(ChannelError::Signature(
                "SHA256withRSA signature does not verify".into(),
            ));
        }
        self.event_from_signed(&fields)
    }

    /// HTTP 200 with `ok`.
    fn success_ack(&self) -> Ack {
        Ack {
            status: 200,
            content_type: Some("text/plain"),
            body: b"ok".to_vec(),
        }
    }

    /// HTTP 500: any status other than 200 makes UnionPay re-send.
    fn failure_ack(&self, _reason: &str) -> Ack {
        Ack {
            status: 500,
            content_type: Some("text/plain"),
            body: b"fail".to_vec(),
        }
    }
}

/// Produces a valid 5.1.0 / `signMethod=01` back notification for `spec`, signed with
/// `keys.private_key_pem` and carrying `keys.certificate_pem` as `signPubKeyCert`. Needs
/// `spec.mch_id` (merId). Supports payment succeeded/pending/failed and refund succeeded.
pub(crate) fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
    let key = RsaSigningKey::from_pem(
        keys.private_key_pem
            .as_deref()
            .ok_or("unionpay simulation needs private_key_pem")?,
    )?;
    let cert = keys
        .certificate_pem
        .as_deref()
        .ok_or("unionpay simulation needs certificate_pem")?;
    // UnionPay sends the PEM with CRLF line ends, and they are part of the signed content.
    let cert = cert.trim().lines().map(str::trim_end).collect::<Vec<_>>().join("\r\n") + "\r\n";
    let mer_id = spec.mch_id.clone().ok_or("unionpay simulation needs mch_id (merId)")?;
    let currency = currency_numeric(&spec.currency).ok_or_else(|| format!("no UnionPay code for {}", spec.currency))?;
    let (txn_type, resp_code, order_id, amount) = match spec.kind {
        EventKind::PaymentSucceeded => ("01", "00", spec.out_trade_no.clone(), spec.amount_minor),
        EventKind::PaymentPending => ("01", "A6", spec.out_trade_no.clone(), spec.amount_minor),
        EventKind::PaymentFailed => ("01", "03", spec.out_trade_no.clone(), spec.amount_minor),
        EventKind::RefundSucceeded => (
            "04",
            "00",
            spec.out_refund_no
                .clone()
                .ok_or("refund simulation needs out_refund_no")?,
            spec.refund_amount_minor
                .ok_or("refund simulation needs refund_amount_minor")?,
        ),
        other => return Err(format!("unionpay simulation does not produce {}", other.as_str())),
    };
    let mut fields: Vec<(&str, String)> = vec![
        ("version", "5.1.0".into()),
        ("encoding", "UTF-8".into()),
        ("signMethod", "01".into()),
        ("txnType", txn_type.into()),
        ("txnSubType", "01".into()),
        ("bizType", "000201".into()),
        ("accessType", "0".into()),
        ("merId", mer_id),
        ("orderId", order_id),
        ("txnTime", beijing_format(spec.at, "%Y%m%d%H%M%S")),
        ("txnAmt", amount.to_string()),
        ("currencyCode", currency.into()),
        ("queryId", spec.notification_id.clone()),
        ("respCode", resp_code.into()),
        ("respMsg", "成功[0000000]".into()),
        ("signPubKeyCert", cert),
    ];
    if spec.kind.is_refund() {
        fields.push(("origQryId", spec.channel_txn_id.clone()));
    }
    let raw: RawForm = fields
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone().into_bytes()))
        .collect();
    let digest_hex = hex::encode(Sha256::digest(sorted_content(&raw, &["signature"], false)));
    let signature = key.sign_sha256(digest_hex.as_bytes())?;
    let mut body = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &fields {
        body.append_pair(k, v);
    }
    body.append_pair(
        "signature",
        &base64::engine::general_purpose::STANDARD.encode(signature),
    );
    Ok(SimulatedNotification {
        headers: Vec::new(),
        content_type: "application/x-www-form-urlencoded; charset=UTF-8".into(),
        body: body.finish().into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use proptest::prelude::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/unionpay");
    const MER_ID: &str = "777290058110048";

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).expect("fixture")
    }

    fn now() -> Timestamp {
        "2024-05-01T04:00:00Z".parse().unwrap()
    }

    fn config() -> UnionpayConfig {
        UnionpayConfig {
            mer_id: MER_ID.into(),
            root_cert: SecretRef::new(fixture("root.pem")),
            middle_cert: Some(SecretRef::new(fixture("middle.pem"))),
            cn_owner: default_cn_owner(),
        }
    }

    fn channel() -> UnionpayChannel {
        config().build().unwrap()
    }

    fn verify_at(ch: &UnionpayChannel, body: &[u8], at: Timestamp) -> Result<VerifiedEvent, ChannelError> {
        let headers = HeaderMap::new();
        ch.verify(
            &NotifyRequest {
                headers: &headers,
                body,
            },
            at,
        )
    }

    fn verify(ch: &UnionpayChannel, body: &[u8]) -> Result<VerifiedEvent, ChannelError> {
        verify_at(ch, body, now())
    }

    fn du1() -> String {
        fixture("du1_body.txt")
    }

    fn sim_spec(kind: EventKind) -> SimulateSpec {
        SimulateSpec {
            out_trade_no: "ORDER-SIM-3".into(),
            amount_minor: 8880,
            currency: "CNY".into(),
            kind,
            out_refund_no: Some("REFUND-SIM-3".into()),
            refund_amount_minor: Some(1000),
            channel_txn_id: "782405011200000099999".into(),
            at: now(),
            notification_id: "782405011200000011111".into(),
            app_id: None,
            mch_id: Some(MER_ID.into()),
        }
    }

    fn signed_with(cert: &str) -> Vec<u8> {
        let keys = SimulateKeys {
            private_key_pem: Some(fixture("leaf.key.pem")),
            certificate_pem: Some(fixture(cert)),
            ..Default::default()
        };
        simulate(&sim_spec(EventKind::PaymentSucceeded), &keys).unwrap().body
    }

    #[test]
    fn unionpay_du1_derived_vector_verifies_and_normalizes() {
        let ev = verify(&channel(), du1().as_bytes()).unwrap();
        assert_eq!(ev.kind, EventKind::PaymentSucceeded);
        assert_eq!(ev.out_trade_no, "ORDER-20240501-0401");
        assert_eq!(ev.amount_minor, Some(8880));
        assert_eq!(ev.currency.as_deref(), Some("CNY"));
        assert_eq!(ev.channel_txn_id.as_deref(), Some("782405011200000012345"));
        assert_eq!(ev.occurred_at.as_deref(), Some("2024-05-01T12:00:00+08:00"));
        assert_eq!(ev.merchant.mch_id.as_deref(), Some(MER_ID));
        assert_eq!(ev.raw["respMsg"], "成功[0000000]");
        assert!(ev.raw.get("signPubKeyCert").is_none());
    }

    #[test]
    fn unionpay_tampered_amount_is_refused() {
        let body = du1().replace("txnAmt=8880", "txnAmt=1");
        assert!(matches!(
            verify(&channel(), body.as_bytes()),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn unionpay_signature_of_another_notification_is_refused() {
        // DU1 with the (valid) signature of a different notification from the same signer.
        let other = String::from_utf8(signed_with("leaf.pem")).unwrap();
        let sig = other.split('&').find(|p| p.starts_with("signature=")).unwrap();
        let du1 = du1();
        let own = du1.split('&').find(|p| p.starts_with("signature=")).unwrap();
        let body = du1.replace(own, sig);
        assert!(matches!(
            verify(&channel(), body.as_bytes()),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn unionpay_other_merchant_is_refused_after_signature() {
        let mut cfg = config();
        cfg.mer_id = "777290058110099".into();
        assert!(matches!(
            verify(&cfg.build().unwrap(), du1().as_bytes()),
            Err(ChannelError::Business(_))
        ));
    }

    #[test]
    fn unionpay_expired_signing_certificate_is_refused() {
        let err = verify(&channel(), &signed_with("leaf_expired.pem")).unwrap_err();
        assert!(
            matches!(err, ChannelError::Signature(ref m) if m.contains("expired")),
            "{err:?}"
        );
    }

    #[test]
    fn unionpay_validity_is_checked_against_the_injected_clock_even_when_cached() {
        let ch = channel();
        let body = du1();
        assert!(verify(&ch, body.as_bytes()).is_ok());
        let before: Timestamp = "2023-12-31T23:59:59Z".parse().unwrap();
        let after: Timestamp = "2034-01-01T00:00:01Z".parse().unwrap();
        assert!(matches!(
            verify_at(&ch, body.as_bytes(), before),
            Err(ChannelError::Signature(_))
        ));
        assert!(matches!(
            verify_at(&ch, body.as_bytes(), after),
            Err(ChannelError::Signature(_))
        ));
        assert!(verify(&ch, body.as_bytes()).is_ok());
    }

    #[test]
    fn unionpay_wrong_cn_owner_is_refused() {
        let err = verify(&channel(), &signed_with("leaf_wrong_cn.pem")).unwrap_err();
        assert!(
            matches!(err, ChannelError::Signature(ref m) if m.contains("CN")),
            "{err:?}"
        );
    }

    #[test]
    fn unionpay_certificate_from_unconfigured_root_is_refused() {
        let err = verify(&channel(), &signed_with("leaf_rogue.pem")).unwrap_err();
        assert!(
            matches!(err, ChannelError::Signature(ref m) if m.contains("chain")),
            "{err:?}"
        );
    }

    #[test]
    fn unionpay_missing_intermediate_breaks_the_chain() {
        let mut cfg = config();
        cfg.middle_cert = None;
        assert!(matches!(
            verify(&cfg.build().unwrap(), du1().as_bytes()),
            Err(ChannelError::Signature(_))
        ));
        // Any configured anchor ends the path (as in PKIX): the intermediate configured as the
        // root certificate is trusted on its own.
        let mut cfg = config();
        cfg.root_cert = SecretRef::new(fixture("middle.pem"));
        cfg.middle_cert = None;
        assert!(verify(&cfg.build().unwrap(), du1().as_bytes()).is_ok());
    }

    #[test]
    fn unionpay_leaf_certificate_cannot_be_configured_as_ca() {
        let mut cfg = config();
        cfg.root_cert = SecretRef::new(fixture("leaf.pem"));
        assert_eq!(cfg.build().unwrap_err()[0].path, "root_cert");
    }

    #[test]
    fn unionpay_ca_certificate_with_a_1024_bit_key_is_refused() {
        let mut cfg = config();
        cfg.root_cert = SecretRef::new(fixture("weak_root_1024.pem"));
        let issues = cfg.build().unwrap_err();
        assert_eq!(issues[0].path, "root_cert");
        assert!(issues[0].message.contains("1024 bits"), "{}", issues[0].message);
        let mut cfg = config();
        cfg.middle_cert = Some(SecretRef::new(fixture("weak_root_1024.pem")));
        assert_eq!(cfg.build().unwrap_err()[0].path, "middle_cert");
    }

    /// Trusts only `other_root.pem`, which certified `leaf.key.pem`'s key with SHA-384 and
    /// SHA-512 and a 1024-bit key with SHA-256 (generate_key_checks.py).
    fn other_root_channel() -> UnionpayChannel {
        let mut cfg = config();
        cfg.root_cert = SecretRef::new(fixture("other_root.pem"));
        cfg.middle_cert = None;
        cfg.build().unwrap()
    }

    #[test]
    fn unionpay_certificates_signed_with_sha384_and_sha512_chain() {
        let ch = other_root_channel();
        for cert in ["leaf_sha384.pem", "leaf_sha512.pem"] {
            let ev = verify(&ch, &signed_with(cert)).unwrap_or_else(|e| panic!("{cert}: {e}"));
            assert_eq!(ev.out_trade_no, "ORDER-SIM-3");
        }
        // The main chain's leaf was not issued by this root.
        assert!(matches!(
            verify(&ch, &signed_with("leaf.pem")),
            Err(ChannelError::Signature(ref m)) if m.contains("chain")
        ));
    }

    #[test]
    fn unionpay_signing_certificate_with_a_1024_bit_key_is_refused_after_its_chain_verifies() {
        // Signed with the 2048-bit leaf key; the carried 1024-bit certificate is refused first.
        let err = verify(&other_root_channel(), &signed_with("leaf_1024.pem")).unwrap_err();
        assert!(
            matches!(err, ChannelError::Signature(ref m) if m.contains("1024 bits")),
            "{err:?}"
        );
    }

    #[test]
    fn unionpay_other_versions_and_sign_methods_are_unsupported() {
        let body = du1().replace("signMethod=01", "signMethod=11");
        assert!(matches!(
            verify(&channel(), body.as_bytes()),
            Err(ChannelError::Unsupported(_))
        ));
        let body = du1().replace("version=5.1.0", "version=5.0.0");
        assert!(matches!(
            verify(&channel(), body.as_bytes()),
            Err(ChannelError::Unsupported(_))
        ));
    }

    #[test]
    fn unionpay_duplicate_parameter_is_malformed() {
        let body = format!("{}&txnAmt=1", du1());
        assert!(matches!(
            verify(&channel(), body.as_bytes()),
            Err(ChannelError::Malformed(_))
        ));
    }

    #[test]
    fn unionpay_cn_owner_is_configurable_for_test_environments() {
        let mut cfg = config();
        cfg.cn_owner = "00040000:SIGN".into();
        assert!(matches!(
            verify(&cfg.build().unwrap(), du1().as_bytes()),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn unionpay_currency_codes_map_to_iso_alpha() {
        assert_eq!(currency_alpha("156"), Some("CNY"));
        assert_eq!(currency_alpha("344"), Some("HKD"));
        assert_eq!(currency_alpha("840"), Some("USD"));
        assert_eq!(currency_alpha("999"), None);
        assert_eq!(currency_numeric("cny"), Some("156"));
    }

    #[test]
    fn unionpay_acks_and_config() {
        let ch = channel();
        assert_eq!(ch.success_ack().status, 200);
        assert_eq!(ch.success_ack().body, b"ok");
        assert_ne!(ch.failure_ack("x").status, 200);
        assert!(serde_json::from_value::<UnionpayConfig>(
            serde_json::json!({"mer_id": "1", "root_cert": "x", "bad": 1})
        )
        .is_err());
        let cfg: UnionpayConfig = serde_json::from_value(serde_json::json!({"mer_id": "1", "root_cert": "x"})).unwrap();
        assert_eq!(cfg.cn_owner, UNIONPAY_CN_OWNER);
        let issues = cfg.build().unwrap_err();
        assert_eq!(issues[0].path, "root_cert");
    }

    #[test]
    fn unionpay_simulate_output_verifies_with_matching_config() {
        let keys = SimulateKeys {
            private_key_pem: Some(fixture("leaf.key.pem")),
            certificate_pem: Some(fixture("leaf.pem")),
            ..Default::default()
        };
        let ch = channel();
        for kind in [
            EventKind::PaymentSucceeded,
            EventKind::PaymentPending,
            EventKind::PaymentFailed,
            EventKind::RefundSucceeded,
        ] {
            let n = simulate(&sim_spec(kind), &keys).unwrap();
            let ev = verify(&ch, &n.body).unwrap();
            assert_eq!(ev.kind, kind);
            if kind.is_refund() {
                let refund = ev.refund.unwrap();
                assert_eq!(refund.out_refund_no.as_deref(), Some("REFUND-SIM-3"));
                assert_eq!(refund.amount_minor, Some(1000));
                assert_eq!(ev.channel_txn_id.as_deref(), Some("782405011200000099999"));
            } else {
                assert_eq!(ev.out_trade_no, "ORDER-SIM-3");
                assert_eq!(ev.amount_minor, Some(8880));
            }
        }
        assert!(simulate(&sim_spec(EventKind::PaymentSucceeded), &SimulateKeys::default()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn unionpay_arbitrary_bodies_never_panic_or_verify(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert!(verify(&channel(), &body).is_err());
        }

        #[test]
        fn unionpay_arbitrary_fields_with_real_cert_never_verify(
            pairs in proptest::collection::vec(("[a-zA-Z]{1,10}", "[ -~]{0,20}"), 0..8),
            sig in "[A-Za-z0-9+/]{342}==",
        ) {
            let mut s = form_urlencoded::Serializer::new(String::new());
            s.append_pair("version", "5.1.0").append_pair("signMethod", "01").append_pair("merId", MER_ID);
            for (k, v) in &pairs { s.append_pair(k, v); }
            s.append_pair("signPubKeyCert", &fixture("leaf.pem")).append_pair("signature", &sig);
            prop_assert!(verify(&channel(), s.finish().as_bytes()).is_err());
        }
    }
}
