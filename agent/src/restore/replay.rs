//! Point-in-time restore, after the base is recovered: a standalone applies this replica
//! set's oplog chunks, from the base's last write up to the target, in `applyOps` batches
//! (see [`crate::pitr::apply`] for what is applied). Chunks download ahead of the one
//! being applied; each is checked against its blake3 before any entry of it is used.
//! Progress (entries, the optime reached, an ETA) is reported every few seconds.

use std::time::{Duration, Instant};

use bson::{Document, doc};
use serde_json::json;
use tidemark_schema::control::{ChunkRef, Op, Phase, PhaseStatus, ReplayTarget};
use tidemark_schema::manifest::OpTime;
use tidemark_store::storage::BackupStore;

use super::recover::with_standalone;
use super::validate::Captured;
use crate::error::AgentError;
use crate::mongod::{MongodClient, MongodError};
use crate::node::{Details, Node};
use crate::pitr::apply::{Batch, ReplayStats, Replayer};

const PHASE: Phase = Phase::Replay;
/// Chunks downloaded ahead of the one being applied.
const PREFETCH: usize = 2;
/// How often replay reports its progress at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The replay this node runs.
pub struct Replay<'a> {
    pub store: &'a BackupStore,
    pub target: ReplayTarget,
    pub chunks: &'a [ChunkRef],
    /// The base's last write on this replica set.
    pub from: OpTime,
}

/// Applies the chunks in a standalone that takes an unstable checkpoint at shutdown, so
/// what was applied is on disk when it exits.
pub async fn replay(
    node: &Node,
    op: &Op,
    captured: &Captured,
    r: &Replay<'_>,
) -> Result<ReplayStats, AgentError> {
    check_coverage(r)?;
    with_standalone(
        node,
        captured,
        &[
            "disableLogicalSessionCacheRefresh=true",
            "takeUnstableCheckpointOnShutdown=true",
        ],
        |client| async move { apply_chunks(node, op, &client, r).await },
    )
    .await
}

/// Before anything is touched: every chunk downloads, matches its checksum, parses, and
/// replays (nothing sent) through the target. A chunk that is missing or corrupt, or an
/// entry that cannot be replayed, refuses the restore while every node still has its
/// data, rather than failing it after the data was replaced.
pub async fn check(r: &Replay<'_>) -> Result<ReplayStats, AgentError> {
    check_coverage(r)?;
    let mut replayer = Replayer::new(r.from, r.target);
    for chunk in r.chunks {
        for e in fetch_chunk(r.store, chunk).await? {
            replayer
                .push(e)
                .map_err(|e| AgentError::Refused(format!("chunk {}: {e}", chunk.object)))?;
            if replayer.ended() {
                break;
            }
        }
        if replayer.ended() {
            break;
        }
    }
    replayer
        .finish()
        .map_err(|e| AgentError::Refused(e.to_string()))?;
    covered(&replayer, r)?;
    Ok(replayer.stats)
}

/// Replay covered the target: an entry at or past what it needs was read (or the base
/// itself reaches it: a target at the base's last write replays nothing), or replay ended
/// at an entry past it.
fn covered(replayer: &Replayer, r: &Replay<'_>) -> Result<(), AgentError> {
    let needs = r.target.needs();
    if replayer.ended() || replayer.last_seen().max(Some(r.from)) >= Some(needs) {
        return Ok(());
    }
    Err(AgentError::Refused(format!(
        "the oplog chunks end at {} before the target {}: entries up to it are missing",
        replayer
            .last_seen()
            .map_or_else(|| "nothing".into(), |t| t.to_string()),
        r.target
    )))
}

/// The chunks start at or before the base's last write (else entries after it would be
/// missing) and follow each other without a hole.
fn check_coverage(r: &Replay<'_>) -> Result<(), AgentError> {
    let Some(first) = r.chunks.first() else {
        return Ok(()); // nothing after the base is kept
    };
    if first.first > r.from {
        return Err(AgentError::Refused(format!(
            "the oplog chunks start at {} (chunk {}), after the base's last write {}: the \
             entries between are missing",
            first.first, first.object, r.from
        )));
    }
    for pair in r.chunks.windows(2) {
        if pair[1].first > pair[0].last {
            return Err(AgentError::Refused(format!(
                "oplog chunk {} starts at {}, after the end {} of chunk {}: a hole",
                pair[1].object, pair[1].first, pair[0].last, pair[0].object
            )));
        }
    }
    Ok(())
}

async fn apply_chunks(
    node: &Node,
    op: &Op,
    client: &MongodClient,
    r: &Replay<'_>,
) -> Result<ReplayStats, AgentError> {
    let started = Instant::now();
    let total: u64 = r.chunks.iter().map(|c| c.entries).sum();
    let mut replayer = Replayer::new(r.from, r.target);
    let mut last_report = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel(PREFETCH);
    let store = r.store.clone();
    let chunks = r.chunks.to_vec();
    let download = tokio::spawn(async move {
        for c in chunks {
            let got = fetch_chunk(&store, &c).await.map(|docs| (c, docs));
            let failed = got.is_err();
            if tx.send(got).await.is_err() || failed {
                return;
            }
        }
    });
    let _abort_on_drop = AbortOnDrop(download);
    while let Some(got) = rx.recv().await {
        let (chunk, entries) = got?;
        for e in entries {
            for batch in replayer
                .push(e)
                .map_err(|e| AgentError::Refused(format!("chunk {}: {e}", chunk.object)))?
            {
                apply_batch(client, &batch).await?;
                if last_report.elapsed() >= node.cfg.heartbeat_interval.min(PROGRESS_EVERY) {
                    last_report = Instant::now();
                    progress(node, op, &replayer.stats, total, started).await;
                    // A cancel or a decision taken without this node stops a long replay
                    // here, not at its end; a control plane that does not answer does not.
                    if let Ok(Some(why)) = node.author_ended(op).await {
                        return Err(AgentError::Refused(why));
                    }
                }
            }
            if replayer.ended() {
                break;
            }
        }
        if replayer.ended() {
            break;
        }
    }
    if let Some(batch) = replayer
        .finish()
        .map_err(|e| AgentError::Refused(e.to_string()))?
    {
        apply_batch(client, &batch).await?;
    }
    covered(&replayer, r)?;
    let mut stats = replayer.stats;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// A chunk's entries, its checksum verified.
async fn fetch_chunk(store: &BackupStore, c: &ChunkRef) -> Result<Vec<Document>, AgentError> {
    let stored = store.get_blob_checked(&c.object, &c.checksum).await?;
    let raw = tidemark_store::storage::decompress(c.compression, stored).map_err(|e| {
        AgentError::Refused(format!("oplog chunk {} does not decompress: {e}", c.object))
    })?;
    parse_entries(&raw)
        .map_err(|what| AgentError::Refused(format!("oplog chunk {}: {what}", c.object)))
}

/// The concatenated BSON documents of a chunk.
fn parse_entries(raw: &[u8]) -> Result<Vec<Document>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let len = raw
            .get(pos..pos + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .filter(|l| *l >= 5)
            .ok_or_else(|| format!("a truncated entry at byte {pos}"))? as usize;
        let bytes = raw
            .get(pos..pos + len)
            .ok_or_else(|| format!("a truncated entry at byte {pos}"))?;
        let doc = Document::from_reader(bytes)
            .map_err(|e| format!("an unreadable entry at byte {pos}: {e}"))?;
        out.push(doc);
        pos += len;
    }
    Ok(out)
}

/// Sends one batch. A batch whose outcome is unknown (the connection broke) is not sent
/// again: the first try may still be running in the standalone, and a second one could
/// apply its operations out of order; the node fails instead, and the decision reverts or
/// wipes it.
async fn apply_batch(client: &MongodClient, batch: &Batch) -> Result<(), AgentError> {
    if batch.ops.is_empty() {
        return Ok(());
    }
    let cmd = doc! {"applyOps": &batch.ops, "oplogApplicationMode": "ApplyOps"};
    match client.client().database("admin").run_command(cmd).await {
        Ok(_) => Ok(()),
        Err(e) => Err(MongodError::Command {
            node: client.node.clone(),
            command: format!(
                "applyOps of {} operation(s) up to {}",
                batch.ops.len(),
                batch.last
            ),
            message: match (&*e.kind, failed_op(&e, batch)) {
                (mongodb::error::ErrorKind::Command(_), Some(op)) => format!(
                    "{}; the first operation it did not apply: {op} (mongod's reason is in \
                     {} in the dbPath)",
                    command_message(&e),
                    super::recover::RESTORE_LOG
                ),
                (mongodb::error::ErrorKind::Command(_), None) => command_message(&e),
                _ => format!(
                    "{}; the batch's outcome is unknown, so it is not sent again",
                    command_message(&e)
                ),
            },
        }
        .into()),
    }
}

/// The server's code and message, without the raw reply the driver's text carries.
fn command_message(e: &mongodb::error::Error) -> String {
    match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => {
            format!("{} ({}): {}", c.code, c.code_name, c.message)
        }
        _ => e.to_string(),
    }
}

/// The operation an `applyOps` reply marks as the first not applied (`results[k]` false).
fn failed_op(e: &mongodb::error::Error, batch: &Batch) -> Option<String> {
    let reply = Document::try_from(e.server_response()?.as_ref()).ok()?;
    let at = reply
        .get_array("results")
        .ok()?
        .iter()
        .position(|r| r.as_bool() == Some(false))?;
    let op = batch.ops.get(at)?;
    let mut shown = format!(
        "{} on {}",
        op.get_str("op").unwrap_or("?"),
        op.get_str("ns").unwrap_or("?")
    );
    if let Ok(o) = op.get_document("o") {
        let id = op
            .get_document("o2")
            .ok()
            .and_then(|o2| o2.get("_id"))
            .or_else(|| o.get("_id"));
        match id {
            Some(id) => shown.push_str(&format!(" _id {id}")),
            None => shown.push_str(&format!(" {}", o.keys().next().map_or("", |k| k))),
        }
    }
    Some(shown)
}

async fn progress(node: &Node, op: &Op, stats: &ReplayStats, total: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let eta = (stats.read > 0)
        .then(|| secs * total.saturating_sub(stats.read) as f64 / stats.read as f64);
    let reached = stats.reached.map_or_else(String::new, |t| t.to_string());
    let mut d = Details::new();
    d.insert("entriesApplied".into(), json!(stats.applied));
    d.insert("entriesRead".into(), json!(stats.read));
    d.insert("entriesTotal".into(), json!(total));
    d.insert("reached".into(), json!(stats.reached));
    d.insert("etaSeconds".into(), json!(eta.map(|e| e.round() as u64)));
    let message = format!(
        "replaying the oplog: {} entries applied, {} of at most {total} read, reached {reached}{}",
        stats.applied,
        stats.read,
        eta.map_or_else(String::new, |e| format!(", about {e:.0} s left"))
    );
    if let Err(e) = node
        .report(op, PHASE, PhaseStatus::Running, message, d)
        .await
    {
        tracing::warn!(error = %e, "a replay progress report was not written");
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_split_and_a_truncated_one_is_named() {
        let a = doc! {"ts": 1}.to_vec().unwrap();
        let b = doc! {"ts": 2}.to_vec().unwrap();
        let mut raw = [a.clone(), b].concat();
        assert_eq!(parse_entries(&raw).unwrap().len(), 2);
        raw.truncate(raw.len() - 2);
        let e = parse_entries(&raw).unwrap_err();
        assert_eq!(e, format!("a truncated entry at byte {}", a.len()));
    }
}
