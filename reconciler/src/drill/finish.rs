//! Following a drill run to its end: the agent's final report decides it. A run is
//! `done` only when the agent restored the backup, no check failed and at least one
//! passed (a run whose checks were all skipped proved nothing); a failed phase, a failed
//! check, nothing checked or a lost agent is `error`.

use chrono::{DateTime, Utc};
use tidemark_schema::control::{DrillOutcome, OneShotRecord, PhaseStatus, RunStatus};

use crate::execute::{ExecError, Executor, Progress, who};

pub async fn advance(
    ex: &Executor,
    record: &OneShotRecord,
    now: DateTime<Utc>,
) -> Result<Progress, ExecError> {
    let one = ex.single(record, now).await?;
    if one.running() {
        return Ok(Progress::Running);
    }
    let v = &one.view;
    let mut outcome: Option<DrillOutcome> = None;
    let (status, reason) = match v.final_report() {
        Some(r) if r.status == PhaseStatus::Done => {
            outcome = r
                .details
                .get("drill")
                .and_then(|d| serde_json::from_value(d.clone()).ok());
            match &outcome {
                None => (
                    RunStatus::Error,
                    format!("{}: reported done without the drill's figures", who(v)),
                ),
                Some(o) => {
                    let failed: Vec<&str> = o.failed_checks().map(|c| c.detail.as_str()).collect();
                    let passed = o
                        .checks
                        .iter()
                        .filter(|c| c.status == tidemark_schema::control::DrillCheckStatus::Passed)
                        .count();
                    if failed.is_empty() && passed == 0 {
                        (
                            RunStatus::Error,
                            format!(
                                "backup {} restored, but no check could be judged: {}",
                                o.backup,
                                o.checks
                                    .iter()
                                    .map(|c| c.detail.as_str())
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            ),
                        )
                    } else if failed.is_empty() {
                        (RunStatus::Done, r.message.clone())
                    } else {
                        (
                            RunStatus::Error,
                            format!(
                                "backup {} restored, but {} check(s) failed: {}",
                                o.backup,
                                failed.len(),
                                failed.join("; ")
                            ),
                        )
                    }
                }
            }
        }
        Some(r) => (RunStatus::Error, format!("{}: {}", who(v), r.message)),
        None => (
            RunStatus::Error,
            format!(
                "drill agent {} stopped reporting (last heartbeat {}); the drill did not finish",
                v.node,
                one.last_heartbeat()
            ),
        ),
    };
    let mut r = record.clone();
    // The figures go with the outcome whatever decided it first: an earlier pass that
    // saw the same report wrote the same result.
    r.drill = outcome;
    ex.end_single(&r, &one.op.id, (status, reason), now).await
}
