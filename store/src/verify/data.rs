//! The data stage: every object that passed the metadata stage is read in full,
//! decompressed and compared with its blake3, a few at a time, each in bounded memory
//! (a short queue of 64 KiB chunks), so a terabyte backup verifies in megabytes of RAM.

use futures::StreamExt;

use super::metadata::Checkable;
use super::report::{Progress, Verified};
use crate::storage::{BackupStore, StorageError};

/// Objects read at once: enough to keep a network link and the cores busy, few enough
/// that memory stays bounded.
const PARALLEL_READS: usize = 4;

pub(crate) async fn check(
    store: &BackupStore,
    objects: &[Checkable],
    v: &mut Verified,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(), StorageError> {
    let total = objects.len();
    // The futures are collected first: a stream holding the closure that makes them would
    // not be `Send` for a spawned task (rustc's higher-ranked lifetime limitation).
    let checks: Vec<_> = objects
        .iter()
        .map(|c| async move { (c, store.check_object(&c.entry, c.compression).await) })
        .collect();
    let mut results = futures::stream::iter(checks).buffer_unordered(PARALLEL_READS);
    let mut checked = 0;
    while let Some((c, result)) = results.next().await {
        checked += 1;
        match result {
            Ok(bytes) => v.bytes_read += bytes,
            Err(StorageError::Corrupt { key, why, .. }) => {
                v.problem(Some(&c.replica_set), Some(&c.entry.path), Some(&key), why)
            }
            Err(StorageError::NotFound { key, .. }) => v.problem(
                Some(&c.replica_set),
                Some(&c.entry.path),
                Some(&key),
                "the object is missing",
            ),
            Err(e) => return Err(e),
        }
        progress(Progress {
            checked,
            total,
            bytes: v.bytes_read,
        });
    }
    Ok(())
}
