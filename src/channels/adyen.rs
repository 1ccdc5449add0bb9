//! Adyen standard webhooks: a JSON `{"live", "notificationItems": [{"NotificationRequestItem":
//! {...}}]}` whose item carries `additionalData.hmacSignature`, the base64 HMAC-SHA256 (key: the
//! hex HMAC key of the webhook) over eight of its fields joined by `:` — `pspReference`,
//! `originalReference`, `merchantAccountCode`, `merchantReference`, `amount.value` (minor units),
//! `amount.currency`, `eventCode`, `success` — absent fields as empty text, values unescaped.
//!
//! Adyen signs those fields, not the body bytes: everything payguard reports comes from them,
//! except `eventDate` (the occurrence time, unsigned). The item is read with duplicate keys
//! refused, so a body cannot show a backend one value and payguard another. One notification is
//! one event, so a batch of several items is refused (Adyen sends one item per request unless
//! batching is turned on).

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{
    printable, Ack, Channel, ChannelError, ChannelKind, ChannelSetup, EventKind, MerchantRef, NotifyRequest,
    RefundInfo, SimulateInput, SimulateKeys, SimulateSpec, SimulatedNotification, TestSetup, VerifiedEvent,
};
use crate::secret::{Secret, SecretRef};
use crate::issue::ConfigIssue;

/// Adyen webhook endpoint (one standard webhook of one merchant account).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdyenConfig {
    /// HMAC keys of the webhook (hex, as the Customer Area shows them). Several are accepted while
    /// a key is rotated.
    pub(crate) hmac_keys: Vec<SecretRef>,
    /// The merchant account notifications must be addressed to (`merchantAccountCode`).
    pub(crate) merchant_account: String,
}

impl AdyenConfig {
    /// Resolves and hex-decodes the HMAC keys. Problems name the field and the source, never the
    /// value.
    pub(crate) fn build(&self) -> Result<Adyen, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut keys = Vec::new();
        if self.hmac_keys.is_empty() {
            issues.push(ConfigIssue::new("hmac_keys", "at least one HMAC key is required"));
        }
        for (i, source) in self.hmac_keys.iter().enumerate() {
            match source.resolve().and_then(|s| decode_hmac_key(s.expose())) {
                Ok(key) => keys.push(key),
                Err(e) => issues.push(ConfigIssue::new(format!("hmac_keys[{i}]"), e)),
            }
        }
        if self.merchant_account.trim().is_empty() {
            issues.push(ConfigIssue::new("merchant_account", "must not be empty"));
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Adyen {
            keys,
            merchant_account: self.merchant_account.clone(),
        })
    }
}

/// Decodes the hex HMAC key (surrounding whitespace ignored).
fn decode_hmac_key(text: &[u8]) -> Result<Secret, String> {
    let text = std::str::from_utf8(text).map_err(|_| "HMAC key is not text".to_string())?;
    let key = hex::decode(text.trim()).map_err(|_| "HMAC key is not hex".to_string())?;
    if key.is_empty() {
        return Err("HMAC key is empty".into());
    }
    Ok(Secret::from_bytes(key))
}

/// A configured Adyen webhook verifier.
#[derive(Clone)]
pub struct Adyen {
    keys: Vec<Secret>,
    merchant_account: String,
}

impl fmt::Debug for Adyen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adyen")
            .field("keys", &self.keys.len())
            .field("merchant_account", &self.merchant_account)
            .finish()
    }
}

/// The notification envelope. Unknown fields are ignored (Adyen adds fields); a known field that
/// appears twice is an error.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    notification_items: Vec<ItemWrapper>,
}

#[derive(Debug, Deserialize)]
struct ItemWrapper {
    #[serde(rename = "NotificationRequestItem")]
    item: Item,
}

/// The fields of a `NotificationRequestItem` payguard reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    #[serde(default)]
    additional_data: Option<AdditionalData>,
    amount: Amount,
    event_code: String,
    #[serde(default)]
    event_date: Option<String>,
    merchant_account_code: String,
    #[serde(default)]
    merchant_reference: Option<String>,
    #[serde(default)]
    original_reference: Option<String>,
    psp_reference: String,
    success: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdditionalData {
    #[serde(default)]
    hmac_signature: Option<String>,
}

/// `value` is an integer in minor units; a fraction or a string is refused by the `i64`.
#[derive(Debug, Deserialize)]
struct Amount {
    currency: String,
    value: i64,
}

/// The eight signed fields of one item, absent ones empty.
struct SignedFields<'a> {
    psp_reference: &'a str,
    original_reference: &'a str,
    merchant_account: &'a str,
    merchant_reference: &'a str,
    value: i64,
    currency: &'a str,
    event_code: &'a str,
    success: &'a str,
}

impl SignedFields<'_> {
    /// The signed text: the fields joined by `:`, unescaped.
    fn text(&self) -> String {
        [
            self.psp_reference,
            self.original_reference,
            self.merchant_account,
            self.merchant_reference,
            &self.value.to_string(),
            self.currency,
            self.event_code,
            self.success,
        ]
        .join(":")
    }
}

impl Item {
    fn signed_fields(&self) -> SignedFields<'_> {
        SignedFields {
            psp_reference: &self.psp_reference,
            original_reference: self.original_reference.as_deref().unwrap_or(""),
            merchant_account: &self.merchant_account_code,
            merchant_reference: self.merchant_reference.as_deref().unwrap_or(""),
            value: self.amount.value,
            currency: &self.amount.currency,
            event_code: &self.event_code,
            success: &self.success,
        }
    }
}

/// HMAC-SHA256 of `data` with `key`.
fn mac(key: &[u8], data: &str) -> [u8; 32] {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The normalized kind of an `eventCode` with its `success` flag. Codes payguard does not
/// normalize are `other`, forwarded like every channel's unknown kinds.
fn event_kind(event_code: &str, success: bool) -> EventKind {
    match (event_code, success) {
        ("AUTHORISATION", true) => EventKind::PaymentSucceeded,
        ("AUTHORISATION", false) => EventKind::PaymentFailed,
        ("REFUND", true) => EventKind::RefundSucceeded,
        // A refused refund request, or a refund that failed after it was accepted.
        ("REFUND", false) | ("REFUND_FAILED", true) => EventKind::RefundAbnormal,
        _ => EventKind::Other,
    }
}

impl Channel for Adyen {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Adyen
    }

    fn verify_signed(&self, req: &NotifyRequest<'_>, _now: Timestamp) -> Result<VerifiedEvent, ChannelError> {
        let envelope: Envelope =
            serde_json::from_slice(req.body).map_err(|e| ChannelError::Malformed(format!("notification: {e}")))?;
        let item = match envelope.notification_items.as_slice() {
            [one] => &one.item,
            items => {
                return Err(ChannelError::Malformed(format!(
                    "notificationItems holds {} items; payguard takes one per request (turn batching off)",
                    items.len()
                )))
            }
        };
        let signature = item
            .additional_data
            .as_ref()
            .and_then(|a| a.hmac_signature.as_deref())
            .ok_or_else(|| ChannelError::Signature("additionalData.hmacSignature is missing".into()))?;
        let signature = BASE64
            .decode(signature)
            .map_err(|_| ChannelError::Signature("additionalData.hmacSignature is not base64".into()))?;
        let data = item.signed_fields().text();
        let mut matched = subtle::Choice::from(0);
        for key in &self.keys {
            matched |= mac(key.expose(), &data).as_slice().ct_eq(&signature);
        }
        if !bool::from(matched) {
            return Err(ChannelError::Signature(
                "hmacSignature does not match a configured HMAC key".into(),
            ));
        }
        if item.merchant_account_code != self.merchant_account {
            return Err(ChannelError::Business(format!(
                "merchantAccountCode {} is not the configured merchant account",
                printable(&item.merchant_account_code)
            )));
        }
        let success = match item.success.as_str() {
            "true" => true,
            "false" => false,
            other => {
                return Err(ChannelError::Malformed(format!(
                    "success is {:?}, not \"true\" or \"false\"",
                    printable(other)
                )))
            }
        };
        let kind = event_kind(&item.event_code, success);
        let out_trade_no = item.merchant_reference.clone().unwrap_or_default();
        if kind != EventKind::Other && out_trade_no.is_empty() {
            return Err(ChannelError::Malformed(format!(
                "{} has no merchantReference",
                kind.as_str()
            )));
        }
        // A refund item is the refund: its pspReference names it, originalReference the payment.
        let (channel_txn_id, amount_minor, refund) = if kind.is_refund() {
            let refund = RefundInfo {
                out_refund_no: None,
                refund_id: Some(item.psp_reference.clone()),
                amount_minor: Some(item.amount.value),
            };
            (item.original_reference.clone(), None, Some(refund))
        } else {
            (Some(item.psp_reference.clone()), Some(item.amount.value), None)
        };
        let occurred_at = item
            .event_date
            .as_deref()
            .filter(|d| d.parse::<Timestamp>().is_ok())
            .map(str::to_string);
        let mut raw: Value = serde_json::from_slice::<Value>(req.body)
            .ok()
            .and_then(|v| v.pointer("/notificationItems/0/NotificationRequestItem").cloned())
            .unwrap_or(Value::Null);
        // The signature is not event data.
        if let Some(extra) = raw.get_mut("additionalData").and_then(Value::as_object_mut) {
            extra.remove("hmacSignature");
        }
        Ok(VerifiedEvent {
            channel: ChannelKind::Adyen,
            kind,
            out_trade_no,
            channel_txn_id,
            amount_minor,
            currency: Some(item.amount.currency.to_ascii_uppercase()),
            refund,
            occurred_at,
            notification_id: None,
            raw_status: Some(format!("{}:{}", item.event_code, item.success)),
            merchant: MerchantRef {
                app_id: None,
                mch_id: Some(item.merchant_account_code.clone()),
            },
            raw,
        })
    }

    /// HTTP 200 with `[accepted]`, what Adyen's webhook documentation asks for.
    fn success_ack(&self) -> Ack {
        Ack {
            status: 200,
            content_type: Some("text/plain"),
            body: b"[accepted]".to_vec(),
        }
    }

    fn failure_ack(&self, reason: &str) -> Ack {
        // Anything but a 2xx makes Adyen queue the notification and retry.
        Ack::text(500, reason)
    }
}

/// Produces a signed single-item notification for `spec`: `AUTHORISATION` for payments,
/// `REFUND` for refunds (pspReference = the refund number, originalReference = the payment),
/// `success` false for `payment.failed` and `refund.abnormal`. `keys.secret` is the hex HMAC key,
/// `spec.mch_id` the merchant account.
pub(crate) fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
    let key = decode_hmac_key(keys.secret.as_deref().ok_or("adyen needs the hex HMAC key (secret)")?)?;
    let merchant_account = spec.mch_id.as_deref().ok_or("adyen needs the merchant account (mch_id)")?;
    let (event_code, success, psp_reference, original_reference, value) = match spec.kind {
        EventKind::PaymentSucceeded | EventKind::PaymentFailed => (
            "AUTHORISATION",
            spec.kind == EventKind::PaymentSucceeded,
            spec.channel_txn_id.clone(),
            None,
            spec.amount_minor,
        ),
        EventKind::RefundSucceeded | EventKind::RefundAbnormal => (
            "REFUND",
            spec.kind == EventKind::RefundSucceeded,
            spec.out_refund_no.clone().ok_or("refund simulation needs out_refund_no")?,
            Some(spec.channel_txn_id.clone()),
            spec.refund_amount_minor.ok_or("refund simulation needs refund_amount_minor")?,
        ),
        other => return Err(format!("adyen simulation does not produce {}", other.as_str())),
    };
    let success = if success { "true" } else { "false" };
    let currency = spec.currency.to_ascii_uppercase();
    let data = SignedFields {
        psp_reference: &psp_reference,
        original_reference: original_reference.as_deref().unwrap_or(""),
        merchant_account,
        merchant_reference: &spec.out_trade_no,
        value,
        currency: &currency,
        event_code,
        success,
    }
    .text();
    let signature = BASE64.encode(mac(key.expose(), &data));
    let when = spec
        .at
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let mut item = json!({
        "additionalData": {"hmacSignature": signature},
        "amount": {"currency": currency, "value": value},
        "eventCode": event_code,
        "eventDate": when,
        "merchantAccountCode": merchant_account,
        "merchantReference": spec.out_trade_no,
        "paymentMethod": "visa",
        "pspReference": psp_reference,
        "success": success,
    });
    if let (Some(original), Some(map)) = (original_reference, item.as_object_mut()) {
        map.insert("originalReference".into(), Value::String(original));
    }
    let body = json!({"live": "false", "notificationItems": [{"NotificationRequestItem": item}]})
        .to_string()
        .into_bytes();
    Ok(SimulatedNotification {
        headers: Vec::new(),
        content_type: "application/json".into(),
        body,
    })
}

/// The test HMAC key: the one of adyen-python-api-library `test/UtilTest.py`.
const TEST_HMAC_KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
const TEST_MERCHANT_ACCOUNT: &str = "PayguardTestMerchant";

impl ChannelSetup for AdyenConfig {
    const KIND: ChannelKind = ChannelKind::Adyen;
    type Channel = Adyen;
    const SIMULATE_NEEDS: &'static [(SimulateInput, &'static str)] = &[
        (SimulateInput::Secret, "the hex HMAC key"),
        (SimulateInput::MchId, "the merchant account"),
    ];
    const EVENT_KINDS: &'static [EventKind] = &[
        EventKind::PaymentSucceeded,
        EventKind::PaymentFailed,
        EventKind::RefundSucceeded,
        EventKind::RefundAbnormal,
    ];
    // A notification is named by its pspReference and eventCode; there is no separate id.
    const NOTIFICATION_ID: bool = false;

    fn build(&self) -> Result<Adyen, Vec<ConfigIssue>> {
        AdyenConfig::build(self)
    }

    fn simulate(spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
        simulate(spec, keys)
    }

    /// pspReference style: 16 characters.
    fn simulated_txn_id(stamp: i64) -> String {
        format!("{:016}", stamp.rem_euclid(10_000_000_000_000_000))
    }

    fn test_setup(_fixtures: &Path) -> Result<TestSetup, String> {
        Ok(TestSetup {
            config: json!({"hmac_keys": [TEST_HMAC_KEY], "merchant_account": TEST_MERCHANT_ACCOUNT}),
            keys: SimulateKeys {
                secret: Some(TEST_HMAC_KEY.as_bytes().to_vec()),
                ..SimulateKeys::default()
            },
            app_id: None,
            mch_id: Some(TEST_MERCHANT_ACCOUNT.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::test_support::at;
    use http::HeaderMap;
    use proptest::prelude::*;

    /// adyen-python-api-library `test/UtilTest.py`, `test_notification_request_item_hmac`.
    const PY_KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
    const PY_SIGNATURE: &str = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0=";
    /// adyen-python-api-library `test/UtilTest.py`, `test_webhooks_with_slashes`, with the items of
    /// `test/mocks/util/colon_notification.json` and `backslash_notification.json`.
    const SLASHES_KEY: &str = "74F490DD33F7327BAECC88B2947C011FC02D014A473AAA33A8EC93E4DC069174";
    /// adyen-go-api-library `src/hmacvalidator/hmacvalidator_test.go`.
    const GO_KEY: &str = "DFB1EB5485895CFA84146406857104ABB4CBCABDC8AAF103A624C8F6A3EAAB00";
    const GO_SIGNATURE: &str = "ipnxGCaUZ4l8TUW75a71/ghd2Fe5ffvX0pV4TLTntIc=";

    fn channel(key: &str, merchant: &str) -> Adyen {
        AdyenConfig {
            hmac_keys: vec![SecretRef::new(key)],
            merchant_account: merchant.into(),
        }
        .build()
        .unwrap()
    }

    fn verify(ch: &Adyen, body: &str) -> Result<VerifiedEvent, ChannelError> {
        ch.verify(
            &NotifyRequest {
                headers: &HeaderMap::new(),
                body: body.as_bytes(),
            },
            at(1_714_536_000),
        )
    }

    /// The Python library's item, wrapped as Adyen sends it, with `signature`.
    fn py_body(signature: &str) -> String {
        format!(
            r#"{{"live":"false","notificationItems":[{{"NotificationRequestItem":{{"pspReference":"7914073381342284","merchantReference":"TestPayment-1407325143704","merchantAccountCode":"TestMerchant","amount":{{"currency":"EUR","value":1130}},"eventCode":"AUTHORISATION","success":"true","eventDate":"2019-05-06T17:15:34.121+02:00","operations":["CANCEL","CAPTURE","REFUND"],"paymentMethod":"visa","additionalData":{{"hmacSignature":"{signature}"}}}}}}]}}"#
        )
    }

    fn slashes_body(psp: &str, reference_json: &str, signature: &str) -> String {
        format!(
            r#"{{"live":"false","notificationItems":[{{"NotificationRequestItem":{{"additionalData":{{"authCode":"039404","hmacSignature":"{signature}","paymentMethod":"visa"}},"amount":{{"currency":"EUR","value":1000}},"eventCode":"AUTHORISATION","eventDate":"2023-01-10T13:40:54+01:00","merchantAccountCode":"AntoniStroinski","merchantReference":"{reference_json}","operations":["CANCEL","CAPTURE","REFUND"],"paymentMethod":"visa","pspReference":"{psp}","reason":"039404:1111:03/2030","success":"true"}}}}]}}"#
        )
    }

    #[test]
    fn python_library_vector_verifies_and_normalizes() {
        let event = verify(&channel(PY_KEY, "TestMerchant"), &py_body(PY_SIGNATURE)).unwrap();
        assert_eq!(event.channel, ChannelKind::Adyen);
        assert_eq!(event.kind, EventKind::PaymentSucceeded);
        assert_eq!(event.out_trade_no, "TestPayment-1407325143704");
        assert_eq!(event.channel_txn_id.as_deref(), Some("7914073381342284"));
        assert_eq!(event.amount_minor, Some(1130));
        assert_eq!(event.currency.as_deref(), Some("EUR"));
        assert_eq!(event.occurred_at.as_deref(), Some("2019-05-06T17:15:34.121+02:00"));
        assert_eq!(event.merchant.mch_id.as_deref(), Some("TestMerchant"));
        assert_eq!(event.raw_status.as_deref(), Some("AUTHORISATION:true"));
        assert_eq!(event.refund, None);
        assert!(event.raw["additionalData"].get("hmacSignature").is_none());
        assert_eq!(event.raw["paymentMethod"], "visa");
    }

    #[test]
    fn python_library_vector_near_miss_is_rejected() {
        let near_miss = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo1=";
        let err = verify(&channel(PY_KEY, "TestMerchant"), &py_body(near_miss)).unwrap_err();
        assert!(matches!(err, ChannelError::Signature(_)), "{err}");
    }

    #[test]
    fn colon_and_backslash_in_a_signed_field_are_not_escaped() {
        let ch = channel(SLASHES_KEY, "AntoniStroinski");
        let colon = slashes_body(
            "M8NB66SBZSGLNK82",
            ":slashes are fun",
            "2EQYm7YJpKO4EtHSPu55SQTyWf8dkW5u2nD1tJFpViA=",
        );
        assert_eq!(verify(&ch, &colon).unwrap().out_trade_no, ":slashes are fun");
        // JSON `\\\\` is two backslashes.
        let backslash = slashes_body(
            "T7FD4VM4D3RZNN82",
            r"\\\\slashes are fun",
            "nIgT81gaB5oJpn2jPXupDq68iRo2wUlBsuYjtYfwKqo=",
        );
        assert_eq!(verify(&ch, &backslash).unwrap().out_trade_no, r"\\slashes are fun");
    }

    #[test]
    fn go_library_vector_signs_the_eight_fields_in_order() {
        let data = SignedFields {
            psp_reference: "pspReference",
            original_reference: "originalReference",
            merchant_account: "merchantAccount",
            merchant_reference: "reference",
            value: 1000,
            currency: "EUR",
            event_code: "EVENT",
            success: "true",
        }
        .text();
        assert_eq!(
            data,
            "pspReference:originalReference:merchantAccount:reference:1000:EUR:EVENT:true"
        );
        let key = decode_hmac_key(GO_KEY.as_bytes()).unwrap();
        assert_eq!(BASE64.encode(mac(key.expose(), &data)), GO_SIGNATURE);
    }

    #[test]
    fn tampered_signed_fields_fail_the_signature() {
        let ch = channel(PY_KEY, "TestMerchant");
        for (from, to) in [
            ("\"value\":1130", "\"value\":1131"),
            ("\"currency\":\"EUR\"", "\"currency\":\"USD\""),
            ("TestPayment-1407325143704", "TestPayment-1407325143705"),
            ("\"success\":\"true\"", "\"success\":\"True\""),
            ("7914073381342284", "7914073381342285"),
        ] {
            let body = py_body(PY_SIGNATURE).replace(from, to);
            assert!(
                matches!(verify(&ch, &body), Err(ChannelError::Signature(_))),
                "{to}"
            );
        }
    }

    #[test]
    fn missing_or_undecodable_signature_is_a_signature_failure() {
        let ch = channel(PY_KEY, "TestMerchant");
        let without = py_body(PY_SIGNATURE).replace(&format!(r#","additionalData":{{"hmacSignature":"{PY_SIGNATURE}"}}"#), "");
        assert!(matches!(verify(&ch, &without), Err(ChannelError::Signature(_))));
        assert!(matches!(verify(&ch, &py_body("%%%")), Err(ChannelError::Signature(_))));
        assert!(matches!(verify(&ch, &py_body("")), Err(ChannelError::Signature(_))));
    }

    #[test]
    fn another_merchant_account_is_a_business_failure() {
        let err = verify(&channel(PY_KEY, "OtherMerchant"), &py_body(PY_SIGNATURE)).unwrap_err();
        assert!(matches!(err, ChannelError::Business(_)), "{err}");
    }

    #[test]
    fn batches_and_empty_lists_are_refused_with_the_reason() {
        let one = py_body(PY_SIGNATURE);
        let item = &one[one.find("{\"NotificationRequestItem\"").unwrap()..one.len() - 2];
        let two = format!(r#"{{"live":"false","notificationItems":[{item},{item}]}}"#);
        let err = verify(&channel(PY_KEY, "TestMerchant"), &two).unwrap_err();
        assert!(matches!(&err, ChannelError::Malformed(m) if m.contains("2 items")), "{err}");
        let none = r#"{"live":"false","notificationItems":[]}"#;
        assert!(matches!(
            verify(&channel(PY_KEY, "TestMerchant"), none),
            Err(ChannelError::Malformed(_))
        ));
    }

    #[test]
    fn duplicate_keys_fractional_or_string_amounts_are_malformed() {
        let ch = channel(PY_KEY, "TestMerchant");
        let dup = py_body(PY_SIGNATURE).replace("\"value\":1130", "\"value\":1,\"value\":1130");
        assert!(matches!(verify(&ch, &dup), Err(ChannelError::Malformed(_))));
        let dup_reference =
            py_body(PY_SIGNATURE).replace("\"merchantReference\"", "\"merchantReference\":\"X\",\"merchantReference\"");
        assert!(matches!(verify(&ch, &dup_reference), Err(ChannelError::Malformed(_))));
        for amount in ["1130.0", "\"1130\"", "1.13e3"] {
            let body = py_body(PY_SIGNATURE).replace("\"value\":1130", &format!("\"value\":{amount}"));
            assert!(matches!(verify(&ch, &body), Err(ChannelError::Malformed(_))), "{amount}");
        }
        assert!(matches!(verify(&ch, "not json"), Err(ChannelError::Malformed(_))));
    }

    #[test]
    fn event_codes_map_to_kinds_and_unknown_codes_are_other() {
        assert_eq!(event_kind("AUTHORISATION", true), EventKind::PaymentSucceeded);
        assert_eq!(event_kind("AUTHORISATION", false), EventKind::PaymentFailed);
        assert_eq!(event_kind("REFUND", true), EventKind::RefundSucceeded);
        assert_eq!(event_kind("REFUND", false), EventKind::RefundAbnormal);
        assert_eq!(event_kind("REFUND_FAILED", true), EventKind::RefundAbnormal);
        assert_eq!(event_kind("CANCELLATION", true), EventKind::Other);
        assert_eq!(event_kind("REPORT_AVAILABLE", true), EventKind::Other);
    }

    fn spec(kind: EventKind) -> SimulateSpec {
        SimulateSpec {
            out_trade_no: "ORDER-ADYEN-1".into(),
            amount_minor: 8880,
            currency: "eur".into(),
            kind,
            out_refund_no: Some("REFUND-PSP-0001".into()),
            refund_amount_minor: Some(1000),
            channel_txn_id: "8815000000000001".into(),
            at: at(1_714_536_000),
            notification_id: "unused".into(),
            app_id: None,
            mch_id: Some(TEST_MERCHANT_ACCOUNT.into()),
        }
    }

    fn keys() -> SimulateKeys {
        SimulateKeys {
            secret: Some(TEST_HMAC_KEY.as_bytes().to_vec()),
            ..SimulateKeys::default()
        }
    }

    #[test]
    fn simulated_notifications_round_trip_through_verify() {
        let ch = channel(TEST_HMAC_KEY, TEST_MERCHANT_ACCOUNT);
        for kind in <AdyenConfig as ChannelSetup>::EVENT_KINDS {
            let n = simulate(&spec(*kind), &keys()).unwrap();
            let event = verify(&ch, std::str::from_utf8(&n.body).unwrap()).unwrap();
            assert_eq!(event.kind, *kind);
            assert_eq!(event.out_trade_no, "ORDER-ADYEN-1");
            assert_eq!(event.currency.as_deref(), Some("EUR"));
            assert_eq!(event.occurred_at.as_deref(), Some("2024-05-01T04:00:00+00:00"));
            if kind.is_refund() {
                let refund = event.refund.unwrap();
                assert_eq!(refund.amount_minor, Some(1000));
                assert_eq!(refund.refund_id.as_deref(), Some("REFUND-PSP-0001"));
                assert_eq!(event.channel_txn_id.as_deref(), Some("8815000000000001"));
            } else {
                assert_eq!(event.amount_minor, Some(8880));
                assert_eq!(event.channel_txn_id.as_deref(), Some("8815000000000001"));
            }
        }
        assert!(simulate(&spec(EventKind::PaymentPending), &keys()).is_err());
        assert!(simulate(&spec(EventKind::PaymentSucceeded), &SimulateKeys::default()).is_err());
    }

    #[test]
    fn zero_or_negative_payments_are_refused_after_the_signature() {
        let ch = channel(TEST_HMAC_KEY, TEST_MERCHANT_ACCOUNT);
        for amount in [0, -1] {
            let mut s = spec(EventKind::PaymentSucceeded);
            s.amount_minor = amount;
            let n = simulate(&s, &keys()).unwrap();
            let err = verify(&ch, std::str::from_utf8(&n.body).unwrap()).unwrap_err();
            assert!(matches!(err, ChannelError::Amount(_)), "{amount}: {err}");
        }
    }

    #[test]
    fn build_reports_bad_keys_by_field_without_their_value() {
        let issues = AdyenConfig {
            hmac_keys: vec![SecretRef::new("zz-secret-not-hex"), SecretRef::new("env:PG_TEST_ADYEN_UNSET")],
            merchant_account: " ".into(),
        }
        .build()
        .unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["hmac_keys[0]", "hmac_keys[1]", "merchant_account"]);
        assert!(issues.iter().all(|i| !i.message.contains("zz-secret")));
        let empty = AdyenConfig {
            hmac_keys: vec![],
            merchant_account: "M".into(),
        };
        assert_eq!(empty.build().unwrap_err()[0].path, "hmac_keys");
        assert!(!format!("{:?}", channel(PY_KEY, "M")).contains("44782"));
    }

    #[test]
    fn rotated_keys_each_verify() {
        let ch = AdyenConfig {
            hmac_keys: vec![SecretRef::new(GO_KEY), SecretRef::new(PY_KEY)],
            merchant_account: "TestMerchant".into(),
        }
        .build()
        .unwrap();
        assert!(verify(&ch, &py_body(PY_SIGNATURE)).is_ok());
    }

    #[test]
    fn acks_are_accepted_and_retryable_non_2xx() {
        let ch = channel(PY_KEY, "M");
        assert_eq!(ch.success_ack().body, b"[accepted]");
        assert_eq!(ch.success_ack().status, 200);
        assert!(!(200..300).contains(&ch.failure_ack("busy").status));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_bodies_never_panic_and_never_verify(body in prop_oneof![
            "\\PC{0,300}",
            "[a-zA-Z0-9 :_.\"-]{0,40}".prop_map(|s| py_body(PY_SIGNATURE).replace("TestPayment", &s)),
        ]) {
            let result = verify(&channel(PY_KEY, "TestMerchant"), &body);
            let genuine = body == py_body(PY_SIGNATURE);
            prop_assert_eq!(result.is_ok(), genuine);
        }
    }
}
