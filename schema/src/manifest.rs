//! The backup manifest: what a replica set's backup holds, file by file, and where its
//! objects are in storage. Paths from a manifest are validated on read, because a
//! manifest is input: a restore must never write outside the dbPath.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{BackupType, Compression};

/// A MongoDB timestamp (`Timestamp(t, i)`): seconds and an ordinal within the second.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct OpTime {
    pub t: u32,
    pub i: u32,
}

impl std::fmt::Display for OpTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Timestamp({}, {})", self.t, self.i)
    }
}

pub const MANIFEST_FORMAT: u32 = 1;

/// `<backup>/<rs>/manifest.json`: written by the agent after every file is stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetManifest {
    pub format: u32,
    pub backup: String,
    pub cluster: String,
    pub replica_set: String,
    /// The node (`host:port`) the files were copied from.
    pub node: String,
    /// `shardsvr` or `configsvr` for a sharded cluster's replica sets (`sharding.clusterRole`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_role: Option<String>,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    pub compression: Compression,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `$backupCursor`'s backupId.
    pub backup_id: String,
    pub checkpoint_timestamp: OpTime,
    /// The point in time the data restores to (the cursor's oplogEnd, or the extension).
    pub last_write: OpTime,
    pub mongod_version: String,
    /// `psmdb` or `community`.
    pub flavor: String,
    /// mongod's storage options that a restore must match (engine, directoryPerDB, …).
    pub storage_options: BTreeMap<String, serde_json::Value>,
    /// The backed-up node's encryption at rest (cipher and key source, never the key);
    /// `None` for an unencrypted node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::encryption::EncryptionSettings>,
    /// Set by agents that record `encryption`: a manifest without it (an older agent)
    /// says nothing about encryption, and no check relies on its absence.
    #[serde(default)]
    pub encryption_recorded: bool,
    pub files: Vec<FileEntry>,
    /// Sum of `uncompressedSize`: what the data needs on disk (the fallback check uses it).
    pub uncompressed_bytes: u64,
    /// Sum of `storedSize`: what a restore downloads.
    pub stored_bytes: u64,
    /// `dbHash` of the namespaces a drill asked for (`db.collection` → md5), recorded only
    /// when the collection was the same just before the cursor opened and after it
    /// closed, so that it is the hash of exactly what this backup restores.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub collection_hashes: BTreeMap<String, String>,
    /// Namespaces asked for whose hash changed while the backup ran, or could not be
    /// taken (not recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unstable_hashes: Vec<String>,
    /// Each user collection's documents and data bytes when the backup was taken
    /// (`db.collection` →), so that a selective restore's plan can say what it copies.
    /// Empty when the node could not tell (the backup is restorable all the same).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub collections: BTreeMap<String, CollectionSize>,
    /// An incremental backup's link to its chain; `None` for full and external backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<ManifestIncrement>,
}

/// How an incremental backup of one replica set continues its chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestIncrement {
    /// The `thisBackupName` the node's `$backupCursor` was opened with.
    pub this_name: String,
    /// The backup whose files this one holds the changes since; `None` for a base (whose
    /// files are all full copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The chain's first backup (this backup for a base).
    pub base: String,
    /// Bytes per tracked block: every `blocks` hash covers this much of its file.
    pub block_size: u64,
}

/// One changed range of a file in an increment, stored as its own object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeEntry {
    pub offset: u64,
    pub length: u64,
    /// Bytes of the object in storage (after compression).
    pub stored_size: u64,
    /// `blake3:<hex>` of the range's bytes.
    pub checksum: String,
    pub object: String,
}

impl RangeEntry {
    /// The range as an object of its own, as storage checks and downloads objects.
    pub fn as_file_entry(&self, path: &str) -> FileEntry {
        FileEntry {
            path: format!("{path} (range at {} B)", self.offset),
            size: self.length,
            stored_size: self.stored_size,
            uncompressed_size: self.length,
            checksum: self.checksum.clone(),
            mode: 0,
            object: Some(self.object.clone()),
            ranges: Vec::new(),
            blocks: Vec::new(),
        }
    }
}

/// A collection's size in a backup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionSize {
    pub documents: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Relative to the dbPath, `/`-separated.
    pub path: String,
    /// The size `$backupCursor` listed.
    pub size: u64,
    /// Bytes of the object in storage (after compression); 0 for external backups.
    pub stored_size: u64,
    /// Bytes copied from the file, which is what is written back on restore.
    pub uncompressed_size: u64,
    /// `blake3:<hex>` of the uncompressed bytes; empty for external backups.
    pub checksum: String,
    /// Unix permission bits.
    pub mode: u32,
    /// Object key relative to the storage root; `None` for external backups, and in an
    /// increment for a file rebuilt from the chain (its `ranges`, possibly none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// In an increment, a file without `object`: the ranges changed since the previous
    /// backup of the chain, written over that backup's file at their offsets (after
    /// which the file is cut to `size`). Empty: the file did not change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<RangeEntry>,
    /// In an incremental chain: `blake3` (first 16 bytes, hex) of each block of the file
    /// as it is at this backup, so that a file rebuilt from a chain is proved whole
    /// without reading it back at backup time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest does not parse: {0}")]
    Parse(String),
    #[error("manifest format {0} is not supported (this tidemark reads format {MANIFEST_FORMAT})")]
    Format(u32),
    #[error("manifest file path {path:?} is unsafe: {why}")]
    UnsafePath { path: String, why: &'static str },
    #[error("manifest totals do not add up: {0}")]
    Totals(String),
    #[error("manifest {field} {name:?} is unsafe as a directory name: {why}")]
    UnsafeName {
        field: &'static str,
        name: String,
        why: &'static str,
    },
}

/// Why a name read from storage (a replica set's, a backup's) cannot be one component of
/// a local path, or `None`. Agents join such names to directories (a drill's scratch
/// dbPath per replica set): `..` or a slash would put files outside it.
pub fn unsafe_name_reason(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty");
    }
    if name.len() > 255 {
        return Some("longer than 255 bytes");
    }
    if name.contains(['/', '\\', '\0']) {
        return Some("contains a slash, a backslash or a NUL byte");
    }
    if name == "." || name == ".." {
        return Some("is '.' or '..'");
    }
    if name.starts_with(".tidemark") {
        return Some("is reserved for tidemark's own files");
    }
    None
}

/// Why a manifest path could escape the dbPath, or `None` if it is a plain relative path.
pub fn unsafe_path_reason(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("empty");
    }
    if path.starts_with('/') || path.starts_with('\\') {
        return Some("absolute");
    }
    if path.contains('\\') {
        return Some("contains a backslash");
    }
    if path.contains('\0') {
        return Some("contains a NUL byte");
    }
    for part in path.split('/') {
        match part {
            "" => return Some("has an empty component"),
            "." | ".." => return Some("has a '.' or '..' component"),
            _ => {}
        }
    }
    // The agent's own entries at the top of the dbPath: a restore must never write into
    // the fallback copy it may have to move back, nor over its state or pid files.
    let first = path.split('/').next().unwrap_or_default();
    if first.starts_with(".tidemark") {
        return Some("points into tidemark's own files (the fallback directory or its state)");
    }
    if path == "mongod.lock" {
        return Some("is mongod.lock, which a backup never holds");
    }
    None
}

impl ReplicaSetManifest {
    /// Whether `f` is rebuilt from the earlier backups of the chain plus its ranges
    /// (rather than stored whole, or copied by a snapshot).
    pub fn is_patch(&self, f: &FileEntry) -> bool {
        f.object.is_none()
            && self
                .incremental
                .as_ref()
                .is_some_and(|i| i.source.is_some())
    }

    /// Parses and validates a manifest read from storage.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: ReplicaSetManifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))?;
        if m.format != MANIFEST_FORMAT {
            return Err(ManifestError::Format(m.format));
        }
        for (field, name) in [
            ("backup", &m.backup),
            ("cluster", &m.cluster),
            ("replicaSet", &m.replica_set),
        ] {
            if let Some(why) = unsafe_name_reason(name) {
                return Err(ManifestError::UnsafeName {
                    field,
                    name: name.clone(),
                    why,
                });
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &m.files {
            if !seen.insert(f.path.as_str()) {
                return Err(ManifestError::UnsafePath {
                    path: f.path.clone(),
                    why: "is listed twice",
                });
            }
            if let Some(why) = unsafe_path_reason(&f.path) {
                return Err(ManifestError::UnsafePath {
                    path: f.path.clone(),
                    why,
                });
            }
            if let Some(object) = &f.object
                && let Some(why) = unsafe_path_reason(object)
            {
                return Err(ManifestError::UnsafePath {
                    path: object.clone(),
                    why,
                });
            }
        }
        for f in &m.files {
            check_increment_entry(&m, f)?;
        }
        let uncompressed: u64 = m.files.iter().map(|f| f.uncompressed_size).sum();
        let stored: u64 = m.files.iter().map(|f| f.stored_size).sum();
        if uncompressed != m.uncompressed_bytes || stored != m.stored_bytes {
            return Err(ManifestError::Totals(format!(
                "files sum to {uncompressed} B uncompressed / {stored} B stored, the manifest says \
                 {} / {}",
                m.uncompressed_bytes, m.stored_bytes
            )));
        }
        Ok(m)
    }
}

/// An increment's file entry: ranges in order, inside the file, on safe objects, adding
/// up to the entry's sizes; and one block hash per block in a chain.
fn check_increment_entry(m: &ReplicaSetManifest, f: &FileEntry) -> Result<(), ManifestError> {
    let bad = |why: &'static str| ManifestError::UnsafePath {
        path: f.path.clone(),
        why,
    };
    let Some(inc) = &m.incremental else {
        return match f.ranges.is_empty() {
            true => Ok(()),
            false => Err(bad("has ranges in a backup that is not incremental")),
        };
    };
    if inc.block_size == 0 {
        return Err(ManifestError::Totals("incremental block size is 0".into()));
    }
    if !f.ranges.is_empty() && (f.object.is_some() || inc.source.is_none()) {
        return Err(bad("has ranges but is a full copy"));
    }
    let mut end = 0;
    for r in &f.ranges {
        if r.offset < end || r.length == 0 || r.offset + r.length > f.size {
            return Err(bad(
                "has ranges out of order, empty or past the file's size",
            ));
        }
        if let Some(why) = unsafe_path_reason(&r.object) {
            return Err(ManifestError::UnsafePath {
                path: r.object.clone(),
                why,
            });
        }
        end = r.offset + r.length;
    }
    if m.is_patch(f) {
        let length: u64 = f.ranges.iter().map(|r| r.length).sum();
        let stored: u64 = f.ranges.iter().map(|r| r.stored_size).sum();
        if length != f.uncompressed_size || stored != f.stored_size {
            return Err(ManifestError::Totals(format!(
                "{}: ranges sum to {length} B / {stored} B stored, the entry says {} / {}",
                f.path, f.uncompressed_size, f.stored_size
            )));
        }
    }
    if f.blocks.len() as u64 != f.size.div_ceil(inc.block_size) {
        return Err(ManifestError::Totals(format!(
            "{}: {} block hashes for {} B in blocks of {} B",
            f.path,
            f.blocks.len(),
            f.size,
            inc.block_size
        )));
    }
    Ok(())
}

/// The `thisBackupName` a node's `$backupCursor` gets for backup `backup`: WiredTiger
/// takes it inside a configuration string, so only letters, digits and `_`, and a hash
/// of the full name keeps two names that differ only in other characters apart.
pub fn incremental_cursor_name(backup: &str) -> String {
    use sha2::Digest;
    let clean: String = backup
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(48)
        .collect();
    let hash = sha2::Sha256::digest(backup.as_bytes());
    let hex: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("tm_{clean}_{hex}")
}

/// Storage layout of backups, relative to a `BackupStorage` URL.
pub mod layout {
    use crate::model::Compression;

    /// `<backup>/<rs>/manifest.json`: the replica set's part is complete once this exists.
    pub fn rs_manifest_key(backup: &str, rs: &str) -> String {
        format!("{backup}/{rs}/manifest.json")
    }

    /// `<backup>/backup.json`: the cluster-wide completion marker, written last.
    pub fn backup_marker_key(backup: &str) -> String {
        format!("{backup}/backup.json")
    }

    /// `<backup>/<rs>/files/<path>[.zst|.lz4]`.
    pub fn file_object_key(backup: &str, rs: &str, path: &str, compression: Compression) -> String {
        format!("{backup}/{rs}/files/{path}{}", extension(compression))
    }

    /// `<backup>/<rs>/ranges/<path>.<offset>-<length>[.zst|.lz4]`: one changed range of a
    /// file in an increment.
    pub fn range_object_key(
        backup: &str,
        rs: &str,
        path: &str,
        (offset, length): (u64, u64),
        compression: Compression,
    ) -> String {
        format!(
            "{backup}/{rs}/ranges/{path}.{offset}-{length}{}",
            extension(compression)
        )
    }

    fn extension(compression: Compression) -> &'static str {
        match compression {
            Compression::Zstd => ".zst",
            Compression::Lz4 => ".lz4",
            Compression::None => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a\\b",
            ".tidemark-fallback/collection-1.wt",
            ".tidemark-fallback-state.json",
            "mongod.lock",
        ] {
            assert!(unsafe_path_reason(bad).is_some(), "{bad:?}");
        }
        for good in [
            "WiredTiger",
            "journal/WiredTigerLog.0000000001",
            "db/collection-1.wt",
        ] {
            assert!(unsafe_path_reason(good).is_none(), "{good:?}");
        }
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [
            "",
            "..",
            ".",
            "../../etc",
            "rs0/x",
            "a\\b",
            ".tidemark-fallback",
        ] {
            assert!(unsafe_name_reason(bad).is_some(), "{bad:?}");
        }
        for good in ["rs0", "shard-1", "cfg", "nightly-20260301T010000Z"] {
            assert!(unsafe_name_reason(good).is_none(), "{good:?}");
        }
    }

    /// A manifest whose replica-set name would lead a drill's scratch directory out of
    /// its drill dir is refused when read, before any path is built from it.
    #[test]
    fn a_manifest_with_an_unsafe_replica_set_name_does_not_parse() {
        let good = serde_json::json!({
            "format": MANIFEST_FORMAT, "backup": "b1", "cluster": "c1", "replicaSet": "rs0",
            "node": "db1:27017", "type": "physical", "compression": "none",
            "startedAt": "2026-03-01T00:00:00Z", "finishedAt": "2026-03-01T00:01:00Z",
            "backupId": "x", "checkpointTimestamp": {"t": 1, "i": 1}, "flavor": "psmdb",
            "storageOptions": {}, "lastWrite": {"t": 1, "i": 1}, "mongodVersion": "7.0.14",
            "files": [],
            "uncompressedBytes": 0, "storedBytes": 0,
        });
        let parse =
            |v: &serde_json::Value| ReplicaSetManifest::from_json(&serde_json::to_vec(v).unwrap());
        if let Err(e) = parse(&good) {
            panic!("the good manifest must parse: {e}");
        }
        let mut bad = good.clone();
        bad["replicaSet"] = "../../home".into();
        let err = parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("replicaSet") && err.contains("../../home"),
            "{err}"
        );
    }
}
