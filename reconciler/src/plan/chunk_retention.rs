//! Retention of oplog chunks: a chunk goes only when no kept backup can roll forward
//! through it. Runs after the backups' retention of the same pass, so the chunks only a
//! backup deleted now could use go with it, saying so.
//!
//! Per replica set, in each segment of the timeline (a run of chunks without a hole), the
//! chunks that end before the oldest kept base in that segment are useless, and so is a
//! whole segment no kept base lies in, unless it is the newest one (the next backup opens
//! a window there). A replica set's newest chunk is never deleted: the next chunk is
//! claimed under its end. Only schedules that declare `retention` delete chunks, as only
//! they delete backups.

use std::collections::BTreeSet;

use tidemark_schema::control::{BackupRecord, ChunkRecord};
use tidemark_schema::manifest::OpTime;
use tidemark_schema::validate::DesiredState;

use super::model::{Action, Step};
use super::pitr::replica_set_names;
use super::timeline::{Segment, base_point, bases, replica_set_timeline};
use crate::control::ObservedState;

/// Pushes a `deleteChunks` step per run of useless chunks. `deleted` are the backups this
/// pass's backup retention deletes.
pub fn plan_chunk_retention(
    desired: &DesiredState,
    observed: &ObservedState,
    deleted: &BTreeSet<String>,
    steps: &mut Vec<Step>,
) {
    for (_, spec) in desired.schedules() {
        let (Some(_), Some(cluster)) = (&spec.retention, desired.cluster(&spec.cluster)) else {
            continue;
        };
        let all = bases(&observed.backups, &spec.cluster, &spec.storage);
        let kept: Vec<&BackupRecord> = all
            .iter()
            .copied()
            .filter(|b| !deleted.contains(&b.name))
            .collect();
        for rs in replica_set_names(cluster) {
            let chunks: Vec<&ChunkRecord> = observed
                .chunks
                .iter()
                .filter(|c| {
                    c.cluster == spec.cluster && c.storage == spec.storage && c.replica_set == rs
                })
                .collect();
            let runs = useless_runs(&rs, &chunks, &all, &kept);
            for run in runs {
                steps.push(delete_step(&spec.cluster, &spec.storage, &rs, run));
            }
        }
    }
}

/// A run of consecutive chunks deleted for one reason.
struct Run<'a> {
    chunks: Vec<&'a ChunkRecord>,
    reason: String,
    /// The backups deleted now that alone could use them.
    after_deleting: Vec<String>,
}

fn useless_runs<'a>(
    rs: &str,
    chunks: &[&'a ChunkRecord],
    all: &[&BackupRecord],
    kept: &[&BackupRecord],
) -> Vec<Run<'a>> {
    let tl = replica_set_timeline(rs, chunks);
    let newest = chunks.iter().map(|c| (c.first, c.last)).max();
    let mut sorted = chunks.to_vec();
    sorted.sort_by_key(|c| (c.first, c.last));
    let mut runs: Vec<Run> = Vec::new();
    for c in sorted {
        if Some((c.first, c.last)) == newest {
            continue;
        }
        let Some(seg) = tl
            .segments
            .iter()
            .find(|s| s.first <= c.first && c.last <= s.last)
        else {
            continue;
        };
        let is_last = tl.segments.last() == Some(seg);
        let Some((reason, after_deleting)) = why_useless(rs, c, seg, is_last, all, kept) else {
            continue;
        };
        match runs.last_mut() {
            Some(r) if r.reason == reason => r.chunks.push(c),
            _ => runs.push(Run {
                chunks: vec![c],
                reason,
                after_deleting,
            }),
        }
    }
    runs
}

/// Why no kept base can roll forward through chunk `c` (and the backups deleted now that
/// could), or `None` when one can.
fn why_useless(
    rs: &str,
    c: &ChunkRecord,
    seg: &Segment,
    is_last: bool,
    all: &[&BackupRecord],
    kept: &[&BackupRecord],
) -> Option<(String, Vec<String>)> {
    let oldest_in = |set: &[&BackupRecord]| -> Option<(OpTime, String)> {
        set.iter()
            .filter_map(|b| base_point(b, rs).map(|p| (p, b.name.clone())))
            .filter(|(p, _)| seg.first <= *p && *p <= seg.last)
            .min()
    };
    let usable_by = |set: &[&BackupRecord]| match oldest_in(set) {
        Some((p, _)) => c.last >= p,
        None => is_last,
    };
    if usable_by(kept) {
        return None;
    }
    if usable_by(all) {
        let users: Vec<String> = all
            .iter()
            .filter(|b| !kept.iter().any(|k| k.name == b.name))
            .filter(|b| base_point(b, rs).is_some_and(|p| seg.first <= p && p <= c.last))
            .map(|b| b.name.clone())
            .collect();
        return Some((
            format!(
                "only {} (deleted now by retention) could roll forward through them",
                users.join(", ")
            ),
            users,
        ));
    }
    let reason = match oldest_in(kept) {
        Some((p, base)) => format!(
            "they end before {base}'s last write {p}, the oldest kept backup in this stretch \
             of the timeline: no kept backup can roll forward through them"
        ),
        None => format!(
            "no kept backup lies in this stretch of the timeline ({} to {}, ended by a gap): \
             no kept backup can roll forward through them",
            seg.first, seg.last
        ),
    };
    Some((reason, Vec::new()))
}

fn delete_step(cluster: &str, storage: &str, rs: &str, run: Run) -> Step {
    let from = run.chunks.first().map(|c| c.first).unwrap_or_default();
    let to = run.chunks.last().map(|c| c.last).unwrap_or_default();
    Step {
        action: Action::DeleteChunks {
            cluster: cluster.to_string(),
            storage: storage.to_string(),
            replica_set: rs.to_string(),
            chunks: run.chunks.len(),
            stored_bytes: run.chunks.iter().map(|c| c.stored_bytes).sum(),
            from,
            to,
            after_deleting: run.after_deleting,
            records: run
                .chunks
                .iter()
                .map(|c| (c.key(), c.object.clone()))
                .collect(),
        },
        reason: format!("retention: {}", run.reason),
    }
}
