//! The agent's main loop: learn who we are, beat, pick up the ops addressed to this node
//! and run them one at a time. A restarted agent fails an op it had started cleanly
//! (never reports success for work it did not finish) and runs ops it never started.

use std::sync::Arc;

use serde_json::json;
use tidemark_schema::control::{Op, OpCommand, PHASE_DONE, PHASE_ERROR, PhaseStatus, result_key};

use crate::config::AgentConfig;
use crate::control::ControlPlane;
use crate::error::AgentError;
use crate::node::{Details, Node, PhaseFailure};
use crate::{backup, heartbeat, restore};

/// Works out this node's identity: from the flags, else from mongod itself.
pub async fn identify(cfg: AgentConfig, control: ControlPlane) -> Result<Node, AgentError> {
    let (mut rs, mut id) = (cfg.replica_set.clone(), cfg.node_id.clone());
    if rs.is_none() || id.is_none() {
        let client = crate::mongod::MongodClient::connect(&cfg.mongod_uri).await?;
        let facts = client.facts().await.map_err(|e| {
            AgentError::Config(format!(
                "{e}; while mongod is down, give --node-id and --replica-set"
            ))
        })?;
        rs = rs.or(facts.replica_set);
        id = id.or(Some(facts.me).filter(|m| !m.is_empty()));
    }
    let replica_set = rs.ok_or_else(|| {
        AgentError::Config("mongod is not a replica-set member; give --replica-set".into())
    })?;
    let id = id.ok_or_else(|| {
        AgentError::Config("cannot tell this node's host:port; give --node-id".into())
    })?;
    Ok(Node {
        cluster: cfg.cluster.clone(),
        cfg,
        control,
        replica_set,
        id,
    })
}

/// Runs until `stop` resolves.
pub async fn run(
    node: Node,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let node = Arc::new(node);
    tracing::info!(cluster = %node.cluster, rs = %node.replica_set, node = %node.id, "agent started");
    let beats = tokio::spawn(heartbeat::run(node.clone()));
    let work = async {
        let mut last: Option<String> = None;
        loop {
            match node.control.op_ids_after(last.as_deref()).await {
                Ok(ids) => {
                    for id in ids {
                        match consider(&node, &id).await {
                            Ok(Seen::Handled) => last = Some(id),
                            // Its author is still writing it: look again next time.
                            Ok(Seen::NotReady) => break,
                            Err(e) => {
                                tracing::warn!(op = %id, error = %e, "op not handled; will retry");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list ops"),
            }
            tokio::time::sleep(node.cfg.poll_interval).await;
        }
    };
    tokio::select! {
        _ = work => {}
        _ = stop => {}
    }
    beats.abort();
    Ok(())
}

enum Seen {
    Handled,
    NotReady,
}

/// Decides what to do with one op: skip, run, or fail an interrupted run.
async fn consider(node: &Node, id: &str) -> Result<Seen, AgentError> {
    let raw = match node
        .control
        .get::<serde_json::Value>(&tidemark_schema::control::op_key(id))
        .await?
    {
        Some(raw) => raw,
        // The op directory exists but its op.json does not yet: look again, unless the
        // op is old enough that its author clearly gave up (a stray directory must not
        // block every later op).
        None if is_recent(id) => return Ok(Seen::NotReady),
        None => {
            tracing::warn!(op = %id, "an op directory without op.json; skipping it");
            return Ok(Seen::Handled);
        }
    };
    let op: Op = match serde_json::from_value(raw.clone()) {
        Ok(op) => op,
        Err(e) => return unreadable(node, id, &raw, e).await.map(|_| Seen::Handled),
    };
    if !node.targets_me(&op) {
        return Ok(Seen::Handled);
    }
    run_if_needed(node, &op).await.map(|_| Seen::Handled)
}

/// Whether an op id (which starts with its UTC creation time) is under five minutes old.
fn is_recent(id: &str) -> bool {
    let stamp = id.get(..19).unwrap_or_default();
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%3fZ")
        .map(|t| chrono::Utc::now().naive_utc() - t < chrono::Duration::minutes(5))
        .unwrap_or(false)
}

/// An op this agent cannot read (say, a command of a newer reconciler): if it names this
/// node, say so in an error report rather than leaving the author waiting.
async fn unreadable(
    node: &Node,
    id: &str,
    raw: &serde_json::Value,
    e: serde_json::Error,
) -> Result<(), AgentError> {
    let mine = raw["cluster"] == node.cluster.as_str()
        && raw["targets"].as_array().is_some_and(|ts| {
            ts.iter().any(|t| {
                t["replicaSet"] == node.replica_set.as_str() && t["node"] == node.id.as_str()
            })
        });
    tracing::warn!(op = %id, error = %e, mine, "unreadable op");
    if !mine {
        return Ok(());
    }
    node.report_for(
        id,
        PHASE_ERROR,
        PhaseStatus::Error,
        format!(
            "this agent (version {}) cannot read the op: {e}; nothing was done",
            env!("CARGO_PKG_VERSION")
        ),
        Details::new(),
    )
    .await
}

async fn run_if_needed(node: &Node, op: &Op) -> Result<(), AgentError> {
    let id = op.id.as_str();
    if node
        .control
        .get::<serde_json::Value>(&result_key(id))
        .await?
        .is_some()
    {
        return Ok(()); // the op already has an outcome
    }
    let reports = node
        .control
        .reports(id, &node.replica_set, &node.id)
        .await?;
    if reports
        .iter()
        .any(|r| r.phase == PHASE_DONE || r.phase == PHASE_ERROR)
    {
        return Ok(());
    }
    if let Some(last) = reports.last() {
        // We started this op before a restart. Its in-memory state (the backup cursor,
        // the download in progress) is gone, so it cannot have finished: fail it, naming
        // the phase, and leave any fallback directory for the reconciler's decision.
        let message = format!(
            "the agent restarted during phase {:?} of this op; the work on this node did not \
             finish and is not resumed{}",
            last.phase,
            match &op.command {
                OpCommand::Restore {
                    fallback_enabled: true,
                    ..
                } => "; the fallback directory holds the node's previous data",
                _ => "",
            }
        );
        let mut details = Details::new();
        details.insert("interruptedPhase".into(), json!(last.phase));
        return node
            .report(op, PHASE_ERROR, PhaseStatus::Error, message, details)
            .await;
    }
    execute(node, op).await
}

/// Runs an op to its end and writes the final report.
pub async fn execute(node: &Node, op: &Op) -> Result<(), AgentError> {
    tracing::info!(op = %op.id, command = op.command.name(), "running op");
    let outcome: Result<(String, Details), PhaseFailure> = match &op.command {
        OpCommand::Backup { .. } => backup::run(node, op).await,
        OpCommand::Restore { .. } => restore::run(node, op).await,
        OpCommand::RevertToFallback { restore_op } => restore::revert(node, restore_op).await,
        OpCommand::WipeForInitialSync { restore_op } => restore::wipe(node, restore_op).await,
        OpCommand::RemoveFallback { restore_op } => {
            restore::remove_fallback(node, restore_op).await
        }
        OpCommand::StartMongod { restore_op } => restore::start_member(node, restore_op).await,
    };
    match outcome {
        Ok((message, details)) => {
            node.report(op, PHASE_DONE, PhaseStatus::Done, message, details)
                .await
        }
        Err(failure) => {
            tracing::error!(op = %op.id, %failure, "op failed");
            let mut details = Details::new();
            details.insert("phase".into(), json!(failure.phase));
            node.report(
                op,
                PHASE_ERROR,
                PhaseStatus::Error,
                failure.to_string(),
                details,
            )
            .await
        }
    }
}
