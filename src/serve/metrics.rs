//! The reconciler's metrics, in the Prometheus exposition format (the `prometheus-client`
//! crate, kept by the Prometheus project): per schedule the age and size of the newest
//! good backup, per operation kind the outcomes and durations, agents alive, the applied
//! revision, passes and their errors, whether this process leads, and per restore drill
//! its last run: passed or not, when, and the RTO and RPO it measured; per cluster and
//! storage the oplog slicing's newest optime, lag, chunks and gaps.
//!
//! Everything is recorded from the pass reports; ages are worked out at scrape time, so
//! they grow between passes as they should.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tidemark_reconciler::run::PassReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct ScheduleLabels {
    schedule: String,
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct DrillLabels {
    drill: String,
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    kind: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    cluster: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    revision: String,
    reason: String,
}

fn duration_histogram() -> Histogram {
    // 1 s to about 9 h: a one-node backup of a few MiB to a large restore.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// What scrape-time ages are worked out from, and which ended operations were counted.
#[derive(Default)]
struct Seen {
    last_good: BTreeMap<ScheduleLabels, DateTime<Utc>>,
    /// One-shots already counted (or ended before this process first looked).
    ended: BTreeSet<(String, String)>,
    first_pass_done: bool,
    /// The agents' heartbeats as the last pass read them, judged alive or dead as of that
    /// pass against `dead_after`.
    heartbeats: Vec<tidemark_schema::control::Heartbeat>,
    dead_after: chrono::Duration,
    /// When the pass that read `heartbeats` ran.
    judged_at: DateTime<Utc>,
}

pub struct Metrics {
    registry: Registry,
    age: Family<ScheduleLabels, FloatGauge>,
    last_good_time: Family<ScheduleLabels, FloatGauge>,
    last_good_bytes: Family<ScheduleLabels, Gauge>,
    outcomes: Family<OutcomeLabels, Counter>,
    durations: Family<KindLabels, Histogram, fn() -> Histogram>,
    agents: Family<AgentLabels, Gauge>,
    applied: Family<RevisionLabels, Gauge>,
    refused: Family<RefusedLabels, Gauge>,
    passes: Counter,
    pass_errors: Counter,
    leader: Gauge,
    drill_passed: Family<DrillLabels, Gauge>,
    drill_time: Family<DrillLabels, FloatGauge>,
    drill_rto: Family<DrillLabels, FloatGauge>,
    drill_rpo: Family<DrillLabels, FloatGauge>,
    pitr: super::pitr_metrics::PitrMetrics,
    control: super::control_metrics::ControlRequestMetrics,
    seen: Mutex<Seen>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tidemark");
        let m = Metrics {
            age: Family::default(),
            last_good_time: Family::default(),
            last_good_bytes: Family::default(),
            outcomes: Family::default(),
            durations: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            agents: Family::default(),
            applied: Family::default(),
            refused: Family::default(),
            passes: Counter::default(),
            pass_errors: Counter::default(),
            leader: Gauge::default(),
            drill_passed: Family::default(),
            drill_time: Family::default(),
            drill_rto: Family::default(),
            drill_rpo: Family::default(),
            pitr: Default::default(),
            control: Default::default(),
            seen: Mutex::new(Seen::default()),
            registry: Registry::default(),
        };
        registry.register(
            "schedule_last_good_backup_age_seconds",
            "Seconds since the newest good backup of the schedule finished",
            m.age.clone(),
        );
        registry.register(
            "schedule_last_good_backup_timestamp_seconds",
            "When the newest good backup of the schedule finished (Unix time)",
            m.last_good_time.clone(),
        );
        registry.register(
            "schedule_last_good_backup_bytes",
            "Bytes stored by the newest good backup of the schedule",
            m.last_good_bytes.clone(),
        );
        registry.register(
            "operations",
            "Backups and restores that ended while this reconciler ran, by outcome",
            m.outcomes.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            "How long the backups and restores that ended while this reconciler ran took",
            m.durations.clone(),
        );
        registry.register(
            "agents",
            "Agents by cluster, alive or dead (heartbeat older than --dead-after)",
            m.agents.clone(),
        );
        registry.register(
            "applied_revision_info",
            "The desired-state revision in force (the value is always 1)",
            m.applied.clone(),
        );
        registry.register(
            "refused_revision_info",
            "The newest revision refused (it does not validate, or its commit is not signed by an allowed signer) while an older one stays in force, with the first reason (the value is always 1)",
            m.refused.clone(),
        );
        registry.register("passes", "Reconcile passes run", m.passes.clone());
        registry.register(
            "pass_errors",
            "Errors met by reconcile passes (a pass goes on past each)",
            m.pass_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this reconciler holds the lease and acts",
            m.leader.clone(),
        );
        registry.register(
            "drill_last_run_passed",
            "1 when the restore drill's last run restored its backup and passed every check",
            m.drill_passed.clone(),
        );
        registry.register(
            "drill_last_run_timestamp_seconds",
            "When the restore drill's last run ended (Unix time)",
            m.drill_time.clone(),
        );
        registry.register(
            "drill_rto_seconds",
            "Restore time the drill's last run measured: start to a restored, answering mongod",
            m.drill_rto.clone(),
        );
        registry.register(
            "drill_rpo_seconds",
            "How old the data restored by the drill's last run was when it started",
            m.drill_rpo.clone(),
        );
        m.pitr.register(&mut registry);
        m.control.register(&mut registry);
        Metrics { registry, ..m }
    }

    /// Takes in one pass: its outcome and, when it led, what it observed.
    pub fn record_pass(
        &self,
        report: &PassReport,
        dead_after: chrono::Duration,
        now: DateTime<Utc>,
    ) {
        self.passes.inc();
        self.pass_errors.inc_by(report.errors.len() as u64);
        self.leader.set(i64::from(report.following.is_none()));
        // One lock over clear-and-rebuild, shared with `encode`: a scrape never sees a
        // family half rebuilt.
        let mut seen = self.seen.lock().expect("not poisoned");
        let Some(observed) = &report.observed else {
            if report.following.is_some() {
                // A follower does not observe: what it knew as leader goes stale, and a
                // stale backup age would page someone. The leader exports these.
                seen.last_good.clear();
                self.last_good_bytes.clear();
                self.last_good_time.clear();
                seen.heartbeats.clear();
                self.applied.clear();
                self.refused.clear();
                self.drill_passed.clear();
                self.drill_time.clear();
                self.drill_rto.clear();
                self.drill_rpo.clear();
                self.pitr.clear();
            }
            return;
        };
        if let Some(revision) = &report.revision {
            self.applied.clear();
            self.applied
                .get_or_create(&RevisionLabels {
                    revision: revision.clone(),
                })
                .set(1);
        }
        // The ledger's last attempt, while it is not the revision in force.
        self.refused.clear();
        if let Some(attempted) = &observed.attempted
            && report.revision.as_ref() != Some(&attempted.revision)
            && let Some(first) = attempted.errors.first()
        {
            self.refused
                .get_or_create(&RefusedLabels {
                    revision: attempted.revision.clone(),
                    reason: first.chars().take(200).collect(),
                })
                .set(1);
        }
        // Drill agents serve no node: counting them would hide a dead node behind an
        // "alive < N" alert. Their health shows in the drills' own series. Judged as of
        // the pass that read them (at rest, `--resync-interval` apart): judged at scrape
        // time, beats not read since would make live agents look dead.
        seen.judged_at = now;
        seen.heartbeats = observed
            .heartbeats
            .iter()
            .filter(|h| h.replica_set != tidemark_schema::control::DRILL_REPLICA_SET)
            .cloned()
            .collect();
        seen.dead_after = dead_after;
        seen.last_good.clear();
        self.last_good_bytes.clear();
        self.last_good_time.clear();
        for b in observed.backups.iter().filter(|b| b.is_good()) {
            let Some(schedule) = &b.schedule else {
                continue;
            };
            let at = b.finished_at.unwrap_or(b.started_at);
            let labels = ScheduleLabels {
                schedule: schedule.clone(),
                cluster: b.cluster.clone(),
            };
            if seen.last_good.get(&labels).is_some_and(|t| *t >= at) {
                continue;
            }
            self.last_good_bytes
                .get_or_create(&labels)
                .set(b.stored_bytes() as i64);
            self.last_good_time
                .get_or_create(&labels)
                .set(at.timestamp_millis() as f64 / 1000.0);
            seen.last_good.insert(labels, at);
        }
        self.record_drills(observed);
        self.pitr.record(observed, now, dead_after);
        // Operations that ended since the last pass; those that had ended before this
        // process first looked are history, not events (a restart must not replay them).
        let first = !seen.first_pass_done;
        for ((kind, name), r) in &observed.oneshots {
            if !r.is_final() || !seen.ended.insert((kind.key().to_string(), name.clone())) || first
            {
                continue;
            }
            let status = serde_json::to_value(r.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            self.outcomes
                .get_or_create(&OutcomeLabels {
                    kind: kind.key().to_string(),
                    status,
                })
                .inc();
            if let Some(end) = r.finished_at {
                let secs = (end - r.started_at).num_milliseconds() as f64 / 1000.0;
                self.durations
                    .get_or_create(&KindLabels {
                        kind: kind.key().to_string(),
                    })
                    .observe(secs.max(0.0));
            }
        }
        seen.first_pass_done = true;
    }

    /// Each drill's newest ended run.
    fn record_drills(&self, observed: &tidemark_store::control::ObservedState) {
        let mut newest: BTreeMap<DrillLabels, &tidemark_schema::control::OneShotRecord> =
            BTreeMap::new();
        for ((kind, _), r) in &observed.oneshots {
            if *kind != tidemark_reconciler::plan::DRILL_KIND || !r.is_final() {
                continue;
            }
            let (Some(drill), Some(cluster)) = (r.setting("drill"), r.setting("cluster")) else {
                continue;
            };
            let labels = DrillLabels {
                drill: drill.to_string(),
                cluster: cluster.to_string(),
            };
            if newest
                .get(&labels)
                .is_none_or(|n| n.started_at < r.started_at)
            {
                newest.insert(labels, r);
            }
        }
        self.drill_passed.clear();
        self.drill_time.clear();
        self.drill_rto.clear();
        self.drill_rpo.clear();
        for (labels, r) in newest {
            let passed = r.status == tidemark_schema::control::RunStatus::Done;
            self.drill_passed
                .get_or_create(&labels)
                .set(i64::from(passed));
            let end = r.finished_at.unwrap_or(r.started_at);
            self.drill_time
                .get_or_create(&labels)
                .set(end.timestamp_millis() as f64 / 1000.0);
            if let Some(o) = &r.drill {
                self.drill_rto.get_or_create(&labels).set(o.rto_seconds);
                self.drill_rpo.get_or_create(&labels).set(o.rpo_seconds);
            }
        }
    }

    /// The exposition text, with ages as of `now`.
    pub fn encode(&self, now: DateTime<Utc>) -> String {
        // Held while encoding: a pass rebuilding the families waits for it.
        let seen = self.seen.lock().expect("not poisoned");
        self.age.clear();
        for (labels, at) in &seen.last_good {
            let age = (now - *at).num_milliseconds() as f64 / 1000.0;
            self.age.get_or_create(labels).set(age.max(0.0));
        }
        self.pitr.set_lags(now);
        self.agents.clear();
        for hb in &seen.heartbeats {
            // Both series for every cluster, so "alive < 3" sees a 0 rather than nothing.
            for state in ["alive", "dead"] {
                let _ = self.agents.get_or_create(&AgentLabels {
                    cluster: hb.cluster.clone(),
                    state: state.into(),
                });
            }
            let state = match hb.is_lost(seen.judged_at, seen.dead_after) {
                true => "dead",
                false => "alive",
            };
            self.agents
                .get_or_create(&AgentLabels {
                    cluster: hb.cluster.clone(),
                    state: state.into(),
                })
                .inc();
        }
        self.control.sync();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
