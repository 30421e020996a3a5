//! One reconcile pass: load the desired state (the last good one stays in force), record
//! the applied and attempted revisions, observe the control plane, `plan`, start what the
//! plan says, and advance every one-shot that has not ended. Level-triggered: nothing it
//! needs is kept between passes but the desired state, which is rebuilt from the ledger
//! after a restart.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tidemark_schema::control::schedule_key;
use tidemark_schema::control::{APPLIED_KEY, ATTEMPTED_KEY, AttemptedRevision};
use tidemark_schema::model::Kind;
use tidemark_schema::validate::{DesiredState, SourceFile, validate_files};
use tidemark_store::control::{ChunkCache, LeaseClock, ObservedState, Standing, observe_with};

use super::backoff;
use crate::backup::{self, BackupSettings};
use crate::execute::{ExecError, Executor, Progress, storage_target};
use crate::plan::{Action, PlanSettings, plan_with, wanted_record};
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
    /// Where this process stands among reconcilers sharing the control plane; `None`
    /// acts without a lease (a caller that is the only writer by construction).
    pub standing: Option<Arc<Mutex<Option<Standing>>>>,
    /// Until when the lease lets this process write (see `Lease::valid_until`); with
    /// `standing`, every write of a pass is refused past it.
    pub lease_until: Option<LeaseClock>,
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
}

/// Shows a one-shot's backoff in `ledger/retry/<kind>/<name>.json` for `describe-*` and
/// `status`, or removes it. Its own key, written only by the leader's loop: rewriting the
/// ledger record instead could race another reconciler finishing it and make an ended
/// one-shot run again. Best effort: the backoff itself is kept in memory.
async fn show_retry(
    ex: &Executor,
    kind: OneShotKind,
    name: &str,
    retry: Option<&Retry>,
) -> Result<(), ExecError> {
    let key = retry_key(kind.key(), name);
    match retry {
        Some(r) => ex.control.put(&key, r).await?,
        None => ex.control.delete(&key).await?,
    }
    Ok(())
}

/// Brings every declared schedule's and drill's ledger record up to date (see
/// `wanted_record`), and removes the records of those no longer declared, so that one
/// declared again later owes nothing from before.
async fn sync_schedules(
    ex: &Executor,
    desired: &DesiredState,
    observed: &mut ObservedState,
    now: DateTime<Utc>,
) -> Result<(), ExecError> {
    for (name, spec) in desired.schedules() {
        if let Some(mut record) = wanted_record(name, spec, observed.schedules.get(name), now) {
            record.epoch = ex.control.epoch();
            ex.control.put(&schedule_key(name), &record).await?;
            tracing::info!(schedule = name, since = %record.since, "schedule recorded");
            observed.schedules.insert(name.to_string(), record);
        }
    }
    for (name, spec) in desired.drills() {
        if let Some(mut record) =
            crate::plan::wanted_drill_record(name, spec, observed.drills.get(name), now)
        {
            record.epoch = ex.control.epoch();
            ex.control
                .put(&tidemark_schema::control::drill_key(name), &record)
                .await?;
            tracing::info!(drill = name, since = %record.since, "drill recorded");
            observed.drills.insert(name.to_string(), record);
        }
    }
    let gone: Vec<String> = observed
        .drills
        .keys()
        .filter(|n| desired.drill(n).is_none())
        .cloned()
        .collect();
    for name in gone {
        ex.control
            .delete(&tidemark_schema::control::drill_key(&name))
            .await?;
        observed.drills.remove(&name);
    }
    let gone: Vec<String> = observed
        .schedules
        .keys()
        .filter(|n| desired.schedule(n).is_none())
        .cloned()
        .collect();
    for name in gone {
        ex.control.delete(&schedule_key(&name)).await?;
        observed.schedules.remove(&name);
    }
    Ok(())
}

/// A slot that waited (its cluster busy) and was then overtaken by a newer slot is missed,
/// not waiting: its waiting record goes, so `status` and `describe-backup` stop showing it.
async fn clear_superseded_waits(
    ex: &Executor,
    schedules: &[crate::plan::ScheduleState],
) -> Result<(), ExecError> {
    if schedules.is_empty() {
        return Ok(()); // no listing on every pass of a control plane without schedules
    }
    let waiting = ex.control.keys("ledger/waiting/backup").await?;
    for s in schedules {
        let prefix = format!("ledger/waiting/backup/{}-", s.schedule);
        for key in &waiting {
            let Some(stamp) = key
                .strip_prefix(&prefix)
                .and_then(|k| k.strip_suffix(".json"))
            else {
                continue;
            };
            // Only this schedule's slot names (another schedule may share the prefix).
            let is_slot = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").is_ok();
            let current = s
                .due_backup
                .as_deref()
                .is_some_and(|due| key.ends_with(&format!("/{due}.json")));
            if is_slot && !current {
                ex.control.delete(key).await?;
            }
        }
    }
    Ok(())
}

/// A drill run's waiting record stays only while that run is its drill's due one: a run
/// overtaken by the next slot, and every run of a drill suspended or deleted, is not
/// waiting any more.
async fn clear_drill_waits(
    ex: &Executor,
    drills: &[crate::plan::DrillState],
    had_drills: bool,
) -> Result<(), ExecError> {
    if drills.is_empty() && !had_drills {
        return Ok(()); // no listing on every pass of a control plane without drills
    }
    let prefix = format!("ledger/waiting/{}/", crate::plan::DRILL_KIND.key());
    for key in ex.control.keys(prefix.trim_end_matches('/')).await? {
        let Some(run) = key
            .strip_prefix(&prefix)
            .and_then(|k| k.strip_suffix(".json"))
        else {
            continue;
        };
        if !drills.iter().any(|d| d.due_run.as_deref() == Some(run)) {
            ex.control.delete(&key).await?;
        }
    }
    Ok(())
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
            standing: None,
            lease_until: None,
            on_pass: None,
            verifier: backup::Verifier::default(),
            keep_ops: chrono::Duration::days(7),
            fallback: None,
            last_compaction: None,
            chunks: ChunkCache::default(),
            chunk_indexes: Default::default(),
            backoff: BTreeMap::new(),
        }
    }

    /// One pass. Errors of single steps are collected, never fatal to the pass.
    pub async fn pass(&mut self, now: DateTime<Utc>) -> Result<PassReport, ExecError> {
        let mut report = PassReport::default();
        let unfenced = self.ex.clone();
        if let Some(standing) = self.standing.clone() {
            let now_standing = standing.lock().expect("not poisoned").clone();
            match now_standing {
                Some(Standing::Leader { .. })
                    if self.lease_until.as_ref().is_some_and(|u| {
                        u.lock()
                            .expect("not poisoned")
                            .is_none_or(|t| std::time::Instant::now() >= t)
                    }) =>
                {
                    // Renewals stalled: another reconciler may lead by now. Nothing is
                    // started or deleted until a renewal succeeds again.
                    report.following =
                        Some("this reconciler's lease was not renewed in time".into());
                    self.forget_desired();
                    return Ok(report);
                }
                Some(Standing::Leader { epoch }) => {
                    self.ex.control = match &self.lease_until {
                        Some(until) => self.ex.control.fenced_until(epoch, until.clone()),
                        None => self.ex.control.fenced(epoch),
                    };
                }
                Some(Standing::Follower { epoch, holder }) => {
                    report.following = Some(format!("{holder} leads (epoch {epoch})"));
                    self.forget_desired();
                    return Ok(report);
                }
                None => {
                    report.following = Some("the lease has not been read yet".into());
                    self.forget_desired();
                    return Ok(report);
                }
            }
        }
        let result = self.pass_leading(now, &mut report).await;
        self.ex = unfenced;
        result.map(|()| report)
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
        let outcome = tokio::task::block_in_place(|| self.follower.poll());
        match outcome {
            PollOutcome::Unchanged => {}
            PollOutcome::Applied { revision } => {
                let (_, state) = self.follower.current().expect("just applied");
                let applied = tidemark_schema::control::AppliedRevision {
                    epoch: self.ex.control.epoch(),
                    ..state.to_applied(&revision, now)
                };
                let sealed = self.ex.sealed(APPLIED_KEY, &applied);
                let recorded = match self.ex.control.put(APPLIED_KEY, &sealed).await {
                    Ok(()) => self.attempted(&revision, Vec::new(), now).await,
                    Err(e) => Err(e.into()),
                };
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
                if let Err(e) = self.attempted(&revision, errors, now).await {
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
        if self.follower.current().is_none()
            && self.fallback.is_none()
            && let Some(applied) = &observed.applied
            && self.ex.is_own(APPLIED_KEY, applied)
            && let Some(state) = desired_from_applied(applied)
        {
            tracing::warn!(revision = %applied.revision, "the source has no valid revision; keeping the ledger's applied revision in force");
            self.fallback = Some((applied.revision.clone(), state));
        }
        let desired = self
            .follower
            .current()
            .or(self.fallback.as_ref().map(|(r, s)| (r.as_str(), s)));
        report.revision = desired.map(|(r, _)| r.to_string());
        // A new leader tells every cluster's agents where it listens (and that they should
        // look once); a ring whose record failed is written again.
        let (clusters, fresh) =
            crate::execute::clusters_to_ring(desired.map(|(_, s)| s), &observed, now);
        self.ex.ring_owed(&clusters, &fresh).await;
        // Counted from here: doorbell records are not what `observe` reads.
        let written_before = writes();
        if let Some((revision, desired)) = desired.filter(|_| plan) {
            if let Err(e) = crate::pitr::forget_foreign_assignments(&self.ex, &mut observed).await {
                report.errors.push(e.to_string());
            }
            // Before the sync drops the records of deleted drills: their waits go too.
            let had_drills = !observed.drills.is_empty();
            sync_schedules(&self.ex, desired, &mut observed, now).await?;
            let settings = PlanSettings {
                dead_after: self.ex.dead_after,
            };
            let plan = plan_with(desired, &observed, now, settings);
            report.next_due = plan
                .schedules
                .iter()
                .filter_map(|s| s.next_run)
                .chain(plan.drills.iter().filter_map(|d| d.next_run))
                .min();
            if let Err(e) = clear_superseded_waits(&self.ex, &plan.schedules).await {
                report.errors.push(e.to_string());
            }
            if let Err(e) = clear_drill_waits(&self.ex, &plan.drills, had_drills).await {
                report.errors.push(e.to_string());
            }
            for step in &plan.steps {
                if let Err(e) = self
                    .start(
                        (revision, desired),
                        &step.action,
                        &step.reason,
                        &observed,
                        now,
                        report,
                    )
                    .await
                {
                    report.errors.push(e.to_string());
                }
            }
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
        if let Err(e) =
            crate::pitr::write_indexes(&self.ex, &observed.chunks, &mut self.chunk_indexes).await
        {
            report
                .errors
                .push(format!("writing the chunk-index summaries: {e}"));
        }
        let desired = desired.map(|(_, s)| s);
        for ((kind, name), record) in &observed.oneshots {
            let key = (*kind, name.clone());
            if record.is_final() {
                // Ended (here or by another reconciler) while its step was failing.
                if self.backoff.contains_key(&key) {
                    match show_retry(&self.ex, *kind, name, None).await {
                        Ok(()) => drop(self.backoff.remove(&key)),
                        Err(e) => report.errors.push(format!("{kind} {name}: {e}")),
                    }
                }
                continue;
            }
            if let Some(retry) = self
                .backoff
                .get(&key)
                .filter(|r| !backoff::due(Some(r), now))
            {
                report.running.push(format!(
                    "{kind} {name} (failed {} time(s); next try at {})",
                    retry.failures,
                    retry.next_at.to_rfc3339()
                ));
                continue;
            }
            let progress = match kind {
                OneShotKind::Restore if crate::selective::is_selective(record) => {
                    crate::selective::advance(&self.ex, record, now).await
                }
                OneShotKind::Restore => restore::advance(&self.ex, record, desired, now).await,
                OneShotKind::Backup => backup::advance(&self.ex, record, now).await,
                OneShotKind::RestoreDrill => crate::drill::advance(&self.ex, record, now).await,
            };
            let outcome = match &progress {
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            };
            match progress {
                Ok(Progress::Running) => report.running.push(format!("{kind} {name}")),
                Ok(Progress::Finished(s)) => report.finished.push(format!("{kind} {name}: {s}")),
                Err(e) => {
                    report.running.push(format!("{kind} {name}"));
                    report.errors.push(format!("{kind} {name}: {e}"));
                }
            }
            let shown = match outcome {
                Some(e) => {
                    let retry = backoff::failed(self.backoff.get(&key), e, now);
                    tracing::warn!(%kind, %name, failures = retry.failures, next = %retry.next_at, error = %retry.error, "one-shot step failed; backing off");
                    let shown = show_retry(&self.ex, *kind, name, Some(&retry)).await;
                    self.backoff.insert(key, retry);
                    shown
                }
                None if self.backoff.contains_key(&key) => {
                    let shown = show_retry(&self.ex, *kind, name, None).await;
                    if shown.is_ok() {
                        self.backoff.remove(&key);
                    }
                    shown
                }
                None => Ok(()),
            };
            if let Err(e) = shown {
                report.errors.push(format!("{kind} {name}: {e}"));
            }
        }
        // At most every ten minutes (or once per `keep_ops`, when that is shorter): each
        // round lists ops/, logs/ and the retry records, and ended ops wait days anyway.
        let every = self
            .keep_ops
            .to_std()
            .unwrap_or_default()
            .min(COMPACT_EVERY);
        if self.last_compaction.is_some_and(|t| t.elapsed() < every) {
            return Ok(());
        }
        self.last_compaction = Some(std::time::Instant::now());
        match crate::retention::compact_ops(
            &self.ex,
            observed.oneshots.values(),
            self.keep_ops,
            now,
        )
        .await
        {
            Ok(c) => report.errors.extend(c.errors),
            Err(e) => report.errors.push(format!("compacting ended ops: {e}")),
        }
        // Retry records nobody here is failing on: a leader changed, or another reconciler
        // ended the one-shot. With the compaction.
        if let Err(e) = self.sweep_retries(&observed).await {
            report.errors.push(format!("sweeping retry records: {e}"));
        }
        Ok(())
    }

    /// Starts the verification of a completed backup beside the passes (once: a running
    /// one is not started again), with the storage it was written to as its ledger record
    /// holds it (the desired state may have moved on), else as declared now.
    fn verify(
        &self,
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
                self.ex.control.clone(),
                target,
                self.ex.storage_env.clone(),
                backup.to_string(),
                level,
            ),
            None => report.errors.push(format!(
                "backup {backup}: cannot verify it: its storage is not declared"
            )),
        }
    }

    async fn sweep_retries(&self, observed: &ObservedState) -> Result<(), ExecError> {
        for key in self.ex.control.keys("ledger/retry/").await? {
            let failing = self.backoff.keys().any(|(kind, name)| {
                key == retry_key(kind.key(), name)
                    && observed
                        .oneshots
                        .get(&(*kind, name.clone()))
                        .is_some_and(|r| !r.is_final())
            });
            if !failing {
                self.ex.control.delete(&key).await?;
            }
        }
        Ok(())
    }

    async fn attempted(
        &self,
        revision: &str,
        errors: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<(), ExecError> {
        let record = AttemptedRevision {
            revision: revision.to_string(),
            attempted_at: now,
            errors,
            epoch: self.ex.control.epoch(),
        };
        Ok(self.ex.control.put(ATTEMPTED_KEY, &record).await?)
    }

    /// Carries out one plan step that starts something; the ops it writes say so
    /// (`cause`: the revision, the document, the step's reason).
    async fn start(
        &self,
        (revision, desired): (&str, &DesiredState),
        action: &Action,
        reason: &str,
        observed: &ObservedState,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) -> Result<(), ExecError> {
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
                backup::start(&self.ex, name, settings, nodes, now)
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
                restore::start(&self.ex, p, settings, backup, heartbeats, now)
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
                crate::selective::start(&self.ex, p, rename_to, storage, cause, now).await?;
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
                crate::retention::delete_backup(
                    &self.ex,
                    record,
                    &storage_target(spec),
                    reason,
                    now,
                )
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
                crate::drill::start(&self.ex, run, settings, now).await?;
                None
            }
            Action::VerifyBackup { backup, level, .. } => {
                self.verify(desired, observed, backup, *level, report);
                None
            }
            Action::SetSlicing { assignment, .. } => {
                crate::pitr::set_slicing(&self.ex, assignment).await?;
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
                let n =
                    crate::pitr::delete_chunks(&self.ex, &target, records, after_deleting, reason)
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
            self.ex.waiting(kind, &name, &why, target, now).await?;
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
