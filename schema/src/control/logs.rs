//! What outlives an operation's working records: the log lines its agents shipped, and the
//! archive an ended operation is compacted into.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Op, OpResult, PhaseReport};

/// One log line of an agent, as it logged it while working on an op.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpLogLine {
    pub at: DateTime<Utc>,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The message and its fields, as the agent's own log shows them.
    pub message: String,
}

/// `logs/<op>/<rs>/<node>/<stamp>.json`: the lines one agent logged for one op since
/// its previous chunk. Chunks are written once each; their keys sort in shipping order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpLogChunk {
    pub op_id: String,
    pub replica_set: String,
    pub node: String,
    /// The chunk's stamp, as in its key: who has read a chunk live knows it in the archive.
    #[serde(default)]
    pub stamp: String,
    pub lines: Vec<OpLogLine>,
}

impl OpLogChunk {
    /// One name per chunk, whether read live or from the archive.
    pub fn identity(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.op_id, self.replica_set, self.node, self.stamp
        )
    }
}

/// `ledger/archive/<op>.json`: everything `describe-*` and `logs` read about an ended op,
/// kept in one object when the op's own records are compacted away.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpArchive {
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<OpResult>,
    #[serde(default)]
    pub reports: Vec<PhaseReport>,
    #[serde(default)]
    pub logs: Vec<OpLogChunk>,
    /// Every other record of the op (gates, finish signals, restore logs), by its key
    /// below `ops/<op>/`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub others: std::collections::BTreeMap<String, serde_json::Value>,
    pub archived_at: DateTime<Utc>,
}
