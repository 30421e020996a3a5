//! Restore drills, one file per stage: `start` (record the run, write its op to the
//! drill agent) and `finish` (follow the agent, judge its checks, record RTO and RPO).

mod finish;
mod start;

pub use finish::advance;
pub use start::{DrillSettings, start};
