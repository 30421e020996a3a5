//! Restore orchestration, one file per stage: `start` (pre-flight checks that touch
//! nothing, then the op with `waitForGo`), `follow` (go or abort, then the decision),
//! `decide` (the pure decision flow and remedy table), `finish` (the remedies, the
//! post-restore steps and the ledger).

mod decide;
mod finish;
mod follow;
mod start;

pub use decide::{NodeState, Policy, STAGES, decide, remedy};
pub use follow::advance;
pub use start::{RestoreSettings, start};
