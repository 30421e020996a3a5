//! Starting a backup: one node per replica set, chosen by the planner's priority rules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tidemark_schema::control::{Op, OpCommand, OpTarget, StorageTarget, op_id};
use tidemark_schema::model::BackupType;

use crate::execute::{ExecError, Executor};
use crate::plan::NodeChoice;

/// What a backup was started with, kept in its ledger record.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupSettings {
    pub cluster: String,
    pub storage_name: String,
    pub storage: StorageTarget,
    pub backup_type: BackupType,
    #[serde(default)]
    pub schedule: Option<String>,
    /// The schedule's `verify`, as it was when the backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<tidemark_schema::model::VerifyLevel>,
    /// Namespaces whose `dbHash` the manifest records: what the schedule's drills compare.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hash_namespaces: Vec<String>,
    /// A sharded cluster: its replica sets extend to one cluster time (the barrier).
    /// Replica sets that are not one cluster share no clock, and gossip between them
    /// would be refused by a mongod that signs its cluster times.
    #[serde(default)]
    pub sharded: bool,
    /// An incremental backup's place in its chain, as planned (the catalog records it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<tidemark_schema::control::ChainLink>,
    /// What made the reconciler start it; copied into its op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<tidemark_schema::control::OpCause>,
}

/// Starts backup `name` on the chosen nodes; `Ok(Some(reason))` when it must wait.
pub async fn start(
    ex: &Executor,
    name: &str,
    settings: BackupSettings,
    nodes: &[NodeChoice],
    now: DateTime<Utc>,
) -> Result<Option<String>, ExecError> {
    let mut targets = Vec::new();
    for choice in nodes {
        match &choice.node {
            Some(node) => {
                // Why this node and not another (a Community member, an arbiter or a
                // delayed one passed over whatever the priorities say), for the log.
                tracing::info!(backup = name, rs = %choice.replica_set, %node, why = %choice.reason, "backup node chosen");
                targets.push(OpTarget {
                    replica_set: choice.replica_set.clone(),
                    node: node.clone(),
                })
            }
            None => {
                return Ok(Some(format!(
                    "replica set {}: {}",
                    choice.replica_set, choice.reason
                )));
            }
        }
    }
    let op = Op {
        id: op_id(now, "backup", name),
        created_at: now,
        cluster: settings.cluster.clone(),
        targets,
        command: OpCommand::Backup {
            backup: name.to_string(),
            storage: settings.storage.clone(),
            backup_type: settings.backup_type,
            extend_to: None,
            snapshot_command: None,
            hash_namespaces: settings.hash_namespaces.clone(),
            // A sharded cluster's replica sets restore to one cluster time.
            barrier: settings.sharded,
            incremental: settings.incremental.as_ref().map(|l| {
                tidemark_schema::control::IncrementalBackup {
                    base: l.base.clone(),
                    source: l.source.clone(),
                    block_size_mb: l.block_size_mb,
                }
            }),
        },
        deadline: Some(now + ex.op_deadline),
        epoch: None,
        cause: settings.cause.clone(),
    };
    let settings =
        serde_json::to_value(&settings).map_err(|e| ExecError::Invalid(e.to_string()))?;
    ex.start_oneshot(
        tidemark_schema::control::OneShotKind::Backup,
        name,
        &op,
        settings,
        None,
        now,
    )
    .await?;
    Ok(None)
}
