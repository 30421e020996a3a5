//! What a selective restore did to each collection it was asked for, as its agent
//! reported it and the ledger keeps it.

use serde::{Deserialize, Serialize};

/// A selective restore's figures: one entry per collection selected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectiveOutcome {
    pub backup: String,
    /// The drill agent that ran it (its `--node-id`).
    pub agent: String,
    pub namespaces: Vec<NamespaceOutcome>,
    pub elapsed_seconds: f64,
}

/// One collection: where it came from, where it went, and in what state its target is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceOutcome {
    pub source: String,
    pub target: String,
    /// Documents written (copied or upserted).
    pub documents: u64,
    /// Secondary indexes built on the target.
    pub indexes: usize,
    pub target_state: TargetState,
}

/// The state a selective restore left a target collection in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TargetState {
    /// It did not exist and now holds the backup's copy.
    Created,
    /// It existed and was replaced by the backup's copy (`onExisting: replace`).
    Replaced,
    /// The backup's documents were upserted into it by `_id` (`onExisting: merge`).
    Merged,
    /// Not changed: the restore stopped before writing to it (its staging copy, if any,
    /// was dropped).
    Untouched,
    /// Some batches were upserted into it before the restore stopped (`merge`): running
    /// the restore again under a new name completes it, as upserts by `_id` repeat safely.
    PartlyMerged,
    /// The set could not tell whether its rename happened (a lost answer, then no answer):
    /// it may hold the backup's copy or its own.
    Unknown,
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Created => "created",
            TargetState::Replaced => "replaced",
            TargetState::Merged => "merged",
            TargetState::Untouched => "untouched",
            TargetState::PartlyMerged => "partly merged",
            TargetState::Unknown => "unknown (may be in place)",
        }
    }
}
