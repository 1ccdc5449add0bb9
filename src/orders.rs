//! Missed-callback recovery: orders created through egress are tracked in the store, and an
//! order whose final event was not delivered is queried at the channel on a schedule. What the
//! verified query answer shows (paid, closed, failed) is delivered through the notify route of
//! the same account, with the dedup key its notification would have, so whichever of query and
//! notification comes second is a duplicate (docs/channels.md, "Lost callbacks").
//!
//! Store layout (every record with a TTL, each call on one key):
//! - `orders:<channel>:<merchant id>`: a set of the tracked order numbers, each member living
//!   until the order's expiry plus `margin` (or `retry_for` once found undelivered); a
//!   delivered final event removes its order;
//! - `order-details:<channel>:<merchant id>`: a set of [`TrackedOrder`]s as JSON, with the same
//!   lifetimes (one round reads both sets, whatever the number of orders);
//! - `order-query:<channel>:<merchant id>:<hash>:<step>`: a dedup lease per scheduled query, so
//!   that among replicas each step of each order is queried once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::channels::EventKind;
use crate::egress::{Merchant, QueryAnswer};
use crate::issue::ConfigIssue;
use crate::notify::{EventSource, NotifyRoute};
use crate::state::SharedState;
use crate::store::{DedupClaim, Store, StoreError};

fn default_schedule() -> Vec<Duration> {
    [60, 300, 900, 3600, 6 * 3600].map(Duration::from_secs).to_vec()
}
fn default_expiry() -> Duration {
    Duration::from_secs(2 * 3600)
}
fn default_margin() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_retry_every() -> Duration {
    Duration::from_secs(60)
}
fn default_retry_for() -> Duration {
    Duration::from_secs(3 * 86_400)
}

/// `merchants.<name>.order_query`: track the orders this account creates through egress and
/// query the channel for those whose final notification was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderQueryConfig {
    /// When to query an order without a delivered final event, counted from its creation;
    /// queries stop at the order's expiry plus `margin`, when one last query is made.
    #[serde(default = "default_schedule", with = "humantime_list")]
    #[schemars(with = "Vec<crate::schema::DurationText>")]
    pub(crate) schedule: Vec<Duration>,
    /// How long an order can be paid when the create call names no expiry (`time_expire`,
    /// Alipay's `timeout_express`).
    #[serde(default = "default_expiry", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) expiry: Duration,
    /// Queries go on this long after the order's expiry (a payment begun just before it).
    #[serde(default = "default_margin", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) margin: Duration,
    /// When a query found the order final but the backend did not accept the event, it is
    /// queried and delivered again this often...
    #[serde(default = "default_retry_every", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) retry_every: Duration,
    /// ...for this long.
    #[serde(default = "default_retry_for", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) retry_for: Duration,
}

mod humantime_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| humantime::format_duration(*d).to_string()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| humantime::parse_duration(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

impl OrderQueryConfig {
    /// Problems as (key relative to `order_query`, message).
    pub(crate) fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.schedule.is_empty() {
            issues.push(ConfigIssue::new("schedule", "list at least one time"));
        }
        if self.schedule.iter().any(|d| d.as_secs() == 0) || !self.schedule.windows(2).all(|w| w[0] < w[1]) {
            issues.push(ConfigIssue::new(
                "schedule",
                "times must be whole seconds or more and increasing",
            ));
        }
        for (key, value) in [
            ("expiry", self.expiry),
            ("retry_every", self.retry_every),
            ("retry_for", self.retry_for),
        ] {
            if value.as_secs() == 0 {
                issues.push(ConfigIssue::new(key, "must be at least one second"));
            }
        }
        issues
    }

    /// The shortest wait between two rounds this account needs.
    fn tick(&self) -> Duration {
        let first = self.schedule.first().copied().unwrap_or(Duration::from_secs(60));
        first
            .min(self.retry_every)
            .clamp(Duration::from_secs(1), Duration::from_secs(15))
    }
}

/// Where an account's orders are tracked.
#[derive(Debug, Clone)]
pub(crate) struct Tracking {
    /// `<channel>:<merchant id>`, the part of every store key.
    scope: String,
    /// The account's settings.
    pub(crate) config: OrderQueryConfig,
}

impl Tracking {
    /// Tracking for the account `merchant_id` of `channel`.
    pub(crate) fn new(channel: &str, merchant_id: &str, config: OrderQueryConfig) -> Self {
        Self {
            scope: format!("{channel}:{merchant_id}"),
            config,
        }
    }

    fn set(&self) -> String {
        format!("orders:{}", self.scope)
    }

    fn order_hash(out_trade_no: &str) -> String {
        hex::encode(&Sha256::digest(out_trade_no.as_bytes())[..16])
    }

    fn details_set(&self) -> String {
        format!("order-details:{}", self.scope)
    }

    fn step_key(&self, out_trade_no: &str, step: u64) -> String {
        format!("order-query:{}:{}:{step}", self.scope, Self::order_hash(out_trade_no))
    }

    /// Stops tracking `out_trade_no` (its final event was delivered).
    pub(crate) async fn untrack(&self, store: &dyn Store, out_trade_no: &str) -> Result<(), StoreError> {
        store.set_remove(&self.set(), out_trade_no).await.map(|_| ())
    }

    /// Starts tracking an order created at `now` (unix seconds).
    pub(crate) async fn track(&self, store: &dyn Store, order: &CreatedOrder, now: i64) -> Result<(), StoreError> {
        let expires = order
            .expires_at
            .or(order.expires_in.map(|s| now + s))
            .filter(|e| *e > now)
            .unwrap_or(now + secs(self.config.expiry));
        let tracked = TrackedOrder {
            out_trade_no: order.out_trade_no.clone(),
            created: now,
            expires,
            amount_minor: order.amount_minor,
            found_undelivered: None,
        };
        self.keep(store, &tracked, None, now).await
    }

    /// Writes `order` (in place of `previous`) and its membership, living until its last query.
    async fn keep(
        &self,
        store: &dyn Store,
        order: &TrackedOrder,
        previous: Option<&TrackedOrder>,
        now: i64,
    ) -> Result<(), StoreError> {
        let until = match order.found_undelivered {
            Some(found) => found + secs(self.config.retry_for),
            None => order.expires + secs(self.config.margin),
        };
        // A little longer than the last query, so the round that makes it still sees the order.
        let ttl = Duration::from_secs(u64::try_from(until - now).unwrap_or(0) + 600);
        let json = |o: &TrackedOrder| serde_json::to_string(o).map_err(|e| StoreError::Protocol(e.to_string()));
        if let Some(previous) = previous {
            store.set_remove(&self.details_set(), &json(previous)?).await?;
        }
        store.set_add(&self.details_set(), &json(order)?, ttl).await?;
        store.set_add(&self.set(), &order.out_trade_no, ttl).await
    }

    /// The tracked orders, oldest first: two reads whatever their number.
    async fn tracked_orders(&self, store: &dyn Store) -> Result<Vec<TrackedOrder>, StoreError> {
        let tracked: std::collections::HashSet<String> = store
            .set_members(&self.set())
            .await?
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        let mut latest: std::collections::HashMap<String, TrackedOrder> = std::collections::HashMap::new();
        for (member, _) in store.set_members(&self.details_set()).await? {
            let Ok(order) = serde_json::from_str::<TrackedOrder>(&member) else {
                continue;
            };
            if !tracked.contains(&order.out_trade_no) {
                continue;
            }
            // A detail left behind by an interrupted update: the later one counts.
            let newer = latest
                .get(&order.out_trade_no)
                .is_none_or(|o| (o.created, o.found_undelivered) < (order.created, order.found_undelivered));
            if newer {
                latest.insert(order.out_trade_no.clone(), order);
            }
        }
        let mut orders: Vec<TrackedOrder> = latest.into_values().collect();
        orders.sort_by(|a, b| (a.created, &a.out_trade_no).cmp(&(b.created, &b.out_trade_no)));
        Ok(orders)
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// An order a create call made, as the egress route saw the verified answer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CreatedOrder {
    /// The merchant's order number.
    pub(crate) out_trade_no: String,
    /// The order's amount in minor units (from the create call).
    pub(crate) amount_minor: Option<i64>,
    /// When the order can no longer be paid (unix seconds), if the call said.
    pub(crate) expires_at: Option<i64>,
    /// How long after creation it can be paid (seconds), if the call said so instead.
    pub(crate) expires_in: Option<i64>,
}

/// Whether `no` can be tracked and queried: the characters WeChat Pay and Alipay allow in
/// `out_trade_no`, at most 64 of them.
pub(crate) fn trackable_order_number(no: &str) -> bool {
    !no.is_empty()
        && no.len() <= 64
        && no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*' | b'.'))
}

/// The order a verified WeChat Pay create call made: `POST /v3/pay/transactions/{jsapi,app,h5,
/// native}` (answered 200) with `out_trade_no`, `amount.total` and maybe `time_expire`.
pub(crate) fn wechatpay_created(channel_path: &str, body: &[u8]) -> Option<CreatedOrder> {
    let kind = channel_path.strip_prefix("/v3/pay/transactions/")?;
    if !matches!(kind, "jsapi" | "app" | "h5" | "native") {
        return None;
    }
    let call: serde_json::Value = serde_json::from_slice(body).ok()?;
    let out_trade_no = call.get("out_trade_no")?.as_str()?.to_string();
    if !trackable_order_number(&out_trade_no) {
        return None;
    }
    let expires_at = call
        .get("time_expire")
        .and_then(serde_json::Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(jiff::Timestamp::as_second);
    Some(CreatedOrder {
        out_trade_no,
        amount_minor: call.pointer("/amount/total").and_then(serde_json::Value::as_i64),
        expires_at,
        expires_in: None,
    })
}

/// Alipay's create calls, whose orders are tracked.
const ALIPAY_CREATE_METHODS: [&str; 5] = [
    "alipay.trade.create",
    "alipay.trade.precreate",
    "alipay.trade.page.pay",
    "alipay.trade.wap.pay",
    "alipay.trade.app.pay",
];

/// The order a verified Alipay create call made (answered code `10000`): `out_trade_no`,
/// `total_amount` (decimal yuan, exact) and `time_expire` (Beijing time) or `timeout_express`.
pub(crate) fn alipay_created(api_method: &str, biz_content: &str, response: &str) -> Option<CreatedOrder> {
    if !ALIPAY_CREATE_METHODS.contains(&api_method) {
        return None;
    }
    let answer: serde_json::Value = serde_json::from_str(response).ok()?;
    if answer.get("code")?.as_str()? != "10000" {
        return None;
    }
    let call: serde_json::Value = serde_json::from_str(biz_content).ok()?;
    let text = |k: &str| call.get(k).and_then(serde_json::Value::as_str);
    let out_trade_no = text("out_trade_no")?.to_string();
    if !trackable_order_number(&out_trade_no) {
        return None;
    }
    let amount_minor = text("total_amount").and_then(|a| crate::channels::amount::parse_decimal_minor(a, 2).ok());
    let expires_at = text("time_expire")
        .and_then(crate::channels::beijing_time::beijing_rfc3339)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(jiff::Timestamp::as_second);
    Some(CreatedOrder {
        out_trade_no,
        amount_minor,
        expires_at,
        expires_in: text("timeout_express").and_then(timeout_express_secs),
    })
}

/// Alipay's `timeout_express` (`90m`, `2h`, `1d`) in seconds; `1c` (end of day) is not read.
fn timeout_express_secs(text: &str) -> Option<i64> {
    let (n, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: i64 = n.parse().ok().filter(|n| (1..=15 * 1440).contains(n))?;
    match unit {
        "m" => Some(n * 60),
        "h" => Some(n * 3600),
        "d" => Some(n * 86_400),
        _ => None,
    }
}

/// How long the ledger keeps a delivered event: longer than a month of daily bills.
pub(crate) const LEDGER_KEEP: Duration = Duration::from_secs(40 * 86_400);

/// The delivered-event ledger of one merchant account: every event its notify route forwarded
/// and the backend accepted, from a notification or an order query, kept [`LEDGER_KEEP`] in a
/// set per Beijing-time day (the day of the channels' bills), for reconciliation and support.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ledger {
    account: String,
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LedgerEntry {
    pub(crate) out_trade_no: String,
    pub(crate) kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) amount_minor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) channel_txn_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) out_refund_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refund_amount_minor: Option<i64>,
    pub(crate) event_id: String,
    /// `notification` or `query`.
    pub(crate) source: String,
    /// When payguard delivered it (RFC 3339).
    pub(crate) delivered_at: String,
}

impl Ledger {
    /// The ledger of the account `account` (its name under `merchants:`).
    pub(crate) fn new(account: &str) -> Self {
        Self {
            account: account.to_string(),
        }
    }

    fn set(&self, day: &str) -> String {
        format!("{}{}:{day}", crate::store::embedded::LEDGER_SET_PREFIX, self.account)
    }

    /// The Beijing-time day an event belongs to: when it happened at the channel, else `now`.
    fn day_of(event: &crate::channels::VerifiedEvent, now: jiff::Timestamp) -> String {
        let at = event
            .occurred_at
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .unwrap_or(now);
        crate::channels::beijing_time::beijing_format(at, "%Y-%m-%d")
    }

    /// Adds a delivered event.
    pub(crate) async fn record(
        &self,
        store: &dyn Store,
        event: &crate::channels::VerifiedEvent,
        event_id: &str,
        source: &str,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        let entry = LedgerEntry {
            out_trade_no: event.out_trade_no.clone(),
            kind: event.kind.as_str().to_string(),
            amount_minor: event.amount_minor,
            currency: event.currency.clone(),
            channel_txn_id: event.channel_txn_id.clone(),
            out_refund_no: event
                .refund
                .as_ref()
                .and_then(|r| r.out_refund_no.clone().or(r.refund_id.clone())),
            refund_amount_minor: event.refund.as_ref().and_then(|r| r.amount_minor),
            event_id: event_id.to_string(),
            source: source.to_string(),
            delivered_at: now.to_string(),
        };
        let json = serde_json::to_string(&entry).map_err(|e| StoreError::Protocol(e.to_string()))?;
        store
            .set_add(&self.set(&Self::day_of(event, now)), &json, LEDGER_KEEP)
            .await
    }

    /// The entries of `day` (`YYYY-MM-DD`, Beijing time), by order number.
    pub(crate) async fn day(&self, store: &dyn Store, day: &str) -> Result<Vec<LedgerEntry>, StoreError> {
        let mut entries: Vec<LedgerEntry> = store
            .set_members(&self.set(day))
            .await?
            .iter()
            .filter_map(|(m, _)| serde_json::from_str(m).ok())
            .collect();
        entries.sort_by(|a, b| {
            (&a.out_trade_no, &a.kind, &a.delivered_at).cmp(&(&b.out_trade_no, &b.kind, &b.delivered_at))
        });
        Ok(entries)
    }
}

/// Whether `text` is a `YYYY-MM-DD` date.
pub(crate) fn is_date(text: &str) -> bool {
    text.len() == 10 && text.parse::<jiff::civil::Date>().is_ok()
}

/// A tracked order as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TrackedOrder {
    out_trade_no: String,
    /// Unix seconds.
    created: i64,
    /// Unix seconds.
    expires: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    amount_minor: Option<i64>,
    /// When a query found the order final and the backend did not accept the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    found_undelivered: Option<i64>,
}

/// The scheduled query that is due at `now`, as a step number (each step is queried once), or
/// `None` before the first one. Steps past the last are `None` too: the order leaves tracking.
fn due_step(order: &TrackedOrder, cfg: &OrderQueryConfig, now: i64) -> Option<u64> {
    if let Some(found) = order.found_undelivered {
        let n = (now - found) / secs(cfg.retry_every).max(1);
        return (n >= 1 && now <= found + secs(cfg.retry_for)).then(|| 1_000_000 + n as u64);
    }
    let last = order.expires + secs(cfg.margin) - order.created;
    let elapsed = now - order.created;
    let mut times: Vec<i64> = cfg.schedule.iter().map(|d| secs(*d)).filter(|t| *t < last).collect();
    times.push(last);
    if elapsed > last + 600 {
        return None;
    }
    let passed = times.iter().take_while(|t| **t <= elapsed).count();
    passed.checked_sub(1).map(|i| i as u64)
}

/// A merchant account with the notify route that names it in `merchant:`: where events that
/// payguard recovers itself (order queries, reconciliation) are delivered.
#[derive(Debug, Clone)]
pub(crate) struct AccountLink {
    /// The name under `merchants:` (metric label, log field).
    pub(crate) name: String,
    /// The account.
    pub(crate) merchant: Arc<Merchant>,
    /// The notify route with `merchant: <name>`.
    pub(crate) route_name: String,
    /// Its handler.
    pub(crate) notify: Arc<NotifyRoute>,
    /// The backend path recovered events are posted to.
    pub(crate) deliver_path: String,
}

/// An account whose orders are queried.
#[derive(Debug, Clone)]
pub(crate) struct QueryAccount {
    /// The account and its notify route.
    pub(crate) link: AccountLink,
    /// Its tracking.
    pub(crate) tracking: Arc<Tracking>,
}

/// The link of account `name` to the one notify route with `merchant: <name>`, which must
/// forward `normalized` (a recovered event has no channel body) to a known backend path; `Err`
/// says what is missing.
pub(crate) fn link_account(
    name: &str,
    merchant: &Arc<Merchant>,
    routes: &crate::proxy::routes::RouteTable,
) -> Result<AccountLink, String> {
    let linked: Vec<_> = routes
        .routes()
        .iter()
        .filter_map(|r| r.notify.as_ref().map(|n| (r, n)))
        .filter(|(_, n)| n.merchant.as_deref() == Some(name))
        .collect();
    let (route, notify) = match linked.as_slice() {
        [one] => *one,
        [] => {
            return Err(format!(
                "recovered events are delivered through the notify route with `merchant: {name}`; there is none"
            ))
        }
        _ => {
            return Err(format!(
                "more than one notify route has `merchant: {name}`; recovered events need exactly one"
            ))
        }
    };
    if notify.forward != crate::notify::ForwardMode::Normalized {
        return Err(format!("the notify route `{}` forwards `passthrough`; a recovered event has no channel body to pass through, so it must forward `normalized`", route.name));
    }
    let deliver_path = match (&notify.backend_path, &route.path) {
        (Some(p), _) => p.clone(),
        (None, crate::proxy::routes::PathMatch::Exact(p)) => p.clone(),
        (None, crate::proxy::routes::PathMatch::Prefix(_)) => {
            return Err(format!(
                "the notify route `{}` matches a path prefix: set its `notify.backend_path`, where recovered events go",
                route.name
            ))
        }
    };
    Ok(AccountLink {
        name: name.to_string(),
        merchant: merchant.clone(),
        route_name: route.name.clone(),
        notify: notify.clone(),
        deliver_path,
    })
}

/// The accounts with `order_query`, each with the notify route that names it in `merchant:`
/// (recovered events go there); problems are added to `issues` at the account's key path.
pub(crate) fn query_accounts(
    merchants: &crate::egress::Merchants,
    routes: &crate::proxy::routes::RouteTable,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<QueryAccount> {
    let mut out = Vec::new();
    for (name, merchant, tracking) in merchants.tracked() {
        match link_account(name, merchant, routes) {
            Ok(link) => out.push(QueryAccount {
                link,
                tracking: tracking.clone(),
            }),
            Err(e) => issues.push(ConfigIssue::new(format!("merchants.{name}.order_query"), e)),
        }
    }
    out
}

/// `GET /admin/orders/awaiting`: every tracked order without a delivered final event, by
/// account, oldest first.
pub(crate) async fn awaiting(accounts: &[QueryAccount], store: &dyn Store) -> Result<serde_json::Value, StoreError> {
    let mut out = serde_json::Map::new();
    for account in accounts {
        let orders = account.tracking.tracked_orders(store).await?;
        let at = |s: i64| {
            jiff::Timestamp::from_second(s)
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        let listed: Vec<serde_json::Value> = orders
            .iter()
            .map(|o| {
                serde_json::json!({
                    "out_trade_no": o.out_trade_no,
                    "amount_minor": o.amount_minor,
                    "created_at": at(o.created),
                    "expires_at": at(o.expires),
                    "found_undelivered_at": o.found_undelivered.map(at),
                })
            })
            .collect();
        out.insert(account.link.name.clone(), listed.into());
    }
    Ok(serde_json::json!({ "merchants": out }))
}

/// Longest wait for one query.
const QUERY_LIMITS: crate::egress::client::Limits = crate::egress::client::Limits {
    connect_timeout: Duration::from_secs(3),
    timeout: Duration::from_secs(10),
    max_answer_bytes: 256 * 1024,
};
/// How long a replica holds a step while it queries and delivers.
const STEP_LEASE: Duration = Duration::from_secs(120);

/// The background service querying tracked orders (`payguard run` adds it).
pub(crate) struct OrderQueryService {
    /// Shared state: the running configuration, the store, the metrics, the clock.
    pub(crate) state: Arc<SharedState>,
}

#[async_trait]
impl BackgroundService for OrderQueryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let config = self.state.config();
            let mut wake = Duration::from_secs(15);
            // The reconciliation series exist from the start, at 0, for alerts on `increase`.
            for link in &config.reconcile_accounts {
                let m = &self.state.metrics;
                for result in ["reconciled", "unreconciled"] {
                    m.reconcile_runs.with_label_values(&[link.name.as_str(), result]);
                }
                for problem in crate::reconcile::PROBLEMS {
                    m.reconcile_findings.with_label_values(&[link.name.as_str(), problem]);
                }
            }
            for account in &config.query_accounts {
                wake = wake.min(account.tracking.config.tick());
                self.round(account, config.upstream.socket).await;
            }
            drop(config);
            tokio::select! {
                _ = shutdown.changed() => break,
                () = tokio::time::sleep(wake) => {}
            }
        }
    }
}

/// What one query came to (the `result` label of `payguard_order_queries_total`).
pub(crate) const QUERY_RESULTS: [&str; 6] = [
    "delivered",
    "duplicate",
    "undelivered",
    "pending",
    "not_found",
    "failed",
];

impl OrderQueryService {
    /// One pass over the account's tracked orders.
    async fn round(&self, account: &QueryAccount, upstream: std::net::SocketAddr) {
        let store = self.state.store.as_ref();
        let tracking = &account.tracking;
        let orders = match tracking.tracked_orders(store).await {
            Ok(orders) => orders,
            Err(e) => {
                tracing::warn!(target: "payguard::orders", merchant = %account.link.name, error = %e, "order query: the store could not be read");
                return;
            }
        };
        let m = &self.state.metrics;
        m.orders_awaiting
            .with_label_values(&[account.link.name.as_str()])
            .set(i64::try_from(orders.len()).unwrap_or(i64::MAX));
        // Every result's series exists from the first round, at 0.
        for result in QUERY_RESULTS {
            m.order_queries.with_label_values(&[account.link.name.as_str(), result]);
        }
        for order in orders {
            let now = self.state.clock.unix_seconds();
            let no = order.out_trade_no.as_str();
            let Some(step) = due_step(&order, &tracking.config, now) else {
                continue;
            };
            let key = tracking.step_key(no, step);
            let token = match store.dedup_claim(&key, STEP_LEASE).await {
                Ok(DedupClaim::Claimed { token }) => token,
                // Another replica queries (or queried) this step.
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(target: "payguard::orders", merchant = %account.link.name, error = %e, "order query: the store could not lease a query");
                    continue;
                }
            };
            let result = self.query_and_deliver(account, &order, upstream, now).await;
            self.state
                .metrics
                .order_queries
                .with_label_values(&[account.link.name.as_str(), result])
                .inc();
            let keep = Duration::from_secs(secs(tracking.config.retry_for).max(0) as u64 + 86_400);
            if let Err(e) = store.dedup_complete(&key, &token, keep).await {
                tracing::warn!(target: "payguard::orders", merchant = %account.link.name, error = %e, "order query: the store could not record a query");
            }
        }
    }

    /// Queries one order and delivers what the answer shows; the result label.
    async fn query_and_deliver(
        &self,
        account: &QueryAccount,
        order: &TrackedOrder,
        upstream: std::net::SocketAddr,
        now: i64,
    ) -> &'static str {
        let store = self.state.store.as_ref();
        let clock = self.state.clock.as_ref();
        let no = order.out_trade_no.as_str();
        let answer = account.link.merchant.query_order(no, QUERY_LIMITS, clock).await;
        let event = match answer {
            Err(reason) => {
                tracing::warn!(target: "payguard::orders", merchant = %account.link.name, out_trade_no = no, reason = %reason, result = "failed", "order query");
                return "failed";
            }
            Ok(QueryAnswer::NotFound) => {
                tracing::info!(target: "payguard::orders", merchant = %account.link.name, out_trade_no = no, result = "not_found", "order query");
                return "not_found";
            }
            Ok(QueryAnswer::Event(event)) => event,
        };
        if !is_final(event.kind) {
            tracing::info!(target: "payguard::orders", merchant = %account.link.name, out_trade_no = no, raw_status = event.raw_status.as_deref(), result = "pending", "order query");
            return "pending";
        }
        let result = deliver_recovered(
            &self.state,
            &account.link,
            &event,
            EventSource::Query,
            upstream,
            "order query",
        )
        .await;
        if result == "undelivered" && order.found_undelivered.is_none() {
            let mut kept = order.clone();
            kept.found_undelivered = Some(now);
            if let Err(e) = account.tracking.keep(store, &kept, Some(order), now).await {
                tracing::warn!(target: "payguard::orders", merchant = %account.link.name, error = %e, "order query: the store could not keep an undelivered order");
            }
        }
        result
    }
}

/// Delivers an event payguard recovered itself (`source` `query` or `bill`) through the
/// account's notify route, deduplicated like its notification; logs `what` with the outcome and
/// returns it: `delivered`, `duplicate` (it had been delivered) or `undelivered`.
pub(crate) async fn deliver_recovered(
    state: &SharedState,
    link: &AccountLink,
    event: &crate::channels::VerifiedEvent,
    source: EventSource,
    upstream: std::net::SocketAddr,
    what: &'static str,
) -> &'static str {
    let request_id = crate::proxy::new_request_id();
    let headers = http::HeaderMap::new();
    let incoming = crate::notify::Incoming {
        path_and_query: &link.deliver_path,
        headers: &headers,
        body: b"",
        request_id: &request_id,
        source,
    };
    let io = crate::notify::NotifyIo {
        store: state.store.as_ref(),
        backend: &state.backend,
        upstream,
        clock: state.clock.as_ref(),
    };
    let (_, record) = crate::notify::deliver(&link.notify, io, incoming, event).await;
    let place = crate::history::Place {
        route: &link.route_name,
        channel: event.channel.as_str(),
        source,
        request_id: &request_id,
        answered: None,
    };
    crate::history::record(state.store.as_ref(), &record, place, state.clock.now()).await;
    state
        .metrics
        .notifications
        .with_label_values(&[
            link.route_name.as_str(),
            event.channel.as_str(),
            record.outcome.as_str(),
        ])
        .inc();
    use crate::outcome::NotifyOutcome;
    let result = match record.outcome {
        NotifyOutcome::Forwarded => "delivered",
        NotifyOutcome::Duplicate | NotifyOutcome::LatePending => "duplicate",
        _ => "undelivered",
    };
    tracing::info!(
        target: "payguard::orders",
        request_id = %request_id,
        merchant = %link.name,
        route = %link.route_name,
        out_trade_no = %event.out_trade_no,
        kind = event.kind.as_str(),
        event_id = record.event_id.as_deref(),
        raw_status = event.raw_status.as_deref(),
        dedup = record.dedup,
        backend_status = record.backend_status,
        reason = record.reason.as_deref(),
        result,
        "{what}"
    );
    result
}

/// Kinds that end an order's tracking once delivered.
pub(crate) fn is_final(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::PaymentSucceeded | EventKind::PaymentClosed | EventKind::PaymentFailed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(schedule: &[u64]) -> OrderQueryConfig {
        OrderQueryConfig {
            schedule: schedule.iter().map(|s| Duration::from_secs(*s)).collect(),
            expiry: Duration::from_secs(7200),
            margin: Duration::from_secs(900),
            retry_every: Duration::from_secs(60),
            retry_for: Duration::from_secs(3600),
        }
    }

    fn order(created: i64, expires: i64) -> TrackedOrder {
        TrackedOrder {
            out_trade_no: "o1".into(),
            created,
            expires,
            amount_minor: Some(1),
            found_undelivered: None,
        }
    }

    #[test]
    fn each_scheduled_time_is_one_step_and_the_last_is_expiry_plus_margin() {
        let c = cfg(&[60, 300, 900, 3600, 21_600]);
        let o = order(1000, 1000 + 7200);
        assert_eq!(due_step(&o, &c, 1000), None);
        assert_eq!(due_step(&o, &c, 1059), None);
        assert_eq!(due_step(&o, &c, 1060), Some(0));
        assert_eq!(due_step(&o, &c, 1299), Some(0));
        assert_eq!(due_step(&o, &c, 1300), Some(1));
        assert_eq!(due_step(&o, &c, 1000 + 3600), Some(3));
        // 6 h is past the order's expiry plus margin (2 h 15 m): the last query is then.
        assert_eq!(due_step(&o, &c, 1000 + 8100 - 1), Some(3));
        assert_eq!(due_step(&o, &c, 1000 + 8100), Some(4));
        assert_eq!(due_step(&o, &c, 1000 + 8100 + 601), None);
    }

    #[test]
    fn an_order_found_undelivered_is_retried_every_interval_for_a_while() {
        let c = cfg(&[60]);
        let mut o = order(0, 7200);
        o.found_undelivered = Some(500);
        assert_eq!(due_step(&o, &c, 500), None);
        assert_eq!(due_step(&o, &c, 559), None);
        assert_eq!(due_step(&o, &c, 560), Some(1_000_001));
        assert_eq!(due_step(&o, &c, 680), Some(1_000_003));
        assert_eq!(due_step(&o, &c, 500 + 3601), None);
    }

    #[test]
    fn the_schedule_must_increase_and_durations_be_positive() {
        assert!(cfg(&[60, 300]).validate().is_empty());
        let bad = cfg(&[300, 60]).validate();
        assert_eq!(bad[0].path, "schedule");
        assert_eq!(cfg(&[]).validate()[0].path, "schedule");
        let mut c = cfg(&[60]);
        c.retry_every = Duration::ZERO;
        assert_eq!(c.validate()[0].path, "retry_every");
        let parsed: OrderQueryConfig = serde_yaml_ng::from_str("schedule: [30s, 2m]\n").unwrap();
        assert_eq!(parsed.schedule, [Duration::from_secs(30), Duration::from_secs(120)]);
        assert_eq!(parsed.expiry, default_expiry());
        assert!(serde_yaml_ng::from_str::<OrderQueryConfig>("schedul: [1m]").is_err());
    }

    #[test]
    fn create_calls_name_their_order_amount_and_expiry_exactly() {
        let wx = wechatpay_created(
            "/v3/pay/transactions/native",
            br#"{"appid":"wx1","mchid":"1900000001","out_trade_no":"T-1","amount":{"total":8880},"time_expire":"2026-12-03T12:00:00+08:00"}"#,
        )
        .unwrap();
        assert_eq!(wx.out_trade_no, "T-1");
        assert_eq!(wx.amount_minor, Some(8880));
        assert_eq!(
            wx.expires_at,
            Some("2026-12-03T04:00:00Z".parse::<jiff::Timestamp>().unwrap().as_second())
        );
        assert_eq!(wechatpay_created("/v3/pay/transactions/out-trade-no/T-1", b"{}"), None);
        assert_eq!(
            wechatpay_created("/v3/refund/domestic/refunds", br#"{"out_trade_no":"T-1"}"#),
            None
        );

        let ok = r#"{"code":"10000","msg":"Success","out_trade_no":"A-1"}"#;
        let ali = alipay_created(
            "alipay.trade.precreate",
            r#"{"out_trade_no":"A-1","total_amount":"0.10","subject":"x","timeout_express":"90m"}"#,
            ok,
        )
        .unwrap();
        assert_eq!(
            (ali.amount_minor, ali.expires_in),
            (Some(10), Some(5400)),
            "0.10 yuan is 10 fen, never 9.99…"
        );
        let at = alipay_created(
            "alipay.trade.create",
            r#"{"out_trade_no":"A-1","total_amount":"19.99","time_expire":"2026-12-03 12:00:00"}"#,
            ok,
        )
        .unwrap();
        assert_eq!(at.amount_minor, Some(1999));
        assert_eq!(at.expires_at, wx.expires_at);
        assert_eq!(
            alipay_created("alipay.trade.query", r#"{"out_trade_no":"A-1"}"#, ok),
            None
        );
        let failed = r#"{"code":"40004","sub_code":"ACQ.TRADE_HAS_CLOSE"}"#;
        assert_eq!(
            alipay_created("alipay.trade.precreate", r#"{"out_trade_no":"A-1"}"#, failed),
            None
        );
    }

    #[test]
    fn only_plain_order_numbers_are_tracked() {
        assert!(trackable_order_number("1217752501201407033233368018"));
        assert!(trackable_order_number("ORDER-2026_12|03*x.1"));
        assert!(!trackable_order_number(""));
        assert!(!trackable_order_number("a/b"));
        assert!(!trackable_order_number("a?b"));
        assert!(!trackable_order_number(&"9".repeat(65)));
    }
}
