//! Order rules: per-user business quotas over sliding or calendar windows (in a time zone), with
//! graduated tiers (tag → challenge → reject). No other gateway counts outcomes; these
//! can count only orders the backend accepted (`count_on: upstream_2xx`).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::request::{KeyPart, RequestFacts, RequestMatch};
use super::verdict::{Decision, Problem};
use super::{resolve_identity, rule_issues, ConfigIssue, MissingKeyPolicy, Mode, StoreErrorPolicy, Target};
use crate::store::{CounterSpec, CounterWindow};

/// Header naming the order rule that asks for a challenge.
pub(crate) const CHALLENGE_HEADER: &str = "x-pg-challenge";
/// Header listing the order rules that tagged a forwarded request.
pub(crate) const RISK_HEADER: &str = "x-pg-risk";

/// Calendar unit of a calendar window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CalendarUnit {
    /// Local calendar day (window id `2026-11-23`).
    Day,
    /// ISO 8601 week, Monday to Sunday (window id `2026-W48`).
    Week,
}

/// `window:` — exactly one of `sliding: <duration>` or `calendar: day|week` (with `time_zone`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderWindowConfig {
    /// Count events within the last duration (`10m`, `24h`).
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::schema::DurationText>")]
    pub(crate) sliding: Option<Duration>,
    /// Count per local calendar day or ISO week.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) calendar: Option<CalendarUnit>,
    /// IANA time zone of a calendar window (default `UTC`), e.g. `Asia/Shanghai`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) time_zone: Option<String>,
}

/// When an order counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CountOn {
    /// Every matching request counts, accepted or not (default).
    #[default]
    Request,
    /// Only requests the backend answered with 2xx count; the guard reads the counter before
    /// forwarding and the proxy increments it after a 2xx ([`crate::guard::GuardPlan::upstream_counters`]).
    #[serde(rename = "upstream_2xx")]
    Upstream2xx,
}

/// What a tier does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TierAction {
    /// Forward, adding the rule to `X-PG-Risk` so the backend decides.
    Tag,
    /// Answer `CHALLENGE_REQUIRED` (status `challenge_status`) with `X-PG-Challenge: <rule>`.
    Challenge,
    /// Answer 429 `ORDER_LIMIT`.
    Reject,
}

impl TierAction {
    /// The decision label.
    pub(crate) fn decision(self) -> Decision {
        match self {
            Self::Tag => Decision::Tag,
            Self::Challenge => Decision::Challenge,
            Self::Reject => Decision::Reject,
        }
    }
}

/// One tier: applies when the count in the window is greater than `over`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TierConfig {
    /// Threshold: the tier applies from count `over + 1` on.
    pub(crate) over: u64,
    /// Action.
    pub(crate) action: TierAction,
}

/// One entry of `order_rules:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderRuleConfig {
    /// Rule name (1–64 of `A-Z a-z 0-9 _ . -`).
    pub(crate) name: String,
    /// Which requests count (default: all).
    #[serde(rename = "match", default)]
    pub(crate) matches: RequestMatch,
    /// The user: `header:NAME`, `access_key` or `body:/json/pointer`.
    pub(crate) user: KeyPart,
    /// Counting window.
    pub(crate) window: OrderWindowConfig,
    /// `request` (default) or `upstream_2xx`.
    #[serde(default)]
    pub(crate) count_on: CountOn,
    /// Tiers; the highest one whose `over` is below the count applies.
    pub(crate) tiers: Vec<TierConfig>,
    /// Status of a `challenge` answer (default 403; any 4xx).
    #[serde(default = "default_challenge_status")]
    pub(crate) challenge_status: u16,
    /// `enforce` (default) or `shadow`.
    #[serde(default)]
    pub(crate) mode: Mode,
    /// What to do when the store fails: `allow` (default) or `deny` (503).
    #[serde(default = "StoreErrorPolicy::allow")]
    pub(crate) on_store_error: StoreErrorPolicy,
    /// What to do when the request has no user: `reject` (default, 400 `IDENTITY_MISSING`),
    /// `skip` or `client_ip`.
    #[serde(default)]
    pub(crate) on_missing_key: MissingKeyPolicy,
}

fn default_challenge_status() -> u16 {
    403
}

/// A resolved order window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OrderWindow {
    /// Sliding window.
    Sliding(Duration),
    /// Calendar window in a time zone.
    Calendar {
        /// Day or week.
        unit: CalendarUnit,
        /// Zone the calendar is read in.
        zone: TimeZone,
    },
}

/// Extra life of a calendar counter past the end of its window, so replicas with slightly
/// different clocks still find it.
const CALENDAR_GRACE: Duration = Duration::from_secs(3600);

impl OrderWindow {
    /// The store window for a request at `now`. Calendar windows are named by the local date
    /// (`2026-11-23`) or ISO week (`2026-W48`) in the rule's zone and live until the window's
    /// local end (DST-aware) plus an hour.
    pub(crate) fn counter_window(&self, now: Timestamp) -> CounterWindow {
        match self {
            Self::Sliding(d) => CounterWindow::Sliding(*d),
            Self::Calendar { unit, zone } => {
                let date = now.to_zoned(zone.clone()).date();
                let (window_id, next_start) = match unit {
                    CalendarUnit::Day => (
                        format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day()),
                        date.tomorrow().ok(),
                    ),
                    CalendarUnit::Week => {
                        let iso = date.iso_week_date();
                        let back = i64::from(date.weekday().to_monday_zero_offset());
                        (
                            format!("{:04}-W{:02}", iso.year(), iso.week()),
                            date.checked_add(Span::new().days(7 - back)).ok(),
                        )
                    }
                };
                let remaining = next_start
                    .and_then(|d: Date| d.to_zoned(zone.clone()).ok())
                    .map(|end| end.timestamp().as_second().saturating_sub(now.as_second()))
                    .and_then(|s| u64::try_from(s).ok())
                    .map(Duration::from_secs)
                    .unwrap_or(Duration::from_secs(8 * 86_400));
                CounterWindow::Fixed {
                    window_id,
                    ttl: remaining + CALENDAR_GRACE,
                }
            }
        }
    }
}

/// A built order rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderRule {
    /// Rule name.
    pub(crate) name: Arc<str>,
    /// Match.
    pub(crate) matches: RequestMatch,
    /// User identity.
    pub(crate) user: KeyPart,
    /// Window.
    pub(crate) window: OrderWindow,
    /// When orders count.
    pub(crate) count_on: CountOn,
    /// Tiers sorted by `over`, ascending.
    pub(crate) tiers: Vec<TierConfig>,
    /// Status of a challenge.
    pub(crate) challenge_status: u16,
    /// Mode.
    pub(crate) mode: Mode,
    /// Store failure policy.
    pub(crate) on_store_error: StoreErrorPolicy,
    /// Missing user policy.
    pub(crate) on_missing_key: MissingKeyPolicy,
}

impl OrderRuleConfig {
    /// Validates; issue paths are relative to this rule.
    pub(crate) fn build(&self) -> Result<OrderRule, Vec<ConfigIssue>> {
        let mut issues = rule_issues(&self.name, &self.matches);
        if !matches!(self.user, KeyPart::Header(_) | KeyPart::AccessKey | KeyPart::Body(_)) {
            issues.push(ConfigIssue::new(
                "user",
                "must be header:NAME, access_key or body:/json/pointer",
            ));
        }
        let w = &self.window;
        let window = match (w.sliding, w.calendar) {
            (Some(d), None) => {
                if d.is_zero() {
                    issues.push(ConfigIssue::new("window.sliding", "must be greater than zero"));
                }
                if w.time_zone.is_some() {
                    issues.push(ConfigIssue::new("window.time_zone", "only applies to calendar windows"));
                }
                Some(OrderWindow::Sliding(d))
            }
            (None, Some(unit)) => {
                let name = w.time_zone.as_deref().unwrap_or("UTC");
                match TimeZone::get(name) {
                    Ok(zone) => Some(OrderWindow::Calendar { unit, zone }),
                    Err(_) => {
                        issues.push(ConfigIssue::new(
                            "window.time_zone",
                            format!("unknown IANA time zone `{name}`"),
                        ));
                        None
                    }
                }
            }
            _ => {
                issues.push(ConfigIssue::new(
                    "window",
                    "set exactly one of `sliding: <duration>` or `calendar: day|week`",
                ));
                None
            }
        };
        if self.tiers.is_empty() {
            issues.push(ConfigIssue::new("tiers", "at least one tier is required"));
        }
        let mut tiers = self.tiers.clone();
        tiers.sort_by_key(|t| t.over);
        if tiers.windows(2).any(|p| matches!(p, [a, b] if a.over == b.over)) {
            issues.push(ConfigIssue::new("tiers", "two tiers have the same `over`"));
        }
        if !(400..=499).contains(&self.challenge_status) {
            issues.push(ConfigIssue::new("challenge_status", "must be a 4xx status"));
        }
        match window {
            Some(window) if issues.is_empty() => Ok(OrderRule {
                name: Arc::from(self.name.as_str()),
                matches: self.matches.clone(),
                user: self.user.clone(),
                window,
                count_on: self.count_on,
                tiers,
                challenge_status: self.challenge_status,
                mode: self.mode,
                on_store_error: self.on_store_error,
                on_missing_key: self.on_missing_key,
            }),
            _ => Err(issues),
        }
    }
}

/// Counter key: `ord:<rule>:<user digest>` (the store appends the calendar window id).
pub(crate) fn counter_key(rule: &str, digest: &str) -> String {
    format!("ord:{rule}:{digest}")
}

/// The counter a request maps to under one order rule (read-only for `upstream_2xx`).
pub(crate) type OrderTarget = Target<CounterSpec>;

impl OrderRule {
    /// Whether the rule applies to this request.
    pub(crate) fn applies(&self, facts: &RequestFacts<'_>) -> bool {
        facts.matched_by(&self.matches)
    }

    /// The counter for this request at `now`. `count_on: upstream_2xx` counters are read
    /// (`incr: 0`); the increment happens after the backend answered 2xx.
    pub(crate) fn target(&self, facts: &RequestFacts<'_>, now: Timestamp) -> OrderTarget {
        resolve_identity(facts, std::slice::from_ref(&self.user), self.on_missing_key).map(|digest| CounterSpec {
            key: counter_key(&self.name, &digest),
            window: self.window.counter_window(now),
            incr: match self.count_on {
                CountOn::Request => 1,
                CountOn::Upstream2xx => 0,
            },
        })
    }

    /// The count to compare with tiers, given the store's value: for `upstream_2xx` the value
    /// is what was accepted before, so this request would be one more.
    pub(crate) fn effective_count(&self, stored: u64) -> u64 {
        match self.count_on {
            CountOn::Request => stored,
            CountOn::Upstream2xx => stored.saturating_add(1),
        }
    }

    /// The highest tier whose `over` is strictly below `count`.
    pub(crate) fn tier_for(&self, count: u64) -> Option<TierConfig> {
        self.tiers.iter().rev().find(|t| t.over < count).copied()
    }

    /// The answer for a `challenge` or `reject` tier (`None` for `tag`).
    pub(crate) fn problem(&self, action: TierAction, count: u64) -> Option<Problem> {
        match action {
            TierAction::Tag => None,
            TierAction::Challenge => Some(
                Problem::new(
                    self.challenge_status,
                    "CHALLENGE_REQUIRED",
                    format!(
                        "order rule `{}` requires a challenge ({count} in the window)",
                        self.name
                    ),
                )
                .with_rule(self.name.to_string())
                .with_header(HeaderName::from_static(CHALLENGE_HEADER), &self.name),
            ),
            TierAction::Reject => Some(
                Problem::new(
                    429,
                    "ORDER_LIMIT",
                    format!("order rule `{}` limit reached ({count} in the window)", self.name),
                )
                .with_rule(self.name.to_string()),
            ),
        }
    }
}

/// `X-PG-Risk: <rule>,<rule>` for the rules that tagged a request.
pub(crate) fn risk_header(rules: &[Arc<str>]) -> Option<(HeaderName, HeaderValue)> {
    if rules.is_empty() {
        return None;
    }
    let joined = rules.iter().map(|r| r.as_ref()).collect::<Vec<_>>().join(",");
    HeaderValue::from_str(&joined)
        .ok()
        .map(|v| (HeaderName::from_static(RISK_HEADER), v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> OrderRule {
        serde_yaml_ng::from_str::<OrderRuleConfig>(yaml)
            .unwrap()
            .build()
            .unwrap()
    }

    const TIERS: &str = "tiers: [{over: 3, action: tag}, {over: 10, action: reject}, {over: 5, action: challenge}]\n";

    fn day_rule(zone: &str) -> OrderRule {
        rule(&format!(
            "name: orders-day\nuser: header:x-user-id\nwindow: {{calendar: day, time_zone: {zone}}}\n{TIERS}"
        ))
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn fixed(w: CounterWindow) -> (String, Duration) {
        match w {
            CounterWindow::Fixed { window_id, ttl } => (window_id, ttl),
            other => panic!("not fixed: {other:?}"),
        }
    }

    #[test]
    fn tiers_apply_strictly_above_their_threshold() {
        let r = day_rule("UTC");
        assert_eq!(r.tier_for(3), None);
        assert_eq!(r.tier_for(4).map(|t| t.action), Some(TierAction::Tag));
        assert_eq!(r.tier_for(5).map(|t| t.action), Some(TierAction::Tag));
        assert_eq!(r.tier_for(6).map(|t| t.action), Some(TierAction::Challenge));
        assert_eq!(r.tier_for(10).map(|t| t.action), Some(TierAction::Challenge));
        assert_eq!(r.tier_for(11).map(|t| t.action), Some(TierAction::Reject));
        assert_eq!(r.tier_for(u64::MAX).map(|t| t.action), Some(TierAction::Reject));
    }

    #[test]
    fn upstream_2xx_rules_read_and_count_this_request_as_one_more() {
        let r = rule(&format!(
            "name: o\nuser: access_key\nwindow: {{sliding: 10m}}\ncount_on: upstream_2xx\n{TIERS}"
        ));
        assert_eq!(r.effective_count(3), 4);
        assert_eq!(
            r.window.counter_window(ts("2026-01-01T00:00:00Z")),
            CounterWindow::Sliding(Duration::from_secs(600))
        );
    }

    #[test]
    fn calendar_day_rolls_over_at_local_midnight() {
        let r = day_rule("Asia/Shanghai");
        // 15:59:59Z is 23:59:59 in Shanghai (UTC+8); one second later is the next local day.
        let (id, ttl) = fixed(r.window.counter_window(ts("2026-11-23T15:59:59Z")));
        assert_eq!(id, "2026-11-23");
        assert_eq!(ttl, Duration::from_secs(1) + CALENDAR_GRACE);
        let (id, ttl) = fixed(r.window.counter_window(ts("2026-11-23T16:00:00Z")));
        assert_eq!(id, "2026-11-24");
        assert_eq!(ttl, Duration::from_secs(86_400) + CALENDAR_GRACE);
    }

    #[test]
    fn calendar_day_across_dst_lasts_23_or_25_hours() {
        let r = day_rule("America/New_York");
        // 2026-03-08: clocks spring forward at 02:00 EST; the local day is 23 h long.
        let (id, ttl) = fixed(r.window.counter_window(ts("2026-03-08T05:00:00Z")));
        assert_eq!(id, "2026-03-08");
        assert_eq!(ttl, Duration::from_secs(23 * 3600) + CALENDAR_GRACE);
        // 2026-11-01: clocks fall back; the local day is 25 h long.
        let (id, ttl) = fixed(r.window.counter_window(ts("2026-11-01T04:00:00Z")));
        assert_eq!(id, "2026-11-01");
        assert_eq!(ttl, Duration::from_secs(25 * 3600) + CALENDAR_GRACE);
        // Just before local midnight after the fall-back day (05:00Z = 00:00 EST on Nov 2).
        let (id, _) = fixed(r.window.counter_window(ts("2026-11-02T04:59:59Z")));
        assert_eq!(id, "2026-11-01");
        let (id, _) = fixed(r.window.counter_window(ts("2026-11-02T05:00:00Z")));
        assert_eq!(id, "2026-11-02");
    }

    #[test]
    fn calendar_week_uses_iso_week_in_zone() {
        let r = rule(&format!(
            "name: w\nuser: access_key\nwindow: {{calendar: week, time_zone: Europe/Berlin}}\n{TIERS}"
        ));
        // Monday 2026-11-23 00:30 in Berlin (UTC+1) is Sunday 23:30 UTC.
        let (id, ttl) = fixed(r.window.counter_window(ts("2026-11-22T23:30:00Z")));
        assert_eq!(id, "2026-W48");
        assert_eq!(ttl, Duration::from_secs(7 * 86_400 - 1800) + CALENDAR_GRACE);
        let (id, _) = fixed(r.window.counter_window(ts("2026-11-22T22:59:59Z")));
        assert_eq!(id, "2026-W47");
        // ISO week-year differs from the calendar year at the turn of the year.
        let (id, _) = fixed(r.window.counter_window(ts("2027-01-01T12:00:00Z")));
        assert_eq!(id, "2026-W53");
    }

    #[test]
    fn challenge_and_reject_problems() {
        let r = rule(&format!(
            "name: o\nuser: access_key\nwindow: {{sliding: 1h}}\nchallenge_status: 428\n{TIERS}"
        ));
        let p = r.problem(TierAction::Challenge, 6).unwrap();
        assert_eq!((p.status, p.code), (428, "CHALLENGE_REQUIRED"));
        assert!(p.headers.iter().any(|(k, v)| k == "x-pg-challenge" && v == "o"));
        let p = r.problem(TierAction::Reject, 11).unwrap();
        assert_eq!((p.status, p.code, p.rule.as_deref()), (429, "ORDER_LIMIT", Some("o")));
        assert!(r.problem(TierAction::Tag, 4).is_none());
        let (_, v) = risk_header(&[Arc::from("a"), Arc::from("b")]).unwrap();
        assert_eq!(v, "a,b");
    }

    #[test]
    fn config_validation_names_paths() {
        let bad: OrderRuleConfig = serde_yaml_ng::from_str(
            "name: o\nuser: client_ip\nwindow: {calendar: day, sliding: 1h}\ntiers: [{over: 1, action: tag}, {over: 1, action: reject}]\nchallenge_status: 200\n",
        )
        .unwrap();
        let paths: Vec<String> = bad.build().unwrap_err().into_iter().map(|i| i.path).collect();
        assert_eq!(paths, ["user", "window", "tiers", "challenge_status"]);
        let bad: OrderRuleConfig = serde_yaml_ng::from_str(
            "name: o\nuser: access_key\nwindow: {calendar: day, time_zone: Mars/Olympus}\ntiers: []\n",
        )
        .unwrap();
        let paths: Vec<String> = bad.build().unwrap_err().into_iter().map(|i| i.path).collect();
        assert_eq!(paths, ["window.time_zone", "tiers"]);
    }
}
