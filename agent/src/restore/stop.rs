//! Stops mongod for the restore: a primary steps down first; done means `mongod.lock` is
//! empty and the port is free.

use std::time::Instant;
use tidemark_schema::control::Phase;

use serde_json::json;
use tidemark_schema::control::Op;

use crate::error::AgentError;
use crate::mongod::{MongodClient, wait_stopped};
use crate::node::{Details, InPhase, Node, PhaseFailure};

/// Waits for this node's turn in the stop order: every node of an earlier wave has
/// reported `stop` done (or got further, or ended). Bounded by `--mongod-timeout`: a node
/// lost before stopping must not keep the others running forever; the order is a
/// courtesy to the cluster (no balancer or router sees a config server without its
/// shards), not what makes the restore correct.
///
/// Returns whether members of this node's own replica set stopped before it (a primary
/// then has no one to step down to, and stops with force rather than wait for one).
pub async fn wait_turn(
    node: &Node,
    op: &Op,
    waves: &[Vec<tidemark_schema::control::OpTarget>],
) -> Result<bool, PhaseFailure> {
    let mine = waves.iter().position(|w| {
        w.iter()
            .any(|t| t.replica_set == node.replica_set && t.node == node.id)
    });
    let Some(mine) = mine.filter(|w| *w > 0) else {
        return Ok(false);
    };
    let before: Vec<&tidemark_schema::control::OpTarget> = waves[..mine].iter().flatten().collect();
    let peers_first = before.iter().any(|t| t.replica_set == node.replica_set);
    // Only logged: a report would mark the node as stopping (and, after an agent
    // restart, as possibly stopped) while its mongod still runs.
    tracing::info!(
        count = before.len(),
        "stop order: waiting for earlier nodes to stop first"
    );
    let deadline = Instant::now() + node.cfg.mongod_timeout;
    // An agent silent this long is taken as gone (its node is then judged lost by the
    // reconciler too): waiting longer for it would only keep this node's old data up.
    let silent = (node.cfg.heartbeat_interval * 5).max(std::time::Duration::from_secs(15));
    let ended = [
        tidemark_schema::control::abort_key(&op.id),
        tidemark_schema::control::result_key(&op.id),
    ];
    loop {
        // Only a definite end stops the wait; a control plane that does not answer for a
        // moment is asked again. Past `go`, an ended op fails this node at `stop`, so the
        // decision wipes it rather than start it on its old data.
        for key in &ended {
            if matches!(node.control.exists(key).await, Ok(true)) {
                return Err(AgentError::Refused(format!(
                    "the op ended ({key}) while this node waited for its turn to stop"
                )))
                .in_phase(Phase::Stop);
            }
        }
        let reports = node.control.op_reports(&op.id).await.unwrap_or_default();
        let beats = node
            .control
            .heartbeats(&node.cluster)
            .await
            .unwrap_or_default();
        let gone = |t: &tidemark_schema::control::OpTarget| {
            beats.iter().any(|h| {
                h.replica_set == t.replica_set
                    && h.node == t.node
                    && (chrono::Utc::now() - h.at)
                        .to_std()
                        .is_ok_and(|age| age > silent)
            })
        };
        let stopped = |t: &tidemark_schema::control::OpTarget| {
            reports.iter().any(|r| {
                r.replica_set == t.replica_set
                    && r.node == t.node
                    && (r.phase.is_final()
                        || r.phase.touches_data()
                        || (r.phase == Phase::Stop
                            && r.status == tidemark_schema::control::PhaseStatus::Done))
            })
        };
        let waiting: Vec<&str> = before
            .iter()
            .filter(|t| !stopped(t) && !gone(t))
            .map(|t| t.node.as_str())
            .collect();
        if waiting.is_empty() {
            return Ok(peers_first);
        }
        if Instant::now() > deadline {
            tracing::warn!(
                ?waiting,
                "stop order: waited --mongod-timeout for these; stopping anyway"
            );
            return Ok(peers_first);
        }
        tokio::time::sleep(node.cfg.quick_poll()).await;
    }
}

pub async fn stop(
    node: &Node,
    op: &Op,
    client: &MongodClient,
    role: &tidemark_schema::control::MemberRole,
    captured_config: &serde_json::Value,
    peers_stopped: bool,
) -> Result<(), PhaseFailure> {
    const PHASE: Phase = Phase::Stop;
    node.running(op, PHASE, format!("stopping mongod ({role})"))
        .await?;
    let started = Instant::now();
    let mut force = false;
    if *role == tidemark_schema::control::MemberRole::Primary {
        if peers_stopped {
            // Its secondaries stopped first (the stop order): no one to step down to,
            // and a plain shutdown would wait for a secondary to catch up.
            force = true;
        } else if has_electable_peer(captured_config) {
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
