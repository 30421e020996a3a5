//! `plan(desired, observed, now)`: the pure heart of tidemark. No I/O, no clock: the same
//! inputs always give the same plan, which is what the golden-file tests pin down.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tidemark_schema::control::AppliedRevision;
use tidemark_schema::control::OneShotKind;
use tidemark_schema::model::{
    BackupScheduleSpec, BackupType, Kind, Resource, scheduled_backup_name,
};
use tidemark_schema::validate::{DesiredState, resource_from_canonical};

use super::model::{Action, Plan, Step};
use super::nodes::{HEARTBEAT_DEAD_AFTER_SECONDS, choose_node};
use super::restore::{plan_restore, restore_base};
use super::retention;
use super::schedule::{ScheduleState, observed_schedule_state};
use crate::control::ObservedState;

/// The reconciler's settings that planning depends on.
#[derive(Clone, Copy, Debug)]
pub struct PlanSettings {
    /// An agent whose heartbeat is older is dead (`--dead-after`; PBM: 240 s).
    pub dead_after: chrono::Duration,
}

impl Default for PlanSettings {
    fn default() -> Self {
        PlanSettings {
            dead_after: chrono::Duration::seconds(HEARTBEAT_DEAD_AFTER_SECONDS),
        }
    }
}

/// The plan with the default settings (what `diff` previews).
pub fn plan(desired: &DesiredState, observed: &ObservedState, now: DateTime<Utc>) -> Plan {
    plan_with(desired, observed, now, PlanSettings::default())
}

pub fn plan_with(
    desired: &DesiredState,
    observed: &ObservedState,
    now: DateTime<Utc>,
    settings: PlanSettings,
) -> Plan {
    let mut steps = Vec::new();
    plan_schedules(desired, observed, now, &mut steps);
    // One operation per cluster at a time (PBM's lock). Restores claim a cluster first:
    // someone committed one because something went wrong; then one-shot backups, then
    // the schedules' slots.
    let mut busy = busy_clusters(observed);
    let dead = settings.dead_after;
    plan_restores(desired, observed, (now, dead), &mut busy, &mut steps);
    plan_backups(desired, observed, (now, dead), &mut busy, &mut steps);
    let schedules = plan_slots(desired, observed, (now, dead), &mut busy, &mut steps);
    let drills = super::plan_drills(desired, observed, (now, dead), &mut steps);
    let retention = plan_retention(desired, observed, now, &mut steps);
    let deleted: BTreeSet<String> = retention
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.backup.clone())
        .collect();
    super::chunk_retention::plan_chunk_retention(desired, observed, &deleted, &mut steps);
    let pitr = super::pitr::plan_slicing(desired, observed, (now, dead), &mut steps);
    plan_verifications(observed, &mut steps);
    Plan {
        now,
        steps,
        retention,
        schedules,
        drills,
        pitr,
    }
}

/// Completed backups whose verification is pending (their schedule asked for it when
/// they started): each is checked beside the passes, and counts as good once it passes.
fn plan_verifications(observed: &ObservedState, steps: &mut Vec<Step>) {
    use tidemark_schema::control::VerificationStatus;
    for b in &observed.backups {
        let Some(v) = &b.verification else { continue };
        if v.status != VerificationStatus::Pending || b.deleting.is_some() {
            continue;
        }
        steps.push(step(
            Action::VerifyBackup {
                backup: b.name.clone(),
                storage: b.storage.clone(),
                level: v.level,
            },
            format!(
                "its schedule asks for verification ({}); until it passes the backup is not \
                 counted as good",
                match v.level {
                    tidemark_schema::model::VerifyLevel::Metadata => "metadata",
                    tidemark_schema::model::VerifyLevel::Data => "data",
                }
            ),
        ));
    }
}

/// Cluster → what holds it: every one-shot that has not ended.
fn busy_clusters(observed: &ObservedState) -> BTreeMap<String, String> {
    observed
        .oneshots
        .values()
        .filter(|r| !r.is_final())
        .filter_map(|r| {
            Some((
                r.cluster()?.to_string(),
                format!("{} {:?} is {}", r.kind, r.name, r.status),
            ))
        })
        .collect()
}

/// Why `cluster` cannot take another operation now, if it cannot.
fn busy_reason(busy: &BTreeMap<String, String>, cluster: &str) -> Option<String> {
    busy.get(cluster).map(|holder| {
        format!(
            "cluster {cluster:?} is busy: {holder}; one operation per cluster at a time, this \
             one starts when that one ends"
        )
    })
}

fn step(action: Action, reason: impl Into<String>) -> Step {
    Step {
        action,
        reason: reason.into(),
    }
}

/// Schedules as last applied: name → spec, read back from the ledger's canonical YAML.
fn applied_schedules(applied: Option<&AppliedRevision>) -> BTreeMap<String, BackupScheduleSpec> {
    applied
        .into_iter()
        .flat_map(|a| a.documents.iter())
        .filter(|d| d.kind == Kind::BackupSchedule.as_str())
        .filter_map(|d| match resource_from_canonical(&d.canonical_yaml)? {
            Resource::BackupSchedule(o) => Some((d.name.clone(), o.spec)),
            _ => None,
        })
        .collect()
}

fn plan_schedules(
    desired: &DesiredState,
    observed: &ObservedState,
    now: DateTime<Utc>,
    steps: &mut Vec<Step>,
) {
    let applied = applied_schedules(observed.applied.as_ref());
    for (name, spec) in desired.schedules() {
        let next_run = spec.next_run_after(now);
        let Some(old) = applied.get(name) else {
            steps.push(step(
                Action::CreateSchedule {
                    schedule: name.to_string(),
                    cluster: spec.cluster.clone(),
                    storage: spec.storage.clone(),
                    backup_type: spec.backup_type,
                    cron: spec.cron.clone(),
                    timezone: spec.timezone.clone(),
                    suspended: spec.suspend,
                    next_run: next_run.filter(|_| !spec.suspend),
                    next_backup_name: next_run
                        .filter(|_| !spec.suspend)
                        .map(|t| scheduled_backup_name(name, t)),
                },
                if spec.suspend {
                    "new BackupSchedule, declared suspended: it takes no backups until resumed"
                        .to_string()
                } else {
                    format!(
                        "new BackupSchedule: {} backups of cluster {:?} to storage {:?}",
                        spec.backup_type, spec.cluster, spec.storage
                    )
                },
            ));
            continue;
        };
        let changed = changed_fields(old, spec);
        let other: Vec<String> = changed
            .iter()
            .filter(|f| *f != "suspend")
            .cloned()
            .collect();
        if !other.is_empty() {
            steps.push(step(
                Action::UpdateSchedule {
                    schedule: name.to_string(),
                    changed_fields: other.clone(),
                    next_run: next_run.filter(|_| !spec.suspend),
                },
                format!("the declared spec changed: {}", other.join(", ")),
            ));
        }
        if old.suspend != spec.suspend {
            steps.push(if spec.suspend {
                step(
                    Action::SuspendSchedule {
                        schedule: name.to_string(),
                    },
                    "suspend: true was set; no new backups, retention still applies",
                )
            } else {
                step(
                    Action::ResumeSchedule {
                        schedule: name.to_string(),
                        next_run,
                    },
                    "suspend was cleared; backups resume at the next cron time",
                )
            });
        }
    }
    for name in applied.keys() {
        if desired.schedule(name).is_none() {
            let kept = observed
                .backups
                .iter()
                .filter(|b| b.schedule.as_deref() == Some(name.as_str()))
                .count();
            steps.push(step(
                Action::RemoveSchedule {
                    schedule: name.clone(),
                    backups_kept: kept,
                },
                format!(
                    "the BackupSchedule was deleted from the desired state; it takes no more \
                     backups, and its {kept} existing backup(s) are kept (only retention deletes)"
                ),
            ));
        }
    }
}

/// Top-level spec fields whose values differ.
fn changed_fields(old: &BackupScheduleSpec, new: &BackupScheduleSpec) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return vec!["spec".into()];
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// A one-shot that already ran: its ledger record as an `AlreadyRan` step.
fn already_ran(observed: &ObservedState, kind: Kind, name: &str) -> Option<Step> {
    let record = observed
        .oneshots
        .get(&(OneShotKind::of(kind)?, name.to_string()))?;
    Some(step(
        Action::AlreadyRan {
            kind: kind.to_string(),
            name: name.to_string(),
            op_id: record.op_id.clone(),
            started_at: record.started_at,
            finished_at: record.finished_at,
            status: record.status,
        },
        format!(
            "a {kind} runs once per name; this one ran at {} ({}). Editing or re-applying it \
             does nothing; to run it again, give it a new name",
            record.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            record.status
        ),
    ))
}

fn blocked(kind: Kind, name: &str, reason: String) -> Step {
    step(
        Action::Blocked {
            kind: kind.to_string(),
            name: name.to_string(),
        },
        reason,
    )
}

/// The time of the plan, and the heartbeat age past which an agent is dead.
type At = (DateTime<Utc>, chrono::Duration);

/// One node per replica set of `cluster` to back up from, or why one set has none.
fn choose_nodes(
    name: &str,
    cluster: &tidemark_schema::model::ClusterSpec,
    observed: &ObservedState,
    priority: Option<&BTreeMap<String, f64>>,
    (now, dead_after): At,
) -> Result<Vec<super::model::NodeChoice>, String> {
    cluster
        .all_replica_sets()
        .map(|rs| choose_node(name, rs, &observed.heartbeats, priority, now, dead_after))
        .collect()
}

/// What an incremental schedule's next run would be: an increment of its chain (on the
/// nodes holding its history) or a new base, with the reason (`diff`, `status`). `None`
/// for other backup types.
pub fn schedule_increment(
    spec: &BackupScheduleSpec,
    cluster: &tidemark_schema::model::ClusterSpec,
    observed: &ObservedState,
    at: At,
) -> Option<super::IncrementChoice> {
    if spec.backup_type != BackupType::Incremental {
        return None;
    }
    let inc = spec.incremental.clone().unwrap_or_default();
    let rules = super::ChainRules {
        block_size_mb: Some(inc.block_size_mb()),
        max_increments: Some(inc.max_increments()),
        new_base_after: inc.new_base_after(),
        force_base: false,
    };
    let view = chain_view(&spec.cluster, &spec.storage, cluster, observed, at);
    Some(super::plan_increment(&rules, &view))
}

fn chain_view<'a>(
    cluster_name: &'a str,
    storage: &'a str,
    cluster: &'a tidemark_schema::model::ClusterSpec,
    observed: &'a ObservedState,
    (now, dead_after): At,
) -> super::ChainView<'a> {
    super::ChainView {
        cluster_name,
        storage,
        cluster,
        backups: &observed.backups,
        oneshots: &observed.oneshots,
        heartbeats: &observed.heartbeats,
        now,
        dead_after,
    }
}

/// An incremental backup's chain; an increment runs on the nodes holding the chain's
/// history, whatever the priorities say.
fn pin_chain_nodes(
    rules: &super::ChainRules,
    view: &super::ChainView,
    nodes: &mut [super::model::NodeChoice],
) -> super::IncrementPlan {
    let choice = super::plan_increment(rules, view);
    for n in nodes.iter_mut() {
        if let Some(pinned) = choice.pinned.get(&n.replica_set) {
            *n = pinned.clone();
        }
    }
    choice.plan
}

fn plan_backups(
    desired: &DesiredState,
    observed: &ObservedState,
    (now, dead_after): At,
    busy: &mut BTreeMap<String, String>,
    steps: &mut Vec<Step>,
) {
    for (name, spec) in desired.backups() {
        if let Some(s) = already_ran(observed, Kind::Backup, name) {
            steps.push(s);
            continue;
        }
        if observed.backups.iter().any(|b| b.name == name) {
            steps.push(blocked(
                Kind::Backup,
                name,
                format!(
                    "a backup named {name:?} already exists in the catalog; choose another name"
                ),
            ));
            continue;
        }
        let Some(cluster) = desired.cluster(&spec.cluster) else {
            continue; // validation reports the missing cluster
        };
        if let Some(why) = busy_reason(busy, &spec.cluster) {
            steps.push(blocked(Kind::Backup, name, why));
            continue;
        }
        let choices = choose_nodes(&spec.cluster, cluster, observed, None, (now, dead_after));
        match choices {
            Ok(mut nodes) => {
                let incremental = (spec.backup_type == BackupType::Incremental).then(|| {
                    let rules = super::ChainRules {
                        block_size_mb: spec.block_size_mb,
                        max_increments: None,
                        new_base_after: None,
                        force_base: spec.base,
                    };
                    let view = chain_view(
                        &spec.cluster,
                        &spec.storage,
                        cluster,
                        observed,
                        (now, dead_after),
                    );
                    pin_chain_nodes(&rules, &view, &mut nodes)
                });
                busy.insert(
                    spec.cluster.clone(),
                    format!("Backup {name:?} starts in this pass"),
                );
                steps.push(step(
                    Action::RunBackup {
                        backup: name.to_string(),
                        cluster: spec.cluster.clone(),
                        storage: spec.storage.clone(),
                        backup_type: spec.backup_type,
                        nodes,
                        schedule: None,
                        incremental,
                    },
                    format!(
                        "new one-shot Backup: it has not run yet (the ledger has no record of {name:?})"
                    ),
                ))
            }
            Err(why) => steps.push(blocked(Kind::Backup, name, why)),
        }
    }
}

/// Each schedule's state, and a `RunBackup` for every due slot whose cluster is free.
fn plan_slots(
    desired: &DesiredState,
    observed: &ObservedState,
    (now, dead_after): At,
    busy: &mut BTreeMap<String, String>,
    steps: &mut Vec<Step>,
) -> Vec<ScheduleState> {
    let mut states = Vec::new();
    for (name, spec) in desired.schedules() {
        let state = observed_schedule_state(name, spec, observed, now);
        if let (Some(slot), Some(backup)) = (state.due_slot, &state.due_backup)
            && let Some(cluster) = desired.cluster(&spec.cluster)
        {
            let missed = if state.missed_slots.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} earlier slot(s) were missed and are not run (the newest {})",
                    state.missed_slots.len(),
                    state.missed_slots[0].format("%Y-%m-%d %H:%M:%S UTC")
                )
            };
            if let Some(why) = busy_reason(busy, &spec.cluster) {
                steps.push(blocked(Kind::Backup, backup, why));
            } else {
                let choices = choose_nodes(
                    &spec.cluster,
                    cluster,
                    observed,
                    spec.priority.as_ref(),
                    (now, dead_after),
                );
                match choices {
                    Ok(mut nodes) => {
                        let incremental =
                            schedule_increment(spec, cluster, observed, (now, dead_after)).map(
                                |choice| {
                                    for n in nodes.iter_mut() {
                                        if let Some(pinned) = choice.pinned.get(&n.replica_set) {
                                            *n = pinned.clone();
                                        }
                                    }
                                    choice.plan
                                },
                            );
                        busy.insert(
                            spec.cluster.clone(),
                            format!("Backup {backup:?} starts in this pass"),
                        );
                        steps.push(step(
                            Action::RunBackup {
                                backup: backup.clone(),
                                cluster: spec.cluster.clone(),
                                storage: spec.storage.clone(),
                                backup_type: spec.backup_type,
                                nodes,
                                schedule: Some(name.to_string()),
                                incremental,
                            },
                            format!(
                                "slot {} of schedule {name:?} ({} {}) is due and unclaimed{missed}",
                                slot.format("%Y-%m-%d %H:%M:%S UTC"),
                                spec.cron,
                                spec.timezone
                            ),
                        ));
                    }
                    Err(why) => steps.push(blocked(Kind::Backup, backup, why)),
                }
            }
        }
        states.push(state);
    }
    states
}

fn plan_restores(
    desired: &DesiredState,
    observed: &ObservedState,
    (now, dead_after): At,
    busy: &mut BTreeMap<String, String>,
    steps: &mut Vec<Step>,
) {
    for (name, spec) in desired.restores() {
        if let Some(s) = already_ran(observed, Kind::Restore, name) {
            steps.push(s);
            continue;
        }
        let Some(cluster) = desired.cluster(&spec.cluster) else {
            continue;
        };
        if let Some(why) = busy_reason(busy, &spec.cluster) {
            steps.push(blocked(Kind::Restore, name, why));
            continue;
        }
        if spec.is_selective() {
            let agents = drill_agents_busy(observed);
            match super::selective::plan_selective(
                name,
                spec,
                cluster,
                &observed.backups,
                &observed.heartbeats,
                &agents,
                now,
                dead_after,
            ) {
                Ok(p) => {
                    busy.insert(
                        spec.cluster.clone(),
                        format!("Restore {name:?} starts in this pass"),
                    );
                    let reason = super::selective::reason(&p);
                    steps.push(step(Action::StartSelectiveRestore(p), reason));
                }
                Err(why) => steps.push(blocked(Kind::Restore, name, why)),
            }
            continue;
        }
        match plan_restore(
            name,
            spec,
            cluster,
            &observed.backups,
            &observed.chunks,
            &observed.heartbeats,
            now,
            dead_after,
        ) {
            Ok(p) => {
                let warning = super::restore::disk_warning(&p)
                    .map(|w| format!("; WARNING: {w}"))
                    .unwrap_or_default();
                let what = match &p.point_in_time {
                    Some(pit) => format!(
                        "point-in-time Restore to {} from backup {:?} ({}), replaying {} \
                         chunk(s), {} of oplog",
                        pit.target,
                        p.backup,
                        pit.base_reason,
                        pit.chunk_count(),
                        super::render::human_bytes(pit.chunk_bytes())
                    ),
                    None => format!("Restore of backup {:?}", p.backup),
                };
                let reason = format!(
                    "new one-shot {what}: it stops {} node(s) and replaces \
                     their data{}{warning}",
                    p.nodes.len(),
                    if p.fallback_enabled {
                        "; each node's current data is moved aside first and moved back if the \
                         restore fails"
                    } else {
                        "; fallback is off, so current data is wiped"
                    }
                );
                busy.insert(
                    spec.cluster.clone(),
                    format!("Restore {name:?} starts in this pass"),
                );
                steps.push(step(Action::StartRestore(p), reason));
            }
            Err(why) => steps.push(blocked(Kind::Restore, name, why)),
        }
    }
}

/// Drill agents running a drill or a selective restore (one such op at a time each: both
/// fill the agent's disk).
pub fn drill_agents_busy(observed: &ObservedState) -> Vec<String> {
    observed
        .oneshots
        .iter()
        .filter(|((kind, _), r)| {
            matches!(kind, OneShotKind::RestoreDrill | OneShotKind::Restore) && !r.is_final()
        })
        .filter_map(|(_, r)| r.setting("agent").map(str::to_string))
        .collect()
}

/// Backups that a Restore still to run (declared, not in the ledger) or running needs:
/// never deleted under it, by retention or by `forget-backup`. Without a desired state
/// only the running ones are known.
pub fn pinned_backups(
    desired: Option<&DesiredState>,
    observed: &ObservedState,
    now: DateTime<Utc>,
) -> BTreeSet<String> {
    let mut pinned: BTreeSet<String> = desired
        .into_iter()
        .flat_map(|d| d.restores())
        .filter(|(name, _)| already_ran(observed, Kind::Restore, name).is_none())
        .flat_map(
            |(_, spec)| match restore_base(spec, &observed.backups, &observed.chunks) {
                // An increment needs its whole chain (retention keeps the links of kept
                // backups anyway; this names them for `diff`).
                Ok((b, _)) => super::chain::chain_of(b, &observed.backups)
                    .map(|c| c.iter().map(|b| b.name.clone()).collect())
                    .unwrap_or_else(|_| vec![b.name.clone()]),
                // A point-in-time restore still waiting (for slices, say): every base it
                // could start from; none for a target in the future, which never starts.
                Err(_) => super::point_in_time::waiting_bases(spec, &observed.backups, now)
                    .into_iter()
                    .map(|b| b.name.clone())
                    .collect(),
            },
        )
        .collect();
    pinned.extend(
        observed
            .oneshots
            .values()
            // A running drill reads its backup too: deleting it would fail the drill.
            .filter(|r| {
                matches!(r.kind, OneShotKind::Restore | OneShotKind::RestoreDrill) && !r.is_final()
            })
            .filter_map(|r| r.setting("backup"))
            .map(str::to_string),
    );
    // A running increment builds on its source: deleting that (by retention or
    // `forget-backup`) would leave a "good" increment nothing can restore.
    pinned.extend(
        observed
            .oneshots
            .values()
            .filter(|r| r.kind == OneShotKind::Backup && !r.is_final())
            .filter_map(|r| {
                r.started_with.as_ref()?["settings"]["incremental"]["source"]
                    .as_str()
                    .map(str::to_string)
            }),
    );
    pinned
}

fn plan_retention(
    desired: &DesiredState,
    observed: &ObservedState,
    now: DateTime<Utc>,
    steps: &mut Vec<Step>,
) -> Vec<super::model::RetentionDecision> {
    let pinned = pinned_backups(Some(desired), observed, now);
    let mut decisions = Vec::new();
    // A deletion that started (the catalog entry is marked) is finished, whatever the
    // policy says now: the backup is not restorable any more.
    for b in observed
        .backups
        .iter()
        .filter(|b| b.deleting.is_some() && !pinned.contains(&b.name))
    {
        steps.push(step(
            Action::DeleteBackup {
                backup: b.name.clone(),
                schedule: b.schedule.clone().unwrap_or_default(),
                storage: b.storage.clone(),
                stored_bytes: b.stored_bytes(),
                started_at: b.started_at,
            },
            "its deletion started and was interrupted; finishing it".to_string(),
        ));
    }
    // Backups of schedules no longer declared: kept, and listed, until forgotten.
    for b in observed.backups.iter().filter(|b| b.is_good()) {
        if let Some(s) = &b.schedule
            && desired.schedule(s).is_none()
        {
            decisions.push(super::model::RetentionDecision {
                backup: b.name.clone(),
                schedule: s.clone(),
                keep: true,
                reasons: vec![format!(
                    "orphaned: schedule {s:?} is no longer declared; kept until `tidemark \
                     forget-backup {}`",
                    b.name
                )],
                orphaned: true,
            });
        }
    }
    let mut scheduled = Vec::new();
    for (name, spec) in desired.schedules() {
        scheduled.extend(retention::decide(
            name,
            spec,
            &observed.backups,
            &pinned,
            now,
        ));
    }
    // A link of a chain stays while a kept backup is built on it, across schedules.
    super::chain::keep_chains(&mut scheduled, &observed.backups);
    for d in scheduled {
        if !d.keep
            && let Some(b) = observed.backups.iter().find(|b| b.name == d.backup)
        {
            steps.push(step(
                Action::DeleteBackup {
                    backup: b.name.clone(),
                    schedule: d.schedule.clone(),
                    storage: b.storage.clone(),
                    stored_bytes: b.stored_bytes(),
                    started_at: b.started_at,
                },
                format!("retention of {:?}: {}", d.schedule, d.reasons.join("; ")),
            ));
        }
        decisions.push(d);
    }
    decisions
}
