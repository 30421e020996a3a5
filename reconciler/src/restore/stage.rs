//! A restore's lifecycle as a type: `stage` derives where a restore is from its records
//! alone (a pure function), and `follow` acts on it with one `match`. A crash between any
//! two writes leaves records from which `stage` gives the next transition, so a restarted
//! or new leader goes on with no recovery code of its own.
//!
//! ```text
//! Checking ─▶ OpenGate ─▶ Restoring ─▶ Decide ─▶ (WriteStep ─▶ StepRunning ─▶ CloseStep)*
//!    │            │           │                          ─▶ AwaitHealth ─▶ FreshBackup ─▶ Finish ─▶ Ended
//!    └────────────┴─▶ AbortUntouched (a refusal, a lost node, the go bound, a cancel)
//!                             └─▶ Cancelling (cancel after go, with fallback) ─▶ Decide
//! ```

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use tidemark_schema::control::{
    Heartbeat, NodeFate, OpResult, OpTarget, PhaseStatus, Remedy, RunStatus,
};

use super::records::{GateRecord, Progressed, RestoreRecords, StepRecords};
use crate::execute::{NodeView, who};

/// Where a restore is, and so what the next transition is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreStage {
    /// Nodes run their checks (precheck, disk) and wait at `ready`; nothing is decided.
    Checking,
    /// Every node passed its checks and nothing blocks: the gate is to be opened.
    OpenGate,
    /// Before `go`, something blocks (a node refused or is lost, the op is older than the
    /// go bound, the operator cancelled, an agent closed the gate): the gate is to be
    /// closed if it is not, and the restore ends with no node touched.
    AbortUntouched { why: String, cancelled: bool },
    /// Past `go`: nodes stop, move their data aside, fetch and recover. A cancel that
    /// came after `go` without fallback is refused (no copy of the old data exists).
    Restoring { cancel_refused: bool },
    /// Cancelled after `go` with fallback: every node is told to stop at its next phase
    /// boundary (`abort.json`); the decision then reverts every touched node.
    Cancelling,
    /// Every node ended (or is lost) after `go`: the decision is to be written.
    Decide { cancelled: bool },
    /// The decision is written; this follow-up step is to be written for `targets`.
    WriteStep {
        remedy: Remedy,
        targets: Vec<OpTarget>,
    },
    /// The follow-up step is written and its nodes are at work.
    StepRunning { remedy: Remedy },
    /// Its nodes are done or lost: the step is to be closed with their verdicts.
    CloseStep { remedy: Remedy },
    /// The nodes were started; the restore waits for a healthy replica set.
    AwaitHealth { missing: String },
    /// `postRestore.freshBackup`: the backup is to be started; the restore ends with
    /// `status` and `message` if it cannot be.
    StartFreshBackup { status: RunStatus, message: String },
    /// `postRestore.freshBackup`: the backup runs.
    FreshBackupRunning { backup: String },
    /// Nothing is left to do: the outcome is to be written to the ledger.
    Finish { status: RunStatus, message: String },
    /// The ledger holds the outcome.
    Ended(RunStatus),
}

impl RestoreStage {
    /// What the stage waits for or does next, in words, for `describe-restore`.
    pub fn detail(&self) -> String {
        match self {
            RestoreStage::Checking => "nodes run their checks; nothing is touched".into(),
            RestoreStage::OpenGate => "every node is ready; go is opened next".into(),
            RestoreStage::AbortUntouched { why, .. } => format!("aborting untouched: {why}"),
            RestoreStage::Restoring {
                cancel_refused: true,
            } => "nodes restore; the cancel was refused (past go without fallback)".into(),
            RestoreStage::Restoring { .. } => {
                "nodes stop, move their data aside, fetch, recover".into()
            }
            RestoreStage::Cancelling => "cancelled: nodes stop at their next phase boundary".into(),
            RestoreStage::Decide { .. } => "every node ended; the decision is written next".into(),
            RestoreStage::WriteStep { remedy, .. } | RestoreStage::StepRunning { remedy } => {
                format!("follow-up step {}", remedy.as_str())
            }
            RestoreStage::CloseStep { remedy } => {
                format!("closing follow-up step {}", remedy.as_str())
            }
            RestoreStage::AwaitHealth { missing } => {
                format!("waiting for a healthy set: {missing}")
            }
            RestoreStage::StartFreshBackup { .. } => "starting the fresh base backup".into(),
            RestoreStage::FreshBackupRunning { backup } => {
                format!("fresh base backup {backup} runs")
            }
            RestoreStage::Finish { .. } => "writing the outcome".into(),
            RestoreStage::Ended(status) => format!("ended {status}"),
        }
    }

    /// The stage's name, for `status`, `describe-restore` and logs.
    pub fn name(&self) -> &'static str {
        match self {
            RestoreStage::Checking => "checking",
            RestoreStage::OpenGate => "openGate",
            RestoreStage::AbortUntouched { .. } => "abortUntouched",
            RestoreStage::Restoring { .. } => "restoring",
            RestoreStage::Cancelling => "cancelling",
            RestoreStage::Decide { .. } => "decide",
            RestoreStage::WriteStep { .. } => "writeStep",
            RestoreStage::StepRunning { .. } => "stepRunning",
            RestoreStage::CloseStep { .. } => "closeStep",
            RestoreStage::AwaitHealth { .. } => "awaitHealth",
            RestoreStage::StartFreshBackup { .. } => "startFreshBackup",
            RestoreStage::FreshBackupRunning { .. } => "freshBackup",
            RestoreStage::Finish { .. } => "finish",
            RestoreStage::Ended(_) => "ended",
        }
    }
}

/// The stage of a restore from its records, at `now`. `go_bound` is the reconciler's
/// `--go-timeout`; the op's own bound is used when it is shorter.
pub fn stage(r: &RestoreRecords, go_bound: Duration, now: DateTime<Utc>) -> RestoreStage {
    if r.record.is_final() {
        return RestoreStage::Ended(r.record.status);
    }
    match &r.progress {
        Progressed::Undecided { views, gate } => undecided(r, views, gate.as_ref(), go_bound, now),
        Progressed::Decided {
            result,
            steps,
            beats,
            fresh,
        } => decided(r, result, steps, beats, fresh.as_ref()),
    }
}

fn undecided(
    r: &RestoreRecords,
    views: &[NodeView],
    gate: Option<&GateRecord>,
    go_bound: Duration,
    now: DateTime<Utc>,
) -> RestoreStage {
    let cancel = r.cancel.as_ref().map(|c| {
        format!(
            "cancelled by {} at {} (tidemark cancel-restore)",
            c.by,
            c.at.to_rfc3339()
        )
    });
    if gate == Some(&GateRecord::Open) {
        let cancelling = cancel.is_some() && r.settings.fallback_enabled;
        return if views.iter().all(|v| v.settled()) {
            RestoreStage::Decide {
                cancelled: cancelling,
            }
        } else if cancelling {
            RestoreStage::Cancelling
        } else {
            RestoreStage::Restoring {
                cancel_refused: cancel.is_some(),
            }
        };
    }
    let mut blockers: Vec<String> = Vec::new();
    if let Some(GateRecord::Closed(why)) = gate {
        blockers.push(format!("gate closed by {why}"));
    }
    blockers.extend(cancel.iter().cloned());
    // The op's bound includes the time the chunk checks may take; the reconciler's own
    // `--go-timeout` (which may be shorter since) applies to the rest.
    let allowance = r.check_allowance();
    let bound = go_bound.min(r.op_go_bound().map_or(go_bound, |b| b - allowance)) + allowance;
    if gate.is_none() && now - r.op.created_at > bound {
        blockers.push(format!(
            "the restore was written at {} and was not ready to go within --go-timeout ({}s); \
             start it again under a new name if it is still wanted",
            r.op.created_at.to_rfc3339(),
            bound.num_seconds()
        ));
    }
    blockers.extend(views.iter().filter_map(|v| match v.final_report() {
        Some(rep) => Some(format!("{}: {}", who(v), rep.message)),
        None if v.lost => Some(format!("{}: {}", who(v), lost_message(v))),
        None => None,
    }));
    if !blockers.is_empty() {
        return RestoreStage::AbortUntouched {
            why: blockers.join("; "),
            cancelled: cancel.is_some(),
        };
    }
    if views
        .iter()
        .all(|v| v.reported(tidemark_schema::control::Phase::Ready))
    {
        RestoreStage::OpenGate
    } else {
        RestoreStage::Checking
    }
}

/// "node lost, last heartbeat …, last phase …".
pub fn lost_message(v: &NodeView) -> String {
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

/// What the follow-up steps closed so far left behind.
#[derive(Default)]
struct Closed {
    /// Nodes whose step failed or was lost: they get no later step.
    stuck: BTreeSet<String>,
    /// Replica sets with a member whose wipe did not happen (as the wipe was closed): it
    /// still holds its pre-restore data, so no member of the set is started and the
    /// fallback directories stay for a revert by hand.
    unwiped: BTreeSet<String>,
    notes: Vec<String>,
    /// The start step's nodes, and when it was written.
    started: Option<(Vec<OpTarget>, DateTime<Utc>)>,
}

fn decided(
    r: &RestoreRecords,
    result: &OpResult,
    steps: &[StepRecords],
    beats: &[Heartbeat],
    fresh: Option<&tidemark_schema::control::OneShotRecord>,
) -> RestoreStage {
    let mut closed = Closed::default();
    for step in steps {
        let held = |rs: &str| {
            matches!(step.remedy, Remedy::Start | Remedy::RemoveFallback)
                && closed.unwiped.contains(rs)
        };
        let targets: Vec<OpTarget> = result
            .nodes
            .iter()
            .filter(|n| {
                n.remedies.contains(&step.remedy)
                    && !closed.stuck.contains(&n.node)
                    && !held(&n.replica_set)
                    // Only a node the restore itself targeted is ever wiped, reverted or
                    // started: a result naming any other node is not acted on for it.
                    && r.op
                        .targets
                        .iter()
                        .any(|t| t.replica_set == n.replica_set && t.node == n.node)
            })
            .map(|n| OpTarget {
                replica_set: n.replica_set.clone(),
                node: n.node.clone(),
            })
            .collect();
        if targets.is_empty() {
            continue;
        }
        let Some(op) = &step.op else {
            return RestoreStage::WriteStep {
                remedy: step.remedy,
                targets,
            };
        };
        let Some(written) = &step.result else {
            return if step.views.iter().all(|v| v.settled()) {
                RestoreStage::CloseStep {
                    remedy: step.remedy,
                }
            } else {
                RestoreStage::StepRunning {
                    remedy: step.remedy,
                }
            };
        };
        if step.remedy == Remedy::Wipe {
            closed.unwiped.extend(
                written
                    .nodes
                    .iter()
                    .filter(|n| n.fate != NodeFate::Done)
                    .map(|n| n.replica_set.clone()),
            );
        }
        if step.remedy == Remedy::Start {
            closed.started = Some((op.targets.clone(), op.created_at));
        }
        let judged = verdicts(step, written);
        for n in judged.nodes.iter().filter(|n| n.fate != NodeFate::Done) {
            closed.stuck.insert(n.node.clone());
            closed.notes.push(n.message.clone());
            // A wipe closed without verdicts (an older reconciler's) holds its set by the
            // verdicts worked out again.
            if step.remedy == Remedy::Wipe && written.nodes.is_empty() {
                closed.unwiped.insert(n.replica_set.clone());
            }
        }
    }
    let mut status = result.status;
    let left_behind: Vec<&str> = result
        .nodes
        .iter()
        .filter(|n| closed.stuck.contains(&n.node) || n.needs_operator)
        .map(|n| n.node.as_str())
        .collect();
    if status == RunStatus::Cancelled && !left_behind.is_empty() {
        // "Cancelled" promises that nothing the restore did stays: a node not put back
        // (a revert that failed, a lost agent) breaks it, and the operator must know.
        status = RunStatus::Error;
        closed.notes.push(format!(
            "the cancel could not put every node back: {} (see each node's note)",
            left_behind.join(", ")
        ));
    }
    if !closed.unwiped.is_empty() {
        // The decision said PartlyDone, but a member could not be wiped: the restore is
        // not usable until someone deals with it, and nothing of those sets was started.
        status = RunStatus::Error;
        closed.notes.push(format!(
            "replica set(s) {} were NOT started: a member's wipe did not happen, so it still \
             holds its pre-restore data and would roll back the restored members; wipe it \
             (or stop it for good), then start the set",
            closed
                .unwiped
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for n in result.nodes.iter().filter(|n| n.needs_operator) {
        closed.notes.push(format!("{}: {}", n.node, n.note));
    }
    let message = |notes: &[String]| {
        if notes.is_empty() {
            result.reason.clone()
        } else {
            format!("{}. {}", result.reason, notes.join("; "))
        }
    };
    if !status.is_failure() && r.settings.start_nodes {
        if let Some((started, since)) = &closed.started
            && let Some(missing) = unhealthy(beats, started, &closed.stuck, *since)
        {
            return RestoreStage::AwaitHealth { missing };
        }
        if r.settings.fresh_backup.is_some() {
            match fresh {
                None => {
                    return RestoreStage::StartFreshBackup {
                        status,
                        message: message(&closed.notes),
                    };
                }
                Some(b) if !b.is_final() => {
                    return RestoreStage::FreshBackupRunning {
                        backup: b.name.clone(),
                    };
                }
                Some(b) => closed.notes.push(format!(
                    "fresh base backup {}: {} {}",
                    b.name, b.status, b.message
                )),
            }
        }
    }
    RestoreStage::Finish {
        status,
        message: message(&closed.notes),
    }
}

/// A closed step's verdicts as they stand: a node closed as lost whose agent then
/// finished the step did it; a result written without verdicts (by an older
/// reconciler) is worked out again from the reports.
pub fn verdicts(step: &StepRecords, written: &OpResult) -> OpResult {
    if written.nodes.is_empty() && written.status != RunStatus::Done {
        return step_result(&written.op_id, step.remedy, &step.views, written.decided_at);
    }
    let mut closed = written.clone();
    for n in closed.nodes.iter_mut().filter(|n| n.fate == NodeFate::Lost) {
        let done = step.views.iter().any(|v| {
            v.node == n.node
                && v.final_report()
                    .is_some_and(|r| r.status == PhaseStatus::Done)
        });
        if done {
            n.fate = NodeFate::Done;
        }
    }
    closed
}

/// The closing record of one follow-up step, with each node's verdict.
pub fn step_result(id: &str, stage: Remedy, views: &[NodeView], now: DateTime<Utc>) -> OpResult {
    use tidemark_schema::control::NodeVerdict;
    let nodes: Vec<NodeVerdict> = views
        .iter()
        .map(|v| {
            let (fate, message) = match v.final_report() {
                Some(r) if r.status == PhaseStatus::Done => (NodeFate::Done, r.message.clone()),
                Some(r) => (
                    NodeFate::Failed,
                    format!("{} failed on {}: {}", stage.as_str(), who(v), r.message),
                ),
                None => (
                    NodeFate::Lost,
                    format!(
                        "{} not done on {}: node lost; it still needs it",
                        stage.as_str(),
                        who(v)
                    ),
                ),
            };
            NodeVerdict {
                replica_set: v.replica_set.clone(),
                node: v.node.clone(),
                fate,
                phase: None,
                message,
                remedies: Vec::new(),
                note: String::new(),
                needs_operator: false,
            }
        })
        .collect();
    OpResult {
        op_id: id.to_string(),
        status: if nodes.iter().all(|n| n.fate == NodeFate::Done) {
            RunStatus::Done
        } else {
            RunStatus::Error
        },
        decided_at: now,
        reason: format!("follow-up {} of the restore", stage.as_str()),
        nodes,
        epoch: None,
    }
}

/// `Some(what is missing)` until every started node is PRIMARY or SECONDARY again,
/// initial syncs included, as the agents' heartbeats since the start show.
fn unhealthy(
    beats: &[Heartbeat],
    started: &[OpTarget],
    stuck: &BTreeSet<String>,
    since: DateTime<Utc>,
) -> Option<String> {
    use tidemark_schema::control::MemberRole;
    let mut missing = Vec::new();
    // Each replica set with a started node needs its own primary; nodes whose start
    // failed are not waited for (their failure is in the outcome already).
    let mut primaries: std::collections::BTreeMap<&str, bool> = Default::default();
    for n in started.iter().filter(|n| !stuck.contains(&n.node)) {
        let primary = primaries.entry(n.replica_set.as_str()).or_default();
        let hb = beats
            .iter()
            .find(|h| h.replica_set == n.replica_set && h.node == n.node && h.at > since);
        match hb.map(|h| &h.role) {
            Some(MemberRole::Primary) => *primary = true,
            Some(MemberRole::Secondary) => {}
            Some(role) => missing.push(format!("{} is {role}", n.node)),
            None => missing.push(format!("{}: no heartbeat since the start", n.node)),
        }
    }
    if missing.is_empty() {
        missing.extend(
            primaries
                .iter()
                .filter(|(_, p)| !**p)
                .map(|(rs, _)| format!("replica set {rs} has no primary yet")),
        );
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
