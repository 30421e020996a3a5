//! `tidemark cancel-backup NAME` / `cancel-restore NAME`: asks the reconciler to cancel a
//! running one-shot, after checking that it can be: a restore past `go` without fallback
//! cannot (no copy of the old data exists), nor can anything already decided. The request
//! is a create-once record in the ledger; the reconciler carries it out as a transition of
//! the one-shot's lifecycle and records the outcome `cancelled`.

use serde_json::json;
use tidemark_schema::control::{
    CancelRequest, Gate, OneShotRecord, OpCommand, cancel_key, go_key, oneshot_key, result_key,
};
use tidemark_store::control::{ControlPlane, Created};

use super::args::{CancelArgs, OutputFormat};
use super::exit::ExitStatus;
use super::writable::open_writable_control;

/// What the check found: accepted (with what will happen) or refused (with why).
enum Verdict {
    Accepted(String),
    Refused(String),
}

pub fn run(args: CancelArgs, kind: &str) -> anyhow::Result<ExitStatus> {
    let control = open_writable_control(&args.control)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let verdict = runtime.block_on(check_and_request(&control, kind, &args.name))?;
    let (accepted, text) = match &verdict {
        Verdict::Accepted(what) => (true, what.clone()),
        Verdict::Refused(why) => (false, why.clone()),
    };
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "kind": kind, "name": args.name, "accepted": accepted,
                if accepted { "effect" } else { "reason" }: text,
            }))?
        ),
        OutputFormat::Text if accepted => {
            println!("cancel of {kind} {} requested: {text}", args.name)
        }
        OutputFormat::Text => eprintln!("cancel of {kind} {} refused: {text}", args.name),
    }
    Ok(if accepted {
        ExitStatus::Ok
    } else {
        ExitStatus::CancelRefused
    })
}

async fn check_and_request(
    control: &ControlPlane,
    kind: &str,
    name: &str,
) -> anyhow::Result<Verdict> {
    let Some(record) = control
        .get::<OneShotRecord>(&oneshot_key(kind, name))
        .await?
    else {
        return Ok(Verdict::Refused(format!(
            "no {kind} named {name:?} has started in {}",
            control.url()
        )));
    };
    if record.is_final() {
        return Ok(Verdict::Refused(format!(
            "it already ended ({}): {}",
            record.status, record.message
        )));
    }
    if control.exists(&result_key(&record.op_id)).await? {
        return Ok(Verdict::Refused(
            "its outcome is already decided; it is finishing its follow-up steps".into(),
        ));
    }
    let effect = match kind {
        "restore" => {
            let op = control.op(&record.op_id).await?;
            let fallback = op.as_ref().is_some_and(|o| {
                matches!(
                    o.command,
                    OpCommand::Restore {
                        fallback_enabled: true,
                        ..
                    }
                )
            });
            let gate = control
                .get::<serde_json::Value>(&go_key(&record.op_id))
                .await?;
            match gate.map(|g| Gate::read(&g).is_ok()) {
                Some(true) if !fallback => {
                    return Ok(Verdict::Refused(
                        "it is past go and fallbackEnabled is false: the nodes' old data is \
                         already gone, so there is nothing to go back to; the restore goes on"
                            .into(),
                    ));
                }
                Some(true) => "past go: every node stops at its next phase boundary and every \
                               touched node is put back from its fallback directory, byte for \
                               byte; the outcome is recorded as cancelled"
                    .to_string(),
                _ => "before go: the restore is aborted on every node, nothing touched; the \
                      outcome is recorded as cancelled"
                    .to_string(),
            }
        }
        _ => "the agents close their backup cursors, its objects are deleted from storage and \
              it never counts as a good backup; the outcome is recorded as cancelled"
            .to_string(),
    };
    let request = CancelRequest {
        kind: kind.to_string(),
        name: name.to_string(),
        at: chrono::Utc::now(),
        by: who_runs_this(),
    };
    if control.create(&cancel_key(kind, name), &request).await? == Created::Existed {
        return Ok(Verdict::Accepted(format!("already requested; {effect}")));
    }
    Ok(Verdict::Accepted(effect))
}

/// `user@host`, for the request's audit trail.
fn who_runs_this() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown-user".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{user}@{host}")
}
