//! The metadata stage: the completion marker, every replica set's manifest (present,
//! valid, agreeing with the marker), and every object present with the size the manifest
//! records. Costs one HEAD per object; reads no data.

use futures::StreamExt;
use tidemark_schema::control::BackupMarker;
use tidemark_schema::manifest::{FileEntry, ReplicaSetManifest, layout};
use tidemark_schema::model::{BackupType, Compression};

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

/// The completion marker, and every replica set the backup holds: those the marker lists
/// and those with a directory in storage, so a set the marker leaves out is still checked
/// (a restore would restore it) and reported.
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
    let listing = store
        .object_store()
        .list_with_delimiter(Some(&object_store::path::Path::from(backup)))
        .await;
    let in_storage: Vec<String> = match listing {
        Ok(l) => l
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect(),
        Err(e) => {
            v.problem(
                None,
                None,
                Some(backup),
                format!("cannot list the backup's replica sets: {e}"),
            );
            Vec::new()
        }
    };
    let mut sets: Vec<String> = Vec::new();
    match &marker {
        Some(m) => {
            if m.backup != backup {
                v.problem(
                    None,
                    None,
                    Some(&marker_key),
                    format!("the marker names backup {:?}", m.backup),
                );
            }
            if m.replica_sets.is_empty() {
                v.problem(
                    None,
                    None,
                    Some(&marker_key),
                    "the marker lists no replica set",
                );
            }
            sets.extend(m.replica_sets.iter().map(|r| r.name.clone()));
            let unlisted: Vec<&String> =
                in_storage.iter().filter(|rs| !sets.contains(rs)).collect();
            for rs in unlisted {
                v.problem(
                    Some(rs),
                    None,
                    Some(&layout::rs_manifest_key(backup, rs)),
                    "in storage but not in the completion marker (a restore would still find it)",
                );
                sets.push(rs.clone());
            }
        }
        None => {
            if !v
                .problems
                .iter()
                .any(|p| p.object.as_deref() == Some(marker_key.as_str()))
            {
                v.problem(
                    None,
                    None,
                    Some(&marker_key),
                    "the completion marker is missing: the backup never completed, or the \
                     marker was lost; it is not restorable",
                );
            }
            sets = in_storage;
        }
    }
    Ok((marker, sets))
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
        // The raw bytes, parsed as the agent parses them (duplicate keys are an error).
        let raw = match store.get_bytes(&key).await? {
            Some(raw) => raw,
            None => {
                v.problem(
                    Some(rs),
                    None,
                    Some(&key),
                    "the replica set's manifest is missing",
                );
                continue;
            }
        };
        let manifest = match ReplicaSetManifest::from_json(&raw) {
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
        if let Some(m) = &marker
            && m.cluster != manifest.cluster
        {
            v.problem(
                Some(rs),
                None,
                Some(&key),
                format!(
                    "the manifest is of cluster {:?}, the marker of {:?}",
                    manifest.cluster, m.cluster
                ),
            );
        }
        v.replica_sets.push(rs.clone());
        if manifest.backup_type == BackupType::External {
            // Its files are in the operator's snapshots, not in this storage.
            v.external = true;
            continue;
        }
        let patches = manifest
            .incremental
            .as_ref()
            .is_some_and(|i| i.source.is_some());
        if let Some(source) = manifest.incremental.as_ref().and_then(|i| i.source.clone()) {
            v.source.get_or_insert(source);
        }
        for entry in manifest.files {
            if patches && entry.object.is_none() {
                // An increment's changed file: each range is an object of its own.
                objects.extend(entry.ranges.iter().map(|r| Checkable {
                    replica_set: rs.clone(),
                    compression: manifest.compression,
                    entry: r.as_file_entry(&entry.path),
                }));
                continue;
            }
            if entry.object.is_none() {
                v.problem(
                    Some(rs),
                    Some(&entry.path),
                    Some(&key),
                    "the manifest records no object for this file: a restore refuses it",
                );
                continue;
            }
            objects.push(Checkable {
                replica_set: rs.clone(),
                compression: manifest.compression,
                entry,
            });
        }
    }
    // Every object: present, with the size the manifest records.
    let total = objects.len();
    // Collected first, so the verification stays `Send` (see `data`).
    let stats: Vec<_> = objects
        .iter()
        .map(|c| store.object_size(c.entry.object.as_deref().unwrap_or_default()))
        .collect();
    let sizes: Vec<Result<Option<u64>, StorageError>> = futures::stream::iter(stats)
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
