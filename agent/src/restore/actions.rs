//! Follow-up instructions after a restore: move the fallback back, wipe the node for
//! initial sync, remove the fallback, start mongod as a replica-set member.

use serde_json::json;
use tidemark_schema::control::{Phase, PhaseReport, phase_key, restore_log_key};

use super::fallback;
use super::validate::Captured;
use crate::error::AgentError;
use crate::mongod::{
    MongodProcess, StartSpec, kill_leftover_standalone, lock_is_released, port_is_free,
};
use crate::node::{Details, InPhase, Node, PhaseFailure};

/// Refuses to touch the dbPath while a mongod serves it. A temporary standalone left by
/// an earlier run of this agent (it died during `recover`) is stopped first, and a lock
/// file naming a process that no longer exists is a stale claim, not a running mongod.
async fn ensure_stopped(node: &Node, phase: Phase) -> Result<(), PhaseFailure> {
    kill_leftover_standalone(&node.cfg.dbpath).await;
    if !port_is_free(&node.mongod_address()) || !lock_is_released(&node.cfg.dbpath) {
        return Err(AgentError::Refused(format!(
            "mongod is running on {}; stop it before changing its dbPath",
            node.mongod_address()
        )))
        .in_phase(phase);
    }
    Ok(())
}

/// The restore log explains why a node failed; a revert or a wipe empties the dbPath that
/// holds it, so its last MiB goes to the control plane first, next to the node's reports
/// (`ops/<restore>/<rs>/<node>.restore.log`). Failing to save it never blocks the revert.
async fn keep_restore_log(node: &Node, restore_op: &str) {
    let path = node.cfg.dbpath.join(super::recover::RESTORE_LOG);
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    let tail = &bytes[bytes.len().saturating_sub(1 << 20)..];
    let key = restore_log_key(restore_op, &node.replica_set, &node.id);
    let text = String::from_utf8_lossy(tail).into_owned();
    if let Err(e) = node.control.put(&key, &text).await {
        tracing::warn!(error = %e, "could not keep the restore log in the control plane");
    }
}

pub async fn revert(node: &Node, restore_op: &str) -> Result<(String, Details), PhaseFailure> {
    ensure_stopped(node, Phase::Revert).await?;
    keep_restore_log(node, restore_op).await;
    let n = fallback::revert(&node.cfg.dbpath, restore_op).in_phase(Phase::Revert)?;
    let mut d = Details::new();
    d.insert("restoredEntries".into(), json!(n));
    Ok((
        format!("the dbPath is back as it was before restore {restore_op}"),
        d,
    ))
}

pub async fn wipe(node: &Node, restore_op: &str) -> Result<(String, Details), PhaseFailure> {
    // A node that failed at `stop` (or never stopped) may still serve its old data as a
    // member of the set. The cluster decided it must initial-sync from the restored
    // members, so its mongod is shut down here rather than left to diverge.
    kill_leftover_standalone(&node.cfg.dbpath).await;
    if !port_is_free(&node.mongod_address()) {
        stop_own_mongod(node).await.in_phase(Phase::Wipe)?;
    }
    ensure_stopped(node, Phase::Wipe).await?;
    keep_restore_log(node, restore_op).await;
    let n = fallback::remove_entries(&node.cfg.dbpath).in_phase(Phase::Wipe)?;
    let mut d = Details::new();
    d.insert("removedEntries".into(), json!(n));
    Ok((
        format!(
            "dbPath emptied after restore {restore_op}; the node will initial-sync when started"
        ),
        d,
    ))
}

/// Shuts the node's mongod down (forced: its data is about to be wiped) and waits until
/// the lock is released and the port free.
async fn stop_own_mongod(node: &Node) -> Result<(), AgentError> {
    tracing::warn!(node = %node.id, "mongod still runs on the data to wipe; shutting it down");
    let client = node.mongod().await?;
    if let Err(e) = client.shutdown(true).await {
        tracing::warn!(error = %e, "shutdown answered with an error; waiting for the stop");
    }
    crate::mongod::wait_stopped(
        &node.cfg.dbpath,
        &node.mongod_address(),
        node.cfg.mongod_timeout,
    )
    .await
    .map_err(AgentError::Refused)
}

pub async fn remove_fallback(
    node: &Node,
    restore_op: &str,
) -> Result<(String, Details), PhaseFailure> {
    fallback::remove(&node.cfg.dbpath, restore_op).in_phase(Phase::RemoveFallback)?;
    Ok((
        format!("fallback directory of restore {restore_op} removed"),
        Details::new(),
    ))
}

/// Starts mongod with the command line it had before the restore, as recorded in the
/// restore's `precheck` report.
pub async fn start_member(
    node: &Node,
    restore_op: &str,
) -> Result<(String, Details), PhaseFailure> {
    const PHASE: Phase = Phase::Start;
    let key = phase_key(restore_op, &node.replica_set, &node.id, "precheck");
    let report: PhaseReport = node
        .control
        .get(&key)
        .await
        .in_phase(PHASE)?
        .ok_or_else(|| {
            AgentError::Refused(format!(
                "no precheck report at {key}: cannot tell how mongod ran"
            ))
        })
        .in_phase(PHASE)?;
    let captured: Captured = report
        .details
        .get("captured")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| AgentError::Refused(format!("{key} holds no captured command line")))
        .in_phase(PHASE)?;
    if !port_is_free(&node.mongod_address()) {
        return Ok(("mongod is already running".into(), Details::new()));
    }
    let spec = StartSpec {
        bin: node.cfg.mongod_bin.clone(),
        args: captured.argv.iter().skip(1).cloned().collect(),
        address: node.mongod_address(),
        // The node's own start, with its own options (auth, a config file): a server
        // that will not say who it is is taken at its word, as before.
        prove_identity: false,
    };
    let mut process = MongodProcess::spawn(&spec).in_phase(PHASE)?;
    process
        .wait_ready(node.cfg.mongod_timeout)
        .await
        .in_phase(PHASE)?;
    let mut d = Details::new();
    d.insert("pid".into(), json!(process.pid()));
    process.detach();
    Ok(("mongod started as a replica-set member".into(), d))
}
