//! Stops mongod for the restore: a primary steps down first; done means `mongod.lock` is
//! empty and the port is free.

use std::time::Instant;

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
) -> Result<(), PhaseFailure> {
    const PHASE: &str = "stop";
    node.running(op, PHASE, format!("stopping mongod ({role})"))
        .await?;
    let started = Instant::now();
    if role == "PRIMARY" {
        // Stepping down first lets a secondary take writes for as long as it still can.
        client.step_down(60).await.in_phase(PHASE)?;
    }
    if let Err(e) = client.shutdown(false).await {
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
