//! A [`Store`] decorator that records every operation's latency and errors
//! (`payguard_store_operation_duration_seconds`, `payguard_store_errors_total`, and
//! `payguard_store_full_total` when a budget refused a record), and reports each detected loss
//! of the store's data once (`payguard_store_data_loss_total` and a `store_data_loss` warning).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus::{HistogramVec, IntCounterVec};

use super::{
    BucketDecision, BucketSpec, CounterSpec, DataLoss, DedupClaim, GuardBatch, GuardOutcome, Store, StoreError,
};

/// Wraps a store and measures it.
#[derive(Debug)]
pub(crate) struct MeteredStore {
    inner: Arc<dyn Store>,
    duration: HistogramVec,
    errors: IntCounterVec,
    full: IntCounterVec,
    data_loss: IntCounterVec,
}

impl MeteredStore {
    /// Measures `inner` into the metric families of `metrics`.
    pub(crate) fn new(inner: Arc<dyn Store>, metrics: &crate::metrics::Metrics) -> Self {
        Self {
            inner,
            duration: metrics.store_duration.clone(),
            errors: metrics.store_errors.clone(),
            full: metrics.store_full.clone(),
            data_loss: metrics.store_data_loss.clone(),
        }
    }

    async fn measure<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = f.await;
        let backend = self.inner.backend();
        self.duration
            .with_label_values(&[backend, op])
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Err(StoreError::Full(kind)) => {
                self.errors.with_label_values(&[backend, op]).inc();
                self.full.with_label_values(&[kind]).inc();
            }
            Err(_) => self.errors.with_label_values(&[backend, op]).inc(),
            Ok(_) => {}
        }
        self.report_data_loss();
        result
    }

    fn report_data_loss(&self) {
        for loss in self.inner.take_data_loss_reports() {
            self.data_loss.with_label_values(&[loss.detected_by.as_str()]).inc();
            tracing::warn!(
                event = "store_data_loss",
                at = %loss.at,
                detected_by = loss.detected_by.as_str(),
                "the store lost its data (a Redis restart without persistence, a failover to a lagging replica, or a flush): requests dated at or before `at` are refused with TIMESTAMP_BEFORE_STORE_LOSS, and notifications may reach the backend again"
            );
        }
    }
}

#[async_trait]
impl Store for MeteredStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.measure("ping", self.inner.ping()).await
    }

    fn usage(&self) -> Vec<(&'static str, u64, u64)> {
        self.inner.usage()
    }

    async fn check_data_loss(&self) -> Result<(), StoreError> {
        self.measure("check_data_loss", self.inner.check_data_loss()).await
    }

    fn data_loss(&self) -> Option<DataLoss> {
        self.inner.data_loss()
    }

    fn take_data_loss_reports(&self) -> Vec<DataLoss> {
        // Reported here, once; the caller above this decorator sees none.
        Vec::new()
    }

    async fn take_buckets(&self, buckets: &[BucketSpec]) -> Result<Vec<BucketDecision>, StoreError> {
        self.measure("take_buckets", self.inner.take_buckets(buckets)).await
    }

    async fn claim_nonce(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.measure("claim_nonce", self.inner.claim_nonce(key, ttl)).await
    }

    async fn count(&self, spec: &CounterSpec) -> Result<u64, StoreError> {
        self.measure("count", self.inner.count(spec)).await
    }

    async fn guard(&self, batch: &GuardBatch) -> Result<GuardOutcome, StoreError> {
        self.measure("guard", self.inner.guard(batch)).await
    }

    async fn dedup_claim(&self, key: &str, lease: Duration) -> Result<DedupClaim, StoreError> {
        self.measure("dedup_claim", self.inner.dedup_claim(key, lease)).await
    }

    async fn dedup_claim_unless(
        &self,
        key: &str,
        lease: Duration,
        superseded_by: &str,
    ) -> Result<DedupClaim, StoreError> {
        self.measure("dedup_claim", self.inner.dedup_claim_unless(key, lease, superseded_by))
            .await
    }

    async fn dedup_complete(&self, key: &str, token: &str, keep: Duration) -> Result<bool, StoreError> {
        self.measure("dedup_complete", self.inner.dedup_complete(key, token, keep))
            .await
    }

    async fn dedup_release(&self, key: &str, token: &str) -> Result<bool, StoreError> {
        self.measure("dedup_release", self.inner.dedup_release(key, token))
            .await
    }

    async fn set_add(&self, set: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        self.measure("set_add", self.inner.set_add(set, member, ttl)).await
    }

    async fn set_remove(&self, set: &str, member: &str) -> Result<bool, StoreError> {
        self.measure("set_remove", self.inner.set_remove(set, member)).await
    }

    async fn set_contains(&self, set: &str, member: &str) -> Result<bool, StoreError> {
        self.measure("set_contains", self.inner.set_contains(set, member)).await
    }

    async fn set_members(&self, set: &str) -> Result<Vec<(String, Duration)>, StoreError> {
        self.measure("set_members", self.inner.set_members(set)).await
    }
}
