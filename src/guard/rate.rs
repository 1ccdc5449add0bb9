//! Rate rules: token buckets in the shared store, keyed by a hashed identity, with the IETF
//! `RateLimit-Policy` / `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers-09/-10), plus a
//! per-process pre-limiter per client IP that sheds floods before the store is asked.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{HeaderName, HeaderValue};
use ipnet::Ipv6Net;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::request::{KeyPart, RequestFacts, RequestMatch};
use super::verdict::{Decision, Problem, RuleDecision, RuleKind};
use super::{resolve_identity, rule_issues, ConfigIssue, MissingKeyPolicy, Mode, StoreErrorPolicy, Target};
use crate::store::{BucketDecision, BucketSpec};

/// `bucket:` — a token bucket: up to `capacity` tokens, `refill` tokens added per `per`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BucketConfig {
    /// Burst size (tokens in a full bucket).
    pub(crate) capacity: u64,
    /// Tokens added per `per` (continuously).
    pub(crate) refill: u64,
    /// Refill period (`1s`, `1m`).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) per: Duration,
}

/// One entry of `rate_rules:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateRuleConfig {
    /// Rule name (1–64 of `A-Z a-z 0-9 _ . -`); names the bucket, the metric label and the
    /// `RateLimit` policy. Renaming a rule starts fresh buckets; editing its numbers does not.
    pub(crate) name: String,
    /// Which requests the rule applies to (default: all).
    #[serde(rename = "match", default)]
    pub(crate) matches: RequestMatch,
    /// Identity the bucket is kept per: `client_ip`, `access_key`, `route`, `header:NAME`,
    /// `query:NAME`, `body:/json/pointer` (combined when several).
    pub(crate) key: Vec<KeyPart>,
    /// Bucket size and refill.
    pub(crate) bucket: BucketConfig,
    /// `enforce` (default) or `shadow` (decide, log, count, never block).
    #[serde(default)]
    pub(crate) mode: Mode,
    /// What to do when the store fails: `allow` (default) or `deny` (503).
    #[serde(default = "StoreErrorPolicy::allow")]
    pub(crate) on_store_error: StoreErrorPolicy,
    /// What to do when the request lacks a key part: `reject` (default, 400 `IDENTITY_MISSING`),
    /// `skip` (rule does not apply) or `client_ip` (use the client IP instead, explicitly).
    #[serde(default)]
    pub(crate) on_missing_key: MissingKeyPolicy,
}

/// A built rate rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RateRule {
    /// Rule name.
    pub(crate) name: Arc<str>,
    /// Match.
    pub(crate) matches: RequestMatch,
    /// Identity parts.
    pub(crate) key: Vec<KeyPart>,
    /// Bucket.
    pub(crate) bucket: BucketConfig,
    /// Mode.
    pub(crate) mode: Mode,
    /// Store failure policy.
    pub(crate) on_store_error: StoreErrorPolicy,
    /// Missing identity policy.
    pub(crate) on_missing_key: MissingKeyPolicy,
}

impl RateRuleConfig {
    /// Validates; issue paths are relative to this rule.
    pub(crate) fn build(&self) -> Result<RateRule, Vec<ConfigIssue>> {
        let mut issues = rule_issues(&self.name, &self.matches);
        if self.key.is_empty() {
            issues.push(ConfigIssue::new(
                "key",
                "at least one key part is required (e.g. [client_ip])",
            ));
        }
        if self.bucket.capacity == 0 {
            issues.push(ConfigIssue::new("bucket.capacity", "must be at least 1"));
        }
        if self.bucket.refill == 0 {
            issues.push(ConfigIssue::new("bucket.refill", "must be at least 1"));
        }
        if self.bucket.per.is_zero() {
            issues.push(ConfigIssue::new("bucket.per", "must be greater than zero"));
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(RateRule {
            name: Arc::from(self.name.as_str()),
            matches: self.matches.clone(),
            key: self.key.clone(),
            bucket: self.bucket.clone(),
            mode: self.mode,
            on_store_error: self.on_store_error,
            on_missing_key: self.on_missing_key,
        })
    }
}

/// The bucket a request maps to under one rule.
pub(crate) type RateTarget = Target<BucketSpec>;

/// Bucket key: `rl:<rule>:<identity digest>`. Never contains the config version or raw request
/// data, so editing a rule's numbers keeps its buckets (unlike APISIX).
pub(crate) fn bucket_key(rule: &str, digest: &str) -> String {
    format!("rl:{rule}:{digest}")
}

impl RateRule {
    /// Whether the rule applies to this request (its `match`).
    pub(crate) fn applies(&self, facts: &RequestFacts<'_>) -> bool {
        facts.matched_by(&self.matches)
    }

    /// The bucket for this request, applying `on_missing_key`.
    pub(crate) fn target(&self, facts: &RequestFacts<'_>) -> RateTarget {
        resolve_identity(facts, &self.key, self.on_missing_key).map(|digest| BucketSpec {
            key: bucket_key(&self.name, &digest),
            capacity: self.bucket.capacity,
            refill_tokens: self.bucket.refill,
            refill_period: self.bucket.per,
            cost: 1,
            enforce: self.mode == Mode::Enforce,
        })
    }

    /// Seconds for a full refill from empty: the `w` of `RateLimit-Policy`.
    pub(crate) fn window_seconds(&self) -> u64 {
        let nanos = u128::from(self.bucket.capacity) * self.bucket.per.as_nanos();
        let per_refill = nanos / u128::from(self.bucket.refill.max(1));
        let secs = per_refill.div_ceil(1_000_000_000);
        u64::try_from(secs).unwrap_or(u64::MAX).max(1)
    }

    /// `"<rule>";q=<capacity>;w=<window seconds>` (a `RateLimit-Policy` list member).
    pub(crate) fn policy_item(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.name,
            self.bucket.capacity,
            self.window_seconds()
        )
    }

    /// `"<rule>";r=<remaining>;t=<seconds until full>` (a `RateLimit` list member).
    pub(crate) fn limit_item(&self, d: &BucketDecision) -> String {
        format!("\"{}\";r={};t={}", self.name, d.remaining, ceil_secs(d.reset_after))
    }
}

/// Whole seconds, rounded up (a client told to wait 0.2 s waits 1 s).
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The result of interpreting bucket decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RateResult {
    /// One record per rule.
    pub(crate) decisions: Vec<RuleDecision>,
    /// `RATE_LIMITED` when an enforced rule refused.
    pub(crate) rejection: Option<Problem>,
    /// `RateLimit-Policy` and `RateLimit` for the client (enforced rules only).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

/// Interprets the store's decisions for the rules that applied (same order). Shadow rules are
/// recorded but never block or advertise. When several enforced rules refuse, the one with the
/// longest wait is reported, since the client must wait for all of them.
pub(crate) fn interpret(applied: &[(Arc<RateRule>, BucketDecision)]) -> RateResult {
    let mut decisions = Vec::with_capacity(applied.len());
    let mut policies = Vec::new();
    let mut limits = Vec::new();
    let mut worst: Option<(&RateRule, Duration)> = None;
    for (rule, d) in applied {
        let decision = if d.allowed { Decision::Allow } else { Decision::Reject };
        decisions.push(RuleDecision::new(
            RuleKind::Rate,
            rule.name.clone(),
            decision,
            rule.mode,
        ));
        if rule.mode == Mode::Shadow {
            continue;
        }
        policies.push(rule.policy_item());
        limits.push(rule.limit_item(d));
        if !d.allowed && worst.is_none_or(|(_, w)| d.retry_after > w) {
            worst = Some((rule, d.retry_after));
        }
    }
    let mut headers = Vec::new();
    if !policies.is_empty() {
        push_header(
            &mut headers,
            HeaderName::from_static("ratelimit-policy"),
            &policies.join(", "),
        );
        push_header(&mut headers, HeaderName::from_static("ratelimit"), &limits.join(", "));
    }
    let rejection = worst.map(|(rule, wait)| {
        let secs = ceil_secs(wait).max(1);
        let mut p = Problem::new(
            429,
            "RATE_LIMITED",
            format!("rate limit `{}` exceeded; retry after {secs} s", rule.name),
        )
        .with_rule(rule.name.to_string())
        .with_header(http::header::RETRY_AFTER, &secs.to_string());
        p.headers.extend(headers.iter().cloned());
        p
    });
    RateResult {
        decisions,
        rejection,
        headers,
    }
}

fn push_header(out: &mut Vec<(HeaderName, HeaderValue)>, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        out.push((name, v));
    }
}

/// `local_prelimit:` — a per-process limiter per client IP, checked before anything touches the
/// store. It sheds floods cheaply; it is approximate (per replica) and starts empty on restart or
/// reload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalPreLimitConfig {
    /// Sustained requests per second per client.
    pub(crate) per_second: u32,
    /// Burst size (default: `per_second`).
    #[serde(default)]
    pub(crate) burst: Option<u32>,
    /// Most clients tracked at once; the least recently seen are forgotten beyond this, so memory
    /// stays bounded however many addresses an attacker uses (governor #171).
    #[serde(default = "default_max_tracked")]
    pub(crate) max_tracked_ips: u64,
    /// IPv6 clients are grouped by this prefix length (default 64: one subscriber's network).
    #[serde(default = "default_v6_prefix")]
    pub(crate) ipv6_prefix: u8,
}

fn default_max_tracked() -> u64 {
    100_000
}
fn default_v6_prefix() -> u8 {
    64
}

impl LocalPreLimitConfig {
    /// Validates and builds the limiter.
    pub(crate) fn build(&self) -> Result<LocalPreLimit, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let per_second = NonZeroU32::new(self.per_second);
        if per_second.is_none() {
            issues.push(ConfigIssue::new("per_second", "must be at least 1"));
        }
        let burst = NonZeroU32::new(self.burst.unwrap_or(self.per_second));
        if burst.is_none() {
            issues.push(ConfigIssue::new("burst", "must be at least 1"));
        }
        if self.max_tracked_ips == 0 {
            issues.push(ConfigIssue::new("max_tracked_ips", "must be at least 1"));
        }
        if self.ipv6_prefix == 0 || self.ipv6_prefix > 128 {
            issues.push(ConfigIssue::new("ipv6_prefix", "must be 1..=128"));
        }
        match (per_second, burst, issues.is_empty()) {
            (Some(ps), Some(b), true) => Ok(LocalPreLimit {
                quota: Quota::per_second(ps).allow_burst(b),
                ipv6_prefix: self.ipv6_prefix,
                limiters: moka::sync::Cache::builder()
                    .max_capacity(self.max_tracked_ips)
                    .time_to_idle(Duration::from_secs(600))
                    .build(),
            }),
            _ => Err(issues),
        }
    }
}

/// Per-client-IP GCRA limiters (governor) in a size-bounded cache (moka).
pub(crate) struct LocalPreLimit {
    quota: Quota,
    ipv6_prefix: u8,
    limiters: moka::sync::Cache<IpAddr, Arc<DefaultDirectRateLimiter>>,
}

impl std::fmt::Debug for LocalPreLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPreLimit")
            .field("quota", &self.quota)
            .field("ipv6_prefix", &self.ipv6_prefix)
            .finish()
    }
}

/// Fixed rule name of the pre-limiter in problems and metrics.
pub(crate) const LOCAL_PRELIMIT_RULE: &str = "local_prelimit";

impl LocalPreLimit {
    /// `true` when the client may proceed, `false` when it is over the local limit.
    pub(crate) fn check(&self, ip: IpAddr) -> bool {
        let key = match ip.to_canonical() {
            IpAddr::V6(v6) => Ipv6Net::new(v6, self.ipv6_prefix)
                .map(|n| IpAddr::V6(n.network()))
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let quota = self.quota;
        self.limiters
            .get_with(key, || Arc::new(RateLimiter::direct(quota)))
            .check()
            .is_ok()
    }

    /// The rejection for a client over the local limit.
    pub(crate) fn rejection(&self) -> Problem {
        Problem::new(429, "RATE_LIMITED", "too many requests from this client")
            .with_rule(LOCAL_PRELIMIT_RULE)
            .with_header(http::header::RETRY_AFTER, "1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::request::RequestView;
    use crate::guard::NotUsed;
    use http::HeaderMap;

    fn rule(yaml: &str) -> RateRule {
        serde_yaml_ng::from_str::<RateRuleConfig>(yaml)
            .unwrap()
            .build()
            .unwrap()
    }

    const BASE: &str = "name: per-user\nkey: [header:x-user-id]\nbucket: {capacity: 10, refill: 1, per: 1s}\n";

    fn target_for(r: &RateRule, headers: &HeaderMap) -> RateTarget {
        let v = RequestView {
            method: "POST",
            routing_path: "/v1/orders",
            query: None,
            headers,
            client_ip: "192.0.2.1".parse().unwrap(),
            body: b"",
        };
        let f = RequestFacts::new(&v, None, None);
        r.target(&f)
    }

    fn user(u: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-user-id", u.parse().unwrap());
        h
    }

    #[test]
    fn bucket_key_is_stable_across_config_edits() {
        let a = rule(BASE);
        let b =
            rule("name: per-user\nkey: [header:X-User-Id]\nbucket: {capacity: 99, refill: 7, per: 1m}\nmode: shadow\n");
        let (Target::Use(ka), Target::Use(kb)) = (target_for(&a, &user("u-1")), target_for(&b, &user("u-1"))) else {
            panic!("expected buckets");
        };
        assert_eq!(ka.key, kb.key);
        assert_eq!(kb.capacity, 99);
        assert!(!kb.enforce);
        // Bounded and free of raw request data.
        assert!(ka.key.starts_with("rl:per-user:") && !ka.key.contains("u-1"));
        assert_eq!(ka.key.len(), "rl:per-user:".len() + 32);
        let Target::Use(other) = target_for(&a, &user("u-2")) else {
            panic!()
        };
        assert_ne!(other.key, ka.key);
    }

    #[test]
    fn missing_key_rejects_by_default_or_skips_or_falls_back_explicitly() {
        let none = HeaderMap::new();
        assert!(matches!(
            target_for(&rule(BASE), &none),
            Target::NotUsed(NotUsed::Missing(KeyPart::Header(_)))
        ));
        let skip = rule(&format!("{BASE}on_missing_key: skip\n"));
        assert_eq!(target_for(&skip, &none), Target::NotUsed(NotUsed::Skip));
        // An identity sent twice is never replaced by a fallback.
        let mut twice = HeaderMap::new();
        twice.append("x-user-id", "u-1".parse().unwrap());
        twice.append("x-user-id", "u-2".parse().unwrap());
        let ip = rule(&format!("{BASE}on_missing_key: client_ip\n"));
        assert!(matches!(
            target_for(&ip, &twice),
            Target::NotUsed(NotUsed::Ambiguous(_))
        ));
        let ip = rule(&format!("{BASE}on_missing_key: client_ip\n"));
        let Target::Use(b) = target_for(&ip, &none) else {
            panic!()
        };
        assert!(b.key.starts_with("rl:per-user:ip-"));
    }

    fn decision(allowed: bool, remaining: u64, retry_ms: u64, reset_ms: u64) -> BucketDecision {
        BucketDecision {
            allowed,
            remaining,
            retry_after: Duration::from_millis(retry_ms),
            reset_after: Duration::from_millis(reset_ms),
        }
    }

    #[test]
    fn allowed_request_gets_ietf_ratelimit_fields() {
        let r = Arc::new(rule(
            "name: burst\nkey: [client_ip]\nbucket: {capacity: 100, refill: 100, per: 1m}\n",
        ));
        let out = interpret(&[(r, decision(true, 50, 0, 29_100))]);
        assert!(out.rejection.is_none());
        assert_eq!(out.headers[0].0, "ratelimit-policy");
        assert_eq!(out.headers[0].1, "\"burst\";q=100;w=60");
        assert_eq!(out.headers[1].0, "ratelimit");
        assert_eq!(out.headers[1].1, "\"burst\";r=50;t=30");
        assert_eq!(out.decisions[0].decision, Decision::Allow);
    }

    #[test]
    fn refused_request_is_429_with_retry_after_rounded_up() {
        let a = Arc::new(rule(
            "name: a\nkey: [client_ip]\nbucket: {capacity: 5, refill: 1, per: 1s}\n",
        ));
        let b = Arc::new(rule(
            "name: b\nkey: [client_ip]\nbucket: {capacity: 10, refill: 1, per: 2s}\n",
        ));
        let out = interpret(&[
            (a, decision(false, 0, 400, 5_000)),
            (b, decision(false, 0, 1_200, 20_000)),
        ]);
        let p = out.rejection.unwrap();
        assert_eq!((p.status, p.code, p.rule.as_deref()), (429, "RATE_LIMITED", Some("b")));
        let get = |n: &str| {
            p.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("retry-after").unwrap(), "2");
        assert_eq!(get("ratelimit-policy").unwrap(), "\"a\";q=5;w=5, \"b\";q=10;w=20");
        assert_eq!(get("ratelimit").unwrap(), "\"a\";r=0;t=5, \"b\";r=0;t=20");
    }

    #[test]
    fn shadow_rule_reports_but_never_blocks_or_advertises() {
        let r = Arc::new(rule(&format!("{BASE}mode: shadow\n")));
        let out = interpret(&[(r, decision(false, 0, 1000, 10_000))]);
        assert!(out.rejection.is_none());
        assert!(out.headers.is_empty());
        assert_eq!(out.decisions[0].decision, Decision::Reject);
        assert_eq!(out.decisions[0].mode, Mode::Shadow);
    }

    #[test]
    fn retry_after_never_rounds_down_to_zero() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        let r = Arc::new(rule(BASE));
        let p = interpret(&[(r, decision(false, 0, 0, 0))]).rejection.unwrap();
        assert!(p.headers.iter().any(|(k, v)| k == "retry-after" && v == "1"));
    }

    #[test]
    fn config_validation_names_paths() {
        let cfg: RateRuleConfig =
            serde_yaml_ng::from_str("name: \"bad name\"\nkey: []\nbucket: {capacity: 0, refill: 0, per: 0s}\n")
                .unwrap();
        let paths: Vec<String> = cfg.build().unwrap_err().into_iter().map(|i| i.path).collect();
        assert_eq!(paths, ["name", "key", "bucket.capacity", "bucket.refill", "bucket.per"]);
        assert!(serde_yaml_ng::from_str::<RateRuleConfig>(&format!("{BASE}key2: 1\n")).is_err());
        assert!(serde_yaml_ng::from_str::<RateRuleConfig>(
            "name: x\nkey: [nope]\nbucket: {capacity: 1, refill: 1, per: 1s}"
        )
        .is_err());
    }

    #[test]
    fn local_prelimit_blocks_after_burst_and_groups_ipv6_by_prefix() {
        let l = LocalPreLimitConfig {
            per_second: 1,
            burst: Some(2),
            max_tracked_ips: 10,
            ipv6_prefix: 64,
        }
        .build()
        .unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.check(ip) && l.check(ip));
        assert!(!l.check(ip));
        assert!(l.check("192.0.2.2".parse().unwrap()));
        assert!(l.check("2001:db8::1".parse().unwrap()) && l.check("2001:db8::2".parse().unwrap()));
        assert!(!l.check("2001:db8::3".parse().unwrap()));
        assert_eq!(l.rejection().code, "RATE_LIMITED");
        assert!(LocalPreLimitConfig {
            per_second: 0,
            burst: None,
            max_tracked_ips: 0,
            ipv6_prefix: 0
        }
        .build()
        .is_err());
    }
}
