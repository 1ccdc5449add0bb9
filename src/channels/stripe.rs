//! Stripe webhooks: `Stripe-Signature: t=…,v1=…[,v1=…]` carrying hex
//! HMAC-SHA256 over `t.body` keyed with the whole `whsec_…` string, a timestamp window, and the
//! merchant order number taken from the object's metadata.

use std::path::Path;
use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::amount::integer_minor_at;
use super::{
    ChannelSetup, SimulateInput, TestSetup,     required_header, Ack, Channel, ChannelError, ChannelKind, EventKind, MerchantRef, NotifyRequest, RefundInfo,
    SimulateKeys, SimulateSpec, SimulatedNotification, VerifiedEvent, ZeroPayment,
};
use crate::secret::{Secret, SecretRef};
use crate::issue::ConfigIssue;

fn default_tolerance() -> Duration {
    StripeConfig::DEFAULT_TOLERANCE
}

fn default_order_metadata_key() -> String {
    StripeConfig::DEFAULT_ORDER_METADATA_KEY.to_string()
}

/// Stripe webhook endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    /// Endpoint signing secrets (`whsec_…`). Several are accepted while a secret is rolled.
    pub(crate) endpoint_secrets: Vec<SecretRef>,
    /// Largest accepted distance between the header's `t` and now, both directions, e.g. "300s".
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) tolerance: Duration,
    /// When set, events whose `livemode` differs are refused (test events on a live endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) livemode: Option<bool>,
    /// Metadata key holding the merchant order number on PaymentIntents, Checkout Sessions and
    /// Charges.
    #[serde(default = "default_order_metadata_key")]
    pub(crate) order_metadata_key: String,
}

impl StripeConfig {
    /// Default `tolerance`.
    pub(crate) const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
    /// Default `order_metadata_key`.
    pub(crate) const DEFAULT_ORDER_METADATA_KEY: &'static str = "out_trade_no";

    /// Resolves the endpoint secrets. Problems name the field and the source, never the value.
    pub fn build(&self) -> Result<Stripe, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut secrets = Vec::new();
        if self.endpoint_secrets.is_empty() {
            issues.push(ConfigIssue::new(
                "endpoint_secrets",
                "at least one endpoint secret is required",
            ));
        }
        for (i, source) in self.endpoint_secrets.iter().enumerate() {
            match source.resolve() {
                Ok(secret) => secrets.push(secret),
                Err(e) => issues.push(ConfigIssue::new(format!("endpoint_secrets[{i}]"), e)),
            }
        }
        if self.tolerance.is_zero() {
            issues.push(ConfigIssue::new("tolerance", "must be greater than zero"));
        }
        if self.order_metadata_key.is_empty() {
            issues.push(ConfigIssue::new("order_metadata_key", "must not be empty"));
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Stripe {
            secrets,
            tolerance_secs: i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX),
            livemode: self.livemode,
            order_metadata_key: self.order_metadata_key.clone(),
        })
    }
}

/// A configured Stripe webhook verifier.
#[derive(Clone)]
pub struct Stripe {
    secrets: Vec<Secret>,
    tolerance_secs: i64,
    livemode: Option<bool>,
    order_metadata_key: String,
}

impl fmt::Debug for Stripe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stripe")
            .field("secrets", &self.secrets.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .field("livemode", &self.livemode)
            .field("order_metadata_key", &self.order_metadata_key)
            .finish()
    }
}

/// A parsed `Stripe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StripeSignatureHeader<'a> {
    /// The `t` value exactly as sent (it is part of the signed payload).
    pub(crate) timestamp_text: &'a str,
    /// `t` as unix seconds.
    pub(crate) timestamp: i64,
    /// Every `v1` value that is 32 bytes of hex; other values are ignored like stripe-go does.
    pub(crate) v1: Vec<[u8; 32]>,
}

/// Parses `t=…,v1=…[,v1=…][,v0=…]`: every item must be `key=value`, `t` must appear once as an
/// integer, unknown schemes and `v0` are ignored, no valid `v1` is a signature failure.
pub(crate) fn parse_signature_header(header: &str) -> Result<StripeSignatureHeader<'_>, ChannelError> {
    let mut timestamp_text = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| ChannelError::Malformed("Stripe-Signature item without '='".into()))?;
        match key {
            "t" if timestamp_text.is_some() => {
                return Err(ChannelError::Malformed("Stripe-Signature has two t".into()))
            }
            "t" => timestamp_text = Some(value),
            "v1" => {
                let mut mac = [0u8; 32];
                // stripe-go: `continue // Ignore invalid signatures`.
                if hex::decode_to_slice(value, &mut mac).is_ok() {
                    v1.push(mac);
                }
            }
            _ => {}
        }
    }
    let timestamp_text = timestamp_text.ok_or_else(|| ChannelError::Malformed("Stripe-Signature has no t".into()))?;
    if timestamp_text.is_empty() || timestamp_text.len() > 12 || !timestamp_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ChannelError::Malformed("Stripe-Signature t is not unix seconds".into()));
    }
    let timestamp = timestamp_text
        .parse()
        .map_err(|_| ChannelError::Malformed("Stripe-Signature t".into()))?;
    if v1.is_empty() {
        return Err(ChannelError::Signature(
            "Stripe-Signature has no valid v1 signature".into(),
        ));
    }
    Ok(StripeSignatureHeader {
        timestamp_text,
        timestamp,
        v1,
    })
}

/// `HMAC_SHA256(key = the whole "whsec_…" string as bytes, msg = t "." body)`.
pub fn compute_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

const TEST_ENDPOINT_SECRET: &str = "whsec_test_stripe_endpoint_secret_1234567890";

impl ChannelSetup for StripeConfig {
    const KIND: ChannelKind = ChannelKind::Stripe;
    type Channel = Stripe;
    const SIMULATE_NEEDS: &'static [(SimulateInput, &'static str)] = &[(SimulateInput::Secret, "whsec_…")];
    const EVENT_KINDS: &'static [EventKind] = &[
        EventKind::PaymentSucceeded,
        EventKind::PaymentPending,
        EventKind::PaymentFailed,
        EventKind::PaymentClosed,
        EventKind::RefundSucceeded,
    ];
    const SIGNATURE_HEADER: Option<&'static str> = Some("Stripe-Signature");
    const SIGNED_TIMESTAMP: bool = true;

    fn build(&self) -> Result<Stripe, Vec<ConfigIssue>> {
        StripeConfig::build(self)
    }

    fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
        simulate(spec, keys)
    }

    fn simulated_txn_id(stamp: i64) -> String {
        format!("pi_sim{stamp}")
    }

    fn simulated_notification_id(_stamp: i64, uuid: &str) -> String {
        format!("evt_{uuid}")
    }

    fn test_setup(_fixtures: &Path) -> Result<TestSetup, String> {
        Ok(TestSetup {
            config: serde_json::json!({"endpoint_secrets": [TEST_ENDPOINT_SECRET]}),
            keys: SimulateKeys {
                secret: Some(TEST_ENDPOINT_SECRET.as_bytes().to_vec()),
                ..SimulateKeys::default()
            },
            app_id: None,
            mch_id: None,
        })
    }
}

impl Channel for Stripe {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Stripe
    }

    fn verify_signed(&self, req: &NotifyRequest<'_>, now: Timestamp) -> Result<VerifiedEvent, ChannelError> {
        let header = parse_signature_header(required_header(req.headers, "stripe-signature")?)?;
        // The libraries only refuse old timestamps; we refuse both directions (a future t
        // would otherwise extend a captured request's replay window).
        if now.as_second().abs_diff(header.timestamp) > self.tolerance_secs.unsigned_abs() {
            return Err(ChannelError::Stale(format!(
                "Stripe-Signature t={} is outside the {}s window",
                header.timestamp, self.tolerance_secs
            )));
        }
        let mut matched = subtle::Choice::from(0);
        for secret in &self.secrets {
            let expected = compute_signature(secret.expose(), header.timestamp_text, req.body);
            for candidate in &header.v1 {
                matched |= expected.ct_eq(candidate);
            }
        }
        if !bool::from(matched) {
            return Err(ChannelError::Signature(
                "no v1 signature matches an endpoint secret".into(),
            ));
        }
        let event: Value =
            serde_json::from_slice(req.body).map_err(|e| ChannelError::Malformed(format!("event body: {e}")))?;
        if let (Some(expected), Some(actual)) = (self.livemode, event.get("livemode").and_then(Value::as_bool)) {
            if expected != actual {
                return Err(ChannelError::Business(format!(
                    "event livemode={actual}, endpoint expects {expected}"
                )));
            }
        }
        normalize(event, &self.order_metadata_key)
    }

    /// A Checkout Session discounted to 100 % completes with amount_total 0; a PaymentIntent or
    /// Charge cannot be created for 0.
    fn zero_payment(&self, event: &VerifiedEvent) -> ZeroPayment {
        match event.raw.get("type").and_then(Value::as_str) {
            Some("checkout.session.completed" | "checkout.session.async_payment_succeeded") => ZeroPayment::Allowed,
            _ => ZeroPayment::Refused,
        }
    }

    fn success_ack(&self) -> Ack {
        Ack::empty(200)
    }

    fn failure_ack(&self, reason: &str) -> Ack {
        // Any non-2xx makes Stripe retry; the reason is for humans reading the dashboard.
        Ack::text(400, reason)
    }
}

fn str_at(object: &Value, pointer: &str) -> Option<String> {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Event type → kind, order number, amount.
fn normalize(event: Value, order_key: &str) -> Result<VerifiedEvent, ChannelError> {
    if event.get("object").and_then(Value::as_str) == Some("v2.core.event") {
        return Err(ChannelError::Unsupported("thin events (v2.core.event)".into()));
    }
    let event_type = str_at(&event, "/type").ok_or_else(|| ChannelError::Malformed("event has no type".into()))?;
    let object = event
        .pointer("/data/object")
        .filter(|o| o.is_object())
        .ok_or_else(|| ChannelError::Malformed("event has no data.object".into()))?;
    let metadata_order = object
        .get("metadata")
        .and_then(|m| m.get(order_key))
        .and_then(Value::as_str);
    let metadata_order = metadata_order.filter(|s| !s.is_empty()).map(str::to_owned);
    let object_id = str_at(object, "/id");
    let payment_status = str_at(object, "/payment_status");

    let (kind, amount_pointer, txn_id, raw_status) = match event_type.as_str() {
        "payment_intent.succeeded" => (
            EventKind::PaymentSucceeded,
            "/amount_received",
            object_id,
            str_at(object, "/status"),
        ),
        "payment_intent.processing" => (
            EventKind::PaymentPending,
            "/amount",
            object_id,
            str_at(object, "/status"),
        ),
        "payment_intent.payment_failed" => (
            EventKind::PaymentFailed,
            "/amount",
            object_id,
            str_at(object, "/status"),
        ),
        "payment_intent.canceled" => (
            EventKind::PaymentClosed,
            "/amount",
            object_id,
            str_at(object, "/status"),
        ),
        "checkout.session.completed"
        | "checkout.session.async_payment_succeeded"
        | "checkout.session.async_payment_failed"
        | "checkout.session.expired" => {
            // A completed session is paid only when payment_status says so; delayed
            // methods complete later with async_payment_succeeded/failed.
            let kind = match (event_type.as_str(), payment_status.as_deref()) {
                ("checkout.session.async_payment_failed", _) => EventKind::PaymentFailed,
                ("checkout.session.expired", _) => EventKind::PaymentClosed,
                (_, Some("paid" | "no_payment_required")) => EventKind::PaymentSucceeded,
                _ => EventKind::PaymentPending,
            };
            let txn = str_at(object, "/payment_intent").or(object_id);
            (kind, "/amount_total", txn, payment_status)
        }
        "charge.refunded" => {
            let txn = str_at(object, "/payment_intent").or(object_id);
            let status = if object.get("refunded").and_then(Value::as_bool) == Some(true) {
                "refunded"
            } else {
                "partially_refunded"
            };
            (EventKind::RefundSucceeded, "/amount", txn, Some(status.to_string()))
        }
        _ => (EventKind::Other, "/amount", object_id, str_at(object, "/status")),
    };
    let out_trade_no = match (kind, event_type.starts_with("checkout.session.")) {
        // Checkout carries the order in client_reference_id and/or metadata.
        (_, true) => metadata_order.or_else(|| str_at(object, "/client_reference_id")),
        _ => metadata_order,
    };
    let out_trade_no = match out_trade_no {
        Some(no) => no,
        None if kind == EventKind::Other => String::new(),
        None => {
            return Err(ChannelError::Malformed(format!(
                "{event_type} carries no metadata.{order_key} (set it when creating the payment)"
            )))
        }
    };
    let refund = if kind.is_refund() {
        // amount_refunded is cumulative over partial refunds.
        Some(RefundInfo {
            out_refund_no: None,
            refund_id: None,
            amount_minor: integer_minor_at(object, "/amount_refunded")?,
        })
    } else {
        None
    };
    let occurred_at = event
        .get("created")
        .and_then(Value::as_i64)
        .and_then(|s| Timestamp::from_second(s).ok())
        .map(|t| t.to_string());
    Ok(VerifiedEvent {
        channel: ChannelKind::Stripe,
        kind,
        out_trade_no,
        channel_txn_id: txn_id,
        amount_minor: integer_minor_at(object, amount_pointer)?,
        currency: str_at(object, "/currency").map(|c| c.to_ascii_uppercase()),
        refund,
        occurred_at,
        notification_id: str_at(&event, "/id"),
        raw_status,
        merchant: MerchantRef {
            app_id: None,
            mch_id: str_at(&event, "/account"),
        },
        raw: event,
    })
}

/// Produces a signed Stripe event for `spec` with `keys.secret` (the `whsec_…` string):
/// PaymentIntent events for payments, `charge.refunded` for refunds.
pub(crate) fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
    let secret = keys
        .secret
        .as_deref()
        .ok_or("stripe needs an endpoint secret (whsec_...)")?;
    let currency = spec.currency.to_ascii_lowercase();
    let metadata = json!({"out_trade_no": spec.out_trade_no});
    let (event_type, object) = match spec.kind {
        EventKind::RefundSucceeded => {
            let refunded = spec.refund_amount_minor.unwrap_or(spec.amount_minor);
            (
                "charge.refunded",
                json!({
                    "id": format!("ch_{}", spec.channel_txn_id.trim_start_matches("pi_")),
                    "object": "charge",
                    "amount": spec.amount_minor,
                    "amount_refunded": refunded,
                    "refunded": refunded >= spec.amount_minor,
                    "currency": currency,
                    "payment_intent": spec.channel_txn_id,
                    "metadata": metadata,
                }),
            )
        }
        kind => {
            let (event_type, status, received) = match kind {
                EventKind::PaymentSucceeded => ("payment_intent.succeeded", "succeeded", spec.amount_minor),
                EventKind::PaymentPending => ("payment_intent.processing", "processing", 0),
                EventKind::PaymentFailed => ("payment_intent.payment_failed", "requires_payment_method", 0),
                EventKind::PaymentClosed => ("payment_intent.canceled", "canceled", 0),
                other => return Err(format!("stripe cannot simulate {}", other.as_str())),
            };
            (
                event_type,
                json!({
                    "id": spec.channel_txn_id,
                    "object": "payment_intent",
                    "amount": spec.amount_minor,
                    "amount_received": received,
                    "currency": currency,
                    "status": status,
                    "metadata": metadata,
                }),
            )
        }
    };
    let body = json!({
        "id": spec.notification_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": spec.at.as_second(),
        "type": event_type,
        "livemode": false,
        "data": {"object": object},
    })
    .to_string()
    .into_bytes();
    let t = spec.at.as_second().to_string();
    let v1 = hex::encode(compute_signature(secret, &t, &body));
    Ok(SimulatedNotification {
        headers: vec![("Stripe-Signature".into(), format!("t={t},v1={v1}"))],
        content_type: "application/json; charset=utf-8".into(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::test_support::at;
    use base64::Engine as _;
    use http::{HeaderMap, HeaderValue};
    use proptest::prelude::*;

    const SECRET: &str = "whsec_test_secret";
    const OLD_SECRET: &str = "whsec_old_rotated_secret";
    const S1_BODY: &str = r#"{"id":"evt_3PAbCdEfGhIjKlMn0a1b2c3d","object":"event","api_version":"2024-06-20","created":1714536000,"type":"payment_intent.succeeded","livemode":false,"data":{"object":{"id":"pi_3PAbCdEfGhIjKlMn0a1b2c3d","object":"payment_intent","amount":8880,"amount_received":8880,"currency":"cny","status":"succeeded","metadata":{"out_trade_no":"ORDER-20240501-0201"}}}}"#;
    const S1_HEADER: &str = "t=1714536000,v1=f4f5a89a0781eaba3cfd25ea3288f16c9273089c3fbfd378c9042b07515f1145";
    const S1_ROTATED_HEADER: &str = "t=1714536000,v1=cd0ee3ffbb4a30790a6efaaad13ff88855d8ca5eaae72eedad710ad83b1131cb,v1=f4f5a89a0781eaba3cfd25ea3288f16c9273089c3fbfd378c9042b07515f1145,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39";
    const S2_BODY: &str = r#"{"id":"evt_1Q0CheckoutCompleted0001","object":"event","api_version":"2024-06-20","created":1714536100,"type":"checkout.session.completed","livemode":false,"data":{"object":{"id":"cs_test_a1B2c3D4","object":"checkout.session","client_reference_id":"ORDER-20240501-0202","metadata":{"out_trade_no":"ORDER-20240501-0202"},"payment_status":"paid","status":"complete","amount_total":1999,"currency":"usd","payment_intent":"pi_3PCheckout0001"}}}"#;
    const S2_V1: &str = "facadf24dc1d0a1bf2994ae8ccdd127b9dad0387e7f5c07b837bbca73e94d8fc";
    const S3_BODY: &str = r#"{"id":"evt_3PChargeRefunded0001","object":"event","api_version":"2024-06-20","created":1714622400,"type":"charge.refunded","livemode":false,"data":{"object":{"id":"ch_3PAbCdEfGhIjKlMn0a1b2c3d","object":"charge","amount":8880,"amount_refunded":1000,"refunded":false,"currency":"cny","payment_intent":"pi_3PAbCdEfGhIjKlMn0a1b2c3d","metadata":{"out_trade_no":"ORDER-20240501-0201"}}}}"#;
    const S3_V1: &str = "25af4cefa544a3c4f577b883c493f4d8daa50efa26a2d166528ec374991bb1e7";

    fn config(secrets: &[&str]) -> StripeConfig {
        StripeConfig {
            endpoint_secrets: secrets.iter().map(|s| SecretRef::new(*s)).collect(),
            tolerance: default_tolerance(),
            livemode: None,
            order_metadata_key: default_order_metadata_key(),
        }
    }

    fn channel() -> Stripe {
        config(&[SECRET]).build().unwrap()
    }

    fn verify(ch: &Stripe, header: &str, body: &str, now: i64) -> Result<VerifiedEvent, ChannelError> {
        let mut h = HeaderMap::new();
        h.insert("stripe-signature", HeaderValue::from_str(header).unwrap());
        ch.verify(
            &NotifyRequest {
                headers: &h,
                body: body.as_bytes(),
            },
            at(now),
        )
    }

    #[test]
    fn s1_payment_intent_succeeded_verifies_and_normalizes() {
        let event = verify(&channel(), S1_HEADER, S1_BODY, 1714536000).unwrap();
        assert_eq!(event.channel, ChannelKind::Stripe);
        assert_eq!(event.kind, EventKind::PaymentSucceeded);
        assert_eq!(event.out_trade_no, "ORDER-20240501-0201");
        assert_eq!(event.amount_minor, Some(8880));
        assert_eq!(event.currency.as_deref(), Some("CNY"));
        assert_eq!(event.channel_txn_id.as_deref(), Some("pi_3PAbCdEfGhIjKlMn0a1b2c3d"));
        assert_eq!(event.notification_id.as_deref(), Some("evt_3PAbCdEfGhIjKlMn0a1b2c3d"));
        assert_eq!(event.raw_status.as_deref(), Some("succeeded"));
        assert_eq!(event.occurred_at.as_deref(), Some("2024-05-01T04:00:00Z"));
        assert_eq!(event.refund, None);
    }

    #[test]
    fn s1_rotated_header_with_old_secret_first_and_v0_verifies() {
        assert!(verify(&channel(), S1_ROTATED_HEADER, S1_BODY, 1714536000).is_ok());
        // The endpoint still configured with only the old secret accepts it too.
        assert!(verify(
            &config(&[OLD_SECRET]).build().unwrap(),
            S1_ROTATED_HEADER,
            S1_BODY,
            1714536000
        )
        .is_ok());
    }

    #[test]
    fn several_endpoint_secrets_accept_either_signature() {
        let ch = config(&[OLD_SECRET, SECRET]).build().unwrap();
        assert!(verify(&ch, S1_HEADER, S1_BODY, 1714536000).is_ok());
        let only_old = config(&[OLD_SECRET]).build().unwrap();
        assert!(matches!(
            verify(&only_old, S1_HEADER, S1_BODY, 1714536000),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn s2_checkout_session_completed_paid_is_payment_succeeded() {
        let event = verify(&channel(), &format!("t=1714536100,v1={S2_V1}"), S2_BODY, 1714536100).unwrap();
        assert_eq!(event.kind, EventKind::PaymentSucceeded);
        assert_eq!(event.out_trade_no, "ORDER-20240501-0202");
        assert_eq!(event.amount_minor, Some(1999));
        assert_eq!(event.currency.as_deref(), Some("USD"));
        assert_eq!(event.channel_txn_id.as_deref(), Some("pi_3PCheckout0001"));
        assert_eq!(event.raw_status.as_deref(), Some("paid"));
    }

    #[test]
    fn checkout_session_completed_unpaid_is_pending_and_falls_back_to_client_reference_id() {
        let body = json!({"id": "evt_x", "type": "checkout.session.completed", "created": 1714536100,
            "data": {"object": {"id": "cs_1", "client_reference_id": "ORDER-9", "payment_status": "unpaid",
            "amount_total": 500, "currency": "jpy", "metadata": {}}}})
        .to_string();
        let event = normalize(serde_json::from_str(&body).unwrap(), "out_trade_no").unwrap();
        assert_eq!(event.kind, EventKind::PaymentPending);
        assert_eq!(event.out_trade_no, "ORDER-9");
        assert_eq!(event.amount_minor, Some(500));
        assert_eq!(event.currency.as_deref(), Some("JPY"));
    }

    #[test]
    fn s3_partial_charge_refunded_is_refund_succeeded_with_cumulative_amount() {
        let event = verify(&channel(), &format!("t=1714622400,v1={S3_V1}"), S3_BODY, 1714622400).unwrap();
        assert_eq!(event.kind, EventKind::RefundSucceeded);
        assert_eq!(event.out_trade_no, "ORDER-20240501-0201");
        assert_eq!(event.refund.as_ref().unwrap().amount_minor, Some(1000));
        assert_eq!(event.amount_minor, Some(8880));
        assert_eq!(event.channel_txn_id.as_deref(), Some("pi_3PAbCdEfGhIjKlMn0a1b2c3d"));
        assert_eq!(event.raw_status.as_deref(), Some("partially_refunded"));
    }

    #[test]
    fn s1_at_t_plus_301_is_stale_and_t_plus_300_accepted() {
        assert!(verify(&channel(), S1_HEADER, S1_BODY, 1714536300).is_ok());
        assert!(matches!(
            verify(&channel(), S1_HEADER, S1_BODY, 1714536301),
            Err(ChannelError::Stale(_))
        ));
    }

    #[test]
    fn future_timestamp_beyond_tolerance_is_stale() {
        assert!(verify(&channel(), S1_HEADER, S1_BODY, 1714536000 - 300).is_ok());
        assert!(matches!(
            verify(&channel(), S1_HEADER, S1_BODY, 1714536000 - 301),
            Err(ChannelError::Stale(_))
        ));
    }

    #[test]
    fn header_with_only_v0_is_rejected() {
        let header = "t=1714536000,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39";
        assert!(matches!(
            verify(&channel(), header, S1_BODY, 1714536000),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn invalid_hex_v1_appended_to_a_valid_header_is_ignored() {
        let header = format!("{S1_HEADER},v1=bad_signature");
        assert!(verify(&channel(), &header, S1_BODY, 1714536000).is_ok());
    }

    #[test]
    fn secret_used_base64_decoded_or_without_prefix_does_not_match() {
        let t = "1714536000";
        // A lenient decoder, as a confused implementation might use.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let decoded = lenient.decode("test_secret").unwrap();
        for key in [decoded.as_slice(), b"test_secret".as_slice()] {
            let header = format!(
                "t={t},v1={}",
                hex::encode(compute_signature(key, t, S1_BODY.as_bytes()))
            );
            assert!(matches!(
                verify(&channel(), &header, S1_BODY, 1714536000),
                Err(ChannelError::Signature(_))
            ));
        }
    }

    #[test]
    fn body_with_one_extra_space_is_rejected() {
        let body = S1_BODY.replacen(',', ", ", 1);
        assert!(matches!(
            verify(&channel(), S1_HEADER, &body, 1714536000),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn header_v1_comma_t_is_malformed() {
        assert!(matches!(
            verify(&channel(), "v1,t=1", S1_BODY, 1714536000),
            Err(ChannelError::Malformed(_))
        ));
    }

    #[test]
    fn tampered_timestamp_in_header_fails_signature() {
        let header = S1_HEADER.replace("t=1714536000", "t=1714536001");
        assert!(matches!(
            verify(&channel(), &header, S1_BODY, 1714536000),
            Err(ChannelError::Signature(_))
        ));
    }

    #[test]
    fn header_parsing_rejects_missing_or_repeated_t_and_non_numeric_t() {
        assert!(matches!(
            parse_signature_header("v1=00"),
            Err(ChannelError::Malformed(_))
        ));
        assert!(matches!(
            parse_signature_header("t=1,t=2,v1=00"),
            Err(ChannelError::Malformed(_))
        ));
        assert!(matches!(
            parse_signature_header("t=-1,v1=00"),
            Err(ChannelError::Malformed(_))
        ));
        assert!(matches!(
            parse_signature_header("t=1e9,v1=00"),
            Err(ChannelError::Malformed(_))
        ));
        assert!(matches!(parse_signature_header(""), Err(ChannelError::Malformed(_))));
        let parsed = parse_signature_header(S1_ROTATED_HEADER).unwrap();
        assert_eq!(parsed.timestamp, 1714536000);
        assert_eq!(parsed.v1.len(), 2);
    }

    #[test]
    fn duplicate_or_missing_stripe_signature_header_is_malformed() {
        let mut h = HeaderMap::new();
        let req = |h: &HeaderMap| {
            channel().verify(
                &NotifyRequest {
                    headers: h,
                    body: S1_BODY.as_bytes(),
                },
                at(1714536000),
            )
        };
        assert!(matches!(req(&h), Err(ChannelError::Malformed(_))));
        h.append("stripe-signature", HeaderValue::from_static(S1_HEADER));
        assert!(req(&h).is_ok());
        h.append("stripe-signature", HeaderValue::from_static(S1_HEADER));
        assert!(matches!(req(&h), Err(ChannelError::Malformed(_))));
    }

    #[test]
    fn livemode_mismatch_is_a_business_failure() {
        let mut cfg = config(&[SECRET]);
        cfg.livemode = Some(true);
        assert!(matches!(
            verify(&cfg.build().unwrap(), S1_HEADER, S1_BODY, 1714536000),
            Err(ChannelError::Business(_))
        ));
        cfg.livemode = Some(false);
        assert!(verify(&cfg.build().unwrap(), S1_HEADER, S1_BODY, 1714536000).is_ok());
    }

    #[test]
    fn payment_event_without_order_metadata_is_malformed_but_other_events_pass() {
        let missing = json!({"id": "evt_1", "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_1", "amount_received": 1, "currency": "usd", "metadata": {}}}});
        assert!(matches!(
            normalize(missing, "out_trade_no"),
            Err(ChannelError::Malformed(_))
        ));
        let other = json!({"id": "evt_2", "type": "customer.created", "data": {"object": {"id": "cus_1"}}});
        let event = normalize(other, "out_trade_no").unwrap();
        assert_eq!(event.kind, EventKind::Other);
        assert_eq!(event.out_trade_no, "");
        let thin = json!({"id": "evt_3", "object": "v2.core.event", "type": "v1.billing.meter.error_report_triggered"});
        assert!(matches!(
            normalize(thin, "out_trade_no"),
            Err(ChannelError::Unsupported(_))
        ));
    }

    #[test]
    fn fractional_amount_is_malformed_not_rounded() {
        let event = json!({"id": "evt_1", "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_1", "amount_received": 88.8, "currency": "usd", "metadata": {"out_trade_no": "O"}}}});
        assert!(matches!(
            normalize(event, "out_trade_no"),
            Err(ChannelError::Malformed(_))
        ));
    }

    #[test]
    fn simulated_events_round_trip_through_verify() {
        let keys = SimulateKeys {
            secret: Some(SECRET.as_bytes().to_vec()),
            ..SimulateKeys::default()
        };
        for kind in [
            EventKind::PaymentSucceeded,
            EventKind::PaymentPending,
            EventKind::PaymentFailed,
            EventKind::PaymentClosed,
            EventKind::RefundSucceeded,
        ] {
            let spec = SimulateSpec {
                out_trade_no: "ORDER-SIM-1".into(),
                amount_minor: 1999,
                currency: "usd".into(),
                kind,
                out_refund_no: None,
                refund_amount_minor: Some(500),
                channel_txn_id: "pi_sim_1".into(),
                at: at(1714536000),
                notification_id: "evt_sim_1".into(),
                app_id: None,
                mch_id: None,
            };
            let n = simulate(&spec, &keys).unwrap();
            let event = verify(
                &channel(),
                &n.headers[0].1,
                std::str::from_utf8(&n.body).unwrap(),
                1714536000,
            )
            .unwrap();
            assert_eq!(event.kind, kind);
            assert_eq!(event.out_trade_no, "ORDER-SIM-1");
            assert_eq!(event.currency.as_deref(), Some("USD"));
            assert_eq!(event.notification_id.as_deref(), Some("evt_sim_1"));
            if kind == EventKind::RefundSucceeded {
                assert_eq!(event.refund.unwrap().amount_minor, Some(500));
            }
        }
        assert!(simulate(
            &SimulateSpec {
                kind: EventKind::Other,
                ..simulate_spec()
            },
            &keys
        )
        .is_err());
        assert!(simulate(&simulate_spec(), &SimulateKeys::default())
            .unwrap_err()
            .contains("secret"));
    }

    fn simulate_spec() -> SimulateSpec {
        SimulateSpec {
            out_trade_no: "O".into(),
            amount_minor: 1,
            currency: "usd".into(),
            kind: EventKind::PaymentSucceeded,
            out_refund_no: None,
            refund_amount_minor: None,
            channel_txn_id: "pi_1".into(),
            at: at(1714536000),
            notification_id: "evt_1".into(),
            app_id: None,
            mch_id: None,
        }
    }

    #[test]
    fn build_reports_missing_secrets_by_field() {
        assert_eq!(config(&[]).build().unwrap_err()[0].path, "endpoint_secrets");
        let issues = config(&[SECRET, "env:PG_TEST_STRIPE_UNSET"]).build().unwrap_err();
        assert_eq!(issues[0].path, "endpoint_secrets[1]");
        let cfg: StripeConfig = serde_json::from_value(json!({"endpoint_secrets": ["env:X"]})).unwrap();
        assert_eq!(cfg.tolerance, Duration::from_secs(300));
        assert!(serde_json::from_value::<StripeConfig>(json!({"endpoint_secrets": [], "secret": "x"})).is_err());
        assert!(!format!("{:?}", channel()).contains("test_secret"));
        let schema = serde_json::to_value(schemars::schema_for!(StripeConfig)).unwrap();
        assert_eq!(schema["properties"]["tolerance"]["type"], "string");
    }

    /// `body` signed with [`SECRET`] at `t`, verified at `t`.
    fn verify_signed_body(body: &str, t: i64) -> Result<VerifiedEvent, ChannelError> {
        let v1 = hex::encode(compute_signature(SECRET.as_bytes(), &t.to_string(), body.as_bytes()));
        verify(&channel(), &format!("t={t},v1={v1}"), body, t)
    }

    #[test]
    fn implausible_amounts_are_refused_except_a_free_checkout() {
        let refused = [
            S1_BODY.replace(r#""amount_received":8880"#, r#""amount_received":-8880"#),
            S1_BODY.replace(r#""amount_received":8880"#, r#""amount_received":0"#),
            S3_BODY.replace(r#""amount_refunded":1000"#, r#""amount_refunded":-1000"#),
        ];
        for body in &refused {
            let err = verify_signed_body(body, 1714536000).unwrap_err();
            assert!(matches!(err, ChannelError::Amount(_)), "{err:?} for {body}");
            assert_eq!(err.outcome().as_str(), "rejected_amount");
        }
        // A Checkout Session discounted to 100 % is a real payment of 0.
        let free = S2_BODY.replace(r#""amount_total":1999"#, r#""amount_total":0"#);
        let event = verify_signed_body(&free, 1714536100).unwrap();
        assert_eq!(event.kind, EventKind::PaymentSucceeded);
        assert_eq!(event.amount_minor, Some(0));
        let negative = S2_BODY.replace(r#""amount_total":1999"#, r#""amount_total":-1"#);
        assert!(matches!(
            verify_signed_body(&negative, 1714536100),
            Err(ChannelError::Amount(_))
        ));
    }

    #[test]
    fn acks_are_2xx_and_non_2xx() {
        assert_eq!(channel().success_ack().status, 200);
        assert_eq!(channel().failure_ack("x").status, 400);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_headers_and_body_never_panic_and_never_verify(
            header in prop_oneof![Just(S1_HEADER.to_string()), "t=[0-9]{0,12}(,v[01]=[0-9a-f]{0,64}){0,3}", "[ -~]{0,120}"],
            body in prop_oneof![Just(S1_BODY.to_string()), "\\PC{0,200}"],
        ) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&header) {
                h.insert("stripe-signature", v);
            }
            let result = channel().verify(&NotifyRequest { headers: &h, body: body.as_bytes() }, at(1714536000));
            let genuine = header == S1_HEADER && body == S1_BODY;
            prop_assert_eq!(result.is_ok(), genuine);
        }
    }
}
