//! Compaction of ended operations: once an op has been over for `--keep-ops`, its working
//! records (the op, every phase report, log chunk and gate, the result) become one
//! archive object in the ledger. Agents list `ops/` on every poll, so what stays there is
//! what they pay for; `describe-*` and `logs` read the archive instead.
//!
//! Order matters for a crash between any two writes:
//! 1. the archive is created once: nothing is removed yet, so it is whole (a second
//!    compaction, after a crash or by a deposed leader, never overwrites it with less);
//! 2. `op.json` goes: agents ignore an op directory without it, and an agent still
//!    working on the op stops at its next check, which looks for `op.json` too;
//! 3. the log chunks, then every other record, `result.json` last. A crash anywhere in 3
//!    leaves an op directory without `op.json` next to its archive; the next pass ends it.
//!
//! An op is compacted only once no agent can still be working on it: every target wrote
//! its final report, or the op's deadline (after which no agent starts it) is a
//! `--dead-after` behind.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use tidemark_schema::control::{
    LOGS_PREFIX, OPS_PREFIX, OneShotRecord, Op, OpArchive, OpLogChunk, PhaseReport, archive_key,
    op_key, op_logs_prefix, result_key,
};
use tidemark_store::control::{ControlError, Created, is_report_key};

use crate::execute::{ExecError, Executor};

/// Ops compacted per pass at most, so that a first run over a long history does not hold
/// up the pass (the rest follow on the next ones).
pub const PER_PASS: usize = 20;
/// Time spent compacting per pass at most, for the same reason (checked between ops).
pub const BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

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

/// What a pass of compaction did.
#[derive(Debug, Default)]
pub struct Compacted {
    pub ops: Vec<String>,
    /// Ops that could not be compacted, and why; the others went on.
    pub errors: Vec<String>,
}

/// Compacts the op directories of one-shots that ended more than `keep` ago.
pub async fn compact_ops(
    ex: &Executor,
    records: impl IntoIterator<Item = &OneShotRecord>,
    keep: Duration,
    now: DateTime<Utc>,
) -> Result<Compacted, ExecError> {
    let started = Instant::now();
    let by_op: BTreeMap<&str, &OneShotRecord> =
        records.into_iter().map(|r| (r.op_id.as_str(), r)).collect();
    let mut out = Compacted::default();
    let op_ids = ex.control.op_ids().await?;
    for id in op_ids.iter().cloned() {
        if out.ops.len() >= PER_PASS || started.elapsed() >= BUDGET {
            break;
        }
        let Some(record) = owner(&id, &by_op) else {
            continue; // not an op of a one-shot: not ours to remove
        };
        let ended_long_ago =
            record.is_final() && record.finished_at.is_some_and(|at| now - at >= keep);
        if !ended_long_ago {
            continue;
        }
        match compact_one(ex, &id, now).await {
            Ok(true) => {
                tracing::info!(op = %id, "compacted into the ledger's archive");
                out.ops.push(id);
            }
            Ok(false) => {}
            // No longer leading: nothing more to do in this pass.
            Err(
                e @ ExecError::Control(
                    ControlError::LeaseLapsed { .. } | ControlError::Deposed { .. },
                ),
            ) => return Err(e),
            Err(e) => out.errors.push(format!("compacting op {id}: {e}")),
        }
    }
    // Log chunks an agent shipped after its op was compacted: nothing else removes them.
    for id in ex.control.children(LOGS_PREFIX).await? {
        if started.elapsed() >= BUDGET {
            break;
        }
        if !op_ids.contains(&id) && ex.control.exists(&archive_key(&id)).await? {
            ex.control.delete_dir(&op_logs_prefix(&id), None).await?;
        }
    }
    Ok(out)
}

/// Whether no agent can still be working on `op`: every target reported its end, or the
/// deadline after which none starts it is a `dead_after` behind.
fn settled(op: &Op, reports: &[PhaseReport], now: DateTime<Utc>, dead_after: Duration) -> bool {
    let all_final = op.targets.iter().all(|t| {
        reports
            .iter()
            .any(|r| r.replica_set == t.replica_set && r.node == t.node && r.phase.is_final())
    });
    all_final || op.deadline.is_some_and(|d| now >= d + dead_after)
}

/// Compacts one op directory; false when it is not time yet, or there is nothing safe to
/// do (no `op.json` and no archive: a directory some other writer is still making).
async fn compact_one(ex: &Executor, id: &str, now: DateTime<Utc>) -> Result<bool, ExecError> {
    let control = &ex.control;
    if let Some(op) = control.op(id).await? {
        let reports = control.op_reports(id).await?;
        if !settled(&op, &reports, now, ex.dead_after) {
            return Ok(false);
        }
        let archive = OpArchive {
            op,
            result: control.get(&result_key(id)).await?,
            reports,
            logs: control.all::<OpLogChunk>(&op_logs_prefix(id)).await?,
            others: others(ex, id).await?,
            archived_at: now,
        };
        if control.create(&archive_key(id), &archive).await? == Created::Existed {
            tracing::info!(op = %id, "archive exists already (an interrupted compaction); removing the rest");
        }
        control.delete(&op_key(id)).await?;
    } else if !control.exists(&archive_key(id)).await? {
        return Ok(false);
    }
    control.delete_dir(&op_logs_prefix(id), None).await?;
    control
        .delete_dir(&format!("{OPS_PREFIX}/{id}"), Some(&result_key(id)))
        .await?;
    Ok(true)
}

/// The records of an op that are neither its op, result nor reports (gates, finish
/// signals, restore logs), by key relative to the op directory.
async fn others(ex: &Executor, id: &str) -> Result<BTreeMap<String, serde_json::Value>, ExecError> {
    let dir = format!("{OPS_PREFIX}/{id}/");
    let mut out = BTreeMap::new();
    for key in ex.control.keys(&dir).await? {
        let rel = key.strip_prefix(&dir).unwrap_or(&key);
        if rel == "op.json" || rel == "result.json" {
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
