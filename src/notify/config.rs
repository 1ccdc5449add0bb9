//! Configuration of a `notify` route.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ForwardMode, NotifyRoute};
use crate::channels::registry::ChannelConfig;
use crate::channels::standard_webhooks::StandardWebhookSigner;
use crate::egress::Merchants;
use crate::issue::ConfigIssue;
use crate::secret::SecretRef;

/// A payment-notification endpoint: which channel it speaks and how events reach the backend.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifyConfig {
    /// The channel protocol and its keys, e.g. `{stripe: {endpoint_secrets: [env:STRIPE_WHSEC]}}`.
    /// Set this or `merchant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) channel: Option<ChannelConfig>,
    /// The account in `merchants:` whose keys verify the notifications (WeChat Pay v3, Alipay,
    /// or Stripe with `endpoint_secrets`), so the keys are written once for egress calls and
    /// notifications. Set this or `channel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) merchant: Option<String>,
    /// `normalized` (default): POST the normalized event as JSON, signed with Standard Webhooks
    /// headers. `passthrough`: forward the original body and headers plus `X-PG-Verified: 1` and
    /// `X-PG-Event-Id`, and relay the backend's reply to the channel.
    #[serde(default = "default_forward")]
    pub(crate) forward: ForwardMode,
    /// Backend path events are sent to; default: the path the notification arrived on.
    #[serde(default)]
    pub(crate) backend_path: Option<String>,
    /// Longest wait for the backend (connect, send, answer). Keep it below the channel's own
    /// timeout (WeChat Pay and Alipay wait about 5 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) timeout: Duration,
    /// `whsec_…` secret that signs forwarded requests (Standard Webhooks `webhook-signature`).
    /// Required in `normalized` mode.
    #[serde(default)]
    pub(crate) webhook_secret: Option<SecretRef>,
    /// How long one delivery holds the event's dedup claim; must exceed `timeout`.
    #[serde(default = "default_lease", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) lease: Duration,
    /// How long an accepted event is remembered as done (at least 1 day; default 7 days).
    #[serde(default = "default_keep", with = "humantime_serde")]
    #[schemars(with = "crate::schema::DurationText")]
    pub(crate) keep: Duration,
    /// Largest accepted notification body (64 KiB is plenty).
    #[serde(default = "default_max_body")]
    pub(crate) max_body_bytes: usize,
}

fn default_forward() -> ForwardMode {
    ForwardMode::Normalized
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_keep() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_max_body() -> usize {
    64 * 1024
}

impl NotifyConfig {
    /// Builds the route handler; issue paths are relative to this section. `merchants` are the
    /// accounts `merchant` may name.
    pub(crate) fn build(&self, merchants: &Merchants) -> Result<Arc<NotifyRoute>, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let channel = match (&self.channel, &self.merchant) {
            (Some(channel), None) => match channel.build() {
                Ok(c) => Some(c),
                Err(e) => {
                    issues.extend(
                        e.into_iter()
                            .map(|i| ConfigIssue::new(format!("channel.{}", i.path), i.message)),
                    );
                    None
                }
            },
            (None, Some(name)) => match merchants.get(name) {
                Ok(Some(merchant)) => merchant
                    .notify_channel()
                    .map_err(|e| issues.push(ConfigIssue::new("merchant", format!("`{name}`: {e}"))))
                    .ok(),
                Ok(None) => None,
                Err(e) => {
                    issues.push(ConfigIssue::new("merchant", e));
                    None
                }
            },
            _ => {
                issues.push(ConfigIssue::new(
                    "channel",
                    "set exactly one of `channel` (the keys here) and `merchant` (an account in `merchants`)",
                ));
                None
            }
        };
        let signer = match &self.webhook_secret {
            Some(r) => match StandardWebhookSigner::from_secret_ref(r) {
                Ok(signer) => Some(signer),
                Err(e) => {
                    issues.push(ConfigIssue::new("webhook_secret", e));
                    None
                }
            },
            None if self.forward == ForwardMode::Normalized => {
                issues.push(ConfigIssue::new(
                    "webhook_secret",
                    "required in normalized mode: the backend must be able to verify forwarded events",
                ));
                None
            }
            None => None,
        };
        if let Some(p) = &self.backend_path {
            if !p.starts_with('/') {
                issues.push(ConfigIssue::new("backend_path", "must start with `/`"));
            }
        }
        if self.timeout.is_zero() {
            issues.push(ConfigIssue::new("timeout", "must be greater than zero"));
        }
        if self.lease <= self.timeout {
            issues.push(ConfigIssue::new(
                "lease",
                "must be longer than `timeout`, or a slow backend could see the event twice",
            ));
        }
        if self.keep < Duration::from_secs(24 * 3600) {
            issues.push(ConfigIssue::new(
                "keep",
                "must be at least 1 day (channels retry for about 25 hours)",
            ));
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > 16 * 1024 * 1024 {
            issues.push(ConfigIssue::new("max_body_bytes", "must be between 1 and 16777216"));
        }
        let tracking = self
            .merchant
            .as_deref()
            .and_then(|name| merchants.get(name).ok().flatten())
            .and_then(|m| m.tracking().cloned());
        match (channel, issues.is_empty()) {
            (Some(channel), true) => Ok(Arc::new(NotifyRoute {
                channel,
                tracking,
                ledger: self.merchant.as_deref().map(crate::orders::Ledger::new),
                merchant: self.merchant.clone(),
                forward: self.forward,
                backend_path: self.backend_path.clone(),
                timeout: self.timeout,
                signer,
                lease: self.lease,
                keep: self.keep,
                max_body: self.max_body_bytes,
            })),
            _ => Err(issues),
        }
    }
}
