//! Stripe API egress: the backend calls `<route prefix>/v1/…` without a key; payguard adds
//! `Authorization: Bearer <secret key>` and an `Idempotency-Key` on every POST, and relays
//! Stripe's answer. Stripe does not sign its API answers: they are authenticated by TLS to
//! `api.stripe.com` only, so they are relayed without `X-PG-Verified`.

use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::client::{channel_client, ChannelClient, ChannelRequest, Limits};
use super::{CallRecord, EgressError, EgressRequest, Relayed};
use crate::channels::stripe::{Stripe, StripeConfig};
use crate::issue::ConfigIssue;
use crate::secret::SecretRef;

const DEFAULT_BASE_URL: &str = "https://api.stripe.com";

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}

fn default_order_metadata_key() -> String {
    StripeConfig::DEFAULT_ORDER_METADATA_KEY.to_string()
}

/// A Stripe account: its secret (or restricted) API key.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StripeMerchantConfig {
    /// The secret API key (`sk_live_…`, `sk_test_…`) or a restricted key (`rk_…`); `file:` or
    /// `env:` only.
    pub(crate) secret_key: SecretRef,
    /// Webhook endpoint signing secrets (`whsec_…`) of the endpoint that points at payguard;
    /// needed only when a notify route names this account (`merchant:`). Its events must then
    /// match the key's mode: a `sk_live_`/`rk_live_` key accepts only live events, a test key
    /// only test events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) endpoint_secrets: Vec<SecretRef>,
    /// Metadata key holding the merchant order number, as on a `stripe` notify route.
    #[serde(default = "default_order_metadata_key")]
    pub(crate) order_metadata_key: String,
    /// The API's base URL, `https://host[:port]`.
    #[serde(default = "default_base_url")]
    pub(crate) base_url: String,
    /// PEM CA certificates trusted besides the system roots (a test's CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) extra_ca: Option<SecretRef>,
}

impl StripeMerchantConfig {
    /// Resolves the key and builds the client.
    pub(crate) fn build(&self) -> Result<StripeMerchant, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let key = if self.secret_key.is_inline() {
            issues.push(ConfigIssue::new(
                "secret_key",
                "must be a `file:` or `env:` reference, never the key itself",
            ));
            None
        } else {
            match self.secret_key.resolve() {
                Ok(key) => {
                    let text = key.expose_str().unwrap_or("").trim();
                    let shaped = ["sk_live_", "sk_test_", "rk_live_", "rk_test_"]
                        .iter()
                        .any(|p| text.starts_with(p))
                        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    if shaped {
                        Some(key)
                    } else {
                        issues.push(ConfigIssue::new(
                            "secret_key",
                            format!(
                                "{} does not hold a Stripe secret or restricted key (sk_… or rk_…)",
                                self.secret_key.describe()
                            ),
                        ));
                        None
                    }
                }
                Err(e) => {
                    issues.push(ConfigIssue::new("secret_key", e));
                    None
                }
            }
        };
        let client = channel_client(&self.base_url, self.extra_ca.as_ref(), &mut issues);
        // Notifications: only with endpoint secrets, and only in the key's own mode.
        let notify = match (&key, self.endpoint_secrets.is_empty()) {
            (Some(key), false) => {
                let text = key.expose_str().unwrap_or("").trim();
                let live = text.starts_with("sk_live_") || text.starts_with("rk_live_");
                StripeConfig {
                    endpoint_secrets: self.endpoint_secrets.clone(),
                    tolerance: StripeConfig::DEFAULT_TOLERANCE,
                    livemode: Some(live),
                    order_metadata_key: self.order_metadata_key.clone(),
                }
                .build()
                .map(|s| Some(Arc::new(s)))
                .map_err(|e| issues.extend(e))
                .unwrap_or(None)
            }
            _ => None,
        };
        match (key, client) {
            (Some(key), Some(client)) if issues.is_empty() => {
                let mut bearer =
                    http::HeaderValue::from_str(&format!("Bearer {}", key.expose_str().unwrap_or("").trim()))
                        .map_err(|_| vec![ConfigIssue::new("secret_key", "is not header text")])?;
                bearer.set_sensitive(true);
                Ok(StripeMerchant { bearer, client, notify })
            }
            _ => Err(issues),
        }
    }
}

/// A built Stripe account.
pub(crate) struct StripeMerchant {
    /// `Bearer <key>`, marked sensitive.
    bearer: http::HeaderValue,
    client: ChannelClient,
    /// The webhook verifier, when `endpoint_secrets` are set.
    notify: Option<Arc<Stripe>>,
}

impl fmt::Debug for StripeMerchant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeMerchant")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// The `Idempotency-Key` of a POST the backend sent without one: random, so two calls that are
/// the same bytes (two purchases of the same thing) stay two calls; it is returned to the
/// backend so that a retry of this call can carry it.
fn fresh_idempotency_key() -> String {
    let bytes: [u8; 16] = rand::random();
    format!("pg-{}", hex::encode(bytes))
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Headers of Stripe's answer relayed to the backend: the id Stripe support asks for, and
/// whether a repeated idempotency key was answered with the first call's answer.
const RELAYED_BACK: [&str; 2] = ["request-id", "idempotent-replayed"];

/// Headers of the backend's call passed on to Stripe as they are.
const PASSED_ON: [http::HeaderName; 3] = [
    http::header::CONTENT_TYPE,
    http::HeaderName::from_static("stripe-version"),
    http::HeaderName::from_static("stripe-account"),
];

impl StripeMerchant {
    /// The webhook verifier of this account (a notify route with `merchant:`), if it has
    /// `endpoint_secrets`.
    pub(crate) fn notify_channel(&self) -> Option<Arc<dyn crate::channels::Channel>> {
        self.notify.clone().map(|s| s as Arc<dyn crate::channels::Channel>)
    }

    /// Adds the key (and the idempotency key) and sends one call to `target`.
    pub(crate) async fn call(
        &self,
        req: &EgressRequest<'_>,
        target: String,
        limits: Limits,
        record: &mut CallRecord,
    ) -> Result<Relayed, EgressError> {
        let mut headers = vec![
            (http::header::AUTHORIZATION, self.bearer.clone()),
            (http::header::ACCEPT, http::HeaderValue::from_static("application/json")),
            (
                http::header::USER_AGENT,
                http::HeaderValue::from_static(concat!("payguard/", env!("CARGO_PKG_VERSION"))),
            ),
        ];
        for name in PASSED_ON {
            if let Some(v) = req.headers.get(&name) {
                headers.push((name, v.clone()));
            }
        }
        let mut fresh_key = None;
        if req.method == http::Method::POST {
            let key = match req.headers.get(IDEMPOTENCY_KEY) {
                Some(v) => v.clone(),
                None => {
                    let key = fresh_idempotency_key();
                    let value = http::HeaderValue::from_str(&key)
                        .map_err(|_| EgressError::Signing("the idempotency key is not header text".into()))?;
                    fresh_key = Some(key);
                    value
                }
            };
            headers.push((http::HeaderName::from_static(IDEMPOTENCY_KEY), key));
        }
        let request = ChannelRequest {
            method: req.method.clone(),
            path_and_query: target,
            headers,
            body: req.body.clone(),
        };
        let started = std::time::Instant::now();
        let answer = self.client.send(request, limits).await;
        record.channel_latency = Some(started.elapsed());
        let answer = answer?;
        record.channel_status = Some(answer.status);
        let mut relayed_headers: Vec<(String, String)> = RELAYED_BACK
            .iter()
            .filter_map(|name| {
                let value = answer.headers.get(*name)?.to_str().ok()?;
                Some(((*name).to_string(), value.to_string()))
            })
            .collect();
        if let Some(key) = fresh_key {
            relayed_headers.push((IDEMPOTENCY_KEY.to_string(), key));
        }
        Ok(Relayed {
            status: answer.status,
            headers: relayed_headers,
            content_type: answer
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: answer.body.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: &str) -> StripeMerchantConfig {
        StripeMerchantConfig {
            secret_key: SecretRef::new(key),
            endpoint_secrets: Vec::new(),
            order_metadata_key: default_order_metadata_key(),
            base_url: DEFAULT_BASE_URL.into(),
            extra_ca: None,
        }
    }

    /// A signed event of `livemode`, as Stripe sends it to the endpoint.
    fn event(secret: &str, livemode: bool) -> (http::HeaderMap, Vec<u8>, jiff::Timestamp) {
        let now = jiff::Timestamp::now();
        let body = format!(
            r#"{{"id":"evt_1","object":"event","created":{t},"type":"payment_intent.succeeded","livemode":{livemode},"data":{{"object":{{"id":"pi_1","object":"payment_intent","amount":8880,"amount_received":8880,"currency":"cny","status":"succeeded","metadata":{{"out_trade_no":"ORDER-1"}}}}}}}}"#,
            t = now.as_second()
        )
        .into_bytes();
        let t = now.as_second().to_string();
        let v1 = hex::encode(crate::channels::stripe::compute_signature(secret.as_bytes(), &t, &body));
        let mut headers = http::HeaderMap::new();
        headers.insert("stripe-signature", format!("t={t},v1={v1}").parse().unwrap());
        (headers, body, now)
    }

    #[test]
    fn webhooks_are_verified_with_the_endpoint_secrets_in_the_mode_of_the_key() {
        const WHSEC: &str = "whsec_account_endpoint_secret";
        let verdict = |key: &str, livemode: bool| {
            let mut c = config(key);
            c.endpoint_secrets = vec![SecretRef::new(WHSEC)];
            let channel = c.build().unwrap().notify_channel().expect("a webhook verifier");
            let (headers, body, now) = event(WHSEC, livemode);
            channel
                .verify(
                    &crate::channels::NotifyRequest {
                        headers: &headers,
                        body: &body,
                    },
                    now,
                )
                .map(|e| e.out_trade_no)
                .map_err(|e| e.to_string())
        };
        std::env::set_var("PG_TEST_STRIPE_TEST_KEY", "sk_test_4eC39HqLyjWDarjtT1zdp7dc");
        std::env::set_var("PG_TEST_STRIPE_LIVE_KEY", "rk_live_4eC39HqLyjWDarjtT1zdp7dc");
        assert_eq!(verdict("env:PG_TEST_STRIPE_TEST_KEY", false), Ok("ORDER-1".to_string()));
        assert_eq!(verdict("env:PG_TEST_STRIPE_LIVE_KEY", true), Ok("ORDER-1".to_string()));
        let refused = verdict("env:PG_TEST_STRIPE_TEST_KEY", true).unwrap_err();
        assert!(refused.contains("livemode"), "{refused}");
        let refused = verdict("env:PG_TEST_STRIPE_LIVE_KEY", false).unwrap_err();
        assert!(refused.contains("livemode"), "{refused}");
        // Without endpoint secrets the account verifies no webhooks.
        let m = config("env:PG_TEST_STRIPE_TEST_KEY").build().unwrap();
        assert!(m.notify_channel().is_none());
    }

    #[test]
    fn the_key_must_be_a_reference_to_a_stripe_key() {
        let issues = config("sk_test_4eC39HqLyjWDarjtT1zdp7dc").build().unwrap_err();
        assert_eq!(issues[0].path, "secret_key");
        assert!(!issues[0].message.contains("4eC39"), "{}", issues[0].message);
        std::env::set_var("PG_TEST_STRIPE_NOT_A_KEY", "pk_test_public");
        let issues = config("env:PG_TEST_STRIPE_NOT_A_KEY").build().unwrap_err();
        assert!(issues[0].message.contains("sk_"), "{}", issues[0].message);
        assert!(!issues[0].message.contains("pk_test_public"), "{}", issues[0].message);
        std::env::set_var("PG_TEST_STRIPE_KEY", "sk_test_4eC39HqLyjWDarjtT1zdp7dc");
        let m = config("env:PG_TEST_STRIPE_KEY").build().unwrap();
        assert!(!format!("{m:?}").contains("4eC39"));
    }

    #[test]
    fn fresh_idempotency_keys_differ() {
        let a = fresh_idempotency_key();
        assert_ne!(a, fresh_idempotency_key());
        assert_eq!(a.len(), 3 + 32);
        assert!(a.starts_with("pg-") && a[3..].bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
