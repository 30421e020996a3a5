//! Starting one drill run: its ledger record (create-if-absent, so a run never happens
//! twice), then its op, addressed to the chosen drill agent only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tidemark_schema::control::{DRILL_REPLICA_SET, Op, OpCommand, OpTarget, StorageTarget, op_id};
use tidemark_schema::model::DrillChecks;

use crate::execute::{ExecError, Executor};

/// What a run was started with, kept in its ledger record.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillSettings {
    pub drill: String,
    pub schedule: String,
    pub cluster: String,
    pub backup: String,
    pub agent: String,
    pub storage: StorageTarget,
    pub replica_sets: Vec<String>,
    pub checks: DrillChecks,
    /// What made the reconciler start it; copied into its op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<tidemark_schema::control::OpCause>,
}

/// Records run `run` and writes its op. Returns false when another pass came first.
pub async fn start(
    ex: &Executor,
    run: &str,
    settings: DrillSettings,
    now: DateTime<Utc>,
) -> Result<bool, ExecError> {
    let op = Op {
        id: op_id(now, "drill", run),
        created_at: now,
        cluster: settings.cluster.clone(),
        targets: vec![OpTarget {
            replica_set: DRILL_REPLICA_SET.to_string(),
            node: settings.agent.clone(),
        }],
        command: OpCommand::Drill {
            drill: settings.drill.clone(),
            backup: settings.backup.clone(),
            storage: settings.storage.clone(),
            replica_sets: settings.replica_sets.clone(),
            checks: settings.checks.clone(),
        },
        deadline: Some(now + ex.op_deadline),
        epoch: None,
        cause: settings.cause.clone(),
    };
    let settings =
        serde_json::to_value(&settings).map_err(|e| ExecError::Invalid(e.to_string()))?;
    ex.start_oneshot(
        tidemark_schema::control::OneShotKind::RestoreDrill,
        run,
        &op,
        settings,
        None,
        now,
    )
    .await
}
