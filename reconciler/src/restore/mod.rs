//! Restore orchestration, one file per stage of work: `start` (pre-flight checks that
//! touch nothing, then the op with `waitForGo`), `records` (what a pass reads), `stage`
//! (the typed lifecycle derived from those records, pure), `follow` (the `match` that acts
//! on it: go or abort, the decision), `decide` (the pure decision flow and remedy table),
//! `finish` (the follow-up steps and the fresh backup).

mod decide;
mod finish;
mod follow;
mod records;
mod stage;
mod start;

pub use decide::{NodeRemedy, NodeState, Policy, STAGES, decide, remedy};
pub use follow::advance;
pub use records::{GateRecord, Progressed, RestoreRecords, StepRecords, stage_now, step_op_id};
pub use stage::{RestoreStage, stage};
pub use start::{PointInTimeSettings, RestoreSettings, start};
