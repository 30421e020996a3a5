//! Selective restores, one file per stage: `start` (record the restore, write its op to
//! the drill agent) and `finish` (follow the agent and record what happened to each
//! collection). The cluster's nodes are never stopped, so there is no gate, wave or
//! decision flow: the one agent's final report decides.

mod finish;
mod start;

pub use finish::{advance, is_selective};
pub use start::{SelectiveSettings, start};
