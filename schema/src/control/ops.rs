//! Ops: commands from the reconciler (or a test, or the CLI) to agents, and the per-node
//! phase reports agents write back. One writer per key: the op is created once by its
//! author, each report only by the node it names.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::OpTime;
use crate::model::{BackupType, Compression};

/// `ops/<op-id>/op.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Op {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub cluster: String,
    /// The nodes that must act; an agent ignores ops that do not name it.
    pub targets: Vec<OpTarget>,
    pub command: OpCommand,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpTarget {
    pub replica_set: String,
    pub node: String,
}

/// Where a backup goes or comes from: the storage's settings, copied into the op so agents
/// need no access to the desired state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageTarget {
    pub url: String,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum OpCommand {
    /// Copy this node's files (physical) or expose them for a snapshot (external).
    #[serde(rename_all = "camelCase")]
    Backup {
        backup: String,
        storage: StorageTarget,
        backup_type: BackupType,
        /// Extend the cursor to this cluster-wide point before closing it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extend_to: Option<OpTime>,
        /// External backups: a command the agent runs itself, with `TIDEMARK_DBPATH` and
        /// `TIDEMARK_FILE_LIST` in its environment, instead of waiting for `backup-finish`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot_command: Option<Vec<String>>,
    },
    /// Replace this node's data with a backup's.
    #[serde(rename_all = "camelCase")]
    Restore {
        backup: String,
        storage: StorageTarget,
        fallback_enabled: bool,
        #[serde(default)]
        external: bool,
        /// Wait after the checks (precheck, disk) until `go.json` exists, so that the
        /// reconciler can abort the whole restore before any node is touched when one
        /// node fails its checks. `result.json` appearing instead aborts.
        #[serde(default)]
        wait_for_go: bool,
    },
    /// Put the dbPath back exactly as before restore op `restore_op`.
    #[serde(rename_all = "camelCase")]
    RevertToFallback { restore_op: String },
    /// Empty the dbPath (keeping nothing) so the node initial-syncs when started.
    #[serde(rename_all = "camelCase")]
    WipeForInitialSync { restore_op: String },
    /// Delete the fallback directory of restore op `restore_op`.
    #[serde(rename_all = "camelCase")]
    RemoveFallback { restore_op: String },
    /// Start mongod as a replica-set member again, with the command line it had before
    /// restore op `restore_op` stopped it.
    #[serde(rename_all = "camelCase")]
    StartMongod { restore_op: String },
}

impl OpCommand {
    pub fn name(&self) -> &'static str {
        match self {
            OpCommand::Backup { .. } => "backup",
            OpCommand::Restore { .. } => "restore",
            OpCommand::RevertToFallback { .. } => "revertToFallback",
            OpCommand::WipeForInitialSync { .. } => "wipeForInitialSync",
            OpCommand::RemoveFallback { .. } => "removeFallback",
            OpCommand::StartMongod { .. } => "startMongod",
        }
    }
}

/// The state of one phase on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PhaseStatus {
    Running,
    Done,
    Error,
}

/// `ops/<op-id>/<rs>/<node>.<phase>.json`. The phases `done` and `error` are final: an op
/// has ended on a node exactly when one of them exists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseReport {
    pub op_id: String,
    pub replica_set: String,
    pub node: String,
    pub phase: String,
    pub status: PhaseStatus,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Figures worth keeping: disk numbers, byte counts, file names, timestamps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
}

/// The final phases.
pub const PHASE_DONE: &str = "done";
pub const PHASE_ERROR: &str = "error";

/// `ops/<op-id>/finish.json`: written by `tidemark backup-finish` / `restore-finish` when
/// the operator's snapshot copy is complete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishSignal {
    pub op_id: String,
    pub at: DateTime<Utc>,
}

pub fn finish_key(op_id: &str) -> String {
    format!("{}/{op_id}/finish.json", super::OPS_PREFIX)
}

/// `ops/<op-id>/go.json`: every node passed its checks; restores may touch data now.
pub fn go_key(op_id: &str) -> String {
    format!("{}/{op_id}/go.json", super::OPS_PREFIX)
}
