//! Following a restore: `go` once every node is ready, abort (nothing touched) when one is
//! not; then, once every node has a final report or is lost, the decision, written once.

use chrono::{DateTime, Utc};
use tidemark_schema::control::{
    Gate, NodeFate, NodeOutcome, NodeVerdict, OneShotRecord, Op, OpCommand, OpResult, Phase,
    PhaseStatus, Remedy, RunStatus, abort_key, go_key, result_key,
};
use tidemark_schema::validate::DesiredState;
use tidemark_store::control::Created;

use super::decide::{NodeState, Policy, decide, remedy};
use super::finish;
use super::start::RestoreSettings;
use crate::execute::{ExecError, Executor, NodeView, Progress, who};

pub async fn advance(
    ex: &Executor,
    record: &OneShotRecord,
    desired: Option<&DesiredState>,
    now: DateTime<Utc>,
) -> Result<Progress, ExecError> {
    let op = ex.op_of(record).await?;
    let settings: RestoreSettings = Executor::settings_of(record)?;
    let result = match ex.control.get::<OpResult>(&result_key(&op.id)).await? {
        Some(r) => r,
        None => {
            let views = ex.views(&op, now).await?;
            let gate = ex
                .control
                .get::<serde_json::Value>(&go_key(&op.id))
                .await?
                .map(|v| Gate::read(&v));
            let decided = match gate {
                Some(Ok(())) => after_go(&op.id, &views, &settings, now),
                _ => before_go(ex, &op, &views, gate, now).await?,
            };
            match decided {
                Some(r) => {
                    // A lost node may only be partitioned: make it stop at its next phase
                    // boundary rather than finish a restore the cluster decided without it.
                    ex.control
                        .create(&abort_key(&op.id), &serde_json::json!({"at": now}))
                        .await?;
                    ex.decide_once(r).await?
                }
                None => return Ok(Progress::Running),
            }
        }
    };
    finish::advance(ex, record, &op, &settings, &result, desired, now).await
}

/// Before `go`: open the gate once every node is ready; close it and abort when a node
/// refused or is lost, when an agent closed it, or when the op is older than
/// `--go-timeout` (a reconciler that was down for a day, or a `--once` not run again,
/// must not stop the cluster at a time nobody expects). The gate is created once, so go
/// and abort can never both be in force.
async fn before_go(
    ex: &Executor,
    op: &Op,
    views: &[NodeView],
    gate: Option<Result<(), String>>,
    now: DateTime<Utc>,
) -> Result<Option<OpResult>, ExecError> {
    let op_id = op.id.as_str();
    let mut blockers: Vec<String> = views
        .iter()
        .filter_map(|v| match v.final_report() {
            Some(r) => Some(format!("{}: {}", who(v), r.message)),
            None if v.lost => Some(format!("{}: {}", who(v), lost_message(v))),
            None => None,
        })
        .collect();
    if let Some(Err(why)) = &gate {
        blockers.insert(0, format!("gate closed by {why}"));
    }
    // The op's own bound (what its agents enforce) or ours, whichever is shorter: a gate
    // opened past the op's bound would be refused by every agent anyway.
    let bound = match &op.command {
        OpCommand::Restore {
            go_timeout_ms: Some(ms),
            ..
        } => ex
            .go_timeout
            .min(chrono::Duration::milliseconds(*ms as i64)),
        _ => ex.go_timeout,
    };
    if gate.is_none() && now - op.created_at > bound {
        blockers.insert(
            0,
            format!(
                "the restore was written at {} and was not ready to go within --go-timeout \
                 ({}s); start it again under a new name if it is still wanted",
                op.created_at.to_rfc3339(),
                bound.num_seconds()
            ),
        );
    }
    let key = go_key(op_id);
    if blockers.is_empty() {
        if views.iter().all(|v| v.reported(Phase::Ready)) {
            match ex
                .control
                .create(&key, &Gate::go(now, ex.control.epoch()))
                .await?
            {
                Created::New => tracing::info!(op = %op_id, "every node is ready: go"),
                // An agent closed it first: the next pass aborts.
                Created::Existed => {}
            }
        }
        return Ok(None);
    }
    if gate.is_none()
        && ex
            .control
            .create(
                &key,
                &Gate::abort(now, format!("the reconciler: {}", blockers.join("; "))),
            )
            .await?
            == Created::Existed
        && ex
            .control
            .get::<serde_json::Value>(&key)
            .await?
            .is_some_and(|g| Gate::read(&g).is_ok())
    {
        // Opened by an earlier pass or another writer: nodes may be past go, so the
        // decision is the flow's, taken once every node settled.
        return Ok(None);
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
        })
        .collect();
    Ok(Some(OpResult {
        op_id: op_id.to_string(),
        status: RunStatus::Error,
        decided_at: now,
        reason: format!(
            "aborted before any node was touched: {}",
            blockers.join("; ")
        ),
        nodes,
        epoch: None,
    }))
}

fn lost_message(v: &NodeView) -> String {
    format!(
        "node lost, last heartbeat {}{}",
        v.heartbeat
            .as_ref()
            .map_or("never".to_string(), |h| h.at.to_rfc3339()),
        v.last_phase()
            .map(|r| format!(", last phase {}", r.phase))
            .unwrap_or_default()
    )
}

/// After `go`: once every node settled, the decision flow and each node's remedies.
fn after_go(
    op_id: &str,
    views: &[NodeView],
    settings: &RestoreSettings,
    now: DateTime<Utc>,
) -> Option<OpResult> {
    if !views.iter().all(|v| v.settled()) {
        return None;
    }
    let states: Vec<NodeState> = views.iter().map(node_state).collect();
    let policy = Policy {
        fallback_enabled: settings.fallback_enabled,
        allow_partly_done: settings.allow_partly_done,
    };
    let (status, reason) = decide(&states, policy);
    let nodes = views
        .iter()
        .zip(&states)
        .map(|(v, s)| {
            let (mut remedies, note) = remedy(status, policy, s);
            if settings.start_nodes
                && status != RunStatus::Error
                && s.fate != NodeFate::Lost
                && !remedies.contains(&Remedy::Start)
            {
                remedies.push(Remedy::Start);
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
                remedies,
                note,
            }
        })
        .collect();
    Some(OpResult {
        op_id: op_id.to_string(),
        status,
        decided_at: now,
        reason,
        nodes,
        epoch: None,
    })
}

fn node_state(v: &NodeView) -> NodeState {
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
