//! Payment-channel notification verifiers: one file per channel, all behind [`Channel`].
//!
//! Every verifier is a pure function over (headers, raw body, clock, keys): no I/O and no proxy
//! types, so every published protocol vector is a unit test and every parser a fuzz
//! target. The proxy's notify phase does the I/O (buffering, dedup, forwarding) around it.

use std::fmt;
use std::path::Path;

use http::HeaderMap;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::issue::ConfigIssue;

pub mod amount;
pub(crate) mod beijing_time;
pub(crate) mod form;
pub(crate) mod keys;
pub mod registry;

#[cfg(test)]
pub(crate) mod test_support;

// The registration list: one entry per channel, and the only one. It declares the module
// (`src/channels/<module>.rs`) and derives `ChannelKind`, `ChannelConfig` (the `notify.channel`
// key and the JSON schema) and the registry (`registry.rs`). The doc line is the channel's
// description in `payguard schema`. See docs/adding-a-channel.md.
registry::channels! {
    /// Alipay asynchronous notify.
    Alipay = "alipay" => alipay::AlipayConfig,
    /// WeChat Pay API v3.
    WechatpayV3 = "wechatpay_v3" => wechatpay_v3::WechatpayV3Config,
    /// WeChat Pay v2, legacy XML.
    WechatpayV2 = "wechatpay_v2" => wechatpay_v2::WechatpayV2Config,
    /// Stripe webhooks.
    Stripe = "stripe" => stripe::StripeConfig,
    /// UnionPay online payment back notification 5.1.0.
    Unionpay = "unionpay" => unionpay::UnionpayConfig,
    /// Standard Webhooks.
    StandardWebhooks = "standard_webhooks" => standard_webhooks::StandardWebhooksConfig,
    /// Adyen standard webhooks.
    Adyen = "adyen" => adyen::AdyenConfig,
}

/// A notification as received: headers and the raw body bytes exactly as they arrived.
#[derive(Debug, Clone, Copy)]
pub struct NotifyRequest<'a> {
    /// Request headers (names are case-insensitive).
    pub headers: &'a HeaderMap,
    /// The request body, after transfer decoding, before anything else.
    pub body: &'a [u8],
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, normalized across channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "payment.succeeded")]
    PaymentSucceeded,
    #[serde(rename = "payment.pending")]
    PaymentPending,
    #[serde(rename = "payment.closed")]
    PaymentClosed,
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
    #[serde(rename = "refund.closed")]
    RefundClosed,
    #[serde(rename = "refund.abnormal")]
    RefundAbnormal,
    #[serde(rename = "other")]
    Other,
}

impl EventKind {
    /// Every kind but `other`, for channels that notify all of them.
    pub(crate) const NORMALIZED: &'static [EventKind] = &[
        Self::PaymentSucceeded,
        Self::PaymentPending,
        Self::PaymentClosed,
        Self::PaymentFailed,
        Self::RefundSucceeded,
        Self::RefundClosed,
        Self::RefundAbnormal,
    ];

    /// The wire name (`payment.succeeded`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentSucceeded => "payment.succeeded",
            Self::PaymentPending => "payment.pending",
            Self::PaymentClosed => "payment.closed",
            Self::PaymentFailed => "payment.failed",
            Self::RefundSucceeded => "refund.succeeded",
            Self::RefundClosed => "refund.closed",
            Self::RefundAbnormal => "refund.abnormal",
            Self::Other => "other",
        }
    }

    /// True for refund events (the dedup key then carries the refund number).
    pub fn is_refund(self) -> bool {
        matches!(self, Self::RefundSucceeded | Self::RefundClosed | Self::RefundAbnormal)
    }
}

/// Refund details of a refund event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundInfo {
    /// Merchant refund number.
    pub(crate) out_refund_no: Option<String>,
    /// Channel refund id.
    pub(crate) refund_id: Option<String>,
    /// Refunded amount in minor units (Alipay: cumulative `refund_fee`).
    pub amount_minor: Option<i64>,
}

/// Merchant identity the notification was addressed to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MerchantRef {
    /// Application id (Alipay `app_id`, WeChat `appid`).
    pub(crate) app_id: Option<String>,
    /// Merchant id (WeChat `mchid`/`mch_id`, UnionPay `merId`, Alipay `seller_id`).
    pub(crate) mch_id: Option<String>,
}

/// A verified notification, normalized. The notify layer adds `id` and `received_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifiedEvent {
    /// Channel protocol.
    pub channel: ChannelKind,
    /// Normalized event kind.
    pub kind: EventKind,
    /// Merchant order number (dedup key part). Empty only for `other` events that carry none.
    pub out_trade_no: String,
    /// Channel transaction id (`trade_no`, `transaction_id`, `pi_…`, `queryId`).
    pub(crate) channel_txn_id: Option<String>,
    /// Amount in the currency's minor unit, parsed from decimal text (never floating point).
    pub amount_minor: Option<i64>,
    /// ISO 4217 currency, upper case.
    pub currency: Option<String>,
    /// Refund details for refund events, `None` otherwise.
    pub refund: Option<RefundInfo>,
    /// When it happened, RFC 3339 with the channel's offset.
    pub(crate) occurred_at: Option<String>,
    /// The channel's notification id, stable across retries.
    pub(crate) notification_id: Option<String>,
    /// The channel's own status string (`TRADE_SUCCESS`, `SUCCESS`, ...).
    pub(crate) raw_status: Option<String>,
    /// Merchant identity from the notification.
    pub(crate) merchant: MerchantRef,
    /// The verified (and decrypted) channel fields as JSON.
    pub raw: serde_json::Value,
}

/// Why a notification was refused. Maps to the notification outcome metric and the channel's
/// failure acknowledgement in one place (the notify layer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The request is not a well-formed notification of this channel (bad encoding, missing
    /// field, duplicate security header, DTD in XML, oversized).
    #[error("malformed notification: {0}")]
    Malformed(String),
    /// The signature (or MAC) does not verify.
    #[error("signature verification failed: {0}")]
    Signature(String),
    /// The timestamp is outside the configured window.
    #[error("stale notification: {0}")]
    Stale(String),
    /// The notification names a key (certificate serial, public-key id, cert SN) that is not
    /// configured. Answered with the channel failure so it retries after operators add the key.
    #[error("unknown key: {0}")]
    UnknownKey(String),
    /// The encrypted resource could not be decrypted or authenticated.
    #[error("decryption failed: {0}")]
    Decrypt(String),
    /// Verified, but addressed to another merchant/app than configured.
    #[error("business check failed: {0}")]
    Business(String),
    /// A signing scheme or algorithm this channel instance is not configured to accept.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Verified, but the amount cannot be that of a real payment or refund (negative, or zero
    /// where the channel never sends zero). Forwarding it would let a backend credit an order
    /// with a negative payment.
    #[error("implausible amount: {0}")]
    Amount(String),
}

impl ChannelError {
    /// A short reason for the channel's failure answer: the category only, never details.
    pub(crate) fn ack_reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed notification",
            Self::Signature(_) | Self::Unsupported(_) => "signature verification failed",
            Self::Stale(_) => "stale notification",
            Self::UnknownKey(_) => "unknown key",
            Self::Decrypt(_) => "decryption failed",
            Self::Business(_) => "merchant mismatch",
            Self::Amount(_) => "invalid amount",
        }
    }

    /// Stable outcome label for metrics and logs.
    pub(crate) fn outcome(&self) -> crate::outcome::NotifyOutcome {
        use crate::outcome::NotifyOutcome as O;
        match self {
            Self::Malformed(_) => O::RejectedMalformed,
            Self::Signature(_) | Self::Unsupported(_) => O::RejectedSignature,
            Self::Stale(_) => O::RejectedStale,
            Self::UnknownKey(_) => O::RejectedUnknownKey,
            Self::Decrypt(_) => O::RejectedDecrypt,
            Self::Business(_) => O::RejectedBusiness,
            Self::Amount(_) => O::RejectedAmount,
        }
    }
}

/// Whether a zero amount is a real payment on a channel (Stripe Checkout completes a session of
/// amount 0 after a 100 % discount); no channel pays or refunds a negative amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroPayment {
    /// A `payment.succeeded` of amount 0 is refused.
    Refused,
    /// A `payment.succeeded` of amount 0 is forwarded.
    Allowed,
}

/// Refuses a verified event whose amounts no real payment has: any negative amount, a zero
/// refund, and a zero `payment.succeeded` unless `zero` allows it.
pub(crate) fn check_amounts(event: VerifiedEvent, zero: ZeroPayment) -> Result<VerifiedEvent, ChannelError> {
    if let Some(amount) = event.amount_minor {
        if amount < 0 {
            return Err(ChannelError::Amount(format!(
                "{} has negative amount {amount}",
                event.kind.as_str()
            )));
        }
        if amount == 0 && event.kind == EventKind::PaymentSucceeded && zero == ZeroPayment::Refused {
            return Err(ChannelError::Amount("payment.succeeded has amount 0".into()));
        }
    }
    if let Some(refunded) = event.refund.as_ref().and_then(|r| r.amount_minor) {
        if refunded < 0 || (refunded == 0 && event.kind == EventKind::RefundSucceeded) {
            return Err(ChannelError::Amount(format!(
                "{} has refund amount {refunded}",
                event.kind.as_str()
            )));
        }
    }
    Ok(event)
}

/// An HTTP answer to the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// HTTP status.
    pub status: u16,
    /// Content type of `body`, if any.
    pub(crate) content_type: Option<&'static str>,
    /// Exact body bytes the channel expects.
    pub body: Vec<u8>,
}

impl Ack {
    /// `status` with no body.
    pub(crate) fn empty(status: u16) -> Self {
        Self {
            status,
            content_type: None,
            body: Vec::new(),
        }
    }

    /// `status` with a plain-text body.
    pub(crate) fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: Some("text/plain; charset=utf-8"),
            body: body.as_bytes().to_vec(),
        }
    }
}

/// One channel protocol, configured for one merchant (keys, expected ids, windows).
pub trait Channel: Send + Sync + fmt::Debug {
    /// The protocol.
    fn kind(&self) -> ChannelKind;

    /// Verifies a notification over its raw bytes at instant `now`, decrypts what the channel
    /// encrypts, applies the configured business checks (app id / merchant id) and returns the
    /// normalized event. Any failure inside (bad base64, wrong key length, ...) is an error,
    /// never a skipped check. Callers use [`Channel::verify`].
    fn verify_signed(&self, req: &NotifyRequest<'_>, now: Timestamp) -> Result<VerifiedEvent, ChannelError>;

    /// Whether this verified event may be a payment of amount 0 (no channel pays or refunds a
    /// negative amount). Refused unless a channel knows better.
    fn zero_payment(&self, _event: &VerifiedEvent) -> ZeroPayment {
        ZeroPayment::Refused
    }

    /// [`Channel::verify_signed`], then refuses amounts no real payment has, the same way for
    /// every channel, so a validly signed but absurd notification never reaches the backend.
    fn verify(&self, req: &NotifyRequest<'_>, now: Timestamp) -> Result<VerifiedEvent, ChannelError> {
        let event = self.verify_signed(req, now)?;
        let zero = self.zero_payment(&event);
        check_amounts(event, zero)
    }

    /// The acknowledgement that tells the channel the notification was accepted.
    fn success_ack(&self) -> Ack;

    /// The answer that tells the channel to retry later; `reason` is short and carries no secret.
    fn failure_ack(&self, reason: &str) -> Ack;

    /// The answer to a notification refused with `err`. Channels that distinguish failure
    /// statuses (WeChat Pay v3: 401 for signature problems, 400 for malformed bodies) override it.
    fn rejection_ack(&self, err: &ChannelError) -> Ack {
        self.failure_ack(err.ack_reason())
    }
}

/// The type-level side of a channel, implemented by its config section (the type under the
/// channel's name in `notify.channel`): what it builds, how `payguard simulate` produces its
/// notifications, how passthrough mode judges a legacy backend's reply, and the protocol facts
/// the shared integration tests go by. Registered once in [`registry`].
pub(crate) trait ChannelSetup {
    /// The protocol (its registry variant).
    const KIND: ChannelKind;

    /// The verifier this section builds.
    type Channel: Channel + 'static;

    /// Resolves the secrets and parses the keys. Issue paths are relative to the section
    /// (`endpoint_secrets[0]`) and never contain a secret.
    fn build(&self) -> Result<Self::Channel, Vec<ConfigIssue>>;

    /// A valid notification for `spec`, signed (and encrypted, where the channel encrypts) with
    /// test `keys`; an error names what is missing or which event the channel cannot produce.
    fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String>;

    /// What `payguard simulate` cannot do without, each with a hint shown next to the flag when
    /// it is missing (empty for none).
    const SIMULATE_NEEDS: &'static [(SimulateInput, &'static str)];

    /// Event kinds the channel notifies and [`ChannelSetup::simulate`] produces.
    const EVENT_KINDS: &'static [EventKind];

    /// The header that carries the signature, for channels that sign in a header; `None` when
    /// the signature is part of the body.
    const SIGNATURE_HEADER: Option<&'static str> = None;

    /// Whether the channel signs a timestamp that is refused outside a freshness window.
    const SIGNED_TIMESTAMP: bool = false;

    /// Whether notifications carry a notification id that stays the same across retries
    /// ([`VerifiedEvent::notification_id`]).
    const NOTIFICATION_ID: bool = true;

    /// A fresh channel transaction id in the channel's style, `stamp` being unix milliseconds.
    fn simulated_txn_id(stamp: i64) -> String {
        format!("4200{stamp}")
    }

    /// A fresh notification id in the channel's style from `stamp` (unix milliseconds) and a
    /// random hex `uuid`.
    fn simulated_notification_id(_stamp: i64, uuid: &str) -> String {
        uuid.to_string()
    }

    /// Whether a legacy backend's own reply, relayed to the channel in passthrough mode, means
    /// "accepted" in the channel's terms. Any 2xx unless the channel needs more.
    fn backend_acknowledged(status: u16, _body: &[u8]) -> bool {
        (200..300).contains(&status)
    }

    /// The channel configured with the repository's public test keys under `fixtures`
    /// (`tests/fixtures/`): the integration tests and the benchmarks run every channel with it.
    fn test_setup(fixtures: &Path) -> Result<TestSetup, String>;
}

/// An input of `payguard simulate` a channel may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SimulateInput {
    /// `--private-key`: [`SimulateKeys::private_key_pem`].
    PrivateKey,
    /// `--certificate`: [`SimulateKeys::certificate_pem`].
    Certificate,
    /// `--key-id`, or `--certificate` whose serial is then the key id.
    KeyIdOrCertificate,
    /// `--secret` / `--secret-env`: [`SimulateKeys::secret`].
    Secret,
    /// `--api-v3-key` / `--api-v3-key-env`: [`SimulateKeys::api_v3_key`].
    ApiV3Key,
    /// `--app-id`: [`SimulateSpec::app_id`].
    AppId,
    /// `--mch-id`: [`SimulateSpec::mch_id`].
    MchId,
}

/// One channel configured with the repository's public test keys: a config section and the keys
/// and ids that make [`ChannelSetup::simulate`] produce notifications it accepts.
#[derive(Debug, Clone)]
pub struct TestSetup {
    /// The channel's config section (the value under its name), key files as `file:` paths.
    pub config: serde_json::Value,
    /// Keys to simulate with.
    pub keys: SimulateKeys,
    /// App id the config expects, for channels that check one.
    pub app_id: Option<String>,
    /// Merchant id the config expects, for channels that check one.
    pub mch_id: Option<String>,
}

/// Reads a file of the test fixtures directory.
fn read_fixture(fixtures: &Path, rel: &str) -> Result<String, String> {
    let path = fixtures.join(rel);
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A `file:` secret reference to a file of the test fixtures directory.
fn fixture_ref(fixtures: &Path, rel: &str) -> String {
    format!("file:{}", fixtures.join(rel).display())
}

/// The single value of header `name`. More than one occurrence is ambiguous and rejected;
/// a value that is not visible ASCII/UTF-8 is malformed.
pub(crate) fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ChannelError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ChannelError::Malformed(format!("header {name} appears more than once")));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| ChannelError::Malformed(format!("header {name} is not visible ASCII")))
}

/// Like [`single_header`] but the header must be present.
pub(crate) fn required_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, ChannelError> {
    single_header(headers, name)?.ok_or_else(|| ChannelError::Malformed(format!("header {name} is missing")))
}

/// A short, log-safe rendering of request text in error messages: at most 64 characters, control
/// characters replaced, so a hostile notification cannot forge log lines.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// What `payguard simulate`, `payguard demo` and the tests ask a channel to produce: a valid
/// notification for one event, signed (and for WeChat Pay v3 encrypted) with test keys.
#[derive(Debug, Clone)]
pub struct SimulateSpec {
    /// Merchant order number.
    pub out_trade_no: String,
    /// Order amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 currency (channels with a fixed currency ignore it).
    pub currency: String,
    /// Event to produce (payment.succeeded, payment.pending, payment.closed, refund.succeeded, ...).
    pub kind: EventKind,
    /// Merchant refund number for refund events.
    pub out_refund_no: Option<String>,
    /// Refund amount in minor units for refund events.
    pub refund_amount_minor: Option<i64>,
    /// Channel transaction id.
    pub channel_txn_id: String,
    /// Signing instant (timestamps in headers/body).
    pub at: Timestamp,
    /// Channel notification/event id.
    pub notification_id: String,
    /// App id to put in the notification.
    pub app_id: Option<String>,
    /// Merchant id to put in the notification.
    pub mch_id: Option<String>,
}

/// Test keys for [`SimulateSpec`]; each channel uses the fields it needs and says which is missing.
#[derive(Debug, Clone, Default)]
pub struct SimulateKeys {
    /// PEM private key (PKCS#8 or PKCS#1, RSA of 2048 bits or more) for RSA-signing channels
    /// (Alipay, WeChat v3, UnionPay); they sign SHA256withRSA.
    pub private_key_pem: Option<String>,
    /// PEM certificate that goes with the private key (UnionPay `signPubKeyCert`).
    pub certificate_pem: Option<String>,
    /// Key id / certificate serial to announce (WeChat v3 `Wechatpay-Serial`).
    pub key_id: Option<String>,
    /// Shared secret: Stripe `whsec_…`, Standard Webhooks `whsec_…` (base64), WeChat v2 API key,
    /// Adyen HMAC key (hex).
    pub secret: Option<Vec<u8>>,
    /// WeChat Pay v3 APIv3 key (32 ASCII bytes) for resource encryption.
    pub api_v3_key: Option<Vec<u8>>,
}

/// A notification ready to send: headers, content type and raw body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedNotification {
    /// Headers to send (besides `Content-Type`).
    pub headers: Vec<(String, String)>,
    /// `Content-Type` value.
    pub content_type: String,
    /// Raw body bytes.
    pub body: Vec<u8>,
}

#[cfg(test)]
mod amount_tests {
    use super::*;

    fn event(kind: EventKind, amount: Option<i64>, refunded: Option<i64>) -> VerifiedEvent {
        VerifiedEvent {
            channel: ChannelKind::Alipay,
            kind,
            out_trade_no: "O-1".into(),
            channel_txn_id: None,
            amount_minor: amount,
            currency: Some("CNY".into()),
            refund: refunded.map(|a| RefundInfo {
                out_refund_no: None,
                refund_id: None,
                amount_minor: Some(a),
            }),
            occurred_at: None,
            notification_id: None,
            raw_status: None,
            merchant: MerchantRef::default(),
            raw: serde_json::Value::Null,
        }
    }

    fn refused(e: VerifiedEvent, zero: ZeroPayment) -> bool {
        matches!(check_amounts(e, zero), Err(ChannelError::Amount(_)))
    }

    #[test]
    fn negative_amounts_are_refused_on_every_kind() {
        for kind in [
            EventKind::PaymentSucceeded,
            EventKind::PaymentClosed,
            EventKind::RefundSucceeded,
        ] {
            assert!(refused(event(kind, Some(-1), None), ZeroPayment::Allowed), "{kind:?}");
            assert!(
                refused(event(kind, Some(100), Some(-1)), ZeroPayment::Allowed),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn zero_is_refused_for_a_payment_unless_allowed_and_always_for_a_refund() {
        assert!(refused(
            event(EventKind::PaymentSucceeded, Some(0), None),
            ZeroPayment::Refused
        ));
        assert!(!refused(
            event(EventKind::PaymentSucceeded, Some(0), None),
            ZeroPayment::Allowed
        ));
        assert!(refused(
            event(EventKind::RefundSucceeded, Some(100), Some(0)),
            ZeroPayment::Allowed
        ));
        // A closed or failed order of 0 moves no money; nothing to refuse.
        assert!(!refused(
            event(EventKind::PaymentClosed, Some(0), None),
            ZeroPayment::Refused
        ));
        assert!(!refused(
            event(EventKind::PaymentSucceeded, Some(1), None),
            ZeroPayment::Refused
        ));
        assert!(!refused(
            event(EventKind::PaymentSucceeded, None, None),
            ZeroPayment::Refused
        ));
    }
}
