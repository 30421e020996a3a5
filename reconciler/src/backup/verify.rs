//! Verification of a completed backup, when its schedule asks (`verify: metadata | data`):
//! the catalog entry is written `pending` (not good yet), checked where it is stored,
//! then recorded `passed` or `failed` with every problem. A data check can take hours, so
//! it runs beside the passes, never inside one; a restarted reconciler (or a new leader)
//! finds the entry still pending and checks it again.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tidemark_schema::control::{
    BackupRecord, StorageTarget, Verification, VerificationStatus, catalog_key,
};
use tidemark_schema::model::VerifyLevel;
use tidemark_store::control::ControlPlane;
use tidemark_store::storage::BackupStore;
use tidemark_store::verify::{Level, verify_backup};

use crate::execute::ExecError;

fn no_progress(_: tidemark_store::verify::Progress) {}

/// Checks `backup` and records the outcome in its catalog entry, unless the entry changed
/// meanwhile (deleted, or already decided): returns what was recorded.
pub async fn verify_and_record(
    control: &ControlPlane,
    storage: &StorageTarget,
    storage_env: &[(String, String)],
    backup: &str,
    level: VerifyLevel,
) -> Result<Option<Verification>, ExecError> {
    let store = BackupStore::open_with_env(storage, storage_env.iter().cloned())?;
    let depth = match level {
        VerifyLevel::Metadata => Level::Metadata,
        VerifyLevel::Data => Level::Data,
    };
    let verified = verify_backup(&store, backup, depth, &no_progress).await?;
    let key = catalog_key(backup);
    let Some(mut record) = control.get::<BackupRecord>(&key).await? else {
        return Ok(None); // deleted meanwhile
    };
    if record.deleting.is_some()
        || record
            .verification
            .as_ref()
            .is_none_or(|v| v.status != VerificationStatus::Pending)
    {
        return Ok(None);
    }
    let outcome = Verification {
        level,
        status: if verified.ok() {
            VerificationStatus::Passed
        } else {
            VerificationStatus::Failed
        },
        at: Some(Utc::now()),
        problems: verified.problems.iter().map(|p| p.to_string()).collect(),
    };
    record.verification = Some(outcome.clone());
    control.put(&key, &record).await?;
    if verified.ok() {
        tracing::info!(
            backup,
            ?level,
            objects = verified.objects,
            "backup verified"
        );
    } else {
        tracing::error!(
            backup,
            ?level,
            problems = verified.problems.len(),
            "backup failed verification; it is not counted as good"
        );
    }
    Ok(Some(outcome))
}

/// The verifications this process runs in the background, by backup, so a pass does not
/// start a second one of the same backup.
#[derive(Clone, Default)]
pub struct Verifier {
    running: Arc<Mutex<BTreeSet<String>>>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Verifier {
    /// Starts checking `backup` in the background unless it is being checked already.
    pub fn spawn(
        &self,
        control: ControlPlane,
        storage: StorageTarget,
        storage_env: Vec<(String, String)>,
        backup: String,
        level: VerifyLevel,
    ) {
        if !self
            .running
            .lock()
            .expect("not poisoned")
            .insert(backup.clone())
        {
            return;
        }
        let running = self.running.clone();
        let task = tokio::spawn(async move {
            if let Err(e) =
                verify_and_record(&control, &storage, &storage_env, &backup, level).await
            {
                // Left pending: the next pass starts it again.
                tracing::warn!(backup, error = %e, "cannot verify the backup now; retrying");
            }
            running.lock().expect("not poisoned").remove(&backup);
        });
        let mut tasks = self.tasks.lock().expect("not poisoned");
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Waits for every verification started so far (`reconcile --once` must not exit,
    /// and so kill them, before they have recorded their outcome).
    pub async fn wait_all(&self) {
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().expect("not poisoned"));
        for t in tasks {
            let _ = t.await;
        }
    }
}
