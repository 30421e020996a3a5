//! `Restore`: a one-shot physical restore. It runs once per name, ever.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreSpec {
    pub cluster: String,
    pub source: RestoreSource,
    /// Move each node's data aside before restoring, and move it back if the restore fails.
    #[serde(default)]
    pub fallback_enabled: bool,
    /// Accept a restore where some nodes failed if every replica set has one good node.
    #[serde(default = "yes")]
    pub allow_partly_done: bool,
    /// Snapshot-based restore: the operator copies the files, then runs `restore-finish`.
    #[serde(default)]
    pub external: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_restore: Option<PostRestore>,
    /// Backup replica-set name → this cluster's replica-set name, for a backup taken
    /// under other names (a cluster rebuilt elsewhere). Every replica set of the backup
    /// must land on one of the cluster's, under its own name or through this map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_set_remap: Option<std::collections::BTreeMap<String, String>>,
    /// Selective restore: only these namespaces (`db.coll`, or `db.*` for every collection
    /// of a database) are copied from the backup into the running cluster, through its
    /// primary; no node is stopped. Without it, the whole cluster is restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// Selective restore: a listed namespace → the namespace it is written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename_to: Option<std::collections::BTreeMap<String, String>>,
    /// Selective restore: what happens to a target collection that already exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_existing: Option<super::OnExisting>,
}

impl RestoreSpec {
    /// Whether this restore copies namespaces into the running cluster (selective) rather
    /// than replacing every node's data.
    pub fn is_selective(&self) -> bool {
        self.namespaces.is_some()
    }
}

fn yes() -> bool {
    true
}

/// `backup` or `latestOf`, exactly one; or `pointInTime`, with `backup` to pin the base.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreSource {
    /// A backup by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The newest good backup of this `BackupSchedule`, resolved when the restore starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_of: Option<String>,
    /// A point-in-time restore: the cluster is put back as it was at this instant, from
    /// a base backup (the newest good one whose timeline reaches it, or `backup` when
    /// given) and the oplog sliced since (`BackupSchedule.spec.pitr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<super::PointInTime>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostRestore {
    /// Start every node as a replica-set member and wait for a healthy set.
    #[serde(default)]
    pub start_nodes: bool,
    /// Take a fresh backup with this `BackupSchedule`'s settings as the new base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_backup: Option<String>,
}
