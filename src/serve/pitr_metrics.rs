//! The point-in-time series of the reconciler's metrics, per cluster and storage: the
//! newest sliced optime, the lag behind it (worked out at scrape time), chunks, gaps, and
//! gaps no backup bridges yet.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tidemark_reconciler::plan::plan_slicing;
use tidemark_reconciler::run::desired_from_applied;
use tidemark_store::control::ObservedState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct StreamLabels {
    cluster: String,
    storage: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Default)]
pub struct PitrMetrics {
    newest: Family<StreamLabels, FloatGauge>,
    lag: Family<StreamLabels, FloatGauge>,
    chunks: Family<StreamLabels, Gauge>,
    gaps: Family<StreamLabels, Gauge>,
    open_gaps: Family<StreamLabels, Gauge>,
    /// The newest sliced second per stream, for the lag at scrape time.
    newest_at: std::sync::Mutex<BTreeMap<StreamLabels, i64>>,
}

impl PitrMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pitr_newest_sliced_timestamp_seconds",
            "The newest oplog entry every replica set of the cluster has sliced (Unix time)",
            self.newest.clone(),
        );
        registry.register(
            "pitr_lag_seconds",
            "Seconds from the newest sliced oplog entry to now",
            self.lag.clone(),
        );
        registry.register(
            "pitr_chunks",
            "Oplog chunks in the index",
            self.chunks.clone(),
        );
        registry.register(
            "pitr_gaps",
            "Gaps recorded: oplog lost before it was sliced",
            self.gaps.clone(),
        );
        registry.register(
            "pitr_open_gaps",
            "Gaps no good backup taken after them bridges yet",
            self.open_gaps.clone(),
        );
    }

    /// Rebuilds every series from what a pass observed: one per slicing schedule of the
    /// revision in force, over every replica set it declares (as `status` computes it), so a
    /// shard that never sliced holds the newest point back here too.
    pub fn record(
        &self,
        observed: &ObservedState,
        now: DateTime<Utc>,
        dead_after: chrono::Duration,
    ) {
        let mut newest_at = self.newest_at.lock().expect("not poisoned");
        newest_at.clear();
        for f in [&self.chunks, &self.gaps, &self.open_gaps] {
            f.clear();
        }
        self.newest.clear();
        let Some(desired) = observed.applied.as_ref().and_then(desired_from_applied) else {
            return;
        };
        for state in plan_slicing(&desired, observed, (now, dead_after), &mut Vec::new()) {
            let tl = state.timeline;
            let labels = StreamLabels {
                cluster: state.cluster,
                storage: state.storage,
            };
            self.chunks.get_or_create(&labels).set(tl.chunks() as i64);
            self.gaps.get_or_create(&labels).set(tl.gaps() as i64);
            self.open_gaps
                .get_or_create(&labels)
                .set(tl.open_gaps.len() as i64);
            if let Some(n) = tl.newest() {
                self.newest.get_or_create(&labels).set(f64::from(n.t));
                newest_at.insert(labels, i64::from(n.t));
            }
        }
    }

    /// Forgets everything (a follower exports none of it).
    pub fn clear(&self) {
        self.newest_at.lock().expect("not poisoned").clear();
        for f in [&self.chunks, &self.gaps, &self.open_gaps] {
            f.clear();
        }
        self.newest.clear();
        self.lag.clear();
    }

    /// Sets the lags as of `now`, before an encode.
    pub fn set_lags(&self, now: DateTime<Utc>) {
        self.lag.clear();
        for (labels, t) in self.newest_at.lock().expect("not poisoned").iter() {
            self.lag
                .get_or_create(labels)
                .set((now.timestamp() - t).max(0) as f64);
        }
    }
}
