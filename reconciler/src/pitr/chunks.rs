//! Deleting oplog chunks retention judged useless: each chunk's data first, then its
//! index record, so the index never names data that a kept backup needs and is gone.
//! A crash between the two leaves a record whose data is gone; those chunks were
//! useless already, and the next pass deletes the record (a missing object is no error).

use tidemark_schema::control::StorageTarget;
use tidemark_store::storage::BackupStore;

use crate::execute::{ExecError, Executor};

/// Deletes each `(record key, object key)` of `records` from `storage` and the index.
pub async fn delete_chunks(
    ex: &Executor,
    storage: &StorageTarget,
    records: &[(String, String)],
    reason: &str,
) -> Result<usize, ExecError> {
    ex.control.still_leading().await?;
    let store = BackupStore::open_with_env(storage, ex.storage_env.iter().cloned())?;
    for (record, object) in records {
        store.delete_object(object).await?;
        ex.control.delete(record).await?;
    }
    tracing::info!(chunks = records.len(), reason, "deleted oplog chunks");
    Ok(records.len())
}
