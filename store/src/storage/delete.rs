//! Deleting a whole backup from its storage in the one safe order: data objects first,
//! then each replica set's manifest, then the cluster-wide completion marker. A crash at
//! any point leaves a backup that is visibly incomplete (no marker or no manifest), never
//! a manifest that points at missing data; running it again finishes the job.

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use super::error::StorageError;
use super::open::BackupStore;
use super::retry::{classify, with_retries};

/// What a deletion removed, by stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    pub data: u64,
    pub manifests: u64,
    pub marker: u64,
}

impl BackupStore {
    /// Deletes every object of backup `backup` (`<backup>/…`), data before manifests before
    /// the marker. Objects already gone are fine: this is how an interrupted deletion ends.
    pub async fn delete_backup(&self, backup: &str) -> Result<Deleted, StorageError> {
        if backup.is_empty() || backup.contains('/') {
            return Err(StorageError::InvalidKey {
                url: self.url.clone(),
                key: backup.to_string(),
                why: "a backup name is one non-empty path segment".into(),
            });
        }
        let prefix = self.path(backup)?;
        let keys: Vec<object_store::path::Path> =
            with_retries(&self.retry, &self.url, backup, "list", |_| async {
                self.store
                    .list(Some(&prefix))
                    .map_ok(|m| m.location)
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| classify(&self.url, backup, "list", e))
            })
            .await?;
        // Stage of a key: 0 data, 1 a replica set's manifest, 2 the completion marker.
        let stage = |k: &object_store::path::Path| {
            if k.as_ref().ends_with("/backup.json") {
                2
            } else if k.as_ref().ends_with("/manifest.json") {
                1
            } else {
                0
            }
        };
        let mut counts = [0u64; 3];
        for (current, count) in counts.iter_mut().enumerate() {
            for key in keys.iter().filter(|k| stage(k) == current) {
                let name = key.to_string();
                with_retries(&self.retry, &self.url, &name, "delete", |_| async {
                    match self.store.delete(key).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(classify(&self.url, &name, "delete", e)),
                    }
                })
                .await?;
                *count += 1;
            }
        }
        let deleted = Deleted {
            data: counts[0],
            manifests: counts[1],
            marker: counts[2],
        };
        if let Some(root) = &self.local_root {
            // The local store leaves empty directories behind; remove them, deepest first.
            remove_empty_dirs(&root.join(backup));
        }
        Ok(deleted)
    }
}

pub(crate) fn remove_empty_dirs(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir); // fails, harmlessly, while anything is left
}
