//! `doorbell/<cluster>.json`: the leader's word to a cluster's agents that there is
//! something new to read (an op, a slicing assignment), and where to hear the next word
//! without asking the control plane. It carries no authority: an agent that hears it
//! reads the control plane as it always does, and acts only on what is there.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const DOORBELL_PREFIX: &str = "doorbell";

pub fn doorbell_key(cluster: &str) -> String {
    format!("{DOORBELL_PREFIX}/{cluster}.json")
}

/// Rewritten by the leader each time it rings a cluster (and once per cluster when it
/// takes the lead).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoorbellRecord {
    /// Changes at every ring; unique across leaders (it starts with the epoch and a
    /// random tag of the process). Agents compare it with the last one they saw.
    pub token: String,
    /// The leader's long-poll address (`http://host:port`), when it serves one
    /// (`reconcile --listen`); agents then wait there instead of reading this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub epoch: u64,
    pub holder: String,
    pub at: DateTime<Utc>,
}

/// What the leader's long-poll endpoint answers: the cluster's current token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoorbellAnswer {
    pub token: String,
    pub epoch: u64,
}
