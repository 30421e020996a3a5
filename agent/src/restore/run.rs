//! Runs a restore op on this node, phase by phase; each phase is reported. Checks that
//! can refuse (precheck, disk) run before anything is touched. After a failure the node
//! is left stopped, with its fallback directory (if any) intact, for the reconciler to
//! decide: move it back (cluster Error) or wipe the node for initial sync (PartlyDone).

use std::time::Instant;
use tidemark_schema::control::Phase;

use serde_json::json;
use tidemark_schema::control::{Op, OpCommand};

use super::{disk, fallback, fetch, recover, replay, stop, validate};
use crate::error::AgentError;
use crate::node::{Details, InPhase, Node, PhaseFailure};

pub async fn run(node: &Node, op: &Op) -> Result<(String, Details), PhaseFailure> {
    let OpCommand::Restore {
        backup,
        storage,
        fallback_enabled,
        external,
        wait_for_go,
        cannot_decrypt,
        replica_set_map,
        sharding,
        stop_waves,
        go_timeout_ms,
        point_in_time,
    } = &op.command
    else {
        unreachable!("dispatched on the command kind");
    };
    let stop_only = cannot_decrypt
        .iter()
        .any(|t| t.replica_set == node.replica_set && t.node == node.id);
    // The backup's replica set this node restores: its own, unless the restore remaps it.
    let source = replica_set_map
        .get(&node.replica_set)
        .unwrap_or(&node.replica_set);
    let checked =
        validate::precheck(node, op, backup, storage, *external, stop_only, source).await?;
    let replay = point_in_time
        .as_ref()
        .filter(|_| !stop_only)
        .map(|p| replay::Replay {
            store: &checked.store,
            target: p.target,
            chunks: p.chunks.get(source).map_or(&[][..], Vec::as_slice),
            from: checked.manifest.last_write,
        });
    if let Some(r) = &replay {
        check_replay(node, op, r, &checked.report).await?;
    }
    // A node that is only stopped (it cannot decrypt) needs no room for a second copy.
    if *fallback_enabled && !stop_only {
        // An increment needs its whole chain written: PBM counts every link too.
        let needed = tidemark_schema::chain::uncompressed_bytes(&checked.links);
        disk::evaluate(node, op, needed).await?;
    }
    if *wait_for_go {
        node.done(
            op,
            Phase::Ready,
            "checks passed; waiting for go",
            Details::new(),
        )
        .await?;
        let timeout = go_timeout_ms.map(std::time::Duration::from_millis);
        node.wait_for_go(op, timeout).await.in_phase(Phase::Ready)?;
    }
    node.boundary(op, Phase::Ready).await?;
    let peers_stopped = stop::wait_turn(node, op, stop_waves).await?;
    stop::stop(
        node,
        op,
        &checked.client,
        &checked.captured.role,
        &checked.captured.replset_config,
        peers_stopped,
    )
    .await?;

    node.boundary(op, Phase::Stop).await?;
    if stop_only {
        // Stopped with the others, so it cannot serve or take part in an election with its
        // old data, and otherwise untouched: the decision wipes it for initial sync from a
        // restored member (PartlyDone) or starts it again as it was (Error), whether or
        // not fallback is on.
        let why = tidemark_schema::encryption::decrypt_problem(
            checked.manifest.encryption.as_ref(),
            crate::mongod::encryption::settings(&checked.cmdline).as_ref(),
        )
        .unwrap_or_else(|| "its master key does not match the backup's".into());
        return Err(AgentError::Refused(format!(
            "this node cannot decrypt backup {backup} ({why}): stopped with the others and \
             left as it was, without downloading; it initial-syncs from a restored member"
        )))
        .in_phase(Phase::Stop);
    }
    let dbpath = &node.cfg.dbpath;
    let started = Instant::now();
    let mut d = Details::new();
    // Said before the first entry moves: an agent killed from here on must be known to
    // have touched the data, so that the decision reverts it rather than just starting it.
    node.running(
        op,
        Phase::Fallback,
        if *fallback_enabled {
            "moving the dbPath's content into the fallback directory"
        } else {
            "fallback is off: wiping the dbPath"
        },
    )
    .await
    // Not written: nothing of the dbPath was touched yet, mongod is only stopped.
    .map_err(|f| PhaseFailure {
        phase: Phase::Stop,
        error: f.error,
    })?;
    if *fallback_enabled {
        let moved = fallback::move_aside(dbpath, &op.id).in_phase(Phase::Fallback)?;
        d.insert("movedEntries".into(), json!(moved));
        d.insert("fallbackDir".into(), json!(fallback::fallback_dir(dbpath)));
    } else {
        let removed = fallback::remove_entries(dbpath).in_phase(Phase::Fallback)?;
        d.insert("wipedEntries".into(), json!(removed));
    }
    d.insert(
        "elapsedMs".into(),
        json!(started.elapsed().as_millis() as u64),
    );
    node.done(
        op,
        Phase::Fallback,
        if *fallback_enabled {
            "the dbPath's content was moved into the fallback directory"
        } else {
            "fallback is off: the dbPath was wiped"
        },
        d,
    )
    .await?;

    node.boundary(op, Phase::Fallback).await?;
    if *external {
        fetch::await_external_copy(node, op, &checked.manifest).await?;
    } else {
        fetch::fetch(node, op, &checked.store, &checked.links).await?;
    }
    node.boundary(op, Phase::Fetch).await?;
    recover::recover(
        node,
        op,
        checked.manifest.last_write,
        &checked.captured,
        sharding.as_ref(),
        replay,
    )
    .await?;

    let restored_to = point_in_time.as_ref().map_or_else(
        || checked.manifest.last_write.to_string(),
        |p| p.target.to_string(),
    );
    let mut d = Details::new();
    d.insert("backup".into(), json!(backup));
    d.insert("files".into(), json!(checked.manifest.files.len()));
    d.insert("bytes".into(), json!(checked.manifest.uncompressed_bytes));
    d.insert("lastWrite".into(), json!(checked.manifest.last_write));
    d.insert("fallbackKept".into(), json!(*fallback_enabled));
    Ok((
        format!(
            "restored backup {backup} to {restored_to}; mongod is stopped{}",
            if *fallback_enabled {
                "; the fallback directory stays until the cluster outcome is known"
            } else {
                ""
            }
        ),
        d,
    ))
}

/// A point-in-time restore's chunks, checked before the node is touched (see
/// [`replay::check`]); reported as part of the pre-checks.
async fn check_replay(
    node: &Node,
    op: &Op,
    r: &replay::Replay<'_>,
    precheck: &Details,
) -> Result<(), PhaseFailure> {
    // The same report is rewritten: its figures (the captured command line) are kept.
    node.report(
        op,
        Phase::Precheck,
        tidemark_schema::control::PhaseStatus::Running,
        format!(
            "checking {} oplog chunk(s) up to {} before touching anything",
            r.chunks.len(),
            r.target
        ),
        precheck.clone(),
    )
    .await
    .in_phase(Phase::Precheck)?;
    let stats = replay::check(r).await.in_phase(Phase::Precheck)?;
    let mut d = precheck.clone();
    d.insert("replayCheck".into(), json!(stats));
    node.done(
        op,
        Phase::Precheck,
        format!(
            "{} oplog chunk(s) download, match their checksums and replay up to {} ({} \
             entries to apply)",
            r.chunks.len(),
            r.target,
            stats.applied
        ),
        d,
    )
    .await
}
