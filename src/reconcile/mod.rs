//! Daily bill reconciliation (对账): a merchant account's trade bill of one day, downloaded from
//! the channel, against the delivered-event ledger of that day ([`crate::orders::Ledger`]).
//! Every difference is one finding: paid (or refunded) at the channel but never delivered,
//! delivered but not in the bill, amounts or states that differ. With `forward_missing`, what
//! was never delivered goes to the backend through the dedup path, so it is delivered once
//! however often reconciliation runs (docs/reconcile.md).

pub(crate) mod bill;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::egress::{Merchant, QueryAnswer};
use crate::notify::EventSource;
use crate::orders::{AccountLink, LedgerEntry};
use crate::state::SharedState;
use bill::{BillRow, RowKind};

/// Limits of the bill calls (the file is read up to [`bill::MAX_BILL_BYTES`]).
const BILL_LIMITS: crate::egress::client::Limits = crate::egress::client::Limits {
    connect_timeout: Duration::from_secs(5),
    timeout: Duration::from_secs(120),
    max_answer_bytes: 256 * 1024,
};
/// Limits of the order queries `forward_missing` makes.
const QUERY_LIMITS: crate::egress::client::Limits = crate::egress::client::Limits {
    connect_timeout: Duration::from_secs(3),
    timeout: Duration::from_secs(10),
    max_answer_bytes: 256 * 1024,
};

/// What differs between the bill and the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Problem {
    /// In the bill, never delivered.
    Missing,
    /// Delivered, not in the bill.
    NotInBill,
    /// In both, with different amounts.
    AmountMismatch,
    /// The bill shows it paid (refunded); payguard delivered it closed or failed.
    StatusMismatch,
}

/// Every problem (the `problem` label of `payguard_reconcile_findings_total`).
pub(crate) const PROBLEMS: [&str; 4] = ["missing", "not_in_bill", "amount_mismatch", "status_mismatch"];

impl Problem {
    fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::NotInBill => "not_in_bill",
            Self::AmountMismatch => "amount_mismatch",
            Self::StatusMismatch => "status_mismatch",
        }
    }
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Finding {
    pub(crate) problem: Problem,
    pub(crate) kind: RowKind,
    pub(crate) out_trade_no: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) out_refund_no: Option<String>,
    /// The amount in the bill (minor units).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bill_amount_minor: Option<i64>,
    /// The amount payguard delivered (minor units).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) delivered_amount_minor: Option<i64>,
    /// The kind of the delivered event (`payment.succeeded`, `payment.closed`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) delivered_kind: Option<String>,
    /// The delivered event's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) event_id: Option<String>,
    /// With `forward_missing`, what became of a missing one: `delivered`, `duplicate` (it had
    /// been delivered after all), `undelivered` (the backend did not accept it), or why it was
    /// not sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) forwarded: Option<String>,
    /// The bill's row, for forwarding.
    #[serde(skip)]
    row: Option<BillRow>,
}

impl Finding {
    /// Whether this difference is settled: a missing event now delivered.
    fn settled(&self) -> bool {
        self.problem == Problem::Missing && matches!(self.forwarded.as_deref(), Some("delivered" | "duplicate"))
    }
}

/// Counts and sums of one side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Totals {
    pub(crate) payments: usize,
    pub(crate) payment_total_minor: i128,
    pub(crate) refunds: usize,
    pub(crate) refund_total_minor: i128,
}

/// A reconciliation report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Report {
    pub(crate) merchant: String,
    pub(crate) channel: &'static str,
    pub(crate) date: String,
    /// The bill's payments and refunds.
    pub(crate) bill: Totals,
    /// The ledger's delivered payments and refunds of the day.
    pub(crate) delivered: Totals,
    /// Rows found in both, equal.
    pub(crate) matched: usize,
    pub(crate) findings: Vec<Finding>,
    pub(crate) forward_missing: bool,
    /// No finding left, or only missing ones that `forward_missing` delivered.
    pub(crate) reconciled: bool,
}

const PAID: &str = "payment.succeeded";
const REFUNDED: &str = "refund.succeeded";

/// The refund number a refund row or entry is matched by.
fn refund_key(row: &BillRow) -> String {
    row.out_refund_no
        .clone()
        .or_else(|| row.refund_id.clone())
        .unwrap_or_else(|| row.out_trade_no.clone())
}

/// Each row's amount as the ledger holds it: a payment's and a refund's own, or with
/// `cumulative_refunds` (Alipay's `refund_fee`) the order's refunds up to and including it,
/// starting from what `prior` says was refunded on earlier days.
fn row_amounts(rows: &[BillRow], cumulative_refunds: bool, prior: &BTreeMap<String, i64>) -> Vec<i64> {
    // Bills list rows in time order; rows of one second keep their listed order.
    let mut so_far: BTreeMap<&str, i64> = BTreeMap::new();
    rows.iter()
        .map(|row| {
            if cumulative_refunds && row.kind == RowKind::Refund {
                let total = so_far
                    .entry(&row.out_trade_no)
                    .or_insert_with(|| prior.get(&row.out_trade_no).copied().unwrap_or(0));
                // An overflowing sum cannot equal a delivered amount: it shows as a mismatch.
                *total = total.saturating_add(row.amount_minor);
                *total
            } else {
                row.amount_minor
            }
        })
        .collect()
}

/// With cumulative refund amounts, what the ledger of earlier days shows refunded of each
/// order: the largest delivered refund total.
fn refunded_before(earlier: &[LedgerEntry]) -> BTreeMap<String, i64> {
    let mut prior = BTreeMap::new();
    for e in earlier.iter().filter(|e| e.kind == REFUNDED) {
        let amount = e.refund_amount_minor.unwrap_or(0);
        let total = prior.entry(e.out_trade_no.clone()).or_insert(amount);
        *total = (*total).max(amount);
    }
    prior
}

/// Compares a day's bill with the day's ledger: the rows found equal on both sides, and every
/// difference, by problem (missing, not in the bill, amount, status), then payments before
/// refunds, then order and refund number.
pub(crate) fn compare(
    rows: &[BillRow],
    ledger: &[LedgerEntry],
    cumulative_refunds: bool,
    prior: &BTreeMap<String, i64>,
) -> (usize, Vec<Finding>) {
    // Payments by order number; refunds by order and refund number (refund numbers are unique
    // per order only).
    type Key = (String, String);
    let mut payments: BTreeMap<Key, &LedgerEntry> = BTreeMap::new();
    let mut other_payment: BTreeMap<Key, &LedgerEntry> = BTreeMap::new();
    let mut refunds: BTreeMap<Key, &LedgerEntry> = BTreeMap::new();
    let mut other_refund: BTreeMap<Key, &LedgerEntry> = BTreeMap::new();
    for e in ledger {
        let payment_key = (e.out_trade_no.clone(), String::new());
        let refund_key = (
            e.out_trade_no.clone(),
            e.out_refund_no.clone().unwrap_or_else(|| e.out_trade_no.clone()),
        );
        match e.kind.as_str() {
            PAID => payments.entry(payment_key).or_insert(e),
            REFUNDED => refunds.entry(refund_key).or_insert(e),
            k if k.starts_with("refund.") => other_refund.entry(refund_key).or_insert(e),
            "payment.closed" | "payment.failed" => other_payment.entry(payment_key).or_insert(e),
            _ => continue,
        };
    }
    let amounts = row_amounts(rows, cumulative_refunds, prior);
    let mut matched = 0;
    let mut findings = Vec::new();
    let mut seen_payments = std::collections::BTreeSet::new();
    let mut seen_refunds = std::collections::BTreeSet::new();
    for (row, amount) in rows.iter().zip(amounts) {
        let key: Key = match row.kind {
            RowKind::Payment => (row.out_trade_no.clone(), String::new()),
            RowKind::Refund => (row.out_trade_no.clone(), refund_key(row)),
        };
        let (delivered, other, seen) = match row.kind {
            RowKind::Payment => (&payments, &other_payment, &mut seen_payments),
            RowKind::Refund => (&refunds, &other_refund, &mut seen_refunds),
        };
        seen.insert(key.clone());
        let delivered_amount = |e: &LedgerEntry| match row.kind {
            RowKind::Payment => e.amount_minor,
            RowKind::Refund => e.refund_amount_minor,
        };
        let finding = |problem, entry: Option<&LedgerEntry>| Finding {
            problem,
            kind: row.kind,
            out_trade_no: row.out_trade_no.clone(),
            out_refund_no: (row.kind == RowKind::Refund).then(|| key.1.clone()),
            bill_amount_minor: Some(amount),
            delivered_amount_minor: entry.and_then(delivered_amount),
            delivered_kind: entry.map(|e| e.kind.clone()),
            event_id: entry.map(|e| e.event_id.clone()),
            forwarded: None,
            row: Some(row.clone()),
        };
        match (delivered.get(&key), other.get(&key)) {
            (Some(e), _) if delivered_amount(e) == Some(amount) => matched += 1,
            (Some(e), _) => findings.push(finding(Problem::AmountMismatch, Some(e))),
            (None, Some(e)) => findings.push(finding(Problem::StatusMismatch, Some(e))),
            (None, None) => findings.push(finding(Problem::Missing, None)),
        }
    }
    for (kind, delivered, seen) in [
        (RowKind::Payment, &payments, &seen_payments),
        (RowKind::Refund, &refunds, &seen_refunds),
    ] {
        for (key, e) in delivered.iter().filter(|(k, _)| !seen.contains(*k)) {
            findings.push(Finding {
                problem: Problem::NotInBill,
                kind,
                out_trade_no: e.out_trade_no.clone(),
                out_refund_no: (kind == RowKind::Refund).then(|| key.1.clone()),
                bill_amount_minor: None,
                delivered_amount_minor: match kind {
                    RowKind::Payment => e.amount_minor,
                    RowKind::Refund => e.refund_amount_minor,
                },
                delivered_kind: Some(e.kind.clone()),
                event_id: Some(e.event_id.clone()),
                forwarded: None,
                row: None,
            });
        }
    }
    findings.sort_by(|a, b| {
        (a.problem, a.kind, &a.out_trade_no, &a.out_refund_no).cmp(&(
            b.problem,
            b.kind,
            &b.out_trade_no,
            &b.out_refund_no,
        ))
    });
    (matched, findings)
}

fn totals_of_bill(rows: &[BillRow]) -> Totals {
    let mut t = Totals::default();
    for r in rows {
        match r.kind {
            RowKind::Payment => {
                t.payments += 1;
                t.payment_total_minor += i128::from(r.amount_minor);
            }
            RowKind::Refund => {
                t.refunds += 1;
                t.refund_total_minor += i128::from(r.amount_minor);
            }
        }
    }
    t
}

fn totals_of_ledger(ledger: &[LedgerEntry], cumulative_refunds: bool) -> Totals {
    let mut t = Totals::default();
    let mut paid = std::collections::BTreeSet::new();
    let mut refunded = std::collections::BTreeSet::new();
    for e in ledger {
        match e.kind.as_str() {
            PAID if paid.insert(&e.out_trade_no) => {
                t.payments += 1;
                t.payment_total_minor += i128::from(e.amount_minor.unwrap_or(0));
            }
            REFUNDED if refunded.insert((&e.out_trade_no, &e.out_refund_no)) => {
                t.refunds += 1;
                // A cumulative refund amount is not a sum of refunds: only counted.
                if !cumulative_refunds {
                    t.refund_total_minor += i128::from(e.refund_amount_minor.unwrap_or(0));
                }
            }
            _ => {}
        }
    }
    t
}

/// Why a reconciliation could not run (the admin answer's status and the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReconcileError {
    /// The store could not be read.
    Store(String),
    /// The bill could not be downloaded or read.
    Bill(String),
}

/// Reconciles `link`'s bill of `date` (`YYYY-MM-DD`, Beijing time) against its ledger; with
/// `forward_missing`, delivers what was never delivered: a missing payment by querying the
/// order (its current, verified state), a missing refund from the bill's row.
pub(crate) async fn run(
    state: &SharedState,
    link: &AccountLink,
    date: &str,
    forward_missing: bool,
    upstream: std::net::SocketAddr,
) -> Result<Report, ReconcileError> {
    let cumulative_refunds = matches!(link.merchant.as_ref(), Merchant::Alipay(_));
    let rows = link
        .merchant
        .trade_bill(date, BILL_LIMITS, state.clock.as_ref())
        .await
        .map_err(ReconcileError::Bill)?;
    let ledger = crate::orders::Ledger::new(&link.name)
        .day(state.store.as_ref(), date)
        .await
        .map_err(|e| ReconcileError::Store(e.to_string()))?;
    let prior = if cumulative_refunds && rows.iter().any(|r| r.kind == RowKind::Refund) {
        refunded_before(&earlier_days(state, link, date).await?)
    } else {
        BTreeMap::new()
    };
    let (matched, mut findings) = compare(&rows, &ledger, cumulative_refunds, &prior);
    if forward_missing {
        let too_old = older_than_dedup(date, link.notify.keep, state.clock.now());
        for finding in findings.iter_mut().filter(|f| f.problem == Problem::Missing) {
            let Some(row) = finding.row.clone() else { continue };
            let outcome = if too_old {
                format!(
                    "not forwarded: {date} is older than route {}'s dedup keep ({}), a delivery could repeat",
                    link.route_name,
                    humantime::format_duration(link.notify.keep)
                )
            } else {
                match row.kind {
                    RowKind::Payment => forward_payment(state, link, &row, upstream).await,
                    RowKind::Refund => {
                        let amount = finding.bill_amount_minor.unwrap_or(row.amount_minor);
                        forward_refund(state, link, &row, amount, upstream).await
                    }
                }
            };
            finding.forwarded = Some(outcome);
        }
    }
    let metrics = &state.metrics;
    for f in &findings {
        metrics
            .reconcile_findings
            .with_label_values(&[link.name.as_str(), f.problem.as_str()])
            .inc();
    }
    let reconciled = findings.iter().all(Finding::settled);
    metrics
        .reconcile_runs
        .with_label_values(&[
            link.name.as_str(),
            if reconciled { "reconciled" } else { "unreconciled" },
        ])
        .inc();
    tracing::info!(
        target: "payguard::reconcile",
        merchant = %link.name,
        date,
        bill_rows = rows.len(),
        delivered = ledger.len(),
        matched,
        findings = findings.len(),
        reconciled,
        "reconciliation"
    );
    Ok(Report {
        merchant: link.name.clone(),
        channel: link.merchant.channel(),
        date: date.to_string(),
        bill: totals_of_bill(&rows),
        delivered: totals_of_ledger(&ledger, cumulative_refunds),
        matched,
        findings,
        forward_missing,
        reconciled,
    })
}

/// The ledger entries of the days before `date` that the ledger still keeps.
async fn earlier_days(state: &SharedState, link: &AccountLink, date: &str) -> Result<Vec<LedgerEntry>, ReconcileError> {
    let Ok(day) = date.parse::<jiff::civil::Date>() else {
        return Ok(Vec::new());
    };
    let ledger = crate::orders::Ledger::new(&link.name);
    let days = (crate::orders::LEDGER_KEEP.as_secs() / 86_400) as i64;
    let mut entries = Vec::new();
    for back in 1..days {
        let Ok(earlier) = day.checked_sub(jiff::Span::new().days(back)) else {
            break;
        };
        let mut of_day = ledger
            .day(state.store.as_ref(), &earlier.to_string())
            .await
            .map_err(|e| ReconcileError::Store(e.to_string()))?;
        entries.append(&mut of_day);
    }
    Ok(entries)
}

/// Whether the dedup records of events of `date` (Beijing time) may have expired: an event of
/// the day was delivered no earlier than the day's start, and its record is kept `keep` from
/// its delivery.
fn older_than_dedup(date: &str, keep: Duration, now: jiff::Timestamp) -> bool {
    let start = date
        .parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8))).ok());
    match (start, jiff::SignedDuration::try_from(keep)) {
        (Some(start), Ok(keep)) => start.timestamp().saturating_add(keep).map_or(true, |end| end <= now),
        _ => true,
    }
}

/// A missing payment: the order is queried, and what the verified answer shows is delivered
/// as an order query's event would be.
async fn forward_payment(
    state: &SharedState,
    link: &AccountLink,
    row: &BillRow,
    upstream: std::net::SocketAddr,
) -> String {
    let answer = link
        .merchant
        .query_order(&row.out_trade_no, QUERY_LIMITS, state.clock.as_ref())
        .await;
    let event = match answer {
        Ok(QueryAnswer::Event(event)) => event,
        Ok(QueryAnswer::NotFound) => return "not forwarded: the order query finds no such order".into(),
        Err(e) => return format!("not forwarded: the order query failed: {e}"),
    };
    if event.kind != crate::channels::EventKind::PaymentSucceeded {
        return format!(
            "not forwarded: the order query shows {}",
            event.raw_status.as_deref().unwrap_or(event.kind.as_str())
        );
    }
    crate::orders::deliver_recovered(state, link, &event, EventSource::Query, upstream, "reconciliation")
        .await
        .into()
}

/// A missing refund: the bill's row (from the verified bill) becomes the refund event its
/// notification would have been, with the same dedup key, `source` `bill`.
async fn forward_refund(
    state: &SharedState,
    link: &AccountLink,
    row: &BillRow,
    amount_minor: i64,
    upstream: std::net::SocketAddr,
) -> String {
    let event = match link.merchant.as_ref() {
        Merchant::WechatpayV3(m) => {
            let mut object = serde_json::json!({
                "mchid": row.mch_id,
                "out_trade_no": row.out_trade_no,
                "transaction_id": row.channel_txn_id,
                "refund_status": "SUCCESS",
                "success_time": row.at,
                "amount": {"refund": amount_minor},
            });
            if let Some(no) = &row.out_refund_no {
                object["out_refund_no"] = no.clone().into();
            }
            if let Some(id) = &row.refund_id {
                object["refund_id"] = id.clone().into();
            }
            m.event_from_refund_object(object)
        }
        Merchant::Alipay(_) if row.out_refund_no.is_none() => {
            Err("the bill's refund row has no refund number (退款批次号/请求号) to deduplicate it by".into())
        }
        Merchant::Alipay(m) => {
            let wall_clock = row.at.get(..19).unwrap_or("").replacen('T', " ", 1);
            let fields = BTreeMap::from([
                ("out_trade_no".to_string(), row.out_trade_no.clone()),
                ("trade_no".to_string(), row.channel_txn_id.clone()),
                ("trade_status".to_string(), "TRADE_SUCCESS".to_string()),
                ("out_biz_no".to_string(), refund_key(row)),
                (
                    "refund_fee".to_string(),
                    crate::channels::amount::format_minor(amount_minor, 2),
                ),
                ("gmt_refund".to_string(), wall_clock),
            ]);
            m.event_from_fields(fields)
        }
        Merchant::Stripe(_) => Err("Stripe accounts have no bill".into()),
    };
    match event {
        Ok(event) => {
            crate::orders::deliver_recovered(state, link, &event, EventSource::Bill, upstream, "reconciliation")
                .await
                .into()
        }
        Err(e) => format!("not forwarded: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: RowKind, no: &str, amount: i64, refund_no: Option<&str>, at: &str) -> BillRow {
        BillRow {
            kind,
            out_trade_no: no.into(),
            channel_txn_id: format!("42000{no}"),
            amount_minor: amount,
            out_refund_no: refund_no.map(str::to_owned),
            refund_id: None,
            at: at.into(),
            mch_id: "1900000001".into(),
            app_id: String::new(),
        }
    }

    fn entry(kind: &str, no: &str, amount: i64, refund: Option<(&str, i64)>) -> LedgerEntry {
        LedgerEntry {
            out_trade_no: no.into(),
            kind: kind.into(),
            amount_minor: Some(amount),
            currency: Some("CNY".into()),
            channel_txn_id: None,
            out_refund_no: refund.map(|r| r.0.to_string()),
            refund_amount_minor: refund.map(|r| r.1),
            event_id: format!("evt_{no}_{kind}"),
            source: "notification".into(),
            delivered_at: "2026-12-03T04:00:00Z".into(),
        }
    }

    #[test]
    fn each_difference_is_one_finding_and_equal_rows_match() {
        let at = "2026-12-03T12:00:00+08:00";
        let rows = [
            row(RowKind::Payment, "ok", 100, None, at),
            row(RowKind::Payment, "missing", 200, None, at),
            row(RowKind::Payment, "amount", 300, None, at),
            row(RowKind::Payment, "closed", 400, None, at),
            row(RowKind::Refund, "ok", 50, Some("ok-R1"), at),
            row(RowKind::Refund, "ok", 20, Some("ok-R2"), at),
        ];
        let ledger = [
            entry(PAID, "ok", 100, None),
            entry(PAID, "amount", 299, None),
            entry("payment.closed", "closed", 400, None),
            entry(PAID, "extra", 700, None),
            entry(REFUNDED, "ok", 100, Some(("ok-R1", 50))),
            entry(REFUNDED, "gone", 100, Some(("gone-R1", 10))),
        ];
        let (matched, findings) = compare(&rows, &ledger, false, &BTreeMap::new());
        assert_eq!(matched, 2, "the payment `ok` and its refund ok-R1");
        type Seen<'a> = (Problem, &'a str, Option<&'a str>, Option<i64>, Option<i64>);
        let got: Vec<Seen> = findings
            .iter()
            .map(|f| {
                (
                    f.problem,
                    f.out_trade_no.as_str(),
                    f.out_refund_no.as_deref(),
                    f.bill_amount_minor,
                    f.delivered_amount_minor,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (Problem::Missing, "missing", None, Some(200), None),
                (Problem::Missing, "ok", Some("ok-R2"), Some(20), None),
                (Problem::NotInBill, "extra", None, None, Some(700)),
                (Problem::NotInBill, "gone", Some("gone-R1"), None, Some(10)),
                (Problem::AmountMismatch, "amount", None, Some(300), Some(299)),
                (Problem::StatusMismatch, "closed", None, Some(400), Some(400)),
            ]
        );
        assert_eq!(findings[5].delivered_kind.as_deref(), Some("payment.closed"));
        assert_eq!(totals_of_bill(&rows).payment_total_minor, 1000);
        assert_eq!(totals_of_ledger(&ledger, false).payments, 3);
    }

    #[test]
    fn cumulative_refund_amounts_are_compared_as_cumulative() {
        let rows = [
            row(RowKind::Payment, "A", 1000, None, "2026-12-03T10:00:00+08:00"),
            row(RowKind::Refund, "A", 300, Some("A-R1"), "2026-12-03T11:00:00+08:00"),
            row(RowKind::Refund, "A", 200, Some("A-R2"), "2026-12-03T12:00:00+08:00"),
        ];
        // Alipay's refund notifications carry the order's refunded total so far.
        let ledger = [
            entry(PAID, "A", 1000, None),
            entry(REFUNDED, "A", 1000, Some(("A-R1", 300))),
            entry(REFUNDED, "A", 1000, Some(("A-R2", 500))),
        ];
        assert_eq!(compare(&rows, &ledger, true, &BTreeMap::new()), (3, Vec::new()));
        assert_eq!(
            compare(&rows, &ledger, false, &BTreeMap::new()).1[0].problem,
            Problem::AmountMismatch
        );
    }

    #[test]
    fn cumulative_refunds_start_from_what_earlier_days_refunded() {
        // 300 refunded on an earlier day, 500 today: today's notification says 800.
        let rows = [row(
            RowKind::Refund,
            "A",
            500,
            Some("A-R2"),
            "2026-12-03T12:00:00+08:00",
        )];
        let earlier = [
            entry(REFUNDED, "A", 1000, Some(("A-R1", 300))),
            entry(REFUNDED, "B", 1000, Some(("B-R1", 10))),
        ];
        let prior = refunded_before(&earlier);
        assert_eq!(prior.get("A"), Some(&300));
        let ledger = [entry(REFUNDED, "A", 1000, Some(("A-R2", 800)))];
        assert_eq!(compare(&rows, &ledger, true, &prior), (1, Vec::new()));
        // Without the earlier day, today's row alone is a missing refund of 500.
        let (_, findings) = compare(&rows, &[], true, &prior);
        assert_eq!(
            findings[0].bill_amount_minor,
            Some(800),
            "forwarded as the order's total"
        );
    }

    #[test]
    fn refunds_are_matched_by_order_and_refund_number() {
        let at = "2026-12-03T12:00:00+08:00";
        // Two orders each with a refund numbered R1: one delivered, one not.
        let rows = [
            row(RowKind::Refund, "A", 50, Some("R1"), at),
            row(RowKind::Refund, "B", 70, Some("R1"), at),
        ];
        let ledger = [entry(REFUNDED, "A", 100, Some(("R1", 50)))];
        let (matched, findings) = compare(&rows, &ledger, false, &BTreeMap::new());
        assert_eq!(matched, 1);
        assert_eq!(findings.len(), 1);
        assert_eq!(
            (findings[0].problem, findings[0].out_trade_no.as_str()),
            (Problem::Missing, "B")
        );
    }

    #[test]
    fn a_day_whose_dedup_records_may_have_expired_is_not_forwarded() {
        let keep = Duration::from_secs(7 * 86_400);
        let now: jiff::Timestamp = "2026-12-10T15:59:59Z".parse().unwrap();
        // 2026-12-03 starts at 2026-12-02T16:00:00Z; its records last until 12-09T16:00Z at least.
        assert!(older_than_dedup("2026-12-03", keep, now));
        assert!(!older_than_dedup("2026-12-04", keep, now));
        assert!(!older_than_dedup("2026-12-10", keep, now));
        assert!(older_than_dedup("not a date", keep, now));
    }

    #[test]
    fn totals_do_not_overflow() {
        let at = "2026-12-03T12:00:00+08:00";
        let rows = [
            row(RowKind::Payment, "A", i64::MAX, None, at),
            row(RowKind::Payment, "B", i64::MAX, None, at),
        ];
        assert_eq!(totals_of_bill(&rows).payment_total_minor, 2 * i128::from(i64::MAX));
    }

    #[test]
    fn only_missing_events_that_were_delivered_count_as_settled() {
        let (_, mut findings) = compare(
            &[row(RowKind::Payment, "m", 1, None, "2026-12-03T12:00:00+08:00")],
            &[],
            false,
            &BTreeMap::new(),
        );
        assert!(!findings[0].settled());
        findings[0].forwarded = Some("duplicate".into());
        assert!(findings[0].settled());
        findings[0].forwarded = Some("undelivered".into());
        assert!(!findings[0].settled());
    }
}
