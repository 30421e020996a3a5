//! Deleting one backup: mark its catalog entry `deleting` (from then on no restore picks
//! it), delete its storage objects data first and marker last, then the catalog entry.
//! Its once-per-name ledger record stays: the name, and a schedule's slot, stay claimed.
//! A crash anywhere is finished by the next pass, which sees the mark.

use chrono::{DateTime, Utc};
use tidemark_schema::control::{BackupRecord, StorageTarget, catalog_key};
use tidemark_store::storage::BackupStore;

use crate::execute::{ExecError, Executor};

/// Deletes `record`'s backup from `storage` and the catalog.
pub async fn delete_backup(
    ex: &Executor,
    record: &BackupRecord,
    storage: &StorageTarget,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), ExecError> {
    let key = catalog_key(&record.name);
    if record.deleting.is_none() {
        let marked = BackupRecord {
            deleting: Some(now),
            ..record.clone()
        };
        ex.control.put(&key, &marked).await?;
        // Mark first, then look again: a restore another partition's leader started from
        // this backup since our plan (a restore records itself, then reads the catalog)
        // either shows now and wins, or sees the mark and refuses.
        if pinned_after_mark(ex, &record.name).await? {
            ex.control.put(&key, record).await?;
            return Err(ExecError::Invalid(format!(
                "backup {:?} kept: a restore, a drill or an increment started from it just now",
                record.name
            )));
        }
    }
    // The mark may be an earlier pass's (an interrupted deletion): check once more that
    // this process still leads before any object goes.
    ex.control.still_leading().await?;
    let store = BackupStore::open_with_env(storage, ex.storage_env.iter().cloned())?;
    let deleted = store.delete_backup(&record.name).await?;
    ex.control.delete(&key).await?;
    tracing::info!(
        backup = %record.name,
        storage = %record.storage,
        data = deleted.data,
        manifests = deleted.manifests,
        marker = deleted.marker,
        reason,
        "deleted backup"
    );
    Ok(())
}

/// Whether a restore, a drill or an increment that has not ended uses backup `name`, read
/// after the backup was marked for deletion. A restore recorded between the caller's read
/// and the mark reads the catalog next and ends refused on seeing the mark: it is given a
/// moment to do so, rather than both giving up.
async fn pinned_after_mark(ex: &Executor, name: &str) -> Result<bool, ExecError> {
    for attempt in 0..4 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let again = tidemark_store::control::observe(&ex.control).await?;
        if !crate::plan::pinned_backups(None, &again, Utc::now()).contains(name) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `tidemark forget-backup`: a deliberate deletion, refused while any restore that has not
/// ended uses the backup. The storage comes from the backup's own ledger record (the
/// settings it was taken with), so a backup whose schedule is gone can still be found.
pub async fn forget_backup(
    ex: &Executor,
    name: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<BackupRecord, ExecError> {
    let observed = tidemark_store::control::observe(&ex.control).await?;
    let record = observed
        .backups
        .iter()
        .find(|b| b.name == name)
        .cloned()
        .ok_or_else(|| ExecError::Invalid(format!("no backup named {name:?} in the catalog")))?;
    // Restores declared in the applied revision and not run yet count, as for retention.
    let desired = observed
        .applied
        .as_ref()
        .and_then(crate::run::desired_from_applied);
    if crate::plan::pinned_backups(desired.as_ref(), &observed, chrono::Utc::now()).contains(name) {
        return Err(ExecError::Invalid(format!(
            "backup {name:?} is needed by a Restore, a drill or an increment that is pending or \
             running; it cannot be forgotten before that ends (or the Restore is removed from \
             the desired state)"
        )));
    }
    // A restore of a later increment would need it: the chain is forgotten newest first.
    if let Some(child) = observed.backups.iter().find(|b| {
        b.deleting.is_none()
            && b.incremental.as_ref().and_then(|l| l.source.as_deref()) == Some(name)
    }) {
        return Err(ExecError::Invalid(format!(
            "backup {name:?} is a link of an incremental chain and backup {:?} is built on it; \
             forget the chain's later backups first, newest first",
            child.name
        )));
    }
    let ledger = observed
        .oneshots
        .get(&(
            tidemark_schema::control::OneShotKind::Backup,
            name.to_string(),
        ))
        .ok_or_else(|| {
            ExecError::Invalid(format!(
                "backup {name:?} has no ledger record, so its storage is unknown"
            ))
        })?;
    if !ledger.is_final() {
        // The reconciler still finishes it and would write its catalog entry back.
        return Err(ExecError::Invalid(format!(
            "backup {name:?} is still {}; forget it after it ends",
            ledger.status
        )));
    }
    if record
        .verification
        .as_ref()
        .is_some_and(|v| v.status == tidemark_schema::control::VerificationStatus::Pending)
    {
        // Its verification rewrites the catalog entry when it ends; deleting meanwhile
        // could leave an entry for a backup that is gone. A backup whose storage is gone
        // fails verification quickly, and can be forgotten then.
        return Err(ExecError::Invalid(format!(
            "backup {name:?} is being verified; forget it after its verification ends"
        )));
    }
    let storage: StorageTarget = ledger
        .started_with
        .as_ref()
        .and_then(|s| serde_json::from_value(s["settings"]["storage"].clone()).ok())
        .ok_or_else(|| {
            ExecError::Invalid(format!(
                "backup {name:?}: its ledger record holds no storage settings"
            ))
        })?;
    // Mark first, then look again: a restore the reconciler started from this backup
    // between our read and the mark must win, and the mark is taken back.
    let marked = BackupRecord {
        deleting: Some(now),
        ..record.clone()
    };
    ex.control.put(&catalog_key(name), &marked).await?;
    if pinned_after_mark(ex, name).await? {
        ex.control.put(&catalog_key(name), &record).await?;
        return Err(ExecError::Invalid(format!(
            "a Restore, a drill or an increment started from backup {name:?} just now; nothing \
             was deleted"
        )));
    }
    // Who asked goes into the ledger record the name keeps, before anything is deleted
    // (a crash after the deletion must not lose it), from a fresh read, once the deletion
    // is certain.
    let ledger_key = tidemark_schema::control::oneshot_key("backup", name);
    let fresh: tidemark_schema::control::OneShotRecord = ex
        .control
        .get(&ledger_key)
        .await?
        .unwrap_or_else(|| ledger.clone());
    let requested = tidemark_schema::control::OneShotRecord {
        forgotten: Some(tidemark_schema::control::OperatorCommand {
            command: "forget-backup".into(),
            by: by.to_string(),
            at: now,
        }),
        ..fresh
    };
    ex.control.put(&ledger_key, &requested).await?;
    let reason = format!("forgotten on request (forget-backup by {by})");
    delete_backup(ex, &marked, &storage, &reason, now).await?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schema::control::{OneShotRecord, oneshot_key};

    /// Retention in one partition must not delete a backup that a restore in another
    /// partition (its plan made from another reading) has just started from.
    #[tokio::test]
    async fn a_backup_a_restore_just_started_from_is_kept_and_unmarked() {
        let (dir, storage) = (
            tempfile::TempDir::new().unwrap(),
            tempfile::TempDir::new().unwrap(),
        );
        let ex = Executor::on_directory(dir.path());
        let record: BackupRecord = serde_json::from_value(serde_json::json!({
            "name": "b1", "cluster": "prod", "storage": "s3", "schedule": "nightly",
            "type": "physical", "status": "done", "complete": true,
            "startedAt": "2026-12-01T01:00:00Z", "replicaSets": [],
        }))
        .unwrap();
        ex.control.put(&catalog_key("b1"), &record).await.unwrap();
        // What the other partition's leader wrote first: the restore's ledger record.
        let restore: OneShotRecord = serde_json::from_value(serde_json::json!({
            "kind": "Restore", "name": "to-staging", "opId": "op1",
            "startedAt": "2026-12-05T01:00:00Z", "status": "running",
            "startedWith": {"op": {"cluster": "staging"}, "settings": {"backup": "b1"}},
        }))
        .unwrap();
        ex.control
            .put(&oneshot_key("restore", "to-staging"), &restore)
            .await
            .unwrap();
        let target = StorageTarget {
            url: format!("file://{}", storage.path().display()),
            compression: tidemark_schema::model::Compression::None,
            compression_level: None,
            options: Default::default(),
        };
        let e = delete_backup(&ex, &record, &target, "keepLast 1", Utc::now())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("started from it just now"), "{e}");
        let kept: BackupRecord = ex.control.get(&catalog_key("b1")).await.unwrap().unwrap();
        assert_eq!(kept.deleting, None, "the mark is taken back");
    }
}
