//! `tidemark cancel-backup NAME` / `cancel-restore NAME`: asks the reconciler to cancel a
//! running one-shot, after checking that it can be, then waits (`--wait`) for the outcome.
//! A restore past `go` without fallback cannot be cancelled (no copy of the old data
//! exists), nor can anything already decided. The request is a create-once record in the
//! ledger; the reconciler carries it out as a transition of the one-shot's lifecycle and
//! records the outcome `cancelled`. Before `go`, this command also closes the gate itself
//! (create-once), so that a reconciler opening it at the same moment cannot win silently.

use std::time::{Duration, Instant};

use serde_json::json;
use tidemark_schema::control::{
    CancelRequest, Gate, OneShotRecord, OpCommand, OpResult, RunStatus, cancel_key, go_key,
    oneshot_key, result_key,
};
use tidemark_store::control::{ControlPlane, Created};

use super::args::{CancelArgs, OutputFormat};
use super::exit::ExitStatus;
use super::writable::open_writable_control;

/// What became of the request.
enum Verdict {
    /// The reconciler decided `cancelled` (or had already).
    Cancelled(String),
    /// Written; the reconciler had not decided within `--wait`.
    Requested(String),
    /// Not possible, or decided otherwise first: the operation goes on or has ended.
    Refused(String),
    /// No such operation has started.
    Unknown(String),
}

pub fn run(args: CancelArgs, kind: &str) -> anyhow::Result<ExitStatus> {
    let control = open_writable_control(&args.control)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let verdict = runtime.block_on(async {
        match request(&control, kind, &args.name).await? {
            Ok(effect) => outcome(&control, kind, &args.name, effect, args.wait).await,
            Err(refused) => Ok(refused),
        }
    })?;
    let (word, text, status) = match verdict {
        Verdict::Cancelled(t) => ("cancelled", t, ExitStatus::Ok),
        Verdict::Requested(t) => ("requested", t, ExitStatus::Running),
        Verdict::Refused(t) => ("refused", t, ExitStatus::CancelRefused),
        Verdict::Unknown(t) => ("unknown", t, ExitStatus::Failure),
    };
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "kind": kind, "name": args.name, "cancel": word, "detail": text,
            }))?
        ),
        OutputFormat::Text => println!("cancel of {kind} {}: {word}: {text}", args.name),
    }
    Ok(status)
}

/// Checks and writes the request: `Ok(what will happen)`, or the refusal.
async fn request(
    control: &ControlPlane,
    kind: &str,
    name: &str,
) -> anyhow::Result<Result<String, Verdict>> {
    let Some(record) = control
        .get::<OneShotRecord>(&oneshot_key(kind, name))
        .await?
    else {
        return Ok(Err(Verdict::Unknown(format!(
            "no {kind} named {name:?} has started in {}",
            control.url()
        ))));
    };
    if record.is_final() {
        return Ok(Err(if record.status == RunStatus::Cancelled {
            Verdict::Cancelled(format!("already cancelled: {}", record.message))
        } else {
            Verdict::Refused(format!(
                "it already ended ({}): {}",
                record.status, record.message
            ))
        }));
    }
    if let Some(r) = control.get::<OpResult>(&result_key(&record.op_id)).await?
        && r.status != RunStatus::Cancelled
    {
        return Ok(Err(Verdict::Refused(format!(
            "its outcome was decided first ({}): {}",
            r.status, r.reason
        ))));
    }
    let who = super::who::who_runs_this();
    let op = control.op(&record.op_id).await?;
    if tidemark_reconciler::selective::is_selective(&record) {
        let req = CancelRequest {
            kind: kind.to_string(),
            name: name.to_string(),
            at: chrono::Utc::now(),
            by: who,
        };
        control.create(&cancel_key(kind, name), &req).await?;
        return Ok(Ok(
            "the copy stops at its next batch or rename and its staging collections \
                       are dropped; a target already put in place, or partly merged, stays so \
                       and the outcome names it"
                .into(),
        ));
    }
    let gate_key = go_key(&record.op_id);
    let fallback = match kind {
        "restore" => op.is_some_and(|o| {
            matches!(
                o.command,
                OpCommand::Restore {
                    fallback_enabled: true,
                    ..
                }
            )
        }),
        _ => false,
    };
    let gate_open = || async {
        Ok::<_, anyhow::Error>(
            control
                .get::<serde_json::Value>(&gate_key)
                .await?
                .is_some_and(|g| Gate::read(&g).is_ok()),
        )
    };
    if kind == "restore" && !fallback && gate_open().await? {
        return Ok(Err(past_go_without_fallback()));
    }
    let req = CancelRequest {
        kind: kind.to_string(),
        name: name.to_string(),
        at: chrono::Utc::now(),
        by: who.clone(),
    };
    control.create(&cancel_key(kind, name), &req).await?;
    let effect = if kind != "restore" {
        "the agents stop copying and close their backup cursors, its objects are deleted from \
         storage and it never counts as a good backup"
            .to_string()
    } else {
        // Closed by us unless someone wrote the gate first.
        let closed = Gate::abort(chrono::Utc::now(), format!("cancelled by {who}"));
        let created = control.create(&gate_key, &closed).await? == Created::New;
        match (created || !gate_open().await?, fallback) {
            (true, _) => "before go: the restore is aborted on every node, nothing touched".into(),
            (false, true) => "past go: every node stops at its next phase boundary and every \
                              touched node is put back from its fallback directory, byte for byte"
                .into(),
            // Go was opened just as the request was written: nothing to go back to.
            (false, false) => return Ok(Err(past_go_without_fallback())),
        }
    };
    Ok(Ok(effect))
}

fn past_go_without_fallback() -> Verdict {
    Verdict::Refused(
        "it is past go and fallbackEnabled is false: the nodes' old data is already gone, so \
         there is nothing to go back to; the restore goes on"
            .into(),
    )
}

/// Waits up to `wait` for the one-shot to end: `cancelled` only once its ledger record
/// says so (a restore's decision comes before its nodes are put back, and a revert that
/// fails then ends it `error`).
async fn outcome(
    control: &ControlPlane,
    kind: &str,
    name: &str,
    effect: String,
    wait: Duration,
) -> anyhow::Result<Verdict> {
    let started = Instant::now();
    loop {
        let record = control
            .get::<OneShotRecord>(&oneshot_key(kind, name))
            .await?;
        match record {
            Some(r) if r.is_final() && r.status == RunStatus::Cancelled => {
                return Ok(Verdict::Cancelled(format!("{effect}; {}", r.message)));
            }
            Some(r) if r.is_final() => {
                return Ok(Verdict::Refused(format!(
                    "it ended {} instead: {}",
                    r.status, r.message
                )));
            }
            _ => {}
        }
        if started.elapsed() >= wait {
            return Ok(Verdict::Requested(format!(
                "{effect}; not ended yet (the reconciler carries it out; follow it with \
                 describe-*)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
