//! WeChat Pay platform certificates kept current for merchant accounts with
//! `download_platform_certificates`: `GET /v3/certificates` at start, every 12 hours, and soon
//! after a notification or an answer named a serial nobody knows (a channel rotation), at most
//! once a minute. New keys go into the process-wide keyring of the `mchid`
//! ([`Keyring`]), which every notify route and egress answer of that merchant consults, so a
//! rotation needs no reload. Each certificate is also written to the store, still encrypted with
//! the APIv3 key (a set per merchant, members expiring with the certificates) and read back on every round, so replicas share what
//! one of them downloaded, and a replica that cannot reach the channel still learns new serials.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::client::Limits;
use super::Merchant;
use crate::channels::wechatpay_v3::PlatformKey;
use crate::state::SharedState;

/// Scheduled download interval (WeChat Pay asks for less than 12 hours between downloads).
const REFRESH_EVERY: Duration = Duration::from_secs(12 * 3600);
/// Next try after a failed download.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);
/// Shortest gap between downloads an unknown serial triggers: a sender of made-up serials
/// cannot turn payguard into a download loop.
const WANTED_GAP: Duration = Duration::from_secs(60);
/// Shortest gap between store reads while an unknown serial waits for its download.
const IMPORT_GAP: Duration = Duration::from_secs(5);
/// Longest sleep between rounds: a reload that adds an account is picked up within it.
const TICK: Duration = Duration::from_secs(60);
/// One download: the certificate list is a few kilobytes.
const LIMITS: Limits = Limits {
    connect_timeout: Duration::from_secs(3),
    timeout: Duration::from_secs(10),
    max_answer_bytes: 256 * 1024,
};

/// A merchant account that downloads its platform certificates.
#[derive(Debug, Clone)]
pub(crate) struct CertificateAccount {
    /// The name under `merchants:`.
    pub(crate) name: String,
    /// The built account (always `Merchant::WechatpayV3`).
    pub(crate) merchant: Arc<Merchant>,
}

/// The store set holding the downloaded certificates of `mchid`.
fn store_set(mchid: &str) -> String {
    format!("wechatpay-platform-certificates:{mchid}")
}

/// When each account downloads next, and last downloaded because of an unknown serial.
#[derive(Default)]
struct Schedule {
    next_download: Option<Instant>,
    last_wanted: Option<Instant>,
    last_import: Option<Instant>,
    /// An unknown serial was seen and no download has answered it yet.
    pending: bool,
}

/// The background service (`payguard run` adds it next to the store health check).
pub(crate) struct CertificateService {
    /// Shared state: the running configuration, the store, the metrics, the clock.
    pub(crate) state: Arc<SharedState>,
}

#[async_trait]
impl BackgroundService for CertificateService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut schedules: HashMap<String, Schedule> = HashMap::new();
        loop {
            let accounts = self.state.config().certificate_accounts.clone();
            let mut wake = TICK;
            for account in &accounts {
                let Merchant::WechatpayV3(m) = account.merchant.as_ref() else {
                    continue;
                };
                let schedule = schedules.entry(account.name.clone()).or_default();
                if m.keyring().take_wanted() {
                    schedule.pending = true;
                }
                let now = Instant::now();
                let scheduled = schedule.next_download.is_none_or(|t| now >= t);
                let wanted_ok = schedule.last_wanted.is_none_or(|t| now >= t + WANTED_GAP);
                let download = scheduled || (schedule.pending && wanted_ok);
                // What other replicas downloaded is read before each download, each minute,
                // and (at most every few seconds) while an unknown serial waits.
                let import = download
                    || schedule.last_import.is_none_or(|t| now >= t + TICK)
                    || (schedule.pending && schedule.last_import.is_none_or(|t| now >= t + IMPORT_GAP));
                if import {
                    schedule.last_import = Some(now);
                    self.import_from_store(account, m).await;
                }
                if download {
                    if schedule.pending {
                        schedule.last_wanted = Some(now);
                        schedule.pending = false;
                    }
                    let ok = self.download(account, m).await;
                    schedule.next_download = Some(now + if ok { REFRESH_EVERY } else { RETRY_AFTER_FAILURE });
                }
                if let Some(next) = schedule.next_download {
                    wake = wake.min(next.saturating_duration_since(Instant::now()));
                }
                if !download && schedule.pending {
                    let next = schedule.last_wanted.map_or(now, |t| t + WANTED_GAP);
                    wake = wake.min(next.saturating_duration_since(now).max(IMPORT_GAP));
                }
            }
            schedules.retain(|name, _| accounts.iter().any(|a| &a.name == name));
            tokio::select! {
                _ = shutdown.changed() => break,
                () = crate::channels::wechatpay_v3::any_keyring_wanted() => {}
                () = tokio::time::sleep(wake) => {}
            }
        }
    }
}

impl CertificateService {
    /// Adds the store's certificates of this merchant to its keyring.
    async fn import_from_store(&self, account: &CertificateAccount, m: &super::wechatpay_v3::WechatpayV3Merchant) {
        let members = match self.state.store.set_members(&store_set(m.mchid())).await {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!(
                    target: "payguard::egress",
                    merchant = %account.name,
                    error = %e,
                    "platform certificates: the store could not be read"
                );
                return;
            }
        };
        // Members are the entries as WeChat Pay encrypted them: only what decrypts with this
        // account's APIv3 key is taken, so the store cannot add a key.
        let keys: Vec<PlatformKey> = members
            .iter()
            .filter_map(|(sealed, _)| m.sealed_certificates(sealed.as_bytes()).ok())
            .flatten()
            .map(|(_, key)| key)
            .collect();
        let added = m.keyring().add(&keys);
        if !added.is_empty() {
            tracing::info!(
                target: "payguard::egress",
                merchant = %account.name,
                serials = ?added,
                "platform certificates: added from the store"
            );
        }
        self.gauges(account, m);
    }

    /// Downloads, verifies and adds the certificates, and writes them to the store; whether the
    /// download succeeded.
    async fn download(&self, account: &CertificateAccount, m: &super::wechatpay_v3::WechatpayV3Merchant) -> bool {
        let clock = self.state.clock.as_ref();
        let outcome = match m.download_certificates(LIMITS, clock).await {
            Err(e) => {
                tracing::warn!(
                    target: "payguard::egress",
                    merchant = %account.name,
                    reason = %e,
                    "platform certificates: download failed"
                );
                "failed"
            }
            Ok(certificates) => {
                let keys: Vec<PlatformKey> = certificates.iter().map(|(_, k)| k.clone()).collect();
                let added = m.keyring().add(&keys);
                let now = clock.unix_seconds();
                for (sealed, key) in &certificates {
                    let left = key.not_after().saturating_sub(now);
                    let Ok(left) = u64::try_from(left) else { continue };
                    if left == 0 {
                        continue;
                    }
                    if let Err(e) = self
                        .state
                        .store
                        .set_add(&store_set(m.mchid()), sealed, Duration::from_secs(left))
                        .await
                    {
                        tracing::warn!(
                            target: "payguard::egress",
                            merchant = %account.name,
                            serial = key.serial(),
                            error = %e,
                            "platform certificates: the store could not keep a certificate"
                        );
                    }
                }
                tracing::info!(
                    target: "payguard::egress",
                    merchant = %account.name,
                    serials = ?keys.iter().map(PlatformKey::serial).collect::<Vec<_>>(),
                    added = ?added,
                    "platform certificates: downloaded"
                );
                if added.is_empty() {
                    "unchanged"
                } else {
                    "updated"
                }
            }
        };
        self.state
            .metrics
            .certificate_downloads
            .with_label_values(&[account.name.as_str(), outcome])
            .inc();
        self.gauges(account, m);
        outcome != "failed"
    }

    fn gauges(&self, account: &CertificateAccount, m: &super::wechatpay_v3::WechatpayV3Merchant) {
        let (count, soonest) = m.keyring().summary();
        let metrics = &self.state.metrics;
        metrics
            .platform_certificates
            .with_label_values(&[account.name.as_str()])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        if let Some(soonest) = soonest {
            metrics
                .platform_certificate_expiry
                .with_label_values(&[account.name.as_str()])
                .set(soonest);
        }
    }
}
