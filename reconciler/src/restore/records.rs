//! Everything a restore's stage is derived from, read from the control plane in one go:
//! its ledger record and op, a cancel request, and then either the gate and every node's
//! reports (before the decision) or the decision with each follow-up step's op, result
//! and reports (after it). Reading is all this file does; `stage` decides.

use chrono::{DateTime, Utc};
use tidemark_schema::control::{
    CancelRequest, Gate, Heartbeat, OneShotRecord, Op, OpCommand, OpResult, Remedy, go_key,
    oneshot_key,
};

use super::decide::STAGES;
use super::stage::{RestoreStage, stage};
use super::start::RestoreSettings;
use crate::execute::{ExecError, Executor, NodeView};

/// What `go.json` holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateRecord {
    /// Opened: nodes may be past `ready`.
    Open,
    /// Closed by someone, with why: no node ever passes `ready`.
    Closed(String),
}

/// A restore's records as one pass found them.
#[derive(Clone, Debug)]
pub struct RestoreRecords {
    pub record: OneShotRecord,
    pub op: Op,
    pub settings: RestoreSettings,
    /// `tidemark cancel-restore` asked for it (`ledger/cancel/restore/<name>.json`).
    pub cancel: Option<CancelRequest>,
    pub progress: Progressed,
}

/// How far the records go: before the decision or after it. Built once per pass, so the
/// variants' sizes do not matter.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Progressed {
    Undecided {
        views: Vec<NodeView>,
        gate: Option<GateRecord>,
    },
    Decided {
        result: OpResult,
        /// One per follow-up stage, in the order they run.
        steps: Vec<StepRecords>,
        /// Heartbeats, read when the started nodes' health is to be judged.
        beats: Vec<Heartbeat>,
        /// The `postRestore.freshBackup` one-shot's record, once started.
        fresh: Option<OneShotRecord>,
    },
}

/// One follow-up step (`<op>.revert`, `.wipe`, `.removeFallback`, `.start`).
#[derive(Clone, Debug)]
pub struct StepRecords {
    pub remedy: Remedy,
    pub op: Option<Op>,
    pub result: Option<OpResult>,
    /// Its nodes' reports, when its result is not written yet or holds lost nodes.
    pub views: Vec<NodeView>,
}

impl RestoreRecords {
    /// How long the op's nodes wait for `go` (its `goTimeoutMs`), when it says.
    pub fn op_go_bound(&self) -> Option<chrono::Duration> {
        match &self.op.command {
            tidemark_schema::control::OpCommand::Restore {
                go_timeout_ms: Some(ms),
                ..
            } => Some(chrono::Duration::milliseconds(*ms as i64)),
            _ => None,
        }
    }

    /// The time the nodes' checks of a point-in-time restore's chunks add to its go bound.
    pub fn check_allowance(&self) -> chrono::Duration {
        match &self.op.command {
            tidemark_schema::control::OpCommand::Restore {
                point_in_time: Some(p),
                ..
            } => chrono::Duration::from_std(p.check_allowance()).unwrap_or_default(),
            _ => chrono::Duration::zero(),
        }
    }
}

/// The id of the follow-up op of `restore_op` for one stage.
pub fn step_op_id(restore_op: &str, stage: Remedy) -> String {
    format!("{restore_op}.{}", stage.as_str())
}

/// The name of the fresh base backup a restore takes (`postRestore.freshBackup`).
pub fn fresh_backup_name(restore: &str) -> String {
    format!("{restore}-fresh-base")
}

/// Reads a restore's records. Writes only the op of a start that a crash interrupted
/// (from its ledger record; see `Executor::op_of`).
pub async fn load(
    ex: &Executor,
    record: &OneShotRecord,
    now: DateTime<Utc>,
) -> Result<RestoreRecords, ExecError> {
    let op = ex.op_of(record).await?;
    load_with(ex, record, op, now).await
}

/// A restore's stage as the reconciler would derive it now, writing nothing (for
/// `describe-restore`, `status` and `diff`): `None` while the op of an interrupted start
/// is not written yet. The go bound is the op's own (what its agents enforce).
pub async fn stage_now(
    control: &tidemark_store::control::ControlPlane,
    record: &OneShotRecord,
    dead_after: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<Option<RestoreStage>, ExecError> {
    let ex = Executor {
        control: control.clone(),
        dead_after,
        op_deadline: chrono::Duration::hours(1),
        go_timeout: chrono::Duration::MAX,
        storage_env: Vec::new(),
        bell: Default::default(),
        signer: None,
    };
    let Some(op) = ex.own_op(&record.op_id).await? else {
        return Ok(None);
    };
    // A selective restore has no gate, waves or decision: no stage, only its agent's
    // progress report.
    if matches!(op.command, OpCommand::SelectiveRestore { .. }) {
        return Ok(None);
    }
    let r = load_with(&ex, record, op, now).await?;
    Ok(Some(stage(&r, ex.go_timeout, now)))
}

async fn load_with(
    ex: &Executor,
    record: &OneShotRecord,
    op: Op,
    now: DateTime<Utc>,
) -> Result<RestoreRecords, ExecError> {
    let settings: RestoreSettings = ex.own_settings(record)?;
    let progress = match ex.own_result(&op.id).await? {
        None => {
            let views = ex.views(&op, now).await?;
            let gate = ex
                .control
                .get::<serde_json::Value>(&go_key(&op.id))
                .await?
                .map(|v| match Gate::read(&v) {
                    Ok(()) => GateRecord::Open,
                    Err(why) => GateRecord::Closed(why),
                });
            Progressed::Undecided { views, gate }
        }
        Some(result) => {
            // Steps are written in order, each once the one before closed: past a step that
            // is still open none exists yet, so none is read.
            let mut steps = Vec::new();
            let mut open = false;
            for remedy in STAGES {
                let step = if open {
                    StepRecords {
                        remedy,
                        op: None,
                        result: None,
                        views: Vec::new(),
                    }
                } else {
                    load_step(ex, &op.id, remedy, now).await?
                };
                open |= step.op.is_some() && step.result.is_none();
                steps.push(step);
            }
            let beats = if settings.start_nodes {
                ex.control.heartbeats(&op.cluster).await?
            } else {
                Vec::new()
            };
            let fresh = match &settings.fresh_backup {
                Some(_) => {
                    ex.control
                        .get::<OneShotRecord>(&oneshot_key(
                            "backup",
                            &fresh_backup_name(&record.name),
                        ))
                        .await?
                }
                None => None,
            };
            Progressed::Decided {
                result,
                steps,
                beats,
                fresh,
            }
        }
    };
    // Read after the gate: `cancel-restore` writes its request before it closes the gate,
    // so a gate it closed always comes with its request (never a cancel taken for an
    // error).
    let cancel = ex.cancel_request(record).await?;
    Ok(RestoreRecords {
        record: record.clone(),
        op,
        settings,
        cancel,
        progress,
    })
}

async fn load_step(
    ex: &Executor,
    restore_op: &str,
    remedy: Remedy,
    now: DateTime<Utc>,
) -> Result<StepRecords, ExecError> {
    let id = step_op_id(restore_op, remedy);
    let op = ex.own_op(&id).await?;
    let Some(step_op) = &op else {
        return Ok(StepRecords {
            remedy,
            op: None,
            result: None,
            views: Vec::new(),
        });
    };
    let result = ex.own_result(&id).await?;
    // Reports matter while the step runs, and after it for a node closed as lost (its
    // agent may have finished the step since) or a result without verdicts.
    let needs_views = result.as_ref().is_none_or(|r| {
        r.nodes.is_empty()
            || r.nodes
                .iter()
                .any(|n| n.fate == tidemark_schema::control::NodeFate::Lost)
    });
    let views = if needs_views {
        ex.views(step_op, now).await?
    } else {
        Vec::new()
    };
    Ok(StepRecords {
        remedy,
        op,
        result,
        views,
    })
}
