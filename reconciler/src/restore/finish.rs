//! After the decision: each node's remedies, in stages (revert or wipe, then the removal
//! of fallback directories, then the starts), the post-restore steps the Restore asked
//! for, and the outcome in the ledger, once.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use tidemark_schema::control::{
    NodeFate, NodeVerdict, OneShotRecord, Op, OpCommand, OpResult, OpTarget, PhaseStatus, Remedy,
    RunStatus, archive_key, oneshot_key, result_key,
};
use tidemark_schema::validate::DesiredState;
use tidemark_store::control::Created;

use super::decide::STAGES;
use super::start::RestoreSettings;
use crate::backup::{self, BackupSettings};
use crate::execute::{ExecError, Executor, NodeView, Progress, storage_target, who};
use crate::plan::choose_node;

/// The id of the follow-up op of `restore_op` for one stage.
pub fn stage_op_id(restore_op: &str, stage: Remedy) -> String {
    format!("{restore_op}.{}", stage.as_str())
}

pub async fn advance(
    ex: &Executor,
    record: &OneShotRecord,
    op: &Op,
    settings: &RestoreSettings,
    result: &OpResult,
    desired: Option<&DesiredState>,
    now: DateTime<Utc>,
) -> Result<Progress, ExecError> {
    // Nodes whose remedy failed get no further remedy: a node whose revert failed must
    // not be started on whatever its dbPath now holds.
    let mut stuck: BTreeSet<String> = BTreeSet::new();
    // Replica sets with a member whose wipe did not happen: it may still hold (and, once
    // started, serve) its pre-restore data, so no member of the set is started and the
    // fallback directories stay for a revert by hand.
    let mut unwiped: BTreeSet<String> = BTreeSet::new();
    let mut notes: Vec<String> = Vec::new();
    let mut started_at = None;
    let mut start_targets: Vec<OpTarget> = Vec::new();
    for stage in STAGES {
        let held = |n: &NodeVerdict| {
            matches!(stage, Remedy::Start | Remedy::RemoveFallback)
                && unwiped.contains(&n.replica_set)
        };
        let targets: Vec<OpTarget> = result
            .nodes
            .iter()
            .filter(|n| n.remedies.contains(&stage) && !stuck.contains(&n.node) && !held(n))
            .map(|n| OpTarget {
                replica_set: n.replica_set.clone(),
                node: n.node.clone(),
            })
            .collect();
        if targets.is_empty() {
            continue;
        }
        let id = stage_op_id(&op.id, stage);
        let Some(stage_op) = ex.control.op(&id).await? else {
            // Missing because it was never written, or because the restore ended and its
            // ops were compacted: never write a follow-up step of an ended restore.
            if ex.has_ended(record).await? || ex.control.exists(&archive_key(&id)).await? {
                return Err(ExecError::Invalid(format!(
                    "restore {:?}: its step {id} is gone and the restore has ended; not writing it again",
                    record.name
                )));
            }
            let restore_op = op.id.clone();
            let command = match stage {
                Remedy::Revert => OpCommand::RevertToFallback { restore_op },
                Remedy::Wipe => OpCommand::WipeForInitialSync { restore_op },
                Remedy::RemoveFallback => OpCommand::RemoveFallback { restore_op },
                Remedy::Start => OpCommand::StartMongod { restore_op },
            };
            let stage_op = Op {
                id: id.clone(),
                created_at: now,
                cluster: op.cluster.clone(),
                targets,
                command,
                deadline: Some(now + ex.op_deadline),
                epoch: ex.control.epoch(),
            };
            if ex
                .control
                .create(&tidemark_schema::control::op_key(&id), &stage_op)
                .await?
                == Created::New
            {
                tracing::info!(op = %id, "follow-up step written");
            }
            return Ok(Progress::Running);
        };
        if stage == Remedy::Start {
            started_at = Some(stage_op.created_at);
            start_targets = stage_op.targets.clone();
        }
        // Once a stage is closed its verdicts are final: a lost agent that comes back
        // later (and, seeing the result, does nothing) must not reopen it.
        let closed = match ex.control.get::<OpResult>(&result_key(&id)).await? {
            // Closed by a reconciler that kept no per-node verdicts: work them out again.
            Some(closed) if closed.nodes.is_empty() && closed.status != RunStatus::Done => {
                stage_result(&id, stage, &op.id, &ex.views(&stage_op, now).await?, now)
            }
            Some(mut closed) => {
                // A set is held by its wipe as the stage was closed: a wipe that a lost
                // agent finished later does not release it, or a set left down would be
                // waited on for ever.
                if stage == Remedy::Wipe {
                    unwiped.extend(
                        closed
                            .nodes
                            .iter()
                            .filter(|n| n.fate != NodeFate::Done)
                            .map(|n| n.replica_set.clone()),
                    );
                }
                // A node closed as lost whose agent then finished the step did it: count it.
                if closed.nodes.iter().any(|n| n.fate == NodeFate::Lost) {
                    let views = ex.views(&stage_op, now).await?;
                    for n in closed.nodes.iter_mut().filter(|n| n.fate == NodeFate::Lost) {
                        let done = views.iter().any(|v| {
                            v.node == n.node
                                && v.final_report()
                                    .is_some_and(|r| r.status == PhaseStatus::Done)
                        });
                        if done {
                            n.fate = NodeFate::Done;
                        }
                    }
                }
                closed
            }
            None => {
                let views = ex.views(&stage_op, now).await?;
                if !views.iter().all(|v| v.settled()) {
                    return Ok(Progress::Running);
                }
                ex.decide_once(stage_result(&id, stage, &op.id, &views, now))
                    .await?
            }
        };
        for n in closed.nodes.iter().filter(|n| n.fate != NodeFate::Done) {
            stuck.insert(n.node.clone());
            notes.push(n.message.clone());
            if stage == Remedy::Wipe {
                unwiped.insert(n.replica_set.clone());
            }
        }
    }
    let mut status = result.status;
    if !unwiped.is_empty() {
        // The decision said PartlyDone, but a member could not be wiped: the restore is
        // not usable until someone deals with it, and nothing of those sets was started.
        status = RunStatus::Error;
        notes.push(format!(
            "replica set(s) {} were NOT started: a member's wipe did not happen, so it still \
             holds its pre-restore data and would roll back the restored members; wipe it \
             (or stop it for good), then start the set",
            unwiped.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if status != RunStatus::Error && settings.start_nodes {
        if let Some(since) = started_at
            && let Some(waiting) = unhealthy(ex, op, &start_targets, &stuck, since).await?
        {
            tracing::info!(restore = %record.name, %waiting, "waiting for a healthy replica set");
            return Ok(Progress::Running);
        }
        if let Some(schedule) = &settings.fresh_backup {
            match fresh_backup(ex, record, schedule, desired, now).await? {
                Fresh::Running => return Ok(Progress::Running),
                Fresh::Ended(note) => notes.push(note),
            }
        }
    }
    let mut message = result.reason.clone();
    for n in &result.nodes {
        if !n.note.is_empty() && (n.note.contains("lost") || n.note.contains("PARTIAL")) {
            notes.push(format!("{}: {}", n.node, n.note));
        }
    }
    if !notes.is_empty() {
        message = format!("{message}. {}", notes.join("; "));
    }
    ex.finish_record(record, status, message, now).await
}

/// The closing record of one follow-up stage, with each node's verdict.
fn stage_result(
    id: &str,
    stage: Remedy,
    restore_op: &str,
    views: &[NodeView],
    now: DateTime<Utc>,
) -> OpResult {
    let nodes: Vec<NodeVerdict> = views
        .iter()
        .map(|v| {
            let (fate, message) = match v.final_report() {
                Some(r) if r.status == PhaseStatus::Done => (NodeFate::Done, r.message.clone()),
                Some(r) => (
                    NodeFate::Failed,
                    format!("{} failed on {}: {}", stage.as_str(), who(v), r.message),
                ),
                None => (
                    NodeFate::Lost,
                    format!(
                        "{} not done on {}: node lost; it still needs it",
                        stage.as_str(),
                        who(v)
                    ),
                ),
            };
            NodeVerdict {
                replica_set: v.replica_set.clone(),
                node: v.node.clone(),
                fate,
                phase: None,
                message,
                remedies: Vec::new(),
                note: String::new(),
            }
        })
        .collect();
    OpResult {
        op_id: id.to_string(),
        status: if nodes.iter().all(|n| n.fate == NodeFate::Done) {
            RunStatus::Done
        } else {
            RunStatus::Error
        },
        decided_at: now,
        reason: format!("follow-up {} of {restore_op}", stage.as_str()),
        nodes,
        epoch: None,
    }
}

/// `Some(what is missing)` until every started node is PRIMARY or SECONDARY again,
/// initial syncs included, as the agents' heartbeats after the start show.
async fn unhealthy(
    ex: &Executor,
    op: &Op,
    started: &[OpTarget],
    stuck: &BTreeSet<String>,
    since: DateTime<Utc>,
) -> Result<Option<String>, ExecError> {
    let beats = ex.control.heartbeats(&op.cluster).await?;
    let mut missing = Vec::new();
    let mut primary = false;
    // Only the nodes the start step was written for: a set held down is not waited on.
    for n in started.iter().filter(|n| !stuck.contains(&n.node)) {
        let hb = beats
            .iter()
            .find(|h| h.replica_set == n.replica_set && h.node == n.node && h.at > since);
        match hb {
            Some(h) if h.role == "PRIMARY" || h.role == "SECONDARY" => {
                primary |= h.role == "PRIMARY";
            }
            Some(h) => missing.push(format!("{} is {}", n.node, h.role)),
            None => missing.push(format!("{}: no heartbeat since the start", n.node)),
        }
    }
    if !primary && missing.is_empty() {
        missing.push("no primary yet".into());
    }
    Ok((!missing.is_empty()).then(|| missing.join(", ")))
}

enum Fresh {
    Running,
    Ended(String),
}

/// `postRestore.freshBackup`: a backup through the named schedule, as the new base.
async fn fresh_backup(
    ex: &Executor,
    record: &OneShotRecord,
    schedule: &str,
    desired: Option<&DesiredState>,
    now: DateTime<Utc>,
) -> Result<Fresh, ExecError> {
    let name = format!("{}-fresh-base", record.name);
    if let Some(b) = ex
        .control
        .get::<OneShotRecord>(&oneshot_key("backup", &name))
        .await?
    {
        if !b.is_final() {
            return Ok(Fresh::Running);
        }
        return Ok(Fresh::Ended(format!(
            "fresh base backup {name}: {} {}",
            b.status, b.message
        )));
    }
    let found = desired.and_then(|d| {
        let s = d.schedule(schedule)?;
        Some((s, d.storage(&s.storage)?, d.cluster(&s.cluster)?))
    });
    let Some((spec, storage, cluster)) = found else {
        return Ok(Fresh::Ended(format!(
            "no fresh base backup: schedule {schedule:?} (or its storage or cluster) is not in \
             the desired state"
        )));
    };
    let beats = ex.control.heartbeats(&spec.cluster).await?;
    let mut nodes = Vec::new();
    for rs in cluster.all_replica_sets() {
        match choose_node(
            &spec.cluster,
            rs,
            &beats,
            spec.priority.as_ref(),
            now,
            ex.dead_after,
        ) {
            Ok(c) => nodes.push(c),
            Err(why) => {
                tracing::info!(%why, "fresh base backup waits for a node");
                return Ok(Fresh::Running);
            }
        }
    }
    let settings = BackupSettings {
        cluster: spec.cluster.clone(),
        storage_name: spec.storage.clone(),
        storage: storage_target(storage),
        backup_type: spec.backup_type,
        schedule: Some(schedule.to_string()),
        verify: spec.verify,
        hash_namespaces: desired
            .map(|d| crate::plan::hash_namespaces(d, schedule))
            .unwrap_or_default(),
        sharded: desired
            .and_then(|d| d.cluster(&spec.cluster))
            .is_some_and(|c| c.is_sharded()),
    };
    backup::start(ex, &name, settings, &nodes, now).await?;
    Ok(Fresh::Running)
}
