//! One reconcile pass: load the desired state (the last good one stays in force), record
//! the applied and attempted revisions, observe the control plane, `plan`, start what the
//! plan says, and advance every one-shot that has not ended. Level-triggered: nothing it
//! needs is kept between passes but the desired state, which is rebuilt from the ledger
//! after a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tidemark_schema::control::{APPLIED_KEY, ATTEMPTED_KEY, AttemptedRevision};
use tidemark_schema::model::Kind;
use tidemark_schema::validate::{DesiredState, SourceFile, validate_files};
use tidemark_store::control::{ChunkCache, Leadership, ObservedState, observe_with};

use super::bookkeeping::{
    clear_drill_waits, clear_superseded_waits, drop_stale_records, sync_schedules,
};
use super::follow::OneShotStep;
use crate::backup::{self, BackupSettings};
use crate::execute::{ExecError, Executor, storage_target};
use crate::plan::{Action, PlanSettings, plan_with};
use crate::restore::{self, RestoreSettings};
use crate::source::{DesiredStateSource, Follower, PollOutcome};
use tidemark_schema::control::{OneShotKind, Retry, retry_key};

/// What one pass did, for logs and `--once`'s exit code.
#[derive(Debug, Default)]
pub struct PassReport {
    pub revision: Option<String>,
    /// Operations still running after the pass.
    pub running: Vec<String>,
    /// Operations that ended in this pass, with their status.
    pub finished: Vec<String>,
    /// One-shots waiting to start, with why.
    pub waiting: Vec<String>,
    /// What went wrong (the pass went on past each).
    pub errors: Vec<String>,
    /// Set when another reconciler leads: this pass changed nothing.
    pub following: Option<String>,
    /// What the pass saw at its end (when it led), for metrics.
    pub observed: Option<Arc<ObservedState>>,
    /// The next time a schedule or a drill comes due: the loop runs a pass then even when
    /// nothing else wakes it.
    pub next_due: Option<DateTime<Utc>>,
}

/// What the loop calls after every pass.
pub type PassHook = Box<dyn Fn(&PassReport) + Send + Sync>;

pub struct Reconciler<S> {
    pub follower: Follower<S>,
    pub ex: Executor,
    /// Which partitions of the fleet this process leads among reconcilers sharing the
    /// control plane; `None` acts without a lease (a caller that is the only writer by
    /// construction). Every write for a cluster goes through its partition's fence.
    pub leadership: Option<Arc<Leadership>>,
    /// How long an ended op keeps its working records before they are compacted into the
    /// ledger's archive.
    pub keep_ops: chrono::Duration,
    /// Called after every pass of the loop with its report (metrics).
    pub on_pass: Option<PassHook>,
    /// Backup verifications running beside the passes.
    pub verifier: backup::Verifier,
    /// The desired state rebuilt from the ledger, used while the source has no valid one.
    fallback: Option<(String, DesiredState)>,
    /// Per one-shot: the failures of its step in a row and when it is tried again
    /// (kube-rs's error policy; in memory, so a new leader tries once at once).
    backoff: BTreeMap<(OneShotKind, String), Retry>,
    /// When compaction last looked at the ops (it lists `ops/` and `logs/`: not on every
    /// pass of a reconciler following an op every few hundred milliseconds).
    last_compaction: Option<std::time::Instant>,
    /// The oplog-chunk records read so far (they never change once written).
    chunks: ChunkCache,
    /// The chunk-index summaries this process wrote, to rewrite only what changed.
    chunk_indexes: crate::pitr::Written,
    /// Whether the last pass led partition 0 (the ledger's revision records).
    led_fleet: bool,
    /// The partitions this pass leads, with their epochs, as it started.
    led_at_start: BTreeMap<u32, u64>,
}

/// Rebuilds the desired state recorded in `ledger/applied.json` (its canonical YAML).
pub fn desired_from_applied(
    applied: &tidemark_schema::control::AppliedRevision,
) -> Option<DesiredState> {
    let mut files: BTreeMap<&str, String> = BTreeMap::new();
    for d in &applied.documents {
        let text = files.entry(d.file.as_str()).or_default();
        text.push_str("---\n");
        text.push_str(&d.canonical_yaml);
        text.push('\n');
    }
    let files: Vec<SourceFile> = files
        .into_iter()
        .map(|(path, text)| SourceFile {
            path: path.to_string(),
            bytes: text.into_bytes(),
        })
        .collect();
    let v = validate_files(&files);
    v.is_valid().then_some(v.state)
}

/// The revision `ledger/applied.json` holds, if any.
fn applied_revision(observed: &ObservedState) -> Option<&str> {
    observed.applied.as_ref().map(|a| a.revision.as_str())
}

/// How often ended ops are compacted at most.
const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Writes and deletions this process made in the control plane so far.
fn writes() -> u64 {
    use tidemark_store::control::{RequestKind, control_requests};
    control_requests().get(RequestKind::Put) + control_requests().get(RequestKind::Delete)
}

impl<S: DesiredStateSource> Reconciler<S> {
    pub fn new(source: S, ex: Executor) -> Self {
        Reconciler {
            follower: Follower::new(source),
            ex,
            leadership: None,
            on_pass: None,
            verifier: backup::Verifier::default(),
            keep_ops: chrono::Duration::days(7),
            fallback: None,
            last_compaction: None,
            chunks: ChunkCache::default(),
            chunk_indexes: Default::default(),
            backoff: BTreeMap::new(),
            led_fleet: false,
            led_at_start: BTreeMap::new(),
        }
    }

    /// One pass. Errors of single steps are collected, never fatal to the pass.
    pub async fn pass(&mut self, now: DateTime<Utc>) -> Result<PassReport, ExecError> {
        let mut report = PassReport::default();
        // What this pass may act for: the partitions led, in their epochs, as it starts.
        // One gained meanwhile waits for the next pass (the loop runs it at once); one
        // lost, even if taken again, is not written for.
        self.led_at_start = self
            .leadership
            .as_ref()
            .map(|l| l.led_epochs())
            .unwrap_or_default();
        if let Some(leadership) = &self.leadership
            && self.led_at_start.is_empty()
        {
            // Leading nothing (or renewals stalled: another reconciler may lead by now):
            // nothing is started or deleted until a lease is held again.
            report.following = Some(leadership.followed());
            self.forget_desired();
            return Ok(report);
        }
        self.pass_leading(now, &mut report).await.map(|()| report)
    }

    /// The executor writing as the leader of `cluster`'s partition (partition 0 for what
    /// belongs to no cluster), if this process leads it now.
    fn ex_for(&self, cluster: Option<&str>) -> Option<Executor> {
        let Some(leadership) = &self.leadership else {
            return Some(self.ex.clone());
        };
        let partition = cluster.map_or(0, |c| leadership.partition_of(c));
        let epoch = *self.led_at_start.get(&partition)?;
        let control = leadership.fenced_in_epoch(&self.ex.control, partition, epoch)?;
        Some(Executor {
            control,
            ..self.ex.clone()
        })
    }

    /// Whether this process leads `cluster`'s partition now.
    fn leads(&self, cluster: Option<&str>) -> bool {
        self.ex_for(cluster).is_some()
    }

    /// Forgets every desired state this process held: while it does not lead, another
    /// process may apply newer revisions, and the next pass that leads must start from
    /// the source (or the ledger), not from what this one saw before.
    fn forget_desired(&mut self) {
        self.follower.forget_seen();
        self.fallback = None;
    }

    async fn pass_leading(
        &mut self,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) -> Result<(), ExecError> {
        // Whether this pass may plan: not when the revision it took up is not in the ledger.
        let mut plan = true;
        // The ledger's revision records belong to no cluster: partition 0's leader writes
        // them, and a process leading other partitions only plans with what it read.
        let fleet = self.ex_for(None);
        // Partition 0 just came to this process: the revision in force is taken up again,
        // so that it (or its refusal) is recorded by the ledger's new writer.
        if fleet.is_some() && !self.led_fleet {
            self.follower.forget_seen_revision();
        }
        self.led_fleet = fleet.is_some();
        let outcome = tokio::task::block_in_place(|| self.follower.poll());
        match outcome {
            PollOutcome::Unchanged => {}
            PollOutcome::Applied { .. } if fleet.is_none() => {}
            PollOutcome::Applied { revision } => {
                let recorded = self.record_applied(&revision, now).await;
                match recorded {
                    Ok(()) => tracing::info!(%revision, "applied"),
                    Err(e) => {
                        // Not in the ledger: the next pass takes the revision up again, and
                        // this one plans nothing, but still moves running operations on.
                        self.forget_desired();
                        report
                            .errors
                            .push(format!("recording revision {revision} in the ledger: {e}"));
                        plan = false;
                    }
                }
            }
            PollOutcome::Rejected { revision, errors } => {
                let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                tracing::error!(%revision, errors = errors.len(), "revision does not validate; the last good one stays in force");
                for e in &errors {
                    tracing::error!("{e}");
                }
                let recorded = match &fleet {
                    Some(fleet) => self.attempted(fleet, &revision, errors, now).await,
                    None => Ok(()),
                };
                if let Err(e) = recorded {
                    self.follower.forget_seen_revision();
                    report
                        .errors
                        .push(format!("recording the refusal of revision {revision}: {e}"));
                }
            }
            PollOutcome::SourceFailed(e) => {
                report
                    .errors
                    .push(format!("reading the desired state: {e}"));
            }
        }
        let mut observed = observe_with(&self.ex.control, &self.chunks).await?;
        report.errors.extend(observed.warnings.iter().cloned());
        // Partition 0's leader takes revisions up from the source and records them; the
        // leaders of other partitions act on the recorded one, so every leader plans with
        // one revision (and the schedule records partition 0 keeps for it).
        let ledger_only = fleet.is_none();
        let look_again = self.follow_ledger(ledger_only, &observed, report);
        let desired = match ledger_only {
            true => self.fallback.as_ref().map(|(r, s)| (r.as_str(), s)),
            false => self
                .follower
                .current()
                .or(self.fallback.as_ref().map(|(r, s)| (r.as_str(), s))),
        };
        report.revision = desired.map(|(r, _)| r.to_string());
        // Partition 0 came to this process after the revision was taken up elsewhere (or
        // its leader died before recording it): the ledger catches up.
        if let (Some(_), Some((revision, _))) = (&fleet, self.follower.current())
            && applied_revision(&observed) != Some(revision)
        {
            let revision = revision.to_string();
            if let Err(e) = self.record_applied(&revision, now).await {
                report
                    .errors
                    .push(format!("recording revision {revision} in the ledger: {e}"));
            }
        }
        // A new leader tells every cluster's agents where it listens (and that they should
        // look once); a ring whose record failed is written again.
        let (clusters, fresh) =
            crate::execute::clusters_to_ring(desired.map(|(_, s)| s), &observed, now);
        for cluster in &clusters {
            if let Some(ex) = self.ex_for(Some(cluster)) {
                let one = [cluster.clone()].into();
                let fresh = fresh.intersection(&one).cloned().collect();
                ex.ring_owed(&one, &fresh).await;
            }
        }
        // Counted from here: doorbell records are not what `observe` reads.
        let written_before = writes();
        if let Some((revision, desired)) = desired.filter(|_| plan) {
            // The executors of the clusters whose slicing this process may rewrite.
            let leading: BTreeMap<String, Executor> = observed
                .slicing
                .iter()
                .filter_map(|a| Some((a.cluster.clone(), self.ex_for(Some(&a.cluster))?)))
                .collect();
            if let Err(e) =
                crate::pitr::forget_foreign_assignments(&self.ex, &leading, &mut observed).await
            {
                report.errors.push(e.to_string());
            }
            // Before the sync drops the records of deleted drills: their waits go too.
            let had_drills = !observed.drills.is_empty();
            // A failure here (partition 0 handed over mid-pass, say) leaves the other
            // partitions' steps to run, without the records it could not bring up to date.
            let synced = match &fleet {
                Some(fleet) => match sync_schedules(fleet, desired, &mut observed, now).await {
                    Ok(()) => true,
                    Err(e) => {
                        report.errors.push(format!("recording schedules: {e}"));
                        false
                    }
                },
                None => false,
            };
            // Planned without them; what the pass reports (metrics) keeps what it read.
            let unsynced;
            let for_plan = match synced {
                true => &observed,
                false => {
                    let mut trimmed = observed.clone();
                    drop_stale_records(desired, &mut trimmed, now);
                    unsynced = trimmed;
                    &unsynced
                }
            };
            let settings = PlanSettings {
                dead_after: self.ex.dead_after,
            };
            let plan = plan_with(desired, for_plan, now, settings);
            report.next_due = plan
                .schedules
                .iter()
                .filter_map(|s| s.next_run)
                .chain(plan.drills.iter().filter_map(|d| d.next_run))
                .min();
            if let Some(fleet) = &fleet {
                if let Err(e) = clear_superseded_waits(fleet, &plan.schedules).await {
                    report.errors.push(e.to_string());
                }
                if let Err(e) = clear_drill_waits(fleet, &plan.drills, had_drills).await {
                    report.errors.push(e.to_string());
                }
            }
            for step in &plan.steps {
                // Only the steps of clusters whose partition this process leads.
                let cluster = super::scope::step_cluster(&step.action, desired, &observed);
                let Some(ex) = self.ex_for(cluster.as_deref()) else {
                    continue;
                };
                if let Err(e) = self
                    .start(&ex, (revision, desired), step, &observed, now, report)
                    .await
                {
                    report.errors.push(e.to_string());
                }
            }
        }
        if look_again {
            let soon = now + chrono::Duration::seconds(3);
            report.next_due = Some(report.next_due.map_or(soon, |due| due.min(soon)));
        }
        // Every one-shot that has not ended, whatever the desired state says now: deleting
        // or editing a Restore never stops or undoes one that started. Read again only if
        // this pass wrote something since: at rest the first reading is still the truth,
        // and a second costs a listing of every prefix.
        let observed = match writes() == written_before {
            true => observed,
            false => observe_with(&self.ex.control, &self.chunks).await?,
        };
        report.observed = Some(Arc::new(observed.clone()));
        if let Some(fleet) = &fleet
            && let Err(e) =
                crate::pitr::write_indexes(fleet, &observed.chunks, &mut self.chunk_indexes).await
        {
            report
                .errors
                .push(format!("writing the chunk-index summaries: {e}"));
        }
        let desired = desired.map(|(_, s)| s);
        for ((kind, name), record) in &observed.oneshots {
            // Only the one-shots of clusters whose partition this process leads; one whose
            // cluster cannot be told is left alone (its writes would carry another
            // partition's epoch).
            let cluster = record.cluster().or(record.setting("cluster"));
            if cluster.is_none() && self.leadership.as_ref().is_some_and(|l| l.partitions() > 1) {
                report.errors.push(format!(
                    "{kind} {name}: its ledger record names no cluster; not followed"
                ));
                continue;
            }
            let Some(ex) = self.ex_for(cluster) else {
                // Another reconciler follows it now, with its own backoff.
                self.backoff.remove(&(*kind, name.clone()));
                continue;
            };
            let step = OneShotStep {
                ex: &ex,
                kind: *kind,
                name,
                record,
                desired,
                now,
            };
            step.advance(&mut self.backoff, report).await;
        }
        // At most every ten minutes (or once per `keep_ops`, when that is shorter): each
        // round lists ops/, logs/ and the retry records, and ended ops wait days anyway.
        let every = self
            .keep_ops
            .to_std()
            .unwrap_or_default()
            .min(COMPACT_EVERY);
        let Some(fleet) =
            fleet.filter(|_| self.last_compaction.is_none_or(|t| t.elapsed() >= every))
        else {
            return Ok(());
        };
        self.last_compaction = Some(std::time::Instant::now());
        match crate::retention::compact_ops(&fleet, observed.oneshots.values(), self.keep_ops, now)
            .await
        {
            Ok(c) => report.errors.extend(c.errors),
            Err(e) => report.errors.push(format!("compacting ended ops: {e}")),
        }
        // Retry records nobody here is failing on: a leader changed, or another reconciler
        // ended the one-shot. With the compaction.
        if let Err(e) = self.sweep_retries(&fleet, &observed).await {
            report.errors.push(format!("sweeping retry records: {e}"));
        }
        Ok(())
    }

    /// Starts the verification of a completed backup beside the passes (once: a running
    /// one is not started again), with the storage it was written to as its ledger record
    /// holds it (the desired state may have moved on), else as declared now.
    fn verify(
        &self,
        ex: &Executor,
        desired: &DesiredState,
        observed: &ObservedState,
        backup: &str,
        level: tidemark_schema::model::VerifyLevel,
        report: &mut PassReport,
    ) {
        // Only settings this reconciler sealed: a storage someone wrote into the ledger
        // record would have the verification read (and judge) another bucket.
        let from_ledger = observed
            .oneshots
            .get(&(OneShotKind::Backup, backup.to_string()))
            .and_then(|r| {
                self.ex
                    .own_settings::<crate::backup::BackupSettings>(r)
                    .ok()
            })
            .map(|s| s.storage);
        let declared = observed
            .backups
            .iter()
            .find(|b| b.name == backup)
            .and_then(|b| desired.storage(&b.storage))
            .map(storage_target);
        match from_ledger.or(declared) {
            Some(target) => self.verifier.spawn(
                ex.control.clone(),
                target,
                ex.storage_env.clone(),
                backup.to_string(),
                level,
            ),
            None => report.errors.push(format!(
                "backup {backup}: cannot verify it: its storage is not declared"
            )),
        }
    }

    async fn sweep_retries(
        &self,
        fleet: &Executor,
        observed: &ObservedState,
    ) -> Result<(), ExecError> {
        for key in fleet.control.keys("ledger/retry/").await? {
            let failing = self.backoff.keys().any(|(kind, name)| {
                key == retry_key(kind.key(), name)
                    && observed
                        .oneshots
                        .get(&(*kind, name.clone()))
                        .is_some_and(|r| !r.is_final())
            });
            // A one-shot still running in a partition another reconciler leads shows that
            // one's backoff, not this one's.
            let elsewhere = observed.oneshots.values().any(|r| {
                key == retry_key(r.kind.key(), &r.name) && !r.is_final() && !self.leads(r.cluster())
            });
            if !failing && !elsewhere {
                fleet.control.delete(&key).await?;
            }
        }
        Ok(())
    }

    /// Keeps `fallback` at the ledger's applied revision where this pass plans with it:
    /// always when leading other partitions than 0, and for partition 0's leader while its
    /// source has no valid revision. Returns whether the source holds a revision the
    /// ledger does not yet, which partition 0's leader records in its next pass.
    fn follow_ledger(
        &mut self,
        ledger_only: bool,
        observed: &ObservedState,
        report: &mut PassReport,
    ) -> bool {
        let held = self.fallback.as_ref().map(|(r, _)| r.as_str());
        if held != applied_revision(observed)
            && (ledger_only || self.follower.current().is_none())
            && let Some(applied) = &observed.applied
        {
            let usable = self
                .ex
                .is_own(APPLIED_KEY, applied)
                .then(|| desired_from_applied(applied))
                .flatten();
            match usable {
                Some(state) => {
                    if !ledger_only {
                        tracing::warn!(revision = %applied.revision, "the source has no valid revision; keeping the ledger's applied revision in force");
                    }
                    self.fallback = Some((applied.revision.clone(), state));
                }
                None => report.errors.push(format!(
                    "the ledger's applied revision {} is not sealed by this reconciler's key or \
                     does not validate; planning with {}",
                    applied.revision,
                    held.unwrap_or("no revision")
                )),
            }
        }
        ledger_only
            && self
                .follower
                .current()
                .is_some_and(|(r, _)| applied_revision(observed) != Some(r))
    }

    /// Records `revision` as applied (with its documents) and as the last attempted.
    async fn record_applied(&self, revision: &str, now: DateTime<Utc>) -> Result<(), ExecError> {
        let Some(fleet) = self.ex_for(None) else {
            return Ok(());
        };
        let Some((_, state)) = self.follower.current() else {
            return Ok(());
        };
        let applied = tidemark_schema::control::AppliedRevision {
            epoch: fleet.control.epoch(),
            ..state.to_applied(revision, now)
        };
        let sealed = fleet.sealed(APPLIED_KEY, &applied);
        fleet.control.put(APPLIED_KEY, &sealed).await?;
        self.attempted(&fleet, revision, Vec::new(), now).await
    }

    async fn attempted(
        &self,
        ex: &Executor,
        revision: &str,
        errors: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<(), ExecError> {
        let record = AttemptedRevision {
            revision: revision.to_string(),
            attempted_at: now,
            errors,
            epoch: ex.control.epoch(),
        };
        Ok(ex.control.put(ATTEMPTED_KEY, &record).await?)
    }

    /// Carries out one plan step that starts something; the ops it writes say so
    /// (`cause`: the revision, the document, the step's reason).
    async fn start(
        &self,
        ex: &Executor,
        (revision, desired): (&str, &DesiredState),
        step: &crate::plan::Step,
        observed: &ObservedState,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) -> Result<(), ExecError> {
        let (action, reason) = (&step.action, step.reason.as_str());
        let heartbeats = &observed.heartbeats;
        let cause = |kind: &str, name: &str| {
            Some(tidemark_schema::control::OpCause {
                revision: Some(revision.to_string()),
                document: Some(format!("{kind}/{name}")),
                reason: reason.to_string(),
                command: None,
            })
        };
        let wait = match action {
            Action::RunBackup {
                backup: name,
                cluster,
                storage,
                backup_type,
                nodes,
                schedule,
                incremental,
            } => {
                let Some(spec) = desired.storage(storage) else {
                    return Ok(());
                };
                let settings = BackupSettings {
                    cluster: cluster.clone(),
                    storage_name: storage.clone(),
                    storage: storage_target(spec),
                    backup_type: *backup_type,
                    schedule: schedule.clone(),
                    verify: schedule
                        .as_deref()
                        .and_then(|s| desired.schedule(s))
                        .and_then(|s| s.verify),
                    hash_namespaces: schedule
                        .as_deref()
                        .map(|s| crate::plan::hash_namespaces(desired, s))
                        .unwrap_or_default(),
                    sharded: desired.cluster(cluster).is_some_and(|c| c.is_sharded()),
                    incremental: incremental.as_ref().map(|p| p.link.named(name, &p.why)),
                    cause: match schedule {
                        Some(s) => cause("BackupSchedule", s),
                        None => cause("Backup", name),
                    },
                };
                if let Some(p) = incremental {
                    tracing::info!(backup = %name, why = %p.why, "incremental backup");
                }
                backup::start(ex, name, settings, nodes, now)
                    .await?
                    .map(|w| (OneShotKind::Backup, name.clone(), w))
            }
            Action::StartRestore(p) => {
                let (Some(spec), Some(backup)) = (
                    desired.restore(&p.restore),
                    self.backup_storage(desired, &p.backup).await?,
                ) else {
                    return Ok(());
                };
                let settings = RestoreSettings {
                    cluster: p.cluster.clone(),
                    backup: p.backup.clone(),
                    fallback_enabled: spec.fallback_enabled,
                    allow_partly_done: spec.allow_partly_done,
                    external: spec.external,
                    start_nodes: spec.post_restore.as_ref().is_some_and(|r| r.start_nodes),
                    fresh_backup: spec
                        .post_restore
                        .as_ref()
                        .and_then(|r| r.fresh_backup.clone()),
                    point_in_time: p
                        .point_in_time
                        .as_ref()
                        .map(|p| restore::PointInTimeSettings::of(p)),
                    cause: cause("Restore", &p.restore),
                };
                restore::start(ex, p, settings, backup, heartbeats, now)
                    .await?
                    .map(|w| (OneShotKind::Restore, p.restore.clone(), w))
            }
            Action::StartSelectiveRestore(p) => {
                let (Some(spec), Some(storage)) = (
                    desired.restore(&p.restore),
                    self.backup_storage(desired, &p.backup).await?,
                ) else {
                    return Ok(());
                };
                let rename_to = spec.rename_to.clone().unwrap_or_default();
                let cause = cause("Restore", &p.restore).unwrap_or_default();
                crate::selective::start(ex, p, rename_to, storage, cause, now).await?;
                None
            }
            Action::DeleteBackup {
                backup, storage, ..
            } => {
                let Some(record) = observed.backups.iter().find(|b| &b.name == backup) else {
                    return Ok(());
                };
                let Some(spec) = desired.storage(storage) else {
                    return Err(ExecError::Invalid(format!(
                        "backup {backup:?} is due for deletion, but its storage {storage:?} is \
                         no longer declared; it is kept"
                    )));
                };
                crate::retention::delete_backup(ex, record, &storage_target(spec), reason, now)
                    .await?;
                report
                    .finished
                    .push(format!("deleted backup {backup}: {reason}"));
                None
            }
            Action::RunDrill {
                drill,
                run,
                cluster,
                backup,
                storage,
                agent,
                replica_sets,
            } => {
                let (Some(spec), Some(storage_spec)) =
                    (desired.drill(drill), desired.storage(storage))
                else {
                    return Ok(());
                };
                // Read afresh, as for a restore: a backup `forget-backup` marked after this
                // pass observed is not drilled (it would fail as missing); the run is
                // planned again next pass on the newest good backup then.
                if self.backup_storage(desired, backup).await?.is_none() {
                    return Ok(());
                }
                let settings = crate::drill::DrillSettings {
                    drill: drill.clone(),
                    schedule: spec.schedule.clone(),
                    cluster: cluster.clone(),
                    backup: backup.clone(),
                    agent: agent.clone(),
                    storage: storage_target(storage_spec),
                    replica_sets: replica_sets.clone(),
                    checks: spec.checks.clone(),
                    cause: cause("RestoreDrill", drill),
                };
                crate::drill::start(ex, run, settings, now).await?;
                None
            }
            Action::VerifyBackup { backup, level, .. } => {
                self.verify(ex, desired, observed, backup, *level, report);
                None
            }
            Action::SetSlicing { assignment, .. } => {
                crate::pitr::set_slicing(ex, assignment).await?;
                None
            }
            Action::DeleteChunks {
                storage,
                records,
                after_deleting,
                ..
            } => {
                let Some(spec) = desired.storage(storage) else {
                    return Ok(());
                };
                let target = storage_target(spec);
                let n = crate::pitr::delete_chunks(ex, &target, records, after_deleting, reason)
                    .await?;
                report
                    .finished
                    .push(format!("deleted {n} oplog chunk(s): {reason}"));
                None
            }
            Action::Blocked { kind, name } => Kind::parse(kind)
                .and_then(OneShotKind::of)
                .map(|kind| (kind, name.clone(), reason.to_string())),
            _ => None,
        };
        if let Some((kind, name, why)) = wait {
            // What a point-in-time restore waits to reach: its waiting starts again when
            // its target is changed.
            let target = (kind == OneShotKind::Restore)
                .then(|| {
                    desired
                        .restore(&name)?
                        .source
                        .point_in_time
                        .as_ref()?
                        .target()
                        .ok()
                })
                .flatten();
            ex.waiting(kind, &name, &why, target, now).await?;
            report.waiting.push(format!("{kind} {name}: {why}"));
        }
        Ok(())
    }

    /// The storage a backup of the catalog lives in, as agents need it.
    async fn backup_storage(
        &self,
        desired: &DesiredState,
        backup: &str,
    ) -> Result<Option<tidemark_schema::control::StorageTarget>, ExecError> {
        let record: Option<tidemark_schema::control::BackupRecord> = self
            .ex
            .control
            .get(&tidemark_schema::control::catalog_key(backup))
            .await?;
        // A backup being deleted (forget-backup marked it after this pass observed) is
        // never restored: the restore is planned again next pass and shows why it waits.
        Ok(record
            .filter(|r| r.deleting.is_none())
            .and_then(|r| desired.storage(&r.storage).map(storage_target)))
    }
}
