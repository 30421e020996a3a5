//! Checking a backup without restoring it (`tidemark verify`), one file per stage:
//! `metadata` (the completion marker and every replica set's manifest are there and agree,
//! every object exists with its recorded size) and `data` (every object read, decompressed
//! and checked against its blake3). `report` holds what they find.

mod data;
mod metadata;
mod report;

pub use report::{Level, Problem, Progress, Verified};

use crate::storage::{BackupStore, StorageError};

/// Verifies `backup` in `store` at `level`, calling `progress` as objects are checked.
/// Problems with the backup are in the result; `Err` only when the storage itself cannot
/// be read (after retries).
pub async fn verify_backup(
    store: &BackupStore,
    backup: &str,
    level: Level,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Verified, StorageError> {
    let mut verified = Verified::new(backup, store.url(), level);
    let manifests = metadata::check(store, backup, &mut verified, progress).await?;
    if level == Level::Data {
        data::check(store, &manifests, &mut verified, progress).await?;
    }
    Ok(verified)
}
