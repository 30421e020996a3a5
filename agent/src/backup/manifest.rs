//! Builds and writes the replica set's manifest, the last object of a backup.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tidemark_schema::manifest::{FileEntry, MANIFEST_FORMAT, OpTime, ReplicaSetManifest, layout};
use tidemark_schema::model::{BackupType, Compression};

use crate::mongod::NodeFacts;
use crate::node::Node;
use crate::storage::{BackupStore, StorageError};

pub struct Input<'a> {
    pub node: &'a Node,
    pub backup: &'a str,
    pub backup_type: BackupType,
    pub compression: Compression,
    pub started_at: DateTime<Utc>,
    pub facts: &'a NodeFacts,
    pub cmdline: &'a bson::Document,
    pub checkpoint: OpTime,
    pub last_write: OpTime,
    pub files: Vec<FileEntry>,
    pub incremental: Option<tidemark_schema::manifest::ManifestIncrement>,
}

pub fn build(i: Input) -> ReplicaSetManifest {
    ReplicaSetManifest {
        format: MANIFEST_FORMAT,
        backup: i.backup.to_string(),
        cluster: i.node.cluster.clone(),
        replica_set: i.node.replica_set.clone(),
        node: i.node.id.clone(),
        cluster_role: i
            .cmdline
            .get_document("parsed")
            .and_then(|p| p.get_document("sharding"))
            .and_then(|s| s.get_str("clusterRole"))
            .ok()
            .map(str::to_string),
        backup_type: i.backup_type,
        compression: match i.backup_type {
            BackupType::Physical | BackupType::Incremental => i.compression,
            BackupType::External => Compression::None,
        },
        started_at: i.started_at,
        finished_at: Utc::now(),
        backup_id: String::new(),
        checkpoint_timestamp: i.checkpoint,
        last_write: i.last_write,
        mongod_version: i.facts.version.clone(),
        flavor: i.facts.flavor.clone(),
        storage_options: storage_options(i.cmdline),
        encryption: crate::mongod::encryption::settings(i.cmdline),
        encryption_recorded: true,
        uncompressed_bytes: i.files.iter().map(|f| f.uncompressed_size).sum(),
        stored_bytes: i.files.iter().map(|f| f.stored_size).sum(),
        files: i.files,
        collection_hashes: BTreeMap::new(),
        unstable_hashes: Vec::new(),
        collections: BTreeMap::new(),
        incremental: i.incremental,
    }
}

/// `parsed.storage` of `getCmdLineOpts`, minus the dbPath (which differs per node).
pub(crate) fn storage_options(cmdline: &bson::Document) -> BTreeMap<String, serde_json::Value> {
    cmdline
        .get_document("parsed")
        .and_then(|p| p.get_document("storage"))
        .map(|s| {
            s.iter()
                .filter(|(k, _)| k.as_str() != "dbPath")
                .map(|(k, v)| (k.clone(), v.clone().into_relaxed_extjson()))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn write(store: &BackupStore, m: &ReplicaSetManifest) -> Result<(), StorageError> {
    store
        .put_json(&layout::rs_manifest_key(&m.backup, &m.replica_set), m)
        .await
}
