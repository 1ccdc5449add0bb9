//! Standard Webhooks v1, both directions:
//!
//! * inbound: a generic channel for any provider that signs with `webhook-id`,
//!   `webhook-timestamp` and `webhook-signature: v1,<base64>` (Svix's `svix-*` names too), with a
//!   configured mapping from the provider's payload to the normalized event;
//! * outbound: [`StandardWebhookSigner`], which signs what payguard forwards to the backend
//!   so any Standard Webhooks library can check it.
//!
//! Why not the `standardwebhooks` crate (1.3): payguard needs what its `Webhook::verify` does not
//! offer — payloads that are any bytes (it requires UTF-8), a configured tolerance and an
//! injected clock (it fixes five minutes against the system time), several secrets live at once
//! during a rotation, exactly one value of each header (it reads the first of repeated ones;
//! payguard refuses them), and the Svix `svix-*` header names. Signing the forwarded request is
//! the same few lines either way, and keeping both directions here lets one test suite cover
//! them. The MAC itself is the `hmac`/`sha2` crates', compared in constant time with `subtle`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD as BASE64};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::amount::{parse_decimal_minor, AmountError};
use super::{
    single_header, Ack, Channel, ChannelError, ChannelKind, ChannelSetup, EventKind, MerchantRef, NotifyRequest,
    RefundInfo, SimulateInput, SimulateKeys, SimulateSpec, SimulatedNotification, TestSetup, VerifiedEvent,
};
use crate::secret::{Secret, SecretRef};
use crate::issue::ConfigIssue;

/// Prefix of Standard Webhooks symmetric secrets; the rest is base64 of the key.
const SECRET_PREFIX: &str = "whsec_";
/// The spec's recommended minimum key size, enforced for secrets payguard signs with.
const MIN_SIGNING_KEY_BYTES: usize = 24;

/// Standard base64 that tolerates missing padding, as the Python library does by appending `==`.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

/// A generic Standard Webhooks endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StandardWebhooksConfig {
    /// Signing secrets (`whsec_<base64>`); several are accepted while a secret is rotated.
    pub(crate) secrets: Vec<SecretRef>,
    /// Largest accepted distance between `webhook-timestamp` and now, both directions, e.g. "5m".
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) tolerance: Duration,
    /// Where the normalized fields live in the provider's payload.
    #[serde(default)]
    pub(crate) mapping: PayloadMapping,
}

/// JSON pointers (RFC 6901, e.g. `/data/out_trade_no`) into the payload. The defaults match
/// the conventional `{"type", "timestamp", "data": {...}}` shape and [`simulate`].
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayloadMapping {
    /// Merchant order number (string or integer). Required for every kind but `other`.
    #[serde(default = "default_out_trade_no")]
    pub(crate) out_trade_no: String,
    /// Amount. Without `amount_exponent`: integer minor units (JSON integer or digit string).
    #[serde(default = "default_amount")]
    pub(crate) amount: Option<String>,
    /// When set, `amount` is in major units as decimal text (`"88.80"`) or a JSON integer, with
    /// this many fraction digits (2 for CNY/USD, 0 for JPY). JSON fractions are refused: they
    /// would go through floating point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) amount_exponent: Option<u32>,
    /// ISO 4217 currency code (upper-cased).
    #[serde(default = "default_currency")]
    pub(crate) currency: Option<String>,
    /// Event type value, mapped through `kinds`.
    #[serde(default = "default_kind")]
    pub(crate) kind: Option<String>,
    /// Event type value → normalized kind (`payment.succeeded`, `refund.succeeded`, ...). Values
    /// not listed here that already are normalized kind names map to themselves; others are `other`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) kinds: BTreeMap<String, String>,
    /// Provider transaction id.
    #[serde(default = "default_channel_txn_id")]
    pub(crate) channel_txn_id: Option<String>,
    /// When it happened (RFC 3339 string or unix seconds).
    #[serde(default = "default_occurred_at")]
    pub(crate) occurred_at: Option<String>,
    /// Merchant refund number for refund kinds.
    #[serde(default = "default_out_refund_no")]
    pub(crate) out_refund_no: Option<String>,
    /// Refund amount for refund kinds, read like `amount`.
    #[serde(default = "default_refund_amount")]
    pub(crate) refund_amount: Option<String>,
}

fn default_out_trade_no() -> String {
    "/data/out_trade_no".into()
}
fn default_amount() -> Option<String> {
    Some("/data/amount".into())
}
fn default_currency() -> Option<String> {
    Some("/data/currency".into())
}
fn default_kind() -> Option<String> {
    Some("/type".into())
}
fn default_channel_txn_id() -> Option<String> {
    Some("/data/transaction_id".into())
}
fn default_occurred_at() -> Option<String> {
    Some("/timestamp".into())
}
fn default_out_refund_no() -> Option<String> {
    Some("/data/out_refund_no".into())
}
fn default_refund_amount() -> Option<String> {
    Some("/data/refund_amount".into())
}

impl Default for PayloadMapping {
    fn default() -> Self {
        Self {
            out_trade_no: default_out_trade_no(),
            amount: default_amount(),
            amount_exponent: None,
            currency: default_currency(),
            kind: default_kind(),
            kinds: BTreeMap::new(),
            channel_txn_id: default_channel_txn_id(),
            occurred_at: default_occurred_at(),
            out_refund_no: default_out_refund_no(),
            refund_amount: default_refund_amount(),
        }
    }
}

impl StandardWebhooksConfig {
    /// Resolves and decodes the secrets and checks the mapping. Problems name the field and the
    /// secret's source, never its value.
    pub fn build(&self) -> Result<StandardWebhooks, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut keys = Vec::new();
        if self.secrets.is_empty() {
            issues.push(ConfigIssue::new("secrets", "at least one whsec_ secret is required"));
        }
        for (i, source) in self.secrets.iter().enumerate() {
            match source.resolve().and_then(|s| decode_secret(s.expose())) {
                Ok(key) => keys.push(key),
                Err(e) => issues.push(ConfigIssue::new(format!("secrets[{i}]"), e)),
            }
        }
        if self.tolerance.is_zero() {
            issues.push(ConfigIssue::new("tolerance", "must be greater than zero"));
        }
        let m = &self.mapping;
        let pointers = [
            ("out_trade_no", Some(&m.out_trade_no)),
            ("amount", m.amount.as_ref()),
            ("currency", m.currency.as_ref()),
            ("kind", m.kind.as_ref()),
            ("channel_txn_id", m.channel_txn_id.as_ref()),
            ("occurred_at", m.occurred_at.as_ref()),
            ("out_refund_no", m.out_refund_no.as_ref()),
            ("refund_amount", m.refund_amount.as_ref()),
        ];
        for (name, pointer) in pointers {
            if let Some(p) = pointer.filter(|p| !p.is_empty() && !p.starts_with('/')) {
                issues.push(ConfigIssue::new(
                    format!("mapping.{name}"),
                    format!("{p:?} is not a JSON pointer (starts with /)"),
                ));
            }
        }
        if m.amount_exponent.is_some_and(|e| e > 18) {
            issues.push(ConfigIssue::new("mapping.amount_exponent", "must be at most 18"));
        }
        let mut kinds = BTreeMap::new();
        for (value, kind) in &m.kinds {
            match parse_event_kind(kind) {
                Some(k) => {
                    kinds.insert(value.clone(), k);
                }
                None => issues.push(ConfigIssue::new(
                    format!("mapping.kinds.{value}"),
                    format!("{kind:?} is not a normalized event kind"),
                )),
            }
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(StandardWebhooks {
            keys,
            tolerance_secs: i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX),
            mapping: self.mapping.clone(),
            kinds,
        })
    }
}

fn parse_event_kind(name: &str) -> Option<EventKind> {
    serde_json::from_value(Value::String(name.to_string())).ok()
}

/// Decodes `whsec_<base64>` (prefix optional, padding optional) into the HMAC key.
fn decode_secret(text: &[u8]) -> Result<Secret, String> {
    let text = std::str::from_utf8(text)
        .map_err(|_| "secret is not text".to_string())?
        .trim();
    let b64 = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
    let key = BASE64_LENIENT
        .decode(b64)
        .map_err(|_| "secret is not whsec_ followed by base64".to_string())?;
    if key.is_empty() {
        return Err("secret is empty".into());
    }
    Ok(Secret::from_bytes(key))
}

/// A configured inbound Standard Webhooks verifier.
#[derive(Clone)]
pub struct StandardWebhooks {
    keys: Vec<Secret>,
    tolerance_secs: i64,
    mapping: PayloadMapping,
    kinds: BTreeMap<String, EventKind>,
}

impl fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandardWebhooks")
            .field("keys", &self.keys.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .field("mapping", &self.mapping)
            .finish_non_exhaustive()
    }
}

/// HMAC-SHA256 over `msg_id.timestamp.body`.
fn mac(key: &[u8], msg_id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in [msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Signs one message: `v1,<base64 HMAC-SHA256(secret, msg_id "." timestamp "." body)>`, the
/// `webhook-signature` value. `secret` is the decoded key (the bytes after `whsec_`).
pub(crate) fn sign_standard_webhook(secret: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        BASE64.encode(mac(secret, msg_id, &timestamp.to_string(), body))
    )
}

/// Signs requests payguard forwards to the backend.
#[derive(Clone)]
pub struct StandardWebhookSigner {
    key: Secret,
}

impl fmt::Debug for StandardWebhookSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StandardWebhookSigner(<redacted>)")
    }
}

impl StandardWebhookSigner {
    /// Parses a `whsec_<base64>` secret (at least 24 decoded bytes, the spec's minimum).
    /// The error never contains the secret.
    pub fn from_whsec(text: &str) -> Result<Self, String> {
        let key = decode_secret(text.as_bytes())?;
        if key.expose().len() < MIN_SIGNING_KEY_BYTES {
            return Err(format!("secret must decode to at least {MIN_SIGNING_KEY_BYTES} bytes"));
        }
        Ok(Self { key })
    }

    /// Resolves `source` (`env:`, `file:`, inline) and parses it like [`Self::from_whsec`].
    pub(crate) fn from_secret_ref(source: &SecretRef) -> Result<Self, String> {
        let secret = source.resolve()?;
        let text = secret.expose_str().map_err(|e| format!("{}: {e}", source.describe()))?;
        Self::from_whsec(text).map_err(|e| format!("{}: {e}", source.describe()))
    }

    /// The `webhook-signature` value for one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        sign_standard_webhook(self.key.expose(), msg_id, timestamp, body)
    }

    /// The three headers to send: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    pub fn headers(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
        [
            ("webhook-id", msg_id.to_string()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", self.sign(msg_id, timestamp, body)),
        ]
    }
}

const TEST_SECRET: &str = "whsec_cGF5Z3VhcmQtdGVzdC1zdGFuZGFyZC13ZWJob29rcyE=";

impl ChannelSetup for StandardWebhooksConfig {
    const KIND: ChannelKind = ChannelKind::StandardWebhooks;
    type Channel = StandardWebhooks;
    const SIMULATE_NEEDS: &'static [(SimulateInput, &'static str)] = &[(SimulateInput::Secret, "whsec_…")];
    // The default mapping takes the normalized kind names as they are.
    const EVENT_KINDS: &'static [EventKind] = EventKind::NORMALIZED;
    const SIGNATURE_HEADER: Option<&'static str> = Some("webhook-signature");
    const SIGNED_TIMESTAMP: bool = true;

    fn build(&self) -> Result<StandardWebhooks, Vec<ConfigIssue>> {
        StandardWebhooksConfig::build(self)
    }

    fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
        simulate(spec, keys)
    }

    fn simulated_notification_id(_stamp: i64, uuid: &str) -> String {
        format!("msg_{uuid}")
    }

    fn test_setup(_fixtures: &Path) -> Result<TestSetup, String> {
        Ok(TestSetup {
            config: serde_json::json!({"secrets": [TEST_SECRET]}),
            keys: SimulateKeys {
                secret: Some(TEST_SECRET.as_bytes().to_vec()),
                ..SimulateKeys::default()
            },
            app_id: None,
            mch_id: None,
        })
    }
}

impl Channel for StandardWebhooks {
    fn kind(&self) -> ChannelKind {
        ChannelKind::StandardWebhooks
    }

    fn verify_signed(&self, req: &NotifyRequest<'_>, now: Timestamp) -> Result<VerifiedEvent, ChannelError> {
        let h = req.headers;
        // Svix sends the same scheme under svix-* names; webhook-* wins when both exist.
        let prefix = if h.contains_key("webhook-id") || !h.contains_key("svix-id") {
            "webhook-"
        } else {
            "svix-"
        };
        let header = |name: &str| {
            let full = format!("{prefix}{name}");
            single_header(h, &full)?.ok_or_else(|| ChannelError::Malformed(format!("header {full} is missing")))
        };
        let msg_id = header("id")?;
        let timestamp = header("timestamp")?;
        let signatures = header("signature")?;
        // The signed content joins id, timestamp and body with '.', so neither may contain one.
        if msg_id.is_empty() || msg_id.contains('.') {
            return Err(ChannelError::Malformed("webhook-id is empty or contains '.'".into()));
        }
        if timestamp.is_empty() || timestamp.len() > 12 || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ChannelError::Malformed("webhook-timestamp is not unix seconds".into()));
        }
        let ts: i64 = timestamp
            .parse()
            .map_err(|_| ChannelError::Malformed("webhook-timestamp".into()))?;
        // Five minutes both directions ("too old" / "too new").
        if now.as_second().abs_diff(ts) > self.tolerance_secs.unsigned_abs() {
            return Err(ChannelError::Stale(format!(
                "webhook-timestamp {ts} is outside the {}s window",
                self.tolerance_secs
            )));
        }
        let candidates: Vec<Vec<u8>> = signatures
            .split(' ')
            .filter_map(|item| item.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, sig)| BASE64_LENIENT.decode(sig).ok())
            .collect();
        if candidates.is_empty() {
            return Err(ChannelError::Signature("webhook-signature has no v1 signature".into()));
        }
        let mut matched = subtle::Choice::from(0);
        for key in &self.keys {
            let expected = mac(key.expose(), msg_id, timestamp, req.body);
            for candidate in &candidates {
                matched |= expected.as_slice().ct_eq(candidate.as_slice());
            }
        }
        if !bool::from(matched) {
            return Err(ChannelError::Signature(
                "no v1 signature matches a configured secret".into(),
            ));
        }
        let payload: Value =
            serde_json::from_slice(req.body).map_err(|e| ChannelError::Malformed(format!("payload: {e}")))?;
        self.normalize(payload, msg_id)
    }

    fn success_ack(&self) -> Ack {
        Ack::empty(204)
    }

    fn failure_ack(&self, reason: &str) -> Ack {
        // Any non-2xx retries; never 410, which tells the sender to disable the endpoint.
        Ack::text(400, reason)
    }
}

impl StandardWebhooks {
    fn normalize(&self, payload: Value, msg_id: &str) -> Result<VerifiedEvent, ChannelError> {
        let m = &self.mapping;
        let at = |pointer: &Option<String>| {
            pointer
                .as_deref()
                .and_then(|p| payload.pointer(p))
                .filter(|v| !v.is_null())
        };
        let text = |pointer: &Option<String>, field: &str| -> Result<Option<String>, ChannelError> {
            match at(pointer) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
                Some(_) => Err(ChannelError::Malformed(format!("{field} is not a string"))),
            }
        };
        let raw_status = text(&m.kind, "kind")?;
        let kind = match raw_status.as_deref() {
            Some(value) => self
                .kinds
                .get(value)
                .copied()
                .or_else(|| parse_event_kind(value))
                .unwrap_or(EventKind::Other),
            None => EventKind::Other,
        };
        let out_trade_no = text(&Some(m.out_trade_no.clone()), "out_trade_no")?.unwrap_or_default();
        if kind != EventKind::Other && out_trade_no.is_empty() {
            return Err(ChannelError::Malformed(format!(
                "payload has no out_trade_no at {}",
                m.out_trade_no
            )));
        }
        let amount = |pointer: &Option<String>, field: &str| -> Result<Option<i64>, ChannelError> {
            at(pointer).map(|v| self.amount_minor(v, field)).transpose()
        };
        let refund = if kind.is_refund() {
            Some(RefundInfo {
                out_refund_no: text(&m.out_refund_no, "out_refund_no")?,
                refund_id: None,
                amount_minor: amount(&m.refund_amount, "refund_amount")?,
            })
        } else {
            None
        };
        let occurred_at = match at(&m.occurred_at) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|s| Timestamp::from_second(s).ok())
                .map(|t| t.to_string()),
            _ => None,
        };
        Ok(VerifiedEvent {
            channel: ChannelKind::StandardWebhooks,
            kind,
            out_trade_no,
            channel_txn_id: text(&m.channel_txn_id, "channel_txn_id")?,
            amount_minor: amount(&m.amount, "amount")?,
            currency: text(&m.currency, "currency")?.map(|c| c.to_ascii_uppercase()),
            refund,
            occurred_at,
            notification_id: Some(msg_id.to_string()),
            raw_status,
            merchant: MerchantRef::default(),
            raw: payload,
        })
    }

    /// Reads an amount per the mapping: integer minor units, or major units with
    /// `amount_exponent` fraction digits. Never through floating point.
    fn amount_minor(&self, value: &Value, field: &str) -> Result<i64, ChannelError> {
        let exponent = self.mapping.amount_exponent.unwrap_or(0);
        let bad = |e: AmountError| ChannelError::Malformed(format!("{field}: {e}"));
        match value {
            Value::Number(n) => match n.as_i64() {
                Some(v) => v
                    .checked_mul(10_i64.checked_pow(exponent).ok_or(bad(AmountError::Overflow))?)
                    .ok_or(bad(AmountError::Overflow)),
                None => Err(ChannelError::Malformed(format!(
                    "{field} must be an integer or a decimal string"
                ))),
            },
            Value::String(s) => parse_decimal_minor(s, exponent).map_err(bad),
            _ => Err(ChannelError::Malformed(format!(
                "{field} must be an integer or a decimal string"
            ))),
        }
    }
}

/// Produces a signed Standard Webhooks message in the default payload shape
/// (`{"type", "timestamp", "data": {out_trade_no, amount, currency, transaction_id, ...}}`),
/// signed with `keys.secret` (the `whsec_…` text).
pub(crate) fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
    let secret = keys
        .secret
        .as_deref()
        .ok_or("standard_webhooks needs a whsec_ secret")?;
    let key = decode_secret(secret)?;
    // The signed content joins id, timestamp and body with '.', so `verify` refuses such ids.
    if spec.notification_id.is_empty() || spec.notification_id.contains('.') {
        return Err("standard_webhooks notification id must be non-empty and without '.'".into());
    }
    let mut data = json!({
        "out_trade_no": spec.out_trade_no,
        "amount": spec.amount_minor,
        "currency": spec.currency.to_ascii_uppercase(),
        "transaction_id": spec.channel_txn_id,
    });
    if spec.kind.is_refund() {
        if let Some(map) = data.as_object_mut() {
            if let Some(no) = &spec.out_refund_no {
                map.insert("out_refund_no".into(), Value::String(no.clone()));
            }
            if let Some(amount) = spec.refund_amount_minor {
                map.insert("refund_amount".into(), Value::from(amount));
            }
        }
    }
    let body = json!({"type": spec.kind.as_str(), "timestamp": spec.at.to_string(), "data": data})
        .to_string()
        .into_bytes();
    let ts = spec.at.as_second();
    let signature = sign_standard_webhook(key.expose(), &spec.notification_id, ts, &body);
    Ok(SimulatedNotification {
        headers: vec![
            ("webhook-id".into(), spec.notification_id.clone()),
            ("webhook-timestamp".into(), ts.to_string()),
            ("webhook-signature".into(), signature),
        ],
        content_type: "application/json".into(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::test_support::{at, headers};
    use http::{HeaderMap, HeaderValue};
    use proptest::prelude::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW1_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW1_TS: i64 = 1614265330;
    const SW1_BODY: &str = r#"{"test": 2432232314}"#;
    const SW1_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const SW2_ID: &str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    const SW2_TS: i64 = 1714536000;
    const SW2_BODY: &str = r#"{"type":"payment.succeeded","timestamp":"2024-05-01T04:00:00Z","data":{"out_trade_no":"ORDER-20240501-0301","amount":8880,"currency":"CNY"}}"#;
    const SW2_SIG: &str = "v1,YL2H1zQDTgiQs2xQxnnjOQjNbbDhRVpoSkMJNj6COtI=";

    fn config() -> StandardWebhooksConfig {
        StandardWebhooksConfig {
            secrets: vec![SecretRef::new(SECRET)],
            tolerance: default_tolerance(),
            mapping: PayloadMapping::default(),
        }
    }

    fn channel() -> StandardWebhooks {
        config().build().unwrap()
    }

    fn verify_with(
        ch: &StandardWebhooks,
        id: &str,
        ts: &str,
        sig: &str,
        body: &str,
        now: i64,
    ) -> Result<VerifiedEvent, ChannelError> {
        let h = headers(&[
            ("webhook-id", id),
            ("webhook-timestamp", ts),
            ("webhook-signature", sig),
        ]);
        ch.verify(
            &NotifyRequest {
                headers: &h,
                body: body.as_bytes(),
            },
            at(now),
        )
    }

    fn verify_sw2(sig: &str, body: &str, now: i64) -> Result<VerifiedEvent, ChannelError> {
        verify_with(&channel(), SW2_ID, &SW2_TS.to_string(), sig, body, now)
    }

    #[test]
    fn sw1_official_vector_signs_and_verifies() {
        let signer = StandardWebhookSigner::from_whsec(SECRET).unwrap();
        assert_eq!(signer.sign(SW1_ID, SW1_TS, SW1_BODY.as_bytes()), SW1_SIG);
        let event = verify_with(&channel(), SW1_ID, &SW1_TS.to_string(), SW1_SIG, SW1_BODY, SW1_TS).unwrap();
        assert_eq!(event.kind, EventKind::Other);
        assert_eq!(event.notification_id.as_deref(), Some(SW1_ID));
    }

    #[test]
    fn sw1_near_miss_signature_is_rejected() {
        let near_miss = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";
        let err = verify_with(&channel(), SW1_ID, &SW1_TS.to_string(), near_miss, SW1_BODY, SW1_TS).unwrap_err();
        assert!(matches!(err, ChannelError::Signature(_)));
    }

    #[test]
    fn sw2_payment_succeeded_verifies_and_maps_default_shape() {
        let event = verify_sw2(SW2_SIG, SW2_BODY, SW2_TS).unwrap();
        assert_eq!(event.channel, ChannelKind::StandardWebhooks);
        assert_eq!(event.kind, EventKind::PaymentSucceeded);
        assert_eq!(event.out_trade_no, "ORDER-20240501-0301");
        assert_eq!(event.amount_minor, Some(8880));
        assert_eq!(event.currency.as_deref(), Some("CNY"));
        assert_eq!(event.notification_id.as_deref(), Some(SW2_ID));
        assert_eq!(event.occurred_at.as_deref(), Some("2024-05-01T04:00:00Z"));
        assert_eq!(event.raw_status.as_deref(), Some("payment.succeeded"));
        assert_eq!(event.refund, None);
    }

    #[test]
    fn sw2_accepts_v1a_and_wrong_v1_entries_before_the_valid_one() {
        assert!(verify_sw2(&format!("v1a,xxxx {SW2_SIG}"), SW2_BODY, SW2_TS).is_ok());
        assert!(verify_sw2(
            &format!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {SW2_SIG}"),
            SW2_BODY,
            SW2_TS
        )
        .is_ok());
        assert!(verify_sw2(&format!("v1,AAAA... {SW2_SIG}"), SW2_BODY, SW2_TS).is_ok());
    }

    #[test]
    fn sw2_window_is_five_minutes_both_directions() {
        assert!(verify_sw2(SW2_SIG, SW2_BODY, SW2_TS + 300).is_ok());
        assert!(verify_sw2(SW2_SIG, SW2_BODY, SW2_TS - 300).is_ok());
        assert!(matches!(
            verify_sw2(SW2_SIG, SW2_BODY, SW2_TS + 301),
            Err(ChannelError::Stale(_))
        ));
        assert!(matches!(
            verify_sw2(SW2_SIG, SW2_BODY, SW2_TS - 301),
            Err(ChannelError::Stale(_))
        ));
    }

    #[test]
    fn tampered_body_id_or_timestamp_fails_signature() {
        let body = SW2_BODY.replace("8880", "8881");
        assert!(matches!(
            verify_sw2(SW2_SIG, &body, SW2_TS),
            Err(ChannelError::Signature(_))
        ));
        let other_id = verify_with(&channel(), "msg_other", &SW2_TS.to_string(), SW2_SIG, SW2_BODY, SW2_TS);
        assert!(matches!(other_id, Err(ChannelError::Signature(_))));
        let other_ts = verify_with(&channel(), SW2_ID, &(SW2_TS + 1).to_string(), SW2_SIG, SW2_BODY, SW2_TS);
        assert!(matches!(other_ts, Err(ChannelError::Signature(_))));
    }

    #[test]
    fn signature_without_any_decodable_v1_is_rejected() {
        for sig in [
            "",
            "v1a,abc",
            "v2,YL2H1zQDTgiQs2xQxnnjOQjNbbDhRVpoSkMJNj6COtI=",
            "v1,%%%%",
            "YL2H1zQDTgiQs2xQxnnjOQjNbbDhRVpoSkMJNj6COtI=",
        ] {
            assert!(
                matches!(verify_sw2(sig, SW2_BODY, SW2_TS), Err(ChannelError::Signature(_))),
                "{sig:?}"
            );
        }
    }

    #[test]
    fn duplicate_or_missing_headers_are_malformed() {
        let ts = SW2_TS.to_string();
        let h = headers(&[
            ("webhook-id", SW2_ID),
            ("webhook-timestamp", &ts),
            ("webhook-signature", SW2_SIG),
            ("webhook-signature", SW2_SIG),
        ]);
        let dup = channel().verify(
            &NotifyRequest {
                headers: &h,
                body: SW2_BODY.as_bytes(),
            },
            at(SW2_TS),
        );
        assert!(matches!(dup, Err(ChannelError::Malformed(_))));
        let h = headers(&[("webhook-id", SW2_ID), ("webhook-signature", SW2_SIG)]);
        let missing = channel().verify(
            &NotifyRequest {
                headers: &h,
                body: SW2_BODY.as_bytes(),
            },
            at(SW2_TS),
        );
        assert!(matches!(missing, Err(ChannelError::Malformed(_))));
    }

    #[test]
    fn id_with_dot_and_non_numeric_timestamp_are_malformed() {
        assert!(matches!(
            verify_with(&channel(), "msg.1", "1714536000", SW2_SIG, SW2_BODY, SW2_TS),
            Err(ChannelError::Malformed(_))
        ));
        for ts in ["1714536000.5", "-1714536000", "+1714536000", "", "2024-05-01T04:00:00Z"] {
            assert!(
                matches!(
                    verify_with(&channel(), SW2_ID, ts, SW2_SIG, SW2_BODY, SW2_TS),
                    Err(ChannelError::Malformed(_))
                ),
                "{ts:?}"
            );
        }
    }

    #[test]
    fn svix_header_names_are_accepted() {
        let ts = SW2_TS.to_string();
        let h = headers(&[
            ("svix-id", SW2_ID),
            ("svix-timestamp", &ts),
            ("svix-signature", SW2_SIG),
        ]);
        assert!(channel()
            .verify(
                &NotifyRequest {
                    headers: &h,
                    body: SW2_BODY.as_bytes()
                },
                at(SW2_TS)
            )
            .is_ok());
    }

    #[test]
    fn rotated_secrets_each_verify() {
        let other = format!("whsec_{}", BASE64.encode([7u8; 32]));
        let mut cfg = config();
        cfg.secrets = vec![SecretRef::new(other.clone()), SecretRef::new(SECRET)];
        let ch = cfg.build().unwrap();
        assert!(verify_with(&ch, SW2_ID, &SW2_TS.to_string(), SW2_SIG, SW2_BODY, SW2_TS).is_ok());
        let signer = StandardWebhookSigner::from_whsec(&other).unwrap();
        let sig = signer.sign(SW2_ID, SW2_TS, SW2_BODY.as_bytes());
        assert!(verify_with(&ch, SW2_ID, &SW2_TS.to_string(), &sig, SW2_BODY, SW2_TS).is_ok());
        assert!(
            verify_sw2(&sig, SW2_BODY, SW2_TS).is_err(),
            "the single-secret endpoint does not know it"
        );
    }

    #[test]
    fn secret_without_prefix_or_padding_decodes_the_same() {
        let mut cfg = config();
        cfg.secrets = vec![SecretRef::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")];
        assert!(verify_with(
            &cfg.build().unwrap(),
            SW2_ID,
            &SW2_TS.to_string(),
            SW2_SIG,
            SW2_BODY,
            SW2_TS
        )
        .is_ok());
        let unpadded = format!("whsec_{}", BASE64.encode([9u8; 25]).trim_end_matches('='));
        assert!(StandardWebhookSigner::from_whsec(&unpadded).is_ok());
    }

    #[test]
    fn custom_mapping_reads_decimal_amounts_and_maps_kinds() {
        let mut cfg = config();
        cfg.mapping = PayloadMapping {
            out_trade_no: "/order/id".into(),
            amount: Some("/order/total".into()),
            amount_exponent: Some(2),
            currency: Some("/order/currency".into()),
            kind: Some("/event".into()),
            kinds: BTreeMap::from([
                ("order.paid".to_string(), "payment.succeeded".to_string()),
                ("order.refunded".to_string(), "refund.succeeded".to_string()),
            ]),
            channel_txn_id: Some("/order/txn".into()),
            occurred_at: Some("/created".into()),
            out_refund_no: Some("/order/refund_no".into()),
            refund_amount: Some("/order/refunded".into()),
        };
        let ch = cfg.build().unwrap();
        let body = r#"{"event":"order.paid","created":1714536000,"order":{"id":12345,"total":"88.80","currency":"cny","txn":"T1"}}"#;
        let sig = sign_standard_webhook(
            decode_secret(SECRET.as_bytes()).unwrap().expose(),
            "m1",
            SW2_TS,
            body.as_bytes(),
        );
        let event = verify_with(&ch, "m1", &SW2_TS.to_string(), &sig, body, SW2_TS).unwrap();
        assert_eq!(event.kind, EventKind::PaymentSucceeded);
        assert_eq!(event.out_trade_no, "12345");
        assert_eq!(event.amount_minor, Some(8880));
        assert_eq!(event.currency.as_deref(), Some("CNY"));
        assert_eq!(event.channel_txn_id.as_deref(), Some("T1"));
        assert_eq!(event.occurred_at.as_deref(), Some("2024-05-01T04:00:00Z"));

        let refund: Value = serde_json::from_str(
            r#"{"event":"order.refunded","order":{"id":"O1","total":88,"refunded":"10.5","refund_no":"R1"}}"#,
        )
        .unwrap();
        let event = ch.normalize(refund, "m2").unwrap();
        assert_eq!(event.kind, EventKind::RefundSucceeded);
        assert_eq!(event.amount_minor, Some(8800));
        assert_eq!(
            event.refund,
            Some(RefundInfo {
                out_refund_no: Some("R1".into()),
                refund_id: None,
                amount_minor: Some(1050)
            })
        );

        let unknown: Value = serde_json::from_str(r#"{"event":"order.viewed","order":{}}"#).unwrap();
        assert_eq!(ch.normalize(unknown, "m3").unwrap().kind, EventKind::Other);
        let float: Value = serde_json::from_str(r#"{"event":"order.paid","order":{"id":"O1","total":88.8}}"#).unwrap();
        assert!(matches!(ch.normalize(float, "m4"), Err(ChannelError::Malformed(_))));
        let three_decimals: Value =
            serde_json::from_str(r#"{"event":"order.paid","order":{"id":"O1","total":"88.801"}}"#).unwrap();
        assert!(matches!(
            ch.normalize(three_decimals, "m5"),
            Err(ChannelError::Malformed(_))
        ));
    }

    #[test]
    fn payment_kind_without_order_number_is_malformed() {
        let payload: Value = serde_json::from_str(r#"{"type":"payment.succeeded","data":{"amount":1}}"#).unwrap();
        assert!(matches!(
            channel().normalize(payload, "m"),
            Err(ChannelError::Malformed(_))
        ));
        let fractional_minor: Value =
            serde_json::from_str(r#"{"type":"payment.succeeded","data":{"out_trade_no":"O","amount":"1.5"}}"#).unwrap();
        assert!(matches!(
            channel().normalize(fractional_minor, "m"),
            Err(ChannelError::Malformed(_))
        ));
    }

    #[test]
    fn build_reports_bad_secrets_pointers_and_kinds_by_field() {
        let mut cfg = config();
        cfg.secrets = vec![
            SecretRef::new("whsec_%%%not-base64"),
            SecretRef::new("env:PG_TEST_SW_UNSET"),
        ];
        cfg.mapping.amount = Some("data.amount".into());
        cfg.mapping.kinds.insert("paid".into(), "payment.done".into());
        let issues = cfg.build().unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            ["secrets[0]", "secrets[1]", "mapping.amount", "mapping.kinds.paid"]
        );
        assert!(issues.iter().all(|i| !i.message.contains("not-base64")));
        let empty = StandardWebhooksConfig {
            secrets: vec![],
            ..config()
        };
        assert_eq!(empty.build().unwrap_err()[0].path, "secrets");
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let cfg: StandardWebhooksConfig = serde_json::from_value(json!({"secrets": ["env:SW_SECRET"]})).unwrap();
        assert_eq!(cfg.tolerance, Duration::from_secs(300));
        assert_eq!(cfg.mapping.out_trade_no, "/data/out_trade_no");
        assert_eq!(cfg.mapping.kind.as_deref(), Some("/type"));
        let cfg: StandardWebhooksConfig =
            serde_json::from_value(json!({"secrets": ["x"], "mapping": {"out_trade_no": "/id", "amount": null}}))
                .unwrap();
        assert_eq!(cfg.mapping.amount, None);
        assert_eq!(cfg.mapping.currency.as_deref(), Some("/data/currency"));
        assert!(
            serde_json::from_value::<StandardWebhooksConfig>(json!({"secrets": [], "mapping": {"order": "/id"}}))
                .is_err()
        );
        let schema = serde_json::to_value(schemars::schema_for!(StandardWebhooksConfig)).unwrap();
        assert_eq!(schema["properties"]["tolerance"]["type"], "string");
        assert!(schema["definitions"]["PayloadMapping"]["properties"]["kinds"].is_object());
    }

    #[test]
    fn signer_headers_verify_with_the_inbound_verifier() {
        let signer = StandardWebhookSigner::from_secret_ref(&SecretRef::new(SECRET)).unwrap();
        let body = br#"{"id":"evt"}"#;
        let [(n1, id), (n2, ts), (n3, sig)] = signer.headers("evt_1", SW2_TS, body);
        assert_eq!((n1, n2, n3), ("webhook-id", "webhook-timestamp", "webhook-signature"));
        assert!(verify_with(&channel(), &id, &ts, &sig, std::str::from_utf8(body).unwrap(), SW2_TS).is_ok());
        assert!(!format!("{signer:?}").contains("MfKQ"));
        assert!(!format!("{:?}", channel()).contains("MfKQ"));
    }

    #[test]
    fn signer_refuses_short_or_undecodable_secrets_without_echoing_them() {
        let short = format!("whsec_{}", BASE64.encode([1u8; 16]));
        assert!(StandardWebhookSigner::from_whsec(&short)
            .unwrap_err()
            .contains("24 bytes"));
        let err = StandardWebhookSigner::from_whsec("whsec_s3cr3t!!").unwrap_err();
        assert!(!err.contains("s3cr3t"));
        let err = StandardWebhookSigner::from_secret_ref(&SecretRef::new("env:PG_TEST_SW_SIGNER_UNSET")).unwrap_err();
        assert!(err.contains("PG_TEST_SW_SIGNER_UNSET"));
    }

    #[test]
    fn simulated_messages_round_trip_through_verify() {
        let keys = SimulateKeys {
            secret: Some(SECRET.as_bytes().to_vec()),
            ..SimulateKeys::default()
        };
        for kind in [
            EventKind::PaymentSucceeded,
            EventKind::PaymentClosed,
            EventKind::RefundSucceeded,
        ] {
            let spec = SimulateSpec {
                out_trade_no: "ORDER-SIM-3".into(),
                amount_minor: 8880,
                currency: "cny".into(),
                kind,
                out_refund_no: Some("R-3".into()),
                refund_amount_minor: Some(100),
                channel_txn_id: "T-3".into(),
                at: at(SW2_TS),
                notification_id: "msg_sim_3".into(),
                app_id: None,
                mch_id: None,
            };
            let n = simulate(&spec, &keys).unwrap();
            let pairs: Vec<(&str, &str)> = n.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let h = headers(&pairs);
            let event = channel()
                .verify(
                    &NotifyRequest {
                        headers: &h,
                        body: &n.body,
                    },
                    at(SW2_TS),
                )
                .unwrap();
            assert_eq!(event.kind, kind);
            assert_eq!(event.out_trade_no, "ORDER-SIM-3");
            assert_eq!(event.amount_minor, Some(8880));
            assert_eq!(event.channel_txn_id.as_deref(), Some("T-3"));
            if kind.is_refund() {
                assert_eq!(event.refund.unwrap().amount_minor, Some(100));
            }
        }
        assert!(simulate(
            &SimulateSpec {
                out_trade_no: "O".into(),
                amount_minor: 1,
                currency: "USD".into(),
                kind: EventKind::PaymentSucceeded,
                out_refund_no: None,
                refund_amount_minor: None,
                channel_txn_id: "T".into(),
                at: at(SW2_TS),
                notification_id: "m".into(),
                app_id: None,
                mch_id: None,
            },
            &SimulateKeys::default()
        )
        .is_err());
    }

    #[test]
    fn simulation_refuses_ids_that_verification_would_refuse() {
        let keys = SimulateKeys {
            secret: Some(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_vec()),
            ..Default::default()
        };
        let spec = |id: &str| SimulateSpec {
            out_trade_no: "O".into(),
            amount_minor: 1,
            currency: "USD".into(),
            kind: EventKind::PaymentSucceeded,
            out_refund_no: None,
            refund_amount_minor: None,
            channel_txn_id: "T".into(),
            at: at(SW2_TS),
            notification_id: id.into(),
            app_id: None,
            mch_id: None,
        };
        assert!(simulate(&spec("msg_1"), &keys).is_ok());
        assert!(simulate(&spec("msg.1"), &keys).is_err());
        assert!(simulate(&spec(""), &keys).is_err());
    }

    #[test]
    fn acks_are_2xx_and_retryable_non_2xx() {
        assert_eq!(channel().success_ack().status, 204);
        let fail = channel().failure_ack("backend down");
        assert!(fail.status >= 400 && fail.status != 410);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_headers_and_body_never_panic_and_never_verify(
            id in prop_oneof![Just(SW2_ID.to_string()), "[ -~]{0,30}"],
            ts in prop_oneof![Just(SW2_TS.to_string()), "[0-9]{0,12}", "[ -~]{0,14}"],
            sig in prop_oneof![Just(SW2_SIG.to_string()), "(v1,[A-Za-z0-9+/=]{0,48} ?){0,3}", "[ -~]{0,80}"],
            body in prop_oneof![Just(SW2_BODY.to_string()), "\\PC{0,200}"],
        ) {
            let mut h = HeaderMap::new();
            for (name, value) in [("webhook-id", &id), ("webhook-timestamp", &ts), ("webhook-signature", &sig)] {
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.insert(name, v);
                }
            }
            let result = channel().verify(&NotifyRequest { headers: &h, body: body.as_bytes() }, at(SW2_TS));
            let genuine = id == SW2_ID && ts == SW2_TS.to_string() && sig == SW2_SIG && body == SW2_BODY;
            prop_assert_eq!(result.is_ok(), genuine);
        }
    }
}
