//! Following a backup to its end. The cluster-wide completion marker (`backup.json`) and
//! the catalog entry are written only after every replica set's manifest was read back
//! from storage: a backup with any failed replica set is `error` and never restorable.

use chrono::{DateTime, Utc};
use tidemark_schema::control::{
    BackupMarker, BackupRecord, BackupReplicaSet, ExtendTarget, OneShotRecord, Op, OpCommand,
    OpResult, Phase, PhaseStatus, RunStatus, Verification, abort_key, catalog_key, extend_key,
    result_key,
};
use tidemark_schema::manifest::{ReplicaSetManifest, layout};
use tidemark_store::storage::BackupStore;

use super::start::BackupSettings;
use crate::execute::{ExecError, Executor, NodeView, Progress, ResultRecord, who};

/// The barrier of a backup of several replica sets: once every node has opened its
/// cursor, the highest `oplogEnd` among them becomes the point every one extends to
/// (`extend.json`, created once: two reconcilers compute the same point, and the first
/// write stands). Every replica set then restores to that one cluster time.
async fn common_point(
    ex: &Executor,
    op: &Op,
    views: &[NodeView],
    now: DateTime<Utc>,
) -> Result<(), ExecError> {
    let key = extend_key(&op.id);
    // A node that ended (or was lost) without opening its cursor leaves the others
    // waiting for a point that will never come: the backup fails now, and the waiting
    // nodes see the result and close their cursors.
    if !ex.control.exists(&key).await?
        && let Some(v) = views.iter().find(|v| {
            v.settled()
                && !v
                    .reports
                    .iter()
                    .any(|r| r.phase == Phase::Cursor && r.status == PhaseStatus::Done)
        })
    {
        ex.decide_once(OpResult {
            op_id: op.id.clone(),
            status: RunStatus::Error,
            decided_at: now,
            reason: format!(
                "{} ended without opening its backup cursor, so the replica sets cannot reach \
                 one cluster time; failed, never restorable",
                who(v)
            ),
            nodes: Vec::new(),
            epoch: None,
        })
        .await?;
        return Ok(());
    }
    let mut best: Option<(tidemark_schema::manifest::OpTime, Option<serde_json::Value>)> = None;
    for v in views {
        let Some(r) = v
            .reports
            .iter()
            .find(|r| r.phase == Phase::Cursor && r.status == PhaseStatus::Done)
        else {
            return Ok(()); // not every cursor is open yet
        };
        let end = r
            .details
            .get("oplogEnd")
            .and_then(|e| serde_json::from_value(e.clone()).ok())
            .unwrap_or_default();
        if best.as_ref().is_none_or(|(b, _)| end > *b) {
            best = Some((end, r.details.get("clusterTime").cloned()));
        }
    }
    let Some((target, cluster_time)) = best else {
        return Ok(());
    };
    if ex.control.exists(&key).await? {
        return Ok(());
    }
    let t = ExtendTarget {
        target,
        cluster_time,
        at: now,
    };
    ex.control.create(&key, &ex.sealed(&key, &t)).await?;
    tracing::info!(op = %op.id, %target, "common cluster time of the backup");
    Ok(())
}

/// A cancelled backup leaves nothing: its objects are deleted from storage (data first,
/// the marker last), it has no catalog entry, and the ledger says `cancelled`. Each step
/// is idempotent, so a crash between them is finished by the next pass.
async fn cancelled(
    ex: &Executor,
    record: &OneShotRecord,
    settings: &BackupSettings,
    backup: &str,
    result: &OpResult,
    now: DateTime<Utc>,
) -> Result<Progress, ExecError> {
    let store = BackupStore::open_with_env(&settings.storage, ex.storage_env.clone())?;
    let deleted = store.delete_backup(backup).await?;
    ex.control.delete(&catalog_key(backup)).await?;
    let message = format!(
        "{}; its partial objects were deleted from {} ({} data object(s))",
        result.reason,
        store.url(),
        deleted.data
    );
    ex.finish_record(record, RunStatus::Cancelled, message, now)
        .await
}

/// Why the backup an increment continues cannot carry it (gone, being deleted, failed),
/// or `None`: only an increment of an intact source is restorable.
async fn source_problem(ex: &Executor, source: &str) -> Result<Option<String>, ExecError> {
    use tidemark_schema::control::VerificationStatus;
    let record: Option<BackupRecord> = ex.control.get(&catalog_key(source)).await?;
    Ok(match record {
        None => Some("is gone from the catalog".into()),
        Some(r) if r.deleting.is_some() => Some("is being deleted".into()),
        Some(r) if !r.complete || r.status != RunStatus::Done => {
            Some(format!("ended with status {}", r.status))
        }
        Some(r)
            if r.verification
                .as_ref()
                .is_some_and(|v| v.status == VerificationStatus::Failed) =>
        {
            Some("failed verification".into())
        }
        Some(_) => None,
    })
}

pub async fn advance(
    ex: &Executor,
    record: &OneShotRecord,
    now: DateTime<Utc>,
) -> Result<Progress, ExecError> {
    let op = ex.op_of(record).await?;
    let settings: BackupSettings = ex.own_settings(record)?;
    let OpCommand::Backup { backup, .. } = &op.command else {
        return Err(ExecError::Invalid(format!("{}: not a backup op", op.id)));
    };
    // Once decided, the decision stands: a lost agent that comes back after an Error was
    // written (and, seeing it, does nothing) must not make the backup wait forever.
    let decided: Option<OpResult> = match ex.result_of(&op.id).await? {
        ResultRecord::Own(r) => Some(r),
        ResultRecord::Absent => None,
        // Agents stop on seeing any result, so this backup can no longer finish: it is
        // decided failed now (ours replaces the other), rather than waiting forever.
        ResultRecord::Foreign(why) => Some(
            ex.decide_once(OpResult {
                op_id: op.id.clone(),
                status: RunStatus::Error,
                decided_at: now,
                reason: format!(
                    "ops/{}/result.json was not written by this reconciler ({why}); agents \
                     stop on seeing one, so the backup cannot finish",
                    op.id
                ),
                nodes: Vec::new(),
                epoch: None,
            })
            .await?,
        ),
    };
    let views = ex.views(&op, now).await?;
    match &decided {
        Some(r) if r.status == RunStatus::Cancelled => {
            return cancelled(ex, record, &settings, backup, r, now).await;
        }
        // A cancel asked for before the outcome: every node stops at its next check (its
        // cursor closed), then the backup is decided cancelled and its objects deleted.
        None => {
            if let Some(c) = ex.cancel_request(record).await? {
                ex.control
                    .create(&abort_key(&op.id), &serde_json::json!({"at": now}))
                    .await?;
                if !views.iter().all(|v| v.settled()) {
                    return Ok(Progress::Running);
                }
                let result = ex
                    .decide_once(OpResult {
                        op_id: op.id.clone(),
                        status: RunStatus::Cancelled,
                        decided_at: now,
                        reason: format!("cancelled by {} at {}", c.by, c.at.to_rfc3339()),
                        nodes: Vec::new(),
                        epoch: None,
                    })
                    .await?;
                if result.status == RunStatus::Cancelled {
                    return cancelled(ex, record, &settings, backup, &result, now).await;
                }
            }
        }
        Some(_) => {}
    }
    let mut decided = decided;
    if decided.is_none()
        && let OpCommand::Backup { barrier: true, .. } = &op.command
    {
        common_point(ex, &op, &views, now).await?;
        decided = ex.own_result(&op.id).await?;
    }
    if decided.is_none() && !views.iter().all(|v| v.settled()) {
        return Ok(Progress::Running);
    }
    let decided_error = decided
        .as_ref()
        .is_some_and(|r| r.status != RunStatus::Done);
    let mut failures = Vec::new();
    for v in &views {
        match v.final_report() {
            Some(r) if r.status == tidemark_schema::control::PhaseStatus::Done => {}
            Some(r) => failures.push(format!("{}: {}", who(v), r.message)),
            None => failures.push(format!(
                "{}: node lost (last heartbeat {})",
                who(v),
                v.heartbeat
                    .as_ref()
                    .map_or("never".to_string(), |h| h.at.to_rfc3339())
            )),
        }
    }
    let mut parts = Vec::new();
    let mut last_write = None;
    let common: Option<ExtendTarget> = match &op.command {
        OpCommand::Backup { barrier: true, .. } => ex.control.get(&extend_key(&op.id)).await?,
        _ => None,
    };
    if failures.is_empty() && !decided_error {
        let store = BackupStore::open_with_env(&settings.storage, ex.storage_env.clone())?;
        for v in &views {
            let key = layout::rs_manifest_key(backup, &v.replica_set);
            let manifest = match store.get_json::<serde_json::Value>(&key).await? {
                None => {
                    failures.push(format!(
                        "{}: reported done but {key} is not in {}",
                        who(v),
                        store.url()
                    ));
                    continue;
                }
                Some(raw) => match ReplicaSetManifest::from_json(raw.to_string().as_bytes()) {
                    Ok(m) => m,
                    Err(e) => {
                        failures.push(format!("{}: {key} in {}: {e}", who(v), store.url()));
                        continue;
                    }
                },
            };
            // An agent that did not take part in the barrier (an older one) ends at its own
            // point: such a backup would not restore to one cluster time.
            if let Some(common) = &common
                && manifest.last_write != common.target
            {
                failures.push(format!(
                    "{}: its manifest ends at {}, not at the backup's cluster time {}",
                    who(v),
                    manifest.last_write,
                    common.target
                ));
                continue;
            }
            let t = DateTime::from_timestamp(manifest.last_write.t.into(), 0);
            last_write = last_write.max(t);
            parts.push(BackupReplicaSet {
                name: manifest.replica_set.clone(),
                node: manifest.node.clone(),
                mongod_version: manifest.mongod_version.clone(),
                uncompressed_bytes: manifest.uncompressed_bytes,
                stored_bytes: manifest.stored_bytes,
                encryption: manifest.encryption.clone(),
                encryption_recorded: manifest.encryption_recorded,
                storage_options: manifest.storage_options.clone(),
                collections: manifest.collections.clone(),
                last_write_optime: Some(manifest.last_write),
            });
        }
    }
    // Judged once, before the decision: an increment decided done stays done (its marker
    // is then finished whatever its source does later), so no pass can fail it forever.
    if let Some(source) = settings
        .incremental
        .as_ref()
        .and_then(|l| l.source.as_ref())
        && !ex.control.exists(&result_key(&op.id)).await?
        && let Some(why) = source_problem(ex, source).await?
    {
        failures.push(format!(
            "backup {source}, which this increment continues, {why}: the increment could not \
             be restored"
        ));
    }
    let reason = if failures.is_empty() {
        format!(
            "every replica set's manifest is in storage; backup.json written ({} replica set(s))",
            views.len()
        )
    } else {
        format!("failed, never restorable: {}", failures.join("; "))
    };
    // Decide once, first: what a second writer or an earlier pass decided is what the
    // marker, the catalog and the ledger then say.
    let result = ex
        .decide_once(OpResult {
            op_id: op.id.clone(),
            status: if failures.is_empty() {
                RunStatus::Done
            } else {
                RunStatus::Error
            },
            decided_at: now,
            reason,
            nodes: Vec::new(),
            epoch: None,
        })
        .await?;
    if result.status == RunStatus::Cancelled {
        // Another reconciler decided it cancelled first: its cleanup is ours to finish.
        return cancelled(ex, record, &settings, backup, &result, now).await;
    }
    let status = result.status;
    if status == RunStatus::Done && !failures.is_empty() {
        // Decided Done by an earlier pass, and now a manifest does not read back: never
        // write a marker that leaves a replica set out. Try again next pass.
        return Err(ExecError::Invalid(format!(
            "backup {backup} was decided done but now: {}",
            failures.join("; ")
        )));
    }
    if status == RunStatus::Done {
        let store = BackupStore::open_with_env(&settings.storage, ex.storage_env.clone())?;
        let key = layout::backup_marker_key(backup);
        let marker = BackupMarker {
            backup: backup.clone(),
            cluster: op.cluster.clone(),
            op_id: op.id.clone(),
            completed_at: result.decided_at,
            replica_sets: parts.clone(),
            cluster_time: common.as_ref().map(|c| c.target),
        };
        store.put_json(&key, &marker).await?;
        store.flush().await?;
        // Read back before the catalog calls the backup restorable.
        if store.get_json::<BackupMarker>(&key).await?.as_ref() != Some(&marker) {
            return Err(ExecError::Invalid(format!(
                "{key} in {} does not read back as written",
                store.url()
            )));
        }
    }
    let catalog = BackupRecord {
        name: backup.clone(),
        cluster: op.cluster.clone(),
        storage: settings.storage_name.clone(),
        schedule: settings.schedule.clone(),
        backup_type: settings.backup_type,
        status,
        complete: status == RunStatus::Done,
        started_at: record.started_at,
        finished_at: Some(now),
        last_write,
        replica_sets: parts,
        deleting: None,
        // Asked for by its schedule: not good until checked (see `verify`).
        verification: settings
            .verify
            .filter(|_| status == RunStatus::Done)
            .map(Verification::pending),
        incremental: settings.incremental.clone(),
    };
    ex.control.put(&catalog_key(backup), &catalog).await?;
    ex.finish_record(record, status, result.reason, now).await
}
