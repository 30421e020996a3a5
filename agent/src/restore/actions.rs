//! Follow-up instructions after a restore: move the fallback back, wipe the node for
//! initial sync, remove the fallback, start mongod as a replica-set member.

use serde_json::json;
use tidemark_schema::control::{PhaseReport, phase_key};

use super::fallback;
use super::validate::Captured;
use crate::error::AgentError;
use crate::mongod::{MongodProcess, StartSpec, port_is_free};
use crate::node::{Details, InPhase, Node, PhaseFailure};

/// Refuses to touch the dbPath while a mongod serves it.
fn ensure_stopped(node: &Node, phase: &'static str) -> Result<(), PhaseFailure> {
    if !port_is_free(&node.mongod_address()) || !crate::mongod::lock_is_empty(&node.cfg.dbpath) {
        return Err(AgentError::Refused(format!(
            "mongod is running on {}; stop it before changing its dbPath",
            node.mongod_address()
        )))
        .in_phase(phase);
    }
    Ok(())
}

pub async fn revert(node: &Node, restore_op: &str) -> Result<(String, Details), PhaseFailure> {
    ensure_stopped(node, "revert")?;
    let n = fallback::revert(&node.cfg.dbpath, restore_op).in_phase("revert")?;
    let mut d = Details::new();
    d.insert("restoredEntries".into(), json!(n));
    Ok((
        format!("the dbPath is back as it was before restore {restore_op}"),
        d,
    ))
}

pub async fn wipe(node: &Node, restore_op: &str) -> Result<(String, Details), PhaseFailure> {
    ensure_stopped(node, "wipe")?;
    let n = fallback::remove_entries(&node.cfg.dbpath).in_phase("wipe")?;
    let mut d = Details::new();
    d.insert("removedEntries".into(), json!(n));
    Ok((
        format!(
            "dbPath emptied after restore {restore_op}; the node will initial-sync when started"
        ),
        d,
    ))
}

pub async fn remove_fallback(
    node: &Node,
    restore_op: &str,
) -> Result<(String, Details), PhaseFailure> {
    fallback::remove(&node.cfg.dbpath, restore_op).in_phase("removeFallback")?;
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
    const PHASE: &str = "start";
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
