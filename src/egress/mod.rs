//! Egress: the backend calls a payment channel's API through payguard, and payguard holds the
//! merchant's keys. An `egress` route strips its own path prefix, checks the call against its
//! allow-list, signs it as the channel requires, sends it over TLS, verifies the channel's
//! signed answer and relays it with `X-PG-Verified: 1` (docs/egress.md). An answer that does not
//! verify is never relayed.
//!
//! `merchants:` (one account per name) is shared config; each channel's signing and answer
//! checks live in one file here (`wechatpay_v3.rs`, `alipay.rs`, `stripe.rs`), the HTTPS client in `client.rs`.

pub(crate) mod alipay;
pub(crate) mod certificates;
pub(crate) mod client;
pub(crate) mod stripe;
pub(crate) mod wechatpay_v3;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::canonical::path::has_segment_prefix;
use crate::channels::keys::RsaSigningKey;
use crate::clock::Clock;
use crate::issue::ConfigIssue;
use crate::outcome::EgressOutcome;
use crate::problem::Problem;
use crate::secret::SecretRef;

/// One merchant account at a payment channel: its ids, its private key (`file:`/`env:` only),
/// the channel's keys that sign its answers, and the channel's base URL.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "channel")]
pub(crate) enum MerchantConfig {
    /// A WeChat Pay API v3 merchant (`mchid`).
    #[serde(rename = "wechatpay_v3")]
    WechatpayV3(wechatpay_v3::WechatpayV3MerchantConfig),
    /// An Alipay OpenAPI app (`app_id`), public-key mode.
    #[serde(rename = "alipay")]
    Alipay(alipay::AlipayMerchantConfig),
    /// A Stripe account (its secret API key).
    #[serde(rename = "stripe")]
    Stripe(stripe::StripeMerchantConfig),
}

/// A built merchant account.
#[derive(Debug)]
pub(crate) enum Merchant {
    /// WeChat Pay API v3.
    WechatpayV3(wechatpay_v3::WechatpayV3Merchant),
    /// Alipay OpenAPI.
    Alipay(alipay::AlipayMerchant),
    /// Stripe API.
    Stripe(stripe::StripeMerchant),
}

impl Merchant {
    /// The channel's config name (a metric label).
    pub(crate) fn channel(&self) -> &'static str {
        match self {
            Self::WechatpayV3(_) => "wechatpay_v3",
            Self::Alipay(_) => "alipay",
            Self::Stripe(_) => "stripe",
        }
    }

    /// The notification verifier of this account, for a notify route with `merchant:`;
    /// `Err` says what the account lacks.
    pub(crate) fn notify_channel(&self) -> Result<Arc<dyn crate::channels::Channel>, &'static str> {
        match self {
            Self::WechatpayV3(m) => Ok(m.notify_channel()),
            Self::Alipay(m) => Ok(m.notify_channel()),
            Self::Stripe(m) => m
                .notify_channel()
                .ok_or("the Stripe account has no `endpoint_secrets` to verify webhooks with"),
        }
    }

    /// Where this account's orders are tracked, when it has `order_query`.
    pub(crate) fn tracking(&self) -> Option<&Arc<crate::orders::Tracking>> {
        match self {
            Self::WechatpayV3(m) => m.tracking.as_ref(),
            Self::Alipay(m) => m.tracking.as_ref(),
            Self::Stripe(_) => None,
        }
    }

    /// Queries the channel for `out_trade_no`, the answer verified.
    pub(crate) async fn query_order(
        &self,
        out_trade_no: &str,
        limits: client::Limits,
        clock: &dyn Clock,
    ) -> Result<QueryAnswer, String> {
        match self {
            Self::WechatpayV3(m) => m.query_order(out_trade_no, limits, clock).await,
            Self::Alipay(m) => {
                m.query_order(out_trade_no, limits, clock, &mut CallRecord::default())
                    .await
            }
            Self::Stripe(_) => Err("Stripe accounts do not query orders".into()),
        }
    }

    /// The channel's trade bill of `date` (`YYYY-MM-DD`), downloaded, checked and read.
    pub(crate) async fn trade_bill(
        &self,
        date: &str,
        limits: client::Limits,
        clock: &dyn Clock,
    ) -> Result<Vec<crate::reconcile::bill::BillRow>, String> {
        use crate::reconcile::bill;
        match self {
            Self::WechatpayV3(m) => bill::wechatpay_trade_bill(&m.trade_bill(date, limits, clock).await?),
            Self::Alipay(m) => bill::alipay_trade_bill(&m.trade_bill(date, limits, clock).await?),
            Self::Stripe(_) => Err("Stripe accounts have no daily trade bill to reconcile".into()),
        }
        .map_err(|e| format!("the {} bill of {date}: {e}", self.channel()))
    }

    /// Whether the channel signs its answers (then a relayed answer was verified); Stripe's
    /// are authenticated by TLS only.
    pub(crate) fn signs_answers(&self) -> bool {
        !matches!(self, Self::Stripe(_))
    }
}

/// Every configured merchant account, by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Merchants {
    built: BTreeMap<String, Arc<Merchant>>,
    /// Accounts whose config has issues (already reported; routes naming them add none).
    broken: std::collections::BTreeSet<String>,
}

impl Merchants {
    /// Builds every account of `merchants:`; issues carry the key path `merchants.<name>.<key>`.
    pub(crate) fn build(config: &BTreeMap<String, MerchantConfig>) -> (Self, Vec<ConfigIssue>) {
        let mut issues = Vec::new();
        let mut out = Self::default();
        for (name, merchant) in config {
            let at = format!("merchants.{name}");
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                issues.push(ConfigIssue::new(&at, "the name must use only A-Z a-z 0-9 - _ ."));
                out.broken.insert(name.clone());
                continue;
            }
            let result = match merchant {
                MerchantConfig::WechatpayV3(c) => c.build().map(Merchant::WechatpayV3),
                MerchantConfig::Alipay(c) => c.build().map(Merchant::Alipay),
                MerchantConfig::Stripe(c) => c.build().map(Merchant::Stripe),
            };
            match result {
                Ok(m) => {
                    out.built.insert(name.clone(), Arc::new(m));
                }
                Err(e) => {
                    issues.extend(e.into_iter().map(|i| i.under(&at)));
                    out.broken.insert(name.clone());
                }
            }
        }
        (out, issues)
    }
}

impl Merchants {
    /// The account named `name`: `Ok(None)` when it exists but its config has issues (already
    /// reported), `Err` when there is none.
    pub(crate) fn get(&self, name: &str) -> Result<Option<&Arc<Merchant>>, String> {
        match self.built.get(name) {
            Some(m) => Ok(Some(m)),
            None if self.broken.contains(name) => Ok(None),
            None => Err(format!("no account `{name}` in `merchants`")),
        }
    }

    /// The WeChat Pay and Alipay accounts that a notify route names in `merchant:` (their
    /// delivered events are in the ledger, and their bills can be reconciled), by name.
    pub(crate) fn reconcilable(&self, routes: &crate::proxy::routes::RouteTable) -> Vec<crate::orders::AccountLink> {
        self.built
            .iter()
            .filter(|(_, m)| !matches!(m.as_ref(), Merchant::Stripe(_)))
            .filter_map(|(name, m)| crate::orders::link_account(name, m, routes).ok())
            .collect()
    }

    /// The accounts with `order_query`, by name.
    pub(crate) fn tracked(&self) -> Vec<(&str, &Arc<Merchant>, &Arc<crate::orders::Tracking>)> {
        self.built
            .iter()
            .filter_map(|(name, m)| m.tracking().map(|t| (name.as_str(), m, t)))
            .collect()
    }

    /// The WeChat Pay accounts with `download_platform_certificates`.
    pub(crate) fn certificate_accounts(&self) -> Vec<certificates::CertificateAccount> {
        self.built
            .iter()
            .filter(|(_, m)| matches!(m.as_ref(), Merchant::WechatpayV3(w) if w.downloads_certificates()))
            .map(|(name, m)| certificates::CertificateAccount {
                name: name.clone(),
                merchant: m.clone(),
            })
            .collect()
    }
}

/// Reads a merchant private key, refusing inline values: a key written into the config file
/// travels with every copy of it.
pub(crate) fn signing_key(source: &SecretRef) -> Result<RsaSigningKey, String> {
    if source.is_inline() {
        return Err("must be a `file:` or `env:` reference, never the key itself".into());
    }
    let secret = source.resolve()?;
    let text = secret
        .expose_str()
        .map_err(|_| format!("{} is not text", source.describe()))?;
    RsaSigningKey::from_pem(text).map_err(|e| format!("{}: {e}", source.describe()))
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
fn default_max_answer_bytes() -> usize {
    1024 * 1024
}

/// Largest `max_body_bytes` / `max_answer_bytes` accepted: egress calls are API requests, not
/// file transfers, and both are held in memory whole (a signature covers all of them).
const MAX_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// The `egress:` section of a route with `policy: egress`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EgressConfig {
    /// The name of the account in `merchants:` whose key signs the calls.
    pub(crate) merchant: String,
    /// The channel calls allowed through this route; anything else is answered 403 and not sent.
    pub(crate) allow: Vec<AllowRule>,
    /// TCP connect plus TLS handshake to the channel.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) connect_timeout: Duration,
    /// The whole channel exchange; past it the backend gets 504.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) timeout: Duration,
    /// Largest request body from the backend (larger: 413, nothing sent).
    #[serde(default = "default_max_body_bytes")]
    pub(crate) max_body_bytes: usize,
    /// Largest answer body from the channel (larger: 502, nothing relayed).
    #[serde(default = "default_max_answer_bytes")]
    pub(crate) max_answer_bytes: usize,
}

/// One allowed call: a method and a path prefix at the channel, matched on whole segments
/// (`/v3/pay/transactions` allows `/v3/pay/transactions/native`, not `/v3/pay/transactions2`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllowRule {
    /// HTTP method (upper case).
    pub(crate) method: String,
    /// Path prefix at the channel, e.g. `/v3/pay/transactions`.
    pub(crate) path_prefix: String,
}

impl EgressConfig {
    /// Builds the route's egress handler. `route_prefix` is the route's `match.path_prefix`,
    /// which is stripped from the request path to give the channel path.
    pub(crate) fn build(&self, merchants: &Merchants, route_prefix: &str) -> Result<EgressRoute, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let merchant = merchants
            .get(&self.merchant)
            .map_err(|e| issues.push(ConfigIssue::new("merchant", e)))
            .ok()
            .flatten()
            .cloned();
        if self.allow.is_empty() {
            issues.push(ConfigIssue::new("allow", "list at least one allowed call"));
        }
        let mut allow = Vec::new();
        for (i, rule) in self.allow.iter().enumerate() {
            if crate::canonical::check_method(&rule.method).is_err() {
                issues.push(ConfigIssue::new(
                    format!("allow[{i}].method"),
                    format!("`{}` is not an upper-case HTTP method", rule.method),
                ));
            }
            if let Err(e) = crate::canonical::path::config_pattern(&rule.path_prefix) {
                issues.push(ConfigIssue::new(format!("allow[{i}].path_prefix"), e));
            }
            allow.push((rule.method.clone(), rule.path_prefix.clone()));
        }
        for (key, value) in [("connect_timeout", self.connect_timeout), ("timeout", self.timeout)] {
            if value.is_zero() {
                issues.push(ConfigIssue::new(key, "must be greater than zero"));
            }
        }
        for (key, value) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_answer_bytes", self.max_answer_bytes),
        ] {
            if value == 0 || value > MAX_BUFFER_BYTES {
                issues.push(ConfigIssue::new(
                    key,
                    format!("must be between 1 and {MAX_BUFFER_BYTES}"),
                ));
            }
        }
        match merchant {
            Some(merchant) if issues.is_empty() => Ok(EgressRoute {
                merchant,
                merchant_name: self.merchant.clone(),
                prefix: route_prefix.trim_end_matches('/').to_string(),
                allow,
                limits: client::Limits {
                    connect_timeout: self.connect_timeout,
                    timeout: self.timeout,
                    max_answer_bytes: self.max_answer_bytes,
                },
                max_body_bytes: self.max_body_bytes,
            }),
            _ => Err(issues),
        }
    }
}

/// A compiled egress route.
#[derive(Debug)]
pub(crate) struct EgressRoute {
    merchant: Arc<Merchant>,
    merchant_name: String,
    /// The route's path prefix, without a trailing `/`.
    prefix: String,
    /// (method, channel path prefix).
    allow: Vec<(String, String)>,
    limits: client::Limits,
    max_body_bytes: usize,
}

/// A backend's call, as payguard received it.
#[derive(Debug)]
pub(crate) struct EgressRequest<'a> {
    pub(crate) method: &'a http::Method,
    /// The canonical request path (the route's prefix still on it).
    pub(crate) path: &'a str,
    /// The query as sent, without `?`.
    pub(crate) query: Option<&'a str>,
    /// The backend's `Content-Type`, if any.
    pub(crate) content_type: Option<&'a http::HeaderValue>,
    /// Every header of the backend's call (a channel passes on the few it documents).
    pub(crate) headers: &'a http::HeaderMap,
    pub(crate) body: Bytes,
}

/// A verified channel answer, to relay.
#[derive(Debug)]
pub(crate) struct Relayed {
    pub(crate) status: u16,
    pub(crate) content_type: Option<String>,
    /// Further headers for the backend (lower-case names).
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

/// What a verified order query answer says.
#[derive(Debug)]
pub(crate) enum QueryAnswer {
    /// The channel's record of the order, normalized as its notification would be.
    Event(Box<crate::channels::VerifiedEvent>),
    /// The channel has no such order (yet).
    NotFound,
}

/// Why an egress call was not relayed. Messages never carry a key, a signature or a body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EgressError {
    /// Method and channel path are not on the route's allow-list (nothing was sent).
    #[error("{0}")]
    NotAllowed(String),
    /// The backend's request cannot be made into a channel call (nothing was sent).
    #[error("{0}")]
    BadRequest(String),
    /// The backend's body is larger than `max_body_bytes` (nothing was sent).
    #[error("the request body exceeds {0} bytes")]
    BodyTooLarge(usize),
    /// The request could not be signed (a key problem; nothing was sent).
    #[error("{0}")]
    Signing(String),
    /// The channel's answer does not verify (nothing relayed).
    #[error("the channel's answer does not verify: {0}")]
    Unverified(String),
    /// The channel could not be reached or broke off the exchange.
    #[error("{0}")]
    Unreachable(String),
    /// The channel did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The channel's answer body is larger than `max_answer_bytes` (nothing relayed).
    #[error("the channel's answer body exceeds {0} bytes")]
    AnswerTooLarge(usize),
}

impl From<client::SendError> for EgressError {
    fn from(e: client::SendError) -> Self {
        match e {
            client::SendError::Unreachable(m) => Self::Unreachable(m),
            client::SendError::Timeout(m) => Self::Timeout(m),
            client::SendError::TooLarge(n) => Self::AnswerTooLarge(n),
        }
    }
}

impl EgressError {
    /// The `outcome` label of `payguard_egress_requests_total`.
    pub(crate) fn outcome(&self) -> EgressOutcome {
        match self {
            Self::NotAllowed(_) => EgressOutcome::RefusedNotAllowed,
            Self::BadRequest(_) => EgressOutcome::RefusedBadRequest,
            Self::BodyTooLarge(_) => EgressOutcome::RefusedTooLarge,
            Self::Signing(_) => EgressOutcome::SigningFailed,
            Self::Unverified(_) => EgressOutcome::AnswerUnverified,
            Self::Unreachable(_) => EgressOutcome::ChannelUnreachable,
            Self::Timeout(_) => EgressOutcome::ChannelTimeout,
            Self::AnswerTooLarge(_) => EgressOutcome::AnswerTooLarge,
        }
    }

    /// The problem+json answer to the backend.
    pub(crate) fn problem(&self) -> Problem {
        let (status, code) = match self {
            Self::NotAllowed(_) => (403, "EGRESS_NOT_ALLOWED"),
            Self::BadRequest(_) => (400, "EGRESS_BAD_REQUEST"),
            Self::BodyTooLarge(_) => (413, "EGRESS_BODY_TOO_LARGE"),
            Self::Signing(_) => (500, "EGRESS_SIGNING_FAILED"),
            Self::Unverified(_) => (502, "EGRESS_ANSWER_UNVERIFIED"),
            Self::Unreachable(_) => (502, "EGRESS_CHANNEL_UNREACHABLE"),
            Self::Timeout(_) => (504, "EGRESS_CHANNEL_TIMEOUT"),
            Self::AnswerTooLarge(_) => (502, "EGRESS_ANSWER_TOO_LARGE"),
        };
        Problem::new(status, code, self.to_string())
    }
}

/// What the route's log line and metrics record of one call.
#[derive(Debug, Default)]
pub(crate) struct CallRecord {
    /// The channel path (no query: it may carry order numbers, which the access log has).
    pub(crate) channel_path: Option<String>,
    /// The channel's HTTP status, when it answered.
    pub(crate) channel_status: Option<u16>,
    /// The channel exchange's duration, when one was made.
    pub(crate) channel_latency: Option<Duration>,
    /// The order a verified create call made, for the account's order tracking.
    pub(crate) created_order: Option<crate::orders::CreatedOrder>,
}

impl EgressRoute {
    /// The channel's config name (a metric label).
    pub(crate) fn channel(&self) -> &'static str {
        self.merchant.channel()
    }

    /// Whether a relayed answer was verified as signed by the channel.
    pub(crate) fn signs_answers(&self) -> bool {
        self.merchant.signs_answers()
    }

    /// Where the account's orders are tracked, when it has `order_query`.
    pub(crate) fn tracking(&self) -> Option<&Arc<crate::orders::Tracking>> {
        self.merchant.tracking()
    }

    /// The merchant account's name (a log field).
    pub(crate) fn merchant_name(&self) -> &str {
        &self.merchant_name
    }

    /// Largest request body accepted from the backend.
    pub(crate) fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The channel path of `path` (the route's prefix removed; `/` when nothing follows it).
    fn channel_path<'p>(&self, path: &'p str) -> Result<&'p str, EgressError> {
        // The route matched `path` on its routing form; the prefix must be the literal start of
        // the canonical path too, or the path sent would not be the path checked.
        let rest = path
            .get(..self.prefix.len())
            .filter(|head| head.eq_ignore_ascii_case(&self.prefix))
            .map(|_| &path[self.prefix.len()..])
            .ok_or_else(|| EgressError::BadRequest("the path does not start with the route's prefix".into()))?;
        match rest {
            "" => Ok("/"),
            r if r.starts_with('/') => Ok(r),
            _ => Err(EgressError::BadRequest(
                "the path does not start with the route's prefix".into(),
            )),
        }
    }

    /// Whether the route's allow-list takes `method` on `channel_path` (case-sensitive: channel
    /// paths are).
    fn check_allowed(&self, method: &str, channel_path: &str) -> Result<(), EgressError> {
        let allowed = self
            .allow
            .iter()
            .any(|(m, p)| m == method && has_segment_prefix(channel_path, p, false));
        if allowed {
            Ok(())
        } else {
            Err(EgressError::NotAllowed(format!(
                "{method} {channel_path:.200} is not on this route's allow-list"
            )))
        }
    }

    /// Checks, signs and sends the backend's call, and verifies the answer.
    pub(crate) async fn call(
        &self,
        req: EgressRequest<'_>,
        clock: &dyn Clock,
        record: &mut CallRecord,
    ) -> Result<Relayed, EgressError> {
        let channel_path = self.channel_path(req.path)?;
        record.channel_path = Some(channel_path.to_string());
        self.check_allowed(req.method.as_str(), channel_path)?;
        if req.body.len() > self.max_body_bytes {
            return Err(EgressError::BodyTooLarge(self.max_body_bytes));
        }
        match self.merchant.as_ref() {
            Merchant::WechatpayV3(m) => {
                let target = match req.query {
                    Some(q) => format!("{channel_path}?{q}"),
                    None => channel_path.to_string(),
                };
                m.call(&req, target, self.limits, clock, record).await
            }
            Merchant::Alipay(m) => m.call(&req, channel_path, self.limits, clock, record).await,
            Merchant::Stripe(m) => {
                let target = match req.query {
                    Some(q) => format!("{channel_path}?{q}"),
                    None => channel_path.to_string(),
                };
                m.call(&req, target, self.limits, record).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(allow: &[(&str, &str)]) -> EgressRoute {
        EgressRoute {
            merchant: Arc::new(Merchant::WechatpayV3(wechatpay_v3::tests::merchant(
                "https://127.0.0.1:1",
            ))),
            merchant_name: "wx".into(),
            prefix: "/egress/wechatpay".into(),
            allow: allow.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect(),
            limits: client::Limits {
                connect_timeout: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                max_answer_bytes: 1024,
            },
            max_body_bytes: 1024,
        }
    }

    #[test]
    fn the_route_prefix_is_stripped_on_whole_segments() {
        let r = route(&[]);
        assert_eq!(r.channel_path("/egress/wechatpay/v3/pay").unwrap(), "/v3/pay");
        assert_eq!(r.channel_path("/EGRESS/wechatpay/v3/pay").unwrap(), "/v3/pay");
        assert_eq!(r.channel_path("/egress/wechatpay").unwrap(), "/");
        assert!(matches!(
            r.channel_path("/egress/wechatpayX/v3"),
            Err(EgressError::BadRequest(_))
        ));
        assert!(matches!(r.channel_path("/e"), Err(EgressError::BadRequest(_))));
    }

    #[test]
    fn only_listed_methods_and_path_prefixes_are_allowed() {
        let r = route(&[
            ("POST", "/v3/pay/transactions"),
            ("GET", "/v3/pay/transactions/out-trade-no"),
        ]);
        assert!(r.check_allowed("POST", "/v3/pay/transactions/native").is_ok());
        assert!(r.check_allowed("POST", "/v3/pay/transactions").is_ok());
        assert!(r
            .check_allowed("GET", "/v3/pay/transactions/out-trade-no/1217752501201407033233368018")
            .is_ok());
        for (method, path) in [
            ("GET", "/v3/pay/transactions/native"),
            ("DELETE", "/v3/pay/transactions/native"),
            ("POST", "/v3/pay/transactions2"),
            ("POST", "/v3/PAY/transactions/native"),
            ("POST", "/v3/refund/domestic/refunds"),
        ] {
            let err = r.check_allowed(method, path).unwrap_err();
            assert_eq!(err.problem().status, 403, "{method} {path}");
            assert_eq!(err.outcome(), EgressOutcome::RefusedNotAllowed);
        }
    }

    #[test]
    fn an_unknown_merchant_and_an_empty_allow_list_are_reported() {
        let config = EgressConfig {
            merchant: "nobody".into(),
            allow: Vec::new(),
            connect_timeout: Duration::ZERO,
            timeout: default_timeout(),
            max_body_bytes: 0,
            max_answer_bytes: default_max_answer_bytes(),
        };
        let issues = config.build(&Merchants::default(), "/egress").unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["merchant", "allow", "connect_timeout", "max_body_bytes"]);
        assert!(issues[0].message.contains("`nobody`"), "{}", issues[0].message);
    }
}
