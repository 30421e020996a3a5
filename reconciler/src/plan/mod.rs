//! The planner: `plan(desired, observed, now)` is a pure function from what operators
//! declared and what the control plane holds to the steps that would converge them.
//! Every step and every retention decision carries a human-readable reason.

mod chain;
mod chunk_retention;
mod drills;
mod model;
mod nodes;
mod pitr;
mod pitr_render;
mod planner;
mod point_in_time;
mod render;
mod restore;
mod retention;
mod schedule;
mod selective;
mod timeline;

pub use chain::{
    ChainRules, ChainView, IncrementChoice, IncrementPlan, PlannedLink, plan_increment,
};
pub use drills::{
    DRILL_KIND, DrillRun, DrillState, drill_state, hash_namespaces, plan_drills,
    wanted_drill_record,
};
pub use model::{
    Action, DiskCheck, NodeChoice, Plan, RestoreNode, RestorePlan, RetentionDecision, Step,
};
pub use nodes::{
    BACKUP_MAX_LAG_SECONDS, HEARTBEAT_DEAD_AFTER_SECONDS, choose_node, why_not_eligible,
};
pub use pitr::{
    PitrState, PlannedStream, SlicerState, plan_slicing, replica_set_names, stuck_after,
};
pub use planner::{PlanSettings, pinned_backups, plan, plan_with, schedule_increment};
pub use point_in_time::{PointInTimePlan, ReplayPart, plan_point_in_time};
pub use render::{human_bytes, render_plan};
pub use restore::keys_known;
pub use schedule::{
    MISSED_LOOKBACK, ScheduleState, observed_schedule_state, schedule_state, wanted_record,
};
pub use selective::{PlannedNamespace, SelectivePlan};
pub use timeline::{
    OpenGap, ReplicaSetTimeline, Segment, Timeline, Window, base_point, bases, optime_text,
    streams, timeline,
};
