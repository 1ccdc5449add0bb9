//! Payment-notification handling: verify → normalize →
//! business checks (inside the channel) → claim the dedup key → forward → on backend acceptance
//! mark done and acknowledge; otherwise release the claim and answer the channel's failure so it
//! retries. Nothing is acknowledged unless the backend accepted it or it is a proven duplicate.

pub mod config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use sha2::{Digest, Sha256};

use crate::channels::standard_webhooks::StandardWebhookSigner;
use crate::channels::{Ack, Channel, ChannelKind, EventKind, NotifyRequest, RefundInfo, VerifiedEvent};
use crate::clock::Clock;
use crate::outcome::NotifyOutcome;
use crate::proxy::backend::{is_hop_by_hop, Backend, BackendError, BackendRequest};
use crate::store::{DedupClaim, Store};

/// What is forwarded to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ForwardMode {
    /// The normalized event as JSON, signed with Standard Webhooks headers.
    Normalized,
    /// The original body and headers plus `X-PG-Verified: 1` and `X-PG-Event-Id`; the backend's
    /// reply is relayed to the channel.
    Passthrough,
}

/// A configured notification endpoint.
#[derive(Debug, Clone)]
pub(crate) struct NotifyRoute {
    /// The channel verifier.
    pub(crate) channel: Arc<dyn Channel>,
    /// The `merchants:` account whose keys the verifier holds (`merchant:`), if any.
    pub(crate) merchant: Option<String>,
    /// Forward mode.
    pub(crate) forward: ForwardMode,
    /// Backend path; `None` forwards to the path the notification arrived on.
    pub(crate) backend_path: Option<String>,
    /// Whole backend exchange timeout.
    pub(crate) timeout: Duration,
    /// Signs forwarded requests with Standard Webhooks headers.
    pub(crate) signer: Option<StandardWebhookSigner>,
    /// Lease of a dedup claim (longer than `timeout`).
    pub(crate) lease: Duration,
    /// How long a completed notification is remembered.
    pub(crate) keep: Duration,
    /// Largest accepted notification body.
    pub(crate) max_body: usize,
    /// The order tracking of the route's `merchant`, when it has `order_query`: a delivered
    /// final event ends the order's tracking.
    pub(crate) tracking: Option<Arc<crate::orders::Tracking>>,
    /// The delivered-event ledger of the route's `merchant`, if it names one.
    pub(crate) ledger: Option<crate::orders::Ledger>,
}

impl NotifyRoute {
    /// Where events go on the backend: the configured path, else the path it arrived on.
    fn backend_target(&self, arrived_on: &str) -> String {
        self.backend_path.clone().unwrap_or_else(|| arrived_on.to_string())
    }
}

/// The notification as received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Incoming<'a> {
    /// Path and query it arrived on.
    pub(crate) path_and_query: &'a str,
    /// Headers.
    pub(crate) headers: &'a HeaderMap,
    /// Raw body.
    pub(crate) body: &'a [u8],
    /// Request id (logged and passed to the backend).
    pub(crate) request_id: &'a str,
    /// Whether the channel sent it or an order query found it.
    pub(crate) source: EventSource,
}

/// Where an event came from (the normalized event's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventSource {
    /// The channel's notification.
    Notification,
    /// An order query ([`crate::orders`]) found the order in this state.
    Query,
    /// Reconciliation ([`crate::reconcile`]) found it in the channel's daily bill.
    Bill,
}

impl EventSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Notification => "notification",
            Self::Query => "query",
            Self::Bill => "bill",
        }
    }
}

/// Where and how to do I/O.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotifyIo<'a> {
    /// Shared state.
    pub(crate) store: &'a dyn Store,
    /// Backend client.
    pub(crate) backend: &'a dyn Backend,
    /// Backend address.
    pub(crate) upstream: SocketAddr,
    /// Time source.
    pub(crate) clock: &'a dyn Clock,
}

/// The answer to send to the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// HTTP status.
    pub(crate) status: u16,
    /// Headers (content type included).
    pub(crate) headers: Vec<(String, String)>,
    /// Body bytes.
    pub(crate) body: Vec<u8>,
}

impl From<crate::problem::Problem> for Reply {
    fn from(p: crate::problem::Problem) -> Self {
        Self {
            status: p.status,
            headers: vec![(
                "content-type".to_string(),
                crate::problem::PROBLEM_CONTENT_TYPE.to_string(),
            )],
            body: p.to_json(),
        }
    }
}

impl From<Ack> for Reply {
    fn from(a: Ack) -> Self {
        Self {
            status: a.status,
            headers: a
                .content_type
                .map(|ct| vec![("content-type".to_string(), ct.to_string())])
                .unwrap_or_default(),
            body: a.body,
        }
    }
}

/// One line of the transaction log and the metric labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NotifyRecord {
    /// How it ended (the metric label and log field).
    pub(crate) outcome: NotifyOutcome,
    /// Why it was refused (no secrets, no signatures).
    pub(crate) reason: Option<String>,
    /// Stable event id.
    pub(crate) event_id: Option<String>,
    /// Normalized kind.
    pub(crate) kind: Option<&'static str>,
    /// Merchant order number.
    pub(crate) out_trade_no: Option<String>,
    /// Dedup result: `claimed`, `done`, `in_flight`, `skipped`.
    pub(crate) dedup: Option<&'static str>,
    /// Backend status, when it answered.
    pub(crate) backend_status: Option<u16>,
    /// Backend latency.
    pub(crate) backend_latency: Option<Duration>,
    /// When the store was last found to have lost its data, if that is recent
    /// (`store.redis.data_loss_notice_for`): this event's dedup record may have been lost, so
    /// the backend may see it a second time.
    pub(crate) store_data_loss: Option<jiff::Timestamp>,
}

/// Handles one notification end to end.
pub(crate) async fn handle_notification(
    route: &NotifyRoute,
    io: NotifyIo<'_>,
    incoming: Incoming<'_>,
) -> (Reply, NotifyRecord) {
    let channel = route.channel.as_ref();
    let mut record = NotifyRecord::default();
    let fail = |record: &mut NotifyRecord, outcome: NotifyOutcome, reason: String, ack_reason: &str| {
        record.outcome = outcome;
        record.reason = Some(reason);
        Reply::from(channel.failure_ack(ack_reason))
    };

    if incoming.body.len() > route.max_body {
        let reason = format!("body of {} bytes exceeds {} bytes", incoming.body.len(), route.max_body);
        return (
            fail(&mut record, NotifyOutcome::BodyTooLarge, reason, "body too large"),
            record,
        );
    }

    if let Some(reason) = unsupported_content_encoding(incoming.headers) {
        return (
            fail(
                &mut record,
                NotifyOutcome::RejectedMalformed,
                reason,
                "malformed notification",
            ),
            record,
        );
    }

    let now = io.clock.now();
    let event = match channel.verify(
        &NotifyRequest {
            headers: incoming.headers,
            body: incoming.body,
        },
        now,
    ) {
        Ok(ev) => ev,
        Err(e) => {
            record.outcome = e.outcome();
            record.reason = Some(e.to_string());
            return (Reply::from(channel.rejection_ack(&e)), record);
        }
    };

    deliver(route, io, incoming, &event).await
}

/// Deduplicates and forwards a verified event (from a notification or an order query).
pub(crate) async fn deliver(
    route: &NotifyRoute,
    io: NotifyIo<'_>,
    incoming: Incoming<'_>,
    event: &VerifiedEvent,
) -> (Reply, NotifyRecord) {
    let channel = route.channel.as_ref();
    let mut record = NotifyRecord::default();
    let fail = |record: &mut NotifyRecord, outcome: NotifyOutcome, reason: String, ack_reason: &str| {
        record.outcome = outcome;
        record.reason = Some(reason);
        Reply::from(channel.failure_ack(ack_reason))
    };
    let keys = EventKeys::of(event, incoming.body);
    record.event_id = Some(keys.event_id.clone());
    record.kind = Some(event.kind.as_str());
    record.out_trade_no = Some(event.out_trade_no.clone());

    // A late `payment.pending` after `payment.succeeded` must not reach the backend: once
    // the order's succeeded event is claimed — the channel has signed that the order is paid,
    // whatever the backend answers — or done, a pending event is acked and dropped. Checked in
    // the same store call as the claim.
    let claimed = match &keys.superseded_by {
        Some(succeeded) => {
            io.store
                .dedup_claim_unless(&keys.dedup_key, route.lease, succeeded)
                .await
        }
        None => io.store.dedup_claim(&keys.dedup_key, route.lease).await,
    };
    let token = match claimed {
        Ok(DedupClaim::Claimed { token }) => {
            record.dedup = Some("claimed");
            token
        }
        Ok(DedupClaim::Superseded) => {
            record.outcome = NotifyOutcome::LatePending;
            record.dedup = Some("skipped");
            return (Reply::from(channel.success_ack()), record);
        }
        Ok(DedupClaim::Done) => {
            record.outcome = NotifyOutcome::Duplicate;
            record.dedup = Some("done");
            end_tracking(route, io, event).await;
            return (Reply::from(channel.success_ack()), record);
        }
        Ok(DedupClaim::InFlight) => {
            record.dedup = Some("in_flight");
            let reply = fail(
                &mut record,
                NotifyOutcome::InFlight,
                "another delivery of this event is being processed".into(),
                "in progress, retry later",
            );
            return (reply, record);
        }
        // Fail closed: the channel retries later.
        Err(e) => {
            return (
                fail(
                    &mut record,
                    NotifyOutcome::StoreError,
                    e.to_string(),
                    "temporarily unavailable",
                ),
                record,
            )
        }
    };

    let mut request = match route.forward {
        ForwardMode::Normalized => normalized_request(route, event, &keys, incoming, io.clock),
        ForwardMode::Passthrough => passthrough_request(route, &keys, incoming),
    };
    // The claim was taken, but the record that would have shown a delivery before the loss is
    // gone: tell the backend, whose own idempotency by event id decides.
    if let Some(loss) = io.store.data_loss() {
        record.store_data_loss = Some(loss.at);
        request
            .headers
            .extend(header("x-pg-store-data-loss", &loss.at.to_string()));
    }
    let started = Instant::now();
    let result = io.backend.send(io.upstream, request).await;
    record.backend_latency = Some(started.elapsed());

    let accepted = match &result {
        Ok(resp) => {
            record.backend_status = Some(resp.status);
            match route.forward {
                ForwardMode::Normalized => (200..300).contains(&resp.status),
                ForwardMode::Passthrough => backend_acknowledged(channel.kind(), resp.status, &resp.body),
            }
        }
        Err(_) => false,
    };

    if accepted {
        // The ledger entry is written alongside the dedup record, costing no extra round trip.
        let ledger = async {
            match &route.ledger {
                Some(ledger) => {
                    ledger
                        .record(
                            io.store,
                            event,
                            &keys.event_id,
                            incoming.source.as_str(),
                            io.clock.now(),
                        )
                        .await
                }
                None => Ok(()),
            }
        };
        let (completed, ledgered) = tokio::join!(io.store.dedup_complete(&keys.dedup_key, &token, route.keep), ledger);
        if let Err(e) = ledgered {
            tracing::warn!(event_id = %keys.event_id, error = %e, "could not add the delivered event to the ledger");
        }
        match completed {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(event_id = %keys.event_id, "dedup lease expired before the backend answered; the event may be forwarded again")
            }
            Err(e) => {
                tracing::warn!(event_id = %keys.event_id, error = %e, "could not record the event as done; a retry may be forwarded again")
            }
        }
        record.outcome = NotifyOutcome::Forwarded;
        end_tracking(route, io, event).await;
        let reply = match (route.forward, result) {
            (ForwardMode::Passthrough, Ok(resp)) => relay(resp),
            _ => Reply::from(channel.success_ack()),
        };
        return (reply, record);
    }

    if let Err(e) = io.store.dedup_release(&keys.dedup_key, &token).await {
        // The lease expires by itself; the channel's retry succeeds after that.
        tracing::warn!(event_id = %keys.event_id, error = %e, "could not release the dedup claim");
    }
    let reason = match &result {
        Ok(resp) => format!("backend answered {}", resp.status),
        Err(e) => e.to_string(),
    };
    let reply = match (route.forward, result) {
        // The legacy handler answered in the channel's own format: relay it.
        (ForwardMode::Passthrough, Ok(resp)) => {
            record.outcome = NotifyOutcome::BackendError;
            record.reason = Some(reason);
            relay(resp)
        }
        (_, Err(BackendError::Timeout(_))) => fail(&mut record, NotifyOutcome::BackendError, reason, "backend timeout"),
        _ => fail(
            &mut record,
            NotifyOutcome::BackendError,
            reason,
            "backend did not accept the event",
        ),
    };
    (reply, record)
}

/// A delivered final event ends its order's tracking (no query needed any more).
async fn end_tracking(route: &NotifyRoute, io: NotifyIo<'_>, event: &VerifiedEvent) {
    let Some(tracking) = &route.tracking else { return };
    if crate::orders::is_final(event.kind) && !event.out_trade_no.is_empty() {
        if let Err(e) = tracking.untrack(io.store, &event.out_trade_no).await {
            // The order's next query finds the event done and ends it then.
            tracing::warn!(error = %e, "could not end the order's tracking");
        }
    }
}

/// Why the body's `Content-Encoding` is refused, if it is. Channels sign the decoded bytes, so a
/// body labelled as encoded was verified as something other than what it claims to be, and a
/// passthrough backend would decode it again (reject anything but identity).
fn unsupported_content_encoding(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .find(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"))
        .map(|coding| format!("content-encoding {coding:.32} is not supported"))
}

/// Whether a legacy backend's own reply means "accepted" in the channel's terms (each channel's
/// [`crate::channels::ChannelSetup::backend_acknowledged`]: Alipay needs exactly `success`, WeChat
/// Pay v2 needs `return_code` SUCCESS, most others any 2xx).
pub(crate) fn backend_acknowledged(kind: ChannelKind, status: u16, body: &[u8]) -> bool {
    kind.info().backend_acknowledged(status, body)
}

fn relay(resp: crate::proxy::backend::BackendResponse) -> Reply {
    let headers = resp
        .headers
        .iter()
        .filter(|(k, _)| !is_hop_by_hop(k.as_str()))
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect();
    Reply {
        status: resp.status,
        headers,
        body: resp.body.to_vec(),
    }
}

/// Store keys and the event id derived from the dedup tuple
/// (channel, merchant, out_trade_no, kind, refund number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventKeys {
    /// Stable event id, the same for every retry of the event.
    pub(crate) event_id: String,
    /// Dedup key in the store.
    pub(crate) dedup_key: String,
    /// For a `payment.pending` event: the dedup key of the same order's `payment.succeeded`,
    /// whose claim makes this event late.
    pub(crate) superseded_by: Option<String>,
}

impl EventKeys {
    /// Keys for `event`. Request data is hashed, so keys are bounded and carry no raw values.
    pub(crate) fn of(event: &VerifiedEvent, body: &[u8]) -> Self {
        // Alipay names the seller in most notifications but not in every one (a closed trade's
        // may lack it), and an order query never: its events are keyed by the app, which every
        // one of them names and the route checks.
        let merchant = match event.channel {
            ChannelKind::Alipay => event.merchant.app_id.as_deref(),
            _ => event.merchant.mch_id.as_deref().or(event.merchant.app_id.as_deref()),
        }
        .unwrap_or("");
        let refund_no = event.refund.as_ref().map(|r| refund_key(event, r)).unwrap_or_default();
        // Events without an order number are keyed by the channel's notification id, or the
        // body itself, so unrelated `other` events never collapse into one.
        let order = if !event.out_trade_no.is_empty() {
            format!("o:{}", event.out_trade_no)
        } else if let Some(id) = event.notification_id.as_deref().filter(|s| !s.is_empty()) {
            format!("n:{id}")
        } else {
            format!("b:{}", hex::encode(Sha256::digest(body)))
        };
        let digest = |kind: EventKind, refund_no: &str| {
            let mut h = Sha256::new();
            for p in [event.channel.as_str(), merchant, &order, kind.as_str(), refund_no] {
                h.update((p.len() as u64).to_be_bytes());
                h.update(p.as_bytes());
            }
            hex::encode(h.finalize())
        };
        let full = digest(event.kind, &refund_no);
        let superseded_by = (event.kind == EventKind::PaymentPending && !event.out_trade_no.is_empty())
            .then(|| format!("notify:dedup:{}", &digest(EventKind::PaymentSucceeded, "")[..40]));
        Self {
            event_id: format!("evt_{}", &full[..32]),
            dedup_key: format!("notify:dedup:{}", &full[..40]),
            superseded_by,
        }
    }
}

/// The refund part of the dedup key. One order can have several refunds, so
/// a refund event that names no refund number (Stripe `charge.refunded` carries only the charge)
/// is told apart by the channel's event id, which stays the same across retries, or failing that
/// by the refunded amount (cumulative for Stripe and Alipay).
fn refund_key(event: &VerifiedEvent, refund: &RefundInfo) -> String {
    if let Some(no) = refund
        .out_refund_no
        .as_deref()
        .or(refund.refund_id.as_deref())
        .filter(|s| !s.is_empty())
    {
        return no.to_string();
    }
    if let Some(id) = event.notification_id.as_deref().filter(|s| !s.is_empty()) {
        return format!("n:{id}");
    }
    refund.amount_minor.map(|a| format!("a:{a}")).unwrap_or_default()
}

fn header(name: &'static str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(value)
        .ok()
        .map(|v| (HeaderName::from_static(name), v))
}

fn normalized_request(
    route: &NotifyRoute,
    event: &VerifiedEvent,
    keys: &EventKeys,
    incoming: Incoming<'_>,
    clock: &dyn Clock,
) -> BackendRequest {
    let now = clock.now();
    let mut json = serde_json::to_value(event).unwrap_or_default();
    if let Some(obj) = json.as_object_mut() {
        obj.insert("id".into(), keys.event_id.clone().into());
        obj.insert("received_at".into(), now.to_string().into());
        obj.insert("source".into(), incoming.source.as_str().into());
    }
    let body = Bytes::from(serde_json::to_vec(&json).unwrap_or_default());
    let ts = now.as_second();
    let mut headers: Vec<(HeaderName, HeaderValue)> = [
        header("content-type", "application/json"),
        header("x-request-id", incoming.request_id),
        header("x-pg-event-id", &keys.event_id),
        header("webhook-id", &keys.event_id),
        header("webhook-timestamp", &ts.to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    // The request's trace context (payguard keeps or creates it before routing).
    for name in [crate::trace::TRACEPARENT, crate::trace::TRACESTATE] {
        if let Some(v) = incoming.headers.get(name) {
            headers.push((HeaderName::from_static(name), v.clone()));
        }
    }
    if let Some(signer) = &route.signer {
        headers.extend(header("webhook-signature", &signer.sign(&keys.event_id, ts, &body)));
    }
    BackendRequest {
        method: Method::POST,
        path_and_query: route.backend_target(incoming.path_and_query),
        headers,
        body,
        timeout: route.timeout,
    }
}

fn passthrough_request(route: &NotifyRoute, keys: &EventKeys, incoming: Incoming<'_>) -> BackendRequest {
    let mut headers: Vec<(HeaderName, HeaderValue)> = incoming
        .headers
        .iter()
        // Never let a caller pre-set payguard's own verdict headers.
        .filter(|(k, _)| !k.as_str().starts_with("x-pg-") && k.as_str() != "x-request-id")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.extend(header("x-pg-verified", "1"));
    headers.extend(header("x-pg-event-id", &keys.event_id));
    headers.extend(header("x-request-id", incoming.request_id));
    BackendRequest {
        method: Method::POST,
        path_and_query: route.backend_target(incoming.path_and_query),
        headers,
        body: Bytes::copy_from_slice(incoming.body),
        timeout: route.timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::MerchantRef;

    fn event(kind: EventKind, order: &str, refund: Option<&str>, notification_id: &str) -> VerifiedEvent {
        VerifiedEvent {
            channel: ChannelKind::Stripe,
            kind,
            out_trade_no: order.into(),
            channel_txn_id: None,
            amount_minor: Some(100),
            currency: Some("USD".into()),
            refund: refund.map(|r| RefundInfo {
                out_refund_no: Some(r.into()),
                refund_id: None,
                amount_minor: Some(1),
            }),
            occurred_at: None,
            notification_id: Some(notification_id.into()),
            raw_status: None,
            merchant: MerchantRef {
                app_id: None,
                mch_id: Some("m1".into()),
            },
            raw: serde_json::Value::Null,
        }
    }

    fn refund_event(out_refund_no: Option<&str>, notification_id: Option<&str>, amount: i64) -> VerifiedEvent {
        VerifiedEvent {
            channel: ChannelKind::Stripe,
            kind: EventKind::RefundSucceeded,
            out_trade_no: "order-1".into(),
            channel_txn_id: Some("ch_1".into()),
            amount_minor: Some(8880),
            currency: Some("USD".into()),
            refund: Some(RefundInfo {
                out_refund_no: out_refund_no.map(str::to_string),
                refund_id: None,
                amount_minor: Some(amount),
            }),
            occurred_at: None,
            notification_id: notification_id.map(str::to_string),
            raw_status: None,
            merchant: MerchantRef::default(),
            raw: serde_json::Value::Null,
        }
    }

    #[test]
    fn event_id_is_stable_across_retries_and_distinct_per_kind() {
        let a = EventKeys::of(&event(EventKind::PaymentSucceeded, "o1", None, "evt_1"), b"x");
        let retry = EventKeys::of(&event(EventKind::PaymentSucceeded, "o1", None, "evt_1"), b"y");
        assert_eq!(a, retry, "same order and kind: same key, whatever the body bytes");
        let pending = EventKeys::of(&event(EventKind::PaymentPending, "o1", None, "evt_2"), b"x");
        assert_ne!(a.event_id, pending.event_id);
        assert_eq!(
            pending.superseded_by.as_deref(),
            Some(a.dedup_key.as_str()),
            "a pending event is late once the order's succeeded event is claimed"
        );
        assert_eq!(a.superseded_by, None);
    }

    #[test]
    fn partial_refunds_are_separate_events() {
        let r1 = EventKeys::of(&event(EventKind::RefundSucceeded, "o1", Some("r1"), "evt_1"), b"");
        let r2 = EventKeys::of(&event(EventKind::RefundSucceeded, "o1", Some("r2"), "evt_2"), b"");
        assert_ne!(r1.dedup_key, r2.dedup_key);
        // Without any refund number the notification id tells refunds apart.
        let mut a = event(EventKind::RefundSucceeded, "o1", None, "evt_a");
        a.refund = Some(RefundInfo {
            out_refund_no: None,
            refund_id: None,
            amount_minor: Some(5),
        });
        let mut b = a.clone();
        b.notification_id = Some("evt_b".into());
        assert_ne!(EventKeys::of(&a, b"").dedup_key, EventKeys::of(&b, b"").dedup_key);
    }

    #[test]
    fn keys_carry_no_request_data() {
        let k = EventKeys::of(
            &event(EventKind::PaymentSucceeded, "ORDER-SECRET-42", None, "evt_1"),
            b"",
        );
        assert!(!k.dedup_key.contains("ORDER"));
        assert!(k.event_id.starts_with("evt_") && k.event_id.len() == 36);
    }

    #[test]
    fn legacy_backend_replies_are_judged_in_the_channels_terms() {
        assert!(backend_acknowledged(ChannelKind::Alipay, 200, b"success"));
        assert!(!backend_acknowledged(ChannelKind::Alipay, 200, b"fail"));
        assert!(!backend_acknowledged(ChannelKind::Alipay, 200, b"success\n<html>"));
        let ok = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";
        assert!(backend_acknowledged(ChannelKind::WechatpayV2, 200, ok));
        assert!(!backend_acknowledged(
            ChannelKind::WechatpayV2,
            200,
            b"<xml><return_code><![CDATA[FAIL]]></return_code></xml>"
        ));
        assert!(backend_acknowledged(ChannelKind::WechatpayV3, 204, b""));
        assert!(!backend_acknowledged(ChannelKind::WechatpayV3, 500, b""));
        assert!(backend_acknowledged(ChannelKind::Stripe, 202, b""));
        assert!(!backend_acknowledged(ChannelKind::Unionpay, 204, b""));
    }

    #[test]
    fn only_identity_content_encoding_is_accepted() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.append(http::header::CONTENT_ENCODING, HeaderValue::from_static(v));
            h
        };
        assert_eq!(unsupported_content_encoding(&HeaderMap::new()), None);
        assert_eq!(unsupported_content_encoding(&with("identity")), None);
        assert_eq!(unsupported_content_encoding(&with("IDENTITY")), None);
        assert!(unsupported_content_encoding(&with("gzip")).is_some());
        assert!(unsupported_content_encoding(&with("identity, br")).is_some());
    }

    #[test]
    fn partial_refunds_without_a_refund_number_get_distinct_dedup_keys() {
        let first = EventKeys::of(&refund_event(None, Some("evt_1"), 1000), b"a");
        let second = EventKeys::of(&refund_event(None, Some("evt_2"), 3000), b"b");
        let retry = EventKeys::of(&refund_event(None, Some("evt_1"), 1000), b"a");
        assert_ne!(first.dedup_key, second.dedup_key);
        assert_eq!(first, retry);
        let by_amount = |a| EventKeys::of(&refund_event(None, None, a), b"x").dedup_key;
        assert_ne!(by_amount(1000), by_amount(3000));
    }

    #[test]
    fn refund_number_keys_the_refund_whatever_the_event_id() {
        let a = EventKeys::of(&refund_event(Some("R1"), Some("evt_1"), 1000), b"a");
        let b = EventKeys::of(&refund_event(Some("R1"), Some("evt_9"), 1000), b"b");
        assert_eq!(a, b);
        assert_ne!(a, EventKeys::of(&refund_event(Some("R2"), Some("evt_1"), 1000), b"a"));
    }
}
