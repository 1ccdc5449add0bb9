//! Store data-loss detection on Redis: the generation markers payguard reads in the same script
//! call as its nonces and dedup records, and the losses they reveal.
//!
//! A Redis that restarts without persistence, or fails over to a replica that lagged, forgets
//! nonces and dedup claims without any error: a replayed signed request or a re-delivered
//! notification would be accepted again. Every script that reads or writes those records
//! therefore also reads a marker key in its own hash slot (`lua/lib.lua` `store_generation`).
//! payguard creates the marker on its first use of a slot; once it has used the slot, a missing
//! marker means the data is gone, and the script recreates it with the current time as fence.
//! Nonces dated at or before the fence are refused from then on, in the same script.
//!
//! On Redis Cluster each hash slot gets its own marker (a script may only touch keys of one
//! slot), named `<prefix>{gen:<n>}` with an `n` whose hash tag falls in that slot; standalone
//! Redis, and a cluster whose `key_prefix` pins every key to one slot, have a single marker.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use parking_lot::{Mutex, RwLock};
use redis::cluster_routing::Slot;

use super::{DataLoss, DataLossSource};

/// How long a marker lives without being renewed. The health check renews the markers of every
/// slot this payguard uses, minutes apart at most; a marker that expired while no payguard ran
/// is created again, quietly, on first use.
pub(crate) const MARKER_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16_384;

/// Markers the health check reads per round on Cluster (rotating through the used slots).
pub(crate) const HEALTH_SAMPLE: usize = 128;

/// Cluster detections this close to the previous one (by the store's clock) are the same loss:
/// a master that lost its data is found slot by slot.
const SAME_LOSS_WITHIN_MS: i64 = 10_000;

/// The markers of one store (one key prefix) and the slots this payguard has used.
#[derive(Debug)]
pub(crate) struct Markers {
    prefix: String,
    /// Per slot, the `n` of its marker `<prefix>{gen:<n>}`; empty when a single marker serves.
    tags: Arc<HashMap<Slot, u32>>,
    /// Slots whose marker this payguard has created or seen.
    used: RwLock<HashSet<Slot>>,
    /// Where the health check's next round starts among the used slots.
    cursor: AtomicUsize,
}

impl Markers {
    /// Markers for keys under `prefix`; `cluster` spreads them over every hash slot unless the
    /// prefix carries its own hash tag.
    pub(crate) fn new(prefix: &str, cluster: bool) -> Self {
        let pinned = Slot::for_key(format!("{prefix}{{a}}")) == Slot::for_key(format!("{prefix}{{b}}"));
        let tags = match (cluster && !pinned, prefix.contains('{')) {
            (false, _) => Arc::default(),
            // The hash tag is `gen:<n>` whatever the prefix: one table for every store.
            (true, false) => PLAIN_SLOT_TAGS.clone(),
            (true, true) => Arc::new(slot_tags(prefix)),
        };
        Self {
            prefix: prefix.to_string(),
            tags,
            used: RwLock::new(HashSet::new()),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Whether each Cluster slot has a marker of its own (else one marker serves every key).
    pub(crate) fn per_slot(&self) -> bool {
        !self.tags.is_empty()
    }

    /// The slot and key of the marker that shares a slot with `key`.
    pub(crate) fn for_key(&self, key: &str) -> (Slot, String) {
        match self.tags.get(&Slot::for_key(key)) {
            Some(n) => (Slot::for_key(key), format!("{}{{gen:{n}}}", self.prefix)),
            None => {
                let single = format!("{}{{gen}}", self.prefix);
                (Slot::for_key(&single), single)
            }
        }
    }

    /// The single marker (standalone), or the one of slot 0's neighbourhood on Cluster: the
    /// marker checked when a call has no key of its own.
    pub(crate) fn any(&self) -> (Slot, String) {
        self.for_key(&format!("{}{{gen}}", self.prefix))
    }

    /// Whether this payguard has used `slot` (then a missing marker is lost data).
    pub(crate) fn is_used(&self, slot: Slot) -> bool {
        self.used.read().contains(&slot)
    }

    /// Records that `slot`'s marker exists.
    pub(crate) fn mark_used(&self, slot: Slot) {
        if !self.is_used(slot) {
            self.used.write().insert(slot);
        }
    }

    /// Marker keys of the used slots, for one health-check round: all of them on standalone,
    /// at most `limit` on Cluster, continuing where the previous round stopped.
    pub(crate) fn health_round(&self, limit: usize) -> Vec<(Slot, String)> {
        let used = self.used.read();
        let mut slots: Vec<Slot> = used.iter().copied().collect();
        drop(used);
        if slots.is_empty() {
            return Vec::new();
        }
        // A stable order, so the cursor walks through every slot in turn.
        slots.sort_by_key(|s| self.tags.get(s).copied().unwrap_or(0));
        let start = self.cursor.fetch_add(limit, Ordering::Relaxed) % slots.len();
        slots
            .iter()
            .cycle()
            .skip(start)
            .take(limit.min(slots.len()))
            .map(|&slot| (slot, self.key_of_slot(slot)))
            .collect()
    }

    /// Every used slot's marker (a sweep after a detection on Cluster).
    pub(crate) fn all_used(&self) -> Vec<(Slot, String)> {
        let used: Vec<Slot> = self.used.read().iter().copied().collect();
        used.into_iter().map(|slot| (slot, self.key_of_slot(slot))).collect()
    }

    fn key_of_slot(&self, slot: Slot) -> String {
        match self.tags.get(&slot) {
            Some(n) => format!("{}{{gen:{n}}}", self.prefix),
            None => format!("{}{{gen}}", self.prefix),
        }
    }
}

/// [`slot_tags`] for prefixes without a `{`, computed once.
static PLAIN_SLOT_TAGS: LazyLock<Arc<HashMap<Slot, u32>>> = LazyLock::new(|| Arc::new(slot_tags("")));

/// For every hash slot, the smallest `n` whose key `<prefix>{gen:<n>}` falls in it (about
/// 170 000 CRC16 computations, a few milliseconds).
fn slot_tags(prefix: &str) -> HashMap<Slot, u32> {
    use std::fmt::Write;
    let mut tags = HashMap::with_capacity(SLOTS);
    let mut key = String::new();
    let mut n: u32 = 0;
    // The bound only guards against a prefix whose hash tag does not vary with `n` in some
    // unforeseen way; keys of slots without a tag then share the single marker's slot.
    while tags.len() < SLOTS && n < 20_000_000 {
        key.clear();
        let _ = write!(key, "{prefix}{{gen:{n}}}");
        tags.entry(Slot::for_key(&key)).or_insert(n);
        n += 1;
    }
    tags
}

/// The losses detected through one store: each reported once (metric, log), the latest shown
/// for `notice_for` (`/readyz`, forwarded notifications).
#[derive(Debug)]
pub(crate) struct DataLossLog {
    notice_for: Duration,
    /// Group per-slot detections into one loss (Cluster).
    group: bool,
    latest: Mutex<Option<(DataLoss, Instant)>>,
    unreported: Mutex<Vec<DataLoss>>,
    pending: AtomicBool,
    sweeping: AtomicBool,
}

impl DataLossLog {
    pub(crate) fn new(notice_for: Duration, cluster: bool) -> Self {
        Self {
            notice_for,
            group: cluster,
            latest: Mutex::new(None),
            unreported: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Records a marker found missing (recreated with `fence_ms`, the store's clock). `true`
    /// when this is a new loss rather than another slot of the latest one.
    pub(crate) fn record(&self, fence_ms: i64, detected_by: DataLossSource) -> bool {
        let at = Timestamp::from_millisecond(fence_ms).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut latest = self.latest.lock();
        if let Some((seen, _)) = latest.as_ref() {
            let apart = (at.as_millisecond() - seen.at.as_millisecond()).abs();
            if self.group && apart <= SAME_LOSS_WITHIN_MS {
                return false;
            }
        }
        let loss = DataLoss { at, detected_by };
        *latest = Some((loss, Instant::now()));
        drop(latest);
        self.unreported.lock().push(loss);
        self.pending.store(true, Ordering::Release);
        true
    }

    /// The latest loss, while its notice lasts.
    pub(crate) fn current(&self) -> Option<DataLoss> {
        match &*self.latest.lock() {
            Some((loss, seen)) if seen.elapsed() < self.notice_for => Some(*loss),
            _ => None,
        }
    }

    /// Losses not reported yet, each handed out once.
    pub(crate) fn take_unreported(&self) -> Vec<DataLoss> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.unreported.lock())
    }

    /// Claims the one sweep that may run at a time; `false` when one is running.
    pub(crate) fn start_sweep(&self) -> bool {
        !self.sweeping.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn end_sweep(&self) {
        self.sweeping.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cluster_slot_gets_a_marker_in_it() {
        let markers = Markers::new("pg:", true);
        assert_eq!(markers.tags.len(), SLOTS);
        for key in ["pg:{n:shop-app:abc}", "pg:{b:ip:10.0.0.1}", "pg:{d:notify:dedup:1}"] {
            let (slot, marker) = markers.for_key(key);
            assert_eq!(slot, Slot::for_key(key));
            assert_eq!(Slot::for_key(&marker), slot, "{marker} is not in the slot of {key}");
        }
    }

    #[test]
    fn a_prefix_with_its_own_hash_tag_and_standalone_use_one_marker() {
        for markers in [Markers::new("{pg}:", true), Markers::new("pg:", false)] {
            assert!(markers.tags.is_empty());
            let (_, a) = markers.for_key("x");
            let (_, b) = markers.for_key("y");
            assert_eq!(a, b);
        }
        let (slot, marker) = Markers::new("{pg}:", true).for_key("{pg}:{n:k}");
        assert_eq!(slot, Slot::for_key("{pg}:{n:k}"));
        assert_eq!(Slot::for_key(marker), slot);
    }

    #[test]
    fn health_rounds_walk_through_every_used_slot() {
        let markers = Markers::new("pg:", true);
        for i in 0..300 {
            let (slot, _) = markers.for_key(&format!("pg:{{n:{i}}}"));
            markers.mark_used(slot);
        }
        let total = markers.used.read().len();
        let mut seen = HashSet::new();
        for _ in 0..total.div_ceil(HEALTH_SAMPLE) {
            let round = markers.health_round(HEALTH_SAMPLE);
            assert!(round.len() <= HEALTH_SAMPLE);
            seen.extend(round.into_iter().map(|(slot, _)| slot));
        }
        assert_eq!(seen.len(), total);
    }

    #[test]
    fn a_loss_is_reported_once_and_shown_while_its_notice_lasts() {
        let log = DataLossLog::new(Duration::from_secs(600), true);
        assert!(log.record(1_700_000_000_000, DataLossSource::Guard));
        assert!(
            !log.record(1_700_000_003_000, DataLossSource::HealthCheck),
            "another slot of the same loss"
        );
        let reports = log.take_unreported();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].detected_by, DataLossSource::Guard);
        assert!(log.take_unreported().is_empty());
        assert_eq!(log.current().map(|l| l.at.as_second()), Some(1_700_000_000));
        assert!(
            log.record(1_700_000_100_000, DataLossSource::Notification),
            "a later loss"
        );
        assert!(DataLossLog::new(Duration::ZERO, false).current().is_none());
    }
}
