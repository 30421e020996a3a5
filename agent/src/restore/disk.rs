//! The disk evaluation before a restore with fallback: the current data stays on disk
//! next to the restored data, so `0.85 × total − used` (signed: negative when the disk
//! is already over 85 % full) must exceed the backup's uncompressed size.

use serde_json::json;
use tidemark_schema::control::Op;
use tidemark_schema::control::Phase;

use crate::disk::{DiskVerdict, disk_facts};
use crate::error::AgentError;
use crate::node::{Details, InPhase, Node, PhaseFailure};

pub async fn evaluate(node: &Node, op: &Op, needed: u64) -> Result<DiskVerdict, PhaseFailure> {
    const PHASE: Phase = Phase::Disk;
    let facts = disk_facts(&node.cfg.dbpath)
        .map_err(|e| AgentError::io(&node.cfg.dbpath, e))
        .in_phase(PHASE)?;
    let verdict = DiskVerdict::evaluate(facts, needed);
    let mut d = Details::new();
    d.insert("totalBytes".into(), json!(facts.total_bytes));
    d.insert("usedBytes".into(), json!(facts.used_bytes));
    d.insert("availableBytes".into(), json!(facts.available_bytes));
    d.insert("roomBytes".into(), json!(verdict.room));
    d.insert("neededBytes".into(), json!(needed));
    d.insert("fits".into(), json!(verdict.fits));
    tracing::info!(
        total = facts.total_bytes,
        used = facts.used_bytes,
        room = %verdict.room,
        needed,
        fits = verdict.fits,
        "fallback disk evaluation"
    );
    if !verdict.fits {
        node.report(
            op,
            PHASE,
            tidemark_schema::control::PhaseStatus::Error,
            verdict.summary(),
            d,
        )
        .await
        .in_phase(PHASE)?;
        return Err(AgentError::Refused(format!(
            "not enough disk for a restore with fallback on {}: {}; nothing was touched",
            node.cfg.dbpath.display(),
            verdict.summary()
        )))
        .in_phase(PHASE);
    }
    node.done(op, PHASE, verdict.summary(), d).await?;
    Ok(verdict)
}
