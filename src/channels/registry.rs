//! The one place channels are registered: the config enum (externally tagged by channel name),
//! building verifiers from it, and simulation by channel. Adding a channel is one file beside
//! this one plus one line in each match below.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    standard_webhooks, stripe, wechatpay_v3, Channel, ChannelKind, SimulateKeys, SimulateSpec,
    SimulatedNotification,
};
use crate::config::ConfigIssue;

/// A channel instance: its protocol (the key) and that protocol's settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelConfig {
    /// WeChat Pay API v3 (channels.md §2).
    WechatpayV3(wechatpay_v3::WechatpayV3Config),
    /// Stripe webhooks (channels.md §4).
    Stripe(stripe::StripeConfig),
    /// Standard Webhooks (channels.md §6).
    StandardWebhooks(standard_webhooks::StandardWebhooksConfig),
}

impl ChannelConfig {
    /// The protocol.
    pub fn kind(&self) -> ChannelKind {
        match self {
            Self::WechatpayV3(_) => ChannelKind::WechatpayV3,
            Self::Stripe(_) => ChannelKind::Stripe,
            Self::StandardWebhooks(_) => ChannelKind::StandardWebhooks,
        }
    }

    /// Builds the verifier (resolving secrets, parsing keys). Issue paths start with the
    /// channel name, e.g. `stripe.endpoint_secrets[0]`.
    pub fn build(&self) -> Result<Arc<dyn Channel>, Vec<ConfigIssue>> {
        fn boxed<C: Channel + 'static>(r: Result<C, Vec<ConfigIssue>>) -> Result<Arc<dyn Channel>, Vec<ConfigIssue>> {
            r.map(|c| Arc::new(c) as Arc<dyn Channel>)
        }
        let built = match self {
            Self::WechatpayV3(c) => boxed(c.build()),
            Self::Stripe(c) => boxed(c.build()),
            Self::StandardWebhooks(c) => boxed(c.build()),
        };
        let prefix = self.kind().as_str();
        built.map_err(|issues| {
            issues
                .into_iter()
                .map(|i| {
                    let path = if i.path.is_empty() { prefix.to_string() } else { format!("{prefix}.{}", i.path) };
                    ConfigIssue::new(path, i.message)
                })
                .collect()
        })
    }
}

/// Builds a valid notification of `kind` for `spec` with test keys.
pub fn simulate(kind: ChannelKind, spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
    match kind {
        ChannelKind::WechatpayV3 => wechatpay_v3::simulate(spec, keys),
        ChannelKind::Stripe => stripe::simulate(spec, keys),
        ChannelKind::StandardWebhooks => standard_webhooks::simulate(spec, keys),
        other => Err(format!("simulation of {other} is not available in this build")),
    }
}
