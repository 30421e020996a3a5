//! Following a selective restore to its end: the drill agent's final report decides it.
//! `done` when every collection was put in place; `error` with the agent's words (which
//! name each target's state) when it failed, or when the agent stopped reporting;
//! `cancelled` when `cancel-restore` asked (the op's `abort.json` stops the agent at its
//! next batch or rename) and the agent stopped.

use chrono::{DateTime, Utc};
use tidemark_schema::control::{
    OneShotRecord, Op, OpCommand, PhaseStatus, RunStatus, SelectiveOutcome, abort_key,
};

use crate::execute::{ExecError, Executor, Progress, who};

/// Whether a Restore's ledger record is a selective one (read from the op it holds).
pub fn is_selective(record: &OneShotRecord) -> bool {
    record
        .started_with
        .as_ref()
        .and_then(|s| serde_json::from_value::<Op>(s["op"].clone()).ok())
        .is_some_and(|op| matches!(op.command, OpCommand::SelectiveRestore { .. }))
}

pub async fn advance(
    ex: &Executor,
    record: &OneShotRecord,
    now: DateTime<Utc>,
) -> Result<Progress, ExecError> {
    let one = ex.single(record, now).await?;
    let cancel = ex.cancel_request(record).await?;
    if let Some(c) = &cancel
        && one.decided.is_none()
    {
        // The agent stops at its next batch or rename and drops its staging collections.
        let abort = serde_json::json!({"at": now, "by": c.by});
        ex.control.create(&abort_key(&one.op.id), &abort).await?;
    }
    if one.running() {
        return Ok(Progress::Running);
    }
    let v = &one.view;
    let mut outcome: Option<SelectiveOutcome> = None;
    let (status, reason) = match v.final_report() {
        Some(r) if r.status == PhaseStatus::Done => {
            outcome = r
                .details
                .get("selective")
                .and_then(|d| serde_json::from_value(d.clone()).ok());
            match outcome {
                Some(_) => (RunStatus::Done, r.message.clone()),
                None => (
                    RunStatus::Error,
                    format!("{}: reported done without what it copied", who(v)),
                ),
            }
        }
        // Stopped by the cancel (the agent says so by a flag): what it left is in its
        // words. A failure of its own stays an error even with a cancel requested.
        Some(r)
            if cancel.is_some()
                && r.details.get("endedByAuthor") == Some(&serde_json::json!(true)) =>
        {
            (
                RunStatus::Cancelled,
                format!(
                    "cancelled by {}: {}: {}",
                    cancel.as_ref().map_or("", |c| c.by.as_str()),
                    who(v),
                    r.message
                ),
            )
        }
        Some(r) => (RunStatus::Error, format!("{}: {}", who(v), r.message)),
        None => (
            RunStatus::Error,
            format!(
                "drill agent {} stopped reporting (last heartbeat {}); the selective restore \
                 did not finish. A target is changed only once its copy is renamed onto it \
                 (or, with onExisting: merge, partly merged); staging collections it may have \
                 left (tidemark_restore_*) are dropped when the agent starts again, or can be \
                 dropped by hand",
                v.node,
                one.last_heartbeat()
            ),
        ),
    };
    let mut r = record.clone();
    r.selective = outcome;
    ex.end_single(&r, &one.op.id, (status, reason), now).await
}
