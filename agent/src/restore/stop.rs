//! Stops mongod for the restore: a primary steps down first; done means `mongod.lock` is
//! empty and the port is free.

use std::time::Instant;
use tidemark_schema::control::Phase;

use serde_json::json;
use tidemark_schema::control::Op;

use crate::error::AgentError;
use crate::mongod::{MongodClient, wait_stopped};
use crate::node::{Details, InPhase, Node, PhaseFailure};

pub async fn stop(
    node: &Node,
    op: &Op,
    client: &MongodClient,
    role: &str,
    captured_config: &serde_json::Value,
) -> Result<(), PhaseFailure> {
    const PHASE: Phase = Phase::Stop;
    node.running(op, PHASE, format!("stopping mongod ({role})"))
        .await?;
    let started = Instant::now();
    let mut force = false;
    if role == "PRIMARY" {
        if has_electable_peer(captured_config) {
            // Stepping down first lets a secondary take writes for as long as it can.
            if let Err(e) = client.step_down(60).await {
                tracing::warn!(error = %e, "step-down refused; shutting down with force");
                force = true;
            }
        } else {
            // A set with no other electable member cannot step down; it just stops.
            force = true;
        }
    }
    if let Err(e) = client.shutdown(force).await {
        tracing::warn!(error = %e, "clean shutdown refused; forcing");
        client.shutdown(true).await.in_phase(PHASE)?;
    }
    wait_stopped(
        &node.cfg.dbpath,
        &node.mongod_address(),
        node.cfg.mongod_timeout,
    )
    .await
    .map_err(AgentError::Refused)
    .in_phase(PHASE)?;
    let mut d = Details::new();
    d.insert(
        "elapsedMs".into(),
        json!(started.elapsed().as_millis() as u64),
    );
    node.done(
        op,
        PHASE,
        "mongod stopped: mongod.lock is empty and the port is free",
        d,
    )
    .await
}

/// Whether the replica-set config (canonical extended JSON) has another member that could
/// become primary: not an arbiter, priority above zero.
fn has_electable_peer(config: &serde_json::Value) -> bool {
    let members = config["members"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let number = |v: &serde_json::Value| -> Option<f64> {
        v.as_f64().or_else(|| {
            ["$numberInt", "$numberLong", "$numberDouble"]
                .iter()
                .find_map(|k| v.get(k)?.as_str()?.parse().ok())
        })
    };
    members
        .iter()
        .filter(|m| m["arbiterOnly"].as_bool() != Some(true))
        .filter(|m| m.get("priority").and_then(number).is_none_or(|p| p > 0.0))
        .count()
        > 1
}
