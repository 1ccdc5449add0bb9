//! The client API guard's decision core: signature, IP rules, rate rules,
//! order rules. Pure: it builds the [`GuardBatch`] a request asks of the store and turns the
//! store's [`GuardOutcome`] (or its failure) into a [`Verdict`]. The proxy does the I/O.
//!
//! Request flow the proxy follows:
//! 1. [`Guard::client_ip`] → [`Guard::prelimit`] → [`Guard::check_ip`] (static lists)
//! 2. [`SignatureVerifier::verify_headers`], buffer the body up to [`Guard::max_body_bytes`],
//!    [`SignatureVerifier::verify_body`] (failures: [`Guard::signature_rejection`])
//! 3. [`Guard::plan`] → `store.guard(plan.batch())` → [`GuardPlan::decide`] or
//!    [`GuardPlan::on_store_error`]
//! 4. after a 2xx from upstream: `store.count(..)` for each of [`GuardPlan::upstream_counters`].

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{CounterSpec, GuardBatch, GuardOutcome};

pub mod ip;
pub mod order;
pub mod rate;
pub mod request;
pub mod signature;
pub(crate) mod verdict;

use ip::{IpDecision, IpRules, IpRulesConfig};
use order::{OrderRule, OrderRuleConfig, TierAction};
use rate::{LocalPreLimit, LocalPreLimitConfig, RateRule, RateRuleConfig};
use request::{IdentityAmbiguity, KeyPart, RequestFacts, RequestView};
use signature::{SignatureConfig, SignatureFailure, SignatureVerifier, SignedHeaders};
pub(crate) use verdict::{Action, Decision, Problem, RuleDecision, RuleKind, Verdict};

pub use crate::issue::ConfigIssue;

/// `enforce` blocks; `shadow` decides, logs and counts but never blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    /// Block when the rule says so.
    #[default]
    Enforce,
    /// Never block; report what would have happened.
    Shadow,
}

impl Mode {
    /// Metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Shadow => "shadow",
        }
    }
}

/// What a rule does when the store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoreErrorPolicy {
    /// Let the request through (fail open; the default for rate and order rules).
    Allow,
    /// Answer 503 `STORE_UNAVAILABLE` (fail closed).
    Deny,
}

impl StoreErrorPolicy {
    /// `allow`, the default for rate and order rules.
    pub(crate) fn allow() -> Self {
        Self::Allow
    }
}

/// What a rule does when the request lacks the identity it is keyed on. Never a silent
/// fallback (APISIX, for one, falls back to the client IP without saying so).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MissingKeyPolicy {
    /// Answer 400 `IDENTITY_MISSING` naming the rule and the missing part (default).
    #[default]
    Reject,
    /// The rule does not apply to this request.
    Skip,
    /// Key on the client IP instead (a separate bucket from the real identities).
    ClientIp,
}

/// Problem code when a rule's identity is missing and its policy is `reject`.
pub(crate) const IDENTITY_MISSING: &str = "IDENTITY_MISSING";

/// Problem code when a rule's identity is sent in a form decoders read differently.
pub(crate) const AMBIGUOUS_IDENTITY: &str = "AMBIGUOUS_IDENTITY";

/// Rule names become store keys, metric labels and quoted `RateLimit` items, so they are kept to
/// a safe alphabet.
/// Issues common to rate and order rules: `name` and `match`.
pub(crate) fn rule_issues(name: &str, matches: &request::RequestMatch) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        issues.push(ConfigIssue::new("name", "must be 1-64 characters of A-Z a-z 0-9 _ . -"));
    }
    issues.extend(
        matches
            .issues()
            .into_iter()
            .map(|(p, m)| ConfigIssue::new(format!("match.{p}"), m)),
    );
    issues
}

/// Why a rule has no identity for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotUsed {
    /// A part is missing and the rule says `on_missing_key: skip`.
    Skip,
    /// A part is missing and the rule says `reject`.
    Missing(KeyPart),
    /// A part is present in a form decoders read differently.
    Ambiguous(IdentityAmbiguity),
}

/// SHA-256 over the parts (label, length, value each, so no two identities collide by
/// concatenation), truncated to 128 bits and hex-encoded: bounded key names with no raw request
/// data in them. `Err` names the first part that is missing or ambiguous.
pub(crate) fn identity_digest(facts: &RequestFacts<'_>, parts: &[KeyPart]) -> Result<String, NotUsed> {
    let mut h = Sha256::new();
    for part in parts {
        let value = facts
            .part_value(part)
            .map_err(NotUsed::Ambiguous)?
            .ok_or_else(|| NotUsed::Missing(part.clone()))?;
        let (kind, name) = part.label_parts();
        h.update(((kind.len() + name.len()) as u64).to_be_bytes());
        h.update(kind.as_bytes());
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_be_bytes());
        h.update(&value);
    }
    let digest = h.finalize();
    Ok(hex::encode(digest.get(..16).unwrap_or(&digest)))
}

/// What a rule uses for one request, after its `on_missing_key` policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target<S> {
    /// Use this bucket / counter.
    Use(S),
    /// The rule does not apply: why.
    NotUsed(NotUsed),
}

impl<S> Target<S> {
    /// Maps the used value.
    pub(crate) fn map<T>(self, f: impl FnOnce(S) -> T) -> Target<T> {
        match self {
            Self::Use(s) => Target::Use(f(s)),
            Self::NotUsed(n) => Target::NotUsed(n),
        }
    }

    /// `Ok` with the used value, or `Err` with why there is none.
    pub(crate) fn into_result(self) -> Result<S, NotUsed> {
        match self {
            Self::Use(s) => Ok(s),
            Self::NotUsed(n) => Err(n),
        }
    }
}

/// The identity digest of `parts`, applying `policy` when one is missing. The `client_ip`
/// fallback digest is marked (`ip-...`) so it never shares a bucket with a real identity. An
/// ambiguous part is never replaced by a fallback: the request says two things at once.
pub(crate) fn resolve_identity(
    facts: &RequestFacts<'_>,
    parts: &[KeyPart],
    policy: MissingKeyPolicy,
) -> Target<String> {
    match identity_digest(facts, parts) {
        Ok(d) => Target::Use(d),
        Err(NotUsed::Missing(part)) => match policy {
            MissingKeyPolicy::Reject => Target::NotUsed(NotUsed::Missing(part)),
            MissingKeyPolicy::Skip => Target::NotUsed(NotUsed::Skip),
            MissingKeyPolicy::ClientIp => match identity_digest(facts, &[KeyPart::ClientIp]) {
                Ok(d) => Target::Use(format!("ip-{d}")),
                Err(n) => Target::NotUsed(n),
            },
        },
        Err(n) => Target::NotUsed(n),
    }
}

/// The built value, or `None` after moving its issues (under `at`) into `issues`.
fn collect_issues<T>(issues: &mut Vec<ConfigIssue>, at: &str, built: Result<T, Vec<ConfigIssue>>) -> Option<T> {
    match built {
        Ok(v) => Some(v),
        Err(e) => {
            issues.extend(e.into_iter().map(|i| i.under(at)));
            None
        }
    }
}

/// `guard:` — everything that protects client API calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GuardConfig {
    /// Request signatures (`PG-HMAC-SHA256`); absent = requests are not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signature: Option<SignatureConfig>,
    /// IP rules and trusted proxies.
    #[serde(default)]
    pub(crate) ip: IpRulesConfig,
    /// Token-bucket rate rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) rate_rules: Vec<RateRuleConfig>,
    /// Per-user order-frequency rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) order_rules: Vec<OrderRuleConfig>,
    /// Per-process pre-limiter per client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) local_prelimit: Option<LocalPreLimitConfig>,
}

impl GuardConfig {
    /// Route names the rules refer to, with the key path of each reference (for validation
    /// against the route table).
    pub(crate) fn referenced_routes(&self) -> Vec<(String, String)> {
        let rate = self
            .rate_rules
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("rate_rules[{i}]"), &r.matches));
        let order = self
            .order_rules
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("order_rules[{i}]"), &r.matches));
        rate.chain(order)
            .flat_map(|(at, m)| {
                m.routes
                    .iter()
                    .enumerate()
                    .map(move |(j, name)| (format!("{at}.match.routes[{j}]"), name.clone()))
            })
            .collect()
    }

    /// Resolves secrets and validates everything; issue paths are relative to this section.
    pub(crate) fn build(&self) -> Result<Guard, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let signature = self
            .signature
            .as_ref()
            .and_then(|s| collect_issues(&mut issues, "signature", s.build()));
        let mut names = HashSet::new();
        let mut rate = Vec::new();
        for (i, r) in self.rate_rules.iter().enumerate() {
            let at = format!("rate_rules[{i}]");
            if !names.insert(r.name.as_str()) {
                issues.push(ConfigIssue::new(
                    format!("{at}.name"),
                    format!("duplicate rule name `{}`", r.name),
                ));
            }
            rate.extend(collect_issues(&mut issues, &at, r.build()).map(Arc::new));
        }
        let mut order = Vec::new();
        for (i, r) in self.order_rules.iter().enumerate() {
            let at = format!("order_rules[{i}]");
            if !names.insert(r.name.as_str()) {
                issues.push(ConfigIssue::new(
                    format!("{at}.name"),
                    format!("duplicate rule name `{}`", r.name),
                ));
            }
            order.extend(collect_issues(&mut issues, &at, r.build()).map(Arc::new));
        }
        if signature.is_none() && self.signature.is_none() {
            let uses_key = |p: &KeyPart| *p == KeyPart::AccessKey;
            for (i, r) in self.rate_rules.iter().enumerate() {
                if r.key.iter().any(uses_key) {
                    issues.push(ConfigIssue::new(
                        format!("rate_rules[{i}].key"),
                        "access_key needs a `signature` section",
                    ));
                }
            }
            for (i, r) in self.order_rules.iter().enumerate() {
                if uses_key(&r.user) {
                    issues.push(ConfigIssue::new(
                        format!("order_rules[{i}].user"),
                        "access_key needs a `signature` section",
                    ));
                }
            }
        }
        let prelimit = self
            .local_prelimit
            .as_ref()
            .and_then(|p| collect_issues(&mut issues, "local_prelimit", p.build()));
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Guard {
            signature,
            ip: self.ip.build(),
            rate,
            order,
            prelimit,
        })
    }
}

/// The built guard: immutable, shared by all requests under one config generation.
#[derive(Debug)]
pub(crate) struct Guard {
    signature: Option<SignatureVerifier>,
    ip: IpRules,
    rate: Vec<Arc<RateRule>>,
    order: Vec<Arc<OrderRule>>,
    prelimit: Option<LocalPreLimit>,
}

impl Guard {
    /// The signature verifier, when requests must be signed.
    pub(crate) fn signature(&self) -> Option<&SignatureVerifier> {
        self.signature.as_ref()
    }

    /// The client IP for a socket peer and request headers (trusted proxies).
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.ip.client_ip(peer, headers)
    }

    /// Whether the body must be buffered (signature hash or a `body:` key).
    pub(crate) fn needs_body(&self) -> bool {
        self.signature.is_some() || self.key_parts().any(|k| matches!(k, KeyPart::Body(_)))
    }

    /// Whether the guard reads the query (a signature covers it, or a rule keys on `query:`).
    /// Then guard routes read it once as a [`crate::canonical::query::CanonicalQuery`] and
    /// forward its canonical text.
    pub(crate) fn reads_query(&self) -> bool {
        self.signature.is_some() || self.key_parts().any(|k| matches!(k, KeyPart::Query(_)))
    }

    /// The request headers the guard reads: the signature headers, `header:` identities and,
    /// with trusted proxies, `X-Forwarded-For`.
    pub(crate) fn headers_read(&self) -> Vec<http::HeaderName> {
        let mut out: Vec<http::HeaderName> = self
            .signature
            .iter()
            .flat_map(|s| s.header_names().into_iter().cloned())
            .collect();
        out.extend(self.key_parts().filter_map(|k| match k {
            KeyPart::Header(h) => Some(h.clone()),
            _ => None,
        }));
        out.push(http::header::HeaderName::from_static("x-forwarded-for"));
        out
    }

    fn key_parts(&self) -> impl Iterator<Item = &KeyPart> {
        self.rate
            .iter()
            .flat_map(|r| r.key.iter())
            .chain(self.order.iter().map(|r| &r.user))
    }

    /// Most body bytes to buffer; beyond it answer [`Guard::body_too_large`].
    pub(crate) fn max_body_bytes(&self) -> u64 {
        self.signature
            .as_ref()
            .map_or(signature::DEFAULT_MAX_BODY_BYTES, |s| s.max_body_bytes())
    }

    /// The 413 answer for a body over [`Guard::max_body_bytes`].
    pub(crate) fn body_too_large(&self) -> Verdict {
        self.signature_rejection(&SignatureFailure::BodyTooLarge {
            limit: self.max_body_bytes(),
        })
    }

    /// The local pre-limiter's verdict: `None` to continue, `Some(reject)` when over the limit.
    pub(crate) fn prelimit(&self, client_ip: IpAddr) -> Option<Verdict> {
        let l = self.prelimit.as_ref()?;
        if l.check(client_ip) {
            return None;
        }
        let d = RuleDecision::new(
            RuleKind::LocalPrelimit,
            rate::LOCAL_PRELIMIT_RULE,
            Decision::Reject,
            Mode::Enforce,
        );
        Some(Verdict::reject(l.rejection(), vec![d]))
    }

    /// Static allow/deny lists: `None` to continue, `Some(reject)` with 403 `IP_DENIED`.
    pub(crate) fn check_ip(&self, client_ip: IpAddr) -> Option<Verdict> {
        match self.ip.decide(client_ip) {
            IpDecision::Allow => None,
            IpDecision::Deny { rule, .. } => Some(Verdict::reject(
                Problem::new(403, "IP_DENIED", "the client address is not allowed").with_rule(rule),
                vec![RuleDecision::new(RuleKind::Ip, rule, Decision::Reject, Mode::Enforce)],
            )),
        }
    }

    /// The answer to a failed signature check (401 / 413 with its stable code).
    pub(crate) fn signature_rejection(&self, failure: &SignatureFailure) -> Verdict {
        Verdict::reject(
            Problem::from(failure),
            vec![RuleDecision::new(
                RuleKind::Signature,
                failure.reason(),
                Decision::Reject,
                Mode::Enforce,
            )],
        )
    }

    /// Plans the store round trip for a request that passed the earlier checks. `signed` is the
    /// request's signature headers *after* [`SignatureVerifier::verify_body`] succeeded (its key
    /// is the `access_key` identity and its nonce is claimed); `route` is the proxy's route name.
    /// `Err` is an immediate rejection (a rule's identity is missing and its policy is `reject`).
    pub(crate) fn plan(
        &self,
        req: &RequestView<'_>,
        signed: Option<&SignedHeaders>,
        route: Option<&str>,
        now: Timestamp,
    ) -> Result<GuardPlan, Box<Verdict>> {
        let facts = RequestFacts::new(req, signed.map(|s| s.key_id.as_str()), route);
        let mut plan = GuardPlan::default();
        if self.ip.dynamic_deny() {
            plan.batch.deny = Some((
                ip::dynamic_deny_set().to_string(),
                ip::dynamic_deny_member(req.client_ip),
            ));
        }
        if let (Some(v), Some(s)) = (&self.signature, signed) {
            plan.batch.nonce = Some((signature::nonce_key(&s.key_id, &s.nonce), v.nonce_ttl()));
            plan.batch.nonce_timestamp = s.timestamp_unix;
        }
        let mut refusal: Option<Problem> = None;
        // A rule that applies but has no identity: record it, and refuse the request if the rule
        // is enforced and the identity is missing under `on_missing_key: reject`, or ambiguous.
        let mut not_used = |kind: RuleKind, name: &Arc<str>, mode: Mode, why: NotUsed, plan: &mut GuardPlan| {
            let (decision, problem) = match why {
                NotUsed::Skip => (Decision::Skipped, None),
                NotUsed::Missing(part) => {
                    let detail = format!("rule `{name}` needs `{part}`, which the request does not carry");
                    (Decision::MissingKey, Some(Problem::new(400, IDENTITY_MISSING, detail)))
                }
                NotUsed::Ambiguous(a) => {
                    let detail = format!("rule `{name}` reads {a}");
                    (Decision::Ambiguous, Some(Problem::new(400, AMBIGUOUS_IDENTITY, detail)))
                }
            };
            plan.early.push(RuleDecision::new(kind, name.clone(), decision, mode));
            if let (Some(p), Mode::Enforce, None) = (problem, mode, &refusal) {
                refusal = Some(p.with_rule(name.to_string()));
            }
        };
        for rule in self.rate.iter().filter(|r| r.applies(&facts)) {
            match rule.target(&facts).into_result() {
                Ok(b) => {
                    plan.batch.buckets.push(b);
                    plan.rate.push(rule.clone());
                }
                Err(why) => not_used(RuleKind::Rate, &rule.name, rule.mode, why, &mut plan),
            }
        }
        for rule in self.order.iter().filter(|r| r.applies(&facts)) {
            match rule.target(&facts, now).into_result() {
                Ok(c) => {
                    plan.batch.counters.push(c);
                    plan.order.push(rule.clone());
                }
                Err(why) => not_used(RuleKind::Order, &rule.name, rule.mode, why, &mut plan),
            }
        }
        match refusal {
            Some(p) => Err(Box::new(Verdict::reject(p, plan.early))),
            None => Ok(plan),
        }
    }
}

/// One request's store round trip and how to read its answer. Owns what it needs (rules are
/// `Arc`s), so a request finishes under the config it started with even across a reload.
#[derive(Debug, Clone, Default)]
pub(crate) struct GuardPlan {
    batch: GuardBatch,
    rate: Vec<Arc<RateRule>>,
    order: Vec<Arc<OrderRule>>,
    early: Vec<RuleDecision>,
}

const DYNAMIC_DENY_RULE: &str = "dynamic_deny";
const NONCE_RULE: &str = "nonce";

impl GuardPlan {
    /// What to ask the store (`Store::guard`): deny → nonce → buckets → counters.
    pub(crate) fn batch(&self) -> &GuardBatch {
        &self.batch
    }

    /// Whether the store needs to be asked at all.
    pub(crate) fn needs_store(&self) -> bool {
        let b = &self.batch;
        b.deny.is_some() || b.nonce.is_some() || !b.buckets.is_empty() || !b.counters.is_empty()
    }

    /// Combines the store's answer into the verdict: dynamic deny (403 `IP_DENIED`) → a request
    /// dated before a loss of the store's data (401 `TIMESTAMP_BEFORE_STORE_LOSS`) → nonce
    /// replay (409 `NONCE_REPLAYED`) → enforced buckets (429 `RATE_LIMITED`) → order tiers
    /// (reject 429 `ORDER_LIMIT` over challenge over tag). An answer whose shape does not match
    /// the batch is handled like a store failure.
    pub(crate) fn decide(&self, outcome: &GuardOutcome) -> Verdict {
        let mut decisions = self.early.clone();
        if outcome.denied {
            decisions.push(RuleDecision::new(
                RuleKind::Ip,
                DYNAMIC_DENY_RULE,
                Decision::Reject,
                Mode::Enforce,
            ));
            let p = Problem::new(403, "IP_DENIED", "the client address is blocked").with_rule(DYNAMIC_DENY_RULE);
            return Verdict::reject(p, decisions);
        }
        // The nonce check's two refusals: dated before a store loss, or already used.
        let nonce_refusal = if outcome.nonce_before_store_loss {
            Some((
                401,
                "TIMESTAMP_BEFORE_STORE_LOSS",
                "the request is dated before the store lost its data, so its nonce cannot be checked; sign it again with the current time",
            ))
        } else if outcome.nonce_replayed {
            Some((
                409,
                "NONCE_REPLAYED",
                "this nonce was already used with this access key",
            ))
        } else {
            None
        };
        if let Some((status, code, detail)) = nonce_refusal {
            decisions.push(RuleDecision::new(
                RuleKind::Signature,
                NONCE_RULE,
                Decision::Reject,
                Mode::Enforce,
            ));
            return Verdict::reject(Problem::new(status, code, detail).with_rule(NONCE_RULE), decisions);
        }
        if outcome.buckets.len() != self.rate.len() || outcome.counters.len() != self.order.len() {
            return self.on_store_error();
        }
        let applied: Vec<_> = self.rate.iter().cloned().zip(outcome.buckets.iter().copied()).collect();
        let rates = rate::interpret(&applied);
        decisions.extend(rates.decisions);
        if let Some(p) = rates.rejection {
            // The store only read the counters; order rules are not decided for this request.
            return Verdict::reject(p, decisions);
        }
        let mut tags: Vec<Arc<str>> = Vec::new();
        let mut blocking: Option<(TierAction, Problem)> = None;
        for (rule, &stored) in self.order.iter().zip(&outcome.counters) {
            let count = rule.effective_count(stored);
            let tier = rule.tier_for(count);
            let decision = tier.map_or(Decision::Allow, |t| t.action.decision());
            decisions.push(RuleDecision::new(
                RuleKind::Order,
                rule.name.clone(),
                decision,
                rule.mode,
            ));
            let (Some(tier), Mode::Enforce) = (tier, rule.mode) else {
                continue;
            };
            match tier.action {
                TierAction::Tag => tags.push(rule.name.clone()),
                action => {
                    if blocking.as_ref().is_none_or(|(a, _)| action > *a) {
                        blocking = rule.problem(action, count).map(|p| (action, p));
                    }
                }
            }
        }
        if let Some((_, p)) = blocking {
            return Verdict::reject(p, decisions);
        }
        Verdict {
            action: Action::Allow {
                extra_request_headers: order::risk_header(&tags).into_iter().collect(),
                response_headers: rates.headers,
            },
            decisions,
        }
    }

    /// The verdict when the store failed: the nonce check fails closed (503
    /// `STORE_UNAVAILABLE`), each enforced rule applies its `on_store_error`, the dynamic deny
    /// list fails open.
    pub(crate) fn on_store_error(&self) -> Verdict {
        let mut decisions = self.early.clone();
        let unavailable = |rule: &str| {
            Problem::new(
                503,
                "STORE_UNAVAILABLE",
                "a required check could not be completed; retry later",
            )
            .with_rule(rule.to_string())
        };
        if self.batch.deny.is_some() {
            decisions.push(RuleDecision::new(
                RuleKind::Ip,
                DYNAMIC_DENY_RULE,
                Decision::StoreErrorAllow,
                Mode::Enforce,
            ));
        }
        if self.batch.nonce.is_some() {
            decisions.push(RuleDecision::new(
                RuleKind::Signature,
                NONCE_RULE,
                Decision::StoreErrorDeny,
                Mode::Enforce,
            ));
            return Verdict::reject(unavailable(NONCE_RULE), decisions);
        }
        let mut problem = None;
        let rules = self
            .rate
            .iter()
            .map(|r| (RuleKind::Rate, &r.name, r.mode, r.on_store_error))
            .chain(
                self.order
                    .iter()
                    .map(|r| (RuleKind::Order, &r.name, r.mode, r.on_store_error)),
            );
        for (kind, name, mode, policy) in rules {
            let decision = match policy {
                StoreErrorPolicy::Allow => Decision::StoreErrorAllow,
                StoreErrorPolicy::Deny => Decision::StoreErrorDeny,
            };
            decisions.push(RuleDecision::new(kind, name.clone(), decision, mode));
            if policy == StoreErrorPolicy::Deny && mode == Mode::Enforce && problem.is_none() {
                problem = Some(unavailable(name));
            }
        }
        match problem {
            Some(p) => Verdict::reject(p, decisions),
            None => Verdict::allow(decisions),
        }
    }

    /// Counters to increment after the backend answered 2xx (`count_on: upstream_2xx` rules;
    /// shadow ones included, since shadow rules count too).
    pub(crate) fn upstream_counters(&self) -> Vec<CounterSpec> {
        self.order
            .iter()
            .zip(&self.batch.counters)
            .filter(|(r, _)| r.count_on == order::CountOn::Upstream2xx)
            .map(|(_, c)| CounterSpec { incr: 1, ..c.clone() })
            .collect()
    }
}

#[cfg(test)]
mod tests;
