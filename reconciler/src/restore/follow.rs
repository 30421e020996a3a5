//! Following a restore: read its records, derive its stage (`stage::stage`, pure), and
//! take the one transition the stage calls for. A pass takes several transitions in a
//! row while each is a single write, so a restore does not wait a follow interval
//! between, say, its decision and its first follow-up step.

use chrono::{DateTime, Utc};
use tidemark_schema::control::{
    Gate, NodeFate, NodeOutcome, NodeVerdict, OneShotRecord, OpResult, Phase, PhaseStatus, Remedy,
    RunStatus, abort_key, go_key,
};
use tidemark_schema::validate::DesiredState;
use tidemark_store::control::Created;

use super::decide::{NodeState, Policy, decide, remedy};
use super::finish;
use super::records::{self, Progressed, RestoreRecords};
use super::stage::{RestoreStage, lost_message, stage};
use crate::execute::{ExecError, Executor, NodeView, Progress};

/// Transitions taken in one pass at most; the next pass goes on.
const TRANSITIONS_PER_PASS: usize = 8;

pub async fn advance(
    ex: &Executor,
    record: &OneShotRecord,
    desired: Option<&DesiredState>,
    now: DateTime<Utc>,
) -> Result<Progress, ExecError> {
    for _ in 0..TRANSITIONS_PER_PASS {
        let r = records::load(ex, record, now).await?;
        let stage = stage(&r, ex.go_timeout, now);
        tracing::debug!(restore = %record.name, stage = stage.name(), "restore stage");
        match stage {
            RestoreStage::Checking
            | RestoreStage::Restoring { .. }
            | RestoreStage::StepRunning { .. }
            | RestoreStage::AwaitHealth { .. }
            | RestoreStage::FreshBackupRunning { .. } => return Ok(Progress::Running),
            RestoreStage::OpenGate => {
                let gate = Gate::go(now, ex.control.epoch());
                let key = go_key(&r.op.id);
                if ex.control.create(&key, &ex.sealed(&key, &gate)).await? == Created::New {
                    tracing::info!(op = %r.op.id, "every node is ready: go");
                }
                // Opened, or closed first by an agent: the next stage says which.
                return Ok(Progress::Running);
            }
            RestoreStage::AbortUntouched { why, cancelled } => {
                abort_untouched(ex, &r, &why, cancelled, now).await?;
            }
            RestoreStage::Cancelling => {
                // Every node stops at its next phase boundary and fails there, saying how
                // far it got; the decision then reverts whatever was touched.
                ex.control
                    .create(&abort_key(&r.op.id), &serde_json::json!({"at": now}))
                    .await?;
                return Ok(Progress::Running);
            }
            RestoreStage::Decide { cancelled } => {
                let Progressed::Undecided { views, .. } = &r.progress else {
                    unreachable!("decided restores are past this stage");
                };
                write_result(ex, &r, after_go(&r, views, cancelled, now), now).await?;
            }
            RestoreStage::WriteStep { remedy, targets } => {
                finish::write_step(ex, &r, remedy, targets, now).await?;
                return Ok(Progress::Running);
            }
            RestoreStage::CloseStep { remedy } => finish::close_step(ex, &r, remedy, now).await?,
            RestoreStage::StartFreshBackup { status, message } => {
                return finish::start_fresh_backup(ex, &r, desired, status, message, now).await;
            }
            RestoreStage::Finish { status, message } => {
                return ex.finish_record(record, status, message, now).await;
            }
            RestoreStage::Ended(status) => return Ok(Progress::Finished(status)),
        }
    }
    Ok(Progress::Running)
}

/// Writes the restore's decision once. A lost node may only be partitioned: `abort.json`
/// first makes it stop at its next phase boundary rather than finish a restore the
/// cluster decided without it.
async fn write_result(
    ex: &Executor,
    r: &RestoreRecords,
    result: OpResult,
    now: DateTime<Utc>,
) -> Result<(), ExecError> {
    ex.control
        .create(&abort_key(&r.op.id), &serde_json::json!({"at": now}))
        .await?;
    ex.decide_once(result).await?;
    Ok(())
}

/// Before `go`, something blocks: the gate is closed (create-once, so go and abort are
/// never both in force), then the restore is decided with every node untouched.
async fn abort_untouched(
    ex: &Executor,
    r: &RestoreRecords,
    why: &str,
    cancelled: bool,
    now: DateTime<Utc>,
) -> Result<(), ExecError> {
    let Progressed::Undecided { views, gate } = &r.progress else {
        unreachable!("decided restores are past this stage");
    };
    if gate.is_none() {
        let key = go_key(&r.op.id);
        let closed = Gate::abort(now, format!("the reconciler: {why}"));
        if ex.control.create(&key, &closed).await? == Created::Existed {
            // Someone wrote the gate first; if it opened it, nodes may be past `go`, and
            // the next stage says so.
            return Ok(());
        }
    }
    // Nothing was touched anywhere: no node passes `ready` without `go`. The result makes
    // every waiting agent stop, untouched.
    let nodes = views
        .iter()
        .map(|v| NodeVerdict {
            replica_set: v.replica_set.clone(),
            node: v.node.clone(),
            fate: if v.lost && v.final_report().is_none() {
                NodeFate::Lost
            } else {
                NodeFate::Refused
            },
            phase: v.last_phase().map(|r| r.phase),
            message: v
                .final_report()
                .map(|r| r.message.clone())
                .unwrap_or_else(|| "aborted before it was touched".into()),
            remedies: Vec::new(),
            note: "untouched: mongod kept running with its data".into(),
            needs_operator: false,
        })
        .collect();
    let result = OpResult {
        op_id: r.op.id.clone(),
        status: if cancelled {
            RunStatus::Cancelled
        } else {
            RunStatus::Error
        },
        decided_at: now,
        reason: format!("aborted before any node was touched: {why}"),
        nodes,
        epoch: None,
    };
    write_result(ex, r, result, now).await
}

/// After `go`, every node settled: the decision flow and each node's remedies. A cancel
/// (with fallback) decides `cancelled` and puts every touched node back.
fn after_go(
    r: &RestoreRecords,
    views: &[NodeView],
    cancelled: bool,
    now: DateTime<Utc>,
) -> OpResult {
    let states: Vec<NodeState> = views.iter().map(node_state).collect();
    let policy = Policy {
        fallback_enabled: r.settings.fallback_enabled,
        allow_partly_done: r.settings.allow_partly_done,
    };
    let (status, reason) = match &r.cancel {
        Some(c) if cancelled => (
            RunStatus::Cancelled,
            format!(
                "cancelled by {} at {}: every touched node is put back from its fallback \
                 directory",
                c.by,
                c.at.to_rfc3339()
            ),
        ),
        _ => decide(&states, policy),
    };
    let nodes = views
        .iter()
        .zip(&states)
        .map(|(v, s)| {
            let mut plan = remedy(status, policy, s);
            if r.settings.start_nodes
                && !status.is_failure()
                && s.fate != NodeFate::Lost
                && !plan.steps.contains(&Remedy::Start)
            {
                plan.steps.push(Remedy::Start);
            }
            NodeVerdict {
                replica_set: v.replica_set.clone(),
                node: v.node.clone(),
                fate: s.fate,
                phase: s.phase,
                message: match v.final_report() {
                    Some(r) => r.message.clone(),
                    None => lost_message(v),
                },
                remedies: plan.steps,
                note: plan.note,
                needs_operator: plan.needs_operator,
            }
        })
        .collect();
    OpResult {
        op_id: r.op.id.clone(),
        status,
        decided_at: now,
        reason,
        nodes,
        epoch: None,
    }
}

/// One node's outcome as the decision sees it, from its reports.
pub fn node_state(v: &NodeView) -> NodeState {
    let (fate, phase) = match v.final_report() {
        Some(r) => match r.outcome {
            Some(NodeOutcome::Done) => (NodeFate::Done, Some(Phase::Done)),
            Some(NodeOutcome::Refused) => (NodeFate::Refused, r.failed_phase),
            // A report without an outcome (an older agent) counts as failed after touching:
            // the safe side, since a revert of an untouched node is a no-op.
            Some(NodeOutcome::Failed) | None if r.status == PhaseStatus::Done => {
                (NodeFate::Done, Some(Phase::Done))
            }
            // The furthest of the phase it says failed and the phases it reported: an
            // agent restarted after its clock stepped back may name too early a phase.
            Some(NodeOutcome::Failed) | None => (
                NodeFate::Failed,
                r.failed_phase.max(v.last_phase().map(|l| l.phase)),
            ),
        },
        None => (
            NodeFate::Lost,
            // After go, a node that last said `ready` may already be stopping mongod.
            Some(
                v.last_phase()
                    .map(|r| r.phase)
                    .filter(|p| p.touches_node())
                    .unwrap_or(Phase::Stop),
            ),
        ),
    };
    // Proof that mongod is down: `stop` reported done, or a later phase begun (each
    // starts only after the stop completed).
    let stopped = v.reports.iter().any(|r| {
        (r.phase == Phase::Stop && r.status == PhaseStatus::Done)
            || (r.phase.touches_data() && !r.phase.is_final())
            || r.failed_phase.is_some_and(|p| p.touches_data())
    });
    NodeState {
        replica_set: v.replica_set.clone(),
        node: v.node.clone(),
        fate,
        phase,
        stopped,
    }
}
