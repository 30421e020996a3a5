//! Compaction of ended operations: once an op has been over for `--keep-ops`, its working
//! records (the op, every phase report, log chunk and gate, the result) become one
//! archive object in the ledger. Agents list `ops/` on every poll, so what stays there is
//! what they pay for; `describe-*` and `logs` read the archive instead.
//!
//! Order matters for a crash between any two writes:
//! 1. the archive is written (overwritten, if a crash came before step 2): nothing is
//!    removed yet, so it is whole;
//! 2. `op.json` goes: an op directory without it is ignored by agents, so no agent can
//!    mistake the op for one it has yet to run (which it might if `result.json` went
//!    first);
//! 3. every other record goes, the result last. A crash anywhere in 3 leaves a directory
//!    without `op.json` next to its archive; the next pass finishes it.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use tidemark_schema::control::{
    OPS_PREFIX, OneShotRecord, OpArchive, OpLogChunk, archive_key, op_key, op_logs_prefix,
    result_key,
};

use tidemark_store::control::is_report_key;

use crate::execute::{ExecError, Executor};

/// Ops compacted per pass at most, so that a first run over a long history does not hold
/// up the pass (the rest follow on the next ones).
pub const PER_PASS: usize = 20;

/// The one-shot an op directory belongs to: its own, or the one whose follow-up step it
/// is (`<op>.<stage>`).
fn owner<'a>(id: &str, by_op: &BTreeMap<&str, &'a OneShotRecord>) -> Option<&'a OneShotRecord> {
    let mut candidate = id;
    loop {
        if let Some(r) = by_op.get(candidate) {
            return Some(r);
        }
        candidate = &candidate[..candidate.rfind('.')?];
    }
}

/// Compacts the op directories of one-shots that ended more than `keep` ago. Returns the
/// ids compacted.
pub async fn compact_ops(
    ex: &Executor,
    records: impl IntoIterator<Item = &OneShotRecord>,
    keep: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<String>, ExecError> {
    let by_op: BTreeMap<&str, &OneShotRecord> =
        records.into_iter().map(|r| (r.op_id.as_str(), r)).collect();
    let mut done = Vec::new();
    for id in ex.control.op_ids().await? {
        if done.len() >= PER_PASS {
            break;
        }
        let Some(record) = owner(&id, &by_op) else {
            continue; // not an op of a one-shot: not ours to remove
        };
        let ended_long_ago =
            record.is_final() && record.finished_at.is_some_and(|at| now - at >= keep);
        if ended_long_ago && compact_one(ex, &id, now).await? {
            tracing::info!(op = %id, "compacted into the ledger's archive");
            done.push(id);
        }
    }
    Ok(done)
}

/// Compacts one op directory; false when there is nothing safe to do (no `op.json` and
/// no archive: a directory some other writer is still making).
async fn compact_one(ex: &Executor, id: &str, now: DateTime<Utc>) -> Result<bool, ExecError> {
    let control = &ex.control;
    if let Some(op) = control.op(id).await? {
        let mut logs: Vec<OpLogChunk> = Vec::new();
        for key in control.keys(&op_logs_prefix(id)).await? {
            if let Some(chunk) = control.get::<OpLogChunk>(&key).await? {
                logs.push(chunk);
            }
        }
        let archive = OpArchive {
            op,
            result: control.get(&result_key(id)).await?,
            reports: control.op_reports(id).await?,
            logs,
            others: others(ex, id).await?,
            archived_at: now,
        };
        control.put(&archive_key(id), &archive).await?;
        control.delete(&op_key(id)).await?;
    } else if !control.exists(&archive_key(id)).await? {
        return Ok(false);
    }
    control
        .delete_dir(&format!("{OPS_PREFIX}/{id}"), Some(&result_key(id)))
        .await?;
    Ok(true)
}

/// The records of an op that are neither its op, result, reports nor log chunks (gates,
/// finish signals, restore logs), by key relative to the op directory.
async fn others(ex: &Executor, id: &str) -> Result<BTreeMap<String, serde_json::Value>, ExecError> {
    let dir = format!("{OPS_PREFIX}/{id}/");
    let mut out = BTreeMap::new();
    for key in ex.control.keys(&dir).await? {
        let rel = key.strip_prefix(&dir).unwrap_or(&key);
        if rel == "op.json" || rel == "result.json" || rel.starts_with("logs/") {
            continue;
        }
        if rel.matches('/').count() == 1 && is_report_key(&key) {
            continue;
        }
        if let Some(v) = ex.control.get::<serde_json::Value>(&key).await? {
            out.insert(rel.to_string(), v);
        }
    }
    Ok(out)
}
