//! The metadata stage: the completion marker, every replica set's manifest (present,
//! valid, agreeing with the marker), and every object present with the size the manifest
//! records. Costs one HEAD per object; reads no data.

use futures::StreamExt;
use tidemark_schema::control::BackupMarker;
use tidemark_schema::manifest::{FileEntry, ReplicaSetManifest, layout};
use tidemark_schema::model::Compression;

use super::report::{Progress, Verified};
use crate::storage::{BackupStore, StorageError};

/// Objects stat'ed at once.
const PARALLEL_STATS: usize = 32;

/// An object that passed this stage, for the data stage.
pub(crate) struct Checkable {
    pub replica_set: String,
    pub compression: Compression,
    pub entry: FileEntry,
}

/// The replica sets a backup holds: the marker's, else whatever manifests are there.
async fn replica_sets(
    store: &BackupStore,
    backup: &str,
    v: &mut Verified,
) -> Result<(Option<BackupMarker>, Vec<String>), StorageError> {
    let marker_key = layout::backup_marker_key(backup);
    let marker = match store.get_json::<BackupMarker>(&marker_key).await {
        Ok(m) => m,
        Err(StorageError::Json { source, .. }) => {
            v.problem(
                None,
                None,
                Some(&marker_key),
                format!("the completion marker does not parse: {source}"),
            );
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(m) = &marker {
        if m.backup != backup {
            v.problem(
                None,
                None,
                Some(&marker_key),
                format!("the marker names backup {:?}", m.backup),
            );
        }
        return Ok((
            marker.clone(),
            m.replica_sets.iter().map(|r| r.name.clone()).collect(),
        ));
    }
    if !v
        .problems
        .iter()
        .any(|p| p.object.as_deref() == Some(marker_key.as_str()))
    {
        v.problem(
            None,
            None,
            Some(&marker_key),
            "the completion marker is missing: the backup never completed, or the marker was lost; it is not restorable",
        );
    }
    // Without a marker, look at what manifests exist, to say what else is wrong.
    let listed: Vec<String> = store
        .object_store()
        .list_with_delimiter(Some(&object_store::path::Path::from(backup)))
        .await
        .map(|l| {
            l.common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok((None, listed))
}

pub(crate) async fn check(
    store: &BackupStore,
    backup: &str,
    v: &mut Verified,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<Checkable>, StorageError> {
    let (marker, sets) = replica_sets(store, backup, v).await?;
    let mut objects: Vec<Checkable> = Vec::new();
    for rs in &sets {
        let key = layout::rs_manifest_key(backup, rs);
        let raw = match store.get_json::<serde_json::Value>(&key).await {
            Ok(Some(raw)) => raw,
            Ok(None) => {
                v.problem(
                    Some(rs),
                    None,
                    Some(&key),
                    "the replica set's manifest is missing",
                );
                continue;
            }
            Err(StorageError::Json { source, .. }) => {
                v.problem(
                    Some(rs),
                    None,
                    Some(&key),
                    format!("the manifest does not parse: {source}"),
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        let manifest = match ReplicaSetManifest::from_json(raw.to_string().as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                v.problem(Some(rs), None, Some(&key), e.to_string());
                continue;
            }
        };
        if manifest.backup != backup || &manifest.replica_set != rs {
            v.problem(
                Some(rs),
                None,
                Some(&key),
                format!(
                    "the manifest is of backup {:?}, replica set {:?}",
                    manifest.backup, manifest.replica_set
                ),
            );
        }
        if let Some(m) = &marker
            && let Some(part) = m.replica_sets.iter().find(|r| &r.name == rs)
            && (part.stored_bytes != manifest.stored_bytes
                || part.uncompressed_bytes != manifest.uncompressed_bytes)
        {
            v.problem(
                Some(rs),
                None,
                Some(&key),
                format!(
                    "the marker records {} B stored / {} B uncompressed, the manifest {} / {}",
                    part.stored_bytes,
                    part.uncompressed_bytes,
                    manifest.stored_bytes,
                    manifest.uncompressed_bytes
                ),
            );
        }
        v.replica_sets.push(rs.clone());
        for entry in manifest.files {
            if entry.object.is_some() {
                objects.push(Checkable {
                    replica_set: rs.clone(),
                    compression: manifest.compression,
                    entry,
                });
            }
        }
    }
    // Every object: present, with the size the manifest records.
    let total = objects.len();
    let sizes: Vec<Result<Option<u64>, StorageError>> = futures::stream::iter(objects.iter())
        .map(|c| store.object_size(c.entry.object.as_deref().unwrap_or_default()))
        .buffered(PARALLEL_STATS)
        .collect()
        .await;
    let mut passed = Vec::new();
    for (i, (c, size)) in objects.into_iter().zip(sizes).enumerate() {
        let key = c.entry.object.clone().unwrap_or_default();
        v.objects += 1;
        match size? {
            None => v.problem(
                Some(&c.replica_set),
                Some(&c.entry.path),
                Some(&key),
                "the object is missing",
            ),
            Some(n) if c.entry.stored_size != 0 && n != c.entry.stored_size => v.problem(
                Some(&c.replica_set),
                Some(&c.entry.path),
                Some(&key),
                format!(
                    "the object has {n} bytes, the manifest records {}{}",
                    c.entry.stored_size,
                    if n < c.entry.stored_size {
                        " (truncated)"
                    } else {
                        ""
                    }
                ),
            ),
            Some(_) => passed.push(c),
        }
        if i % 64 == 63 || i + 1 == total {
            progress(Progress {
                checked: i + 1,
                total,
                bytes: 0,
            });
        }
    }
    Ok(passed)
}
