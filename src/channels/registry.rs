//! What the channel registration list derives. The list itself is the `channels!` invocation in
//! `channels/mod.rs`: it names each channel once (doc line, config name, module and
//! [`ChannelSetup`] type), and everything else comes from it: the module declarations,
//! [`ChannelKind`], the config enum [`ChannelConfig`] (and so `payguard schema`), building
//! verifiers, simulation, how passthrough judges a legacy backend's reply, the names `payguard
//! simulate` accepts, and the per-channel cases of the benchmarks and integration tests
//! ([`ChannelKind::ALL`] with [`ChannelInfo::test_setup`]). docs/adding-a-channel.md walks
//! through adding one.

use std::path::Path;
use std::sync::Arc;

use super::{
    Channel, ChannelSetup, EventKind, SimulateInput, SimulateKeys, SimulateSpec, SimulatedNotification, TestSetup,
};
pub use super::{ChannelConfig, ChannelKind};
use crate::issue::ConfigIssue;

/// What the registry knows about a channel before any config: the type-level parts of its
/// [`ChannelSetup`], reachable from a [`ChannelKind`].
#[derive(Debug, Clone, Copy)]
pub struct ChannelInfo {
    simulate: fn(&SimulateSpec, &SimulateKeys) -> Result<SimulatedNotification, String>,
    backend_acknowledged: fn(u16, &[u8]) -> bool,
    simulated_txn_id: fn(i64) -> String,
    simulated_notification_id: fn(i64, &str) -> String,
    test_setup: fn(&Path) -> Result<TestSetup, String>,
    /// What `payguard simulate` needs for this channel ([`ChannelSetup::SIMULATE_NEEDS`]).
    pub(crate) simulate_needs: &'static [(SimulateInput, &'static str)],
    /// Event kinds the channel notifies and simulates ([`ChannelSetup::EVENT_KINDS`]).
    pub event_kinds: &'static [EventKind],
    /// Header carrying the signature, if any ([`ChannelSetup::SIGNATURE_HEADER`]).
    pub signature_header: Option<&'static str>,
    /// Whether a signed timestamp is checked for freshness ([`ChannelSetup::SIGNED_TIMESTAMP`]).
    pub signed_timestamp: bool,
    /// Whether notifications carry a retry-stable id ([`ChannelSetup::NOTIFICATION_ID`]).
    pub notification_id: bool,
}

impl ChannelInfo {
    /// The info of channel `S`.
    pub(crate) const fn of<S: ChannelSetup>() -> Self {
        Self {
            simulate: S::simulate,
            backend_acknowledged: S::backend_acknowledged,
            simulated_txn_id: S::simulated_txn_id,
            simulated_notification_id: S::simulated_notification_id,
            test_setup: S::test_setup,
            simulate_needs: S::SIMULATE_NEEDS,
            event_kinds: S::EVENT_KINDS,
            signature_header: S::SIGNATURE_HEADER,
            signed_timestamp: S::SIGNED_TIMESTAMP,
            notification_id: S::NOTIFICATION_ID,
        }
    }

    /// [`ChannelSetup::simulate`].
    pub(crate) fn simulate(&self, spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
        (self.simulate)(spec, keys)
    }

    /// [`ChannelSetup::backend_acknowledged`].
    pub(crate) fn backend_acknowledged(&self, status: u16, body: &[u8]) -> bool {
        (self.backend_acknowledged)(status, body)
    }

    /// [`ChannelSetup::simulated_txn_id`].
    pub(crate) fn simulated_txn_id(&self, stamp: i64) -> String {
        (self.simulated_txn_id)(stamp)
    }

    /// [`ChannelSetup::simulated_notification_id`].
    pub(crate) fn simulated_notification_id(&self, stamp: i64, uuid: &str) -> String {
        (self.simulated_notification_id)(stamp, uuid)
    }

    /// [`ChannelSetup::test_setup`].
    pub fn test_setup(&self, fixtures: &Path) -> Result<TestSetup, String> {
        (self.test_setup)(fixtures)
    }
}

/// Builds a valid notification of `kind` for `spec` with test keys.
pub fn simulate(kind: ChannelKind, spec: &SimulateSpec, keys: &SimulateKeys) -> Result<SimulatedNotification, String> {
    kind.info().simulate(spec, keys)
}

/// Adds the channel name in front of the issue paths of a channel's `build`, e.g.
/// `stripe.endpoint_secrets[0]`.
fn prefixed(kind: ChannelKind, issues: Vec<ConfigIssue>) -> Vec<ConfigIssue> {
    let prefix = kind.as_str();
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
}

/// Builds the verifier of a config section, issue paths prefixed with the channel name.
pub(crate) fn built<S: ChannelSetup>(config: &S) -> Result<Arc<dyn Channel>, Vec<ConfigIssue>> {
    config
        .build()
        .map(|c| Arc::new(c) as Arc<dyn Channel>)
        .map_err(|issues| prefixed(S::KIND, issues))
}

/// Declares the channel modules and derives [`ChannelKind`] and [`ChannelConfig`] from the
/// registration list in `channels/mod.rs`. Each entry: doc line(s), then
/// `Variant = "config name" => module::SetupType,` — the module is `src/channels/<module>.rs`.
macro_rules! channels {
    ($( $(#[doc = $doc:literal])+ $variant:ident = $name:literal => $module:ident :: $setup:ident, )+) => {
        $( pub mod $module; )+

        /// Which channel protocol a notification speaks.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize, ::schemars::JsonSchema,
        )]
        pub enum ChannelKind {
            $( $(#[doc = $doc])+ #[serde(rename = $name)] $variant, )+
        }

        impl ChannelKind {
            /// Every registered channel, in registration order.
            pub const ALL: &'static [ChannelKind] = &[$(Self::$variant),+];

            /// The name used in config, events, metrics and logs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }

            /// The channel registered under `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Self::$variant),)+
                    _ => None,
                }
            }

            /// The type-level parts of the channel.
            pub fn info(self) -> &'static $crate::channels::registry::ChannelInfo {
                match self {
                    $(Self::$variant => const { &$crate::channels::registry::ChannelInfo::of::<$module::$setup>() },)+
                }
            }
        }

        /// A channel instance: its protocol (the key) and that protocol's settings.
        #[derive(Debug, Clone, ::serde::Deserialize, ::serde::Serialize, ::schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub enum ChannelConfig {
            $( $(#[doc = $doc])+ #[serde(rename = $name)] $variant($module::$setup), )+
        }

        impl ChannelConfig {
            /// The protocol.
            #[cfg(test)]
            pub(crate) fn kind(&self) -> ChannelKind {
                match self {
                    $(Self::$variant(_) => ChannelKind::$variant,)+
                }
            }

            /// Builds the verifier (resolving secrets, parsing keys). Issue paths start with the
            /// channel name, e.g. `stripe.endpoint_secrets[0]`.
            pub fn build(
                &self,
            ) -> Result<::std::sync::Arc<dyn Channel>, Vec<$crate::issue::ConfigIssue>> {
                match self {
                    $(Self::$variant(c) => $crate::channels::registry::built(c),)+
                }
            }
        }

        // A `KIND` that names another variant would send its events under the wrong name.
        const _: () = {
            $(assert!(matches!(<$module::$setup as ChannelSetup>::KIND, ChannelKind::$variant));)+
        };
    };
}
pub(crate) use channels;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_name() {
        for &kind in ChannelKind::ALL {
            assert_eq!(ChannelKind::from_name(kind.as_str()), Some(kind));
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
            assert_eq!(serde_json::from_value::<ChannelKind>(json).unwrap(), kind);
        }
        assert_eq!(ChannelKind::from_name("paypal"), None);
    }

    #[test]
    fn every_channel_builds_from_its_test_setup_and_accepts_its_simulation() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for &kind in ChannelKind::ALL {
            let setup = kind.info().test_setup(&fixtures).unwrap();
            let config: ChannelConfig =
                serde_json::from_value(serde_json::json!({ kind.as_str(): setup.config })).unwrap();
            assert_eq!(config.kind(), kind);
            let channel = config.build().unwrap_or_else(|e| panic!("{kind}: {e:?}"));
            assert_eq!(channel.kind(), kind);
            let spec = SimulateSpec {
                out_trade_no: "ORDER-REG-1".into(),
                amount_minor: 8880,
                currency: "CNY".into(),
                kind: EventKind::PaymentSucceeded,
                out_refund_no: None,
                refund_amount_minor: None,
                channel_txn_id: kind.info().simulated_txn_id(1),
                at: jiff::Timestamp::now(),
                notification_id: kind.info().simulated_notification_id(1, "0123456789abcdef"),
                app_id: setup.app_id.clone(),
                mch_id: setup.mch_id.clone(),
            };
            let n = simulate(kind, &spec, &setup.keys).unwrap_or_else(|e| panic!("{kind}: {e}"));
            let mut headers = http::HeaderMap::new();
            for (name, value) in &n.headers {
                headers.append(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(value).unwrap(),
                );
            }
            let event = channel
                .verify(
                    &super::super::NotifyRequest {
                        headers: &headers,
                        body: &n.body,
                    },
                    spec.at,
                )
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(event.kind, EventKind::PaymentSucceeded, "{kind}");
            assert_eq!(event.out_trade_no, "ORDER-REG-1", "{kind}");
            assert!(kind.info().event_kinds.contains(&EventKind::PaymentSucceeded), "{kind}");
            let ack = channel.success_ack();
            assert!(
                kind.info().backend_acknowledged(ack.status, &ack.body),
                "{kind}: a legacy backend answering like payguard is accepted"
            );
            let fail = channel.failure_ack("busy");
            assert!(!kind.info().backend_acknowledged(fail.status, &fail.body), "{kind}");
        }
    }
}
