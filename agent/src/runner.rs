//! The agent's main loop: learn who we are, beat, pick up the ops addressed to this node
//! and run them one at a time. A restarted agent fails an op it had started cleanly
//! (never reports success for work it did not finish) and runs ops it never started.

use std::sync::Arc;

use serde_json::json;
use std::collections::BTreeSet;

use tidemark_schema::control::{Op, OpCommand, Phase, result_key};

use crate::config::AgentConfig;
use crate::control::ControlPlane;
use crate::error::AgentError;
use crate::node::{Details, Node, PhaseFailure};
use crate::{backup, drill, heartbeat, oplog, restore};
use tracing::Instrument;

/// Works out this node's identity: from the flags, else from mongod itself.
pub async fn identify(cfg: AgentConfig, control: ControlPlane) -> Result<Node, AgentError> {
    let trust = std::sync::Arc::new(
        crate::trust::Trust::new(cfg.trust.clone())
            .map_err(|e| AgentError::Config(e.to_string()))?,
    );
    if cfg.drill_dir.is_some() {
        // A drill agent belongs to no replica set; its name is what drills choose it by.
        let id = cfg.node_id.clone().ok_or_else(|| {
            AgentError::Config("a drill agent needs --node-id (the name drills use)".into())
        })?;
        return Ok(Node {
            cluster: cfg.cluster.clone(),
            cfg,
            control,
            replica_set: tidemark_schema::control::DRILL_REPLICA_SET.to_string(),
            id,
            epochs: Default::default(),
            slicing: Default::default(),
            doorbell: Default::default(),
            working: Default::default(),
            trust: trust.clone(),
        });
    }
    let (replica_set, id) = match (cfg.replica_set.clone(), cfg.node_id.clone()) {
        (Some(rs), Some(id)) => (rs, id),
        (rs, id) => wait_for_membership(&cfg, rs, id).await?,
    };
    Ok(Node {
        cluster: cfg.cluster.clone(),
        cfg,
        control,
        replica_set,
        id,
        epochs: Default::default(),
        slicing: Default::default(),
        doorbell: Default::default(),
        working: Default::default(),
        trust,
    })
}

/// How often an agent started before its node asks mongod again.
const MEMBERSHIP_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// This node's replica set and `host:port`, asked of mongod until it answers as a member:
/// an agent started with its mongod (a systemd unit, a container beside it) races it, and
/// waits, saying what for, rather than exiting. Flags given are taken as they are.
async fn wait_for_membership(
    cfg: &AgentConfig,
    rs: Option<String>,
    id: Option<String>,
) -> Result<(String, String), AgentError> {
    let mut said = String::new();
    loop {
        let why = match crate::mongod::MongodClient::connect(&cfg.mongod_uri).await {
            Err(e) => format!("mongod to answer ({e})"),
            Ok(client) => match client.facts().await {
                Err(e) => format!("mongod to answer ({e})"),
                Ok(facts) => {
                    let rs = rs.clone().or(facts.replica_set);
                    let id = id.clone().or(Some(facts.me).filter(|m| !m.is_empty()));
                    match (rs, id) {
                        (Some(rs), Some(id)) => return Ok((rs, id)),
                        _ => "mongod to join a replica set (it is not a member yet: \
                              replSetInitiate, or rs.add from the primary)"
                            .to_string(),
                    }
                }
            },
        };
        if why != said {
            tracing::warn!(
                "waiting for {why}; give --replica-set and --node-id to start without waiting"
            );
            said = why;
        }
        tokio::time::sleep(MEMBERSHIP_POLL).await;
    }
}

/// How often the log lines of running ops go to the control plane.
const SHIP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long after an op the agent keeps looking for ops at the quick rate, without
/// waiting for a ring: the reconciler's follow-up comes within seconds.
const FOLLOW_UP_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs until `stop` resolves.
pub async fn run(
    node: Arc<Node>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    // Held until this function returns: the process's life.
    let _drill_lock = match &node.cfg.drill_dir {
        Some(root) => Some(drill::lock(root).map_err(|e| AgentError::Config(e.to_string()))?),
        None => None,
    };
    if let Some(root) = &node.cfg.drill_dir {
        let removed = drill::clean_leftovers(root)
            .await
            .map_err(|e| AgentError::io(root, e))?;
        if removed > 0 {
            tracing::warn!(
                removed,
                "removed scratch directories of drills a killed agent left"
            );
        }
    }
    tracing::info!(cluster = %node.cluster, rs = %node.replica_set, node = %node.id, "agent started");
    let beats = tokio::spawn(heartbeat::run(node.clone()));
    let doorbell = tokio::spawn(crate::doorbell::run(node.clone()));
    // A drill agent serves no replica set: it has no oplog to slice.
    let slicing = node
        .cfg
        .drill_dir
        .is_none()
        .then(|| tokio::spawn(crate::pitr::follow::run(node.clone())));
    let shipper = {
        let node = node.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SHIP_EVERY).await;
                oplog::ship(&node.control, &node.replica_set, &node.id).await;
            }
        })
    };
    let work = async {
        // Every op id seen to its end by this process. Not a cursor over sorted ids: ids
        // carry their author's clock, so an op created later can sort earlier, and it
        // must still run.
        let mut handled: BTreeSet<String> = BTreeSet::new();
        // After an op, the reconciler's follow-up (remove the fallback, wipe, start) comes
        // within seconds: look quickly for a while, then fall back to the idle rate, which
        // is what costs list requests on a quiet cluster.
        let mut quick_until = tokio::time::Instant::now();
        let mut rings = node.doorbell.subscribe();
        // When each op not yet ready to be read was first seen so.
        let mut not_ready: std::collections::BTreeMap<String, tokio::time::Instant> =
            Default::default();
        loop {
            // Set when something could not be read or was not ready: the ring that woke
            // this look is used up, so look again at --poll-interval, not at the resync.
            let mut again = false;
            match node.control.op_ids().await {
                Ok(ids) => {
                    not_ready.retain(|id, _| ids.contains(id));
                    for id in ids {
                        if handled.contains(&id) {
                            continue;
                        }
                        match consider(&node, &id).await {
                            Ok(Seen::Handled) => {
                                not_ready.remove(&id);
                                handled.insert(id);
                            }
                            Ok(Seen::Ran) => {
                                not_ready.remove(&id);
                                handled.insert(id);
                                quick_until = tokio::time::Instant::now() + FOLLOW_UP_WINDOW;
                            }
                            // Its author is still writing it: look again next time, and
                            // meanwhile go on with the others. Soon only for a while: a
                            // directory that never gets its op.json (a stray one) must
                            // not keep every agent listing.
                            Ok(Seen::NotReady) => {
                                let since = *not_ready
                                    .entry(id)
                                    .or_insert_with(tokio::time::Instant::now);
                                again |= since.elapsed() < FOLLOW_UP_WINDOW;
                            }
                            Err(e) => {
                                tracing::warn!(op = %id, error = %e, "op not handled; will retry");
                                again = true;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list ops");
                    again = true;
                }
            }
            // The next look: at the doorbell's next ring, or on our own at the quick rate
            // just after an op, every --poll-interval where no leader rings, and every
            // --resync-interval otherwise (a ring lost on the way costs no more than that).
            let period = if tokio::time::Instant::now() < quick_until {
                node.cfg.quick_poll()
            } else if again || !node.doorbell.rung() {
                node.cfg.poll_interval
            } else {
                node.cfg.resync_interval
            };
            crate::doorbell::Doorbell::wait(&mut rings, period).await;
        }
    };
    tokio::select! {
        _ = work => {}
        _ = stop => {}
    }
    beats.abort();
    doorbell.abort();
    shipper.abort();
    if let Some(s) = slicing {
        s.abort();
    }
    oplog::ship(&node.control, &node.replica_set, &node.id).await;
    Ok(())
}

enum Seen {
    /// Seen to its end without running anything here.
    Handled,
    /// Run (or failed as interrupted) on this node: a follow-up may come soon.
    Ran,
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
        // The op directory exists but its op.json does not yet (or never will: reports
        // of a stray directory). Look again next time; it blocks no other op.
        None => return Ok(Seen::NotReady),
    };
    let op: Op = match serde_json::from_value(raw.clone()) {
        Ok(op) => op,
        Err(e) => return unreadable(node, id, &raw, e).await.map(|_| Seen::Handled),
    };
    if !node.targets_me(&op) {
        return Ok(Seen::Handled);
    }
    if op.id != id {
        // A copied or hand-edited op: its reports would go under another op's key.
        node.finish_for(
            id,
            Some(Phase::Precheck),
            format!(
                "op.json under ops/{id}/ carries the id {:?}; refusing an op whose id does \
                 not match its key; nothing was done",
                op.id
            ),
            Details::new(),
        )
        .await?;
        return Ok(Seen::Handled);
    }
    run_if_needed(node, &op, &raw).await
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
    node.finish_for(
        id,
        Some(Phase::Precheck),
        format!(
            "this agent (version {}) cannot read the op: {e}; nothing was done",
            env!("CARGO_PKG_VERSION")
        ),
        Details::new(),
    )
    .await
}

async fn run_if_needed(node: &Node, op: &Op, raw: &serde_json::Value) -> Result<Seen, AgentError> {
    let id = op.id.as_str();
    if node
        .control
        .get::<serde_json::Value>(&result_key(id))
        .await?
        .is_some()
    {
        // Decided without us (this agent was away past --dead-after): a selective restore
        // we began may have left staging collections in the running cluster; dropped now,
        // and our final report says so.
        // Only for an op it trusts: this connects to the hosts the op names.
        if matches!(op.command, OpCommand::SelectiveRestore { .. })
            && node.trust.check(&op_key_of(id), raw).is_ok()
        {
            let reports = node
                .control
                .reports(id, &node.replica_set, &node.id)
                .await?;
            if !reports.is_empty() && !reports.iter().any(|r| r.phase.is_final()) {
                let said = crate::selective::after_restart(op, &reports).await;
                let message = format!(
                    "the op was decided while this agent was away; its work did not finish{said}"
                );
                node.finish_for(id, Some(Phase::Import), message, Details::new())
                    .await?;
            }
        }
        return Ok(Seen::Handled); // the op already has an outcome
    }
    let reports = node
        .control
        .reports(id, &node.replica_set, &node.id)
        .await?;
    if reports.iter().any(|r| r.phase.is_final()) {
        return Ok(Seen::Handled);
    }
    // Compaction deletes op.json first and the result and reports after: if op.json is
    // still there now, the result and reports read above were not yet deleted, so "no
    // result, no report" is true; if it is gone, the op ended and was compacted.
    if !node
        .control
        .exists(&tidemark_schema::control::op_key(id))
        .await?
    {
        // Looked at again next time (a weakly consistent store may have answered wrong);
        // a compacted op's directory is gone by then.
        return Ok(Seen::NotReady);
    }
    // The furthest phase by the phases' order, not the newest by this agent's clock,
    // which an NTP step may have moved back since.
    if let Some(last) = reports
        .iter()
        .filter(|r| !r.phase.is_final())
        .max_by_key(|r| r.phase)
    {
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
        // A selective restore's copies live in staging collections of the running
        // cluster: dropped now, and the state of each target said.
        let message = if matches!(op.command, OpCommand::SelectiveRestore { .. })
            && node.trust.check(&op_key_of(id), raw).is_ok()
        {
            format!(
                "{message}{}",
                crate::selective::after_restart(op, &reports).await
            )
        } else {
            message
        };
        if matches!(op.command, OpCommand::Restore { .. })
            && matches!(last.phase, Phase::Recover | Phase::Replay)
        {
            // A temporary standalone of `recover` outlives the agent that started it; left
            // running it would hold the lock whatever the decision (even "left stopped").
            crate::mongod::kill_leftover_standalone(&node.cfg.dbpath).await;
        }
        let mut details = Details::new();
        details.insert("interruptedPhase".into(), json!(last.phase));
        // A cancel that came meanwhile is still the cause the reconciler should see.
        if matches!(op.command, OpCommand::SelectiveRestore { .. })
            && matches!(node.author_ended(op).await, Ok(Some(_)))
        {
            details.insert("endedByAuthor".into(), json!(true));
        }
        // The phase it was in failed; but a node that had passed its checks and seen `go`
        // may have gone on to stop mongod before the report of `stop` was written.
        let mut failed = last.phase;
        if let OpCommand::Restore { wait_for_go, .. } = &op.command
            && !failed.touches_node()
        {
            // Refusing before go closes the gate first, so no other node goes on without
            // this one. Past `ready` with the gate open (or no gate at all), the process
            // before the restart may have gone on to stop mongod before reporting `stop`.
            let closed = *wait_for_go
                && node
                    .close_gate(id, "its agent restarted before go; nothing was touched")
                    .await?;
            if !closed && last.phase == Phase::Ready {
                failed = Phase::Stop;
            }
        }
        return node
            .finish_for(id, Some(failed), message, details)
            .await
            .map(|_| Seen::Ran);
    }
    // A new op: checked before anything reads its epoch or acts on it (an unsigned op's
    // epoch must not even raise the fence). An op that ended, or that this node began
    // before a restart, was judged when it began; it is closed above as it stands.
    let key = op_key_of(id);
    if let Err(refusal) = node.trust.check(&key, raw) {
        node.finish_for(
            id,
            Some(Phase::Precheck),
            format!("refused {key}: {refusal}; nothing was done"),
            Details::new(),
        )
        .await?;
        return Ok(Seen::Handled);
    }
    if let Some(deadline) = op.deadline
        && chrono::Utc::now() > deadline
    {
        return node
            .finish_for(
                id,
                Some(Phase::Precheck),
                format!("the op's deadline {deadline} passed before this node started it; nothing was done"),
                Details::new(),
            )
            .await
            .map(|_| Seen::Handled);
    }
    if let Err(seen) = node.epochs.admit(op.epoch)
        && !control_plane_reset(node, seen, op.epoch).await
    {
        // Written by a leader that has since been replaced (its lease lapsed while it
        // was paused, say): the current leader never asked for it.
        return node
            .finish_for(
                id,
                Some(Phase::Precheck),
                format!(
                    "the op was written by leader epoch {} but this agent has seen epoch \
                     {seen}: a deposed leader's op; nothing was done",
                    op.epoch.unwrap_or_default()
                ),
                Details::new(),
            )
            .await
            .map(|_| Seen::Handled);
    }
    execute(node, op).await.map(|_| Seen::Ran)
}

/// Whether the control plane was emptied and started again since this agent saw epoch
/// `seen` (its lease record is gone): the fence then starts over from `epoch`, or every
/// op of the new control plane would be refused until the agent restarts.
async fn control_plane_reset(node: &Node, seen: u64, epoch: Option<u64>) -> bool {
    use tidemark_schema::control::{PARTITIONS_KEY, PartitionsRecord, lease_key_in, lease_prefix};
    // The epochs of this node's cluster are those of its partition's lease.
    let partitions = match node.control.get::<PartitionsRecord>(PARTITIONS_KEY).await {
        Ok(record) => record.map_or(1, |r| r.partitions),
        Err(_) => return false,
    };
    let partition = tidemark_schema::control::partition_of(&node.cluster, partitions);
    let key = lease_key_in(&lease_prefix(partition), seen);
    if !matches!(node.control.exists(&key).await, Ok(false)) {
        return false;
    }
    tracing::warn!(
        seen,
        "the lease of the highest epoch seen is gone: the control plane was reset; the epoch fence starts over"
    );
    node.epochs.reset(epoch.unwrap_or_default());
    true
}

/// Runs an op to its end and writes the final report. Its log lines go to the control
/// plane with it: the last of them before the final report, so a reader that sees the
/// outcome has every line.
pub async fn execute(node: &Node, op: &Op) -> Result<(), AgentError> {
    use std::sync::atomic::Ordering;
    node.working.store(true, Ordering::Relaxed);
    let outcome = execute_logged(node, op)
        .instrument(oplog::op_span(&op.id))
        .await;
    node.working.store(false, Ordering::Relaxed);
    // Every line before the final report, so a reader that sees the outcome has them all:
    // a few tries while the control plane refuses, then the report goes regardless.
    for _ in 0..3 {
        oplog::ship(&node.control, &node.replica_set, &node.id).await;
        if !oplog::pending_for(&op.id) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let finished = match outcome {
        Ok((message, details)) => node.finish_for(&op.id, None, message, details).await,
        Err(failure) => {
            let mut details = Details::new();
            details.insert("phase".into(), json!(failure.phase));
            if failure.error.ended_by_author() {
                details.insert("endedByAuthor".into(), json!(true));
            }
            node.finish_for(&op.id, Some(failure.phase), failure.to_string(), details)
                .await
        }
    };
    oplog::ship(&node.control, &node.replica_set, &node.id).await;
    finished
}

async fn execute_logged(node: &Node, op: &Op) -> Result<(String, Details), PhaseFailure> {
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
        OpCommand::Drill { .. } => drill::run(node, op).await,
        OpCommand::SelectiveRestore { .. } => crate::selective::run(node, op).await,
    };
    match &outcome {
        Ok((message, _)) => tracing::info!(op = %op.id, result = %message, "op done on this node"),
        Err(failure) => tracing::error!(op = %op.id, %failure, "op failed"),
    }
    outcome
}

fn op_key_of(id: &str) -> String {
    tidemark_schema::control::op_key(id)
}
