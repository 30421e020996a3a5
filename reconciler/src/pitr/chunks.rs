//! Deleting oplog chunks retention judged useless: each chunk's data first, then its
//! index record, so the index never names data that a kept backup needs and is gone.
//! A crash between the two leaves a record whose data is gone; those chunks were
//! useless already, and the next pass deletes the record (a missing object is no error).

use tidemark_schema::control::{BackupRecord, StorageTarget, catalog_key};
use tidemark_store::storage::BackupStore;

use crate::execute::{ExecError, Executor};

/// Deletes each `(record key, object key)` of `records` from `storage` and the index, once
/// every backup of `after_deleting` (those alone could use the chunks) is marked for
/// deletion or gone: if one's deletion failed in this pass, it is still restorable, and so
/// must its chunks be. The next pass tries again.
pub async fn delete_chunks(
    ex: &Executor,
    storage: &StorageTarget,
    records: &[(String, String)],
    after_deleting: &[String],
    reason: &str,
) -> Result<usize, ExecError> {
    for backup in after_deleting {
        let record: Option<BackupRecord> = ex.control.get(&catalog_key(backup)).await?;
        if record.is_some_and(|r| r.deleting.is_none()) {
            return Err(ExecError::Invalid(format!(
                "oplog chunks kept for now: backup {backup:?}, which alone rolls forward through \
                 them, is not deleted yet ({reason})"
            )));
        }
    }
    ex.control.still_leading().await?;
    let store = BackupStore::open_with_env(storage, ex.storage_env.iter().cloned())?;
    for (record, object) in records {
        store.delete_object(object).await?;
        ex.control.delete(record).await?;
    }
    tracing::info!(chunks = records.len(), reason, "deleted oplog chunks");
    Ok(records.len())
}
