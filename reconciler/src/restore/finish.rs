//! After the decision, the transitions that write: each follow-up step's op (revert or
//! wipe, then the removal of fallback directories, then the starts), its closing record,
//! and the `postRestore.freshBackup` backup. Which one is due is `stage`'s to say.

use chrono::{DateTime, Utc};
use tidemark_schema::control::{Op, OpCommand, OpTarget, Remedy, RunStatus, archive_key, op_key};
use tidemark_schema::validate::DesiredState;
use tidemark_store::control::Created;

use super::records::{Progressed, RestoreRecords, StepRecords, fresh_backup_name, step_op_id};
use super::stage::step_result;
use crate::backup::{self, BackupSettings};
use crate::execute::{ExecError, Executor, Progress, storage_target};
use crate::plan::choose_node;

fn step(r: &RestoreRecords, remedy: Remedy) -> Option<&StepRecords> {
    match &r.progress {
        Progressed::Decided { steps, .. } => steps.iter().find(|s| s.remedy == remedy),
        Progressed::Undecided { .. } => None,
    }
}

/// Writes the follow-up op of `remedy` for `targets` (create-once).
pub async fn write_step(
    ex: &Executor,
    r: &RestoreRecords,
    remedy: Remedy,
    targets: Vec<OpTarget>,
    now: DateTime<Utc>,
) -> Result<(), ExecError> {
    let id = step_op_id(&r.op.id, remedy);
    // Missing because it was never written, or because the restore ended and its ops
    // were compacted: never write a follow-up step of an ended restore.
    if ex.has_ended(&r.record).await? || ex.control.exists(&archive_key(&id)).await? {
        return Err(ExecError::Invalid(format!(
            "restore {:?}: its step {id} is gone and the restore has ended; not writing it again",
            r.record.name
        )));
    }
    let restore_op = r.op.id.clone();
    let command = match remedy {
        Remedy::Revert => OpCommand::RevertToFallback { restore_op },
        Remedy::Wipe => OpCommand::WipeForInitialSync { restore_op },
        Remedy::RemoveFallback => OpCommand::RemoveFallback { restore_op },
        Remedy::Start => OpCommand::StartMongod { restore_op },
    };
    let step_op = Op {
        id: id.clone(),
        created_at: now,
        cluster: r.op.cluster.clone(),
        targets,
        command,
        deadline: Some(now + ex.op_deadline),
        epoch: ex.control.epoch(),
        cause: Some(step_cause(r, remedy)),
    };
    // Rung whatever the write said (one that failed may have landed), and when the step
    // existed: the pass that wrote it may have stopped before ringing.
    let key = op_key(&id);
    let written = ex.control.create(&key, &ex.sealed(&key, &step_op)).await;
    ex.ring(&step_op.cluster).await;
    if written.is_err() {
        ex.bell.again_next_pass(&step_op.cluster);
    }
    if written? == Created::New {
        tracing::info!(op = %id, "follow-up step written");
    }
    Ok(())
}

/// Closes a follow-up step whose nodes all ended or are lost, with each node's verdict.
/// Once closed its verdicts are final: a lost agent that comes back later (and, seeing
/// the result, does nothing) must not reopen it.
pub async fn close_step(
    ex: &Executor,
    r: &RestoreRecords,
    remedy: Remedy,
    now: DateTime<Utc>,
) -> Result<(), ExecError> {
    let Some(s) = step(r, remedy) else {
        return Ok(());
    };
    let id = step_op_id(&r.op.id, remedy);
    // Create-once: a result another pass wrote first stands.
    ex.decide_once(step_result(&id, remedy, &s.views, now))
        .await?;
    Ok(())
}

/// `postRestore.freshBackup`: a backup through the named schedule, as the new base. When
/// it cannot be taken at all (its schedule is gone from the desired state), the restore
/// ends with `status` and `message`, and a note saying so.
pub async fn start_fresh_backup(
    ex: &Executor,
    r: &RestoreRecords,
    desired: Option<&DesiredState>,
    status: RunStatus,
    message: String,
    now: DateTime<Utc>,
) -> Result<Progress, ExecError> {
    let Some(schedule) = r.settings.fresh_backup.as_deref() else {
        return ex.finish_record(&r.record, status, message, now).await;
    };
    let name = fresh_backup_name(&r.record.name);
    let found = desired.and_then(|d| {
        let s = d.schedule(schedule)?;
        Some((s, d.storage(&s.storage)?, d.cluster(&s.cluster)?))
    });
    let Some((spec, storage, cluster)) = found else {
        let note = format!(
            "no fresh base backup: schedule {schedule:?} (or its storage or cluster) is not in \
             the desired state"
        );
        return ex
            .finish_record(&r.record, status, format!("{message}. {note}"), now)
            .await;
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
                return Ok(Progress::Running);
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
        sharded: cluster.is_sharded(),
        // Restored nodes hold no tracking history: an incremental schedule starts over.
        incremental: (spec.backup_type == tidemark_schema::model::BackupType::Incremental).then(
            || tidemark_schema::control::ChainLink {
                base: name.clone(),
                source: None,
                position: 0,
                block_size_mb: spec
                    .incremental
                    .as_ref()
                    .map_or(tidemark_schema::model::DEFAULT_BLOCK_SIZE_MB, |i| {
                        i.block_size_mb()
                    }),
                reason: Some(
                    "new base: the cluster was just restored, its nodes hold no history".into(),
                ),
            },
        ),
        cause: Some(tidemark_schema::control::OpCause {
            reason: format!(
                "postRestore.freshBackup of restore {:?} (op {})",
                r.record.name, r.op.id
            ),
            ..r.op.cause.clone().unwrap_or_default()
        }),
    };
    backup::start(ex, &name, settings, &nodes, now).await?;
    Ok(Progress::Running)
}

/// A follow-up step is caused by its restore: the restore's revision and document, why
/// this step, and the cancel that led to it, if one did.
fn step_cause(r: &RestoreRecords, remedy: Remedy) -> tidemark_schema::control::OpCause {
    tidemark_schema::control::OpCause {
        reason: format!("{remedy:?} after restore op {}", r.op.id),
        command: r
            .cancel
            .as_ref()
            .map(|c| format!("cancel-restore by {} at {}", c.by, c.at.to_rfc3339())),
        ..r.op.cause.clone().unwrap_or_default()
    }
}
