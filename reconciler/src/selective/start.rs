//! Starting a selective restore: its ledger record (create-if-absent, so it runs once per
//! name, ever), then its op, addressed to the chosen drill agent only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tidemark_schema::control::{
    DRILL_REPLICA_SET, OneShotKind, Op, OpCommand, OpTarget, StorageTarget, op_id,
};

use crate::execute::{ExecError, Executor};
use crate::plan::SelectivePlan;

/// What the restore was started with, kept in its ledger record. `backup` pins the
/// backup against deletion while it runs; `agent` marks the drill agent busy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectiveSettings {
    pub cluster: String,
    pub backup: String,
    pub agent: String,
    pub namespaces: Vec<String>,
    pub on_existing: tidemark_schema::model::OnExisting,
}

/// Records the restore and writes its op. Returns false when another pass came first.
pub async fn start(
    ex: &Executor,
    p: &SelectivePlan,
    rename_to: std::collections::BTreeMap<String, String>,
    storage: StorageTarget,
    cause: tidemark_schema::control::OpCause,
    now: DateTime<Utc>,
) -> Result<bool, ExecError> {
    let namespaces: Vec<String> = p.namespaces.iter().map(|n| n.source.clone()).collect();
    let op = Op {
        id: op_id(now, "restore", &p.restore),
        created_at: now,
        cluster: p.cluster.clone(),
        targets: vec![OpTarget {
            replica_set: DRILL_REPLICA_SET.to_string(),
            node: p.agent.clone(),
        }],
        command: OpCommand::SelectiveRestore {
            restore: p.restore.clone(),
            backup: p.backup.clone(),
            storage,
            replica_set: p.replica_set.clone(),
            namespaces: namespaces.clone(),
            rename_to,
            on_existing: p.on_existing,
            target: p.target.clone(),
        },
        deadline: Some(now + ex.op_deadline),
        epoch: None,
        cause: Some(cause),
    };
    let settings = SelectiveSettings {
        cluster: p.cluster.clone(),
        backup: p.backup.clone(),
        agent: p.agent.clone(),
        namespaces,
        on_existing: p.on_existing,
    };
    let settings =
        serde_json::to_value(&settings).map_err(|e| ExecError::Invalid(e.to_string()))?;
    ex.start_oneshot(OneShotKind::Restore, &p.restore, &op, settings, None, now)
        .await
}
