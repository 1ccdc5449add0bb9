//! Delivery history per order: what became of every verified notification and recovered event
//! of an order (`GET /admin/orders/<out_trade_no>`, docs/operations.md), so support can answer
//! "the customer paid, the order shows unpaid: what happened to the notification?" without
//! searching logs.
//!
//! One store set per order, `history:<out_trade_no>`, each member one JSON entry kept
//! [`HISTORY_KEEP`]. Bounded per order by construction: only a forward carries its own instant,
//! request id and backend latency, and dedup lets an event be forwarded once; every other result
//! (the backend's refusal with its status, a duplicate, a delivery in flight, a store error) is
//! the same member each time it repeats, refreshed, so a channel's retries or a replayed
//! notification add nothing. Its last time is read back from the member's remaining time to
//! live. A notification that fails verification is not filed under the order it names:
//! anyone can name any order, and the log and `payguard_notifications_total` count it instead.
//!
//! Written off the request path (a spawned task): the channel's answer never waits for it, and
//! a failed write is logged, never turned into a failed delivery.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::notify::{EventSource, NotifyRecord};
use crate::outcome::NotifyOutcome;
use crate::store::{Store, StoreError};

/// How long an order's history is kept (as long as a notify route's default dedup `keep`).
pub(crate) const HISTORY_KEEP: Duration = Duration::from_secs(7 * 86_400);

/// Sets whose name starts with this are delivery histories (the embedded store's
/// `max_history_entries` budget).
pub(crate) const HISTORY_SET_PREFIX: &str = "history:";

/// One delivery attempt, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The notify route.
    pub(crate) route: String,
    /// Its channel.
    pub(crate) channel: String,
    /// `notification`, `query` or `bill`.
    pub(crate) source: String,
    /// The notification outcome (`forwarded`, `duplicate`, `backend_error`, ...).
    pub(crate) outcome: String,
    /// The normalized kind (`payment.succeeded`, `refund.succeeded`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) event_id: Option<String>,
    /// Dedup result: `claimed`, `done`, `in_flight`, `skipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dedup: Option<String>,
    /// What the backend answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) backend_status: Option<u16>,
    /// Why it was not delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// The status payguard answered the channel (absent for recovered events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) answered: Option<u16>,
    /// For a forward: when the backend accepted it (RFC 3339), its request id and latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) backend_latency_ms: Option<u64>,
}

/// An entry as `GET /admin/orders/<no>` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Shown {
    #[serde(flatten)]
    pub(crate) entry: Entry,
    /// The last time this entry happened (RFC 3339, to the millisecond).
    pub(crate) last_at: String,
}

/// Where a delivery happened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place<'a> {
    pub(crate) route: &'a str,
    pub(crate) channel: &'static str,
    pub(crate) source: EventSource,
    pub(crate) request_id: &'a str,
    /// The status answered to the channel.
    pub(crate) answered: Option<u16>,
}

impl Entry {
    /// The entry of `record`, or `None` when it names no verified order.
    pub(crate) fn of(record: &NotifyRecord, place: Place<'_>, now: jiff::Timestamp) -> Option<Self> {
        record.out_trade_no.as_ref().filter(|o| !o.is_empty())?;
        // Only a forward is an instant of its own; a repeat of anything else is the same
        // entry again.
        let exchanged = record.outcome == NotifyOutcome::Forwarded;
        Some(Self {
            route: place.route.to_string(),
            channel: place.channel.to_string(),
            source: place.source.as_str().to_string(),
            outcome: record.outcome.as_str().to_string(),
            kind: record.kind.map(str::to_owned),
            event_id: record.event_id.clone(),
            dedup: record.dedup.map(str::to_owned),
            backend_status: record.backend_status,
            reason: record.reason.clone(),
            answered: place.answered,
            at: exchanged.then(|| now.round(jiff::Unit::Millisecond).unwrap_or(now).to_string()),
            request_id: exchanged.then(|| place.request_id.to_string()),
            backend_latency_ms: record
                .backend_latency
                .filter(|_| exchanged)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        })
    }
}

fn set_of(out_trade_no: &str) -> String {
    format!("{HISTORY_SET_PREFIX}{out_trade_no}")
}

/// The set and member `record` is filed as; `None` for a record without a verified order.
fn filing(record: &NotifyRecord, place: Place<'_>, now: jiff::Timestamp) -> Option<(String, String)> {
    let entry = Entry::of(record, place, now)?;
    let order = record.out_trade_no.as_deref().unwrap_or_default();
    let json = serde_json::to_string(&entry).expect("a history entry serializes");
    Some((set_of(order), json))
}

/// Files `record` under its order; a failed write is logged, never a failed delivery.
pub(crate) async fn record(store: &dyn Store, record: &NotifyRecord, place: Place<'_>, now: jiff::Timestamp) {
    if let Some((set, member)) = filing(record, place, now) {
        add(store, &set, &member).await;
    }
}

/// [`record`] from a spawned task, so the caller's answer never waits for it.
pub(crate) fn spawn_record(
    store: std::sync::Arc<dyn Store>,
    record: &NotifyRecord,
    place: Place<'_>,
    now: jiff::Timestamp,
) {
    if let Some((set, member)) = filing(record, place, now) {
        tokio::spawn(async move { add(store.as_ref(), &set, &member).await });
    }
}

async fn add(store: &dyn Store, set: &str, member: &str) {
    if let Err(e) = store.set_add(set, member, HISTORY_KEEP).await {
        tracing::warn!(history = %set, error = %e, "could not add to the order's delivery history");
    }
}

/// The history of `out_trade_no`, oldest first.
pub(crate) async fn of_order(
    store: &dyn Store,
    out_trade_no: &str,
    now: jiff::Timestamp,
) -> Result<Vec<Shown>, StoreError> {
    let mut shown: Vec<Shown> = store
        .set_members(&set_of(out_trade_no))
        .await?
        .into_iter()
        .filter_map(|(member, left)| {
            let entry: Entry = serde_json::from_str(&member).ok()?;
            let ago = HISTORY_KEEP.saturating_sub(left);
            let last = jiff::SignedDuration::try_from(ago)
                .ok()
                .and_then(|ago| now.checked_sub(ago).ok())
                .unwrap_or(now);
            let last_at = entry
                .at
                .clone()
                .unwrap_or_else(|| last.round(jiff::Unit::Millisecond).unwrap_or(last).to_string());
            Some(Shown { entry, last_at })
        })
        .collect();
    // By time; within one millisecond, in the order a delivery goes: attempts, the forward,
    // then what repeats after it.
    let rank = |outcome: &str| match outcome {
        "forwarded" => 1,
        "duplicate" | "late_pending" => 2,
        _ => 0,
    };
    shown.sort_by(|a, b| {
        let key = |s: &Shown| (s.last_at.parse::<jiff::Timestamp>().ok(), rank(&s.entry.outcome));
        key(a).cmp(&key(b))
    });
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
    use std::sync::Arc;

    fn record(outcome: NotifyOutcome, status: Option<u16>) -> NotifyRecord {
        NotifyRecord {
            outcome,
            event_id: Some("evt_1".into()),
            kind: Some("payment.succeeded"),
            out_trade_no: Some("T-1".into()),
            dedup: Some("claimed"),
            backend_status: status,
            backend_latency: status.map(|_| Duration::from_millis(12)),
            ..Default::default()
        }
    }

    fn place(request_id: &str) -> Place<'_> {
        Place {
            route: "wechat",
            channel: "wechatpay_v3",
            source: EventSource::Notification,
            request_id,
            answered: Some(200),
        }
    }

    #[tokio::test]
    async fn repeats_of_the_same_result_are_one_entry_and_exchanges_each_their_own() {
        let clock = Arc::new(ManualClock::at_unix(1_764_800_000));
        let store = EmbeddedStore::new(&EmbeddedStoreConfig::default(), clock.clone());
        for i in 0..3 {
            super::record(
                &store,
                &record(NotifyOutcome::BackendError, Some(500)),
                place(&format!("r{i}")),
                clock.now(),
            )
            .await;
            clock.advance_millis(1000);
        }
        super::record(
            &store,
            &record(NotifyOutcome::Forwarded, Some(200)),
            place("r3"),
            clock.now(),
        )
        .await;
        for _ in 0..50 {
            clock.advance_millis(1000);
            let mut dup = record(NotifyOutcome::Duplicate, None);
            dup.dedup = Some("done");
            super::record(&store, &dup, place("r-dup"), clock.now()).await;
        }
        let shown = of_order(&store, "T-1", clock.now()).await.unwrap();
        let outcomes: Vec<&str> = shown.iter().map(|s| s.entry.outcome.as_str()).collect();
        assert_eq!(outcomes, ["backend_error", "forwarded", "duplicate"]);
        // The refusals' last time is read back from the remaining time to live: the third.
        let third: jiff::Timestamp = clock.now() - jiff::SignedDuration::from_secs(51);
        assert_eq!(shown[0].last_at, third.to_string());
        assert_eq!(shown[0].entry.backend_status, Some(500));
        assert_eq!(shown[1].entry.request_id.as_deref(), Some("r3"));
        assert_eq!(shown[1].entry.backend_latency_ms, Some(12));
        assert_eq!(shown[2].entry.request_id, None, "a duplicate is not an exchange");
        assert_eq!(shown[2].last_at, clock.now().to_string());
        assert!(of_order(&store, "T-2", clock.now()).await.unwrap().is_empty());
    }

    #[test]
    fn a_record_without_a_verified_order_has_no_entry() {
        let mut r = record(NotifyOutcome::RejectedSignature, None);
        r.out_trade_no = None;
        assert_eq!(Entry::of(&r, place("r"), jiff::Timestamp::UNIX_EPOCH), None);
    }
}
