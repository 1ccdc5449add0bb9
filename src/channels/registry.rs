//! The one place channels are registered: the config enum (externally tagged by channel name),
//! building verifiers from it, and simulation by channel. Adding a channel is one file beside
//! this one plus one line in each match below.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    alipay, standard_webhooks, stripe, unionpay, wechatpay_v2, wechatpay_v3, Channel, ChannelKind, SimulateKeys,
    SimulateSpec, SimulatedNotification,
};
use crate::config::ConfigIssue;

/// A channel instance: its protocol (the key) and that protocol's settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelConfig {
    /// Alipay asynchronous notify.
    Alipay(alipay::AlipayConfig),
    /// WeChat Pay API v3.
    WechatpayV3(wechatpay_v3::WechatpayV3Config),
    /// WeChat Pay v2, legacy XML.
    WechatpayV2(wechatpay_v2::WechatpayV2Config),
    /// Stripe webhooks.
    Stripe(stripe::StripeConfig),
    /// UnionPay online payment back notification 5.1.0.
    Unionpay(unionpay::UnionpayConfig),
    /// Standard Webhooks.
    StandardWebhooks(standard_webhooks::StandardWebhooksConfig),
}

impl ChannelConfig {
    /// The protocol.
    pub fn kind(&self) -> ChannelKind {
        match self {
            Self::Alipay(_) => ChannelKind::Alipay,
            Self::WechatpayV3(_) => ChannelKind::WechatpayV3,
            Self::WechatpayV2(_) => ChannelKind::WechatpayV2,
            Self::Stripe(_) => ChannelKind::Stripe,
            Self::Unionpay(_) => ChannelKind::Unionpay,
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
            Self::Alipay(c) => boxed(c.build()),
            Self::WechatpayV3(c) => boxed(c.build()),
            Self::WechatpayV2(c) => boxed(c.build()),
            Self::Stripe(c) => boxed(c.build()),
            Self::Unionpay(c) => boxed(c.build()),
            Self::StandardWebhooks(c) => boxed(c.build()),
        };
        let prefix = self.kind().as_str();
        built.map_err(|issues| {
            issues
                .into_iter()
                .map(|i| {
                    let path = if i.path.is_empty() {
                        prefix.to_string()
                    } else {
                        format!("{prefix}.{}", i.path)
                    };
                    ConfigIssue::new(path, i.message)
                })
                .collect()
        })
    }
}

/// Builds a valid notification of `kind` for `spec` with test keys.
pub fn simulate(kind: ChannelKind, spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
    match kind {
        ChannelKind::Alipay => alipay::simulate(spec, keys),
        ChannelKind::WechatpayV3 => wechatpay_v3::simulate(spec, keys),
        ChannelKind::WechatpayV2 => wechatpay_v2::simulate(spec, keys),
        ChannelKind::Stripe => stripe::simulate(spec, keys),
        ChannelKind::Unionpay => unionpay::simulate(spec, keys),
        ChannelKind::StandardWebhooks => standard_webhooks::simulate(spec, keys),
    }
}
