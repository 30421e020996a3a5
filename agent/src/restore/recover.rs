//! The standalone starts that turn copied files into a consistent node (docs/agent.md, step 6), on a
//! private localhost port, logging into a restore log inside the dbPath:
//! 1. reset the replication metadata and set the oplog truncate point to the backup's
//!    last write;
//! 2. recover from the oplog as a standalone and take a checkpoint at shutdown;
//! 3. write the replica-set config the node had before the restore.

use std::time::Duration;
use tidemark_schema::control::Phase;

use bson::{Bson, Document, doc, oid::ObjectId};
use serde_json::json;
use tidemark_schema::control::{Op, ShardingRestore};
use tidemark_schema::manifest::OpTime;

use super::validate::Captured;
use crate::error::AgentError;
use crate::mongod::{
    MongodClient, MongodError, MongodProcess, PidFile, STANDALONE_PID_FILE, StartSpec,
};
use crate::node::{Details, InPhase, Node, PhaseFailure};

/// The restore log's name inside the dbPath; kept on failure, deleted on success.
pub const RESTORE_LOG: &str = crate::mongod::STANDALONE_LOG;

/// Standalone starts tried, each on a newly chosen port, before a taken port fails the step.
const PORT_ATTEMPTS: u32 = 3;

fn free_port() -> Result<u16, AgentError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| AgentError::Refused(format!("no free local port: {e}")))
}

fn standalone(node: &Node, port: u16, params: &[&str], captured: &Captured) -> StartSpec {
    let dbpath = node.cfg.dbpath.display().to_string();
    let log = node.cfg.dbpath.join(RESTORE_LOG).display().to_string();
    let mut args: Vec<String> = vec![
        "--dbpath".into(),
        dbpath,
        "--port".into(),
        port.to_string(),
        "--bind_ip".into(),
        "127.0.0.1".into(),
        "--logpath".into(),
        log,
        "--logappend".into(),
    ];
    for p in params {
        args.push("--setParameter".into());
        args.push((*p).into());
    }
    args.extend(captured.standalone_args.iter().cloned());
    args.extend(node.cfg.standalone_args.iter().cloned());
    StartSpec {
        bin: node.cfg.mongod_bin.clone(),
        args,
        address: format!("127.0.0.1:{port}"),
        prove_identity: true,
    }
}

/// Starts a standalone, runs `work` against it, shuts it down cleanly. On a failure the
/// process handle's drop kills it; an agent killed meanwhile leaves its pid file.
pub(crate) async fn with_standalone<F, Fut, T>(
    node: &Node,
    captured: &Captured,
    params: &[&str],
    work: F,
) -> Result<T, AgentError>
where
    F: FnOnce(MongodClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, AgentError>>,
{
    let began = std::time::Instant::now();
    let pid_path = node.cfg.dbpath.join(STANDALONE_PID_FILE);
    let mut attempt = 1;
    // Declared before the process, so dropped after it: the pid file goes only once the
    // process it names has been stopped.
    let (_pid_file, mut process, client) = loop {
        let pid_file = PidFile::new(pid_path.clone());
        let spec = standalone(node, free_port()?, params, captured);
        let mut process = MongodProcess::spawn(&spec)?;
        // Recorded so that an agent restarted after dying here can stop this standalone
        // before it reverts or wipes the dbPath (it outlives us: it runs in its own
        // session).
        pid_file
            .write(process.pid())
            .map_err(|e| AgentError::io(&pid_path, e))?;
        match process.wait_ready(node.cfg.mongod_timeout).await {
            Ok(c) => break (pid_file, process, c),
            // The port was free when chosen and taken before mongod bound it: another
            // port, rather than a failed restore over a race with some other process.
            Err(e) if e.port_taken() && attempt < PORT_ATTEMPTS => {
                tracing::warn!(attempt, error = %e, "the standalone's port was taken; trying another");
                attempt += 1;
            }
            Err(e) => {
                return Err(AgentError::Refused(format!(
                    "{e}; see {} in the dbPath",
                    RESTORE_LOG
                )));
            }
        }
    };
    let ready = began.elapsed();
    // A standalone that dies under the work (a crash, the OOM killer) fails it at once,
    // rather than after the driver's timeouts on each remaining command.
    let out = tokio::select! {
        out = work(client.clone()) => out?,
        exited = process.wait_exit(Duration::MAX) => {
            let status = exited.map_or_else(|e| e.to_string(), |s| s.to_string());
            return Err(AgentError::Refused(format!(
                "the standalone mongod exited ({status}) while working; see {RESTORE_LOG} in the \
                 dbPath"
            )));
        }
    };
    let worked = began.elapsed();
    client.shutdown(false).await?;
    let status = process.wait_exit(node.cfg.mongod_timeout).await?;
    tracing::debug!(?ready, ?worked, exited = ?began.elapsed(), ?params, "standalone start");
    if !status.success() {
        return Err(AgentError::Refused(format!(
            "the standalone mongod exited with {status}; see {RESTORE_LOG} in the dbPath"
        )));
    }
    Ok(out)
}

pub(crate) async fn command(
    client: &MongodClient,
    db: &str,
    cmd: Document,
) -> Result<(), AgentError> {
    let name = cmd.keys().next().cloned().unwrap_or_default();
    client
        .client()
        .database(db)
        .run_command(cmd)
        .await
        .map(|_| ())
        .map_err(|e| {
            MongodError::Command {
                node: client.node.clone(),
                command: name,
                message: e.to_string(),
            }
            .into()
        })
}

pub async fn recover(
    node: &Node,
    op: &Op,
    last_write: OpTime,
    captured: &Captured,
    sharding: Option<&ShardingRestore>,
    replay: Option<super::replay::Replay<'_>>,
) -> Result<(), PhaseFailure> {
    const PHASE: Phase = Phase::Recover;
    let starts = if replay.is_some() { 4 } else { 3 };
    let ts = bson::Timestamp {
        time: last_write.t,
        increment: last_write.i,
    };
    node.running(
        op,
        PHASE,
        format!("standalone 1/{starts}: resetting replication metadata"),
    )
    .await?;
    reset_replication(node, captured, ts)
        .await
        .in_phase(PHASE)?;
    node.running(
        op,
        PHASE,
        format!("standalone 2/{starts}: recovering from the oplog"),
    )
    .await?;
    replay_oplog(node, captured).await.in_phase(PHASE)?;
    let mut d = Details::new();
    d.insert("truncatedAfter".into(), json!(last_write));
    // With a replay, the config is written after it: the replica set must not be
    // startable while it holds the base's data only.
    // The phase the config is written in, and the message of its end.
    let (phase, message) = match &replay {
        None => (PHASE, format!("recovered to {last_write}")),
        Some(r) => {
            node.done(op, PHASE, format!("recovered to {last_write}"), d.clone())
                .await?;
            node.boundary(op, PHASE).await?;
            node.running(
                op,
                Phase::Replay,
                format!("standalone 3/4: replaying the oplog up to {}", r.target),
            )
            .await?;
            let stats = super::replay::replay(node, op, captured, r)
                .await
                .in_phase(Phase::Replay)?;
            d = Details::new();
            d.insert("replay".into(), json!(stats));
            d.insert("target".into(), json!(r.target));
            // Not made startable (the config) once the op was cancelled or decided; a
            // control plane that does not answer is asked again for a minute.
            node.still_wanted(op, Phase::Replay).await?;
            let reached = stats.reached.unwrap_or(last_write);
            (
                Phase::Replay,
                format!(
                    "replayed the oplog from {last_write} up to {}: {} entries applied, reached \
                     {reached}",
                    r.target, stats.applied
                ),
            )
        }
    };
    node.running(
        op,
        phase,
        format!("standalone {starts}/{starts}: writing the replica-set config"),
    )
    .await?;
    write_config(node, captured, sharding)
        .await
        .in_phase(phase)?;
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::fs::remove_file(node.cfg.dbpath.join(RESTORE_LOG)),
    )
    .await;
    d.insert("standaloneStarts".into(), json!(starts));
    node.done(op, phase, message, d).await
}

/// The last standalone: the sharding metadata, then the replica-set config the node had.
async fn write_config(
    node: &Node,
    captured: &Captured,
    sharding: Option<&ShardingRestore>,
) -> Result<(), AgentError> {
    let config = Bson::try_from(captured.replset_config.clone())
        .ok()
        .and_then(|b| b.as_document().cloned())
        .ok_or_else(|| {
            AgentError::Refused("the captured replica-set config is not a document".into())
        })?;
    let role = captured.cluster_role.as_deref();
    with_standalone(node, captured, &[], |c| async move {
        // The sharding metadata first: the replica-set config is the last write, so a
        // node with a config has everything else too.
        if let Some(sh) = sharding {
            rewrite_sharding(&c, role, &node.replica_set, sh).await?;
        }
        command(
            &c,
            "local",
            doc! {"insert": "system.replset", "documents": [config]},
        )
        .await
    })
    .await
}

/// A sharded cluster's metadata, for the target's hosts and names (see
/// [`ShardingRestore`]): only what must change is written, every other field (zones,
/// draining, topology times) is kept.
async fn rewrite_sharding(
    c: &MongodClient,
    role: Option<&str>,
    rs: &str,
    sh: &ShardingRestore,
) -> Result<(), AgentError> {
    match role {
        Some("shardsvr") => {
            let mut set = doc! {"configsvrConnectionString": &sh.config_server};
            if sh.renamed.values().any(|to| to == rs) {
                set.insert("shardName", rs);
            }
            command(
                c,
                "admin",
                doc! {"update": "system.version", "updates": [{"q": {"_id": "shardIdentity"}, "u": {"$set": set}}]},
            )
            .await?;
            // Names the old config server; rebuilt from the new one when needed.
            command(
                c,
                "admin",
                doc! {"delete": "system.version", "deletes": [{"q": {"_id": "minOpTimeRecovery"}, "limit": 0}]},
            )
            .await?;
            let caches = c
                .client()
                .database("config")
                .list_collection_names()
                .await
                .map_err(|e| MongodError::Command {
                    node: c.node.clone(),
                    command: "listCollections".into(),
                    message: e.to_string(),
                })?;
            for name in caches.iter().filter(|n| n.starts_with("cache.")) {
                command(c, "config", doc! {"drop": name}).await?;
            }
            Ok(())
        }
        Some("configsvr") => rewrite_config_shards(c, sh).await,
        _ => Ok(()),
    }
}

/// `config.shards` on the config server: each entry's host from the target cluster (its
/// replica set found by the name before the `/`), and renamed shards' ids changed
/// everywhere they are referenced. Renames go through one old → new map, every renamed
/// entry deleted before any is inserted, so swapped or chained names never collide.
async fn rewrite_config_shards(c: &MongodClient, sh: &ShardingRestore) -> Result<(), AgentError> {
    let shards = all_docs(c, "config", "shards").await?;
    let mut renames: Vec<(Bson, String, Document)> = Vec::new();
    for old in shards {
        let Some(id) = old.get("_id").cloned() else {
            continue;
        };
        let host_rs = old
            .get_str("host")
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let target = sh.renamed.get(&host_rs).cloned().unwrap_or(host_rs);
        let Some(host) = sh.shards.get(&target) else {
            continue; // a shard the target cluster does not declare: left as it was
        };
        if sh.renamed.values().any(|to| *to == target) && id != Bson::String(target.clone()) {
            let mut new = old.clone();
            new.insert("_id", &target);
            new.insert("host", host);
            renames.push((id, target, new));
        } else {
            command(
                c,
                "config",
                doc! {"update": "shards", "updates": [{"q": {"_id": id}, "u": {"$set": {"host": host}}}]},
            )
            .await?;
        }
    }
    if renames.is_empty() {
        return Ok(());
    }
    for (id, _, _) in &renames {
        command(
            c,
            "config",
            doc! {"delete": "shards", "deletes": [{"q": {"_id": id.clone()}, "limit": 1}]},
        )
        .await?;
    }
    let docs: Vec<Document> = renames.iter().map(|(_, _, d)| d.clone()).collect();
    command(c, "config", doc! {"insert": "shards", "documents": docs}).await?;
    let map: std::collections::BTreeMap<String, String> = renames
        .iter()
        .filter_map(|(id, to, _)| Some((id.as_str()?.to_string(), to.clone())))
        .collect();
    let renamed = |v: Option<&str>| v.and_then(|s| map.get(s)).cloned();
    // Each document rewritten once, from the map: chunks (and their history, which the
    // router checks against the chunk's shard) and databases' primary shards.
    for chunk in all_docs(c, "config", "chunks").await? {
        let mut set = Document::new();
        if let Some(to) = renamed(chunk.get_str("shard").ok()) {
            set.insert("shard", to);
        }
        if let Ok(history) = chunk.get_array("history") {
            let mut changed = false;
            let rewritten: Vec<Bson> = history
                .iter()
                .map(|h| match h.as_document() {
                    Some(d) => {
                        let mut d = d.clone();
                        if let Some(to) = renamed(d.get_str("shard").ok()) {
                            d.insert("shard", to);
                            changed = true;
                        }
                        Bson::Document(d)
                    }
                    None => h.clone(),
                })
                .collect();
            if changed {
                set.insert("history", rewritten);
            }
        }
        if !set.is_empty() {
            let id = chunk.get("_id").cloned().unwrap_or(Bson::Null);
            command(
                c,
                "config",
                doc! {"update": "chunks", "updates": [{"q": {"_id": id}, "u": {"$set": set}}]},
            )
            .await?;
        }
    }
    for db in all_docs(c, "config", "databases").await? {
        if let Some(to) = renamed(db.get_str("primary").ok()) {
            let id = db.get("_id").cloned().unwrap_or(Bson::Null);
            command(c, "config", doc! {"update": "databases", "updates": [{"q": {"_id": id}, "u": {"$set": {"primary": to}}}]}).await?;
        }
    }
    Ok(())
}

/// Every document of `db.coll`.
async fn all_docs(c: &MongodClient, db: &str, coll: &str) -> Result<Vec<Document>, AgentError> {
    use futures::TryStreamExt;
    let failed = |e: mongodb::error::Error| MongodError::Command {
        node: c.node.clone(),
        command: "find".into(),
        message: e.to_string(),
    };
    let cursor = c
        .client()
        .database(db)
        .collection::<Document>(coll)
        .find(doc! {})
        .await
        .map_err(failed)?;
    Ok(cursor.try_collect().await.map_err(failed)?)
}

/// Standalone 1: forget the replica set and mark the oplog to be truncated after `ts`.
pub(crate) async fn reset_replication(
    node: &Node,
    captured: &Captured,
    ts: bson::Timestamp,
) -> Result<(), AgentError> {
    with_standalone(node, captured, &[], |c| async move {
        for coll in ["replset.minvalid", "replset.oplogTruncateAfterPoint", "replset.election", "system.replset"] {
            command(&c, "local", doc! {"delete": coll, "deletes": [{"q": {}, "limit": 0}]}).await?;
        }
        command(
            &c,
            "local",
            doc! {"insert": "replset.oplogTruncateAfterPoint", "documents": [{"_id": "oplogTruncateAfterPoint", "oplogTruncateAfterPoint": ts}]},
        )
        .await?;
        command(
            &c,
            "local",
            doc! {"insert": "replset.minvalid", "documents": [{"_id": ObjectId::new(), "t": -1i64, "ts": bson::Timestamp { time: 0, increment: 1 }}]},
        )
        .await
    })
    .await
}

/// Standalone 2: replay the oplog up to the truncate point and checkpoint at shutdown.
pub(crate) async fn replay_oplog(node: &Node, captured: &Captured) -> Result<(), AgentError> {
    with_standalone(
        node,
        captured,
        &[
            "recoverFromOplogAsStandalone=true",
            "takeUnstableCheckpointOnShutdown=true",
        ],
        |_| async { Ok(()) },
    )
    .await
}
