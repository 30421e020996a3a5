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
    check_chain(store, &mut verified).await?;
    Ok(verified)
}

/// An increment restores only with every earlier backup of its chain: each is checked at
/// the metadata level (present, complete, every object with its size), its own data
/// having been checked when it was verified itself.
async fn check_chain(store: &BackupStore, verified: &mut Verified) -> Result<(), StorageError> {
    let mut next = verified.source.clone();
    while let Some(link) = next {
        if verified.chain.contains(&link)
            || verified.chain.len() >= tidemark_schema::chain::MAX_CHAIN
        {
            verified.problem(
                None,
                None,
                None,
                format!("the chain loops at backup {link}"),
            );
            break;
        }
        let mut sub = Verified::new(&link, store.url(), Level::Metadata);
        metadata::check(store, &link, &mut sub, &|_| {}).await?;
        verified.objects += sub.objects;
        for p in sub.problems {
            verified.problems.push(Problem {
                what: format!("chain link {link}: {}", p.what),
                ..p
            });
        }
        verified.chain.push(link);
        next = sub.source;
    }
    Ok(())
}
